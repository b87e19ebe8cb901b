//! Landlock, the filesystem half of the sandbox (Documentation/userspace-api/landlock.rst;
//! ABI 1 = Linux 5.13): builds, in the parent, the ruleset the child enters between fork and
//! exec.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::Policy;

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
