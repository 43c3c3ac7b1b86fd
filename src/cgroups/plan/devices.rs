//! devices: the v1 allow/deny rules, or on v2 the eBPF device filter's step.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::{bad_value, write, Planner, Step};
use crate::cgroups::error::CgroupError;
use crate::cgroups::mountinfo::Version;

pub(super) fn devices(p: &mut Planner, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    // v1's devices controller takes rules as files; on v2 device access is an eBPF program
    // attached to the cgroup (crate::cgroups::device_filter), as runc and crun load it.
    if rules.is_empty() {
        return Ok(());
    }
    if (p.version_of)("devices") != Some(Version::V1) {
        if (p.version_of)("cgroup") == Some(Version::V2) {
            // Checked here, so a bad rule fails the plan before anything is written.
            crate::cgroups::device_filter::Filter::from_rules(rules)?;
            p.steps.push(Step::DeviceFilter(rules.to_vec()));
        } else {
            p.ignore(
                "devices",
                format!("{} rules", rules.len()),
                "neither a cgroup v1 devices controller nor a cgroup v2 hierarchy here; only the device nodes the config lists exist in the container",
            );
        }
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::plan;
    use crate::cgroups::mountinfo::Layout;

    #[test]
    fn device_rules_on_v1_and_an_ebpf_filter_on_v2() {
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
        // On v2 one step: the eBPF filter of the same rules, no file.
        let steps = plan(&r, Layout::V2, &v2).expect("plan");
        assert!(flat(&steps).is_empty());
        assert!(ignored(&steps).is_empty(), "{steps:?}");
        assert!(matches!(&steps[..], [super::super::Step::DeviceFilter(rules)] if rules.len() == 4), "{steps:?}");
    }
}
