//! Options shared by `ar experiment` and `ar loop`: the profile, the keep rule, the run
//! timeout. They shape a session when it starts; afterwards the journal's values win.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use prepare::profile::{DEFAULT_PROFILE, Profile};

use crate::session::Options;
use crate::session::Rule;
use crate::stats::{self, Direction};

#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Profile (fixed constants) for a new session.
    #[arg(long, env = "AR_PROFILE", default_value = DEFAULT_PROFILE)]
    pub profile: String,
    /// Keep rule: `paired` (candidate and incumbent measured at the same seed offsets; a
    /// sequential test keeps only when confident, with a stated false-keep rate) or `strict`
    /// (the original: one run, keep any improvement — for comparison).
    #[arg(long, default_value = "paired")]
    pub rule: String,
    /// Paired rule: the false-keep rate over all of a candidate's looks.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Paired rule: most pairs (candidate + incumbent runs at one seed offset) per candidate.
    #[arg(long, default_value_t = 4)]
    pub max_pairs: usize,
    /// Paired rule: the smallest improvement worth keeping, in bits per byte.
    #[arg(long, default_value_t = 0.0)]
    pub min_effect: f64,
    /// Baseline runs (at seed offsets 0..K) at the start of a session: the first pairs' and
    /// the noise estimate's reference.
    #[arg(long, default_value_t = 3)]
    pub baseline_runs: usize,
    /// Hard limit per run in seconds, fixed when the session is created (default: twice the
    /// budget plus the start-up allowance plus 60).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Cargo features of the train crate (cuda, wgpu).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Budget of a new session: time:<seconds>s (the profile's default), tokens:<n> (the same
    /// result on a busy machine) or flops:<x>. Fixed for the whole session.
    #[arg(long)]
    pub budget: Option<String>,
    /// Scoring variant of a new session: full or audited (default: the profile's).
    #[arg(long)]
    pub scoring: Option<String>,
    /// Create the session even where the kernel cannot confine the training runs (landlock
    /// ABI >= 3 and seccomp). Fixed for the session and journaled; refused per call.
    #[arg(long)]
    pub allow_unconfined: bool,
}

impl SessionArgs {
    pub fn options(&self, agent: &str) -> Result<Options> {
        let strict = match self.rule.as_str() {
            "paired" | "noise" => false,
            "strict" => true,
            other => bail!("--rule {other}: use paired or strict"),
        };
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            bail!("--alpha {}: use a false-keep rate between 0 and 0.5, e.g. 0.05", self.alpha);
        }
        if self.min_effect < 0.0 || self.max_pairs == 0 {
            bail!("--min-effect must not be negative and --max-pairs must be at least 1");
        }
        Ok(Options {
            profile: Profile::by_name(&self.profile)?,
            rule: Rule {
                paired: stats::Rule {
                    alpha: self.alpha,
                    max_pairs: if strict { 1 } else { self.max_pairs },
                    min_effect: self.min_effect,
                    strict,
                    direction: Direction::Minimize,
                },
                baseline_runs: if strict { 1 } else { self.baseline_runs.max(1) },
            },
            timeout: self.timeout.map(Duration::from_secs),
            features: self.features.clone(),
            agent: agent.to_string(),
            budget: self.budget.as_deref().map(prepare::Budget::parse).transpose()?,
            scoring: self.scoring.as_deref().map(prepare::profile::Scoring::parse).transpose()?,
            allow_unconfined: self.allow_unconfined,
        })
    }
}
