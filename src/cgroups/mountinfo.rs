//! Finds the cgroup hierarchies among the mounts of /proc/self/mountinfo and the calling process's
//! own cgroups in /proc/self/cgroup; `crate::procfs` reads and parses both files, this module says
//! what they mean for cgroups. Pure (fixture-tested) but for `read_mounts`/`read_own`.

use std::path::PathBuf;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use super::error::CgroupError;
use crate::procfs;

pub const MOUNTINFO: &str = procfs::OWN_MOUNTINFO;
pub const PROC_CGROUP: &str = procfs::OWN_CGROUP;

/// How the host arranges its cgroups, as the OCI world names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// Only cgroup v1 hierarchies.
    V1,
    /// One cgroup2 hierarchy.
    V2,
    /// v1 controller hierarchies plus a cgroup2 one (usually /sys/fs/cgroup/unified).
    Hybrid,
}

/// The cgroup version of one hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    V1,
    V2,
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub version: Version,
    /// v1: the controllers bound to it ("cpu", "cpuacct", "name=systemd"); v2: empty, since the
    /// available controllers live in its cgroup.controllers file rather than in mountinfo.
    pub controllers: Vec<String>,
    pub mount_point: PathBuf,
    /// The cgroup this mount shows at its mount point (mountinfo field 4): "/" unless the host
    /// bind-mounted a sub-tree into our mount namespace without a cgroup namespace.
    pub root: String,
}

/// v1 super options that name a controller; everything else there (rw, xattr, release_agent=...)
/// is a mount option. name=<x> hierarchies are kept only for systemd's, the one runtimes join.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "name=systemd",
];

/// Every cgroup hierarchy in a mountinfo text, v1 ones deduplicated by controller set and at
/// most one cgroup2 (the first: later ones are bind mounts of the same tree).
pub fn parse_mountinfo(text: &str) -> Result<Vec<Mount>, CgroupError> {
    let lines = procfs::parse_mountinfo(text).map_err(|e| bad_line(MOUNTINFO, e))?;
    Ok(hierarchies(lines))
}

fn hierarchies(lines: Vec<procfs::MountLine>) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = Vec::new();
    for line in lines {
        let version = match line.fstype.as_str() {
            "cgroup" => Version::V1,
            "cgroup2" => Version::V2,
            _ => continue,
        };
        let controllers: Vec<String> = match version {
            Version::V1 => line
                .super_options
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o))
                .map(str::to_string)
                .collect(),
            Version::V2 => Vec::new(),
        };
        if version == Version::V1 && controllers.is_empty() {
            continue;
        }
        let duplicate = mounts.iter().any(|m| {
            m.version == version
                && (version == Version::V2 || same_set(&m.controllers, &controllers))
        });
        if !duplicate {
            mounts.push(Mount {
                version,
                controllers,
                mount_point: line.mount_point,
                root: line.root,
            });
        }
    }
    mounts
}

fn bad_line(file: &str, e: procfs::BadLine) -> CgroupError {
    CgroupError::Parse { file: file.to_string(), line: e.line, reason: e.reason }
}

fn from_proc(e: procfs::ProcError) -> CgroupError {
    match e {
        procfs::ProcError::Read { path, source } => CgroupError::Read {
            path,
            errno: Errno::from_raw(source.raw_os_error().unwrap_or(libc::EIO)),
        },
        procfs::ProcError::Line { path, line, reason } => {
            CgroupError::Parse { file: path.display().to_string(), line, reason }
        }
        procfs::ProcError::Format { path, reason } => {
            CgroupError::Parse { file: path.display().to_string(), line: String::new(), reason }
        }
    }
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

pub fn layout_of(mounts: &[Mount]) -> Result<Layout, CgroupError> {
    let v1 = mounts.iter().any(|m| m.version == Version::V1);
    let v2 = mounts.iter().any(|m| m.version == Version::V2);
    match (v1, v2) {
        (true, true) => Ok(Layout::Hybrid),
        (true, false) => Ok(Layout::V1),
        (false, true) => Ok(Layout::V2),
        (false, false) => Err(CgroupError::NoHierarchy {
            mountinfo: MOUNTINFO.to_string(),
        }),
    }
}

/// One line of /proc/<pid>/cgroup: "hierarchy-id:controllers:path".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Empty for the cgroup2 line ("0::/path").
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_proc_cgroup(text: &str) -> Result<Vec<Membership>, CgroupError> {
    let lines = procfs::parse_cgroup(text).map_err(|e| bad_line(PROC_CGROUP, e))?;
    Ok(lines.into_iter().map(|l| Membership { controllers: l.controllers, path: l.path }).collect())
}

/// The calling process's cgroup in `mount`, as a path below the mount point ("/" is the mount
/// point itself). None when /proc/self/cgroup does not list the hierarchy or the process sits
/// outside the part of the tree this mount shows.
pub fn own_path_in(mount: &Mount, own: &[Membership]) -> Option<String> {
    let m = own.iter().find(|m| match mount.version {
        Version::V2 => m.controllers.is_empty(),
        Version::V1 => {
            !m.controllers.is_empty() && m.controllers.iter().any(|c| mount.controllers.contains(c))
        }
    })?;
    let root = mount.root.trim_end_matches('/');
    let rest = m.path.strip_prefix(root)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None; // "/docker/abc" is not below root "/docker/ab"
    }
    Some(if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    })
}

pub fn read_mounts() -> Result<Vec<Mount>, CgroupError> {
    Ok(hierarchies(procfs::own_mountinfo().map_err(from_proc)?))
}

pub fn read_own() -> Result<Vec<Membership>, CgroupError> {
    let lines = procfs::own_cgroup().map_err(from_proc)?;
    Ok(lines.into_iter().map(|l| Membership { controllers: l.controllers, path: l.path }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    // This host: every v1 controller on its own, plus an empty cgroup2 at unified.
    pub(crate) const HYBRID: &str = "\
24 1 0:22 / /sys rw,nosuid - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    // A systemd v1 host: comounted controllers, optional fields, release_agent and xattr options.
    const V1: &str = "\
25 18 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:22 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
30 25 0:26 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,net_cls,net_prio
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
99 25 0:27 / /mnt/memory\\040copy rw,relatime shared:16 - cgroup cgroup rw,memory
";

    const V2: &str = "\
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_host_has_every_controller_and_the_unified_tree() {
        let m = parse_mountinfo(HYBRID).expect("parse");
        assert_eq!(m.len(), 10);
        assert_eq!(layout_of(&m).expect("layout"), Layout::Hybrid);
        let unified = m.iter().find(|m| m.version == Version::V2).expect("v2");
        assert_eq!(unified.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert!(m.iter().any(|m| m.controllers == ["name=systemd"]));
    }

    #[test]
    fn v1_host_comounts_and_drops_mount_options_and_bind_duplicates() {
        let m = parse_mountinfo(V1).expect("parse");
        assert_eq!(layout_of(&m).expect("layout"), Layout::V1);
        let ctrls: Vec<Vec<String>> = m.iter().map(|m| m.controllers.clone()).collect();
        assert_eq!(
            ctrls,
            vec![
                vec!["name=systemd"],
                vec!["cpu", "cpuacct"],
                vec!["net_cls", "net_prio"],
                vec!["memory"]
            ]
        );
        assert_eq!(
            m[1].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
    }

    #[test]
    fn v2_host_and_no_cgroups() {
        let m = parse_mountinfo(V2).expect("parse");
        assert_eq!(layout_of(&m).expect("layout"), Layout::V2);
        let none = parse_mountinfo("24 1 0:22 / /sys rw - sysfs sysfs rw\n").expect("parse");
        assert!(matches!(
            layout_of(&none),
            Err(CgroupError::NoHierarchy { .. })
        ));
    }

    #[test]
    fn garbage_mountinfo_names_the_line() {
        let err = parse_mountinfo("1 2 3\n").expect_err("must fail");
        assert!(err.to_string().contains("\"1 2 3\""), "{err}");
    }

    #[test]
    fn own_cgroup_is_found_per_hierarchy_and_relative_to_the_mount_root() {
        let own =
            parse_proc_cgroup("4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/user.slice/x:y\n")
                .expect("parse");
        let mem = Mount {
            version: Version::V1,
            controllers: vec!["memory".into()],
            mount_point: "/m".into(),
            root: "/".into(),
        };
        assert_eq!(own_path_in(&mem, &own).as_deref(), Some("/process_api/abc"));
        let v2 = Mount {
            version: Version::V2,
            controllers: vec![],
            mount_point: "/u".into(),
            root: "/".into(),
        };
        assert_eq!(own_path_in(&v2, &own).as_deref(), Some("/user.slice/x:y"));
        let bound = Mount {
            root: "/process_api".into(),
            ..mem.clone()
        };
        assert_eq!(own_path_in(&bound, &own).as_deref(), Some("/abc"));
        let elsewhere = Mount {
            root: "/process_ap".into(),
            ..mem
        };
        assert_eq!(own_path_in(&elsewhere, &own), None);
        assert!(parse_proc_cgroup("nonsense\n").is_err());
    }
}
