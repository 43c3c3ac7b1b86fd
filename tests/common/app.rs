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
    pub root: Root,
    pub net: HostNet,
    pub img_dir: PathBuf,
    pub volume: serde_json::Value,
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
        let root = Root::new();
        let v1 = app_bundle("1.0.0", "app-one", &net, &volume, &[]);
        let dir = v1.write();
        let out = net.molt(&root, &["run", "--detach", "--bundle", &dir, id]);
        assert!(out.status.success(), "run v1: {}", stderr_of(&out));
        // The bridge exists now (molt made it); give the test host an address on it.
        net.ip(&["addr", "add", &format!("{GW}/24"), "dev", &net.bridge]);
        let ok = net.client(|| wait_until(10, || request("VERSION").is_ok()));
        assert!(ok, "v1 never answered on {IP}:8080");
        Setup { root, net, img_dir, volume, v1 }
    }

    pub fn mac(&self, id: &str) -> String {
        let pid = self.root.state(id)["pid"].as_i64().unwrap();
        let out = Command::new("nsenter").arg(format!("--net=/proc/{pid}/ns/net")).args(["ip", "-o", "link", "show", "eth0"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default().to_string()
    }

    pub fn version(&self) -> String {
        self.net.client(|| request("VERSION")).unwrap_or_else(|e| format!("error: {e}"))
    }

    pub fn ids(&self) -> Vec<String> {
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

