//! The `ar status` screen: what is running now, the best so far, the last results.
//!
//! The journal says which experiment is in flight (started, not finished) but not how far it
//! got, because it is written only at phase boundaries. For that the loop keeps `live.json`
//! beside the journal, rewritten atomically at each phase change: `{"id", "phase", "since",
//! "description", "progress_pct", "pid"}`. It is read only when fresh (its process is
//! alive), because a loop killed with `-9` leaves it behind claiming to be training;
//! otherwise the screen falls back to what the journal alone can say.
//!
//! Rendering is a pure function of (model, live, now, width) so tests can pin it down; the
//! command owns the terminal.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::model::{Model, Outcome, duration, short, signed};
pub use crate::live::{LIVE_FILE, Live};

/// A live.json without a pid counts as fresh for this long after its last write.
const FRESH_WITHOUT_PID: Duration = Duration::from_secs(30);

/// Results listed on the screen.
const LAST_RESULTS: usize = 8;

/// Reads `dir/live.json` when it exists, parses, and is fresh; `None` otherwise.
pub fn read_live(dir: &Path) -> Option<Live> {
    let path = dir.join(LIVE_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let live: Live = serde_json::from_str(&text).ok()?;
    let fresh = match live.pid {
        Some(pid) => process_alive(pid),
        None => std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < FRESH_WITHOUT_PID),
    };
    fresh.then_some(live)
}

/// Whether a process exists (signal 0 checks without sending; EPERM means it exists but
/// belongs to someone else).
#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// The screen as text, every line at most `width` characters.
pub fn render(m: &Model, live: Option<&Live>, now: f64, width: usize) -> String {
    let mut lines: Vec<String> = Vec::new();
    let head = match &m.setup {
        Some(s) => match m.workload() {
            Some(w) => format!(
                "autoresearch status — session {} · workload {} · metric {} ({}, {}) · agent {}",
                s.tag,
                w.name,
                w.metric,
                m.better(),
                w.source,
                s.agent
            ),
            None => format!(
                "autoresearch status — session {} · profile {} · agent {} · {} per run",
                s.tag,
                s.profile,
                s.agent,
                duration(s.budget_secs)
            ),
        },
        None => "autoresearch status".to_string(),
    };
    lines.push(head);
    lines.push(String::new());
    lines.push(format!("now     {}", now_line(m, live, now)));
    if m.is_empty() {
        lines.push(String::new());
        lines.push("No experiments recorded yet.".to_string());
        return finish(lines, width);
    }
    let c = m.counts();
    match (m.best(), m.baseline()) {
        (Some(b), base) => {
            let row = b.row.map(|i| &m.rows[i]);
            lines.push(format!(
                "best    {:.6}{}  {}{}",
                b.val_bpb,
                base.map_or(String::new(), |base| format!(
                    "  ({:+.2}% vs baseline {base:.6})",
                    (b.val_bpb - base) / base * 100.0
                )),
                short(&b.commit),
                row.map_or(String::new(), |r| format!("  #{} {}", r.id, r.what()))
            ));
        }
        (None, Some(base)) => lines.push(format!("best    nothing kept yet (baseline {base:.6})")),
        (None, None) => lines.push("best    nothing measured yet".to_string()),
    }
    if m.paired() {
        lines.push(format!(
            "noise   σ_d {} (paired differences) · keeps need the paired test to be confident",
            m.sigma().map_or("?".to_string(), |s| format!("{s:.6}"))
        ));
    } else if let (Some(margin), Some(best)) = (m.margin(), m.best()) {
        lines.push(format!(
            "noise   σ {} · margin {margin:.6} → a keep needs {} < {:.6}",
            m.sigma().map_or("?".to_string(), |s| format!("{s:.6}")),
            m.metric(),
            best.val_bpb - margin
        ));
    }
    let mut runs = format!(
        "runs    {} ({} experiments): {} kept · {} discarded · {} crashed",
        c.experiments, c.candidates, c.kept_candidates, c.discarded_candidates, c.crashed
    );
    if c.running + c.pending > 0 {
        runs.push_str(&format!(" · {} running", c.running + c.pending));
    }
    lines.push(runs);
    let t = m.time_totals();
    if t.experiments > 0 {
        let n = t.experiments as f64;
        lines.push(format!(
            "time    {} per experiment (agent {} · build {} · train {} · eval {})",
            duration(t.total / n),
            duration(t.agent / n),
            duration(t.build / n),
            duration(t.train / n),
            duration(t.eval / n)
        ));
    }
    let in_flight: Vec<_> =
        m.rows.iter().filter(|r| r.worker.is_some() && r.outcome == Outcome::Running).collect();
    if !in_flight.is_empty() {
        lines.push(String::new());
        lines.push("workers".to_string());
        for r in in_flight {
            lines.push(format!(
                "  {:<10} #{:<4} {:<8} {}  ({} so far)",
                r.worker.as_deref().unwrap_or("?"),
                r.id,
                super::model::kind_name(r.kind),
                r.what(),
                duration(now - r.started)
            ));
        }
    }
    let finished: Vec<_> = m.finished().collect();
    if !finished.is_empty() {
        lines.push(String::new());
        lines.push("last results".to_string());
        for r in &finished[finished.len().saturating_sub(LAST_RESULTS)..] {
            lines.push(format!(
                "  #{:<4} {:<16} {:>9} {:>10} {:>8}  {}",
                r.id,
                r.outcome.label(),
                r.val_bpb.filter(|_| !r.outcome.is_crash()).map_or("-".to_string(), |v| format!("{v:.6}")),
                r.delta.map_or("-".to_string(), signed),
                r.finished.map_or("-".to_string(), |f| format!("{} ago", duration(now - f))),
                r.what()
            ));
        }
    }
    finish(lines, width)
}

/// The "now" line: live.json when fresh, else what the journal implies.
fn now_line(m: &Model, live: Option<&Live>, now: f64) -> String {
    if let Some(l) = live {
        let elapsed = (now - l.since).max(0.0);
        let budget = m.setup.as_ref().map(|s| s.budget_secs).filter(|b| *b > 0.0);
        let progress = match (l.progress_pct, l.phase.as_str(), budget) {
            (Some(p), _, _) => format!("{}  ", bar(p)),
            // No reported progress: training is budgeted, so elapsed/budget is a fair guess.
            (None, "train", Some(b)) => format!("{} (est.)  ", bar(100.0 * elapsed / b)),
            _ => String::new(),
        };
        let id = if l.phase == "idle" { String::new() } else { format!("#{} ", l.id) };
        return format!(
            "{id}{} {progress}{} in phase — {}{}",
            l.phase,
            duration(elapsed),
            if l.description.is_empty() { "-".to_string() } else { l.description.clone() },
            l.pid.map_or(String::new(), |p| format!("  [live, pid {p}]"))
        );
    }
    if let Some(r) = m.running() {
        let phase = match (r.outcome, &r.commit) {
            (Outcome::Pending, _) => "deciding",
            (_, Some(_)) => "building or training",
            (_, None) => "preparing the change",
        };
        return format!(
            "#{} {phase}, started {} ago — {}  [journal only: no live process found]",
            r.id,
            duration(now - r.started),
            r.what()
        );
    }
    match &m.stopped {
        Some((t, reason)) => format!("idle — stopped {} ago: {reason}", duration(now - t)),
        None if m.setup.is_some() => "idle — no experiment in flight".to_string(),
        None => "no session".to_string(),
    }
}

/// `[########------------]  42%`
fn bar(pct: f64) -> String {
    let p = pct.clamp(0.0, 100.0);
    let filled = (p / 5.0).round() as usize;
    format!("[{}{}] {:>3.0}%", "#".repeat(filled), "-".repeat(20 - filled), p)
}

fn finish(lines: Vec<String>, width: usize) -> String {
    let mut out = String::new();
    for l in lines {
        out.push_str(&truncate_keep_spaces(&l, width));
        out.push('\n');
    }
    out
}

/// Cuts a line to the terminal width without collapsing its alignment spaces (a wrapped
/// line would scroll the watch screen).
fn truncate_keep_spaces(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_string();
    }
    let cut: String = line.chars().take(width.saturating_sub(1)).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_progress_bar_is_clamped() {
        assert_eq!(bar(42.0), "[########------------]  42%");
        assert_eq!(bar(250.0), "[####################] 100%");
        assert_eq!(truncate_keep_spaces("#1   keep", 6), "#1   …");
    }
}
