//! molt: a Linux OCI container runtime that can upgrade a running container in place.
//! The library holds everything; `src/main.rs` only hands the command line to `cli`.

pub mod bundle;
pub mod cgroups;
pub mod checkpoint;
pub mod cli;
pub mod container;
pub mod fault;
pub mod fuzzing;
pub mod hooks;
pub mod image;
pub mod init;
pub mod listen;
pub mod kernel;
pub mod logging;
pub mod mount_api;
pub mod mount_options;
pub mod mount_target;
pub mod namespaces;
pub mod net;
pub mod procfs;
pub mod safe_path;
pub mod seccomp_support;
pub mod spec;
pub mod table;
pub mod upgrade;
pub mod volume;
