//! Host facts and kernel calls the volume module needs beyond loop devices: is a path a mount
//! point (mountinfo), mount and unmount of the staging path, and which filesystems the kernel
//! knows.

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use std::path::Path;

use crate::procfs::{self, MountLine};

/// The topmost mount at exactly `path` in molt's mount namespace (mountinfo lists stacked
/// mounts in order).
pub fn mount_at(path: &Path) -> std::io::Result<Option<MountLine>> {
    Ok(procfs::own_mountinfo()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// Superblock flags that mount(8) takes out of the option string; the rest is the
/// filesystem's own data. Staging mounts carry no per-container flags (those are on the binds).
pub fn split_flags(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "async" => flags &= !MsFlags::MS_SYNCHRONOUS,
            "dirsync" => flags |= MsFlags::MS_DIRSYNC,
            "mand" => flags |= MsFlags::MS_MANDLOCK,
            "nomand" => flags &= !MsFlags::MS_MANDLOCK,
            "lazytime" => flags |= MsFlags::MS_LAZYTIME,
            "nolazytime" => flags &= !MsFlags::MS_LAZYTIME,
            "silent" => flags |= MsFlags::MS_SILENT,
            "loud" => flags &= !MsFlags::MS_SILENT,
            "iversion" => flags |= MsFlags::MS_I_VERSION,
            "noiversion" => flags &= !MsFlags::MS_I_VERSION,
            _ => data.push(o.as_str()),
        }
    }
    (flags, data.join(","))
}

pub fn mount_device(device: &Path, staging: &Path, fstype: &str, options: &[String], read_only: bool) -> Result<(), Errno> {
    let (mut flags, data) = split_flags(options);
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let data = (!data.is_empty()).then_some(data.as_str());
    nix::mount::mount(Some(device), staging, Some(fstype), flags, data)
}

/// Unmounts `staging`; `EINVAL` (not a mount point) counts as done so that undo and repair can
/// be repeated.
pub fn unmount(staging: &Path) -> Result<(), Errno> {
    match nix::mount::umount2(staging, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether the running kernel has filesystem type `fstype` (maybe as a module not yet loaded).
pub fn kernel_has_fs(fstype: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(fstype)))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_flags_leave_the_data() {
        let (f, d) = split_flags(&["sync".into(), "discard".into(), "lazytime".into(), "data=journal".into()]);
        assert_eq!(f, MsFlags::MS_SYNCHRONOUS | MsFlags::MS_LAZYTIME);
        assert_eq!(d, "discard,data=journal");
        let (f, d) = split_flags(&[]);
        assert!(f.is_empty() && d.is_empty());
    }
}
