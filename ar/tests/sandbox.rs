//! The training child's sandbox, proven on real processes: shells that try to write where
//! they may not, bash's `/dev/tcp` and `/dev/udp` against listeners this test opens, and
//! this test binary re-executed as an adversarial child that probes the kernel directly
//! (socket families, io_uring, foreign syscall ABIs, attempts to loosen the sandbox).
//!
//! Every network test first runs the same command unsandboxed and checks that it does
//! reach the listener, so a pass means the sandbox stopped it, not that the test was blind.
//! Tests that need landlock or seccomp print an explicit SKIPPED line on kernels without
//! them; on the development machine (Linux 6.18, landlock ABI 7) they all run.

#![cfg(target_os = "linux")]

#[path = "../src/sandbox/mod.rs"]
#[allow(dead_code)]
mod sandbox;

use std::io::ErrorKind;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sandbox::{Enforcement, KernelSupport, Policy, Report, apply, apply_with};

// ---------------------------------------------------------------------------------------
// Fixtures

/// A temp tree: `run/` is writable, `outside/` (a sibling, same tempdir) is not and holds
/// `keep.txt`, whose content must survive every attempt.
struct Tree {
    _root: tempfile::TempDir,
    run: PathBuf,
    outside: PathBuf,
}

const KEEP: &str = "original content\n";

impl Tree {
    fn new() -> Tree {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("run");
        let outside = root.path().join("outside");
        std::fs::create_dir(&run).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep.txt"), KEEP).unwrap();
        std::fs::write(run.join("mine.txt"), "mine\n").unwrap();
        Tree { _root: root, run, outside }
    }

    fn policy(&self) -> Policy {
        Policy { writable: vec![self.run.clone()], network: false }
    }

    fn keep(&self) -> String {
        std::fs::read_to_string(self.outside.join("keep.txt")).unwrap_or_else(|e| format!("<{e}>"))
    }

    /// `outside/` lists exactly `keep.txt` and it holds the original content.
    fn assert_outside_untouched(&self, what: &str) {
        let mut names: Vec<String> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["keep.txt"], "{what}: outside/ changed");
        assert_eq!(self.keep(), KEEP, "{what}: outside/keep.txt changed");
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `program args…` under `policy` in `dir`, with the tree's paths in the environment.
fn run_in(program: &str, args: &[&str], policy: &Policy, tree: &Tree) -> (Report, Output) {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&tree.run)
        .env("RUN", &tree.run)
        .env("OUT", &tree.outside)
        .stdin(Stdio::null());
    let report = apply(&mut cmd, policy);
    (report, cmd.output().unwrap_or_else(|e| panic!("{program} does not start: {e}")))
}

fn sh(script: &str, tree: &Tree) -> Output {
    run_in("/bin/sh", &["-c", script], &tree.policy(), tree).1
}

fn bash(script: &str, policy: &Policy, tree: &Tree) -> Output {
    run_in("/bin/bash", &["-c", script], policy, tree).1
}

/// True when this kernel can enforce both halves; otherwise says loudly that the calling
/// test is skipped.
fn enforceable(test: &str) -> bool {
    let k = KernelSupport::probe();
    match (&k.landlock_abi, &k.seccomp) {
        (Ok(_), Ok(())) => true,
        _ => {
            eprintln!("SKIPPED {test}: this kernel cannot sandbox ({k:?})");
            false
        }
    }
}

// ---------------------------------------------------------------------------------------
// The adversarial child: this test binary, re-executed with HELPER_ENV set

const HELPER_ENV: &str = "AR_SANDBOX_TEST_HELPER";

/// Not a test: the entry point of the re-executed child. Does nothing in a normal run.
#[test]
fn helper_child_entry_point() {
    if let Ok(what) = std::env::var(HELPER_ENV) {
        let code = child::run(&what);
        std::process::exit(code);
    }
}

/// Runs this test binary as the child, doing `what`; its findings are `key=value` lines.
fn helper(what: &str, policy: &Policy, tree: &Tree) -> (Report, Output) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "helper_child_entry_point", "--nocapture", "--test-threads=1", "-q"])
        .env(HELPER_ENV, what)
        .env("RUN", &tree.run)
        .env("OUT", &tree.outside)
        .stdin(Stdio::null());
    let report = apply(&mut cmd, policy);
    (report, cmd.output().unwrap())
}

/// The value of `key=` in the helper's output.
fn finding(out: &Output, key: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{key}=");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("helper said nothing about {key}:\n{}", text(out)))
        .to_string()
}

mod child {
    //! What the re-executed child does. It prints `key=ok` or `key=<errno name>`.

    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::PathBuf;

    fn errno_name(e: i32) -> String {
        match e {
            libc::EACCES => "EACCES".into(),
            libc::EPERM => "EPERM".into(),
            libc::ENOSYS => "ENOSYS".into(),
            libc::EAFNOSUPPORT => "EAFNOSUPPORT".into(),
            libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
            libc::EINVAL => "EINVAL".into(),
            libc::EROFS => "EROFS".into(),
            libc::ENOENT => "ENOENT".into(),
            other => format!("errno{other}"),
        }
    }

    fn report(key: &str, rc: i64) {
        if rc < 0 {
            println!("{key}={}", errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
        } else {
            println!("{key}=ok");
        }
    }

    /// socket(domain, type, 0) through the raw syscall, so `domain` can carry high bits.
    fn socket(key: &str, domain: u64, ty: i32, proto: i32) {
        // SAFETY: integer arguments only.
        let fd = unsafe { libc::syscall(libc::SYS_socket, domain, ty, proto) };
        report(key, fd);
        if fd >= 0 {
            // SAFETY: we own the fd just created.
            unsafe { libc::close(fd as i32) };
        }
    }

    fn sockets() {
        socket("inet_tcp", libc::AF_INET as u64, libc::SOCK_STREAM, 0);
        socket("inet_udp", libc::AF_INET as u64, libc::SOCK_DGRAM, 0);
        socket("inet6_tcp", libc::AF_INET6 as u64, libc::SOCK_STREAM, 0);
        socket("inet6_udp", libc::AF_INET6 as u64, libc::SOCK_DGRAM, 0);
        socket("netlink", libc::AF_NETLINK as u64, libc::SOCK_RAW, libc::NETLINK_ROUTE);
        socket("packet", libc::AF_PACKET as u64, libc::SOCK_RAW, 0);
        socket("vsock", libc::AF_VSOCK as u64, libc::SOCK_STREAM, 0);
        // The kernel reads `int family`: high bits must not smuggle AF_INET past the filter.
        socket("inet_high_bits", (1u64 << 32) | libc::AF_INET as u64, libc::SOCK_STREAM, 0);
        socket("unix_stream", libc::AF_UNIX as u64, libc::SOCK_STREAM, 0);
        socket("unix_dgram", libc::AF_UNIX as u64, libc::SOCK_DGRAM, 0);

        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors.
        let rc = unsafe { libc::socketpair(libc::AF_INET, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        report("socketpair_inet", rc as i64);

        // AF_UNIX really works: a pair, and a listener on a path in the run directory.
        let ok = (|| -> std::io::Result<()> {
            let (mut a, mut b) = UnixStream::pair()?;
            a.write_all(b"ping")?;
            let mut buf = [0u8; 4];
            b.read_exact(&mut buf)?;
            assert_eq!(&buf, b"ping");
            let path = PathBuf::from(std::env::var("RUN").unwrap()).join("helper.sock");
            let listener = UnixListener::bind(&path)?;
            let mut c = UnixStream::connect(&path)?;
            let (mut s, _) = listener.accept()?;
            c.write_all(b"pong")?;
            s.read_exact(&mut buf)?;
            assert_eq!(&buf, b"pong");
            Ok(())
        })();
        println!("unix_roundtrip={}", if ok.is_ok() { "ok".into() } else { format!("{ok:?}") });

        // io_uring could open sockets without passing through socket(2).
        let mut params = [0u8; 120]; // struct io_uring_params
        // SAFETY: the kernel writes at most sizeof(io_uring_params) = 120 bytes into `params`.
        let rc = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
        report("io_uring_setup", rc);
        if rc >= 0 {
            // SAFETY: we own the ring fd just created.
            unsafe { libc::close(rc as i32) };
        }
    }

    /// Everyday work a training run does: threads, a subprocess, reading files anywhere.
    fn work() {
        let sums: Vec<u64> = (0..4u64)
            .map(|t| std::thread::spawn(move || (0..1_000_000u64).map(|i| i ^ t).sum::<u64>()))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        println!("threads={}", if sums.len() == 4 { "ok" } else { "short" });
        let sub = std::process::Command::new("/bin/sh").args(["-c", "echo sub-$((6*7))"]).output();
        println!(
            "subprocess={}",
            match sub {
                Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "sub-42" => "ok".to_string(),
                other => format!("{other:?}"),
            }
        );
        // Outside the writable tree, like the cache; and our own binary.
        let outside = PathBuf::from(std::env::var("OUT").unwrap()).join("keep.txt");
        let read = std::fs::read_to_string(outside)
            .and_then(|_| std::fs::read(std::env::current_exe()?))
            .and_then(|_| std::fs::read_to_string("/proc/self/status"));
        println!("read_anywhere={}", if read.is_ok() { "ok".into() } else { format!("{read:?}") });
        let run = PathBuf::from(std::env::var("RUN").unwrap());
        let wrote = std::fs::write(run.join("record.json"), "{}")
            .and_then(|()| std::fs::rename(run.join("record.json"), run.join("record2.json")));
        println!("write_run={}", if wrote.is_ok() { "ok".into() } else { format!("{wrote:?}") });
    }

    /// The kernel's view of us, and the descriptors we hold.
    fn status() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        for key in ["NoNewPrivs", "Seccomp"] {
            let v = status.lines().find_map(|l| l.strip_prefix(&format!("{key}:"))).unwrap_or("?").trim();
            println!("{key}={v}");
        }
        let mut fds = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            if let Ok(target) = std::fs::read_link(entry.path()) {
                fds.push(target.display().to_string());
            }
        }
        println!(
            "landlock_fd={}",
            if fds.iter().any(|t| t.contains("landlock")) { "leaked" } else { "none" }
        );
        println!("fds={}", fds.join(","));
        // The parent is the test process, outside the sandbox.
        // SAFETY: signal 0 only checks permission; integer arguments.
        let rc = unsafe { libc::kill(libc::getppid(), 0) };
        report("signal_parent", rc as i64);
    }

    /// Tries to undo the sandbox from inside: a new landlock domain granting writes
    /// everywhere, a permissive seccomp filter, a fresh user and network namespace.
    /// Then writes outside and opens an AF_INET socket.
    fn loosen() {
        // landlock: handle WRITE_FILE and allow it beneath "/".
        #[repr(C)]
        struct RulesetAttr {
            fs: u64,
            net: u64,
            scoped: u64,
        }
        #[repr(C, packed)]
        struct PathBeneath {
            allowed: u64,
            fd: i32,
        }
        let attr = RulesetAttr { fs: 1 << 1, net: 0, scoped: 0 };
        // SAFETY: live struct, exact size.
        let ruleset = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr, 24usize, 0u32) };
        let root = std::fs::File::open("/").unwrap();
        let rule = PathBeneath { allowed: 1 << 1, fd: std::os::fd::AsRawFd::as_raw_fd(&root) };
        // SAFETY: live packed struct; fds open.
        let added = unsafe { libc::syscall(libc::SYS_landlock_add_rule, ruleset, 1, &rule, 0u32) };
        // SAFETY: integer arguments.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        // SAFETY: integer arguments.
        let restricted = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) };
        report("loosen_landlock", if ruleset < 0 || added < 0 { -1 } else { restricted });

        // seccomp: a filter that allows everything.
        let allow = [libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        }];
        let prog = libc::sock_fprog { len: 1, filter: allow.as_ptr() as *mut _ };
        // SAFETY: `prog` points at a live one-instruction program.
        let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0u32, &prog) };
        report("loosen_seccomp", rc);

        // New user and network namespaces, entered in a forked grandchild (unshare of a user
        // namespace needs a single-threaded caller, and the harness runs us on a thread).
        let mut cmd = std::process::Command::new("/bin/bash");
        cmd.args(["-c", "echo evil > \"$OUT/keep.txt\"; exec 3<>/dev/tcp/127.0.0.1/9"]);
        // SAFETY: unshare is a system call with integer arguments, async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match cmd.output() {
            Ok(out) => {
                println!("loosen_unshare=ok");
                let stderr = String::from_utf8_lossy(&out.stderr).replace('\n', " | ");
                println!("in_namespace={stderr}");
            }
            Err(e) => println!("loosen_unshare={}", errno_name(e.raw_os_error().unwrap_or(0))),
        }

        let out = PathBuf::from(std::env::var("OUT").unwrap());
        let wrote = std::fs::write(out.join("keep.txt"), "loosened\n");
        println!(
            "write_outside={}",
            match wrote {
                Ok(()) => "ok".to_string(),
                Err(e) => errno_name(e.raw_os_error().unwrap_or(0)),
            }
        );
        socket("inet_tcp", libc::AF_INET as u64, libc::SOCK_STREAM, 0);
    }

    /// A syscall through the x32 ABI (number | 0x40000000): the filter kills us.
    #[cfg(target_arch = "x86_64")]
    fn x32() {
        println!("about_to_call=x32");
        // SAFETY: x32 getpid takes no arguments.
        let rc = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
        report("x32_getpid", rc);
    }

    /// A syscall through the 32-bit `int 0x80` gate (AUDIT_ARCH_I386): the filter kills us.
    #[cfg(target_arch = "x86_64")]
    fn int80() {
        println!("about_to_call=int80");
        let mut eax: u32 = 20; // getpid in the i386 table
        // SAFETY: i386 getpid reads no registers besides eax and touches no memory; the
        // 32-bit entry may clobber r8-r11, declared here.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inout("eax") eax,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(nostack)
            )
        };
        println!("int80_getpid={}", eax as i32);
    }

    /// Connects to the abstract unix socket `name` (a local service outside the sandbox).
    fn abstract_connect(name: &str) {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        match UnixStream::connect_addr(&addr) {
            Ok(_) => println!("abstract_connect=ok"),
            Err(e) => println!("abstract_connect={}", errno_name(e.raw_os_error().unwrap_or(0))),
        }
    }

    /// A kernel without the sandbox, reported twice: `warn_once` prints its warnings once.
    fn warn_twice() {
        let report = crate::sandbox::Report {
            filesystem: crate::sandbox::Enforcement::Unavailable("test".into()),
            network: crate::sandbox::Enforcement::Unavailable("test".into()),
        };
        report.warn_once();
        report.warn_once();
    }

    pub fn run(what: &str) -> i32 {
        if let Some(name) = what.strip_prefix("abstract ") {
            abstract_connect(name);
            return 0;
        }
        match what {
            "sockets" => sockets(),
            "work" => work(),
            "status" => status(),
            "loosen" => loosen(),
            "warn_twice" => warn_twice(),
            #[cfg(target_arch = "x86_64")]
            "x32" => x32(),
            #[cfg(target_arch = "x86_64")]
            "int80" => int80(),
            other => {
                eprintln!("unknown helper action {other}");
                return 3;
            }
        }
        std::io::stdout().flush().unwrap();
        0
    }
}

// ---------------------------------------------------------------------------------------
// Report

#[test]
fn test_report_says_enforced_on_this_kernel() {
    if !enforceable("test_report_says_enforced_on_this_kernel") {
        return;
    }
    let tree = Tree::new();
    let (report, out) = run_in("/bin/true", &[], &tree.policy(), &tree);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("{report}");
    assert!(report.filesystem.is_enforced(), "{report}");
    assert!(report.network.is_enforced(), "{report}");
    assert!(report.warnings().is_empty(), "{:?}", report.warnings());
    let Enforcement::Enforced(how) = &report.filesystem else { unreachable!() };
    assert!(how.contains("landlock ABI") && how.contains(&tree.run.display().to_string()), "{how}");
}

// ---------------------------------------------------------------------------------------
// Filesystem

#[test]
fn test_writes_inside_the_writable_dir_succeed() {
    if !enforceable("test_writes_inside_the_writable_dir_succeed") {
        return;
    }
    let tree = Tree::new();
    let out = sh(
        "set -e; echo a > new.txt; echo b >> new.txt; : > mine.txt; mkdir -p d/e; mv new.txt d/e/moved.txt; \
         ln -s moved.txt d/e/link; ln d/e/moved.txt hard.txt; mkfifo fifo; rm fifo hard.txt; \
         perl -e 'truncate(\"d/e/moved.txt\", 2) or die \"truncate: $!\"'; \
         echo gone > /dev/null; head -c 4 /dev/zero > zeros; rm -r d; echo done",
        &tree,
    );
    assert!(out.status.success() && text(&out).contains("done"), "{}", text(&out));
    assert_eq!(std::fs::read(tree.run.join("zeros")).unwrap(), [0u8; 4]);
    assert_eq!(std::fs::read_to_string(tree.run.join("mine.txt")).unwrap(), "");
    tree.assert_outside_untouched("writes inside");
}

#[test]
fn test_writes_creates_deletes_renames_outside_fail() {
    if !enforceable("test_writes_creates_deletes_renames_outside_fail") {
        return;
    }
    let tree = Tree::new();
    let attempts = [
        ("overwrite", "echo evil > \"$OUT/keep.txt\""),
        ("append", "echo evil >> \"$OUT/keep.txt\""),
        ("truncate by open", ": > \"$OUT/keep.txt\""),
        ("truncate(2)", "perl -e 'truncate(\"$ENV{OUT}/keep.txt\", 0) or die \"$!\"'"),
        ("create", "echo evil > \"$OUT/new.txt\""),
        ("mkdir", "mkdir \"$OUT/dir\""),
        ("delete", "rm -f \"$OUT/keep.txt\""),
        ("rename within outside", "mv \"$OUT/keep.txt\" \"$OUT/renamed.txt\""),
        ("rename out of outside", "mv \"$OUT/keep.txt\" \"$RUN/stolen.txt\""),
        ("rename into outside", "mv \"$RUN/mine.txt\" \"$OUT/planted.txt\""),
        ("symlink", "ln -s /etc/passwd \"$OUT/link\""),
        ("hard link", "ln \"$RUN/mine.txt\" \"$OUT/hard\""),
        ("fifo", "mkfifo \"$OUT/fifo\""),
        ("write via ../", "echo evil > \"$RUN/../outside/keep.txt\""),
        (
            "write via a symlink planted in run/",
            "ln -s \"$OUT/keep.txt\" \"$RUN/sneaky\" && echo evil > \"$RUN/sneaky\"",
        ),
        ("write /tmp", "echo evil > /tmp/ar-sandbox-test-$$ && rm /tmp/ar-sandbox-test-$$"),
    ];
    for (what, script) in attempts {
        // Control: unsandboxed, the script does change something.
        let control = Tree::new();
        let out = Command::new("/bin/sh")
            .args(["-c", script])
            .env("RUN", &control.run)
            .env("OUT", &control.outside)
            .output()
            .unwrap();
        assert!(out.status.success(), "control {what} failed: {script}\n{}", text(&out));

        let out = sh(script, &tree);
        assert!(!out.status.success(), "{what} succeeded: {script}\n{}", text(&out));
        tree.assert_outside_untouched(what);
    }
    assert!(tree.run.join("mine.txt").is_file(), "run/mine.txt was moved away");
}

/// A known gap, pinned so that closing it flips this test: landlock does not confine
/// metadata (chmod, chown, utimes, xattrs) of files the user owns. The content stays intact.
#[test]
fn test_known_gap_metadata_changes_outside_are_not_confined() {
    if !enforceable("test_known_gap_metadata_changes_outside_are_not_confined") {
        return;
    }
    let tree = Tree::new();
    let out = sh("chmod 600 \"$OUT/keep.txt\" && touch -d 2001-01-01 \"$OUT/keep.txt\"", &tree);
    assert!(
        out.status.success(),
        "the gap is closed: update this test and the module header\n{}",
        text(&out)
    );
    tree.assert_outside_untouched("metadata");
}

#[test]
fn test_missing_writable_path_is_reported_and_stays_unwritable() {
    if !enforceable("test_missing_writable_path_is_reported_and_stays_unwritable") {
        return;
    }
    let tree = Tree::new();
    let missing = tree.run.join("not-yet");
    let policy = Policy { writable: vec![missing.clone()], network: false };
    let (report, out) = run_in("/bin/sh", &["-c", "mkdir \"$RUN/not-yet\""], &policy, &tree);
    let Enforcement::Enforced(how) = &report.filesystem else { panic!("{report}") };
    assert!(how.contains("NOT writable") && how.contains("not-yet"), "{how}");
    assert!(!out.status.success() && !missing.exists(), "{}", text(&out));
}

#[test]
fn test_a_nested_process_cannot_loosen_the_sandbox() {
    if !enforceable("test_a_nested_process_cannot_loosen_the_sandbox") {
        return;
    }
    let tree = Tree::new();
    // A grandchild, started through a shell, through setsid and nohup: still confined.
    let out = sh(
        "sh -c 'setsid sh -c \"echo evil > \\\"$OUT/keep.txt\\\"\"'; \
         nohup sh -c 'echo evil > \"$OUT/new.txt\"' >/dev/null 2>&1; \
         sh -c 'grep -E \"^(NoNewPrivs|Seccomp):\" /proc/self/status'",
        &tree,
    );
    let t = text(&out);
    assert!(t.contains("NoNewPrivs:\t1") && t.contains("Seccomp:\t2"), "{t}");
    tree.assert_outside_untouched("nested shells");

    // The adversarial child stacks a permissive landlock domain and seccomp filter and
    // enters new user and network namespaces: each call may succeed, none loosens anything.
    let (_, out) = helper("loosen", &tree.policy(), &tree);
    assert_eq!(finding(&out, "write_outside"), "EACCES", "{}", text(&out));
    assert_eq!(finding(&out, "inet_tcp"), "EACCES", "{}", text(&out));
    eprintln!(
        "loosen attempts: landlock={} seccomp={} unshare={}",
        finding(&out, "loosen_landlock"),
        finding(&out, "loosen_seccomp"),
        finding(&out, "loosen_unshare")
    );
    if finding(&out, "loosen_unshare") == "ok" {
        let inside = finding(&out, "in_namespace");
        assert!(inside.contains("keep.txt: Permission denied"), "{inside}");
        assert!(
            inside.contains("socket: Permission denied") || inside.contains("connect: Permission denied"),
            "{inside}"
        );
    }
    tree.assert_outside_untouched("loosen");
}

#[test]
fn test_the_child_runs_normal_work() {
    if !enforceable("test_the_child_runs_normal_work") {
        return;
    }
    let tree = Tree::new();
    let (_, out) = helper("work", &tree.policy(), &tree);
    assert!(out.status.success(), "{}", text(&out));
    for key in ["threads", "subprocess", "read_anywhere", "write_run"] {
        assert_eq!(finding(&out, key), "ok", "{key}: {}", text(&out));
    }
    // The shell way: read outside, exec tools, pipe.
    let out = sh("cat \"$OUT/keep.txt\" | tr a-z A-Z; ls / >/dev/null && echo listed", &tree);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ORIGINAL CONTENT\nlisted\n");
}

#[test]
fn test_no_ruleset_fd_leaks_and_signals_stay_inside() {
    if !enforceable("test_no_ruleset_fd_leaks_and_signals_stay_inside") {
        return;
    }
    let tree = Tree::new();
    let (_, out) = helper("status", &tree.policy(), &tree);
    assert_eq!(finding(&out, "landlock_fd"), "none", "{}", text(&out));
    assert_eq!(finding(&out, "NoNewPrivs"), "1");
    assert_eq!(finding(&out, "Seccomp"), "2");
    if matches!(KernelSupport::probe().landlock_abi, Ok(abi) if abi >= 6) {
        assert_eq!(finding(&out, "signal_parent"), "EPERM", "{}", text(&out));
    } else {
        eprintln!("SKIPPED signal scoping check: needs landlock ABI 6");
    }
}

// ---------------------------------------------------------------------------------------
// Network

/// A listener on `addr`, or None (with a SKIPPED line) when the address family is absent.
fn listen(addr: &str) -> Option<TcpListener> {
    match TcpListener::bind(addr) {
        Ok(l) => {
            l.set_nonblocking(true).unwrap();
            Some(l)
        }
        Err(e) => {
            eprintln!("SKIPPED listener on {addr}: {e}");
            None
        }
    }
}

fn connections(listener: &TcpListener) -> usize {
    let mut n = 0;
    loop {
        match listener.accept() {
            Ok(_) => n += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// `bash -c 'exec 3<>/dev/tcp/HOST/PORT'` reaches the listener unsandboxed and not sandboxed.
fn assert_tcp_blocked(host: &str, listener: &TcpListener) {
    let port = listener.local_addr().unwrap().port();
    let tree = Tree::new();
    let script = format!("exec 3<>/dev/tcp/{host}/{port} && echo connected");
    let open = Policy { network: true, ..tree.policy() };
    let out = bash(&script, &open, &tree);
    assert!(out.status.success(), "control run could not connect: {}", text(&out));
    assert_eq!(connections(listener), 1, "the control connection must arrive");

    let out = bash(&script, &tree.policy(), &tree);
    assert!(!out.status.success() && !text(&out).contains("connected"), "{}", text(&out));
    assert!(text(&out).contains("Permission denied"), "{}", text(&out));
    assert_eq!(connections(listener), 0, "the listener saw a connection from the sandbox");
}

#[test]
fn test_tcp_connect_to_localhost_fails() {
    if !enforceable("test_tcp_connect_to_localhost_fails") {
        return;
    }
    let listener = listen("127.0.0.1:0").expect("IPv4 loopback");
    assert_tcp_blocked("127.0.0.1", &listener);
}

#[test]
fn test_tcp_connect_over_ipv6_fails() {
    if !enforceable("test_tcp_connect_over_ipv6_fails") {
        return;
    }
    let Some(listener) = listen("[::1]:0") else { return };
    assert_tcp_blocked("::1", &listener);
}

#[test]
fn test_udp_sendto_localhost_fails() {
    if !enforceable("test_udp_sendto_localhost_fails") {
        return;
    }
    let tree = Tree::new();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let port = socket.local_addr().unwrap().port();
    let script = format!("echo exfiltrated > /dev/udp/127.0.0.1/{port}");
    let mut buf = [0u8; 64];

    let out = bash(&script, &Policy { network: true, ..tree.policy() }, &tree);
    assert!(out.status.success(), "{}", text(&out));
    let (n, _) = socket.recv_from(&mut buf).expect("the control datagram must arrive");
    assert_eq!(&buf[..n], b"exfiltrated\n");

    let out = bash(&script, &tree.policy(), &tree);
    assert!(!out.status.success(), "{}", text(&out));
    let got = socket.recv_from(&mut buf);
    assert!(
        matches!(&got, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "a datagram arrived from the sandbox: {got:?}"
    );
}

#[test]
fn test_only_unix_sockets_can_be_created_and_io_uring_is_off() {
    if !enforceable("test_only_unix_sockets_can_be_created_and_io_uring_is_off") {
        return;
    }
    let tree = Tree::new();
    let (_, out) = helper("sockets", &tree.policy(), &tree);
    assert!(out.status.success(), "{}", text(&out));
    for key in
        ["inet_tcp", "inet_udp", "inet6_tcp", "inet6_udp", "netlink", "packet", "vsock", "inet_high_bits"]
    {
        assert_eq!(finding(&out, key), "EACCES", "{key}: {}", text(&out));
    }
    assert_eq!(finding(&out, "socketpair_inet"), "EACCES", "{}", text(&out));
    for key in ["unix_stream", "unix_dgram", "unix_roundtrip"] {
        assert_eq!(finding(&out, key), "ok", "{key}: {}", text(&out));
    }
    assert_eq!(finding(&out, "io_uring_setup"), "ENOSYS", "{}", text(&out));
}

#[test]
fn test_abstract_unix_sockets_outside_the_sandbox_are_unreachable() {
    if !enforceable("test_abstract_unix_sockets_outside_the_sandbox_are_unreachable") {
        return;
    }
    if !matches!(KernelSupport::probe().landlock_abi, Ok(abi) if abi >= 6) {
        eprintln!("SKIPPED abstract unix socket scoping: needs landlock ABI 6");
        return;
    }
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    let name = format!("ar-sandbox-test-{}", std::process::id());
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let tree = Tree::new();
    let (_, out) = helper(&format!("abstract {name}"), &Policy { network: true, ..tree.policy() }, &tree);
    assert_eq!(finding(&out, "abstract_connect"), "ok", "control: {}", text(&out));
    assert!(listener.accept().is_ok(), "the control connection must arrive");
    let (_, out) = helper(&format!("abstract {name}"), &tree.policy(), &tree);
    assert_eq!(finding(&out, "abstract_connect"), "EPERM", "{}", text(&out));
    assert!(listener.accept().is_err(), "the listener saw a connection from the sandbox");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn test_foreign_syscall_abis_are_killed() {
    if !enforceable("test_foreign_syscall_abis_are_killed") {
        return;
    }
    let tree = Tree::new();
    // Control: unsandboxed, int 0x80 works (unless the kernel lacks 32-bit emulation).
    let (_, control) = helper("int80", &Policy { network: true, ..tree.policy() }, &tree);
    let abis: &[&str] = if String::from_utf8_lossy(&control.stdout).contains("int80_getpid=") {
        &["x32", "int80"]
    } else {
        eprintln!("SKIPPED int 0x80: no 32-bit emulation in this kernel ({:?})", control.status);
        &["x32"]
    };
    for &what in abis {
        let (_, out) = helper(what, &tree.policy(), &tree);
        assert_eq!(finding(&out, "about_to_call"), what);
        let signal = std::os::unix::process::ExitStatusExt::signal(&out.status);
        assert_eq!(signal, Some(libc::SIGSYS), "{what}: {:?}\n{}", out.status, text(&out));
    }
}

#[test]
fn test_network_allowed_by_policy_is_reported_disabled() {
    let tree = Tree::new();
    let listener = listen("127.0.0.1:0").expect("IPv4 loopback");
    let port = listener.local_addr().unwrap().port();
    let mut cmd = Command::new("/bin/bash");
    cmd.args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")]);
    let report = apply(&mut cmd, &Policy { writable: vec![tree.run.clone()], network: true });
    assert_eq!(report.network, Enforcement::Disabled);
    assert!(cmd.output().unwrap().status.success());
    assert_eq!(connections(&listener), 1);
}

// ---------------------------------------------------------------------------------------
// Degrading: the kernel says no

#[test]
fn test_kernel_without_landlock_or_seccomp_runs_the_child_unconfined_and_says_so() {
    let tree = Tree::new();
    let kernel = KernelSupport {
        landlock_abi: Err("test: kernel says no".into()),
        seccomp: Err("test: no seccomp either".into()),
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "echo written > \"$OUT/new.txt\""]).env("OUT", &tree.outside);
    let report = apply_with(&mut cmd, &tree.policy(), &kernel);
    assert_eq!(report.filesystem, Enforcement::Unavailable("test: kernel says no".into()));
    assert_eq!(report.network, Enforcement::Unavailable("test: no seccomp either".into()));
    let warnings = report.warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert_eq!(
        warnings[0],
        "sandbox: landlock unavailable (test: kernel says no); the training run can write anywhere your user can"
    );
    assert!(warnings[1].starts_with("sandbox: network isolation unavailable (test: no seccomp either)"));
    // The child runs, and honestly unconfined.
    assert!(cmd.output().unwrap().status.success());
    assert_eq!(std::fs::read_to_string(tree.outside.join("new.txt")).unwrap(), "written\n");
}

#[test]
fn test_kernel_with_landlock_but_no_seccomp_still_confines_writes_and_tcp() {
    if !enforceable("test_kernel_with_landlock_but_no_seccomp_still_confines_writes_and_tcp") {
        return;
    }
    let tree = Tree::new();
    let listener = listen("127.0.0.1:0").expect("IPv4 loopback");
    let port = listener.local_addr().unwrap().port();
    let kernel = KernelSupport { seccomp: Err("test: no seccomp".into()), ..KernelSupport::probe() };
    let mut cmd = Command::new("/bin/bash");
    cmd.args(["-c", &format!("echo evil > \"$OUT/keep.txt\"; exec 3<>/dev/tcp/127.0.0.1/{port}")])
        .env("OUT", &tree.outside);
    let report = apply_with(&mut cmd, &tree.policy(), &kernel);
    assert!(report.filesystem.is_enforced(), "{report}");
    let Enforcement::Unavailable(why) = &report.network else { panic!("{report}") };
    assert!(why.starts_with("test: no seccomp"), "{why}");
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    tree.assert_outside_untouched("landlock without seccomp");
    // Landlock ABI 4+ still refuses TCP connect; the report says UDP stays open.
    if matches!(kernel.landlock_abi, Ok(abi) if abi >= 4) {
        assert!(why.contains("landlock blocks TCP only"), "{why}");
        assert!(text(&out).contains("connect: Permission denied"), "{}", text(&out));
        assert_eq!(connections(&listener), 0, "the listener saw a connection from the sandbox");
    }
}

#[test]
fn test_warnings_are_printed_once_per_process() {
    let tree = Tree::new();
    let (_, out) = helper("warn_twice", &tree.policy(), &tree);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("sandbox: landlock unavailable (test)").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("sandbox: network isolation unavailable (test)").count(), 1, "{stderr}");
}

#[test]
fn test_old_landlock_abi_1_still_confines_writes() {
    if !enforceable("test_old_landlock_abi_1_still_confines_writes") {
        return;
    }
    let tree = Tree::new();
    let kernel = KernelSupport { landlock_abi: Ok(1), ..KernelSupport::probe() };
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "echo ok > \"$RUN/inside.txt\" && echo evil > \"$OUT/keep.txt\""])
        .env("OUT", &tree.outside)
        .env("RUN", &tree.run);
    let report = apply_with(&mut cmd, &tree.policy(), &kernel);
    let Enforcement::Enforced(how) = &report.filesystem else { panic!("{report}") };
    assert!(how.starts_with("landlock ABI 1") && how.contains("truncate(2) is not confined"), "{how}");
    assert!(!cmd.output().unwrap().status.success());
    assert_eq!(std::fs::read_to_string(tree.run.join("inside.txt")).unwrap(), "ok\n");
    tree.assert_outside_untouched("landlock ABI 1");
}

#[test]
fn test_landlock_newer_than_known_is_used_at_the_known_level() {
    if !enforceable("test_landlock_newer_than_known_is_used_at_the_known_level") {
        return;
    }
    let tree = Tree::new();
    let real = KernelSupport::probe();
    let kernel = KernelSupport { landlock_abi: Ok(99), ..real.clone() };
    let mut cmd = Command::new("/bin/true");
    let report = apply_with(&mut cmd, &tree.policy(), &kernel);
    // Capped at the ABI the module knows; on a kernel older than that, creation fails and
    // the report degrades instead of the spawn.
    match &report.filesystem {
        Enforcement::Enforced(how) => assert!(how.starts_with("landlock ABI 7"), "{how}"),
        Enforcement::Unavailable(why) => assert!(why.contains("landlock_create_ruleset"), "{why}"),
        Enforcement::Disabled => panic!("{report}"),
    }
    assert!(cmd.output().unwrap().status.success());
}

#[test]
fn test_report_serialises_for_the_journal() {
    let report = Report {
        filesystem: Enforcement::Enforced("landlock ABI 7".into()),
        network: Enforcement::Unavailable("no seccomp".into()),
    };
    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(
        json,
        r#"{"filesystem":{"state":"enforced","detail":"landlock ABI 7"},"network":{"state":"unavailable","detail":"no seccomp"}}"#
    );
    let disabled = serde_json::to_string(&Enforcement::Disabled).unwrap();
    assert_eq!(disabled, r#"{"state":"disabled"}"#);
}
