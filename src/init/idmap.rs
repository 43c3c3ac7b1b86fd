//! Idmapped bind mounts (runtime-spec 1.2: the `idmap` and `ridmap` options, per-mount
//! `uidMappings` and `gidMappings`). molt, with the host's privileges, copies the bind source as
//! a detached tree in the init's mount namespace, gives it the id mapping of a user namespace
//! (one made for the mount's own mappings, or the container's when the mount names none) and
//! sends it to the init, which attaches it where the bind would have gone (as runc >= 1.2 does).
//! A file owned by id N on disk then shows as the host id that N maps to, and a file written
//! through the mount is stored with the id it maps back to.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::{fork, ForkResult};
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

use super::channel::{Channel, Msg};

/// One idmapped bind mount, by index into `mounts`.
#[derive(Debug)]
pub struct Request {
    pub index: usize,
    pub source: PathBuf,
    /// `rbind`: the tree under the source comes too.
    pub recursive_bind: bool,
    /// `ridmap`: every mount of that tree is idmapped, not only its top.
    pub recursive_idmap: bool,
    /// The mount's own (uid, gid) mappings; none: the container's user namespace's.
    pub maps: Option<(Vec<LinuxIdMapping>, Vec<LinuxIdMapping>)>,
}

/// "containerID hostID size" lines, as /proc/PID/uid_map and gid_map take them.
pub fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect()
}

fn has_option(m: &Mount, name: &str) -> bool {
    m.options().as_ref().is_some_and(|o| o.iter().any(|x| x == name))
}

/// The idmapped mounts the config asks for, checked as the spec says; an error names the mount
/// and the field. `volume_mounts` are molt's volumes, which are not idmapped.
pub fn requests(spec: &Spec, bundle: &Path, new_user_ns: bool, volume_mounts: &[usize]) -> Result<Vec<Request>, (String, String)> {
    let mut out = vec![];
    for (i, m) in spec.mounts().clone().unwrap_or_default().iter().enumerate() {
        let field = format!("mounts[{i}] ({})", m.destination().display());
        let uid = m.uid_mappings().clone().filter(|v| !v.is_empty());
        let gid = m.gid_mappings().clone().filter(|v| !v.is_empty());
        let recursive_idmap = has_option(m, "ridmap");
        if !(recursive_idmap || has_option(m, "idmap") || uid.is_some() || gid.is_some()) {
            continue;
        }
        let refuse = |reason: &str| Err((field.clone(), reason.to_string()));
        let maps = match (uid, gid) {
            (Some(u), Some(g)) => Some((u, g)),
            (None, None) if new_user_ns => None,
            (None, None) => return refuse("idmap without uidMappings and gidMappings needs the container's own user namespace (linux.namespaces has none)"),
            _ => return refuse("uidMappings and gidMappings must be given together"),
        };
        if !super::rootfs::is_bind(m) {
            return refuse("only bind mounts can be idmapped");
        }
        if volume_mounts.contains(&i) {
            return refuse("a molt volume cannot be idmapped");
        }
        let Some(source) = m.source().clone() else { return refuse("an idmapped bind mount needs a source") };
        out.push(Request {
            index: i,
            source: if source.is_absolute() { source } else { bundle.join(source) },
            recursive_bind: has_option(m, "rbind"),
            recursive_idmap,
            maps,
        });
    }
    Ok(out)
}

/// A user namespace with these mappings: a child unshares one and waits while its maps are
/// written and the namespace is opened, then exits; the fd keeps the namespace alive.
fn user_namespace_with(uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> Result<OwnedFd, String> {
    let (mut ready_rd, ready_wr) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (done_rd, done_wr) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the child only calls unshare, write, read and _exit; molt is single-threaded here.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(ready_rd);
            drop(done_wr);
            let ok: &[u8] = if nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_ok() { b"1" } else { b"0" };
            let _ = nix::unistd::write(&ready_wr, ok);
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(done_rd.as_raw_fd(), &mut b);
            // SAFETY: _exit in the forked child, nothing to unwind.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_wr);
            drop(done_rd);
            let mut b = [0u8; 1];
            let made = std::io::Read::read(&mut ready_rd, &mut b).map(|n| n == 1 && b[0] == b'1').unwrap_or(false);
            let res = if made {
                (|| {
                    for (file, maps) in [("uid_map", uid), ("gid_map", gid)] {
                        let path = format!("/proc/{child}/{file}");
                        let text = map_text(maps);
                        std::fs::write(&path, &text).map_err(|e| format!("{path} <- {text:?}: {e}"))?;
                    }
                    let ns = format!("/proc/{child}/ns/user");
                    std::fs::File::open(&ns).map(OwnedFd::from).map_err(|e| format!("open {ns}: {e}"))
                })()
            } else {
                Err("unshare a user namespace for the mount's mappings failed".to_string())
            };
            drop(done_wr);
            let _ = nix::sys::wait::waitpid(child, None);
            res
        }
    }
}

/// Make each requested mount as a detached idmapped tree in the init's mount namespace and send
/// them to the init (Msg::IdmappedMounts, one fd per mount).
pub fn send(chan: &Channel, pid: i32, requests: &[Request]) -> Result<(), String> {
    let container_ns = format!("/proc/{pid}/ns/user");
    let usernss = requests
        .iter()
        .map(|r| match &r.maps {
            Some((u, g)) => user_namespace_with(u, g),
            None => std::fs::File::open(&container_ns).map(OwnedFd::from).map_err(|e| format!("open {container_ns}: {e}")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ns = [(CloneFlags::CLONE_NEWNS, crate::namespaces::path(pid, "mnt"))];
    crate::namespaces::run_in(&ns, || {
        let mut trees = vec![];
        for (r, userns) in requests.iter().zip(&usernss) {
            let fail = |e: String| format!("{} (mounts[{}]): {e}", r.source.display(), r.index);
            let tree = crate::mount_api::open_tree_clone(&r.source, r.recursive_bind).map_err(fail)?;
            crate::mount_api::set_idmap(&tree, userns, r.recursive_idmap).map_err(fail)?;
            trees.push((r.index, tree));
        }
        for chunk in trees.chunks(super::channel::MAX_FDS) {
            let mounts = chunk.iter().map(|(i, _)| *i).collect();
            let fds: Vec<_> = chunk.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
            chan.send_with_fds(&Msg::IdmappedMounts { mounts }, &fds).map_err(|e| format!("send to the init: {e}"))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mounts: serde_json::Value, user_ns: bool) -> Spec {
        let ns = if user_ns { serde_json::json!([{"type": "mount"}, {"type": "user"}]) } else { serde_json::json!([{"type": "mount"}]) };
        serde_json::from_value(serde_json::json!({"ociVersion": "1.2.0", "mounts": mounts, "linux": {"namespaces": ns}})).unwrap()
    }

    #[test]
    fn requests_follow_the_spec_and_errors_name_the_mount() {
        let map = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
        let s = spec(serde_json::json!([
            {"destination": "/plain", "type": "bind", "source": "/a", "options": ["bind"]},
            {"destination": "/m", "type": "bind", "source": "rel", "options": ["rbind", "ridmap"], "uidMappings": map, "gidMappings": map},
        ]), false);
        let r = requests(&s, Path::new("/bundle"), false, &[]).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].index, r[0].source.as_path(), r[0].recursive_bind, r[0].recursive_idmap), (1, Path::new("/bundle/rel"), true, true));
        let err = |mounts, user_ns| requests(&spec(mounts, user_ns), Path::new("/b"), user_ns, &[]).unwrap_err();
        let (field, why) = err(serde_json::json!([{"destination": "/m", "source": "/a", "options": ["bind", "idmap"]}]), false);
        assert!(field.contains("mounts[0] (/m)") && why.contains("user namespace"), "{field}: {why}");
        assert!(requests(&spec(serde_json::json!([{"destination": "/m", "source": "/a", "options": ["bind", "idmap"]}]), true), Path::new("/b"), true, &[]).unwrap()[0].maps.is_none());
        let (_, why) = err(serde_json::json!([{"destination": "/m", "source": "/a", "options": ["bind"], "uidMappings": map}]), false);
        assert!(why.contains("together"), "{why}");
        let (_, why) = err(serde_json::json!([{"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"], "uidMappings": map, "gidMappings": map}]), false);
        assert!(why.contains("only bind mounts"), "{why}");
    }
}
