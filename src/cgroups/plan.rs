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
        memory(&mut p, m)?;
    }
    if let Some(c) = r.cpu() {
        cpu(&mut p, c)?;
    }
    if let Some(pids) = r.pids() {
        pids_limit(&mut p, pids.limit())?;
    }
    if let Some(b) = r.block_io() {
        block_io(&mut p, b)?;
    }
    // A limit of 0 is written: it means "no huge pages", as in runc.
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
        network(&mut p, n, layout)?;
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

/// runc 1.1.5: 0 is "not set"; v1 writes "max" for any negative, v2 "max" for -1 and the number
/// otherwise (the kernel refuses it, naming the file). runc 1.5 (runtime-spec 1.3) writes 0 as a
/// real limit instead; engines that send 0 today mean "unset", so molt keeps 1.1.5's reading.
fn pids_limit(p: &mut Planner, limit: i64) -> Result<(), CgroupError> {
    if limit == 0 {
        return Ok(());
    }
    let value = match p.version("pids", "pids.limit")? {
        _ if limit > 0 => limit.to_string(),
        Version::V1 => "max".to_string(),
        Version::V2 => max_or(limit),
    };
    p.one(write("pids", "pids.max", value, "pids.limit"));
    Ok(())
}

fn network(
    p: &mut Planner,
    n: &oci_spec::runtime::LinuxNetwork,
    layout: Layout,
) -> Result<(), CgroupError> {
    // classID 0 is "not set" (runc's NetClsClassid zero value); priorities are written as given.
    let class_id = set(n.class_id());
    let prios = n.priorities().as_deref().unwrap_or_default();
    // net_cls/net_prio have no cgroup v2 form (v2 leaves this to eBPF); runc ignores them there.
    if layout == Layout::V2 {
        if let Some(id) = class_id {
            p.ignore("network.classID", id, "cgroup v2 has no net_cls controller");
        }
        if !prios.is_empty() {
            p.ignore(
                "network.priorities",
                format!("{} entries", prios.len()),
                "cgroup v2 has no net_prio controller",
            );
        }
        return Ok(());
    }
    if let Some(id) = class_id {
        p.version("net_cls", "network.classID")?;
        p.one(write("net_cls", "net_cls.classid", id, "network.classID"));
    }
    for prio in prios {
        p.version("net_prio", "network.priorities")?;
        let value = format!("{} {}", prio.name(), prio.priority());
        p.one(write(
            "net_prio",
            "net_prio.ifpriomap",
            value,
            "network.priorities",
        ));
    }
    Ok(())
}

/// swappiness as runc reads it: absent, or -1 sent through an unsigned field, means "not set".
fn swappiness(m: &LinuxMemory) -> Option<u64> {
    m.swappiness().filter(|s| *s != u64::MAX)
}

fn memory(p: &mut Planner, m: &LinuxMemory) -> Result<(), CgroupError> {
    // kernel and kernelTCP are not applied: the kmem limits were deprecated and then removed
    // from the kernel (5.16 / 6.x), and runc and crun ignore them too (runc with a warning).
    for (field, v) in [
        ("memory.kernel", m.kernel()),
        ("memory.kernelTCP", m.kernel_tcp()),
    ] {
        if let Some(v) = set(v) {
            p.ignore(
                field,
                v,
                "kernel memory limits are not supported (removed from Linux)",
            );
        }
    }
    let (limit, swap, reservation) = (set(m.limit()), set(m.swap()), set(m.reservation()));
    // disableOOMKiller false is the default, never written (docker always sends it).
    let oom_off = m.disable_oom_killer() == Some(true);
    if limit.is_none()
        && swap.is_none()
        && reservation.is_none()
        && swappiness(m).is_none()
        && !oom_off
    {
        return Ok(());
    }
    if let Some(s) = swappiness(m) {
        if s > 100 {
            return Err(bad_value("memory.swappiness", s, "must be 0..=100"));
        }
    }
    for (field, v) in [
        ("memory.limit", limit),
        ("memory.reservation", reservation),
        ("memory.swap", swap),
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
            let lim = limit.map(|l| w("memory.limit_in_bytes", l.to_string(), "memory.limit"));
            // Unlimited memory with swap unset: swap unlimited too, as runc does. Without swap
            // accounting there is no memsw file; "unlimited" then already holds.
            let swap = match (limit, swap) {
                (Some(-1), None) => Some(-1),
                (_, s) => s,
            };
            let sw = swap.map(|s| {
                let sw = w("memory.memsw.limit_in_bytes", s.to_string(), "memory.swap");
                if s == -1 {
                    when_absent(sw, Absent::Skip)
                } else {
                    sw
                }
            });
            match (lim, sw) {
                (Some(l), Some(s)) => p.steps.push(Step::EitherOrder(l, s)),
                (l, s) => l.into_iter().chain(s).for_each(|x| p.one(x)),
            }
            if let Some(r) = reservation {
                p.one(w(
                    "memory.soft_limit_in_bytes",
                    r.to_string(),
                    "memory.reservation",
                ));
            }
            // 0 is a real swappiness (avoid swapping), written as runc does.
            if let Some(s) = swappiness(m) {
                p.one(w("memory.swappiness", s.to_string(), "memory.swappiness"));
            }
            if oom_off {
                p.one(w(
                    "memory.oom_control",
                    "1".to_string(),
                    "memory.disableOOMKiller",
                ));
            }
        }
        Version::V2 => {
            if let Some(l) = limit {
                p.one(w("memory.max", max_or(l), "memory.limit"));
            }
            if let Some(s) = swap_v2(swap, limit)? {
                let value = max_or(s);
                let sw = w("memory.swap.max", value.clone(), "memory.swap");
                // No swap accounting: "no swap limit" and "no swap" need no file (runc does the same).
                p.one(if value == "max" || value == "0" {
                    when_absent(sw, Absent::Skip)
                } else {
                    sw
                });
            }
            if let Some(r) = reservation {
                p.one(w("memory.low", max_or(r), "memory.reservation"));
            }
            // swappiness and disableOOMKiller have no v2 file (memory.oom.group is a different
            // policy). runc and crun ignore them silently; molt says so.
            if let Some(s) = swappiness(m) {
                p.ignore("memory.swappiness", s, "cgroup v2 has no swappiness file");
            }
            if oom_off {
                p.ignore(
                    "memory.disableOOMKiller",
                    true,
                    "cgroup v2 cannot disable the OOM killer",
                );
            }
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
/// Mirrors runc's ConvertMemorySwapToCgroupV2Value, where 0 (or absent) is "not set".
pub fn swap_v2(swap: Option<i64>, limit: Option<i64>) -> Result<Option<i64>, CgroupError> {
    let (swap, limit) = (set(swap), set(limit));
    let err = |reason: &str| bad_value("memory.swap", swap.unwrap_or_default(), reason);
    match (swap, limit) {
        (None, Some(-1)) => Ok(Some(-1)), // unlimited memory without a swap value: swap unlimited too
        (None, _) => Ok(None),
        (Some(-1), _) => Ok(Some(-1)),
        (Some(_), None | Some(-1)) => Err(err("a swap limit needs a memory limit")),
        (Some(s), Some(l)) if s < l => {
            Err(err(&format!("memory+swap must be >= the memory limit {l}")))
        }
        // swap == limit gives 0: no swap at all.
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
    // shares, quota, period and the realtime pair: 0 is "not set". burst and idle are
    // pointers in runc too (since 1.2): any value given is written, 0 included.
    let (shares, quota, period) = (set(c.shares()), set(c.quota()), set(c.period()));
    let (rt_runtime, rt_period) = (set(c.realtime_runtime()), set(c.realtime_period()));
    let uses_cpu = shares.is_some()
        || quota.is_some()
        || period.is_some()
        || c.burst().is_some()
        || c.idle().is_some()
        || rt_runtime.is_some()
        || rt_period.is_some();
    if uses_cpu {
        match p.version("cpu", "cpu")? {
            Version::V1 => {
                if let Some(s) = shares {
                    p.one(w("cpu.shares", s.to_string(), "cpu.shares"));
                }
                let period = period.map(|v| w("cpu.cfs_period_us", v.to_string(), "cpu.period"));
                let quota = quota.map(|v| w("cpu.cfs_quota_us", v.to_string(), "cpu.quota"));
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
                // Realtime files exist only with CONFIG_RT_GROUP_SCHED (runc then fails with
                // ENOENT; molt goes on and warns). Period before runtime, as the kernel checks
                // runtime against the period.
                if let Some(v) = rt_period {
                    p.one(when_absent(
                        w("cpu.rt_period_us", v.to_string(), "cpu.realtimePeriod"),
                        Absent::Warn,
                    ));
                }
                if let Some(v) = rt_runtime {
                    p.one(when_absent(
                        w("cpu.rt_runtime_us", v.to_string(), "cpu.realtimeRuntime"),
                        Absent::Warn,
                    ));
                }
            }
            Version::V2 => {
                if let Some(s) = shares {
                    p.one(w(
                        "cpu.weight",
                        shares_to_weight(s).to_string(),
                        "cpu.shares",
                    ));
                }
                if let Some(v) = cpu_max(quota.unwrap_or(0), period.unwrap_or(0)) {
                    p.one(w("cpu.max", v, "cpu.quota"));
                }
                if let Some(b) = c.burst() {
                    p.one(w("cpu.max.burst", b.to_string(), "cpu.burst"));
                }
                if let Some(i) = c.idle() {
                    p.one(w("cpu.idle", i.to_string(), "cpu.idle"));
                }
                // cgroup v2 has no realtime group scheduling.
                for (field, v) in [
                    ("cpu.realtimePeriod", rt_period.map(|v| v.to_string())),
                    ("cpu.realtimeRuntime", rt_runtime.map(|v| v.to_string())),
                ] {
                    if let Some(v) = v {
                        p.ignore(field, v, "cgroup v2 has no realtime group scheduling");
                    }
                }
            }
        }
    }
    // An empty string is "not set" (the parent's cpus and mems stay).
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

/// cpu.max ("$QUOTA $PERIOD") as runc's fs2 writes it, 0 meaning "not set" for both: nothing
/// when neither is set; "max" for no quota (0 or negative); the period defaults to the kernel's
/// 100000 because the file cannot take a quota without a period.
pub fn cpu_max(quota: i64, period: u64) -> Option<String> {
    if quota == 0 && period == 0 {
        return None;
    }
    let q = if quota > 0 {
        quota.to_string()
    } else {
        "max".to_string()
    };
    let per = if period == 0 { 100_000 } else { period };
    Some(format!("{q} {per}"))
}

fn block_io(p: &mut Planner, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    // Weights of 0 (the default weight, per-device weights and leaf weights) are "not set", as in
    // runc. A throttle rate of 0 is a real value: it removes that device's limit.
    let (weight, leaf_weight) = (set(b.weight()), set(b.leaf_weight()));
    let devices = b.weight_device().as_deref().unwrap_or_default();
    let dev_set = |d: &&oci_spec::runtime::LinuxWeightDevice| {
        set(d.weight()).is_some() || set(d.leaf_weight()).is_some()
    };
    let used = weight.is_some()
        || leaf_weight.is_some()
        || devices.iter().any(|d| dev_set(&d))
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
    let weight_step = |p: &mut Planner, dev: &str, weight: u16, field: &str| {
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
    if let Some(wt) = weight {
        weight_step(p, "", wt, "blockIO.weight");
    }
    // Leaf weights died with CFQ (kernel 5.0); BFQ has no such file, and v2 never had one.
    let leaf = |p: &mut Planner, file: &str, value: String, field: &str| match v {
        Version::V1 => p.one(when_absent(w(file, value, field), Absent::Warn)),
        Version::V2 => p.ignore(field, value, "cgroup v2 has no leaf weights"),
    };
    for d in devices {
        let dev = format!("{}:{}", d.major(), d.minor());
        if let Some(wt) = set(d.weight()) {
            weight_step(p, &dev, wt, "blockIO.weightDevice");
        }
        if let Some(lw) = set(d.leaf_weight()) {
            leaf(
                p,
                "blkio.leaf_weight_device",
                format!("{dev} {lw}"),
                "blockIO.weightDevice.leafWeight",
            );
        }
    }
    if let Some(lw) = leaf_weight {
        leaf(p, "blkio.leaf_weight", lw.to_string(), "blockIO.leafWeight");
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
        drop(swappiness(m).is_some(), "memory.swappiness");
        m.set_swappiness(None);
        drop(
            m.disable_oom_killer() == Some(true),
            "memory.disableOOMKiller",
        );
        m.set_disable_oom_killer(None);
    }
    (out, ignored)
}

/// `update` with only one of cpu quota and period on cgroup v2: cpu.max holds both, so the
/// other keeps its current value (runc keeps it from its saved config). `current` is cpu.max as
/// read ("max 100000", "50000 100000"); returns the (quota, period) to plan with.
pub fn keep_cpu_max(quota: i64, period: u64, current: &str) -> Option<(i64, u64)> {
    let mut it = current.split_whitespace();
    let cur_quota = match it.next()? {
        "max" => -1,
        q => q.parse().ok()?,
    };
    let cur_period: u64 = it.next()?.parse().ok()?;
    Some((
        if quota == 0 { cur_quota } else { quota },
        if period == 0 { cur_period } else { period },
    ))
}

fn devices(p: &mut Planner, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    // Only the v1 devices controller takes rules as files. On v2 device access is an eBPF
    // program attached to the cgroup, which molt does not load yet: the rules are not applied
    // there (nor on a v1 host without the devices hierarchy), and the warning says so. The
    // container still gets only the device nodes its config lists, since molt's rootfs creates
    // only those.
    if rules.is_empty() {
        return Ok(());
    }
    if (p.version_of)("devices") != Some(Version::V1) {
        p.ignore(
            "devices",
            format!("{} rules", rules.len()),
            "no cgroup v1 devices controller here, and molt does not load cgroup v2's eBPF device filter; only the device nodes the config lists exist in the container",
        );
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

/// What dockerd 20.10 sends for a plain `docker run`, and zeros for every other numeric field.
#[cfg(test)]
pub(super) const DOCKER_ZEROS: &str = r#"{
    "memory": {"limit": 0, "reservation": 0, "swap": 0, "kernel": 0, "kernelTCP": 0,
               "disableOOMKiller": false},
    "cpu": {"shares": 0, "quota": 0, "period": 0, "realtimeRuntime": 0, "realtimePeriod": 0,
            "cpus": "", "mems": ""},
    "pids": {"limit": 0},
    "blockIO": {"weight": 0, "leafWeight": 0,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 0, "leafWeight": 0}]},
    "network": {"classID": 0},
    "hugepageLimits": [],
    "unified": {}
}"#;

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
                Step::Ignored(_) => vec![],
            };
            out.extend(ws.into_iter().map(|w| (w.file.clone(), w.value.clone())));
        }
        out
    }

    /// (file, value) in write order.
    type Files = Vec<(String, String)>;

    /// flat(plan) of `json` on a v1 host and on a v2 host.
    fn on_v1_and_v2(json: &str) -> (Files, Files) {
        let r = res(json);
        (
            flat(&plan(&r, Layout::V1, &v1).expect(json)),
            flat(&plan(&r, Layout::V2, &v2).expect(json)),
        )
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
        assert_eq!(cpu_max(50_000, 100_000).as_deref(), Some("50000 100000"));
        assert_eq!(cpu_max(-1, 0).as_deref(), Some("max 100000"));
        assert_eq!(cpu_max(0, 10_000).as_deref(), Some("max 10000"));
        assert_eq!(cpu_max(50_000, 0).as_deref(), Some("50000 100000"));
        assert_eq!(cpu_max(0, 0), None);
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
    fn device_rules_on_v1_and_a_warning_on_v2() {
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
        // Not applied on v2, and said so: no silent pretence.
        let steps = plan(&r, Layout::V2, &v2).expect("plan");
        assert!(flat(&steps).is_empty());
        assert_eq!(ignored(&steps).len(), 1, "{steps:?}");
        assert!(ignored(&steps)[0].contains("linux.resources.devices = 4 rules ignored"), "{steps:?}");
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
        let steps = plan(&r, Layout::V2, &v2).expect("plan");
        assert!(flat(&steps).is_empty(), "{steps:?}");
        assert_eq!(ignored(&steps).len(), 2, "{steps:?}");
    }

    fn no_controllers(_: &str) -> Option<Version> {
        None
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

    #[test]
    fn swap_zero_is_unset_next_to_a_limit() {
        assert_eq!(swap_v2(Some(0), Some(100)).expect("ok"), None);
        assert_eq!(swap_v2(Some(0), Some(-1)).expect("ok"), Some(-1));
        assert_eq!(swap_v2(Some(100), Some(100)).expect("ok"), Some(0));
        assert!(swap_v2(Some(100), Some(0)).is_err(), "limit 0 is no limit");
        assert_eq!(
            on_v1_and_v2(r#"{"memory": {"limit": 4096, "swap": 0}}"#),
            (
                pairs(&[("memory.limit_in_bytes", "4096")]),
                pairs(&[("memory.max", "4096")])
            )
        );
    }

    fn ignored(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Ignored(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
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

    #[test]
    fn update_of_one_half_of_cpu_max_keeps_the_other() {
        assert_eq!(
            keep_cpu_max(0, 200_000, "50000 100000"),
            Some((50_000, 200_000))
        );
        assert_eq!(
            keep_cpu_max(20_000, 0, "max 100000"),
            Some((20_000, 100_000))
        );
        assert_eq!(keep_cpu_max(0, 50_000, "max 100000"), Some((-1, 50_000)));
        assert_eq!(keep_cpu_max(0, 1, "garbage"), None);
        assert_eq!(keep_cpu_max(0, 1, "max"), None);
    }
}
