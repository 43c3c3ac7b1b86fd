//! The create/start split and the state machine, for real as root.

mod common;
use common::*;

#[test]
fn run_returns_the_container_exit_status_and_cleans_up() {
    require_root!();
    let root = Root::new();
    let b = Bundle::new(&["sh", "-c", "echo out; exit 7"]);
    let bundle = b.write();
    let out = root.molt(&["run", "--bundle", &bundle, "r1"]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "out\n");
    assert!(!root.path.join("r1").exists(), "run removes the container after it exits");
}

#[test]
fn create_start_state_kill_delete() {
    require_root!();
    let root = Root::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.write();
    let pidfile = b.dir.join("pid");
    root.ok(&["create", "--bundle", &bundle, "--pid-file", pidfile.to_str().unwrap(), "c1"]);
    let st = root.state("c1");
    assert_eq!(st["status"], "created");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    assert!(pid.chars().all(|c| c.is_ascii_digit()), "pid file is digits only: {pid:?}");
    assert_eq!(st["pid"].as_i64().unwrap().to_string(), pid);
    root.ok(&["start", "c1"]);
    assert_eq!(root.state("c1")["status"], "running");
    // start returns once the init is released; its execve follows right after (as with runc).
    let comm = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    assert!(wait_until(30, || comm().trim() == "sleep"), "the container process is {:?}", comm());
    root.ok(&["kill", "c1", "KILL"]);
    assert!(wait_until(30, || root.state("c1")["status"] == "stopped"));
    assert_eq!(root.state("c1")["pid"], 0);
    root.ok(&["delete", "c1"]);
    let out = root.molt(&["state", "c1"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("does not exist"), "{}", stderr_of(&out));
}
