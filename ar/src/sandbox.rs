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
    /// What the child may read and execute.
    pub read: ReadAccess,
    /// Allow the network. `false` for every training run.
    pub network: bool,
    /// Deny setsid/setpgid and metadata changes (chmod, chown, utime, xattr).
    pub confine_process: bool,
}

/// What a sandboxed child may read and execute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ReadAccess {
    #[default]
    Everywhere,
    Only(Vec<PathBuf>),
    Except(Vec<PathBuf>),
}

/// `ar`'s environment reduced to what a child needs, plus `extra`.
pub fn child_env(extra: &[(&str, &std::ffi::OsStr)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let keep = |k: &str| {
        matches!(k, "PATH" | "HOME" | "USER" | "LOGNAME" | "LANG" | "LANGUAGE" | "TZ" | "TERM" | "RUST_BACKTRACE")
            || k.starts_with("LC_")
            || k.starts_with("CUDA_")
            || k.starts_with("NVIDIA_")
            || k.starts_with("WGPU_")
            || k == "VK_ICD_FILENAMES"
            || k == "RAYON_NUM_THREADS"
            || k == "KERNELS_ISA"
    };
    let mut out: Vec<(std::ffi::OsString, std::ffi::OsString)> =
        std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(keep)).collect();
    for (k, v) in extra {
        out.retain(|(key, _)| key != k);
        out.push(((*k).into(), (*v).to_os_string()));
    }
    out
}

impl Report {
    /// True when writes (landlock ABI >= 3) and the network are both enforced.
    pub fn complete(&self) -> bool {
        self.filesystem.is_enforced() && self.network.is_enforced()
    }

    /// What is missing, in plain sentences.
    pub fn gaps(&self) -> Vec<String> {
        self.warnings()
    }
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
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::CommandExt;
    use std::path::Path;

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

    // ---------------------------------------------------------------------------------
    // Landlock (Documentation/userspace-api/landlock.rst; ABI 1 = Linux 5.13)

    mod landlock {
        use super::*;

        const CREATE_RULESET_VERSION: u32 = 1 << 0;
        const RULE_PATH_BENEATH: libc::c_int = 1;

        const FS_EXECUTE: u64 = 1 << 0;
        const FS_WRITE_FILE: u64 = 1 << 1;
        const FS_READ_FILE: u64 = 1 << 2;
        const FS_REMOVE_DIR: u64 = 1 << 4;
        const FS_REMOVE_FILE: u64 = 1 << 5;
        const FS_MAKE_CHAR: u64 = 1 << 6;
        const FS_MAKE_DIR: u64 = 1 << 7;
        const FS_MAKE_REG: u64 = 1 << 8;
        const FS_MAKE_SOCK: u64 = 1 << 9;
        const FS_MAKE_FIFO: u64 = 1 << 10;
        const FS_MAKE_BLOCK: u64 = 1 << 11;
        const FS_MAKE_SYM: u64 = 1 << 12;
        /// ABI 2: link/rename across directories. Unhandled in ABI 1, where it is always denied.
        const FS_REFER: u64 = 1 << 13;
        /// ABI 3: truncate(2), ftruncate(2), O_TRUNC. Unhandled (so allowed anywhere) before.
        const FS_TRUNCATE: u64 = 1 << 14;
        /// ABI 5: ioctl on device files. Deliberately not handled: GPU drivers live on ioctl.
        const FS_IOCTL_DEV: u64 = 1 << 15;
        /// The rights that apply to a file (a rule on a non-directory may hold only these).
        const FS_FILE_RIGHTS: u64 = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV;

        /// ABI 4: TCP. Handled with no rule, so every bind and connect is denied.
        const NET_BIND_TCP: u64 = 1 << 0;
        const NET_CONNECT_TCP: u64 = 1 << 1;
        /// ABI 6: no connecting to abstract unix sockets created outside the sandbox.
        const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
        /// ABI 6: no signals to processes outside the sandbox (e.g. `ar` itself).
        const SCOPE_SIGNAL: u64 = 1 << 1;

        /// The newest ABI whose rights we know; a newer kernel is used at this level.
        const KNOWN_ABI: u32 = 7;

        #[repr(C)]
        struct RulesetAttr {
            handled_access_fs: u64,
            handled_access_net: u64,
            scoped: u64,
        }

        /// The kernel declares this struct packed: 12 bytes, not 16.
        #[repr(C, packed)]
        struct PathBeneathAttr {
            allowed_access: u64,
            parent_fd: i32,
        }

        /// The write rights an ABI can confine. Reading and executing are left unhandled,
        /// which is how landlock says "allowed everywhere".
        fn write_rights(abi: u32) -> u64 {
            let mut rights = FS_WRITE_FILE
                | FS_REMOVE_DIR
                | FS_REMOVE_FILE
                | FS_MAKE_CHAR
                | FS_MAKE_DIR
                | FS_MAKE_REG
                | FS_MAKE_SOCK
                | FS_MAKE_FIFO
                | FS_MAKE_BLOCK
                | FS_MAKE_SYM;
            if abi >= 2 {
                rights |= FS_REFER;
            }
            if abi >= 3 {
                rights |= FS_TRUNCATE;
            }
            rights
        }

        pub fn abi() -> Result<u32, String> {
            // SAFETY: with a null attribute, size 0 and the VERSION flag the kernel reads no
            // memory and returns the ABI version.
            let abi = unsafe {
                libc::syscall(
                    libc::SYS_landlock_create_ruleset,
                    std::ptr::null::<RulesetAttr>(),
                    0usize,
                    CREATE_RULESET_VERSION,
                )
            };
            if abi >= 1 {
                return Ok(abi as u32);
            }
            let err = io::Error::last_os_error();
            Err(match err.raw_os_error() {
                Some(libc::ENOSYS) => "this kernel has no landlock (needs Linux 5.13+ with \
                                       CONFIG_SECURITY_LANDLOCK)"
                    .to_string(),
                Some(libc::EOPNOTSUPP) => "landlock is built in but disabled at boot (add `landlock` \
                                           to the kernel's `lsm=` parameter)"
                    .to_string(),
                _ => format!("landlock_create_ruleset: {err}"),
            })
        }

        /// Device nodes the child may open for writing (only writing: no truncating, no
        /// creating). `/dev/null` and `/dev/zero` because every shell redirects to them and
        /// some allocators map `/dev/zero`; GPU nodes because CUDA, ROCm and DRM open them
        /// read-write. Not `/dev/tty` or `/dev/pts`: output goes through the inherited stdout
        /// and stderr, and the user's other terminals are none of the child's business.
        fn device_paths() -> Vec<PathBuf> {
            let mut paths: Vec<PathBuf> = ["/dev/null", "/dev/zero", "/dev/dri", "/dev/kfd", "/dev/accel"]
                .iter()
                .map(PathBuf::from)
                .collect();
            if let Ok(entries) = std::fs::read_dir("/dev") {
                for entry in entries.flatten() {
                    if entry.file_name().to_string_lossy().starts_with("nvidia") {
                        paths.push(entry.path());
                    }
                }
            }
            paths.sort();
            paths
        }

        /// Builds the ruleset for `policy` at `abi` (capped at what we know). Returns the
        /// ruleset fd (close-on-exec, as landlock always makes it) and a description.
        pub fn ruleset(abi: u32, policy: &Policy) -> Result<(OwnedFd, String), String> {
            let abi = abi.min(KNOWN_ABI);
            let handled_fs = write_rights(abi);
            let mut attr = RulesetAttr { handled_access_fs: handled_fs, handled_access_net: 0, scoped: 0 };
            if abi >= 4 && !policy.network {
                attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP;
            }
            if abi >= 6 {
                attr.scoped = SCOPE_SIGNAL;
                if !policy.network {
                    attr.scoped |= SCOPE_ABSTRACT_UNIX_SOCKET;
                }
            }
            // SAFETY: `attr` is a live RulesetAttr and we pass its exact size. Older kernels
            // accept the larger struct because the fields they do not know are zero.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_landlock_create_ruleset,
                    &attr as *const RulesetAttr,
                    std::mem::size_of::<RulesetAttr>(),
                    0u32,
                )
            };
            if fd < 0 {
                return Err(format!("landlock_create_ruleset (ABI {abi}): {}", io::Error::last_os_error()));
            }
            // SAFETY: the kernel just returned this fd to us and nothing else owns it.
            let ruleset = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as libc::c_int) };

            let mut granted = Vec::new();
            let mut skipped = Vec::new();
            for path in &policy.writable {
                match add_rule(&ruleset, path, handled_fs) {
                    Ok(()) => granted.push(path.display().to_string()),
                    Err(e) => skipped.push(format!("{}: {e}", path.display())),
                }
            }
            let mut devices = Vec::new();
            for path in device_paths() {
                // Absent devices are the norm (no GPU): not worth a word.
                if add_rule(&ruleset, &path, FS_WRITE_FILE).is_ok() {
                    devices.push(path.display().to_string());
                }
            }

            let mut how = format!("landlock ABI {abi}; writable: {}", granted.join(", "));
            if granted.is_empty() {
                how.push_str("nothing");
            }
            how.push_str(&format!("; write-only: {}", devices.join(", ")));
            if !skipped.is_empty() {
                how.push_str(&format!("; NOT writable (skipped): {}", skipped.join(", ")));
            }
            if abi < 2 {
                how.push_str("; ABI 1 denies every rename or link across directories");
            }
            if abi < 3 {
                how.push_str("; truncate(2) is not confined before ABI 3");
            }
            if abi >= 6 {
                how.push_str("; signals scoped");
            }
            Ok((ruleset, how))
        }

        /// Allows `rights` beneath `path` (only the file rights if `path` is not a directory).
        fn add_rule(ruleset: &OwnedFd, path: &Path, rights: u64) -> io::Result<()> {
            // O_PATH: a handle on the inode without the right to read it (and std adds
            // O_CLOEXEC). Symlinks are followed: the rule lands on the target.
            let file = File::options().read(true).custom_flags(libc::O_PATH).open(path)?;
            let allowed = if file.metadata()?.is_dir() { rights } else { rights & FS_FILE_RIGHTS };
            let attr = PathBeneathAttr { allowed_access: allowed, parent_fd: file.as_raw_fd() };
            // SAFETY: both fds are open for the duration of the call and `attr` is a live,
            // packed PathBeneathAttr as the kernel expects.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_landlock_add_rule,
                    ruleset.as_raw_fd(),
                    RULE_PATH_BENEATH,
                    &attr as *const PathBeneathAttr,
                    0u32,
                )
            };
            if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
        }

        /// In the forked child: enters the landlock domain, then closes the ruleset fd so
        /// the exec'd program never holds it (it is close-on-exec as well).
        pub fn restrict_self(ruleset: libc::c_int) -> io::Result<()> {
            // SAFETY: integer arguments only; `ruleset` is open (inherited from the parent).
            if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: this is the child's copy of the fd; the parent's stays open and owned.
            // The child's OwnedFd is never dropped: exec replaces the image.
            unsafe { libc::close(ruleset) };
            Ok(())
        }
    }

    // ---------------------------------------------------------------------------------
    // Seccomp (Documentation/userspace-api/seccomp_filter.rst)

    mod seccomp {
        use super::*;

        /// `AUDIT_ARCH_*` of the architecture we were compiled for: a syscall made with any
        /// other calling convention (e.g. 32-bit `int 0x80` on x86_64) has other numbers, so
        /// the filter kills the process instead of guessing.
        #[cfg(target_arch = "x86_64")]
        const AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
        #[cfg(target_arch = "aarch64")]
        const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        const AUDIT_ARCH: Option<u32> = None;

        /// x32 syscalls arrive with AUDIT_ARCH_X86_64 and this bit set in the number.
        #[cfg(target_arch = "x86_64")]
        const X32_SYSCALL_BIT: u32 = 0x4000_0000;

        /// Offsets in `struct seccomp_data`.
        const OFFSET_NR: u32 = 0;
        const OFFSET_ARCH: u32 = 4;
        /// The low 32 bits of args[0] (the kernel reads `int family` from there).
        #[cfg(target_endian = "little")]
        const OFFSET_ARG0_LO: u32 = 16;
        #[cfg(target_endian = "big")]
        const OFFSET_ARG0_LO: u32 = 20;

        pub fn available() -> Result<(), String> {
            if AUDIT_ARCH.is_none() {
                return Err("no seccomp filter for this CPU architecture (x86_64 and aarch64 only)".into());
            }
            for action in [libc::SECCOMP_RET_ERRNO, libc::SECCOMP_RET_KILL_PROCESS] {
                // SAFETY: the kernel reads one u32 from a live local.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_seccomp,
                        libc::SECCOMP_GET_ACTION_AVAIL,
                        0u32,
                        &action as *const u32,
                    )
                };
                if rc != 0 {
                    return Err(format!(
                        "seccomp filters unavailable (needs Linux 4.14+ with CONFIG_SECCOMP_FILTER): {}",
                        io::Error::last_os_error()
                    ));
                }
            }
            Ok(())
        }

        /// Jump targets in the filter, resolved to offsets by `assemble`.
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        enum Label {
            Native,
            CheckFamily,
            Allow,
            DenyEnosys,
            Kill,
        }

        /// Classic BPF, the few instructions we need.
        enum Op {
            /// A = the 32-bit word at this offset of `struct seccomp_data`.
            Load(u32),
            /// if A == k goto label, else fall through.
            JumpIfEq(u32, Label),
            /// if A >= k goto label, else fall through.
            #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
            JumpIfGe(u32, Label),
            /// return k (the seccomp action).
            Ret(u32),
            /// Marks where a label points; emits nothing.
            At(Label),
        }

        /// The filter: foreign arch or x32 → kill; socket/socketpair → allowed for AF_UNIX,
        /// EACCES otherwise; io_uring → ENOSYS (callers fall back as on old kernels);
        /// everything else → allowed.
        pub fn program() -> Vec<libc::sock_filter> {
            use Label::*;
            let Some(arch) = AUDIT_ARCH else { unreachable!("available() refuses unknown architectures") };
            let mut ops =
                vec![Op::Load(OFFSET_ARCH), Op::JumpIfEq(arch, Native), Op::Ret(KILL), Op::At(Native)];
            ops.push(Op::Load(OFFSET_NR));
            #[cfg(target_arch = "x86_64")]
            ops.push(Op::JumpIfGe(X32_SYSCALL_BIT, Kill));
            ops.extend([
                Op::JumpIfEq(libc::SYS_socket as u32, CheckFamily),
                Op::JumpIfEq(libc::SYS_socketpair as u32, CheckFamily),
                Op::JumpIfEq(libc::SYS_io_uring_setup as u32, DenyEnosys),
                Op::JumpIfEq(libc::SYS_io_uring_enter as u32, DenyEnosys),
                Op::JumpIfEq(libc::SYS_io_uring_register as u32, DenyEnosys),
                Op::Ret(libc::SECCOMP_RET_ALLOW),
                Op::At(CheckFamily),
                Op::Load(OFFSET_ARG0_LO),
                Op::JumpIfEq(libc::AF_UNIX as u32, Allow),
                Op::Ret(libc::SECCOMP_RET_ERRNO | libc::EACCES as u32),
                Op::At(DenyEnosys),
                Op::Ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
                Op::At(Kill),
                Op::Ret(KILL),
                Op::At(Allow),
                Op::Ret(libc::SECCOMP_RET_ALLOW),
            ]);
            assemble(&ops)
        }

        const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

        /// Two passes: place the labels, then emit with forward jump offsets (classic BPF
        /// only jumps forward, at most 255 instructions).
        fn assemble(ops: &[Op]) -> Vec<libc::sock_filter> {
            let mut at = Vec::new();
            let mut pc = 0usize;
            for op in ops {
                match op {
                    Op::At(label) => at.push((*label, pc)),
                    _ => pc += 1,
                }
            }
            let target = |label: Label, pc: usize| -> u8 {
                let (_, to) = at.iter().find(|(l, _)| *l == label).expect("every label is placed");
                u8::try_from(to.checked_sub(pc + 1).expect("BPF jumps forward only"))
                    .expect("jump fits in u8")
            };
            let insn = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter { code: code as u16, jt, jf, k };
            let mut out = Vec::with_capacity(pc);
            for op in ops {
                let pc = out.len();
                out.push(match *op {
                    Op::Load(offset) => insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, offset),
                    Op::JumpIfEq(k, label) => {
                        insn(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, target(label, pc), 0, k)
                    }
                    Op::JumpIfGe(k, label) => {
                        insn(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, target(label, pc), 0, k)
                    }
                    Op::Ret(k) => insn(libc::BPF_RET | libc::BPF_K, 0, 0, k),
                    Op::At(_) => continue,
                });
            }
            out
        }

        /// In the forked child: installs `filter`. Asks the kernel not to force speculative
        /// execution mitigations on the training run (SPEC_ALLOW, Linux 4.17+): they cost
        /// speed and protect the sandboxed process from others, which is not our concern.
        pub fn install(filter: &[libc::sock_filter]) -> io::Result<()> {
            let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut _ };
            let set_filter = |flags: libc::c_ulong| -> io::Result<()> {
                // SAFETY: `prog` points at `filter`, which lives in memory the child copied
                // from the parent and outlives this call.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_seccomp,
                        libc::SECCOMP_SET_MODE_FILTER,
                        flags,
                        &prog as *const libc::sock_fprog,
                    )
                };
                if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
            };
            match set_filter(libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW) {
                // Kernels before 4.17 do not know the flag.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => set_filter(0),
                other => other,
            }
        }

        #[cfg(test)]
        mod tests {
            use super::*;

            #[test]
            fn test_filter_checks_arch_first_and_every_path_returns() {
                if AUDIT_ARCH.is_none() {
                    return;
                }
                let prog = program();
                assert!(prog.len() < 64, "{} instructions", prog.len());
                let load = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
                assert_eq!((prog[0].code, prog[0].k), (load, OFFSET_ARCH));
                assert_eq!(prog[1].k, AUDIT_ARCH.unwrap());
                let ret = (libc::BPF_RET | libc::BPF_K) as u16;
                assert_eq!((prog[2].code, prog[2].k), (ret, KILL));
                assert_eq!(prog.last().unwrap().code, ret, "the program must end in a return");
                for (pc, insn) in prog.iter().enumerate() {
                    if insn.code & 0x07 == libc::BPF_JMP as u16 {
                        for off in [insn.jt, insn.jf] {
                            assert!(pc + 1 + (off as usize) < prog.len(), "jump at {pc} leaves the program");
                        }
                    }
                }
            }
        }
    }
}
