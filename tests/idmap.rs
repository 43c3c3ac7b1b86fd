//! Idmapped bind mounts (runtime-spec 1.2 `idmap`/`ridmap`, per-mount `uidMappings` and
//! `gidMappings`), checked against the spec's text: Debian's runc 1.1.5 predates them (it ignores
//! the mappings and passes the options to mount(2)). The host's /tmp is ext4, which supports them.

mod common;
use common::*;
use serde_json::json;
use std::os::unix::fs::MetadataExt;

fn owned_dir() -> TempDir {
    let dir = TempDir::new("molt-idmap");
    std::fs::write(dir.join("by-root"), "r").unwrap();
    std::fs::write(dir.join("by-1000"), "u").unwrap();
    std::os::unix::fs::chown(dir.join("by-1000"), Some(1000), Some(1000)).unwrap();
    dir
}

/// uid 0 on disk shows as 1000 through a mount mapped 0 -> 1000, an id outside the mapping as
/// the overflow id, and a file a process of uid 1000 writes through it is stored as uid 0.
#[test]
fn a_mounts_own_mapping_shows_and_stores_ids_through_it() {
    require_root!();
    let dir = owned_dir();
    let map = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    let mut b = Bundle::new(&["sh", "-c", "stat -c '%n %u %g' /m/by-root /m/by-1000 && touch /m/written"]);
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/m", "type": "bind", "source": dir.to_str().unwrap(),
        "options": ["bind", "idmap"], "uidMappings": map, "gidMappings": map,
    }));
    let root = Root::new();
    let out = root.molt(&["run", "--bundle", &b.write(), "idm"]);
    assert!(out.status.success(), "{}{}", stdout_of(&out), stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("/m/by-root 1000 1000"), "{text}");
    assert!(text.contains("/m/by-1000 65534 65534"), "{text}");
    let written = std::fs::metadata(dir.join("written")).unwrap();
    assert_eq!((written.uid(), written.gid()), (0, 0), "stored through the mapping");
    // The host's view is unchanged, and nothing of the mount is left on the host.
    assert_eq!(std::fs::metadata(dir.join("by-1000")).unwrap().uid(), 1000);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(dir.to_str().unwrap()), "{mounts}");
}

/// `idmap` without mappings takes the container's user namespace's: a root-owned file shows as
/// the container's root instead of the overflow id.
#[test]
fn idmap_without_mappings_uses_the_containers_user_namespace() {
    require_root!();
    let dir = owned_dir();
    let mut seen = vec![];
    for options in [json!(["bind"]), json!(["bind", "idmap"])] {
        let mut b = Bundle::new(&["stat", "-c", "%u", "/m/by-root"]);
        b.add_namespace(json!({"type": "user"}));
        b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": "/m", "type": "bind", "source": dir.to_str().unwrap(), "options": options}));
        let root = Root::new();
        let out = root.molt(&["run", "--bundle", &b.write(), "idu"]);
        assert!(out.status.success(), "{}", stderr_of(&out));
        seen.push(stdout_of(&out).trim().to_string());
    }
    assert_eq!(seen, ["65534", "0"]);
}

/// `ridmap` maps the mounts under an `rbind` source too; `idmap` only the top one.
#[test]
fn ridmap_maps_the_whole_tree() {
    require_root!();
    let dir = owned_dir();
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let st = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "molt-idmap", sub.to_str().unwrap()]).status().unwrap();
    assert!(st.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _guard = Unmount(sub.clone());
    let map = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    let mut seen = vec![];
    for option in ["idmap", "ridmap"] {
        let mut b = Bundle::new(&["stat", "-c", "%u", "/m/by-root", "/m/sub"]);
        b.config["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/m", "type": "bind", "source": dir.to_str().unwrap(),
            "options": ["rbind", option], "uidMappings": map, "gidMappings": map,
        }));
        let root = Root::new();
        let out = root.molt(&["run", "--bundle", &b.write(), "idr"]);
        assert!(out.status.success(), "{}", stderr_of(&out));
        seen.push(stdout_of(&out).split_whitespace().collect::<Vec<_>>().join(" "));
    }
    assert_eq!(seen, ["1000 0", "1000 1000"], "idmap leaves the tmpfs under the source unmapped, ridmap maps it");
}

/// What the spec says must fail fails at create, naming the mount, with nothing left.
#[test]
fn idmap_errors_name_the_mount_and_leave_nothing() {
    require_root!();
    let dir = owned_dir();
    let map = json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
    let cases = [
        (json!({"destination": "/m", "type": "bind", "source": dir.to_str().unwrap(), "options": ["bind", "idmap"]}), "needs the container's own user namespace"),
        (json!({"destination": "/m", "type": "bind", "source": dir.to_str().unwrap(), "options": ["bind", "idmap"], "uidMappings": map}), "must be given together"),
        (json!({"destination": "/m", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"], "uidMappings": map, "gidMappings": map}), "only bind mounts"),
    ];
    let root = Root::new();
    for (mount, why) in cases {
        let mut b = Bundle::new(&["true"]);
        b.config["mounts"].as_array_mut().unwrap().push(mount);
        let out = root.molt(&["run", "--bundle", &b.write(), "ide"]);
        assert!(!out.status.success());
        let err = stderr_of(&out);
        assert!(err.contains("(/m)") && err.contains(why), "{err}");
        assert!(root.ok(&["list", "-q"]).trim().is_empty());
    }
}
