//! The test application in a container on a test host: the shared set-up of the upgrade tests,
//! on this host (loop volume) and in the VM lab (NFS, iSCSI).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

/// A network namespace standing for the host molt runs on; deleted on drop.
pub struct HostNet {
    pub name: String,
    pub path: PathBuf,
    pub bridge: String,
    owned: bool,
}

impl HostNet {
    pub fn new() -> HostNet {
        let name = unique("molt-up");
        let st = Command::new("ip").args(["netns", "add", &name]).status().expect("ip netns add");
        assert!(st.success());
        let n = name.len();
        let bridge = format!("mbr{}", &name[n.saturating_sub(8)..].replace('-', ""));
        HostNet { path: PathBuf::from(format!("/run/netns/{name}")), name, bridge, owned: true }
    }

    /// An application host that already exists (the VM lab's app1): not deleted on drop.
    pub fn existing(path: &str) -> HostNet {
        let name = Path::new(path).file_name().unwrap().to_string_lossy().to_string();
        let bridge = format!("mbr{}", std::process::id() % 100_000);
        HostNet { path: PathBuf::from(path), name, bridge, owned: false }
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter").arg(format!("--net={}", self.path.display())).arg("ip").args(args).output().expect("ip");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// molt with its network namespace switched to this one (only the net ns: cgroups stay visible).
    pub fn molt(&self, root: &Root, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path.display())).arg(molt_bin()).arg("--root").arg(&root.path).args(args);
        run_to_files(&mut cmd)
    }

    /// Run `f` on a thread inside this namespace (a client on the test host).
    pub fn client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
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
        if self.owned {
            let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        } else {
            self.ip(&["link", "del", &self.bridge]);
        }
    }
}

pub const IP: &str = "10.89.0.5";
pub const GW: &str = "10.89.0.1";

pub fn request(line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&format!("{IP}:8080").parse().unwrap(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    Ok(reply.trim().to_string())
}

pub fn make_volume(dir: &Path) -> PathBuf {
    let img = dir.join("vol.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(32 << 20).unwrap();
    let st = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img).status().expect("mkfs.ext4 (e2fsprogs)");
    assert!(st.success());
    img
}

/// The loop-device volume mount for an ext4 image.
pub fn loop_volume(img: &Path) -> serde_json::Value {
    serde_json::json!({"destination": "/data", "type": "ext4", "source": img, "options": ["loop", "rw", "nosuid", "nodev"]})
}

pub fn app_bundle(version: &str, hostname: &str, net: &HostNet, volume: &serde_json::Value, extra_env: &[&str]) -> Bundle {
    let mut b = Bundle::new(&["/bin/molt-testapp"]);
    let c = &mut b.config;
    let mut env = vec!["PATH=/bin:/sbin:/usr/bin:/usr/sbin".to_string(), format!("APP_VERSION={version}")];
    env.extend(extra_env.iter().map(|s| s.to_string()));
    c["process"]["env"] = serde_json::json!(env);
    c["hostname"] = serde_json::json!(hostname);
    c["annotations"] = serde_json::json!({
        "org.opencontainers.image.version": version,
        "io.molt.net.bridge": net.bridge,
        "io.molt.net.address": format!("{IP}/24"),
        "io.molt.net.gateway": GW,
    });
    c["mounts"].as_array_mut().unwrap().push(volume.clone());
    b
}

pub struct Setup {
    pub id: String,
    pub root: Root,
    pub net: HostNet,
    pub img_dir: PathBuf,
    pub volume: serde_json::Value,
    /// Environment every version of the app gets (its own records file on a shared export).
    pub env: Vec<String>,
    /// `io.molt.listen` of every version, if any.
    pub listen: Option<String>,
    pub v1: Bundle,
}

impl Setup {
    /// v1 running as `id` on a loop-device volume, reachable from a test host at IP.
    pub fn start(id: &str) -> Setup {
        let img_dir = std::env::temp_dir().join(unique("molt-vol"));
        std::fs::create_dir_all(&img_dir).unwrap();
        let img = make_volume(&img_dir);
        Setup::start_with(id, HostNet::new(), loop_volume(&img), img_dir)
    }

    /// v1 running as `id` with the given volume mount on the given host.
    pub fn start_with(id: &str, net: HostNet, volume: serde_json::Value, img_dir: PathBuf) -> Setup {
        Setup::start_full(id, net, volume, img_dir, None, &[], &|_| {})
    }

    /// v1 as `start`, its bundle changed by `edit` and `molt run` given the global flags `global`.
    pub fn start_v1(id: &str, global: &[&str], edit: &dyn Fn(&mut Bundle)) -> Setup {
        let img_dir = std::env::temp_dir().join(unique("molt-vol"));
        std::fs::create_dir_all(&img_dir).unwrap();
        let img = make_volume(&img_dir);
        Setup::start_full(id, HostNet::new(), loop_volume(&img), img_dir, None, global, edit)
    }

    /// v1 as `start`, every version with molt's listening sockets (`io.molt.listen`).
    pub fn start_listening(id: &str, listen: &str) -> Setup {
        let img_dir = std::env::temp_dir().join(unique("molt-vol"));
        std::fs::create_dir_all(&img_dir).unwrap();
        let img = make_volume(&img_dir);
        Setup::start_full(id, HostNet::new(), loop_volume(&img), img_dir, Some(listen.to_string()), &[], &|_| {})
    }

    /// v1 as `start`, taking `ms` from its stop signal to its exit (APP_STOP_DELAY_MS), with one
    /// record appended.
    pub fn start_slow_exit(id: &str, ms: u64) -> Setup {
        let env = serde_json::json!(format!("APP_STOP_DELAY_MS={ms}"));
        let s = Setup::start_v1(id, &[], &|b| b.config["process"]["env"].as_array_mut().unwrap().push(env.clone()));
        assert!(s.ask("APPEND kept").starts_with("OK"));
        s
    }

    fn start_full(
        id: &str,
        net: HostNet,
        volume: serde_json::Value,
        img_dir: PathBuf,
        listen: Option<String>,
        global: &[&str],
        edit: &dyn Fn(&mut Bundle),
    ) -> Setup {
        let root = Root::new();
        let env = vec![format!("APP_DATA=/data/{}.log", unique(id))];
        let envs: Vec<&str> = env.iter().map(String::as_str).collect();
        let mut v1 = app_bundle("1.0.0", "app-one", &net, &volume, &envs);
        if let Some(l) = &listen {
            v1.config["annotations"]["io.molt.listen"] = serde_json::json!(l);
        }
        edit(&mut v1);
        let dir = v1.write();
        let mut args = global.to_vec();
        args.extend_from_slice(&["run", "--detach", "--bundle", &dir, id]);
        let out = net.molt(&root, &args);
        assert!(out.status.success(), "run v1: {}", stderr_of(&out));
        // The bridge exists now (molt made it); give the test host an address on it.
        net.ip(&["addr", "add", &format!("{GW}/24"), "dev", &net.bridge]);
        let ok = net.client(|| wait_until(30, || request("VERSION").is_ok()));
        assert!(ok, "v1 never answered on {IP}:8080");
        Setup { id: id.to_string(), root, net, img_dir, volume, env, listen, v1 }
    }

    /// A bundle of the app at `version` for this set-up (same volume, network annotations, env).
    pub fn bundle(&self, version: &str, hostname: &str, extra_env: &[&str]) -> Bundle {
        let mut env: Vec<&str> = self.env.iter().map(String::as_str).collect();
        env.extend_from_slice(extra_env);
        let mut b = app_bundle(version, hostname, &self.net, &self.volume, &env);
        if let Some(l) = &self.listen {
            b.config["annotations"]["io.molt.listen"] = serde_json::json!(l);
        }
        b
    }

    pub fn upgrade(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["upgrade", self.id.as_str()];
        all.extend_from_slice(args);
        self.net.molt(&self.root, &all)
    }

    /// `molt GLOBAL... upgrade ID ARGS...` with MOLT_TEST_CRASH_AT=`crash_at`; asserts it died there.
    pub fn crashed_upgrade(&self, global: &[&str], args: &[&str], crash_at: &str) -> std::process::Output {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.net.path.display()))
            .arg(molt_bin())
            .args(["--root", self.root.path.to_str().unwrap()])
            .args(global)
            .args(["upgrade", &self.id])
            .args(args)
            .env("MOLT_TEST_CRASH_AT", crash_at);
        let out = run_to_files(&mut cmd);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "did not crash at {crash_at}: {}", stderr_of(&out));
        out
    }

    /// v1 answers again under the id, alone, with the record the test appended.
    pub fn assert_v1_back(&self) {
        assert_eq!(self.root.state(&self.id)["status"], "running");
        assert!(self.answers());
        assert_eq!(self.version(), "version=1.0.0 hostname=app-one");
        assert_eq!(self.ask("COUNT"), "1");
        assert_eq!(self.ids(), vec![self.id.clone()]);
    }

    pub fn answers(&self) -> bool {
        self.net.client(|| wait_until(30, || request("VERSION").is_ok()))
    }

    pub fn ask(&self, line: &str) -> String {
        let line = line.to_string();
        self.net.client(move || request(&line)).unwrap_or_else(|e| format!("error: {e}"))
    }

    pub fn mac(&self, id: &str) -> String {
        let pid = self.root.state(id)["pid"].as_i64().unwrap();
        let out = Command::new("nsenter").arg(format!("--net=/proc/{pid}/ns/net")).args(["ip", "-o", "link", "show", "eth0"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default().to_string()
    }

    /// The version that answers, once the application listens: an upgrade or rollback without a
    /// health gate returns when the process runs, which may be before it has bound its port (on a
    /// loaded machine, seconds before). Only a refused connection is waited out.
    pub fn version(&self) -> String {
        self.net
            .client(|| {
                let end = std::time::Instant::now() + Duration::from_secs(30);
                loop {
                    match request("VERSION") {
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && std::time::Instant::now() < end => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        other => return other,
                    }
                }
            })
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    /// The ids `list` shows; the root's own directories (the volume registry the test's volume
    /// made) are neither listed nor warned about.
    pub fn ids(&self) -> Vec<String> {
        let out = self.root.molt(&["list", "--quiet"]);
        assert!(out.status.success() && !stderr_of(&out).contains("holds no state.json"), "list: {}", stderr_of(&out));
        stdout_of(&out).lines().map(String::from).collect()
    }
}

/// What the clients of a `Load` saw, request by request.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ok: std::collections::BTreeMap<String, usize>,
    pub refused: usize,
    pub reset: usize,
    pub timed_out: usize,
    /// Closed without an answer, or any other error: how many of each.
    pub other: std::collections::BTreeMap<String, usize>,
    /// Requests that took a second or more.
    pub slow: usize,
    /// Connections whose connect() took a second or more: a SYN was lost and TCP retransmitted it
    /// (a connection queued on a listening socket connects at once and waits for its answer).
    pub lost_syn: usize,
    pub max_ms: u128,
}

impl Tally {
    pub fn failures(&self) -> usize {
        self.refused + self.reset + self.timed_out + self.other.values().sum::<usize>()
    }
}

/// Clients asking VERSION back to back over new connections, until stopped: over TCP from the
/// test host, or by a unix socket's path in the container.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tally: std::sync::Arc<std::sync::Mutex<Tally>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// A client's connection: TCP or unix.
pub trait Conn: std::io::Read + Write {}
impl<T: std::io::Read + Write> Conn for T {}

/// Opens one client connection (with a read timeout set) the way a client would.
type Connect = dyn Fn() -> std::io::Result<Box<dyn Conn>> + Send + Sync;

fn one_request(connect: &Connect, lost_syn: &mut bool) -> Result<String, std::io::Error> {
    let t = std::time::Instant::now();
    let s = connect();
    *lost_syn = t.elapsed() >= Duration::from_secs(1);
    let mut s = s?;
    s.write_all(b"VERSION\n")?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed without an answer"));
    }
    Ok(reply.trim().to_string())
}

/// The init of the newest live container under `root` that is created or running: during an
/// upgrade the new version's once created (the old one's until then), as a client that follows
/// the container would find it (one still being created has not made its root yet).
pub fn newest_init(root: &Path) -> Option<i32> {
    let start_time = |pid: i64| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse::<u64>().ok()
    };
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("state.json")).ok())
        .filter_map(|data| serde_json::from_slice::<serde_json::Value>(&data).ok())
        .filter(|st| st["status"] == "created" || st["status"] == "running")
        .filter_map(|st| st["pid"].as_i64())
        .filter_map(|pid| Some((start_time(pid)?, pid)))
        .max()
        .map(|(_, pid)| pid as i32)
}

impl Load {
    /// Over TCP to IP:8080 from the test host, with the kernel's connect (no short timeout, so a
    /// lost SYN costs TCP's one-second retransmission as it does for curl or a database driver).
    pub fn start(net: &HostNet, clients: usize) -> Load {
        let path = net.path.clone();
        let enter = move || {
            let ns = std::fs::File::open(&path).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        };
        Load::spawn(clients, enter, || {
            let s = TcpStream::connect_timeout(&format!("{IP}:8080").parse().unwrap(), Duration::from_secs(30))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            Ok(Box::new(s) as Box<dyn Conn>)
        })
    }

    /// By the unix socket's `path` inside the container, in the newest container under `root`
    /// (through /proc/PID/root: the path as the container's own processes resolve it).
    pub fn start_unix(root: &Root, path: &str, clients: usize) -> Load {
        let (root, path) = (root.path.clone(), path.trim_start_matches('/').to_string());
        Load::spawn(clients, || {}, move || {
            // Between one container's end and the next one's creation (a rollback stops the new
            // version before it builds the old one again) there is no container to connect in: the
            // client waits for one, as a client that follows the container would.
            let mut pid = None;
            wait_until(30, || {
                pid = newest_init(&root);
                pid.is_some()
            });
            let pid = pid.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no live container for 30 s"))?;
            let s = std::os::unix::net::UnixStream::connect(format!("/proc/{pid}/root/{path}"))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            Ok(Box::new(s) as Box<dyn Conn>)
        })
    }

    fn spawn(
        clients: usize,
        enter: impl Fn() + Send + Sync + 'static,
        connect: impl Fn() -> std::io::Result<Box<dyn Conn>> + Send + Sync + 'static,
    ) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tally = std::sync::Arc::new(std::sync::Mutex::new(Tally::default()));
        let enter = std::sync::Arc::new(enter);
        let connect: std::sync::Arc<Connect> = std::sync::Arc::new(connect);
        let threads = (0..clients)
            .map(|_| {
                let (stop, tally, enter, connect) = (stop.clone(), tally.clone(), enter.clone(), connect.clone());
                std::thread::spawn(move || {
                    enter();
                    while !stop.load(Ordering::SeqCst) {
                        let t = std::time::Instant::now();
                        let mut lost_syn = false;
                        let r = one_request(&*connect, &mut lost_syn);
                        let ms = t.elapsed().as_millis();
                        let mut g = tally.lock().unwrap();
                        g.lost_syn += usize::from(lost_syn);
                        g.max_ms = g.max_ms.max(ms);
                        if ms >= 1000 {
                            g.slow += 1;
                        }
                        match r {
                            Ok(v) => *g.ok.entry(v.split_whitespace().next().unwrap_or_default().to_string()).or_default() += 1,
                            Err(e) => match e.kind() {
                                std::io::ErrorKind::ConnectionRefused => g.refused += 1,
                                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => g.reset += 1,
                                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => g.timed_out += 1,
                                _ => *g.other.entry(e.to_string()).or_default() += 1,
                            },
                        }
                    }
                })
            })
            .collect();
        Load { stop, tally, threads }
    }

    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    /// Wait until `n` answers came from `version` ("version=1.0.0").
    pub fn wait_answers(&self, version: &str, n: usize) -> bool {
        wait_until(60, || self.tally().ok.get(version).copied().unwrap_or(0) >= n)
    }

    pub fn stop(self) -> Tally {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let t = self.tally.lock().unwrap().clone();
        t
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


// ---------------------------------------------------------------- scenarios
// Each runs on a Setup whose volume is a loop image here, and NFS or iSCSI in the VM lab.

/// The upgrade keeps address, MAC, hostname, routes and id; every acknowledged record survives.
pub fn scenario_upgrade_keeps_identity_and_records(s: &Setup) {
    let id = s.id.as_str();
    assert_eq!(s.version(), "version=1.0.0 hostname=app-one");
    let mac_before = s.mac(id);
    let old_pid = s.root.state(id)["pid"].as_i64().unwrap();
    let cgroup_before = cgroup_of(&s.root, id);

    // A writer keeps appending through the upgrade; it remembers what was acknowledged.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let acks = std::sync::Arc::new(AtomicUsize::new(0));
    let (stop2, acks2) = (stop.clone(), acks.clone());
    let path = s.net.path.clone();
    let writer = std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut acked = vec![];
        let mut i = 0;
        while !stop2.load(Ordering::SeqCst) {
            i += 1;
            if let Ok(r) = request(&format!("APPEND rec-{i}")) {
                if r.starts_with("OK") {
                    acked.push(format!("rec-{i}"));
                    acks2.store(acked.len(), Ordering::SeqCst);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        acked
    });
    assert!(wait_until(60, || acks.load(Ordering::SeqCst) >= 5), "the old version acknowledged no writes");

    let v2 = s.bundle("2.0.0", "app-two", &[]);
    let mut c2 = v2.config.clone();
    c2["annotations"]["io.molt.upgrade.from"] = serde_json::json!(">=1.0.0, <2.0.0");
    std::fs::write(v2.dir.join("config.json"), serde_json::to_vec(&c2).unwrap()).unwrap();
    // `move`: the veth itself changes namespace (keep, the default, is covered in tests/upgrade.rs).
    let out = s.upgrade(&["--bundle", v2.dir.to_str().unwrap(), "--network", "move", "--health", "tcp:8080", "--health-timeout", "60s", "--format", "json"]);
    assert!(out.status.success(), "upgrade: {}\n{}", stderr_of(&out), stdout_of(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout_of(&out)).expect("json report");
    assert_eq!(report["outcome"], "upgraded");
    // The id's cgroup is the same directory, and the upgrade left no other (engines and
    // monitoring read it by the id).
    assert_eq!(cgroup_of(&s.root, id), cgroup_before);
    // Named by this upgrade's stamp: other checkouts on the machine may run the same test ids.
    let next = report["steps"][0]["note"].as_str().and_then(|n| n.split_whitespace().next()).unwrap_or_default().to_string();
    assert!(next.starts_with(&format!("{id}.next-")), "{report}");
    assert!(cgroups_named(&next).is_empty(), "{:?}", cgroups_named(&next));
    let steps: Vec<&str> = report["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["create-new", "stop-old", "hand-over-volumes", "move-network", "transfer-id", "start-new", "health-gate", "commit"]);
    assert!(report["unavailable_ms"].as_u64().is_some());
    assert!(!s.root.path.join(format!(".upgrade-{id}.json")).exists(), "a finished upgrade leaves no journal");

    // The writer goes on through the new version before it stops.
    let after = acks.load(Ordering::SeqCst);
    assert!(wait_until(60, || acks.load(Ordering::SeqCst) >= after + 5), "the new version acknowledged no writes");
    stop.store(true, Ordering::SeqCst);
    let acked = writer.join().unwrap();

    assert_eq!(s.version(), "version=2.0.0 hostname=app-one", "same IP, new version, old hostname");
    assert_eq!(s.mac(id), mac_before, "the MAC moved with the veth");
    let st = s.root.state(id);
    assert_eq!(st["status"], "running");
    assert_ne!(st["pid"].as_i64().unwrap(), old_pid);
    assert_eq!(s.ids(), vec![id.to_string()], "no second container is left");
    let routes = stdout_of(&s.root.molt(&["exec", id, "ip", "route"]));
    assert!(routes.contains(&format!("default via {GW}")), "routes moved: {routes}");

    let data_file = s.env[0].trim_start_matches("APP_DATA=").to_string();
    let on_disk = stdout_of(&s.root.molt(&["exec", id, "cat", &data_file]));
    for rec in &acked {
        assert!(on_disk.lines().any(|l| l == rec), "acknowledged {rec} is missing from the volume");
    }
}

/// Refused versions and constraints name the rule; nothing changes; --dry-run only prints.
pub fn scenario_refusals(s: &Setup) {
    let id = s.id.as_str();
    let pid = s.root.state(id)["pid"].clone();
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("1.0.0", None, "not later"),
        ("0.9.0", None, "not later"),
        ("2.0.0", Some(">=1.2.0"), "does not satisfy"),
        ("two", None, "not a semantic version"),
        ("2.0.0", Some("~>1"), "not a semver requirement"),
    ];
    for (version, constraint, expect) in cases {
        let b = s.bundle(version, "x", &[]);
        let mut c = b.config.clone();
        if let Some(req) = constraint {
            c["annotations"]["io.molt.upgrade.from"] = serde_json::json!(req);
        }
        std::fs::write(b.dir.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
        let out = s.upgrade(&["--bundle", b.dir.to_str().unwrap()]);
        assert!(!out.status.success(), "{version} {constraint:?} must be refused");
        assert!(stderr_of(&out).contains(expect), "{version} {constraint:?}: {}", stderr_of(&out));
        assert_eq!(s.root.state(id)["pid"], pid);
    }
    let b = s.bundle("1.1.0", "x", &[]);
    let dir = b.write();
    let out = s.upgrade(&["--bundle", &dir, "--dry-run"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("1.0.0 -> 1.1.0") && text.contains("hand-over-volumes"), "{text}");
    assert_eq!(s.root.state(id)["pid"], pid);
    assert_eq!(s.version(), "version=1.0.0 hostname=app-one");
    // The operator's way past the rule: a forced downgrade, its reason in the report and on stderr.
    let b = s.bundle("0.9.0", "app-one", &[]);
    let dir = b.write();
    let out = s.upgrade(&["--bundle", &dir, "--force", ""]);
    assert!(!out.status.success() && stderr_of(&out).contains("--force needs a reason"), "{}", stderr_of(&out));
    let out = s.upgrade(&["--bundle", &dir, "--force", "back to 0.9 after a bad release", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout_of(&out)).expect("JSON report");
    let reason = doc["decision"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("forced (back to 0.9 after a bad release)") && reason.contains("not later"), "{doc}");
    assert!(stderr_of(&out).contains("forced past the version rule"), "{}", stderr_of(&out));
    // No health gate: the new (older) app may still be starting.
    assert!(s.answers());
    assert_eq!(s.version(), "version=0.9.0 hostname=app-one");
    // A build without a version annotation: refused (its version cannot be told), then forced.
    let mut b = s.bundle("0.9.1", "app-one", &[]);
    b.config["annotations"].as_object_mut().unwrap().remove("org.opencontainers.image.version");
    let dir = b.write();
    let out = s.upgrade(&["--bundle", &dir]);
    assert!(!out.status.success() && stderr_of(&out).contains("has no org.opencontainers.image.version annotation"), "{}", stderr_of(&out));
    assert_eq!(s.version(), "version=0.9.0 hostname=app-one");
    let out = s.upgrade(&["--bundle", &dir, "--force", "hotfix build without a version", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout_of(&out)).expect("JSON report");
    assert_eq!((doc["decision"]["running"].as_str(), doc["decision"]["new"].as_str()), (Some("0.9.0"), Some("-")), "{doc}");
    let reason = doc["decision"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("forced (hotfix build without a version)") && reason.contains("no org.opencontainers.image.version"), "{doc}");
    assert!(stderr_of(&out).contains("forced past the version rule"), "{}", stderr_of(&out));
    assert!(s.answers());
    assert_eq!(s.version(), "version=0.9.1 hostname=app-one");
}

/// A new version that fails its health gate is rolled back: v1 again, same identity and data.
pub fn scenario_failed_health_rolls_back(s: &Setup) {
    let id = s.id.as_str();
    let mac = s.mac(id);
    assert!(s.ask("APPEND before").starts_with("OK"));
    let b = s.bundle("2.0.0", "app-two", &["APP_FAIL=1"]);
    let dir = b.write();
    let out = s.upgrade(&["--bundle", &dir, "--health", "tcp:8080", "--health-timeout", "2s", "--format", "json"]);
    assert!(!out.status.success());
    let doc: serde_json::Value = serde_json::from_str(&stdout_of(&out)).expect("one JSON document on failure too");
    assert_eq!(doc["outcome"], "rolled-back", "{doc}");
    let err = stderr_of(&out);
    assert!(err.contains("health-gate") || err.contains("start-new"), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert!(s.answers());
    assert_eq!(s.version(), "version=1.0.0 hostname=app-one");
    assert_eq!(s.mac(id), mac);
    assert_eq!(s.ask("COUNT"), "1");
    assert_eq!(s.ids(), vec![id.to_string()]);
}

/// molt killed at every step, before and after it: `--resume` or the next command settles it.
/// /proc/PID/cgroup of the container's init: its path in every hierarchy.
pub fn cgroup_of(root: &Root, id: &str) -> String {
    let pid = root.state(id)["pid"].as_i64().unwrap();
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap()
}

pub fn scenario_crash_at_every_step(s: &Setup) {
    let id = s.id.as_str();
    assert!(s.ask("APPEND kept").starts_with("OK"));
    let v2 = s.bundle("2.0.0", "app-two", &[]);
    let dir = v2.write();
    let cgroup_before = cgroup_of(&s.root, id);
    assert!(cgroup_before.contains(&format!(":/molt/{id}\n")), "{cgroup_before}");
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
                .args(["--root", s.root.path.to_str().unwrap(), "upgrade", id, "--bundle", &dir, "--network", "move"])
                .env("MOLT_TEST_CRASH_AT", format!("{step}:{when}"));
            let out = run_to_files(&mut cmd);
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(out.status.signal(), Some(9), "{step}:{when} did not crash: {}", stderr_of(&out));
            // Settled by `upgrade --resume`, or by the next command that acts on the container;
            // a query (state, list) reports it and changes nothing.
            let journal = s.root.path.join(format!(".upgrade-{id}.json"));
            let interrupted = journal.exists();
            // This upgrade's stamp names every cgroup it makes (other checkouts on the machine
            // may run the same test ids at the same time).
            let next = std::fs::read(&journal)
                .ok()
                .and_then(|j| serde_json::from_slice::<serde_json::Value>(&j).ok())
                .and_then(|j| j["next_id"].as_str().map(String::from));
            if when == "after" && interrupted {
                let st = s.net.molt(&s.root, &["state", id]);
                assert!(st.status.success(), "state after {step}:{when}: {}", stderr_of(&st));
                assert!(stderr_of(&st).contains("interrupted"), "state names the interrupted upgrade: {}", stderr_of(&st));
                assert!(stdout_of(&st).contains("\"io.molt.upgrade\": \"interrupted\""), "{}", stdout_of(&st));
                let ls = s.net.molt(&s.root, &["list"]);
                assert!(ls.status.success() && stderr_of(&ls).contains("interrupted"), "list: {}", stderr_of(&ls));
                assert!(journal.exists(), "a query settled the upgrade after {step}:{when}");
            }
            let out = if when == "before" { s.net.molt(&s.root, &["upgrade", "--resume", id]) } else { s.net.molt(&s.root, &["kill", id, "SIGCONT"]) };
            assert!(out.status.success(), "resume after {step}:{when}: {}", stderr_of(&out));
            let outcome = stdout_of(&out);
            let want = if step == "commit" { "committed" } else { "rolled back" };
            if when == "before" {
                assert!(outcome.contains(want), "{step}:{when}: {outcome}");
            } else if interrupted {
                // The command that settled it says so.
                assert!(stderr_of(&out).contains(&format!("an interrupted upgrade was found and {want}")), "{step}:{when}: {}", stderr_of(&out));
            }
            if step == "commit" {
                expect_version = "2.0.0";
            }
            assert_eq!(s.ids(), vec![id.to_string()], "after {step}:{when}");
            assert!(s.answers(), "nothing answers after {step}:{when}");
            assert_eq!(s.version(), format!("version={expect_version} hostname=app-one"), "after {step}:{when}");
            assert_eq!(s.ask("COUNT"), "1", "records after {step}:{when}");
            assert!(!journal.exists());
            // The id keeps its cgroup path and nothing of the upgrade is left in any hierarchy.
            assert_eq!(cgroup_of(&s.root, id), cgroup_before, "cgroup after {step}:{when}");
            if let Some(next) = &next {
                let left = cgroups_named(next);
                assert!(left.is_empty(), "cgroups left after {step}:{when}: {left:?}");
            }
        }
    }
}
