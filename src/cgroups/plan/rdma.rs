//! rdma: HCA handle and object limits per device, in device order.

use std::collections::{BTreeMap, HashMap};

use oci_spec::runtime::LinuxRdma;

use super::{write, Planner};
use crate::cgroups::error::CgroupError;

pub(super) fn rdma(p: &mut Planner, limits: &HashMap<String, LinuxRdma>) -> Result<(), CgroupError> {
    let rdma: BTreeMap<_, _> = limits.iter().collect();
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
    Ok(())
}
