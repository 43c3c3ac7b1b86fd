//! The default config.json `molt spec` writes: runc's, so that bundles made for runc work as they are.

pub const DEFAULT_CONFIG: &str = include_str!("default-config.json");
