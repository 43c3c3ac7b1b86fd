//! The `cgroup` mount inside the container: cgroup2 on a v2 host; on a v1 or hybrid host a tmpfs
//! holding, for each v1 hierarchy, a bind mount of the container's own cgroup directory, as runc
//! lays it out. Binding (rather than mounting the hierarchy) keeps the host's cgroup tree out of
//! sight without a cgroup namespace and works in a user namespace, where cgroup v1 mounts are refused.
//! The hierarchies and our place in them are read with the cgroups module's parsers.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::InitError;
use crate::cgroups::{Membership, Mount, Version};

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
pub fn mount_cgroups(target: &Path, flags: MsFlags, own: &[Membership], cgroupns: bool) -> Result<(), InitError> {
    let flags = flags & !MsFlags::MS_REMOUNT;
    let err = |what: &str, e: nix::errno::Errno| InitError::new(format!("mount {what} on {}: {}", target.display(), e.desc()));
    let hier = crate::cgroups::read_mounts().map_err(|e| InitError::new(format!("cgroup mount on {}: {e}", target.display())))?;
    if hier.iter().all(|m| m.version == Version::V2) {
        // Source "cgroup", as runc mounts it (mountinfo shows it).
        return match mount(Some("cgroup"), target, Some("cgroup2"), flags, None::<&str>) {
            // A new user namespace without a cgroup namespace of its own may not mount cgroup2:
            // bind instead, as runc does: the whole hierarchy, or, when a cgroup namespace was
            // asked for, our own directory (what that namespace would have shown).
            Err(nix::errno::Errno::EPERM | nix::errno::Errno::EBUSY) => {
                let v2 = hier.first().ok_or_else(|| InitError::new(format!("cgroup mount on {}: no cgroup2 hierarchy", target.display())))?;
                let dir = if cgroupns {
                    own_dir(v2, own).ok_or_else(|| {
                        InitError::new(format!("cgroup mount on {}: our own cgroup2 directory is unknown", target.display()))
                    })?
                } else {
                    v2.mount_point.clone()
                };
                mount(Some(&dir), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                    .map_err(|e| err(&format!("bind {}", dir.display()), e))?;
                if flags.contains(MsFlags::MS_RDONLY) {
                    super::rootfs::remount_readonly(target)?;
                }
                Ok(())
            }
            r => r.map_err(|e| err("cgroup2", e)),
        };
    }
    // The tmpfs stays writable, as runc leaves it; the hierarchies in it are read-only as asked.
    mount(Some("tmpfs"), target, Some("tmpfs"), flags & !MsFlags::MS_RDONLY, Some("mode=755"))
        .map_err(|e| err("tmpfs", e))?;
    // The hybrid layout's cgroup2 at `unified` is left out, as runc leaves it out.
    for m in hier.iter().filter(|m| m.version == Version::V1) {
        let Some(source) = own_dir(m, own) else { continue };
        let base = m.mount_point.file_name().map(PathBuf::from).unwrap_or_default();
        let dir = target.join(base);
        fs::create_dir_all(&dir).map_err(|e| InitError::new(format!("mkdir {}: {e}", dir.display())))?;
        mount(Some(&source), &dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| InitError::new(format!("bind {} on {}: {}", source.display(), dir.display(), e.desc())))?;
        let extra = flags & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
        if !extra.is_empty() {
            super::rootfs::remount_bind(&dir, extra)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::{parse_mountinfo, parse_proc_cgroup};

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
}
