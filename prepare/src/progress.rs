//! Progress reporting, as uv does it: the library reports through a small trait and only
//! the binary draws bars. `ar` implements [`Reporter`] with indicatif; tests and the train
//! program use [`Quiet`] or [`Plain`].

/// What a bar counts, so the binary can format it (bytes get KiB/MiB and a rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Items,
}

/// One progress bar.
pub trait Progress: Send + Sync {
    /// The total became known (or changed).
    fn set_total(&self, total: u64);
    /// `n` more units are done.
    fn inc(&self, n: u64);
    /// The work done so far was thrown away (a download restarted from zero).
    fn restart(&self);
    /// Attempt `attempt` of `attempts` failed for `cause`; another may follow after a wait.
    fn retrying(&self, attempt: u32, attempts: u32, cause: &str) {
        let _ = (attempt, attempts, cause);
    }
    /// The bar is done.
    fn finish(&self) {}
}

/// Where `prepare` reports what it is doing.
pub trait Reporter: Send + Sync {
    /// A headline for a stage ("Data: downloading 11 shards").
    fn step(&self, msg: &str);
    /// A detail line.
    fn info(&self, msg: &str);
    /// Something the user should know about but that does not stop the work.
    fn warn(&self, msg: &str);
    /// A new progress bar.
    fn bar(&self, label: &str, total: Option<u64>, unit: Unit) -> Box<dyn Progress>;
}

/// A progress bar that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn set_total(&self, _: u64) {}
    fn inc(&self, _: u64) {}
    fn restart(&self) {}
}

/// Reports nothing at all.
pub struct Quiet;

impl Reporter for Quiet {
    fn step(&self, _: &str) {}
    fn info(&self, _: &str) {}
    fn warn(&self, _: &str) {}
    fn bar(&self, _: &str, _: Option<u64>, _: Unit) -> Box<dyn Progress> {
        Box::new(NoProgress)
    }
}

/// Plain lines on stderr, no bars: for logs and non-terminal output.
pub struct Plain;

impl Reporter for Plain {
    fn step(&self, msg: &str) {
        eprintln!("{msg}");
    }
    fn info(&self, msg: &str) {
        eprintln!("  {msg}");
    }
    fn warn(&self, msg: &str) {
        eprintln!("warning: {msg}");
    }
    fn bar(&self, _: &str, _: Option<u64>, _: Unit) -> Box<dyn Progress> {
        Box::new(NoProgress)
    }
}
