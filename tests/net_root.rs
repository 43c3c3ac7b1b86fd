//! The network module against the real kernel, as root. Every test makes its own namespaces
//! (`ip netns add molt-t-*`) and a Drop guard deletes them even when an assertion fails; the
//! "host" side of attach runs on a thread inside a test namespace, never in the root one.
//! `ip` is used here only to set up and check, never by the module itself.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use molt::net::{self, NetSpec};
use nix::sched::{setns, CloneFlags};

/// `ip netns add` sets up the shared /run/netns mount on first use; parallel tests must not race
/// on that.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Fails (never passes silently) when not run as root.
fn root() -> bool {
    assert!(nix::unistd::geteuid().is_root(), "needs root to create network namespaces; run as root");
    true
}

struct TestNs {
    name: String,
}

impl TestNs {
    fn new(tag: &str) -> TestNs {
        let name = format!("molt-t-{}-{tag}", std::process::id());
        let _g = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        // A leftover from a killed earlier run with the same pid would make `add` fail.
        if std::path::Path::new("/run/netns").join(&name).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(st.success(), "ip netns add {name}");
        TestNs { name }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip -n NS ARGS...`, returning stdout, or None when ip fails (e.g. no such device).
    fn ip(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run ip");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ip_ok(&self, args: &[&str]) -> String {
        self.ip(args)
            .unwrap_or_else(|| panic!("ip -n {} {args:?} failed", self.name))
    }

    /// Runs `f` on a thread that entered this namespace, re-raising its panic here.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        thread::scope(|s| {
            let h = s.spawn(move || {
                let f_ns = std::fs::File::open(&path).expect("open netns");
                setns(&f_ns, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _g = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        // Tests that delete a namespace on purpose leave nothing for the guard to do.
        if std::path::Path::new("/run/netns").join(&self.name).exists() {
            let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        }
    }
}

fn spec(gw: Option<&str>) -> NetSpec {
    let mut a = HashMap::new();
    a.insert(net::ANNOTATION_BRIDGE.to_string(), "moltbr0".to_string());
    a.insert(
        net::ANNOTATION_ADDRESS.to_string(),
        "10.88.0.5/24".to_string(),
    );
    if let Some(g) = gw {
        a.insert(net::ANNOTATION_GATEWAY.to_string(), g.to_string());
    }
    net::spec_from_annotations(&a)
        .expect("valid")
        .expect("some")
}

/// A listener inside `ns` on `ip` that answers one connection with `tag`. Bounded in time so a
/// failed test never leaves it waiting.
fn listen(ns: &TestNs, ip: &str, tag: &'static str) -> (thread::JoinHandle<()>, u16) {
    let path = ns.path();
    let ip: IpAddr = ip.parse().expect("ip");
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
        let l = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind in namespace");
        tx.send(l.local_addr().expect("addr").port())
            .expect("send port");
        l.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(tag.as_bytes());
                    return;
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("listener port");
    (h, port)
}

/// Connects from inside `ns` and returns what the listener said.
fn connect_from(ns: &TestNs, ip: &str, port: u16) -> String {
    let addr = SocketAddr::new(ip.parse().expect("ip"), port);
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = String::new();
        s.read_to_string(&mut got).expect("read");
        got
    })
}

fn mac_of(ns: &TestNs, dev: &str) -> String {
    let out = ns.ip_ok(&["-o", "link", "show", dev]);
    let mac = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {out}"));
    mac.to_string()
}

fn is_up(ns: &TestNs, dev: &str) -> bool {
    let out = ns.ip_ok(&["-o", "link", "show", dev]);
    let flags = out
        .split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or("");
    flags.split(',').any(|f| f == "UP")
}

#[test]
fn attach_configures_eth0_and_the_host_reaches_it() {
    if !root() {
        return;
    }
    let host = TestNs::new("h1");
    let ctr = TestNs::new("c1");
    let a = host
        .run(|| net::attach(&spec(Some("10.88.0.1")), "ctr-one", &ctr.path()))
        .expect("attach");
    assert_eq!(a.host_veth, net::host_veth_name("ctr-one"));
    assert_eq!(a.bridge, "moltbr0");
    assert_eq!(a.container_if, "eth0");

    assert!(ctr
        .ip_ok(&["-o", "addr", "show", "dev", "eth0"])
        .contains("inet 10.88.0.5/24"));
    assert!(is_up(&ctr, "eth0"));
    assert!(is_up(&ctr, "lo"));
    let default = ctr.ip_ok(&["route", "show", "default"]);
    assert!(default.contains("via 10.88.0.1 dev eth0"), "{default}");
    let hv = host.ip_ok(&["-o", "link", "show", &a.host_veth]);
    assert!(hv.contains("master moltbr0"), "{hv}");
    assert!(is_up(&host, &a.host_veth));
    assert!(is_up(&host, "moltbr0"));
    // The module leaves the bridge without an address; the test host gives it the gateway's.
    assert!(!host
        .ip_ok(&["-o", "addr", "show", "dev", "moltbr0"])
        .contains("inet "));

    host.ip_ok(&["addr", "add", "10.88.0.1/24", "dev", "moltbr0"]);
    let (l, port) = listen(&ctr, "10.88.0.5", "ctr-one");
    assert_eq!(connect_from(&host, "10.88.0.5", port), "ctr-one");
    l.join().expect("listener");

    host.run(|| net::detach(&a)).expect("detach");
    assert!(host.ip(&["link", "show", &a.host_veth]).is_none());
    assert!(
        ctr.ip(&["link", "show", "eth0"]).is_none(),
        "peer goes with the host end"
    );
    host.run(|| net::detach(&a))
        .expect("second detach is a no-op");
}

#[test]
fn snapshot_move_and_move_back_keep_identity() {
    if !root() {
        return;
    }
    let host = TestNs::new("h2");
    let old = TestNs::new("a2");
    let new = TestNs::new("b2");
    let a = host
        .run(|| net::attach(&spec(Some("10.88.0.1")), "ctr-move", &old.path()))
        .expect("attach");
    host.ip_ok(&["addr", "add", "10.88.0.1/24", "dev", "moltbr0"]);
    old.ip_ok(&[
        "route",
        "add",
        "10.99.0.0/16",
        "via",
        "10.88.0.1",
        "dev",
        "eth0",
        "metric",
        "50",
    ]);
    let mac = mac_of(&old, "eth0");

    let snap = net::snapshot(&old.path()).expect("snapshot");
    assert_eq!(snap.len(), 1, "{snap:?}");
    let eth0 = &snap[0];
    assert_eq!(eth0.name, "eth0");
    assert_eq!(eth0.mac.as_deref(), Some(mac.as_str()));
    assert!(eth0.up);
    assert!(
        eth0.addresses
            .iter()
            .any(|x| x.address.to_string() == "10.88.0.5/24"),
        "{eth0:?}"
    );
    assert!(
        eth0.routes
            .iter()
            .any(|r| r.destination.prefix == 0
                && r.gateway == Some("10.88.0.1".parse().expect("ip"))),
        "{eth0:?}"
    );
    assert!(
        eth0.routes
            .iter()
            .any(|r| r.destination.to_string() == "10.99.0.0/16" && r.metric == Some(50)),
        "{eth0:?}"
    );

    // The snapshot goes through the journal as JSON.
    let json = serde_json::to_string(&snap).expect("json");
    let snap: Vec<net::LinkIdentity> = serde_json::from_str(&json).expect("from json");

    net::move_links(&old.path(), &new.path(), &snap).expect("move_links");
    assert!(old.ip(&["link", "show", "eth0"]).is_none());
    assert_eq!(mac_of(&new, "eth0"), mac);
    assert!(is_up(&new, "eth0"));
    assert!(is_up(&new, "lo"));
    assert!(new
        .ip_ok(&["-o", "addr", "show", "dev", "eth0"])
        .contains("inet 10.88.0.5/24"));
    let routes = new.ip_ok(&["route", "show"]);
    assert!(
        routes.contains("default via 10.88.0.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.99.0.0/16 via 10.88.0.1 dev eth0") && routes.contains("metric 50"),
        "{routes}"
    );
    let v4 = |ids: &[net::LinkIdentity]| {
        let mut r: Vec<String> = ids[0]
            .routes
            .iter()
            .filter(|r| r.destination.addr.is_ipv4())
            .map(|r| format!("{r:?}"))
            .collect();
        r.sort();
        r
    };
    let again = net::snapshot(&new.path()).expect("snapshot new");
    assert_eq!(v4(&again), v4(&snap));

    // The same IP now answers from the new namespace.
    let (l, port) = listen(&new, "10.88.0.5", "new");
    assert_eq!(connect_from(&host, "10.88.0.5", port), "new");
    l.join().expect("listener");

    // Re-running after a crash: the link is already in `to`; nothing fails, nothing changes.
    net::move_links(&old.path(), &new.path(), &snap).expect("re-run move_links");
    assert_eq!(mac_of(&new, "eth0"), mac);

    // Rollback.
    net::move_links(&new.path(), &old.path(), &snap).expect("move back");
    assert!(new.ip(&["link", "show", "eth0"]).is_none());
    assert_eq!(mac_of(&old, "eth0"), mac);
    assert!(old
        .ip_ok(&["route", "show", "default"])
        .contains("via 10.88.0.1 dev eth0"));
    let (l, port) = listen(&old, "10.88.0.5", "old");
    assert_eq!(connect_from(&host, "10.88.0.5", port), "old");
    l.join().expect("listener");

    host.run(|| net::detach(&a)).expect("detach");
}

#[test]
fn attach_failures_leave_nothing_behind() {
    if !root() {
        return;
    }
    let host = TestNs::new("h3");
    let ctr = TestNs::new("c3");
    let veth = net::host_veth_name("ctr-fail");

    // A gateway off the subnet passes no annotation check (built by hand) but the kernel
    // refuses the route after the veth exists: attach must remove the veth again.
    let mut bad = spec(None);
    bad.gateway = Some("10.200.0.1".parse().expect("ip"));
    let e = host
        .run(|| net::attach(&bad, "ctr-fail", &ctr.path()))
        .expect_err("unreachable gateway");
    let msg = e.to_string();
    eprintln!("attach error as the user sees it: {msg}");
    assert!(
        msg.contains("eth0")
            && msg.contains(&ctr.path().display().to_string())
            && msg.contains("gateway"),
        "{msg}"
    );
    assert!(e.errno().is_some(), "{msg}");
    assert!(
        host.ip(&["link", "show", &veth]).is_none(),
        "host veth left behind"
    );
    assert!(
        ctr.ip(&["link", "show", "eth0"]).is_none(),
        "eth0 left behind"
    );

    let e = host
        .run(|| {
            net::attach(
                &spec(None),
                "ctr-fail",
                std::path::Path::new("/run/netns/molt-t-missing"),
            )
        })
        .expect_err("missing netns");
    assert!(e.to_string().contains("/run/netns/molt-t-missing"), "{e}");
    assert!(host.ip(&["link", "show", &veth]).is_none());

    // A second attach for the same container id finds the first's veth and refuses.
    let a = host
        .run(|| net::attach(&spec(None), "ctr-fail", &ctr.path()))
        .expect("attach");
    let other = TestNs::new("d3");
    let e = host
        .run(|| net::attach(&spec(None), "ctr-fail", &other.path()))
        .expect_err("duplicate");
    assert!(e.to_string().contains(&veth), "{e}");
    assert!(
        host.ip(&["link", "show", &veth]).is_some(),
        "the first attachment must survive"
    );
    assert!(other.ip(&["link", "show", "eth0"]).is_none());

    // A bridge name taken by a non-bridge is reported, not reused.
    host.ip_ok(&[
        "link", "add", "notabr", "type", "veth", "peer", "name", "notabr-p",
    ]);
    let mut s = spec(None);
    s.bridge = "notabr".into();
    let e = host
        .run(|| net::attach(&s, "ctr-other", &other.path()))
        .expect_err("not a bridge");
    assert!(
        e.to_string().contains("notabr") && e.to_string().contains("bridge"),
        "{e}"
    );

    host.run(|| net::detach(&a)).expect("detach");
}

#[test]
fn detach_after_the_container_namespace_died() {
    if !root() {
        return;
    }
    let host = TestNs::new("h4");
    let ctr = TestNs::new("c4");
    let a = host
        .run(|| net::attach(&spec(None), "ctr-dead", &ctr.path()))
        .expect("attach");
    drop(ctr);
    // Namespace teardown is asynchronous in the kernel; detach must succeed either way.
    host.run(|| net::detach(&a)).expect("detach");
    let deadline = Instant::now() + Duration::from_secs(5);
    while host.ip(&["link", "show", &a.host_veth]).is_some() {
        assert!(Instant::now() < deadline, "veth still there");
        thread::sleep(Duration::from_millis(50));
    }
    host.run(|| net::detach(&a)).expect("detach again");
}

#[test]
fn host_device_moves_with_addresses_and_mac() {
    if !root() {
        return;
    }
    let host = TestNs::new("h5");
    let ctr = TestNs::new("c5");
    // No dummy module on every kernel we run on; one end of a veth is a host device too.
    host.ip_ok(&[
        "link", "add", "d0", "type", "veth", "peer", "name", "d0-peer",
    ]);
    host.ip_ok(&[
        "link",
        "set",
        "d0",
        "address",
        "02:00:00:aa:bb:cc",
        "mtu",
        "1400",
    ]);
    host.ip_ok(&["addr", "add", "10.77.0.2/24", "dev", "d0"]);
    host.ip_ok(&["link", "set", "d0", "up"]);
    host.ip_ok(&[
        "link", "add", "d1", "type", "veth", "peer", "name", "d1-peer",
    ]);

    host.run(|| net::move_host_device("d0", Some("net1"), &ctr.path()))
        .expect("move d0");
    assert!(host.ip(&["link", "show", "d0"]).is_none());
    assert_eq!(mac_of(&ctr, "net1"), "02:00:00:aa:bb:cc");
    assert!(ctr
        .ip_ok(&["-o", "link", "show", "net1"])
        .contains("mtu 1400"));
    assert!(ctr
        .ip_ok(&["-o", "addr", "show", "dev", "net1"])
        .contains("inet 10.77.0.2/24"));
    assert!(is_up(&ctr, "net1"));

    // Without a new name the device keeps its own; it was down, and runtime-spec 1.3 says the
    // runtime MUST set it up in the container.
    host.run(|| net::move_host_device("d1", None, &ctr.path()))
        .expect("move d1");
    assert!(is_up(&ctr, "d1"));

    let e = host
        .run(|| net::move_host_device("nosuch0", None, &ctr.path()))
        .expect_err("missing");
    assert!(e.to_string().contains("nosuch0"), "{e}");
}

#[test]
fn set_lo_up_in_a_fresh_namespace() {
    if !root() {
        return;
    }
    let ns = TestNs::new("l6");
    assert!(!is_up(&ns, "lo"));
    net::set_lo_up(&ns.path()).expect("lo up");
    assert!(is_up(&ns, "lo"));
    net::set_lo_up(&ns.path()).expect("lo up again");
}

#[test]
fn ipv6_attach_and_move() {
    if !root() {
        return;
    }
    let host = TestNs::new("h7");
    let old = TestNs::new("a7");
    let new = TestNs::new("b7");
    let mut a = HashMap::new();
    a.insert(net::ANNOTATION_BRIDGE.to_string(), "moltbr6".to_string());
    a.insert(
        net::ANNOTATION_ADDRESS.to_string(),
        "fd00:88::5/64".to_string(),
    );
    a.insert(
        net::ANNOTATION_GATEWAY.to_string(),
        "fd00:88::1".to_string(),
    );
    let s = net::spec_from_annotations(&a)
        .expect("valid")
        .expect("some");
    let att = host
        .run(|| net::attach(&s, "ctr-v6", &old.path()))
        .expect("attach v6");
    assert!(old
        .ip_ok(&["-6", "-o", "addr", "show", "dev", "eth0"])
        .contains("inet6 fd00:88::5/64"));
    assert!(old
        .ip_ok(&["-6", "route", "show", "default"])
        .contains("via fd00:88::1 dev eth0"));

    let snap = net::snapshot(&old.path()).expect("snapshot");
    net::move_links(&old.path(), &new.path(), &snap).expect("move v6");
    assert!(new
        .ip_ok(&["-6", "-o", "addr", "show", "dev", "eth0"])
        .contains("inet6 fd00:88::5/64"));
    let routes = new.ip_ok(&["-6", "route", "show"]);
    assert!(
        routes.contains("default via fd00:88::1 dev eth0"),
        "{routes}"
    );
    host.run(|| net::detach(&att)).expect("detach");
}

#[test]
fn a_bridge_molt_made_goes_with_its_last_port_and_the_hosts_own_stays() {
    if !root() {
        return;
    }
    let host = TestNs::new("h9");
    let (c1, c2) = (TestNs::new("c9a"), TestNs::new("c9b"));
    let mut s2 = spec(None);
    s2.address = "10.88.0.6/24".parse().expect("cidr");
    let a1 = host.run(|| net::attach(&spec(None), "br-one", &c1.path())).expect("attach one");
    let a2 = host.run(|| net::attach(&s2, "br-two", &c2.path())).expect("attach two");
    host.run(|| net::detach(&a1)).expect("detach one");
    assert!(host.ip(&["link", "show", "moltbr0"]).is_some(), "still has a port");
    host.run(|| net::detach(&a2)).expect("detach two");
    assert!(host.ip(&["link", "show", "moltbr0"]).is_none(), "molt's bridge outlived its last container: {:?}", host.ip(&["-d", "link", "show"]));
    // A bridge the host made is the host's: it stays.
    host.ip_ok(&["link", "add", "hostbr0", "type", "bridge"]);
    let mut own = spec(None);
    own.bridge = "hostbr0".into();
    let a3 = host.run(|| net::attach(&own, "br-three", &c1.path())).expect("attach to the host's bridge");
    host.run(|| net::detach(&a3)).expect("detach three");
    assert!(host.ip(&["link", "show", "hostbr0"]).is_some(), "the host's bridge was removed");
}
