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
