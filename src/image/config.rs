//! The runtime config of an unpacked image: `molt spec`'s default with the image's process
//! (Entrypoint+Cmd, Env, WorkingDir, User), its exposed ports and its labels as annotations, so
//! the version and the upgrade constraint labels become the annotations eligibility reads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{Root, Spec, User};

use super::{layout::Image, ImageError, Result};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image spec's conversion of `Config.ExposedPorts`, which the runtime config has no field
/// for (umoci writes the same): the ports, sorted, joined by ','.
pub const EXPOSED_PORTS_ANNOTATION: &str = "org.opencontainers.image.exposedPorts";

/// The annotations of an image's runtime config: its exposed ports, then its labels, which win
/// on a conflict as the image spec's conversion says.
pub fn annotations(config: &ImageConfiguration) -> HashMap<String, String> {
    let c = config.config().clone().unwrap_or_default();
    let mut out = HashMap::new();
    if let Some(mut ports) = c.exposed_ports().clone().filter(|p| !p.is_empty()) {
        ports.sort();
        out.insert(EXPOSED_PORTS_ANNOTATION.to_string(), ports.join(","));
    }
    out.extend(c.labels().clone().unwrap_or_default());
    out
}

/// `name` in a passwd- or group-style file (`name:x:id:...`): the id fields after the name.
fn lookup(file: &str, name: &str) -> Option<(u32, Option<u32>)> {
    file.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f.get(3).and_then(|g| g.parse().ok()))))?
    })
}

/// A file of the rootfs read as the container would see it, never through a symlink out of it.
fn read_in_rootfs(rootfs: &Path, rel: &str) -> Option<String> {
    let p = super::apply::resolve(rootfs, Path::new(rel)).ok()?;
    std::fs::read_to_string(p).ok()
}

/// The image's `User`: `uid`, `uid:gid`, `name`, `name:group` (names from the rootfs's
/// /etc/passwd and /etc/group); empty means root.
pub fn parse_user(user: &str, rootfs: &Path) -> std::result::Result<User, String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let mut out = User::default();
    if u.is_empty() {
        return Ok(out);
    }
    let (uid, primary) = match u.parse::<u32>() {
        // A numeric user still takes its primary group from passwd when it is listed there.
        Ok(n) => (n, read_in_rootfs(rootfs, "etc/passwd").unwrap_or_default().lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[2] == u).then(|| f[3].parse().ok())?
        })),
        Err(_) => {
            let passwd = read_in_rootfs(rootfs, "etc/passwd").ok_or_else(|| format!("User {user:?}: the image has no readable /etc/passwd to look {u:?} up in"))?;
            lookup(&passwd, u).ok_or_else(|| format!("User {user:?}: no user {u:?} in the image's /etc/passwd"))?
        }
    };
    let gid = match g {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let group = read_in_rootfs(rootfs, "etc/group").ok_or_else(|| format!("User {user:?}: the image has no readable /etc/group to look {g:?} up in"))?;
                lookup(&group, g).map(|x| x.0).ok_or_else(|| format!("User {user:?}: no group {g:?} in the image's /etc/group"))?
            }
        },
    };
    out.set_uid(uid);
    out.set_gid(gid);
    Ok(out)
}

/// The config.json of a bundle whose rootfs (at `root_path`, as written into the config) is the
/// unpacked image at `rootfs`.
pub fn bundle_spec(img: &Image, rootfs: &Path, root_path: PathBuf) -> Result<Spec> {
    let err = |reason: String| ImageError::Config { reference: img.reference.clone(), digest: img.manifest.config().digest().to_string(), reason };
    let mut spec: Spec = serde_json::from_str(&crate::spec::default_config()).map_err(|e| err(format!("molt's default config: {e}")))?;
    let c = img.config.config().clone().unwrap_or_default();
    let mut args = c.entrypoint().clone().unwrap_or_default();
    args.extend(c.cmd().clone().unwrap_or_default());
    if args.is_empty() {
        return Err(err("neither Entrypoint nor Cmd is set: the image names no process to run".into()));
    }
    let mut env = c.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    let cwd = c.working_dir().clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
    if !cwd.starts_with('/') {
        return Err(err(format!("WorkingDir {cwd:?} is not absolute")));
    }
    let user = parse_user(c.user().as_deref().unwrap_or(""), rootfs).map_err(err)?;
    let mut proc = spec.process().clone().unwrap_or_default();
    proc.set_args(Some(args));
    proc.set_env(Some(env));
    proc.set_cwd(cwd.into());
    proc.set_user(user);
    proc.set_terminal(Some(false));
    spec.set_process(Some(proc));
    let mut root = Root::default();
    root.set_path(root_path);
    root.set_readonly(Some(true));
    spec.set_root(Some(root));
    let ann = annotations(&img.config);
    spec.set_annotations((!ann.is_empty()).then_some(ann));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_numbers_or_names_from_the_rootfs() {
        let root = std::env::temp_dir().join(format!("molt-user-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let ids = |s: &str| parse_user(s, &root).map(|u| (u.uid(), u.gid()));
        assert_eq!(ids(""), Ok((0, 0)));
        assert_eq!(ids("7"), Ok((7, 0)));
        assert_eq!(ids("7:8"), Ok((7, 8)));
        assert_eq!(ids("app"), Ok((1000, 1001)));
        assert_eq!(ids("1000"), Ok((1000, 1001)));
        assert_eq!(ids("app:staff"), Ok((1000, 50)));
        assert!(ids("nobody").unwrap_err().contains("no user \"nobody\""));
        assert!(ids("app:wheel").unwrap_err().contains("no group \"wheel\""));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn exposed_ports_become_the_image_specs_annotation_and_labels_win() {
        let config = |c: serde_json::Value| -> ImageConfiguration {
            serde_json::from_value(serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": c})).unwrap()
        };
        let a = annotations(&config(serde_json::json!({
            "ExposedPorts": {"8080/tcp": {}, "53/udp": {}, "2000": {}},
            "Labels": {"org.opencontainers.image.version": "1.1.0"}
        })));
        assert_eq!(a[EXPOSED_PORTS_ANNOTATION], "2000,53/udp,8080/tcp");
        assert_eq!(a["org.opencontainers.image.version"], "1.1.0");
        let a = annotations(&config(serde_json::json!({"ExposedPorts": {"80/tcp": {}}, "Labels": {EXPOSED_PORTS_ANNOTATION: "443/tcp"}})));
        assert_eq!(a[EXPOSED_PORTS_ANNOTATION], "443/tcp", "a label of the same name wins");
        assert!(annotations(&config(serde_json::json!({"ExposedPorts": {}}))).is_empty());
    }
}
