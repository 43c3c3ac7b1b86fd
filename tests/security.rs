//! What the container must not get from the runtime: its file descriptors, and a way to write the
//! runtime's binary through /proc (the CVE-2019-5736 class).

mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Run `runtime args` with fds 3, 4, 5 and 10 open on /dev/null and inheritable, as an engine that
/// passes sockets does (and as some shells leave fd 10); only those --preserve-fds names may
/// reach the container.
fn with_extra_fds(bin: &std::path::Path, args: &[&str]) -> std::process::Output {
    let null = std::path::Path::new("/dev/null");
    with_fds(bin, args, &[(3, null), (4, null), (5, null), (10, null)])
}

/// Run `runtime args` with each path open (read-only, inheritable) on the given fd number.
fn with_fds(bin: &std::path::Path, args: &[&str], fds: &[(i32, &std::path::Path)]) -> std::process::Output {
    let opened: Vec<(i32, std::ffi::CString)> = fds
        .iter()
        .map(|(n, p)| (*n, std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()))
        .collect();
    let mut cmd = Command::new(bin);
    cmd.args(args);
    // SAFETY: only async-signal-safe calls (open, dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for (fd, path) in &opened {
                let f = libc::open(path.as_ptr(), libc::O_RDONLY);
                if f < 0 || (f != *fd && libc::dup2(f, *fd) < 0) {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    run_to_files(&mut cmd)
}

#[test]
fn only_stdio_and_preserved_fds_reach_the_container() {
    require_root!();
    let b = Bundle::new(&["ls", "/proc/self/fd"]);
    let bundle = b.write();
    let root = Root::new();
    let r = RuncRoot::new();
    for (preserve, want) in [("0", "0\n1\n2\n3\n"), ("2", "0\n1\n2\n3\n4\n5\n")] {
        // ls opens the directory itself: one fd past the last preserved one.
        let id = unique("fds");
        let root_s = root.path.display().to_string();
        let out = with_extra_fds(&molt_bin(), &["--root", &root_s, "run", "--preserve-fds", preserve, "--bundle", &bundle, &id]);
        assert!(out.status.success(), "{}", stderr_of(&out));
        assert_eq!(stdout_of(&out), want, "--preserve-fds {preserve}");
        if let Some(r) = &r {
            let rs = r.path.display().to_string();
            let out = with_extra_fds(&runc_bin().unwrap(), &["--root", &rs, "run", "--preserve-fds", preserve, "--bundle", &bundle, &id]);
            assert_eq!(stdout_of(&out), want, "runc, --preserve-fds {preserve}: {}", stderr_of(&out));
        }
    }
}

/// The running container's init holds 0, 1 and 2 only, and an exec'd `ls` one more (its own
/// directory), whatever the caller of molt left open.
fn assert_only_stdio(root: &Root, id: &str) {
    let pid = root.state(id)["pid"].as_i64().unwrap();
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"]);
    let root_s = root.path.display().to_string();
    let out = with_extra_fds(&molt_bin(), &["--root", &root_s, "exec", id, "ls", "/proc/self/fd"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "0\n1\n2\n3\n");
}

#[test]
fn no_runtime_fd_in_a_running_container_or_exec() {
    require_root!();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.write();
    let root = Root::new();
    let root_s = root.path.display().to_string();
    let out = with_extra_fds(&molt_bin(), &["--root", &root_s, "--log", "/dev/null", "create", "--bundle", &bundle, "f"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    root.ok(&["start", "f"]);
    assert_only_stdio(&root, "f");
}

/// A bundle in a new user namespace (0 is host 100000) with a tmpfs at /tmp: the shared rootfs
/// is read-only to its root, the tmpfs is not.
fn in_a_user_namespace(args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    b.add_namespace(serde_json::json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.tmpfs("/tmp");
    b
}

#[test]
fn only_stdio_and_preserved_fds_reach_a_user_namespace_container_or_exec() {
    require_root!();
    let b = in_a_user_namespace(&["ls", "/proc/self/fd"]);
    let bundle = b.write();
    let root = Root::new();
    let root_s = root.path.display().to_string();
    for (preserve, want) in [("0", "0\n1\n2\n3\n"), ("2", "0\n1\n2\n3\n4\n5\n")] {
        let out = with_extra_fds(&molt_bin(), &["--root", &root_s, "run", "--preserve-fds", preserve, "--bundle", &bundle, &unique("ufds")]);
        assert!(out.status.success(), "{}", stderr_of(&out));
        assert_eq!(stdout_of(&out), want, "--preserve-fds {preserve}");
    }
    let b = in_a_user_namespace(&["sleep", "1000"]);
    let bundle = b.write();
    let out = with_extra_fds(&molt_bin(), &["--root", &root_s, "run", "-d", "--bundle", &bundle, "uf"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_only_stdio(&root, "uf");
}

/// CVE-2024-21626: a cwd of /proc/self/fd/N names whatever directory the runtime still holds as
/// fd N at the chdir; the process would start outside the rootfs and walk up to the host's files.
/// Here the runtime holds a bind source (user namespace: molt opens it for the init) and a host
/// directory its caller leaked on fd 10; next to both lies a secret.
struct Escape {
    dir: TempDir,
    secret: String,
}

impl Escape {
    fn new() -> Escape {
        let dir = TempDir::new("molt-cwd");
        let secret = unique("host-secret");
        std::fs::write(dir.join("secret"), &secret).unwrap();
        std::fs::create_dir(dir.join("src")).unwrap();
        std::fs::create_dir(dir.join("leaked")).unwrap();
        Escape { dir, secret }
    }

    fn bundle(&self, args: &[&str]) -> Bundle {
        let mut b = in_a_user_namespace(args);
        // The same path inside, so the cwd molt creates in advance exists and the chdir is tried.
        let src = self.dir.join("src");
        b.mount(serde_json::json!({"destination": src, "type": "bind", "source": src, "options": ["rbind"]}));
        b
    }

    fn leaked(&self) -> std::path::PathBuf {
        self.dir.join("leaked")
    }

    /// The secret was not read, and the process did not even start.
    fn assert_refused(&self, out: &std::process::Output, what: &str) {
        assert!(
            !stdout_of(out).contains(&self.secret) && !stderr_of(out).contains(&self.secret),
            "{what}: the process read a host file through its cwd:\n{}{}",
            stdout_of(out),
            stderr_of(out)
        );
        assert!(!out.status.success(), "{what}: {}", stdout_of(out));
    }
}

#[test]
fn a_cwd_through_proc_self_fd_cannot_leave_the_container() {
    require_root!();
    let e = Escape::new();
    let root = Root::new();
    let root_s = root.path.display().to_string();
    let mut b = e.bundle(&["cat", "../secret"]);
    for n in 3..=20 {
        b.config["process"]["cwd"] = serde_json::json!(format!("/proc/self/fd/{n}"));
        let bundle = b.write();
        let out = with_fds(&molt_bin(), &["--root", &root_s, "run", "--bundle", &bundle, &unique("cwd")], &[(10, &e.leaked())]);
        e.assert_refused(&out, &format!("run, cwd /proc/self/fd/{n}"));
    }
    // A directory the engine passes on purpose (--preserve-fds) stays open: the cwd check refuses it.
    b.config["process"]["cwd"] = serde_json::json!("/proc/self/fd/3");
    let bundle = b.write();
    let out = with_fds(&molt_bin(), &["--root", &root_s, "run", "--preserve-fds", "1", "--bundle", &bundle, "pre"], &[(3, &e.leaked())]);
    e.assert_refused(&out, "run, preserved fd 3");
    assert!(stderr_of(&out).contains("outside the container's root"), "{}", stderr_of(&out));
    assert!(!root.path.join("pre").exists(), "the refused container was left behind");
}

#[test]
fn an_exec_cwd_through_proc_self_fd_cannot_leave_the_container() {
    require_root!();
    let e = Escape::new();
    let root = Root::new();
    let root_s = root.path.display().to_string();
    root.ok(&["run", "-d", "--bundle", &e.bundle(&["sleep", "1000"]).write(), "ex"]);
    for n in 3..=20 {
        let cwd = format!("/proc/self/fd/{n}");
        let out = with_fds(&molt_bin(), &["--root", &root_s, "exec", "--cwd", &cwd, "ex", "cat", "../secret"], &[(10, &e.leaked())]);
        e.assert_refused(&out, &format!("exec, cwd {cwd}"));
    }
    let out = with_fds(
        &molt_bin(),
        &["--root", &root_s, "exec", "--preserve-fds", "1", "--cwd", "/proc/self/fd/3", "ex", "cat", "../secret"],
        &[(3, &e.leaked())],
    );
    e.assert_refused(&out, "exec, preserved fd 3");
    assert!(stderr_of(&out).contains("outside the container's root"), "{}", stderr_of(&out));
    // The container itself is unharmed.
    assert_eq!(root.ok(&["exec", "ex", "echo", "ok"]), "ok\n");
}

/// A masked file is covered with the container's /dev/null, which the config or the image can
/// make anything (here the config makes it the zero device): masking with it would show what it
/// is. Only the null device 1:3 is used; anything else is a clear error.
#[test]
fn masked_paths_are_covered_with_the_null_device_only() {
    require_root!();
    // Finite reads only: the zero device never ends.
    let mut b = Bundle::new(&["sh", "-c", "head -c 4 /etc/passwd | od -An -tx1; echo end"]);
    b.config["linux"]["maskedPaths"].as_array_mut().unwrap().push(serde_json::json!("/etc/passwd"));
    let root = Root::new();
    assert_eq!(root.ok(&["run", "--bundle", &b.write(), "mask"]), "end\n");
    b.config["linux"]["devices"] = serde_json::json!([{"path": "/dev/null", "type": "c", "major": 1, "minor": 5}]);
    let out = root.molt(&["run", "--bundle", &b.write(), "zero"]);
    assert!(!stdout_of(&out).contains("00 00"), "a masked file showed the zero device: {}", stdout_of(&out));
    assert!(!out.status.success() && stderr_of(&out).contains("not the null device 1:3"), "{}", stderr_of(&out));
    assert!(!root.path.join("zero").exists());
}

/// The state root holds every container's config and exec fifo: root's alone (runc's 0700). The
/// pid file goes to a directory others may write: the temporary file molt writes it through
/// must not be a name known in advance, or a symlink planted there would be written through; the
/// same for the state's own temporary file.
#[test]
fn state_root_fifo_and_pid_file_give_nothing_away() {
    use std::os::unix::fs::PermissionsExt;
    require_root!();
    let b = Bundle::new(&["sleep", "1000"]);
    let root = Root::new();
    let dir = TempDir::new("molt-pidfile");
    let precious = dir.join("precious");
    std::fs::write(&precious, "root's own file\n").unwrap();
    // The name molt used to write the pid file through.
    std::os::unix::fs::symlink(&precious, dir.join(".pid.molt-tmp")).unwrap();
    let pid_file = dir.join("pid");
    root.ok(&["create", "--bundle", &b.write(), "--pid-file", pid_file.to_str().unwrap(), "perm"]);
    let mode = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&root.path), 0o700, "state root");
    assert_eq!(mode(&root.path.join("perm/exec.fifo")), 0o600, "exec.fifo");
    // The name state.json was once written through: `start` writes the state again.
    std::os::unix::fs::symlink(&precious, root.path.join("perm/.state.json.tmp")).unwrap();
    root.ok(&["start", "perm"]);
    assert!(std::fs::symlink_metadata(root.path.join("perm/state.json")).unwrap().file_type().is_file(), "state.json is a symlink");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "root's own file\n", "written through the planted symlink");
    assert!(std::fs::symlink_metadata(&pid_file).unwrap().file_type().is_file(), "the pid file is a symlink");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), root.state("perm")["pid"].to_string());
    let leftovers: Vec<_> = std::fs::read_dir(&*dir).unwrap().flatten().map(|e| e.file_name()).filter(|n| n.to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn the_runtime_binary_cannot_be_reached_through_proc() {
    require_root!();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.write();
    let root = Root::new();
    let before = std::fs::read(molt_bin()).unwrap();
    root.ok(&["create", "--bundle", &bundle, "cve"]);
    // While created, the container's init is still molt. A process of the container (here one
    // started by exec, as an attacker's would be) must not open its /proc/1/exe for anything:
    // the init is not dumpable, and the container has no CAP_SYS_PTRACE to override that.
    let probe = "cat /proc/1/exe > /dev/null 2>&1 && echo read || echo no-read; \
                 (echo x >> /proc/1/exe) 2>/dev/null && echo write || echo no-write; \
                 readlink /proc/1/exe > /dev/null 2>&1 && echo link || echo no-link";
    let out = root.ok(&["exec", "cve", "sh", "-c", probe]);
    assert_eq!(out, "no-read\nno-write\nno-link\n");
    if let Some(r) = RuncRoot::new() {
        assert!(r.runc(&["create", "--bundle", &bundle, "cve"]).status.success());
        // runc protects itself differently: its init runs from a sealed memfd copy, which the
        // container may read but not write. Both refuse the write.
        let rout = r.runc(&["exec", "cve", "sh", "-c", probe]);
        assert_eq!(stdout_of(&rout), "read\nno-write\nlink\n", "runc");
    }
    // Once started, /proc/1/exe is the user's program, not molt.
    root.ok(&["start", "cve"]);
    assert_eq!(root.ok(&["exec", "cve", "readlink", "/proc/1/exe"]), "/bin/busybox\n");
    assert!(std::fs::read(molt_bin()).unwrap() == before, "the molt binary changed");
}

/// A copy of the molt binary for tests that try to overwrite it: if molt failed to protect
/// itself, the copy is what breaks, not target/debug/molt.
struct BinaryCopy(std::path::PathBuf);

impl BinaryCopy {
    fn new() -> BinaryCopy {
        let p = std::env::temp_dir().join(unique("molt-bin"));
        std::fs::copy(molt_bin(), &p).unwrap();
        BinaryCopy(p)
    }
}

impl Drop for BinaryCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_ptrace_capable_container_cannot_overwrite_molt() {
    require_root!();
    let bin = BinaryCopy::new();
    let before = std::fs::read(&bin.0).unwrap();
    let mut b = Bundle::new(&["sleep", "1000"]);
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set].as_array_mut().unwrap().push(serde_json::json!("CAP_SYS_PTRACE"));
    }
    b.tmpfs("/w");
    let bundle = b.write();
    let root = Root::new();
    let root_s = root.path.display().to_string();
    let molt = |args: &[&str]| {
        let mut cmd = Command::new(&bin.0);
        cmd.arg("--root").arg(&root_s).args(args);
        run_to_files(&mut cmd)
    };
    assert!(molt(&["create", "--bundle", &bundle, "pt"]).status.success());
    // The attack of CVE-2019-5736: keep an fd of the init's exe, wait for molt to be gone, write.
    let out = molt(&["exec", "pt", "readlink", "/proc/1/exe"]);
    let name = bin.0.file_name().unwrap().to_string_lossy().to_string();
    assert_eq!(stdout_of(&out), format!("/{name}\n"), "the init runs from molt's binary on the private overlay");
    let attack = "exec 3< /proc/1/exe; echo held > /w/held; while [ ! -e /w/go ]; do sleep 0.1; done; \
                  echo PWNED >> /proc/self/fd/3; echo tried > /w/tried";
    let out = molt(&["exec", "-d", "pt", "sh", "-c", attack]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let exists = |f: &str| molt(&["exec", "pt", "test", "-e", f]).status.success();
    assert!(wait_until(30, || exists("/w/held")), "the attacker never got hold of /proc/1/exe");
    assert!(molt(&["start", "pt"]).status.success());
    assert!(molt(&["exec", "pt", "touch", "/w/go"]).status.success());
    assert!(wait_until(30, || exists("/w/tried")), "the attacker never tried to write");
    assert!(std::fs::read(&bin.0).unwrap() == before, "the container overwrote molt's binary");
    let _ = molt(&["delete", "--force", "pt"]);
    // An exec asking for CAP_SYS_PTRACE into a created container: its init runs from the
    // sealed binary, so nothing of molt's is in reach and the exec is allowed.
    let plain = Bundle::new(&["sleep", "1000"]);
    assert!(molt(&["create", "--bundle", &plain.write(), "plain"]).status.success());
    let pfile = plain.dir.join("p.json");
    std::fs::write(
        &pfile,
        serde_json::to_vec(&serde_json::json!({"cwd": "/", "args": ["sh", "-c", "echo x >> /proc/1/exe || echo refused"], "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": ["CAP_SYS_PTRACE"], "effective": ["CAP_SYS_PTRACE"], "permitted": ["CAP_SYS_PTRACE"]}}))
        .unwrap(),
    )
    .unwrap();
    let out = molt(&["exec", "--process", pfile.to_str().unwrap(), "plain"]);
    assert!(out.status.success() && stdout_of(&out) == "refused\n", "{}{}", stdout_of(&out), stderr_of(&out));
    let _ = molt(&["delete", "--force", "plain"]);
    assert!(std::fs::read(&bin.0).unwrap() == before, "the container overwrote molt's binary");
}

fn seccomp_profile() -> serde_json::Value {
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]}
        ]
    })
}

#[test]
fn seccomp_profiles_as_runc_applies_them() {
    require_root!();
    let script = "mkdir /w/d 2>&1 | cut -d: -f2-; chmod 700 /w 2>&1 | cut -d: -f2-; \
                  kill -USR1 $$ 2>&1 | cut -d: -f2-; kill -0 $$ && echo kill-0-allowed; touch /w/f && echo touch-allowed";
    for nnp in [true, false] {
        let mut b = Bundle::new(&["sh", "-c", script]);
        b.tmpfs("/w");
        b.config["process"]["noNewPrivileges"] = serde_json::json!(nnp);
        b.config["linux"]["seccomp"] = seccomp_profile();
        let c = run_both(&b);
        c.assert_same(|s| s.to_string());
        assert_eq!(
            c.molt_out(),
            " can't create directory '/w/d': Operation not permitted\n /w: Permission denied\n can't kill pid 1: Operation not permitted\nkill-0-allowed\ntouch-allowed\n",
            "noNewPrivileges {nnp}"
        );
    }
    // exec'd processes get the container's filter too.
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.tmpfs("/w");
    b.config["linux"]["seccomp"] = seccomp_profile();
    let root = Root::new();
    root.ok(&["run", "-d", "--bundle", &b.write(), "sc"]);
    let out = root.molt(&["exec", "sc", "mkdir", "/w/x"]);
    assert!(!out.status.success() && stderr_of(&out).contains("Operation not permitted"), "{}", stderr_of(&out));
}

#[test]
fn a_seccomp_profile_molt_cannot_apply_is_a_clear_error() {
    require_root!();
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"});
    let root = Root::new();
    let out = root.molt(&["create", "--bundle", &b.write(), "notify"]);
    assert!(!out.status.success() && stderr_of(&out).contains("SCMP_ACT_NOTIFY"), "{}", stderr_of(&out));
    assert!(!root.path.join("notify").exists());
}

#[test]
fn an_allow_list_profile_with_a_default_errno() {
    require_root!();
    let allowed = [
        "read", "write", "open", "openat", "close", "stat", "fstat", "lstat", "newfstatat", "statx", "poll", "lseek",
        "mmap", "mprotect", "munmap", "brk", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "ioctl", "pread64",
        "readv", "writev", "access", "pipe", "pipe2", "dup", "dup2", "dup3", "getpid", "getppid", "getuid", "geteuid",
        "getgid", "getegid", "fcntl", "getdents64", "getcwd", "chdir", "execve", "exit", "exit_group", "wait4",
        "kill", "uname", "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "prlimit64", "getrandom",
        "clone", "clone3", "fork", "vfork", "futex", "sigaltstack", "getpgrp", "setpgid", "getpgid", "madvise", "capget",
        "capset", "prctl", "setgroups", "setresuid", "setresgid", "setuid", "setgid", "close_range", "fchown", "readlink",
        "faccessat", "faccessat2", "sched_yield", "nanosleep", "clock_nanosleep", "sysinfo", "gettid", "tgkill", "fstatfs",
        "statfs", "epoll_pwait", "epoll_ctl", "epoll_create1", "sched_getaffinity", "mincore", "getrlimit", "setrlimit",
    ];
    let mut b = Bundle::new(&["sh", "-c", "echo hi; mkdir /w/x 2>&1 | cut -d: -f2-; echo end"]);
    b.tmpfs("/w");
    b.config["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "syscalls": [{"names": allowed.to_vec(), "action": "SCMP_ACT_ALLOW"}]
    });
    let c = run_both(&b);
    c.assert_same(|s| s.to_string());
    assert_eq!(c.molt_out(), "hi\n can't create directory '/w/x': Function not implemented\nend\n");
}

fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}: {}", path.display(), stderr_of(&out));
    stdout_of(&out).split_whitespace().next().unwrap_or_default().to_string()
}

/// A bundle run by a copy of molt (its path, and a runner for it), the container given
/// CAP_SYS_PTRACE when `ptrace` is set, and a host directory bound at /w with `files` in it.
struct ExeAttack {
    /// Makes the container ids unique: a cgroup path is derived from the id alone, so two tests
    /// with the same id in different roots would share (and kill) one cgroup.
    tag: String,
    bin: BinaryCopy,
    root: Root,
    dir: TempDir,
    rootfs: Option<RootfsCopy>,
}

impl ExeAttack {
    fn new() -> ExeAttack {
        ExeAttack { tag: unique("x"), bin: BinaryCopy::new(), root: Root::new(), dir: TempDir::new("molt-exe-attack"), rootfs: None }
    }

    /// The same with a private copy of the rootfs holding glibc's loader and the shared libraries
    /// of the molt under test (by `ldd`), in which molt's binary really runs.
    fn with_glibc() -> ExeAttack {
        let mut a = ExeAttack::new();
        let rootfs = RootfsCopy::new();
        let out = Command::new("ldd").arg(&a.bin.0).output().expect("run ldd");
        assert!(out.status.success(), "ldd {}: {}", a.bin.0.display(), stderr_of(&out));
        let mut copied = vec![];
        for line in stdout_of(&out).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let Some(lib) = line.rsplit("=>").next().and_then(|l| l.split_whitespace().next()).filter(|l| l.starts_with('/')) else {
                continue;
            };
            let dest = rootfs.dir.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
            copied.push(lib.to_string());
        }
        assert!(copied.iter().any(|l| l.contains("ld-linux")), "no ELF interpreter in ldd's output: {}", stdout_of(&out));
        a.rootfs = Some(rootfs);
        a
    }

    fn bundle(&self, args: &[&str], ptrace: bool) -> Bundle {
        let mut b = Bundle::new(args);
        if let Some(r) = &self.rootfs {
            b.config["root"]["path"] = serde_json::json!(r.dir);
        }
        if ptrace {
            for set in ["bounding", "effective", "permitted"] {
                b.config["process"]["capabilities"][set].as_array_mut().unwrap().push(serde_json::json!("CAP_SYS_PTRACE"));
            }
        }
        b.mount(serde_json::json!({"destination": "/w", "type": "bind", "source": &*self.dir, "options": ["rbind", "rw"]}));
        b
    }

    fn id(&self, name: &str) -> String {
        format!("{name}-{}", self.tag)
    }

    fn molt(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(&self.bin.0);
        cmd.arg("--root").arg(&self.root.path).args(args);
        run_to_files(&mut cmd)
    }
}

/// CVE-2019-5736's entry: a container file whose interpreter is `/proc/self/exe`, run as the
/// init and by `exec`, would execute the runtime's binary inside the container. In the busybox
/// rootfs it fails with ENOENT (molt's ELF interpreter, glibc's loader, is not in the container's
/// root: see the README's security section) as a clear error, the container stays usable, and
/// the binary is unchanged. In a rootfs with glibc's loader molt does run: see
/// `a_proc_self_exe_interpreter_in_a_glibc_rootfs_runs_only_a_sealed_molt`.
#[test]
fn a_proc_self_exe_interpreter_runs_nothing_of_molt() {
    use std::os::unix::fs::PermissionsExt;
    require_root!();
    for ptrace in [false, true] {
        let a = ExeAttack::new();
        let before = sha256(&a.bin.0);
        let evil = a.dir.join("evil");
        std::fs::write(&evil, "#!/proc/self/exe\n").unwrap();
        std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
        let what = if ptrace { "with CAP_SYS_PTRACE" } else { "without CAP_SYS_PTRACE" };
        let out = a.molt(&["run", "--bundle", &a.bundle(&["/w/evil"], ptrace).write(), &a.id("evil-init")]);
        assert!(!out.status.success(), "{what}: the init ran /w/evil ({}): {}{}", out.status, stdout_of(&out), stderr_of(&out));
        assert!(stderr_of(&out).contains("exec /w/evil: No such file or directory"), "{what}: {}", stderr_of(&out));
        assert!(!a.root.path.join(a.id("evil-init")).exists(), "{what}: the failed container was left behind");
        a.molt(&["run", "-d", "--bundle", &a.bundle(&["sleep", "1000"], ptrace).write(), &a.id("evil-exec")]);
        let out = a.molt(&["exec", &a.id("evil-exec"), "/w/evil"]);
        assert!(!out.status.success(), "{what}: exec ran /w/evil: {}", stdout_of(&out));
        assert!(stderr_of(&out).contains("exec /w/evil: No such file or directory"), "{what}: {}", stderr_of(&out));
        let out = a.molt(&["exec", &a.id("evil-exec"), "echo", "ok"]);
        assert_eq!(stdout_of(&out), "ok\n", "{what}: the container after the attempt: {}", stderr_of(&out));
        assert_eq!(sha256(&a.bin.0), before, "{what}: the molt binary changed");
    }
}

/// The attacker program (tests/app/exe-attacker.rs), built once per checkout like the rootfs.
fn exe_attacker() -> std::path::PathBuf {
    let top = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = top.join("tests/app/exe-attacker.rs");
    let bin = top.join("target/fixtures/exe-attacker");
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if bin.exists() && mtime(&bin) >= mtime(&src) {
        return bin;
    }
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    let tmp = bin.with_extension(unique("new"));
    let st = Command::new("rustc")
        .args(["--edition", "2021", "-C", "target-feature=+crt-static", "-o"])
        .arg(&tmp)
        .arg(&src)
        .status()
        .expect("run rustc");
    assert!(st.success(), "rustc {}", src.display());
    std::fs::rename(&tmp, &bin).unwrap();
    bin
}

/// CVE-2019-5736's write: while `molt exec` runs again and again, a process in the container
/// opens /proc/PID/exe of every runtime process it sees (O_PATH), keeps the fds and keeps
/// reopening them for writing through /proc/self/fd. With or without CAP_SYS_PTRACE, the
/// binary of the molt that ran never changes.
#[test]
fn an_attacker_holding_proc_pid_exe_never_writes_molt() {
    require_root!();
    let attacker = exe_attacker();
    for ptrace in [false, true] {
        let a = ExeAttack::new();
        std::fs::copy(&attacker, a.dir.join("attacker")).unwrap();
        let before = sha256(&a.bin.0);
        let what = if ptrace { "with CAP_SYS_PTRACE" } else { "without CAP_SYS_PTRACE" };
        let out = a.molt(&["run", "-d", "--bundle", &a.bundle(&["sleep", "1000"], ptrace).write(), &a.id("att")]);
        assert!(out.status.success(), "{what}: {}", stderr_of(&out));
        let out = a.molt(&["exec", "-d", &a.id("att"), "/w/attacker", "2500", "/w/report"]);
        assert!(out.status.success(), "{what}: {}", stderr_of(&out));
        let report = a.dir.join("report");
        let mut execs = 0;
        while !report.exists() && execs < 200 {
            let out = a.molt(&["exec", &a.id("att"), "true"]);
            assert!(out.status.success(), "{what}: exec during the attack: {}", stderr_of(&out));
            execs += 1;
        }
        assert!(wait_until(10, || report.exists()), "{what}: the attacker never reported");
        let text = std::fs::read_to_string(&report).unwrap();
        eprintln!("{what}, {execs} execs: {text}");
        assert!(!text.starts_with("seen=0 "), "{what}: the attacker never saw a runtime process, so proved nothing: {text}");
        assert!(text.contains(" written=0 "), "{what}: the attacker wrote to a runtime binary: {text}");
        assert_eq!(sha256(&a.bin.0), before, "{what}: the molt binary changed ({text})");
    }
}

/// CVE-2019-5736 in a rootfs with glibc's loader and molt's libraries, where a file whose
/// interpreter is `/proc/self/exe` really executes molt in the container: run as the init (of a
/// container in the attacker's pid namespace) and again and again by `exec`. The attacker holds
/// /proc/PID/exe of every runtime process it sees, those molts included, and keeps reopening it
/// for writing, with and without CAP_SYS_PTRACE: molt runs, the binary never changes.
#[test]
fn a_proc_self_exe_interpreter_in_a_glibc_rootfs_runs_only_a_sealed_molt() {
    use std::os::unix::fs::PermissionsExt;
    require_root!();
    let attacker = exe_attacker();
    for ptrace in [false, true] {
        let what = if ptrace { "with CAP_SYS_PTRACE" } else { "without CAP_SYS_PTRACE" };
        let a = ExeAttack::with_glibc();
        std::fs::copy(&attacker, a.dir.join("attacker")).unwrap();
        let evil = a.dir.join("evil");
        // `molt --help /w/evil`: clap prints the help as soon as it meets the flag.
        std::fs::write(&evil, "#!/proc/self/exe --help\n").unwrap();
        std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
        let before = sha256(&a.bin.0);
        // molt's help, named after the interpreter's path as the kernel passes it.
        let ran_molt = |out: &std::process::Output| stdout_of(out).contains("container runtime") && stdout_of(out).contains("Usage: exe [OPTIONS]");
        let out = a.molt(&["run", "-d", "--bundle", &a.bundle(&["sleep", "1000"], ptrace).write(), &a.id("att")]);
        assert!(out.status.success(), "{what}: {}", stderr_of(&out));
        let out = a.molt(&["exec", "-d", &a.id("att"), "/w/attacker", "4000", "/w/report"]);
        assert!(out.status.success(), "{what}: {}", stderr_of(&out));
        // The init: a container in the attacker's pid namespace, whose process is the file.
        let pid = stdout_of(&a.molt(&["state", &a.id("att")]));
        let pid: serde_json::Value = serde_json::from_str(&pid).unwrap();
        let mut b = a.bundle(&["/w/evil"], ptrace);
        for ns in b.config["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "pid" {
                ns["path"] = serde_json::json!(format!("/proc/{}/ns/pid", pid["pid"]));
            }
        }
        let out = a.molt(&["run", "--bundle", &b.write(), &a.id("evil-init")]);
        assert!(out.status.success(), "{what}: the init's /w/evil: {}{}", stdout_of(&out), stderr_of(&out));
        assert!(ran_molt(&out), "{what}: molt ran as the init's interpreter: {}", stdout_of(&out));
        let report = a.dir.join("report");
        let mut execs = 0;
        while !report.exists() && execs < 200 {
            let out = a.molt(&["exec", &a.id("att"), "/w/evil"]);
            assert!(ran_molt(&out), "{what}: exec of /w/evil ran molt: {}{}", stdout_of(&out), stderr_of(&out));
            execs += 1;
        }
        assert!(wait_until(10, || report.exists()), "{what}: the attacker never reported");
        let text = std::fs::read_to_string(&report).unwrap();
        eprintln!("{what}, {execs} execs of /w/evil: {text}");
        assert!(!text.starts_with("seen=0 ") && !text.contains(" held=0 "), "{what}: the attacker held no runtime binary, so proved nothing: {text}");
        assert!(text.contains(" written=0 "), "{what}: the attacker wrote to a runtime binary: {text}");
        assert_eq!(sha256(&a.bin.0), before, "{what}: the molt binary changed ({text})");
    }
}

/// The re-exec marker cannot make molt skip the sealing: set by a caller while molt's binary is
/// not sealed, the command fails instead of running from the writable binary. --debug says how
/// molt runs.
#[test]
fn the_sealing_marker_is_checked_against_the_binary() {
    require_root!();
    let a = ExeAttack::new();
    let bundle = a.bundle(&["sleep", "1000"], false);
    let mut cmd = Command::new(&a.bin.0);
    cmd.arg("--root").arg(&a.root.path).args(["create", "--bundle", &bundle.write(), &a.id("mark")]).env("_MOLT_SEALED_EXE", "1");
    let out = run_to_files(&mut cmd);
    assert!(!out.status.success(), "created with a forged marker");
    assert!(stderr_of(&out).contains("neither on a read-only overlayfs nor a sealed memfd"), "{}", stderr_of(&out));
    assert!(!a.root.path.join(a.id("mark")).exists(), "a container was left behind");
    let out = a.molt(&["--debug", "create", "--bundle", &bundle.dir.display().to_string(), &a.id("mark")]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("molt runs from a sealed binary (read-only overlayfs)"), "{}", stderr_of(&out));
    let out = a.molt(&["--debug", "exec", &a.id("mark"), "true"]);
    assert!(stderr_of(&out).contains("molt runs from a sealed binary (read-only overlayfs)"), "{}", stderr_of(&out));
    let _ = a.molt(&["delete", "--force", &a.id("mark")]);
}

/// Audit records of a seccomp action (type 1326) for `renice`'s setpriority in the kernel log.
fn seccomp_records_of_renice() -> usize {
    let out = std::process::Command::new("dmesg").output().expect("dmesg");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("type=1326") && l.contains("comm=\"renice\"") && l.contains(" syscall=141 ")).count()
}

/// Every seccomp action, operator and flag `molt features` lists but ALLOW, ERRNO's errnoRet,
/// NOTIFY, TSYNC and WAIT_KILLABLE_RECV (proven elsewhere), on `renice N`'s
/// setpriority(PRIO_PROCESS, shell, N) for N of 3, 5 and 7 (raising one's nice value needs no
/// privilege), compared with runc but for the flags (which runc 1.1.5 refuses): the exit status (128 + SIGSYS when killed) and the error; and
/// for molt, how many calls the kernel logged (the kills always, LOG, ERRNO only under
/// SECCOMP_FILTER_FLAG_LOG, TRAP and TRACE never). Actions apply to N == 5 only: one record per
/// case keeps the kernel's printk rate limit away. With this kernel's `ssbd=prctl`, SPEC_ALLOW
/// changes nothing a process can see: its case shows the kernel took the flag and the
/// speculation state is runc's.
#[test]
fn each_seccomp_action_operator_and_flag_molt_lists_as_runc() {
    require_root!();
    let script = "for n in 3 5 7; do out=$(renice $n -p $$ 2>&1); echo \"$n $? $out\"; done; grep Speculation_Store /proc/self/status";
    let rule = |action: &str, op: &str, value: u64| serde_json::json!([{"names": ["setpriority"], "action": action, "args": [{"index": 2, "value": value, "valueTwo": 2, "op": op}]}]);
    let on_5 = |action: &str| rule(action, "SCMP_CMP_EQ", 5);
    let out_of = |deny: &[u32], why: &str| [3, 5, 7].iter().map(|n| if deny.contains(n) { format!("{n} 1 renice: setpriority: {why}\n") } else { format!("{n} 0 \n") }).collect::<String>();
    let errs = |deny: &[u32]| out_of(deny, "Operation not permitted");
    let killed = "3 0 \n5 159 \n7 0 \n".to_string();
    // (case, rules, flags, output before the speculation line, records since the last count)
    type Case<'a> = (&'a str, serde_json::Value, Vec<&'a str>, String, Option<usize>);
    let cases: Vec<Case> = vec![
        ("TRAP", on_5("SCMP_ACT_TRAP"), vec![], killed.clone(), None),
        // No tracer: the call fails with ENOSYS.
        ("TRACE", on_5("SCMP_ACT_TRACE"), vec![], out_of(&[5], "Function not implemented"), None),
        ("KILL", on_5("SCMP_ACT_KILL"), vec![], killed.clone(), Some(1)),
        ("KILL_THREAD", on_5("SCMP_ACT_KILL_THREAD"), vec![], killed.clone(), Some(1)),
        ("KILL_PROCESS", on_5("SCMP_ACT_KILL_PROCESS"), vec![], killed.clone(), Some(1)),
        ("LOG", on_5("SCMP_ACT_LOG"), vec![], errs(&[]), Some(1)),
        ("ERRNO", on_5("SCMP_ACT_ERRNO"), vec![], errs(&[5]), None),
        ("FLAG_LOG", on_5("SCMP_ACT_ERRNO"), vec!["SECCOMP_FILTER_FLAG_LOG"], errs(&[5]), Some(1)),
        ("FLAG_SPEC_ALLOW", on_5("SCMP_ACT_ERRNO"), vec!["SECCOMP_FILTER_FLAG_SPEC_ALLOW"], errs(&[5]), None),
        ("EQ", rule("SCMP_ACT_ERRNO", "SCMP_CMP_EQ", 5), vec![], errs(&[5]), None),
        ("NE", rule("SCMP_ACT_ERRNO", "SCMP_CMP_NE", 5), vec![], errs(&[3, 7]), None),
        ("GE", rule("SCMP_ACT_ERRNO", "SCMP_CMP_GE", 5), vec![], errs(&[5, 7]), None),
        ("GT", rule("SCMP_ACT_ERRNO", "SCMP_CMP_GT", 5), vec![], errs(&[7]), None),
        ("LE", rule("SCMP_ACT_ERRNO", "SCMP_CMP_LE", 5), vec![], errs(&[3, 5]), None),
        ("LT", rule("SCMP_ACT_ERRNO", "SCMP_CMP_LT", 5), vec![], errs(&[3]), None),
        // (N & 2) == 2: 3 (0b011) and 7 (0b111), not 5 (0b101).
        ("MASKED_EQ", rule("SCMP_ACT_ERRNO", "SCMP_CMP_MASKED_EQ", 2), vec![], errs(&[3, 7]), None),
    ];
    let features: serde_json::Value = serde_json::from_slice(&run_to_files(std::process::Command::new(molt_bin()).arg("features")).stdout).unwrap();
    let listed: Vec<String> = ["actions", "operators", "knownFlags"].iter().flat_map(|k| features["linux"]["seccomp"][k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string())).collect();
    let proven_elsewhere = ["SCMP_ACT_ALLOW", "SCMP_ACT_NOTIFY", "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"];
    for name in &listed {
        let short = name.trim_start_matches("SCMP_ACT_").trim_start_matches("SCMP_CMP_").trim_start_matches("SECCOMP_FILTER_");
        assert!(proven_elsewhere.contains(&name.as_str()) || cases.iter().any(|c| c.0 == short), "molt features lists {name}, which no case proves");
    }
    let runc = RuncRoot::new();
    let mut runtimes: Vec<(&str, Box<dyn Fn(&[&str]) -> std::process::Output + '_>)> = vec![("molt", Box::new(|a: &[&str]| Root::new().molt(a)))];
    if let Some(r) = &runc {
        runtimes.push(("runc", Box::new(move |a: &[&str]| r.runc(a))));
    }
    let mut seen = vec![];
    for (name, rt) in &runtimes {
        let mut outs = vec![];
        let mut mark = seccomp_records_of_renice();
        for (case, syscalls, flags, want, logged) in &cases {
            let mut b = Bundle::new(&["sh", "-c", script]);
            b.config["process"]["rlimits"] = serde_json::json!([{"type": "RLIMIT_CORE", "hard": 0, "soft": 0}]);
            b.config["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "flags": flags, "syscalls": syscalls});
            let out = stdout_of(&rt(&["run", "--bundle", &b.write(), &unique("sc")]));
            let (calls, speculation) = out.split_once("Speculation").unwrap_or((&out, ""));
            if *name == "molt" {
                assert_eq!(calls, want, "{case}: {out}");
            }
            // The kernel log is checked for molt's calls only: under runc 1.1.5 the FLAG_LOG case
            // logged nothing here.
            if let (Some(n), "molt") = (logged, *name) {
                // Records arrive in order: once this case's is there, the earlier cases' are too.
                wait_until(10, || seccomp_records_of_renice() >= mark + n);
                let now = seccomp_records_of_renice();
                assert_eq!(now - mark, *n, "{name}, {case} and the uncounted cases before it: seccomp records in the kernel log");
                mark = now;
            }
            outs.push((case.to_string(), calls.to_string(), speculation.to_string()));
        }
        seen.push(outs);
    }
    if let Some(r) = seen.get(1) {
        // runc 1.1.5 refuses every seccomp flag (they came with runc 1.2): the spec's text alone.
        let without_flags = |v: &Vec<(String, String, String)>| v.iter().filter(|c| !c.0.starts_with("FLAG_")).cloned().collect::<Vec<_>>();
        assert_eq!(without_flags(&seen[0]), without_flags(r), "molt (left) and runc (right)");
        assert!(r.iter().filter(|c| c.0.starts_with("FLAG_")).all(|c| c.1.is_empty()), "runc ran a profile with flags: {r:?}");
    }
}
