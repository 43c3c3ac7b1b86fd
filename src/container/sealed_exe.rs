//! CVE-2019-5736: the processes that enter a container (the init until it execs the user's
//! program, an exec child until it does) are clones of the molt command that made them, so their
//! /proc/PID/exe is that command's binary. This module makes that binary one nobody can write.
//!
//! Which processes, and why always. The init is cloned by `molt create`/`run`, an exec child by
//! `molt exec`: those commands re-execute themselves first thing, for every container. No other
//! command puts a process into a container's pid namespace (the `nsutil::run_in` helpers join
//! only its mount, UTS or network namespace, which leaves them out of its /proc; a container
//! sharing the host's pid namespace sees every host process anyway). CAP_SYS_PTRACE is not the
//! line: a container file whose interpreter is `/proc/self/exe` (`#!/proc/self/exe`, or an ELF
//! with that PT_INTERP), run as the init or by exec, makes the kernel execute the init's binary
//! inside the container as a fresh, dumpable process with the container's credentials, whose
//! /proc/PID/exe any process of the container may open and, once molt has exited, write. Which
//! files a container will exec cannot be known ahead (they change), and a user namespace helps
//! only while host root stays unmapped, so there is no cheaper sound rule.
//!
//! How. The binary is opened through a private overlayfs whose only layers are read-only lower
//! ones: its directory on top and an empty directory of molt's below (overlayfs wants two lower
//! layers without an upper one; the same directory twice is a "conflicting lowerdir path"). The
//! mount is made with fsopen/fsmount and never attached anywhere. A file on it cannot be opened
//! for writing (EROFS), by root or CAP_SYS_ADMIN too, and the mount's root, which one would need
//! to reconfigure it, is not reachable from the file. molt execs that fd: no copy. Where the
//! overlay cannot be made (no overlayfs, no new mount API, a binary replaced since it started),
//! molt re-executes from a write-sealed memfd copy instead (as runc < 1.2 does), said in the
//! --debug log.
//!
//! The marker variable only says "this process was re-executed to be sealed": whether it is
//! sealed is read from /proc/self/exe itself. A marker with an unsealed binary is an error,
//! never a pass, so a process that sets it cannot make a molt skip the sealing.

use std::ffi::{CStr, CString, OsString};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use oci_spec::runtime::{Capability, Process};

use super::{Error, Result};

const MARK: &str = "_MOLT_SEALED_EXE";

/// The empty lower layer under the binary's directory (never written: overlayfs only reads it).
const EMPTY_LOWER: &str = "/run/molt-sealed-exe";

/// How a binary is protected from writes, read from the file itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    /// On a read-only overlayfs (the private mount made here, or a system's own).
    Overlay,
    /// A memfd copy with F_SEAL_WRITE.
    Memfd,
}

/// Whether a process with this config could open /proc/PID/exe of a non-dumpable runtime process
/// (a created init made by a molt that did not seal itself): it may gain CAP_SYS_PTRACE (in its
/// bounding set: file capabilities can raise it) in the initial user namespace.
pub fn may_ptrace_runtime(p: &Process, new_user_ns: bool) -> bool {
    let bounding = p.capabilities().as_ref().and_then(|c| c.bounding().clone()).unwrap_or_default();
    !new_user_ns && bounding.contains(&Capability::SysPtrace)
}

/// How the binary behind `exe` (a /proc/PID/exe link) is sealed, if it is.
pub fn seal_of(exe: &Path) -> Option<Seal> {
    let f = std::fs::File::open(exe).ok()?;
    // SAFETY: fcntl on an fd we own; F_GET_SEALS fails with EINVAL on anything but a memfd.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    if seals >= 0 && seals & libc::F_SEAL_WRITE != 0 {
        return Some(Seal::Memfd);
    }
    let fs = crate::mount_target::filesystem_of(&f).ok()?;
    (fs.magic == libc::OVERLAYFS_SUPER_MAGIC && fs.read_only).then_some(Seal::Overlay)
}

/// This process runs from a sealed binary.
pub fn is_sealed() -> bool {
    seal_of(Path::new("/proc/self/exe")).is_some()
}

/// Make sure this process runs from a sealed binary: re-execute molt, same arguments and pid,
/// from its binary on a private read-only overlayfs, or else from a sealed memfd copy. Returns
/// only when already sealed.
pub fn reexec_sealed() -> Result<()> {
    let marked = std::env::var_os(MARK).is_some();
    if marked {
        std::env::remove_var(MARK);
    }
    if let Some(seal) = seal_of(Path::new("/proc/self/exe")) {
        crate::logging::debug(&format!("molt runs from a sealed binary ({})", describe(seal)));
        return Ok(());
    }
    if marked {
        return Err(fail(
            "check the re-executed binary",
            &format!("{MARK} is set but /proc/self/exe is neither on a read-only overlayfs nor a sealed memfd"),
        ));
    }
    let exe = match overlay_exe() {
        Ok(fd) => fd,
        Err(e) => {
            crate::logging::debug(&format!("no read-only overlayfs for molt's binary ({e}): re-executing from a sealed memfd copy"));
            memfd_copy()?
        }
    };
    let cstr = |s: OsString| CString::new(s.into_vec()).ok();
    let args: Vec<_> = std::env::args_os().filter_map(cstr).collect();
    let mut env: Vec<_> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            kv
        })
        .filter_map(cstr)
        .collect();
    env.extend(cstr(format!("{MARK}=1").into()));
    match nix::unistd::fexecve(exe.as_raw_fd(), &args, &env) {
        Err(e) => Err(fail("fexecve", &e)),
        Ok(never) => match never {},
    }
}

/// The init of a running container still runs from an unsealed binary (made by a molt that did
/// not seal itself). A process that is gone, or whose binary cannot be opened, is not.
pub fn init_is_unsealed(pid: i32) -> bool {
    let exe = format!("/proc/{pid}/exe");
    std::fs::File::open(&exe).is_ok() && seal_of(Path::new(&exe)).is_none()
}

fn describe(seal: Seal) -> &'static str {
    match seal {
        Seal::Overlay => "read-only overlayfs",
        Seal::Memfd => "sealed memfd copy",
    }
}

fn fail(step: &str, e: &dyn std::fmt::Display) -> Error {
    Error::Step { id: String::new(), step: "re-execute molt from a sealed binary", reason: format!("{step}: {e}") }
}

/// molt's binary opened through a private read-only overlayfs (never attached).
fn overlay_exe() -> std::result::Result<OwnedFd, String> {
    let path = std::fs::read_link("/proc/self/exe").map_err(|e| format!("readlink /proc/self/exe: {e}"))?;
    if path.as_os_str().as_bytes().ends_with(b" (deleted)") {
        return Err(format!("{} was replaced or removed since molt started", path.display()));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{}: no directory and file name", path.display()));
    };
    empty_lower()?;
    let lowerdir = [lower_escaped(dir.as_os_str().as_bytes()), lower_escaped(EMPTY_LOWER.as_bytes())].join(&b':');
    let fs = fsopen(c"overlay")?;
    fsconfig_string(&fs, c"lowerdir", &lowerdir)?;
    // xino is of no use here, and overlayfs would note in dmesg that it cannot enable it when the
    // layers are on different filesystems.
    let _ = fsconfig_string(&fs, c"xino", b"off");
    fsconfig_create(&fs)?;
    let mnt = fsmount(&fs, libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOSUID)?;
    let name = CString::new(name.as_bytes()).map_err(|e| e.to_string())?;
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: openat relative to the mount's fd with a NUL-terminated name; the fd is owned below.
    let fd = unsafe { libc::openat(mnt.as_raw_fd(), name.as_ptr(), flags) };
    if fd < 0 {
        return Err(format!("open {} on the overlay: {}", path.display(), std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd from openat.
    let exe = unsafe { OwnedFd::from_raw_fd(fd) };
    // The file at the path must be the one running (overlayfs shows the lower file's size and
    // times, not its device and inode).
    let running = std::fs::metadata("/proc/self/exe").map_err(|e| format!("stat /proc/self/exe: {e}"))?;
    let opened = std::fs::File::from(exe.try_clone().map_err(|e| e.to_string())?).metadata().map_err(|e| e.to_string())?;
    let key = |m: &std::fs::Metadata| (m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec());
    if key(&running) != key(&opened) {
        return Err(format!("{} is not the binary molt started from", path.display()));
    }
    if seal_of(Path::new(&format!("/proc/self/fd/{}", exe.as_raw_fd()))) != Some(Seal::Overlay) {
        return Err("the overlay's file is not on a read-only overlayfs".into());
    }
    Ok(exe)
}

/// The bottom layer: an empty directory of molt's (root's, not a symlink).
fn empty_lower() -> std::result::Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(EMPTY_LOWER) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("mkdir {EMPTY_LOWER}: {e}")),
    }
    let m = std::fs::symlink_metadata(EMPTY_LOWER).map_err(|e| format!("{EMPTY_LOWER}: {e}"))?;
    if !m.is_dir() || m.uid() != 0 {
        return Err(format!("{EMPTY_LOWER} is not a directory owned by root"));
    }
    Ok(())
}

/// A path as one element of overlayfs's lowerdir list: ':' separates layers, '\' escapes.
fn lower_escaped(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if b == b':' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

fn fsopen(fstype: &CStr) -> std::result::Result<OwnedFd, String> {
    // SAFETY: fsopen with a NUL-terminated name; the fd is owned right away.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(format!("fsopen {fstype:?}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd from fsopen.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn fsconfig_string(fs: &OwnedFd, key: &CStr, value: &[u8]) -> std::result::Result<(), String> {
    let v = CString::new(value).map_err(|e| e.to_string())?;
    // SAFETY: fsconfig on our fs context with NUL-terminated key and value.
    let r = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), libc::FSCONFIG_SET_STRING, key.as_ptr(), v.as_ptr(), 0) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("fsconfig {key:?}={:?}: {e}{}", String::from_utf8_lossy(value), crate::mount_api::kernel_log(fs)));
    }
    Ok(())
}

fn fsconfig_create(fs: &OwnedFd) -> std::result::Result<(), String> {
    // SAFETY: fsconfig on our fs context; the create command takes no key or value.
    let r = unsafe {
        libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), libc::FSCONFIG_CMD_CREATE, std::ptr::null::<u8>(), std::ptr::null::<u8>(), 0)
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("create the overlayfs: {e}{}", crate::mount_api::kernel_log(fs)));
    }
    Ok(())
}

fn fsmount(fs: &OwnedFd, attrs: u64) -> std::result::Result<OwnedFd, String> {
    // SAFETY: fsmount of our created fs context; the fd is owned right away.
    let fd = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), libc::FSMOUNT_CLOEXEC, attrs as libc::c_uint) };
    if fd < 0 {
        return Err(format!("fsmount the overlayfs: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd from fsmount.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A copy of molt's binary in a memfd, sealed against writes.
fn memfd_copy() -> Result<OwnedFd> {
    let name = c"molt-sealed";
    // SAFETY: memfd_create with a valid C string; the fd is owned right away.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(fail("memfd_create", &std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd from memfd_create.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut src = std::fs::File::open("/proc/self/exe").map_err(|e| fail("open /proc/self/exe", &e))?;
    let mut dst = std::fs::File::from(memfd.try_clone().map_err(|e| fail("dup memfd", &e))?);
    std::io::copy(&mut src, &mut dst).map_err(|e| fail("copy the binary", &e))?;
    dst.flush().map_err(|e| fail("copy the binary", &e))?;
    drop(dst);
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our own memfd.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(fail("seal the copy", &std::io::Error::last_os_error()));
    }
    Ok(memfd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(bounding: &[&str]) -> Process {
        serde_json::from_value(serde_json::json!({
            "cwd": "/", "args": ["true"], "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": bounding}
        }))
        .unwrap()
    }

    #[test]
    fn only_ptrace_capable_processes_outside_a_user_namespace_reach_a_runtime_process() {
        assert!(!may_ptrace_runtime(&process(&["CAP_KILL", "CAP_NET_BIND_SERVICE"]), false));
        assert!(may_ptrace_runtime(&process(&["CAP_KILL", "CAP_SYS_PTRACE"]), false));
        assert!(!may_ptrace_runtime(&process(&["CAP_SYS_PTRACE"]), true));
    }

    #[test]
    fn lower_layers_escape_colons_and_backslashes() {
        assert_eq!(lower_escaped(b"/usr/bin"), b"/usr/bin");
        assert_eq!(lower_escaped(b"/a:b\\c"), b"/a\\:b\\\\c");
    }

    #[test]
    fn a_plain_binary_is_not_sealed_and_a_sealed_memfd_is() {
        // The test binary runs from target/, a writable directory.
        assert_eq!(seal_of(Path::new("/proc/self/exe")), None);
        let copy = memfd_copy().unwrap();
        assert_eq!(seal_of(Path::new(&format!("/proc/self/fd/{}", copy.as_raw_fd()))), Some(Seal::Memfd));
    }
}
