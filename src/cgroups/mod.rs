//! A container's cgroup on every hierarchy the host has (v1, v2, hybrid). Owned by the cgroups helper.
//! TEMPORARY stand-in until branch wip-cgroups is merged.
use serde::{Deserialize, Serialize};
#[derive(Debug, thiserror::Error)]
#[error("cgroup: {0}")]
pub struct CgroupError(String);
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cgroup { path: String }
impl Cgroup {
    pub fn resolve(p: Option<&str>, id: &str, _systemd: bool) -> Result<Cgroup, CgroupError> { Ok(Cgroup { path: p.map(String::from).unwrap_or(format!("/molt/{id}")) }) }
    pub fn create(&self) -> Result<(), CgroupError> { Ok(()) }
    pub fn apply(&self, _r: &oci_spec::runtime::LinuxResources) -> Result<(), CgroupError> { Ok(()) }
    pub fn add_process(&self, _pid: i32) -> Result<(), CgroupError> { Ok(()) }
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> { Ok(vec![]) }
    pub fn freeze(&self) -> Result<(), CgroupError> { Err(CgroupError("stub".into())) }
    pub fn thaw(&self) -> Result<(), CgroupError> { Err(CgroupError("stub".into())) }
    pub fn is_frozen(&self) -> Result<bool, CgroupError> { Ok(false) }
    pub fn signal_all(&self, _sig: i32) -> Result<(), CgroupError> { Ok(()) }
    pub fn destroy(&self) -> Result<(), CgroupError> { Ok(()) }
}
