//! molt: a Linux OCI container runtime that can upgrade a running container in place.
//! The library holds everything; `src/main.rs` only hands the command line to `cli`.

pub mod cgroups;
pub mod net;
pub mod volume;
