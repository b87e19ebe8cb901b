//! The sandbox `ar` puts around the training child: writes only where the policy allows,
//! and no network.
//!
//! The train program is written by an agent, so `ar` runs it as untrusted code. On Linux,
//! [`apply`] arms a [`Command`] so that, between fork and exec, the child locks itself in:
//! - **filesystem** — landlock: reading and executing stay allowed everywhere; writing,
//!   creating, removing, renaming, linking and truncating are allowed only beneath
//!   [`Policy::writable`] (plus writing to `/dev/null`, `/dev/zero` and GPU device nodes);
//! - **network** — seccomp: `socket()`/`socketpair()` fail with EACCES for every address
//!   family but AF_UNIX, io_uring (which could issue socket operations behind the filter's
//!   back) fails with ENOSYS; where landlock has them, TCP bind/connect are also denied and
//!   abstract unix sockets are scoped to the sandbox.
//! - landlock also scopes signals, so the child cannot kill `ar` or the user's processes.
//!
//! Threat model. This stops a train program from editing anything outside its run
//! directory (`prepare/`, the journal, the repository, `~/.bashrc`), from exfiltrating or
//! downloading over the network, and from loosening any of it in a process it spawns
//! (the restrictions are inherited and can only be tightened). It does not stop reading
//! files the user can read, CPU or memory abuse (`ar`'s hard timeout handles runaway runs),
//! talking to local daemons over unix sockets that have a path (e.g. docker.sock), or
//! use of file descriptors the child inherits open (Rust opens everything close-on-exec),
//! or metadata changes — chmod, chown, utimes, xattrs — on files the user owns (landlock
//! does not cover them; contents stay intact).
//! The network confinement leans on the filesystem one: a child that can write anywhere
//! could plant code that runs later, outside the sandbox.
//!
//! Where the kernel lacks a mechanism, the child still runs and the [`Report`] says
//! `Unavailable(why)`, so `ar` can warn once instead of refusing to work.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};

mod env;

// Until the supervisor clears the child's environment with it, the binary does not use it.
#[allow(unused_imports)]
pub use env::child_env;

/// What the child may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Directories (or files) the child may write, create and delete beneath: its run
    /// directory and a scratch directory. Paths that do not exist are skipped (and named in
    /// the report): the child cannot write there either.
    ///
    /// Point the child's `TMPDIR` at the scratch directory (`/tmp` is not writable), and
    /// keep any log file its stdout or stderr goes to beneath `writable`: writing through
    /// the inherited descriptor always works, but reopening `/dev/stdout` checks the file.
    pub writable: Vec<PathBuf>,
    /// Allow the network. `false` for every training run.
    pub network: bool,
}

/// What [`apply`] actually enforced, per concern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub filesystem: Enforcement,
    pub network: Enforcement,
}

/// The outcome for one concern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "detail")]
pub enum Enforcement {
    /// Enforced by the named mechanism.
    Enforced(String),
    /// The policy asks for it but this kernel cannot do it; the child runs without it.
    Unavailable(String),
    /// The policy does not ask for it.
    Disabled,
}

impl Enforcement {
    pub fn is_enforced(&self) -> bool {
        matches!(self, Enforcement::Enforced(_))
    }
}

impl fmt::Display for Enforcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Enforcement::Enforced(how) => write!(f, "enforced ({how})"),
            Enforcement::Unavailable(why) => write!(f, "UNAVAILABLE ({why})"),
            Enforcement::Disabled => write!(f, "not requested"),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sandbox: filesystem {}; network {}", self.filesystem, self.network)
    }
}

impl Report {
    /// One line per missing protection, for the user. Print them once per session (see
    /// [`Report::warn_once`]): the kernel does not change between runs.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Enforcement::Unavailable(why) = &self.filesystem {
            out.push(format!(
                "sandbox: landlock unavailable ({why}); the training run can write anywhere your user can"
            ));
        }
        if let Enforcement::Unavailable(why) = &self.network {
            out.push(format!(
                "sandbox: network isolation unavailable ({why}); the training run can use the network"
            ));
        }
        out
    }

    /// Prints [`Report::warnings`] on stderr the first time a process calls this with
    /// something to say, and never again.
    pub fn warn_once(&self) {
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let warnings = self.warnings();
        if !warnings.is_empty() && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            for w in warnings {
                eprintln!("{w}");
            }
        }
    }
}

/// What the running kernel offers. [`KernelSupport::probe`] asks the kernel; tests inject
/// a kernel that says no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelSupport {
    /// The landlock ABI version, or why there is none.
    pub landlock_abi: Result<u32, String>,
    /// Whether seccomp filters (with the errno and kill-process actions) can be installed
    /// for this architecture, or why not.
    pub seccomp: Result<(), String>,
}

impl KernelSupport {
    pub fn probe() -> KernelSupport {
        imp::probe()
    }
}

/// Arms `cmd` with `policy` on this kernel. See [`apply_with`].
pub fn apply(cmd: &mut Command, policy: &Policy) -> Report {
    apply_with(cmd, policy, &KernelSupport::probe())
}

/// Arms `cmd` with `policy`, using only what `kernel` says is available.
///
/// Everything that allocates (opening the writable paths, the landlock ruleset and its
/// rules, the seccomp program) happens here, in the parent. The `pre_exec` hook that runs
/// in the forked child only makes system calls: `ar` is multi-threaded, and after fork a
/// lock held by another thread (the allocator's, say) would never be released.
///
/// A mechanism that fails to set up here is reported `Unavailable` and left out; the child
/// still runs. Once set up, a failure in the child (not expected: the same calls succeeded
/// in the parent) makes `spawn` fail rather than run the child unconfined.
pub fn apply_with(cmd: &mut Command, policy: &Policy, kernel: &KernelSupport) -> Report {
    imp::apply_with(cmd, policy, kernel)
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    const WHY: &str = "the sandbox is implemented for Linux only";

    pub fn probe() -> KernelSupport {
        KernelSupport { landlock_abi: Err(WHY.into()), seccomp: Err(WHY.into()) }
    }

    pub fn apply_with(_cmd: &mut Command, policy: &Policy, _kernel: &KernelSupport) -> Report {
        let network =
            if policy.network { Enforcement::Disabled } else { Enforcement::Unavailable(WHY.into()) };
        Report { filesystem: Enforcement::Unavailable(WHY.into()), network }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;

    use super::*;

    // ---------------------------------------------------------------------------------
    // Probing

    pub fn probe() -> KernelSupport {
        KernelSupport { landlock_abi: landlock::abi(), seccomp: seccomp::available() }
    }

    // ---------------------------------------------------------------------------------
    // Deciding and arming

    /// What the child does between fork and exec. Built in the parent; `enter` only makes
    /// system calls on data that already exists.
    struct Armed {
        ruleset: Option<OwnedFd>,
        filter: Option<Vec<libc::sock_filter>>,
    }

    impl Armed {
        /// Runs in the forked child: async-signal-safe system calls only, no allocation.
        fn enter(&self) -> io::Result<()> {
            // SAFETY: prctl with integer arguments touches no memory of ours. Required by
            // both landlock and seccomp for an unprivileged process, and it also makes
            // setuid binaries run without their privileges inside the sandbox.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(ruleset) = &self.ruleset {
                landlock::restrict_self(ruleset.as_raw_fd())?;
            }
            if let Some(filter) = &self.filter {
                seccomp::install(filter)?;
            }
            Ok(())
        }
    }

    pub fn apply_with(cmd: &mut Command, policy: &Policy, kernel: &KernelSupport) -> Report {
        let (ruleset, filesystem) = match &kernel.landlock_abi {
            Ok(abi) => match landlock::ruleset(*abi, policy) {
                Ok((fd, how)) => (Some(fd), Enforcement::Enforced(how)),
                Err(why) => (None, Enforcement::Unavailable(why)),
            },
            Err(why) => (None, Enforcement::Unavailable(why.clone())),
        };
        let (filter, network) = if policy.network {
            (None, Enforcement::Disabled)
        } else {
            let landlock_abi = if ruleset.is_some() { kernel.landlock_abi.clone().unwrap_or(0) } else { 0 };
            let landlock_net = landlock_abi >= 4;
            match &kernel.seccomp {
                Ok(()) => {
                    let mut how = "seccomp: socket() only for AF_UNIX, io_uring off".to_string();
                    if landlock_net {
                        how.push_str("; landlock: no TCP bind/connect");
                    }
                    if landlock_abi >= 6 {
                        how.push_str(", abstract unix sockets scoped");
                    }
                    (Some(seccomp::program()), Enforcement::Enforced(how))
                }
                Err(why) if landlock_net => (
                    None,
                    Enforcement::Unavailable(format!(
                        "{why}; landlock blocks TCP only, UDP and raw sockets stay open"
                    )),
                ),
                Err(why) => (None, Enforcement::Unavailable(why.clone())),
            }
        };
        if ruleset.is_some() || filter.is_some() {
            let armed = Armed { ruleset, filter };
            // SAFETY: the hook runs in the child between fork and exec, where only
            // async-signal-safe operations are allowed. `Armed::enter` makes system calls
            // (prctl, landlock_restrict_self, close, seccomp) on memory built before the
            // fork and creates `io::Error`s from errno, which does not allocate.
            unsafe {
                cmd.pre_exec(move || armed.enter());
            }
        }
        Report { filesystem, network }
    }
}

#[cfg(target_os = "linux")]
mod landlock;
#[cfg(target_os = "linux")]
mod seccomp;
