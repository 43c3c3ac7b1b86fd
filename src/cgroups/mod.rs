//! A container's cgroup on every hierarchy the host has (v1, v2 or hybrid): where it lives,
//! creating and removing it, applying OCI resource limits, and acting on its processes
//! (list, freeze, signal). Everything the rest of molt knows about cgroups goes through `Cgroup`.

mod error;
#[allow(dead_code)] // used by the Cgroup operations that follow
mod fsio;
mod mountinfo;
mod path;
#[allow(dead_code)] // driven by Cgroup::apply, which follows
mod plan;

pub use error::CgroupError;
pub use mountinfo::{parse_mountinfo, parse_proc_cgroup, read_mounts, Layout, Membership, Mount, Version};
pub use path::DEFAULT_PARENT;

/// The host's cgroup layout, from /proc/self/mountinfo.
pub fn detect_layout() -> Result<Layout, CgroupError> {
    mountinfo::layout_of(&read_mounts()?)
}
