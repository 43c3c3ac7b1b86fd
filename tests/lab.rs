//! The VM lab suite (scripts/vm-lab boots a kernel with an NFS client, an iSCSI initiator and pure
//! cgroup v2, and a storage host serving a real NFS export and iSCSI LUN). Volumes written in a
//! container are read back on the storage side; the upgrade keeps them attached across the swap.
//! Outside the lab every test says why it does not run: this host kernel has neither client.

mod common;
use common::app::*;
use common::*;

use std::path::PathBuf;

fn lab_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: the lab's guest-setup exports it"))
}

macro_rules! require_lab {
    () => {
        require_root!();
        if std::env::var("MOLT_LAB").as_deref() != Ok("1") {
            eprintln!(
                "SKIP {}: runs in the VM lab only (scripts/vm-lab); this host kernel has no NFS client and no iSCSI initiator",
                module_path!()
            );
            return;
        }
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

fn upgrade_keeps_volume(s: &Setup, id: &str) {
    assert_eq!(s.version(), "version=1.0.0 hostname=app-one");
    for i in 0..5 {
        assert!(s.net.client(move || request(&format!("APPEND lab-{i}"))).unwrap().starts_with("OK"));
    }
    let mac = s.mac(id);
    let b = app_bundle("2.0.0", "app-two", &s.net, &s.volume, &[]);
    let dir = b.write();
    let out = s.net.molt(&s.root, &["upgrade", id, "--bundle", &dir, "--health", "tcp:8080", "--health-timeout", "60s"]);
    assert!(out.status.success(), "{}\n{}", stderr_of(&out), stdout_of(&out));
    assert!(s.net.client(|| wait_until(30, || request("VERSION").is_ok())));
    assert_eq!(s.version(), "version=2.0.0 hostname=app-one");
    assert_eq!(s.mac(id), mac);
    assert_eq!(s.net.client(|| request("COUNT")).unwrap(), "5");
}

#[test]
fn upgrade_on_nfs_keeps_address_and_records() {
    require_lab!();
    let s = Setup::start_with("nfsapp", app1(), nfs_volume(), std::env::temp_dir().join(unique("lab")));
    // Each lab boot builds a fresh export, so the records file starts empty.
    upgrade_keeps_volume(&s, "nfsapp");
    let on_server = std::fs::read_to_string(PathBuf::from(lab_var("MOLT_LAB_NFS_EXPORT_DIR")).join("records.log")).unwrap();
    assert_eq!(on_server.lines().count(), 5, "the storage host holds every record");
}

#[test]
fn upgrade_on_iscsi_keeps_address_and_records() {
    require_lab!();
    let s = Setup::start_with("iscsiapp", guest_host(), iscsi_volume(), std::env::temp_dir().join(unique("lab")));
    upgrade_keeps_volume(&s, "iscsiapp");
}
