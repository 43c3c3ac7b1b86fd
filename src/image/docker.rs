//! `docker save` archives (`docker-archive:FILE[:NAME:TAG]`) turned into an OCI image layout in
//! the archive's scratch directory, so the rest is the layout path with its checks: manifest.json
//! names each image's config and layer tars; the config's file name carries its sha256 and each
//! layer's sha256 must be the config's `rootfs.diff_ids` entry, checked here before any blob is
//! written; the manifest and index.json are made here, tagged with the image's RepoTags.

use std::fs;
use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::layout::sha256_file;
use super::{ImageError, Result};

const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// One entry of manifest.json.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn sha256_bytes(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A path manifest.json names, inside `dir`: relative, no `..`, a regular file (not a link).
fn member(dir: &Path, name: &str) -> std::result::Result<PathBuf, String> {
    let p = Path::new(name);
    if p.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(format!("{name:?} leaves the archive"));
    }
    let full = dir.join(p);
    match fs::symlink_metadata(&full) {
        Ok(m) if m.is_file() => Ok(full),
        Ok(_) => Err(format!("{name:?} is not a regular file")),
        Err(e) => Err(format!("{name:?}: {e}")),
    }
}

/// Store the file `from` as a blob of the layout in `dir` (a hard link: images of one archive
/// share layer files); its descriptor.
fn put_blob(dir: &Path, from: &Path, hex: &str, size: u64, media: &str) -> std::io::Result<Value> {
    let to = dir.join("blobs/sha256").join(hex);
    if !to.exists() {
        fs::hard_link(from, &to)?;
    }
    Ok(json!({"mediaType": media, "digest": format!("sha256:{hex}"), "size": size}))
}

/// One image of manifest.json as a manifest blob of the layout; its index entries (one per tag).
fn convert(dir: &Path, e: &Entry) -> std::result::Result<Vec<Value>, String> {
    let cfg_path = member(dir, &e.config)?;
    let data = fs::read(&cfg_path).map_err(|err| format!("{}: {err}", e.config))?;
    let hex = sha256_bytes(&data);
    // Docker names the config by its digest ("HEX.json", or "blobs/sha256/HEX" since Docker 25).
    let stem = Path::new(&e.config).file_name().map(|n| n.to_string_lossy().trim_end_matches(".json").to_string());
    if stem.as_deref() != Some(hex.as_str()) {
        return Err(format!("config {:?} has digest sha256:{hex}, not the one its name carries", e.config));
    }
    let cfg: Value = serde_json::from_slice(&data).map_err(|err| format!("config {:?}: {err}", e.config))?;
    let diff_ids: Vec<&str> = cfg["rootfs"]["diff_ids"].as_array().map(|a| a.iter().filter_map(|d| d.as_str()).collect()).unwrap_or_default();
    if diff_ids.len() != e.layers.len() {
        return Err(format!("config {:?} lists {} layers (rootfs.diff_ids), manifest.json {}", e.config, diff_ids.len(), e.layers.len()));
    }
    let mut layers = vec![];
    for (name, want) in e.layers.iter().zip(diff_ids) {
        let path = member(dir, name)?;
        let (got, size) = sha256_file(&path).map_err(|err| format!("layer {name:?}: {err}"))?;
        if want != format!("sha256:{got}") {
            return Err(format!("layer {name:?} has digest sha256:{got}, the config's diff_id is {want} (a compressed or altered layer)"));
        }
        layers.push(put_blob(dir, &path, &got, size, LAYER).map_err(|err| format!("layer {name:?}: {err}"))?);
    }
    let config = put_blob(dir, &cfg_path, &hex, data.len() as u64, CONFIG).map_err(|err| format!("config {:?}: {err}", e.config))?;
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": layers})).map_err(|err| err.to_string())?;
    let mhex = sha256_bytes(&manifest);
    fs::write(dir.join("blobs/sha256").join(&mhex), &manifest).map_err(|err| format!("manifest: {err}"))?;
    let desc = json!({"mediaType": MANIFEST, "digest": format!("sha256:{mhex}"), "size": manifest.len()});
    let tags = e.repo_tags.clone().unwrap_or_default();
    if tags.is_empty() {
        return Ok(vec![desc]);
    }
    Ok(tags.into_iter().map(|t| {
        let mut d = desc.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": t});
        d
    }).collect())
}

/// Turn the unpacked `docker save` archive in `dir` into an OCI image layout there.
pub fn to_layout(reference: &str, dir: &Path) -> Result<()> {
    let err = |reason: String| ImageError::Io { reference: reference.into(), path: dir.join("manifest.json"), reason };
    let data = fs::read(dir.join("manifest.json")).map_err(|e| err(format!("{e}: not a docker-archive")))?;
    let entries: Vec<Entry> = serde_json::from_slice(&data).map_err(|e| err(e.to_string()))?;
    fs::create_dir_all(dir.join("blobs/sha256")).map_err(|e| err(e.to_string()))?;
    let mut manifests = vec![];
    for e in &entries {
        manifests.extend(convert(dir, e).map_err(err)?);
    }
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    // Docker 25 writes an index.json of its own beside manifest.json: replaced by the one made here.
    fs::write(dir.join("index.json"), index.to_string()).map_err(|e| err(format!("index.json: {e}")))
}
