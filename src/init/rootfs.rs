//! The container's root filesystem, built inside its new mount namespace: config mounts in order,
//! devices, pivot_root, masked and read-only paths. Every destination is found and made through
//! fds inside the rootfs (crate::mount_target), so that neither a symlink in the image nor one
//! swapped in by the host meanwhile can send a mount or a mkdir out of it.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::{Mount, Spec};

use crate::kernel::Kernel;
use crate::mount_target::{attach_with, fd_path, open_target, Attached, Links, Make, RootDir};
use super::InitError;
use crate::mount_options::{mount_attrs, parse_options, propagation_flag, superblock_flags};

fn sys(step: impl FnOnce() -> String) -> impl FnOnce(nix::errno::Errno) -> InitError {
    move |e| InitError::new(format!("{}: {}", step(), e.desc()))
}

fn do_mount(
    k: &impl Kernel,
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    k.mount(source, target, fstype, flags, data).map_err(sys(|| {
        format!(
            "mount {} on {} (type {}, options {:?})",
            source.map(|s| s.display().to_string()).unwrap_or_else(|| "none".into()),
            target.display(),
            fstype.unwrap_or("none"),
            data.unwrap_or("")
        )
    }))
}

/// Everything that happens before pivot_root, in the container's new mount namespace.
pub struct RootfsPlan<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    /// Mount index -> host staging directory to bind instead of the mount's own source (volumes).
    pub volume_binds: &'a [(usize, PathBuf, Vec<String>)],
    /// Volume mounts skipped now and handed over later (upgrade).
    pub deferred: &'a [usize],
    /// Mount index -> its bind source, opened by molt (see Msg::BindSources); closed when
    /// `prepare` returns (not one may still be open at the chdir to the cwd).
    pub bind_fds: Vec<(usize, OwnedFd)>,
    /// Mount index -> its idmapped source tree, made by molt (see init::idmap).
    pub idmapped: Vec<(usize, OwnedFd)>,
    pub in_user_ns: bool,
    /// The init's cgroups as the host names them, read before the cgroup namespace was entered.
    pub own_cgroups: &'a [crate::cgroups::Membership],
}

/// Consumes `plan`: the host's bind sources it holds are closed once the mounts are made.
pub fn prepare(k: &impl Kernel, plan: RootfsPlan) -> Result<(), InitError> {
    let plan = &plan;
    let linux = plan.spec.linux().clone().unwrap_or_default();
    let root_propagation = rootfs_propagation(plan.spec)?;
    // Nothing done here may propagate back to the host's mounts.
    do_mount(k, None, Path::new("/"), None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)?;
    // With a rootfsPropagation, the new root's parent mount is made private, or slave for `slave`
    // (runc's rootfsParentMountPropagation), so that the root starts from it. Without one the
    // root stays the slave of the host's mount that `/` made it, as runc 1.1.5 leaves it.
    if let Some(flag) = root_propagation {
        let parent = if flag.contains(MsFlags::MS_SLAVE) { MsFlags::MS_SLAVE } else { MsFlags::MS_PRIVATE };
        parent_mount_propagation(k, plan.rootfs, parent)?;
    }
    // pivot_root needs the new root to be a mount point.
    do_mount(k, Some(plan.rootfs), plan.rootfs, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    // private and slave now; shared and unbindable once the root is `/` (root_propagation_last).
    if let Some(flag) = root_propagation.filter(|f| f.intersects(MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE)) {
        do_mount(k, None, plan.rootfs, None, flag, None)?;
    }
    // Opened after the bind above: every target is resolved from the mount the container gets.
    let root = RootDir::open(plan.rootfs)?;
    let mounts = plan.spec.mounts().clone().unwrap_or_default();
    // tmpfs and /dev are mounted writable and made read-only once everything under them exists.
    let mut later_readonly = vec![];
    for (i, m) in mounts.iter().enumerate() {
        if plan.deferred.contains(&i) {
            // The target must exist for the hand-over's move_mount.
            open_target(&root, m.destination(), Make::Dir, Links::Follow)?;
            continue;
        }
        let opened = plan.bind_fds.iter().find(|(idx, _)| *idx == i).map(|(_, fd)| fd);
        let tree = plan.idmapped.iter().find(|(idx, _)| *idx == i).map(|(_, fd)| fd);
        match plan.volume_binds.iter().find(|(idx, _, _)| *idx == i) {
            Some((_, staging, bind_opts)) => mount_bind(k, &root, m.destination(), &Source::new(staging, opened), bind_opts, true)?,
            None => later_readonly.extend(mount_one(k, plan, &root, m, opened, tree)?),
        }
    }
    super::devices::create_devices(k, &root, &linux.devices().clone().unwrap_or_default(), plan.in_user_ns)?;
    // A missing working directory is created, as runc creates it (before the root turns read-only).
    if let Some(p) = plan.spec.process() {
        open_target(&root, p.cwd(), Make::Dir, Links::Follow).map_err(|e| InitError::new(format!("process.cwd {}: {}", p.cwd().display(), e)))?;
    }
    for mount in later_readonly {
        mount.make_readonly(k)?;
    }
    Ok(())
}

/// `linux.rootfsPropagation` as mount(2) flags.
pub fn rootfs_propagation(spec: &Spec) -> Result<Option<MsFlags>, InitError> {
    let Some(p) = spec.linux().as_ref().and_then(|l| l.rootfs_propagation().clone()) else { return Ok(None) };
    propagation_flag(&p)
        .map(Some)
        .ok_or_else(|| InitError::new(format!("linux.rootfsPropagation {p:?}: not a propagation mode (shared, slave, private, unbindable, or r-)")))
}

/// Set the propagation of the mount `path` is on: mount(2) says EINVAL for a path that is not a
/// mount point, so walk up until one is found.
fn parent_mount_propagation(k: &impl Kernel, path: &Path, flag: MsFlags) -> Result<(), InitError> {
    let mut at = path;
    loop {
        match (k.mount(None, at, None, flag, None), at.parent()) {
            (Ok(()), _) => return Ok(()),
            (Err(nix::errno::Errno::EINVAL), Some(up)) => at = up,
            (Err(e), _) => {
                let mode = if flag.contains(MsFlags::MS_SLAVE) { "slave" } else { "private" };
                return Err(sys(|| format!("make the rootfs's parent mount {} {mode}", at.display()))(e));
            }
        }
    }
}

/// Whether the init makes this mount as a bind mount.
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind") || m.options().as_ref().is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"))
}

/// A bind source: its path as the config names it (for messages) and the path mount(2) uses,
/// /proc/self/fd/N when molt opened it for us; or a detached tree molt made (an idmapped
/// mount), attached with move_mount instead.
pub struct Source<'a> {
    pub named: PathBuf,
    pub path: PathBuf,
    pub tree: Option<&'a std::os::fd::OwnedFd>,
}

impl<'a> Source<'a> {
    pub fn new(named: &Path, opened: Option<&std::os::fd::OwnedFd>) -> Source<'a> {
        use std::os::fd::AsRawFd;
        let path = opened.map(|fd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))).unwrap_or_else(|| named.to_path_buf());
        Source { named: named.to_path_buf(), path, tree: None }
    }

    pub fn tree(named: &Path, tree: &'a std::os::fd::OwnedFd) -> Source<'a> {
        Source { tree: Some(tree), ..Source::new(named, Some(tree)) }
    }
}

/// Returns the mount when it still has to be made read-only (tmpfs and /dev, as runc delays them).
fn mount_one(k: &impl Kernel, plan: &RootfsPlan, root: &RootDir, m: &Mount, opened: Option<&OwnedFd>, tree: Option<&OwnedFd>) -> Result<Option<Attached>, InitError> {
    let options = m.options().clone().unwrap_or_default();
    let opts = parse_options(&options);
    let typ = m.typ().clone().unwrap_or_default();
    let dest = m.destination();
    // Written before pivot_root, while the log file's host path is still reachable.
    crate::logging::debug(&format!("mount: {typ:?} {:?} on {} with {options:?}", m.source(), dest.display()));
    if !dest.is_absolute() {
        return Err(InitError::new(format!(
            "mount destination {}: must be an absolute path",
            dest.display()
        )));
    }
    if is_bind(m) {
        let source = m.source().clone().ok_or_else(|| {
            InitError::new(format!("bind mount on {}: no source", dest.display()))
        })?;
        let src = match tree {
            Some(fd) => Source::tree(&source, fd),
            None => Source::new(&source, opened),
        };
        mount_bind(k, root, dest, &src, &options, false)?;
        return Ok(None);
    }
    let links = match typ.as_str() {
        "proc" => Links::Refuse { typ: "proc" },
        "sysfs" => Links::Refuse { typ: "sysfs" },
        _ => Links::Follow,
    };
    let target = open_target(root, dest, Make::Dir, links)?;
    if typ == "cgroup" {
        let cgroupns = crate::spec::has_namespace(plan.spec, oci_spec::runtime::LinuxNamespaceType::Cgroup, false);
        super::cgroupfs::mount_cgroups(k, &target, opts.flags, plan.own_cgroups, cgroupns)?;
        return Ok(None);
    }
    let data = opts.data.join(",");
    let source = m.source().as_ref().map(|s| s.display().to_string()).unwrap_or_else(|| typ.clone());
    let mut flags = opts.flags & !MsFlags::MS_REMOUNT;
    let delay_readonly = (typ == "tmpfs" || dest == Path::new("/dev")) && flags.contains(MsFlags::MS_RDONLY);
    if delay_readonly {
        flags.remove(MsFlags::MS_RDONLY);
    }
    let covered = if typ == "tmpfs" && opts.tmpcopyup { Some(super::copyup::open_covered(&target.fd, &target.shown)?) } else { None };
    let made = k.fs_mount(&typ, &source, &data, &superblock_flags(flags), mount_attrs(flags).0);
    let mount = match made {
        // sysfs is refused in a user namespace that does not own the network namespace: bind
        // the host's, as runc does.
        Err(_) if typ == "sysfs" && plan.in_user_ns => k.open_tree_clone(Path::new("/sys"), true),
        r => r,
    }
    .map_err(|e| InitError::new(format!("mount {source} on {} (type {typ}, options {data:?}): {e}", target.shown.display())))?;
    // A tmpfs over a directory of the image keeps that directory's mode unless mode= says
    // otherwise (runc does the same, so /tmp stays 1777). Set, and filled, before it is attached.
    if let (true, Some(mode), false) = (typ == "tmpfs", target.mode_before, opts.data.iter().any(|d| d.starts_with("mode="))) {
        fs::set_permissions(fd_path(&mount), fs::Permissions::from_mode(mode))
            .map_err(|e| InitError::new(format!("chmod {}: {e}", target.shown.display())))?;
    }
    if let Some(dir) = covered {
        super::copyup::copy_tree(&dir, &fd_path(&mount))?;
    }
    let mount = attach_with(k, mount, &target)?;
    mount.propagate(k, &opts.propagation)?;
    mount.set(k, opts.attr_set, opts.attr_clr, true, "recursive options")?;
    Ok(delay_readonly.then_some(mount))
}

/// A bind mount of a host path (or a volume's staging directory) at `dest` inside the rootfs: a
/// detached copy of the source (or the idmapped tree molt made) gets the flags a bind takes
/// (ro, nosuid, nodev, noexec, atime) before it is attached, then its propagation and recursive
/// options through its fd.
pub fn mount_bind(k: &impl Kernel, root: &RootDir, dest: &Path, src: &Source, options: &[String], force_recursive: bool) -> Result<(), InitError> {
    let opts = parse_options(options);
    let meta = fs::metadata(&src.path).map_err(|e| InitError::new(format!("bind source {}: {e}", src.named.display())))?;
    let target = open_target(root, dest, if meta.is_dir() { Make::Dir } else { Make::File }, Links::Follow)?;
    let named = |e: String| {
        let msg = format!("bind {} on {}: {e}", src.named.display(), target.shown.display());
        InitError::new(msg.replace(&src.path.display().to_string(), &src.named.display().to_string()))
    };
    let tree = match src.tree {
        Some(tree) => tree.try_clone().map_err(|e| named(format!("idmapped mount: {e}")))?,
        None => k.open_tree_clone(&src.path, opts.recursive || force_recursive).map_err(named)?,
    };
    let (set, clear) = mount_attrs(opts.flags & !MsFlags::MS_REMOUNT);
    if set != 0 || clear != 0 {
        k.mount_setattr(&tree, false, set, clear).map_err(|e| named(format!("mount_setattr (set {set:#x} clear {clear:#x}): {e}")))?;
    }
    let mount = attach_with(k, tree, &target)?;
    mount.propagate(k, &opts.propagation)?;
    Ok(mount.set(k, opts.attr_set, opts.attr_clr, true, "recursive options")?)
}

/// Flags a remount must repeat or the kernel refuses it (they are locked in user namespaces).
fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = nix::sys::statvfs::statvfs(path) else { return MsFlags::empty() };
    use nix::sys::statvfs::FsFlags;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs_flag) {
            out |= ms_flag;
        }
    }
    out
}

pub fn remount_readonly(k: &impl Kernel, path: &Path) -> Result<(), InitError> {
    remount_bind(k, path, MsFlags::MS_RDONLY)
}

/// Add per-mount flags to an existing mount, keeping those the kernel will not let us drop.
pub fn remount_bind(k: &impl Kernel, path: &Path, extra: MsFlags) -> Result<(), InitError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | locked_flags(path);
    do_mount(k, None, path, None, flags, None)
}

/// A shared or unbindable `linux.rootfsPropagation`, given to `/` once every mount of the container
/// is made: pivot_root refuses a shared new root, and the read-only and masked paths are binds, which
/// an unbindable tree would refuse.
pub fn root_propagation_last(k: &impl Kernel, spec: &Spec) -> Result<(), InitError> {
    if let Some(flag) = rootfs_propagation(spec)?.filter(|f| !f.intersects(MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE)) {
        do_mount(k, None, Path::new("/"), None, flag, None).map_err(|e| InitError::new(format!("linux.rootfsPropagation: {}", e.0)))?;
    }
    Ok(())
}

/// Make the rootfs `/`: pivot_root, or MS_MOVE + chroot with --no-pivot (rootfs on a ramfs).
pub fn switch_root(k: &impl Kernel, rootfs: &Path, no_pivot: bool) -> Result<(), InitError> {
    if no_pivot {
        k.chdir(rootfs).map_err(sys(|| format!("chdir {}", rootfs.display())))?;
        do_mount(k, Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
        k.chroot(Path::new(".")).map_err(sys(|| "chroot .".to_string()))?;
        k.chdir(Path::new("/")).map_err(sys(|| "chdir /".to_string()))?;
        return Ok(());
    }
    let old = nix::fcntl::open("/", nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY, Mode::empty())
        .map_err(sys(|| "open /".to_string()))?;
    let new = nix::fcntl::open(rootfs, nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY, Mode::empty())
        .map_err(sys(|| format!("open {}", rootfs.display())))?;
    k.fchdir(new).map_err(sys(|| format!("chdir {}", rootfs.display())))?;
    // pivot_root(".", ".") stacks the old root under the new one; it is then unmounted lazily.
    k.pivot_root_here().map_err(sys(|| format!("pivot_root {}", rootfs.display())))?;
    k.fchdir(old).map_err(sys(|| "chdir to old root".to_string()))?;
    do_mount(k, None, Path::new("."), None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)?;
    k.umount_detach(Path::new(".")).map_err(sys(|| "unmount old root".to_string()))?;
    k.chdir(Path::new("/")).map_err(sys(|| "chdir /".to_string()))?;
    let _ = nix::unistd::close(old);
    let _ = nix::unistd::close(new);
    Ok(())
}

/// The root of a container without a mount namespace: chroot, no mount.
pub fn chroot_into(k: &impl Kernel, rootfs: &Path) -> Result<(), InitError> {
    k.chroot(rootfs).map_err(sys(|| format!("chroot {}", rootfs.display())))?;
    k.chdir(Path::new("/")).map_err(sys(|| "chdir /".to_string()))
}

/// After the switch: the read-only root.
pub fn readonly_root(k: &impl Kernel, spec: &Spec) -> Result<(), InitError> {
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        remount_readonly(k, Path::new("/"))?;
    }
    Ok(())
}

/// After the sysctls: read-only paths, then masked paths (runc's order, so a masked path under a
/// read-only one is still masked). Each is opened inside the root and mounted on through its fd
/// (`open_protected`: under /proc and /sys only while they are still the filesystems mounted
/// there), so no path taken twice can lead the mount elsewhere.
pub fn protect_paths(k: &impl Kernel, spec: &Spec) -> Result<(), InitError> {
    let linux = spec.linux().clone().unwrap_or_default();
    let root = RootDir::open(Path::new("/"))?;
    let mounts = spec.mounts().clone().unwrap_or_default();
    let open = |key: &str, p: &str| {
        let path = Path::new(p);
        crate::mount_target::open_protected(&root, path, kernel_fs(&mounts, path)).map_err(|e| InitError::new(format!("linux.{key} {p}: {e}")))
    };
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        let Some(target) = open("readonlyPaths", &p)? else { continue };
        let fail = |what: &str, e: String| InitError::new(format!("linux.readonlyPaths {p}: {what}: {e}"));
        let tree = k.open_tree_fd(&target, true).map_err(|e| fail("open_tree", e.to_string()))?;
        // Read-only on the bind itself, as a remount would make it; what is mounted under it keeps its own flags.
        k.mount_setattr(&tree, false, MOUNT_ATTR_RDONLY, 0).map_err(|e| fail("mount_setattr read-only", e.to_string()))?;
        k.move_mount_onto_fd(&tree, &target).map_err(|e| fail("attach", e))?;
    }
    let masked = linux.masked_paths().clone().unwrap_or_default();
    // Opened once, and only when a masked file needs it.
    let mut null: Option<std::os::fd::OwnedFd> = None;
    for p in masked {
        let Some(target) = open("maskedPaths", &p)? else { continue };
        let fail = |what: &str, e: String| InitError::new(format!("linux.maskedPaths {p}: {what}: {e}"));
        let is_dir = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&target)).map_err(|e| fail("stat", e.to_string()))?.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let cover = if is_dir {
            k.fs_mount("tmpfs", "tmpfs", "", &["ro"], MOUNT_ATTR_RDONLY).map_err(|e| fail("tmpfs", e))?
        } else {
            let fd = match &null {
                Some(fd) => fd,
                None => null.insert(open_null_device(Path::new("/dev/null"))?),
            };
            k.open_tree_fd(fd, false).map_err(|e| fail("open_tree /dev/null", e.to_string()))?
        };
        k.move_mount_onto_fd(&cover, &target).map_err(|e| fail("attach", e))?;
    }
    Ok(())
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// The filesystem the config mounts on `path`'s first directory when it is proc on /proc or
/// sysfs on /sys, with its statfs magic (see `open_protected`).
fn kernel_fs(mounts: &[Mount], path: &Path) -> Option<(&'static str, i64)> {
    let top = Path::new("/").join(path.components().find_map(|c| match c {
        std::path::Component::Normal(n) => Some(n),
        _ => None,
    })?);
    let (typ, magic) = match top.to_str()? {
        "/proc" => ("proc", libc::PROC_SUPER_MAGIC),
        "/sys" => ("sysfs", libc::SYSFS_MAGIC),
        _ => return None,
    };
    mounts.iter().any(|m| m.destination() == &top && m.typ().as_deref() == Some(typ)).then_some((typ, magic))
}

/// The source of masked files: the container's /dev/null is the image's or the config's to
/// choose (a bind mount, a symlink, a regular file), and bound by name a masked file would
/// show whatever it is. Opened without following a symlink and checked to be the null device
/// (character 1:3); the mount then goes through the fd, so the checked inode is what is bound.
pub fn open_null_device(path: &Path) -> Result<std::os::fd::OwnedFd, InitError> {
    use nix::fcntl::OFlag;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let raw = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys(|| format!("linux.maskedPaths: open {}", path.display())))?;
    // SAFETY: `open` just returned this fd; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(sys(|| format!("linux.maskedPaths: stat {}", path.display())))?;
    let is_chr = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    let (major, minor) = (nix::sys::stat::major(st.st_rdev), nix::sys::stat::minor(st.st_rdev));
    if !is_chr || (major, minor) != (1, 3) {
        let what = if is_chr { format!("character device {major}:{minor}") } else { "not a character device".to_string() };
        return Err(InitError::new(format!(
            "linux.maskedPaths: {} is {what}, not the null device 1:3; refusing to mask with it",
            path.display()
        )));
    }
    Ok(fd)
}

pub fn set_sysctls(spec: &Spec) -> Result<(), InitError> {
    let sysctls = spec.linux().as_ref().and_then(|l| l.sysctl().clone()).unwrap_or_default();
    let mut keys: Vec<_> = sysctls.keys().collect();
    keys.sort();
    for key in keys {
        if key.contains("..") || key.contains('/') && key.contains('.') && key.starts_with('/') {
            return Err(InitError::new(format!("linux.sysctl {key:?}: not a sysctl name")));
        }
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        fs::write(&path, sysctls[key].as_bytes()).map_err(|e| {
            InitError::new(format!("linux.sysctl {key}={}: write {}: {e}", sysctls[key], path.display()))
        })?;
    }
    Ok(())
}

pub fn is_dir_hint(p: &OsStr) -> bool {
    p.to_string_lossy().ends_with('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn only_the_null_device_masks_a_path() {
        assert!(open_null_device(Path::new("/dev/null")).is_ok());
        let e = open_null_device(Path::new("/dev/zero")).expect_err("/dev/zero refused").0;
        assert!(e.contains("character device 1:5") && e.contains("not the null device 1:3"), "{e}");
        let base = std::env::temp_dir().join(format!("molt-null-test-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        fs::write(base.join("file"), "x").unwrap();
        symlink("/dev/null", base.join("link")).unwrap();
        let e = open_null_device(&base.join("file")).expect_err("a regular file refused").0;
        assert!(e.contains("not a character device"), "{e}");
        // A symlink to the real device is refused too: it is not followed.
        let e = open_null_device(&base.join("link")).expect_err("a symlink refused").0;
        assert!(e.contains("not a character device"), "{e}");
        assert!(open_null_device(&base.join("absent")).is_err());
        fs::remove_dir_all(&base).unwrap();
    }
}
