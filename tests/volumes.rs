//! Volumes through containers on this host (loop-device form): one attachment shared and counted
//! by its containers, read-only per container, detached with its last user, clear errors.

mod common;
use common::app::make_volume;
use common::*;

use std::path::Path;

fn loop_devices_for(img: &Path) -> usize {
    let out = std::process::Command::new("losetup").args(["-j"]).arg(img).output().unwrap();
    stdout_of(&out).lines().count()
}

fn with_volume(args: &[&str], img: &Path, opts: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    b.config["mounts"].as_array_mut().unwrap().push(serde_json::json!({
        "destination": "/data", "type": "ext4", "source": img, "options": opts
    }));
    b
}

#[test]
fn containers_share_one_attachment_until_the_last_one_goes() {
    require_root!();
    let root = Root::new();
    let dir = std::env::temp_dir().join(unique("molt-vols"));
    std::fs::create_dir_all(&dir).unwrap();
    let img = make_volume(&dir);
    let a = with_volume(&["sh", "-c", "echo from-a > /data/shared; sleep 1000"], &img, &["loop", "rw"]);
    let b = with_volume(&["sleep", "1000"], &img, &["loop", "ro"]);
    root.ok(&["run", "--detach", "--bundle", &a.write(), "va"]);
    root.ok(&["run", "--detach", "--bundle", &b.write(), "vb"]);
    assert_eq!(loop_devices_for(&img), 1, "one loop device for both containers");
    assert!(wait_until(30, || stdout_of(&root.molt(&["exec", "vb", "cat", "/data/shared"])) == "from-a\n"));
    // vb mounted it read-only: its writes fail, va's succeed.
    assert!(!root.molt(&["exec", "vb", "sh", "-c", "echo x > /data/from-b"]).status.success());
    assert!(root.molt(&["exec", "va", "sh", "-c", "echo y > /data/from-a2"]).status.success());

    let list: serde_json::Value = serde_json::from_str(&root.ok(&["volume", "list", "--format", "json"])).unwrap();
    let vols = list.as_array().unwrap();
    assert_eq!(vols.len(), 1);
    let mut users: Vec<String> = vols[0]["users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect();
    users.sort();
    assert_eq!(users, ["va", "vb"]);
    let key = vols[0]["key"].as_str().unwrap().to_string();
    let out = root.molt(&["volume", "detach", &key]);
    assert!(!out.status.success() && stderr_of(&out).contains("va"), "detach refused naming a user: {}", stderr_of(&out));

    root.ok(&["delete", "--force", "va"]);
    assert_eq!(loop_devices_for(&img), 1, "still attached for vb");
    root.ok(&["delete", "--force", "vb"]);
    assert_eq!(loop_devices_for(&img), 0, "detached with its last user");
    assert_eq!(root.ok(&["volume", "list", "--format", "json"]).trim(), "[]");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_volume_is_a_clear_error_and_leaves_nothing() {
    require_root!();
    let root = Root::new();
    let missing = Path::new("/nonexistent/molt/volume.img");
    let b = with_volume(&["true"], missing, &["loop"]);
    let out = root.molt(&["run", "--bundle", &b.write(), "bad1"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("/nonexistent/molt/volume.img"), "{}", stderr_of(&out));
    assert!(!root.path.join("bad1").exists());

    // An image without a filesystem, and no x-molt.mkfs: refused, no loop device left.
    let dir = std::env::temp_dir().join(unique("molt-vols"));
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join("empty.img");
    std::fs::File::create(&img).unwrap().set_len(16 << 20).unwrap();
    let b = with_volume(&["true"], &img, &["loop"]);
    let out = root.molt(&["run", "--bundle", &b.write(), "bad2"]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("x-molt.mkfs"), "{}", stderr_of(&out));
    assert_eq!(loop_devices_for(&img), 0);
    assert!(!root.path.join("bad2").exists());
    // With x-molt.mkfs it is formatted and used.
    let b = with_volume(&["sh", "-c", "echo ok > /data/f && cat /data/f"], &img, &["loop", "x-molt.mkfs"]);
    let out = root.molt(&["run", "--bundle", &b.write(), "good"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "ok\n");
    assert_eq!(loop_devices_for(&img), 0);
    let _ = std::fs::remove_dir_all(dir);
}
