//! Kubernetes' CRI with molt as the runtime class handler: containerd 1.6's CRI plugin, configured
//! with the README's config.toml table, driven over its gRPC socket by tests/engines/cri/client.py
//! (CRI v1 from a subset of the upstream api.proto; Debian 12 has no crictl or CRI-O). A pod
//! sandbox and a container in it run, exec and stop with `runtime_handler` "runc" (the control) and
//! then "molt", and the host shows which runtime ran them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::containerd::{daemon_config, readme_snippet, Snippet};
use crate::eng::{self, run, Daemon, Report};
use crate::{cgroup_v2, common, ensure, finish, knob, need, new_dirs, poll, require_root, tag, tmo};

/// Where the runc v2 shim keeps its runtime's state for CRI's containers: the shim's default
/// root (the README's table sets no `Root`) and CRI's containerd namespace.
const RUNTIME_ROOT: &str = "/run/containerd/runc/k8s.io";

/// One CRI v1 call through client.py: the answer as JSON, or the gRPC error.
struct Cri {
    client: PathBuf,
    /// Where client.py puts the Python code grpc_tools.protoc makes from api.proto.
    gendir: PathBuf,
    sock: PathBuf,
}

impl Cri {
    fn call(&self, method: &str, req: Value) -> Result<Value, String> {
        // Debian's interpreter: python3-grpcio is installed for it, whatever python3 is first in PATH.
        let mut c = Command::new("/usr/bin/python3");
        c.arg(&self.client).arg(&self.gendir).arg(&self.sock).arg(method).arg(req.to_string());
        let out = run(&mut c, None, tmo(150)).ok()?;
        serde_json::from_str(&out).map_err(|e| format!("{method}: answer is not JSON ({e}): {out}"))
    }

    fn rt(&self, method: &str, req: Value) -> Result<Value, String> {
        self.call(&format!("RuntimeService.{method}"), req)
    }

    /// Stop and remove a sandbox and with it its containers; errors are the caller's to report.
    fn remove_sandbox(&self, id: &str) -> Result<(), String> {
        self.rt("StopPodSandbox", json!({ "pod_sandbox_id": id }))?;
        self.rt("RemovePodSandbox", json!({ "pod_sandbox_id": id }))?;
        Ok(())
    }
}

/// The pod's parent cgroup (what the kubelet would make per pod), relative to each hierarchy.
fn cgroup_parent() -> String {
    format!("/molt-cri-{}", tag())
}

/// The container's cgroup directory for controller `ctrl` (CRI: the parent, then the id).
fn host_cgroup(id: &str, ctrl: &str) -> PathBuf {
    let top = Path::new("/sys/fs/cgroup");
    let rel = format!("{}/{id}", cgroup_parent().trim_start_matches('/'));
    if cgroup_v2() {
        top.join(rel)
    } else {
        top.join(ctrl).join(rel)
    }
}

/// The info CRI gives in a verbose status: its "info" key holds JSON.
fn verbose_info(status: &Value) -> Result<Value, String> {
    let s = status["info"]["info"].as_str().ok_or_else(|| format!("no info.info in the verbose status: {status}"))?;
    serde_json::from_str(s).map_err(|e| format!("info.info is not JSON ({e}): {s}"))
}

/// CRI's record of the runtime it picked for the handler: the README table's type, and for
/// molt its BinaryName (runc's table has no options: the shim's default binary, runc). A
/// sandbox's record also names the handler; a container's runs in its sandbox's.
fn check_runtime(info: &Value, rt: &str, snippet: &Snippet, sandbox: bool) -> Result<(), String> {
    let (handler, rt_type, opts) = (&info["runtimeHandler"], &info["runtimeType"], &info["runtimeOptions"]);
    ensure!((!sandbox || handler == rt) && rt_type == snippet.runtime_type.as_str(), "CRI's record: runtimeHandler {handler}, runtimeType {rt_type}");
    let binary = opts["binary_name"].as_str().unwrap_or("");
    let want = if rt == "molt" { snippet.binary.as_str() } else { "" };
    ensure!(binary == want, "CRI's record: runtimeOptions {opts}, want binary_name {want:?}");
    Ok(())
}

/// The runtime's own view of a container in the shim's state root: `RT state ID` says running with
/// CRI's pid. With handler molt, molt's state record is there and runc cannot read it (and the
/// other way round for handler runc): the state was written by the runtime the handler names.
fn check_host_runtime(id: &str, pid: i64, rt: &str) -> Result<(), String> {
    let bin = |r: &str| if r == "molt" { common::molt_bin() } else { PathBuf::from("/usr/sbin/runc") };
    let other = if rt == "molt" { "runc" } else { "molt" };
    let st = run(Command::new(bin(rt)).args(["--root", RUNTIME_ROOT, "state", id]), None, 30).ok()?;
    let v: Value = serde_json::from_str(&st).map_err(|e| format!("{rt} state {id}: not JSON ({e}): {st}"))?;
    ensure!(v["status"] == "running" && v["pid"].as_i64() == Some(pid), "{rt} --root {RUNTIME_ROOT} state {id}: {st} (CRI's pid {pid})");
    let o = run(Command::new(bin(other)).args(["--root", RUNTIME_ROOT, "state", id]), None, 30);
    ensure!(o.code != 0, "{other} reads the state of a container run by {rt}: {}", o.describe());
    Ok(())
}

/// Sandbox, container, exec, stop and removal through CRI with `handler`; the ids made go to
/// `made` (sandbox first) for the caller's clean-up and leftover check.
fn pod_lifecycle(cri: &Cri, rt: &str, snippet: &Snippet, image: &str, logs: &Path, made: &mut Vec<String>) -> Result<(), String> {
    let ns_opts = json!({ "network": "NODE", "pid": "CONTAINER", "ipc": "POD" });
    let sandbox_config = json!({
        "metadata": { "name": format!("molt-cri-{rt}"), "uid": common::unique("molt-cri-uid"), "namespace": "molt-cri" },
        "log_directory": logs.display().to_string(),
        "linux": { "cgroup_parent": cgroup_parent(), "security_context": { "namespace_options": ns_opts } },
    });
    let sb = cri.rt("RunPodSandbox", json!({ "config": sandbox_config, "runtime_handler": rt }))?;
    let sid = sb["pod_sandbox_id"].as_str().unwrap_or_default().to_string();
    ensure!(!sid.is_empty(), "RunPodSandbox gave no id: {sb}");
    made.push(sid.clone());
    let st = cri.rt("PodSandboxStatus", json!({ "pod_sandbox_id": sid, "verbose": true }))?;
    ensure!(st["status"]["state"] == "SANDBOX_READY" && st["status"]["runtime_handler"] == rt, "sandbox status: {}", st["status"]);
    let info = verbose_info(&st)?;
    check_runtime(&info, rt, snippet, true)?;
    check_host_runtime(&sid, info["pid"].as_i64().unwrap_or(0), rt).map_err(|e| format!("sandbox: {e}"))?;

    let config = json!({
        "metadata": { "name": "c" },
        "image": { "image": image },
        "command": ["sh", "-c", "trap 'echo got-term; exit 7' TERM; echo started-on-cri; while :; do sleep 0.2; done"],
        "log_path": "c.log",
        "linux": {
            "resources": { "memory_limit_in_bytes": 67108864 },
            "security_context": { "namespace_options": ns_opts },
        },
    });
    let c = cri.rt("CreateContainer", json!({ "pod_sandbox_id": sid, "config": config, "sandbox_config": sandbox_config }))?;
    let cid = c["container_id"].as_str().unwrap_or_default().to_string();
    ensure!(!cid.is_empty(), "CreateContainer gave no id: {c}");
    made.push(cid.clone());
    cri.rt("StartContainer", json!({ "container_id": cid }))?;
    let st = cri.rt("ContainerStatus", json!({ "container_id": cid, "verbose": true }))?;
    ensure!(st["status"]["state"] == "CONTAINER_RUNNING", "container status: {}", st["status"]);
    let info = verbose_info(&st)?;
    check_runtime(&info, rt, snippet, false)?;
    let pid = info["pid"].as_i64().unwrap_or(0);
    check_host_runtime(&cid, pid, rt).map_err(|e| format!("container: {e}"))?;
    let log = logs.join("c.log");
    poll(tmo(10), || Ok(fs::read_to_string(&log).unwrap_or_default().contains("started-on-cri"))).map_err(|e| format!("{}: no started-on-cri: {e}", log.display()))?;
    let mem = knob(&|k| Ok(host_cgroup(&cid, k)), "memory")?;
    ensure!(mem == "67108864", "memory limit on the host: {mem}");

    // ExecSync joins the container: its pid 1 is the container's shell (pid namespace CONTAINER).
    let ex = cri.rt("ExecSync", json!({ "container_id": cid, "cmd": ["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo exec-err >&2; exit 3"], "timeout": 30 }))?;
    ensure!(ex["exit_code"] == 3 && ex["stdout"].as_str().unwrap_or("").starts_with("sh -c trap") && ex["stderr"] == "exec-err\n", "ExecSync: {ex}");

    let ls = cri.rt("ListContainers", json!({ "filter": { "pod_sandbox_id": sid } }))?;
    let listed: Vec<(&str, &str)> = ls["containers"].as_array().into_iter().flatten().map(|c| (c["id"].as_str().unwrap_or(""), c["state"].as_str().unwrap_or(""))).collect();
    ensure!(listed == [(cid.as_str(), "CONTAINER_RUNNING")], "ListContainers: {ls}");

    // The trap's exit code says the TERM got through (a kill after the timeout gives 137).
    cri.rt("StopContainer", json!({ "container_id": cid, "timeout": tmo(20) }))?;
    let st = cri.rt("ContainerStatus", json!({ "container_id": cid }))?;
    ensure!(st["status"]["state"] == "CONTAINER_EXITED" && st["status"]["exit_code"] == 7, "after StopContainer: {}", st["status"]);
    ensure!(fs::read_to_string(&log).unwrap_or_default().contains("got-term"), "the trap did not run: {}", fs::read_to_string(&log).unwrap_or_default());
    cri.rt("RemoveContainer", json!({ "container_id": cid }))?;
    let ls = cri.rt("ListContainers", json!({ "filter": { "pod_sandbox_id": sid } }))?;
    ensure!(ls["containers"].as_array().is_none_or(|a| a.is_empty()), "ListContainers after RemoveContainer: {ls}");

    cri.rt("StopPodSandbox", json!({ "pod_sandbox_id": sid }))?;
    let st = cri.rt("PodSandboxStatus", json!({ "pod_sandbox_id": sid }))?;
    ensure!(st["status"]["state"] == "SANDBOX_NOTREADY", "after StopPodSandbox: {}", st["status"]);
    cri.rt("RemovePodSandbox", json!({ "pod_sandbox_id": sid }))?;
    let ls = cri.rt("ListPodSandbox", json!({ "filter": { "id": sid } }))?;
    ensure!(ls["items"].as_array().is_none_or(|a| a.is_empty()), "ListPodSandbox after RemovePodSandbox: {ls}");
    Ok(())
}

/// What one pass left: the runtime's state, cgroups, shim processes of its ids, mounts of CRI's.
fn left_by(ids: &[String], scratch: &Path, run_dir: &Path) -> Vec<String> {
    let mut left = vec![];
    for id in ids {
        let state = Path::new(RUNTIME_ROOT).join(id);
        if state.exists() {
            left.push(format!("runtime state {}", state.display()));
        }
        for h in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let d = h.path().join(cgroup_parent().trim_start_matches('/')).join(id);
            if d.is_dir() {
                left.push(format!("cgroup {}", d.display()));
            }
        }
        // The shim of a sandbox runs with `-id SANDBOX_ID`; it exits a moment after the removal.
        let shim = format!("-id {id}");
        let _ = poll(tmo(10), || Ok(!procs_mentioning(&shim)));
        left.extend(eng::kill_procs_mentioning(&shim));
    }
    for dir in [scratch, run_dir] {
        left.extend(common::host_mounts_with(&dir.display().to_string()).into_iter().map(|m| format!("mount {m}")));
    }
    left
}

/// CRI gives a sandbox oom_score_adj -998, and lowering it needs CAP_SYS_RESOURCE: where the
/// host's bounding set lacks it (this VM's does), no runtime can write it (runc: "can't get final
/// child's PID from pipe", molt: "process.oomScoreAdj -998: ... Permission denied"), and CRI's
/// `restrict_oom_score_adj` (meant for such hosts) raises it to containerd's own.
fn oom_score_adj_setting() -> &'static str {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bnd = u64::from_str_radix(&crate::status_field(&status, "CapBnd:"), 16).unwrap_or(u64::MAX);
    if bnd & (1 << CAP_SYS_RESOURCE) != 0 {
        return "";
    }
    eprintln!("[cri] CAP_SYS_RESOURCE is not in this host's bounding set: restrict_oom_score_adj = true");
    "  restrict_oom_score_adj = true\n"
}

fn procs_mentioning(needle: &str) -> bool {
    fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle)))
}

#[test]
fn cri() {
    require_root!();
    let containerd = need("/usr/bin/containerd");
    need("/usr/bin/ctr");
    need("/usr/bin/containerd-shim-runc-v2");
    let t = tag();
    let scratch = common::TempDir::new("molt-eng-cri");
    let run_dir = PathBuf::from(format!("/run/molt-eng-{t}-cri"));
    fs::create_dir_all(&run_dir).expect("create the run dir");
    let state_roots = new_dirs(&[RUNTIME_ROOT, "/run/containerd/runc", "/run/containerd/s", "/run/containerd"]);
    let sock = run_dir.join("containerd.sock");
    let image = "docker.io/library/molt-cri-pause:test";
    let snippet = readme_snippet().expect("the README's containerd snippet");
    // The sandbox ("pause") image is the busybox rootfs sleeping; CNI gets an empty directory of
    // its own (the pods use the host's network, so no CNI plugin runs).
    let more = format!(
        "[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{image}\"\n{}[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  conf_dir = \"{}\"\n",
        oom_score_adj_setting(),
        scratch.join("cni").display()
    );
    fs::write(scratch.join("config.toml"), daemon_config(&snippet, &scratch, &run_dir, &more)).expect("write config.toml");
    let mut report = Report::new("cri");
    let mut d = Daemon::spawn("containerd", Command::new(&containerd).arg("--config").arg(scratch.join("config.toml")), &scratch.join("containerd.log")).expect("start containerd");
    let ctr = |args: &[&str]| run(Command::new("/usr/bin/ctr").arg("--address").arg(&sock).args(["--namespace", "k8s.io"]).args(args), None, tmo(120));
    let cri = Cri { client: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/engines/cri/client.py"), gendir: scratch.join("gen"), sock: sock.clone() };
    let ready = d.wait_ready(tmo(60), || ctr(&["version"]).code == 0);
    let started = ready.and_then(|_| {
        let v = cri.rt("Version", json!({ "version": "v1" }))?;
        ensure!(v["runtime_name"] == "containerd" && v["runtime_api_version"] == "v1", "Version: {v}");
        let archive = scratch.join("image.tar");
        eng::oci_archive(&common::rootfs(), image, &["sleep", "2147483647"], &archive)?;
        ctr(&["images", "import", &archive.display().to_string()]).ok()?;
        let st = cri.call("ImageService.ImageStatus", json!({ "image": { "image": image } }))?;
        ensure!(st["image"]["repo_tags"].as_array().is_some_and(|t| t.iter().any(|x| x == image)), "CRI does not see the imported image: {st}");
        Ok(())
    });
    match started {
        Err(e) => report.record("engine start, CRI Version, image import", "-", Err(e), Duration::ZERO),
        Ok(()) => {
            for rt in eng::selected_runtimes() {
                let logs = scratch.join(format!("logs-{rt}"));
                let mut made = vec![];
                let t0 = Instant::now();
                let r = pod_lifecycle(&cri, &rt, &snippet, image, &logs, &mut made);
                report.record("pod sandbox and container: run, exec, status, stop, remove", &rt, r.clone(), t0.elapsed());
                if r.is_err() {
                    if let Some(sid) = made.first() {
                        if let Err(e) = cri.remove_sandbox(sid) {
                            eprintln!("[cri] clean-up of sandbox {sid}: {e}");
                        }
                    }
                }
                let left = left_by(&made, &scratch, &run_dir);
                report.record("nothing left behind", &rt, if left.is_empty() { Ok(()) } else { Err(left.join("\n")) }, Duration::ZERO);
            }
        }
    }
    let _ = ctr(&["images", "rm", image]);
    d.stop();
    let mut left = vec![];
    left.extend(eng::kill_procs_mentioning(&run_dir.display().to_string()));
    left.extend(eng::unmount_under(&scratch));
    left.extend(eng::unmount_under(&run_dir));
    // The pod's parent cgroup is the kubelet's to remove (runc and molt remove the container's own).
    for h in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let _ = fs::remove_dir(h.path().join(cgroup_parent().trim_start_matches('/')));
    }
    left.extend(eng::remove_cgroups(&cgroup_parent()));
    left.extend(state_roots.remove_if_empty());
    let _ = fs::remove_dir_all(&run_dir);
    finish(report, left);
}
