//! Profiles: the named sets of fixed constants every experiment is measured under.
//!
//! The original hard-codes one set (MAX_SEQ_LEN 2048, a 5-minute budget, an H100-sized
//! eval). Results are only comparable under identical constants, so a profile is chosen
//! once at `ar prepare` time, its name and a hash of its constants are written into the
//! cache manifest, and every result record carries both. The train program reads the
//! active profile from `AR_PROFILE` (set by `ar`), defaulting to `cpu`.

use sha2::{Digest, Sha256};

use crate::Error;
use crate::budget::Budget;

/// How a trained model is scored (see `prepare::scorer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scoring {
    /// The model returns every logit; `ar` computes every log-probability itself.
    Full,
    /// The model commits per-token log-probabilities; `ar` then asks a fresh process for the
    /// full logits of a random sample of rows and recomputes them.
    Audited,
}

impl Scoring {
    pub fn name(self) -> &'static str {
        match self {
            Scoring::Full => "full",
            Scoring::Audited => "audited",
        }
    }

    pub fn parse(text: &str) -> Result<Scoring, Error> {
        match text {
            "full" => Ok(Scoring::Full),
            "audited" => Ok(Scoring::Audited),
            other => Err(Error::Eval(format!("scoring '{other}': use full or audited"))),
        }
    }
}

/// Environment variable naming the active profile.
pub const PROFILE_ENV: &str = "AR_PROFILE";

/// The default profile when nothing is chosen: small enough for a laptop CPU.
pub const DEFAULT_PROFILE: &str = "cpu";

/// A fixed set of constants. Never edited by the agent; never varied within a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Short name: `h100`, `cpu`, `smoke`.
    pub name: &'static str,
    /// Context length of training and evaluation rows (the original's MAX_SEQ_LEN).
    pub max_seq_len: usize,
    /// Training wall-clock budget in seconds, excluding the first warm-up steps (the
    /// default budget, `time:<secs>s`; a session may choose a fixed-work budget instead).
    pub time_budget_secs: f64,
    /// Optimizer steps at the start of a run left off the clock under a time budget (the
    /// original's 11: `if step > 10` on its 0-based step): compilation and warm-up.
    pub warmup_steps: usize,
    /// The budget a session gets unless it chooses another (`time:` TIME_BUDGET for the
    /// profiles that mirror the original; a fixed-work budget where the result must not
    /// depend on how busy the machine is).
    pub budget: Budget,
    /// Seconds a training run may take beyond a time budget (start-up, the warm-up steps,
    /// writing the checkpoint) before `ar` kills it as `overtime`.
    pub startup_allowance_secs: f64,
    /// How `ar` scores a trained model: every logit, or committed log-probabilities audited
    /// on a random sample of rows (for profiles whose logits are too large to move).
    pub scoring: Scoring,
    /// Number of validation tokens `evaluate_bpb` scores (and the same for test).
    pub eval_tokens: usize,
    /// Tokenizer vocabulary size, special tokens included.
    pub vocab_size: usize,
    /// Data source used when `ar prepare` is not given `--source`.
    pub default_source: &'static str,
    /// Character budget for tokenizer training text (the original's 1e9).
    pub tokenizer_max_chars: u64,
    /// Per-document character cap for tokenizer training (the original's 10,000).
    pub tokenizer_doc_cap: usize,
    /// One line on what the profile is for.
    pub purpose: &'static str,
}

/// The original's constants: an H100, climbmix, 2048 context, a 40·2^19-token eval.
pub const H100: Profile = Profile {
    name: "h100",
    max_seq_len: 2048,
    time_budget_secs: 300.0,
    warmup_steps: 11,
    budget: Budget::Time { secs: 300.0 },
    startup_allowance_secs: 120.0,
    scoring: Scoring::Audited,
    eval_tokens: 40 * 524_288,
    vocab_size: 8192,
    default_source: "climbmix",
    tokenizer_max_chars: 1_000_000_000,
    tokenizer_doc_cap: 10_000,
    purpose: "the original's constants, for one data-centre GPU",
};

/// The default: what a 2-core CPU can learn something from in five minutes.
pub const CPU: Profile = Profile {
    name: "cpu",
    max_seq_len: 256,
    time_budget_secs: 300.0,
    warmup_steps: 11,
    budget: Budget::Time { secs: 300.0 },
    startup_allowance_secs: 60.0,
    scoring: Scoring::Full,
    eval_tokens: 1 << 17,
    vocab_size: 4096,
    default_source: "tinystories",
    tokenizer_max_chars: 1_000_000_000,
    tokenizer_doc_cap: 10_000,
    purpose: "the default: a small model on a CPU, TinyStories",
};

/// Seconds-long runs for tests and CI, on the synthetic corpus.
pub const SMOKE: Profile = Profile {
    name: "smoke",
    max_seq_len: 64,
    time_budget_secs: 4.0,
    warmup_steps: 11,
    budget: Budget::Time { secs: 4.0 },
    startup_allowance_secs: 20.0,
    scoring: Scoring::Full,
    eval_tokens: 1 << 12,
    vocab_size: 512,
    default_source: "synthetic",
    tokenizer_max_chars: 1_000_000_000,
    tokenizer_doc_cap: 10_000,
    purpose: "seconds-long runs for tests, on the synthetic corpus",
};

/// `ar demo`: a handful of experiments end to end in a few minutes on a laptop CPU. Its
/// budget is fixed work, not time: on a laptop that does other things, a time budget's step
/// count varies with the load and drowns the effects the demo shows. The work is counted in
/// FLOPs, not tokens: under a tokens budget a wider model is free, so a search drifts to
/// ever bigger models whose runs take 3x as long (a 20-experiment bench no longer fits a
/// night on 2 cores); under FLOPs it pays for its size in fewer tokens. 2.04e12 is 24 steps
/// of 4096 tokens for the default train file (2.076e7 FLOPs per token). What FLOPs leave
/// free is the fixed cost of a step: searches on it drift to small models that take many
/// steps (0.35–0.62 M parameters, 600+ steps, 3–6x the baseline's wall time, measured).
pub const DEMO: Profile = Profile {
    name: "demo",
    max_seq_len: 128,
    time_budget_secs: 15.0,
    warmup_steps: 11,
    budget: Budget::Flops { flops: 2.04e12 },
    startup_allowance_secs: 30.0,
    scoring: Scoring::Full,
    eval_tokens: 1 << 14,
    vocab_size: 1024,
    default_source: "synthetic",
    tokenizer_max_chars: 1_000_000_000,
    tokenizer_doc_cap: 10_000,
    purpose: "ar demo: minutes end to end on a laptop CPU, on the synthetic corpus",
};

/// Every known profile, in the order `ar prepare --help` lists them.
pub const ALL: [&Profile; 4] = [&CPU, &H100, &DEMO, &SMOKE];

impl Profile {
    /// Looks a profile up by name.
    pub fn by_name(name: &str) -> Result<&'static Profile, Error> {
        ALL.iter().copied().find(|p| p.name == name).ok_or_else(|| Error::UnknownProfile {
            name: name.to_string(),
            known: ALL.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
        })
    }

    /// The profile named by `AR_PROFILE`, or the default.
    pub fn active() -> Result<&'static Profile, Error> {
        match std::env::var(PROFILE_ENV) {
            Ok(name) if !name.is_empty() => Self::by_name(&name),
            _ => Self::by_name(DEFAULT_PROFILE),
        }
    }

    /// The budget a session gets unless it chooses another.
    pub fn default_budget(&self) -> Budget {
        self.budget
    }

    /// Rows `ar` scores per split: exactly EVAL_TOKENS / MAX_SEQ_LEN, whatever batch size the
    /// train file uses (a batch size that does not divide it must not change the rows).
    pub fn eval_rows(&self) -> usize {
        self.eval_tokens / self.max_seq_len
    }

    /// A short hash of every constant, so a changed constant can never pass as the old
    /// profile: the manifest and every result record carry it.
    pub fn hash(&self) -> String {
        let canonical = format!(
            "name={};max_seq_len={};time_budget_secs={};warmup_steps={};startup_allowance_secs={};\
             scoring={};budget={};eval_tokens={};vocab_size={};tokenizer_max_chars={};tokenizer_doc_cap={}",
            self.name,
            self.max_seq_len,
            self.time_budget_secs,
            self.warmup_steps,
            self.startup_allowance_secs,
            self.scoring.name(),
            self.budget,
            self.eval_tokens,
            self.vocab_size,
            self.tokenizer_max_chars,
            self.tokenizer_doc_cap,
        );
        let digest = Sha256::digest(canonical.as_bytes());
        hex(&digest[..8])
    }
}

/// Lower-case hex of a byte slice.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_profiles_have_distinct_hashes() {
        let hashes: Vec<String> = ALL.iter().map(|p| p.hash()).collect();
        for (i, a) in hashes.iter().enumerate() {
            for b in &hashes[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(CPU.hash().len(), 16);
    }

    #[test]
    fn test_hash_changes_with_any_constant() {
        let mut p = CPU.clone();
        let before = p.hash();
        p.eval_tokens += 1;
        assert_ne!(before, p.hash());
    }

    #[test]
    fn test_unknown_profile_lists_known_ones() {
        let err = Profile::by_name("tpu").unwrap_err().to_string();
        assert!(err.contains("tpu") && err.contains("cpu") && err.contains("smoke"), "{err}");
    }

    #[test]
    fn test_h100_matches_the_original() {
        assert_eq!(H100.max_seq_len, 2048);
        assert_eq!(H100.eval_tokens, 40 * 524288);
        assert_eq!(H100.vocab_size, 8192);
        assert_eq!(H100.time_budget_secs, 300.0);
    }
}
