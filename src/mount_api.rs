//! The new mount API's calls molt makes on detached mount trees (Linux 5.2; idmapped mounts
//! 5.12): copy a tree with open_tree or make one with fsopen/fsmount, change it with
//! mount_setattr, attach it with move_mount.
//! A detached tree can be attached in another mount namespace than the one it was copied in,
//! which is how the upgrade hands a volume over and how idmapped mounts reach the init.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

fn cstring(p: &Path) -> Result<std::ffi::CString, String> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| format!("{}: {e}", p.display()))
}

/// A detached copy of the mount at `path` (with every mount under it when `recursive`).
pub fn open_tree_clone(path: &Path, recursive: bool) -> Result<OwnedFd, String> {
    let c = cstring(path)?;
    open_tree(libc::AT_FDCWD, &c, if recursive { AT_RECURSIVE } else { 0 }).map_err(|e| format!("open_tree {}: {e}", path.display()))
}

/// A detached bind of the file or directory `fd` is open on, alone (no mount under it).
pub fn open_tree_clone_fd(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    open_tree(fd.as_raw_fd(), &std::ffi::CString::default(), libc::AT_EMPTY_PATH as libc::c_uint)
}

/// The same with every mount under it.
pub fn open_tree_clone_fd_recursive(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    open_tree(fd.as_raw_fd(), &std::ffi::CString::default(), libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE)
}

fn open_tree(dir: libc::c_int, path: &std::ffi::CStr, flags: libc::c_uint) -> std::io::Result<OwnedFd> {
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | flags;
    // SAFETY: open_tree with a NUL-terminated path relative to `dir`; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, dir, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A new, detached mount of a `fstype` filesystem (fsopen, fsconfig, fsmount): `data` is
/// mount(2)'s comma-separated option string, `sb_flags` its superblock flags (ro, sync, dirsync,
/// lazytime, mand) and `attrs` the MOUNT_ATTR_* flags of the mount itself. The kernel's own
/// message about a refused option is part of the error.
pub fn fs_mount(fstype: &str, source: &str, data: &str, sb_flags: &[&str], attrs: u64) -> Result<OwnedFd, String> {
    let c = |s: &str| std::ffi::CString::new(s).map_err(|_| format!("{s:?} holds a NUL byte"));
    let t = c(fstype)?;
    // SAFETY: fsopen with a NUL-terminated filesystem name; returns a new fd or -1.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), libc::FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err(format!("fsopen {fstype}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this fd to us.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let config = |cmd: libc::c_uint, key: Option<&str>, value: Option<&str>| -> Result<(), String> {
        let (k, v) = (key.map(c).transpose()?, value.map(c).transpose()?);
        let (kp, vp) = (k.as_ref().map_or(std::ptr::null(), |k| k.as_ptr()), v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()));
        // SAFETY: fsconfig on our fs context with NUL-terminated key and value (or null).
        if unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, kp, vp, 0) } != 0 {
            let e = std::io::Error::last_os_error();
            let what = match (key, value) {
                (Some(k), Some(v)) => format!("option {k}={v}"),
                (Some(k), None) => format!("option {k}"),
                _ => "creating the filesystem".to_string(),
            };
            return Err(format!("{fstype}: {what}: {e}{}", kernel_log(&fs)));
        }
        Ok(())
    };
    config(libc::FSCONFIG_SET_STRING, Some("source"), Some(source))?;
    for opt in data.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some((k, v)) => config(libc::FSCONFIG_SET_STRING, Some(k), Some(v))?,
            None => config(libc::FSCONFIG_SET_FLAG, Some(opt), None)?,
        }
    }
    for flag in sb_flags {
        config(libc::FSCONFIG_SET_FLAG, Some(flag), None)?;
    }
    config(libc::FSCONFIG_CMD_CREATE, None, None)?;
    // SAFETY: fsmount of our configured context; returns a new fd or -1.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), libc::FSMOUNT_CLOEXEC, attrs as libc::c_uint) };
    if m < 0 {
        return Err(format!("fsmount {fstype}: {}{}", std::io::Error::last_os_error(), kernel_log(&fs)));
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(m as i32) })
}

/// What the kernel wrote to an fs context's log ("e msg" lines) about a failed fsconfig or
/// fsmount, as " (msg; msg)", or nothing.
pub fn kernel_log(fs: &OwnedFd) -> String {
    let mut lines = vec![];
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: read into a buffer of the length given; the log returns one message a read.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let text = String::from_utf8_lossy(&buf[..n as usize]);
        lines.push(text.get(2..).unwrap_or("").trim().to_string());
    }
    if lines.is_empty() { String::new() } else { format!(" ({})", lines.join("; ")) }
}

/// Attach the detached tree `fd` on `dest` (a path in the caller's mount namespace).
pub fn move_mount_to(fd: &OwnedFd, dest: &Path) -> Result<(), String> {
    let empty = std::ffi::CString::default();
    let c = cstring(dest)?;
    // SAFETY: move_mount of the detached tree `fd` onto a path; both strings are NUL-terminated.
    let r = unsafe {
        libc::syscall(libc::SYS_move_mount, fd.as_raw_fd(), empty.as_ptr(), libc::AT_FDCWD, c.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH)
    };
    if r != 0 {
        return Err(format!("move_mount onto {}: {}", dest.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Attach the detached tree `fd` on the file or directory `target` is open on (O_PATH), so a
/// path swapped for a symlink in between cannot redirect it (move_mount refuses the
/// /proc/self/fd/N form of the same).
pub fn move_mount_onto_fd(fd: &OwnedFd, target: &OwnedFd) -> Result<(), String> {
    let empty = std::ffi::CString::default();
    // SAFETY: move_mount between two fds we hold, both paths empty.
    let r = unsafe {
        libc::syscall(libc::SYS_move_mount, fd.as_raw_fd(), empty.as_ptr(), target.as_raw_fd(), empty.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH)
    };
    if r != 0 {
        return Err(format!("move_mount: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2): set and clear MOUNT_ATTR_* flags on the mount at `path` (the mount `at` is
/// open on when `at` is given and `path` is empty), on every mount under it when `recursive`;
/// with MOUNT_ATTR_IDMAP, `userns` gives the mapping.
pub fn setattr(at: Option<&OwnedFd>, path: &Path, recursive: bool, set: u64, clear: u64, userns: Option<&OwnedFd>) -> std::io::Result<()> {
    let attr = MountAttr { attr_set: set, attr_clr: clear, propagation: 0, userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64) };
    mount_setattr(at, path, recursive, &attr)
}

/// Give the mount `at` is open on the propagation `flag` (MS_SHARED, MS_SLAVE, MS_PRIVATE or
/// MS_UNBINDABLE), to every mount under it too when `recursive`: mount(2)'s propagation change
/// without a path.
pub fn set_propagation(at: &OwnedFd, flag: u64, recursive: bool) -> std::io::Result<()> {
    mount_setattr(Some(at), Path::new(""), recursive, &MountAttr { attr_set: 0, attr_clr: 0, propagation: flag, userns_fd: 0 })
}

fn mount_setattr(at: Option<&OwnedFd>, path: &Path, recursive: bool, attr: &MountAttr) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let dirfd = at.map_or(libc::AT_FDCWD, |fd| fd.as_raw_fd());
    let flags = if recursive { AT_RECURSIVE } else { 0 } | if at.is_some() && path.as_os_str().is_empty() { libc::AT_EMPTY_PATH as libc::c_uint } else { 0 };
    // SAFETY: mount_setattr with a NUL-terminated path and a mount_attr of the size given.
    let r = unsafe { libc::syscall(libc::SYS_mount_setattr, dirfd, c.as_ptr(), flags, attr as *const MountAttr, std::mem::size_of::<MountAttr>()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Give the detached tree `fd` the id mapping of the user namespace `userns` (every mount in it
/// when `recursive`). The kernel refuses an attached mount, one already idmapped, and a
/// filesystem that does not support idmapped mounts (EINVAL).
pub fn set_idmap(fd: &OwnedFd, userns: &OwnedFd, recursive: bool) -> Result<(), String> {
    setattr(Some(fd), Path::new(""), recursive, MOUNT_ATTR_IDMAP, 0, Some(userns)).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EINVAL) { " (the filesystem may not support idmapped mounts)" } else { "" };
        format!("mount_setattr MOUNT_ATTR_IDMAP: {e}{hint}")
    })
}
