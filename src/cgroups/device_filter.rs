//! cgroup v2's device control: `linux.resources.devices` compiled to an eBPF program of type
//! BPF_PROG_TYPE_CGROUP_DEVICE and attached to the container's cgroup, as runc and crun do.
//!
//! The rules are first reduced the way cgroup v1's devices controller (and runc's emulator) reads
//! them in order: a rule of type "a" sets the default (allow or deny everything) and drops every
//! exception; any other rule either adds an exception to that default (merging the access of an
//! exception for the same type:major:minor) or takes access away from the exception it names.
//! The program then checks the exceptions in order, and gives the default when none matches. As
//! in runc, the default before the first rule is deny: a config that lists only allow rules gets
//! only those devices.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::error::CgroupError;

const MKNOD: u32 = 1;
const READ: u32 = 2;
const WRITE: u32 = 4;
const BLOCK: u32 = 1;
const CHAR: u32 = 2;

/// One exception to the default: device type (BLOCK or CHAR), major and minor (None: any) and
/// the access bits it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exception {
    typ: u32,
    major: Option<u32>,
    minor: Option<u32>,
    access: u32,
}

/// The rules reduced to a default and its exceptions, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default_allow: bool,
    exceptions: Vec<Exception>,
}

fn field_err(rule: &LinuxDeviceCgroup, reason: &str) -> CgroupError {
    CgroupError::BadValue {
        field: "linux.resources.devices".to_string(),
        value: format!("{rule:?}"),
        reason: reason.to_string(),
    }
}

fn access_bits(rule: &LinuxDeviceCgroup) -> Result<u32, CgroupError> {
    let text = rule.access().as_deref().filter(|a| !a.is_empty()).unwrap_or("rwm");
    text.chars().try_fold(0, |bits, c| match c {
        'm' => Ok(bits | MKNOD),
        'r' => Ok(bits | READ),
        'w' => Ok(bits | WRITE),
        _ => Err(field_err(rule, "access may only hold r, w and m")),
    })
}

/// A major or minor number: absent or negative is "any"; the program compares 32-bit values.
fn number(rule: &LinuxDeviceCgroup, n: Option<i64>) -> Result<Option<u32>, CgroupError> {
    match n {
        None => Ok(None),
        Some(n) if n < 0 => Ok(None),
        Some(n) => i32::try_from(n).map(|n| Some(n as u32)).map_err(|_| field_err(rule, "device number out of range")),
    }
}

impl Filter {
    pub fn from_rules(rules: &[LinuxDeviceCgroup]) -> Result<Filter, CgroupError> {
        let mut f = Filter { default_allow: false, exceptions: vec![] };
        for rule in rules {
            let access = access_bits(rule)?;
            let typ = match rule.typ().unwrap_or(LinuxDeviceType::A) {
                LinuxDeviceType::A => {
                    f = Filter { default_allow: rule.allow(), exceptions: vec![] };
                    continue;
                }
                LinuxDeviceType::B => BLOCK,
                LinuxDeviceType::C | LinuxDeviceType::U => CHAR,
                // A FIFO is no device to the kernel's check: nothing to allow or deny.
                LinuxDeviceType::P => continue,
            };
            let ex = Exception { typ, major: number(rule, rule.major())?, minor: number(rule, rule.minor())?, access };
            let same = |e: &Exception| (e.typ, e.major, e.minor) == (ex.typ, ex.major, ex.minor);
            if rule.allow() != f.default_allow {
                match f.exceptions.iter_mut().find(|e| same(e)) {
                    Some(e) => e.access |= access,
                    None => f.exceptions.push(ex),
                }
            } else {
                for e in f.exceptions.iter_mut().filter(|e| same(e)) {
                    e.access &= !access;
                }
                f.exceptions.retain(|e| e.access != 0);
            }
        }
        Ok(f)
    }

    /// The kernel's v1 check for one access: under a deny default an exception must cover every
    /// bit asked for; under an allow default any exception that shares a bit refuses.
    #[cfg(test)]
    fn allows(&self, typ: u32, major: u32, minor: u32, access: u32) -> bool {
        let hit = self.exceptions.iter().any(|e| {
            e.typ == typ
                && e.major.is_none_or(|m| m == major)
                && e.minor.is_none_or(|m| m == minor)
                && if self.default_allow { access & e.access != 0 } else { access & !e.access == 0 }
        });
        hit != self.default_allow
    }

    /// The program: r2 = type, r3 = access, r4 = major, r5 = minor from the context
    /// (struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }, access_type being
    /// access << 16 | type), one block per exception that jumps to the next block on a mismatch
    /// and returns the exception's verdict otherwise, then the default.
    pub fn program(&self) -> Vec<Insn> {
        let mut p = vec![
            Insn::ldx_w(2, 1, 0),
            Insn::mov_reg(3, 2),
            Insn::alu_imm(AND, 2, 0xffff),
            Insn::alu_imm(RSH, 3, 16),
            Insn::ldx_w(4, 1, 4),
            Insn::ldx_w(5, 1, 8),
        ];
        let verdict = i32::from(!self.default_allow);
        for e in &self.exceptions {
            // (instruction, whether it jumps to the next block on a mismatch)
            let mut block: Vec<(Insn, bool)> = vec![(Insn::jmp_imm(JNE, 2, e.typ as i32), true)];
            if self.default_allow {
                // A deny exception refuses any access that shares one of its bits.
                if e.access != MKNOD | READ | WRITE {
                    block.push((Insn::mov_reg(0, 3), false));
                    block.push((Insn::alu_imm(AND, 0, e.access as i32), false));
                    block.push((Insn::jmp_imm(JEQ, 0, 0), true));
                }
            } else if e.access != MKNOD | READ | WRITE {
                // An allow exception must cover every bit asked for.
                block.push((Insn::mov_reg(0, 3), false));
                block.push((Insn::alu_imm(AND, 0, (!e.access & 7) as i32), false));
                block.push((Insn::jmp_imm(JNE, 0, 0), true));
            }
            if let Some(m) = e.major {
                block.push((Insn::jmp_imm(JNE, 4, m as i32), true));
            }
            if let Some(m) = e.minor {
                block.push((Insn::jmp_imm(JNE, 5, m as i32), true));
            }
            block.push((Insn::mov_imm(0, verdict), false));
            block.push((Insn::exit(), false));
            let len = block.len();
            p.extend(block.into_iter().enumerate().map(|(i, (mut insn, jumps))| {
                if jumps {
                    insn.off = (len - i - 1) as i16;
                }
                insn
            }));
        }
        p.push(Insn::mov_imm(0, i32::from(self.default_allow)));
        p.push(Insn::exit());
        p
    }
}

/// One eBPF instruction as the kernel reads it (struct bpf_insn).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const AND: u8 = 0x50;
const RSH: u8 = 0x70;
const JEQ: u8 = 0x10;
const JNE: u8 = 0x50;

impl Insn {
    fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        // BPF_LDX | BPF_MEM | BPF_W
        Insn { code: 0x61, regs: dst | src << 4, off, imm: 0 }
    }
    fn mov_reg(dst: u8, src: u8) -> Insn {
        // BPF_ALU64 | BPF_MOV | BPF_X
        Insn { code: 0xbf, regs: dst | src << 4, off: 0, imm: 0 }
    }
    fn mov_imm(dst: u8, imm: i32) -> Insn {
        // BPF_ALU64 | BPF_MOV | BPF_K
        Insn { code: 0xb7, regs: dst, off: 0, imm }
    }
    fn alu_imm(op: u8, dst: u8, imm: i32) -> Insn {
        // BPF_ALU64 | op | BPF_K
        Insn { code: 0x07 | op, regs: dst, off: 0, imm }
    }
    fn jmp_imm(op: u8, dst: u8, imm: i32) -> Insn {
        // BPF_JMP | op | BPF_K; the offset is filled in by the block that holds it
        Insn { code: 0x05 | op, regs: dst, off: 0, imm }
    }
    fn exit() -> Insn {
        Insn { code: 0x95, regs: 0, off: 0, imm: 0 }
    }
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The prefix of union bpf_attr that BPF_PROG_LOAD reads (the kernel zeroes the rest).
#[repr(C)]
#[derive(Default)]
struct LoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The prefix BPF_PROG_ATTACH, BPF_PROG_DETACH and BPF_PROG_GET_FD_BY_ID read.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// The prefix BPF_PROG_QUERY reads and fills.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> Result<libc::c_long, Errno> {
    // SAFETY: attr is a live, initialised repr(C) prefix of union bpf_attr of the size given; the
    // pointers inside it (instructions, license, log, id array) outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as u32) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the bpf syscall just returned this new fd; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Loads the filter for `rules` and makes it the one program of molt's on the cgroup directory
/// `dir`: attached beside whatever its ancestors hold (BPF_F_ALLOW_MULTI: every program on the
/// path must allow an access), then the programs attached there before (an earlier create's or
/// update's) detached, so the cgroup is never without a filter.
pub fn attach(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    let fail = |step: &str, errno: Errno| CgroupError::Write {
        path: dir.to_path_buf(),
        value: format!("eBPF device filter ({step})"),
        context: "linux.resources.devices".to_string(),
        errno,
    };
    let insns = Filter::from_rules(rules)?.program();
    let license = c"Apache";
    let mut log = vec![0u8; 16 * 1024];
    let mut load = LoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    let prog = match bpf(BPF_PROG_LOAD, &mut load) {
        Ok(fd) => owned(fd),
        Err(e) => {
            let text = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)]).trim().to_string();
            return Err(fail(&format!("load, verifier says: {text}"), e));
        }
    };
    let cgroup = nix::fcntl::open(dir, nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| fail("open the cgroup", e))?;
    // SAFETY: open just returned this fd; nothing else owns it.
    let cgroup = unsafe { OwnedFd::from_raw_fd(cgroup) };
    let before = attached_ids(&cgroup).map_err(|e| fail("query", e))?;
    let mut attach = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attach).map_err(|e| fail("attach", e))?;
    for id in before {
        let mut by_id = AttachAttr { target_fd: id, ..Default::default() };
        let old = match bpf(BPF_PROG_GET_FD_BY_ID, &mut by_id) {
            Ok(fd) => owned(fd),
            // Detached meanwhile by someone else: nothing left to do for it.
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(fail("find the previous filter", e)),
        };
        let mut detach = AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: old.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        match bpf(BPF_PROG_DETACH, &mut detach) {
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(fail("detach the previous filter", e)),
        }
    }
    Ok(())
}

/// The ids of the device programs attached to the cgroup itself (not its ancestors).
fn attached_ids(cgroup: &OwnedFd) -> Result<Vec<u32>, Errno> {
    let mut ids = vec![0u32; 64];
    let mut q = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut q)?;
    ids.truncate(q.prog_cnt as usize);
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_str(json).expect("rules")
    }

    /// Runs the generated program on one access, for the instructions it emits.
    fn run(p: &[Insn], typ: u32, major: u32, minor: u32, access: u32) -> bool {
        let ctx = [access << 16 | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                0x61 => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                0xbf => r[dst] = r[src],
                0xb7 => r[dst] = i.imm as i64 as u64,
                0x57 => r[dst] &= i.imm as i64 as u64,
                0x77 => r[dst] >>= i.imm as u32,
                0x55 | 0x15 => {
                    let eq = r[dst] == i.imm as i64 as u64;
                    if eq == (i.code == 0x15) {
                        pc += i.off as usize;
                    }
                }
                0x95 => return r[0] == 1,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    /// Every access to a set of devices, checked three ways: the program, the reduced filter's
    /// own check, and the expectation.
    fn check(f: &Filter, cases: &[(u32, u32, u32, u32, bool)]) {
        let p = f.program();
        for &(typ, major, minor, access, want) in cases {
            assert_eq!(f.allows(typ, major, minor, access), want, "filter: {typ} {major}:{minor} {access} in {f:?}");
            assert_eq!(run(&p, typ, major, minor, access), want, "program: {typ} {major}:{minor} {access} in {f:?}");
        }
    }

    #[test]
    fn dockers_rules_allow_the_defaults_and_nothing_else() {
        let f = Filter::from_rules(&rules(
            r#"[{"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "access": "m"},
                {"allow": true, "type": "b", "access": "m"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": true, "type": "c", "major": 136, "access": "rwm"},
                {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rw"}]"#,
        ))
        .unwrap();
        check(
            &f,
            &[
                (CHAR, 1, 3, READ | WRITE, true),
                (CHAR, 1, 3, MKNOD, true),
                (CHAR, 1, 5, READ, false),
                (CHAR, 1, 5, MKNOD, true),
                (BLOCK, 8, 0, MKNOD, true),
                (BLOCK, 8, 0, READ, false),
                (BLOCK, 1, 3, READ, false),
                (CHAR, 136, 7, WRITE, true),
                (CHAR, 10, 200, READ | WRITE, true),
                (CHAR, 10, 201, READ, false),
            ],
        );
    }

    #[test]
    fn an_allow_default_with_deny_exceptions_and_removed_access() {
        let f = Filter::from_rules(&rules(
            r#"[{"allow": true, "type": "a"},
                {"allow": false, "type": "b", "major": 8, "access": "rw"},
                {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "w"}]"#,
        ))
        .unwrap();
        check(
            &f,
            &[
                (BLOCK, 8, 1, READ, false),
                (BLOCK, 8, 1, MKNOD, true),
                (BLOCK, 9, 1, READ, true),
                (CHAR, 1, 3, READ, false),
                (CHAR, 1, 3, WRITE, true),
                (CHAR, 1, 3, READ | WRITE, false),
                (CHAR, 4, 1, READ | WRITE, true),
            ],
        );
    }

    #[test]
    fn an_a_rule_resets_and_no_rules_deny_everything() {
        let f = Filter::from_rules(&rules(r#"[{"allow": true, "type": "c", "major": 1, "minor": 3}, {"allow": false}]"#)).unwrap();
        check(&f, &[(CHAR, 1, 3, READ, false)]);
        let f = Filter::from_rules(&rules(r#"[{"allow": false}, {"allow": true, "type": "a"}]"#)).unwrap();
        check(&f, &[(CHAR, 1, 3, READ, true), (BLOCK, 8, 0, MKNOD, true)]);
        let f = Filter::from_rules(&[]).unwrap();
        check(&f, &[(CHAR, 1, 3, READ, false)]);
    }

    /// The kernel's verdict under the filter: a shell moved into a cgroup of its own under the v2
    /// hierarchy (hybrid or pure) makes nodes with mknod(1) and reads one; a second attach
    /// replaces the first program, as an update or an upgrade's re-apply does.
    #[test]
    fn the_kernel_enforces_the_filter_and_a_second_attach_replaces_the_first() {
        assert!(nix::unistd::geteuid().is_root(), "needs root (it attaches eBPF programs to a real cgroup); run as root");
        let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|d| d.join("cgroup.procs").exists() && nix::sys::statfs::statfs(*d).is_ok_and(|s| s.filesystem_type().0 == libc::CGROUP2_SUPER_MAGIC))
            .expect("a mounted cgroup v2 hierarchy");
        let tag = format!("molt-test-{}-devfilter", std::process::id());
        let dir = base.join(&tag);
        let scratch = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir).expect("mkdir the test cgroup");
        std::fs::create_dir_all(&scratch).expect("mkdir scratch");
        let try_in = |script: &str| -> String {
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("echo $$ > {}/cgroup.procs && cd {} && {script}", dir.display(), scratch.display()))
                .output()
                .expect("sh");
            String::from_utf8_lossy(&o.stdout).to_string()
        };
        let script = "rm -f n z; mknod n c 1 3 && echo null; mknod z c 1 5 && echo zero; head -c1 n >/dev/null 2>&1 && echo read-null";
        let r = (|| {
            attach(&dir, &rules(r#"[{"allow": false}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]"#))?;
            let one = try_in(script);
            attach(&dir, &rules(r#"[{"allow": false}, {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "m"}]"#))?;
            let two = try_in(script);
            let cg = nix::fcntl::open(&dir, nix::fcntl::OFlag::O_DIRECTORY, nix::sys::stat::Mode::empty()).expect("open");
            // SAFETY: open just returned this fd.
            let ids = attached_ids(&unsafe { OwnedFd::from_raw_fd(cg) }).expect("query");
            Ok::<_, CgroupError>((one, two, ids.len()))
        })();
        let _ = std::fs::remove_dir(&dir);
        let _ = std::fs::remove_dir_all(&scratch);
        let (one, two, attached) = r.expect("attach");
        assert_eq!(one, "null\nread-null\n", "only 1:3 allowed");
        assert_eq!(two, "zero\n", "only mknod of 1:5 allowed after the second attach");
        assert_eq!(attached, 1, "the first program is detached");
    }

    #[test]
    fn a_bad_access_letter_or_number_names_the_field() {
        let e = Filter::from_rules(&rules(r#"[{"allow": true, "type": "c", "access": "rx"}]"#)).unwrap_err();
        assert!(e.to_string().contains("linux.resources.devices"), "{e}");
        let e = Filter::from_rules(&rules(r#"[{"allow": true, "type": "c", "major": 4294967296}]"#)).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }
}
