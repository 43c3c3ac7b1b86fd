//! Kernel pieces of the hand-over: attach a volume's host staging mount inside a created (not yet
//! started) container with open_tree + move_mount, and set the hostname in its UTS namespace.
//! Both run in a short-lived child that joined the container's namespaces.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use crate::mount_target::{self, Links, Make};
use crate::{mount_options, namespaces};

/// Mount the staging directory at `dest` inside the container whose init is `pid`, with the
/// bind options of the new config (ro, nosuid, nodev, noexec, propagation). As the init's own
/// mounts: the target is found and made through fds inside the container's root (a symlink
/// swapped in by the container cannot send the volume elsewhere), the flags are set on the
/// detached tree, and the attached mount is changed through its own fd.
pub fn attach_volume(pid: i32, staging: &Path, dest: &Path, bind_options: &[String]) -> Result<(), String> {
    let tree = crate::mount_api::open_tree_clone(staging, true)?;
    let ns: Vec<(CloneFlags, PathBuf)> = vec![(CloneFlags::CLONE_NEWNS, namespaces::path(pid, "mnt"))];
    let dest = dest.to_path_buf();
    let opts = mount_options::parse_options(bind_options);
    namespaces::run_in(&ns, move || {
        // After setns the root is the container's pivoted rootfs, so "/" is its root.
        let root = mount_target::RootDir::open(Path::new("/"))?;
        let target = mount_target::open_target(&root, &dest, Make::Dir, Links::Follow)?;
        let (set, clear) = mount_options::mount_attrs(opts.flags & !MsFlags::MS_REMOUNT);
        if set != 0 || clear != 0 {
            crate::mount_api::setattr(Some(&tree), Path::new(""), false, set, clear, None)
                .map_err(|e| format!("bind options of {} (set {set:#x} clear {clear:#x}): {e}", target.shown.display()))?;
        }
        let mount = mount_target::attach(tree, &target)?;
        mount.propagate(&opts.propagation)?;
        mount.set(opts.attr_set, opts.attr_clr, true, "recursive options")
    })
}

pub fn read_hostname(pid: i32) -> Result<String, String> {
    let (mut rd, wr) = std::io::pipe().map_err(|e| e.to_string())?;
    let ns = vec![(CloneFlags::CLONE_NEWUTS, namespaces::path(pid, "uts"))];
    namespaces::run_in(&ns, move || {
        let name = nix::unistd::gethostname().map_err(|e| e.to_string())?;
        let mut w = wr;
        std::io::Write::write_all(&mut w, name.as_encoded_bytes()).map_err(|e| e.to_string())
    })?;
    let mut s = String::new();
    std::io::Read::read_to_string(&mut rd, &mut s).map_err(|e| e.to_string())?;
    Ok(s)
}

pub fn set_hostname(pid: i32, name: &str) -> Result<(), String> {
    let ns = vec![(CloneFlags::CLONE_NEWUTS, namespaces::path(pid, "uts"))];
    let name = name.to_string();
    namespaces::run_in(&ns, move || nix::unistd::sethostname(&name).map_err(|e| format!("sethostname {name:?}: {}", e.desc())))
}

/// Try a TCP connection to 127.0.0.1:port from inside the container's network namespace.
pub fn tcp_probe(pid: i32, port: u16) -> Result<(), String> {
    let ns = vec![(CloneFlags::CLONE_NEWNET, namespaces::path(pid, "net"))];
    namespaces::run_in(&ns, move || {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500))
            .map(|_| ())
            .map_err(|e| format!("connect to port {port}: {e}"))
    })
}

/// What the upgrade process holds for the length of the swap: duplicates of the application's
/// listening sockets (a socket some process holds keeps queueing connections while no application
/// runs) and of the old container's stdio (the new one gets it, never the upgrade command's).
#[derive(Default)]
pub struct Held {
    pub listen: Vec<(crate::listen::Endpoint, OwnedFd)>,
    pub stdio: Option<[OwnedFd; 3]>,
}

/// Every process of a container, its init first.
pub fn pids_of(c: &crate::container::Container) -> Vec<i32> {
    let mut pids = vec![c.state.pid];
    if let Some(more) = c.state.cgroup.as_ref().and_then(|g| g.pids().ok()) {
        pids.extend(more.into_iter().filter(|p| *p != c.state.pid));
    }
    pids
}

/// What `create` is given of the held fds: sockets by endpoint, and 0, 1, 2.
pub type Prep = (Vec<(crate::listen::Endpoint, std::os::fd::RawFd)>, [std::os::fd::RawFd; 3]);

impl Held {
    /// Take from a running container the listening sockets for `eps` that it holds, and its stdio.
    pub fn take_from(&mut self, c: &crate::container::Container, eps: &[crate::listen::Endpoint]) {
        if c.state.pid <= 0 || c.status() == crate::container::Status::Stopped {
            return;
        }
        let want: Vec<_> = eps.iter().filter(|e| !self.listen.iter().any(|(h, _)| h.addr == e.addr)).cloned().collect();
        for (ep, fd) in want.iter().zip(crate::listen::take(&pids_of(c), &want)) {
            if let Some(fd) = fd {
                self.listen.push((ep.clone(), fd));
            }
        }
        if self.stdio.is_none() {
            let pidfd = crate::listen::Pidfd::open(c.state.pid).ok();
            let got: Vec<OwnedFd> = (0..3)
                .filter_map(|n| match pidfd.as_ref().and_then(|p| p.take(n).ok()) {
                    Some(fd) => Some(fd),
                    None => dev_null().ok(),
                })
                .collect();
            self.stdio = got.try_into().ok();
        }
    }

    /// The fds for `create`: the sockets whose endpoint `keep` accepts, and the stdio (the
    /// null device when no old stdio could be taken: never the upgrade command's own).
    pub fn prep(&mut self, keep: impl Fn(&crate::listen::Endpoint) -> bool) -> Result<Prep, String> {
        if self.stdio.is_none() {
            let null = || dev_null().map_err(|e| format!("open /dev/null: {e}"));
            self.stdio = Some([null()?, null()?, null()?]);
        }
        let stdio = self.stdio.as_ref().map(|s| [s[0].as_raw_fd(), s[1].as_raw_fd(), s[2].as_raw_fd()]).unwrap_or([0, 1, 2]);
        let listen = self.listen.iter().filter(|(e, _)| keep(e)).map(|(e, fd)| (e.clone(), fd.as_raw_fd())).collect();
        Ok((listen, stdio))
    }

    pub fn describe(&self) -> String {
        if self.listen.is_empty() {
            return String::new();
        }
        let names: Vec<String> = self.listen.iter().map(|(e, _)| e.to_string()).collect();
        format!("; holds {}", names.join(", "))
    }
}

fn dev_null() -> std::io::Result<OwnedFd> {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").map(OwnedFd::from)
}
