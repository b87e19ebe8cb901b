//! Seccomp, the system-call half of the sandbox (Documentation/userspace-api/seccomp_filter.rst):
//! a classic-BPF filter built in the parent and installed by the child between fork and exec.

use std::io;

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
/// The low 32 bits of args[0] and args[1]: the kernel reads `int family` of socketpair and
/// `unsigned int cmd` of ioctl from there, so high bits cannot smuggle a value past us.
#[cfg(target_endian = "little")]
const OFFSET_ARG0_LO: u32 = 16;
#[cfg(target_endian = "big")]
const OFFSET_ARG0_LO: u32 = 20;
const OFFSET_ARG1_LO: u32 = OFFSET_ARG0_LO + 8;

pub fn available() -> Result<(), String> {
    if AUDIT_ARCH.is_none() {
        return Err("no seccomp filter for this CPU architecture (x86_64 and aarch64 only)".into());
    }
    for action in [libc::SECCOMP_RET_ERRNO, libc::SECCOMP_RET_KILL_PROCESS] {
        // SAFETY: the kernel reads one u32 from a live local.
        let rc = unsafe {
            libc::syscall(libc::SYS_seccomp, libc::SECCOMP_GET_ACTION_AVAIL, 0u32, &action as *const u32)
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

/// What the filter refuses, beyond the foreign calling conventions it always kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// `socket()` fails with EACCES for every address family; `socketpair()` only for
    /// AF_UNIX (a pair needs no address, so it reaches nothing outside).
    pub deny_network: bool,
    /// `setsid`/`setpgid` and the metadata families fail with EPERM.
    pub confine_process: bool,
}

impl Rules {
    /// Whether a filter is worth installing at all.
    pub fn any(&self) -> bool {
        self.deny_network || self.confine_process
    }
}

/// Syscalls that are not in libc 0.2.191's tables for every architecture we build for. The
/// numbers come from the shared table every architecture has used since Linux 5.1 (424+), so
/// they are the same on x86_64 and aarch64.
const SYS_FCHMODAT2: u32 = 452; // Linux 6.6
const SYS_SETXATTRAT: u32 = 463; // Linux 6.13
const SYS_REMOVEXATTRAT: u32 = 466; // Linux 6.13
const SYS_FILE_SETATTR: u32 = 469; // Linux 6.17: the fsxattr flags (immutable, append-only)

/// The process and metadata system calls `confine_process` refuses with EPERM.
///
/// - `setsid`, `setpgid`: `ar` kills the child's whole process group after every run; a
///   process that moves to a group of its own would outlive it (training off the books,
///   holding the cores the next candidate is timed on).
/// - chmod, chown, utime and xattr families: landlock does not confine metadata, so without
///   this a child could `chmod 000` the journal or set far-future mtimes on cargo's
///   fingerprints (a stale binary, every later experiment a crash). Training needs none of them:
///   files it creates get their mode from `open`, their times from the writes.
///
/// x86_64 still has the pre-`*at` calls; aarch64 was born without them.
fn process_syscalls() -> Vec<u32> {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut nrs = vec![
        libc::SYS_setsid,
        libc::SYS_setpgid,
        libc::SYS_fchmod,
        libc::SYS_fchmodat,
        libc::SYS_fchown,
        libc::SYS_fchownat,
        libc::SYS_utimensat,
        libc::SYS_setxattr,
        libc::SYS_lsetxattr,
        libc::SYS_fsetxattr,
        libc::SYS_removexattr,
        libc::SYS_lremovexattr,
        libc::SYS_fremovexattr,
    ];
    #[cfg(target_arch = "x86_64")]
    nrs.extend([
        libc::SYS_chmod,
        libc::SYS_chown,
        libc::SYS_lchown,
        libc::SYS_utime,
        libc::SYS_utimes,
        libc::SYS_futimesat,
    ]);
    let mut nrs: Vec<u32> = nrs.into_iter().map(|nr| nr as u32).collect();
    nrs.extend([SYS_FCHMODAT2, SYS_SETXATTRAT, SYS_REMOVEXATTRAT, SYS_FILE_SETATTR]);
    nrs
}

/// The ioctls that set inode flags (`chattr`): the same metadata family through another
/// door. They need only a read-only descriptor, and as root they can make the journal
/// immutable or append-only. The kernel reads `unsigned int cmd`, so the low word decides.
const FS_IOC_SETFLAGS: u32 = 0x4008_6602; // _IOW('f', 2, long)
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602; // _IOW('f', 2, int)
const FS_IOC_FSSETXATTR: u32 = 0x401C_5820; // _IOW('X', 32, struct fsxattr)

/// Jump targets in the filter, resolved to offsets by `assemble`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Native,
    PairFamily,
    IoctlCmd,
    Allow,
    DenyEacces,
    DenyEperm,
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

/// The filter: foreign arch or x32 → kill; io_uring → ENOSYS (callers fall back as on old
/// kernels; it could otherwise open sockets or set xattrs behind the filter's back); then
/// `rules`; everything else → allowed.
pub fn program(rules: Rules) -> Vec<libc::sock_filter> {
    use Label::*;
    let Some(arch) = AUDIT_ARCH else { unreachable!("available() refuses unknown architectures") };
    let mut ops = vec![Op::Load(OFFSET_ARCH), Op::JumpIfEq(arch, Native), Op::Ret(KILL), Op::At(Native)];
    ops.push(Op::Load(OFFSET_NR));
    #[cfg(target_arch = "x86_64")]
    ops.push(Op::JumpIfGe(X32_SYSCALL_BIT, Kill));
    ops.extend([
        Op::JumpIfEq(libc::SYS_io_uring_setup as u32, DenyEnosys),
        Op::JumpIfEq(libc::SYS_io_uring_enter as u32, DenyEnosys),
        Op::JumpIfEq(libc::SYS_io_uring_register as u32, DenyEnosys),
    ]);
    if rules.deny_network {
        ops.push(Op::JumpIfEq(libc::SYS_socket as u32, DenyEacces));
        ops.push(Op::JumpIfEq(libc::SYS_socketpair as u32, PairFamily));
    }
    if rules.confine_process {
        ops.extend(process_syscalls().into_iter().map(|nr| Op::JumpIfEq(nr, DenyEperm)));
        ops.push(Op::JumpIfEq(libc::SYS_ioctl as u32, IoctlCmd));
    }
    ops.push(Op::Ret(libc::SECCOMP_RET_ALLOW));
    if rules.deny_network {
        ops.extend([
            Op::At(PairFamily),
            Op::Load(OFFSET_ARG0_LO),
            Op::JumpIfEq(libc::AF_UNIX as u32, Allow),
            Op::At(DenyEacces),
            Op::Ret(libc::SECCOMP_RET_ERRNO | libc::EACCES as u32),
        ]);
    }
    if rules.confine_process {
        ops.extend([
            Op::At(IoctlCmd),
            Op::Load(OFFSET_ARG1_LO),
            Op::JumpIfEq(FS_IOC_SETFLAGS, DenyEperm),
            Op::JumpIfEq(FS_IOC32_SETFLAGS, DenyEperm),
            Op::JumpIfEq(FS_IOC_FSSETXATTR, DenyEperm),
            Op::Ret(libc::SECCOMP_RET_ALLOW),
            Op::At(DenyEperm),
            Op::Ret(libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        ]);
    }
    ops.extend([
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
        u8::try_from(to.checked_sub(pc + 1).expect("BPF jumps forward only")).expect("jump fits in u8")
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

    const ALL: [Rules; 4] = [
        Rules { deny_network: false, confine_process: false },
        Rules { deny_network: true, confine_process: false },
        Rules { deny_network: false, confine_process: true },
        Rules { deny_network: true, confine_process: true },
    ];

    #[test]
    fn test_filter_checks_arch_first_and_every_path_returns() {
        if AUDIT_ARCH.is_none() {
            return;
        }
        for rules in ALL {
            let prog = program(rules);
            assert!(prog.len() < 128, "{rules:?}: {} instructions", prog.len());
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

    /// Runs `prog` on a `struct seccomp_data` the way the kernel would (for the instructions
    /// `assemble` emits), so every rule can be checked without a process per case.
    fn verdict(prog: &[libc::sock_filter], nr: i64, args: [u64; 2]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as u32).to_ne_bytes());
        data[4..8].copy_from_slice(&AUDIT_ARCH.unwrap().to_ne_bytes());
        data[16..24].copy_from_slice(&args[0].to_ne_bytes());
        data[24..32].copy_from_slice(&args[1].to_ne_bytes());
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let insn = prog[pc];
            let code = u32::from(insn.code);
            pc += 1;
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                let k = insn.k as usize;
                a = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
            } else if code == libc::BPF_RET | libc::BPF_K {
                return insn.k;
            } else {
                let taken = match code {
                    c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => a == insn.k,
                    c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => a >= insn.k,
                    other => panic!("unexpected BPF opcode {other:#x}"),
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
        }
    }

    #[test]
    fn test_filter_verdicts_for_every_rule() {
        if AUDIT_ARCH.is_none() {
            return;
        }
        const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
        let errno = |e: i32| libc::SECCOMP_RET_ERRNO | e as u32;
        let unix = libc::AF_UNIX as u64;
        let inet = libc::AF_INET as u64;
        for rules in ALL {
            let prog = program(rules);
            let v = |nr: i64, a0: u64, a1: u64| verdict(&prog, nr, [a0, a1]);
            let net = |denied: u32| if rules.deny_network { denied } else { ALLOW };
            let proc_ = |denied: u32| if rules.confine_process { denied } else { ALLOW };
            assert_eq!(v(libc::SYS_getpid, 0, 0), ALLOW, "{rules:?}");
            assert_eq!(v(libc::SYS_io_uring_setup, 4, 0), errno(libc::ENOSYS), "{rules:?}");
            assert_eq!(v(libc::SYS_socket, unix, 1), net(errno(libc::EACCES)), "{rules:?}");
            assert_eq!(v(libc::SYS_socket, inet, 1), net(errno(libc::EACCES)), "{rules:?}");
            assert_eq!(v(libc::SYS_socketpair, unix, 1), ALLOW, "{rules:?}");
            assert_eq!(v(libc::SYS_socketpair, (1 << 32) | unix, 1), ALLOW, "{rules:?}");
            assert_eq!(v(libc::SYS_socketpair, inet, 1), net(errno(libc::EACCES)), "{rules:?}");
            for nr in process_syscalls() {
                assert_eq!(v(i64::from(nr), 0, 0), proc_(errno(libc::EPERM)), "{rules:?} nr {nr}");
            }
            for cmd in [FS_IOC_SETFLAGS, FS_IOC32_SETFLAGS, FS_IOC_FSSETXATTR] {
                let high = (0xdead_u64 << 32) | u64::from(cmd);
                assert_eq!(v(libc::SYS_ioctl, 3, high), proc_(errno(libc::EPERM)), "{rules:?} {cmd:#x}");
            }
            const TIOCGWINSZ: u64 = 0x5413; // the same on x86_64 and aarch64
            assert_eq!(v(libc::SYS_ioctl, 1, TIOCGWINSZ), ALLOW, "an unrelated ioctl, {rules:?}");
            #[cfg(target_arch = "x86_64")]
            assert_eq!(v(libc::SYS_getpid | 0x4000_0000, 0, 0), KILL, "{rules:?}");
        }
    }
}
