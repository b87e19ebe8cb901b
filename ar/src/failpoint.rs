//! Failpoints for the crash-safety tests: `AR_FAILPOINT=<name>` makes `ar` kill itself with
//! SIGKILL — a real `kill -9`, no unwinding, no flushing — exactly at that point of an
//! experiment, so tests can prove that every phase resumes without loss or duplication.
//! Unset (always, outside tests), it costs one environment lookup per phase.

/// Kills this process with SIGKILL if `AR_FAILPOINT` names this point.
pub fn hit(name: &str) {
    if std::env::var("AR_FAILPOINT").is_ok_and(|v| v == name) {
        // SAFETY: sending a signal to ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
