//! The container's device nodes under /dev: the six every container gets and `linux.devices`,
//! made with mknodat in a directory fd found by crate::mount_target (or, in a user namespace or
//! wherever mknod is refused with EPERM, the host's node bound onto a file made the same way), and the
//! /dev/fd, stdio and ptmx links.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, mknodat, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::kernel::Kernel;
use crate::mount_target::{attach_with, create_in, fd_path, open_target, Links, Make, RootDir, Target};
use super::InitError;

const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

struct Node {
    path: PathBuf,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

fn nodes(configured: &[LinuxDevice]) -> Result<Vec<Node>, InitError> {
    let mut all: Vec<Node> = DEFAULT_DEVICES
        .iter()
        .map(|(p, major, minor)| Node { path: PathBuf::from(p), kind: SFlag::S_IFCHR, major: *major, minor: *minor, mode: 0o666, uid: 0, gid: 0 })
        .collect();
    for d in configured {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(InitError::new(format!("linux.devices {}: type \"a\" is only valid in cgroup rules", d.path().display())))
            }
        };
        all.retain(|e| e.path != *d.path());
        all.push(Node {
            path: d.path().clone(),
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    Ok(all)
}

pub fn create_devices(k: &impl Kernel, root: &RootDir, configured: &[LinuxDevice], in_user_ns: bool) -> Result<(), InitError> {
    let dev = open_target(root, Path::new("/dev"), Make::Dir, Links::Follow)?;
    for node in nodes(configured)? {
        let (Some(parent), Some(name)) = (node.path.parent(), node.path.file_name()) else {
            return Err(InitError::new(format!("linux.devices {}: not a file path", node.path.display())));
        };
        let dir = open_target(root, parent, Make::Dir, Links::Follow)?;
        if !dir.shown.starts_with(&dev.shown) && !node.path.starts_with("/dev") {
            return Err(InitError::new(format!("linux.devices {}: must be under /dev", node.path.display())));
        }
        let shown = dir.shown.join(name);
        let _ = nix::unistd::unlinkat(Some(dir.fd.as_raw_fd()), name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        let bind = |shown: PathBuf| -> Result<(), InitError> {
            create_in(&dir.fd, name, Make::File).map_err(|e| InitError::new(format!("create {}: {e}", shown.display())))?;
            let target = Target { fd: open_child(&dir, name, SFlag::S_IFREG)?, shown, mode_before: None };
            let tree = k.open_tree_clone(&node.path, false).map_err(|e| InitError::new(format!("bind {} on {}: {e}", node.path.display(), target.shown.display())))?;
            attach_with(k, tree, &target)?;
            Ok(())
        };
        if in_user_ns && node.kind != SFlag::S_IFIFO {
            // mknod of a device is refused in a user namespace: bind the host's node instead, as
            // runc does (a FIFO needs no privilege).
            bind(shown)?;
            continue;
        }
        let dev_t = nix::sys::stat::makedev(node.major, node.minor);
        match mknodat(Some(dir.fd.as_raw_fd()), name, node.kind, Mode::from_bits_truncate(node.mode & 0o7777), dev_t) {
            Ok(()) => {}
            // A device filter above the container's cgroup can refuse mknod even to root (podman
            // 4.3 attaches a deny-all eBPF filter to a pod's cgroup on cgroup v2): bind the host's
            // node instead, as runc does on EPERM. Whether the container may then open it is that
            // filter's decision, as it is under runc.
            Err(nix::errno::Errno::EPERM) if node.kind != SFlag::S_IFIFO => {
                bind(shown)?;
                continue;
            }
            Err(e) => return Err(InitError::new(format!("mknod {}: {}", shown.display(), e.desc()))),
        }
        // Through an fd on the node just made: a link swapped in for it is never followed.
        let node_fd = open_child(&dir, name, node.kind)?;
        let made = fd_path(&node_fd);
        // mknod is filtered by the umask; the config's mode is what the container must see.
        fs::set_permissions(&made, fs::Permissions::from_mode(node.mode & 0o7777)).map_err(|e| InitError::new(format!("chmod {}: {e}", shown.display())))?;
        std::os::unix::fs::chown(&made, Some(node.uid), Some(node.gid)).map_err(|e| InitError::new(format!("chown {}: {e}", shown.display())))?;
    }
    links(&dev)
}

/// `name` in `dir`, opened O_PATH without following a link and checked to be of `kind`.
fn open_child(dir: &Target, name: &OsStr, kind: SFlag) -> Result<OwnedFd, InitError> {
    let shown = dir.shown.join(name);
    let raw = nix::fcntl::openat(Some(dir.fd.as_raw_fd()), name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| InitError::new(format!("open {}: {}", shown.display(), e.desc())))?;
    // SAFETY: openat just returned this fd; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| InitError::new(format!("stat {}: {}", shown.display(), e.desc())))?;
    if st.st_mode & libc::S_IFMT != kind.bits() {
        return Err(InitError::new(format!("{} changed while being set up (mode {:o}); refusing to go on", shown.display(), st.st_mode)));
    }
    Ok(fd)
}

fn links(dev: &Target) -> Result<(), InitError> {
    let mut all = vec![("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")];
    if Path::new("/proc/kcore").exists() {
        all.push(("core", "/proc/kcore"));
    }
    for (name, to) in all {
        if fstatat(Some(dev.fd.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW).is_err() {
            let r = nix::unistd::symlinkat(to, Some(dev.fd.as_raw_fd()), name);
            if let (Err(e), false) = (r, name == "core") {
                return Err(InitError::new(format!("symlink {}: {}", dev.shown.join(name).display(), e.desc())));
            }
        }
    }
    Ok(())
}
