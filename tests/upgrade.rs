//! `molt upgrade` for real on this host: a loop-device volume, a veth set up from annotations in a
//! test "host" network namespace, the test application answering a client there. After the upgrade
//! the same IP answers with the new version and the old hostname, the MAC is the same, and every
//! acknowledged record is on the volume. Refusals, rollback and a crash at every step too.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A network namespace standing for the host molt runs on; deleted on drop.
struct HostNet {
    name: String,
    path: PathBuf,
    bridge: String,
}

impl HostNet {
    fn new() -> HostNet {
        let name = unique("molt-up");
        let st = Command::new("ip").args(["netns", "add", &name]).status().expect("ip netns add");
        assert!(st.success());
        let n = name.len();
        let bridge = format!("mbr{}", &name[n.saturating_sub(8)..].replace('-', ""));
        HostNet { path: PathBuf::from(format!("/run/netns/{name}")), name, bridge }
    }

    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip").arg("-n").arg(&self.name).args(args).output().expect("ip");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// molt with its network namespace switched to this one (only the net ns: cgroups stay visible).
    fn molt(&self, root: &Root, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path.display())).arg(molt_bin()).arg("--root").arg(&root.path).args(args);
        run_to_files(&mut cmd)
    }

    /// Run `f` on a thread inside this namespace (a client on the test host).
    fn client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for HostNet {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

const IP: &str = "10.89.0.5";
const GW: &str = "10.89.0.1";

fn request(line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&format!("{IP}:8080").parse().unwrap(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    Ok(reply.trim().to_string())
}

fn make_volume(dir: &Path) -> PathBuf {
    let img = dir.join("vol.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(32 << 20).unwrap();
    let st = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img).status().expect("mkfs.ext4 (e2fsprogs)");
    assert!(st.success());
    img
}

fn app_bundle(version: &str, hostname: &str, net: &HostNet, img: &Path, extra_env: &[&str]) -> Bundle {
    let mut b = Bundle::new(&["/bin/molt-testapp"]);
    let c = &mut b.config;
    let mut env = vec!["PATH=/bin".to_string(), format!("APP_VERSION={version}")];
    env.extend(extra_env.iter().map(|s| s.to_string()));
    c["process"]["env"] = serde_json::json!(env);
    c["hostname"] = serde_json::json!(hostname);
    c["annotations"] = serde_json::json!({
        "org.opencontainers.image.version": version,
        "io.molt.net.bridge": net.bridge,
        "io.molt.net.address": format!("{IP}/24"),
        "io.molt.net.gateway": GW,
    });
    c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
        "destination": "/data", "type": "ext4", "source": img, "options": ["loop", "rw", "nosuid", "nodev"]
    }));
    b
}

struct Setup {
    root: Root,
    net: HostNet,
    img_dir: PathBuf,
    img: PathBuf,
    v1: Bundle,
}

impl Setup {
    /// v1 running as `id`, reachable from the test host at IP.
    fn start(id: &str) -> Setup {
        let root = Root::new();
        let net = HostNet::new();
        let img_dir = std::env::temp_dir().join(unique("molt-vol"));
        std::fs::create_dir_all(&img_dir).unwrap();
        let img = make_volume(&img_dir);
        let v1 = app_bundle("1.0.0", "app-one", &net, &img, &[]);
        let dir = v1.write();
        let out = net.molt(&root, &["run", "--detach", "--bundle", &dir, id]);
        assert!(out.status.success(), "run v1: {}", stderr_of(&out));
        // The bridge exists now (molt made it); give the test host an address on it.
        net.ip(&["addr", "add", &format!("{GW}/24"), "dev", &net.bridge]);
        let ok = net.client(|| wait_until(10, || request("VERSION").is_ok()));
        assert!(ok, "v1 never answered on {IP}:8080");
        Setup { root, net, img_dir, img, v1 }
    }

    fn mac(&self, id: &str) -> String {
        let pid = self.root.state(id)["pid"].as_i64().unwrap();
        let out = Command::new("nsenter").arg(format!("--net=/proc/{pid}/ns/net")).args(["ip", "-o", "link", "show", "eth0"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default().to_string()
    }

    fn version(&self) -> String {
        self.net.client(|| request("VERSION")).unwrap_or_else(|e| format!("error: {e}"))
    }

    fn ids(&self) -> Vec<String> {
        self.root.ok(&["list", "--quiet"]).lines().map(String::from).collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for id in self.ids() {
            let _ = self.net.molt(&self.root, &["delete", "--force", &id]);
        }
        let _ = std::fs::remove_dir_all(&self.img_dir);
    }
}

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

    let v2 = app_bundle("2.0.0", "app-two", &s.net, &s.img, &[]);
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
        let b = app_bundle(version, "x", &s.net, &s.img, &[]);
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
    let b = app_bundle("1.1.0", "x", &s.net, &s.img, &[]);
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
    let b = app_bundle("2.0.0", "app-two", &s.net, &s.img, &["APP_FAIL=1"]);
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
    let v2 = app_bundle("2.0.0", "app-two", &s.net, &s.img, &[]);
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
