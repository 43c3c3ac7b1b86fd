//! Shared by the integration tests: the molt binary, the busybox rootfs fixture, throwaway bundles
//! and state roots that clean up after themselves even when a test fails.
#![allow(dead_code)]

pub mod app;
pub mod bundle;
pub mod image;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A runtime by name and how to run it with arguments (molt, and runc when installed): the tests
/// that compare the two run each case through a list of these.
pub type Runtime<'a> = (&'static str, Box<dyn Fn(&[&str]) -> Output + 'a>);

use serde_json::Value;

/// The molt binary under test: cargo's build, or the copy `MOLT_TEST_BIN` names (the VM lab runs
/// it from the guest's tmpfs: over the uncached 9p share every exec re-reads what it touches).
pub fn molt_bin() -> PathBuf {
    match std::env::var_os("MOLT_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_molt")),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Root tests fail with the reason when not run as root: never a silent pass (scripts/test runs
/// as root).
#[macro_export]
macro_rules! require_root {
    () => {
        assert!(common::is_root(), "{}: needs root (namespaces, mounts, cgroups); run as root", module_path!());
    };
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// The busybox rootfs (plus the test app), built once per checkout by scripts/build-rootfs.
pub fn rootfs() -> PathBuf {
    let top = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = top.join("target/fixtures/rootfs");
    let app_src = top.join("tests/app/molt-testapp.rs");
    let stale = || {
        !dir.join("bin/busybox").exists()
            || (app_src.exists()
                && fs::metadata(dir.join("bin/molt-testapp")).and_then(|m| m.modified()).ok()
                    < fs::metadata(&app_src).and_then(|m| m.modified()).ok())
    };
    // A fresh fixture is used as it is: in the VM lab the checkout is read-only.
    if !stale() {
        return dir;
    }
    let lock = fs::File::create(top.join("target/fixtures.lock")).expect("create target/fixtures.lock");
    // SAFETY: flock on an fd we own; released when `lock` is dropped.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if stale() {
        let tmp = top.join("target/fixtures/rootfs.new");
        let st = Command::new(top.join("scripts/build-rootfs")).arg(&tmp).status().expect("run scripts/build-rootfs");
        assert!(st.success(), "scripts/build-rootfs failed");
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&tmp, &dir).unwrap();
    }
    dir
}

/// A state root of its own for each test; Drop force-deletes whatever containers are left.
pub struct Root {
    pub path: PathBuf,
}

impl Root {
    pub fn new() -> Root {
        Root { path: PathBuf::from(format!("/run/{}", unique("molt-test"))) }
    }

    /// stdout and stderr go to files, not pipes: a created container inherits them and would
    /// keep a pipe open long after molt itself has exited.
    pub fn molt(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(molt_bin());
        cmd.arg("--root").arg(&self.path).args(args);
        run_to_files(&mut cmd)
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.molt(args);
        assert!(
            out.status.success(),
            "molt {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state is JSON")
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.path) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().to_string();
                if e.path().join("state.json").exists() {
                    let _ = self.molt(&["delete", "--force", &id]);
                }
            }
        }
        let _ = Command::new(molt_bin()).arg("--root").arg(&self.path).args(["volume", "repair"]).output();
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A bundle directory with molt's default config pointing at the shared rootfs.
pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    pub fn new(args: &[&str]) -> Bundle {
        let dir = std::env::temp_dir().join(unique("molt-bundle"));
        fs::create_dir_all(&dir).unwrap();
        let mut config: Value = serde_json::from_str(molt::spec::DEFAULT_CONFIG).unwrap();
        config["root"]["path"] = Value::String(rootfs().display().to_string());
        config["process"]["terminal"] = Value::Bool(false);
        config["process"]["args"] = serde_json::json!(args);
        Bundle { dir, config }
    }

    /// Write config.json; returns the bundle path as a string for command lines.
    pub fn write(&self) -> String {
        fs::write(self.dir.join("config.json"), serde_json::to_vec_pretty(&self.config).unwrap()).unwrap();
        self.dir.display().to_string()
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Run a command with its stdout/stderr in temporary files and collect them once it exits.
pub fn run_to_files(cmd: &mut Command) -> Output {
    let base = std::env::temp_dir().join(unique("molt-out"));
    let (o, e) = (base.with_extension("out"), base.with_extension("err"));
    let status = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&o).unwrap())
        .stderr(fs::File::create(&e).unwrap())
        .status()
        .expect("spawn");
    let out = Output { status, stdout: fs::read(&o).unwrap_or_default(), stderr: fs::read(&e).unwrap_or_default() };
    let _ = fs::remove_file(o);
    let _ = fs::remove_file(e);
    out
}

pub fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// No process `pid` any more, or only its zombie: it has exited.
pub fn process_gone(pid: i64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.starts_with(" Z")))
}

/// Poll until `f` holds or `secs` pass.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}

/// runc from Debian, the reference the conformance tests compare molt with.
pub fn runc_bin() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/runc");
    p.exists().then_some(p)
}

/// A runc state root of its own; Drop force-deletes whatever runc containers are left.
pub struct RuncRoot {
    pub path: PathBuf,
}

impl RuncRoot {
    pub fn new() -> Option<RuncRoot> {
        runc_bin()?;
        Some(RuncRoot { path: PathBuf::from(format!("/run/{}", unique("runc-test"))) })
    }

    pub fn runc(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(runc_bin().expect("runc"));
        cmd.arg("--root").arg(&self.path).args(args);
        run_to_files(&mut cmd)
    }
}

impl Drop for RuncRoot {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.path) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().to_string();
                let _ = self.runc(&["delete", "--force", &id]);
            }
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What the same bundle printed under `molt run` and `runc run` (None when runc is missing).
pub struct Compared {
    pub molt: Output,
    pub runc: Option<Output>,
}

impl Compared {
    pub fn molt_out(&self) -> String {
        stdout_of(&self.molt)
    }

    /// Assert molt succeeded with the same exit code and output as runc (after `norm` on both).
    pub fn assert_same(&self, norm: impl Fn(&str) -> String) {
        assert!(
            self.molt.status.success(),
            "molt run failed ({}): {}{}",
            self.molt.status,
            stdout_of(&self.molt),
            stderr_of(&self.molt)
        );
        let Some(r) = &self.runc else {
            eprintln!("NOTE: runc missing, molt's output checked alone");
            return;
        };
        assert!(r.status.success(), "runc run failed ({}): {}{}", r.status, stdout_of(r), stderr_of(r));
        assert_eq!(norm(&stdout_of(&self.molt)), norm(&stdout_of(r)), "molt (left) and runc (right) saw different things");
    }
}

/// Run the bundle to completion under molt and under runc, each with its own state root.
pub fn run_both(b: &Bundle) -> Compared {
    let bundle = b.write();
    let root = Root::new();
    let id = unique("cmp");
    let molt = root.molt(&["run", "--bundle", &bundle, &id]);
    let runc = RuncRoot::new().map(|r| r.runc(&["run", "--bundle", &bundle, &id]));
    Compared { molt, runc }
}

/// As `run_both`, but each runtime gets a fresh copy of the rootfs, for tests where the first run
/// would leave mount points behind that change what the second sees.
pub fn run_both_private(b: &mut Bundle) -> Compared {
    let root = Root::new();
    let id = unique("cmp");
    let first = RootfsCopy::new();
    b.config["root"]["path"] = Value::String(first.dir.display().to_string());
    let molt = root.molt(&["run", "--bundle", &b.write(), &id]);
    let second = RootfsCopy::new();
    b.config["root"]["path"] = Value::String(second.dir.display().to_string());
    let runc = RuncRoot::new().map(|r| r.runc(&["run", "--bundle", &b.write(), &id]));
    Compared { molt, runc }
}

/// The shared busybox rootfs copied (hard-linked where possible) into a scratch directory a test
/// may change: symlinks, ownership. Removed on drop.
pub struct RootfsCopy {
    pub dir: PathBuf,
}

impl RootfsCopy {
    pub fn new() -> RootfsCopy {
        let dir = std::env::temp_dir().join(unique("molt-rootfs"));
        let st = Command::new("cp").arg("-a").arg(rootfs()).arg(&dir).status().expect("cp");
        assert!(st.success(), "copy the rootfs");
        RootfsCopy { dir }
    }
}

impl Drop for RootfsCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Lines of /proc/self/mountinfo (of the test process) that mention `needle`.
pub fn host_mounts_with(needle: &str) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

/// cgroup directories anywhere under /sys/fs/cgroup whose name contains `needle`.
pub fn cgroups_named(needle: &str) -> Vec<PathBuf> {
    let out = Command::new("find").args(["/sys/fs/cgroup", "-name", &format!("*{needle}*")]).output().expect("find");
    String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).collect()
}

impl Bundle {
    /// Add a mount to the config.
    pub fn mount(&mut self, m: Value) -> &mut Bundle {
        self.config["mounts"].as_array_mut().unwrap().push(m);
        self
    }

    /// A writable tmpfs at `dest` (the shared rootfs itself is read-only).
    pub fn tmpfs(&mut self, dest: &str) -> &mut Bundle {
        self.mount(serde_json::json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}))
    }

    pub fn namespaces_mut(&mut self) -> &mut Vec<Value> {
        self.config["linux"]["namespaces"].as_array_mut().unwrap()
    }

    pub fn add_namespace(&mut self, ns: Value) -> &mut Bundle {
        self.namespaces_mut().push(ns);
        self
    }

    pub fn remove_namespace(&mut self, typ: &str) -> &mut Bundle {
        self.namespaces_mut().retain(|n| n["type"] != typ);
        self
    }
}

/// The engine's end of `--console-socket`: accepts one connection, takes the pty master from its
/// SCM_RIGHTS message, and collects what the container writes until the pty closes.
pub struct ConsoleReceiver {
    pub path: PathBuf,
    handle: Option<std::thread::JoinHandle<ConsoleResult>>,
}

/// The pty name sent with the fd, and every byte read from the master.
pub type ConsoleResult = Result<(String, Vec<u8>), String>;

impl ConsoleReceiver {
    pub fn new() -> ConsoleReceiver {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let path = std::env::temp_dir().join(unique("molt-console")).with_extension("sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind console socket");
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            let mut name = [0u8; 4096];
            let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let mut iov = [std::io::IoSliceMut::new(&mut name)];
            let msg = nix::sys::socket::recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut cmsg), nix::sys::socket::MsgFlags::empty())
                .map_err(|e| format!("recvmsg: {e}"))?;
            let mut fds = vec![];
            for c in msg.cmsgs().map_err(|e| format!("cmsgs: {e}"))? {
                if let nix::sys::socket::ControlMessageOwned::ScmRights(f) = c {
                    fds.extend(f);
                }
            }
            let n = msg.bytes;
            let name = String::from_utf8_lossy(&iov_bytes(&name, n)).to_string();
            if fds.len() != 1 {
                return Err(format!("expected one fd, got {fds:?}"));
            }
            // SAFETY: the fd just arrived by SCM_RIGHTS and belongs to nobody else.
            let master = unsafe { OwnedFd::from_raw_fd(fds[0]) };
            let mut out = vec![];
            let mut f = fs::File::from(master);
            let mut buf = [0u8; 4096];
            loop {
                use std::io::Read;
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break, // EIO once the last slave fd closes
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
            Ok((name, out))
        });
        ConsoleReceiver { path, handle: Some(handle) }
    }

    pub fn finish(mut self) -> ConsoleResult {
        self.handle.take().unwrap().join().unwrap()
    }
}

fn iov_bytes(buf: &[u8], n: usize) -> Vec<u8> {
    buf[..n].to_vec()
}

impl Drop for ConsoleReceiver {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A scratch directory removed on drop, also when the test fails.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(prefix));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One runtime log record as runc's logrus prints it in text form, `time="RFC3339" level=L
/// msg="..."` (msg bare when it has no space or quote): (level, msg unquoted). None when the line
/// has any other shape.
pub fn logrus_text(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("time=\"")?;
    let (time, rest) = rest.split_once("\" level=")?;
    let t = time.as_bytes();
    let rfc3339 = t.len() >= 20 && t[4] == b'-' && t[7] == b'-' && t[10] == b'T' && t[13] == b':' && (time.ends_with('Z') || time[19..].contains(['+', '-']));
    let (level, _) = rest.split_once(" msg=")?;
    (rfc3339 && !line.contains('\n')).then(|| (level.to_string(), molt::logging::messages_of(line)))
}
