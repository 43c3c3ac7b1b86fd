//! The default config.json `molt spec` writes: runc's, so that bundles made for runc work as they are.

pub const DEFAULT_CONFIG: &str = include_str!("default-config.json");

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// The config lists a namespace of this type; with `created_only`, one molt creates (no path).
pub fn has_namespace(spec: &Spec, typ: LinuxNamespaceType, created_only: bool) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|list| list.iter().any(|n| n.typ() == typ && (!created_only || n.path().is_none())))
}
