//! linux.seccomp.architectures as runc applies them: a profile naming x86_64, i386 and x32 (as
//! docker's default profile does) lets an i386 program (int $0x80) and x32 calls through where
//! the profile allows them and gives them its errno where it does not; an architecture the
//! profile leaves out is killed. The programs are tests/app/int80.S and tests/app/x32.S.

mod common;
use common::*;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

/// tests/app/NAME.S assembled and linked into DIR/NAME, a static executable without libc.
fn assemble(dir: &Path, name: &str, i386: bool) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/app/{name}.S"));
    let obj = dir.join(format!("{name}.o"));
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (binutils is needed)"));
        assert!(out.status.success(), "{cmd:?}: {}", stderr_of(&out));
    };
    run(Command::new("as").arg(if i386 { "--32" } else { "--64" }).arg(&src).arg("-o").arg(&obj));
    run(Command::new("ld").args(if i386 { &["-m", "elf_i386"][..] } else { &[][..] }).arg("-static").arg(&obj).arg("-o").arg(dir.join(name)));
}

/// What the container's process may do beside the probe's own calls: what molt's and runc's
/// inits call once the filter is on (no_new_privs puts it just before execve), and the Go
/// runtime's threads in runc.
const INIT_CALLS: &[&str] = &[
    "execve", "openat", "read", "write", "close", "fcntl", "getpid", "gettid", "tgkill", "futex", "nanosleep",
    "sched_yield", "mmap", "munmap", "madvise", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
    "epoll_pwait", "epoll_ctl", "exit", "exit_group", "fstat", "newfstatat", "fstatfs", "statfs", "getrandom",
    "getdents64", "lseek", "fchdir", "dup3", "close_range", "readlinkat", "pread64", "pipe2", "prctl", "capget",
];

fn profile(archs: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 13,
        "architectures": archs,
        "syscalls": [{"names": INIT_CALLS, "action": "SCMP_ACT_ALLOW"}]
    })
}

/// One run of /t/PROG (the directory `progs` bound at /t) under molt and, when it is there,
/// under runc.
fn run_probe(progs: &Path, prog: &str, archs: &[&str]) -> (Output, Option<Output>) {
    let mut b = Bundle::new(&[&format!("/t/{prog}")]);
    b.mount(serde_json::json!({"destination": "/t", "type": "bind", "source": progs, "options": ["rbind", "ro"]}));
    b.config["process"]["noNewPrivileges"] = serde_json::json!(true);
    b.config["linux"]["seccomp"] = profile(archs);
    let c = run_both(&b);
    (c.molt, c.runc)
}

fn outcome(o: &Output) -> (String, Option<i32>) {
    (stdout_of(o), o.status.code())
}

#[test]
fn i386_and_x32_calls_get_what_the_profile_says_for_them() {
    require_root!();
    let progs = TempDir::new("molt-seccomp-arch");
    assemble(&progs, "int80", true);
    assemble(&progs, "x32", false);
    let all = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];
    for (prog, said) in [("int80", "i386 getpid and write passed\n"), ("x32", "x32 getpid passed\n")] {
        let (molt, runc) = run_probe(&progs, prog, &all);
        // The exit status is the errno getppid got: the profile's defaultErrnoRet.
        assert_eq!(outcome(&molt), (said.to_string(), Some(13)), "{prog} under molt: {}", stderr_of(&molt));
        if let Some(runc) = runc {
            assert_eq!(outcome(&molt), outcome(&runc), "{prog}: molt (left) and runc (right) differ: {}", stderr_of(&runc));
        }
    }
}

#[test]
fn an_architecture_the_profile_leaves_out_is_killed() {
    require_root!();
    let progs = TempDir::new("molt-seccomp-arch");
    assemble(&progs, "int80", true);
    assemble(&progs, "x32", false);
    for (prog, archs) in [("int80", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"]), ("x32", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"])] {
        let (molt, runc) = run_probe(&progs, prog, &archs);
        // Killed by SIGSYS at its first call: `run` exits 128 + 31, as runc's does.
        assert_eq!(outcome(&molt), (String::new(), Some(128 + libc::SIGSYS)), "{prog} under molt: {}", stderr_of(&molt));
        assert!(molt.status.signal().is_none());
        if let Some(runc) = runc {
            assert_eq!(outcome(&molt), outcome(&runc), "{prog}: molt (left) and runc (right) differ: {}", stderr_of(&runc));
        }
    }
}
