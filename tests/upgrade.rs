//! `molt upgrade` for real on this host: a loop-device volume, a veth set up from annotations in a
//! test "host" network namespace, the test application answering a client there. After the upgrade
//! the same IP answers with the new version and the old hostname, the MAC is the same, and every
//! acknowledged record is on the volume. Refusals, rollback and a crash at every step too.

mod common;
use common::*;

use common::app::*;

#[test]
fn upgrade_keeps_address_mac_hostname_and_every_acknowledged_record() {
    require_root!();
    scenario_upgrade_keeps_identity_and_records(&Setup::start("web"));
}

#[test]
fn refusals_name_the_rule_and_change_nothing() {
    require_root!();
    scenario_refusals(&Setup::start("ref"));
}

#[test]
fn failed_health_gate_rolls_back_to_the_old_version_with_the_same_identity() {
    require_root!();
    scenario_failed_health_rolls_back(&Setup::start("rb"));
}

#[test]
fn a_crash_at_any_step_is_finished_or_rolled_back_by_resume() {
    require_root!();
    scenario_crash_at_every_step(&Setup::start("cr"));
}

#[test]
fn network_keep_joins_the_old_namespace_and_exec_health_gate_passes() {
    require_root!();
    let s = Setup::start("keep");
    assert!(s.ask("APPEND one").starts_with("OK"));
    let mac = s.mac("keep");
    let b = s.bundle("1.2.0", "app-two", &[]);
    let dir = b.write();
    let gate = format!("exec:test -s {}", s.env[0].trim_start_matches("APP_DATA="));
    let out = s.upgrade(&["--bundle", &dir, "--network", "keep", "--health", &gate]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("kept the old network namespace") && text.contains("exited 0"), "{text}");
    assert!(s.answers());
    assert_eq!(s.version(), "version=1.2.0 hostname=app-one");
    assert_eq!(s.mac("keep"), mac);
    assert_eq!(s.ask("COUNT"), "1");
    assert_eq!(s.ids(), vec!["keep".to_string()]);
}

#[test]
fn no_rollback_leaves_the_failure_for_resume_to_undo() {
    require_root!();
    let s = Setup::start("nrb");
    let b = s.bundle("2.0.0", "app-two", &["APP_FAIL=1"]);
    let dir = b.write();
    let out = s.net.molt(&s.root, &["upgrade", "nrb", "--bundle", &dir, "--health", "tcp:8080", "--health-timeout", "2s", "--no-rollback"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("--no-rollback"), "{}", stderr_of(&out));
    assert!(s.root.path.join(".upgrade-nrb.json").exists(), "the journal is kept");
    let out = s.net.molt(&s.root, &["upgrade", "--resume", "nrb", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("rolled back"));
    assert!(s.answers());
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

#[test]
fn a_stop_signal_the_app_ignores_ends_in_sigkill_after_the_timeout() {
    require_root!();
    let s = Setup::start("sig");
    let b = s.bundle("1.0.1", "app-two", &[]);
    let dir = b.write();
    // The app is pid 1 of its namespace and has no SIGUSR1 handler: the signal does nothing.
    let out = s.upgrade(&["--bundle", &dir, "--stop-signal", "SIGUSR1", "--stop-timeout", "300ms"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("killed after 300ms timeout"), "{}", stdout_of(&out));
    assert!(s.answers());
    assert_eq!(s.version(), "version=1.0.1 hostname=app-one");
}

#[test]
fn a_crash_in_the_middle_of_a_rollback_is_rolled_back_again_by_resume() {
    require_root!();
    let s = Setup::start("crb");
    let mac = s.mac("crb");
    assert!(s.ask("APPEND kept").starts_with("OK"));
    let b = s.bundle("2.0.0", "app-two", &["APP_FAIL=1"]);
    let dir = b.write();
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net={}", s.net.path.display()))
        .arg(molt_bin())
        .args(["--root", s.root.path.to_str().unwrap(), "upgrade", "crb", "--bundle", &dir, "--health", "tcp:8080", "--health-timeout", "2s"])
        .env("MOLT_TEST_CRASH_AT", "rollback:moved");
    let out = run_to_files(&mut cmd);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "did not crash in the rollback: {}", stderr_of(&out));
    let out = s.net.molt(&s.root, &["upgrade", "--resume", "crb"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(s.answers());
    assert_eq!(s.version(), "version=1.0.0 hostname=app-one");
    assert_eq!(s.mac("crb"), mac, "the links survived the interrupted rollback");
    assert_eq!(s.ask("COUNT"), "1");
    assert_eq!(s.ids(), vec!["crb".to_string()]);
}

#[test]
fn delete_force_clears_an_upgrade_that_cannot_be_settled() {
    require_root!();
    let s = Setup::start("gone");
    let b = s.bundle("2.0.0", "app-two", &[]);
    let dir = b.write();
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net={}", s.net.path.display()))
        .arg(molt_bin())
        .args(["--root", s.root.path.to_str().unwrap(), "upgrade", "gone", "--bundle", &dir])
        .env("MOLT_TEST_CRASH_AT", "move-network:after");
    let out = run_to_files(&mut cmd);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9));
    // The operator removed the old bundle: a rollback cannot re-create the old version.
    std::fs::remove_file(s.v1.dir.join("config.json")).unwrap();
    let out = s.net.molt(&s.root, &["upgrade", "--resume", "gone"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("re-create the old version"), "{}", stderr_of(&out));
    let out = s.net.molt(&s.root, &["state", "gone"]);
    assert!(!out.status.success(), "an unsettled upgrade is reported, not hidden");
    let out = s.net.molt(&s.root, &["delete", "--force", "gone"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(s.ids().is_empty(), "{:?}", s.ids());
    assert_eq!(s.root.ok(&["volume", "list", "--format", "json"]).trim(), "[]");
    let pins = std::fs::read_dir(s.root.path.join(".pins")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(pins, 0, "no namespace stays pinned");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!info.contains(s.root.path.to_str().unwrap()), "no mount under the root is left");
    assert!(!s.root.path.join(".upgrade-gone.json").exists());
}
