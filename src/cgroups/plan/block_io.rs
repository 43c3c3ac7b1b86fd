//! blkio (v1) and io (v2): weights, per-device weights, leaf weights and throttles.

use oci_spec::runtime::LinuxBlockIo;

use super::{set, when_absent, write, Absent, Planner, Step, Write};
use crate::cgroups::error::CgroupError;
use crate::cgroups::mountinfo::Version;

/// blkio.weight (10..=1000) to io.weight (1..=10000), as runc's ConvertBlkIOToIOWeightValue.
pub fn blkio_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

pub(super) fn block_io(p: &mut Planner, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    if !asks_for_any(b) {
        return Ok(());
    }
    // The same knobs under both names: v1 "blkio", v2 "io".
    let v = match ((p.version_of)("blkio"), (p.version_of)("io")) {
        (Some(Version::V1), _) => Version::V1,
        (_, Some(Version::V2)) => Version::V2,
        _ => p.version("io", "blockIO").map(|_| Version::V2)?,
    };
    weights(p, v, b);
    throttles(p, v, b);
    Ok(())
}

/// Weights of 0 (the default weight, per-device weights and leaf weights) are "not set", as in
/// runc. A throttle rate of 0 is a real value: it removes that device's limit.
fn asks_for_any(b: &LinuxBlockIo) -> bool {
    let devices = b.weight_device().as_deref().unwrap_or_default();
    set(b.weight()).is_some()
        || set(b.leaf_weight()).is_some()
        || devices.iter().any(|d| set(d.weight()).is_some() || set(d.leaf_weight()).is_some())
        || [
            b.throttle_read_bps_device(),
            b.throttle_write_bps_device(),
            b.throttle_read_iops_device(),
            b.throttle_write_iops_device(),
        ]
        .iter()
        .any(|t| t.as_ref().is_some_and(|v| !v.is_empty()))
}

fn w(v: Version, file: &str, value: String, field: &str) -> Write {
    write(if v == Version::V1 { "blkio" } else { "io" }, file, value, field)
}

fn weights(p: &mut Planner, v: Version, b: &LinuxBlockIo) {
    if let Some(wt) = set(b.weight()) {
        weight(p, v, "", wt, "blockIO.weight");
    }
    // Leaf weights died with CFQ (kernel 5.0); BFQ has no such file, and v2 never had one.
    let leaf = |p: &mut Planner, file: &str, value: String, field: &str| match v {
        Version::V1 => p.one(when_absent(w(v, file, value, field), Absent::Warn)),
        Version::V2 => p.ignore(field, value, "cgroup v2 has no leaf weights"),
    };
    for d in b.weight_device().as_deref().unwrap_or_default() {
        let dev = format!("{}:{}", d.major(), d.minor());
        if let Some(wt) = set(d.weight()) {
            weight(p, v, &dev, wt, "blockIO.weightDevice");
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
    if let Some(lw) = set(b.leaf_weight()) {
        leaf(p, "blkio.leaf_weight", lw.to_string(), "blockIO.leafWeight");
    }
}

/// BFQ (the only weight-aware scheduler left in current kernels) names the file *.bfq.weight
/// and keeps the v1 1..1000 scale on v2; io.weight (1..10000) serves io.cost.
/// `dev` is "" for the default weight, "maj:min" for a per-device one; v1 keeps per-device
/// weights in a separate *_device file, v2 in the same file.
fn weight(p: &mut Planner, v: Version, dev: &str, weight: u16, field: &str) {
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
                v,
                &format!("blkio.bfq.weight{sfx}"),
                val(weight.to_string()),
                field,
            ),
            w(
                v,
                &format!("blkio.weight{sfx}"),
                val(weight.to_string()),
                field,
            ),
        ],
        Version::V2 => vec![
            w(v, "io.bfq.weight", val(weight.to_string()), field),
            w(
                v,
                "io.weight",
                val(blkio_to_io_weight(weight).to_string()),
                field,
            ),
        ],
    };
    p.steps.push(Step::FirstPresent(alts));
}

fn throttles(p: &mut Planner, v: Version, b: &LinuxBlockIo) {
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
                    v,
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
                    w(v, "io.max", format!("{dev} {v2_key}={rate}"), field)
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::testing::*;
    use super::super::plan;
    use crate::cgroups::mountinfo::Layout;
    use super::super::Step;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(500), 4950);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
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
}
