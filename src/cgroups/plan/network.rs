//! net_cls and net_prio: cgroup v1 only (v2 leaves the network to eBPF), ignored with a warning
//! on a pure v2 host as runc does.

use super::{set, write, Planner};
use crate::cgroups::error::CgroupError;
use crate::cgroups::mountinfo::Layout;

pub(super) fn network(
    p: &mut Planner,
    n: &oci_spec::runtime::LinuxNetwork,
    layout: Layout,
) -> Result<(), CgroupError> {
    // classID 0 is "not set" (runc's NetClsClassid zero value); priorities are written as given.
    let class_id = set(n.class_id());
    let prios = n.priorities().as_deref().unwrap_or_default();
    // net_cls/net_prio have no cgroup v2 form (v2 leaves this to eBPF); runc ignores them there.
    if layout == Layout::V2 {
        if let Some(id) = class_id {
            p.ignore("network.classID", id, "cgroup v2 has no net_cls controller");
        }
        if !prios.is_empty() {
            p.ignore(
                "network.priorities",
                format!("{} entries", prios.len()),
                "cgroup v2 has no net_prio controller",
            );
        }
        return Ok(());
    }
    if let Some(id) = class_id {
        p.version("net_cls", "network.classID")?;
        p.one(write("net_cls", "net_cls.classid", id, "network.classID"));
    }
    for prio in prios {
        p.version("net_prio", "network.priorities")?;
        let value = format!("{} {}", prio.name(), prio.priority());
        p.one(write(
            "net_prio",
            "net_prio.ifpriomap",
            value,
            "network.priorities",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::plan;
    use crate::cgroups::mountinfo::Layout;

    #[test]
    fn network_is_v1_only() {
        let r = res(
            r#"{"network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]}}"#,
        );
        let f = flat(&plan(&r, Layout::V1, &v1).expect("plan"));
        assert_eq!(
            f,
            pairs(&[
                ("net_cls.classid", "1048577"),
                ("net_prio.ifpriomap", "eth0 5")
            ])
        );
        let steps = plan(&r, Layout::V2, &v2).expect("plan");
        assert!(flat(&steps).is_empty(), "{steps:?}");
        assert_eq!(ignored(&steps).len(), 2, "{steps:?}");
    }
}
