//! Reading an OCI image layout: the reference, the archive that holds a layout, index.json, the
//! choice of one manifest (by tag, then by this host's platform), and blobs read only after their
//! size and sha256 digest match their descriptor.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os};
use sha2::{Digest as _, Sha256};

use super::{ImageError, Result};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Dir(PathBuf),
    Archive(PathBuf),
    /// A `docker save` tar, made a layout by `super::docker`.
    DockerArchive(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub source: Source,
    pub tag: Option<String>,
    /// As the user wrote it, for messages.
    pub text: String,
}

impl Reference {
    /// `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or `docker-archive:FILE[:NAME:TAG]`. A path
    /// may itself hold ':': when the whole rest names an existing file it has no tag, otherwise
    /// the tag follows the last ':' (for a docker-archive, whose tags hold ':', the first ':'
    /// after a path that exists, else the first).
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = || ImageError::BadReference(s.into());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let split = match kind {
            "oci" | "oci-archive" => rest.rsplit_once(':'),
            "docker-archive" => {
                let at = |(i, _): (usize, char)| (&rest[..i], &rest[i + 1..]);
                let mut colons = rest.char_indices().filter(|&(_, c)| c == ':');
                colons.clone().map(at).find(|(p, _)| Path::new(p).is_file()).or_else(|| colons.next().map(at))
            }
            _ => return Err(bad()),
        };
        let (path, tag) = match split {
            Some((p, t)) if !Path::new(rest).exists() => (p, Some(t)),
            _ => (rest, None),
        };
        if path.is_empty() || tag == Some("") {
            return Err(bad());
        }
        let path = PathBuf::from(path);
        let source = match kind {
            "oci" => Source::Dir(path),
            "oci-archive" => Source::Archive(path),
            _ => Source::DockerArchive(path),
        };
        Ok(Reference { source, tag: tag.map(String::from), text: s.into() })
    }
}

/// This host's platform as image descriptors name it (Go's names: amd64, arm64).
pub fn host_platform() -> (Os, Arch) {
    (Os::default(), Arch::default())
}

/// A platform's variant with the default of its architecture filled in, as containerd compares
/// them: arm64 is v8 and arm v7 (what molt's arm builds target) when unspecified; amd64's v1 is
/// the baseline every amd64 host runs, so it is no variant.
fn variant(arch: &Arch, v: Option<&str>) -> Option<String> {
    match (arch, v.filter(|v| !v.is_empty())) {
        (Arch::Amd64, Some("v1")) => None,
        (_, Some(v)) => Some(v.to_string()),
        (Arch::ARM64, None) => Some("v8".into()),
        (Arch::ARM, None) => Some("v7".into()),
        (_, None) => None,
    }
}

/// Whether an image for os/arch/variant runs on the platform `host` (its variant the default).
fn fits_platform(host: &(Os, Arch), os: &Os, arch: &Arch, v: Option<&str>) -> bool {
    os == &host.0 && arch == &host.1 && variant(arch, v) == variant(&host.1, None)
}

/// One manifest of a layout, verified, with its verified config.
#[derive(Debug)]
pub struct Image {
    pub reference: String,
    /// The layout directory (a scratch copy for an archive, removed on drop).
    pub dir: PathBuf,
    pub manifest_digest: String,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
    _scratch: Option<ScratchDir>,
}

/// An archive's unpacked layout, removed on drop.
#[derive(Debug)]
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The path of a blob: the digest must be sha256 of 64 lowercase hex digits, which also keeps
/// a hostile digest from naming a path outside `blobs/`.
fn blob_path(reference: &str, dir: &Path, d: &Descriptor, what: &str) -> Result<PathBuf> {
    let digest = d.digest().to_string();
    let err = |reason: &str| ImageError::Blob { reference: reference.into(), digest: digest.clone(), what: what.into(), reason: reason.into() };
    let hex = d.as_digest_sha256().ok_or_else(|| err("only sha256 digests are supported"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(err("not a sha256 digest of 64 lowercase hex digits"));
    }
    Ok(dir.join("blobs/sha256").join(hex))
}

/// The sha256 (lowercase hex) and size of a file, read in chunks.
pub(super) fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = fs::File::open(path)?;
    let (mut h, mut n, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 16]);
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((h.finalize().iter().map(|b| format!("{b:02x}")).collect(), n))
}

/// Hash the blob of `d` and compare size and digest; returns the path to read it from.
pub fn verify_blob(reference: &str, dir: &Path, d: &Descriptor, what: &str) -> Result<PathBuf> {
    let path = blob_path(reference, dir, d, what)?;
    let err = |reason: String| ImageError::Blob { reference: reference.into(), digest: d.digest().to_string(), what: what.into(), reason };
    // A blob that is a symlink could point anywhere on the host: a layout holds plain files.
    let meta = fs::symlink_metadata(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(err(format!("{} is not a regular file", path.display())));
    }
    if meta.len() != d.size() {
        return Err(err(format!("{} has {} bytes, the descriptor says {}", path.display(), meta.len(), d.size())));
    }
    let (got, _) = sha256_file(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    if Some(got.as_str()) != d.as_digest_sha256() {
        return Err(err(format!("content has digest sha256:{got}, not the descriptor's")));
    }
    Ok(path)
}

/// Larger JSON blobs (an index, a manifest, a config) are refused before they are read into
/// memory: containerd's limit for manifests, and far above what image tools write.
const JSON_LIMIT: u64 = 4 << 20;

fn read_verified(reference: &str, dir: &Path, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
    if d.size() > JSON_LIMIT {
        return Err(ImageError::Blob {
            reference: reference.into(),
            digest: d.digest().to_string(),
            what: what.into(),
            reason: format!("the descriptor says {} bytes; a {what} may have {JSON_LIMIT} at most", d.size()),
        });
    }
    let path = verify_blob(reference, dir, d, what)?;
    fs::read(&path).map_err(|e| ImageError::Io { reference: reference.into(), path, reason: e.to_string() })
}

fn platform_text(os: &Os, arch: &Arch, v: Option<&str>) -> String {
    match v.filter(|v| !v.is_empty()) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }
}

fn platform_name(d: &Descriptor) -> String {
    d.platform().as_ref().map(|p| platform_text(p.os(), p.architecture(), p.variant().as_deref())).unwrap_or_else(|| "unspecified".into())
}

/// Of several descriptors, the one for this host's platform (or the only one without a platform).
fn pick_platform<'a>(reference: &str, list: &'a [Descriptor], within: &str) -> Result<&'a Descriptor> {
    pick_platform_for(&host_platform(), reference, list, within)
}

fn pick_platform_for<'a>(host: &(Os, Arch), reference: &str, list: &'a [Descriptor], within: &str) -> Result<&'a Descriptor> {
    let fits = |d: &&Descriptor| d.platform().as_ref().is_some_and(|p| fits_platform(host, p.os(), p.architecture(), p.variant().as_deref()));
    if let Some(d) = list.iter().find(fits) {
        return Ok(d);
    }
    match list {
        [only] if only.platform().is_none() => Ok(only),
        _ => {
            let found: Vec<String> = list.iter().map(platform_name).collect();
            let (os, arch) = host;
            Err(ImageError::Select {
                reference: reference.into(),
                reason: format!(
                    "{within} has no manifest for this host's platform {}; platforms found: {}",
                    platform_text(os, arch, variant(arch, None).as_deref()),
                    found.join(", ")
                ),
            })
        }
    }
}

fn is_index(d: &Descriptor) -> bool {
    matches!(d.media_type(), MediaType::ImageIndex) || d.media_type().to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

fn parse_json<T: serde::de::DeserializeOwned>(reference: &str, what: &'static str, path: &Path, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| ImageError::Json { reference: reference.into(), what, path: path.into(), reason: e.to_string() })
}

/// The manifest descriptor `r` names in the layout at `dir`.
fn select(r: &Reference, dir: &Path) -> Result<Descriptor> {
    let text = r.text.as_str();
    let index_path = dir.join("index.json");
    let data = fs::read(&index_path).map_err(|e| ImageError::Io { reference: text.into(), path: index_path.clone(), reason: e.to_string() })?;
    let index: ImageIndex = parse_json(text, "index", &index_path, &data)?;
    let tag_of = |d: &Descriptor| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned();
    let candidates: Vec<Descriptor> = match &r.tag {
        Some(tag) => index.manifests().iter().filter(|d| tag_of(d).as_deref() == Some(tag.as_str())).cloned().collect(),
        None => index.manifests().clone(),
    };
    let tags: Vec<String> = index.manifests().iter().filter_map(tag_of).collect();
    let chosen = match (&r.tag, candidates.as_slice()) {
        (_, [one]) => one.clone(),
        (Some(tag), []) => {
            return Err(ImageError::Select {
                reference: text.into(),
                reason: format!("no manifest tagged {tag:?} in {} (tags: {})", index_path.display(), if tags.is_empty() { "none".into() } else { tags.join(", ") }),
            })
        }
        (None, []) => return Err(ImageError::Select { reference: text.into(), reason: format!("{} lists no manifests", index_path.display()) }),
        // Several entries: one image for several platforms, unless they carry different tags.
        (None, _) if tags.len() > 1 => {
            return Err(ImageError::Select { reference: text.into(), reason: format!("{} holds several images; name one by its tag ({})", index_path.display(), tags.join(", ")) });
        }
        (_, many) => pick_platform(text, many, &index_path.display().to_string())?.clone(),
    };
    if !is_index(&chosen) {
        return Ok(chosen);
    }
    // A multi-platform image: its own index lists a manifest per platform.
    let data = read_verified(text, dir, &chosen, "image index")?;
    let nested: ImageIndex = parse_json(text, "image index", &blob_path(text, dir, &chosen, "image index")?, &data)?;
    let within = format!("image index {}", chosen.digest());
    let d = pick_platform(text, nested.manifests(), &within)?;
    if is_index(d) {
        return Err(ImageError::Select { reference: text.into(), reason: format!("{within} nests another index; one level is supported") });
    }
    Ok(d.clone())
}

/// Unpack an oci-archive (a tar of a layout) into `scratch`: plain files and directories only,
/// no path that leaves it.
fn extract_archive(r: &Reference, file: &Path, scratch: &Path) -> Result<()> {
    let text = r.text.as_str();
    let io = |path: &Path, e: std::io::Error| ImageError::Io { reference: text.into(), path: path.into(), reason: e.to_string() };
    let f = fs::File::open(file).map_err(|e| io(file, e))?;
    let mut ar = tar::Archive::new(f);
    for entry in ar.entries().map_err(|e| io(file, e))? {
        let mut entry = entry.map_err(|e| io(file, e))?;
        let name = entry.path().map_err(|e| io(file, e))?.into_owned();
        let mut rel = PathBuf::new();
        for c in name.components() {
            match c {
                Component::Normal(p) => rel.push(p),
                Component::CurDir | Component::RootDir => {}
                _ => return Err(io(file, std::io::Error::other(format!("archive entry {name:?} leaves the layout")))),
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = scratch.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => fs::create_dir_all(&dest).map_err(|e| io(&dest, e))?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(p) = dest.parent() {
                    fs::create_dir_all(p).map_err(|e| io(p, e))?;
                }
                let mut out = fs::File::create(&dest).map_err(|e| io(&dest, e))?;
                std::io::copy(&mut entry, &mut out).map_err(|e| io(&dest, e))?;
            }
            t => return Err(io(file, std::io::Error::other(format!("archive entry {name:?} is a {t:?}: a layout holds files and directories only")))),
        }
    }
    Ok(())
}

impl Image {
    /// Resolve `r` to one verified manifest and config. An archive is unpacked into a scratch
    /// directory under `scratch_parent` (beside the store, same filesystem), removed on drop.
    pub fn open(r: &Reference, scratch_parent: &Path) -> Result<Image> {
        let text = r.text.clone();
        let io = |path: &Path, e: std::io::Error| ImageError::Io { reference: text.clone(), path: path.into(), reason: e.to_string() };
        let (dir, scratch) = match &r.source {
            Source::Dir(d) => (d.clone(), None),
            Source::Archive(file) | Source::DockerArchive(file) => {
                fs::create_dir_all(scratch_parent).map_err(|e| io(scratch_parent, e))?;
                let path = scratch_parent.join(format!(".archive-{}-{}", std::process::id(), nanos()));
                fs::create_dir(&path).map_err(|e| io(&path, e))?;
                let scratch = ScratchDir(path.clone());
                extract_archive(r, file, &path)?;
                if matches!(r.source, Source::DockerArchive(_)) {
                    super::docker::to_layout(&text, &path)?;
                }
                (path, Some(scratch))
            }
        };
        if !dir.join("index.json").is_file() {
            return Err(ImageError::Io { reference: text, path: dir.join("index.json"), reason: "missing: not an OCI image layout".into() });
        }
        let d = select(r, &dir)?;
        let data = read_verified(&text, &dir, &d, "manifest")?;
        let manifest: ImageManifest = parse_json(&text, "manifest", &blob_path(&text, &dir, &d, "manifest")?, &data)?;
        let cd = manifest.config().clone();
        let data = read_verified(&text, &dir, &cd, "config")?;
        let config: ImageConfiguration = parse_json(&text, "config", &blob_path(&text, &dir, &cd, "config")?, &data)?;
        let host = host_platform();
        if !fits_platform(&host, config.os(), config.architecture(), config.variant().as_deref()) {
            let (os, arch) = &host;
            return Err(ImageError::Select {
                reference: text,
                reason: format!(
                    "manifest {} is for {}, this host is {}",
                    d.digest(),
                    platform_text(config.os(), config.architecture(), config.variant().as_deref()),
                    platform_text(os, arch, variant(arch, None).as_deref())
                ),
            });
        }
        Ok(Image { reference: text, dir, manifest_digest: d.digest().to_string(), manifest, config, _scratch: scratch })
    }

    /// Every layer blob verified (size and digest), in the manifest's order.
    pub fn verified_layers(&self) -> Result<Vec<(Descriptor, PathBuf)>> {
        self.manifest.layers().iter().map(|d| Ok((d.clone(), verify_blob(&self.reference, &self.dir, d, "layer")?))).collect()
    }

    pub fn labels(&self) -> HashMap<String, String> {
        self.config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default()
    }

    pub fn platform(&self) -> String {
        platform_text(self.config.os(), self.config.architecture(), self.config.variant().as_deref())
    }
}

pub fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_dir_or_an_archive_and_maybe_a_tag() {
        let r = Reference::parse("oci:/nonexistent/layout:v2").unwrap();
        assert_eq!((r.source, r.tag.as_deref()), (Source::Dir("/nonexistent/layout".into()), Some("v2")));
        let r = Reference::parse("oci-archive:/nonexistent/app.tar").unwrap();
        assert_eq!((r.source, r.tag), (Source::Archive("/nonexistent/app.tar".into()), None));
        let r = Reference::parse("oci-archive:/nonexistent/app.tar:v2").unwrap();
        assert_eq!((r.source, r.tag.as_deref()), (Source::Archive("/nonexistent/app.tar".into()), Some("v2")));
        // An existing path is taken whole, ':' and all.
        let dir = std::env::temp_dir().join(format!("molt-ref:{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let r = Reference::parse(&format!("oci:{}", dir.display())).unwrap();
        assert_eq!((r.source, r.tag), (Source::Dir(dir.clone()), None));
        fs::remove_dir_all(&dir).unwrap();
        let r = Reference::parse("docker-archive:/nonexistent/app.tar:registry:5000/app:1.1").unwrap();
        assert_eq!((r.source, r.tag.as_deref()), (Source::DockerArchive("/nonexistent/app.tar".into()), Some("registry:5000/app:1.1")));
        let file = std::env::temp_dir().join(format!("molt-ref:{}.tar", std::process::id()));
        fs::write(&file, "").unwrap();
        let r = Reference::parse(&format!("docker-archive:{}:app:1.1", file.display())).unwrap();
        assert_eq!((&r.source, r.tag.as_deref()), (&Source::DockerArchive(file.clone()), Some("app:1.1")));
        let r = Reference::parse(&format!("docker-archive:{}", file.display())).unwrap();
        assert_eq!((r.source, r.tag), (Source::DockerArchive(file.clone()), None));
        fs::remove_file(&file).unwrap();
        for bad in ["docker://busybox", "oci:", "oci:/x:", "busybox:latest", "docker-archive:"] {
            assert!(matches!(Reference::parse(bad), Err(ImageError::BadReference(_))), "{bad}");
        }
    }

    #[test]
    fn a_digest_that_is_not_sha256_hex_names_no_path() {
        let desc = |digest: String| serde_json::from_value::<Descriptor>(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1, "digest": digest
        }));
        assert!(desc("sha256:../../../../etc/passwd".into()).is_err(), "oci-spec refuses a digest that is not hex");
        let d = desc(format!("sha512:{}", "a".repeat(128))).unwrap();
        let e = blob_path("r", Path::new("/l"), &d, "manifest").unwrap_err().to_string();
        assert!(e.contains("only sha256"), "{e}");
        let d = desc(format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(blob_path("r", Path::new("/l"), &d, "manifest").unwrap(), Path::new("/l/blobs/sha256").join("a".repeat(64)));
    }

    #[test]
    fn several_tagged_images_need_a_tag_and_a_tag_picks_one() {
        let dir = std::env::temp_dir().join(format!("molt-select-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let entry = |c: &str, tag: &str| serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
            "digest": format!("sha256:{}", c.repeat(64)), "annotations": {REF_NAME: tag}
        });
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [entry("a", "1.0"), entry("b", "2.0")]});
        fs::write(dir.join("index.json"), index.to_string()).unwrap();
        let r = |s: &str| Reference::parse(&format!("oci:{}{s}", dir.display())).unwrap();
        let untagged = select(&r(""), &dir).map(|d| d.digest().to_string());
        let tagged = select(&r(":2.0"), &dir).map(|d| d.digest().to_string());
        fs::remove_dir_all(&dir).unwrap();
        let e = untagged.unwrap_err().to_string();
        assert!(e.contains("several images") && e.contains("1.0, 2.0"), "{e}");
        assert_eq!(tagged.unwrap(), format!("sha256:{}", "b".repeat(64)));
    }

    #[test]
    fn the_host_platform_is_picked_and_the_others_are_named() {
        let (os, arch) = host_platform();
        let d = |a: &str| -> Descriptor {
            serde_json::from_value(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
                "digest": format!("sha256:{}", a.repeat(64)), "platform": {"os": "linux", "architecture": if a == "a" { arch.to_string() } else { "s390x".into() }}
            }))
            .unwrap()
        };
        let list = vec![d("b"), d("a")];
        assert_eq!(pick_platform("r", &list, "index").unwrap().digest().to_string(), format!("sha256:{}", "a".repeat(64)));
        let e = pick_platform("r", &list[..1], "index").unwrap_err().to_string();
        assert!(e.contains(&format!("{os}/{arch}")) && e.contains("linux/s390x"), "{e}");
    }

    #[test]
    fn the_variant_is_matched_with_its_architectures_default() {
        let d = |n: &str, arch: &str, variant: Option<&str>| -> Descriptor {
            let mut p = serde_json::json!({"os": "linux", "architecture": arch});
            if let Some(v) = variant {
                p["variant"] = v.into();
            }
            serde_json::from_value(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
                "digest": format!("sha256:{}", n.repeat(64)), "platform": p
            }))
            .unwrap()
        };
        let pick = |host: Arch, list: &[Descriptor]| pick_platform_for(&(Os::Linux, host), "r", list, "index").map(|d| d.digest().to_string()[7..8].to_string());
        let list = [d("a", "arm", Some("v6")), d("b", "arm", Some("v7")), d("c", "arm64", Some("v8")), d("d", "arm64", Some("v9"))];
        assert_eq!(pick(Arch::ARM, &list).unwrap(), "b", "arm/v7, not arm/v6");
        assert_eq!(pick(Arch::ARM64, &list).unwrap(), "c", "arm64/v8, not arm64/v9");
        assert_eq!(pick(Arch::ARM64, &[d("d", "arm64", Some("v9")), d("e", "arm64", None)]).unwrap(), "e", "arm64 without a variant is v8");
        assert_eq!(pick(Arch::ARM, &[d("a", "arm", Some("v6")), d("f", "arm", None)]).unwrap(), "f", "arm without a variant is v7");
        assert_eq!(pick(Arch::Amd64, &[d("1", "amd64", Some("v3")), d("2", "amd64", Some("v1"))]).unwrap(), "2");
        let e = pick(Arch::Amd64, &[d("1", "amd64", Some("v3"))]).unwrap_err().to_string();
        assert!(e.contains("platform linux/amd64;") && e.contains("found: linux/amd64/v3"), "{e}");
        let e = pick(Arch::ARM, &list[..1]).unwrap_err().to_string();
        assert!(e.contains("platform linux/arm/v7;") && e.contains("found: linux/arm/v6"), "{e}");
    }
}
