//! cpu: shares or weight, the CFS quota and period (cpu.max on v2), burst, idle and the realtime
//! pair; and what `update` keeps of cpu.max.

use oci_spec::runtime::LinuxCpu;

use super::{set, when_absent, write, Absent, Planner, Step};
use crate::cgroups::error::CgroupError;
use crate::cgroups::mountinfo::Version;

/// cpu.shares (2..=262144) to cpu.weight (1..=10000), the linear map runc and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

pub(super) fn cpu(p: &mut Planner, c: &LinuxCpu) -> Result<(), CgroupError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1); // clamped rather than underflowing
        assert_eq!(cpu_max(50_000, 100_000).as_deref(), Some("50000 100000"));
        assert_eq!(cpu_max(-1, 0).as_deref(), Some("max 100000"));
        assert_eq!(cpu_max(0, 10_000).as_deref(), Some("max 10000"));
        assert_eq!(cpu_max(50_000, 0).as_deref(), Some("50000 100000"));
        assert_eq!(cpu_max(0, 0), None);
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
