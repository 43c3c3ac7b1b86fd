//! Kernel pieces of the hand-over: attach a volume's host staging mount inside a created (not yet
//! started) container with open_tree + move_mount, copy a unix socket's file out of the old
//! container's mounts, and set the hostname in its UTS namespace. Each runs in a short-lived
//! child that joined the container's namespaces.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use crate::kernel::Kernel;
use crate::mount_target::{self, Links, Make};
use crate::{mount_options, namespaces};

/// Mount the staging directory at `dest` inside the container whose init is `pid`, with the
/// bind options of the new config (ro, nosuid, nodev, noexec, propagation). As the init's own
/// mounts: the target is found and made through fds inside the container's root (a symlink
/// swapped in by the container cannot send the volume elsewhere), the flags are set on the
/// detached tree, and the attached mount is changed through its own fd.
pub fn attach_volume(pid: i32, staging: &Path, dest: &Path, bind_options: &[String]) -> Result<(), String> {
    // After setns the root is the container's pivoted rootfs, so "/" is its root.
    attach_volume_with(&crate::kernel::Real, pid, staging, Path::new("/"), dest, bind_options)
}

/// `attach_volume` through the kernel seam, `root` being the container's root once its mount
/// namespace is entered. The order is the point: the tree is copied in molt's own namespace
/// (where the staging mount is), the target pinned as an fd inside the container's root, the
/// bind flags set on the detached tree so the volume is never visible without them, and after
/// the attach the mount is changed through its fd only, never by a path.
fn attach_volume_with(k: &impl Kernel, pid: i32, staging: &Path, root: &Path, dest: &Path, bind_options: &[String]) -> Result<(), String> {
    let tree = k.open_tree_clone(staging, true)?;
    let ns: Vec<(CloneFlags, PathBuf)> = vec![(CloneFlags::CLONE_NEWNS, namespaces::path(pid, "mnt"))];
    let opts = mount_options::parse_options(bind_options);
    k.run_in(&ns, move || {
        let root = mount_target::RootDir::open(root)?;
        let target = mount_target::open_target(&root, dest, Make::Dir, Links::Follow)?;
        let (set, clear) = mount_options::mount_attrs(opts.flags & !MsFlags::MS_REMOUNT);
        if set != 0 || clear != 0 {
            k.mount_setattr(&tree, false, set, clear)
                .map_err(|e| format!("bind options of {} (set {set:#x} clear {clear:#x}): {e}", target.shown.display()))?;
        }
        let mount = mount_target::attach_with(k, tree, &target)?;
        mount.propagate(k, &opts.propagation)?;
        mount.set(k, opts.attr_set, opts.attr_clr, true, "recursive options")
    })
}

/// Detached copies (open_tree) of the socket file at `path` in the mount namespace of `pid`, one
/// per container that will be given it: a copy attaches once. A mount keeps the file (and its
/// filesystem, a tmpfs of the old container say) reachable after that container is gone.
pub fn socket_file_copies(pid: i32, path: &Path, n: usize) -> Result<Vec<OwnedFd>, String> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let ns = vec![(CloneFlags::CLONE_NEWNS, namespaces::path(pid, "mnt"))];
    let path = path.to_path_buf();
    namespaces::run_in(&ns, move || {
        let mut copies = vec![];
        for _ in 0..n {
            // After setns the root is the container's: the path resolves as its processes see it.
            let copy = crate::mount_api::open_tree_clone(&path, false)?;
            let st = nix::sys::stat::fstat(copy.as_raw_fd()).map_err(|e| format!("fstat {}: {e}", path.display()))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
                return Err(format!("{} is not a socket file", path.display()));
            }
            copies.push(copy);
        }
        let raw: Vec<_> = copies.iter().map(|c| c.as_raw_fd()).collect();
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
        nix::sys::socket::sendmsg::<()>(theirs.as_raw_fd(), &[std::io::IoSlice::new(b"f")], &cmsg, nix::sys::socket::MsgFlags::empty(), None)
            .map(|_| ())
            .map_err(|e| format!("send the copies of {}: {e}", path.display()))
    })?;
    recv_fds(&ours, n)
}

fn recv_fds(from: &std::os::unix::net::UnixStream, n: usize) -> Result<Vec<OwnedFd>, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(from.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).map_err(|e| format!("receive the copies: {e}"))?;
    let mut fds = vec![];
    for c in msg.cmsgs().map_err(|e| format!("receive the copies: {e}"))? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these fds in our table for us.
            fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    if fds.len() != n {
        return Err(format!("received {} of {n} copies", fds.len()));
    }
    Ok(fds)
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
/// runs), copies of the unix sockets' files, and the old container's stdio (the new one gets it,
/// never the upgrade command's).
#[derive(Default)]
pub struct Held {
    pub listen: Vec<(crate::listen::Endpoint, OwnedFd)>,
    /// Per unix endpoint, the copies of its socket file still to give: each container built with
    /// the socket takes one.
    files: Vec<(crate::listen::Endpoint, Vec<OwnedFd>)>,
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

/// What `create` is given of the held fds: sockets (and socket files) by endpoint, and 0, 1, 2.
pub struct Prep {
    pub listen: Vec<(crate::listen::Endpoint, crate::listen::Handed)>,
    pub stdio: [std::os::fd::RawFd; 3],
    /// The socket file copies handed to this container, open until its init has attached them.
    _files: Vec<OwnedFd>,
}

/// Copies of a unix socket's file: one for the new version, one for the old should it be rebuilt.
const FILE_COPIES: usize = 2;

impl Held {
    /// Take from a running container the listening sockets for `eps` that it holds, the files of
    /// the unix ones, and its stdio. A unix socket whose file cannot be copied is not held: the
    /// next container binds a new one at the path, as `create` does.
    pub fn take_from(&mut self, c: &crate::container::Container, eps: &[crate::listen::Endpoint]) {
        if c.state.pid <= 0 || c.status() == crate::container::Status::Stopped {
            return;
        }
        let want: Vec<_> = eps.iter().filter(|e| !self.listen.iter().any(|(h, _)| h.addr == e.addr)).cloned().collect();
        for (ep, fd) in want.iter().zip(crate::listen::take(&pids_of(c), &want)) {
            let Some(fd) = fd else { continue };
            if let crate::listen::Addr::Unix(path) = &ep.addr {
                match socket_file_copies(c.state.pid, path, FILE_COPIES) {
                    Ok(copies) => self.files.push((ep.clone(), copies)),
                    Err(e) => {
                        crate::logging::warn(&format!("{ep} of {} is not handed over (a new socket will be bound): {e}", c.state.id));
                        continue;
                    }
                }
            }
            self.listen.push((ep.clone(), fd));
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

    /// The fds for `create`: the sockets whose endpoint `keep` accepts, each unix one with a copy
    /// of its file (which leaves the held ones), and the stdio (the null device when no old stdio
    /// could be taken: never the upgrade command's own).
    pub fn prep(&mut self, keep: impl Fn(&crate::listen::Endpoint) -> bool) -> Result<Prep, String> {
        if self.stdio.is_none() {
            let null = || dev_null().map_err(|e| format!("open /dev/null: {e}"));
            self.stdio = Some([null()?, null()?, null()?]);
        }
        let stdio = self.stdio.as_ref().map(|s| [s[0].as_raw_fd(), s[1].as_raw_fd(), s[2].as_raw_fd()]).unwrap_or([0, 1, 2]);
        let (mut listen, mut files) = (vec![], vec![]);
        for (ep, fd) in self.listen.iter().filter(|(e, _)| keep(e)) {
            let file = self.files.iter_mut().find(|(e, _)| e == ep).and_then(|(_, copies)| copies.pop());
            listen.push((ep.clone(), crate::listen::Handed { socket: fd.as_raw_fd(), file: file.as_ref().map(|f| f.as_raw_fd()) }));
            files.extend(file);
        }
        Ok(Prep { listen, stdio, _files: files })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::recording::Recording;

    #[test]
    fn a_volume_is_attached_in_the_containers_namespace_with_its_flags_on_the_detached_tree() {
        let root = std::env::temp_dir().join(format!("molt-seam-handover-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let k = Recording::default();
        let opts: Vec<String> = ["rbind", "ro", "nosuid", "rprivate", "rnoexec"].iter().map(|s| s.to_string()).collect();
        attach_volume_with(&k, 4321, Path::new("/run/molt/staging/vol"), &root, Path::new("/data/db"), &opts).unwrap();
        let target = root.join("data/db");
        assert!(target.is_dir(), "the destination is made inside the given root");
        let want = vec![
            // Copied in molt's own namespace, where the staging mount is.
            "open_tree /run/molt/staging/vol recursive".to_string(),
            "setns mnt /proc/4321/ns/mnt".to_string(),
            // ro (0x1) and nosuid (0x2) on the detached tree, before it is visible.
            "mount_setattr tree:/run/molt/staging/vol set 0x3 clear 0x0".to_string(),
            format!("move_mount tree:/run/molt/staging/vol -> {}", target.display()),
            // rprivate (MS_PRIVATE) and rnoexec (MOUNT_ATTR_NOEXEC) through the attached mount's fd.
            format!("propagation tree:/run/molt/staging/vol {:#x} recursive", libc::MS_PRIVATE),
            "mount_setattr tree:/run/molt/staging/vol set 0x8 clear 0x0 recursive".to_string(),
            "leave".to_string(),
        ];
        assert_eq!(k.lines(), want);
        assert!(!k.has("mount "), "no mount(2) by path: {:?}", k.lines());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_refused_flag_stops_the_attach_before_the_volume_is_visible() {
        let root = std::env::temp_dir().join(format!("molt-seam-handover-fail-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let k = Recording::failing_at("mount_setattr");
        let e = attach_volume_with(&k, 7, Path::new("/s"), &root, Path::new("/v"), &["ro".to_string()]).unwrap_err();
        assert!(e.contains("bind options of") && e.contains("/v"), "{e}");
        assert!(!k.has("move_mount"), "{:?}", k.lines());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
