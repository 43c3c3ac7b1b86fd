//! Shared by the integration tests: the molt binary, the busybox rootfs fixture, throwaway bundles
//! and state roots that clean up after themselves even when a test fails.
#![allow(dead_code)]

pub mod app;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

pub fn molt_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_molt"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Root tests print why they skip, never pass silently.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("SKIP {}: needs root (namespaces, mounts, cgroups)", module_path!());
            return;
        }
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
