//! The cgroup's directories: making them (with what v1 cpuset and v2 delegation need), moving
//! them for an upgrade, and removing them with the ancestors molt made.

use std::path::Path;

use nix::errno::Errno;
use oci_spec::runtime::LinuxResources;

use super::{fsio, CgroupError, Cgroup, Hierarchy, Version};

impl Cgroup {
    /// mkdir -p in every hierarchy. On v1 cpuset, new directories get their parent's cpus and
    /// mems (an empty cpuset refuses tasks). On v2, the controllers the host already delegates
    /// at the root are enabled down to the container, so limits and stats work as runc's do;
    /// `apply` enables any further ones its limits need.
    pub fn create(&self) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            mkdir_p(h)?;
            if h.version == Version::V2 {
                let delegated = fsio::read(&h.mount_point.join("cgroup.subtree_control"))?;
                let wanted: Vec<&str> = delegated.split_whitespace().collect();
                enable_controllers(h, &wanted)?;
            }
        }
        Ok(())
    }

    /// Moves this cgroup, with its processes and limits, to `to` (a cgroup `beside` it; what `to`
    /// still holds is removed first, so its processes must be gone). On v1 the directory is
    /// renamed: the processes, the limits and a cgroup namespace rooted there all move along. v2
    /// has no rename: `to` is made, given `limits`, and the processes migrate (a cgroup
    /// namespace of theirs keeps its old root). Repeatable after a crash: a hierarchy where the
    /// move is done is skipped.
    pub fn move_to(&self, to: &Cgroup, limits: &LinuxResources) -> Result<(), CgroupError> {
        let mut migrated = false;
        for (from, to_h) in self.hierarchies.iter().zip(&to.hierarchies) {
            if !from.dir.exists() {
                continue;
            }
            if to_h.dir.exists() {
                fsio::remove_tree(&to_h.dir)?;
            }
            match from.version {
                Version::V1 => std::fs::rename(&from.dir, &to_h.dir).map_err(|e| CgroupError::Rename {
                    from: from.dir.clone(),
                    to: to_h.dir.clone(),
                    errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                })?,
                Version::V2 => {
                    mkdir_p(to_h)?;
                    let delegated = fsio::read(&to_h.mount_point.join("cgroup.subtree_control"))?;
                    enable_controllers(to_h, &delegated.split_whitespace().collect::<Vec<_>>())?;
                    migrate_all(&from.dir, &to_h.dir)?;
                    fsio::remove_tree(&from.dir)?;
                    migrated = true;
                }
            }
        }
        if migrated {
            to.apply(limits)?;
        }
        Ok(())
    }

    /// Removes this cgroup's own directories (empty of processes) but no ancestor: the upgrade
    /// frees the id's path for the new container while the parent may hold it.
    pub fn remove_dirs(&self) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            fsio::remove_tree(&h.dir)?;
        }
        Ok(())
    }

    /// Removes the cgroup (and any child cgroups) in every hierarchy, then the ancestors it
    /// owns once they are empty. Missing directories are fine, so this can be repeated; all
    /// hierarchies are attempted and the first failure is returned.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        for h in &self.hierarchies {
            if let Err(e) = fsio::remove_tree(&h.dir) {
                first_err.get_or_insert(e);
                continue;
            }
            for a in &h.owned_ancestors {
                match fsio::rmdir(a) {
                    // Another container still lives under it, or is being created there.
                    Err(e) if matches!(e.errno(), Some(Errno::EBUSY | Errno::ENOTEMPTY)) => {}
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                    Ok(()) => {}
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Moves every process of the v2 cgroup `from` into `to`. The processes may be running (the
/// upgrade moves a started application) and fork meanwhile: a child forked after `from` was read
/// is still there, so it is read again until empty.
fn migrate_all(from: &Path, to: &Path) -> Result<(), CgroupError> {
    for _ in 0..100 {
        let procs = fsio::read(&from.join("cgroup.procs"))?;
        let pids: Vec<&str> = procs.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        if pids.is_empty() {
            return Ok(());
        }
        for pid in pids {
            match fsio::write(&to.join("cgroup.procs"), pid, "move process") {
                // Exited meanwhile.
                Err(e) if e.errno() == Some(Errno::ESRCH) => {}
                other => other?,
            }
        }
    }
    // Left for remove_tree to report (EBUSY), naming the directory.
    Ok(())
}

/// Creates `h.dir` and its missing ancestors. A concurrent destroy of another container may
/// remove a shared empty parent between our mkdirs (ENOENT), or while we read it (ENODEV: the
/// directory is a dying cgroup), so either restarts the walk a few times.
fn mkdir_p(h: &Hierarchy) -> Result<(), CgroupError> {
    let mut chain: Vec<&Path> = h
        .dir
        .ancestors()
        .take_while(|a| *a != h.mount_point && a.starts_with(&h.mount_point))
        .collect();
    chain.reverse();
    let cpuset_v1 = h.version == Version::V1 && h.controllers.iter().any(|c| c == "cpuset");
    let mut attempts = 0;
    'again: loop {
        for dir in &chain {
            // Also when another create made the directory: it may not have filled it yet, and a
            // child of an empty cpuset inherits nothing (ENOSPC on cgroup.procs).
            let made = fsio::mkdir(dir).and_then(|_| if cpuset_v1 { inherit_cpuset(dir) } else { Ok(()) });
            match made {
                Ok(()) => {}
                Err(e) if matches!(e.errno(), Some(Errno::ENOENT | Errno::ENODEV)) && attempts < 5 => {
                    attempts += 1;
                    continue 'again;
                }
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    }
}

/// A new v1 cpuset starts with empty cpus and mems and then refuses tasks; give it the parent's.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mine = fsio::read(&dir.join(file))?;
        if mine.trim().is_empty() {
            let theirs = fsio::read(&parent.join(file))?;
            fsio::write(&dir.join(file), theirs.trim(), "inherit parent cpuset")?;
        }
    }
    Ok(())
}

/// Enables `controllers` in the subtree_control of the mount root and every ancestor of
/// `h.dir` (not `h.dir` itself: a cgroup with processes may not delegate, and the container's
/// processes live in it). Controllers already on are not written again.
pub(super) fn enable_controllers(h: &Hierarchy, controllers: &[&str]) -> Result<(), CgroupError> {
    if controllers.is_empty() {
        return Ok(());
    }
    let mut chain: Vec<&Path> = h
        .dir
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(&h.mount_point))
        .collect();
    chain.reverse();
    for dir in chain {
        let file = dir.join("cgroup.subtree_control");
        let on = fsio::read(&file)?;
        let on: Vec<&str> = on.split_whitespace().collect();
        for c in controllers.iter().filter(|c| !on.contains(c)) {
            fsio::write(&file, &format!("+{c}"), "enable controller")?;
        }
    }
    Ok(())
}
