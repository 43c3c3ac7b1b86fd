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

/// Put container `id` of bundle `bundle` in `state` with the runtime `rt` (molt or runc); returns
/// the init's host pid.
fn in_state(rt: &dyn Fn(&[&str]) -> std::process::Output, bundle: &str, id: &str, state: &str) -> i64 {
    let ok = |args: &[&str]| {
        let out = rt(args);
        assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
        out
    };
    ok(&["create", "--bundle", bundle, id]);
    if state != "created" {
        ok(&["start", id]);
    }
    if state == "paused" {
        ok(&["pause", id]);
    }
    let status = |rt: &dyn Fn(&[&str]) -> std::process::Output| serde_json::from_slice::<serde_json::Value>(&rt(&["state", id]).stdout).map(|v| v["status"].as_str().unwrap_or("").to_string()).unwrap_or_default();
    let pid = serde_json::from_slice::<serde_json::Value>(&rt(&["state", id]).stdout).unwrap()["pid"].as_i64().unwrap();
    if state == "stopped" {
        ok(&["kill", id, "KILL"]);
        assert!(wait_until(10, || status(rt) == "stopped"), "{id} did not stop");
    }
    assert_eq!(status(rt), state, "{id}");
    pid
}

#[test]
fn kill_all_and_delete_force_in_every_state_as_runc() {
    require_root!();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.write();
    let root = Root::new();
    let runc = RuncRoot::new();
    let molt = |a: &[&str]| root.molt(a);
    let mut runtimes: Vec<(&str, Box<dyn Fn(&[&str]) -> std::process::Output + '_>)> = vec![("molt", Box::new(molt))];
    if let Some(r) = &runc {
        runtimes.push(("runc", Box::new(move |a: &[&str]| r.runc(a))));
    }
    let mut seen: Vec<Vec<(String, Option<i32>)>> = vec![];
    for (name, rt) in &runtimes {
        let mut codes = vec![];
        for state in ["created", "running", "paused", "stopped"] {
            // kill --all KILL ends every process in any state; delete --force then clears it.
            let id = format!("ka-{state}");
            let pid = in_state(rt.as_ref(), &bundle, &id, state);
            codes.push((format!("kill --all {state}"), rt(&["kill", "--all", &id, "KILL"]).status.code()));
            let stopped = wait_until(10, || serde_json::from_slice::<serde_json::Value>(&rt(&["state", &id]).stdout).is_ok_and(|v| v["status"] == "stopped"));
            assert!(stopped, "{name}: kill --all of a {state} container left it running");
            codes.push((format!("delete --force after kill {state}"), rt(&["delete", "--force", &id]).status.code()));
            // delete --force alone, in every state.
            let id = format!("df-{state}");
            let pid2 = in_state(rt.as_ref(), &bundle, &id, state);
            codes.push((format!("delete --force {state}"), rt(&["delete", "--force", &id]).status.code()));
            assert!(!rt(&["state", &id]).status.success(), "{name}: {id} still exists");
            for p in [pid, pid2] {
                let gone = || std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| s.contains(") Z "));
                assert!(wait_until(10, gone), "{name}: process {p} of a {state} container survived");
            }
            if *name == "molt" {
                assert!(cgroups_named(&format!("ka-{state}")).is_empty() && cgroups_named(&format!("df-{state}")).is_empty(), "cgroups left");
            }
        }
        assert!(codes.iter().all(|(_, c)| *c == Some(0)), "{name}: {codes:?}");
        seen.push(codes);
    }
    if seen.len() == 2 {
        assert_eq!(seen[0], seen[1], "molt (left) and runc (right)");
    }
}

#[test]
fn ps_of_a_paused_container_and_exec_ignore_paused() {
    require_root!();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.tmpfs("/w");
    let bundle = b.write();
    let root = Root::new();
    root.ok(&["run", "-d", "--bundle", &bundle, "pp"]);
    let pid = root.state("pp")["pid"].as_i64().unwrap();
    root.ok(&["pause", "pp"]);
    assert_eq!(root.ok(&["ps", "--format", "json", "pp"]).trim(), format!("[{pid}]"));
    let table = root.ok(&["ps", "pp"]);
    assert!(table.starts_with("UID") && table.lines().nth(1).is_some_and(|l| l.contains(&pid.to_string()) && l.ends_with("sleep 1000")), "{table}");
    if let Some(r) = RuncRoot::new() {
        assert!(r.runc(&["run", "-d", "--bundle", &bundle, "pp"]).status.success());
        assert!(r.runc(&["pause", "pp"]).status.success());
        let rps = r.runc(&["ps", "pp"]);
        assert!(rps.status.success(), "{}", stderr_of(&rps));
        assert_eq!(stdout_of(&rps).lines().next(), table.lines().next(), "ps header as runc's");
        assert_eq!(stdout_of(&rps).lines().count(), table.lines().count(), "runc: {}", stdout_of(&rps));
        let _ = r.runc(&["resume", "pp"]);
    }
    // Without --ignore-paused exec is refused; with it the process waits for resume.
    let out = root.molt(&["exec", "pp", "true"]);
    assert!(!out.status.success() && stderr_of(&out).contains("paused"), "{}", stderr_of(&out));
    let mut exec = std::process::Command::new(molt_bin())
        .arg("--root")
        .arg(&root.path)
        .args(["exec", "--ignore-paused", "pp", "sh", "-c", "echo ran > /w/x"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let early = exec.try_wait().unwrap();
    root.ok(&["resume", "pp"]);
    let done = wait_until(10, || exec.try_wait().unwrap().is_some());
    if !done {
        let _ = exec.kill();
    }
    let status = exec.wait().unwrap();
    assert!(early.is_none(), "exec --ignore-paused returned while the container was paused: {early:?}");
    assert!(done && status.success(), "exec --ignore-paused after resume: {status}");
    assert_eq!(root.ok(&["exec", "pp", "cat", "/w/x"]), "ran\n");
}
