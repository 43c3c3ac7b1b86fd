//! Unpacked images under `<root>/images/sha256-HEX/` (HEX: the manifest digest; '-' because ':'
//! separates paths in mount options): a bundle dir (`rootfs/` + `config.json`) unpacked under a
//! `.tmp-` name, synced and renamed when complete, shared by every container that uses the image. An
//! image dir is removed when nothing refers to it any more: no container's state.json and no
//! derived config (of a running upgrade) has its rootfs. `prune` does that; an upgrade prunes
//! after it commits, `delete` after it removes a container, and `molt image prune` on demand.
//! A flock on `images/.lock` keeps a prune from removing an image an upgrade has just unpacked
//! but not yet created a container from: users hold it shared, a prune takes it exclusively or
//! leaves the work to the next one. A hold (`images/.holds/NAME`, one path a line) keeps what
//! it names past prunes until the file is removed: a bundle rollout holds the image each
//! container ran before its upgrade, for a rollback of its batch, until the rollout ends.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::layout::{nanos, Image, Reference};
use super::{apply, config, ImageError, Result};

pub fn images_dir(root: &Path) -> PathBuf {
    root.join("images")
}

/// Where holds live; the file name is the hold's name.
pub fn holds_dir(root: &Path) -> PathBuf {
    images_dir(root).join(".holds")
}

/// Keep `paths` (image dirs, or anything inside one) from prunes under the hold `name`
/// (replaced if it exists), until its file in `holds_dir` is removed.
pub fn hold(root: &Path, name: &str, paths: &[PathBuf]) -> Result<()> {
    let dir = holds_dir(root);
    let io = |path: &Path, e: std::io::Error| ImageError::Io { reference: format!("hold {name}"), path: path.into(), reason: e.to_string() };
    if name.is_empty() || name.starts_with('.') || name.contains('/') {
        return Err(io(&dir, std::io::Error::other("a hold's name is a file name: not empty, no '/', no leading '.'")));
    }
    fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let text: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    // Whole or absent: written aside, then renamed over.
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    fs::rename(&tmp, dir.join(name)).map_err(|e| io(&dir.join(name), e))
}

/// The store lock, released on drop.
pub struct Lock(#[allow(dead_code)] fs::File);

fn lock(root: &Path, exclusive: bool, wait: bool) -> std::io::Result<Option<Lock>> {
    let dir = images_dir(root);
    fs::create_dir_all(&dir)?;
    let f = fs::File::create(dir.join(".lock"))?;
    let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH } | if wait { 0 } else { libc::LOCK_NB };
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
    }
    Ok(Some(Lock(f)))
}

/// Held by an upgrade that uses an image dir, until a container or derived config refers to it;
/// on drop the lock goes and what nothing refers to any more is pruned.
pub struct InUse {
    lock: Option<Lock>,
    root: PathBuf,
}

impl InUse {
    pub fn take(root: &Path) -> Result<InUse> {
        let io = |e: std::io::Error| ImageError::Io { reference: "store".into(), path: images_dir(root).join(".lock"), reason: e.to_string() };
        let lock = lock(root, false, true).map_err(io)?.ok_or_else(|| io(std::io::Error::other("lock not taken")))?;
        Ok(InUse { lock: Some(lock), root: root.into() })
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.lock.take();
        prune_quietly(&self.root);
    }
}

/// Unpack the verified layers and write config.json into the bundle dir `bundle` (which exists
/// and is empty); `root_path` is what config.json names as its rootfs.
fn unpack_bundle(img: &Image, bundle: &Path, root_path: PathBuf) -> Result<()> {
    let io = |path: &Path, e: std::io::Error| ImageError::Io { reference: img.reference.clone(), path: path.into(), reason: e.to_string() };
    // Every blob is verified before any layer is applied.
    let layers = img.verified_layers()?;
    let rootfs = bundle.join("rootfs");
    fs::create_dir(&rootfs).map_err(|e| io(&rootfs, e))?;
    fs::set_permissions(&rootfs, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(|e| io(&rootfs, e))?;
    for (d, blob) in &layers {
        apply::apply_layer(&img.reference, d, blob, &rootfs)?;
    }
    let spec = config::bundle_spec(img, &rootfs, root_path)?;
    let path = bundle.join("config.json");
    let text = serde_json::to_vec_pretty(&spec).map_err(|e| io(&path, std::io::Error::other(e)))?;
    fs::write(&path, text).map_err(|e| io(&path, e))
}

/// Unpack into `tmp` (created here, beside `dest`), then put it at `dest`: the whole tree is on
/// disk (syncfs) before the rename and the rename is before `dest` is reported, so a crash or a
/// kill leaves a `tmp` dir or a complete `dest`, never a `dest` that is half there. A failure
/// removes `tmp`; `dest` is then as it was.
fn unpack_beside(img: &Image, tmp: &Path, dest: &Path, root_path: PathBuf) -> Result<()> {
    let io = |path: &Path, e: std::io::Error| ImageError::Io { reference: img.reference.clone(), path: path.into(), reason: e.to_string() };
    fs::create_dir(tmp).map_err(|e| io(tmp, e))?;
    let done = unpack_bundle(img, tmp, root_path).and_then(|_| {
        crate::fault::crash_at("image-unpack:applied");
        // One syncfs for the tree rather than an fsync per file: the image's files are many.
        let d = fs::File::open(tmp).map_err(|e| io(tmp, e))?;
        nix::unistd::syncfs(d.as_raw_fd()).map_err(|e| io(tmp, std::io::Error::other(format!("syncfs: {e}"))))?;
        fs::rename(tmp, dest).map_err(|e| io(dest, e))
    });
    if let Err(e) = done {
        let _ = fs::remove_dir_all(tmp);
        return Err(e);
    }
    // The rename itself on disk: the parent's entry.
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|e| io(parent, e))
}

/// The store's bundle dir of `reference`, unpacked unless it already is. The caller holds
/// `InUse` until a container or derived config refers to it.
pub fn unpack(root: &Path, reference: &str) -> Result<PathBuf> {
    let r = Reference::parse(reference)?;
    let dir = images_dir(root);
    let img = Image::open(&r, &dir)?;
    let name = img.manifest_digest.replacen(':', "-", 1);
    let done = dir.join(&name);
    if done.join("config.json").is_file() {
        return Ok(done);
    }
    let tmp = dir.join(format!(".tmp-{name}-{}-{}", std::process::id(), nanos()));
    match unpack_beside(&img, &tmp, &done, done.join("rootfs")) {
        // Another molt finished the same image first: theirs is as good.
        Err(_) if done.join("config.json").is_file() => Ok(done),
        Err(e) => Err(e),
        Ok(()) => Ok(done),
    }
}

/// `molt image unpack REF DIR`: a runnable bundle at DIR, which must not exist or be empty;
/// unpacked beside it as `DIR.tmp-*` and renamed to DIR when complete.
pub fn unpack_to(reference: &str, bundle: &Path) -> Result<Image> {
    let r = Reference::parse(reference)?;
    let io = |path: &Path, e: std::io::Error| ImageError::Io { reference: reference.into(), path: path.into(), reason: e.to_string() };
    if fs::read_dir(bundle).is_ok_and(|mut d| d.next().is_some()) {
        return Err(io(bundle, std::io::Error::other("exists and is not empty")));
    }
    let name = bundle.file_name().ok_or_else(|| io(bundle, std::io::Error::other("names no directory to create")))?;
    let parent = bundle.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let img = Image::open(&r, parent)?;
    let tmp = parent.join(format!("{}.tmp-{}-{}", name.to_string_lossy(), std::process::id(), nanos()));
    unpack_beside(&img, &tmp, bundle, PathBuf::from("rootfs"))?;
    Ok(img)
}

/// The rootfs paths that containers and derived configs (of upgrades in progress) refer to.
fn referenced(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let read = |p: &Path| fs::read(p).ok().and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok());
    for e in fs::read_dir(root).into_iter().flatten().flatten() {
        if let Some(v) = read(&e.path().join("state.json")) {
            out.extend(v["rootfs"].as_str().map(PathBuf::from));
            out.extend(v["config"]["root"]["path"].as_str().map(PathBuf::from));
        }
    }
    for h in fs::read_dir(holds_dir(root)).into_iter().flatten().flatten() {
        out.extend(fs::read_to_string(h.path()).unwrap_or_default().lines().filter(|l| !l.is_empty()).map(PathBuf::from));
    }
    for id in fs::read_dir(root.join(".derived")).into_iter().flatten().flatten() {
        for stamp in fs::read_dir(id.path()).into_iter().flatten().flatten() {
            if let Some(v) = read(&stamp.path().join("config.json")) {
                out.extend(v["root"]["path"].as_str().map(PathBuf::from));
            }
        }
    }
    out
}

/// Remove every image dir nothing refers to, and what an interrupted unpack left (`.tmp-`,
/// `.archive-` names). Returns what was removed, or None when an upgrade holds the store.
pub fn prune(root: &Path) -> Result<Option<Vec<PathBuf>>> {
    let dir = images_dir(root);
    if !dir.is_dir() {
        return Ok(Some(vec![]));
    }
    let io = |path: &Path, e: std::io::Error| ImageError::Io { reference: "store".into(), path: path.into(), reason: e.to_string() };
    let Some(_lock) = lock(root, true, false).map_err(|e| io(&dir, e))? else { return Ok(None) };
    let used = referenced(root);
    let mut removed = vec![];
    for e in fs::read_dir(&dir).map_err(|e| io(&dir, e))?.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        let stale = name.starts_with(".tmp-") || name.starts_with(".archive-");
        if name == ".lock" || name == ".holds" || (!stale && used.iter().any(|u| u.starts_with(&p))) {
            continue;
        }
        fs::remove_dir_all(&p).map_err(|e| io(&p, e))?;
        removed.push(p);
    }
    Ok(Some(removed))
}

/// Prune after a commit or a delete: an upgrade holding the store leaves it for the next one.
pub fn prune_quietly(root: &Path) {
    if let Err(e) = prune(root) {
        crate::logging::warn(&format!("image store: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_image_outlives_prunes_until_its_hold_is_removed() {
        let root = std::env::temp_dir().join(format!("molt-store-hold-{}-{}", std::process::id(), nanos()));
        for name in ["sha256-old", "sha256-new"] {
            fs::create_dir_all(images_dir(&root).join(name).join("rootfs")).unwrap();
        }
        // Held by the path of its rootfs, as a container's config names it.
        hold(&root, "bundle@shop@db-1", &[images_dir(&root).join("sha256-old").join("rootfs")]).unwrap();
        assert!(hold(&root, "../x", &[]).is_err() && hold(&root, ".x", &[]).is_err());
        let removed = prune(&root).unwrap().unwrap();
        assert_eq!(removed, vec![images_dir(&root).join("sha256-new")]);
        assert!(images_dir(&root).join("sha256-old").is_dir() && holds_dir(&root).join("bundle@shop@db-1").is_file());
        fs::remove_file(holds_dir(&root).join("bundle@shop@db-1")).unwrap();
        assert_eq!(prune(&root).unwrap().unwrap(), vec![images_dir(&root).join("sha256-old")]);
        assert!(holds_dir(&root).is_dir(), "the holds directory itself is never pruned");
        fs::remove_dir_all(&root).unwrap();
    }
}
