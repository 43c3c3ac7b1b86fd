//! The container's root filesystem, built inside its new mount namespace: config mounts in order,
//! devices, pivot_root, masked and read-only paths. Every destination is resolved inside the rootfs
//! so that a symlink in the image cannot send a mount to the host.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mknod, Mode, SFlag};
use nix::unistd::{chdir, fchdir, pivot_root};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

use super::InitError;
use crate::mount_options::{parse_options, propagation_flag, MountOptions};
use crate::safe_path::resolve_in_root;

/// Applies the recursive options (rro, rnosuid, ...) to the mount at `target` and every mount
/// under it, as runc does with mount_setattr(2).
pub fn apply_recursive(target: &Path, o: &MountOptions) -> Result<(), InitError> {
    if o.attr_set == 0 && o.attr_clr == 0 {
        return Ok(());
    }
    let r = crate::mount_api::setattr(None, target, true, o.attr_set, o.attr_clr, None);
    if let Err(e) = r {
        return Err(InitError::new(format!(
            "mount_setattr {} (recursive options, set {:#x} clear {:#x}): {e}",
            target.display(),
            o.attr_set,
            o.attr_clr,
        )));
    }
    Ok(())
}

/// A mount target opened (O_PATH, final symlink not followed) and checked to lie inside the
/// rootfs. Mounting onto `/proc/self/fd/N` hits exactly that inode, even if a path component is
/// swapped for a symlink between resolving and mounting (the CVE-2021-30465 race).
pub struct Pinned {
    fd: std::os::fd::OwnedFd,
    pub path: PathBuf,
}

pub fn pin_target(rootfs: &Path, target: &Path) -> Result<Pinned, InitError> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use nix::fcntl::OFlag;
    let raw = nix::fcntl::open(target, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(sys(|| format!("open mount target {}", target.display())))?;
    // SAFETY: `open` just returned this fd; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let real = fs::read_link(&path).map_err(|e| InitError::new(format!("readlink {}: {e}", path.display())))?;
    let kind = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(sys(|| format!("stat mount target {}", target.display())))?;
    if !real.starts_with(rootfs) || kind.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(InitError::new(format!(
            "mount target {} became {} (outside the rootfs or a symlink) while being set up",
            target.display(),
            real.display()
        )));
    }
    Ok(Pinned { fd, path })
}

fn sys(step: impl FnOnce() -> String) -> impl FnOnce(nix::errno::Errno) -> InitError {
    move |e| InitError::new(format!("{}: {}", step(), e.desc()))
}

fn do_mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    mount(source, target, fstype, flags, data).map_err(sys(|| {
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
    /// Mount index -> its bind source, opened by molt (see Msg::BindSources).
    pub bind_fds: &'a [(usize, std::os::fd::OwnedFd)],
    /// Mount index -> its idmapped source tree, made by molt (see init::idmap).
    pub idmapped: &'a [(usize, std::os::fd::OwnedFd)],
    pub in_user_ns: bool,
    /// The init's cgroups as the host names them, read before the cgroup namespace was entered.
    pub own_cgroups: &'a [crate::cgroups::Membership],
}

pub fn prepare(plan: &RootfsPlan) -> Result<(), InitError> {
    let linux = plan.spec.linux().clone().unwrap_or_default();
    let root_propagation = rootfs_propagation(plan.spec)?;
    // Nothing done here may propagate back to the host's mounts.
    do_mount(None, Path::new("/"), None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)?;
    // With a rootfsPropagation, the new root's parent mount is made private, or slave for `slave`
    // (runc's rootfsParentMountPropagation), so that the root starts from it. Without one the
    // root stays the slave of the host's mount that `/` made it, as runc 1.1.5 leaves it.
    if let Some(flag) = root_propagation {
        let parent = if flag.contains(MsFlags::MS_SLAVE) { MsFlags::MS_SLAVE } else { MsFlags::MS_PRIVATE };
        parent_mount_propagation(plan.rootfs, parent)?;
    }
    // pivot_root needs the new root to be a mount point.
    do_mount(Some(plan.rootfs), plan.rootfs, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
    // private and slave now; shared and unbindable once the root is `/` (root_propagation_last).
    if let Some(flag) = root_propagation.filter(|f| f.intersects(MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE)) {
        do_mount(None, plan.rootfs, None, flag, None)?;
    }
    let mounts = plan.spec.mounts().clone().unwrap_or_default();
    // tmpfs and /dev are mounted writable and made read-only once everything under them exists.
    let mut later_readonly = vec![];
    for (i, m) in mounts.iter().enumerate() {
        if plan.deferred.contains(&i) {
            // The target must exist for the hand-over's move_mount.
            let target = resolve_in_root(plan.rootfs, m.destination())?;
            fs::create_dir_all(&target).map_err(|e| InitError::new(format!("mkdir {}: {e}", target.display())))?;
            continue;
        }
        let opened = plan.bind_fds.iter().find(|(idx, _)| *idx == i).map(|(_, fd)| fd);
        let tree = plan.idmapped.iter().find(|(idx, _)| *idx == i).map(|(_, fd)| fd);
        match plan.volume_binds.iter().find(|(idx, _, _)| *idx == i) {
            Some((_, staging, bind_opts)) => mount_bind(plan.rootfs, m.destination(), &Source::new(staging, opened), bind_opts, true)?,
            None => {
                if let Some(target) = mount_one(plan, m, opened, tree)? {
                    later_readonly.push(target);
                }
            }
        }
    }
    create_devices(plan.rootfs, &linux.devices().clone().unwrap_or_default(), plan.in_user_ns)?;
    // A missing working directory is created, as runc creates it (before the root turns read-only).
    if let Some(p) = plan.spec.process() {
        let cwd = resolve_in_root(plan.rootfs, p.cwd())?;
        if fs::symlink_metadata(&cwd).is_err() {
            fs::create_dir_all(&cwd).map_err(|e| InitError::new(format!("process.cwd {}: mkdir {}: {e}", p.cwd().display(), cwd.display())))?;
        }
    }
    for target in later_readonly {
        remount_readonly(&target)?;
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
fn parent_mount_propagation(path: &Path, flag: MsFlags) -> Result<(), InitError> {
    let mut at = path;
    loop {
        match (mount(None::<&str>, at, None::<&str>, flag, None::<&str>), at.parent()) {
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

/// Returns the target when it still has to be made read-only (tmpfs and /dev, as runc delays them).
fn mount_one(plan: &RootfsPlan, m: &Mount, opened: Option<&std::os::fd::OwnedFd>, tree: Option<&std::os::fd::OwnedFd>) -> Result<Option<PathBuf>, InitError> {
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
        mount_bind(plan.rootfs, dest, &src, &options, false)?;
        return Ok(None);
    }
    refuse_linked_proc_or_sys(plan.rootfs, dest, &typ)?;
    let target = resolve_in_root(plan.rootfs, dest)?;
    let existing_mode = fs::metadata(&target).ok().map(|m| m.permissions().mode() & 0o7777);
    fs::create_dir_all(&target).map_err(|e| InitError::new(format!("mkdir {}: {e}", target.display())))?;
    if typ == "cgroup" {
        let cgroupns = crate::spec::has_namespace(plan.spec, oci_spec::runtime::LinuxNamespaceType::Cgroup, false);
        super::cgroupfs::mount_cgroups(&target, opts.flags, plan.own_cgroups, cgroupns)?;
        return Ok(None);
    }
    let data = opts.data.join(",");
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(&typ));
    let mut flags = opts.flags & !MsFlags::MS_REMOUNT;
    let delay_readonly = (typ == "tmpfs" || dest == Path::new("/dev")) && flags.contains(MsFlags::MS_RDONLY);
    if delay_readonly {
        flags.remove(MsFlags::MS_RDONLY);
    }
    let covered = if typ == "tmpfs" && opts.tmpcopyup { super::copyup::open_covered(&target)? } else { None };
    let pinned = pin_target(plan.rootfs, &target)?;
    // mqueue and sysfs refuse some flags in user namespaces; runc retries sysfs as a bind.
    let res = do_mount(Some(&source), &pinned.path, Some(&typ), flags, (!data.is_empty()).then_some(data.as_str()))
        .map_err(|e| InitError::new(e.0.replace(&pinned.path.display().to_string(), &target.display().to_string())));
    match res {
        Err(_) if typ == "sysfs" && plan.in_user_ns => {
            do_mount(Some(Path::new("/sys")), &pinned.path, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        }
        r => r?,
    }
    drop(pinned);
    // A tmpfs over a directory of the image keeps that directory's mode unless mode= says
    // otherwise (runc does the same, so /tmp stays 1777).
    if let (true, Some(mode), false) = (typ == "tmpfs", existing_mode, opts.data.iter().any(|d| d.starts_with("mode="))) {
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))
            .map_err(|e| InitError::new(format!("chmod {}: {e}", target.display())))?;
    }
    if let Some(dir) = covered {
        super::copyup::copy_tree(&dir, &target)?;
    }
    for p in &opts.propagation {
        do_mount(None, &target, None, *p, None)?;
    }
    apply_recursive(&target, &opts)?;
    Ok(delay_readonly.then_some(target))
}

/// A proc or sysfs mount must land where the config says, not where a link in the image points
/// (runc's rule since CVE-2019-19921): a destination whose path in the rootfs has a symlink in it
/// is refused, naming the link.
fn refuse_linked_proc_or_sys(rootfs: &Path, dest: &Path, typ: &str) -> Result<(), InitError> {
    if typ != "proc" && typ != "sysfs" {
        return Ok(());
    }
    let mut at = rootfs.to_path_buf();
    for part in dest.components().filter(|c| matches!(c, std::path::Component::Normal(_))) {
        at.push(part);
        if let Ok(m) = fs::symlink_metadata(&at) {
            if m.file_type().is_symlink() {
                let to = fs::read_link(&at).map(|t| t.display().to_string()).unwrap_or_default();
                return Err(InitError::new(format!(
                    "mount destination {} ({typ}): {} is a symlink (to {to}) in the rootfs; a {typ} mount is never made through a link",
                    dest.display(),
                    at.strip_prefix(rootfs).map(|p| Path::new("/").join(p)).unwrap_or_else(|_| at.clone()).display(),
                )));
            }
        }
    }
    Ok(())
}

/// A bind mount of a host path (or a volume's staging directory) at `dest` inside the rootfs,
/// then a remount for the flags a bind ignores on its first call (ro, nosuid, nodev, noexec).
pub fn mount_bind(
    rootfs: &Path,
    dest: &Path,
    src: &Source,
    options: &[String],
    force_recursive: bool,
) -> Result<(), InitError> {
    let opts = parse_options(options);
    let source = src.path.as_path();
    let meta = fs::metadata(source)
        .map_err(|e| InitError::new(format!("bind source {}: {e}", src.named.display())))?;
    let target = resolve_in_root(rootfs, dest)?;
    if meta.is_dir() {
        fs::create_dir_all(&target).map_err(|e| InitError::new(format!("mkdir {}: {e}", target.display())))?;
    } else {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| InitError::new(format!("mkdir {}: {e}", parent.display())))?;
        }
        if !target.exists() {
            fs::File::create(&target)
                .map_err(|e| InitError::new(format!("create {}: {e}", target.display())))?;
        }
    }
    let mut flags = MsFlags::MS_BIND;
    if opts.recursive || force_recursive {
        flags |= MsFlags::MS_REC;
    }
    let pinned = pin_target(rootfs, &target)?;
    let attached = match src.tree {
        Some(tree) => crate::mount_api::move_mount_onto_fd(tree, &pinned.fd).map_err(|e| InitError::new(format!("idmapped mount of {}: {e}", src.named.display()))),
        None => do_mount(Some(source), &pinned.path, None, flags, None),
    };
    attached.map_err(|e| {
        let msg = e.0.replace(&pinned.path.display().to_string(), &target.display().to_string());
        InitError::new(msg.replace(&source.display().to_string(), &src.named.display().to_string()))
    })?;
    drop(pinned);
    let extra = opts.flags & !(MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        let locked = locked_flags(&target);
        do_mount(None, &target, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | locked, None)?;
    }
    for p in &opts.propagation {
        do_mount(None, &target, None, *p, None)?;
    }
    apply_recursive(&target, &opts)
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

pub fn remount_readonly(path: &Path) -> Result<(), InitError> {
    remount_bind(path, MsFlags::MS_RDONLY)
}

/// Add per-mount flags to an existing mount, keeping those the kernel will not let us drop.
pub fn remount_bind(path: &Path, extra: MsFlags) -> Result<(), InitError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | locked_flags(path);
    do_mount(None, path, None, flags, None)
}

const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

fn create_devices(rootfs: &Path, configured: &[LinuxDevice], in_user_ns: bool) -> Result<(), InitError> {
    let dev = resolve_in_root(rootfs, Path::new("/dev"))?;
    fs::create_dir_all(&dev).map_err(|e| InitError::new(format!("mkdir {}: {e}", dev.display())))?;
    let mut all: Vec<(PathBuf, SFlag, u64, u64, u32, u32, u32)> = DEFAULT_DEVICES
        .iter()
        .map(|(p, ma, mi)| (PathBuf::from(p), SFlag::S_IFCHR, *ma, *mi, 0o666, 0, 0))
        .collect();
    for d in configured {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(InitError::new(format!(
                    "linux.devices {}: type \"a\" is only valid in cgroup rules",
                    d.path().display()
                )))
            }
        };
        all.retain(|e| e.0 != *d.path());
        all.push((
            d.path().clone(),
            kind,
            d.major() as u64,
            d.minor() as u64,
            d.file_mode().unwrap_or(0o666),
            d.uid().unwrap_or(0),
            d.gid().unwrap_or(0),
        ));
    }
    for (path, kind, major, minor, mode, uid, gid) in all {
        let target = resolve_in_root(rootfs, &path)?;
        if !target.starts_with(&dev) && !path.starts_with("/dev") {
            return Err(InitError::new(format!("linux.devices {}: must be under /dev", path.display())));
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| InitError::new(format!("mkdir {}: {e}", parent.display())))?;
        }
        let _ = fs::remove_file(&target);
        if in_user_ns && kind != SFlag::S_IFIFO {
            // mknod of a device is refused in a user namespace: bind the host's node instead, as
            // runc does (a FIFO needs no privilege).
            fs::File::create(&target).map_err(|e| InitError::new(format!("create {}: {e}", target.display())))?;
            do_mount(Some(&path), &target, None, MsFlags::MS_BIND, None)?;
            continue;
        }
        let dev_t = nix::sys::stat::makedev(major, minor);
        mknod(&target, kind, Mode::from_bits_truncate(mode & 0o7777), dev_t)
            .map_err(sys(|| format!("mknod {}", target.display())))?;
        // mknod is filtered by the umask; the config's mode is what the container must see.
        fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(|e| InitError::new(format!("chmod {}: {e}", target.display())))?;
        nix::unistd::chown(&target, Some(uid.into()), Some(gid.into()))
            .map_err(sys(|| format!("chown {}", target.display())))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let p = dev.join(link);
        if fs::symlink_metadata(&p).is_err() {
            symlink(to, &p).map_err(|e| InitError::new(format!("symlink {}: {e}", p.display())))?;
        }
    }
    if Path::new("/proc/kcore").exists() {
        let p = dev.join("core");
        if fs::symlink_metadata(&p).is_err() {
            let _ = symlink("/proc/kcore", &p);
        }
    }
    Ok(())
}

/// A shared or unbindable `linux.rootfsPropagation`, given to `/` once every mount of the container
/// is made: pivot_root refuses a shared new root, and the read-only and masked paths are binds, which
/// an unbindable tree would refuse.
pub fn root_propagation_last(spec: &Spec) -> Result<(), InitError> {
    if let Some(flag) = rootfs_propagation(spec)?.filter(|f| !f.intersects(MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE)) {
        do_mount(None, Path::new("/"), None, flag, None).map_err(|e| InitError::new(format!("linux.rootfsPropagation: {}", e.0)))?;
    }
    Ok(())
}

/// Make the rootfs `/`: pivot_root, or MS_MOVE + chroot with --no-pivot (rootfs on a ramfs).
pub fn switch_root(rootfs: &Path, no_pivot: bool) -> Result<(), InitError> {
    if no_pivot {
        chdir(rootfs).map_err(sys(|| format!("chdir {}", rootfs.display())))?;
        do_mount(Some(rootfs), Path::new("/"), None, MsFlags::MS_MOVE, None)?;
        nix::unistd::chroot(".").map_err(sys(|| "chroot .".to_string()))?;
        chdir("/").map_err(sys(|| "chdir /".to_string()))?;
        return Ok(());
    }
    let old = nix::fcntl::open("/", nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY, Mode::empty())
        .map_err(sys(|| "open /".to_string()))?;
    let new = nix::fcntl::open(rootfs, nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY, Mode::empty())
        .map_err(sys(|| format!("open {}", rootfs.display())))?;
    fchdir(new).map_err(sys(|| format!("chdir {}", rootfs.display())))?;
    // pivot_root(".", ".") stacks the old root under the new one; it is then unmounted lazily.
    pivot_root(".", ".").map_err(sys(|| format!("pivot_root {}", rootfs.display())))?;
    fchdir(old).map_err(sys(|| "chdir to old root".to_string()))?;
    do_mount(None, Path::new("."), None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys(|| "unmount old root".to_string()))?;
    chdir("/").map_err(sys(|| "chdir /".to_string()))?;
    let _ = nix::unistd::close(old);
    let _ = nix::unistd::close(new);
    Ok(())
}

/// The root of a container without a mount namespace: chroot, no mount.
pub fn chroot_into(rootfs: &Path) -> Result<(), InitError> {
    nix::unistd::chroot(rootfs).map_err(sys(|| format!("chroot {}", rootfs.display())))?;
    chdir("/").map_err(sys(|| "chdir /".to_string()))
}

/// After the switch: the read-only root.
pub fn readonly_root(spec: &Spec) -> Result<(), InitError> {
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        remount_readonly(Path::new("/"))?;
    }
    Ok(())
}

/// After the sysctls: read-only paths, then masked paths (runc's order, so a masked path under a
/// read-only one is still masked).
pub fn protect_paths(spec: &Spec) -> Result<(), InitError> {
    let linux = spec.linux().clone().unwrap_or_default();
    for p in linux.readonly_paths().clone().unwrap_or_default() {
        let path = Path::new(&p);
        if fs::symlink_metadata(path).is_ok() {
            do_mount(Some(path), path, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
            remount_readonly(path)?;
        }
    }
    let masked = linux.masked_paths().clone().unwrap_or_default();
    // Opened once, and only when a masked file needs it.
    let mut null: Option<std::os::fd::OwnedFd> = None;
    for p in masked {
        let path = Path::new(&p);
        match fs::metadata(path) {
            Err(_) => {}
            Ok(m) if m.is_dir() => do_mount(Some(Path::new("tmpfs")), path, Some("tmpfs"), MsFlags::MS_RDONLY, None)?,
            Ok(_) => {
                let fd = match &null {
                    Some(fd) => fd,
                    None => null.insert(open_null_device(Path::new("/dev/null"))?),
                };
                let source = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd)));
                do_mount(Some(&source), path, None, MsFlags::MS_BIND, None)
                    .map_err(|e| InitError::new(format!("linux.maskedPaths {p}: {e}")))?;
            }
        }
    }
    Ok(())
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

    #[test]
    fn a_pinned_target_must_still_be_inside_the_root() {
        let base = std::env::temp_dir().join(format!("molt-pin-test-{}", std::process::id()));
        let root = base.join("root");
        fs::create_dir_all(root.join("dir")).unwrap();
        fs::create_dir_all(base.join("outside/x")).unwrap();
        assert!(pin_target(&root, &root.join("dir")).is_ok());
        // As if /a had been swapped for a symlink after resolve_in_root checked the path.
        symlink(base.join("outside"), root.join("a")).unwrap();
        let e = pin_target(&root, &root.join("a/x")).err().expect("escape refused").0;
        assert!(e.contains("outside the rootfs"), "{e}");
        // A final symlink is not followed, and not mounted on either.
        assert!(pin_target(&root, &root.join("a")).is_err());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn only_the_null_device_masks_a_path() {
        assert!(open_null_device(Path::new("/dev/null")).is_ok());
        let e = open_null_device(Path::new("/dev/zero")).err().expect("/dev/zero refused").0;
        assert!(e.contains("character device 1:5") && e.contains("not the null device 1:3"), "{e}");
        let base = std::env::temp_dir().join(format!("molt-null-test-{}", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        fs::write(base.join("file"), "x").unwrap();
        symlink("/dev/null", base.join("link")).unwrap();
        let e = open_null_device(&base.join("file")).err().expect("a regular file refused").0;
        assert!(e.contains("not a character device"), "{e}");
        // A symlink to the real device is refused too: it is not followed.
        let e = open_null_device(&base.join("link")).err().expect("a symlink refused").0;
        assert!(e.contains("not a character device"), "{e}");
        assert!(open_null_device(&base.join("absent")).is_err());
        fs::remove_dir_all(&base).unwrap();
    }
}
