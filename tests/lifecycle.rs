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

/// `io.molt.listen`: molt opens the sockets in the container's namespaces and passes them by the
/// socket-activation protocol (fds from 3, LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES).
#[test]
fn listening_sockets_are_passed_by_socket_activation() {
    require_root!();
    let root = Root::new();
    let mut b = Bundle::new(&[
        "sh",
        "-c",
        "echo $LISTEN_FDS $LISTEN_PID $LISTEN_FDNAMES; ls -l /proc/self/fd/3 /proc/self/fd/4 | sed 's/.*-> //'; \
         ls -l /run/sock/app.sock | cut -c1-10; grep -c ':1F90 00000000:0000 0A' /proc/net/tcp",
    ]);
    b.tmpfs("/run");
    b.config["annotations"] = serde_json::json!({"io.molt.listen": "tcp:0.0.0.0:8080,api=unix:/run/sock/app.sock"});
    let dir = b.write();
    let out = root.molt(&["run", "--bundle", &dir, "ls1"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "2 1 tcp-8080:api", "{text}");
    assert!(lines[1].starts_with("socket:[") && lines[2].starts_with("socket:["), "{text}");
    assert_eq!(lines[3], "srw-rw-rw-", "the unix socket is made inside the container, open to all: {text}");
    assert_eq!(lines[4], "1", "one socket listens on port 8080 (0x1F90) in the container's namespace: {text}");
}
