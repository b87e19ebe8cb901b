//! The sandbox `ar` puts around the training child: writes only where the policy allows,
//! reads only what the policy allows, no network, no escape from its process group, no
//! metadata changes, and an environment without `ar`'s secrets.
//!
//! The train program is written by an agent, so `ar` runs it as untrusted code. On Linux,
//! [`apply`] arms a [`Command`] so that, between fork and exec, the child locks itself in:
//! - **writes** (landlock, `sandbox/landlock.rs`): writing, creating, removing, renaming, linking and
//!   truncating are allowed only beneath [`Policy::writable`] (plus writing to `/dev/null`,
//!   `/dev/zero` and GPU device nodes);
//! - **reads** (landlock): reading and executing everywhere, only beneath an allowlist plus
//!   the system directories a program needs to start, or everywhere but a denylist
//!   ([`ReadAccess`]);
//! - **network** (seccomp, `sandbox/seccomp.rs`): `socket()` fails with EACCES for every address
//!   family, AF_UNIX included, so local daemons with a socket path (the systemd user bus,
//!   docker.sock, X11) are out of reach; `socketpair(AF_UNIX)` still works. io_uring, which
//!   could issue socket operations behind the filter's back, fails with ENOSYS. Where
//!   landlock has them, TCP bind/connect are also denied and abstract unix sockets scoped;
//! - **process** (seccomp): `setsid`/`setpgid` fail with EPERM, so the child and everything it
//!   starts stay in the process group `ar` kills after every run; chmod, chown, utime, xattr
//!   and `chattr` calls fail with EPERM (landlock does not cover metadata);
//! - landlock also scopes signals (ABI 6), so the child cannot kill `ar` or the user's
//!   processes, and, being a landlock domain, it cannot ptrace them;
//! - **environment** (`sandbox/env.rs`, applied by the caller): [`child_env`] is the allowlist of
//!   `ar`'s variables the child may see; API keys and session-bus addresses are not on it.
//!   The other way to them, `/proc/<pid>/environ` of `ar` or the user's shell, is closed only
//!   when reads are confined ([`ReadAccess::Only`] or [`ReadAccess::Except`] hide other
//!   processes' `/proc` directories): landlock's ptrace check lets `environ` through.
//!
//! Threat model. This stops a train program from editing anything outside its run
//! directory (`prepare/`, the journal, the repository, `~/.bashrc`), from reading what the
//! read policy hides (val/test shards, earlier runs), from exfiltrating or downloading over
//! the network or through a local daemon, from leaving processes behind, and from loosening
//! any of it in a process it spawns (the restrictions are inherited and can only be
//! tightened). It does not stop CPU or memory abuse (`ar`'s hard timeout handles runaway
//! runs), use of file descriptors the child inherits open (Rust opens everything
//! close-on-exec), or reading, with [`ReadAccess::Everywhere`], anything the user can read.
//! The network confinement leans on the filesystem one: a child that can write anywhere
//! could plant code that runs later, outside the sandbox.
//!
//! Where the kernel lacks a mechanism, the child still runs and the [`Report`] says
//! `Unavailable(why)`. [`Report::complete`] says whether the protections `ar` relies on all
//! hold; `ar` refuses to train on an incomplete report unless the user opted in, and
//! [`Report::gaps`] says, in sentences, what is missing.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};

// Explicit paths: tests/sandbox.rs and tests/agents.rs include this file with `#[path]`,
// and a path-included file looks for its children beside it, not in `sandbox/`.
#[path = "sandbox/env.rs"]
mod env;
#[cfg(target_os = "linux")]
#[path = "sandbox/landlock.rs"]
mod landlock;
#[cfg(target_os = "linux")]
#[path = "sandbox/seccomp.rs"]
mod seccomp;

// Until the supervisor clears the child's environment with it, the binary does not use it.
#[allow(unused_imports)]
pub use env::child_env;

// ---------------------------------------------------------------------------------------
// Policy

/// What the child may do.
///
/// `Default` is the strict end: nothing writable, reads everywhere (an allowlist needs paths
/// only the caller knows), no network, process confined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Directories/files the child may write, create, remove, rename beneath: its run
    /// directory and a scratch directory. Paths that do not exist are skipped (and named in
    /// the report): the child cannot write there either. The child may also read and execute
    /// beneath them, whatever [`Policy::read`] says.
    ///
    /// Point the child's `TMPDIR` at the scratch directory (`/tmp` is not writable), and
    /// keep any log file its stdout or stderr goes to beneath `writable`: writing through
    /// the inherited descriptor always works, but reopening `/dev/stdout` checks the file.
    pub writable: Vec<PathBuf>,
    /// What the child may read and execute.
    pub read: ReadAccess,
    /// false: socket() fails with EACCES for EVERY address family (AF_UNIX included);
    /// socketpair(AF_UNIX, …) stays allowed (pipes and socketpairs need no address);
    /// io_uring ENOSYS; landlock TCP bind/connect denied (ABI>=4); abstract unix sockets
    /// scoped (ABI>=6).
    pub network: bool,
    /// true: setsid(2) and setpgid(2) fail with EPERM (the child cannot leave the process
    /// group `ar` kills after every run), and the metadata families fail with EPERM: chmod,
    /// fchmod, fchmodat, fchmodat2, chown, fchown, lchown, fchownat, utime, utimes, utimensat,
    /// futimesat, setxattr, lsetxattr, fsetxattr, removexattr, lremovexattr, fremovexattr, and
    /// setxattrat / removexattrat where the syscall numbers exist (x86_64 and aarch64). The
    /// same doors to inode flags go too: file_setattr(2) and the `chattr` ioctls
    /// (FS_IOC_SETFLAGS, FS_IOC_FSSETXATTR). io_uring fails with ENOSYS (it can set xattrs).
    ///
    /// `Command::process_group(0)` on the child still works: std calls setpgid before the
    /// sandbox is entered.
    pub confine_process: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { writable: Vec::new(), read: ReadAccess::Everywhere, network: false, confine_process: true }
    }
}

/// What the child may read and execute (landlock's READ_FILE, READ_DIR and EXECUTE, all
/// ABI 1). The writable paths are always readable too. When reads are confined at all, the
/// `/proc` directories of other processes are not readable (their `environ` holds the
/// user's secrets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReadAccess {
    /// Reading and executing allowed everywhere (the rights are left unhandled).
    #[default]
    Everywhere,
    /// Only beneath these paths (files or directories; symlinks are followed), plus the
    /// system set the sandbox adds itself, enough for a dynamically linked Rust binary,
    /// rayon, glibc's locale and NSS files, and GPU user-space drivers to start:
    ///
    /// - `/usr`, `/lib`, `/lib64`, `/lib32`, `/libx32`, `/bin`, `/sbin`: programs, the
    ///   dynamic loader and shared libraries, locale data, `/usr/share/vulkan` ICD files,
    ///   `/usr/local/cuda`;
    /// - `/etc`: `ld.so.cache`, `nsswitch.conf`, `passwd`, `localtime`, `/etc/vulkan`,
    ///   `/etc/OpenCL`;
    /// - `/sys`, and `/proc` but other processes' directories: CPU counts (rayon reads cgroup
    ///   limits), memory info, PCI and DRM topology for GPU drivers, the child's own
    ///   `/proc/self`. Processes the child starts cannot read their own `/proc/<pid>` (the
    ///   child adds its rule between fork and exec; theirs would come too late);
    /// - `/opt`: vendor installs (ROCm, CUDA, oneAPI);
    /// - `/run/nvidia*`: the NVIDIA persistence daemon's and driver's runtime files;
    /// - from `/dev`, only the device nodes: `/dev/null`, `/dev/zero`, `/dev/full`,
    ///   `/dev/random`, `/dev/urandom`, and the GPU nodes (`/dev/dri`, `/dev/kfd`,
    ///   `/dev/accel`, `/dev/nvidia*`). Not `/dev` as a whole: running as root, that would
    ///   hand out the raw disks, and the files hidden here with them.
    ///
    /// System paths this machine lacks are skipped silently; missing paths of the list are
    /// skipped and named in the report.
    Only(Vec<PathBuf>),
    /// Everything readable except beneath these paths. Landlock only allows, so the sandbox
    /// walks from `/` down to each denied path (canonicalised first) and adds a read rule
    /// for every sibling not on the way to a denied path. A denied path that does not exist
    /// is skipped and named in the report.
    ///
    /// Other processes' `/proc` directories are never readable, as with [`ReadAccess::Only`].
    ///
    /// Limits: entries created later in a directory on the way (a "split" directory) are
    /// not readable, and a split directory cannot be listed (its other entries can still be
    /// opened by name). Hard links and bind mounts of a denied file elsewhere stay readable,
    /// and so do block devices to root: hide data with [`ReadAccess::Only`] where it matters.
    Except(Vec<PathBuf>),
    /// As [`ReadAccess::Except`], but every directory on the way to a denied path can still
    /// be listed. Landlock rights are inherited, so listing is then allowed beneath those
    /// directories too, denied ones included: the *names* beneath a denied path are visible,
    /// its files' contents are not readable (nor executable).
    ///
    /// For programs that list their working directory to start at all: Python's importer
    /// finds a module beside the script by listing its directory, so a repository whose
    /// root is split (its `.autoresearch/` or a held-out path is denied) could not import
    /// its own modules under [`ReadAccess::Except`].
    ExceptFiles(Vec<PathBuf>),
}

// ---------------------------------------------------------------------------------------
// Report

/// What [`apply`] actually enforced, per concern. `ar` journals it with every run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Writing, creating, removing, renaming, truncating (landlock).
    pub filesystem: Enforcement,
    /// Reading and executing (landlock); `Disabled` with [`ReadAccess::Everywhere`].
    pub filesystem_read: Enforcement,
    /// Sockets and io_uring (seccomp, helped by landlock).
    pub network: Enforcement,
    /// setsid/setpgid and the metadata families (seccomp).
    pub process: Enforcement,
    /// The landlock ABI the ruleset was built at (capped at the newest this module knows),
    /// or `None` when no ruleset was installed.
    #[serde(default)]
    pub landlock_abi: Option<u32>,
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
        write!(
            f,
            "sandbox: writes {}; reads {}; network {}; process {}",
            self.filesystem, self.filesystem_read, self.network, self.process
        )
    }
}

/// Truncation is confined from landlock ABI 3 (Linux 6.2); below it a child can empty any
/// file the user can write, the journal included.
const COMPLETE_LANDLOCK_ABI: u32 = 3;
/// Signals are scoped from landlock ABI 6 (Linux 6.12).
const SIGNAL_SCOPE_ABI: u32 = 6;

impl Report {
    /// True when the protections `ar` relies on all hold: landlock (ABI 3 or newer) confines
    /// writes, seccomp enforces the network and process rules, and a read restriction the
    /// policy asked for is in force. Exactly when [`Report::gaps`] is empty.
    ///
    /// A policy that allows the network or leaves the process unconfined is not complete
    /// either: "complete" is the bar for a scored training run, not "as asked".
    pub fn complete(&self) -> bool {
        self.gaps().is_empty()
    }

    /// Why [`Report::complete`] is false, one plain sentence per missing protection, each
    /// saying what the training run can do as a result. Empty when complete.
    pub fn gaps(&self) -> Vec<String> {
        let mut out = Vec::new();
        match (&self.filesystem, self.landlock_abi) {
            (Enforcement::Enforced(_), Some(abi)) if abi < COMPLETE_LANDLOCK_ABI => out.push(format!(
                "Landlock ABI {abi} cannot confine truncate(2) (ABI {COMPLETE_LANDLOCK_ABI}, Linux 6.2, can): \
                 the training run can empty any file your user can write."
            )),
            (Enforcement::Enforced(_), _) => {}
            (Enforcement::Unavailable(why), _) => out.push(format!(
                "Landlock is unavailable ({why}): the training run can write anywhere your user can."
            )),
            (Enforcement::Disabled, _) => {
                out.push("Writes are not confined: the training run can write anywhere your user can.".into())
            }
        }
        if let Enforcement::Unavailable(why) = &self.filesystem_read {
            out.push(format!(
                "Read restrictions are unavailable ({why}): the training run can read every file your user can."
            ));
        }
        match &self.network {
            Enforcement::Enforced(_) => {}
            Enforcement::Unavailable(why) => out.push(format!(
                "Network isolation is unavailable ({why}): the training run can open sockets, \
                 local daemons' included."
            )),
            Enforcement::Disabled => {
                out.push("The policy allows the network: the training run can open sockets.".into())
            }
        }
        let process = "the training run can leave its process group and outlive the run, and change \
                       the permissions, times and extended attributes of files your user owns";
        match &self.process {
            Enforcement::Enforced(_) => {}
            Enforcement::Unavailable(why) => {
                out.push(format!("Process confinement is unavailable ({why}): {process}."))
            }
            Enforcement::Disabled => out.push(format!("The policy does not confine the process: {process}.")),
        }
        out
    }

    /// One line per missing protection, for the user: every gap, plus weaknesses that do not
    /// make the report incomplete (signals are not scoped before landlock ABI 6). Print them
    /// once per session (see [`Report::warn_once`]): the kernel does not change between runs.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self.gaps().into_iter().map(|gap| format!("sandbox: {gap}")).collect();
        if let Some(abi) = self.landlock_abi.filter(|abi| *abi < SIGNAL_SCOPE_ABI) {
            out.push(format!(
                "sandbox: landlock ABI {abi} does not scope signals (ABI {SIGNAL_SCOPE_ABI}, Linux 6.12, does): \
                 the training run can signal `ar` and your other processes."
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

// ---------------------------------------------------------------------------------------
// Applying

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
/// Everything that allocates (opening the writable and readable paths, walking the
/// directories a [`ReadAccess::Except`] splits, the landlock ruleset and its rules, the
/// seccomp program) happens here, in the parent. The `pre_exec` hook that runs in the
/// forked child only makes system calls: `ar` is multi-threaded, and after fork a lock held
/// by another thread (the allocator's, say) would never be released.
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
        let unavailable_unless = |asked: bool| {
            if asked { Enforcement::Unavailable(WHY.into()) } else { Enforcement::Disabled }
        };
        Report {
            filesystem: Enforcement::Unavailable(WHY.into()),
            filesystem_read: unavailable_unless(policy.read != ReadAccess::Everywhere),
            network: unavailable_unless(!policy.network),
            process: unavailable_unless(policy.confine_process),
            landlock_abi: None,
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;

    use super::*;

    pub fn probe() -> KernelSupport {
        KernelSupport { landlock_abi: landlock::abi(), seccomp: seccomp::available() }
    }

    /// What the child does between fork and exec. Built in the parent; `enter` only makes
    /// system calls on data that already exists.
    struct Armed {
        ruleset: Option<OwnedFd>,
        /// Add a rule for the child's own `/proc/<pid>` first (reads are confined).
        proc_self: bool,
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
                if self.proc_self {
                    landlock::allow_proc_self(ruleset.as_raw_fd())?;
                }
                landlock::restrict_self(ruleset.as_raw_fd())?;
            }
            if let Some(filter) = &self.filter {
                seccomp::install(filter)?;
            }
            Ok(())
        }
    }

    pub fn apply_with(cmd: &mut Command, policy: &Policy, kernel: &KernelSupport) -> Report {
        let wants_reads = policy.read != ReadAccess::Everywhere;
        let unavailable_unless = |asked: bool, why: &str| {
            if asked { Enforcement::Unavailable(why.to_string()) } else { Enforcement::Disabled }
        };

        // Landlock: writes, reads, TCP, scopes.
        let built = match &kernel.landlock_abi {
            Ok(abi) => landlock::ruleset(*abi, policy),
            Err(why) => Err(why.clone()),
        };
        let (ruleset, proc_self, filesystem, filesystem_read, landlock_abi) = match built {
            Ok(built) => (
                Some(built.fd),
                built.proc_self,
                Enforcement::Enforced(built.writes),
                built.reads.map_or(Enforcement::Disabled, Enforcement::Enforced),
                Some(built.abi),
            ),
            Err(why) => {
                let reads = unavailable_unless(wants_reads, &why);
                (None, false, Enforcement::Unavailable(why), reads, None)
            }
        };

        // Seccomp: sockets, io_uring, process groups, metadata.
        let rules = seccomp::Rules { deny_network: !policy.network, confine_process: policy.confine_process };
        let abi = landlock_abi.unwrap_or(0);
        let (filter, network, process) = match &kernel.seccomp {
            Ok(()) if rules.any() => {
                let network = if rules.deny_network {
                    let mut how =
                        "seccomp: socket() refused for every family, socketpair() only AF_UNIX, io_uring off"
                            .to_string();
                    if abi >= 4 {
                        how.push_str("; landlock: no TCP bind/connect");
                    }
                    if abi >= 6 {
                        how.push_str(", abstract unix sockets scoped");
                    }
                    Enforcement::Enforced(how)
                } else {
                    Enforcement::Disabled
                };
                let process = if rules.confine_process {
                    Enforcement::Enforced(
                        "seccomp: setsid/setpgid refused; chmod, chown, utime, xattr families and chattr \
                         ioctls refused; io_uring off"
                            .into(),
                    )
                } else {
                    Enforcement::Disabled
                };
                (Some(seccomp::program(rules)), network, process)
            }
            Ok(()) => (None, Enforcement::Disabled, Enforcement::Disabled),
            Err(why) => {
                let network = if rules.deny_network && abi >= 4 {
                    Enforcement::Unavailable(format!(
                        "{why}; landlock blocks TCP only, UDP, raw and unix sockets stay open"
                    ))
                } else {
                    unavailable_unless(rules.deny_network, why)
                };
                (None, network, unavailable_unless(rules.confine_process, why))
            }
        };

        if ruleset.is_some() || filter.is_some() {
            let armed = Armed { ruleset, proc_self, filter };
            // SAFETY: the hook runs in the child between fork and exec, where only
            // async-signal-safe operations are allowed. `Armed::enter` makes system calls
            // (prctl, open, landlock_add_rule, landlock_restrict_self, close, seccomp) on
            // memory built before the fork or on its own stack, and creates `io::Error`s
            // from errno, which does not allocate.
            unsafe {
                cmd.pre_exec(move || armed.enter());
            }
        }
        Report { filesystem, filesystem_read, network, process, landlock_abi }
    }
}
