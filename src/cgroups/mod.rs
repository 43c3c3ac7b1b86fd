//! A container's cgroup on every hierarchy the host has (v1, v2, hybrid). Owned by the cgroups helper.
