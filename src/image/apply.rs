//! Applying image layers to a rootfs, in order: tar, tar+gzip or tar+zstd, whiteouts (`.wh.NAME`) and opaque
//! directories (`.wh..wh..opq`), modes, ownership, xattrs and hard links within. Anything that
//! would write outside the rootfs is refused: `..` in a name, a path through a symlink that is
//! absolute or leads out, a hard link to a path outside, and device nodes.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::Descriptor;

use super::{ImageError, Result};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// A name inside the rootfs as plain components: `/` and `.` are dropped, `..` is refused.
pub fn clean(name: &Path) -> std::result::Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => return Err("the name holds '..' and would leave the rootfs".into()),
            Component::Prefix(_) => return Err("not a Linux path".into()),
        }
    }
    Ok(out)
}

/// The host path of `rel` inside `root`, following the symlinks on the way as the container
/// would, but only those that stay inside: an absolute symlink, or one whose `..` leads above
/// the rootfs, would point the host at its own files, so it is refused. Missing components are
/// fine (the caller creates them as directories).
pub fn resolve(root: &Path, rel: &Path) -> std::result::Result<PathBuf, String> {
    let mut pending: VecDeque<OsString> = rel.components().map(|c| c.as_os_str().to_owned()).collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            if !cur.pop() {
                return Err(format!("{} leads out of the rootfs", rel.display()));
            }
            continue;
        }
        if c == "." || c == "/" {
            continue;
        }
        cur.push(&c);
        let host = root.join(&cur);
        let Ok(meta) = fs::symlink_metadata(&host) else { continue };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > 40 {
            return Err(format!("{}: too many levels of symlinks", rel.display()));
        }
        let target = fs::read_link(&host).map_err(|e| format!("{}: {e}", host.display()))?;
        if target.is_absolute() {
            return Err(format!("/{} is a symlink to the absolute path {}: following it would leave the rootfs", cur.display(), target.display()));
        }
        let link = cur.clone();
        cur.pop();
        for t in target.components().rev() {
            pending.push_front(t.as_os_str().to_owned());
        }
        // `..` above the rootfs inside the target is caught above; say which link it came from.
        let mut depth = cur.components().count() as i64;
        for t in target.components() {
            match t {
                Component::ParentDir => depth -= 1,
                Component::Normal(_) => depth += 1,
                _ => {}
            }
            if depth < 0 {
                return Err(format!("/{} is a symlink to {}, which leads out of the rootfs", link.display(), target.display()));
            }
        }
    }
    Ok(root.join(cur))
}

/// Remove whatever is at `p` (not following a symlink) so an entry can take its place.
fn remove_any(p: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

struct Layer<'a> {
    reference: &'a str,
    digest: String,
    rootfs: &'a Path,
    /// What this layer has written: an opaque marker hides only what lower layers left.
    written: HashSet<PathBuf>,
}

impl Layer<'_> {
    fn err(&self, entry: &Path, reason: impl Into<String>) -> ImageError {
        ImageError::Entry { reference: self.reference.into(), digest: self.digest.clone(), entry: entry.display().to_string(), reason: reason.into() }
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<R>) -> Result<()> {
        let raw = e.path().map_err(|x| self.err(Path::new("?"), x.to_string()))?.into_owned();
        let rel = clean(&raw).map_err(|r| self.err(&raw, r))?;
        let Some(name) = rel.file_name().map(|n| n.to_owned()) else { return Ok(()) };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent = resolve(self.rootfs, &parent_rel).map_err(|r| self.err(&raw, r))?;
        let kind = e.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        fs::create_dir_all(&parent).map_err(|x| self.err(&raw, format!("create {}: {x}", parent.display())))?;
        let name_str = name.to_string_lossy();
        if name_str == OPAQUE {
            for child in fs::read_dir(&parent).map_err(|x| self.err(&raw, format!("{}: {x}", parent.display())))?.flatten() {
                if !self.written.contains(&parent_rel.join(child.file_name())) {
                    remove_any(&child.path()).map_err(|x| self.err(&raw, format!("remove {}: {x}", child.path().display())))?;
                }
            }
            return Ok(());
        }
        if let Some(hidden) = name_str.strip_prefix(WHITEOUT) {
            // `.wh..` and `.wh...` would hide the directory itself or its parent: the rootfs, or
            // whatever holds it.
            if matches!(hidden, "" | "." | "..") {
                return Err(self.err(&raw, "a whiteout that names no file of its directory"));
            }
            let p = parent.join(hidden);
            return remove_any(&p).map_err(|x| self.err(&raw, format!("remove {}: {x}", p.display())));
        }
        let dest = parent.join(&name);
        let h = e.header().clone();
        let mode = h.mode().map_err(|x| self.err(&raw, format!("mode: {x}")))? & 0o7777;
        match kind {
            tar::EntryType::Directory => {
                if !fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                    remove_any(&dest).map_err(|x| self.err(&raw, format!("replace {}: {x}", dest.display())))?;
                    fs::create_dir(&dest).map_err(|x| self.err(&raw, format!("mkdir {}: {x}", dest.display())))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove_any(&dest).map_err(|x| self.err(&raw, format!("replace {}: {x}", dest.display())))?;
                // O_EXCL|O_NOFOLLOW: the file is new, never something a symlink points at.
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&dest)
                    .map_err(|x| self.err(&raw, format!("create {}: {x}", dest.display())))?;
                std::io::copy(&mut e, &mut f).map_err(|x| self.err(&raw, format!("write {}: {x}", dest.display())))?;
            }
            tar::EntryType::Symlink => {
                let target = h.link_name().map_err(|x| self.err(&raw, x.to_string()))?.ok_or_else(|| self.err(&raw, "symlink without a target"))?;
                remove_any(&dest).map_err(|x| self.err(&raw, format!("replace {}: {x}", dest.display())))?;
                // Any target may be stored: a symlink is only followed through resolve().
                std::os::unix::fs::symlink(&target, &dest).map_err(|x| self.err(&raw, format!("symlink {}: {x}", dest.display())))?;
            }
            tar::EntryType::Link => {
                let target = h.link_name().map_err(|x| self.err(&raw, x.to_string()))?.ok_or_else(|| self.err(&raw, "hard link without a target"))?;
                if target.is_absolute() {
                    return Err(self.err(&raw, format!("hard link to the absolute path {}: a layer links only to its rootfs's own files", target.display())));
                }
                let trel = clean(&target).map_err(|r| self.err(&raw, format!("hard link to {}: {r}", target.display())))?;
                let tparent = resolve(self.rootfs, trel.parent().unwrap_or(Path::new(""))).map_err(|r| self.err(&raw, format!("hard link to {}: {r}", target.display())))?;
                let src = tparent.join(trel.file_name().unwrap_or_default());
                if fs::symlink_metadata(&src).is_err() {
                    return Err(self.err(&raw, format!("hard link to {}, which no earlier entry created", target.display())));
                }
                remove_any(&dest).map_err(|x| self.err(&raw, format!("replace {}: {x}", dest.display())))?;
                fs::hard_link(&src, &dest).map_err(|x| self.err(&raw, format!("link {} to {}: {x}", dest.display(), src.display())))?;
                self.written.insert(rel);
                return Ok(()); // the inode's metadata came with its first name
            }
            tar::EntryType::Fifo => {
                remove_any(&dest).map_err(|x| self.err(&raw, format!("replace {}: {x}", dest.display())))?;
                nix::unistd::mkfifo(&dest, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(|x| self.err(&raw, format!("mkfifo {}: {x}", dest.display())))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(self.err(&raw, "a device node: images may not carry devices (the runtime creates /dev from the config)"));
            }
            other => return Err(self.err(&raw, format!("unsupported tar entry type {other:?}"))),
        }
        self.written.insert(rel);
        self.metadata(&raw, &dest, &mut e, kind == tar::EntryType::Symlink, mode)
    }

    /// Ownership first (chown clears set-id bits), then mode, xattrs and mtime; xattrs only
    /// where the filesystem takes them.
    fn metadata<R: Read>(&self, raw: &Path, dest: &Path, e: &mut tar::Entry<R>, symlink: bool, mode: u32) -> Result<()> {
        let h = e.header();
        let (uid, gid) = (h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32);
        std::os::unix::fs::lchown(dest, Some(uid), Some(gid)).map_err(|x| self.err(raw, format!("chown {}: {x}", dest.display())))?;
        if !symlink {
            fs::set_permissions(dest, fs::Permissions::from_mode(mode)).map_err(|x| self.err(raw, format!("chmod {}: {x}", dest.display())))?;
        }
        if let Ok(Some(exts)) = e.pax_extensions() {
            for ext in exts.flatten() {
                let Ok(key) = ext.key() else { continue };
                let Some(name) = key.strip_prefix("SCHILY.xattr.") else { continue };
                let (Ok(cname), Ok(cpath)) = (std::ffi::CString::new(name), std::ffi::CString::new(dest.as_os_str().as_encoded_bytes())) else { continue };
                let v = ext.value_bytes();
                // SAFETY: valid NUL-terminated strings and a buffer of v.len() bytes.
                let rc = unsafe { libc::lsetxattr(cpath.as_ptr(), cname.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
                if rc != 0 {
                    crate::logging::debug(&format!("{}: xattr {name} not kept: {}", dest.display(), std::io::Error::last_os_error()));
                }
            }
        }
        if let Ok(mtime) = e.header().mtime() {
            let t = nix::sys::time::TimeSpec::new(mtime as i64, 0);
            let _ = nix::sys::stat::utimensat(None, dest, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink);
        }
        Ok(())
    }
}

/// Apply one verified layer blob to `rootfs`.
pub fn apply_layer(reference: &str, d: &Descriptor, blob: &Path, rootfs: &Path) -> Result<()> {
    let digest = d.digest().to_string();
    let media = d.media_type().to_string();
    let f = fs::File::open(blob).map_err(|e| ImageError::Io { reference: reference.into(), path: blob.into(), reason: e.to_string() })?;
    let blob_err = |reason: String| ImageError::Blob { reference: reference.into(), digest: digest.clone(), what: "layer".into(), reason };
    let reader: Box<dyn Read> = if media.ends_with("gzip") {
        Box::new(flate2::read::GzDecoder::new(f))
    } else if media.ends_with("zstd") {
        Box::new(zstd::stream::read::Decoder::new(f).map_err(|e| blob_err(format!("zstd: {e}")))?)
    } else if media.ends_with(".tar") || media.ends_with("diff.tar") {
        Box::new(f)
    } else {
        return Err(blob_err(format!("media type {media} is not supported (tar, tar+gzip, tar+zstd)")));
    };
    let mut layer = Layer { reference, digest: digest.clone(), rootfs, written: HashSet::new() };
    let mut ar = tar::Archive::new(reader);
    let entries = ar.entries().map_err(|e| blob_err(e.to_string()))?;
    for e in entries {
        let e = e.map_err(|e| blob_err(format!("not a readable tar: {e}")))?;
        layer.entry(e)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_dotdot_are_refused_and_others_cleaned() {
        assert_eq!(clean(Path::new("./usr/bin/")).unwrap(), PathBuf::from("usr/bin"));
        assert_eq!(clean(Path::new("/etc/passwd")).unwrap(), PathBuf::from("etc/passwd"));
        assert!(clean(Path::new("usr/../../etc")).is_err());
    }

    #[test]
    fn symlinks_are_followed_inside_and_refused_when_they_lead_out() {
        let root = std::env::temp_dir().join(format!("molt-resolve-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("usr/up")).unwrap();
        assert_eq!(resolve(&root, Path::new("lib/x")).unwrap(), root.join("usr/lib/x"));
        assert_eq!(resolve(&root, Path::new("new/dir")).unwrap(), root.join("new/dir"));
        let e = resolve(&root, Path::new("abs/cron.d")).unwrap_err();
        assert!(e.contains("/abs is a symlink to the absolute path /etc"), "{e}");
        let e = resolve(&root, Path::new("usr/up/etc")).unwrap_err();
        assert!(e.contains("leads out of the rootfs"), "{e}");
        fs::remove_dir_all(&root).unwrap();
    }
}
