//! Options shared by `ar experiment` and `ar loop`: the profile, the keep rule, the run
//! timeout. They shape a session when it starts; afterwards the journal's values win.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use prepare::profile::{DEFAULT_PROFILE, Profile};

use crate::decide::Rule;
use crate::session::Options;

#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Profile (fixed constants) for a new session.
    #[arg(long, env = "AR_PROFILE", default_value = DEFAULT_PROFILE)]
    pub profile: String,
    /// Keep rule: `noise` (keep only beyond k·σ, confirmed) or `strict` (the original's
    /// "any improvement", for comparison).
    #[arg(long, default_value = "noise")]
    pub rule: String,
    /// Noise multiplier k: keep iff val_bpb < best − max(k·σ, min_delta).
    #[arg(long, default_value_t = 2.0)]
    pub k: f64,
    /// Smallest improvement ever kept, in bits per byte.
    #[arg(long, default_value_t = 0.001)]
    pub min_delta: f64,
    /// Baseline runs that estimate σ at the start of a session.
    #[arg(long, default_value_t = 2)]
    pub baseline_runs: usize,
    /// Keep on one run, without re-running to confirm.
    #[arg(long)]
    pub no_confirm: bool,
    /// Re-measure the incumbent every N keeps (0 = never).
    #[arg(long, default_value_t = 5)]
    pub remeasure_every: usize,
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
            "noise" => false,
            "strict" => true,
            other => bail!("--rule {other}: use noise or strict"),
        };
        if self.k < 0.0 || self.min_delta < 0.0 {
            bail!("--k and --min-delta must not be negative");
        }
        Ok(Options {
            profile: Profile::by_name(&self.profile)?,
            rule: Rule {
                strict,
                k: self.k,
                min_delta: self.min_delta,
                baseline_runs: self.baseline_runs.max(1),
                confirm: !self.no_confirm,
                remeasure_every: self.remeasure_every,
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
