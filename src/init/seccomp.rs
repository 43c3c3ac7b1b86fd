//! linux.seccomp: the config's profile compiled to classic BPF by libseccomp with runc's rules
//! (every listed architecture beside the native one, unknown syscall names skipped, a rule with
//! the default's action dropped), then installed by molt itself with seccomp(2), as runc does
//! after libseccomp's export, so that the flags and the notify listener stay in our hands.
//! Why libseccomp and what molt relies on: vendor-notes/seccomp.md.

use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompArg, LinuxSeccompOperator as Op};

use super::InitError;

const EPERM: u32 = 1;

use crate::seccomp_support::{FLAG_LOG, FLAG_NEW_LISTENER, FLAG_SPEC_ALLOW, FLAG_WAIT_KILLABLE_RECV, SET_MODE_FILTER};

/// The filter as the kernel takes it.
pub type Program = Vec<libc::sock_filter>;

fn err(what: impl std::fmt::Display) -> InitError {
    InitError::new(format!("linux.seccomp: {what}"))
}

/// runc's mapping: ERRNO and TRACE without errnoRet return EPERM; KILL is KILL_THREAD.
fn action(action: Action, errno: Option<u32>) -> Result<ScmpAction, InitError> {
    let errno = || i32::try_from(errno.unwrap_or(EPERM)).map_err(|_| err(format!("errnoRet {errno:?} is out of range")));
    Ok(match action {
        Action::ScmpActKill | Action::ScmpActKillThread => ScmpAction::KillThread,
        Action::ScmpActKillProcess => ScmpAction::KillProcess,
        Action::ScmpActTrap => ScmpAction::Trap,
        Action::ScmpActErrno => ScmpAction::Errno(errno()?),
        Action::ScmpActTrace => ScmpAction::Trace(u16::try_from(errno()?).map_err(|_| err("errnoRet of SCMP_ACT_TRACE is out of range"))?),
        Action::ScmpActLog => ScmpAction::Log,
        Action::ScmpActAllow => ScmpAction::Allow,
        // The listener fd goes to the agent at linux.seccomp.listenerPath (container/notify.rs).
        Action::ScmpActNotify => ScmpAction::Notify,
    })
}

fn condition(a: &LinuxSeccompArg) -> Result<ScmpArgCompare, InitError> {
    let index = u32::try_from(a.index()).ok().filter(|i| *i <= 5).ok_or_else(|| err(format!("argument index {} (a syscall has 6 at most)", a.index())))?;
    let op = match a.op() {
        Op::ScmpCmpNe => ScmpCompareOp::NotEqual,
        Op::ScmpCmpLt => ScmpCompareOp::Less,
        Op::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        Op::ScmpCmpEq => ScmpCompareOp::Equal,
        Op::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        Op::ScmpCmpGt => ScmpCompareOp::Greater,
        // The spec's value is the mask, valueTwo what the masked argument must equal.
        Op::ScmpCmpMaskedEq => return Ok(ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(a.value()), a.value_two().unwrap_or(0))),
    };
    Ok(ScmpArgCompare::new(index, op, a.value()))
}

fn arch(a: impl serde::Serialize) -> Result<ScmpArch, InitError> {
    let name = serde_json::to_value(a).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    name.parse().map_err(|_| err(format!("architectures: {name:?} is not an architecture libseccomp knows")))
}

/// The kernel's filter flags the profile asks for, checked before anything is installed.
fn filter_flags(s: &LinuxSeccomp) -> Result<libc::c_ulong, InitError> {
    let mut flags = 0;
    for f in s.flags().clone().unwrap_or_default() {
        let name = serde_json::to_value(f).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        flags |= match name.as_str() {
            // What TSYNC is for (every thread under one filter) holds anyway: the init has one
            // thread. runc ignores it too; passed on, it would also refuse a listener.
            "SECCOMP_FILTER_FLAG_TSYNC" => 0,
            "SECCOMP_FILTER_FLAG_LOG" => FLAG_LOG,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => FLAG_SPEC_ALLOW,
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" if uses_notify(s) => FLAG_WAIT_KILLABLE_RECV,
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => return Err(err("flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs an SCMP_ACT_NOTIFY action")),
            other => return Err(err(format!("flags: {other:?} is not supported"))),
        };
    }
    Ok(flags | if uses_notify(s) { FLAG_NEW_LISTENER } else { 0 })
}

/// Whether any action of the profile is SCMP_ACT_NOTIFY (then the filter has a listener).
pub fn uses_notify(s: &LinuxSeccomp) -> bool {
    s.default_action() == Action::ScmpActNotify || s.syscalls().iter().flatten().any(|r| r.action() == Action::ScmpActNotify)
}

/// The profile as libseccomp's filter context, built the way runc builds it.
fn filter(s: &LinuxSeccomp) -> Result<ScmpFilterContext, InitError> {
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err(format!("defaultAction: {e}")))?;
    for a in s.architectures().iter().flatten() {
        let a = arch(a)?;
        ctx.add_arch(a).map_err(|e| err(format!("architectures: add {a:?}: {e}")))?;
    }
    // libseccomp's linear layout, not the binary tree runc asks for above 32 names: the same
    // verdicts, and the kernel's action cache (5.11) skips the filter for the syscalls it allows
    // whatever their arguments, but the tree costs 30 ms more at each create and exec with
    // docker's profile here (vendor-notes/seccomp.md).
    let rules = s.syscalls().clone().unwrap_or_default();
    for rule in &rules {
        let act = action(rule.action(), rule.errno_ret())?;
        // libseccomp refuses a rule that repeats the default; it changes nothing anyway.
        if act == default {
            continue;
        }
        let conds = rule.args().iter().flatten().map(condition).collect::<Result<Vec<_>, _>>()?;
        // Two conditions on one argument: each is a rule of its own (an OR), the "old
        // behaviour" runc keeps for such rules.
        let mut per_arg = [0; 6];
        rule.args().iter().flatten().for_each(|a| per_arg[a.index()] += 1);
        let groups: Vec<&[ScmpArgCompare]> = if per_arg.iter().any(|n| *n > 1) { conds.chunks(1).collect() } else { vec![&conds[..]] };
        for name in rule.names() {
            // A name this libseccomp does not know is a syscall newer than it: skipped, as
            // runc does (profiles list syscalls newer than the host). A name known on another
            // of the filter's architectures only (socketcall on i386) resolves to a pseudo
            // number that libseccomp places on that architecture alone.
            let Ok(nr) = ScmpSyscall::from_name(name) else { continue };
            for group in &groups {
                ctx.add_rule_conditional(act, nr, group).map_err(|e| err(format!("the rule for {name}: {e}")))?;
            }
        }
    }
    Ok(ctx)
}

/// The BPF program for a profile, compiled when the container is created so that a bad profile
/// fails `create`, and so that the init allocates nothing for it once it has dropped privileges.
pub fn compile(s: &LinuxSeccomp) -> Result<Program, InitError> {
    filter_flags(s)?;
    let ctx = filter(s)?;
    // libseccomp 2.5 exports only to an fd: an anonymous memory file, which (unlike a pipe)
    // takes a program of any size without a reader.
    // SAFETY: memfd_create with a NUL-terminated name; the fd is new and ours.
    let fd = unsafe { libc::memfd_create(c"molt-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(err(format!("memfd_create: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&file).map_err(|e| err(format!("libseccomp's export of the filter: {e}")))?;
    let mut bytes = Vec::new();
    file.flush().and_then(|_| file.rewind()).and_then(|_| file.read_to_end(&mut bytes)).map_err(|e| err(format!("read the exported filter: {e}")))?;
    let prog: Program = bytes
        .chunks_exact(8)
        .map(|i| libc::sock_filter { code: u16::from_ne_bytes([i[0], i[1]]), jt: i[2], jf: i[3], k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]) })
        .collect();
    if prog.len() > 4096 {
        return Err(err(format!("the profile compiles to {} instructions, more than the kernel's 4096", prog.len())));
    }
    Ok(prog)
}

/// Install the filter on this thread; with a notify action, the kernel's listener fd for the
/// agent comes back. No no_new_privs here: the caller decides (the filter then needs
/// CAP_SYS_ADMIN).
pub fn install(s: &LinuxSeccomp, prog: &Program) -> Result<Option<OwnedFd>, InitError> {
    let len = u16::try_from(prog.len()).map_err(|_| err("the filter is too long"))?;
    let fprog = libc::sock_fprog { len, filter: prog.as_ptr() as *mut libc::sock_filter };
    let flags = filter_flags(s)?;
    // SAFETY: seccomp(2) reads the program through a pointer to our live Vec.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, SET_MODE_FILTER, flags, &fprog as *const libc::sock_fprog) };
    if r < 0 {
        return Err(err(format!("install the filter: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: with NEW_LISTENER the return value is a new fd that we own.
    Ok((flags & FLAG_NEW_LISTENER != 0).then(|| unsafe { OwnedFd::from_raw_fd(r as i32) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
    const X32_BIT: u32 = 0x4000_0000;
    const RET_KILL_THREAD: u32 = 0;
    const RET_KILL_PROCESS: u32 = 0x8000_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_TRACE: u32 = 0x7ff0_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_USER_NOTIF: u32 = 0x7fc0_0000;

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    /// A classic-BPF interpreter for what libseccomp emits: the kernel's verdict for one call.
    fn run(prog: &Program, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                0 => nr,
                4 => arch,
                o if o >= 16 => {
                    let i = ((o - 16) / 8) as usize;
                    if (o - 16) % 8 == 0 {
                        args[i] as u32
                    } else {
                        (args[i] >> 32) as u32
                    }
                }
                _ => 0,
            }
        };
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let ins = prog[pc];
            match ins.code {
                0x20 => a = word(ins.k),
                0x54 => a &= ins.k,
                0x06 => return ins.k,
                0x05 => pc += ins.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let t = match ins.code {
                        0x15 => a == ins.k,
                        0x25 => a > ins.k,
                        0x35 => a >= ins.k,
                        _ => a & ins.k != 0,
                    };
                    pc += if t { ins.jt } else { ins.jf } as usize;
                }
                c => panic!("unexpected opcode {c:#x} at {pc}"),
            }
            pc += 1;
        }
    }

    fn nr(name: &str) -> u32 {
        ScmpSyscall::from_name_by_arch(name, ScmpArch::X8664).unwrap().as_raw_syscall() as u32
    }

    fn nr_i386(name: &str) -> u32 {
        ScmpSyscall::from_name_by_arch(name, ScmpArch::X86).unwrap().as_raw_syscall() as u32
    }

    #[test]
    fn rules_with_argument_conditions_then_the_default() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "no_such_syscall"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_KILL_PROCESS", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_GT"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 3, "op": "SCMP_CMP_NE"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 0x7e020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["ptrace"], "action": "SCMP_ACT_TRACE"}
            ]
        }));
        let prog = compile(&p).unwrap();
        let x = AUDIT_ARCH_X86_64;
        assert_eq!(run(&prog, x, nr("read"), [0; 6]), RET_ALLOW);
        assert_eq!(run(&prog, x, nr("getpid"), [0; 6]), RET_ALLOW, "a rule with the default's action is dropped");
        assert_eq!(run(&prog, x, nr("mkdir"), [0; 6]), RET_ERRNO | 1);
        assert_eq!(run(&prog, x, nr("chmod"), [0; 6]), RET_ERRNO | 13);
        assert_eq!(run(&prog, x, nr("kill"), [1, 10, 0, 0, 0, 0]), RET_ERRNO | 1);
        assert_eq!(run(&prog, x, nr("kill"), [1, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, x, nr("kill"), [1, 10 | (1 << 32), 0, 0, 0, 0]), RET_ALLOW, "the high half counts");
        assert_eq!(run(&prog, x, nr("personality"), [9, 0, 0, 0, 0, 0]), RET_KILL_PROCESS);
        assert_eq!(run(&prog, x, nr("personality"), [8, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, x, nr("personality"), [1 << 33, 0, 0, 0, 0, 0]), RET_KILL_PROCESS);
        assert_eq!(run(&prog, x, nr("socket"), [2, 1, 0, 0, 0, 0]), RET_ERRNO | 1, "conditions on two arguments: both");
        assert_eq!(run(&prog, x, nr("socket"), [2, 3, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, x, nr("socket"), [10, 1, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, x, nr("clone"), [0x11, 0, 0, 0, 0, 0]), RET_ERRNO | 1);
        assert_eq!(run(&prog, x, nr("clone"), [0x10000000, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, x, nr("ptrace"), [0; 6]), RET_TRACE | 1, "TRACE without errnoRet: EPERM, as runc");
        // Only the native architecture was named: every other one is killed, as libseccomp does.
        assert_eq!(run(&prog, AUDIT_ARCH_I386, nr_i386("read"), [0; 6]), RET_KILL_THREAD);
        assert_eq!(run(&prog, x, X32_BIT | nr("read"), [0; 6]), RET_KILL_THREAD);
    }

    #[test]
    fn two_conditions_on_one_argument_are_either_as_in_runc() {
        let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 10, "op": "SCMP_CMP_EQ"}]}
        ]}));
        let prog = compile(&p).unwrap();
        for (domain, verdict) in [(2, RET_ERRNO | 1), (10, RET_ERRNO | 1), (1, RET_ALLOW)] {
            assert_eq!(run(&prog, AUDIT_ARCH_X86_64, nr("socket"), [domain, 0, 0, 0, 0, 0]), verdict, "domain {domain}");
        }
    }

    #[test]
    fn every_architecture_the_profile_names_with_its_own_numbers() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["getpid", "write", "exit", "socketcall"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]
        }));
        let prog = compile(&p).unwrap();
        for (what, arch, nr) in [
            ("x86_64", AUDIT_ARCH_X86_64, nr("getpid")),
            ("i386", AUDIT_ARCH_I386, nr_i386("getpid")),
            ("x32", AUDIT_ARCH_X86_64, X32_BIT | nr("getpid")),
            ("socketcall, on i386 only", AUDIT_ARCH_I386, nr_i386("socketcall")),
        ] {
            assert_eq!(run(&prog, arch, nr, [0; 6]), RET_ALLOW, "{what}");
        }
        assert_eq!(nr_i386("getpid"), 20, "i386's own numbers");
        assert_eq!(run(&prog, AUDIT_ARCH_I386, nr_i386("getppid"), [0; 6]), RET_ERRNO | 38);
        assert_eq!(run(&prog, AUDIT_ARCH_I386, nr_i386("mkdir"), [0; 6]), RET_ERRNO | 13);
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, X32_BIT | nr("mkdir"), [0; 6]), RET_ERRNO | 13);
        assert_eq!(run(&prog, AUDIT_ARCH_AARCH64, 172, [0; 6]), RET_KILL_THREAD, "an architecture not named");
    }

    #[test]
    fn default_errno_notify_and_flags() {
        let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38}));
        assert_eq!(run(&compile(&p).unwrap(), AUDIT_ARCH_X86_64, 0, [0; 6]), RET_ERRNO | 38);
        let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", "SECCOMP_FILTER_FLAG_TSYNC"],
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}));
        assert!(uses_notify(&p));
        assert_eq!(run(&compile(&p).unwrap(), AUDIT_ARCH_X86_64, nr("mkdir"), [0; 6]), RET_USER_NOTIF);
        assert_eq!(filter_flags(&p).unwrap(), FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV);
        let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}));
        assert!(compile(&p).unwrap_err().to_string().contains("needs an SCMP_ACT_NOTIFY"));
        let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"],
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}));
        assert!(compile(&p).unwrap_err().to_string().contains("argument index 6"));
    }
}
