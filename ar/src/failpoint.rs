//! Failpoints for the crash-safety tests: `AR_FAILPOINT=<name>` makes `ar` kill itself with
//! SIGKILL — a real `kill -9`, no unwinding, no flushing — exactly at that point of an
//! experiment, so tests can prove that every phase resumes without loss or duplication.
//! `AR_FAILPOINT=sigint:<name>` sends SIGINT instead, once: a user's Ctrl-C at that exact
//! point, which `ar` must turn into one clean stop. Unset (always, outside tests), it costs
//! one environment lookup per phase.

use std::sync::atomic::{AtomicBool, Ordering};

static SIGINT_SENT: AtomicBool = AtomicBool::new(false);

/// Kills this process with SIGKILL (or interrupts it with SIGINT) if `AR_FAILPOINT` names
/// this point.
pub fn hit(name: &str) {
    let Ok(value) = std::env::var("AR_FAILPOINT") else { return };
    if value == name {
        // SAFETY: sending a signal to ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    } else if value.strip_prefix("sigint:") == Some(name) && !SIGINT_SENT.swap(true, Ordering::SeqCst) {
        // Once: a second SIGINT would be the user's "exit now", not what is tested.
        // SAFETY: sending a signal to ourselves.
        unsafe { libc::kill(libc::getpid(), libc::SIGINT) };
    }
}
