//! What an agent sees of the session: a compact JSON summary (≤ 2 KB, asserted) and the same
//! facts as a few dozen lines of plain text for its prompt.
//!
//! `ar loop` calls the agent once per experiment with this digest instead of relying on the
//! agent's memory, which fills up and forgets the early results. So it must be small (it is
//! paid for every turn), deterministic (same journal, same bytes: no clocks, no hash-map
//! order) and built from the journal alone. It carries no crash excerpts: those come from
//! the trained program and are untrusted text.

use serde::{Deserialize, Serialize};

use super::model::{Model, Row, short, signed, truncate};
use crate::journal::Event;

/// The hard ceiling on the JSON summary's size.
pub const SUMMARY_MAX_BYTES: usize = 2048;

/// Results listed in the summary and the digest.
const LAST_RESULTS: usize = 10;

/// The session in a few numbers, for agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub tag: Option<String>,
    pub profile: Option<String>,
    /// Every experiment, crashes and re-runs included.
    pub experiments: usize,
    pub kept: usize,
    pub discarded: usize,
    pub crashed: usize,
    /// The experiment in flight, if any.
    pub running: Option<u64>,
    /// val_bpb of the starting point (mean of the baseline runs).
    pub baseline: Option<f64>,
    pub best: Option<BestSummary>,
    /// Noise estimate and the margin a change must beat.
    pub sigma: Option<f64>,
    pub margin: Option<f64>,
    /// The last results, oldest first.
    pub last: Vec<Recent>,
    /// What was tried and failed, grouped by topic, most tried first.
    pub failed: Vec<Failed>,
    /// Set when there is nothing to summarise yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestSummary {
    pub val_bpb: f64,
    /// Short commit.
    pub commit: String,
    pub id: Option<u64>,
    pub desc: String,
    /// Change against the baseline in percent (negative = better).
    pub vs_baseline_pct: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recent {
    pub id: u64,
    /// keep, discard, crash:<class>, timeout, rejected, interrupted.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_bpb: Option<f64>,
    /// val_bpb − best before the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    pub desc: String,
    /// Paired decisions: "3 pairs, se 0.0012, 97.1 % confident".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub topic: String,
    pub tries: usize,
    pub crashes: usize,
    /// The closest a discarded attempt came to the best (most negative Δ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closest_delta: Option<f64>,
}

/// The session summary for agents; its JSON is at most [`SUMMARY_MAX_BYTES`].
pub fn summary(events: &[Event]) -> Summary {
    summarize(&Model::from_events(events))
}

pub fn summarize(m: &Model) -> Summary {
    // Shrink in fixed steps until it fits: shorter descriptions first, then fewer groups,
    // then fewer results. Each step is deterministic, so the output is too.
    const N: usize = LAST_RESULTS;
    let plans: [(usize, usize, usize); 8] =
        [(48, 8, N), (36, 8, N), (28, 6, N), (20, 5, N), (16, 4, 8), (12, 3, 6), (10, 2, 4), (8, 0, 2)];
    let mut last_try = None;
    for (desc_len, groups, results) in plans {
        let s = build(m, desc_len, groups, results);
        if to_json(&s).len() <= SUMMARY_MAX_BYTES {
            return s;
        }
        last_try = Some(s);
    }
    let mut s = last_try.expect("at least one plan");
    s.last.clear();
    s.failed.clear();
    if let Some(b) = &mut s.best {
        b.desc = truncate(&b.desc, 8);
    }
    s
}

/// The summary as compact JSON (what `ar report --format json` prints).
pub fn to_json(s: &Summary) -> String {
    serde_json::to_string(s).expect("summary serialises")
}

fn build(m: &Model, desc_len: usize, groups: usize, results: usize) -> Summary {
    let c = m.counts();
    let baseline = m.baseline();
    let best = m.best().map(|b| {
        let row = b.row.map(|i| &m.rows[i]);
        BestSummary {
            val_bpb: r6(b.val_bpb),
            commit: short(&b.commit).to_string(),
            id: row.map(|r| r.id),
            desc: truncate(row.map_or("", |r| r.description.as_str()), desc_len),
            vs_baseline_pct: baseline.map(|base| ((b.val_bpb - base) / base * 1e4).round() / 1e2),
        }
    });
    let finished: Vec<&Row> = m.finished().collect();
    let last = finished[finished.len().saturating_sub(results)..]
        .iter()
        .map(|r| Recent {
            id: r.id,
            status: r.outcome.label(),
            val_bpb: r.val_bpb.filter(|_| !r.outcome.is_crash()).map(r6),
            delta: r.delta.map(r6),
            desc: truncate(&r.what(), desc_len),
            evidence: r.evidence.as_ref().map(|e| {
                let mut t = format!("{} pair{}", e.pairs, if e.pairs == 1 { "" } else { "s" });
                if let Some(se) = e.se {
                    t.push_str(&format!(", se {se:.4}"));
                }
                if let Some(c) = e.confidence {
                    t.push_str(&format!(", {:.1} % confident", 100.0 * c));
                }
                t
            }),
        })
        .collect();
    let failed = m
        .failed_groups()
        .into_iter()
        .take(groups)
        .map(|g| Failed {
            topic: truncate(&g.topic, 24),
            tries: g.tries,
            crashes: g.crashes,
            closest_delta: g.best_delta.map(r6),
        })
        .collect();
    Summary {
        tag: m.setup.as_ref().map(|s| s.tag.clone()),
        profile: m.setup.as_ref().map(|s| s.profile.clone()),
        experiments: c.experiments,
        kept: c.kept,
        discarded: c.discarded,
        crashed: c.crashed,
        running: m.running().map(|r| r.id),
        baseline: baseline.map(r6),
        best,
        sigma: m.sigma().map(r6),
        margin: m.margin().map(r6),
        last,
        failed,
        note: m.is_empty().then(|| "no experiments recorded yet".to_string()),
    }
}

/// Six decimals: bpb differences below 1e-6 are noise, and short numbers save bytes.
fn r6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The summary as plain text for an agent's prompt: a few dozen lines, same facts.
pub fn digest_text(events: &[Event]) -> String {
    digest(&Model::from_events(events))
}

pub fn digest(m: &Model) -> String {
    let text = digest_gpt_words(m);
    // A declared workload's metric takes val_bpb's place (the sentences are the GPT's).
    if m.workload().is_some() {
        text.replace("val_bpb", m.metric()).replace("unmodified train file", "unmodified files")
    } else {
        text
    }
}

fn digest_gpt_words(m: &Model) -> String {
    let s = summarize(m);
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(l.trim_end());
        out.push('\n');
    };
    match &m.setup {
        Some(st) => {
            let budget =
                st.settings.as_ref().map_or(format!("time:{}s", st.budget_secs), |s| s.budget.clone());
            let rule = match st.rule.kind.as_str() {
                "paired" => format!(
                    "paired (each candidate run is compared with the incumbent's run at the same seed; kept only \
                     when the sequential test is confident, false-keep rate {} %, at most {} pairs)",
                    100.0 * st.rule.alpha,
                    st.rule.max_pairs
                ),
                "strict" => "strict (one run, any improvement)".to_string(),
                kind => format!(
                    "{kind} (k={}, min_delta {}{})",
                    st.rule.k,
                    st.rule.min_delta,
                    if st.rule.confirm { ", confirmed by a re-run" } else { "" }
                ),
            };
            match m.workload() {
                Some(w) => line(format!(
                    "Session {}: workload {}, metric {} ({}; printed by the program you edit, parsed by ar), agent \
                     {}, keep rule {rule}.",
                    st.tag,
                    w.name,
                    w.metric,
                    m.better(),
                    st.agent
                )),
                None => line(format!(
                    "Session {}: profile {}, agent {}, budget {budget} per run, keep rule {rule}.",
                    st.tag, st.profile, st.agent
                )),
            }
        }
        None => line("No session recorded yet.".to_string()),
    }
    if m.is_empty() {
        line("No experiments recorded yet: the first one starts from the unmodified train file.".to_string());
        return out;
    }
    let c = m.counts();
    let crashes: Vec<String> = c.crashes.iter().map(|(k, n)| format!("{n} {k}")).collect();
    line(format!(
        "Experiments: {} ({} kept, {} discarded, {} crashed{}){}.",
        c.experiments,
        c.kept,
        c.discarded,
        c.crashed,
        if crashes.is_empty() { String::new() } else { format!(": {}", crashes.join(", ")) },
        s.running.map_or(String::new(), |id| format!("; #{id} in progress"))
    ));
    let base = s.baseline.map_or("unknown".to_string(), |b| format!("{b:.6}"));
    match &s.best {
        Some(b) => line(format!(
            "Baseline val_bpb {base}. Best {:.6}{} at {}{}: {}",
            b.val_bpb,
            b.vs_baseline_pct.map_or(String::new(), |p| format!(" ({p:+.2}%)")),
            b.commit,
            b.id.map_or(String::new(), |id| format!(" (#{id})")),
            if b.desc.is_empty() { "-" } else { &b.desc }
        )),
        None => line(format!("Baseline val_bpb {base}. Nothing kept yet.")),
    }
    if m.paired() {
        let classes = m.sigma_by_class();
        let spread = if classes.is_empty() {
            format!("sigma_d {}", s.sigma.map_or("unknown".to_string(), |x| format!("{x:.6}")))
        } else {
            let per: Vec<String> = classes.iter().map(|c| c.phrase()).collect();
            // Each class is pooled apart: an agent learns which changes are cheap to confirm.
            // A declared workload's changes are all code, so the dials need no legend there.
            let legend = if m.workload().is_some() {
                String::new()
            } else {
                format!(
                    " (tuning: rates, betas, schedule, decay; structural: {}; code: anything else)",
                    crate::session::noise_class::STRUCTURAL_DIALS.join(", ")
                )
            };
            format!("sigma_d {}{legend}", per.join(", "))
        };
        line(format!(
            "Noise: paired differences spread by {spread}; a keep needs the paired test to be confident, \
             a clearly worse change is dropped after one pair."
        ));
    } else if let (Some(best), Some(margin)) = (&s.best, s.margin) {
        line(format!(
            "Noise: sigma {}, margin {margin:.6}: to be kept a change must reach val_bpb < {:.6}.",
            s.sigma.map_or("unknown".to_string(), |x| format!("{x:.6}")),
            best.val_bpb - margin
        ));
    }
    line(format!("Last {} results (oldest first):", s.last.len()));
    for r in &s.last {
        line(format!(
            "  #{:<4} {:<16} {:<9} {:<10} {}{}",
            r.id,
            r.status,
            r.val_bpb.map_or("-".to_string(), |v| format!("{v:.6}")),
            r.delta.map_or("-".to_string(), signed),
            r.desc,
            r.evidence.as_deref().map_or(String::new(), |e| format!(" [{e}]"))
        ));
    }
    let top: Vec<&Row> = m.improvements().into_iter().take(5).collect();
    if !top.is_empty() {
        line("Kept improvements, largest first:".to_string());
        for r in top {
            line(format!(
                "  #{:<4} {} {} {}",
                r.id,
                r.delta.map_or("-".to_string(), signed),
                r.short_commit(),
                truncate(&r.description, 48)
            ));
        }
    }
    if let Some(v) = &m.verification {
        for sp in &v.splits {
            line(format!(
                "Verified on {} fresh seeds ({}): best improves on the baseline by {:.6} (95 % interval {:.6} to {:.6}).",
                sp.pairs, sp.split, sp.gain, sp.low, sp.high
            ));
        }
    }
    if !s.failed.is_empty() {
        line("Tried and failed (topic: tries, crashes, closest delta):".to_string());
        for g in &s.failed {
            line(format!(
                "  {}: {} tried, {} crashed{}",
                g.topic,
                g.tries,
                g.crashes,
                g.closest_delta.map_or(String::new(), |d| format!(", closest {}", signed(d)))
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_empty_journal_summarises_to_a_note() {
        let s = summary(&[]);
        assert_eq!(s.experiments, 0);
        assert_eq!(s.note.as_deref(), Some("no experiments recorded yet"));
        assert!(digest_text(&[]).contains("No experiments recorded yet"));
    }
}
