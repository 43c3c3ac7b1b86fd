//! hugetlb: one limit per huge page size.

use oci_spec::runtime::LinuxHugepageLimit;

use super::{bad_value, write, Planner};
use crate::cgroups::error::CgroupError;
use crate::cgroups::mountinfo::Version;

pub(super) fn hugetlb(p: &mut Planner, limits: &[LinuxHugepageLimit]) -> Result<(), CgroupError> {
    // A limit of 0 is written: it means "no huge pages", as in runc.
    for h in limits {
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
    Ok(())
}
