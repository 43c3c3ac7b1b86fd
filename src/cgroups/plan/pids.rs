//! pids: the task limit.

use super::{max_or, write, Planner};
use crate::cgroups::error::CgroupError;
use crate::cgroups::mountinfo::Version;

/// runc 1.1.5: 0 is "not set"; v1 writes "max" for any negative, v2 "max" for -1 and the number
/// otherwise (the kernel refuses it, naming the file). runc 1.5 (runtime-spec 1.3) writes 0 as a
/// real limit instead; engines that send 0 today mean "unset", so molt keeps 1.1.5's reading.
pub(super) fn pids_limit(p: &mut Planner, limit: i64) -> Result<(), CgroupError> {
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
