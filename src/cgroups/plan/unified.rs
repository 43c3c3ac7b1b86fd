//! unified: cgroup v2 files named verbatim by the config, written last so they win.

use super::{write, Planner};
use crate::cgroups::error::CgroupError;
use crate::cgroups::mountinfo::Version;

pub(super) fn unified_key(p: &mut Planner, key: &str, value: &str) -> Result<(), CgroupError> {
    let err = |reason: String| CgroupError::Unified {
        key: key.to_string(),
        reason,
    };
    // The key is a file name in the container's own cgroup directory; nothing may lead out of it.
    let Some((controller, _)) = key.split_once('.') else {
        return Err(err(
            "not a cgroup v2 file name (expected <controller>.<file>)".to_string(),
        ));
    };
    if controller.is_empty() || key.contains('/') || key.contains('\0') {
        return Err(err(
            "not a cgroup v2 file name (expected <controller>.<file>)".to_string(),
        ));
    }
    match (p.version_of)(controller) {
        Some(Version::V2) => {}
        Some(Version::V1) => {
            return Err(err(format!(
                "unified keys are cgroup v2 files, but {controller} is a cgroup v1 controller on this host"
            )))
        }
        None => return Err(err(format!("no cgroup v2 hierarchy on this host provides {controller}"))),
    }
    p.one(write(controller, key, value, &format!("unified.{key}")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::plan;
    use crate::cgroups::mountinfo::Layout;
    use crate::cgroups::mountinfo::Version;

    #[test]
    fn unified_is_verbatim_on_v2_and_refused_on_v1() {
        let r = res(r#"{"unified": {"memory.high": "1G", "cgroup.max.depth": "3"}}"#);
        let f = flat(&plan(&r, Layout::V2, &|_| Some(Version::V2)).expect("plan"));
        assert_eq!(
            f,
            pairs(&[("cgroup.max.depth", "3"), ("memory.high", "1G")])
        );
        let e = plan(&r, Layout::V1, &v1).expect_err("v1");
        assert!(e.to_string().contains("\"cgroup.max.depth\""), "{e}");
        let e = plan(
            &res(r#"{"unified": {"memory.high": "1G"}}"#),
            Layout::Hybrid,
            &hybrid,
        )
        .expect_err("hybrid");
        assert!(
            e.to_string().contains("memory.high") && e.to_string().contains("v1 controller"),
            "{e}"
        );
        for key in ["../../etc/x", "nodot", ".hidden"] {
            let r = res(&format!(r#"{{"unified": {{"{key}": "1"}}}}"#));
            assert!(
                plan(&r, Layout::V2, &|_| Some(Version::V2)).is_err(),
                "{key}"
            );
        }
    }
}
