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

/// The config's device rules hold inside the container on both cgroup versions (v1's devices
/// files, v2's eBPF filter), and without rules of its own it gets runc's defaults: with CAP_MKNOD
/// a node of the host's disk can be made (runc's default rules allow mknod of any node) but not
/// opened, while /dev/zero can; runc sees the same.
#[test]
fn device_rules_hold_inside_the_container() {
    require_root!();
    let mut b = Bundle::new(&["sh", "-c", "mknod /s/disk b 8 0 && echo made; head -c1 /s/disk 2>&1 | grep -o 'Operation not permitted'; head -c1 /dev/zero | wc -c"]);
    b.mount(serde_json::json!({"destination": "/s", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]}));
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set].as_array_mut().unwrap().push(serde_json::json!("CAP_MKNOD"));
    }
    // The config's own rules (deny all, then runc's defaults), and none at all: runc's rule set
    // starts from deny either way.
    for rules in [b.config["linux"]["resources"]["devices"].clone(), serde_json::json!([])] {
        b.config["linux"]["resources"]["devices"] = rules.clone();
        let c = run_both(&b);
        c.assert_same(|s| s.to_string());
        assert_eq!(c.molt_out(), "made\nOperation not permitted\n1\n", "devices {rules}");
    }
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
    let mut runtimes: Vec<Runtime<'_>> = vec![("molt", Box::new(molt))];
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
                assert!(wait_until(10, || process_gone(p)), "{name}: process {p} of a {state} container survived");
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
    // Once its process is in the frozen cgroup, exec can only go on after the resume.
    let frozen_in = wait_until(10, || root.ok(&["ps", "--format", "json", "pp"]).trim() != format!("[{pid}]") || exec.try_wait().unwrap().is_some());
    let early = exec.try_wait().unwrap();
    root.ok(&["resume", "pp"]);
    let done = wait_until(10, || exec.try_wait().unwrap().is_some());
    if !done {
        let _ = exec.kill();
    }
    let status = exec.wait().unwrap();
    assert!(frozen_in, "the exec's process never joined the paused container");
    assert!(early.is_none(), "exec --ignore-paused returned while the container was paused: {early:?}");
    assert!(done && status.success(), "exec --ignore-paused after resume: {status}");
    assert_eq!(root.ok(&["exec", "pp", "cat", "/w/x"]), "ran\n");
}

/// Where a test's own cgroup would be in every hierarchy of this host (v1 controllers, the
/// unified tree of a hybrid host, or the v2 root).
fn cgroup_dirs_named(name: &str) -> Vec<std::path::PathBuf> {
    let base = std::path::Path::new("/sys/fs/cgroup");
    let mut found: Vec<_> = std::fs::read_dir(base).into_iter().flatten().flatten().map(|e| e.path().join(name)).filter(|p| p.exists()).collect();
    found.extend(Some(base.join(name)).filter(|p| p.exists()));
    found
}

/// Processes whose environment holds `tag`: a cloned init that never exec'd still carries the
/// environment of the molt it was cloned from.
fn processes_tagged(tag: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| {
            let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
            env.split(|b| *b == 0).any(|kv| kv == tag.as_bytes())
        })
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

/// One container id in a state root of its own, with a cgroup and an environment tag of its own
/// (a cloned init that never exec'd still carries it), and the checks that nothing of it is left.
struct OneId {
    root: Root,
    id: String,
    cgroup: String,
    tag: String,
    bundle: String,
    _b: Bundle,
}

impl OneId {
    fn new(name: &str) -> OneId {
        let (root, id, cgroup, tag) = (Root::new(), unique(name), unique(&format!("molt-{name}")), format!("MOLT_TEST_TAG={}", unique("tag")));
        let mut b = Bundle::new(&["sleep", "1000"]);
        b.config["linux"]["cgroupsPath"] = serde_json::json!(format!("/{cgroup}"));
        OneId { root, id, cgroup, tag, bundle: b.write(), _b: b }
    }

    /// `molt --root ROOT ARGS` carrying the tag, its output discarded.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let (k, v) = self.tag.split_once('=').unwrap();
        let mut cmd = std::process::Command::new(molt_bin());
        cmd.arg("--root").arg(&self.root.path).args(args).env(k, v);
        cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        cmd
    }

    fn create_args(&self) -> [&str; 4] {
        ["create", "--bundle", &self.bundle, &self.id]
    }

    /// Directories of a create or delete on their way (molt's staged names) left in the root.
    fn staged(&self) -> Vec<String> {
        let names = std::fs::read_dir(&self.root.path).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().to_string());
        names.filter(|n| n.starts_with(".creating-") || n.starts_with(".deleting-")).collect()
    }

    fn assert_all_gone(&self, when: &str) {
        assert!(!self.root.path.join(&self.id).exists(), "{when}: the directory of {} is left", self.id);
        assert!(self.staged().is_empty(), "{when}: staged directories left in the root: {:?}", self.staged());
        assert!(cgroup_dirs_named(&self.cgroup).is_empty(), "{when}: cgroup left: {:?}", cgroup_dirs_named(&self.cgroup));
        let mounts: Vec<_> = [self.id.as_str(), self.root.path.to_str().unwrap()].iter().flat_map(|n| host_mounts_with(n)).collect();
        assert!(mounts.is_empty(), "{when}: mounts left: {mounts:?}");
        // A cloned init that lost its runtime exits on its own; give it the moment it needs.
        assert!(wait_until(5, || processes_tagged(&self.tag).is_empty()), "{when}: processes left: {:?}", processes_tagged(&self.tag));
    }
}

/// Median wall time of `n` runs of `cmd()` from spawn to exit, each followed by `after()`.
fn median_time(n: usize, cmd: impl Fn() -> std::process::Command, after: impl Fn()) -> std::time::Duration {
    let mut times: Vec<_> = (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            let st = cmd().status().unwrap();
            let took = t.elapsed();
            assert!(st.success(), "a clean run to time failed: {st}");
            after();
            took
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// Issue 11: `molt create` or `molt delete -f` killed (SIGKILL) at any point leaves an id that
/// `state` and `list` show while it exists, that `delete -f` frees entirely (directory, cgroup,
/// mounts, processes) and that `create` then takes again. The kills fall anywhere in 0 to 1.2
/// times a clean run of the command, timed here first; some must leave a half-done state (a
/// staged directory, or the id's directory of a create not finished or a delete begun), or the
/// test proved nothing.
#[test]
fn an_id_stays_usable_whenever_create_or_delete_is_killed() {
    require_root!();
    const ROUNDS: usize = 20;
    let one = OneId::new("killed");
    let (root, id) = (&one.root, one.id.as_str());
    let create_time = median_time(3, || one.command(&one.create_args()), || {
        root.ok(&["delete", "--force", id]);
    });
    let delete_time = median_time(3, || one.command(&["delete", "--force", id]), || {
        root.ok(&one.create_args());
    });
    root.ok(&["delete", "--force", id]);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64 | 1;
    let mut rng = seed;
    // xorshift: a point in 0..=1.2 * `of`, spread evenly enough over the rounds.
    let mut point_in = |of: std::time::Duration| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        of.mul_f64(1.2 * (rng % 10_001) as f64 / 10_000.0)
    };
    // What the kills left: the command, then `state`'s status ("-" for no directory) and whether
    // a staged directory was left.
    let mut left: std::collections::BTreeMap<String, usize> = Default::default();
    for i in 0..ROUNDS {
        let deleting = i % 2 == 1;
        let mut init_pid = None;
        if deleting {
            root.ok(&one.create_args());
            init_pid = root.state(id)["pid"].as_i64();
        }
        let (mut cmd, at) = if deleting { (one.command(&["delete", "--force", id]), point_in(delete_time)) } else { (one.command(&one.create_args()), point_in(create_time)) };
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(at);
        let _ = child.kill();
        let _ = child.wait();
        let what = if deleting { "delete" } else { "create" };
        let when = format!("{what} killed after {at:?} of {:?} (iteration {i}, seed {seed})", if deleting { delete_time } else { create_time });
        let staged = !one.staged().is_empty();
        // Whatever is left of the id is shown, not hidden.
        let mut status = "-".to_string();
        if root.path.join(id).exists() {
            let st = root.molt(&["state", id]);
            assert!(st.status.success(), "{when}: state of what is left: {}", stderr_of(&st));
            let doc: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
            status = doc["status"].as_str().unwrap_or("?").to_string();
            assert!(root.ok(&["list", "-q"]).lines().any(|l| l == id), "{when}: list hides {id}");
            let again = root.molt(&one.create_args());
            assert!(!again.status.success() && stderr_of(&again).contains("already exists"), "{when}: {}", stderr_of(&again));
        }
        *left.entry(format!("{what} {status}{}", if staged { " staged" } else { "" })).or_default() += 1;
        root.ok(&["delete", "--force", id]);
        one.assert_all_gone(&when);
        if let Some(pid) = init_pid {
            assert!(wait_until(5, || !std::path::Path::new(&format!("/proc/{pid}")).exists()), "{when}: the init {pid} outlived the delete");
        }
        root.ok(&one.create_args());
        assert_eq!(root.state(id)["status"], "created", "{when}: the id was not usable again");
        root.ok(&["delete", "--force", id]);
        one.assert_all_gone(&format!("{when}, then created and deleted"));
    }
    eprintln!("clean create {create_time:?}, delete -f {delete_time:?}; what the kills left (seed {seed}): {left:?}");
    // Half-done: a staged directory, or the id's directory in another state than before the
    // command ("-" for a create, "created" for a delete) or after it (the other one).
    let half_done: usize = left.iter().filter(|(k, _)| k.ends_with(" staged") || !(k.ends_with(" -") || k.ends_with(" created"))).map(|(_, n)| n).sum();
    assert!(half_done > 0, "no kill landed inside a command (seed {seed}): {left:?}");
}

/// Concurrent `molt create`s of one id (as two engines or a retrying script may start them): one
/// wins, every other fails saying the container already exists, and after `delete -f` nothing of
/// any of them is left (state directory, staged directories, cgroup, mounts, processes).
/// runc 1.1.5 went wrong in 9 of 20 such rounds of 4 (issue 11): the same count here.
#[test]
fn concurrent_creates_of_one_id_have_one_winner_and_leave_nothing() {
    require_root!();
    const RACERS: usize = 4;
    const ROUNDS: usize = 20;
    let one = OneId::new("race");
    let (root, id) = (&one.root, one.id.as_str());
    for round in 0..ROUNDS {
        let start = std::sync::Barrier::new(RACERS);
        let outs: Vec<std::process::Output> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..RACERS)
                .map(|_| {
                    s.spawn(|| {
                        let mut cmd = one.command(&one.create_args());
                        start.wait();
                        run_to_files(&mut cmd)
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let winners = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(winners, 1, "round {round}: {winners} creates succeeded: {:?}", outs.iter().map(stderr_of).collect::<Vec<_>>());
        for o in outs.iter().filter(|o| !o.status.success()) {
            let err = stderr_of(o);
            assert!(err.contains(&format!("container {id} already exists")), "round {round}: a losing create said: {err}");
            assert!(!err.contains("interrupted"), "round {round}: a live create was taken for an interrupted one: {err}");
        }
        assert_eq!(root.state(id)["status"], "created", "round {round}");
        root.ok(&["delete", "--force", id]);
        one.assert_all_gone(&format!("round {round}"));
    }
}

/// `exec --cgroup` as runc's: a PATH alone moves the process to that sub-cgroup in every
/// hierarchy, CONTROLLER:PATH (v1) only in the controller's own, `/` is the container's cgroup;
/// a PATH above the container's cgroup, one that does not exist, an unknown controller and a
/// repeated PATH without controller are refused, and no process is left behind by a refusal.
#[test]
fn exec_cgroup_joins_a_sub_cgroup_as_runc() {
    require_root!();
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists();
    let per_controller: &[&str] = if v1 { &["--cgroup", "memory:mem", "--cgroup", "cpuacct:/sub"] } else { &["--cgroup", "memory:mem"] };
    let cases: [(&str, &[&str]); 8] = [
        ("none", &[]),
        ("root", &["--cgroup", "/"]),
        ("sub", &["--cgroup", "sub"]),
        ("per controller", per_controller),
        ("parent", &["--cgroup", ".."]),
        ("missing", &["--cgroup", "nonexistent"]),
        ("unknown controller", &["--cgroup", "whaat:/"]),
        ("two paths", &["--cgroup", "sub", "--cgroup", "/"]),
    ];
    let root = Root::new();
    let runc = RuncRoot::new();
    let mut runtimes: Vec<Runtime<'_>> = vec![("molt", Box::new(|a: &[&str]| root.molt(a)))];
    if let Some(r) = &runc {
        runtimes.push(("runc", Box::new(move |a: &[&str]| r.runc(a))));
    }
    let mut seen = vec![];
    for (name, rt) in &runtimes {
        let cgroup = unique(&format!("molt-execcg-{name}"));
        let mut b = Bundle::new(&["sleep", "1000"]);
        b.config["linux"]["cgroupsPath"] = serde_json::json!(format!("/{cgroup}"));
        let id = unique("execcg");
        assert!(rt(&["run", "-d", "--bundle", &b.write(), &id]).status.success(), "{name} run");
        let init = serde_json::from_slice::<serde_json::Value>(&rt(&["state", &id]).stdout).unwrap()["pid"].as_i64().unwrap();
        // The sub-cgroups, made from the host: "sub" everywhere (v1 cpuset with its parent's
        // cpus and mems, or it takes no process), "mem" in the memory controller's.
        // (A host that co-mounts controllers lists one directory under several names: _all.)
        for dir in cgroup_dirs_named(&cgroup) {
            std::fs::create_dir_all(dir.join("sub")).unwrap();
            for f in ["cpuset.cpus", "cpuset.mems"].iter().filter(|_| dir.starts_with("/sys/fs/cgroup/cpuset")) {
                std::fs::write(dir.join("sub").join(f), std::fs::read(dir.join(f)).unwrap()).unwrap();
            }
            if dir.starts_with("/sys/fs/cgroup/memory") || !v1 {
                std::fs::create_dir_all(dir.join("mem")).unwrap();
            }
        }
        let mut outcomes = vec![];
        for (case, flags) in &cases {
            let args: Vec<&str> = ["exec"].iter().chain(flags.iter()).chain([id.as_str(), "cat", "/proc/self/cgroup"].iter()).copied().collect();
            let out = rt(&args);
            let text = stdout_of(&out).replace(&cgroup, "C");
            // molt's refusals name what is wrong.
            let said = [("parent", "is not a sub-cgroup"), ("missing", "/nonexistent/cgroup.procs"), ("unknown controller", "unknown controller whaat")];
            if let (true, Some((_, words))) = (*name == "molt", said.iter().find(|(c, _)| c == case)) {
                assert!(stderr_of(&out).contains(words), "molt, {case}: {}", stderr_of(&out));
            }
            outcomes.push((case.to_string(), out.status.success(), text));
        }
        let ps = rt(&["ps", "--format", "json", &id]);
        assert_eq!(stdout_of(&ps).trim(), format!("[{init}]"), "{name}: only the init is left in the container");
        assert!(rt(&["delete", "--force", &id]).status.success(), "{name} delete");
        if *name == "molt" {
            assert!(cgroup_dirs_named(&cgroup).is_empty(), "molt's delete left {:?}", cgroup_dirs_named(&cgroup));
        }
        for dir in cgroup_dirs_named(&cgroup) {
            for s in ["sub", "mem", ""] {
                let _ = std::fs::remove_dir(dir.join(s));
            }
        }
        seen.push(outcomes);
    }
    let molt = &seen[0];
    // Each line of /proc/self/cgroup ("N:controllers:path") in the expected place.
    let all_in = |text: &str, want: &dyn Fn(&str) -> &'static str| !text.is_empty() && text.lines().all(|l| l.ends_with(&format!(":/C{}", want(l))));
    assert!(molt[0].1 && all_in(&molt[0].2, &|_| ""), "{:?}", molt[0]);
    assert!(molt[1].1 && all_in(&molt[1].2, &|_| ""), "{:?}", molt[1]);
    assert!(molt[2].1 && all_in(&molt[2].2, &|_| "/sub"), "{:?}", molt[2]);
    let own = |l: &str| {
        let controllers: Vec<&str> = l.split(':').nth(1).unwrap_or_default().split(',').collect();
        if controllers.contains(&"memory") {
            "/mem"
        } else if controllers.contains(&"cpuacct") {
            "/sub"
        } else {
            ""
        }
    };
    assert_eq!(molt[3].1, v1, "CONTROLLER:PATH works on v1 only: {:?}", molt[3]);
    assert!(!v1 || all_in(&molt[3].2, &own), "{:?}", molt[3]);
    assert!(molt[4..].iter().all(|(_, ok, _)| !ok), "refused: {:?}", &molt[4..]);
    if let Some(runc) = seen.get(1) {
        assert_eq!(molt, runc, "molt (left) and runc (right)");
    }
}
