//! The six OCI hook kinds: state on stdin, the namespace each runs in, timeouts, and what a
//! failing hook does to the lifecycle. Hooks are small shell scripts written on the host.

mod common;
use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const KINDS: [&str; 6] = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];

/// A directory of hook scripts, bind-mounted into the container at /hooks so that startContainer
/// (which runs after pivot_root) finds its script and writes where the test can read.
struct Hooks {
    dir: PathBuf,
}

impl Hooks {
    fn new() -> Hooks {
        let dir = std::env::temp_dir().join(unique("molt-hooks"));
        std::fs::create_dir_all(&dir).unwrap();
        Hooks { dir }
    }

    /// A script that records its stdin and its namespaces under `<kind>.state` / `<kind>.ns`.
    /// `dir` is where the script sees this directory (the host path, or /hooks inside).
    fn recorder(&self, kind: &str, dir: &str, extra: &str) -> PathBuf {
        let body = format!(
            "#!/bin/sh\ncat > {dir}/{kind}.state\nfor n in mnt pid; do readlink /proc/self/ns/$n; done > {dir}/{kind}.ns\necho \"$1 $FROM_ENV\" > {dir}/{kind}.args\n{extra}\n"
        );
        self.script(kind, &body)
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.dir.join(format!("{name}.sh"));
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(name)).ok()
    }

    fn state(&self, kind: &str) -> Value {
        serde_json::from_str(&self.read(&format!("{kind}.state")).unwrap_or_else(|| panic!("{kind} hook did not run")))
            .unwrap_or_else(|e| panic!("{kind} stdin is not JSON: {e}"))
    }

    fn clear(&self) {
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if !e.file_name().to_string_lossy().ends_with(".sh") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn hook(path: &Path, extra: Value) -> Value {
    let mut h = json!({"path": path, "args": [path.file_name().unwrap().to_string_lossy(), "arg1"], "env": ["FROM_ENV=env1"]});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            h[k] = v;
        }
    }
    h
}

/// Each kind has two hooks: a recorder with `env` of its own, then one without `env` that writes
/// its cwd and environment (less what the shell itself sets) to `<kind>.noenv`.
fn bundle_with_all_hooks(h: &Hooks) -> Bundle {
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.mount(json!({"destination": "/hooks", "type": "bind", "source": h.dir, "options": ["rbind"]}));
    b.config["process"]["env"] = json!(["PATH=/usr/bin:/bin", "MARK=process"]);
    b.config["process"]["cwd"] = json!("/hooks");
    let host = h.dir.display().to_string();
    let no_env = h.script("no-env", "#!/bin/sh\n{ pwd; env | grep -v -e '^PWD=' -e '^OLDPWD=' -e '^SHLVL=' -e '^_=' | sort; } > \"$2/$1.noenv\"\n");
    let mut hooks = json!({});
    for kind in KINDS {
        let dir = if kind == "startContainer" { "/hooks" } else { host.as_str() };
        // startContainer runs inside the container: its script is the bind-mounted one.
        // poststart notes whether startContainer (run by the init before its exec) had finished.
        let extra = if kind == "poststart" { format!("if test -f {host}/startContainer.args; then echo after; else echo before; fi > {host}/order") } else { String::new() };
        let inside = |p: PathBuf| if kind == "startContainer" { Path::new("/hooks").join(p.file_name().unwrap()) } else { p };
        let path = inside(h.recorder(kind, dir, &extra));
        hooks[kind] = json!([hook(&path, json!({})), {"path": inside(no_env.clone()), "args": ["no-env.sh", kind, dir]}]);
    }
    b.config["hooks"] = hooks;
    b
}

/// Run create/start/kill/delete with `run` (molt or runc) and return the six recorded states
/// and namespace views, the container's own namespaces, and each kind's `.noenv` record.
fn lifecycle(h: &Hooks, b: &Bundle, run: &dyn Fn(&[&str]) -> std::process::Output) -> (Vec<Value>, Vec<String>, String, Vec<String>) {
    h.clear();
    let bundle = b.write();
    let ok = |a: &[&str]| {
        let out = run(a);
        assert!(out.status.success(), "{a:?}: {}", stderr_of(&out));
        stdout_of(&out)
    };
    ok(&["create", "--bundle", &bundle, "hk"]);
    let pid: i64 = serde_json::from_str::<Value>(&ok(&["state", "hk"])).unwrap()["pid"].as_i64().unwrap();
    let ns = |p: &str| ["mnt", "pid"].iter().map(|n| std::fs::read_link(format!("/proc/{p}/ns/{n}")).unwrap().display().to_string() + "\n").collect::<String>();
    // pid_for_children is what a child of the init lands in: the container's pid namespace.
    let container_ns = format!(
        "{}\n{}\n",
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap().display(),
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap().display()
    );
    let _ = ns;
    ok(&["start", "hk"]);
    assert!(wait_until(30, || h.read("poststart.state").is_some()));
    ok(&["kill", "hk", "KILL"]);
    assert!(wait_until(30, || serde_json::from_str::<Value>(&stdout_of(&run(&["state", "hk"]))).unwrap()["status"] == "stopped"));
    ok(&["delete", "hk"]);
    let states = KINDS.iter().map(|k| h.state(k)).collect();
    let nss = KINDS.iter().map(|k| h.read(&format!("{k}.ns")).unwrap_or_default()).collect();
    let no_env = KINDS.iter().map(|k| h.read(&format!("{k}.noenv")).unwrap_or_default()).collect();
    (states, nss, container_ns, no_env)
}

#[test]
fn all_six_kinds_get_the_state_in_the_right_namespace() {
    require_root!();
    let h = Hooks::new();
    let b = bundle_with_all_hooks(&h);
    let root = Root::new();
    let (states, nss, container_ns, no_env) = lifecycle(&h, &b, &|a| root.molt(a));
    let host_ns: String = ["mnt", "pid"].iter().map(|n| std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap().display().to_string() + "\n").collect();
    for (i, kind) in KINDS.iter().enumerate() {
        let s = &states[i];
        assert_eq!(s["id"], "hk", "{kind}");
        assert_eq!(s["ociVersion"], molt::spec::OCI_VERSION, "{kind}");
        assert_eq!(s["bundle"], b.dir.display().to_string(), "{kind}");
        let in_container = *kind == "createContainer" || *kind == "startContainer";
        assert_eq!(nss[i], if in_container { container_ns.clone() } else { host_ns.clone() }, "{kind} namespaces");
        assert_eq!(h.read(&format!("{kind}.args")).unwrap(), "arg1 env1\n", "{kind}: args and env");
        // Without `env` (the spec says nothing then, nor of the cwd): as runc, the runtime's own
        // environment in the bundle, or the container process's in its root before the pivot
        // (without the HOME it gets later) and in process.cwd after.
        let (cwd, env) = match *kind {
            "createContainer" => (rootfs().display().to_string(), vec!["MARK=process".to_string(), "PATH=/usr/bin:/bin".into()]),
            "startContainer" => ("/hooks".to_string(), vec!["HOME=/root".to_string(), "MARK=process".into(), "PATH=/usr/bin:/bin".into()]),
            _ => (b.dir.display().to_string(), vec![format!("PATH={}", std::env::var("PATH").unwrap())]),
        };
        let mut lines = no_env[i].lines();
        assert_eq!(lines.next(), Some(cwd.as_str()), "{kind} without env: cwd");
        let seen: Vec<&str> = lines.collect();
        if in_container {
            assert_eq!(seen, env, "{kind} without env: the container process's environment");
        } else {
            assert!(seen.contains(&env[0].as_str()) && !seen.iter().any(|l| l.starts_with("MARK=")), "{kind} without env: molt's environment: {seen:?}");
        }
    }
    let status: Vec<&str> = states.iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(status, ["creating", "creating", "creating", "created", "running", "stopped"]);
    assert_eq!(h.read("order").as_deref(), Some("after\n"), "poststart ran before startContainer had finished");
    if let Some(r) = RuncRoot::new() {
        let (rstates, _, _, rno_env) = lifecycle(&h, &b, &|a| r.runc(a));
        // The same cwd and environment, but poststop's cwd: runc's is wherever `delete` was
        // called, molt's the bundle as for the other runtime-namespace hooks.
        let here = std::env::current_dir().unwrap().display().to_string();
        let molt_poststop = no_env[5].replacen(&b.dir.display().to_string(), &here, 1);
        assert_eq!([&no_env[..5], &[molt_poststop]].concat(), rno_env, "hooks without env: cwd and environment, molt (left) vs runc (right)");
        let mut rstatus: Vec<&str> = rstates.iter().map(|s| s["status"].as_str().unwrap()).collect();
        // runc 1.1.5 tells poststart "created"; the process has started by then, and the spec's
        // state for it is running, which molt reports.
        assert_eq!(rstatus[4], "created");
        rstatus[4] = "running";
        assert_eq!(status, rstatus, "status per hook kind, molt vs runc");
        for (i, kind) in KINDS.iter().enumerate() {
            // The pid: the host pid for runtime-namespace hooks, 1 (as seen from inside) for the
            // container-namespace ones, 0 once stopped; runc's values follow the same rule.
            // runc leaves a zero pid out.
            let same_rule = |s: &Value, other: &Value| match s["pid"].as_i64().unwrap() {
                0 => other["pid"].as_i64().unwrap_or(0) == 0,
                1 => other["pid"] == 1,
                _ => other["pid"].as_i64().unwrap_or(0) > 1,
            };
            assert!(same_rule(&states[i], &rstates[i]), "{kind}: pid molt {} runc {}", states[i]["pid"], rstates[i]["pid"]);
        }
    }
}

/// What is left of a container after a failed create: nothing, or what is wrong.
fn leftovers(root: &Root, id: &str) -> Vec<String> {
    let mut out = vec![];
    if root.path.join(id).exists() {
        out.push(format!("state dir {}", root.path.join(id).display()));
    }
    out.extend(cgroups_named(id).into_iter().map(|p| format!("cgroup {}", p.display())));
    out.extend(host_mounts_with(&rootfs().display().to_string()));
    out
}

#[test]
fn a_failing_create_hook_aborts_and_cleans_up() {
    require_root!();
    let h = Hooks::new();
    for kind in ["prestart", "createRuntime", "createContainer"] {
        let fail = h.script(&format!("fail-{kind}"), "#!/bin/sh\necho broken hook >&2\nexit 3\n");
        let poststop = h.recorder("poststop", &h.dir.display().to_string(), "");
        h.clear();
        let mut b = Bundle::new(&["sleep", "1000"]);
        b.config["hooks"] = json!({kind: [hook(&fail, json!({}))], "poststop": [hook(&poststop, json!({}))]});
        let root = Root::new();
        let id = unique("hookfail");
        let out = root.molt(&["create", "--bundle", &b.write(), &id]);
        assert!(!out.status.success(), "{kind}");
        let err = stderr_of(&out);
        assert!(err.contains(kind) && err.contains("broken hook") && err.contains("exit status: 3"), "{kind}: {err}");
        // One error; warnings may precede it (on pure cgroup v2: device rules molt cannot apply).
        assert_eq!(err.lines().filter(|l| logrus_text(l).is_some_and(|(level, _)| level == "error")).count(), 1, "one error: {err}");
        assert_eq!(leftovers(&root, &id), Vec::<String>::new(), "{kind}");
    }
}

#[test]
fn a_hook_past_its_timeout_is_killed() {
    require_root!();
    let h = Hooks::new();
    let slow = h.script("slow", &format!("#!/bin/sh\nsleep 30\ntouch {}/slow.done\n", h.dir.display()));
    let mut b = Bundle::new(&["true"]);
    b.config["hooks"] = json!({"createRuntime": [hook(&slow, json!({"timeout": 1}))]});
    let root = Root::new();
    let t = std::time::Instant::now();
    let out = root.molt(&["create", "--bundle", &b.write(), "slow"]);
    assert!(!out.status.success());
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "took {:?}", t.elapsed());
    assert!(stderr_of(&out).contains("timed out after 1s"), "{}", stderr_of(&out));
    assert_eq!(leftovers(&root, "slow"), Vec::<String>::new());
    // The whole hook went, not only its shell (its `sleep 30` child too).
    let running = || !std::process::Command::new("pgrep").args(["-f", &slow.display().to_string()]).output().map(|o| o.stdout.is_empty()).unwrap_or(true);
    assert!(wait_until(5, || !running()), "hook still running");
}

/// runtime-spec 1.3: a failing poststart hook is an error that stops the container (1.2 and runc
/// 1.1.5 only warned); a failing poststop hook is a warning and the next one still runs.
#[test]
fn a_failing_poststart_hook_stops_the_container_a_failing_poststop_hook_warns() {
    require_root!();
    let h = Hooks::new();
    let fail = h.script("fail", "#!/bin/sh\nexit 1\n");
    let after = h.recorder("poststop", &h.dir.display().to_string(), "");
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.config["hooks"] = json!({"poststart": [hook(&fail, json!({}))], "poststop": [hook(&fail, json!({})), hook(&after, json!({}))]});
    let root = Root::new();
    let log = h.dir.join("log.json");
    let bundle = b.write();
    root.ok(&["create", "--bundle", &bundle, "warn"]);
    let out = root.molt(&["--log", log.to_str().unwrap(), "--log-format", "json", "start", "warn"]);
    assert!(!out.status.success(), "start succeeded despite its failing poststart hook");
    assert_eq!(root.state("warn")["status"], "stopped");
    root.ok(&["--log", log.to_str().unwrap(), "--log-format", "json", "delete", "warn"]);
    assert!(!root.path.join("warn").exists());
    assert!(h.read("poststop.state").is_some(), "the hooks after a failed poststop still run");
    let text = std::fs::read_to_string(&log).unwrap();
    let levels: Vec<(String, bool)> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["level"].as_str().unwrap().to_string(), v["msg"].as_str().unwrap().contains(if v["level"] == "error" { "poststart" } else { "poststop" })))
        .collect();
    assert_eq!(levels, [("error".to_string(), true), ("warning".to_string(), true)], "{text}");
}

#[test]
fn a_failing_start_container_hook_stops_the_container() {
    require_root!();
    let h = Hooks::new();
    h.script("failstart", "#!/bin/sh\necho no start >&2\nexit 1\n");
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.mount(json!({"destination": "/hooks", "type": "bind", "source": h.dir, "options": ["rbind"]}));
    b.config["hooks"] = json!({"startContainer": [{"path": "/hooks/failstart.sh"}]});
    let bundle = b.write();
    let root = Root::new();
    root.ok(&["create", "--bundle", &bundle, "fs"]);
    let out = root.molt(&["start", "fs"]);
    let molt_code = out.status.code();
    assert!(wait_until(30, || root.state("fs")["status"] == "stopped"), "the user process never runs");
    if let Some(r) = RuncRoot::new() {
        assert!(r.runc(&["create", "--bundle", &bundle, "fs"]).status.success());
        assert_eq!(r.runc(&["start", "fs"]).status.code(), molt_code, "start's exit code, molt vs runc");
    }
}

#[test]
fn an_init_whose_create_was_killed_goes_away_and_delete_cleans_up() {
    require_root!();
    let h = Hooks::new();
    let pidfile = h.dir.join("hook.pid");
    let slow = h.script("stall", &format!("#!/bin/sh\necho $$ > {}\nexec sleep 30\n", pidfile.display()));
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.config["hooks"] = json!({"createRuntime": [{"path": slow}]});
    let bundle = b.write();
    let root = Root::new();
    let mut create = std::process::Command::new(molt_bin())
        .args(["--root", root.path.to_str().unwrap(), "create", "--bundle", &bundle, "killed"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The file exists before the hook's echo fills it: wait for the number itself.
    assert!(wait_until(30, || h.read("hook.pid").is_some_and(|p| !p.trim().is_empty())));
    let hook_pid: i32 = h.read("hook.pid").unwrap().trim().parse().unwrap();
    let init = root.state("killed")["pid"].as_i64().unwrap();
    create.kill().unwrap();
    create.wait().unwrap();
    // SAFETY: kill(2) on the hook process this test started through molt.
    unsafe { libc::kill(hook_pid, libc::SIGKILL) };
    // The init sees the runtime gone and exits instead of waiting forever.
    assert!(wait_until(30, || root.state("killed")["status"] == "stopped"), "{}", root.state("killed"));
    let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "init {init} still there: {stat}");
    root.ok(&["delete", "killed"]);
    assert!(!root.path.join("killed").exists());
    assert!(cgroups_named("killed").is_empty());
}
