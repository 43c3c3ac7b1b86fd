//! containerd through ctr: the runc v2 shim with `BinaryName` = molt (what `--runc-binary` sets and
//! what the README's config.toml runtime table gives CRI), each case with runc first as the control.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::eng::{self, run, Daemon, Out, Report};
use crate::{cgroup_v2, common, eight_in_parallel, ensure, finish, knob, need, new_dirs, poll, read_host, require_root, same_as_runc, status_field, tag, tmo, FETCH_8081, SERVE_8081};

/// ctr against the test's containerd, in a namespace of its own, with one runtime binary.
struct Ctr {
    global: Vec<String>,
    image: String,
    rt: String,
    /// `--runtime T --runc-binary B` from the README's config.toml table for molt; none for runc,
    /// the shim's default binary.
    runtime: Vec<String>,
    ns: String,
    /// Where detached tasks write their output (`--log-uri file://`) and cases their files.
    scratch: PathBuf,
}

impl Ctr {
    fn cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("/usr/bin/ctr");
        c.args(&self.global).args(args);
        c
    }

    fn x<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Out {
        run(&mut self.cmd(args), None, tmo(90))
    }

    fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<String, String> {
        self.x(args).ok()
    }

    fn new_id(&self) -> String {
        common::unique(&format!("ce-{}", self.rt))
    }

    /// `ctr run [extra] [--runtime T --runc-binary B] IMAGE ID cmd...`. With `--config` the spec names the rootfs and the command: ctr then takes only the id.
    fn run_args(&self, extra: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(self.runtime.iter().cloned());
        if !extra.contains(&"--config") {
            a.push(self.image.clone());
        }
        a.push(id.into());
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    }

    fn run_img(&self, extra: &[&str], cmd: &[&str]) -> Out {
        self.x(&self.run_args(&[&["--rm"], extra].concat(), &self.new_id(), cmd))
    }

    /// A detached task running `cmd` (default: sleep), its output in `log(id)`.
    fn detached(&self, extra: &[&str], cmd: &[&str]) -> Result<String, String> {
        let id = self.new_id();
        let uri = format!("file://{}", self.log_path(&id).display());
        let cmd = if cmd.is_empty() { &["sleep", "1000"][..] } else { cmd };
        self.ok(&self.run_args(&[&["-d", "--log-uri", &uri], extra].concat(), &id, cmd))?;
        Ok(id)
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.scratch.join(format!("{id}.log"))
    }

    fn log(&self, id: &str) -> String {
        fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// A column of the task's line in `task ls`: 1 the pid, 2 the status.
    fn task_field(&self, id: &str, col: usize) -> String {
        self.x(&["task", "ls"]).out.lines().find(|l| l.starts_with(id)).and_then(|l| l.split_whitespace().nth(col)).unwrap_or("").to_string()
    }

    fn status(&self, id: &str) -> String {
        self.task_field(id, 2)
    }

    /// Wait for the task to stop, delete it and give its exit code (`task delete` warns of a
    /// non-zero one on stderr: "exit with non-zero exit code N"; silent for 0).
    fn exit_code(&self, id: &str) -> Result<String, String> {
        poll(tmo(10), || Ok(self.status(id) == "STOPPED")).map_err(|e| format!("task {id} not STOPPED: {e}"))?;
        let o = self.x(&["task", "delete", id]);
        ensure!(o.code == 0, "task delete: {}", o.describe());
        Ok(o.err.split("exit code ").nth(1).and_then(|s| s.split_whitespace().next()).map(|s| s.trim_matches('"').to_string()).unwrap_or_else(|| "0".into()))
    }

    fn rm(&self, id: &str) {
        let _ = self.x(&["task", "kill", "-s", "SIGKILL", id]);
        let _ = poll(tmo(10), || Ok(matches!(self.status(id).as_str(), "STOPPED" | "")));
        let _ = self.x(&["task", "delete", id]);
        let _ = self.x(&["container", "delete", id]);
        let _ = fs::remove_file(self.log_path(id));
    }

    fn host_cgroup(&self, id: &str, ctrl: &str) -> Result<PathBuf, String> {
        let top = Path::new("/sys/fs/cgroup");
        Ok(if cgroup_v2() { top.join(&self.ns).join(id) } else { top.join(ctrl).join(&self.ns).join(id) })
    }
}

fn k_run_exit_stdin(c: &Ctr) -> Result<(), String> {
    let a = c.run_args(&["--rm"], &c.new_id(), &["sh", "-c", "head -n1; echo err >&2; exit 3"]);
    // ctr does not close the container's stdin at EOF (with runc too): read one line.
    let o = run(&mut c.cmd(&a), Some("from-stdin\n"), tmo(90));
    ensure!(o.code == 3 && o.out.contains("from-stdin") && o.err.contains("err"), "want exit 3, stdin echoed, stderr apart: {}", o.describe());
    Ok(())
}

fn k_task(c: &Ctr) -> Result<(), String> {
    let id = c.detached(&[], &[])?;
    let r = (|| {
        ensure!(c.status(&id) == "RUNNING", "task ls: {}", c.x(&["task", "ls"]).out);
        if let [_, rt_type, _, binary] = &c.runtime[..] {
            // What CRI records for a container of the README's runtimes.molt: that type, BinaryName in its options.
            let info: serde_json::Value = serde_json::from_str(&c.ok(&["container", "info", &id])?).map_err(|e| format!("container info: {e}"))?;
            let opts = run(Command::new("sh").args(["-c", &format!("echo {} | base64 -d", info["Runtime"]["Options"]["value"].as_str().unwrap_or_default())]), None, 10).out;
            ensure!(info["Runtime"]["Name"] == rt_type.as_str() && opts.contains(binary.as_str()), "container record's runtime: {}", info["Runtime"]);
        }
        let o = c.x(&["task", "exec", "--exec-id", "e1", &id, "sh", "-c", "echo in-exec; exit 4"]);
        ensure!(o.code == 4 && o.out.contains("in-exec"), "exec: {}", o.describe());
        let ps = c.ok(&["task", "ps", &id])?;
        ensure!(ps.lines().count() >= 2, "task ps: {ps}");
        let m = c.ok(&["task", "metrics", &id])?;
        ensure!(m.contains("memory"), "task metrics: {m}");
        c.ok(&["task", "pause", &id])?;
        ensure!(c.status(&id) == "PAUSED", "not paused");
        let fz = knob(&|k| c.host_cgroup(&id, k), "freezer")?;
        ensure!(fz == "FROZEN", "freezer: {fz}");
        c.ok(&["task", "resume", &id])?;
        ensure!(c.status(&id) == "RUNNING", "not running after resume");
        c.ok(&["task", "kill", "-s", "SIGKILL", &id])?;
        let code = c.exit_code(&id)?;
        ensure!(code == "137", "exit code after SIGKILL: {code}");
        c.ok(&["container", "delete", &id])?;
        Ok(())
    })();
    c.rm(&id);
    r
}

fn k_tty(c: &Ctr) -> Result<(), String> {
    // ctr -t wants a terminal of its own: script(1) gives it one.
    let a = c.run_args(&["--rm", "-t"], &c.new_id(), &["tty"]);
    let line = format!("/usr/bin/ctr {} {}", c.global.join(" "), a.join(" "));
    let o = run(Command::new("script").args(["-qec", &line, "/dev/null"]), None, tmo(90));
    ensure!(o.code == 0 && o.out.contains("/dev/pts/"), "run -t: {}", o.describe());
    let id = c.new_id();
    let a = c.run_args(&["-d", "-t"], &id, &["sleep", "1000"]);
    let line = format!("/usr/bin/ctr {} {}", c.global.join(" "), a.join(" "));
    run(Command::new("script").args(["-qec", &line, "/dev/null"]), None, tmo(90)).ok()?;
    let line = format!("/usr/bin/ctr {} task exec -t --exec-id t1 {id} tty", c.global.join(" "));
    let o = run(Command::new("script").args(["-qec", &line, "/dev/null"]), None, tmo(90));
    c.rm(&id);
    ensure!(o.code == 0 && o.out.contains("/dev/pts/"), "exec -t: {}", o.describe());
    Ok(())
}

fn k_options(c: &Ctr) -> Result<(), String> {
    let o = c.run_img(&["--read-only"], &["touch", "/x"]);
    ensure!(o.code != 0 && o.err.contains("Read-only"), "--read-only: {}", o.describe());
    let o = c.run_img(&["--seccomp"], &["grep", "Seccomp:", "/proc/self/status"]).ok()?;
    ensure!(o.contains('2'), "--seccomp: {o}");
    let o = c.run_img(&[], &["ls", "/sys/class/net"]).ok()?;
    ensure!(o.split_whitespace().collect::<Vec<_>>() == ["lo"], "own network namespace: {o}");
    // /proc/net/dev is read at once; `ls /sys/class/net` fails when another test's veth goes
    // between its readdir and its stat (seen in CI with podman's twin of this case).
    let o = c.run_img(&["--net-host"], &["cat", "/proc/net/dev"]).ok()?;
    ensure!(o.lines().skip(2).count() > 1, "--net-host: {o}");
    let o = c.run_img(&["--privileged"], &["sh", "-c", "grep CapEff /proc/self/status; mount -t tmpfs t /tmp && echo privileged-ok"]).ok()?;
    ensure!(o.contains("privileged-ok"), "--privileged: {o}");
    Ok(())
}

fn k_limits(c: &Ctr) -> Result<(), String> {
    let id = c.detached(&["--memory-limit", "67108864", "--cpus", "0.5"], &[])?;
    let r = (|| {
        // ctr's default spec mounts no cgroupfs inside: the limits are checked on the host.
        let dir = |k: &str| c.host_cgroup(&id, k);
        let (mem, cpu) = (knob(&dir, "memory")?, knob(&dir, "cpu")?);
        ensure!((mem.as_str(), cpu.as_str()) == ("67108864", "50000"), "host: {mem} {cpu}");
        Ok(())
    })();
    c.rm(&id);
    r?;
    let o = c.run_img(&["--memory-limit", "33554432"], &["tail", "/dev/zero"]);
    ensure!(o.code == 137, "OOM kill: {}", o.describe());
    Ok(())
}

/// ctr has no `stop`: a stop is the caller's `task kill` (TERM), then KILL after a timeout of its own.
/// A trapped TERM ends the task with the trap's code; pid 1 without a handler never gets TERM (the
/// kernel drops it at the kill), so the KILL that follows gives 137, where a TERM that got through
/// would have given 143: the codes tell it apart at any speed.
fn k_kill(c: &Ctr) -> Result<(), String> {
    let id = c.detached(&[], &["sh", "-c", "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done"])?;
    let r = (|| {
        poll(tmo(10), || Ok(c.log(&id).contains("ready"))).map_err(|e| format!("no 'ready' in the task's log: {e}"))?;
        c.ok(&["task", "kill", "-s", "SIGTERM", &id])?;
        let code = c.exit_code(&id)?;
        ensure!(code == "7" && c.log(&id).contains("got-term"), "trapped TERM: exit code {code}, log {:?}", c.log(&id));
        Ok(())
    })();
    c.rm(&id);
    r?;
    let id = c.detached(&[], &[])?;
    let r = (|| {
        c.ok(&["task", "kill", &id])?;
        c.ok(&["task", "exec", "--exec-id", "k1", &id, "true"]).map_err(|e| format!("not running after an unhandled TERM: {e}"))?;
        c.ok(&["task", "kill", "-s", "SIGKILL", &id])?;
        let code = c.exit_code(&id)?;
        ensure!(code == "137", "TERM then KILL: exit code {code} (143: the TERM ended pid 1)");
        Ok(())
    })();
    c.rm(&id);
    r
}

/// `task delete -f`: ctr's `rm -f`, a running task killed and deleted in one command.
fn k_delete_force(c: &Ctr) -> Result<(), String> {
    let id = c.detached(&[], &[])?;
    let r = (|| {
        let o = c.x(&["task", "delete", "-f", &id]);
        ensure!(o.code == 0 && o.err.contains("137"), "task delete -f of a running task: {}", o.describe());
        ensure!(c.status(&id).is_empty(), "task still listed: {}", c.x(&["task", "ls"]).out);
        c.ok(&["container", "delete", &id])?;
        Ok(())
    })();
    c.rm(&id);
    r
}

fn k_mounts(c: &Ctr) -> Result<(), String> {
    let dir = common::TempDir::new("molt-eng-ctrvol");
    let (rw, ro) = (format!("type=bind,src={},dst=/data,options=rbind:rw", dir.display()), format!("type=bind,src={},dst=/ro,options=rbind:ro", dir.display()));
    let script = "echo via-bind > /data/f; touch /ro/g || echo ro-refused; touch /scratch/x && grep ' /scratch ' /proc/mounts";
    let o = c.run_img(&["--read-only", "--mount", &rw, "--mount", &ro, "--mount", "type=tmpfs,src=tmpfs,dst=/scratch,options=size=1m"], &["sh", "-c", script]).ok()?;
    ensure!(o.contains("ro-refused") && o.contains("tmpfs") && o.contains("size=1024k"), "--mount ro bind, tmpfs: {o}");
    ensure!(read_host(&dir.join("f"))? == "via-bind" && !dir.join("g").exists(), "host side of the bind mounts");
    Ok(())
}

/// ctr 1.6 has neither `--user` nor a pids limit on `run`: `--config` takes a whole OCI spec (here
/// `ctr oci spec`'s default with the busybox rootfs read-only), which has both.
fn k_spec(c: &Ctr) -> Result<(), String> {
    let id = c.new_id();
    let mut spec: serde_json::Value = serde_json::from_str(&run(Command::new("/usr/bin/ctr").args(["oci", "spec"]), None, 30).ok()?).map_err(|e| format!("ctr oci spec: {e}"))?;
    spec["process"]["args"] = serde_json::json!(["sh", "-c", "id -u; id -g; exec sleep 1000"]);
    spec["process"]["env"] = serde_json::json!(["PATH=/bin:/usr/bin:/sbin:/usr/sbin"]);
    spec["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    spec["root"] = serde_json::json!({"path": common::rootfs(), "readonly": true});
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{}/{id}", c.ns));
    spec["linux"]["resources"]["pids"] = serde_json::json!({"limit": 50});
    let path = c.scratch.join(format!("{id}.json"));
    fs::write(&path, spec.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    let uri = format!("file://{}", c.log_path(&id).display());
    c.ok(&c.run_args(&["-d", "--log-uri", &uri, "--config", &path.display().to_string()], &id, &[]))?;
    let r = (|| {
        poll(tmo(10), || Ok(c.log(&id).lines().count() >= 2)).map_err(|e| format!("no ids in the task's log: {e}"))?;
        ensure!(c.log(&id).split_whitespace().collect::<Vec<_>>() == ["1000", "1000"], "process.user 1000:1000: {:?}", c.log(&id));
        let pids = knob(&|k| c.host_cgroup(&id, k), "pids")?;
        ensure!(pids == "50", "pids.max on the host: {pids}");
        // The limit holds: 60 more processes cannot start.
        let o = c.x(&["task", "exec", "--exec-id", "p1", &id, "sh", "-c", "for i in $(seq 60); do sleep 2 & done 2>&1; wait"]);
        ensure!(o.out.contains("fork") || o.err.contains("fork") || o.code != 0, "60 sleeps under pids.max 50: {}", o.describe());
        Ok(())
    })();
    c.rm(&id);
    let _ = fs::remove_file(&path);
    r
}

/// ctr's default capabilities are the same set with molt as with runc; `--cap-drop`/`--cap-add`
/// change exactly the capability named (ctr 1.6 has no "ALL").
fn k_caps(c: &Ctr) -> Result<(), String> {
    let caps = "grep -E '^Cap(Eff|Bnd|Prm)' /proc/self/status";
    let o = c.run_img(&[], &["sh", "-c", caps]).ok()?;
    same_as_runc(&format!("ctr/{}", c.rt), "caps default", &o)?;
    let eff = |s: &str| u64::from_str_radix(&status_field(s, "CapEff:"), 16).unwrap_or(0);
    let dflt = eff(&o);
    ensure!(dflt & (1 << 13) != 0 && dflt & (1 << 12) == 0, "default CapEff {dflt:x}: want NET_RAW (13) without NET_ADMIN (12)");
    let o = c.run_img(&["--cap-drop", "CAP_NET_RAW", "--cap-add", "CAP_NET_ADMIN"], &["sh", "-c", caps]).ok()?;
    ensure!(eff(&o) == (dflt & !(1 << 13)) | (1 << 12), "drop NET_RAW, add NET_ADMIN: {o}");
    Ok(())
}

/// ctr's pod: `--with-ns network:/proc/PID/ns/net` joins a running task's network namespace.
fn k_shared_net(c: &Ctr) -> Result<(), String> {
    let a = c.detached(&[], &["sh", "-c", SERVE_8081])?;
    let r = (|| {
        let pid = c.task_field(&a, 1);
        let ns = format!("network:/proc/{pid}/ns/net");
        let o = c.run_img(&["--with-ns", &ns], &["sh", "-c", &format!("readlink /proc/self/ns/net; {FETCH_8081}")]).ok()?;
        ensure!(o.contains("from-a"), "the second task cannot reach the first on 127.0.0.1: {o}");
        let mine = fs::read_link(format!("/proc/{pid}/ns/net")).map_err(|e| format!("/proc/{pid}/ns/net: {e}"))?;
        ensure!(o.contains(&mine.display().to_string()), "network namespaces differ: {o}, the first's {}", mine.display());
        Ok(())
    })();
    c.rm(&a);
    r
}

fn k_uidmap(c: &Ctr) -> Result<(), String> {
    let o = c.run_img(&["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"], &["sh", "-c", "cat /proc/self/uid_map; touch /tmp/f && echo wrote"]).ok()?;
    ensure!(o.contains("100000") && o.contains("wrote"), "--uidmap: {o}");
    Ok(())
}

fn k_parallel(c: &Ctr) -> Result<(), String> {
    // The process stays a moment after printing: ctr 1.6 can lose the output of a process that
    // exits right after writing it (the client's FIFO copy against the exit event; seen once in 8
    // here with molt exiting 0 and ctr printing nothing, and known in containerd's clients:
    // concourse/concourse#6775). The case is about eight runs at once, not that race.
    eight_in_parallel(&|i| c.run_img(&[], &["sh", "-c", &format!("echo par-{i}; sleep 0.3")]))
}

type CtrCase = (&'static str, fn(&Ctr) -> Result<(), String>);

const CTR_CASES: &[CtrCase] = &[
    ("run: exit code, stdin", k_run_exit_stdin),
    ("task: exec, ps, metrics, pause, kill, delete", k_task),
    ("tty run and exec", k_tty),
    ("read-only, seccomp, net none/host, privileged", k_options),
    ("memory/cpu limits, OOM kill", k_limits),
    ("task kill: trapped TERM (exit code), unhandled TERM then KILL", k_kill),
    ("task delete -f of a running task", k_delete_force),
    ("--mount bind rw/ro, tmpfs, --read-only", k_mounts),
    ("--config spec: user, pids limit", k_spec),
    ("capabilities: default as runc, --cap-drop, --cap-add", k_caps),
    ("--with-ns network: shared network namespace", k_shared_net),
    ("--uidmap", k_uidmap),
    ("8 in parallel", k_parallel),
];

/// The README's containerd config.toml table for molt (the ```toml block naming `runtimes.molt`),
/// with molt's path for /usr/local/bin/molt, and the two values it gives the runc v2 shim.
pub(crate) struct Snippet {
    pub(crate) toml: String,
    pub(crate) runtime_type: String,
    pub(crate) binary: String,
}

pub(crate) fn readme_snippet() -> Result<Snippet, String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = fs::read_to_string(&readme).map_err(|e| format!("{}: {e}", readme.display()))?;
    let block = text.split("```toml\n").skip(1).filter_map(|b| b.split("```").next()).find(|b| b.contains("runtimes.molt]"));
    let toml = block.ok_or_else(|| format!("{}: no ```toml block with a runtimes.molt table", readme.display()))?.replace("/usr/local/bin/molt", &common::molt_bin().display().to_string());
    let value = |key: &str| -> Result<String, String> {
        let line = toml.lines().find(|l| l.trim_start().starts_with(&format!("{key} ="))).ok_or_else(|| format!("{}: the runtimes.molt block has no {key}", readme.display()))?;
        Ok(line.split('"').nth(1).unwrap_or_default().to_string())
    };
    Ok(Snippet { runtime_type: value("runtime_type")?, binary: value("BinaryName")?, toml })
}

/// The test's containerd: its own root, state, socket and opt dir, the README's table verbatim
/// (its `version = 2` among these top-level keys), and the CRI plugin on, which reads that table;
/// `more` is appended (more tables).
pub(crate) fn daemon_config(snippet: &Snippet, scratch: &Path, run_dir: &Path, more: &str) -> String {
    format!(
        r#"root = "{root}"
state = "{state}"
{table}
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
{more}"#,
        root = scratch.join("root").display(),
        state = run_dir.join("state").display(),
        table = snippet.toml,
        sock = run_dir.join("containerd.sock").display(),
        opt = scratch.join("opt").display(),
    )
}

/// CRI loaded the table (a runtimes table it cannot use makes the plugin fail, and `plugins ls`
/// says "error") and logged molt's runtime with the snippet's type and BinaryName. Nothing but CRI
/// reads the table: `ctr run --runtime` names a shim ("molt": "invalid runtime name"), so the
/// cases run with the table's two values as ctr's flags, which make the same container record.
fn cri_loaded(c: &Ctr, d: &Daemon, snippet: &Snippet) -> Result<(), String> {
    let plugins = c.ok(&["plugins", "ls"])?;
    let cri = plugins.lines().find(|l| l.contains(" cri ")).unwrap_or_default();
    let log = fs::read_to_string(&d.log).map_err(|e| format!("{}: {e}", d.log.display()))?;
    let why = log.lines().find(|l| l.contains("failed to load plugin io.containerd.grpc.v1.cri")).unwrap_or_default();
    ensure!(cri.split_whitespace().last() == Some("ok"), "CRI plugin: {cri:?}; containerd's log: {why}");
    let want = format!("molt:{{Type:{} ", snippet.runtime_type);
    let line = log.lines().find(|l| l.contains("Start cri plugin with config")).unwrap_or_default();
    ensure!(line.contains(&want) && line.contains(&format!("Options:map[BinaryName:{}]", snippet.binary)), "CRI's runtimes: no {want}... BinaryName:{} in {line:?}", snippet.binary);
    Ok(())
}

#[test]
fn containerd() {
    require_root!();
    let containerd = need("/usr/bin/containerd");
    need("/usr/bin/ctr");
    need("/usr/bin/containerd-shim-runc-v2");
    let t = tag();
    let scratch = common::TempDir::new("molt-eng-containerd");
    let run_dir = PathBuf::from(format!("/run/molt-eng-{t}-c"));
    fs::create_dir_all(&run_dir).expect("create the run dir");
    let ns = format!("molt-eng-{t}");
    let state_roots = new_dirs(&["/run/containerd/runc", "/run/containerd"]);
    let sock = run_dir.join("containerd.sock");
    let snippet = readme_snippet().expect("the README's containerd snippet");
    fs::write(scratch.join("config.toml"), daemon_config(&snippet, &scratch, &run_dir, "")).expect("write config.toml");
    let mut report = Report::new("containerd");
    let mut d = Daemon::spawn("containerd", Command::new(&containerd).arg("--config").arg(scratch.join("config.toml")), &scratch.join("containerd.log")).expect("start containerd");
    let base = Ctr { global: vec!["--address".into(), sock.display().to_string(), "--namespace".into(), ns.clone()], image: "docker.io/library/molt-busybox:test".into(), rt: String::new(), runtime: vec![], ns: ns.clone(), scratch: scratch.to_path_buf() };
    let ready = d.wait_ready(tmo(60), || base.x(&["version"]).code == 0);
    let started = ready.and_then(|_| {
        let archive = scratch.join("image.tar");
        eng::oci_archive(&common::rootfs(), &base.image, &["sh"], &archive)?;
        base.ok(&["images", "import", &archive.display().to_string()])?;
        ensure!(base.ok(&["images", "ls", "-q"])?.contains(&base.image), "the imported image is not listed");
        Ok(())
    });
    match started {
        Err(e) => report.record("engine start, image import", "-", Err(e), Duration::ZERO),
        Ok(()) => {
            report.record("config.toml (README) runtimes.molt: CRI loads it", "molt", cri_loaded(&base, &d, &snippet), Duration::ZERO);
            for rt in eng::selected_runtimes() {
                let runtime = if rt == "molt" { vec!["--runtime".into(), snippet.runtime_type.clone(), "--runc-binary".into(), snippet.binary.clone()] } else { vec![] };
                let c = Ctr { rt: rt.clone(), runtime, global: base.global.clone(), image: base.image.clone(), ns: ns.clone(), scratch: base.scratch.clone() };
                for (name, f) in CTR_CASES {
                    if !eng::case_selected(name) {
                        continue;
                    }
                    let t = Instant::now();
                    let r = f(&c);
                    report.record(name, &rt, r, t.elapsed());
                }
                let mut left = vec![];
                for l in c.x(&["container", "ls", "-q"]).out.lines().filter(|l| l.starts_with(&format!("ce-{rt}-"))) {
                    left.push(format!("container {l}"));
                    c.rm(l);
                }
                let state = Path::new("/run/containerd/runc").join(&ns);
                for e in fs::read_dir(&state).into_iter().flatten().flatten() {
                    left.push(format!("runtime state {}", e.path().display()));
                }
                let o = run(Command::new("sh").args(["-c", &format!("ls -d /sys/fs/cgroup/*/{ns}/* 2>/dev/null")]), None, 30);
                left.extend(o.out.lines().filter(|l| Path::new(l).is_dir()).map(|l| format!("cgroup {l}")));
                left.extend(common::host_mounts_with(&scratch.display().to_string()).into_iter().map(|m| format!("mount {m}")));
                report.record("nothing left behind", &rt, if left.is_empty() { Ok(()) } else { Err(left.join("\n")) }, Duration::ZERO);
            }
        }
    }
    let _ = base.x(&["images", "rm", &base.image]);
    let _ = base.x(&["namespaces", "rm", &ns]);
    d.stop();
    let mut left = vec![];
    left.extend(eng::kill_procs_mentioning(&run_dir.display().to_string()));
    left.extend(eng::unmount_under(&scratch));
    left.extend(eng::unmount_under(&run_dir));
    left.extend(eng::remove_cgroups(&ns));
    let state = Path::new("/run/containerd/runc").join(&ns);
    if state.exists() {
        left.push(format!("dir {}", state.display()));
        let _ = fs::remove_dir_all(&state);
    }
    left.extend(state_roots.remove_if_empty());
    let _ = fs::remove_dir_all(&run_dir);
    finish(report, left);
}
