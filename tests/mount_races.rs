//! Mount destinations raced by the host (the CVE-2021-30465 class) and linked proc/sys
//! destinations (CVE-2019-19921): whatever the rootfs turns into while `create` runs, nothing is
//! made or mounted outside it.

mod common;
use common::*;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// How many creates each race gets; the outcomes are counted, never timed. Against the code before
/// the fd-pinned targets (which resolved a path, then mkdir'd by path) these tests fail, but not
/// every run: the window is a few syscalls wide. Measured on 2026-12-02 (2 loaded cores): in two
/// runs of the three races, 5 of the 6 failed, each with a directory made in the outside one,
/// within 4 to 29 rounds (once by a create that succeeded).
const ROUNDS: usize = 30;

/// Upgrades against the swapping thread: each is a create, a stop, a hand-over (and a delete or a
/// rebuild), about a second here.
const UPGRADE_ROUNDS: usize = 12;

/// Then upgrades to a version that exits at once and fails its health gate: each rolls back,
/// rebuilding the old version and attaching the volume to it through the race.
const FAILING_ROUNDS: usize = 4;

/// A directory `<rootfs>/race/a` and, beside it, `<rootfs>/race/b`, a symlink to a host directory
/// outside the rootfs. A thread swaps the two names (renameat2 RENAME_EXCHANGE) in a loop, as the
/// runc PoC does, while molt creates containers whose mount destinations go through /race/a.
struct Race {
    // First: fields drop in order, and the swapping stops before the directories go.
    swapper: Swapper,
    copy: RootfsCopy,
    outside: TempDir,
}

/// A thread exchanging two names (renameat2 RENAME_EXCHANGE) in a loop until dropped.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Swapper {
    fn start(a: &Path, b: &Path) -> Swapper {
        let (stop, swaps) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (a, b) = (cpath(a), cpath(b));
        let (s, n) = (stop.clone(), swaps.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                exchange(&a, &b).expect("swap");
                n.fetch_add(1, Ordering::Relaxed);
            }
        });
        Swapper { stop, swaps, thread: Some(thread) }
    }

    fn swaps(&self) -> usize {
        self.swaps.load(Ordering::Relaxed)
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Race {
    fn new(owner: Option<u32>) -> Race {
        let copy = RootfsCopy::new();
        let outside = TempDir::new("molt-race-outside");
        let race = copy.dir.join("race");
        std::fs::create_dir_all(race.join("a")).unwrap();
        std::os::unix::fs::symlink(&*outside, race.join("b")).unwrap();
        if let Some(uid) = owner {
            // A user namespace's root may write only where its ids own the directory: give it the
            // race directory, /dev and the outside one, so that only the runtime's checks, not
            // permissions, keep it in.
            for p in [race.clone(), race.join("a"), copy.dir.join("dev"), outside.to_path_buf()] {
                std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
            }
        }
        let swapper = Swapper::start(&race.join("a"), &race.join("b"));
        Race { swapper, copy, outside }
    }

    /// Creates ROUNDS containers from `b` (its root pointed at the copy, ROUND in its config
    /// replaced by the round's name), checking each: the
    /// outside directory stays empty and unmounted, and a created container has a mount at a
    /// path ending in `mounted` in its own mount namespace (under /race/a or /race/b, or where
    /// the link points when read inside the rootfs: all of them inside it).
    fn run(&mut self, b: &mut Bundle, tag: &str, mounted: &str) {
        b.config["root"]["path"] = serde_json::json!(self.copy.dir);
        let bundle = b.write();
        let config = serde_json::to_string(&b.config).unwrap();
        let root = Root::new();
        let (mut created, mut refused) = (0, 0);
        let mut first_refusal = String::new();
        for round in 0..ROUNDS {
            // A new destination each round (ROUND in the config): its directories are made while
            // the race runs, as on a first create.
            std::fs::write(b.dir.join("config.json"), config.replace("ROUND", &format!("r{round}"))).unwrap();
            let id = unique(tag);
            let out = root.molt(&["create", "--bundle", &bundle, &id]);
            let leaked: Vec<PathBuf> = std::fs::read_dir(&*self.outside).unwrap().flatten().map(|e| e.path()).collect();
            assert!(leaked.is_empty(), "round {round}: molt made {leaked:?} outside the rootfs ({})", stderr_of(&out));
            assert!(host_mounts_with(&self.outside.display().to_string()).is_empty(), "round {round}: a host mount on the outside directory");
            if out.status.success() {
                created += 1;
                let pid = root.state(&id)["pid"].as_i64().unwrap();
                let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
                let inside = info.lines().filter_map(|l| l.split(' ').nth(4)).any(|mp| mp.ends_with(mounted));
                assert!(inside, "round {round}: no mount at .../{mounted} in the container:\n{info}");
                root.ok(&["delete", "--force", &id]);
            } else {
                refused += 1;
                let err = stderr_of(&out);
                assert!(!err.contains("panicked"), "round {round}: {err}");
                if first_refusal.is_empty() {
                    first_refusal = err;
                }
                assert!(root.ok(&["list", "-q"]).trim().is_empty(), "round {round}: a refused create left {id}");
            }
        }
        assert!(host_mounts_with(&self.copy.dir.display().to_string()).is_empty(), "mounts of the rootfs left on the host");
        eprintln!("{tag}: {created} created, {refused} refused, {} swaps; first refusal: {first_refusal}", self.swapper.swaps());
        // A refusal is a clean outcome, but a mount that is never made proves nothing about
        // where it lands.
        assert!(created > 0, "{tag}: every create was refused; the first: {first_refusal}");
    }
}

fn exchange(a: &CString, b: &CString) -> std::io::Result<()> {
    // SAFETY: renameat2 with two NUL-terminated paths.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

#[test]
fn a_bind_mount_target_swapped_for_a_symlink_never_lands_outside() {
    require_root!();
    let mut race = Race::new(None);
    let src = TempDir::new("molt-race-src");
    let mut b = Bundle::new(&["sleep", "100"]);
    b.mount(serde_json::json!({"destination": "/race/a/ROUND/deep/target", "type": "bind", "source": &*src, "options": ["rbind", "ro"]}));
    race.run(&mut b, "race-bind", "/deep/target");
}

#[test]
fn a_tmpfs_target_swapped_for_a_symlink_never_lands_outside() {
    require_root!();
    let mut race = Race::new(None);
    let mut b = Bundle::new(&["sleep", "100"]);
    b.mount(serde_json::json!({"destination": "/race/a/ROUND/deep/target", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=700"]}));
    race.run(&mut b, "race-tmpfs", "/deep/target");
}

/// In a user namespace the device nodes are bind mounts of the host's node of the same path
/// (mknod is refused there); without a /dev tmpfs they are made in the image's /dev. The device
/// here is /dev/shm/ID/a/rN/deep/null: on the host a file, in the image /dev/shm/ID links to
/// the race directory.
#[test]
fn a_user_namespace_dev_bind_swapped_for_a_symlink_never_lands_outside() {
    require_root!();
    let mut race = Race::new(Some(100000));
    let name = unique("race-dev");
    let host = TempDir(PathBuf::from("/dev/shm").join(&name));
    for round in 0..ROUNDS {
        std::fs::create_dir_all(host.0.join(format!("a/r{round}/deep"))).unwrap();
        std::fs::write(host.0.join(format!("a/r{round}/deep/null")), "").unwrap();
    }
    let shm = race.copy.dir.join("dev/shm");
    std::fs::create_dir_all(&shm).unwrap();
    std::os::unix::fs::chown(&shm, Some(100000), Some(100000)).unwrap();
    std::os::unix::fs::symlink("/race", shm.join(&name)).unwrap();
    let mut b = Bundle::new(&["sleep", "100"]);
    b.add_namespace(serde_json::json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let mounts = b.config["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| !m["destination"].as_str().unwrap_or("").starts_with("/dev"));
    b.config["linux"]["devices"] = serde_json::json!([{"path": format!("/dev/shm/{name}/a/ROUND/deep/null"), "type": "c", "major": 1, "minor": 3}]);
    race.run(&mut b, "race-dev", "/deep/null");
}

/// A proc or sysfs mount never goes through a link in the image (runc's rule since
/// CVE-2019-19921): a rootfs whose /proc or /sys is a symlink is refused naming the link, and nothing
/// is left mounted or recorded.
#[test]
fn proc_and_sys_destinations_that_are_symlinks_are_refused() {
    require_root!();
    for (dir, to) in [("proc", "tmp"), ("sys", "/tmp")] {
        let copy = RootfsCopy::new();
        let path = copy.dir.join(dir);
        std::fs::remove_dir_all(&path).unwrap();
        std::os::unix::fs::symlink(to, &path).unwrap();
        let mut b = Bundle::new(&["true"]);
        b.config["root"]["path"] = serde_json::json!(copy.dir);
        let root = Root::new();
        let id = unique("linked");
        let out = root.molt(&["run", "--bundle", &b.write(), &id]);
        assert!(!out.status.success(), "/{dir} as a link to {to} was mounted through");
        let err = stderr_of(&out);
        assert!(err.contains(&format!("/{dir} is a symlink (to {to})")), "{err}");
        assert!(root.ok(&["list", "-q"]).trim().is_empty());
        assert!(host_mounts_with(&copy.dir.display().to_string()).is_empty(), "mounts left");
    }
}

/// /proc or /sys exchanged with a link to a host directory while `create` runs (a host thread
/// swapping the two names, as above): a create either mounts proc (sysfs) on the directory, or is
/// refused; never at the link's target, neither the host directory nor that path inside the
/// rootfs. Once the swapping stops and the directory is back at its name, every proc (sysfs)
/// mount of a created container is at /proc (/sys) or under it.
#[test]
fn proc_and_sys_swapped_for_a_symlink_during_create_are_never_mounted_through() {
    require_root!();
    for (dir, fstype) in [("proc", "proc"), ("sys", "sysfs")] {
        let copy = RootfsCopy::new();
        let outside = TempDir::new("molt-race-outside");
        let (real, link) = (copy.dir.join(dir), copy.dir.join(format!("{dir}-link")));
        std::os::unix::fs::symlink(&*outside, &link).unwrap();
        let mut b = Bundle::new(&["sleep", "100"]);
        b.config["root"]["path"] = serde_json::json!(copy.dir);
        let bundle = b.write();
        let root = Root::new();
        // The config's masked and read-only paths in this filesystem that this kernel has.
        let linux = &b.config["linux"];
        let protected: Vec<(String, bool)> = [("maskedPaths", false), ("readonlyPaths", true)]
            .iter()
            .flat_map(|(key, ro)| linux[key].as_array().unwrap().iter().map(move |p| (p.as_str().unwrap().to_string(), *ro)))
            .filter(|(p, _)| p.starts_with(&format!("/{dir}/")) && Path::new(p).exists())
            .collect();
        assert!(!protected.is_empty(), "/{dir}: no masked or read-only path of the config exists here");
        let (mut created, mut refused_at_link, mut swaps) = (0, 0, 0);
        let mut other_refusals = vec![];
        for round in 0..ROUNDS {
            let id = unique("race-linked");
            let swapper = Swapper::start(&real, &link);
            let out = root.molt(&["create", "--bundle", &bundle, &id]);
            swaps += swapper.swaps();
            drop(swapper);
            if std::fs::symlink_metadata(&real).unwrap().file_type().is_symlink() {
                exchange(&cpath(&real), &cpath(&link)).expect("swap back");
            }
            let leaked: Vec<PathBuf> = std::fs::read_dir(&*outside).unwrap().flatten().map(|e| e.path()).collect();
            assert!(leaked.is_empty(), "/{dir} round {round}: molt made {leaked:?} in the link's target ({})", stderr_of(&out));
            assert!(host_mounts_with(&outside.display().to_string()).is_empty(), "/{dir} round {round}: a host mount on the link's target");
            if out.status.success() {
                created += 1;
                let pid = root.state(&id)["pid"].as_i64().unwrap();
                let mounts = mounts_of(pid);
                let of_type: Vec<&Mounted> = mounts.iter().filter(|m| m.fstype == fstype).collect();
                let top = format!("/{dir}");
                let stray: Vec<_> = of_type.iter().filter(|m| m.point != top && !m.point.starts_with(&format!("{top}/"))).collect();
                assert!(stray.is_empty(), "/{dir} round {round}: {fstype} mounted elsewhere than {top}: {stray:?}");
                assert!(of_type.iter().any(|m| m.point == top), "/{dir} round {round}: no {fstype} at {top}: {mounts:?}");
                // What is masked or read-only in it stays so, wherever the directory was when
                // molt protected it (a path it went by could lead elsewhere, or nowhere).
                for (p, ro) in &protected {
                    let m = mounts.iter().rev().find(|m| m.point == *p);
                    assert!(m.is_some_and(|m| !ro || m.options.split(',').any(|o| o == "ro")), "/{dir} round {round}: {p} is not {}: {m:?}", if *ro { "read-only" } else { "masked" });
                }
                root.ok(&["delete", "--force", &id]);
            } else {
                let err = stderr_of(&out);
                assert!(!err.contains("panicked"), "/{dir} round {round}: {err}");
                if err.contains("symlink") {
                    refused_at_link += 1;
                } else {
                    other_refusals.push(err);
                }
                assert!(root.ok(&["list", "-q"]).trim().is_empty(), "/{dir} round {round}: a refused create left {id}");
            }
        }
        assert!(host_mounts_with(&copy.dir.display().to_string()).is_empty(), "/{dir}: mounts of the rootfs left on the host");
        eprintln!("/{dir}: {created} created, {refused_at_link} refused at the link, {} otherwise {:?}, {swaps} swaps", other_refusals.len(), other_refusals.first());
        // Both outcomes must have happened, or the race proved nothing: a mount made while the
        // link was swapped in and out, and the link seen and refused.
        assert!(created > 0, "/{dir}: every create was refused: {other_refusals:?}");
        assert!(refused_at_link > 0, "/{dir}: no create saw the link ({swaps} swaps)");
    }
}

/// A mount as /proc/PID/mountinfo shows it.
#[derive(Debug)]
struct Mounted {
    point: String,
    options: String,
    fstype: String,
}

/// Every mount in the mount namespace of `pid`, as it sees them, in mountinfo's order (the last
/// of a point is the one on top).
fn mounts_of(pid: i64) -> Vec<Mounted> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    info.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            Some(Mounted { point: fields.get(4)?.to_string(), options: fields.get(5)?.to_string(), fstype: fstype.to_string() })
        })
        .collect()
}

/// `molt upgrade` attaches the volume inside the new version's mount namespace
/// (src/upgrade/handover.rs), walking the destination from the container's root through fds.
/// Here each new version declares the volume at /race/a/rN/data while a host thread swaps
/// /race/a with a link to a host directory, for the whole of each upgrade: create-new (which makes
/// the target), the hand-over, and when it fails the rollback, which rebuilds the old version and
/// attaches the volume to it through the same race (the last rounds fail their gate on purpose).
/// Nothing may be made or mounted in the host directory, and every upgrade ends with one running
/// container that has the volume at its destination (the version it upgraded to, or the one it
/// rolled back to, by `--resume` when the rollback itself met the race). The root is writable: a
/// target made at one place and walked to at another is then made again, and most upgrades
/// complete under the race.
#[test]
fn an_upgrades_volume_attach_raced_with_a_symlink_never_lands_outside() {
    require_root!();
    let race = Race::new(None);
    let img_dir = TempDir::new("molt-race-vol");
    let volume = common::app::loop_volume(&common::app::make_volume(&img_dir));
    let root = Root::new();
    let id = unique("race-upg");
    let version = |v: &str, dest: &str, args: &[&str]| {
        let mut b = Bundle::new(args);
        b.config["root"] = serde_json::json!({"path": race.copy.dir, "readonly": false});
        b.config["annotations"] = serde_json::json!({"org.opencontainers.image.version": v});
        let mut m = volume.clone();
        m["destination"] = serde_json::json!(dest);
        b.mount(m);
        b
    };
    // Every version's bundle stays: a rollback rebuilds the old version from its own.
    let mut bundles = vec![version("1.0.0", "/data", &["sleep", "1000"])];
    root.ok(&["run", "--detach", "--bundle", &bundles[0].write(), &id]);
    let mut at = "/data".to_string();
    let (mut upgraded, mut rolled_back) = (0, 0);
    let mut first_failure = String::new();
    for round in 0..UPGRADE_ROUNDS + FAILING_ROUNDS {
        let dest = format!("/race/a/r{round}/data");
        let failing = round >= UPGRADE_ROUNDS;
        let args: &[&str] = if failing { &["sh", "-c", "exit 3"] } else { &["sleep", "1000"] };
        bundles.push(version(&format!("1.0.{}", round + 1), &dest, args));
        let dir = bundles.last().unwrap().write();
        let out = root.molt(&["upgrade", &id, "--bundle", &dir, "--stop-signal", "SIGKILL", "--health", "running:500ms"]);
        let err = stderr_of(&out);
        let leaked: Vec<PathBuf> = std::fs::read_dir(&*race.outside).unwrap().flatten().map(|e| e.path()).collect();
        assert!(leaked.is_empty(), "round {round}: molt made {leaked:?} outside the rootfs ({err})");
        assert!(host_mounts_with(&race.outside.display().to_string()).is_empty(), "round {round}: a host mount on the outside directory");
        assert!(!err.contains("panicked"), "round {round}: {err}");
        assert!(!(failing && out.status.success()), "round {round}: a version that exits at once passed its gate: {err}");
        if out.status.success() {
            upgraded += 1;
            at = format!("/r{round}/data");
        } else {
            // A rollback that meets the race too (its target made at one place, walked to at
            // another) says so and keeps the journal: `--resume` then retries it.
            let mut settled = err.contains("rolled back") && !err.contains("ROLLBACK FAILED");
            for _ in 0..5 {
                if settled {
                    break;
                }
                settled = root.molt(&["upgrade", "--resume", &id]).status.success();
            }
            assert!(settled, "round {round}: neither rolled back nor settled by --resume: {err}");
            rolled_back += 1;
            if first_failure.is_empty() {
                first_failure = err.clone();
            }
        }
        // Where the volume is now: under /race/a or /race/b (the directory holding it moves with
        // the swaps) or where the link led when read inside the rootfs; in every case a path
        // inside the container ending as the destination does, with the volume's filesystem.
        let state = root.state(&id);
        assert_eq!(state["status"], "running", "round {round}: {err}");
        let mounts = mounts_of(state["pid"].as_i64().unwrap());
        assert!(mounts.iter().any(|m| m.point.ends_with(&at) && m.fstype == "ext4"), "round {round}: no volume at .../{at} in the container: {mounts:?}\n{err}");
        assert_eq!(root.ok(&["list", "-q"]).split_whitespace().collect::<Vec<_>>(), vec![id.as_str()], "round {round}: one container under the id");
    }
    root.ok(&["delete", "--force", &id]);
    assert!(host_mounts_with(&race.copy.dir.display().to_string()).is_empty(), "mounts of the rootfs left on the host");
    eprintln!("upgrade: {upgraded} upgraded, {rolled_back} rolled back, {} swaps; first failure: {first_failure}", race.swapper.swaps());
    assert!(upgraded > 0, "every upgrade failed; the first: {first_failure}");
    assert!(rolled_back >= FAILING_ROUNDS, "{rolled_back} rollbacks");
}

/// `process.terminal`: /dev/console is bound to the pty as any other mount target, through fds
/// from the rootfs. An image without a /dev tmpfs whose /dev/console is a symlink to a host path
/// gets the pty at that path inside the rootfs; before, molt created the host file (File::create
/// followed the link) and bound the pty over it. With and without a user namespace.
#[test]
fn a_console_linked_to_a_host_path_stays_inside_the_rootfs() {
    require_root!();
    for userns in [false, true] {
        console_linked_to_a_host_path(userns);
    }
}

fn console_linked_to_a_host_path(userns: bool) {
    let copy = RootfsCopy::new();
    let outside = TempDir::new("molt-console-outside");
    let host_console = outside.join("console");
    std::os::unix::fs::symlink(&host_console, copy.dir.join("dev/console")).unwrap();
    let mut b = Bundle::new(&["sh", "-c", "echo through-console > /dev/console; tty"]);
    b.config["root"]["path"] = serde_json::json!(copy.dir);
    b.config["process"]["terminal"] = serde_json::json!(true);
    b.config["mounts"].as_array_mut().unwrap().retain(|m| m["destination"] != "/dev");
    if userns {
        // The container's root may make /dev/pts only in a /dev its ids own.
        std::os::unix::fs::lchown(copy.dir.join("dev"), Some(100000), Some(100000)).unwrap();
        b.add_namespace(serde_json::json!({"type": "user"}));
        for map in ["uidMappings", "gidMappings"] {
            b.config["linux"][map] = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        }
    }
    let bundle = b.write();
    let root = Root::new();
    let id = unique("console-link");
    let rx = ConsoleReceiver::new();
    let out = root.molt(&["create", "--console-socket", rx.path.to_str().unwrap(), "--bundle", &bundle, &id]);
    assert!(out.status.success(), "user namespace {userns}: create with a console: {}", stderr_of(&out));
    let created_outside = std::fs::symlink_metadata(&host_console).is_ok();
    root.ok(&["start", &id]);
    let (_name, bytes) = rx.finish().expect("console receiver");
    root.ok(&["delete", "--force", &id]);
    assert!(!created_outside, "user namespace {userns}: {} was created on the host", host_console.display());
    assert_eq!(std::fs::read_dir(&*outside).unwrap().count(), 0, "user namespace {userns}: something was made outside the rootfs");
    // The link is followed inside the rootfs: the pty is bound there, and what the container
    // writes to /dev/console reaches the engine.
    let inside = copy.dir.join(host_console.strip_prefix("/").unwrap());
    assert!(inside.is_file(), "user namespace {userns}: {} was not made inside the rootfs", inside.display());
    assert_eq!(String::from_utf8_lossy(&bytes), "through-console\r\n/dev/pts/0\r\n", "user namespace {userns}");
    let mounts = [outside.display().to_string(), copy.dir.display().to_string()].iter().flat_map(|n| host_mounts_with(n)).collect::<Vec<_>>();
    assert!(mounts.is_empty(), "user namespace {userns}: mounts left: {mounts:?}");
}
