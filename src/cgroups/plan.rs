//! Turns an OCI `LinuxResources` into the cgroup file writes that carry it out, choosing v1 or v2
//! file names and units per controller. Pure: the kernel is only touched by `Cgroup::apply`,
//! so every conversion here is unit-tested without root.

use std::collections::BTreeMap;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources,
};

use super::error::CgroupError;
use super::mountinfo::{Layout, Version};

/// One value for one cgroup file, to be written into the hierarchy that owns `controller`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The controller that decides the hierarchy; "cgroup" for v2 core files.
    pub controller: String,
    pub file: String,
    pub value: String,
    /// The config field this write comes from, for error messages.
    pub field: String,
    /// Skip silently when the kernel lacks the file (features that come and go with kernel
    /// configs, where a missing file means "nothing to limit" rather than "limit ignored").
    pub if_present: bool,
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
}

fn write(controller: &str, file: impl Into<String>, value: impl ToString, field: &str) -> Write {
    Write {
        controller: controller.to_string(),
        file: file.into(),
        value: value.to_string(),
        field: format!("linux.resources.{field}"),
        if_present: false,
    }
}

fn optional(mut w: Write) -> Write {
    w.if_present = true;
    w
}

fn bad_value(field: &str, value: impl ToString, reason: &str) -> CgroupError {
    CgroupError::BadValue {
        field: format!("linux.resources.{field}"),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// All writes for `r`, in the order they must happen. `layout` only matters for resources that
/// have no v2 form at all (network), which are skipped on a pure v2 host as runc does.
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
        memory(&mut p, m)?;
    }
    if let Some(c) = r.cpu() {
        cpu(&mut p, c)?;
    }
    if let Some(pids) = r.pids() {
        p.version("pids", "pids.limit")?;
        // runc's reading of the spec: 0 and -1 both mean "no limit".
        let limit = pids.limit();
        let value = if limit > 0 {
            limit.to_string()
        } else {
            "max".to_string()
        };
        p.one(write("pids", "pids.max", value, "pids.limit"));
    }
    if let Some(b) = r.block_io() {
        block_io(&mut p, b)?;
    }
    for h in r.hugepage_limits().iter().flatten() {
        let size = h.page_size();
        if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad_value(
                "hugepageLimits.pageSize",
                size,
                "expected a size like 2MB or 1GB",
            ));
        }
        let file = match p.version("hugetlb", "hugepageLimits")? {
            Version::V1 => format!("hugetlb.{size}.limit_in_bytes"),
            Version::V2 => format!("hugetlb.{size}.max"),
        };
        p.one(write("hugetlb", file, h.limit(), "hugepageLimits.limit"));
    }
    if let Some(n) = r.network() {
        // net_cls/net_prio have no cgroup v2 form (v2 leaves this to eBPF); runc ignores them there too.
        if layout != Layout::V2 {
            if let Some(id) = n.class_id() {
                p.version("net_cls", "network.classID")?;
                p.one(write("net_cls", "net_cls.classid", id, "network.classID"));
            }
            for prio in n.priorities().iter().flatten() {
                p.version("net_prio", "network.priorities")?;
                let value = format!("{} {}", prio.name(), prio.priority());
                p.one(write(
                    "net_prio",
                    "net_prio.ifpriomap",
                    value,
                    "network.priorities",
                ));
            }
        }
    }
    let rdma: BTreeMap<_, _> = r.rdma().iter().flatten().collect();
    for (dev, limit) in rdma {
        p.version("rdma", "rdma")?;
        let mut value = dev.clone();
        if let Some(h) = limit.hca_handles() {
            value.push_str(&format!(" hca_handle={h}"));
        }
        if let Some(o) = limit.hca_objects() {
            value.push_str(&format!(" hca_object={o}"));
        }
        p.one(write("rdma", "rdma.max", value, "rdma"));
    }
    devices(&mut p, r.devices().as_deref().unwrap_or_default())?;
    // Last, so that a verbatim unified value wins over a converted one for the same file.
    let unified: BTreeMap<_, _> = r.unified().iter().flatten().collect();
    for (key, value) in unified {
        unified_key(&mut p, key, value)?;
    }
    Ok(p.steps)
}

fn memory(p: &mut Planner, m: &LinuxMemory) -> Result<(), CgroupError> {
    // kernel and kernelTCP are not applied: the kmem limits were deprecated and then removed
    // from the kernel (5.16 / 6.x), and runc and crun ignore them too.
    let used = m.limit().is_some()
        || m.reservation().is_some()
        || m.swap().is_some()
        || m.swappiness().is_some()
        || m.disable_oom_killer().is_some();
    if !used {
        return Ok(());
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(bad_value("memory.swappiness", s, "must be 0..=100"));
        }
    }
    for (field, v) in [
        ("memory.limit", m.limit()),
        ("memory.reservation", m.reservation()),
        ("memory.swap", m.swap()),
    ] {
        if let Some(v) = v {
            if v < -1 {
                return Err(bad_value(
                    field,
                    v,
                    "must be -1 (unlimited) or a byte count",
                ));
            }
        }
    }
    let w = |file: &str, value: String, field: &str| write("memory", file, value, field);
    match p.version("memory", "memory")? {
        Version::V1 => {
            let limit = m
                .limit()
                .map(|l| w("memory.limit_in_bytes", l.to_string(), "memory.limit"));
            // Without swap accounting there is no memsw file; "unlimited" then already holds.
            let swap = m.swap().map(|s| {
                let sw = w("memory.memsw.limit_in_bytes", s.to_string(), "memory.swap");
                if s == -1 {
                    optional(sw)
                } else {
                    sw
                }
            });
            match (limit, swap) {
                (Some(l), Some(s)) => p.steps.push(Step::EitherOrder(l, s)),
                (l, s) => l.into_iter().chain(s).for_each(|x| p.one(x)),
            }
            if let Some(r) = m.reservation() {
                p.one(w(
                    "memory.soft_limit_in_bytes",
                    r.to_string(),
                    "memory.reservation",
                ));
            }
            if let Some(s) = m.swappiness() {
                p.one(w("memory.swappiness", s.to_string(), "memory.swappiness"));
            }
            if let Some(d) = m.disable_oom_killer() {
                p.one(w(
                    "memory.oom_control",
                    u8::from(d).to_string(),
                    "memory.disableOOMKiller",
                ));
            }
        }
        Version::V2 => {
            if let Some(l) = m.limit() {
                p.one(w("memory.max", max_or(l), "memory.limit"));
            }
            if let Some(s) = swap_v2(m.swap(), m.limit())? {
                let value = max_or(s);
                let sw = w("memory.swap.max", value.clone(), "memory.swap");
                // No swap accounting: "no swap limit" and "no swap" need no file (runc does the same).
                p.one(if value == "max" || value == "0" {
                    optional(sw)
                } else {
                    sw
                });
            }
            if let Some(r) = m.reservation() {
                p.one(w("memory.low", max_or(r), "memory.reservation"));
            }
            // swappiness and disableOOMKiller have no v2 file; memory.oom.group is a different
            // policy. They are ignored, as by runc and crun, rather than failing every engine
            // that sends docker's defaults.
        }
    }
    Ok(())
}

fn max_or(v: i64) -> String {
    if v == -1 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// OCI's swap is memory+swap (the v1 memsw meaning); v2's memory.swap.max is swap alone.
/// Mirrors runc's ConvertMemorySwapToCgroupV2Value.
pub fn swap_v2(swap: Option<i64>, limit: Option<i64>) -> Result<Option<i64>, CgroupError> {
    let err = |reason: &str| bad_value("memory.swap", swap.unwrap_or_default(), reason);
    match (swap, limit) {
        (None, Some(-1)) => Ok(Some(-1)), // unlimited memory without a swap value: swap unlimited too
        (None, _) => Ok(None),
        (Some(-1), _) => Ok(Some(-1)),
        (Some(0), _) => Ok(Some(0)),
        (Some(_), None | Some(-1) | Some(0)) => Err(err("a swap limit needs a memory limit")),
        (Some(s), Some(l)) if s < l => {
            Err(err(&format!("memory+swap must be >= the memory limit {l}")))
        }
        (Some(s), Some(l)) => Ok(Some(s - l)),
    }
}

/// cpu.shares (2..=262144) to cpu.weight (1..=10000), the linear map runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// blkio.weight (10..=1000) to io.weight (1..=10000), as runc's ConvertBlkIOToIOWeightValue.
pub fn blkio_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

fn cpu(p: &mut Planner, c: &LinuxCpu) -> Result<(), CgroupError> {
    let w = |file: &str, value: String, field: &str| write("cpu", file, value, field);
    let uses_cpu = c.shares().is_some()
        || c.quota().is_some()
        || c.period().is_some()
        || c.burst().is_some()
        || c.idle().is_some()
        || c.realtime_runtime().is_some()
        || c.realtime_period().is_some();
    if uses_cpu {
        match p.version("cpu", "cpu")? {
            Version::V1 => {
                if let Some(s) = c.shares() {
                    p.one(w("cpu.shares", s.to_string(), "cpu.shares"));
                }
                let period = c
                    .period()
                    .map(|v| w("cpu.cfs_period_us", v.to_string(), "cpu.period"));
                let quota = c
                    .quota()
                    .map(|v| w("cpu.cfs_quota_us", v.to_string(), "cpu.quota"));
                match (period, quota) {
                    (Some(a), Some(b)) => p.steps.push(Step::EitherOrder(a, b)),
                    (a, b) => a.into_iter().chain(b).for_each(|x| p.one(x)),
                }
                if let Some(b) = c.burst() {
                    p.one(w("cpu.cfs_burst_us", b.to_string(), "cpu.burst"));
                }
                if let Some(i) = c.idle() {
                    p.one(w("cpu.idle", i.to_string(), "cpu.idle"));
                }
                // Realtime files exist only with CONFIG_RT_GROUP_SCHED; without it no task can be
                // given realtime time in a group anyway. Period before runtime, as the kernel checks
                // runtime against the period.
                if let Some(v) = c.realtime_period() {
                    p.one(optional(w(
                        "cpu.rt_period_us",
                        v.to_string(),
                        "cpu.realtimePeriod",
                    )));
                }
                if let Some(v) = c.realtime_runtime() {
                    p.one(optional(w(
                        "cpu.rt_runtime_us",
                        v.to_string(),
                        "cpu.realtimeRuntime",
                    )));
                }
            }
            Version::V2 => {
                if let Some(s) = c.shares().filter(|s| *s != 0) {
                    p.one(w(
                        "cpu.weight",
                        shares_to_weight(s).to_string(),
                        "cpu.shares",
                    ));
                }
                if let Some(v) = cpu_max(c.quota(), c.period()) {
                    p.one(w("cpu.max", v, "cpu.quota"));
                }
                if let Some(b) = c.burst() {
                    p.one(w("cpu.max.burst", b.to_string(), "cpu.burst"));
                }
                if let Some(i) = c.idle() {
                    p.one(w("cpu.idle", i.to_string(), "cpu.idle"));
                }
                // cgroup v2 has no realtime group scheduling; realtime values are ignored there.
            }
        }
    }
    for (file, value, field) in [
        ("cpuset.cpus", c.cpus(), "cpu.cpus"),
        ("cpuset.mems", c.mems(), "cpu.mems"),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            p.version("cpuset", field)?;
            p.one(write("cpuset", file, v, field));
        }
    }
    Ok(())
}

/// cpu.max is "$QUOTA $PERIOD" with "max" for no quota. As in runc, a period alone also
/// resets the quota to "max": the file cannot take a period without a quota.
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    if quota.is_none() && period.is_none() {
        return None;
    }
    let mut s = match quota {
        Some(q) if q > 0 => q.to_string(),
        _ => "max".to_string(),
    };
    if let Some(per) = period.filter(|p| *p != 0) {
        s.push_str(&format!(" {per}"));
    }
    Some(s)
}

fn block_io(p: &mut Planner, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let used = b.weight().is_some()
        || b.leaf_weight().is_some()
        || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
        || [
            b.throttle_read_bps_device(),
            b.throttle_write_bps_device(),
            b.throttle_read_iops_device(),
            b.throttle_write_iops_device(),
        ]
        .iter()
        .any(|t| t.as_ref().is_some_and(|v| !v.is_empty()));
    if !used {
        return Ok(());
    }
    // The same knobs under both names: v1 "blkio", v2 "io".
    let v = match ((p.version_of)("blkio"), (p.version_of)("io")) {
        (Some(Version::V1), _) => Version::V1,
        (_, Some(Version::V2)) => Version::V2,
        _ => p.version("io", "blockIO").map(|_| Version::V2)?,
    };
    let ctrl = if v == Version::V1 { "blkio" } else { "io" };
    let w = |file: &str, value: String, field: &str| write(ctrl, file, value, field);
    // BFQ (the only weight-aware scheduler left in current kernels) names the file *.bfq.weight
    // and keeps the v1 1..1000 scale on v2; io.weight (1..10000) serves io.cost.
    // `dev` is "" for the default weight, "maj:min" for a per-device one; v1 keeps per-device
    // weights in a separate *_device file, v2 in the same file.
    let weight = |p: &mut Planner, dev: &str, weight: u16, field: &str| {
        let val = |x: String| {
            if dev.is_empty() {
                x
            } else {
                format!("{dev} {x}")
            }
        };
        let sfx = if dev.is_empty() { "" } else { "_device" };
        let alts = match v {
            Version::V1 => vec![
                w(
                    &format!("blkio.bfq.weight{sfx}"),
                    val(weight.to_string()),
                    field,
                ),
                w(
                    &format!("blkio.weight{sfx}"),
                    val(weight.to_string()),
                    field,
                ),
            ],
            Version::V2 => vec![
                w("io.bfq.weight", val(weight.to_string()), field),
                w(
                    "io.weight",
                    val(blkio_to_io_weight(weight).to_string()),
                    field,
                ),
            ],
        };
        p.steps.push(Step::FirstPresent(alts));
    };
    if let Some(wt) = b.weight() {
        weight(p, "", wt, "blockIO.weight");
    }
    for d in b.weight_device().iter().flatten() {
        let dev = format!("{}:{}", d.major(), d.minor());
        if let Some(wt) = d.weight() {
            weight(p, &dev, wt, "blockIO.weightDevice");
        }
        if let (Some(lw), Version::V1) = (d.leaf_weight(), v) {
            // Leaf weights died with CFQ (kernel 5.0); BFQ has no such file.
            p.one(optional(w(
                "blkio.leaf_weight_device",
                format!("{dev} {lw}"),
                "blockIO.weightDevice.leafWeight",
            )));
        }
    }
    if let (Some(lw), Version::V1) = (b.leaf_weight(), v) {
        p.one(optional(w(
            "blkio.leaf_weight",
            lw.to_string(),
            "blockIO.leafWeight",
        )));
    }
    let throttles = [
        (
            b.throttle_read_bps_device(),
            "read_bps_device",
            "rbps",
            "blockIO.throttleReadBpsDevice",
        ),
        (
            b.throttle_write_bps_device(),
            "write_bps_device",
            "wbps",
            "blockIO.throttleWriteBpsDevice",
        ),
        (
            b.throttle_read_iops_device(),
            "read_iops_device",
            "riops",
            "blockIO.throttleReadIOPSDevice",
        ),
        (
            b.throttle_write_iops_device(),
            "write_iops_device",
            "wiops",
            "blockIO.throttleWriteIOPSDevice",
        ),
    ];
    for (list, v1_file, v2_key, field) in throttles {
        for t in list.iter().flatten() {
            let dev = format!("{}:{}", t.major(), t.minor());
            p.one(match v {
                Version::V1 => w(
                    &format!("blkio.throttle.{v1_file}"),
                    format!("{dev} {}", t.rate()),
                    field,
                ),
                // 0 clears a v1 throttle; v2 spells that "max".
                Version::V2 => {
                    let rate = if t.rate() == 0 {
                        "max".to_string()
                    } else {
                        t.rate().to_string()
                    };
                    w("io.max", format!("{dev} {v2_key}={rate}"), field)
                }
            });
        }
    }
    Ok(())
}

fn devices(p: &mut Planner, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    // Only the v1 devices controller takes rules as files. On v2 device access is an eBPF
    // program attached to the cgroup, which molt does not load yet: the rules are skipped there
    // (and on a v1 host without the devices hierarchy). The container is still limited to the
    // device nodes its config lists, because molt's rootfs creates only those.
    if rules.is_empty() || (p.version_of)("devices") != Some(Version::V1) {
        return Ok(());
    }
    for rule in rules {
        let value = device_rule(rule)?;
        let file = if rule.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        p.one(write("devices", file, value, "devices"));
    }
    Ok(())
}

/// "c 1:3 rwm" as devices.allow/deny read it; absent numbers are "*".
pub fn device_rule(rule: &LinuxDeviceCgroup) -> Result<String, CgroupError> {
    let typ = match rule.typ().unwrap_or_default() {
        LinuxDeviceType::A => "a",
        LinuxDeviceType::B => "b",
        // "u" (unbuffered char) is a char device to the kernel.
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::P => {
            return Err(bad_value(
                "devices.type",
                "p",
                "FIFOs are not device-cgroup controlled",
            ))
        }
    };
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    let access = rule
        .access()
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm");
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(bad_value(
            "devices.access",
            access,
            "only r, w and m are allowed",
        ));
    }
    Ok(format!(
        "{typ} {}:{} {access}",
        num(rule.major()),
        num(rule.minor())
    ))
}

fn unified_key(p: &mut Planner, key: &str, value: &str) -> Result<(), CgroupError> {
    let err = |reason: String| CgroupError::Unified {
        key: key.to_string(),
        reason,
    };
    // The key is a file name in the container's own cgroup directory; nothing may lead out of it.
    let Some((controller, _)) = key.split_once('.') else {
        return Err(err(
            "not a cgroup v2 file name (expected <controller>.<file>)".to_string(),
        ));
    };
    if controller.is_empty() || key.contains('/') || key.contains('\0') {
        return Err(err(
            "not a cgroup v2 file name (expected <controller>.<file>)".to_string(),
        ));
    }
    match (p.version_of)(controller) {
        Some(Version::V2) => {}
        Some(Version::V1) => {
            return Err(err(format!(
                "unified keys are cgroup v2 files, but {controller} is a cgroup v1 controller on this host"
            )))
        }
        None => return Err(err(format!("no cgroup v2 hierarchy on this host provides {controller}"))),
    }
    p.one(write(controller, key, value, &format!("unified.{key}")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).expect("fixture json")
    }

    fn v1(_: &str) -> Option<Version> {
        Some(Version::V1)
    }

    fn v2(c: &str) -> Option<Version> {
        (c != "blkio" && c != "net_cls" && c != "net_prio").then_some(Version::V2)
    }

    /// This host: everything v1 except hugetlb, which only the unified tree offers.
    fn hybrid(c: &str) -> Option<Version> {
        match c {
            "hugetlb" | "cgroup" => Some(Version::V2),
            "io" | "rdma" => None,
            _ => Some(Version::V1),
        }
    }

    fn flat(steps: &[Step]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for s in steps {
            let ws: Vec<&Write> = match s {
                Step::One(w) => vec![w],
                Step::EitherOrder(a, b) => vec![a, b],
                Step::FirstPresent(alts) => alts.iter().take(1).collect(),
            };
            out.extend(ws.into_iter().map(|w| (w.file.clone(), w.value.clone())));
        }
        out
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1); // clamped rather than underflowing
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(500), 4950);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(swap_v2(Some(300), Some(100)).expect("ok"), Some(200));
        assert_eq!(swap_v2(None, Some(-1)).expect("ok"), Some(-1));
        assert_eq!(swap_v2(Some(-1), Some(100)).expect("ok"), Some(-1));
        assert_eq!(swap_v2(None, Some(100)).expect("ok"), None);
        assert!(swap_v2(Some(50), Some(100)).is_err());
        assert!(swap_v2(Some(50), None).is_err());
        assert_eq!(
            cpu_max(Some(50_000), Some(100_000)).as_deref(),
            Some("50000 100000")
        );
        assert_eq!(cpu_max(Some(-1), None).as_deref(), Some("max"));
        assert_eq!(cpu_max(None, Some(10_000)).as_deref(), Some("max 10000"));
        assert_eq!(cpu_max(None, None), None);
    }

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
        assert!(matches!(steps[0], Step::EitherOrder(..)));
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
                ("cpu.max", "max"),
                ("pids.max", "max")
            ])
        );
        let f1 = flat(&plan(&r, Layout::V1, &v1).expect("plan"));
        assert_eq!(
            f1,
            pairs(&[
                ("memory.limit_in_bytes", "-1"),
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
    fn device_rules_on_v1_and_skipped_on_v2() {
        let r = res(r#"{"devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "b", "major": 8, "access": "r"},
            {"allow": true, "type": "u", "major": 5, "minor": 0}
        ]}"#);
        let steps = plan(&r, Layout::V1, &v1).expect("plan");
        assert_eq!(
            flat(&steps),
            pairs(&[
                ("devices.deny", "a *:* rwm"),
                ("devices.allow", "c 1:3 rwm"),
                ("devices.allow", "b 8:* r"),
                ("devices.allow", "c 5:0 rwm"),
            ])
        );
        assert!(plan(&r, Layout::V2, &v2).expect("plan").is_empty());
    }

    #[test]
    fn blkio_v1_and_v2() {
        let r = res(r#"{"blockIO": {"weight": 500,
            "weightDevice": [{"major": 8, "minor": 0, "weight": 100}],
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
            "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 0}]}}"#);
        let s1 = plan(&r, Layout::V1, &v1).expect("plan");
        assert_eq!(
            flat(&s1),
            pairs(&[
                ("blkio.bfq.weight", "500"),
                ("blkio.bfq.weight_device", "8:0 100"),
                ("blkio.throttle.read_bps_device", "8:0 1048576"),
                ("blkio.throttle.write_iops_device", "8:0 0"),
            ])
        );
        let Step::FirstPresent(alts) = &s1[1] else {
            panic!("weight device alternatives")
        };
        assert_eq!(
            (alts[1].file.as_str(), alts[1].value.as_str()),
            ("blkio.weight_device", "8:0 100")
        );
        let s2 = plan(&r, Layout::V2, &v2).expect("plan");
        let Step::FirstPresent(alts) = &s2[0] else {
            panic!("weight alternatives")
        };
        assert_eq!(alts[1].value, "4950");
        assert_eq!(
            flat(&s2)[2..],
            pairs(&[("io.max", "8:0 rbps=1048576"), ("io.max", "8:0 wiops=max")])[..]
        );
    }

    #[test]
    fn unified_is_verbatim_on_v2_and_refused_on_v1() {
        let r = res(r#"{"unified": {"memory.high": "1G", "cgroup.max.depth": "3"}}"#);
        let f = flat(&plan(&r, Layout::V2, &|_| Some(Version::V2)).expect("plan"));
        assert_eq!(
            f,
            pairs(&[("cgroup.max.depth", "3"), ("memory.high", "1G")])
        );
        let e = plan(&r, Layout::V1, &v1).expect_err("v1");
        assert!(e.to_string().contains("\"cgroup.max.depth\""), "{e}");
        let e = plan(
            &res(r#"{"unified": {"memory.high": "1G"}}"#),
            Layout::Hybrid,
            &hybrid,
        )
        .expect_err("hybrid");
        assert!(
            e.to_string().contains("memory.high") && e.to_string().contains("v1 controller"),
            "{e}"
        );
        for key in ["../../etc/x", "nodot", ".hidden"] {
            let r = res(&format!(r#"{{"unified": {{"{key}": "1"}}}}"#));
            assert!(
                plan(&r, Layout::V2, &|_| Some(Version::V2)).is_err(),
                "{key}"
            );
        }
    }

    #[test]
    fn network_is_v1_only() {
        let r = res(
            r#"{"network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]}}"#,
        );
        let f = flat(&plan(&r, Layout::V1, &v1).expect("plan"));
        assert_eq!(
            f,
            pairs(&[
                ("net_cls.classid", "1048577"),
                ("net_prio.ifpriomap", "eth0 5")
            ])
        );
        assert!(plan(&r, Layout::V2, &v2).expect("plan").is_empty());
    }
}
