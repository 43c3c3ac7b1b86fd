//! Starting a container's init (for `create`) or an exec'd process (for `exec`): the clone into
//! the planned namespaces, the uid/gid maps, and the bind sources the init cannot reach itself.

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::{io_err, Error, Result};
use crate::init::channel::{Channel, Msg};
use crate::init::{self, InitPlan};
use crate::kernel::{Kernel, Real};

pub(super) fn expect(chan: &Channel, id: &str, want: Msg) -> Result<()> {
    match chan.recv() {
        Ok(Some(m)) if m == want => Ok(()),
        Ok(Some(Msg::Error(e))) => Err(Error::Step { id: id.into(), step: "set up the container", reason: e }),
        Ok(Some(m)) => Err(Error::Step { id: id.into(), step: "set up the container", reason: format!("unexpected message {m:?}") }),
        Ok(None) => Err(Error::Step { id: id.into(), step: "set up the container", reason: "the container's init exited".into() }),
        Err(e) => Err(Error::Step { id: id.into(), step: "set up the container", reason: e.to_string() }),
    }
}

/// Clone the init. A pid namespace given by path is entered by this process for the clone only.
/// `parent_end` is closed in the child first thing: holding both ends, it would never see the
/// runtime go away (a create killed mid-way left its init waiting forever).
pub fn spawn_init(
    plan: &InitPlan,
    chan: &Channel,
    parent_end: &Channel,
    flags: CloneFlags,
    join_pid: Option<&Path>,
    id: &str,
) -> Result<Pid> {
    spawn_init_with(&Real, &Child { plan, chan, parent_end }, flags, join_pid, id)
}

/// What the init's clone is given: its plan, its end of the channel and the runtime's.
struct Child<'a> {
    plan: &'a InitPlan,
    chan: &'a Channel,
    parent_end: &'a Channel,
}

/// `spawn_init` through the kernel seam: the order of the namespace calls around the clone.
fn spawn_init_with(k: &impl Kernel, c: &Child, flags: CloneFlags, join_pid: Option<&Path>, id: &str) -> Result<Pid> {
    let sys = |step: &str, errno| Error::Sys { id: id.into(), step: step.into(), errno };
    let own_pid_ns = match join_pid {
        Some(p) => {
            let own = fs::File::open(OWN_PID_NS).map_err(io_err(OWN_PID_NS))?;
            let target = fs::File::open(p).map_err(io_err(p))?;
            k.setns(&target, CloneFlags::CLONE_NEWPID, p).map_err(|e| sys(&format!("setns pid {}", p.display()), e))?;
            Some(own)
        }
        None => None,
    };
    let user_by_path = c.plan.join.iter().find(|(k, _)| *k == CloneFlags::CLONE_NEWUSER).map(|(_, p)| p.as_path());
    let res = match user_by_path {
        // A new pid namespace is owned by the user namespace of the process that clones it; for
        // a user namespace joined by path that must be the joined one (as runc orders it), and
        // molt itself cannot enter it (it could never leave).
        Some(user) if flags.contains(CloneFlags::CLONE_NEWPID) => clone_in_user_ns(k, c, flags, user),
        _ => clone_init(k, c, flags),
    };
    if let Some(own) = own_pid_ns {
        let _ = k.setns(&own, CloneFlags::CLONE_NEWPID, Path::new(OWN_PID_NS));
    }
    res.map_err(|e| sys("clone the container's init", e))
}

const OWN_PID_NS: &str = "/proc/self/ns/pid";

fn clone_init(k: &impl Kernel, c: &Child, flags: CloneFlags) -> nix::Result<Pid> {
    // The child runs `child_main` on its own copy of this address space and leaves through exec
    // or exit.
    k.clone_child(flags, &mut || {
        c.parent_end.close_in_child();
        init::child_main(c.plan, c.chan)
    })
}

/// A short-lived helper joins the user namespace `user` and clones the init from there with
/// CLONE_PARENT, so the init is molt's child (molt waits for it) and its pid namespace is owned
/// by the joined user namespace. The helper reports the init's pid, or the errno, on a pipe.
fn clone_in_user_ns(k: &impl Kernel, c: &Child, flags: CloneFlags, user: &Path) -> nix::Result<Pid> {
    use std::os::fd::AsRawFd;
    let ns = fs::File::open(user).map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let helper = k.clone_child(CloneFlags::empty(), &mut || {
        let v: i64 = match join_user_then_clone(k, c, &ns, user, flags) {
            Ok(pid) => pid.as_raw() as i64,
            Err(e) => -(e as i64),
        };
        let _ = nix::unistd::write(&wr, &v.to_ne_bytes());
        0
    })?;
    drop(wr);
    let mut buf = [0u8; 8];
    let n = loop {
        match nix::unistd::read(rd.as_raw_fd(), &mut buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    let _ = nix::sys::wait::waitpid(helper, None);
    match (n, i64::from_ne_bytes(buf)) {
        (Ok(8), v) if v > 0 => Ok(Pid::from_raw(v as i32)),
        (Ok(8), v) => Err(nix::errno::Errno::from_raw(-v as i32)),
        (Err(e), _) => Err(e),
        _ => Err(nix::errno::Errno::ECHILD),
    }
}

/// The helper's work: the user namespace entered before the clone that creates the pid namespace.
fn join_user_then_clone(k: &impl Kernel, c: &Child, ns: &fs::File, user: &Path, flags: CloneFlags) -> nix::Result<Pid> {
    k.setns(ns, CloneFlags::CLONE_NEWUSER, user)?;
    clone_init(k, c, flags | CloneFlags::CLONE_PARENT)
}

pub(super) fn write_id_maps(pid: Pid, spec: &Spec) -> std::result::Result<(), String> {
    let l = spec.linux().clone().unwrap_or_default();
    let fmt = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| init::idmap::map_text(maps.as_deref().unwrap_or_default());
    for (file, text) in [("uid_map", fmt(l.uid_mappings())), ("gid_map", fmt(l.gid_mappings()))] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, &text).map_err(|e| format!("{path} <- {text:?}: {e}"))?;
    }
    Ok(())
}

/// The absolute source of every bind mount (volumes' staging directories included) the init
/// will make, by mount index.
pub(super) fn bind_sources(spec: &Spec, volume_binds: &[(usize, PathBuf, Vec<String>)], deferred: &[usize]) -> Vec<(usize, PathBuf)> {
    let mounts = spec.mounts().clone().unwrap_or_default();
    let mut out = vec![];
    for (i, m) in mounts.iter().enumerate() {
        if deferred.contains(&i) {
            continue;
        }
        let source = match volume_binds.iter().find(|(idx, _, _)| *idx == i) {
            Some((_, staging, _)) => Some(staging.clone()),
            None if crate::init::rootfs::is_bind(m) => m.source().clone(),
            None => None,
        };
        if let Some(s) = source.filter(|s| s.is_absolute()) {
            out.push((i, s));
        }
    }
    out
}

/// For an init in a new user namespace, whose root may not be allowed to walk to a bind source
/// (podman's 0700 container directories): a helper joins the init's mount namespace, opens each
/// source (O_PATH) with molt's own credentials and sends the fds to the init, which binds from
/// /proc/self/fd/N, as runc does. A source that cannot be opened is left to the init, which then
/// names it in its error.
pub(super) fn send_bind_sources(chan: &Channel, pid: i32, sources: &[(usize, PathBuf)]) -> std::result::Result<(), String> {
    let ns = [(nix::sched::CloneFlags::CLONE_NEWNS, crate::namespaces::path(pid, "mnt"))];
    crate::namespaces::run_in(&ns, || {
        let mut opened = vec![];
        for (i, path) in sources {
            let flags = nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC;
            if let Ok(fd) = nix::fcntl::open(path, flags, Mode::empty()) {
                // SAFETY: `open` returned a fresh fd that nothing else owns.
                opened.push((*i, unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        for chunk in opened.chunks(crate::init::channel::MAX_FDS) {
            let mounts = chunk.iter().map(|(i, _)| *i).collect();
            let fds: Vec<_> = chunk.iter().map(|(_, fd)| std::os::fd::AsRawFd::as_raw_fd(fd)).collect();
            chan.send_with_fds(&Msg::BindSources { mounts }, &fds).map_err(|e| format!("send to the init: {e}"))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::recording::Recording;

    fn plan(join: Vec<(CloneFlags, PathBuf)>) -> InitPlan {
        InitPlan {
            spec: Spec::default(),
            process: Default::default(),
            rootfs: PathBuf::from("/nonexistent"),
            join,
            unshare: CloneFlags::empty(),
            new_user_ns: false,
            console_socket: None,
            no_pivot: false,
            preserve_fds: 0,
            volume_binds: vec![],
            deferred_mounts: vec![],
            fifo: None,
            is_exec: false,
            shared_mounts: false,
            listen: vec![],
            stdio: None,
        }
    }

    fn spawn(k: &Recording, join: Vec<(CloneFlags, PathBuf)>, flags: CloneFlags, join_pid: Option<&Path>) -> Result<Pid> {
        let (a, b) = Channel::pair().unwrap();
        spawn_init_with(k, &Child { plan: &plan(join), chan: &a, parent_end: &b }, flags, join_pid, "seam-test")
    }

    #[test]
    fn a_user_namespace_given_by_path_is_entered_before_the_new_pid_namespace_is_cloned() {
        // Any file opens; setns is the fake's.
        let user = std::env::current_exe().unwrap();
        let mut k = Recording::default();
        k.run_helpers = true;
        let flags = CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS;
        let pid = spawn(&k, vec![(CloneFlags::CLONE_NEWUSER, user.clone())], flags, None).unwrap();
        assert_eq!(pid.as_raw(), 4242, "the init's pid, reported by the helper");
        let want = vec![
            // molt itself never enters the user namespace: a helper does, and clones from there.
            "clone CloneFlags(0x0)".to_string(),
            format!("setns user {}", user.display()),
            format!("clone {:?}", flags | CloneFlags::CLONE_PARENT),
        ];
        assert_eq!(k.lines(), want);
        // Without a new pid namespace the init is cloned directly and joins the user namespace itself.
        let k = Recording::default();
        spawn(&k, vec![(CloneFlags::CLONE_NEWUSER, user)], CloneFlags::CLONE_NEWNS, None).unwrap();
        assert_eq!(k.lines(), vec![format!("clone {:?}", CloneFlags::CLONE_NEWNS)]);
    }

    #[test]
    fn a_pid_namespace_given_by_path_is_entered_for_the_clone_only() {
        let pid_ns = std::env::current_exe().unwrap();
        let k = Recording::default();
        spawn(&k, vec![], CloneFlags::CLONE_NEWNS, Some(&pid_ns)).unwrap();
        let want = vec![format!("setns pid {}", pid_ns.display()), format!("clone {:?}", CloneFlags::CLONE_NEWNS), format!("setns pid {OWN_PID_NS}")];
        assert_eq!(k.lines(), want);
        // A refused setns: no clone.
        let k = Recording::failing_at("setns pid");
        let e = spawn(&k, vec![], CloneFlags::CLONE_NEWNS, Some(&pid_ns)).unwrap_err().to_string();
        assert!(e.contains("setns pid"), "{e}");
        assert!(!k.has("clone"), "{:?}", k.lines());
    }
}
