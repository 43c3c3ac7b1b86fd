//! A container's cgroup on every hierarchy the host has (v1, v2 or hybrid): where it lives,
//! creating and removing it, applying OCI resource limits, and acting on its processes
//! (list, freeze, signal). Everything the rest of molt knows about cgroups goes through `Cgroup`.

mod error;
mod fsio;
mod mountinfo;
mod path;
mod plan;
mod stats;

#[cfg(test)]
mod root_tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

pub use error::CgroupError;
pub use mountinfo::{
    own_path_in, parse_mountinfo, parse_proc_cgroup, read_mounts, read_own, Layout, Membership, Mount,
    Version,
};
pub use path::DEFAULT_PARENT;
use plan::{Absent, Step};

/// The host's cgroup layout, from /proc/self/mountinfo.
pub fn detect_layout() -> Result<Layout, CgroupError> {
    mountinfo::layout_of(&read_mounts()?)
}

/// The container's directory in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    pub version: Version,
    /// v1: the controllers bound to the hierarchy; v2: those its root offers (cgroup.controllers).
    pub controllers: Vec<String>,
    pub mount_point: PathBuf,
    pub dir: PathBuf,
    /// Ancestors of `dir` (deepest first) that destroy may remove once empty: those that did not
    /// exist when the path was resolved, and molt's default parent.
    pub owned_ancestors: Vec<PathBuf>,
}

/// A container's cgroup: one directory per mounted hierarchy. Serializable so the container's
/// state file can carry it from `create` to `delete` without resolving again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cgroup {
    layout: Layout,
    /// The path as resolved (e.g. "/molt/<id>"); relative paths stay relative here because they
    /// land below a different own-cgroup in each hierarchy.
    path: String,
    hierarchies: Vec<Hierarchy>,
}

/// How long freeze/thaw wait for the kernel to report the new state. Freezing waits for every
/// task to reach a safe point, which a task stuck in uninterruptible IO can delay.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

impl Cgroup {
    /// cgroups_path: linux.cgroupsPath (None/empty -> "/molt/<id>"). With `systemd` the path is
    /// "slice:prefix:name" and maps to "/<slice>/<prefix>-<name>.scope" (no systemd is asked).
    /// Absolute paths are below each hierarchy's mount point; relative ones below the calling
    /// process's own cgroup in that hierarchy, as runc does.
    pub fn resolve(
        cgroups_path: Option<&str>,
        id: &str,
        systemd: bool,
    ) -> Result<Cgroup, CgroupError> {
        let mounts = read_mounts()?;
        let own = mountinfo::read_own()?;
        Self::resolve_on(&mounts, &own, cgroups_path, id, systemd)
    }

    /// `resolve` against given mounts and memberships (tests, or a caller that already read them).
    pub fn resolve_on(
        mounts: &[Mount],
        own: &[Membership],
        cgroups_path: Option<&str>,
        id: &str,
        systemd: bool,
    ) -> Result<Cgroup, CgroupError> {
        let layout = mountinfo::layout_of(mounts)?;
        let req = path::requested(cgroups_path, id, systemd)?;
        let mut hierarchies = Vec::new();
        for m in mounts {
            let base = if req.relative {
                mountinfo::own_path_in(m, own).ok_or_else(|| CgroupError::BadPath {
                    path: req.path.clone(),
                    reason: format!(
                        "relative paths are placed below molt's own cgroup, which /proc/self/cgroup does not show under {}",
                        m.mount_point.display()
                    ),
                })?
            } else {
                "/".to_string()
            };
            let rel = format!(
                "{}/{}",
                base.trim_matches('/'),
                req.path.trim_start_matches('/')
            );
            let dir = m.mount_point.join(rel.trim_start_matches('/'));
            let mut owned: Vec<PathBuf> = dir
                .ancestors()
                .skip(1)
                .take_while(|a| *a != m.mount_point && a.starts_with(&m.mount_point))
                .filter(|a| !a.exists())
                .map(Path::to_path_buf)
                .collect();
            if req.default_parent {
                let parent = m.mount_point.join(DEFAULT_PARENT.trim_start_matches('/'));
                if !owned.contains(&parent) {
                    owned.push(parent);
                }
            }
            let controllers = match m.version {
                Version::V1 => m.controllers.clone(),
                // Read now: the set a host offers does not change while containers run.
                Version::V2 => fsio::read(&m.mount_point.join("cgroup.controllers"))
                    .map(|s| s.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default(),
            };
            hierarchies.push(Hierarchy {
                version: m.version,
                controllers,
                mount_point: m.mount_point.clone(),
                dir,
                owned_ancestors: owned,
            });
        }
        Ok(Cgroup {
            layout,
            path: req.path,
            hierarchies,
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The cgroup path as resolved from the config, e.g. "/molt/<id>".
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    /// The directory that holds `controller`'s files: a v1 hierarchy binding it, else a v2
    /// hierarchy offering it. "cgroup" (v2 core files) means the v2 hierarchy.
    pub fn dir_for(&self, controller: &str) -> Option<&Path> {
        self.route(controller).map(|h| h.dir.as_path())
    }

    fn route(&self, controller: &str) -> Option<&Hierarchy> {
        let has = |h: &&Hierarchy| h.controllers.iter().any(|c| c == controller);
        self.hierarchies
            .iter()
            .find(|h| h.version == Version::V1 && has(h))
            .or_else(|| {
                self.hierarchies
                    .iter()
                    .find(|h| h.version == Version::V2 && (controller == "cgroup" || has(h)))
            })
    }

    fn v2(&self) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.version == Version::V2)
    }

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

    /// Writes every limit in `r` into the hierarchy that owns its controller.
    pub fn apply(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let version_of = |c: &str| self.route(c).map(|h| h.version);
        let steps = plan::plan(r, self.layout, &version_of)?;
        // v2 files appear only once the controller is enabled in every ancestor's subtree_control.
        if let Some(v2) = self.v2() {
            let mut needed = BTreeSet::new();
            for s in &steps {
                let ws: Vec<&plan::Write> = match s {
                    Step::One(w) => vec![w],
                    Step::EitherOrder(a, b) => vec![a, b],
                    Step::FirstPresent(alts) => alts.iter().collect(),
                    Step::Ignored(_) => vec![],
                };
                for w in ws {
                    if w.controller != "cgroup"
                        && self.route(&w.controller).map(|h| h.version) == Some(Version::V2)
                    {
                        needed.insert(w.controller.as_str());
                    }
                }
            }
            let needed: Vec<&str> = needed.into_iter().collect();
            enable_controllers(v2, &needed)?;
        }
        for step in &steps {
            self.run(step)?;
        }
        Ok(())
    }

    /// `molt update`: applies what `runc update` changes (see `plan::for_update`) and warns about
    /// the rest. Zero values are "not set" as in `apply`, so docker's whole structures change only
    /// what was asked.
    pub fn update(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        let (mut r, ignored) = plan::for_update(r);
        if !ignored.is_empty() {
            crate::logging::warn(&format!(
                "update: not changed (set at create only, as with runc): {}",
                ignored.join(", ")
            ));
        }
        let cpu_v2 = self.route("cpu").filter(|h| h.version == Version::V2);
        if let (Some(h), Some(c)) = (cpu_v2, r.cpu_mut()) {
            let (quota, period) = (c.quota().unwrap_or(0), c.period().unwrap_or(0));
            if (quota == 0) != (period == 0) {
                let file = h.dir.join("cpu.max");
                let current = fsio::read(&file)?;
                let (q, p) = plan::keep_cpu_max(quota, period, &current).ok_or_else(|| {
                    CgroupError::Parse {
                        file: file.display().to_string(),
                        line: current.trim().to_string(),
                        reason: "expected \"$QUOTA $PERIOD\"".to_string(),
                    }
                })?;
                c.set_quota(Some(q));
                c.set_period(Some(p));
            }
        }
        self.apply(&r)
    }

    fn run(&self, step: &Step) -> Result<(), CgroupError> {
        match step {
            Step::One(w) => self.write(w),
            Step::EitherOrder(a, b) => match self.write(a) {
                Err(e) if e.errno() == Some(Errno::EINVAL) => {
                    self.write(b)?;
                    self.write(a)
                }
                Err(e) => Err(e),
                Ok(()) => self.write(b),
            },
            Step::FirstPresent(alts) => {
                let found = alts
                    .iter()
                    .find(|w| self.file_of(w).is_some_and(|p| p.exists()));
                // None present: write the last (the long-standing name) for an error naming it.
                match found.or(alts.last()) {
                    Some(w) => self.write(w),
                    None => Ok(()),
                }
            }
            Step::Ignored(msg) => {
                crate::logging::warn(&format!("cgroup: {msg}"));
                Ok(())
            }
        }
    }

    fn file_of(&self, w: &plan::Write) -> Option<PathBuf> {
        self.dir_for(&w.controller).map(|d| d.join(&w.file))
    }

    fn write(&self, w: &plan::Write) -> Result<(), CgroupError> {
        let path = self.file_of(w).ok_or_else(|| CgroupError::NoController {
            field: w.field.clone(),
            controller: w.controller.clone(),
        })?;
        match fsio::write(&path, &w.value, &w.field) {
            Err(e) if e.errno() == Some(Errno::ENOENT) => match w.when_absent {
                Absent::Fail => Err(e),
                Absent::Skip => Ok(()),
                Absent::Warn => {
                    crate::logging::warn(&format!(
                        "cgroup: {} = {} ignored: this kernel has no {}",
                        w.field,
                        w.value,
                        path.display()
                    ));
                    Ok(())
                }
            },
            other => other,
        }
    }

    /// Moves `pid` into the container's cgroup in every hierarchy.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            fsio::write(&h.dir.join("cgroup.procs"), &pid.to_string(), "add process")?;
        }
        Ok(())
    }

    /// Every process in the cgroup or its children, in any hierarchy, sorted and unique.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = BTreeSet::new();
        for h in &self.hierarchies {
            for dir in fsio::walk_dirs(&h.dir)? {
                let file = dir.join("cgroup.procs");
                let text = match fsio::read(&file) {
                    Err(e) if e.errno() == Some(Errno::ENOENT) && dir != h.dir => continue,
                    other => other?,
                };
                for line in text.lines().filter(|l| !l.is_empty()) {
                    let pid = line.trim().parse::<i32>().map_err(|e| CgroupError::Parse {
                        file: file.display().to_string(),
                        line: line.to_string(),
                        reason: e.to_string(),
                    })?;
                    all.insert(pid);
                }
            }
        }
        Ok(all.into_iter().collect())
    }

    /// Freezes every process, returning once the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        let (h, f) = self.freezer()?;
        let path = h.dir.join(f.state_file);
        Ok((f.parse)(&fsio::read(&path)?) == Some(true))
    }

    /// The freezer: v1's freezer controller where mounted (on hybrid hosts too, as runc),
    /// otherwise v2's core cgroup.freeze.
    fn freezer(&self) -> Result<(&Hierarchy, &'static Freezer), CgroupError> {
        if let Some(h) = self
            .hierarchies
            .iter()
            .find(|h| h.version == Version::V1 && h.controllers.iter().any(|c| c == "freezer"))
        {
            return Ok((h, &FREEZER_V1));
        }
        self.v2()
            .map(|h| (h, &FREEZER_V2))
            .ok_or_else(|| CgroupError::NoController {
                field: "freeze".to_string(),
                controller: "freezer".to_string(),
            })
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let (h, f) = self.freezer()?;
        let control = h.dir.join(f.control_file);
        let state = h.dir.join(f.state_file);
        let (value, want) = if frozen {
            (f.freeze, "frozen")
        } else {
            (f.thaw, "thawed")
        };
        let start = Instant::now();
        let mut round = 0u32;
        loop {
            // v1 can sit in FREEZING when a task raced with the freeze (e.g. was forking);
            // writing the state again retries the freeze for the stragglers, as runc does.
            if round.is_multiple_of(10) {
                fsio::write(&control, value, want)?;
            }
            let last = fsio::read(&state)?;
            if (f.parse)(&last) == Some(frozen) {
                return Ok(());
            }
            if start.elapsed() > FREEZE_TIMEOUT {
                if frozen {
                    // Leave the container running rather than half-frozen; the error is what matters.
                    let _ = fsio::write(&control, f.thaw, "thaw after failed freeze");
                }
                return Err(CgroupError::StateTimeout {
                    path: state,
                    want: if frozen {
                        f.frozen_reads
                    } else {
                        f.thawed_reads
                    },
                    waited_ms: start.elapsed().as_millis(),
                    last: last.trim().to_string(),
                });
            }
            sleep(Duration::from_millis(u64::from(round.min(10)) + 1));
            round += 1;
        }
    }

    /// Sends `sig` to every process. SIGKILL on v2 uses cgroup.kill (kernel 5.14+), which also
    /// catches processes forked meanwhile; otherwise the cgroup is frozen around the kill so
    /// no process can fork out of reach, then thawed (always for SIGKILL, so the killed can die;
    /// for other signals only if this call froze it).
    pub fn signal_all(&self, sig: i32) -> Result<(), CgroupError> {
        let was_frozen = self.is_frozen().unwrap_or(false);
        if sig == libc::SIGKILL {
            if let Some(h) = self.v2().filter(|h| h.dir.join("cgroup.kill").exists()) {
                fsio::write(&h.dir.join("cgroup.kill"), "1", "kill all")?;
                // On a hybrid host the freezer is v1's, which holds even SIGKILL until thawed.
                return if was_frozen { self.thaw() } else { Ok(()) };
            }
        }
        let froze = !was_frozen && self.freeze().is_ok();
        let result = self.kill_listed(sig);
        if froze || (was_frozen && sig == libc::SIGKILL) {
            self.thaw()?;
        }
        result
    }

    fn kill_listed(&self, sig: i32) -> Result<(), CgroupError> {
        for pid in self.pids()? {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours. libc rather than
            // nix because nix's Signal cannot carry realtime signals.
            if unsafe { libc::kill(pid, sig) } != 0 {
                let errno = Errno::last();
                // The process exited between listing and signalling.
                if errno != Errno::ESRCH {
                    return Err(CgroupError::Signal {
                        pid,
                        sig,
                        path: self
                            .hierarchies
                            .first()
                            .map(|h| h.dir.join("cgroup.procs"))
                            .unwrap_or_default(),
                        errno,
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether both are the same directories (however each was resolved).
    pub fn same_place(&self, other: &Cgroup) -> bool {
        self.hierarchies.iter().map(|h| &h.dir).eq(other.hierarchies.iter().map(|h| &h.dir))
    }

    /// The cgroup of the same name plus `suffix`, beside this one in every hierarchy. The upgrade
    /// builds a replacement there and moves it into this path once the old container is gone.
    pub fn beside(&self, suffix: &str) -> Cgroup {
        let mut c = self.clone();
        c.path.push_str(suffix);
        for h in &mut c.hierarchies {
            let mut name = h.dir.file_name().unwrap_or_default().to_os_string();
            name.push(suffix);
            h.dir.set_file_name(name);
        }
        c
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
                    let procs = fsio::read(&from.dir.join("cgroup.procs"))?;
                    for pid in procs.lines().map(str::trim).filter(|l| !l.is_empty()) {
                        match fsio::write(&to_h.dir.join("cgroup.procs"), pid, "move process") {
                            // Exited meanwhile.
                            Err(e) if e.errno() == Some(Errno::ESRCH) => {}
                            other => other?,
                        }
                    }
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

    /// runc-shaped statistics (`runc events --stats`), best effort: what the kernel offers.
    pub fn stats(&self) -> Result<serde_json::Value, CgroupError> {
        stats::collect(self)
    }
}

/// One freezer interface: which file to write, which to read back, and how to read it.
struct Freezer {
    control_file: &'static str,
    state_file: &'static str,
    freeze: &'static str,
    thaw: &'static str,
    frozen_reads: &'static str,
    thawed_reads: &'static str,
    /// Some(frozen) once settled, None while in transition.
    parse: fn(&str) -> Option<bool>,
}

const FREEZER_V1: Freezer = Freezer {
    control_file: "freezer.state",
    state_file: "freezer.state",
    freeze: "FROZEN",
    thaw: "THAWED",
    frozen_reads: "FROZEN",
    thawed_reads: "THAWED",
    parse: |s| match s.trim() {
        "FROZEN" => Some(true),
        "THAWED" => Some(false),
        _ => None, // FREEZING
    },
};

const FREEZER_V2: Freezer = Freezer {
    control_file: "cgroup.freeze",
    state_file: "cgroup.events",
    freeze: "1",
    thaw: "0",
    frozen_reads: "frozen 1",
    thawed_reads: "frozen 0",
    parse: |s| {
        s.lines()
            .find_map(|l| l.strip_prefix("frozen "))
            .map(|v| v.trim() == "1")
    },
};

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
fn enable_controllers(h: &Hierarchy, controllers: &[&str]) -> Result<(), CgroupError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts() -> Vec<Mount> {
        parse_mountinfo(
            "32 31 0:29 / /cg/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / /cg/memory rw - cgroup cgroup rw,memory\n\
             40 31 0:37 / /cg/systemd rw - cgroup cgroup rw,name=systemd\n\
             41 31 0:38 / /cg/unified rw - cgroup2 cgroup2 rw\n",
        )
        .expect("fixture")
    }

    fn own() -> Vec<Membership> {
        parse_proc_cgroup("3:name=systemd:/\n2:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n")
            .expect("fixture")
    }

    #[test]
    fn default_path_lands_under_molt_everywhere_and_owns_the_parent() {
        let cg = Cgroup::resolve_on(&mounts(), &own(), None, "c1", false).expect("resolve");
        assert_eq!(cg.layout(), Layout::Hybrid);
        let dirs: Vec<&Path> = cg.hierarchies().iter().map(|h| h.dir.as_path()).collect();
        assert_eq!(
            dirs,
            [
                "/cg/cpu,cpuacct/molt/c1",
                "/cg/memory/molt/c1",
                "/cg/systemd/molt/c1",
                "/cg/unified/molt/c1"
            ]
            .map(Path::new)
        );
        for h in cg.hierarchies() {
            assert_eq!(h.owned_ancestors, vec![h.mount_point.join("molt")]);
        }
        assert_eq!(
            cg.dir_for("cpuacct"),
            Some(Path::new("/cg/cpu,cpuacct/molt/c1"))
        );
        assert_eq!(cg.dir_for("cgroup"), Some(Path::new("/cg/unified/molt/c1")));
        assert_eq!(cg.dir_for("devices"), None);
    }

    #[test]
    fn relative_paths_follow_our_own_cgroup_per_hierarchy() {
        let cg =
            Cgroup::resolve_on(&mounts(), &own(), Some("pod/c1"), "c1", false).expect("resolve");
        assert_eq!(
            cg.dir_for("memory"),
            Some(Path::new("/cg/memory/process_api/abc/pod/c1"))
        );
        assert_eq!(cg.dir_for("cpu"), Some(Path::new("/cg/cpu,cpuacct/pod/c1")));
        // Ancestors that do not exist (all of them, in this fake tree) are the Cgroup's to remove.
        let mem = &cg.hierarchies()[1];
        assert_eq!(
            mem.owned_ancestors[0],
            PathBuf::from("/cg/memory/process_api/abc/pod")
        );
        let e = Cgroup::resolve_on(&mounts(), &[], Some("pod/c1"), "c1", false)
            .expect_err("no own cgroup");
        assert!(e.to_string().contains("\"pod/c1\""), "{e}");
    }

    #[test]
    fn beside_is_a_sibling_in_every_hierarchy() {
        let cg = Cgroup::resolve_on(&mounts(), &own(), Some("machine.slice:libpod:c1"), "c1", true).expect("resolve");
        let next = cg.beside(".next-7");
        assert_eq!(next.path(), "/machine.slice/libpod-c1.scope.next-7");
        assert_eq!(next.dir_for("memory"), Some(Path::new("/cg/memory/machine.slice/libpod-c1.scope.next-7")));
        for (a, b) in cg.hierarchies().iter().zip(next.hierarchies()) {
            assert_eq!(a.dir.parent(), b.dir.parent());
            assert_eq!(a.owned_ancestors, b.owned_ancestors);
        }
        assert!(!next.same_place(&cg));
        assert!(next.same_place(&Cgroup::resolve_on(&mounts(), &own(), Some("/machine.slice/libpod-c1.scope.next-7"), "x", false).expect("resolve")));
    }

    #[test]
    fn systemd_and_bad_paths() {
        let cg = Cgroup::resolve_on(
            &mounts(),
            &own(),
            Some("machine.slice:libpod:c1"),
            "c1",
            true,
        )
        .expect("resolve");
        assert_eq!(cg.path(), "/machine.slice/libpod-c1.scope");
        assert_eq!(
            cg.dir_for("memory"),
            Some(Path::new("/cg/memory/machine.slice/libpod-c1.scope"))
        );
        let e = Cgroup::resolve_on(&mounts(), &own(), Some("/a/../../etc"), "c1", false)
            .expect_err("dotdot");
        assert!(e.to_string().contains("/a/../../etc"), "{e}");
    }

    #[test]
    fn serializes_round_trip() {
        let cg = Cgroup::resolve_on(&mounts(), &own(), None, "c1", false).expect("resolve");
        let json = serde_json::to_string(&cg).expect("serialize");
        let back: Cgroup = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.hierarchies(), cg.hierarchies());
        assert_eq!(back.layout(), Layout::Hybrid);
    }

    #[test]
    fn freezer_states_parse() {
        assert_eq!((FREEZER_V1.parse)("FROZEN\n"), Some(true));
        assert_eq!((FREEZER_V1.parse)("FREEZING\n"), None);
        assert_eq!((FREEZER_V2.parse)("populated 1\nfrozen 1\n"), Some(true));
        assert_eq!((FREEZER_V2.parse)("populated 0\nfrozen 0\n"), Some(false));
    }

    /// apply() against a fake hierarchy in a temp dir: the plan reaches the right files, EINVAL
    /// ordering aside (plain files accept anything).
    #[test]
    fn apply_writes_into_the_owning_hierarchy() {
        let tmp = std::env::temp_dir().join(format!("molt-unit-{}", std::process::id()));
        let mem = tmp.join("memory");
        let pids = tmp.join("pids");
        let text = format!(
            "1 1 0:1 / {} rw - cgroup cgroup rw,memory\n2 1 0:2 / {} rw - cgroup cgroup rw,pids\n",
            mem.display(),
            pids.display()
        );
        let m = parse_mountinfo(&text).expect("fixture");
        let cg = Cgroup::resolve_on(&m, &[], Some("/c"), "c", false).expect("resolve");
        for (dir, files) in [
            (
                mem.join("c"),
                &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"][..],
            ),
            (pids.join("c"), &["pids.max"][..]),
        ] {
            std::fs::create_dir_all(&dir).expect("mkdir");
            for f in files {
                std::fs::write(dir.join(f), "").expect("touch");
            }
        }
        let r: LinuxResources = serde_json::from_str(
            r#"{"memory": {"limit": 1000, "swap": -1, "swappiness": 5}, "pids": {"limit": 7}}"#,
        )
        .expect("json");
        let e = cg.apply(&r).expect_err("no swappiness file");
        assert!(
            e.to_string().contains("memory.swappiness") && e.to_string().contains("ENOENT"),
            "{e}"
        );
        std::fs::write(mem.join("c/memory.swappiness"), "").expect("touch");
        cg.apply(&r).expect("apply");
        let read = |p: PathBuf| std::fs::read_to_string(p).expect("read");
        assert_eq!(read(mem.join("c/memory.limit_in_bytes")), "1000");
        assert_eq!(read(mem.join("c/memory.memsw.limit_in_bytes")), "-1");
        assert_eq!(read(pids.join("c/pids.max")), "7");
        std::fs::remove_dir_all(&tmp).expect("cleanup");
    }

    /// A cgroup2 tree in a temp dir offering cpu and memory, with the container at <mount>/c.
    fn fake_v2(tag: &str) -> (PathBuf, Cgroup) {
        let tmp = std::env::temp_dir().join(format!("molt-unit-{tag}-{}", std::process::id()));
        let mnt = tmp.join("v2");
        std::fs::create_dir_all(mnt.join("c")).expect("mkdir");
        for f in ["cgroup.controllers", "cgroup.subtree_control"] {
            std::fs::write(mnt.join(f), "cpu memory").expect("write");
        }
        let m = parse_mountinfo(&format!(
            "1 1 0:1 / {} rw - cgroup2 cgroup2 rw\n",
            mnt.display()
        ))
        .expect("fixture");
        let cg = Cgroup::resolve_on(&m, &[], Some("/c"), "c", false).expect("resolve");
        (tmp, cg)
    }

    /// docker's `docker update` sends quota and period 0 (and memory zeros): nothing is written
    /// (memory.max does not even exist here, so a write would fail). One half of cpu.max keeps
    /// the other half's current value, as runc keeps it from its saved config.
    #[test]
    fn update_on_v2_writes_only_what_was_asked() {
        let (tmp, cg) = fake_v2("upd");
        let cpu_max = tmp.join("v2/c/cpu.max");
        std::fs::write(&cpu_max, "50000 100000").expect("write");
        let upd = |json: &str| cg.update(&serde_json::from_str(json).expect("json"));
        let read = || std::fs::read_to_string(&cpu_max).expect("read");
        upd(r#"{"cpu": {"quota": 0, "period": 0, "shares": 0, "cpus": "", "mems": ""},
                "memory": {"limit": 0, "swap": 0, "reservation": 0}, "blockIO": {"weight": 0},
                "pids": {"limit": 0}}"#)
        .expect("docker's zeros");
        assert_eq!(read(), "50000 100000");
        upd(r#"{"cpu": {"quota": 0, "period": 200000}}"#).expect("period");
        assert_eq!(read(), "50000 200000");
        upd(r#"{"cpu": {"quota": 30000}}"#).expect("quota");
        assert_eq!(read(), "30000 200000");
        // At create there is nothing to keep: a period alone is "max P", as runc's fs2 writes it.
        cg.apply(&serde_json::from_str(r#"{"cpu": {"period": 100000}}"#).expect("json"))
            .expect("apply");
        assert_eq!(read(), "max 100000");
        std::fs::write(&cpu_max, "nonsense").expect("write");
        let e = upd(r#"{"cpu": {"quota": 1000}}"#).expect_err("unparsable cpu.max");
        assert!(e.to_string().contains("cpu.max") && e.to_string().contains("nonsense"), "{e}");
        std::fs::remove_dir_all(&tmp).expect("cleanup");
    }

    /// A missing file fails a required write, and only warns for a knob the kernel may lack.
    #[test]
    fn missing_files_fail_or_warn_as_planned() {
        let tmp = std::env::temp_dir().join(format!("molt-unit-rt-{}", std::process::id()));
        let cpu = tmp.join("cpu");
        std::fs::create_dir_all(cpu.join("c")).expect("mkdir");
        let m = parse_mountinfo(&format!("1 1 0:1 / {} rw - cgroup cgroup rw,cpu\n", cpu.display()))
            .expect("fixture");
        let cg = Cgroup::resolve_on(&m, &[], Some("/c"), "c", false).expect("resolve");
        let r = |json: &str| -> LinuxResources { serde_json::from_str(json).expect("json") };
        cg.apply(&r(r#"{"cpu": {"realtimePeriod": 1000000, "realtimeRuntime": 1000}}"#))
            .expect("no CONFIG_RT_GROUP_SCHED: warned, not failed");
        let e = cg.apply(&r(r#"{"cpu": {"shares": 512}}"#)).expect_err("cpu.shares is required");
        assert!(e.to_string().contains("cpu.shares") && e.to_string().contains("512"), "{e}");
        cg.apply(&r(r#"{"cpu": {"shares": 0, "quota": 0, "period": 0}}"#))
            .expect("zeros write nothing, so the missing files do not matter");
        std::fs::remove_dir_all(&tmp).expect("cleanup");
    }
}
