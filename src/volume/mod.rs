//! Volumes. TEMPORARY stand-in until branch wip-volume is merged.
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
#[derive(Debug, thiserror::Error)]
#[error("volume: {0}")]
pub struct VolumeError(String);
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeSpec { pub key: String, pub bind_options: Vec<String> }
pub fn from_mount(_m: &oci_spec::runtime::Mount) -> Result<Option<VolumeSpec>, VolumeError> { Ok(None) }
pub struct Registry { _dir: PathBuf }
impl Registry {
    pub fn new(root: &Path) -> Registry { Registry { _dir: root.join("volumes") } }
    pub fn acquire(&self, _s: &VolumeSpec, _u: &str) -> Result<PathBuf, VolumeError> { Err(VolumeError("stub".into())) }
    pub fn release(&self, _k: &str, _u: &str) -> Result<(), VolumeError> { Ok(()) }
    pub fn hand_over(&self, _k: &str, _f: &str, _t: &str) -> Result<(), VolumeError> { Ok(()) }
    pub fn add_user(&self, _k: &str, _u: &str) -> Result<PathBuf, VolumeError> { Err(VolumeError("stub".into())) }
    pub fn flush(&self, _k: &str) -> Result<(), VolumeError> { Ok(()) }
}
