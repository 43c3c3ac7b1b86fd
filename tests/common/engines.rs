//! For tests/engines.rs: engines (dockerd, podman, containerd) started by the test itself with roots,
//! state, sockets, bridge and cgroup parent of their own; commands with a timeout; the host's state
//! before and after, so that whatever an engine leaves behind is found, reported and removed.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::unique;

/// What a command did: exit code (-1 when killed by a signal or the timeout), stdout, stderr.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub out: String,
    pub err: String,
    pub what: String,
}

impl Out {
    /// Success, or an error that names the command and shows what it printed.
    pub fn ok(self) -> Result<String, String> {
        if self.code == 0 {
            Ok(self.out)
        } else {
            Err(self.describe())
        }
    }

    pub fn describe(&self) -> String {
        format!("`{}` exited {}:\nstdout: {}\nstderr: {}", self.what, self.code, self.out.trim_end(), self.err.trim_end())
    }
}

/// Run with stdout/stderr in files (a detached container may inherit them), `stdin` fed from a
/// file, killed after `secs`.
pub fn run(cmd: &mut Command, stdin: Option<&str>, secs: u64) -> Out {
    let what = format!("{} {}", cmd.get_program().to_string_lossy(), cmd.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
    let base = std::env::temp_dir().join(unique("molt-eng-out"));
    let (o, e, i) = (base.with_extension("out"), base.with_extension("err"), base.with_extension("in"));
    let input = match stdin {
        Some(s) => {
            let _ = fs::write(&i, s);
            fs::File::open(&i).map(Stdio::from).unwrap_or_else(|_| Stdio::null())
        }
        None => Stdio::null(),
    };
    let (Ok(fo), Ok(fe)) = (fs::File::create(&o), fs::File::create(&e)) else {
        return Out { code: -1, out: String::new(), err: format!("cannot create {}", o.display()), what };
    };
    let child = cmd.stdin(input).stdout(fo).stderr(fe).spawn();
    let code = match child {
        Err(err) => {
            let _ = fs::remove_file(&i);
            return Out { code: -1, out: String::new(), err: format!("spawn: {err}"), what };
        }
        Ok(mut c) => wait_timeout(&mut c, secs),
    };
    let mut out = Out { code, out: fs::read_to_string(&o).unwrap_or_default(), err: fs::read_to_string(&e).unwrap_or_default(), what };
    if code == -2 {
        out.code = -1;
        out.err.push_str(&format!("\n(killed after {secs} s: timeout)"));
    }
    for f in [o, e, i] {
        let _ = fs::remove_file(f);
    }
    out
}

/// Exit code; -1 for a signal, -2 when the timeout killed it.
fn wait_timeout(c: &mut Child, secs: u64) -> i32 {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        match c.try_wait() {
            Ok(Some(st)) => return st.code().unwrap_or(-1),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = c.kill();
                let _ = c.wait();
                return -2;
            }
        }
    }
}

pub fn sh(script: &str) -> Out {
    run(Command::new("sh").args(["-c", script]), None, 60)
}

/// A daemon started by a test; Drop stops it (SIGTERM, then SIGKILL after 20 s).
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Daemon, String> {
        let f = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let f2 = f.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        use std::os::unix::process::CommandExt;
        // Its own process group: a Ctrl-C of the test does not reach it before Drop does.
        let child = cmd.stdin(Stdio::null()).stdout(f).stderr(f2).process_group(0).spawn().map_err(|e| format!("start {name}: {e}"))?;
        Ok(Daemon { name: name.into(), child: Some(child), log: log.to_path_buf() })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Wait until `ready` holds, or fail with the end of the daemon's log.
    pub fn wait_ready(&mut self, secs: u64, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(format!("{} exited ({st}) before it was ready; log:\n{}", self.name, self.log_tail()));
                }
            }
            if ready() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("{} not ready after {secs} s; log:\n{}", self.name, self.log_tail()))
    }

    pub fn log_tail(&self) -> String {
        let s = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            if wait_timeout(&mut c, 20) == -2 {
                eprintln!("{}: did not stop on SIGTERM within 20 s, killed", self.name);
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What an engine may leave on the host, recorded before it starts.
pub struct HostSnapshot {
    links: BTreeSet<String>,
    netns: BTreeSet<String>,
    iptables: Vec<(String, BTreeSet<String>)>,
}

const TABLES: [&str; 2] = ["filter", "nat"];

fn links() -> BTreeSet<String> {
    fs::read_dir("/sys/class/net").map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect()).unwrap_or_default()
}

fn netns() -> BTreeSet<String> {
    fs::read_dir("/run/netns").map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect()).unwrap_or_default()
}

fn iptables_lines(table: &str) -> BTreeSet<String> {
    let o = run(Command::new("iptables-save").args(["-t", table]), None, 30);
    o.out.lines().filter(|l| l.starts_with('-') || l.starts_with(':')).map(|l| if l.starts_with(':') { l.split(' ').next().unwrap_or(l).to_string() } else { l.to_string() }).collect()
}

impl HostSnapshot {
    pub fn take() -> HostSnapshot {
        HostSnapshot { links: links(), netns: netns(), iptables: TABLES.iter().map(|t| (t.to_string(), iptables_lines(t))).collect() }
    }

    /// Remove what appeared since the snapshot and is ours (`ours` says so for a name), and describe
    /// it. Network links and netns of other tests running at the same time are not touched.
    pub fn clean_since(&self, ours: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut found = vec![];
        // Decide first, delete after: `ours` may look at a link's master, which a deletion changes.
        let new_links: Vec<String> = links().difference(&self.links).filter(|l| ours(l)).cloned().collect();
        for l in new_links {
            found.push(format!("network link {l}"));
            let _ = sh(&format!("ip link del {l}"));
        }
        for n in netns().difference(&self.netns) {
            if ours(n) {
                found.push(format!("netns {n}"));
                let _ = sh(&format!("ip netns del {n}"));
            }
        }
        for (table, before) in &self.iptables {
            let now = iptables_lines(table);
            for rule in now.difference(before).filter(|r| r.starts_with("-A ")) {
                found.push(format!("iptables -t {table} {rule}"));
                let del = rule.replacen("-A ", "-D ", 1);
                let _ = sh(&format!("iptables -t {table} {del}"));
            }
            for chain in now.difference(before).filter(|r| r.starts_with(':')) {
                found.push(format!("iptables -t {table} chain {}", &chain[1..]));
                let _ = sh(&format!("iptables -t {table} -F {0} && iptables -t {table} -X {0}", &chain[1..]));
            }
        }
        found
    }
}

/// Mounts of this process's namespace whose mount point is under `dir`; unmounted (lazily,
/// deepest first) and described.
pub fn unmount_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    let mut points: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|p| p == &d || p.starts_with(&format!("{d}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in &points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
    points.into_iter().map(|p| format!("mount {p}")).collect()
}

/// Processes whose command line mentions `needle` (not this test process); killed and described.
pub fn kill_procs_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = vec![];
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) || pid == me {
            continue;
        }
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            found.push(format!("process {pid}: {}", cmd.trim()));
            if let Ok(p) = pid.parse::<i32>() {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
    }
    found
}

/// cgroup directories (every v1 hierarchy and the unified one) whose path relative to the
/// hierarchy starts with `/prefix`; removed deepest first (a cgroup with tasks stays) and described.
pub fn remove_cgroups(prefix: &str) -> Vec<String> {
    let mut found = vec![];
    let Ok(hier) = fs::read_dir("/sys/fs/cgroup") else { return found };
    for h in hier.flatten() {
        let top = h.path().join(prefix.trim_start_matches('/'));
        if !top.is_dir() {
            continue;
        }
        let o = run(Command::new("find").arg(&top).args(["-depth", "-type", "d"]), None, 30);
        for d in o.out.lines() {
            found.push(format!("cgroup {d}"));
            let _ = fs::remove_dir(d);
        }
    }
    found
}

/// The bridge a network link is enslaved to, if any.
pub fn master_of(link: &str) -> Option<String> {
    fs::read_link(format!("/sys/class/net/{link}/master")).ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(18080)
}

/// One line of HTTP from `addr`, retried for `secs`: Ok(body) or the last error.
pub fn http_get(addr: &str, secs: u64) -> Result<String, String> {
    use std::io::{Read, Write};
    let end = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while Instant::now() < end {
        let attempt = (|| -> std::io::Result<String> {
            let sa: std::net::SocketAddr = addr.parse().map_err(|e| std::io::Error::other(format!("{addr}: {e}")))?;
            let mut s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            Ok(buf)
        })();
        match attempt {
            Ok(b) if b.contains("200") => return Ok(b),
            Ok(b) => last = format!("answer without 200: {b:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("GET http://{addr}/index.html: {last}"))
}

/// An OCI image archive (docker's and containerd's `import`) of `rootfs` as one uncompressed
/// layer, named `name` (e.g. docker.io/library/molt-busybox:test), whose config runs `cmd`.
/// Built with tar and sha256sum.
pub fn oci_archive(rootfs: &Path, name: &str, cmd: &[&str], dest: &Path) -> Result<(), String> {
    let dir = dest.with_extension("d");
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| format!("{}: {e}", blobs.display()))?;
    let layer = dir.join("layer.tar");
    run(Command::new("tar").arg("-C").arg(rootfs).arg("-cf").arg(&layer).arg("."), None, 120).ok()?;
    let digest = |p: &Path| -> Result<(String, u64), String> {
        let o = run(Command::new("sha256sum").arg(p), None, 60).ok()?;
        let d = o.split_whitespace().next().unwrap_or_default().to_string();
        let size = fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?.len();
        Ok((d, size))
    };
    let put = |p: &Path| -> Result<(String, u64), String> {
        let (d, size) = digest(p)?;
        fs::rename(p, blobs.join(&d)).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok((d, size))
    };
    let (ld, lsize) = put(&layer)?;
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{ld}")]},
    });
    let cpath = dir.join("config.json");
    fs::write(&cpath, config.to_string()).map_err(|e| format!("{}: {e}", cpath.display()))?;
    let (cd, csize) = put(&cpath)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{cd}"), "size": csize},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{ld}"), "size": lsize}],
    });
    let mpath = dir.join("manifest.json");
    fs::write(&mpath, manifest.to_string()).map_err(|e| format!("{}: {e}", mpath.display()))?;
    let (md, msize) = put(&mpath)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{md}"), "size": msize,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(':').next().unwrap_or("test")}}],
    });
    fs::write(dir.join("index.json"), index.to_string()).map_err(|e| format!("index.json: {e}"))?;
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).map_err(|e| format!("oci-layout: {e}"))?;
    run(Command::new("tar").arg("-C").arg(&dir).arg("-cf").arg(dest).args(["oci-layout", "index.json", "blobs"]), None, 120).ok()?;
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// Results of every case under every runtime, printed as a table; the test fails on any failure
/// except the control's (runc's) "n/a: reason" (shown as n/a, with the reason in the log).
#[derive(Default)]
pub struct Report {
    pub engine: String,
    pub rows: Vec<(String, String, Result<(), String>, Duration)>,
}

impl Report {
    pub fn new(engine: &str) -> Report {
        Report { engine: engine.into(), rows: vec![] }
    }

    pub fn record(&mut self, case: &str, rt: &str, r: Result<(), String>, took: Duration) {
        match &r {
            Err(e) if e.starts_with("n/a") => eprintln!("[{}] {case} / {rt}: {e}", self.engine),
            Ok(()) => eprintln!("[{}] {case} / {rt}: ok ({:.1} s)", self.engine, took.as_secs_f64()),
            Err(e) => eprintln!("[{}] {case} / {rt}: FAILED ({:.1} s): {e}", self.engine, took.as_secs_f64()),
        }
        self.rows.push((case.into(), rt.into(), r, took));
    }

    /// A markdown table, one row per case and one column per runtime.
    pub fn table(&self) -> String {
        let mut rts: Vec<String> = vec![];
        let mut cases: Vec<String> = vec![];
        for (c, r, _, _) in &self.rows {
            if !rts.contains(r) {
                rts.push(r.clone());
            }
            if !cases.contains(c) {
                cases.push(c.clone());
            }
        }
        // The control first.
        rts.sort_by_key(|r| r != "runc");
        let mut s = format!("| {} case | {} |\n|---|{}\n", self.engine, rts.join(" | "), "---|".repeat(rts.len()));
        for c in &cases {
            let cells: Vec<String> = rts
                .iter()
                .map(|r| match self.rows.iter().find(|(c2, r2, _, _)| c2 == c && r2 == r) {
                    Some((_, _, Ok(()), t)) => format!("ok {:.1}s", t.as_secs_f64()),
                    Some((_, _, Err(e), _)) if e.starts_with("n/a") => "n/a".into(),
                    Some((_, _, Err(_), _)) => "FAIL".into(),
                    None => "-".into(),
                })
                .collect();
            s.push_str(&format!("| {c} | {} |\n", cells.join(" | ")));
        }
        s
    }

    pub fn failures(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter_map(|(c, r, res, _)| res.as_ref().err().filter(|e| !(r == "runc" && e.starts_with("n/a"))).map(|e| format!("{c} / {r}: {e}")))
            .collect()
    }
}

/// Which runtimes to run (env MOLT_ENGINE_RUNTIMES=molt,runc; default both, runc first as control)
/// and which cases (env MOLT_ENGINE_CASES="stop|pod", names' beginnings; default all): for
/// working on one case by hand.
pub fn selected_runtimes() -> Vec<String> {
    selected_runtimes_or(&["runc", "molt"])
}

/// MOLT_ENGINE_RUNTIMES, or else `default`.
pub fn selected_runtimes_or(default: &[&str]) -> Vec<String> {
    std::env::var("MOLT_ENGINE_RUNTIMES").map(|v| v.split(',').map(String::from).collect()).unwrap_or_else(|_| default.iter().map(|r| r.to_string()).collect())
}

pub fn case_selected(name: &str) -> bool {
    match std::env::var("MOLT_ENGINE_CASES") {
        Ok(v) => v.split('|').any(|c| name.starts_with(c)),
        Err(_) => true,
    }
}

/// How much longer to wait than on the host: 6 in the VM lab (its set-up writes /run/lab/env), or
/// MOLT_ENGINE_SLOW.
pub fn slow_factor() -> u64 {
    if let Some(f) = std::env::var("MOLT_ENGINE_SLOW").ok().and_then(|v| v.parse().ok()) {
        return f;
    }
    if in_lab() {
        6
    } else {
        1
    }
}

/// In the VM lab guest (its set-up writes /run/lab/env).
pub fn in_lab() -> bool {
    Path::new("/run/lab/env").exists()
}

/// `bin` as the engine should run it: on the host, where it is; in the VM lab, a copy in `dir`
/// (under the guest's /run, a tmpfs). The guest sees the host's files over 9p without a cache, so
/// every exec reads the pages it touches from the host again: `molt state` of molt's 107 MB debug
/// build took 23 s there against 1.7 s from a tmpfs copy (runc, 8.7 MB: 1.8 s), and an engine runs
/// its runtime a dozen times per container. An installed runtime sits on a local disk.
pub fn local_copy(bin: &Path, dir: &Path) -> PathBuf {
    if !in_lab() {
        return bin.to_path_buf();
    }
    let name = bin.file_name().expect("a binary's path ends in its name");
    let copy = dir.join(name);
    fs::create_dir_all(dir).and_then(|()| fs::copy(bin, &copy)).unwrap_or_else(|e| panic!("copy {} to {}: {e}", bin.display(), copy.display()));
    copy
}

/// `dir` as the engine should find its helpers there (CNI plugins): on the host, itself; in the VM
/// lab, a copy of its files in `dest`, for the same reason as `local_copy` (every CNI plugin is a
/// Go binary a container's set-up and teardown run several times).
pub fn local_dir_copy(dir: &Path, dest: &Path) -> PathBuf {
    if !in_lab() {
        return dir.to_path_buf();
    }
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for e in entries.flatten() {
        let p = e.path();
        if p.is_file() {
            local_copy(&p, dest);
        }
    }
    dest.to_path_buf()
}

/// `f` of every item, `workers` at a time (1: one after another), the results in the items' order.
pub fn in_parallel<T: Sync, R: Send>(items: &[T], workers: usize, f: &(dyn Fn(&T) -> R + Sync)) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    // A worker that panicked has already failed the test at the scope's end.
    slots.into_iter().filter_map(|m| m.into_inner().ok().flatten()).collect()
}

/// Fail-with-the-reason check for a case.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        // A match, not `if !cond`: some conditions compare floats.
        match $cond {
            true => {}
            false => return Err(format!($($fmt)+)),
        }
    };
}
