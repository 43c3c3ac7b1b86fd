//! linux.seccomp: the config's profile compiled into a classic BPF program and installed with
//! seccomp(2), without libseccomp. x86_64 only: another architecture in a syscall's audit data
//! (i386 via int 0x80, x32) is killed, as libseccomp does for an architecture the filter lacks.
//! Unknown syscall names are skipped (runc skips them too: profiles name newer syscalls).

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompOperator as Op};

use super::InitError;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const RET_KILL_THREAD: u32 = 0;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const EPERM: u32 = 1;

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

/// Offsets in struct seccomp_data.
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg_lo(i: usize) -> u32 {
    16 + 8 * i as u32
}
fn arg_hi(i: usize) -> u32 {
    20 + 8 * i as u32
}

pub type Program = Vec<libc::sock_filter>;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn action_ret(action: Action, errno: Option<u32>, default_errno: u32, what: &str) -> Result<u32, InitError> {
    Ok(match action {
        Action::ScmpActKill | Action::ScmpActKillThread => RET_KILL_THREAD,
        Action::ScmpActKillProcess => RET_KILL_PROCESS,
        Action::ScmpActTrap => RET_TRAP,
        Action::ScmpActErrno => RET_ERRNO | (errno.unwrap_or(default_errno) & 0xffff),
        Action::ScmpActTrace => RET_TRACE | (errno.unwrap_or(0) & 0xffff),
        Action::ScmpActLog => RET_LOG,
        Action::ScmpActAllow => RET_ALLOW,
        // The listener fd goes to the agent at linux.seccomp.listenerPath (notify.rs).
        Action::ScmpActNotify => {
            let _ = what;
            RET_USER_NOTIF
        }
    })
}

pub fn syscall_number(name: &str) -> Option<u32> {
    super::syscalls_x86_64::SYSCALLS.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// One argument condition; a jump to `FAIL` (patched later) means the rule does not match.
const FAIL: u8 = 0xff;

fn condition(index: usize, value: u64, value_two: Option<u64>, op: Op) -> Result<Vec<libc::sock_filter>, InitError> {
    if index > 5 {
        return Err(InitError::new(format!("linux.seccomp: argument index {index} (a syscall has 6 at most)")));
    }
    let (hi, lo) = ((value >> 32) as u32, value as u32);
    let ld_hi = stmt(LD_W_ABS, arg_hi(index));
    let ld_lo = stmt(LD_W_ABS, arg_lo(index));
    Ok(match op {
        Op::ScmpCmpEq => vec![ld_hi, jump(JEQ_K, hi, 0, FAIL), ld_lo, jump(JEQ_K, lo, 0, FAIL)],
        // Matches unless both halves are equal.
        Op::ScmpCmpNe => vec![ld_hi, jump(JEQ_K, hi, 0, 2), ld_lo, jump(JEQ_K, lo, FAIL, 0)],
        Op::ScmpCmpGt => vec![ld_hi, jump(JGT_K, hi, 3, 0), jump(JEQ_K, hi, 0, FAIL), ld_lo, jump(JGT_K, lo, 0, FAIL)],
        Op::ScmpCmpGe => vec![ld_hi, jump(JGT_K, hi, 3, 0), jump(JEQ_K, hi, 0, FAIL), ld_lo, jump(JGE_K, lo, 0, FAIL)],
        Op::ScmpCmpLt => vec![ld_hi, jump(JGE_K, hi, 0, 3), jump(JEQ_K, hi, 0, FAIL), ld_lo, jump(JGE_K, lo, FAIL, 0)],
        Op::ScmpCmpLe => vec![ld_hi, jump(JGE_K, hi, 0, 3), jump(JEQ_K, hi, 0, FAIL), ld_lo, jump(JGT_K, lo, FAIL, 0)],
        Op::ScmpCmpMaskedEq => {
            let want = value_two.unwrap_or(0);
            vec![
                ld_hi,
                stmt(AND_K, hi),
                jump(JEQ_K, (want >> 32) as u32, 0, FAIL),
                ld_lo,
                stmt(AND_K, lo),
                jump(JEQ_K, want as u32, 0, FAIL),
            ]
        }
    })
}

/// Point every FAIL jump of a block at the instruction after the block.
fn patch_fail(block: &mut [libc::sock_filter]) -> Result<(), InitError> {
    let len = block.len();
    for (i, ins) in block.iter_mut().enumerate() {
        let to_end = len - i - 1;
        let off = u8::try_from(to_end).map_err(|_| InitError::new("linux.seccomp: a rule with too many conditions"))?;
        if ins.code & 0x07 == 0x05 && ins.code != RET_K {
            if ins.jt == FAIL {
                ins.jt = off;
            }
            if ins.jf == FAIL {
                ins.jf = off;
            }
        }
    }
    Ok(())
}

/// The BPF program for a profile: arch check, then one block per (rule, syscall) in order, the
/// first block that matches deciding, then the default action.
pub fn compile(s: &LinuxSeccomp) -> Result<Program, InitError> {
    let default_errno = s.default_errno_ret().unwrap_or(EPERM);
    let mut prog = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(RET_K, RET_KILL_PROCESS),
    ];
    for rule in s.syscalls().clone().unwrap_or_default() {
        let ret = action_ret(rule.action(), rule.errno_ret(), EPERM, &rule.names().join(","))?;
        for name in rule.names() {
            let Some(nr) = syscall_number(name) else { continue };
            let mut block = vec![stmt(LD_W_ABS, NR), jump(JEQ_K, nr, 0, FAIL)];
            for a in rule.args().clone().unwrap_or_default() {
                block.extend(condition(a.index(), a.value(), a.value_two(), a.op())?);
            }
            block.push(stmt(RET_K, ret));
            // FAIL jumps land just past the RET: the next block.
            patch_fail(&mut block)?;
            prog.extend(block);
        }
    }
    prog.push(stmt(RET_K, action_ret(s.default_action(), Some(default_errno), default_errno, "defaultAction")?));
    if prog.len() > 4096 {
        return Err(InitError::new(format!("linux.seccomp: the profile compiles to {} instructions, more than the kernel's 4096", prog.len())));
    }
    Ok(prog)
}

fn filter_flags(s: &LinuxSeccomp) -> Result<libc::c_ulong, InitError> {
    let mut flags = 0;
    for f in s.flags().clone().unwrap_or_default() {
        let name = serde_json::to_value(f).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        flags |= match name.as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => 1,
            "SECCOMP_FILTER_FLAG_LOG" => 2,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => 4,
            other => return Err(InitError::new(format!("linux.seccomp.flags {other:?}: not supported"))),
        };
    }
    Ok(flags)
}

/// Whether any action of the profile is SCMP_ACT_NOTIFY (then the filter has a listener).
pub fn uses_notify(s: &LinuxSeccomp) -> bool {
    s.default_action() == Action::ScmpActNotify || s.syscalls().iter().flatten().any(|r| r.action() == Action::ScmpActNotify)
}

/// Install the filter on this thread (and, with TSYNC, the others); with a notify action, the
/// kernel's listener fd for the agent comes back.
pub fn install(s: &LinuxSeccomp, prog: &Program) -> Result<Option<std::os::fd::OwnedFd>, InitError> {
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
    let notify = uses_notify(s);
    let flags = filter_flags(s)? | if notify { 8 /* SECCOMP_FILTER_FLAG_NEW_LISTENER */ } else { 0 };
    // SAFETY: seccomp(2) reads the program through a pointer to our live Vec.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, flags, &fprog as *const _) };
    if r < 0 {
        return Err(InitError::new(format!("linux.seccomp: install the filter: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: with NEW_LISTENER the return value is a new fd that we own.
    Ok(notify.then(|| unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(r as i32) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(v: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(v).unwrap()
    }

    /// A tiny classic-BPF interpreter for the instructions `compile` emits.
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
                LD_W_ABS => a = word(ins.k),
                AND_K => a &= ins.k,
                RET_K => return ins.k,
                JEQ_K | JGT_K | JGE_K => {
                    let t = match ins.code {
                        JEQ_K => a == ins.k,
                        JGT_K => a > ins.k,
                        _ => a >= ins.k,
                    };
                    pc += if t { ins.jt } else { ins.jf } as usize;
                }
                c => panic!("unexpected opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn rules_in_order_with_argument_conditions_then_the_default() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir", "no_such_syscall"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_KILL_PROCESS", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_GT"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}, {"index": 0, "value": 0x100000000u64, "op": "SCMP_CMP_LT"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 0x7e020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        }));
        let prog = compile(&p).unwrap();
        let x = AUDIT_ARCH_X86_64;
        let nr = |n: &str| syscall_number(n).unwrap();
        assert_eq!(run(&prog, x, nr("read"), [0; 6]), RET_ALLOW);
        assert_eq!(run(&prog, x, nr("mkdir"), [0; 6]), RET_ERRNO | 1);
        assert_eq!(run(&prog, x, nr("chmod"), [0; 6]), RET_ERRNO | 13);
        assert_eq!(run(&prog, x, nr("kill"), [1, 10, 0, 0, 0, 0]), RET_ERRNO | 1);
        assert_eq!(run(&prog, x, nr("kill"), [1, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, x, nr("kill"), [1, 10 | (1 << 32), 0, 0, 0, 0]), RET_ALLOW, "the high half counts");
        assert_eq!(run(&prog, x, nr("personality"), [9, 0, 0, 0, 0, 0]), RET_KILL_PROCESS);
        assert_eq!(run(&prog, x, nr("personality"), [8, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, x, nr("personality"), [1 << 33, 0, 0, 0, 0, 0]), RET_KILL_PROCESS);
        assert_eq!(run(&prog, x, nr("socket"), [2, 0, 0, 0, 0, 0]), RET_ERRNO | 1);
        assert_eq!(run(&prog, x, nr("socket"), [40, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, x, nr("socket"), [1 << 32 | 2, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, x, nr("clone"), [0x11, 0, 0, 0, 0, 0]), RET_ERRNO | 1);
        assert_eq!(run(&prog, x, nr("clone"), [0x10000000, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(&prog, 0x4000_0003, 1, [0; 6]), RET_KILL_PROCESS, "i386 is not in the filter");
        assert_eq!(run(&prog, x, X32_SYSCALL_BIT | 1, [0; 6]), RET_KILL_PROCESS, "nor is x32");
    }

    #[test]
    fn comparisons_at_the_edges() {
        for (op, v, cases) in [
            ("SCMP_CMP_GE", 5u64, [(4u64, false), (5, true), (6, true)]),
            ("SCMP_CMP_LT", 5, [(4, true), (5, false), (6, false)]),
            ("SCMP_CMP_LE", 5, [(4, true), (5, true), (6, false)]),
            ("SCMP_CMP_GT", 1 << 32, [(u32::MAX as u64, false), (1 << 32, false), ((1 << 32) + 1, true)]),
        ] {
            let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 2, "value": v, "op": op}]}]}));
            let prog = compile(&p).unwrap();
            for (arg, hit) in cases {
                let got = run(&prog, AUDIT_ARCH_X86_64, 0, [0, 0, arg, 0, 0, 0]);
                assert_eq!(got == (RET_ERRNO | 1), hit, "{op} {v} with {arg}");
            }
        }
    }

    #[test]
    fn default_errno_and_notify() {
        let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38}));
        let prog = compile(&p).unwrap();
        assert_eq!(run(&prog, AUDIT_ARCH_X86_64, 0, [0; 6]), RET_ERRNO | 38);
        let p = profile(serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
        assert!(uses_notify(&p));
        assert_eq!(run(&compile(&p).unwrap(), AUDIT_ARCH_X86_64, 0, [0; 6]), RET_USER_NOTIF);
    }
}
