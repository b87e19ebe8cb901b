//! The session report in Markdown: what was set up, what improved and by how much, what
//! crashed, where the time went, how noisy the measurements were, whether the val gains held
//! on held-out data, and what was tried and failed.
//!
//! Written to be read like nanochat's dev/LOG.md and the original's session write-ups: the
//! numbers first, the negative results kept (a failed idea is a result: it tells the next
//! night what not to try). Every figure comes from the [`Model`], so it agrees with the plot
//! and the JSON summary.

use std::fmt::Write as _;

use super::model::{
    Model, Outcome, Row, duration, kind_name, plural, sample_std, short, signed, truncate, utc,
};
use crate::journal::RunKind;

/// Renders the report; `plot` is the relative path of the progress PNG to embed.
pub fn render(m: &Model, plot: Option<&str>) -> String {
    let mut out = String::new();
    let o = &mut out;
    line(o, format!("# autoresearch session `{}`", m.tag()));
    line(o, String::new());
    line(o, "Built from the session journal (`runs.jsonl`) alone.".to_string());
    line(o, String::new());
    if m.is_empty() {
        line(
            o,
            "**No experiments recorded yet.** Run `ar loop` to start the session; this report fills \
             in as experiments finish."
                .to_string(),
        );
        line(o, String::new());
        setup(o, m);
        return out;
    }
    if let Some(p) = plot {
        line(o, format!("![progress: val_bpb per experiment]({p})"));
        line(o, String::new());
    }
    result(o, m);
    verification(o, m);
    setup(o, m);
    improvements(o, m);
    crashes(o, m);
    time(o, m);
    noise(o, m);
    drift(o, m);
    negative(o, m);
    all_rows(o, m);
    // A declared workload's metric takes val_bpb's place in every table and sentence (the
    // sections are written for the GPT; the numbers are the same kind: one per run).
    if m.workload().is_some() {
        out = out.replace("val_bpb", m.metric());
    }
    out
}

fn line(o: &mut String, s: String) {
    o.push_str(&s);
    o.push('\n');
}

/// Table-safe, single-line text: agents write descriptions, and a `|` or `<` in one must
/// not break the table or inject markup.
fn cell(text: &str, max: usize) -> String {
    truncate(text, max).replace('|', "\\|").replace('<', "&lt;").replace('>', "&gt;")
}

fn bpb(x: Option<f64>) -> String {
    x.map_or("–".to_string(), |v| format!("{v:.6}"))
}

fn pct(x: f64, base: f64) -> String {
    format!("{:+.2}%", x / base * 100.0)
}

fn setup(o: &mut String, m: &Model) {
    let Some(s) = &m.setup else { return };
    line(o, "## Setup".to_string());
    line(o, String::new());
    line(o, format!("- **Branch**: `{}` from `{}`", s.branch, short(&s.base_commit)));
    let data = match &m.data {
        Some((d, true)) => format!("; data: {d} — **synthetic, not real text**"),
        Some((d, false)) => format!("; data: {d}"),
        None => String::new(),
    };
    match m.workload() {
        Some(w) => line(
            o,
            format!(
                "- **Workload**: {} (`{}`, sha256 `{}`): metric `{}`, {}; source: **{}** — the number is printed \
                 by the program the agent edits, parsed by ar",
                w.name,
                w.file,
                &w.sha256[..12.min(w.sha256.len())],
                w.metric,
                w.direction,
                w.source
            ),
        ),
        None => line(o, format!("- **Profile**: {} (`{}`){data}", s.profile, s.profile_hash)),
    }
    let hw = &s.hardware;
    let mut hardware = format!("{}, {} cores", hw.cpu_model, hw.cpu_cores);
    if let Some(mhz) = hw.cpu_mhz {
        let _ = write!(hardware, " @ {:.1} GHz", mhz / 1000.0);
    }
    if !hw.simd.is_empty() {
        let _ = write!(hardware, " ({})", hw.simd.join(", "));
    }
    if let Some(gpu) = &hw.gpu {
        let _ = write!(hardware, "; GPU {gpu}");
    }
    if let Some(gb) = hw.memory_gb {
        let _ = write!(hardware, "; {gb} GB RAM");
    }
    let _ = write!(hardware, "; {}", hw.os);
    line(o, format!("- **Hardware**: {hardware}"));
    line(o, format!("- **Agent**: `{}`", s.agent));
    match &s.settings {
        Some(st) if st.workload.is_some() => line(
            o,
            format!(
                "- **Run**: hard timeout {} per run; sandbox {}",
                duration(st.timeout_secs),
                if st.confined { "complete" } else { "**unconfined** (created with --allow-unconfined)" }
            ),
        ),
        Some(st) => {
            let rewards = prepare::Budget::parse(&st.budget).map(|b| b.rewards()).unwrap_or("");
            line(o, format!("- **Budget**: `{}` per run — rewards {rewards}", st.budget));
            line(
                o,
                format!(
                    "- **Scoring**: {} by ar's trusted scorer (the train program serves logits; probes for \
                     causality, batch composition and stationarity on every run); sandbox {}",
                    st.scoring,
                    if st.confined { "complete" } else { "**unconfined** (created with --allow-unconfined)" }
                ),
            );
        }
        None => line(o, format!("- **Budget**: {} of training per run", duration(s.budget_secs))),
    }
    let r = &s.rule;
    let rule = if r.kind == "strict" {
        "strict (the original's): keep on any improvement".to_string()
    } else if r.kind == "paired" {
        format!(
            "paired sequential test: each candidate run is paired with the incumbent's run at the same seed \
             offset; after each pair a t-test on the σ of paired differences (pooled per class of change) keeps (when confident; \
             false-keep rate {} % over all looks), discards (when not even better) or asks for one more pair, \
             up to {}; {} baseline runs start the noise estimate",
            100.0 * r.alpha,
            r.max_pairs,
            r.baseline_runs
        )
    } else {
        format!(
            "{}: keep when Δ < −max({}·σ, {}); σ from {} baseline runs{}{}",
            r.kind,
            r.k,
            r.min_delta,
            r.baseline_runs,
            if r.confirm { "; a confirm re-run before the branch advances" } else { "" },
            if r.remeasure_every > 0 {
                format!("; the incumbent re-measured every {} keeps", r.remeasure_every)
            } else {
                String::new()
            }
        )
    };
    line(o, format!("- **Keep rule**: {rule}"));
    let end = m.last_time.unwrap_or(s.started);
    let mut when = format!("{} → {} ({})", utc(s.started), utc(end), duration(end - s.started));
    if s.resumes > 0 {
        let _ = write!(when, ", resumed {}×", s.resumes);
    }
    match &m.stopped {
        Some((_, reason)) => {
            let _ = write!(when, "; stopped: {}", cell(reason, 80));
        }
        None => when.push_str("; not stopped (running, or killed)"),
    }
    line(o, format!("- **When**: {when}"));
    line(o, String::new());
}

fn result(o: &mut String, m: &Model) {
    let c = m.counts();
    line(o, "## Result".to_string());
    line(o, String::new());
    match (m.baseline(), m.best()) {
        (Some(base), Some(best)) => {
            let row = best.row.map(|i| &m.rows[i]);
            line(
                o,
                format!(
                    "**Baseline {base:.6} → best {:.6}** ({}, {}) at `{}`{}.",
                    best.val_bpb,
                    signed(best.val_bpb - base),
                    pct(best.val_bpb - base, base),
                    short(&best.commit),
                    row.map_or(String::new(), |r| format!(" — #{} *{}*", r.id, cell(&r.what(), 80)))
                ),
            );
        }
        (Some(base), None) => line(o, format!("Baseline {base:.6}; nothing kept yet.")),
        _ => line(o, "No result yet.".to_string()),
    }
    line(o, String::new());
    let decided = c.kept_candidates + c.discarded_candidates;
    let cand_crashed = m.rows.iter().filter(|r| r.kind == RunKind::Candidate && r.outcome.is_crash()).count();
    let mut s = format!(
        "{} experiments: {} candidates — {} kept, {} discarded, {} crashed",
        c.experiments, c.candidates, c.kept_candidates, c.discarded_candidates, cand_crashed
    );
    if decided > 0 {
        let _ = write!(
            s,
            " (keep rate {}/{decided} decided = {:.0}%, {}/{} = {:.0}% of all candidates)",
            c.kept_candidates,
            100.0 * c.kept_candidates as f64 / decided as f64,
            c.kept_candidates,
            c.candidates,
            100.0 * c.kept_candidates as f64 / c.candidates.max(1) as f64
        );
    }
    let mut reruns = Vec::new();
    for (n, name) in
        [(c.baseline_runs, "baseline"), (c.confirm_runs, "confirm"), (c.remeasure_runs, "remeasure")]
    {
        if n > 0 {
            reruns.push(format!("{n} {name}"));
        }
    }
    if !reruns.is_empty() {
        let _ = write!(s, "; plus {} runs", reruns.join(", "));
    }
    if let Some(r) = m.running() {
        let _ = write!(s, "; #{} ({}) in progress", r.id, cell(&r.what(), 40));
    }
    line(o, format!("{s}."));
    line(o, String::new());
}

fn improvements(o: &mut String, m: &Model) {
    let top = m.improvements();
    line(o, "## Top improvements".to_string());
    line(o, String::new());
    if top.is_empty() {
        line(o, "No candidate was kept.".to_string());
        line(o, String::new());
        return;
    }
    line(
        o,
        format!(
            "Kept changes by Δ against the incumbent they beat ({} = better).",
            if m.sign() > 0.0 { "negative" } else { "positive" }
        ),
    );
    line(o, String::new());
    line(o, "| rank | # | Δ val_bpb | val_bpb | commit | description |".to_string());
    line(o, "|---:|---:|---:|---:|---|---|".to_string());
    for (i, r) in top.iter().take(10).enumerate() {
        line(
            o,
            format!(
                "| {} | {} | {} | {} | `{}` | {} |",
                i + 1,
                r.id,
                r.delta.map_or("–".to_string(), signed),
                bpb(r.val_bpb),
                r.short_commit(),
                cell(&r.description, 90)
            ),
        );
    }
    let total: f64 = top.iter().filter_map(|r| r.delta).sum();
    line(o, String::new());
    line(o, format!("Sum of the kept Δ: {} over {} kept changes.", signed(total), top.len()));
    line(o, String::new());
}

fn crashes(o: &mut String, m: &Model) {
    let c = m.counts();
    line(o, "## Crashes".to_string());
    line(o, String::new());
    if c.crashed == 0 {
        line(o, "None.".to_string());
        line(o, String::new());
        return;
    }
    line(o, format!("{} of {} experiments produced no result.", c.crashed, c.experiments));
    line(o, String::new());
    line(o, "| class | count | experiments |".to_string());
    line(o, "|---|---:|---|".to_string());
    for (class, n) in &c.crashes {
        let ids: Vec<String> = m
            .rows
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Crash(k) if k.name() == *class))
            .map(|r| format!("#{}", r.id))
            .collect();
        let shown = if ids.len() > 12 { format!("{}, …", ids[..12].join(", ")) } else { ids.join(", ") };
        line(o, format!("| {class} | {n} | {shown} |"));
    }
    line(o, String::new());
}

fn time(o: &mut String, m: &Model) {
    let t = m.time_totals();
    line(o, "## Where the time went".to_string());
    line(o, String::new());
    if t.experiments == 0 {
        line(o, "No experiment has finished yet.".to_string());
        line(o, String::new());
        return;
    }
    line(o, format!("Over {} finished experiments:", t.experiments));
    line(o, String::new());
    line(o, "| phase | total | per experiment | share |".to_string());
    line(o, "|---|---:|---:|---:|".to_string());
    let n = t.experiments as f64;
    for (name, secs) in [
        ("agent (proposing the change)", t.agent),
        ("build", t.build),
        ("train (start-up, warm-up, budgeted training)", t.train),
        ("scoring (served logits, trusted scorer, probes)", t.eval),
        ("other (guard, git, decision)", t.other),
        ("**total**", t.total),
    ] {
        let share = if t.total > 0.0 { format!("{:.0}%", 100.0 * secs / t.total) } else { "–".to_string() };
        line(o, format!("| {name} | {} | {} | {share} |", duration(secs), duration(secs / n)));
    }
    line(o, String::new());
    // Throughput: decided experiments per hour of session, and what each worker ran.
    if let (Some(setup), Some(end)) = (&m.setup, m.last_time) {
        let hours = (end - setup.started).max(1.0) / 3600.0;
        let c = m.counts();
        let decided = c.kept_candidates + c.discarded_candidates;
        line(
            o,
            format!(
                "Experiments decided per hour: {:.1} ({decided} in {}).",
                decided as f64 / hours,
                duration(end - setup.started)
            ),
        );
        line(o, String::new());
    }
    let mut lanes: std::collections::BTreeMap<String, (usize, f64)> = Default::default();
    for r in &m.rows {
        if let (Some(w), Some(t)) = (&r.worker, &r.timings) {
            let e = lanes.entry(w.clone()).or_default();
            e.0 += 1;
            e.1 += t.train + t.score;
        }
    }
    if !lanes.is_empty() {
        line(o, "| worker | runs | busy |".to_string());
        line(o, "|---|---:|---:|".to_string());
        for (w, (n, busy)) in &lanes {
            line(o, format!("| {w} | {n} | {} |", duration(*busy)));
        }
        line(o, String::new());
    }
    if m.idle.count > 0 {
        let kinds: Vec<String> =
            m.idle.by_outcome.iter().map(|(k, n)| format!("{n} {}", cell(k, 20))).collect();
        line(
            o,
            format!(
                "Agent turns that produced no experiment: {} ({}), {} in all.",
                m.idle.count,
                kinds.join(", "),
                duration(m.idle.seconds)
            ),
        );
        line(o, String::new());
    }
}

/// "The night's real gain": the best against the baseline on fresh seeds, next to what the
/// loop believed.
fn verification(o: &mut String, m: &Model) {
    line(o, "## The session's real gain".to_string());
    line(o, String::new());
    let Some(v) = &m.verification else {
        line(
            o,
            "Not verified yet: `ar report --verify` measures the best and the baseline on fresh seeds."
                .to_string(),
        );
        line(o, String::new());
        return;
    };
    if let Some(b) = v.believed {
        line(
            o,
            format!(
                "Believed during the session (decision seeds): {} improvement in val_bpb.",
                signed(-b * m.sign())
            ),
        );
    }
    for sp in &v.splits {
        let sigma = v
            .sigma_x
            .filter(|s| *s > 0.0)
            .map_or(String::new(), |s| format!(" = {:.1} σ of a baseline run", sp.gain / s));
        line(
            o,
            format!(
                "- **{}**, {} fresh seed pairs: improvement {:.6}{sigma}, {:.0} % interval [{:.6}, {:.6}]{}",
                sp.split,
                sp.pairs,
                sp.gain,
                100.0 * v.level,
                sp.low,
                sp.high,
                if sp.low > 0.0 { " — holds up" } else { " — **not distinguishable from no gain**" }
            ),
        );
    }
    line(o, String::new());
}

fn noise(o: &mut String, m: &Model) {
    line(o, "## Noise".to_string());
    line(o, String::new());
    if m.paired() {
        paired_noise(o, m);
        return;
    }
    let base = m.baseline_values();
    let mut s = match (m.sigma(), m.margin(), m.k()) {
        (Some(sigma), Some(margin), Some(k)) => {
            format!("σ = {sigma:.6} at the last decision; with k = {k} the margin to beat was {margin:.6}.")
        }
        (Some(sigma), _, _) => format!("σ = {sigma:.6}."),
        _ => "No noise estimate in the journal (fewer than two baseline runs).".to_string(),
    };
    if base.len() >= 2 {
        let vals: Vec<String> = base.iter().map(|v| format!("{v:.6}")).collect();
        let _ = write!(
            s,
            " Baseline runs: {} (sample σ {:.6}).",
            vals.join(", "),
            sample_std(&base).unwrap_or(0.0)
        );
    }
    line(o, s);
    let discarded_better: Vec<&Row> = m
        .rows
        .iter()
        .filter(|r| {
            r.kind == RunKind::Candidate
                && r.outcome == Outcome::Discard
                && r.delta.is_some_and(|d| m.sign() * d < 0.0)
        })
        .collect();
    let beyond = |r: &&Row| r.delta.zip(r.margin).is_some_and(|(d, mg)| -m.sign() * d > mg);
    let list = |rows: &[&Row]| {
        rows.iter()
            .map(|r| format!("#{} ({})", r.id, r.delta.map_or("–".to_string(), signed)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let within: Vec<&Row> = discarded_better.iter().copied().filter(|r| !beyond(r)).collect();
    let unconfirmed: Vec<&Row> = discarded_better.iter().copied().filter(beyond).collect();
    if !within.is_empty() {
        line(o, String::new());
        line(
            o,
            format!(
                "{} measured better than the incumbent but not beyond the margin — too small to tell \
                 from noise: {}.",
                plural(within.len(), "discarded candidate"),
                list(&within)
            ),
        );
    }
    if !unconfirmed.is_empty() {
        line(o, String::new());
        line(
            o,
            format!(
                "{} beat the margin once and failed the confirm run — keeps the original's single run \
                 would have made: {}.",
                plural(unconfirmed.len(), "candidate"),
                list(&unconfirmed)
            ),
        );
    }
    let reruns: Vec<&Row> =
        m.rows.iter().filter(|r| matches!(r.kind, RunKind::Confirm | RunKind::Remeasure)).collect();
    if !reruns.is_empty() {
        line(o, String::new());
        line(
            o,
            "Re-runs (confirm: a candidate again before the branch advances; remeasure: the \
             incumbent again):"
                .to_string(),
        );
        line(o, String::new());
        for r in reruns {
            let of = r.rerun_of.and_then(|id| m.row(id));
            let diff = match (r.val_bpb, of.and_then(|x| x.val_bpb)) {
                (Some(a), Some(b)) => format!(", {} vs the original run", signed(a - b)),
                _ => String::new(),
            };
            line(
                o,
                format!(
                    "- #{} {} of #{}: {} {}{diff}",
                    r.id,
                    kind_name(r.kind),
                    r.rerun_of.map_or("?".to_string(), |x| x.to_string()),
                    r.outcome.label(),
                    bpb(r.val_bpb)
                ),
            );
        }
    }
    line(o, String::new());
}

/// The paired rule's evidence per decided candidate.
fn paired_noise(o: &mut String, m: &Model) {
    let base = m.baseline_values();
    let classes = m.sigma_by_class();
    let mut s = match m.sigma() {
        _ if !classes.is_empty() => {
            let per: Vec<String> = classes
                .iter()
                .map(|c| {
                    format!(
                        "{:.6} for {} changes ({:.0} dof, {} decided)",
                        c.sigma_d, c.class, c.dof, c.decided
                    )
                })
                .collect();
            format!(
                "σ of paired differences, pooled per class of change, at each class's latest decision: {}.",
                per.join("; ")
            )
        }
        Some(sd) => format!("σ of paired differences (pooled) = {sd:.6} at the last decision."),
        None => "No noise estimate yet.".to_string(),
    };
    if base.len() >= 2 {
        let vals: Vec<String> = base.iter().map(|v| format!("{v:.6}")).collect();
        let _ = write!(
            s,
            " Baseline runs: {} (σ of single runs {:.6}).",
            vals.join(", "),
            sample_std(&base).unwrap_or(0.0)
        );
    }
    line(o, s);
    line(o, String::new());
    let decided: Vec<&Row> =
        m.rows.iter().filter(|r| r.kind == RunKind::Candidate && r.evidence.is_some()).collect();
    if decided.is_empty() {
        return;
    }
    line(
        o,
        "| # | decision | pairs | Δ (mean paired) | se | σ_d (class) | confident | needed | what |"
            .to_string(),
    );
    line(o, "|---|---|---|---|---|---|---|---|---|".to_string());
    for r in decided {
        let e = r.evidence.as_ref().expect("filtered");
        line(
            o,
            format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.id,
                r.outcome.label(),
                e.pairs,
                signed(e.delta),
                e.se.map_or("–".to_string(), |x| format!("{x:.6}")),
                match (e.sigma_d, &e.class) {
                    (Some(sd), Some(c)) => format!("{sd:.6} ({c})"),
                    (Some(sd), None) => format!("{sd:.6}"),
                    (None, _) => "–".to_string(),
                },
                e.confidence.map_or("–".to_string(), |c| format!("{:.1} %", 100.0 * c)),
                e.needed.map_or("–".to_string(), |c| format!("{:.1} %", 100.0 * c)),
                cell(&r.what(), 50)
            ),
        );
    }
    line(o, String::new());
}

fn drift(o: &mut String, m: &Model) {
    // One row per kept commit: the run that introduced it (its confirm repeats the commit).
    let kept: Vec<&Row> = m
        .rows
        .iter()
        .filter(|r| r.outcome == Outcome::Keep && r.kind == RunKind::Candidate && r.val_bpb.is_some())
        .collect();
    line(o, "## Validation vs held-out test".to_string());
    line(o, String::new());
    let (Some(bv), Some(bt)) = (m.baseline(), m.baseline_test()) else {
        line(
            o,
            "Experiments are scored on val only (no decision reads test); test_bpb is measured when the \
             session's gain is verified, on fresh seeds (see \"The session's real gain\", or run \
             `ar report --verify`)."
                .to_string(),
        );
        line(o, String::new());
        return;
    };
    line(
        o,
        "Every keep is decided on val; test is never looked at. If val keeps improving while test \
         does not, the decisions are fitting the validation shard."
            .to_string(),
    );
    line(o, String::new());
    line(o, "| # | commit | val_bpb | Δval vs baseline | test_bpb | Δtest vs baseline |".to_string());
    line(o, "|---:|---|---:|---:|---:|---:|".to_string());
    line(o, format!("| baseline | | {bv:.6} | | {bt:.6} | |"));
    let mut worse = Vec::new();
    let mut prev_test = bt;
    for r in &kept {
        let (v, t) = (r.val_bpb.unwrap_or(bv), r.test_bpb);
        line(
            o,
            format!(
                "| {} | `{}` | {v:.6} | {} | {} | {} |",
                r.id,
                r.short_commit(),
                signed(v - bv),
                bpb(t),
                t.map_or("–".to_string(), |t| signed(t - bt))
            ),
        );
        if let Some(t) = t {
            if t > prev_test {
                worse.push(format!("#{}", r.id));
            }
            prev_test = t;
        }
    }
    line(o, String::new());
    let last = kept.iter().rev().find(|r| r.test_bpb.is_some());
    if let Some(last) = last {
        let (dv, dt) = (last.val_bpb.unwrap_or(bv) - bv, last.test_bpb.unwrap_or(bt) - bt);
        let mut s = format!(
            "Through the last kept commit val moved {} ({}) and test {} ({}).",
            signed(dv),
            pct(dv, bv),
            signed(dt),
            pct(dt, bt)
        );
        if dv < 0.0 {
            let carried = dt / dv;
            let _ = write!(s, " {:.0}% of the val gain carried over to held-out data.", 100.0 * carried);
        }
        line(o, s);
    }
    if !worse.is_empty() {
        line(o, String::new());
        line(
            o,
            format!(
                "Kept on val but worse on test than the commit before: {} (possible val spoilage).",
                worse.join(", ")
            ),
        );
    }
    line(o, String::new());
}

fn negative(o: &mut String, m: &Model) {
    let groups = m.failed_groups();
    line(o, "## Negative results".to_string());
    line(o, String::new());
    if groups.is_empty() {
        line(o, "Nothing tried has failed yet.".to_string());
        line(o, String::new());
        return;
    }
    line(
        o,
        format!(
            "What was tried and did not survive, grouped by what it changed (Δ against the incumbent; {} = worse):",
            if m.sign() > 0.0 { "positive" } else { "negative" }
        ),
    );
    line(o, String::new());
    for g in groups {
        let examples: Vec<String> = g
            .ids
            .iter()
            .filter_map(|id| m.row(*id))
            .take(6)
            .map(|r| {
                let what = match r.outcome {
                    Outcome::Discard => r.delta.map_or("discard".to_string(), signed),
                    o => o.label(),
                };
                format!("#{} {} ({what})", r.id, cell(&r.description, 60))
            })
            .collect();
        let more = if g.ids.len() > 6 { format!("; and {} more", g.ids.len() - 6) } else { String::new() };
        line(
            o,
            format!(
                "- **{}** — {} tried{}{}: {}{more}",
                cell(&g.topic, 40),
                g.tries,
                if g.crashes > 0 { format!(", {} crashed", g.crashes) } else { String::new() },
                g.best_delta.map_or(String::new(), |d| format!(", closest {}", signed(d))),
                examples.join("; ")
            ),
        );
    }
    line(o, String::new());
}

fn all_rows(o: &mut String, m: &Model) {
    line(o, "## All experiments".to_string());
    line(o, String::new());
    line(o, format!("<details><summary>{} experiments</summary>", m.rows.len()));
    line(o, String::new());
    line(
        o,
        "| # | kind | commit | status | val_bpb | Δ | test_bpb | memory | time | description |".to_string(),
    );
    line(o, "|---:|---|---|---|---:|---:|---:|---:|---:|---|".to_string());
    for r in &m.rows {
        line(
            o,
            format!(
                "| {} | {} | `{}` | {} | {} | {} | {} | {} | {} | {} |",
                r.id,
                kind_name(r.kind),
                r.short_commit(),
                r.outcome.label(),
                bpb(r.val_bpb.filter(|_| !r.outcome.is_crash())),
                r.delta.map_or("–".to_string(), signed),
                bpb(r.test_bpb),
                r.peak_mem_mb.map_or("–".to_string(), |mb| format!("{:.1} GB", mb / 1024.0)),
                r.timings.as_ref().map_or("–".to_string(), |t| duration(t.total)),
                cell(&r.what(), 80)
            ),
        );
    }
    line(o, String::new());
    line(o, "</details>".to_string());
}
