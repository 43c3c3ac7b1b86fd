//! The VM lab suite (scripts/vm-lab boots a kernel with an NFS client, an iSCSI initiator and pure
//! cgroup v2, and a storage host serving a real NFS export and iSCSI LUN). Volumes written in a
//! container are read back on the storage side; the upgrade keeps them attached across the swap.
//! Outside the lab every test is ignored, with the reason: this host kernel has neither client.
//! scripts/lab-suite runs them with --include-ignored.

mod common;
use common::app::*;
use common::bundle::{sleep_bundle, Lab};
use common::*;

use std::path::PathBuf;

fn lab_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: the lab's guest-setup exports it"))
}

macro_rules! require_lab {
    () => {
        require_root!();
        // Ignored by default; run with --include-ignored outside the lab, it fails rather than pass.
        assert_eq!(
            std::env::var("MOLT_LAB").as_deref(),
            Ok("1"),
            "runs in the VM lab only (scripts/lab-suite); this host kernel has no NFS client and no iSCSI initiator"
        );
    };
}

fn nfs_volume() -> serde_json::Value {
    let opts: Vec<String> = lab_var("MOLT_LAB_NFS_OPTIONS").split(',').map(String::from).collect();
    serde_json::json!({"destination": "/data", "type": "nfs", "source": lab_var("MOLT_LAB_NFS_SOURCE"), "options": opts})
}

fn iscsi_volume() -> serde_json::Value {
    serde_json::json!({"destination": "/data", "type": "ext4", "source": lab_var("MOLT_LAB_ISCSI_SOURCE"), "options": ["rw", "x-molt.mkfs"]})
}

/// The guest's own network namespace: iscsid only works there (kernel 6.1), so iSCSI users live there.
fn guest_host() -> HostNet {
    HostNet::existing("/proc/1/ns/net")
}

fn app1() -> HostNet {
    HostNet::existing(&lab_var("MOLT_LAB_APP_NETNS"))
}

fn no_molt_mounts_of(kind: &str) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    !info.lines().any(|l| l.contains("molt-test") && l.contains(kind))
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn nfs_volume_written_in_a_container_is_on_the_storage_host() {
    require_lab!();
    let root = Root::new();
    let net = app1();
    let name = unique("nfs-file");
    let mut b = Bundle::new(&["sh", "-c", &format!("echo written-over-nfs > /data/{name}")]);
    b.config["mounts"].as_array_mut().unwrap().push(nfs_volume());
    let dir = b.write();
    let out = net.molt(&root, &["run", "--bundle", &dir, "nfs1"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let on_server = PathBuf::from(lab_var("MOLT_LAB_NFS_EXPORT_DIR")).join(&name);
    assert_eq!(std::fs::read_to_string(&on_server).unwrap(), "written-over-nfs\n");
    let _ = std::fs::remove_file(on_server);
    assert!(no_molt_mounts_of("nfs"), "the NFS attachment is gone with its last user");
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn iscsi_volume_written_in_a_container_is_on_the_lun() {
    require_lab!();
    let root = Root::new();
    let name = unique("iscsi-file");
    let mut b = Bundle::new(&["sh", "-c", &format!("echo written-over-iscsi > /data/{name}")]);
    b.config["mounts"].as_array_mut().unwrap().push(iscsi_volume());
    let dir = b.write();
    let out = root.molt(&["run", "--bundle", &dir, "iscsi1"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    // The container is gone, so molt unmounted the LUN and logged out: the storage host reads it.
    let reader = PathBuf::from(lab_var("MOLT_LAB_SCRIPTS")).join("storage-read-iscsi");
    let read = std::process::Command::new(reader).arg(format!("/{name}")).output().unwrap();
    assert_eq!(stdout_of(&read), "written-over-iscsi\n", "{}", stderr_of(&read));
}

fn nfs_setup(id: &str) -> Setup {
    Setup::start_with(id, app1(), nfs_volume(), std::env::temp_dir().join(unique("lab")))
}

fn iscsi_setup(id: &str) -> Setup {
    Setup::start_with(id, guest_host(), iscsi_volume(), std::env::temp_dir().join(unique("lab")))
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn nfs_upgrade_keeps_identity_and_records() {
    require_lab!();
    let s = nfs_setup("nfsup");
    scenario_upgrade_keeps_identity_and_records(&s);
    // And the storage host holds them.
    let file = s.env[0].trim_start_matches("APP_DATA=/data/").to_string();
    let on_server = std::fs::read_to_string(PathBuf::from(lab_var("MOLT_LAB_NFS_EXPORT_DIR")).join(file)).unwrap();
    assert!(on_server.lines().count() > 5, "the storage host holds the records");
}

/// The new version as an OCI archive (issue 14), on pure cgroup v2 with the NFS volume: the
/// container keeps its volume, records and identity.
#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn nfs_upgrade_from_an_oci_archive_keeps_the_volume_and_identity() {
    require_lab!();
    use common::image::*;
    let s = nfs_setup("nfsimg");
    assert!(s.ask("APPEND from-v1").starts_with("OK"));
    let before = s.version();
    let mut l = Layout::new();
    let m = l.image(&app_config("1.1.0"), &[(LAYER_GZIP, rootfs_layer())]);
    l.add(m, Some("1.1.0"));
    let tmp = TempDir::new("molt-archive");
    let file = tmp.join("app.tar");
    l.archive(&file);
    let out = s.upgrade(&["--image", &format!("oci-archive:{}:1.1.0", file.display())]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(s.version(), before.replace("version=1.0.0", "version=1.1.0"), "the same hostname, the new version");
    assert_eq!(s.ask("COUNT"), "1", "the record written by 1.0.0 is on the NFS volume");
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn nfs_refusals() {
    require_lab!();
    scenario_refusals(&nfs_setup("nfsref"));
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn nfs_failed_health_rolls_back() {
    require_lab!();
    scenario_failed_health_rolls_back(&nfs_setup("nfsrb"));
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn nfs_crash_at_every_step() {
    require_lab!();
    scenario_crash_at_every_step(&nfs_setup("nfscr"));
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn iscsi_upgrade_keeps_identity_and_records() {
    require_lab!();
    scenario_upgrade_keeps_identity_and_records(&iscsi_setup("iscsiup"));
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn iscsi_refusals() {
    require_lab!();
    scenario_refusals(&iscsi_setup("iscsiref"));
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn iscsi_failed_health_rolls_back() {
    require_lab!();
    scenario_failed_health_rolls_back(&iscsi_setup("iscsirb"));
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn iscsi_crash_at_every_step() {
    require_lab!();
    scenario_crash_at_every_step(&iscsi_setup("iscsicr"));
}

/// A volume that cannot be attached: a clear error naming the volume and the step, and nothing
/// left behind (no state directory, no mount, no iSCSI session).
fn refused_volume(net: &HostNet, volume: serde_json::Value, expect: &[&str]) {
    let root = Root::new();
    let mut b = Bundle::new(&["true"]);
    b.config["mounts"].as_array_mut().unwrap().push(volume);
    let dir = b.write();
    let out = net.molt(&root, &["run", "--bundle", &dir, "bad"]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    for e in expect {
        assert!(err.contains(e), "error should name {e:?}: {err}");
    }
    assert!(!root.path.join("bad").exists(), "no state directory is left");
    let vols = root.ok(&["volume", "list", "--format", "json"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&vols).unwrap(), serde_json::json!([]), "{vols}");
    assert!(no_molt_mounts_of("nfs") && no_molt_mounts_of("ext4"));
    let sessions = std::process::Command::new("iscsiadm").args(["-m", "session"]).output().unwrap();
    assert!(!stdout_of(&sessions).contains("iqn"), "no iSCSI session is left: {}", stdout_of(&sessions));
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn nfs_wrong_export_is_a_clear_error_and_leaves_nothing() {
    require_lab!();
    let source = format!("{}:/no/such/export", lab_var("MOLT_LAB_STORAGE_IP"));
    let v = serde_json::json!({"destination": "/data", "type": "nfs", "source": source, "options": ["vers=3", "nolock"]});
    refused_volume(&app1(), v, &["/no/such/export"]);
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn iscsi_wrong_target_is_a_clear_error_and_leaves_nothing() {
    require_lab!();
    let source = format!("iscsi://{}/iqn.2026-11.lab.molt:nosuchtarget/1", lab_var("MOLT_LAB_ISCSI_PORTAL"));
    let v = serde_json::json!({"destination": "/data", "type": "ext4", "source": source, "options": ["rw"]});
    refused_volume(&guest_host(), v, &["nosuchtarget"]);
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn iscsi_filesystem_type_mismatch_is_a_clear_error_and_leaves_nothing() {
    require_lab!();
    // Make sure the LUN holds ext4, then declare it xfs: the mount step must fail.
    let root = Root::new();
    let mut b = Bundle::new(&["true"]);
    b.config["mounts"].as_array_mut().unwrap().push(iscsi_volume());
    let out = guest_host().molt(&root, &["run", "--bundle", &b.write(), "mkext4"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v = serde_json::json!({"destination": "/data", "type": "xfs", "source": lab_var("MOLT_LAB_ISCSI_SOURCE"), "options": ["rw"]});
    refused_volume(&guest_host(), v, &["xfs"]);
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn nfs_unreachable_server_times_out_cleanly() {
    require_lab!();
    // Nobody answers at .99 on the lab subnet: the mount must give up after x-molt.timeout.
    let v = serde_json::json!({"destination": "/data", "type": "nfs", "source": "10.77.0.99:/export", "options": ["vers=3", "nolock", "x-molt.timeout=5s"]});
    refused_volume(&app1(), v, &["10.77.0.99"]);
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn iscsi_unreachable_portal_times_out_cleanly() {
    require_lab!();
    let v = serde_json::json!({"destination": "/data", "type": "ext4", "source": "iscsi://10.77.0.99/iqn.2026-11.lab.molt:vol1/1", "options": ["x-molt.timeout=5s"]});
    refused_volume(&guest_host(), v, &["10.77.0.99"]);
}

#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn iscsi_absent_lun_is_a_clear_error_and_leaves_nothing() {
    require_lab!();
    let source = format!("iscsi://{}/{}/9", lab_var("MOLT_LAB_ISCSI_PORTAL"), lab_var("MOLT_LAB_ISCSI_IQN"));
    let v = serde_json::json!({"destination": "/data", "type": "ext4", "source": source, "options": ["x-molt.timeout=5s"]});
    refused_volume(&guest_host(), v, &["lun-9"]);
}

/// What the lab adds to tests/bundle.rs (whose bundles of eight containers run on the host): a
/// rollout over ssh whose containers' volumes are real NFS and iSCSI. As small as proves it: two
/// ssh hosts, one container each: db-1 on app1 on its own directory of the NFS export, db-2 on the
/// guest's own namespace (iscsid only logs in there) on the iSCSI LUN, reached over ssh at
/// 127.0.0.1; one rollout of both in one batch, and each reads back what its old version wrote.
#[test]
#[ignore = "VM lab only (scripts/lab-suite runs it): this host kernel has no NFS client and no iSCSI initiator"]
fn bundle_rollout_over_ssh_keeps_the_data_of_nfs_and_iscsi_volumes() {
    require_lab!();
    // Where the lab's time goes, on stderr (seen with --nocapture, or on a failure).
    let t0 = std::time::Instant::now();
    let phase = |what: &str| eprintln!("lab-bundle: {what} at {:.1} s", t0.elapsed().as_secs_f64());
    let hosts = vec![("h1".to_string(), app1(), lab_var("MOLT_LAB_APP_IP")), ("h2".to_string(), guest_host(), "127.0.0.1".to_string())];
    let mut lab = Lab::on(guest_host(), hosts);
    // ssh's handshake under emulation on a loaded machine took longer than the default 5 s
    // (a host "timed out" while the other connected, 2026-12-02).
    lab.connect_timeout = Some("60s");
    phase("two sshd listening");
    let sub = lab.id("db-1");
    let dir = PathBuf::from(lab_var("MOLT_LAB_NFS_EXPORT_DIR")).join(&sub);
    std::fs::create_dir_all(&dir).unwrap();
    let mut nfs = nfs_volume();
    nfs["source"] = serde_json::json!(format!("{}/{sub}", lab_var("MOLT_LAB_NFS_SOURCE")));
    // Each writes its id to /data/who in its 1.0.0 version (Lab::start_on).
    lab.start_on("db-1", "db", "h1", "1.0.0", nfs);
    phase("db-1 runs on NFS");
    lab.start_on("db-2", "db", "h2", "1.0.0", iscsi_volume());
    phase("db-2 runs on iSCSI");
    let manifest = lab.manifest(&["db"]).display().to_string();
    let db = sleep_bundle("1.1.0", &["sleep", "3600"]);
    let doc = serde_json::json!({"version": "1.1.0", "roles": {"db": {"bundle": db.dir}}, "order": ["db"], "batch_size": 2, "stop_signal": "SIGKILL"});
    let upgrade = lab.upgrade_doc("upgrade.json", doc).display().to_string();
    let out = lab.bundle(&["upgrade", &manifest, &upgrade, "--yes"]);
    let text = stdout_of(&out);
    println!("{text}");
    phase("rollout done");
    assert!(out.status.success(), "{text}\n{}\n{}", stderr_of(&out), lab.sshd_logs());
    for short in ["db-1", "db-2"] {
        assert_eq!(lab.version(short), "running 1.1.0", "{short}\n{text}");
        assert_eq!(lab.volume_of(short), lab.id(short), "{short}: the new version reads what the old one wrote\n{text}");
    }
    // Seen from the storage host, too: the export's directory holds db-1's file.
    assert_eq!(std::fs::read_to_string(dir.join("who")).unwrap_or_default().trim(), lab.id("db-1"));
    phase("checked");
    drop(lab);
    let _ = std::fs::remove_dir_all(dir);
    phase("cleaned up");
    assert!(no_molt_mounts_of("nfs"), "NFS attachments are gone with their containers");
}
