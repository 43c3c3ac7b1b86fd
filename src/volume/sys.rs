//! Host facts and kernel calls the volume module needs beyond loop devices: is a path a mount
//! point (mountinfo), mount and unmount of the staging path, and which filesystems the kernel
//! knows.

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// One line of /proc/self/mountinfo, the fields molt uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub major: u32,
    pub minor: u32,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = u16::from(b[i + 1] - b'0') * 64 + u16::from(b[i + 2] - b'0') * 8 + u16::from(b[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let (major, minor) = pre.get(2)?.split_once(':')?;
            Some(MountEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                mount_point: PathBuf::from(unescape(pre.get(4)?)),
                fstype: post.first()?.to_string(),
                source: unescape(post.get(1)?),
            })
        })
        .collect()
}

pub fn mounts() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// The topmost mount at exactly `path` (mountinfo lists stacked mounts in order).
pub fn mount_at(path: &Path) -> std::io::Result<Option<MountEntry>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
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
    fn mountinfo_lines() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 36 0:52 / /run/molt/volumes/k/mnt rw shared:5 - nfs store:/srv rw,vers=3\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, Path::new("/mnt/with space"));
        assert_eq!((m[0].major, m[0].minor), (98, 0));
        assert_eq!(m[1].fstype, "nfs");
        assert_eq!(m[1].source, "store:/srv");
    }

    #[test]
    fn superblock_flags_leave_the_data() {
        let (f, d) = split_flags(&["sync".into(), "discard".into(), "lazytime".into(), "data=journal".into()]);
        assert_eq!(f, MsFlags::MS_SYNCHRONOUS | MsFlags::MS_LAZYTIME);
        assert_eq!(d, "discard,data=journal");
        let (f, d) = split_flags(&[]);
        assert!(f.is_empty() && d.is_empty());
    }
}
