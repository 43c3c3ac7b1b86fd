//! Mount targets inside a container's root, found and made through file descriptors (by the
//! init for its mounts, and by the upgrade for a volume handed over). Each
//! directory on the way is created relative to an fd of its parent and opened with openat2
//! (RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), the last component without following a link; the
//! O_PATH fd that comes back is what the mount is attached to. A host process that swaps a
//! directory for a symlink meanwhile (the CVE-2021-30465 race) can move a step elsewhere inside
//! the rootfs, never out of it.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::kernel::Kernel;
use crate::safe_path::resolve_in_root;

/// The rootfs, opened once it is the mount the container's mounts go on (after its bind onto
/// itself): every target is resolved from this fd.
pub struct RootDir {
    fd: OwnedFd,
    pub path: PathBuf,
}

impl RootDir {
    pub fn open(path: &Path) -> Result<RootDir, String> {
        let fd = openat2(libc::AT_FDCWD, path, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| format!("open the rootfs {}: {e}", path.display()))?;
        Ok(RootDir { fd, path: path.to_path_buf() })
    }
}

/// What to create at the destination when it is missing.
#[derive(Clone, Copy, PartialEq)]
pub enum Make {
    Dir,
    File,
    /// A socket inode (mknod S_IFSOCK, bound to nothing): where a socket's file is attached.
    Socket,
}

/// Whether the path to a destination may go through symlinks (inside the rootfs).
#[derive(Clone, Copy, PartialEq)]
pub enum Links {
    Follow,
    /// proc and sysfs: a link anywhere on the way is refused, naming it (runc's rule since
    /// CVE-2019-19921), also one swapped in while the path is walked.
    Refuse { typ: &'static str },
}

/// A mount target: an O_PATH fd on the file or directory the mount goes on, and its path on
/// the host for messages.
pub struct Target {
    pub fd: OwnedFd,
    pub shown: PathBuf,
    /// The permission bits of the destination when it existed before (None: made here).
    pub mode_before: Option<u32>,
}

/// `/proc/self/fd/N`: for the calls that take a path (chmod, chown, copying into a tmpfs), which
/// then reach exactly the inode or mount `fd` is open on.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// openat2(2), retried on the EAGAIN it returns when a rename races a RESOLVE_IN_ROOT walk.
fn openat2(dir: RawFd, path: &Path, flags: i32, resolve: u64) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain integers; all-zero is its empty value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    for _ in 0..64 {
        // SAFETY: openat2 with a NUL-terminated path and an open_how of the size given.
        let fd = unsafe { libc::syscall(libc::SYS_openat2, dir, c.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>()) };
        if fd >= 0 {
            // SAFETY: the kernel just returned this fd to us.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
}

/// `path` inside the rootfs opened with `flags`, links followed only inside it (a device node
/// such as the container's ptmx, which a path from the host could take elsewhere).
pub fn open_in(root: &RootDir, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    openat2(root.fd.as_raw_fd(), &lexical(path), flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
}

/// The destination `dest` (absolute, as the config names it) inside the rootfs, created as
/// `make` says when missing, opened O_PATH. With `Links::Follow` symlinks in the image are
/// followed inside the rootfs, as when it is the container's `/`, before the walk; the walk then
/// creates each missing directory with mkdirat in the fd of its parent.
pub fn open_target(root: &RootDir, dest: &Path, make: Make, links: Links) -> Result<Target, String> {
    let rel = match links {
        Links::Follow => resolve_in_root(&root.path, dest).map_err(|e| e.to_string())?.strip_prefix(&root.path).map(Path::to_path_buf).unwrap_or_default(),
        Links::Refuse { .. } => lexical(dest),
    };
    let parts: Vec<&OsStr> = rel.components().filter_map(|c| if let Component::Normal(p) = c { Some(p) } else { None }).collect();
    let resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | if matches!(links, Links::Refuse { .. }) { RESOLVE_NO_SYMLINKS } else { 0 };
    let shown = root.path.join(&rel);
    let fail = |what: &str, at: &Path, e: std::io::Error| format!("mount destination {}: {what} {}: {e}", dest.display(), root.path.join(at).display());
    let mut fd = openat2(root.fd.as_raw_fd(), Path::new("."), libc::O_PATH | libc::O_DIRECTORY, resolve).map_err(|e| fail("open", Path::new(""), e))?;
    let mut at = PathBuf::new();
    let mut created = false;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let parent = fd;
        at.push(part);
        let kind = if last { make } else { Make::Dir };
        created = create_in(&parent, part, kind).map_err(|e| fail(if kind == Make::Dir { "mkdir" } else { "create" }, &at, e))?;
        let flags = libc::O_PATH | if last { libc::O_NOFOLLOW } else { libc::O_DIRECTORY };
        fd = match openat2(root.fd.as_raw_fd(), &at, flags, resolve) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(linked(dest, links, &parent, part, &at).unwrap_or_else(|| fail("open", &at, e))),
            Err(e) => return Err(fail("open", &at, e)),
        };
        if last && is_symlink(&fd) {
            return Err(linked(dest, links, &parent, part, &at).unwrap_or_else(|| {
                format!("mount destination {}: {} became a symlink while being set up; refusing to mount through it", dest.display(), shown.display())
            }));
        }
    }
    let mode_before = (!created).then(|| nix::sys::stat::fstat(fd.as_raw_fd()).map(|st| st.st_mode & 0o7777).ok()).flatten();
    Ok(Target { fd, shown, mode_before })
}

/// A masked or read-only path (`linux.maskedPaths`, `linux.readonlyPaths`) opened O_PATH inside
/// the root, links followed inside it; None when it does not exist. `kernel_fs` names the
/// filesystem molt mounted on the path's first directory (proc on /proc, sysfs on /sys) with its
/// statfs magic: that directory is then opened without following a link and must still be that
/// filesystem, and the rest is resolved beneath it. By name, a /proc the rootfs's owner swapped
/// meanwhile (for a link, or for another directory) would hold none of the paths, each would be
/// skipped as absent, and the real one would reach the container unprotected.
pub fn open_protected(root: &RootDir, path: &Path, kernel_fs: Option<(&str, i64)>) -> Result<Option<OwnedFd>, String> {
    let absent = |r: std::io::Result<OwnedFd>| match r {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    };
    let rel = lexical(path);
    let Some((typ, magic)) = kernel_fs else {
        return absent(openat2(root.fd.as_raw_fd(), &rel, libc::O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)).map_err(|e| format!("open {}: {e}", path.display()));
    };
    let mut parts = rel.components();
    let top = Path::new("/").join(parts.next().map(|c| c.as_os_str()).unwrap_or_default());
    let dir = openat2(root.fd.as_raw_fd(), &top, libc::O_PATH | libc::O_DIRECTORY, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => format!("{} became a symlink after the {typ} mount was made there; {} is not left unprotected", top.display(), path.display()),
            _ => format!("{} (for {}): {e}; it must be the {typ} mount made there", top.display(), path.display()),
        })?;
    let fs = filesystem_of(&dir).map_err(|e| format!("statfs {}: {e}", top.display()))?;
    if fs.magic != magic {
        return Err(format!("{} (for {}) is no longer the {typ} mount made there (filesystem {:#x}): it was swapped while the container was set up", top.display(), path.display(), fs.magic));
    }
    let rest = parts.as_path();
    if rest.as_os_str().is_empty() {
        return Ok(Some(dir));
    }
    absent(openat2(dir.as_raw_fd(), rest, libc::O_PATH, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)).map_err(|e| format!("open {}: {e}", path.display()))
}

/// What filesystem an open file is on, as fstatfs(2) tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filesystem {
    /// The statfs magic (PROC_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, ...).
    pub magic: i64,
    /// Mounted read-only (ST_RDONLY).
    pub read_only: bool,
}

/// The filesystem `fd` is on.
pub fn filesystem_of(fd: &impl std::os::fd::AsFd) -> std::io::Result<Filesystem> {
    let st = nix::sys::statfs::fstatfs(fd)?;
    #[allow(clippy::unnecessary_cast)] // the magic's type is not i64 on every libc
    let magic = st.filesystem_type().0 as i64;
    Ok(Filesystem { magic, read_only: st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) })
}

/// `/a/../b/.` as `a/b` would be read with no links: `..` drops the component before it.
fn lexical(dest: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in dest.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Makes `name` in `dir` as `make` says (true when it did); what exists already (of any kind, a
/// link included) is left for the open that follows to judge.
pub fn create_in(dir: &OwnedFd, name: &OsStr, make: Make) -> std::io::Result<bool> {
    let c = CString::new(name.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let r = match make {
        // SAFETY: mkdirat in a directory fd we hold, with a NUL-terminated name.
        Make::Dir => unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) },
        Make::File => {
            // O_EXCL|O_NOFOLLOW: never opens what exists (a FIFO would block, a link would be followed).
            // SAFETY: openat in a directory fd we hold; the new fd is closed right away.
            let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o644) };
            if fd >= 0 {
                // SAFETY: closing the fd openat just returned.
                unsafe { libc::close(fd) };
            }
            fd.min(0)
        }
        // SAFETY: mknodat in a directory fd we hold, with a NUL-terminated name.
        Make::Socket => unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), libc::S_IFSOCK | 0o666, 0) },
    };
    match r {
        0 => Ok(true),
        _ => match std::io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            e => Err(e),
        },
    }
}

fn is_symlink(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd.as_raw_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

/// The refusal of a proc or sysfs destination whose path has a link at `at` (None when links
/// are followed, or `name` is no link after all).
fn linked(dest: &Path, links: Links, dir: &OwnedFd, name: &OsStr, at: &Path) -> Option<String> {
    let Links::Refuse { typ } = links else { return None };
    let to = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name).ok()?;
    Some(format!(
        "mount destination {} ({typ}): {} is a symlink (to {}) in the rootfs; a {typ} mount is never made through a link",
        dest.display(),
        Path::new("/").join(at).display(),
        Path::new(&to).display(),
    ))
}

/// A mount made detached (open_tree, fsmount) and then attached on a target; its fd stays
/// the handle for every later change (propagation, recursive options, the read-only remount).
pub struct Attached {
    pub fd: OwnedFd,
    pub shown: PathBuf,
}

/// Attach the detached mount `tree` on `target`.
pub fn attach(tree: OwnedFd, target: &Target) -> Result<Attached, String> {
    attach_with(&crate::kernel::Real, tree, target)
}

/// `attach` through the kernel seam `k`.
pub fn attach_with(k: &impl Kernel, tree: OwnedFd, target: &Target) -> Result<Attached, String> {
    k.move_mount_onto_fd(&tree, &target.fd).map_err(|e| format!("attach the mount on {}: {e}", target.shown.display()))?;
    Ok(Attached { fd: tree, shown: target.shown.clone() })
}

impl Attached {
    /// mount_setattr on this mount (and every mount under it when `recursive`).
    pub fn set(&self, k: &impl Kernel, set: u64, clear: u64, recursive: bool, why: &str) -> Result<(), String> {
        if set == 0 && clear == 0 {
            return Ok(());
        }
        k.mount_setattr(&self.fd, recursive, set, clear)
            .map_err(|e| format!("mount_setattr {} ({why}, set {set:#x} clear {clear:#x}): {e}", self.shown.display()))
    }

    pub fn propagate(&self, k: &impl Kernel, flags: &[nix::mount::MsFlags]) -> Result<(), String> {
        for f in flags {
            let (mode, recursive) = crate::mount_options::propagation_attr(*f);
            k.set_propagation(&self.fd, mode, recursive)
                .map_err(|e| format!("set the propagation {f:?} of {}: {e}", self.shown.display()))?;
        }
        Ok(())
    }

    pub fn make_readonly(&self, k: &impl Kernel) -> Result<(), String> {
        self.set(k, 0x1, 0, false, "read-only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn scratch(tag: &str) -> (PathBuf, PathBuf) {
        let base = std::env::temp_dir().join(format!("molt-target-{tag}-{}", std::process::id()));
        let root = base.join("root");
        fs::create_dir_all(&root).unwrap();
        (base, root)
    }

    #[test]
    fn filesystem_of_names_the_filesystem() {
        // A read-only one is checked by the sealed binary's tests (tests/security.rs).
        let proc = fs::File::open("/proc/self").unwrap();
        assert_eq!(filesystem_of(&proc).unwrap(), Filesystem { magic: libc::PROC_SUPER_MAGIC, read_only: false });
        let sys = fs::File::open("/sys").unwrap();
        assert_eq!(filesystem_of(&sys).unwrap().magic, libc::SYSFS_MAGIC);
    }

    #[test]
    fn targets_are_made_and_opened_inside_the_root() {
        let (base, root) = scratch("make");
        fs::create_dir_all(base.join("outside")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink(base.join("outside"), root.join("abs")).unwrap();
        symlink("../../..", root.join("up")).unwrap();
        let r = RootDir::open(&root).unwrap();
        let t = open_target(&r, Path::new("/abs/new/dir"), Make::Dir, Links::Follow).unwrap();
        assert_eq!(fs::read_link(fd_path(&t.fd)).unwrap(), root.join(base.strip_prefix("/").unwrap()).join("outside/new/dir"));
        let t = open_target(&r, Path::new("/up/etc/file"), Make::File, Links::Follow).unwrap();
        assert_eq!(fs::read_link(fd_path(&t.fd)).unwrap(), root.join("etc/file"));
        assert!(root.join("etc/file").is_file());
        assert_eq!(fs::read_dir(base.join("outside")).unwrap().count(), 0, "made outside the root");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_protected_path_under_a_swapped_proc_is_refused_not_skipped() {
        let (base, root) = scratch("protected");
        fs::create_dir_all(root.join("proc")).unwrap();
        fs::create_dir_all(root.join("real/sub")).unwrap();
        fs::write(root.join("etc"), "").unwrap();
        symlink("real", root.join("sys")).unwrap();
        let r = RootDir::open(&root).unwrap();
        let proc_fs = Some(("proc", libc::PROC_SUPER_MAGIC));
        // A plain directory where proc was mounted: absent paths are not taken for absent.
        let e = open_protected(&r, Path::new("/proc/acpi"), proc_fs).expect_err("refused");
        assert!(e.contains("/proc (for /proc/acpi) is no longer the proc mount"), "{e}");
        let e = open_protected(&r, Path::new("/sys/firmware"), Some(("sysfs", libc::SYSFS_MAGIC))).expect_err("refused");
        assert!(e.contains("/sys became a symlink"), "{e}");
        // Elsewhere, links are followed inside the root and an absent path is nothing to protect.
        assert!(open_protected(&r, Path::new("/sys/sub"), None).unwrap().is_some());
        assert!(open_protected(&r, Path::new("/absent"), None).unwrap().is_none());
        assert!(open_protected(&r, Path::new("/etc"), None).unwrap().is_some());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_link_on_the_way_to_proc_is_refused_naming_it() {
        let (base, root) = scratch("link");
        fs::create_dir_all(root.join("real")).unwrap();
        symlink("real", root.join("proc")).unwrap();
        let r = RootDir::open(&root).unwrap();
        let refuse = Links::Refuse { typ: "proc" };
        let e = open_target(&r, Path::new("/proc"), Make::Dir, refuse).err().expect("refused");
        assert!(e.contains("/proc is a symlink (to real)"), "{e}");
        let e = open_target(&r, Path::new("/proc/sub"), Make::Dir, refuse).err().expect("refused");
        assert!(e.contains("/proc is a symlink (to real)"), "{e}");
        assert!(!root.join("real/sub").exists());
        assert!(open_target(&r, Path::new("/real/sub"), Make::Dir, refuse).is_ok());
        fs::remove_dir_all(&base).unwrap();
    }
}
