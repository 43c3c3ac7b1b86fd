//! The `cgroup` mount inside the container: cgroup2 on a v2 host; on a v1 or hybrid host a tmpfs
//! holding, for each v1 hierarchy, a bind mount of the container's own cgroup directory, as runc
//! lays it out. Binding (rather than mounting the hierarchy) keeps the host's cgroup tree out of
//! sight without a cgroup namespace and works in a user namespace, where cgroup v1 mounts are refused.
//! The hierarchies and our place in them are read with the cgroups module's parsers.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sys::stat::Mode;

use crate::mount_target::{attach_with, create_in, Make, Target};
use super::InitError;
use crate::cgroups::{Membership, Mount, Version};
use crate::kernel::Kernel;
use crate::mount_options::{mount_attrs, superblock_flags};

/// The calling process's cgroups; read before the cgroup namespace is entered, while
/// /proc/self/cgroup still shows host paths.
pub fn own_membership() -> Vec<Membership> {
    crate::cgroups::read_own().unwrap_or_default()
}

/// The host directory of our own cgroup in a hierarchy.
pub fn own_dir(m: &Mount, own: &[Membership]) -> Option<PathBuf> {
    let rel = crate::cgroups::own_path_in(m, own)?;
    Some(m.mount_point.join(rel.trim_start_matches('/')))
}

/// `cgroupns`: the config asks for a cgroup namespace (decides what a refused cgroup2 mount binds).
/// Every mount is made detached and attached on `target`'s fd, or, for the v1 hierarchies, on a
/// directory made in the attached tmpfs's own fd, each through the kernel seam `k`.
pub fn mount_cgroups(k: &impl Kernel, target: &Target, flags: MsFlags, own: &[Membership], cgroupns: bool) -> Result<(), InitError> {
    let flags = flags & !MsFlags::MS_REMOUNT;
    let shown = &target.shown;
    let err = |what: &str, e: String| InitError::new(format!("mount {what} on {}: {e}", shown.display()));
    let hier = crate::cgroups::read_mounts().map_err(|e| InitError::new(format!("cgroup mount on {}: {e}", shown.display())))?;
    // Per-mount flags a bound hierarchy gets, as `mount -o remount,bind` gave them before.
    let bound = mount_attrs(flags & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC)).0;
    if hier.iter().all(|m| m.version == Version::V2) {
        // Source "cgroup", as runc mounts it (mountinfo shows it).
        let tree = match k.fs_mount("cgroup2", "cgroup", "", &superblock_flags(flags), mount_attrs(flags).0) {
            Ok(tree) => tree,
            // A new user namespace without a cgroup namespace of its own may not mount cgroup2:
            // bind instead, as runc does: the whole hierarchy, or, when a cgroup namespace was
            // asked for, our own directory (what that namespace would have shown).
            Err(refused) => {
                let v2 = hier.first().ok_or_else(|| err("cgroup2", format!("{refused}; no cgroup2 hierarchy to bind")))?;
                let dir = if cgroupns { own_dir(v2, own).ok_or_else(|| err("cgroup2", format!("{refused}; our own cgroup2 directory is unknown")))? } else { v2.mount_point.clone() };
                bind_tree(k, &dir, bound).map_err(|e| err(&format!("bind {}", dir.display()), format!("{e} (cgroup2 itself: {refused})")))?
            }
        };
        attach_with(k, tree, target)?;
        return Ok(());
    }
    // The tmpfs stays writable, as runc leaves it; the hierarchies in it are read-only as asked.
    let rw = flags & !MsFlags::MS_RDONLY;
    let tmpfs = k.fs_mount("tmpfs", "tmpfs", "mode=755", &superblock_flags(rw), mount_attrs(rw).0).map_err(|e| err("tmpfs", e))?;
    let tmpfs = attach_with(k, tmpfs, target)?;
    // The hybrid layout's cgroup2 at `unified` is left out, as runc leaves it out.
    for m in hier.iter().filter(|m| m.version == Version::V1) {
        let Some(source) = own_dir(m, own) else { continue };
        let base = m.mount_point.file_name().map(PathBuf::from).unwrap_or_default();
        let shown = shown.join(&base);
        let dir = Target { fd: open_dir_in(&tmpfs.fd, &base).map_err(|e| InitError::new(format!("mkdir {}: {e}", shown.display())))?, shown, mode_before: None };
        let tree = bind_tree(k, &source, bound).map_err(|e| InitError::new(format!("bind {} on {}: {e}", source.display(), dir.shown.display())))?;
        attach_with(k, tree, &dir)?;
    }
    Ok(())
}

/// A detached recursive copy of `dir` with the per-mount flags `attrs`.
fn bind_tree(k: &impl Kernel, dir: &Path, attrs: u64) -> Result<OwnedFd, String> {
    let tree = k.open_tree_clone(dir, true)?;
    if attrs != 0 {
        k.mount_setattr(&tree, false, attrs, 0).map_err(|e| format!("mount_setattr {attrs:#x}: {e}"))?;
    }
    Ok(tree)
}

/// `name` made (if missing) and opened O_PATH in the directory `dir` is open on.
fn open_dir_in(dir: &OwnedFd, name: &Path) -> std::io::Result<OwnedFd> {
    create_in(dir, name.as_os_str(), Make::Dir)?;
    let raw = nix::fcntl::openat(Some(dir.as_raw_fd()), name, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
    // SAFETY: openat just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::{parse_mountinfo, parse_proc_cgroup};
    use crate::kernel::recording::Recording;

    const MOUNTINFO: &str = "\
35 25 0:29 / /sys/fs/cgroup/cpu rw,nosuid shared:9 - cgroup cgroup rw,cpu
36 25 0:32 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
37 25 0:37 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
38 25 0:38 / /sys/fs/cgroup/unified rw shared:12 - cgroup2 cgroup2 rw
40 1 0:40 / /proc rw - proc proc rw";

    #[test]
    fn own_cgroup_directories_per_hierarchy() {
        let h = parse_mountinfo(MOUNTINFO).unwrap();
        let own = parse_proc_cgroup("9:name=systemd:/molt/x\n4:memory:/process_api/abc/molt/x\n2:cpu:/molt/x\n0::/\n").unwrap();
        let dir = |mp: &str| own_dir(h.iter().find(|m| m.mount_point == Path::new(mp)).unwrap(), &own);
        assert_eq!(dir("/sys/fs/cgroup/cpu"), Some(PathBuf::from("/sys/fs/cgroup/cpu/molt/x")));
        assert_eq!(dir("/sys/fs/cgroup/memory"), Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/molt/x")));
        assert_eq!(dir("/sys/fs/cgroup/systemd"), Some(PathBuf::from("/sys/fs/cgroup/systemd/molt/x")));
    }

    /// This host's layout decides the branch: cgroup2 attached as one mount on a pure v2 host;
    /// otherwise the tmpfs attached first, and each hierarchy's bind made read-only while
    /// detached, before it is attached in the tmpfs (never visible writable).
    #[test]
    fn cgroup_mounts_are_made_detached_and_read_only_before_they_are_attached() {
        let dir = std::env::temp_dir().join(format!("molt-seam-cgroupfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fd = nix::fcntl::open(&dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).unwrap();
        // SAFETY: open just returned this fd.
        let target = Target { fd: unsafe { OwnedFd::from_raw_fd(fd) }, shown: PathBuf::from("/sys/fs/cgroup"), mode_before: None };
        let k = Recording::default();
        let own = own_membership();
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount_cgroups(&k, &target, flags, &own, false).unwrap();
        let lines = k.lines();
        let hier = crate::cgroups::read_mounts().unwrap();
        if hier.iter().all(|m| m.version == Version::V2) {
            assert!(lines[0].starts_with("fsmount cgroup2 cgroup "), "{lines:#?}");
            assert_eq!(lines[1], format!("move_mount fs:cgroup2:cgroup -> {}", dir.display()));
        } else {
            assert!(lines[0].starts_with("fsmount tmpfs tmpfs "), "{lines:#?}");
            assert_eq!(lines[1], format!("move_mount fs:tmpfs:tmpfs -> {}", dir.display()));
            let binds: Vec<&String> = lines.iter().filter(|l| l.starts_with("open_tree ")).collect();
            let v1 = hier.iter().filter(|m| m.version == Version::V1 && own_dir(m, &own).is_some()).count();
            assert_eq!(binds.len(), v1, "one bind per v1 hierarchy: {lines:#?}");
            for (i, l) in lines.iter().enumerate().filter(|(_, l)| l.starts_with("open_tree ")) {
                let tree = format!("tree:{}", l.trim_start_matches("open_tree ").trim_end_matches(" recursive"));
                // ro, nosuid, nodev, noexec: MOUNT_ATTR_RDONLY | NOSUID | NODEV | NOEXEC.
                assert_eq!(lines[i + 1], format!("mount_setattr {tree} set 0xf clear 0x0"), "{lines:#?}");
                assert!(lines[i + 2].starts_with(&format!("move_mount {tree} -> ")), "{lines:#?}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
