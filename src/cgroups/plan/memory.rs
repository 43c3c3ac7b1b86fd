//! memory: limit, reservation, swap (memory+swap on v1, swap alone on v2), swappiness and the
//! OOM killer; kernel memory limits are ignored with a warning.

use oci_spec::runtime::LinuxMemory;

use super::{bad_value, max_or, set, when_absent, write, Absent, Planner, Step, Write};
use crate::cgroups::error::CgroupError;
use crate::cgroups::mountinfo::Version;

/// swappiness as runc reads it: absent, or -1 sent through an unsigned field, means "not set".
pub(super) fn swappiness(m: &LinuxMemory) -> Option<u64> {
    m.swappiness().filter(|s| *s != u64::MAX)
}

pub(super) fn memory(p: &mut Planner, m: &LinuxMemory) -> Result<(), CgroupError> {
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
    let asked = Asked { limit, swap, reservation, swappiness: swappiness(m), oom_off };
    match p.version("memory", "memory")? {
        Version::V1 => memory_v1(p, asked),
        Version::V2 => memory_v2(p, asked)?,
    }
    Ok(())
}

/// The memory fields a config sets, "not set" read as runc reads it.
#[derive(Clone, Copy)]
struct Asked {
    limit: Option<i64>,
    swap: Option<i64>,
    reservation: Option<i64>,
    swappiness: Option<u64>,
    oom_off: bool,
}

fn w(file: &str, value: String, field: &str) -> Write {
    write("memory", file, value, field)
}

fn memory_v1(p: &mut Planner, Asked { limit, swap, reservation, swappiness, oom_off }: Asked) {
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
    if let Some(s) = swappiness {
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

fn memory_v2(p: &mut Planner, Asked { limit, swap, reservation, swappiness, oom_off }: Asked) -> Result<(), CgroupError> {
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
    if let Some(s) = swappiness {
        p.ignore("memory.swappiness", s, "cgroup v2 has no swappiness file");
    }
    if oom_off {
        p.ignore(
            "memory.disableOOMKiller",
            true,
            "cgroup v2 cannot disable the OOM killer",
        );
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::testing::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(swap_v2(Some(300), Some(100)).expect("ok"), Some(200));
        assert_eq!(swap_v2(None, Some(-1)).expect("ok"), Some(-1));
        assert_eq!(swap_v2(Some(-1), Some(100)).expect("ok"), Some(-1));
        assert_eq!(swap_v2(None, Some(100)).expect("ok"), None);
        assert!(swap_v2(Some(50), Some(100)).is_err());
        assert!(swap_v2(Some(50), None).is_err());
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
}
