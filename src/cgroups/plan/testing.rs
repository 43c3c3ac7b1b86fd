//! What the controllers' unit tests share: configs from JSON, the cgroup layouts of v1, v2 and
//! this hybrid host, and plans flattened to (file, value) in write order.

use oci_spec::runtime::LinuxResources;

use super::{plan, Step, Write};
use crate::cgroups::mountinfo::{Layout, Version};

/// What dockerd 20.10 sends for a plain `docker run`, and zeros for every other numeric field.
pub const DOCKER_ZEROS: &str = r#"{
    "memory": {"limit": 0, "reservation": 0, "swap": 0, "kernel": 0, "kernelTCP": 0,
               "disableOOMKiller": false},
    "cpu": {"shares": 0, "quota": 0, "period": 0, "realtimeRuntime": 0, "realtimePeriod": 0,
            "cpus": "", "mems": ""},
    "pids": {"limit": 0},
    "blockIO": {"weight": 0, "leafWeight": 0,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 0, "leafWeight": 0}]},
    "network": {"classID": 0},
    "hugepageLimits": [],
    "unified": {}
}"#;

pub fn res(json: &str) -> LinuxResources {
    serde_json::from_str(json).expect("fixture json")
}

pub fn v1(_: &str) -> Option<Version> {
    Some(Version::V1)
}

pub fn v2(c: &str) -> Option<Version> {
    (c != "blkio" && c != "net_cls" && c != "net_prio").then_some(Version::V2)
}

/// This host: everything v1 except hugetlb, which only the unified tree offers.
pub fn hybrid(c: &str) -> Option<Version> {
    match c {
        "hugetlb" | "cgroup" => Some(Version::V2),
        "io" | "rdma" => None,
        _ => Some(Version::V1),
    }
}

pub fn flat(steps: &[Step]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in steps {
        let ws: Vec<&Write> = match s {
            Step::One(w) => vec![w],
            Step::EitherOrder(a, b) => vec![a, b],
            Step::FirstPresent(alts) => alts.iter().take(1).collect(),
            Step::Ignored(_) | Step::DeviceFilter(_) => vec![],
        };
        out.extend(ws.into_iter().map(|w| (w.file.clone(), w.value.clone())));
    }
    out
}

/// (file, value) in write order.
pub type Files = Vec<(String, String)>;

/// flat(plan) of `json` on a v1 host and on a v2 host.
pub fn on_v1_and_v2(json: &str) -> (Files, Files) {
    let r = res(json);
    (
        flat(&plan(&r, Layout::V1, &v1).expect(json)),
        flat(&plan(&r, Layout::V2, &v2).expect(json)),
    )
}

pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

pub fn no_controllers(_: &str) -> Option<Version> {
    None
}

pub fn ignored(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Ignored(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}
