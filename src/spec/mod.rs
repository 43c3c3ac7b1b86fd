//! The default config.json `molt spec` writes: runc's, so that bundles made for runc work as they are.

pub const DEFAULT_CONFIG: &str = include_str!("default-config.json");

/// The runtime-spec release molt implements (every Linux field 1.3.0 defines, intelRdt only as
/// "not supported"): `molt features`' ociVersionMax, `--version`'s "spec:" line and the state
/// hooks get. Configs of 1.x are all run; one newer than this gets a warning (see check_oci_version).
pub const OCI_VERSION: &str = "1.3.0";
/// The oldest release whose configs molt runs: `molt features`' ociVersionMin.
pub const OCI_VERSION_MIN: &str = "1.0.0";

pub mod process_attrs;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// The config lists a namespace of this type; with `created_only`, one molt creates (no path).
pub fn has_namespace(spec: &Spec, typ: LinuxNamespaceType, created_only: bool) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|list| list.iter().any(|n| n.typ() == typ && (!created_only || n.path().is_none())))
}

/// What `molt spec` writes: on a pure cgroup v2 host runc adds a cgroup namespace, and so do we.
pub fn default_config() -> String {
    let v2 = matches!(crate::cgroups::detect_layout(), Ok(crate::cgroups::Layout::V2));
    if !v2 {
        return DEFAULT_CONFIG.to_string();
    }
    let mount_ns = "{\n\t\t\t\t\"type\": \"mount\"\n\t\t\t}";
    DEFAULT_CONFIG.replacen(mount_ns, &format!("{mount_ns},\n\t\t\t{{\n\t\t\t\t\"type\": \"cgroup\"\n\t\t\t}}"), 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_mount_namespace_entry_is_where_v2_inserts_the_cgroup_one() {
        assert!(super::DEFAULT_CONFIG.contains("{\n\t\t\t\t\"type\": \"mount\"\n\t\t\t}"));
    }
}
