//! Container network identity. TEMPORARY stand-in until branch wip-net is merged.
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
#[derive(Debug, thiserror::Error)]
#[error("net: {0}")]
pub struct NetError(String);
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetSpec { pub bridge: String }
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment { pub host_veth: String, pub bridge: String, pub container_if: String }
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkIdentity { pub name: String }
pub fn spec_from_annotations(_a: &HashMap<String, String>) -> Result<Option<NetSpec>, NetError> { Ok(None) }
pub fn attach(_s: &NetSpec, _id: &str, _ns: &Path) -> Result<Attachment, NetError> { Err(NetError("stub".into())) }
pub fn detach(_a: &Attachment) -> Result<(), NetError> { Ok(()) }
pub fn snapshot(_ns: &Path) -> Result<Vec<LinkIdentity>, NetError> { Ok(vec![]) }
pub fn move_links(_f: &Path, _t: &Path, _l: &[LinkIdentity]) -> Result<(), NetError> { Ok(()) }
pub fn move_host_device(_n: &str, _nn: Option<&str>, _ns: &Path) -> Result<(), NetError> { Err(NetError("stub".into())) }
pub fn set_lo_up(_ns: &Path) -> Result<(), NetError> { Ok(()) }
