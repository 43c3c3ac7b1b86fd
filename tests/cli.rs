//! Lifecycle and command-line conformance: what engines and runc users see from each command,
//! compared with runc where both can be run side by side.

mod common;
use common::*;
use serde_json::Value;

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn state_has_runcs_fields_and_follows_the_lifecycle() {
    require_root!();
    let root = Root::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.write();
    root.ok(&["create", "--bundle", &bundle, "st"]);
    let st = root.state("st");
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], "st");
    assert_eq!(st["bundle"], bundle.as_str());
    assert_eq!(st["rootfs"], rootfs().display().to_string());
    assert!(st["pid"].as_i64().unwrap() > 0);
    assert!(st["created"].as_str().unwrap().ends_with('Z'), "RFC 3339 UTC: {}", st["created"]);
    if let Some(r) = RuncRoot::new() {
        let out = r.runc(&["create", "--bundle", &bundle, "st"]);
        assert!(out.status.success(), "{}", stderr_of(&out));
        let rs: Value = serde_json::from_slice(&r.runc(&["state", "st"]).stdout).unwrap();
        assert_eq!(keys(&st), keys(&rs), "state fields differ from runc's");
    }
    root.ok(&["start", "st"]);
    assert_eq!(root.state("st")["status"], "running");
    let out = root.molt(&["start", "st"]);
    assert!(!out.status.success(), "a second start must fail");
    assert!(stderr_of(&out).contains("running"), "{}", stderr_of(&out));
}

#[test]
fn a_process_that_exits_by_itself_is_stopped() {
    require_root!();
    let root = Root::new();
    let b = Bundle::new(&["sh", "-c", "exit 3"]);
    let bundle = b.write();
    root.ok(&["create", "--bundle", &bundle, "ex"]);
    root.ok(&["start", "ex"]);
    assert!(wait_until(30, || root.state("ex")["status"] == "stopped"), "{}", root.state("ex"));
    assert_eq!(root.state("ex")["pid"], 0);
    // Stopped containers are deleted without --force; their cgroup goes with them.
    root.ok(&["delete", "ex"]);
    assert!(!root.path.join("ex").exists());
    assert!(cgroups_named(&root.path.file_name().unwrap().to_string_lossy()).is_empty());
}

#[test]
fn a_process_killed_from_outside_is_stopped() {
    require_root!();
    let root = Root::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.write();
    root.ok(&["run", "--detach", "--bundle", &bundle, "out"]);
    let st = root.state("out");
    assert_eq!(st["status"], "running");
    let pid = st["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) on the pid molt reported for our own container.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(wait_until(30, || root.state("out")["status"] == "stopped"));
    let out = root.molt(&["kill", "out", "TERM"]);
    assert!(!out.status.success(), "kill of a stopped container fails");
    // containerd maps exactly these words to "not found" (a stop racing the container's exit).
    assert!(stderr_of(&out).contains("container not running"), "{}", stderr_of(&out));
    root.ok(&["kill", "--all", "out", "KILL"]);
}

#[test]
fn kill_accepts_names_numbers_and_all() {
    require_root!();
    let root = Root::new();
    let mut b = Bundle::new(&["sh", "-c", "trap 'echo usr1 >> /w/log' USR1; trap 'echo hup >> /w/log' HUP; echo ready > /w/log; while :; do sleep 0.1; done"]);
    b.tmpfs("/w");
    let bundle = b.write();
    root.ok(&["run", "-d", "--bundle", &bundle, "k"]);
    let pid = root.state("k")["pid"].as_i64().unwrap();
    let log = || {
        let out = root.molt(&["exec", "k", "cat", "/w/log"]);
        stdout_of(&out)
    };
    assert!(wait_until(30, || log().contains("ready")));
    root.ok(&["kill", "k", "SIGUSR1"]);
    assert!(wait_until(30, || log().contains("usr1")), "{}", log());
    root.ok(&["kill", "k", "1"]);
    assert!(wait_until(30, || log().contains("hup")), "{}", log());
    root.ok(&["kill", "k", "0"]);
    assert!(!root.molt(&["kill", "k", "SIGNOPE"]).status.success());
    // A second process in the container, then --all takes both down.
    // A second process in the container: --all reaches it too. The init (pid 1 of its namespace)
    // ignores TERM because it has no handler for it, as the kernel does for any namespace init.
    let epid = b.dir.join("e.pid");
    root.ok(&["exec", "-d", "--pid-file", epid.to_str().unwrap(), "k", "sleep", "1000"]);
    let epid: i64 = std::fs::read_to_string(&epid).unwrap().parse().unwrap();
    let ps = || serde_json::from_str::<Vec<i64>>(&root.ok(&["ps", "-f", "json", "k"])).unwrap();
    assert!(ps().contains(&epid));
    root.ok(&["kill", "--all", "k", "term"]);
    assert!(wait_until(30, || !ps().contains(&epid)), "{:?}", ps());
    assert!(ps().contains(&pid));
    root.ok(&["kill", "--all", "k", "9"]);
    assert!(wait_until(30, || root.state("k")["status"] == "stopped"));
    assert!(!std::path::Path::new(&format!("/proc/{pid}/comm")).exists() || root.state("k")["pid"] == 0);
    root.ok(&["delete", "k"]);
}

#[test]
fn delete_and_delete_force() {
    require_root!();
    let root = Root::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.write();
    // A created container is killed and removed by a plain delete.
    root.ok(&["create", "--bundle", &bundle, "c"]);
    let pid = root.state("c")["pid"].as_i64().unwrap();
    root.ok(&["delete", "c"]);
    assert!(wait_until(30, || !std::path::Path::new(&format!("/proc/{pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z")));
    // A running one needs --force.
    root.ok(&["run", "-d", "--bundle", &bundle, "r"]);
    let out = root.molt(&["delete", "r"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("running"), "{}", stderr_of(&out));
    root.ok(&["delete", "--force", "r"]);
    assert!(!root.path.join("r").exists());
    // Missing: an error without --force, success with it (engines delete --force twice).
    let out = root.molt(&["delete", "r"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("does not exist"), "{}", stderr_of(&out));
    root.ok(&["delete", "--force", "r"]);
    root.ok(&["delete", "-f", "never-existed"]);
}

#[test]
fn list_formats_match_runc() {
    require_root!();
    let root = Root::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.write();
    root.ok(&["create", "--bundle", &bundle, "l2"]);
    root.ok(&["run", "-d", "--bundle", &bundle, "l1"]);
    assert_eq!(root.ok(&["list", "-q"]), "l1\nl2\n");
    let table = root.ok(&["list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let cols: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(cols, ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]);
    assert!(lines[1].starts_with("l1 ") && lines[1].contains(" running ") && lines[1].ends_with("root"), "{table}");
    assert!(lines[2].starts_with("l2 ") && lines[2].contains(" created "), "{table}");
    // Aligned as Go's tabwriter aligns: every row's cells start where the header's do.
    let starts = |l: &str| l.match_indices(|c: char| c != ' ').filter(|(i, _)| *i == 0 || l.as_bytes()[i - 1] == b' ').map(|(i, _)| i).collect::<Vec<_>>();
    for l in &lines[1..] {
        assert_eq!(starts(l), starts(lines[0]), "{table}");
    }
    let json: Value = serde_json::from_str(&root.ok(&["list", "--format", "json"])).unwrap();
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["status"], "running");
    assert_eq!(arr[0]["owner"], "root");
    if let Some(r) = RuncRoot::new() {
        assert!(r.runc(&["create", "--bundle", &bundle, "l2"]).status.success());
        let rt = stdout_of(&r.runc(&["list"]));
        assert_eq!(rt.lines().next().unwrap().split_whitespace().collect::<Vec<_>>(), cols);
        let rj: Value = serde_json::from_slice(&r.runc(&["list", "-f", "json"]).stdout).unwrap();
        assert_eq!(keys(&rj[0]), keys(&arr[1]));
        assert_eq!(rj[0]["owner"], arr[1]["owner"]);
    }
    let empty = Root::new();
    assert_eq!(empty.ok(&["list", "-q"]), "");
    // runc prints Go's nil slice.
    assert_eq!(empty.ok(&["list", "-f", "json"]), "null\n");
}

#[test]
fn spec_is_runcs_apart_from_the_hostname() {
    let dir = TempDir::new("molt-spec");
    let out = run_to_files(std::process::Command::new(molt_bin()).args(["spec", "--bundle"]).arg(&dir));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let ours = std::fs::read_to_string(dir.join("config.json")).unwrap();
    // A second spec refuses to overwrite.
    let again = run_to_files(std::process::Command::new(molt_bin()).args(["spec", "--bundle"]).arg(&dir));
    assert!(!again.status.success());
    assert!(stderr_of(&again).contains("exists"), "{}", stderr_of(&again));
    if runc_bin().is_some() {
        std::fs::remove_file(dir.join("config.json")).unwrap();
        let st = std::process::Command::new("runc").arg("spec").current_dir(&dir).status().unwrap();
        assert!(st.success());
        let theirs = std::fs::read_to_string(dir.join("config.json")).unwrap();
        assert_eq!(ours, theirs.replace("\"hostname\": \"runc\"", "\"hostname\": \"molt\""));
    }
}

#[test]
fn features_lists_what_molt_supports() {
    let out = run_to_files(std::process::Command::new(molt_bin()).arg("features"));
    assert!(out.status.success());
    let f: Value = serde_json::from_slice(&out.stdout).expect("features is JSON");
    let hooks: Vec<&str> = f["hooks"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert_eq!(hooks, ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]);
    let ns: Vec<&str> = f["linux"]["namespaces"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    for n in ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"] {
        assert!(ns.contains(&n), "{n}");
    }
    assert!(f["linux"]["capabilities"].as_array().unwrap().iter().any(|c| c == "CAP_SYS_ADMIN"));
    assert!(f["mountOptions"].as_array().unwrap().iter().any(|c| c == "rbind"));
    assert_eq!(f["linux"]["seccomp"]["enabled"], true);
    let archs = f["linux"]["seccomp"]["archs"].as_array().unwrap();
    for a in ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] {
        assert!(archs.iter().any(|x| x == a), "{a} in {archs:?} (tests/seccomp_arch.rs proves the three)");
    }
    assert_eq!(f["linux"]["apparmor"]["enabled"], false, "molt has no AppArmor and must not claim it");
    // One version everywhere: features, --version's spec line and the state hooks get
    // (tests/hooks.rs reads the latter).
    assert_eq!((f["ociVersionMin"].as_str(), f["ociVersionMax"].as_str()), (Some("1.0.0"), Some(molt::spec::OCI_VERSION)));
    let version = stdout_of(&run_to_files(std::process::Command::new(molt_bin()).arg("--version")));
    assert!(version.lines().any(|l| l == format!("spec: {}", molt::spec::OCI_VERSION)), "{version}");
    // linux.netDevices (tests/net_root.rs) and idmapped mounts (tests/idmap.rs).
    assert_eq!(f["linux"]["netDevices"]["enabled"], true);
    assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], true);
    assert_eq!(f["linux"]["intelRdt"]["enabled"], false, "molt does not apply linux.intelRdt");
    // runtime-spec 1.3 attributes, each proved in tests/inside.rs.
    let modes = f["linux"]["memoryPolicy"]["modes"].as_array().unwrap();
    assert!(modes.iter().any(|m| m == "MPOL_BIND") && modes.iter().any(|m| m == "MPOL_INTERLEAVE"), "{modes:?}");
    for key in ["process.ioPriority", "process.scheduler", "process.execCPUAffinity", "linux.personality"] {
        assert!(f["annotations"][format!("io.molt.features.{key}")].is_string(), "{key}");
    }
    // runtime-spec 1.2: the annotations that change what molt does, as prefixes ending in ".".
    let unsafe_prefixes: Vec<&str> = f["potentiallyUnsafeConfigAnnotations"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for key in ["io.molt.listen", "io.molt.net.address", "io.molt.net.bridge", "io.molt.net.gateway", "io.molt.upgrade.from"] {
        assert!(unsafe_prefixes.iter().any(|p| key == *p || (p.ends_with('.') && key.starts_with(p))), "{key} is not listed: {unsafe_prefixes:?}");
    }
}

#[test]
fn errors_go_to_the_json_log_and_to_stderr() {
    require_root!();
    let root = Root::new();
    let dir = TempDir::new("molt-log");
    let log = dir.join("log.json");
    let log_s = log.to_str().unwrap();
    for _ in 0..2 {
        let out = root.molt(&["--log", log_s, "--log-format", "json", "state", "nosuch"]);
        assert!(!out.status.success());
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "one plain line: {err}");
        assert!(err.contains("container nosuch does not exist") && !err.starts_with('{'), "{err}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 2, "appended, one record a line: {text}");
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("each line is JSON");
        assert_eq!(keys(&v), ["level", "msg", "time"]);
        assert_eq!(v["level"], "error");
        assert!(v["msg"].as_str().unwrap().contains("nosuch"));
        assert!(v["time"].as_str().unwrap().contains('T'));
    }
    // Success writes nothing to stdout for state's neighbours that have nothing to say.
    let b = Bundle::new(&["true"]);
    let bundle = b.write();
    let out = root.molt(&["--log", log_s, "--log-format", "json", "create", "--bundle", &bundle, "quiet"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn run_detach_and_exit_codes() {
    require_root!();
    let root = Root::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.write();
    let pidfile = b.dir.join("run.pid");
    root.ok(&["run", "--detach", "--pid-file", pidfile.to_str().unwrap(), "--bundle", &bundle, "d"]);
    let st = root.state("d");
    assert_eq!(st["status"], "running");
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap(), st["pid"].as_i64().unwrap().to_string());
    for code in [0, 1, 42, 255] {
        let b = Bundle::new(&["sh", "-c", &format!("exit {code}")]);
        let bundle = b.write();
        let out = root.molt(&["run", "--bundle", &bundle, "e"]);
        assert_eq!(out.status.code(), Some(code), "{}", stderr_of(&out));
        if let Some(r) = RuncRoot::new() {
            assert_eq!(r.runc(&["run", "--bundle", &bundle, "e"]).status.code(), Some(code));
        }
    }
    // Killed by a signal: 128 + N, as runc reports it.
    let b = Bundle::new(&["sh", "-c", "kill -TERM $$; sleep 1000"]);
    let bundle = b.write();
    let mut child = std::process::Command::new(molt_bin())
        .args(["--root", root.path.to_str().unwrap(), "run", "--bundle", &bundle, "sig"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(30, || root.molt(&["state", "sig"]).status.success()));
    assert!(wait_until(30, || root.state("sig")["status"] == "running"));
    root.ok(&["kill", "sig", "KILL"]);
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(137));
}

#[test]
fn exec_args_process_json_exit_codes_and_detach() {
    require_root!();
    let root = Root::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.config["process"]["env"] = serde_json::json!(["PATH=/bin:/usr/bin", "FROMCONFIG=1"]);
    let bundle = b.write();
    root.ok(&["run", "-d", "--bundle", &bundle, "x"]);
    assert_eq!(root.ok(&["exec", "x", "sh", "-c", "echo $FROMCONFIG"]), "1\n");
    let out = root.molt(&["exec", "x", "sh", "-c", "exit 9"]);
    assert_eq!(out.status.code(), Some(9));
    assert_eq!(root.ok(&["exec", "--env", "A=b", "--cwd", "/etc", "--user", "65534:65534", "x", "sh", "-c", "echo $A $(pwd) $(id -u):$(id -g)"]), "b /etc 65534:65534\n");
    let pfile = b.dir.join("process.json");
    std::fs::write(
        &pfile,
        serde_json::to_vec(&serde_json::json!({
            "terminal": false, "user": {"uid": 1, "gid": 1}, "args": ["sh", "-c", "echo $P $(id -u) $(pwd); exit 4"],
            "env": ["PATH=/bin", "P=proc"], "cwd": "/tmp"
        }))
        .unwrap(),
    )
    .unwrap();
    let out = root.molt(&["exec", "--process", pfile.to_str().unwrap(), "x"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "proc 1 /tmp\n");
    let epid = b.dir.join("exec.pid");
    let out = root.molt(&["exec", "--detach", "--pid-file", epid.to_str().unwrap(), "x", "sleep", "1000"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{}", stderr_of(&out));
    let pid = std::fs::read_to_string(&epid).unwrap();
    assert!(pid.chars().all(|c| c.is_ascii_digit()), "{pid:?}");
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim(), "sleep");
    let ps: Vec<i64> = serde_json::from_str(&root.ok(&["ps", "--format", "json", "x"])).unwrap();
    assert!(ps.contains(&pid.parse().unwrap()), "{ps:?}");
    let out = root.molt(&["exec", "x", "/no/such/binary"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("no such file or directory"), "{}", stderr_of(&out));
    let out = root.molt(&["exec", "x", "nosuchcmd"]);
    assert!(stderr_of(&out).contains("executable file not found in $PATH"), "{}", stderr_of(&out));
}

#[test]
fn ps_json_is_a_pure_array_of_host_pids() {
    require_root!();
    let root = Root::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.write();
    root.ok(&["create", "--bundle", &bundle, "p"]);
    let pid = root.state("p")["pid"].as_i64().unwrap();
    let out = root.molt(&["ps", "--format", "json", "p"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("pure JSON");
    assert_eq!(v, serde_json::json!([pid]));
    // The table is ps -ef's, filtered to the container, as runc prints it.
    let table = root.ok(&["ps", "p"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]);
    assert_eq!(lines[1].split_whitespace().nth(1), Some(pid.to_string().as_str()), "{table}");
    if let Some(r) = RuncRoot::new() {
        assert!(r.runc(&["create", "--bundle", &bundle, "p"]).status.success());
        let rt = stdout_of(&r.runc(&["ps", "p"]));
        assert_eq!(rt.lines().next(), Some(lines[0]), "header, molt vs runc");
    }
    let custom = root.ok(&["ps", "p", "-o", "pid,comm"]);
    assert!(custom.trim_start().starts_with("PID") && custom.contains(&format!("{pid} molt")), "{custom}");
}

#[test]
fn pause_and_resume() {
    require_root!();
    let root = Root::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.write();
    root.ok(&["run", "-d", "--bundle", &bundle, "pz"]);
    root.ok(&["pause", "pz"]);
    assert_eq!(root.state("pz")["status"], "paused");
    let pid = root.state("pz")["pid"].as_i64().unwrap();
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(st.lines().any(|l| l.starts_with("State:") && (l.contains("D") || l.contains("S"))), "{st}");
    assert!(!root.molt(&["pause", "pz"]).status.success(), "pausing a paused container fails");
    root.ok(&["resume", "pz"]);
    assert_eq!(root.state("pz")["status"], "running");
    assert!(!root.molt(&["resume", "pz"]).status.success());
    // A paused container can still be force-deleted.
    root.ok(&["pause", "pz"]);
    root.ok(&["delete", "--force", "pz"]);
    assert!(!root.path.join("pz").exists());
}

#[test]
fn without_a_pid_namespace_kill_all_and_delete_reach_every_process() {
    require_root!();
    let root = Root::new();
    let mut b = Bundle::new(&["sh", "-c", "sleep 1000 & exec sleep 1001"]);
    b.remove_namespace("pid");
    let bundle = b.write();
    root.ok(&["run", "-d", "--bundle", &bundle, "np"]);
    let pids = || serde_json::from_str::<Vec<i64>>(&root.ok(&["ps", "-f", "json", "np"])).unwrap();
    assert!(wait_until(30, || pids().len() == 2), "{:?}", pids());
    // The init dies alone: with no pid namespace its child lives on, as engines expect; they
    // then send kill --all to a stopped container and delete it.
    let init = root.state("np")["pid"].as_i64().unwrap();
    // SAFETY: kill(2) on the pid of our own container's init.
    unsafe { libc::kill(init as i32, libc::SIGKILL) };
    assert!(wait_until(30, || root.state("np")["status"] == "stopped"));
    let left = pids();
    assert_eq!(left.len(), 1, "{left:?}");
    root.ok(&["kill", "--all", "np", "KILL"]);
    assert!(wait_until(30, || pids().is_empty()), "{:?}", pids());
    root.ok(&["delete", "np"]);
    // And delete --force alone takes a straggler down too.
    root.ok(&["run", "-d", "--bundle", &bundle, "np2"]);
    let all: Vec<i64> = serde_json::from_str(&root.ok(&["ps", "-f", "json", "np2"])).unwrap();
    root.ok(&["delete", "--force", "np2"]);
    for p in all {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "process {p} survived: {stat}");
    }
}

#[test]
fn run_forwards_signals_and_state_says_creating_during_create() {
    require_root!();
    let root = Root::new();
    let dir = TempDir::new("molt-fwd");
    let seen = dir.join("seen");
    // A createRuntime hook asks molt itself for the state, as a tool watching the container would.
    let hook = dir.join("hook.sh");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\n{} --root {} state fwd > {}\n", molt_bin().display(), root.path.display(), seen.display()),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut b = Bundle::new(&["sh", "-c", "trap 'echo got-term; exit 3' TERM; echo up; while :; do sleep 0.1; done"]);
    b.config["hooks"] = serde_json::json!({"createRuntime": [{"path": hook}]});
    let bundle = b.write();
    let out_path = dir.join("out");
    let mut child = std::process::Command::new(molt_bin())
        .args(["--root", root.path.to_str().unwrap(), "run", "--bundle", &bundle, "fwd"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(30, || std::fs::read_to_string(&out_path).unwrap_or_default().contains("up")));
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(st["status"], "creating");
    // SAFETY: kill(2) on the molt run we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "the container's trap ran and its status came back");
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), "up\ngot-term\n");
    assert!(!root.path.join("fwd").exists());
}

/// stderr as one runc log record: (level, msg) of a text record or of a JSON one.
fn one_record(out: &std::process::Output, json: bool) -> (String, String) {
    let err = stderr_of(out);
    assert_eq!(err.lines().count(), 1, "one record: {err:?}");
    if !json {
        return logrus_text(err.trim_end()).unwrap_or_else(|| panic!("not runc's text record: {err:?}"));
    }
    let v: Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("not JSON ({e}): {err:?}"));
    assert_eq!(keys(&v), ["level", "msg", "time"], "{err}");
    let time = v["time"].as_str().unwrap();
    assert!(time.len() >= 20 && &time[10..11] == "T", "RFC 3339: {time}");
    (v["level"].as_str().unwrap().to_string(), v["msg"].as_str().unwrap().to_string())
}

#[test]
fn errors_and_warnings_have_runcs_shape_and_exit_codes() {
    require_root!();
    let root = Root::new();
    let runc = RuncRoot::new();
    let dir = TempDir::new("molt-errlog");
    // (arguments, JSON records, exit status): runc and molt print the same kind of record.
    let cases: &[(&[&str], bool, i32)] = &[
        (&["state", "nosuch"], false, 1),
        (&["--log-format", "json", "state", "nosuch"], true, 1),
        (&["--log-format=json", "kill", "nosuch", "KILL"], true, 1),
        (&["--log-format", "xml", "state", "nosuch"], false, 1),
        (&["frobnicate"], false, 3),
        (&["state"], false, 1),
        (&["--log-format", "json", "state", "--nosuchflag", "x"], true, 1),
    ];
    for (args, json, code) in cases {
        let m = root.molt(args);
        assert_eq!(m.status.code(), Some(*code), "molt {args:?}: {}", stderr_of(&m));
        let (level, msg) = one_record(&m, *json);
        assert_eq!(level, "error", "molt {args:?}");
        if args.contains(&"xml") {
            assert_eq!(msg, "invalid log-format: xml");
        }
        if args.contains(&"nosuch") && !args.contains(&"xml") {
            assert_eq!(msg, "container nosuch does not exist");
        }
        if let Some(r) = &runc {
            let o = r.runc(args);
            assert_eq!(o.status.code(), Some(*code), "runc {args:?}: {}", stderr_of(&o));
            assert_eq!(one_record(&o, *json).0, "error", "runc {args:?}");
        }
    }
    // With --log the record goes to the file and stderr gets the bare message.
    let log = dir.join("log.txt");
    let out = root.molt(&["--log", log.to_str().unwrap(), "state", "nosuch"]);
    assert_eq!(stderr_of(&out), "container nosuch does not exist\n");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logrus_text(text.trim_end()), Some(("error".into(), "container nosuch does not exist".into())), "{text}");
    if let Some(r) = &runc {
        let rlog = dir.join("runc-log.txt");
        let o = r.runc(&["--log", rlog.to_str().unwrap(), "state", "nosuch"]);
        assert_eq!(stderr_of(&o), "container does not exist\n");
        assert!(logrus_text(std::fs::read_to_string(&rlog).unwrap().trim_end()).is_some());
    }
    // A warning without --log: a record on stderr, in the format asked for. (No device rules:
    // on pure cgroup v2 they would add a warning of their own.) An ignored AppArmor profile, an
    // ignored SELinux label, a capability molt cannot grant (setpriv takes CAP_SYS_TIME out of
    // molt's bounding set).
    type Case<'a> = (&'a str, fn(&mut Bundle), &'a str);
    let cases: [Case; 3] = [
        ("aa", |b| b.config["process"]["apparmorProfile"] = serde_json::json!("molt-test"), "apparmorProfile"),
        ("se", |b| b.config["process"]["selinuxLabel"] = serde_json::json!("system_u:system_r:container_t:s0"), "not supported by molt, ignored: SELinux labels"),
        ("cap", |b| b.config["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push(serde_json::json!("CAP_SYS_TIME")), "ignoring unknown or unavailable capabilities: CAP_SYS_TIME"),
    ];
    for (tag, set, want) in cases {
        let mut b = Bundle::new(&["true"]);
        set(&mut b);
        b.config["linux"]["resources"] = serde_json::json!({});
        let bundle = b.write();
        for json in [false, true] {
            let id = format!("w-{tag}-{json}");
            let mut cmd = std::process::Command::new("setpriv");
            cmd.args(["--bounding-set", "-sys_time"]).arg(molt_bin()).arg("--root").arg(&root.path);
            if json {
                cmd.args(["--log-format", "json"]);
            }
            let out = run_to_files(cmd.args(["create", "--bundle", &bundle, &id]));
            assert!(out.status.success(), "{}", stderr_of(&out));
            let (level, msg) = one_record(&out, json);
            assert!(level == "warning" && msg.contains(want), "{tag}: {level} {msg}");
        }
    }
}

#[test]
fn what_molt_does_not_do_is_said_in_the_log() {
    require_root!();
    let root = Root::new();
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["apparmorProfile"] = serde_json::json!("molt-test");
    let bundle = b.write();
    let log = b.dir.join("log.json");
    root.ok(&["--log", log.to_str().unwrap(), "--log-format", "json", "create", "--bundle", &bundle, "sc"]);
    let text = std::fs::read_to_string(&log).unwrap();
    let rec: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(rec["level"], "warning");
    assert!(rec["msg"].as_str().unwrap().contains("apparmorProfile"), "{text}");
}

#[test]
fn exec_flags_for_groups_caps_and_no_new_privs_as_runc() {
    require_root!();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.config["process"]["noNewPrivileges"] = serde_json::json!(false);
    let bundle = b.write();
    let root = Root::new();
    root.ok(&["run", "-d", "--bundle", &bundle, "xf"]);
    let args = ["exec", "--user", "1000:1000", "-g", "5", "-g", "7", "--cap", "CAP_NET_ADMIN", "--no-new-privs", "xf", "sh", "-c", "id; grep -E '^(CapBnd|CapPrm|NoNewPrivs)' /proc/self/status"];
    let out = root.ok(&args);
    assert!(out.starts_with("uid=1000 gid=1000 groups=5(tty),7\n") && out.contains("NoNewPrivs:\t1"), "{out}");
    if let Some(r) = RuncRoot::new() {
        assert!(r.runc(&["run", "-d", "--bundle", &bundle, "xf"]).status.success());
        let rout = r.runc(&args);
        assert_eq!(stdout_of(&rout), out, "molt vs runc: {}", stderr_of(&rout));
    }
    let out = root.molt(&["exec", "--cap", "CAP_NOPE", "xf", "true"]);
    assert!(!out.status.success() && stderr_of(&out).contains("CAP_NOPE"), "{}", stderr_of(&out));
}

#[test]
fn exec_env_overrides_the_containers_variable() {
    require_root!();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.config["process"]["env"] = serde_json::json!(["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "FOO=config", "KEEP=1"]);
    let bundle = b.write();
    let root = Root::new();
    root.ok(&["run", "-d", "--bundle", &bundle, "xe"]);
    let args = ["exec", "--env", "FOO=exec", "--env", "NEW=2", "--env", "NEW=3", "xe", "env"];
    let sorted = |s: &str| {
        let mut v: Vec<&str> = s.lines().collect();
        v.sort_unstable();
        v.join("\n")
    };
    let out = sorted(&root.ok(&args));
    // HOME comes from the container's /etc/passwd when the config has none, as runc sets it.
    assert_eq!(out, "FOO=exec\nHOME=/root\nKEEP=1\nNEW=3\nPATH=/usr/sbin:/usr/bin:/sbin:/bin");
    if let Some(r) = RuncRoot::new() {
        assert!(r.runc(&["run", "-d", "--bundle", &bundle, "xe"]).status.success());
        let rout = r.runc(&args);
        assert_eq!(sorted(&stdout_of(&rout)), out, "molt vs runc: {}", stderr_of(&rout));
    }
}

/// Run `bin args` with `input` on stdin; stdout and stderr in files as everywhere else.
fn with_stdin(bin: &std::path::Path, args: &[&str], input: &str) -> std::process::Output {
    let f = TempDir::new("molt-stdin");
    let path = f.join("in");
    std::fs::write(&path, input).unwrap();
    let base = f.join("out");
    let status = std::process::Command::new(bin)
        .args(args)
        .stdin(std::fs::File::open(&path).unwrap())
        .stdout(std::fs::File::create(base.with_extension("o")).unwrap())
        .stderr(std::fs::File::create(base.with_extension("e")).unwrap())
        .status()
        .unwrap();
    std::process::Output { status, stdout: std::fs::read(base.with_extension("o")).unwrap(), stderr: std::fs::read(base.with_extension("e")).unwrap() }
}

#[test]
fn update_changes_limits_from_stdin_file_and_flags() {
    require_root!();
    let mut b = Bundle::new(&["sleep", "1000"]);
    // Pure cgroup v2 (the VM lab): the container's own cgroup is seen through a cgroup namespace,
    // and cpu shares are written as cpu.weight (1 + (shares - 2) * 9999 / 262142, runc's formula).
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let files: &[&str] = if v2 {
        b.add_namespace(serde_json::json!({"type": "cgroup"}));
        &["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/cpu.weight"]
    } else {
        &["/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/cpu/cpu.shares"]
    };
    let shares = |s: u64| if v2 { if s == 1024 { 100 } else { 1 + (s - 2) * 9999 / 262142 } } else { s };
    let bundle = b.write();
    let root = Root::new();
    root.ok(&["run", "-d", "--bundle", &bundle, "up"]);
    let limits = |run: &dyn Fn(&[&str]) -> std::process::Output| {
        let mut args = vec!["exec", "up", "cat"];
        args.extend(files);
        stdout_of(&run(&args))
    };
    let r = RuncRoot::new();
    if let Some(r) = &r {
        assert!(r.runc(&["run", "-d", "--bundle", &bundle, "up"]).status.success());
    }
    let json = r#"{"memory": {"limit": 33554432}, "pids": {"limit": 50}}"#;
    let root_s = root.path.display().to_string();
    // The forms engines use: --resources - (go-runc >= 1.1 sends --resources=-) and a file.
    let out = with_stdin(&molt_bin(), &["--root", &root_s, "update", "--resources=-", "up"], json);
    assert!(out.status.success() && out.stdout.is_empty(), "{}", stderr_of(&out));
    assert_eq!(limits(&|a| root.molt(a)), format!("33554432\n50\n{}\n", shares(1024)));
    if let Some(r) = &r {
        let rs = r.path.display().to_string();
        assert!(with_stdin(&runc_bin().unwrap(), &["--root", &rs, "update", "--resources", "-", "up"], json).status.success());
        assert_eq!(limits(&|a| r.runc(a)), limits(&|a| root.molt(a)), "after --resources -, runc vs molt");
    }
    let file = b.dir.join("res.json");
    std::fs::write(&file, r#"{"cpu": {"shares": 300}}"#).unwrap();
    root.ok(&["update", "-r", file.to_str().unwrap(), "up"]);
    assert_eq!(limits(&|a| root.molt(a)), format!("33554432\n50\n{}\n", shares(300)));
    root.ok(&["update", "--memory", "48m", "--pids-limit", "60", "--cpu-share", "700", "up"]);
    assert_eq!(limits(&|a| root.molt(a)), format!("{}\n60\n{}\n", 48 << 20, shares(700)));
    if let Some(r) = &r {
        assert!(r.runc(&["update", "--memory", "48m", "--pids-limit", "60", "--cpu-share", "700", "up"]).status.success());
        assert_eq!(limits(&|a| r.runc(a)), limits(&|a| root.molt(a)), "after flags, runc vs molt");
    }
    let out = root.molt(&["update", "-r", "/nonexistent.json", "up"]);
    assert!(!out.status.success() && stderr_of(&out).contains("/nonexistent.json"));
    let out = with_stdin(&molt_bin(), &["--root", &root_s, "update", "-r", "-", "up"], "{\"memory\": 5}");
    assert!(!out.status.success() && stderr_of(&out).contains("linux.resources"), "{}", stderr_of(&out));
}

/// The limit files docker's zero values could touch, as the container sees them (hybrid / v1:
/// the per-controller mounts; pure v2: its own cgroup through a cgroup namespace). The shell loop
/// prints "file value" and an empty value for a file this kernel lacks, so both runtimes print
/// the same lines whatever the host.
fn zero_watch(b: &mut Bundle) -> String {
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let files: &[&str] = if v2 {
        b.add_namespace(serde_json::json!({"type": "cgroup"}));
        &["memory.max", "memory.swap.max", "memory.low", "cpu.weight", "cpu.max", "pids.max", "io.bfq.weight"]
    } else {
        &[
            "memory/memory.limit_in_bytes",
            "memory/memory.memsw.limit_in_bytes",
            "memory/memory.soft_limit_in_bytes",
            "cpu/cpu.shares",
            "cpu/cpu.cfs_quota_us",
            "cpu/cpu.cfs_period_us",
            "cpu/cpu.rt_period_us",
            "cpu/cpu.rt_runtime_us",
            "blkio/blkio.bfq.weight",
            "pids/pids.max",
        ]
    };
    let list: Vec<String> = files.iter().map(|f| format!("/sys/fs/cgroup/{f}")).collect();
    format!("for f in {}; do echo \"$f $(cat $f 2>/dev/null)\"; done", list.join(" "))
}

/// linux.resources with every zero dockerd 20.10 sends (runc reads them as "not set"): molt
/// runs the container as runc does, and the kernel's defaults are left in every limit file.
#[test]
fn dockers_zero_values_run_as_on_runc() {
    require_root!();
    let mut b = Bundle::new(&["true"]);
    let script = zero_watch(&mut b);
    b.config["process"]["args"] = serde_json::json!(["sh", "-c", script]);
    let res = &mut b.config["linux"]["resources"];
    res["memory"] = serde_json::json!({"limit": 0, "reservation": 0, "swap": 0, "kernel": 0, "kernelTCP": 0, "disableOOMKiller": false});
    res["cpu"] = serde_json::json!({"shares": 0, "quota": 0, "period": 0, "realtimeRuntime": 0, "realtimePeriod": 0, "cpus": "", "mems": ""});
    res["pids"] = serde_json::json!({"limit": 0});
    res["blockIO"] = serde_json::json!({"weight": 0});
    let cmp = run_both(&b);
    cmp.assert_same(|s| s.to_string());
    let out = cmp.molt_out();
    assert!(out.lines().count() >= 7 && out.contains("pids.max max"), "{out}");
}

/// `docker update` sends the whole structure: cpu quota and period 0, empty cpusets, blockIO
/// weight 0, pids 0, plus what was asked. Only the asked value changes, on molt as on runc; the
/// flag form with zeros changes nothing at all.
#[test]
fn update_with_dockers_whole_structure_changes_only_what_was_asked() {
    require_root!();
    let mut b = Bundle::new(&["sleep", "1000"]);
    let script = zero_watch(&mut b);
    let res = &mut b.config["linux"]["resources"];
    res["memory"] = serde_json::json!({"limit": 67108864});
    res["cpu"] = serde_json::json!({"shares": 512, "quota": 50000, "period": 100000});
    res["pids"] = serde_json::json!({"limit": 40});
    let bundle = b.write();
    let root = Root::new();
    root.ok(&["run", "-d", "--bundle", &bundle, "dz"]);
    let runc = RuncRoot::new();
    if let Some(r) = &runc {
        let out = r.runc(&["run", "-d", "--bundle", &bundle, "dz"]);
        assert!(out.status.success(), "runc: {}", stderr_of(&out));
    }
    let watch = |run: &dyn Fn(&[&str]) -> std::process::Output| stdout_of(&run(&["exec", "dz", "sh", "-c", &script]));
    let before = watch(&|a| root.molt(a));
    assert!(before.contains("pids.max 40") && before.contains("64"), "the create limits are in place: {before}");
    let json = r#"{"cpu": {"cpus": "", "mems": "", "period": 0, "quota": 0}, "memory": {"limit": 100663296},
        "blockIO": {"weight": 0}, "pids": {"limit": 0}}"#;
    let root_s = root.path.display().to_string();
    let out = with_stdin(&molt_bin(), &["--root", &root_s, "update", "--resources", "-", "dz"], json);
    assert!(out.status.success(), "molt update: {}", stderr_of(&out));
    let after = watch(&|a| root.molt(a));
    let (changed, same): (Vec<_>, Vec<_>) = before.lines().zip(after.lines()).partition(|(x, y)| x != y);
    assert_eq!(changed.len(), 1, "exactly the memory limit changes:\n{before}\n---\n{after}");
    assert!(changed[0].1.ends_with(" 100663296"), "{changed:?}");
    assert!(same.len() >= 6, "{after}");
    if let Some(r) = &runc {
        let rs = r.path.display().to_string();
        let out = with_stdin(&runc_bin().unwrap(), &["--root", &rs, "update", "--resources", "-", "dz"], json);
        assert!(out.status.success(), "runc update: {}", stderr_of(&out));
        assert_eq!(watch(&|a| r.runc(a)), after, "runc (left) and molt (right) after docker's update");
    }
    let flags = ["update", "--cpu-quota", "0", "--cpu-period", "0", "--blkio-weight", "0", "--memory-swap", "0", "dz"];
    root.ok(&flags);
    assert_eq!(watch(&|a| root.molt(a)), after, "zero flags changed a limit");
    if let Some(r) = &runc {
        assert!(r.runc(&flags).status.success());
        assert_eq!(watch(&|a| r.runc(a)), after, "runc after zero flags");
    }
    // What update leaves alone (as runc does) is said: on stderr without --log, else in the log.
    let ask = r#"{"memory": {"swappiness": 10}, "hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}"#;
    let out = with_stdin(&molt_bin(), &["--root", &root_s, "update", "--resources", "-", "dz"], ask);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("warning") && err.contains("memory.swappiness") && err.contains("hugepageLimits"), "{err}");
    let log = b.dir.join("update-log.json");
    let out = with_stdin(&molt_bin(), &["--root", &root_s, "--log", log.to_str().unwrap(), "--log-format", "json", "update", "-r", "-", "dz"], ask);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", stderr_of(&out));
    let rec: Value = serde_json::from_str(std::fs::read_to_string(&log).unwrap().lines().next().unwrap()).unwrap();
    assert!(rec["level"] == "warning" && rec["msg"].as_str().unwrap().contains("memory.swappiness"), "{rec}");
}

#[test]
fn events_stats_in_runcs_shape() {
    require_root!();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.config["linux"]["resources"] = serde_json::json!({"memory": {"limit": 67108864}, "pids": {"limit": 77}});
    let bundle = b.write();
    let root = Root::new();
    root.ok(&["run", "-d", "--bundle", &bundle, "ev"]);
    let out = root.ok(&["events", "--stats", "ev"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["type"], "stats");
    assert_eq!(v["id"], "ev");
    assert_eq!(v["data"]["pids"]["current"], 1);
    assert_eq!(v["data"]["pids"]["limit"], 77);
    assert_eq!(v["data"]["memory"]["usage"]["limit"], 67108864);
    if let Some(r) = RuncRoot::new() {
        assert!(r.runc(&["run", "-d", "--bundle", &bundle, "ev"]).status.success());
        let rv: Value = serde_json::from_slice(&r.runc(&["events", "--stats", "ev"]).stdout).unwrap();
        assert_eq!(keys(&rv), keys(&v));
        for part in ["cpu", "pids"] {
            assert_eq!(keys(&rv["data"][part]), keys(&v["data"][part]), "data.{part}: runc vs molt");
        }
        // memory: runc adds v1 kmem fields (kernel, kernelTCP) and leaves a zero cache out; the
        // common ones must be there and agree on the limit.
        for k in ["usage", "swap", "raw"] {
            assert!(v["data"]["memory"].get(k).is_some() && rv["data"]["memory"].get(k).is_some(), "memory.{k}");
        }
        assert_eq!(rv["data"]["memory"]["usage"]["limit"], v["data"]["memory"]["usage"]["limit"]);
    }
    // The stream form ends when the container does.
    let mut child = std::process::Command::new(molt_bin())
        .args(["--root", root.path.to_str().unwrap(), "events", "--interval", "100ms", "ev"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The stream has begun once its first event is out: read it rather than sleep.
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(first.contains("\"type\":\"stats\""), "first event: {first}");
    root.ok(&["kill", "ev", "KILL"]);
    // Drained so a blocked write cannot keep it alive.
    let drain = std::thread::spawn(move || lines.count());
    assert!(wait_until(30, || child.try_wait().unwrap().is_some()), "events did not end with the container");
    let _ = drain.join();
}

/// Issue 11: the upgrade's crash hook (MOLT_TEST_CRASH_AT) is compiled only with the
/// `fault-injection` feature, which the dev-dependency of molt on itself turns on for `cargo test`.
/// Cargo's feature resolver (version 2, edition 2021) keeps a dev-dependency's features out of
/// a build without tests: asked for the features molt gets without dev-dependencies (what
/// `cargo build --release` compiles), cargo names none but "default". The same query with them
/// must name the feature, or the question was not asked right. No release build is needed.
#[test]
fn a_build_without_tests_has_no_crash_hook() {
    let tree = |edges: &str| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = std::process::Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["tree", "--offline", "--locked", "-e", edges, "-i", "molt", "--prefix", "none"])
            .output()
            .expect("run cargo tree");
        assert!(out.status.success(), "cargo tree -e {edges}: {}", stderr_of(&out));
        stdout_of(&out)
    };
    let with_tests = tree("features");
    assert!(with_tests.contains("molt feature \"fault-injection\""), "the test build's features: {with_tests}");
    let without = tree("features,no-dev");
    assert!(without.contains("molt feature \"default\""), "{without}");
    assert!(!without.contains("fault-injection"), "a build without tests would carry the crash hook: {without}");
}
