//! OCI image layouts written by hand for the image tests: blobs, manifests, configs and
//! index.json from the busybox rootfs fixture (or hostile layers), with the `tar`, `flate2`,
//! `zstd` and `sha2` crates, so no image tool is needed and nothing is pulled.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::*;

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Go's name of this host's architecture, as image configs carry it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

pub fn sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A layout directory under construction; removed on drop.
pub struct Layout {
    pub dir: TempDir,
    /// index.json's manifests.
    pub entries: Vec<Value>,
}

impl Layout {
    pub fn new() -> Layout {
        let dir = TempDir::new("molt-layout");
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir, entries: vec![] }
    }

    /// Store a blob; its descriptor.
    pub fn blob(&self, media: &str, data: &[u8]) -> Value {
        let hex = sha256(data);
        fs::write(self.dir.join("blobs/sha256").join(&hex), data).unwrap();
        json!({"mediaType": media, "digest": format!("sha256:{hex}"), "size": data.len()})
    }

    /// An image (config + layers) as a manifest blob; the manifest's descriptor.
    pub fn image(&self, config: &Value, layers: &[(&str, Vec<u8>)]) -> Value {
        let cfg = self.blob("application/vnd.oci.image.config.v1+json", &serde_json::to_vec(config).unwrap());
        let layers: Vec<Value> = layers.iter().map(|(m, d)| self.blob(m, d)).collect();
        let m = json!({"schemaVersion": 2, "mediaType": MANIFEST, "config": cfg, "layers": layers});
        self.blob(MANIFEST, &serde_json::to_vec(&m).unwrap())
    }

    /// Add an index entry, tagged if `tag` is given.
    pub fn add(&mut self, mut desc: Value, tag: Option<&str>) -> &mut Layout {
        if let Some(t) = tag {
            desc["annotations"] = json!({"org.opencontainers.image.ref.name": t});
        }
        self.entries.push(desc);
        self.write_index()
    }

    pub fn write_index(&mut self) -> &mut Layout {
        let idx = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": self.entries});
        fs::write(self.dir.join("index.json"), serde_json::to_vec_pretty(&idx).unwrap()).unwrap();
        self
    }

    pub fn reference(&self, tag: Option<&str>) -> String {
        match tag {
            Some(t) => format!("oci:{}:{t}", self.dir.display()),
            None => format!("oci:{}", self.dir.display()),
        }
    }

    /// The layout as an oci-archive (a tar of the directory) at `file`.
    pub fn archive(&self, file: &Path) {
        let mut b = tar::Builder::new(fs::File::create(file).unwrap());
        b.append_dir_all(".", &*self.dir).unwrap();
        b.finish().unwrap();
    }

    /// The path of a stored blob of `desc`.
    pub fn blob_path(&self, desc: &Value) -> std::path::PathBuf {
        self.dir.join("blobs/sha256").join(desc["digest"].as_str().unwrap().trim_start_matches("sha256:"))
    }
}

/// An image config: `cmd`, environment, user, labels (version and constraint), for `arch`.
pub fn config(arch: &str, cmd: &[&str], env: &[&str], user: &str, cwd: &str, labels: Value) -> Value {
    json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": cmd, "Env": env, "User": user, "WorkingDir": cwd, "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": []}
    })
}

/// The busybox rootfs fixture as one gzip layer, made once per test binary.
pub fn rootfs_layer() -> Vec<u8> {
    static LAYER: OnceLock<Vec<u8>> = OnceLock::new();
    LAYER
        .get_or_init(|| {
            let gz = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
            let mut b = tar::Builder::new(gz);
            b.follow_symlinks(false);
            b.append_dir_all(".", rootfs()).unwrap();
            b.into_inner().unwrap().finish().unwrap()
        })
        .clone()
}

/// A tar header with `name` written as raw bytes: the tar crate's own setters refuse `..`,
/// which is exactly what a hostile layer carries.
pub fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// A plain-tar layer of (header, content) entries.
pub fn layer(entries: Vec<(tar::Header, Vec<u8>)>) -> Vec<u8> {
    let mut b = tar::Builder::new(vec![]);
    for (mut h, data) in entries {
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A file entry.
pub fn file(name: &str, data: &[u8]) -> (tar::Header, Vec<u8>) {
    (header(name, tar::EntryType::Regular, data.len() as u64), data.to_vec())
}

/// A link entry (symlink or hard link) to `target`.
pub fn link(name: &str, kind: tar::EntryType, target: &str) -> (tar::Header, Vec<u8>) {
    let mut h = header(name, kind, 0);
    // Raw bytes again: set_link_name refuses `..` too.
    h.as_mut_bytes()[157..157 + target.len()].copy_from_slice(target.as_bytes());
    (h, vec![])
}

/// A pax extended header for the entry that follows it (`SCHILY.xattr.NAME` records, say).
pub fn pax(records: &[(&str, &[u8])]) -> (tar::Header, Vec<u8>) {
    let mut data = vec![];
    for (k, v) in records {
        // "LEN KEY=VALUE\n", where LEN counts its own digits too.
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        data.extend(format!("{len} {k}=").as_bytes());
        data.extend(*v);
        data.push(b'\n');
    }
    (header("PaxHeaders/entry", tar::EntryType::XHeader, data.len() as u64), data)
}

/// A short-lived writer used by tests that want to append to a blob.
pub fn append(path: &Path, data: &[u8]) {
    fs::OpenOptions::new().append(true).open(path).unwrap().write_all(data).unwrap();
}

/// An image config's labels: the version, and the constraint on what it upgrades from.
pub fn labels(version: &str, from: Option<&str>) -> Value {
    let mut l = serde_json::json!({"org.opencontainers.image.version": version});
    if let Some(f) = from {
        l["io.molt.upgrade.from"] = serde_json::json!(f);
    }
    l
}

/// The test application at `version` as an image config for this host.
pub fn app_config(version: &str) -> Value {
    let env = format!("APP_VERSION={version}");
    config(host_arch(), &["/bin/molt-testapp"], &["PATH=/bin:/sbin:/usr/bin", &env], "", "/", labels(version, Some(">=1.0.0, <2.0.0")))
}

/// The busybox rootfs fixture as one plain tar layer (what `docker save` holds).
pub fn rootfs_tar() -> Vec<u8> {
    let mut out = vec![];
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(rootfs_layer().as_slice()), &mut out).unwrap();
    out
}

/// A `docker save` archive (Docker 20's format: `HEX.json` config, `ID/layer.tar` layers,
/// manifest.json) of one image at `file`; the config's diff_ids are the layers' digests unless
/// `diff_ids` gives others.
pub fn docker_archive(file: &Path, mut config: Value, layers: &[Vec<u8>], tags: &[&str], diff_ids: Option<Vec<String>>) {
    let ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", sha256(l))).collect();
    config["rootfs"]["diff_ids"] = json!(diff_ids.unwrap_or_else(|| ids.clone()));
    let cfg = serde_json::to_vec(&config).unwrap();
    let cfg_name = format!("{}.json", sha256(&cfg));
    let names: Vec<String> = ids.iter().enumerate().map(|(i, id)| format!("{}{i}/layer.tar", &id[7..20])).collect();
    let manifest = json!([{"Config": cfg_name, "RepoTags": tags, "Layers": names}]);
    let mut b = tar::Builder::new(fs::File::create(file).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&cfg_name, &cfg);
    for (n, l) in names.iter().zip(layers) {
        add(n, l);
    }
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.finish().unwrap();
}
