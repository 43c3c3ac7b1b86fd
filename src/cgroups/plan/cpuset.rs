//! cpuset: the cpus and memory nodes, the same files on v1 and v2.

use oci_spec::runtime::LinuxCpu;

use super::{write, Planner};
use crate::cgroups::error::CgroupError;

pub(super) fn cpuset(p: &mut Planner, c: &LinuxCpu) -> Result<(), CgroupError> {
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
