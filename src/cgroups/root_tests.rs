//! Tests against the real kernel: they create cgroups named molt-test-<pid>-*, drive them with a
//! sleeping child, and remove them again. Without root or mounted cgroups they fail with the
//! reason, as the integration tests' `require_root!` does: never a silent pass.

use std::path::Path;
use std::process::{Child, Command};

use oci_spec::runtime::LinuxResources;

use super::*;

fn require_root_and_cgroups() {
    assert!(nix::unistd::geteuid().is_root(), "needs root (it makes real cgroups); run as root");
    if let Err(e) = detect_layout() {
        panic!("needs mounted cgroups: {e}");
    }
}

fn name(tag: &str) -> String {
    format!("molt-test-{}-{tag}", std::process::id())
}

/// Kills the child and destroys the cgroup even when an assertion fails halfway.
struct Guard {
    cg: Cgroup,
    child: Option<Child>,
}

impl Guard {
    fn new(cg: Cgroup) -> Guard {
        Guard { cg, child: None }
    }

    fn spawn(&mut self) -> i32 {
        let child = Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        self.child = Some(child);
        pid
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = self.cg.thaw();
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cg.destroy();
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

fn proc_state(pid: i32) -> String {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or_default()
        .to_string()
}

fn assert_gone(cg: &Cgroup) {
    for h in cg.hierarchies() {
        assert!(!h.dir.exists(), "{} left behind", h.dir.display());
        for a in &h.owned_ancestors {
            assert!(!a.exists(), "{} left behind", a.display());
        }
    }
}

/// The whole lifecycle on the host's own layout (hybrid here: v1 controllers + unified).
#[test]
fn lifecycle_on_host_layout() {
    require_root_and_cgroups();
    let cg = Cgroup::resolve(Some(&format!("/{}", name("life"))), "x", false).expect("resolve");
    let mut g = Guard::new(cg.clone());
    cg.create().expect("create");
    for h in cg.hierarchies() {
        assert!(h.dir.is_dir(), "{} missing", h.dir.display());
    }
    let r: LinuxResources = serde_json::from_str(
        r#"{"pids": {"limit": 50},
            "memory": {"limit": 67108864, "swap": 134217728, "reservation": 33554432},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
            "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]}"#,
    )
    .expect("json");
    cg.apply(&r).expect("apply");
    let file = |ctrl: &str, f: &str| read(&cg.dir_for(ctrl).expect(ctrl).join(f));
    assert_eq!(file("pids", "pids.max"), "50");
    match cg.route("memory").map(|h| h.version) {
        Some(Version::V1) => {
            assert_eq!(file("memory", "memory.limit_in_bytes"), "67108864");
            assert_eq!(file("memory", "memory.memsw.limit_in_bytes"), "134217728");
            assert_eq!(file("cpu", "cpu.shares"), "512");
            assert_eq!(file("cpu", "cpu.cfs_quota_us"), "50000");
            assert_eq!(file("devices", "devices.list"), "c 1:3 rwm");
        }
        _ => {
            assert_eq!(file("memory", "memory.max"), "67108864");
            assert_eq!(file("memory", "memory.swap.max"), "67108864");
            assert_eq!(file("cpu", "cpu.weight"), "20");
            assert_eq!(file("cpu", "cpu.max"), "50000 100000");
        }
    }
    assert_eq!(file("cpuset", "cpuset.cpus"), "0");
    // Lowering memory below the current memsw, then raising both: exercises the EINVAL reordering.
    let raise: LinuxResources =
        serde_json::from_str(r#"{"memory": {"limit": 268435456, "swap": 536870912}}"#)
            .expect("json");
    cg.apply(&raise).expect("raise memory above old memsw");
    if cg.route("memory").map(|h| h.version) == Some(Version::V1) {
        assert_eq!(file("memory", "memory.limit_in_bytes"), "268435456");
    }

    let pid = g.spawn();
    cg.add_process(pid).expect("add_process");
    assert_eq!(cg.pids().expect("pids"), vec![pid]);
    assert_eq!(file("pids", "pids.current"), "1");

    cg.freeze().expect("freeze");
    assert!(cg.is_frozen().expect("is_frozen"));
    eprintln!("frozen child: {}", proc_state(pid));
    cg.thaw().expect("thaw");
    assert!(!cg.is_frozen().expect("is_frozen"));

    let stats = cg.stats().expect("stats");
    assert_eq!(stats["pids"]["current"], 1, "{stats}");
    assert_eq!(stats["pids"]["limit"], 50, "{stats}");
    assert!(
        stats["memory"]["usage"]["limit"].as_u64().is_some(),
        "{stats}"
    );
    assert!(stats["cpu"]["usage"]["total"].as_u64().is_some(), "{stats}");

    cg.signal_all(libc::SIGKILL).expect("signal_all");
    let status = g.child.as_mut().expect("child").wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    g.child = None;
    assert!(cg.pids().expect("pids").is_empty());
    assert!(
        !cg.is_frozen().expect("is_frozen"),
        "signal_all must leave it thawed"
    );

    cg.destroy().expect("destroy");
    assert_gone(&cg);
    cg.destroy().expect("destroy is idempotent");
}

/// The v2 code path on this host's unified hierarchy alone (it offers no v1-bound controllers,
/// so this covers core files: procs, freeze, kill, unified keys, and the pure-v2 layout).
#[test]
fn v2_only_on_the_unified_hierarchy() {
    require_root_and_cgroups();
    let v2: Vec<Mount> = read_mounts()
        .expect("mounts")
        .into_iter()
        .filter(|m| m.version == Version::V2)
        .collect();
    assert!(!v2.is_empty(), "needs a cgroup2 mount (this host has cgroup v1 only)");
    let own = mountinfo::read_own().expect("own");
    let cg = Cgroup::resolve_on(
        &v2,
        &own,
        Some(&format!("/{}/inner", name("v2"))),
        "x",
        false,
    )
    .expect("resolve");
    assert_eq!(cg.layout(), Layout::V2);
    let mut g = Guard::new(cg.clone());
    cg.create().expect("create");
    let dir = cg.dir_for("cgroup").expect("v2 dir").to_path_buf();

    let r: LinuxResources = serde_json::from_str(
        r#"{"unified": {"cgroup.max.descendants": "3"},
        "devices": [{"allow": false, "access": "rwm"}]}"#,
    )
    .expect("json");
    cg.apply(&r)
        .expect("apply unified (device rules are skipped on v2)");
    assert_eq!(read(&dir.join("cgroup.max.descendants")), "3");
    let memory: LinuxResources =
        serde_json::from_str(r#"{"memory": {"limit": 1048576}}"#).expect("json");
    if !cg.hierarchies()[0]
        .controllers
        .iter()
        .any(|c| c == "memory")
    {
        let e = cg
            .apply(&memory)
            .expect_err("no memory controller in this v2 tree");
        assert!(e.to_string().contains("memory controller"), "{e}");
    }

    let pid = g.spawn();
    cg.add_process(pid).expect("add_process");
    assert_eq!(cg.pids().expect("pids"), vec![pid]);
    cg.freeze().expect("freeze");
    assert!(cg.is_frozen().expect("is_frozen"));
    assert!(read(&dir.join("cgroup.events")).contains("frozen 1"));
    eprintln!("v2-frozen child: {}", proc_state(pid));
    cg.thaw().expect("thaw");
    assert!(!cg.is_frozen().expect("is_frozen"));

    // SIGTERM goes the freeze/list/kill/thaw way; SIGKILL would use cgroup.kill.
    cg.signal_all(libc::SIGTERM).expect("signal_all TERM");
    use std::os::unix::process::ExitStatusExt;
    let status = g.child.as_mut().expect("child").wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    let pid = g.spawn();
    cg.add_process(pid).expect("add_process");
    cg.signal_all(libc::SIGKILL)
        .expect("signal_all KILL via cgroup.kill");
    let status = g.child.as_mut().expect("child").wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    g.child = None;

    cg.destroy().expect("destroy");
    assert_gone(&cg);
}

/// Default path (/molt/<id>) and systemd naming: the parents they create go away with them.
#[test]
fn default_and_systemd_parents_are_cleaned_up() {
    require_root_and_cgroups();
    for (path, systemd) in [
        (None, false),
        (
            Some(format!(
                "{}.slice:molt-test:c",
                name("sd").replace('-', "_")
            )),
            true,
        ),
    ] {
        let cg = Cgroup::resolve(path.as_deref(), &name("default"), systemd).expect("resolve");
        let _g = Guard::new(cg.clone());
        cg.create().expect("create");
        assert!(
            cg.hierarchies()
                .iter()
                .all(|h| !h.owned_ancestors.is_empty()),
            "resolve should own the parents it found missing"
        );
        cg.destroy().expect("destroy");
        for h in cg.hierarchies() {
            assert!(!h.dir.exists(), "{} left behind", h.dir.display());
            // The default parent may legitimately survive if another molt container uses it.
            for a in &h.owned_ancestors {
                let busy = a
                    .read_dir()
                    .map(|mut d| d.any(|e| e.map(|e| e.path().is_dir()).unwrap_or(false)))
                    .unwrap_or(false);
                assert!(!a.exists() || busy, "{} left behind", a.display());
            }
        }
    }
}

/// Every limit file docker's zeros could touch, as (controller, file), both versions; those the
/// host lacks are left out of the snapshot.
const WATCHED: &[(&str, &str)] = &[
    ("memory", "memory.limit_in_bytes"),
    ("memory", "memory.memsw.limit_in_bytes"),
    ("memory", "memory.soft_limit_in_bytes"),
    ("memory", "memory.oom_control"),
    ("memory", "memory.max"),
    ("memory", "memory.swap.max"),
    ("memory", "memory.low"),
    ("cpu", "cpu.shares"),
    ("cpu", "cpu.cfs_quota_us"),
    ("cpu", "cpu.cfs_period_us"),
    ("cpu", "cpu.rt_period_us"),
    ("cpu", "cpu.rt_runtime_us"),
    ("cpu", "cpu.weight"),
    ("cpu", "cpu.max"),
    ("cpuset", "cpuset.cpus"),
    ("cpuset", "cpuset.mems"),
    ("pids", "pids.max"),
    ("blkio", "blkio.bfq.weight"),
    ("blkio", "blkio.weight"),
    ("io", "io.bfq.weight"),
    ("io", "io.weight"),
];

fn snapshot(cg: &Cgroup) -> Vec<(String, String)> {
    WATCHED
        .iter()
        .filter_map(|(ctrl, f)| {
            let p = cg.dir_for(ctrl)?.join(f);
            p.exists().then(|| (f.to_string(), read(&p)))
        })
        .collect()
}

/// docker's zero values (blockIO.weight 0, cpu quota/period/realtimePeriod 0, memory limit and
/// swap 0, ...) on real cgroups with a process inside: accepted, and not one file changes. Then
/// `docker update`'s whole structure with one value asked changes that value only.
#[test]
fn docker_zero_values_change_nothing() {
    require_root_and_cgroups();
    let cg = Cgroup::resolve(Some(&format!("/{}", name("zero"))), "x", false).expect("resolve");
    let mut g = Guard::new(cg.clone());
    cg.create().expect("create");
    let has = |c: &str| cg.dir_for(c).is_some();
    let mut limits = serde_json::json!({
        "memory": {"limit": 67108864, "reservation": 33554432},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
        "pids": {"limit": 50}
    });
    if has("blkio") || has("io") {
        limits["blockIO"] = serde_json::json!({"weight": 300});
    }
    cg.apply(&serde_json::from_value(limits).expect("json"))
        .expect("apply limits");
    let pid = g.spawn();
    cg.add_process(pid).expect("add_process");
    let before = snapshot(&cg);
    assert!(
        before.iter().any(|(f, v)| f == "pids.max" && v == "50"),
        "{before:?}"
    );
    assert!(before.len() >= 6, "too little to compare: {before:?}");

    let zeros: LinuxResources = serde_json::from_str(plan::DOCKER_ZEROS).expect("json");
    cg.apply(&zeros)
        .expect("docker's zeros are \"not set\", as in runc");
    assert_eq!(snapshot(&cg), before, "zeros changed a limit");

    let docker_update: LinuxResources = serde_json::from_str(
        r#"{"cpu": {"quota": 0, "period": 0, "shares": 0, "cpus": "", "mems": ""},
            "memory": {"limit": 0, "swap": 0, "reservation": 0},
            "blockIO": {"weight": 0}, "pids": {"limit": 60}}"#,
    )
    .expect("json");
    cg.update(&docker_update)
        .expect("update with quota and period 0");
    let want: Vec<(String, String)> = before
        .iter()
        .map(|(f, v)| {
            let v = if f == "pids.max" { "60" } else { v };
            (f.clone(), v.to_string())
        })
        .collect();
    assert_eq!(snapshot(&cg), want, "update changed more than pids.max");
    assert_eq!(cg.pids().expect("pids"), vec![pid], "the process survived");
}

/// The upgrade's move: a cgroup with a process in it becomes the cgroup beside it, on every
/// hierarchy of the host (renamed on v1, migrated on the unified v2), and leaves nothing behind.
#[test]
fn move_to_takes_the_process_along_and_leaves_nothing() {
    require_root_and_cgroups();
    let target = Cgroup::resolve(Some(&format!("/{}", name("move"))), "x", false).expect("resolve");
    let temp = target.beside(".next-1");
    let mut g = Guard::new(temp.clone());
    let mut gt = Guard::new(target.clone());
    temp.create().expect("create");
    let pid = g.spawn();
    temp.add_process(pid).expect("add");
    temp.move_to(&target, &LinuxResources::default()).expect("move");
    for h in temp.hierarchies() {
        assert!(!h.dir.exists(), "{} left behind", h.dir.display());
    }
    assert_eq!(target.pids().expect("pids"), vec![pid]);
    let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
    for line in own.lines().filter(|l| l.contains(&name("move"))) {
        assert!(line.ends_with(&format!("/{}", name("move"))), "{own}");
    }
    // Repeating it (a resumed upgrade) changes nothing.
    temp.move_to(&target, &LinuxResources::default()).expect("move again");
    gt.child = g.child.take();
    drop(gt);
    assert_gone(&target);
    assert_gone(&temp);
}
