//! `molt upgrade` for real on this host: a loop-device volume, a veth set up from annotations in a
//! test "host" network namespace, the test application answering a client there. After the upgrade
//! the same IP answers with the new version and the old hostname, the MAC is the same, and every
//! acknowledged record is on the volume. Refusals, rollback and a crash at every step too.

mod common;
use common::*;

use common::app::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn upgrade_keeps_address_mac_hostname_and_every_acknowledged_record() {
    require_root!();
    let s = Setup::start("web");
    assert_eq!(s.version(), "version=1.0.0 hostname=app-one");
    let mac_before = s.mac("web");
    let old_pid = s.root.state("web")["pid"].as_i64().unwrap();

    // A writer keeps appending through the upgrade; it remembers what was acknowledged.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let path = s.net.path.clone();
    let writer = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut acked = vec![];
        let mut i = 0;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            i += 1;
            if let Ok(r) = request(&format!("APPEND rec-{i}")) {
                if r.starts_with("OK") {
                    acked.push(format!("rec-{i}"));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(300));

    let v2 = app_bundle("2.0.0", "app-two", &s.net, &s.volume, &[]);
    let mut c2 = v2.config.clone();
    c2["annotations"]["io.molt.upgrade.from"] = serde_json::json!(">=1.0.0, <2.0.0");
    std::fs::write(v2.dir.join("config.json"), serde_json::to_vec(&c2).unwrap()).unwrap();
    let out = s.net.molt(&s.root, &["upgrade", "web", "--bundle", v2.dir.to_str().unwrap(), "--health", "tcp:8080", "--format", "json"]);
    assert!(out.status.success(), "upgrade: {}\n{}", stderr_of(&out), stdout_of(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout_of(&out)).expect("json report");
    assert_eq!(report["outcome"], "upgraded");
    let steps: Vec<&str> = report["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["create-new", "stop-old", "hand-over-volumes", "move-network", "transfer-id", "start-new", "health-gate", "commit"]);
    assert!(report["unavailable_ms"].as_u64().is_some());

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let acked = writer.join().unwrap();
    assert!(acked.len() > 10, "the writer got only {} acknowledgements", acked.len());

    assert_eq!(s.version(), "version=2.0.0 hostname=app-one", "same IP, new version, old hostname");
    assert_eq!(s.mac("web"), mac_before, "the MAC moved with the veth");
    let st = s.root.state("web");
    assert_eq!(st["status"], "running");
    assert_ne!(st["pid"].as_i64().unwrap(), old_pid);
    assert_eq!(s.ids(), vec!["web".to_string()], "no second container is left");

    let out = s.root.molt(&["exec", "web", "cat", "/data/records.log"]);
    let on_disk = stdout_of(&out);
    for rec in &acked {
        assert!(on_disk.lines().any(|l| l == rec), "acknowledged {rec} is missing from the volume");
    }
    let _ = &s.v1;
}

#[test]
fn refusals_name_the_rule_and_change_nothing() {
    require_root!();
    let s = Setup::start("ref");
    let pid = s.root.state("ref")["pid"].clone();
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("1.0.0", None, "not later"),
        ("0.9.0", None, "not later"),
        ("2.0.0", Some(">=1.2.0"), "does not satisfy"),
        ("two", None, "not a semantic version"),
        ("2.0.0", Some("~>1"), "not a semver requirement"),
    ];
    for (version, constraint, expect) in cases {
        let b = app_bundle(version, "x", &s.net, &s.volume, &[]);
        let mut c = b.config.clone();
        if let Some(req) = constraint {
            c["annotations"]["io.molt.upgrade.from"] = serde_json::json!(req);
        }
        std::fs::write(b.dir.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
        let out = s.net.molt(&s.root, &["upgrade", "ref", "--bundle", b.dir.to_str().unwrap()]);
        assert!(!out.status.success(), "{version} {constraint:?} must be refused");
        assert!(stderr_of(&out).contains(expect), "{version} {constraint:?}: {}", stderr_of(&out));
        assert_eq!(s.root.state("ref")["pid"], pid);
    }
    let b = app_bundle("1.1.0", "x", &s.net, &s.volume, &[]);
    let dir = b.write();
    let out = s.net.molt(&s.root, &["upgrade", "ref", "--bundle", &dir, "--dry-run"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("1.0.0 -> 1.1.0") && text.contains("hand-over-volumes"), "{text}");
    assert_eq!(s.root.state("ref")["pid"], pid);
    assert_eq!(s.version(), "version=1.0.0 hostname=app-one");
}

#[test]
fn failed_health_gate_rolls_back_to_the_old_version_with_the_same_identity() {
    require_root!();
    let s = Setup::start("rb");
    let mac = s.mac("rb");
    s.net.client(|| request("APPEND before")).unwrap();
    let b = app_bundle("2.0.0", "app-two", &s.net, &s.volume, &["APP_FAIL=1"]);
    let dir = b.write();
    let out = s.net.molt(&s.root, &["upgrade", "rb", "--bundle", &dir, "--health", "tcp:8080", "--health-timeout", "2s"]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("health-gate") || err.contains("start-new"), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    let ok = s.net.client(|| wait_until(10, || request("VERSION").is_ok()));
    assert!(ok);
    assert_eq!(s.version(), "version=1.0.0 hostname=app-one");
    assert_eq!(s.mac("rb"), mac);
    assert_eq!(s.net.client(|| request("COUNT")).unwrap(), "1");
    assert_eq!(s.ids(), vec!["rb".to_string()]);
}

#[test]
fn a_crash_at_any_step_is_finished_or_rolled_back_by_resume() {
    require_root!();
    let s = Setup::start("cr");
    s.net.client(|| request("APPEND kept")).unwrap();
    let v2 = app_bundle("2.0.0", "app-two", &s.net, &s.volume, &[]);
    let dir = v2.write();
    let steps = ["create-new", "stop-old", "hand-over-volumes", "move-network", "transfer-id", "start-new", "health-gate", "commit"];
    let mut expect_version = "1.0.0";
    for step in steps {
        for when in ["before", "after"] {
            if expect_version == "2.0.0" {
                break;
            }
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net={}", s.net.path.display()))
                .arg(molt_bin())
                .args(["--root", s.root.path.to_str().unwrap(), "upgrade", "cr", "--bundle", &dir])
                .env("MOLT_TEST_CRASH_AT", format!("{step}:{when}"));
            let out = run_to_files(&mut cmd);
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(out.status.signal(), Some(9), "{step}:{when} did not crash: {}", stderr_of(&out));
            // Settled by `upgrade --resume`, or by the next command that touches the container.
            let out = if when == "before" {
                s.net.molt(&s.root, &["upgrade", "--resume", "cr"])
            } else {
                s.net.molt(&s.root, &["state", "cr"])
            };
            assert!(out.status.success(), "resume after {step}:{when}: {}", stderr_of(&out));
            let outcome = stdout_of(&out) + &stderr_of(&out);
            let want = if step == "commit" { "committed" } else { "rolled back" };
            if when == "before" {
                assert!(outcome.contains(want), "{step}:{when}: {outcome}");
            }
            if step == "commit" {
                expect_version = "2.0.0";
            }
            assert_eq!(s.ids(), vec!["cr".to_string()], "after {step}:{when}");
            assert!(s.net.client(|| wait_until(10, || request("VERSION").is_ok())), "nothing answers after {step}:{when}");
            assert_eq!(s.version(), format!("version={expect_version} hostname=app-one"), "after {step}:{when}");
            assert_eq!(s.net.client(|| request("COUNT")).unwrap(), "1", "records after {step}:{when}");
            assert!(!s.root.path.join(".upgrade-cr.json").exists());
        }
    }
}

#[test]
fn network_keep_joins_the_old_namespace_and_exec_health_gate_passes() {
    require_root!();
    let s = Setup::start("keep");
    s.net.client(|| request("APPEND one")).unwrap();
    let mac = s.mac("keep");
    let b = app_bundle("1.2.0", "app-two", &s.net, &s.volume, &[]);
    let dir = b.write();
    let out = s.net.molt(&s.root, &["upgrade", "keep", "--bundle", &dir, "--network", "keep", "--health", "exec:test -s /data/records.log"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("kept the old network namespace") && text.contains("exited 0"), "{text}");
    assert!(s.net.client(|| wait_until(10, || request("VERSION").is_ok())));
    assert_eq!(s.version(), "version=1.2.0 hostname=app-one");
    assert_eq!(s.mac("keep"), mac);
    assert_eq!(s.net.client(|| request("COUNT")).unwrap(), "1");
    assert_eq!(s.ids(), vec!["keep".to_string()]);
}

#[test]
fn no_rollback_leaves_the_failure_for_resume_to_undo() {
    require_root!();
    let s = Setup::start("nrb");
    let b = app_bundle("2.0.0", "app-two", &s.net, &s.volume, &["APP_FAIL=1"]);
    let dir = b.write();
    let out = s.net.molt(&s.root, &["upgrade", "nrb", "--bundle", &dir, "--health", "running:300ms", "--no-rollback"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("--no-rollback"), "{}", stderr_of(&out));
    assert!(s.root.path.join(".upgrade-nrb.json").exists(), "the journal is kept");
    let out = s.net.molt(&s.root, &["upgrade", "--resume", "nrb", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("rolled back"));
    assert!(s.net.client(|| wait_until(10, || request("VERSION").is_ok())));
    assert_eq!(s.version(), "version=1.0.0 hostname=app-one");
    assert_eq!(s.ids(), vec!["nrb".to_string()]);
}

#[test]
fn net_devices_move_a_host_interface_in_with_its_address() {
    require_root!();
    let root = Root::new();
    let net = HostNet::new();
    net.ip(&["link", "add", "nd0", "type", "veth", "peer", "name", "nd0peer"]);
    net.ip(&["addr", "add", "10.90.0.2/24", "dev", "nd0"]);
    let mut b = Bundle::new(&["sh", "-c", "ip -o addr show dev eth1"]);
    b.config["linux"]["netDevices"] = serde_json::json!({"nd0": {"name": "eth1"}});
    let dir = b.write();
    let out = net.molt(&root, &["run", "--bundle", &dir, "nd"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("10.90.0.2/24"), "{}", stdout_of(&out));
}
