//! The volume registry for real, as root, with ext4 images on loop devices: sharing, counting,
//! hand-over, detach, flush, holders, repair, mkfs and failures that must leave nothing behind.
//! Each test owns a molt root under /run and a guard that removes every mount and loop device
//! under it even when an assertion fails. Without root the tests say so and pass.

use molt::volume::{from_mount, AttachmentState, Registry, Timeouts, VolumeError, VolumeSpec};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! need_root {
    () => {
        assert!(is_root(), "needs root (loop devices and mounts); run as root");
    };
}

/// A molt root for one test; Drop takes down whatever is left under it.
struct TestRoot {
    path: PathBuf,
}

impl TestRoot {
    fn new(name: &str) -> TestRoot {
        let path = PathBuf::from(format!("/run/molt-test-vol-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(path.join("images")).expect("create test root");
        TestRoot { path }
    }

    fn registry(&self) -> Registry {
        Registry::new(&self.path)
    }

    /// An image of `mb` MiB, formatted ext4 when `format`.
    fn image(&self, name: &str, mb: u64, format: bool) -> PathBuf {
        let p = self.path.join("images").join(name);
        let f = fs::File::create(&p).expect("create image");
        f.set_len(mb << 20).expect("size image");
        drop(f);
        if format {
            let st = Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&p)
                .status()
                .expect("run mkfs.ext4 (apt-get install e2fsprogs)");
            assert!(st.success(), "mkfs.ext4 {}", p.display());
        }
        p
    }

    /// Loop devices bound to files under this root.
    fn loops(&self) -> Vec<(u32, PathBuf)> {
        loops_under(&self.path)
    }

    fn mounts(&self) -> Vec<PathBuf> {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|m| m.starts_with(&self.path))
            .collect()
    }

    fn key_dirs(&self) -> Vec<String> {
        match fs::read_dir(self.path.join("volumes")) {
            Ok(d) => d
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Nothing attached, mounted or left in the registry.
    fn assert_clean(&self) {
        assert_eq!(self.mounts(), Vec::<PathBuf>::new(), "mounts left");
        assert_eq!(self.loops(), Vec::new(), "loop devices left");
        assert_eq!(self.key_dirs(), Vec::<String>::new(), "volume directories left");
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        let mut mounts = self.mounts();
        mounts.sort();
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        for (n, _) in self.loops() {
            let _ = Command::new("losetup").arg("-d").arg(format!("/dev/loop{n}")).status();
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn loops_under(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name.strip_prefix("loop").and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file")) {
            let b = PathBuf::from(b.trim_end());
            if b.starts_with(dir) {
                out.push((n, b));
            }
        }
    }
    out
}

/// A child process killed and reaped however the test ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mount(typ: &str, source: &Path, options: &[&str]) -> oci_spec::runtime::Mount {
    oci_spec::runtime::MountBuilder::default()
        .destination("/data")
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .expect("build mount")
}

fn image_spec(image: &Path, options: &[&str]) -> VolumeSpec {
    let mut o = vec!["loop"];
    o.extend_from_slice(options);
    from_mount(&mount("ext4", image, &o)).expect("parse").expect("a volume")
}

fn is_mount_point(p: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|l| l.split(' ').nth(4).map(Path::new) == Some(p))
}

#[test]
fn shared_attachment_is_counted_and_detached_by_the_last_user() {
    need_root!();
    let t = TestRoot::new("share");
    let img = t.image("a.img", 16, true);
    let spec = image_spec(&img, &["nosuid"]);
    let reg = t.registry();

    let staging = reg.acquire(&spec, "c1").expect("acquire c1");
    assert_eq!(staging, t.path.join("volumes").join(&spec.key).join("mnt"));
    assert!(is_mount_point(&staging));
    fs::write(staging.join("hello"), b"written through staging").expect("write");
    assert_eq!(t.loops().len(), 1);
    // Autoclear: a killed molt cannot leak the device once the mount is gone.
    let n = t.loops()[0].0;
    assert_eq!(fs::read_to_string(format!("/sys/block/loop{n}/loop/autoclear")).expect("sysfs").trim(), "1");

    let again = reg.acquire(&spec, "c2").expect("acquire c2");
    assert_eq!(again, staging);
    assert_eq!(t.loops().len(), 1, "the second user shares the loop device");
    reg.acquire(&spec, "c2").expect("acquire is idempotent per user");

    let list = reg.list().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].users, vec!["c1", "c2"]);
    assert_eq!(list[0].state, AttachmentState::Attached);
    assert_eq!(list[0].kind, "image");
    assert_eq!(list[0].device.as_deref(), Some(Path::new(&format!("/dev/loop{}", t.loops()[0].0))));

    reg.release(&spec.key, "c1").expect("release c1");
    assert!(is_mount_point(&staging), "one user left: still attached");
    assert_eq!(fs::read(staging.join("hello")).expect("read"), b"written through staging");

    reg.release(&spec.key, "c2").expect("release c2");
    assert!(!staging.exists(), "staging directory removed");
    t.assert_clean();
    reg.release(&spec.key, "c2").expect("a repeated release is not an error");

    // The data outlived the attachment.
    let staging = reg.acquire(&spec, "c3").expect("re-acquire");
    assert_eq!(fs::read(staging.join("hello")).expect("read"), b"written through staging");
    reg.release(&spec.key, "c3").expect("release c3");
    t.assert_clean();
}

#[test]
fn concurrent_acquires_share_one_loop_device() {
    need_root!();
    let t = TestRoot::new("race");
    let img = t.image("a.img", 16, true);
    let spec = image_spec(&img, &[]);
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (reg, spec) = (t.registry(), spec.clone());
            std::thread::spawn(move || reg.acquire(&spec, &format!("c{i}")).map(|_| ()))
        })
        .collect();
    for th in threads {
        th.join().expect("thread").expect("acquire");
    }
    assert_eq!(t.loops().len(), 1);
    let reg = t.registry();
    assert_eq!(reg.list().expect("list")[0].users.len(), 4);
    for i in 0..4 {
        reg.release(&spec.key, &format!("c{i}")).expect("release");
    }
    t.assert_clean();
}

#[test]
fn hand_over_keeps_mount_and_device() {
    need_root!();
    let t = TestRoot::new("handover");
    let img = t.image("a.img", 16, true);
    let spec = image_spec(&img, &[]);
    let reg = t.registry();
    let staging = reg.acquire(&spec, "old").expect("acquire");
    fs::write(staging.join("f"), b"v1 data").expect("write");
    let dev_before = fs::metadata(&staging).expect("stat").dev();
    let loops_before = t.loops();

    // The upgrade: the new container becomes a user, then takes the old one's place.
    let e = reg.hand_over(&spec.key, "nobody", "new").expect_err("not a user");
    assert!(matches!(e, VolumeError::NotUser { .. }), "{e}");
    assert!(e.to_string().contains("old"), "{e}");
    reg.hand_over(&spec.key, "old", "new").expect("hand over");
    let list = reg.list().expect("list");
    assert_eq!(list[0].users, vec!["new"]);
    assert_eq!(fs::metadata(&staging).expect("stat").dev(), dev_before);
    assert_eq!(t.loops(), loops_before, "same loop device");
    assert_eq!(fs::read(staging.join("f")).expect("read"), b"v1 data");

    let p = reg.add_user(&spec.key, "newer").expect("add user");
    assert_eq!(p, staging);
    reg.hand_over(&spec.key, "new", "newer").expect("hand over to an existing user");
    assert_eq!(reg.list().expect("list")[0].users, vec!["newer"]);
    let e = reg.add_user("image-missing-000000000000", "x").expect_err("no such volume");
    assert!(matches!(e, VolumeError::NotAttached { .. }), "{e}");

    reg.release(&spec.key, "newer").expect("release");
    t.assert_clean();
}

#[test]
fn detach_refuses_while_in_use() {
    need_root!();
    let t = TestRoot::new("detach");
    let img = t.image("a.img", 16, true);
    let spec = image_spec(&img, &[]);
    let reg = t.registry();
    reg.acquire(&spec, "c1").expect("acquire");
    let e = reg.detach(&spec.key).expect_err("in use");
    eprintln!("detach: {e}");
    assert!(matches!(e, VolumeError::InUse { .. }));
    assert!(e.to_string().contains("c1") && e.to_string().contains(&spec.key), "{e}");
    assert!(is_mount_point(&reg.staging_path(&spec.key)));
    reg.release(&spec.key, "c1").expect("release");
    let e = reg.detach(&spec.key).expect_err("gone");
    assert!(matches!(e, VolumeError::NotAttached { .. }), "{e}");
    t.assert_clean();
}

#[test]
fn flush_and_foreign_holders() {
    need_root!();
    let t = TestRoot::new("holders");
    let img = t.image("a.img", 16, true);
    let spec = image_spec(&img, &[]);
    let reg = t.registry();
    let staging = reg.acquire(&spec, "c1").expect("acquire");
    fs::write(staging.join("f"), b"data").expect("write");
    reg.flush(&spec.key).expect("flush");
    assert_eq!(reg.foreign_holders(&spec.key, &[]).expect("holders"), Vec::<i32>::new());

    let by_fd = Reaped(
        Command::new("sleep")
            .arg("30")
            .stdin(fs::File::open(staging.join("f")).expect("open"))
            .spawn()
            .expect("spawn sleep"),
    );
    let by_cwd = Reaped(
        Command::new("sleep")
            .arg("30")
            .current_dir(&staging)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep"),
    );
    let (a, b) = (by_fd.0.id() as i32, by_cwd.0.id() as i32);
    let found = reg.foreign_holders(&spec.key, &[]).expect("holders");
    assert!(found.contains(&a) && found.contains(&b), "{found:?} lacks {a} or {b}");
    assert_eq!(reg.foreign_holders(&spec.key, &[a, b]).expect("holders"), Vec::<i32>::new());

    // While held, the last release cannot unmount: the error names the volume, the user is
    // dropped, and a later detach finishes the job.
    let e = reg.release(&spec.key, "c1").expect_err("busy");
    assert!(e.to_string().contains(&spec.key) && e.to_string().contains("EBUSY"), "{e}");
    let list = reg.list().expect("list");
    assert!(list[0].users.is_empty(), "{list:?}");
    assert!(matches!(&list[0].state, AttachmentState::Stale(why) if why.contains("no users")), "{list:?}");
    drop(by_fd);
    drop(by_cwd);
    reg.detach(&spec.key).expect("detach once nothing holds it");
    t.assert_clean();
}

#[test]
fn repair_finds_a_vanished_mount_and_gone_containers() {
    need_root!();
    let t = TestRoot::new("repair");
    let img = t.image("a.img", 16, true);
    let spec = image_spec(&img, &[]);
    let reg = t.registry();
    let staging = reg.acquire(&spec, "c1").expect("acquire");
    reg.acquire(&spec, "c2").expect("acquire");
    // c2's container exists, c1's does not.
    fs::create_dir_all(t.path.join("c2")).expect("mkdir");
    fs::write(t.path.join("c2/state.json"), b"{}").expect("state");

    // Within the grace period a user without state.json may be a container being created.
    assert_eq!(reg.repair().expect("repair"), vec!["1 volume(s) checked: each attached and in use as recorded, nothing to repair".to_string()]);

    let quick = t.registry().with_timeouts(Timeouts { user_grace: Duration::ZERO, ..Timeouts::default() });
    let report = quick.repair().expect("repair");
    assert_eq!(report.len(), 2, "{report:?}");
    assert_eq!(report[1], "1 volume(s) checked");
    assert!(report[0].contains("c1") && report[0].contains(&spec.key), "{report:?}");
    assert_eq!(reg.list().expect("list")[0].users, vec!["c2"]);

    // The mount vanishes behind molt's back.
    nix::mount::umount(&staging).expect("umount by hand");
    let list = reg.list().expect("list");
    assert!(matches!(&list[0].state, AttachmentState::Stale(why) if why.contains("not mounted")), "{list:?}");
    let e = reg.acquire(&spec, "c3").expect_err("stale");
    assert!(e.to_string().contains("stale") && e.to_string().contains("repair"), "{e}");
    assert!(reg.hand_over(&spec.key, "c2", "c3").is_err());
    let report = quick.repair().expect("repair");
    assert!(report.iter().any(|r| r.contains("not mounted") && r.contains("c2")), "{report:?}");

    // Once c2's container is gone too, repair detaches what is left.
    fs::remove_dir_all(t.path.join("c2")).expect("rm");
    let report = quick.repair().expect("repair");
    assert!(report.iter().any(|r| r.contains("detached")), "{report:?}");
    t.assert_clean();
}

#[test]
fn an_interrupted_attach_is_undone() {
    need_root!();
    let t = TestRoot::new("interrupted");
    let img = t.image("a.img", 16, true);
    let spec = image_spec(&img, &[]);
    let reg = t.registry();
    // Make the record look like one a killed molt left between mount and its last write.
    let record = t.path.join("volumes").join(&spec.key).join("record.json");
    let fake = |reg: &Registry| {
        reg.acquire(&spec, "c1").expect("acquire");
        let text = fs::read_to_string(&record).expect("read record");
        assert!(text.contains("\"attached\""), "{text}");
        fs::write(&record, text.replace("\"attached\"", "\"attaching\"")).expect("write record");
        assert_eq!(reg.list().expect("list")[0].state, AttachmentState::Attaching);
    };
    fake(&reg);
    let report = reg.repair().expect("repair");
    assert!(report.iter().any(|r| r.contains("interrupted")), "{report:?}");
    t.assert_clean();

    // The next acquire does the same on its own, then attaches afresh.
    fake(&reg);
    reg.acquire(&spec, "c2").expect("acquire after an interrupted attach");
    assert_eq!(reg.list().expect("list")[0].users, vec!["c2"]);
    assert_eq!(t.loops().len(), 1);
    reg.release(&spec.key, "c2").expect("release");
    t.assert_clean();
}

#[test]
fn repair_removes_a_mount_without_record() {
    need_root!();
    let t = TestRoot::new("norecord");
    let img = t.image("a.img", 16, true);
    let spec = image_spec(&img, &[]);
    let reg = t.registry();
    reg.acquire(&spec, "c1").expect("acquire");
    fs::remove_file(t.path.join("volumes").join(&spec.key).join("record.json")).expect("lose the record");
    let list = reg.list().expect("list");
    assert!(matches!(&list[0].state, AttachmentState::Stale(why) if why.contains("without a record")), "{list:?}");
    let report = reg.repair().expect("repair");
    assert!(report.iter().any(|r| r.contains("unmounted")), "{report:?}");
    t.assert_clean();
}

#[test]
fn mkfs_only_when_asked_and_only_on_an_empty_device() {
    need_root!();
    let t = TestRoot::new("mkfs");
    let blank = t.image("blank.img", 16, false);
    let reg = t.registry();

    let spec = image_spec(&blank, &[]);
    let e = reg.acquire(&spec, "c1").expect_err("no filesystem, no mkfs");
    let msg = e.to_string();
    assert!(msg.contains(&spec.key) && msg.contains("mount") && msg.contains("x-molt.mkfs"), "{msg}");
    t.assert_clean();

    let spec = image_spec(&blank, &["x-molt.mkfs"]);
    let staging = reg.acquire(&spec, "c1").expect("acquire with mkfs");
    fs::write(staging.join("keep"), b"1").expect("write");
    reg.release(&spec.key, "c1").expect("release");
    t.assert_clean();
    // Asking again does not format again.
    let staging = reg.acquire(&spec, "c1").expect("acquire with mkfs again");
    assert_eq!(fs::read(staging.join("keep")).expect("data kept"), b"1");
    reg.release(&spec.key, "c1").expect("release");

    // A filesystem of another type is never formatted over.
    let spec = from_mount(&mount("xfs", &blank, &["loop", "x-molt.mkfs"])).expect("parse").expect("volume");
    let e = reg.acquire(&spec, "c1").expect_err("holds ext4");
    assert!(e.to_string().contains("already holds a filesystem of type ext4"), "{e}");
    t.assert_clean();
}

#[test]
fn wrong_fstype_leaves_no_loop_device() {
    need_root!();
    let t = TestRoot::new("fstype");
    let img = t.image("a.img", 16, true);
    let spec = from_mount(&mount("xfs", &img, &["loop"])).expect("parse").expect("volume");
    let e = t.registry().acquire(&spec, "c1").expect_err("mount as xfs fails");
    let msg = e.to_string();
    eprintln!("wrong fstype: {msg}");
    assert!(msg.contains(&spec.key) && msg.contains("as xfs") && msg.contains("blkid finds ext4"), "{msg}");
    t.assert_clean();

    // A second declaration of the same image with other attachment options is refused.
    let reg = t.registry();
    let spec = image_spec(&img, &[]);
    reg.acquire(&spec, "c1").expect("acquire");
    let other = image_spec(&img, &["data=journal"]);
    let e = reg.acquire(&other, "c2").expect_err("conflicting options");
    assert!(e.to_string().contains("already attached"), "{e}");
    reg.release(&spec.key, "c1").expect("release");
    t.assert_clean();
}

#[test]
fn read_only_is_per_bind_and_the_staging_mount_stays_writable() {
    need_root!();
    let t = TestRoot::new("ro");
    let img = t.image("a.img", 16, true);
    let reg = t.registry();
    let ro = image_spec(&img, &["ro"]);
    let rw = image_spec(&img, &["rw"]);
    assert_eq!(ro.key, rw.key);
    assert!(ro.read_only() && !rw.read_only());
    let staging = reg.acquire(&ro, "reader").expect("acquire ro");
    reg.acquire(&rw, "writer").expect("acquire rw");
    fs::write(staging.join("w"), b"x").expect("staging is writable");
    assert!(!reg.list().expect("list")[0].read_only);
    reg.release(&ro.key, "reader").expect("release");
    reg.release(&ro.key, "writer").expect("release");
    t.assert_clean();
}

#[test]
fn bad_sources_give_clear_errors_and_leave_nothing() {
    need_root!();
    let t = TestRoot::new("bad");
    let reg = t.registry();
    let e = from_mount(&mount("ext4", Path::new("iscsi://10.0.0.1:port/iqn.x:y/1"), &[])).expect_err("bad url");
    assert!(e.to_string().contains("port") && e.to_string().contains("/data"), "{e}");
    let e = from_mount(&mount("ext4", &t.path.join("missing.img"), &["loop"])).expect_err("missing");
    assert!(e.to_string().contains("missing.img"), "{e}");
    let e = from_mount(&mount("nfs", Path::new("server-export"), &[])).expect_err("no colon");
    assert!(e.to_string().contains("no ':'"), "{e}");

    // This host kernel has neither an NFS client nor an iSCSI initiator: clear errors, no hang.
    let nfs = from_mount(&mount("nfs", Path::new("192.0.2.1:/export"), &["vers=3"])).expect("parse").expect("volume");
    let no_nfs = !fs::read_to_string("/proc/filesystems").unwrap_or_default().contains("\tnfs\n");
    if no_nfs {
        let e = reg.acquire(&nfs, "c1").expect_err("no nfs client");
        eprintln!("nfs: {e}");
        assert!(e.to_string().contains("kernel has no NFS client") && e.to_string().contains(&nfs.key), "{e}");
    }
    let iscsi = from_mount(&mount("ext4", Path::new("iscsi://192.0.2.1/iqn.2024-01.lab:t/1"), &[]))
        .expect("parse")
        .expect("volume");
    if !Path::new("/sys/module/iscsi_tcp").exists() {
        let e = reg.acquire(&iscsi, "c1").expect_err("no initiator");
        assert!(e.to_string().contains("kernel has no iSCSI initiator"), "{e}");
    }
    t.assert_clean();
}
