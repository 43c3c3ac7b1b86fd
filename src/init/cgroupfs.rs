//! The `cgroup` mount inside the container: cgroup2 on a v2 host; on a v1 or hybrid host a tmpfs
//! holding one cgroup v1 mount per host hierarchy (and `unified`), as runc lays it out. Mounted after
//! the cgroup namespace is entered, so each shows the container's own cgroup as its root.

use std::fs;
use std::path::Path;

use nix::mount::{mount, MsFlags};

use super::InitError;

/// (mount point basename, fstype, super options) of the host's cgroup hierarchies.
fn host_hierarchies() -> Vec<(String, String, String)> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else { return vec![] };
    let mut out = vec![];
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        let (Some(mp), Some(fstype), Some(sopts)) = (fields.get(4), rfields.first(), rfields.get(2)) else {
            continue;
        };
        if (*fstype == "cgroup" || *fstype == "cgroup2") && mp.starts_with("/sys/fs/cgroup") {
            let base = Path::new(mp).file_name().map(|b| b.to_string_lossy().to_string()).unwrap_or_default();
            out.push((base, fstype.to_string(), sopts.to_string()));
        }
    }
    out
}

pub fn mount_cgroups(target: &Path, flags: MsFlags) -> Result<(), InitError> {
    let flags = flags & !MsFlags::MS_REMOUNT;
    let err = |what: &str, e: nix::errno::Errno| InitError::new(format!("mount {what} on {}: {}", target.display(), e.desc()));
    let hier = host_hierarchies();
    if hier.iter().any(|(b, t, _)| t == "cgroup2" && b == "cgroup") || hier.iter().all(|(_, t, _)| t == "cgroup2") {
        return mount(Some("cgroup2"), target, Some("cgroup2"), flags, None::<&str>).map_err(|e| err("cgroup2", e));
    }
    mount(Some("tmpfs"), target, Some("tmpfs"), flags & !MsFlags::MS_RDONLY, Some("mode=755"))
        .map_err(|e| err("tmpfs", e))?;
    for (base, fstype, sopts) in &hier {
        let dir = target.join(base);
        fs::create_dir_all(&dir).map_err(|e| InitError::new(format!("mkdir {}: {e}", dir.display())))?;
        let data: Vec<&str> = sopts.split(',').filter(|o| *o != "rw" && *o != "ro").collect();
        let data = data.join(",");
        let res = if fstype == "cgroup2" {
            mount(Some("cgroup2"), &dir, Some("cgroup2"), flags, None::<&str>)
        } else {
            mount(Some("cgroup"), &dir, Some("cgroup"), flags, Some(data.as_str()))
        };
        res.map_err(|e| InitError::new(format!("mount cgroup {data} on {}: {}", dir.display(), e.desc())))?;
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        super::rootfs::remount_readonly(target)?;
    }
    Ok(())
}
