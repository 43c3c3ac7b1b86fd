//! Bad input: one clear error line naming what is wrong, a non-zero exit, and nothing left behind
//! (no state directory, mount, cgroup or process).

mod common;
use common::*;
use serde_json::json;

/// Everything a failed create could have left: the state dir, mounts of the rootfs, cgroups named
/// after the id, processes still carrying this root on their command line (the cloned init).
fn leftovers(root: &Root, id: &str, rootfs: &str) -> Vec<String> {
    let mut out = vec![];
    if root.path.join(id).exists() {
        out.push(format!("state dir {}", root.path.join(id).display()));
    }
    out.extend(host_mounts_with(rootfs));
    out.extend(cgroups_named(id).into_iter().map(|p| format!("cgroup {}", p.display())));
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name == me || !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(&root.path.display().to_string()) {
            out.push(format!("process {name}"));
        }
    }
    out
}

/// Create `id` from `b`, expect failure with one stderr line containing every `needle`, and
/// nothing left behind.
fn refused(b: &Bundle, id: &str, needles: &[&str]) -> String {
    let root = Root::new();
    let bundle = b.write();
    let out = root.molt(&["create", "--bundle", &bundle, id]);
    let text = stderr_of(&out);
    assert!(!out.status.success(), "create {id} succeeded");
    // runc's records, `time="..." level=error msg="..."`: one error (warnings may precede it,
    // such as device rules a pure cgroup v2 host does not apply); the needles are looked for in msg.
    let records: Vec<(String, String)> = text.lines().map(|l| logrus_text(l).unwrap_or_else(|| panic!("not a runc log record: {l}"))).collect();
    let errors: Vec<&String> = records.iter().filter(|(level, _)| level == "error").map(|(_, m)| m).collect();
    assert_eq!(errors.len(), 1, "one error: {text}");
    assert!(records.iter().all(|(level, _)| level == "error" || level == "warning"), "{text}");
    let err = errors[0].clone();
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    // Only what this test made: its own rootfs path, resolved as molt resolves it (a relative
    // "rootfs" alone would match any container's mounts on the host).
    let rootfs = b.dir.join(b.config["root"]["path"].as_str().unwrap_or_default()).display().to_string();
    // The failed init is reaped by the time molt exits; give the kernel a moment to drop its mounts.
    assert!(wait_until(30, || leftovers(&root, id, &rootfs).is_empty()), "left behind: {:?}", leftovers(&root, id, &rootfs));
    err
}

#[test]
fn missing_or_malformed_config() {
    require_root!();
    let b = Bundle::new(&["true"]);
    let root = Root::new();
    let bundle = b.dir.display().to_string();
    let out = root.molt(&["create", "--bundle", &bundle, "nocfg"]);
    assert!(!out.status.success() && stderr_of(&out).contains("config.json: No such file"), "{}", stderr_of(&out));
    assert!(!root.path.join("nocfg").exists());
    for (text, needle) in [
        ("{\"ociVersion\": ", "not a valid OCI runtime config"),
        ("{\"ociVersion\": \"1.0.2\", \"process\": \"x\"}", "expected struct Process"),
        ("[]", "ociVersion: missing"),
        ("{\"ociVersion\": \"1.0.2\"}", "process: missing"),
    ] {
        std::fs::write(b.dir.join("config.json"), text).unwrap();
        let out = root.molt(&["create", "--bundle", &bundle, "bad"]);
        assert!(!out.status.success());
        let err = stderr_of(&out);
        assert!(err.contains(needle) && err.contains("config.json") && err.lines().count() == 1, "{err}");
        assert!(!root.path.join("bad").exists());
    }
    let out = root.molt(&["create", "--bundle", "/nonexistent-bundle", "nob"]);
    assert!(stderr_of(&out).contains("/nonexistent-bundle"), "{}", stderr_of(&out));
}

#[test]
fn an_oci_version_that_is_not_semver_1_x_is_refused_a_newer_1_x_warns() {
    require_root!();
    // runtime-spec: ociVersion is REQUIRED and MUST be SemVer 2.0.0 (runc 1.1.5 takes anything).
    for (v, needle) in [(json!("banana"), "not a SemVer 2.0.0 version"), (json!("1.0"), "not a SemVer"), (json!("2.0.0"), "runtime-spec 1.x"), (json!(""), "missing")] {
        let mut b = Bundle::new(&["true"]);
        b.config["ociVersion"] = v.clone();
        refused(&b, "badversion", &["config.json", "ociVersion", needle]);
    }
    let mut b = Bundle::new(&["true"]);
    b.config.as_object_mut().unwrap().remove("ociVersion");
    refused(&b, "noversion", &["ociVersion", "missing"]);
    // What the spec does not call invalid runs: engines' older versions as they are, a 1.x newer
    // than molt's with a warning (its new fields are optional).
    for (v, warned) in [("1.0.2-dev", false), ("1.1.0", false), (molt::spec::OCI_VERSION, false), ("1.9.0", true)] {
        let mut b = Bundle::new(&["true"]);
        b.config["ociVersion"] = json!(v);
        let root = Root::new();
        let out = root.molt(&["run", "--bundle", &b.write(), "version"]);
        assert!(out.status.success(), "{v}: {}", stderr_of(&out));
        let warnings = stderr_of(&out).lines().filter_map(logrus_text).filter(|(level, msg)| level == "warning" && msg.contains("ociVersion")).count();
        assert_eq!(warnings, usize::from(warned), "{v}: {}", stderr_of(&out));
    }
}

/// The controllers /proc/cgroups lists, and whether a hierarchy binds each (v1) or offers it (the
/// v2 hierarchy's cgroup.controllers).
fn controller_available(name: &str) -> bool {
    let v1 = std::fs::read_to_string("/proc/cgroups").unwrap_or_default().lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 4 && f[0] == name && f[1] != "0"
    });
    let v2 = ["/sys/fs/cgroup/cgroup.controllers", "/sys/fs/cgroup/unified/cgroup.controllers"]
        .iter()
        .any(|p| std::fs::read_to_string(p).unwrap_or_default().split_whitespace().any(|c| c == name));
    v1 || v2
}

#[test]
fn resources_of_a_controller_the_host_lacks_fail_as_with_runc() {
    require_root!();
    let cases = [
        ("rdma", json!({"rdma": {"mlx5_1": {"hcaHandles": 3}}}), "rdma"),
        ("net_cls", json!({"network": {"classID": 1048577}}), "network.classID"),
        ("net_prio", json!({"network": {"priorities": [{"name": "eth0", "priority": 5}]}}), "network.priorities"),
        ("hugetlb", json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}), "hugepageLimits"),
    ];
    let mut checked = 0;
    // Pure cgroup v2 has no net_cls or net_prio at all (eBPF's job there): runc ignores those
    // limits, molt too, with a warning that says so.
    let pure_v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    for (controller, resources, field) in cases {
        if controller_available(controller) {
            continue;
        }
        checked += 1;
        let mut b = Bundle::new(&["true"]);
        b.config["linux"]["resources"] = resources;
        if pure_v2 && (controller == "net_cls" || controller == "net_prio") {
            let root = Root::new();
            let id = format!("v2-{controller}");
            let out = root.molt(&["create", "--bundle", &b.write(), &id]);
            assert!(out.status.success(), "{controller} on pure v2: {}", stderr_of(&out));
            let warned = stderr_of(&out).lines().filter_map(logrus_text).any(|(level, m)| level == "warning" && m.contains(field) && m.contains("cgroup v2 has no"));
            assert!(warned, "{controller} on pure v2 ignored without a warning: {}", stderr_of(&out));
            root.ok(&["delete", "--force", &id]);
            continue;
        }
        refused(&b, &format!("no-{controller}"), &[field, &format!("needs the {controller} controller")]);
        // runc refuses them too ("cannot set ... limit: container could not join or create cgroup").
        if let Some(r) = RuncRoot::new() {
            let out = r.runc(&["run", "--bundle", &b.write(), "nocontroller"]);
            assert!(!out.status.success(), "runc ran with {field} and no {controller}");
        }
    }
    assert!(checked > 0, "every controller is present here: nothing was checked");
}

#[test]
fn bundle_without_rootfs() {
    require_root!();
    let mut b = Bundle::new(&["true"]);
    b.config["root"]["path"] = json!("rootfs");
    refused(&b, "norootfs", &["root.path", "rootfs", "No such file"]);
}

#[test]
fn invalid_unknown_and_duplicate_ids() {
    require_root!();
    let root = Root::new();
    let b = Bundle::new(&["sleep", "1000"]);
    let bundle = b.write();
    for bad in ["../x", "a/b", ".hidden", ""] {
        let out = root.molt(&["create", "--bundle", &bundle, bad]);
        assert!(!out.status.success());
        assert!(stderr_of(&out).contains("invalid container id"), "{bad:?}: {}", stderr_of(&out));
    }
    assert!(!root.path.parent().unwrap().join("x").exists());
    for cmd in [vec!["start", "ghost"], vec!["state", "ghost"], vec!["kill", "ghost"], vec!["delete", "ghost"], vec!["exec", "ghost", "true"], vec!["pause", "ghost"], vec!["ps", "ghost"]] {
        let out = root.molt(&cmd);
        assert!(!out.status.success(), "{cmd:?}");
        // One record in runc's text format (containerd and podman read the same shape).
        let err = stderr_of(&out);
        assert_eq!(err.lines().count(), 1, "{cmd:?}: {err}");
        assert_eq!(logrus_text(err.trim_end()), Some(("error".into(), "container ghost does not exist".into())), "{cmd:?}: {err}");
    }
    root.ok(&["create", "--bundle", &bundle, "dup"]);
    let pid = root.state("dup")["pid"].clone();
    let out = root.molt(&["create", "--bundle", &bundle, "dup"]);
    assert!(!out.status.success());
    assert_eq!(logrus_text(stderr_of(&out).trim_end()), Some(("error".into(), "container dup already exists".into())), "{}", stderr_of(&out));
    // The first one is untouched.
    assert_eq!(root.state("dup")["status"], "created");
    assert_eq!(root.state("dup")["pid"], pid);
}

#[test]
fn namespaces_the_config_or_kernel_refuses() {
    require_root!();
    let mut b = Bundle::new(&["true"]);
    b.add_namespace(json!({"type": "network", "path": "/proc/self/ns/net"}));
    refused(&b, "dupns", &["linux.namespaces", "listed twice"]);

    let mut b = Bundle::new(&["true"]);
    b.remove_namespace("network").add_namespace(json!({"type": "network", "path": "/nonexistent/ns"}));
    refused(&b, "missingns", &["network namespace path /nonexistent/ns", "No such file"]);

    // A namespace file of another kind: the kernel refuses setns.
    let mut b = Bundle::new(&["true"]);
    b.remove_namespace("network").add_namespace(json!({"type": "network", "path": "/proc/self/ns/uts"}));
    refused(&b, "wrongns", &["setns", "Invalid argument"]);

    // Overlapping uid map ranges: the kernel refuses the uid_map write.
    let mut b = Bundle::new(&["true"]);
    b.add_namespace(json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 10}, {"containerID": 5, "hostID": 200000, "size": 10}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 10}]);
    refused(&b, "badmap", &["uid_map", "Invalid argument"]);

    let mut b = Bundle::new(&["true"]);
    b.add_namespace(json!({"type": "user"}));
    refused(&b, "nomap", &["uidMappings"]);

    let mut b = Bundle::new(&["true"]);
    b.remove_namespace("uts");
    refused(&b, "nouts", &["hostname", "no uts namespace"]);
}

#[test]
fn mounts_the_kernel_refuses() {
    require_root!();
    // Existing directories of the image as targets, so the shared rootfs gains nothing.
    let mut b = Bundle::new(&["true"]);
    b.mount(json!({"destination": "/root", "type": "nosuchfs", "source": "none"}));
    refused(&b, "badfs", &["/root", "nosuchfs", "No such device"]);

    let mut b = Bundle::new(&["true"]);
    b.mount(json!({"destination": "/root", "type": "tmpfs", "source": "tmpfs", "options": ["size=lots"]}));
    refused(&b, "badopt", &["/root", "size=lots", "Invalid argument"]);

    let mut b = Bundle::new(&["true"]);
    b.mount(json!({"destination": "/root", "type": "bind", "source": "/nonexistent-src", "options": ["bind"]}));
    refused(&b, "badbind", &["/nonexistent-src", "No such file"]);

    let mut b = Bundle::new(&["true"]);
    b.mount(json!({"destination": "relative", "type": "tmpfs", "source": "tmpfs"}));
    refused(&b, "relmnt", &["relative", "absolute"]);
}

#[test]
fn executables_that_are_not_there() {
    require_root!();
    // The texts engines map to 127 and 126.
    refused(&Bundle::new(&["nosuchcmd"]), "nocmd", &["exec: \"nosuchcmd\": executable file not found in $PATH"]);
    refused(&Bundle::new(&["/bin/nosuch"]), "noabs", &["/bin/nosuch", "no such file or directory"]);
    refused(&Bundle::new(&["/etc/passwd"]), "noexec", &["/etc/passwd", "permission denied"]);
    let mut b = Bundle::new(&[]);
    b.config["process"]["args"] = json!([]);
    refused(&b, "noargs", &["process.args", "must not be empty"]);
    let mut b = Bundle::new(&["true"]);
    b.config["process"]["cwd"] = json!("relative");
    refused(&b, "relcwd", &["process.cwd", "absolute"]);
    // run reports the same, and the engines' exec path too.
    let root = Root::new();
    let out = root.molt(&["run", "--bundle", &Bundle::new(&["nosuchcmd"]).write(), "r"]);
    assert!(!out.status.success() && stderr_of(&out).contains("executable file not found in $PATH"));
}

#[test]
fn host_sysctls_are_refused() {
    require_root!();
    let before = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["sysctl"] = json!({"vm.swappiness": "1"});
    refused(&b, "hostsysctl", &["vm.swappiness", "change the host"]);
    assert_eq!(std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap(), before);
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    b.remove_namespace("network");
    refused(&b, "hostnet", &["net.ipv4.ip_forward", "needs a network namespace"]);
}

#[test]
fn a_missing_working_directory_is_created_as_runc_does() {
    require_root!();
    let copy = RootfsCopy::new();
    let mut b = Bundle::new(&["pwd"]);
    b.config["root"]["path"] = json!(copy.dir);
    b.config["process"]["cwd"] = json!("/work/here");
    let root = Root::new();
    let out = root.molt(&["run", "--bundle", &b.write(), "cwd"]);
    assert_eq!(stdout_of(&out), "/work/here\n", "{}", stderr_of(&out));
}

#[test]
fn listening_sockets_that_cannot_be_made_are_refused() {
    require_root!();
    let mut b = Bundle::new(&["true"]);
    b.config["annotations"] = json!({"io.molt.listen": "tcp:8080"});
    refused(&b, "listenparse", &["io.molt.listen", "tcp:8080", "ADDR:PORT"]);
    let mut b = Bundle::new(&["true"]);
    b.config["annotations"] = json!({"io.molt.listen": "tcp:0.0.0.0:8080,tcp:0.0.0.0:8080"});
    refused(&b, "listentwice", &["io.molt.listen", "listed twice"]);
    // The kernel refuses the bind: a unix path under a file.
    let mut b = Bundle::new(&["true"]);
    b.config["annotations"] = json!({"io.molt.listen": "unix:/bin/busybox/app.sock"});
    refused(&b, "listenbind", &["listening socket unix:/bin/busybox/app.sock", "bind"]);
}

#[test]
fn a_state_under_another_containers_name_is_refused() {
    require_root!();
    let b = Bundle::new(&["sleep", "1000"]);
    let root = Root::new();
    root.ok(&["create", "--bundle", &b.write(), "real"]);
    let fake = root.path.join("fake");
    std::fs::create_dir(&fake).unwrap();
    std::fs::copy(root.path.join("real/state.json"), fake.join("state.json")).unwrap();
    for cmd in ["state", "kill", "delete"] {
        let out = root.molt(&[cmd, "fake"]);
        let err = stderr_of(&out);
        assert!(!out.status.success(), "{cmd} fake succeeded");
        let msg = err.lines().find_map(logrus_text).map(|(_, m)| m).unwrap_or_else(|| panic!("{cmd}: no log record: {err}"));
        assert!(msg.contains("fake") && msg.contains("records container id \"real\""), "{cmd}: {msg}");
    }
    // The real one was not touched through the copy.
    assert_eq!(root.state("real")["status"], "created");
    std::fs::remove_dir_all(&fake).unwrap();
}

/// Durations from the command line: too large, negative or not a number is an error naming the
/// flag, never a panic (Duration::from_secs_f64 panics on them).
#[test]
fn out_of_range_durations_are_refused_without_a_panic() {
    let root = Root::new();
    let b = Bundle::new(&["true"]);
    let bundle = b.write();
    let huge = "99999999999999999999999";
    for (args, flag) in [
        (vec!["upgrade", "--bundle", &bundle, "--stop-timeout", huge, "x"], "--stop-timeout"),
        (vec!["upgrade", "--bundle", &bundle, "--stop-timeout", "1e300", "x"], "--stop-timeout"),
        (vec!["upgrade", "--bundle", &bundle, "--stop-timeout=-5s", "x"], "--stop-timeout"),
        (vec!["upgrade", "--bundle", &bundle, "--health-timeout", "NaN", "x"], "--health-timeout"),
        (vec!["upgrade", "--bundle", &bundle, "--health-timeout", &format!("{huge}m"), "x"], "--health-timeout"),
        (vec!["events", "--interval", &format!("{huge}h"), "x"], "--interval"),
        (vec!["events", "--interval", "1e300s", "x"], "--interval"),
    ] {
        let out = root.molt(&args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(flag) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn bad_runtime_spec_1_3_process_attributes_are_refused_naming_the_field() {
    require_root!();
    // runc 1.1.5 ignores all of these; the spec's value sets and ranges are checked at create.
    let cases: Vec<(&str, &str, serde_json::Value, &str)> = vec![
        ("process", "ioPriority", json!({"class": "IOPRIO_CLASS_FAST", "priority": 0}), "process.ioPriority.class"),
        ("process", "ioPriority", json!({"class": "IOPRIO_CLASS_BE", "priority": 8}), "process.ioPriority.priority"),
        ("process", "scheduler", json!({"policy": "SCHED_FAST"}), "process.scheduler.policy"),
        ("process", "scheduler", json!({"policy": "SCHED_RR", "priority": 100}), "process.scheduler.priority"),
        ("process", "scheduler", json!({"policy": "SCHED_OTHER", "nice": -21}), "process.scheduler.nice"),
        ("process", "execCPUAffinity", json!({"final": "0-"}), "process.execCPUAffinity.final"),
        ("process", "execCPUAffinity", json!({"initial": "one"}), "process.execCPUAffinity.initial"),
        ("linux", "personality", json!({"domain": "LINUX64"}), "linux.personality.domain"),
        ("linux", "memoryPolicy", json!({"mode": "MPOL_FAST", "nodes": "0"}), "linux.memoryPolicy.mode"),
        ("linux", "memoryPolicy", json!({"mode": "MPOL_BIND", "nodes": "0-x"}), "linux.memoryPolicy.nodes"),
    ];
    for (section, key, value, field) in cases {
        let mut b = Bundle::new(&["true"]);
        b.config[section][key] = value.clone();
        refused(&b, "badattr", &["config.json", field]);
    }
    // exec --process is checked the same way.
    let b = Bundle::new(&["sleep", "1000"]);
    let root = Root::new();
    root.ok(&["run", "-d", "--bundle", &b.write(), "attrexec"]);
    let mut p = b.config["process"].clone();
    p["scheduler"] = json!({"policy": "SCHED_FIFO"});
    let file = b.dir.join("process.json");
    std::fs::write(&file, p.to_string()).unwrap();
    let out = root.molt(&["exec", "--process", &file.display().to_string(), "attrexec"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("process.scheduler.priority: SCHED_FIFO needs a priority of 1..=99"), "{}", stderr_of(&out));
}

/// `linux.intelRdt` is refused, never silently ignored, as runc refuses it where the host has no
/// resctrl (this one has none: the test says which case it checked).
#[test]
fn intel_rdt_is_refused_not_ignored_as_by_runc() {
    require_root!();
    let mut b = Bundle::new(&["true"]);
    b.config["linux"]["intelRdt"] = json!({"closID": "molt-test", "l3CacheSchema": "L3:0=f"});
    let resctrl = std::path::Path::new("/sys/fs/resctrl/schemata").exists();
    let needle = if resctrl { "does not apply Intel RDT yet" } else { "not supported or enabled on this host" };
    refused(&b, "rdt", &["linux.intelRdt", needle]);
    let runc_root = format!("/run/{}", unique("runc-rdt"));
    let runc = std::process::Command::new("runc").args(["--root", &runc_root, "run", "--bundle", &b.write(), "rdt"]).output().expect("runc");
    let _ = std::fs::remove_dir_all(&runc_root);
    assert!(!runc.status.success(), "runc took intelRdt");
    assert!(String::from_utf8_lossy(&runc.stderr).contains("Intel RDT"), "{}", String::from_utf8_lossy(&runc.stderr));
}
