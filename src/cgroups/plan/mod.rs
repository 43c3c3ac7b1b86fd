//! Turns an OCI `LinuxResources` into the cgroup file writes that carry it out, choosing v1 or v2
//! file names and units per controller, one controller per file (as youki's libcgroups). Pure:
//! the kernel is only touched by `Cgroup::apply`, so every conversion here is unit-tested
//! without root.

mod block_io;
mod cpu;
mod cpuset;
mod devices;
mod hugetlb;
mod memory;
mod network;
mod pids;
mod rdma;
#[cfg(test)]
mod testing;
mod unified;

use std::collections::BTreeMap;

use oci_spec::runtime::LinuxResources;

use super::error::CgroupError;
use super::mountinfo::{Layout, Version};

pub use cpu::keep_cpu_max;
#[cfg(test)]
pub(super) use testing::DOCKER_ZEROS;

/// One value for one cgroup file, to be written into the hierarchy that owns `controller`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The controller that decides the hierarchy; "cgroup" for v2 core files.
    pub controller: String,
    pub file: String,
    pub value: String,
    /// The config field this write comes from, for error messages.
    pub field: String,
    /// What a missing file (ENOENT) means for this write.
    pub when_absent: Absent,
}

/// A cgroup file that the kernel may lack (features that come and go with kernel configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// The write is required: ENOENT is an error naming the file.
    Fail,
    /// Nothing the user asked for is lost (e.g. "no swap limit" without swap accounting).
    Skip,
    /// The value cannot take effect on this kernel: go on, but say so on the log / stderr.
    Warn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    One(Write),
    /// Two limits the kernel keeps ordered (memory <= memory+swap, quota vs period): write the
    /// first, and if the kernel says EINVAL because the second still holds the old value, write
    /// the second first. This avoids reading current values to decide the order.
    EitherOrder(Write, Write),
    /// The first alternative whose file exists (the same knob has a BFQ name and a legacy name).
    FirstPresent(Vec<Write>),
    /// cgroup v2's device rules: an eBPF program attached to the cgroup (`device_filter`).
    DeviceFilter(Vec<oci_spec::runtime::LinuxDeviceCgroup>),
    /// A value the config asks for that has no file on this cgroup version: nothing is written,
    /// the message is logged as a warning (runc drops these silently).
    Ignored(String),
}

/// Which cgroup version serves a controller on this host, None when none does.
pub type VersionOf<'a> = &'a dyn Fn(&str) -> Option<Version>;

struct Planner<'a> {
    version_of: VersionOf<'a>,
    steps: Vec<Step>,
}

impl Planner<'_> {
    fn version(&self, controller: &str, field: &str) -> Result<Version, CgroupError> {
        (self.version_of)(controller).ok_or_else(|| CgroupError::NoController {
            field: field.to_string(),
            controller: controller.to_string(),
        })
    }

    fn one(&mut self, w: Write) {
        self.steps.push(Step::One(w));
    }

    fn ignore(&mut self, field: &str, value: impl std::fmt::Display, why: &str) {
        self.steps.push(Step::Ignored(format!(
            "linux.resources.{field} = {value} ignored: {why}"
        )));
    }
}

fn write(controller: &str, file: impl Into<String>, value: impl ToString, field: &str) -> Write {
    Write {
        controller: controller.to_string(),
        file: file.into(),
        value: value.to_string(),
        field: format!("linux.resources.{field}"),
        when_absent: Absent::Fail,
    }
}

fn when_absent(mut w: Write, a: Absent) -> Write {
    w.when_absent = a;
    w
}

/// runc's reading of a numeric field: an absent value and 0 both mean "not set" (runc copies the
/// spec's pointers into plain integers where 0 is the zero value, and its writers skip 0).
fn set<T: Default + PartialEq>(v: Option<T>) -> Option<T> {
    v.filter(|v| *v != T::default())
}

fn bad_value(field: &str, value: impl ToString, reason: &str) -> CgroupError {
    CgroupError::BadValue {
        field: format!("linux.resources.{field}"),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn max_or(v: i64) -> String {
    if v == -1 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// All writes for `r`, in the order they must happen. `layout` only matters for resources that
/// have no v2 form at all (network), which are skipped on a pure v2 host as runc does.
///
/// Zero values follow runc 1.1.5 (the engines' reference): a numeric field that is absent or 0
/// writes nothing, so docker's whole structures (`blockIO.weight: 0`, `cpu.quota: 0`, ...) leave
/// the kernel's values alone. The exceptions, where 0 is a real limit, are noted at each field and
/// in vendor-notes/cgroup-resources.md.
pub fn plan(
    r: &LinuxResources,
    layout: Layout,
    version_of: VersionOf,
) -> Result<Vec<Step>, CgroupError> {
    let mut p = Planner {
        version_of,
        steps: Vec::new(),
    };
    if let Some(m) = r.memory() {
        memory::memory(&mut p, m)?;
    }
    if let Some(c) = r.cpu() {
        cpu::cpu(&mut p, c)?;
        cpuset::cpuset(&mut p, c)?;
    }
    if let Some(pids) = r.pids() {
        pids::pids_limit(&mut p, pids.limit())?;
    }
    if let Some(b) = r.block_io() {
        block_io::block_io(&mut p, b)?;
    }
    hugetlb::hugetlb(&mut p, r.hugepage_limits().as_deref().unwrap_or_default())?;
    if let Some(n) = r.network() {
        network::network(&mut p, n, layout)?;
    }
    if let Some(limits) = r.rdma() {
        rdma::rdma(&mut p, limits)?;
    }
    devices::devices(&mut p, r.devices().as_deref().unwrap_or_default())?;
    // Last, so that a verbatim unified value wins over a converted one for the same file.
    let unified: BTreeMap<_, _> = r.unified().iter().flatten().collect();
    for (key, value) in unified {
        unified::unified_key(&mut p, key, value)?;
    }
    Ok(p.steps)
}

/// What `update` applies of `r`: what `runc update` changes (memory limit, reservation and swap;
/// every cpu and cpuset field; block IO weights and throttles; pids; unified). The rest is left as
/// created, as runc leaves it, and named in the returned list so the caller can say so: engines
/// send whole structures (podman includes the device rules), and an update must not rewrite
/// device rules or quietly pretend to change a swappiness.
pub fn for_update(r: &LinuxResources) -> (LinuxResources, Vec<String>) {
    let mut out = r.clone();
    let mut ignored = Vec::new();
    let mut drop = |asked: bool, field: &str| {
        if asked {
            ignored.push(format!("linux.resources.{field}"));
        }
    };
    drop(
        r.devices().as_ref().is_some_and(|d| !d.is_empty()),
        "devices",
    );
    out.set_devices(None);
    drop(
        r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()),
        "hugepageLimits",
    );
    out.set_hugepage_limits(None);
    drop(
        r.network().as_ref().is_some_and(|n| {
            set(n.class_id()).is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty())
        }),
        "network",
    );
    out.set_network(None);
    drop(r.rdma().as_ref().is_some_and(|m| !m.is_empty()), "rdma");
    out.set_rdma(None);
    if let Some(m) = out.memory_mut() {
        drop(memory::swappiness(m).is_some(), "memory.swappiness");
        m.set_swappiness(None);
        drop(
            m.disable_oom_killer() == Some(true),
            "memory.disableOOMKiller",
        );
        m.set_disable_oom_killer(None);
    }
    (out, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::plan::testing::*;
    use crate::cgroups::mountinfo::Layout;

    const FULL: &str = r#"{
        "memory": {"limit": 104857600, "reservation": 52428800, "swap": 209715200, "kernel": 1, "swappiness": 10},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "pids": {"limit": 32},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]
    }"#;

    #[test]
    fn v1_files_and_values() {
        let steps = plan(&res(FULL), Layout::V1, &v1).expect("plan");
        assert_eq!(
            flat(&steps),
            pairs(&[
                ("memory.limit_in_bytes", "104857600"),
                ("memory.memsw.limit_in_bytes", "209715200"),
                ("memory.soft_limit_in_bytes", "52428800"),
                ("memory.swappiness", "10"),
                ("cpu.shares", "1024"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
                ("cpuset.cpus", "0-1"),
                ("cpuset.mems", "0"),
                ("pids.max", "32"),
                ("hugetlb.2MB.limit_in_bytes", "4194304"),
            ])
        );
        // FULL's kernel memory limit comes first, as a warning; then memory and swap together.
        assert!(matches!(&steps[0], Step::Ignored(m) if m.contains("memory.kernel = 1")));
        assert!(matches!(steps[1], Step::EitherOrder(..)));
    }

    #[test]
    fn v2_files_and_converted_values() {
        let steps = plan(&res(FULL), Layout::V2, &v2).expect("plan");
        assert_eq!(
            flat(&steps),
            pairs(&[
                ("memory.max", "104857600"),
                ("memory.swap.max", "104857600"),
                ("memory.low", "52428800"),
                ("cpu.weight", "39"),
                ("cpu.max", "50000 100000"),
                ("cpuset.cpus", "0-1"),
                ("cpuset.mems", "0"),
                ("pids.max", "32"),
                ("hugetlb.2MB.max", "4194304"),
            ])
        );
    }

    #[test]
    fn hybrid_routes_hugetlb_to_v2_and_the_rest_to_v1() {
        let steps = plan(&res(FULL), Layout::Hybrid, &hybrid).expect("plan");
        let f = flat(&steps);
        assert!(f.contains(&("memory.limit_in_bytes".into(), "104857600".into())));
        assert!(f.contains(&("hugetlb.2MB.max".into(), "4194304".into())));
    }

    #[test]
    fn unlimited_values() {
        let r = res(r#"{"memory": {"limit": -1}, "pids": {"limit": -1}, "cpu": {"quota": -1}}"#);
        let f = flat(&plan(&r, Layout::V2, &v2).expect("plan"));
        assert_eq!(
            f,
            pairs(&[
                ("memory.max", "max"),
                ("memory.swap.max", "max"),
                ("cpu.max", "max 100000"),
                ("pids.max", "max")
            ])
        );
        let f1 = flat(&plan(&r, Layout::V1, &v1).expect("plan"));
        assert_eq!(
            f1,
            pairs(&[
                ("memory.limit_in_bytes", "-1"),
                ("memory.memsw.limit_in_bytes", "-1"),
                ("cpu.cfs_quota_us", "-1"),
                ("pids.max", "max")
            ])
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        for (json, field) in [
            (r#"{"memory": {"swappiness": 101}}"#, "memory.swappiness"),
            (r#"{"memory": {"limit": -5}}"#, "memory.limit"),
            (
                r#"{"hugepageLimits": [{"pageSize": "../x", "limit": 1}]}"#,
                "pageSize",
            ),
            (
                r#"{"devices": [{"allow": true, "type": "c", "access": "rwx"}]}"#,
                "devices.access",
            ),
        ] {
            let e = plan(&res(json), Layout::V1, &v1).expect_err(json);
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn missing_controller_is_named() {
        let r = res(r#"{"pids": {"limit": 5}}"#);
        let e = plan(&r, Layout::V2, &|_| None).expect_err("no pids");
        assert!(e.to_string().contains("pids controller"), "{e}");
    }

    #[test]
    fn docker_zeros_write_nothing_and_need_no_controller() {
        let r = res(DOCKER_ZEROS);
        for (name, layout, version_of) in [
            ("v1", Layout::V1, &v1 as VersionOf),
            ("v2", Layout::V2, &v2),
            ("hybrid", Layout::Hybrid, &hybrid),
            ("none", Layout::V1, &no_controllers),
        ] {
            let steps = plan(&r, layout, version_of).expect(name);
            assert!(steps.is_empty(), "{name}: {steps:?}");
        }
    }

    /// One zero at a time, as the issue probed them: each is "not set" on both versions.
    #[test]
    fn each_zero_alone_is_not_set() {
        for json in [
            r#"{"memory": {"limit": 0}}"#,
            r#"{"memory": {"swap": 0}}"#,
            r#"{"memory": {"reservation": 0}}"#,
            r#"{"memory": {"kernel": 0, "kernelTCP": 0}}"#,
            r#"{"memory": {"disableOOMKiller": false}}"#,
            r#"{"memory": {"swappiness": 18446744073709551615}}"#,
            r#"{"cpu": {"shares": 0}}"#,
            r#"{"cpu": {"quota": 0}}"#,
            r#"{"cpu": {"period": 0}}"#,
            r#"{"cpu": {"quota": 0, "period": 0}}"#,
            r#"{"cpu": {"realtimeRuntime": 0}}"#,
            r#"{"cpu": {"realtimePeriod": 0}}"#,
            r#"{"cpu": {"cpus": "", "mems": ""}}"#,
            r#"{"pids": {"limit": 0}}"#,
            r#"{"pids": {}}"#,
            r#"{"blockIO": {"weight": 0}}"#,
            r#"{"blockIO": {"leafWeight": 0}}"#,
            r#"{"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "weight": 0}]}}"#,
            r#"{"blockIO": {"weightDevice": [{"major": 8, "minor": 0, "leafWeight": 0}]}}"#,
            r#"{"blockIO": {"throttleReadBpsDevice": []}}"#,
            r#"{"network": {"classID": 0}}"#,
            r#"{"hugepageLimits": []}"#,
            r#"{"unified": {}}"#,
        ] {
            for (layout, version_of) in [(Layout::V1, &v1 as VersionOf), (Layout::V2, &v2)] {
                let steps = plan(&res(json), layout, version_of).expect(json);
                assert!(steps.is_empty(), "{json} on {layout:?}: {steps:?}");
            }
        }
    }

    /// The same fields with a value are written: the zero tests above are not vacuous.
    #[test]
    fn the_same_fields_set_are_written() {
        for (json, v1_file, v2_file) in [
            (
                r#"{"memory": {"limit": 4096}}"#,
                "memory.limit_in_bytes",
                "memory.max",
            ),
            (
                r#"{"memory": {"reservation": 4096}}"#,
                "memory.soft_limit_in_bytes",
                "memory.low",
            ),
            (r#"{"cpu": {"shares": 512}}"#, "cpu.shares", "cpu.weight"),
            (r#"{"cpu": {"quota": 1000}}"#, "cpu.cfs_quota_us", "cpu.max"),
            (
                r#"{"cpu": {"period": 1000}}"#,
                "cpu.cfs_period_us",
                "cpu.max",
            ),
            (r#"{"pids": {"limit": 9}}"#, "pids.max", "pids.max"),
            (
                r#"{"blockIO": {"weight": 100}}"#,
                "blkio.bfq.weight",
                "io.bfq.weight",
            ),
        ] {
            let (f1, f2) = on_v1_and_v2(json);
            let files =
                |f: &[(String, String)]| f.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>();
            assert_eq!(
                (files(&f1), files(&f2)),
                (vec![v1_file.to_string()], vec![v2_file.to_string()]),
                "{json}"
            );
        }
        let f = flat(&plan(&res(r#"{"network": {"classID": 7}}"#), Layout::V1, &v1).expect("net"));
        assert_eq!(f, pairs(&[("net_cls.classid", "7")]));
        let r = res(r#"{"cpu": {"realtimePeriod": 1000000, "realtimeRuntime": 950000}}"#);
        let steps = plan(&r, Layout::V1, &v1).expect("rt");
        assert_eq!(
            flat(&steps),
            pairs(&[
                ("cpu.rt_period_us", "1000000"),
                ("cpu.rt_runtime_us", "950000")
            ])
        );
        // Without CONFIG_RT_GROUP_SCHED the files are missing: go on, but warn.
        assert!(steps
            .iter()
            .all(|s| matches!(s, Step::One(w) if w.when_absent == Absent::Warn)));
    }

    /// Where 0 (or -1) is a value, not "unset": written as runc writes it.
    #[test]
    fn zeros_that_are_values() {
        let r = res(
            r#"{"memory": {"swappiness": 0}, "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
            "blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 0}]},
            "cpu": {"idle": 0, "burst": 0}}"#,
        );
        assert_eq!(
            flat(&plan(&r, Layout::V1, &v1).expect("v1")),
            pairs(&[
                ("memory.swappiness", "0"),
                ("cpu.cfs_burst_us", "0"),
                ("cpu.idle", "0"),
                ("blkio.throttle.read_bps_device", "8:0 0"),
                ("hugetlb.2MB.limit_in_bytes", "0"),
            ])
        );
        let f2 = flat(&plan(&r, Layout::V2, &v2).expect("v2"));
        assert_eq!(
            f2,
            pairs(&[
                ("cpu.max.burst", "0"),
                ("cpu.idle", "0"),
                ("io.max", "8:0 rbps=max"),
                ("hugetlb.2MB.max", "0"),
            ])
        );
        // pids: -1 is "max" everywhere; other negatives are "max" on v1 and left to the kernel on v2.
        assert_eq!(
            on_v1_and_v2(r#"{"pids": {"limit": -5}}"#),
            (pairs(&[("pids.max", "max")]), pairs(&[("pids.max", "-5")]))
        );
        // swap equal to the limit is "no swap" on v2 (0), written even without swap accounting.
        let r = res(r#"{"memory": {"limit": 4096, "swap": 4096}}"#);
        let steps = plan(&r, Layout::V2, &v2).expect("v2");
        assert_eq!(
            flat(&steps),
            pairs(&[("memory.max", "4096"), ("memory.swap.max", "0")])
        );
        assert!(matches!(&steps[1], Step::One(w) if w.when_absent == Absent::Skip));
        // Unlimited memory on v1 with swap unset: memsw unlimited too, skipped without the file.
        let steps = plan(
            &res(r#"{"memory": {"limit": -1, "swap": 0}}"#),
            Layout::V1,
            &v1,
        )
        .expect("v1");
        let Step::EitherOrder(_, sw) = &steps[0] else {
            panic!("limit and swap together: {steps:?}")
        };
        assert_eq!((sw.value.as_str(), sw.when_absent), ("-1", Absent::Skip));
        // disableOOMKiller true is the only value written.
        let f = flat(
            &plan(
                &res(r#"{"memory": {"disableOOMKiller": true}}"#),
                Layout::V1,
                &v1,
            )
            .expect("oom"),
        );
        assert_eq!(f, pairs(&[("memory.oom_control", "1")]));
    }

    /// Values with no file on this cgroup version are dropped with a message, never silently.
    #[test]
    fn what_cannot_be_applied_is_named() {
        let r = res(
            r#"{"memory": {"kernel": 1048576, "swappiness": 10, "disableOOMKiller": true},
            "cpu": {"realtimePeriod": 1000000, "realtimeRuntime": 1000},
            "blockIO": {"leafWeight": 300}, "network": {"classID": 7}}"#,
        );
        let steps = plan(&r, Layout::V2, &v2).expect("v2");
        assert!(flat(&steps).is_empty(), "{steps:?}");
        let msgs = ignored(&steps).join("\n");
        for field in [
            "memory.kernel = 1048576",
            "memory.swappiness = 10",
            "memory.disableOOMKiller = true",
            "cpu.realtimePeriod = 1000000",
            "cpu.realtimeRuntime = 1000",
            "blockIO.leafWeight = 300",
            "network.classID = 7",
        ] {
            assert!(msgs.contains(field), "{field} not in:\n{msgs}");
        }
        // On v1 only the kernel memory limit is dropped; the rest has files.
        let steps = plan(&r, Layout::V1, &v1).expect("v1");
        assert_eq!(ignored(&steps).len(), 1, "{steps:?}");
    }

    #[test]
    fn update_keeps_what_runc_update_changes() {
        let r = res(
            r#"{"memory": {"limit": 4096, "swappiness": 5, "disableOOMKiller": false},
            "cpu": {"quota": 0, "period": 0, "shares": 512},
            "devices": [{"allow": false, "access": "rwm"}],
            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
            "network": {"classID": 0}, "pids": {"limit": 9}}"#,
        );
        let (u, dropped) = for_update(&r);
        assert_eq!(
            dropped,
            [
                "linux.resources.devices",
                "linux.resources.hugepageLimits",
                "linux.resources.memory.swappiness"
            ]
        );
        assert_eq!(
            flat(&plan(&u, Layout::V1, &v1).expect("plan")),
            pairs(&[
                ("memory.limit_in_bytes", "4096"),
                ("cpu.shares", "512"),
                ("pids.max", "9")
            ])
        );
        // docker's `docker update` structure with nothing asked: nothing to do, nothing dropped.
        let (u, dropped) = for_update(&res(
            r#"{"cpu": {"quota": 0, "period": 0, "cpus": "", "mems": ""}, "memory": {}, "blockIO": {"weight": 0}}"#,
        ));
        assert!(dropped.is_empty(), "{dropped:?}");
        assert!(plan(&u, Layout::V1, &v1).expect("v1").is_empty());
        assert!(plan(&u, Layout::V2, &v2).expect("v2").is_empty());
    }
}
