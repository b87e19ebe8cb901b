//! Landlock, the filesystem half of the sandbox (Documentation/userspace-api/landlock.rst;
//! ABI 1 = Linux 5.13): builds, in the parent, the ruleset the child enters between fork and
//! exec. Writes are always confined; reads and execution when the policy says so; TCP and
//! abstract unix sockets (without network) and signals where the ABI has them.
//!
//! Landlock only ever allows: a right the ruleset handles is denied everywhere no rule
//! grants it, and rules attach to inodes (a rule on a directory covers everything beneath
//! it, however the path is spelled, symlinks resolved).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Policy, ReadAccess};

const CREATE_RULESET_VERSION: u32 = 1 << 0;
const RULE_PATH_BENEATH: libc::c_int = 1;

const FS_EXECUTE: u64 = 1 << 0;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_READ_FILE: u64 = 1 << 2;
const FS_READ_DIR: u64 = 1 << 3;
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

/// Reading a file, listing a directory, executing: all ABI 1. Handled only when the policy
/// confines reads; left unhandled, landlock allows them everywhere.
const READ_RIGHTS: u64 = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR;

/// The write rights an ABI can confine; [`READ_RIGHTS`] join them when reads are confined.
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
/// creating), and read when reads are confined. `/dev/null` and `/dev/zero` because every
/// shell redirects to them and some allocators map `/dev/zero`; GPU nodes because CUDA,
/// ROCm and DRM open them read-write (and list `/dev/dri`). Not `/dev/tty` or `/dev/pts`:
/// output goes through the inherited stdout and stderr, and the user's other terminals are
/// none of the child's business.
fn device_paths() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> =
        ["/dev/null", "/dev/zero", "/dev/dri", "/dev/kfd", "/dev/accel"].iter().map(PathBuf::from).collect();
    paths.extend(entries_starting_with("/dev", "nvidia"));
    paths.sort();
    paths
}

/// Devices that are read, never written: entropy for libraries that do not use getrandom(2),
/// and `/dev/full` for the odd test of write errors.
const READ_ONLY_DEVICES: [&str; 3] = ["/dev/full", "/dev/random", "/dev/urandom"];

/// The directories [`ReadAccess::Only`] adds by itself; see its documentation for why each.
/// Not `/dev`: only the nodes of [`device_paths`] and [`READ_ONLY_DEVICES`]. Not `/proc` as
/// a whole: see [`proc_rules`].
fn system_read_paths() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> =
        ["/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/etc", "/sys", "/opt"]
            .iter()
            .map(PathBuf::from)
            .collect();
    paths.extend(entries_starting_with("/run", "nvidia"));
    paths
}

fn entries_starting_with(dir: &str, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
        .map(|entry| entry.path())
        .collect();
    paths.sort();
    paths
}

/// `/proc` when reads are confined: every entry but the process directories, so the child
/// cannot read `/proc/<pid>/environ` (API keys), `cmdline` or `maps` of `ar`, the agent or the
/// user's shell. Landlock's own ptrace check does not cover this: on Linux 6.18 it refuses
/// `/proc/<pid>/mem` of a process outside the sandbox but lets `environ` through.
///
/// The child's own directory is added by the child itself ([`allow_proc_self`]), once it
/// has a pid. `self` and `thread-self` are symlinks and get no rule; they resolve to it.
/// Returns how many rules were added, or why `/proc` could not be listed (then nothing in
/// it is readable but the child's own directory: fail closed).
fn proc_rules(ruleset: &OwnedFd) -> Result<usize, String> {
    let entries = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    let mut rules = 0;
    for entry in entries.flatten() {
        if is_pid(&entry.file_name()) || entry.file_type().is_ok_and(|t| t.is_symlink()) {
            continue;
        }
        if add_rule(ruleset, &entry.path(), READ_RIGHTS).is_ok() {
            rules += 1;
        }
    }
    Ok(rules)
}

/// Whether a `/proc` entry is a process directory.
fn is_pid(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()))
}

/// In the forked child, before [`restrict_self`]: lets the child read its own `/proc/<pid>`
/// (its maps, status, cgroup: std, rayon and allocators read them). Processes it starts
/// later have other pids and cannot read theirs; none of the training stack needs that.
///
/// The rule lands in the ruleset the parent built (the fd is shared), so a `Command`
/// spawned twice also grants the earlier child's directory, which dies with that child.
pub fn allow_proc_self(ruleset: libc::c_int) -> io::Result<()> {
    // SAFETY: a NUL-terminated static path and integer flags; the fd is closed below.
    let fd =
        unsafe { libc::open(c"/proc/self".as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let attr = PathBeneathAttr { allowed_access: READ_RIGHTS, parent_fd: fd };
    // SAFETY: both fds are open and `attr` is a live packed PathBeneathAttr on our stack.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: we opened this fd above and nothing else holds it.
    unsafe { libc::close(fd) };
    if rc != 0 { Err(err) } else { Ok(()) }
}

/// A ruleset built for a policy, and what it enforces.
pub struct Built {
    /// Close-on-exec, as landlock always makes it.
    pub fd: OwnedFd,
    /// The ABI it was built at: the kernel's, capped at [`KNOWN_ABI`].
    pub abi: u32,
    /// What is writable, for the report.
    pub writes: String,
    /// What is readable, or `None` when reading is allowed everywhere.
    pub reads: Option<String>,
    /// Whether the child must add its own `/proc/<pid>` ([`allow_proc_self`]): reads are
    /// confined.
    pub proc_self: bool,
}

/// Builds the ruleset for `policy` at `abi` (capped at what we know).
pub fn ruleset(abi: u32, policy: &Policy) -> Result<Built, String> {
    let abi = abi.min(KNOWN_ABI);
    let confine_reads = policy.read != ReadAccess::Everywhere;
    let mut handled_fs = write_rights(abi);
    if confine_reads {
        handled_fs |= READ_RIGHTS;
    }
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
    let device_rights =
        if confine_reads { FS_WRITE_FILE | FS_READ_FILE | FS_READ_DIR } else { FS_WRITE_FILE };
    let mut devices = Vec::new();
    for path in device_paths() {
        // Absent devices are the norm (no GPU): not worth a word.
        if add_rule(&ruleset, &path, device_rights).is_ok() {
            devices.push(path.display().to_string());
        }
    }

    let mut writes = format!("landlock ABI {abi}; writable: {}", granted.join(", "));
    if granted.is_empty() {
        writes.push_str("nothing");
    }
    writes.push_str(&format!("; devices: {}", devices.join(", ")));
    if !skipped.is_empty() {
        writes.push_str(&format!("; NOT writable (skipped): {}", skipped.join(", ")));
    }
    if abi < 2 {
        writes.push_str("; ABI 1 denies every rename or link across directories");
    }
    if abi < 3 {
        writes.push_str("; truncate(2) is not confined before ABI 3");
    }
    if abi >= 6 {
        writes.push_str("; signals scoped");
    }

    let reads = match &policy.read {
        ReadAccess::Everywhere => None,
        ReadAccess::Only(paths) => Some(read_only_beneath(&ruleset, abi, paths)),
        ReadAccess::Except(paths) => Some(read_all_except(&ruleset, abi, paths, false)),
        ReadAccess::ExceptFiles(paths) => Some(read_all_except(&ruleset, abi, paths, true)),
    };
    // Without a /proc (some containers) there is no own directory to add, and the child
    // must not fail trying.
    let proc_self = confine_reads && Path::new("/proc/self").is_dir();
    Ok(Built { fd: ruleset, abi, writes, reads, proc_self })
}

/// [`ReadAccess::Only`]: a read rule per listed path, per system path, per device.
fn read_only_beneath(ruleset: &OwnedFd, abi: u32, paths: &[PathBuf]) -> String {
    let mut granted = Vec::new();
    let mut skipped = Vec::new();
    for path in paths {
        match add_rule(ruleset, path, READ_RIGHTS) {
            Ok(()) => granted.push(path.display().to_string()),
            Err(e) => skipped.push(format!("{}: {e}", path.display())),
        }
    }
    // A system path this machine lacks (/lib32, /opt) is normal: not worth a word.
    let system: Vec<String> = system_read_paths()
        .into_iter()
        .filter(|path| add_rule(ruleset, path, READ_RIGHTS).is_ok())
        .map(|path| path.display().to_string())
        .collect();
    for device in READ_ONLY_DEVICES {
        let _ = add_rule(ruleset, Path::new(device), FS_READ_FILE);
    }
    let mut how = format!(
        "landlock ABI {abi}: read and execute only beneath {}, the writable paths, the devices, \
         the system set ({}) and {}",
        if granted.is_empty() { "nothing".to_string() } else { granted.join(", ") },
        system.join(", "),
        describe_proc(proc_rules(ruleset)),
    );
    if !skipped.is_empty() {
        how.push_str(&format!("; NOT readable (skipped): {}", skipped.join(", ")));
    }
    how
}

fn describe_proc(rules: Result<usize, String>) -> String {
    match rules {
        Ok(_) => "/proc but other processes' directories".to_string(),
        Err(e) => format!("only the child's own /proc directory (could not list {e})"),
    }
}

/// [`ReadAccess::Except`]: read rules on everything but the denied paths, found by walking
/// from `/` down to each of them. Symlinks get no rule: a rule on one would land on its
/// target, which may sit inside a denied path, and every target is covered where it lives.
/// With `listable`, each split directory gets a listing-only rule (see
/// [`ReadAccess::ExceptFiles`]).
fn read_all_except(ruleset: &OwnedFd, abi: u32, paths: &[PathBuf], listable: bool) -> String {
    let mut denied = Vec::new();
    let mut skipped = Vec::new();
    for path in paths {
        match std::fs::canonicalize(path) {
            Ok(canonical) => denied.push(canonical),
            Err(e) => skipped.push(format!("{}: {e}", path.display())),
        }
    }
    let mut walk = Walk {
        ruleset,
        denied: &denied,
        rules: 0,
        split: Vec::new(),
        failed: Vec::new(),
        proc: None,
        listable,
    };
    walk.visit(Path::new("/"));
    let mut how = format!(
        "landlock ABI {abi}: read and execute everywhere except {} and other processes' /proc \
         directories ({} rules); entries created later in {} are not readable, and those \
         directories {}",
        if denied.is_empty() {
            "nothing".to_string()
        } else {
            denied.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        },
        walk.rules,
        walk.split.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        if listable {
            "can be listed (so can every directory beneath them: names, not contents)"
        } else {
            "cannot be listed"
        },
    );
    if !skipped.is_empty() {
        how.push_str(&format!("; nothing to deny (skipped): {}", skipped.join(", ")));
    }
    if !walk.failed.is_empty() {
        how.push_str(&format!("; NOT readable (no rule): {}", walk.failed.join(", ")));
    }
    if let Some(Err(e)) = walk.proc {
        how.push_str(&format!("; {}", describe_proc(Err(e))));
    }
    how
}

/// The walk of [`read_all_except`].
struct Walk<'a> {
    ruleset: &'a OwnedFd,
    denied: &'a [PathBuf],
    rules: usize,
    /// Directories on the way to a denied path: listed, not granted.
    split: Vec<PathBuf>,
    /// What could not be listed or granted, so stays unreadable (fail closed).
    failed: Vec<String>,
    /// `/proc`, handled by [`proc_rules`] when the walk meets it.
    proc: Option<Result<usize, String>>,
    /// Give split directories a listing-only rule.
    listable: bool,
}

impl Walk<'_> {
    /// `path` is canonical: `/`, or an entry of a split directory that is not a symlink.
    fn visit(&mut self, path: &Path) {
        if self.denied.iter().any(|denied| denied == path) {
            return;
        }
        let proc = Path::new("/proc");
        let leads_to_denied = self.denied.iter().any(|denied| denied.starts_with(path));
        if path == proc && !leads_to_denied {
            let rules = proc_rules(self.ruleset);
            self.rules += rules.as_ref().copied().unwrap_or(0);
            self.proc = Some(rules);
            return;
        }
        // `/` always leads to `/proc`, which is never granted whole.
        if !leads_to_denied && !proc.starts_with(path) {
            match add_rule(self.ruleset, path, READ_RIGHTS) {
                Ok(()) => self.rules += 1,
                // Gone since it was listed: nothing left to read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => self.failed.push(format!("{}: {e}", path.display())),
            }
            return;
        }
        self.split.push(path.to_path_buf());
        if self.listable {
            match add_rule(self.ruleset, path, FS_READ_DIR) {
                Ok(()) => self.rules += 1,
                Err(e) => self.failed.push(format!("listing {}: {e}", path.display())),
            }
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                self.failed.push(format!("everything in {}: {e}", path.display()));
                return;
            }
        };
        for entry in entries.flatten() {
            let other_process = path == proc && is_pid(&entry.file_name());
            if !other_process && entry.file_type().is_ok_and(|t| !t.is_symlink()) {
                self.visit(&entry.path());
            }
        }
    }
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
