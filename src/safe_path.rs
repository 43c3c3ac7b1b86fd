//! Paths from a container's config resolved inside its root: `..` and symlinks, absolute or
//! relative, never lead out of it. Used by the init before each mount and by the upgrade when it
//! attaches a volume inside a created container.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// Why a path could not be resolved inside the root.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("resolving {} in {}: too many levels of symbolic links", path.display(), root.display())]
    TooManyLinks { root: PathBuf, path: PathBuf },
    #[error("readlink {}: {source}", link.display())]
    ReadLink { link: PathBuf, source: std::io::Error },
}

/// Resolve `unsafe_path` as if `root` were `/`: `..` and symlinks (absolute or relative) never leave
/// `root`. Components that do not exist yet are appended as they are.
pub fn resolve_in_root(root: &Path, unsafe_path: &Path) -> Result<PathBuf, ResolveError> {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<std::ffi::OsString> = components(unsafe_path);
    pending.reverse();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(ResolveError::TooManyLinks { root: root.to_path_buf(), path: unsafe_path.to_path_buf() });
                }
                let target = match fs::read_link(&full) {
                    Ok(t) => t,
                    // No longer a link (swapped back meanwhile): look at the component again.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        pending.push(part);
                        continue;
                    }
                    Err(source) => return Err(ResolveError::ReadLink { link: full, source }),
                };
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

fn components(p: &Path) -> Vec<std::ffi::OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let base = std::env::temp_dir().join(format!("molt-rootfs-test-{}", std::process::id()));
        let root = base.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        symlink("etc", root.join("rel")).unwrap();
        assert_eq!(resolve_in_root(&root, Path::new("/abs/passwd")).unwrap(), root.join("etc/passwd"));
        assert_eq!(resolve_in_root(&root, Path::new("/up/etc")).unwrap(), root.join("etc"));
        assert_eq!(resolve_in_root(&root, Path::new("/../../x")).unwrap(), root.join("x"));
        assert_eq!(resolve_in_root(&root, Path::new("/rel/new/dir")).unwrap(), root.join("etc/new/dir"));
        symlink("loop", root.join("loop")).unwrap();
        assert!(resolve_in_root(&root, Path::new("/loop")).is_err());
        fs::remove_dir_all(&base).unwrap();
    }
}
