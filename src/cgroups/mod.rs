//! A container's cgroup on every hierarchy the host has (v1, v2 or hybrid): where it lives,
//! creating and removing it, applying OCI resource limits, and acting on its processes
//! (list, freeze, signal). Everything the rest of molt knows about cgroups goes through `Cgroup`.

mod dirs;
pub mod device_filter;
mod error;
mod freezer;
mod fsio;
mod limits;
mod mountinfo;
mod path;
pub(crate) mod plan;
mod processes;
mod stats;
mod sub;

#[cfg(test)]
mod root_tests;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::CgroupError;
pub use mountinfo::{
    own_path_in, parse_mountinfo, parse_proc_cgroup, read_mounts, read_own, Layout, Membership, Mount,
    Version,
};
pub use path::DEFAULT_PARENT;
pub use sub::SubCgroup;

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

    /// runc-shaped statistics (`runc events --stats`), best effort: what the kernel offers.
    pub fn stats(&self) -> Result<serde_json::Value, CgroupError> {
        stats::collect(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxResources;

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
