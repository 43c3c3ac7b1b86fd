//! `exec`: a new process in a running container. It joins every namespace of the container's init
//! (the mount namespace last: the others are opened through the host's /proc) and its cgroup, then
//! goes through the same process set-up as the init.

use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::Process;

use super::{Container, Error, Result, Status};
use crate::init::channel::{Channel, Msg};
use crate::init::InitPlan;

#[derive(Default)]
pub struct ExecOptions {
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: i32,
    /// Exec into a paused container too (runc's --ignore-paused): the process joins the frozen
    /// cgroup and does not start until the container is resumed, so the call returns only then.
    pub ignore_paused: bool,
    /// `exec --cgroup`: a sub-cgroup of the container's to join instead of its own.
    pub sub_cgroup: Option<crate::cgroups::SubCgroup>,
}

/// Namespace kinds in join order; pid is entered by the parent (it applies to children only).
const JOIN_ORDER: &[(&str, i32)] = &[
    ("user", libc::CLONE_NEWUSER),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("time", libc::CLONE_NEWTIME),
    ("mnt", libc::CLONE_NEWNS),
];

fn same_ns(pid: i32, kind: &str) -> bool {
    let a = std::fs::metadata(format!("/proc/self/ns/{kind}"));
    let b = std::fs::metadata(crate::namespaces::path(pid, kind));
    use std::os::unix::fs::MetadataExt;
    matches!((a, b), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev())
}

impl Container {
    /// Start the process; returns its host pid once it has exec'd (or the set-up error).
    pub fn exec(&self, o: ExecOptions) -> Result<i32> {
        let status = self.status();
        let paused_ok = o.ignore_paused && status == Status::Paused;
        if status != Status::Running && status != Status::Created && !paused_ok {
            return Err(Error::WrongStatus { id: self.state.id.clone(), status, action: "exec", wanted: "running" });
        }
        // A wrong --cgroup is refused before any process exists.
        let cgroup = match (&self.state.cgroup, &o.sub_cgroup) {
            (Some(cg), Some(sub)) => Some(cg.sub(sub)?),
            (None, Some(_)) => return Err(Error::Step { id: self.state.id.clone(), step: "exec --cgroup", reason: "the container has no cgroup of molt's to go below".into() }),
            (cg, None) => cg.clone(),
        };
        let pid = self.state.pid;
        let join: Vec<(CloneFlags, PathBuf)> = JOIN_ORDER
            .iter()
            .filter(|(kind, _)| !same_ns(pid, kind))
            .map(|(kind, flag)| (CloneFlags::from_bits_retain(*flag), crate::namespaces::path(pid, kind)))
            .collect();
        let join_pid = (!same_ns(pid, "pid")).then(|| crate::namespaces::path(pid, "pid"));
        let plan = InitPlan {
            listen: vec![],
            stdio: None,
            spec: self.state.config.clone(),
            process: super::usable_process(&self.state.id, o.process),
            rootfs: if same_ns(pid, "mnt") { PathBuf::from(format!("/proc/{pid}/root")) } else { PathBuf::from("/") },
            join,
            unshare: CloneFlags::empty(),
            new_user_ns: false,
            console_socket: o.console_socket,
            no_pivot: false,
            preserve_fds: o.preserve_fds,
            volume_binds: vec![],
            deferred_mounts: vec![],
            fifo: None,
            is_exec: true,
            // The container shares molt's mounts: its root is the init's chroot.
            shared_mounts: same_ns(pid, "mnt"),
        };
        let id = &self.state.id;
        let (parent_end, child_end) = Channel::pair().map_err(super::io_err("socketpair"))?;
        let child = super::create::spawn_init(&plan, &child_end, &parent_end, CloneFlags::empty(), join_pid.as_deref(), id)?;
        drop(child_end);
        // runc's words; the reason carries the init's own `exec: "x": ...` (never "exec: exec:").
        let fail = |reason: String| Error::Step { id: id.clone(), step: "unable to start container process", reason };
        // The new process dies with a set-up error of the runtime's before it is told to go on.
        let abort = |e: Error| {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            e
        };
        // execCPUAffinity.initial: the new process's CPUs until it is in the container's cgroup.
        crate::init::process_attrs::set_initial_affinity(child.as_raw(), plan.process.exec_cpu_affinity().as_ref())
            .map_err(|e| abort(fail(e.to_string())))?;
        if let Some(cg) = &cgroup {
            cg.add_process(child.as_raw()).map_err(|e| abort(e.into()))?;
        }
        crate::init::process::set_oom_score_adj(child.as_raw(), &plan.process).map_err(|reason| abort(fail(reason)))?;
        parent_end.send(&Msg::Go).map_err(|e| fail(e.to_string()))?;
        // The channel is close-on-exec: EOF means the process exec'd, a message means it failed
        // (or, first, hands over a seccomp notify listener for the agent).
        loop {
            match parent_end.recv_with_fds() {
                Ok(None) => break,
                Ok(Some((Msg::SeccompListener, fds))) => {
                    let state = self.oci_state(self.status()).to_string();
                    let sent = fds.first().ok_or_else(|| "the listener came without its fd".to_string()).and_then(|fd| super::notify::send_to_agent(&self.state.config, child.as_raw(), &state, fd));
                    if let Err(reason) = sent {
                        return Err(abort(fail(reason)));
                    }
                }
                Ok(Some((Msg::Error(e), _))) => {
                    let _ = nix::sys::wait::waitpid(child, None);
                    return Err(fail(e));
                }
                other => {
                    let _ = nix::sys::wait::waitpid(child, None);
                    return Err(fail(format!("unexpected answer from the new process: {:?}", other.map(|o| o.map(|(m, _)| m)))));
                }
            }
        }
        if let Some(pf) = &o.pid_file {
            super::create::write_pid_file(pf, child.as_raw())?;
        }
        Ok(child.as_raw())
    }
}

