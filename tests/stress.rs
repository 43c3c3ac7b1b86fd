//! Issue 11's stress test: containers created, started, exec'd into, paused, resumed, killed and
//! deleted concurrently by separate molt processes, round after round, each with a veth set up
//! from annotations and all sharing one loop-device volume; each round ends with a `kill` and a
//! `delete --force` of the same container racing each other. Afterwards nothing of theirs may be
//! left: processes, mounts, cgroups, veths, loop devices, state entries.

mod common;
use common::app::*;
use common::*;

const WORKERS: usize = 4;
const ROUNDS: usize = 4;

fn ok(out: std::process::Output, what: &str) {
    assert!(out.status.success(), "{what}: {}{}", stdout_of(&out), stderr_of(&out));
}

fn one_life(root: &Root, net: &HostNet, volume: &serde_json::Value, id: &str, ip: &str) {
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.config["annotations"] = serde_json::json!({"io.molt.net.bridge": net.bridge, "io.molt.net.address": format!("{ip}/24")});
    b.config["mounts"].as_array_mut().unwrap().push(volume.clone());
    let dir = b.write();
    ok(net.molt(root, &["create", "--bundle", &dir, id]), "create");
    ok(net.molt(root, &["start", id]), "start");
    ok(net.molt(root, &["exec", id, "sh", "-c", "test -d /data && ip -o addr show dev eth0 | grep -q inet"]), "exec");
    ok(net.molt(root, &["pause", id]), "pause");
    ok(net.molt(root, &["resume", id]), "resume");
    // Two molt processes on one id at once: whatever order they land in, the id ends up gone.
    std::thread::scope(|s| {
        s.spawn(|| net.molt(root, &["kill", id, "KILL"]));
        s.spawn(|| net.molt(root, &["delete", "--force", id]));
    });
    let _ = net.molt(root, &["delete", "--force", id]);
    assert!(!net.molt(root, &["state", id]).status.success(), "{id} still exists");
}

#[test]
fn concurrent_lifecycles_leave_nothing_behind() {
    require_root!();
    let root = Root::new();
    let net = HostNet::new();
    let img_dir = TempDir::new("molt-stress");
    let img = make_volume(&img_dir);
    let volume = loop_volume(&img);
    let ids: Vec<Vec<String>> = (0..WORKERS).map(|w| (0..ROUNDS).map(|r| unique(&format!("st{w}r{r}"))).collect()).collect();
    std::thread::scope(|s| {
        for (w, rounds) in ids.iter().enumerate() {
            let (root, net, volume) = (&root, &net, &volume);
            s.spawn(move || {
                for (r, id) in rounds.iter().enumerate() {
                    one_life(root, net, volume, id, &format!("10.89.0.{}", 10 + w * 10 + r));
                }
            });
        }
    });
    let all: Vec<&String> = ids.iter().flatten().collect();
    // State entries: the root holds nothing but what molt keeps for itself (dot-files).
    let entries = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| !n.starts_with('.')).collect())
            .unwrap_or_default()
    };
    let left: Vec<String> = entries(&root.path).into_iter().filter(|n| n != "volumes").collect();
    assert!(left.is_empty(), "state entries left: {left:?}");
    // The volume registry: no attachment and no user record.
    let vols = entries(&root.path.join("volumes"));
    assert!(vols.is_empty(), "volume records left: {vols:?}");
    // Processes: none started from our root or running our containers' program.
    let procs = std::process::Command::new("ps").args(["-e", "-o", "pid=,args="]).output().unwrap();
    let procs = String::from_utf8_lossy(&procs.stdout);
    let root_s = root.path.display().to_string();
    let stray: Vec<&str> = procs.lines().filter(|l| l.contains(&root_s) || l.trim_end().ends_with("sleep 1000")).collect();
    assert!(stray.is_empty(), "processes left: {stray:?}");
    // No molt process survives (each names the root on its command line, the re-executed sealed
    // one too), and no process at all holds an fd into the root or on the volume's image.
    let img_s = img_dir.display().to_string();
    let (molts, fds) = leftovers(&root_s, &[&root_s, &img_s]);
    assert!(molts.is_empty(), "molt processes left: {molts:?}");
    assert!(fds.is_empty(), "fds left open: {fds:?}");
    // Mounts: nothing of the volume or of the root.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.lines().any(|l| l.contains(&root_s) || l.contains(&img_s)), "mounts left: {mounts}");
    // Loop devices: none bound to the image.
    let loops = std::process::Command::new("losetup").arg("-j").arg(&img).output().unwrap();
    assert!(String::from_utf8_lossy(&loops.stdout).trim().is_empty(), "loop devices left: {}", String::from_utf8_lossy(&loops.stdout));
    // Cgroups: no directory named after one of the ids in any hierarchy.
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for id in &all {
            let dir = entry.path().join("molt").join(id);
            assert!(!dir.exists(), "cgroup left: {}", dir.display());
        }
    }
    // veths: only the loopback is left in the test host's namespace (the bridge molt made goes
    // with its last port).
    let links = net.ip(&["-o", "link"]);
    assert_eq!(links.lines().count(), 1, "links left: {links}");
}

/// Processes whose command line has `root` as an argument (molt's `--root`), each with its fd
/// count, and every open fd of any process whose target contains one of `paths`.
fn leftovers(root: &str, paths: &[&str]) -> (Vec<String>, Vec<String>) {
    let (mut molts, mut fds) = (vec![], vec![]);
    let me = std::process::id().to_string();
    let pids = std::fs::read_dir("/proc").unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string());
    for pid in pids.filter(|p| p.bytes().all(|b| b.is_ascii_digit()) && *p != me) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let open: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|fd| std::fs::read_link(fd.path()).map(|t| t.display().to_string()).unwrap_or_default())
            .collect();
        if cmdline.split(|b| *b == 0).any(|a| a == root.as_bytes()) {
            molts.push(format!("{pid} {} ({} fds open)", String::from_utf8_lossy(&cmdline).replace('\0', " "), open.len()));
        }
        fds.extend(open.iter().filter(|t| paths.iter().any(|p| t.contains(p))).map(|t| format!("{pid}: {t}")));
    }
    (molts, fds)
}
