//! `molt upgrade --dry-run`: everything `create` would need from the new bundle, checked without
//! touching the running container: `create`'s own checks (create::check), then the process's
//! executable inside the rootfs, the cwd, every mount source and volume. Each check that passes
//! is listed; the first that fails is the error, naming the file or field.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;

/// `path` inside `rootfs`, symlinks resolved as the container will see them (absolute targets
/// are the rootfs's, never the host's); None when it does not exist. Bounded: a loop is missing.
fn in_root(rootfs: &Path, path: &Path) -> Option<PathBuf> {
    let mut todo: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut here = PathBuf::from("/");
    let mut hops = 0;
    while let Some(p) = todo.pop() {
        let parts: Vec<Component> = p.components().collect();
        for (i, c) in parts.iter().enumerate() {
            match c {
                Component::RootDir => here = PathBuf::from("/"),
                Component::ParentDir => {
                    here.pop();
                }
                Component::Normal(n) => {
                    let next = here.join(n);
                    let host = rootfs.join(next.strip_prefix("/").unwrap_or(&next));
                    let meta = std::fs::symlink_metadata(&host).ok()?;
                    if meta.file_type().is_symlink() {
                        hops += 1;
                        if hops > 40 {
                            return None;
                        }
                        let target = std::fs::read_link(&host).ok()?;
                        let rest: PathBuf = parts[i + 1..].iter().collect();
                        todo.push(if target.is_absolute() { target.join(rest) } else { here.join(target).join(rest) });
                        break;
                    }
                    here = next;
                }
                _ => {}
            }
            if i + 1 == parts.len() {
                todo.clear();
            }
        }
    }
    let host = rootfs.join(here.strip_prefix("/").unwrap_or(&here));
    host.exists().then_some(host)
}

/// The executable `args[0]` names, found as the init will find it (PATH of the process's env).
fn executable(rootfs: &Path, spec: &Spec) -> Result<String, String> {
    let p = spec.process().as_ref().ok_or("config.json: process: missing")?;
    let arg0 = p.args().as_ref().and_then(|a| a.first()).ok_or("process.args: empty")?;
    let candidates: Vec<PathBuf> = if arg0.contains('/') {
        vec![absolute_in(p.cwd(), arg0)]
    } else {
        let env = p.env().clone().unwrap_or_default();
        let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(':').filter(|d| !d.is_empty()).map(|d| Path::new(d).join(arg0)).collect()
    };
    use std::os::unix::fs::PermissionsExt;
    for c in &candidates {
        if let Some(host) = in_root(rootfs, c) {
            let meta = std::fs::metadata(&host).map_err(|e| format!("{}: {e}", host.display()))?;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(format!("process executable {} found in the new rootfs", c.display()));
            }
        }
    }
    Err(format!("process.args[0] {arg0:?}: no executable file in the new rootfs {} (looked at {})", rootfs.display(), candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")))
}

fn absolute_in(cwd: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.into()
    } else {
        cwd.join(p)
    }
}

/// Every bind source on the host, every molt volume's source (parsed and resolved as `create`
/// does; a remote server is not contacted).
fn mounts(bundle: &Path, spec: &Spec) -> Result<Vec<String>, String> {
    let mut done = vec![];
    for (i, m) in spec.mounts().clone().unwrap_or_default().iter().enumerate() {
        let field = format!("mounts[{i}] ({})", m.destination().display());
        if let Some(v) = crate::volume::from_mount(m).map_err(|e| format!("{field}: {e}"))? {
            done.push(format!("{field}: volume {}", v.key));
            continue;
        }
        let opts = m.options().clone().unwrap_or_default();
        let bind = m.typ().as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind");
        if let (true, Some(src)) = (bind, m.source()) {
            let host = if src.is_absolute() { src.clone() } else { bundle.join(src) };
            if !host.exists() {
                return Err(format!("{field}: bind source {} does not exist", host.display()));
            }
            done.push(format!("{field}: bind source {} exists", host.display()));
        }
    }
    Ok(done)
}

/// Every check `create` would make of the new bundle (its own, then what only a started process
/// would find), in words; the first failure is the error. `join_netns` as for `create::check`.
pub fn check(bundle: &Path, spec: &Spec, join_netns: Option<&Path>) -> Result<Vec<String>, String> {
    let rootfs = crate::container::create::check(bundle, spec, 0, join_netns).map_err(|e| e.to_string())?.rootfs;
    let mut done = vec![
        format!("config.json parsed; rootfs {} is a directory", rootfs.display()),
        "create's checks passed: process, sysctls, intelRdt, listening sockets, seccomp notify, namespaces, idmapped mounts".to_string(),
    ];
    done.push(executable(&rootfs, spec)?);
    let cwd = spec.process().as_ref().map(|p| p.cwd().clone()).unwrap_or_else(|| "/".into());
    done.push(match in_root(&rootfs, &cwd) {
        Some(d) if d.is_dir() => format!("process.cwd {} exists", cwd.display()),
        Some(_) => return Err(format!("process.cwd {}: not a directory in the new rootfs", cwd.display())),
        // As runc: a missing working directory is created.
        None => format!("process.cwd {} will be created", cwd.display()),
    });
    done.extend(mounts(bundle, spec)?);
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_rootfs_never_on_the_host() {
        let d = std::env::temp_dir().join(format!("molt-preflight-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("bin")).unwrap();
        std::fs::write(d.join("bin/busybox"), b"").unwrap();
        std::os::unix::fs::symlink("busybox", d.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("/bin", d.join("sbin")).unwrap();
        // An absolute link is the container's /etc, which this rootfs lacks (the host's exists).
        std::os::unix::fs::symlink("/etc/passwd", d.join("pw")).unwrap();
        assert_eq!(in_root(&d, Path::new("/bin/sh")), Some(d.join("bin/busybox")));
        assert_eq!(in_root(&d, Path::new("/sbin/sh")), Some(d.join("bin/busybox")));
        assert_eq!(in_root(&d, Path::new("/pw")), None);
        assert_eq!(in_root(&d, Path::new("/../../bin/busybox")), Some(d.join("bin/busybox")));
        let _ = std::fs::remove_dir_all(d);
    }
}
