//! The `cgroup` mount inside the container: cgroup2 on a v2 host; on a v1 or hybrid host a tmpfs
//! holding, for each v1 hierarchy, a bind mount of the container's own cgroup directory, as runc
//! lays it out. Binding (rather than mounting the hierarchy) keeps the host's cgroup tree out of
//! sight without a cgroup namespace and works in a user namespace, where cgroup v1 mounts are refused.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::InitError;

/// One host cgroup mount from mountinfo.
#[derive(Debug, Clone, PartialEq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// The mount's root inside the cgroup filesystem (field 4 of mountinfo).
    pub root: String,
    pub fstype: String,
    pub super_options: String,
}

/// The calling process's cgroup membership: (controllers, path) per line of /proc/self/cgroup.
pub type Membership = Vec<(String, String)>;

pub fn own_membership() -> Membership {
    fs::read_to_string("/proc/self/cgroup").map(|t| parse_membership(&t)).unwrap_or_default()
}

pub fn parse_membership(text: &str) -> Membership {
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            Some((ctrl.to_string(), path.to_string()))
        })
        .collect()
}

pub fn parse_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out = vec![];
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mp), Some(fstype), Some(sopts)) = (fields.get(3), fields.get(4), rfields.first(), rfields.get(2))
        else {
            continue;
        };
        if (*fstype == "cgroup" || *fstype == "cgroup2") && mp.starts_with("/sys/fs/cgroup") {
            out.push(Hierarchy {
                mount_point: PathBuf::from(mp),
                root: root.to_string(),
                fstype: fstype.to_string(),
                super_options: sopts.to_string(),
            });
        }
    }
    out
}

/// The host directory of our own cgroup in a v1 hierarchy: the line of /proc/self/cgroup whose
/// controllers are all options of the mount, its path taken relative to the mount's root.
pub fn own_dir(h: &Hierarchy, own: &Membership) -> Option<PathBuf> {
    let opts: Vec<&str> = h.super_options.split(',').collect();
    let (_, path) = own.iter().find(|(ctrl, _)| !ctrl.is_empty() && ctrl.split(',').all(|c| opts.contains(&c)))?;
    let rel = if h.root == "/" { path.as_str() } else { path.strip_prefix(h.root.as_str()).unwrap_or(path) };
    Some(h.mount_point.join(rel.trim_start_matches('/')))
}

/// `own` is read before the cgroup namespace is entered, when /proc/self/cgroup still shows host paths.
pub fn mount_cgroups(target: &Path, flags: MsFlags, own: &Membership) -> Result<(), InitError> {
    let flags = flags & !MsFlags::MS_REMOUNT;
    let err = |what: &str, e: nix::errno::Errno| InitError::new(format!("mount {what} on {}: {}", target.display(), e.desc()));
    let hier = parse_hierarchies(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let v2_only = hier.iter().all(|h| h.fstype == "cgroup2");
    if v2_only {
        return mount(Some("cgroup2"), target, Some("cgroup2"), flags, None::<&str>).map_err(|e| err("cgroup2", e));
    }
    // The tmpfs stays writable, as runc leaves it; the hierarchies in it are read-only as asked.
    mount(Some("tmpfs"), target, Some("tmpfs"), flags & !MsFlags::MS_RDONLY, Some("mode=755"))
        .map_err(|e| err("tmpfs", e))?;
    // The hybrid layout's cgroup2 at `unified` is left out, as runc leaves it out.
    for h in hier.iter().filter(|h| h.fstype == "cgroup") {
        let Some(source) = own_dir(h, own) else { continue };
        let base = h.mount_point.file_name().map(PathBuf::from).unwrap_or_default();
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

    const MOUNTINFO: &str = "\
35 25 0:29 / /sys/fs/cgroup/cpu rw,nosuid shared:9 - cgroup cgroup rw,cpu
36 25 0:32 /process_api/abc /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
37 25 0:37 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
38 25 0:38 / /sys/fs/cgroup/unified rw shared:12 - cgroup2 cgroup2 rw
40 1 0:40 / /proc rw - proc proc rw";

    #[test]
    fn own_cgroup_directories_per_hierarchy() {
        let h = parse_hierarchies(MOUNTINFO);
        assert_eq!(h.len(), 4);
        let own = parse_membership("9:name=systemd:/molt/x\n4:memory:/process_api/abc/molt/x\n2:cpu:/molt/x\n0::/\n");
        assert_eq!(own_dir(&h[0], &own), Some(PathBuf::from("/sys/fs/cgroup/cpu/molt/x")));
        assert_eq!(own_dir(&h[1], &own), Some(PathBuf::from("/sys/fs/cgroup/memory/molt/x")));
        assert_eq!(own_dir(&h[2], &own), Some(PathBuf::from("/sys/fs/cgroup/systemd/molt/x")));
        assert_eq!(own_dir(&h[3], &own), None, "cgroup2 has no controllers to match");
    }
}
