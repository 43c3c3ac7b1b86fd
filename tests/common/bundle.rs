//! A lab of hosts on this machine for `molt bundle`: an operator network namespace joined by a
//! veth to each host's namespace, Debian's sshd listening in each host namespace with its own
//! config, host key and an authorized key made here, and a molt root per host. Everything is
//! removed on drop (sshd and its sessions by pid, the namespaces, the roots, the keys).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::app::HostNet;
use super::*;

pub const PORT: u16 = 2222;

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Every descendant of `pid`, deepest first (sshd forks a process per connection).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = vec![];
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let ppid = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.extend(descendants(child));
            out.push(child);
        }
    }
    out
}

pub struct SshHost {
    pub name: String,
    pub addr: String,
    pub net: HostNet,
    pub root: Root,
    sshd: Option<Child>,
    dir: TempDir,
}

impl SshHost {
    /// molt on this host, in its network namespace.
    pub fn molt(&self, args: &[&str]) -> Output {
        self.net.molt(&self.root, args)
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        if let Some(mut child) = self.sshd.take() {
            // Deepest first, each reaped by its parent before that parent goes.
            for p in descendants(child.id()) {
                // SAFETY: kill of pids found under our own sshd.
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
                wait_until(2, || !Path::new(&format!("/proc/{p}")).exists());
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = &self.dir;
    }
}

/// A container the lab starts before a rollout.
pub struct Running {
    pub id: String,
    pub role: String,
    pub host: String,
    pub bundle: Bundle,
}

pub struct Lab {
    /// Prefix of every container id of this lab (ids name cgroups: tests run side by side).
    pub tag: String,
    pub op: HostNet,
    pub keys: TempDir,
    pub hosts: Vec<SshHost>,
    /// The operator's own host (`local`), in the operator's namespace.
    pub local: Root,
    pub containers: Vec<Running>,
    pub files: TempDir,
    /// Every ssh host's `connect_timeout` in the manifest (the VM lab's hosts are slow to shake
    /// hands under emulation); molt's default when None.
    pub connect_timeout: Option<&'static str>,
}

/// The network of the test application on each lab host's bridge.
pub const APP_NET: &str = "10.89.0";

/// A bundle running `args` at `version` with the test application's environment.
pub fn app_at(version: &str, args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    b.config["process"]["env"] = serde_json::json!(["PATH=/bin:/sbin:/usr/bin:/usr/sbin", format!("APP_VERSION={version}")]);
    b.config["annotations"] = serde_json::json!({"org.opencontainers.image.version": version});
    b.write();
    b
}

/// An OCI archive at `to` of one busybox image running `sleep 3600`, tagged `tag`, with
/// `with_labels` (its version among them).
pub fn sleep_image_archive(to: &Path, tag: &str, with_labels: serde_json::Value) {
    use super::image::{config, host_arch, rootfs_layer, Layout, LAYER_GZIP};
    let mut l = Layout::new();
    let img = l.image(&config(host_arch(), &["sleep", "3600"], &["PATH=/bin:/sbin"], "", "/", with_labels), &[(LAYER_GZIP, rootfs_layer())]);
    l.add(img, Some(tag));
    l.write_index();
    l.archive(to);
}

/// A bundle of busybox `sleep` at `version`.
pub fn sleep_bundle(version: &str, args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    b.config["annotations"] = serde_json::json!({"org.opencontainers.image.version": version});
    b.write();
    b
}

impl Lab {
    /// `ssh_hosts` hosts with sshd, `down` more with an address and no sshd (unreachable).
    pub fn new(ssh_hosts: usize, down: usize) -> Lab {
        let op = HostNet::new();
        op.ip(&["link", "set", "lo", "up"]);
        let mut hosts = vec![];
        for i in 1..=ssh_hosts + down {
            let net = HostNet::new();
            let addr = format!("10.213.{i}.2");
            let link = format!("vh{i}");
            ok(Command::new("ip").args(["-n", &op.name, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", &net.name]));
            op.ip(&["addr", "add", &format!("10.213.{i}.1/24"), "dev", &link]);
            op.ip(&["link", "set", &link, "up"]);
            net.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            net.ip(&["link", "set", "eth0", "up"]);
            net.ip(&["link", "set", "lo", "up"]);
            hosts.push((format!("h{i}"), net, addr, i <= ssh_hosts));
        }
        Lab::assemble(op, hosts)
    }

    /// Over network namespaces that exist already (the VM lab's app hosts, reached from `op`):
    /// (name, namespace, address); every one gets sshd.
    pub fn on(op: HostNet, hosts: Vec<(String, HostNet, String)>) -> Lab {
        Lab::assemble(op, hosts.into_iter().map(|(n, net, a)| (n, net, a, true)).collect())
    }

    /// Keys, the ssh config and known hosts, sshd on each host marked to run it.
    fn assemble(op: HostNet, hosts: Vec<(String, HostNet, String, bool)>) -> Lab {
        assert!(Path::new("/usr/sbin/sshd").exists(), "/usr/sbin/sshd missing: scripts/setup installs openssh-server");
        // Debian's sshd insists on its privilege separation directory.
        let _ = fs::create_dir_all("/run/sshd");
        let keys = TempDir::new("molt-lab-keys");
        ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "molt-lab", "-f"]).arg(keys.join("id")));
        let mut known = String::new();
        let mut config = format!("Host *\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n", keys.join("known_hosts").display());
        let mut out = vec![];
        for (name, net, addr, up) in hosts {
            let dir = TempDir::new("molt-lab-sshd");
            let mut host = SshHost { name: name.clone(), addr: addr.clone(), net, root: Root::new(), sshd: None, dir };
            config.push_str(&format!(
                "Host {name}\n  HostName {addr}\n  Port {PORT}\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n",
                keys.join("id").display()
            ));
            if up {
                host.sshd = Some(start_sshd(&host, &keys));
                let pubkey = fs::read_to_string(host.dir.join("host_key.pub")).unwrap();
                known.push_str(&format!("[{addr}]:{PORT} {pubkey}"));
                let a = format!("{addr}:{PORT}");
                let listening = op.client(move || wait_until(20, || std::net::TcpStream::connect(a.as_str()).is_ok()));
                assert!(listening, "sshd of {name} never listened: {}", fs::read_to_string(host.dir.join("sshd.log")).unwrap_or_default());
            }
            out.push(host);
        }
        fs::write(keys.join("known_hosts"), known).unwrap();
        fs::write(keys.join("ssh_config"), config).unwrap();
        let tag = format!("b{}x{}", std::process::id() % 100_000, unique("").rsplit('-').next().unwrap_or("0"));
        Lab { tag, op, keys, hosts: out, local: Root::new(), containers: vec![], files: TempDir::new("molt-lab-docs"), connect_timeout: None }
    }

    /// Every sshd's log (for a failure message).
    pub fn sshd_logs(&self) -> String {
        self.hosts.iter().map(|h| format!("--- sshd of {}:\n{}", h.name, fs::read_to_string(h.dir.join("sshd.log")).unwrap_or_default())).collect()
    }

    /// How many ssh connections `host`'s sshd has accepted so far (a multiplexed session opens
    /// one per host and runs every command over it).
    pub fn ssh_connections(&self, host: &str) -> usize {
        fs::read_to_string(self.host(host).dir.join("sshd.log")).unwrap_or_default().matches("Accepted publickey").count()
    }

    pub fn host(&self, name: &str) -> &SshHost {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name}"))
    }

    pub fn id(&self, short: &str) -> String {
        format!("{}-{short}", self.tag)
    }

    /// molt as a host sees it: an ssh host's namespace and root, or the operator's for "local".
    pub fn molt_on(&self, host: &str, args: &[&str]) -> Output {
        if host == "local" {
            self.op.molt(&self.local, args)
        } else {
            self.host(host).molt(args)
        }
    }

    /// Start (or only create) a `sleep` container at `version` on `host`.
    pub fn start(&mut self, short: &str, role: &str, host: &str, version: &str, start: bool) {
        let id = self.id(short);
        let b = sleep_bundle(version, &["sleep", "3600"]);
        let dir = b.dir.display().to_string();
        let verb = if start { vec!["run", "--detach"] } else { vec!["create"] };
        let mut args = verb.clone();
        args.extend(["--bundle", &dir, &id]);
        let out = self.molt_on(host, &args);
        assert!(out.status.success(), "{args:?} on {host}: {}", stderr_of(&out));
        self.containers.push(Running { id, role: role.into(), host: host.into(), bundle: b });
    }

    /// A loop volume of its own for container `short` (an ext4 image in the lab's files).
    fn own_volume(&self, short: &str) -> serde_json::Value {
        let img = self.files.join(format!("{short}.img"));
        let f = fs::File::create(&img).unwrap();
        f.set_len(16 << 20).unwrap();
        ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        super::app::loop_volume(&img)
    }

    /// As `start`, on a loop volume of its own at /data holding a file `who` with its id: each
    /// container of a role has its own volume, as in the mission's bundle.
    pub fn start_with_volume(&mut self, short: &str, role: &str, host: &str, version: &str) {
        let volume = self.own_volume(short);
        self.start_on(short, role, host, version, volume);
    }

    /// As `start`, with `volume` (an OCI mount at /data: loop, NFS, iSCSI) written with its id.
    pub fn start_on(&mut self, short: &str, role: &str, host: &str, version: &str, volume: serde_json::Value) {
        self.start_bundle(short, role, host, sleep_bundle(version, &["sleep", "3600"]), volume);
    }

    /// molt's test application (tests/app) at `version` on `host`, reached at `ip` on the host's
    /// bridge (APP_NET; the host has .1 there), on a loop volume of its own holding `who`.
    pub fn start_app(&mut self, short: &str, role: &str, host: &str, version: &str, ip: &str) {
        let bridge = self.net_of(host).bridge.clone();
        let mut b = app_at(version, &["/bin/molt-testapp"]);
        let ann = &mut b.config["annotations"];
        ann["io.molt.net.bridge"] = serde_json::json!(bridge);
        ann["io.molt.net.address"] = serde_json::json!(format!("{ip}/24"));
        ann["io.molt.net.gateway"] = serde_json::json!(format!("{APP_NET}.1"));
        let volume = self.own_volume(short);
        self.start_bundle(short, role, host, b, volume);
        // The bridge exists now (molt made it): the host gets its address there, once.
        let net = self.net_of(host);
        if !net.ip(&["-o", "addr", "show", "dev", &bridge]).contains(&format!("{APP_NET}.1/")) {
            net.ip(&["addr", "add", &format!("{APP_NET}.1/24"), "dev", &bridge]);
        }
        assert!(self.answers(host, ip).starts_with(&format!("version={version} ")), "{short} at {ip} on {host}");
    }

    /// `b` run as `short` with `volume` at /data, its id written there.
    fn start_bundle(&mut self, short: &str, role: &str, host: &str, mut b: Bundle, volume: serde_json::Value) {
        let id = self.id(short);
        b.config["mounts"].as_array_mut().unwrap().push(volume);
        b.write();
        let dir = b.dir.display().to_string();
        let out = self.molt_on(host, &["run", "--detach", "--bundle", &dir, &id]);
        assert!(out.status.success(), "run {id} on {host}: {}", stderr_of(&out));
        self.containers.push(Running { id: id.clone(), role: role.into(), host: host.into(), bundle: b });
        let out = self.molt_on(host, &["exec", &id, "sh", "-c", &format!("echo {id} > /data/who")]);
        assert!(out.status.success(), "write /data/who in {id}: {}", stderr_of(&out));
    }

    /// The network namespace of a lab host (`local`: the operator's).
    pub fn net_of(&self, host: &str) -> &HostNet {
        if host == "local" {
            &self.op
        } else {
            &self.host(host).net
        }
    }

    /// What the test application at `ip` on `host` answers to VERSION, asked from that host;
    /// a refused or unanswered connection is tried again for up to 30 s (a container created
    /// afresh has a new MAC, which the host's neighbour cache learns on its next ARP).
    pub fn answers(&self, host: &str, ip: &str) -> String {
        let addr: std::net::SocketAddr = format!("{ip}:8080").parse().unwrap();
        self.net_of(host).client(move || {
            let ask = || -> std::io::Result<String> {
                let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
                s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
                std::io::Write::write_all(&mut s, b"VERSION\n")?;
                let mut reply = String::new();
                std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut reply)?;
                Ok(reply.trim().to_string())
            };
            let mut last = String::new();
            wait_until(30, || match ask() {
                Ok(r) => {
                    last = r;
                    true
                }
                Err(e) => {
                    last = format!("error: {e}");
                    false
                }
            });
            last
        })
    }

    /// What a container's own volume says it is (`cat /data/who` inside it).
    pub fn volume_of(&self, short: &str) -> String {
        let id = self.id(short);
        let c = self.containers.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no container {id}"));
        stdout_of(&self.molt_on(&c.host, &["exec", &id, "cat", "/data/who"])).trim().to_string()
    }

    /// The running version of a container, from `molt state` on its host.
    pub fn version(&self, short: &str) -> String {
        let id = self.id(short);
        let c = self.containers.iter().find(|c| c.id == id).unwrap_or_else(|| panic!("no container {id}"));
        let out = self.molt_on(&c.host, &["state", &id]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        format!("{} {}", v["status"].as_str().unwrap_or("?"), v["annotations"]["org.opencontainers.image.version"].as_str().unwrap_or("?"))
    }

    /// The manifest for the containers started so far, over the lab's hosts (h1 by its ssh
    /// config name, the others by address, user, port and key) and `local`.
    pub fn manifest(&self, roles: &[&str]) -> PathBuf {
        let bin = molt_bin().display().to_string();
        let cfg = self.keys.join("ssh_config");
        let mut hosts = serde_json::Map::new();
        hosts.insert("local".into(), serde_json::json!({"local": true, "root": self.local.path, "molt": bin}));
        for h in &self.hosts {
            let mut v = if h.name == "h1" {
                serde_json::json!({"ssh": "h1", "ssh_config": cfg, "root": h.root.path, "molt": bin})
            } else {
                serde_json::json!({"ssh": h.addr, "user": "root", "port": PORT, "identity": self.keys.join("id"), "ssh_config": cfg, "root": h.root.path, "molt": bin})
            };
            if let Some(t) = self.connect_timeout {
                v["connect_timeout"] = serde_json::json!(t);
            }
            hosts.insert(h.name.clone(), v);
        }
        let containers: Vec<_> = self.containers.iter().map(|c| serde_json::json!({"id": c.id, "role": c.role, "host": c.host})).collect();
        let m = serde_json::json!({"name": self.tag, "roles": roles, "hosts": hosts, "containers": containers});
        let p = self.files.join("manifest.json");
        fs::write(&p, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        p
    }

    /// An upgrade document to `version`; `roles` maps a role to its new bundle directory.
    pub fn upgrade_doc(&self, name: &str, doc: serde_json::Value) -> PathBuf {
        let p = self.files.join(name);
        fs::write(&p, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        p
    }

    /// `molt bundle ARGS` run by the operator, in the operator's namespace.
    pub fn bundle(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.op.path.display())).arg(molt_bin()).arg("bundle").args(args).env("MOLT_BUNDLE_STATE", self.files.join("state"));
        run_to_files(&mut cmd)
    }

    /// The operator started with its stdout on a pipe, to be read line by line (and killed).
    pub fn spawn_bundle(&self, args: &[&str]) -> Child {
        Command::new("nsenter")
            .arg(format!("--net={}", self.op.path.display()))
            .arg(molt_bin())
            .arg("bundle")
            .args(args)
            .env("MOLT_BUNDLE_STATE", self.files.join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn molt bundle")
    }

    /// A file in a host's molt root.
    pub fn root_file(&self, host: &str, name: &str) -> PathBuf {
        if host == "local" {
            self.local.path.join(name)
        } else {
            self.host(host).root.path.join(name)
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Containers first (each Root's drop), while their hosts still exist; then sshd.
        let containers = std::mem::take(&mut self.containers);
        for c in containers.iter().rev() {
            let _ = self.molt_on(&c.host, &["delete", "--force", &c.id]);
        }
    }
}

fn start_sshd(h: &SshHost, keys: &Path) -> Child {
    let d = &h.dir;
    ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", &h.name, "-f"]).arg(d.join("host_key")));
    fs::copy(keys.join("id.pub"), d.join("authorized_keys")).unwrap();
    let config = format!(
        "ListenAddress {}:{PORT}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
         MaxSessions 100\nMaxStartups 100\nLogLevel VERBOSE\n",
        h.addr,
        d.join("host_key").display(),
        d.join("sshd.pid").display(),
        d.join("authorized_keys").display()
    );
    fs::write(d.join("sshd_config"), config).unwrap();
    Command::new("nsenter")
        .arg(format!("--net={}", h.net.path.display()))
        .args(["/usr/sbin/sshd", "-D", "-e", "-f"])
        .arg(d.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(d.join("sshd.log")).unwrap())
        .spawn()
        .expect("start sshd")
}

/// The operator's stdout as it comes, line by line, each given to `on_line` until it returns
/// false; everything read.
pub fn follow(child: &mut Child, mut on_line: impl FnMut(&str) -> bool) -> String {
    let mut seen = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let line = line.unwrap_or_default();
            seen.push_str(&line);
            seen.push('\n');
            if !on_line(&line) {
                break;
            }
        }
    }
    seen
}

/// The operator's ssh control directories of a molt that was killed (its pid in the name).
pub fn remove_control_dirs_of(pid: u32) {
    for e in fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&format!("molt-ssh-{pid}-")) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The body of tests/bundle.rs's `bench_bundle_scaling` (see there).
pub fn bench_scaling() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.into());
    let n: usize = env("MOLT_BENCH_CONTAINERS", "30").parse().expect("MOLT_BENCH_CONTAINERS");
    let pars: Vec<usize> = env("MOLT_BENCH_PARALLEL", "1,3,10").split(',').map(|p| p.trim().parse().expect("MOLT_BENCH_PARALLEL")).collect();
    let rounds: usize = env("MOLT_BENCH_ROUNDS", "2").parse().expect("MOLT_BENCH_ROUNDS");
    // The role's health gate `running:DUR`: each host's `molt upgrade` keeps the new application
    // running that long before it commits, as a real application's start-up and gate take time.
    let gate_ms: Option<u64> = std::env::var("MOLT_BENCH_GATE_WAIT")
        .ok()
        .filter(|g| !g.is_empty())
        .map(|g| g.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0).map(|s| (s * 1000.0).round() as u64).expect("MOLT_BENCH_GATE_WAIT: seconds above 0"));
    // Declared before the lab: dropped after it, once its containers and sshd are gone.
    let cpu = CpuAccount::new();
    let mut lab = Lab::new(2, 0);
    let hosts = ["h1", "h2", "local"];
    for i in 0..n {
        lab.start(&format!("c{i}"), "app", hosts[i % 3], "1.0.0", true);
    }
    let manifest = lab.manifest(&["app"]).display().to_string();
    // Per rollout: --parallel, wall s, CPU user s, CPU sys s, median ms of one container's upgrade.
    let mut times: Vec<(usize, f64, f64, f64, f64)> = vec![];
    let mut bundles = vec![];
    let mut minor = 0;
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 { pars.clone() } else { pars.iter().rev().copied().collect() };
        for &p in &order {
            minor += 1;
            let v = format!("1.{minor}.0");
            let b = sleep_bundle(&v, &["sleep", "3600"]);
            let mut doc = serde_json::json!({"version": v, "roles": {"app": {"bundle": b.dir}}, "order": ["app"], "batch_size": p, "stop_signal": "SIGKILL"});
            if let Some(ms) = gate_ms {
                doc["roles"]["app"]["health"] = serde_json::json!(format!("running:{ms}ms"));
            }
            let upgrade = lab.upgrade_doc(&format!("u{minor}.json"), doc).display().to_string();
            bundles.push(b);
            let c0 = cpu.as_ref().map(CpuAccount::used);
            let t0 = std::time::Instant::now();
            let out = lab.bundle(&["upgrade", &manifest, &upgrade, "--yes", "--format", "json"]);
            let secs = t0.elapsed().as_secs_f64();
            let (user, sys) = match (cpu.as_ref().map(CpuAccount::used), c0) {
                (Some((u1, s1)), Some((u0, s0))) => (u1 - u0, s1 - s0),
                _ => (f64::NAN, f64::NAN),
            };
            assert!(out.status.success(), "rollout to {v} at --parallel {p}: {}\n{}", stdout_of(&out), stderr_of(&out));
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
            let up = s["containers"].as_array().map(|c| c.iter().filter(|d| d["outcome"] == "upgraded").count()).unwrap_or(0);
            assert_eq!(up, n, "every container upgraded to {v}: {s}");
            let mut each: Vec<f64> = s["containers"].as_array().map(|c| c.iter().filter_map(|d| d["millis"].as_f64()).collect()).unwrap_or_default();
            // The gate was waited on the hosts, by each container's own upgrade: none took less.
            if let Some(ms) = gate_ms {
                let short: Vec<_> = each.iter().filter(|m| **m < ms as f64).collect();
                assert!(each.len() == n && short.is_empty(), "every upgrade held its {ms} ms gate: {short:?} ms\n{s}");
            }
            each.sort_by(|a, b| a.total_cmp(b));
            let each = each.get(each.len() / 2).copied().unwrap_or(f64::NAN);
            eprintln!("bench-bundle: round {} --parallel {p}: {n} containers in {secs:.1} s, CPU user {user:.1} s sys {sys:.1} s, one upgrade (median) {each:.0} ms", round + 1);
            if std::env::var("MOLT_BENCH_VERBOSE").is_ok() {
                eprintln!("{s}");
            }
            times.push((p, secs, user, sys, each));
        }
    }
    let gate = match gate_ms {
        None => "no health gate (each `molt upgrade` commits once the new application runs)".to_string(),
        Some(ms) => format!(
            "the role's health gate `running:{ms}ms` (each `molt upgrade`, on its host, keeps the new application \
             running {ms} ms before it commits; every container's time was checked to hold it)"
        ),
    };
    let mut md = format!(
        "{n} containers (busybox sleep, one role) over 3 hosts (2 over ssh in network namespaces, 1 local), \
         {gate}, {rounds} rounds, --parallel order alternating; a rollout's wall time includes ssh, shipping the \
         role's bundle once per host and every `molt upgrade`. A batch is as wide as --parallel and the next \
         starts when it ends: the ideal speed-up is the ratio of batches. CPU is user and system time of everything \
         the bench started (the operator's molt and ssh, both sshd with their sessions, every `molt upgrade` \
         on every host), from a cpuacct cgroup of its own; CPU / wall is how many of the cores it kept busy. \
         \"One upgrade\" is a container's time as the operator sees it (its `molt upgrade` over ssh).\n\n\
         | --parallel | rollouts | batches | median s | s per container | speed-up vs --parallel {} | ideal (batches) | CPU s (user + sys) | CPU / wall | one upgrade ms |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        pars[0]
    );
    let batches = |p: usize| n.div_ceil(p.max(1));
    let median = |p: usize, f: fn(&(usize, f64, f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = times.iter().filter(|t| t.0 == p).map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        }
    };
    let base = median(pars[0], |t| t.1);
    for &p in &pars {
        let (m, user, sys, each) = (median(p, |t| t.1), median(p, |t| t.2), median(p, |t| t.3), median(p, |t| t.4));
        md.push_str(&format!(
            "| {p} | {rounds} | {} | {m:.1} | {:.2} | {:.1}x | {:.1}x | {:.1} ({user:.1} + {sys:.1}) | {:.2} | {each:.0} |\n",
            batches(p),
            m / n as f64,
            base / m,
            batches(pars[0]) as f64 / batches(p) as f64,
            user + sys,
            (user + sys) / m
        ));
    }
    if cpu.is_none() {
        md.push_str("\nCPU not measured: no cgroup v1 cpuacct hierarchy at /sys/fs/cgroup/cpuacct.\n");
    }
    println!("{md}");
    if let Ok(path) = std::env::var("MOLT_BENCH_OUT") {
        fs::write(&path, &md).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

/// A cgroup v1 cpuacct group of the bench's own that this process (so everything it starts
/// after) is moved into; on drop it moves back and the group is removed. None where the host has
/// no cpuacct hierarchy (pure cgroup v2).
pub struct CpuAccount {
    dir: PathBuf,
    was: PathBuf,
}

impl CpuAccount {
    pub fn new() -> Option<CpuAccount> {
        let top = Path::new("/sys/fs/cgroup/cpuacct");
        if !top.join("cpuacct.usage_user").exists() {
            return None;
        }
        let mine = fs::read_to_string("/proc/self/cgroup").ok()?;
        let rel = mine.lines().find_map(|l| l.split(':').nth(2).filter(|_| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == "cpuacct"))))?;
        let was = top.join(rel.trim_start_matches('/'));
        let dir = top.join(format!("molt-bundle-bench-{}", std::process::id()));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).unwrap_or_else(|e| panic!("{}/cgroup.procs: {e}", dir.display()));
        Some(CpuAccount { dir, was })
    }

    /// User and system CPU seconds used in the group so far.
    pub fn used(&self) -> (f64, f64) {
        let ns = |f: &str| fs::read_to_string(self.dir.join(f)).ok().and_then(|t| t.trim().parse::<f64>().ok()).unwrap_or(f64::NAN) / 1e9;
        (ns("cpuacct.usage_user"), ns("cpuacct.usage_sys"))
    }
}

impl Drop for CpuAccount {
    fn drop(&mut self) {
        let _ = fs::write(self.was.join("cgroup.procs"), std::process::id().to_string());
        // Empty once every process the bench started has exited.
        wait_until(10, || fs::remove_dir(&self.dir).is_ok());
    }
}
