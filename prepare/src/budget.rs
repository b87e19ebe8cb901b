//! The training budget: how much work one experiment may spend, and how far along it is.
//!
//! The original gives every run five minutes of wall-clock training (its `TIME_BUDGET`), so
//! a faster step buys more steps. That rewards speed, but it also makes the result depend on
//! how busy the machine is: two runs of the same code on a loaded 2-core box reach different
//! step counts (the original's #35). A budget here is one of
//! - `time:300s` — wall-clock seconds of training after the warm-up steps (the original's);
//!   rewards faster code;
//! - `tokens:N` — N training tokens, whatever the time; rewards better learning per token and
//!   gives the same result on a quiet and on a loaded machine;
//! - `flops:X` — X model FLOPs (the train file's own per-token estimate × tokens, but never
//!   less per token than [`flops_floor_per_token`] of its checkpoint); rewards better
//!   learning per FLOP, so a bigger model gets proportionally fewer tokens.
//!
//! The budget is chosen when a session is created (the profile's by default), recorded on
//! every result and never mixed within a session. `ar` hands it to the train program in
//! `AR_BUDGET`; the train program asks [`Budget::progress`] where it stands after each step
//! (its learning-rate schedules run on that progress) and stops when [`Budget::spent`].
//! `ar` enforces it from outside as well: a time-budgeted run that outlives the budget plus
//! the profile's start-up allowance is killed and recorded as `overtime`, and so is a run
//! whose own record shows more than the last step spent past a tokens or FLOPs budget.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::profile::Profile;

/// Environment variable through which `ar` passes the session's budget.
pub const BUDGET_ENV: &str = "AR_BUDGET";

/// How much training one experiment gets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Budget {
    /// Seconds of training, counted after the profile's warm-up steps.
    Time { secs: f64 },
    /// Training tokens, warm-up steps included (they are not free under a work budget).
    Tokens { tokens: u64 },
    /// Model FLOPs (forward + backward), as the train file estimates them per token.
    Flops { flops: f64 },
}

/// Where a run stands: what it has spent so far. The train program fills it in.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    /// Seconds of training after the warm-up steps.
    pub training_seconds: f64,
    /// Tokens trained on, warm-up included.
    pub tokens: u64,
    /// FLOPs spent, warm-up included.
    pub flops: f64,
}

impl Budget {
    /// Parses `time:300s`, `time:300`, `tokens:1048576`, `tokens:1M`, `flops:1e15`.
    pub fn parse(text: &str) -> Result<Budget> {
        let bad = |why: &str| {
            Error::Budget(format!(
                "'{text}': {why}; write time:<seconds>s, tokens:<count> or flops:<count> \
                 (e.g. time:300s, tokens:2M, flops:1e15)"
            ))
        };
        let (kind, value) = text.trim().split_once(':').ok_or_else(|| bad("no kind"))?;
        let value = value.trim();
        match kind.trim() {
            "time" => {
                let secs: f64 =
                    value.strip_suffix('s').unwrap_or(value).parse().map_err(|_| bad("not a number"))?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(bad("seconds must be positive"));
                }
                Ok(Budget::Time { secs })
            }
            "tokens" => {
                let n = parse_count(value).ok_or_else(|| bad("not a count"))?;
                if n < 1.0 || n > u64::MAX as f64 {
                    return Err(bad("tokens must be positive"));
                }
                Ok(Budget::Tokens { tokens: n.round() as u64 })
            }
            "flops" => {
                let n = parse_count(value).ok_or_else(|| bad("not a count"))?;
                if n <= 0.0 || !n.is_finite() {
                    return Err(bad("flops must be positive"));
                }
                Ok(Budget::Flops { flops: n })
            }
            _ => Err(bad("unknown kind")),
        }
    }

    /// The budget `ar` passed in `AR_BUDGET`, else the profile's default.
    pub fn active(profile: &Profile) -> Result<Budget> {
        match std::env::var(BUDGET_ENV) {
            Ok(text) if !text.trim().is_empty() => Budget::parse(&text),
            _ => Ok(profile.default_budget()),
        }
    }

    /// Fraction of the budget spent, in [0, 1]: the learning-rate schedules run on it.
    pub fn progress(&self, spent: &Spent) -> f64 {
        let p = match *self {
            Budget::Time { secs } => spent.training_seconds / secs,
            Budget::Tokens { tokens } => spent.tokens as f64 / tokens as f64,
            Budget::Flops { flops } => spent.flops / flops,
        };
        p.clamp(0.0, 1.0)
    }

    /// True once the budget is used up: the run stops after the step that spent it.
    pub fn spent(&self, spent: &Spent) -> bool {
        match *self {
            Budget::Time { secs } => spent.training_seconds >= secs,
            Budget::Tokens { tokens } => spent.tokens >= tokens,
            Budget::Flops { flops } => spent.flops >= flops,
        }
    }

    /// True for the wall-clock budget, whose warm-up steps are off the clock.
    pub fn is_time(&self) -> bool {
        matches!(self, Budget::Time { .. })
    }

    /// What the budget rewards, in one line for reports.
    pub fn rewards(&self) -> &'static str {
        match self {
            Budget::Time { .. } => "wall-clock time: faster code buys more steps (depends on machine load)",
            Budget::Tokens { .. } => "tokens: better learning per token (independent of machine load)",
            Budget::Flops { .. } => {
                "FLOPs: better learning per unit of compute (independent of machine load)"
            }
        }
    }
}

/// The fewest FLOPs per token a model with these parameter shapes is charged under a FLOPs
/// budget, whatever the train file counts: 6 (forward + backward) per weight of every matrix
/// that is not a vocabulary table. The count is the train file's, and an edit that halves it
/// would buy twice the training; the checkpoint's shapes are not its to misstate, since the
/// scorer serves the model from them. Tables with `vocab` rows or columns are left out
/// (embeddings are lookups; the head goes with them, so tying it costs nothing), as are
/// vectors and attention's own FLOPs, so an honest count is never below the floor. A sparse
/// model (mixture of experts) that touches fewer weights per token is charged for all of
/// them: research on those belongs under a tokens budget.
pub fn flops_floor_per_token(shapes: &[Vec<usize>], vocab: usize) -> f64 {
    let weights: usize = shapes
        .iter()
        .filter(|s| s.len() == 2 && !s.contains(&vocab))
        .map(|s| s.iter().product::<usize>())
        .sum();
    6.0 * weights as f64
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Budget::Time { secs } => write!(f, "time:{secs}s"),
            Budget::Tokens { tokens } => write!(f, "tokens:{tokens}"),
            Budget::Flops { flops } => write!(f, "flops:{flops:e}"),
        }
    }
}

/// `1048576`, `1M`, `2.5k`, `1e15`, `3G`.
fn parse_count(text: &str) -> Option<f64> {
    let (digits, scale) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1e3),
        'M' => (&text[..text.len() - 1], 1e6),
        'G' => (&text[..text.len() - 1], 1e9),
        'T' => (&text[..text.len() - 1], 1e12),
        _ => (text, 1.0),
    };
    digits.parse::<f64>().ok().map(|v| v * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_and_display_round_trip() {
        for text in ["time:300s", "tokens:1048576", "flops:1e15"] {
            let b = Budget::parse(text).unwrap();
            assert_eq!(Budget::parse(&b.to_string()).unwrap(), b, "{text}");
        }
        assert_eq!(Budget::parse("time:4").unwrap(), Budget::Time { secs: 4.0 });
        assert_eq!(Budget::parse("tokens:2M").unwrap(), Budget::Tokens { tokens: 2_000_000 });
        assert_eq!(Budget::parse("tokens:1.5k").unwrap(), Budget::Tokens { tokens: 1500 });
    }

    #[test]
    fn test_bad_budgets_say_how_to_write_one() {
        for text in ["300", "time:-1s", "tokens:0", "steps:10", "flops:abc"] {
            let e = Budget::parse(text).unwrap_err().to_string();
            assert!(e.contains(text) && e.contains("tokens:<count>"), "{e}");
        }
    }

    #[test]
    fn test_progress_and_spent_follow_the_kind() {
        let t = Budget::Time { secs: 10.0 };
        let k = Budget::Tokens { tokens: 1000 };
        let s = Spent { training_seconds: 5.0, tokens: 1000, flops: 0.0 };
        assert_eq!(t.progress(&s), 0.5);
        assert!(!t.spent(&s));
        assert_eq!(k.progress(&s), 1.0);
        assert!(k.spent(&s));
        let over = Spent { training_seconds: 50.0, ..s };
        assert_eq!(t.progress(&over), 1.0, "progress is clamped");
    }

    #[test]
    fn test_the_flops_floor_counts_matrices_but_not_vocabulary_tables_or_vectors() {
        let vocab = 1024;
        // Token embedding, two blocks' matrices, a norm's scale, the head.
        let shapes = vec![vec![vocab, 64], vec![64, 192], vec![64, 64], vec![64], vec![64, vocab]];
        assert_eq!(flops_floor_per_token(&shapes, vocab), 6.0 * (64.0 * 192.0 + 64.0 * 64.0));
        assert_eq!(flops_floor_per_token(&[], vocab), 0.0);
    }
}
