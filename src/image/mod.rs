//! OCI images as the new application of an upgrade: a reference (`oci:DIR[:TAG]`,
//! `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:NAME:TAG]`) is resolved to one manifest for
//! this host's platform, every blob is verified against its descriptor, and the layers are
//! unpacked into a runnable bundle. `layout` reads and verifies (`docker` first makes a layout
//! of a `docker save` archive), `apply` unpacks layers, `config` makes the runtime config,
//! `store` keeps unpacked images under `<root>/images/` shared by the containers that use them.

pub mod apply;
pub mod config;
pub mod docker;
pub mod layout;
pub mod store;

use std::path::PathBuf;

pub use layout::{Image, Reference};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image reference {0:?}: use oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG]")]
    BadReference(String),
    #[error("image {reference}: {path}: {reason}")]
    Io { reference: String, path: PathBuf, reason: String },
    #[error("image {reference}: {what} {path}: {reason}")]
    Json { reference: String, what: &'static str, path: PathBuf, reason: String },
    #[error("image {reference}: blob {digest} ({what}): {reason}")]
    Blob { reference: String, digest: String, what: String, reason: String },
    #[error("image {reference}: {reason}")]
    Select { reference: String, reason: String },
    #[error("image {reference}: layer {digest}: entry {entry:?}: {reason}")]
    Entry { reference: String, digest: String, entry: String, reason: String },
    #[error("image {reference}: config {digest}: {reason}")]
    Config { reference: String, digest: String, reason: String },
}

pub type Result<T> = std::result::Result<T, ImageError>;
