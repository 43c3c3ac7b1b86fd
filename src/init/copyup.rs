//! `tmpcopyup` (podman's `--tmpfs` and `--read-only` send it, runc honours it): a tmpfs mounted
//! over a directory of the image starts with a copy of what that directory held. The directory
//! is opened before the tmpfs covers it; reading through that descriptor still sees the image's
//! entries underneath, so no temporary mount point is needed.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::InitError;

/// Opens the directory a tmpfs is about to cover, from the target's O_PATH fd (`shown`: its
/// path, for messages).
pub fn open_covered(target: &OwnedFd, shown: &Path) -> Result<OwnedFd, InitError> {
    open_at(target.as_raw_fd(), OsStr::new("."), libc::O_DIRECTORY).map_err(|e| InitError::new(format!("tmpcopyup: open {}: {e}", shown.display())))
}

/// Copies everything under `src` (the covered directory) into `dst` (the new tmpfs): files,
/// directories, symlinks and device nodes, with their modes and owners.
pub fn copy_tree(src: &OwnedFd, dst: &Path) -> Result<(), InitError> {
    let fail = |what: &str, p: &Path, e: std::io::Error| InitError::new(format!("tmpcopyup: {what} {}: {e}", p.display()));
    for name in entries(src).map_err(|e| fail("read", dst, e))? {
        let to = dst.join(OsStr::from_bytes(name.as_bytes()));
        let st = stat_at(src, &name).map_err(|e| fail("stat the image's", &to, e))?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                std::fs::create_dir(&to).map_err(|e| fail("mkdir", &to, e))?;
                let sub = open_at(src.as_raw_fd(), OsStr::from_bytes(name.as_bytes()), libc::O_DIRECTORY | libc::O_NOFOLLOW)
                    .map_err(|e| fail("open the image's", &to, e))?;
                copy_tree(&sub, &to)?;
            }
            libc::S_IFREG => {
                let fd = open_at(src.as_raw_fd(), OsStr::from_bytes(name.as_bytes()), libc::O_NOFOLLOW)
                    .map_err(|e| fail("open the image's", &to, e))?;
                let mut from = File::from(fd);
                let mut out = File::create(&to).map_err(|e| fail("create", &to, e))?;
                std::io::copy(&mut from, &mut out).map_err(|e| fail("copy", &to, e))?;
            }
            libc::S_IFLNK => {
                let target = link_at(src, &name).map_err(|e| fail("readlink the image's", &to, e))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &to).map_err(|e| fail("symlink", &to, e))?;
            }
            _ => {
                let c = cpath(&to)?;
                // SAFETY: mknod with a valid C path and the image's own mode and device number.
                if unsafe { libc::mknod(c.as_ptr(), st.st_mode, st.st_rdev) } != 0 {
                    return Err(fail("mknod", &to, std::io::Error::last_os_error()));
                }
            }
        }
        let c = cpath(&to)?;
        // SAFETY: lchown/chmod with a valid C path; chmod after chown, which clears set-id bits.
        if unsafe { libc::lchown(c.as_ptr(), st.st_uid, st.st_gid) } != 0 {
            return Err(fail("chown", &to, std::io::Error::last_os_error()));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK && unsafe { libc::chmod(c.as_ptr(), st.st_mode & 0o7777) } != 0 {
            return Err(fail("chmod", &to, std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn cpath(p: &Path) -> Result<CString, InitError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| InitError::new(format!("tmpcopyup: {} holds a NUL byte", p.display())))
}

fn open_at(dir: i32, name: &OsStr, flags: i32) -> std::io::Result<OwnedFd> {
    let c = CString::new(name.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: openat with a valid C string; the returned fd is owned right away.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn stat_at(dir: &OwnedFd, name: &CStr) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid out-buffer for fstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat on our own directory fd with a valid name and out-buffer.
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn link_at(dir: &OwnedFd, name: &CStr) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat into a buffer of the length given.
    let n = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The names in a directory, but `.` and `..`.
fn entries(dir: &OwnedFd) -> std::io::Result<Vec<CString>> {
    let fd = std::os::fd::IntoRawFd::into_raw_fd(dir.try_clone()?);
    let mut d = nix::dir::Dir::from_fd(fd).map_err(std::io::Error::from)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e.map_err(std::io::Error::from)?;
        let name = e.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}
