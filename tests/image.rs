//! The new application as an OCI image: layouts and archives written by the tests from the
//! busybox rootfs fixture, an upgrade of a running container from each (the container keeps its
//! volume and identity), `image unpack` then `run`, `image inspect`, and hostile images, each
//! refused with a clear error, nothing half-unpacked left, the running container untouched.

mod common;
use common::*;

use common::app::*;
use common::image::*;
use serde_json::json;
use tar::EntryType;

/// What is in `<root>/images` besides the store lock.
fn store_entries(root: &Root) -> Vec<String> {
    std::fs::read_dir(root.path.join("images"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n != ".lock").collect())
        .unwrap_or_default()
}

#[test]
fn upgrade_from_an_oci_layout_keeps_the_volume_and_hostname_and_the_store_only_images_in_use() {
    require_root!();
    let s = Setup::start("imgl");
    assert!(s.ask("APPEND one").starts_with("OK"));
    let mut l = Layout::new();
    let m = l.image(&app_config("1.1.0"), &[(LAYER_GZIP, rootfs_layer())]);
    l.add(m.clone(), Some("1.1.0"));
    let reference = l.reference(Some("1.1.0"));
    // The dry run names what changes and leaves nothing in the store.
    let out = s.upgrade(&["--image", &reference, "--dry-run"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("1.0.0 -> 1.1.0") && text.contains("APP_VERSION=1.1.0") && text.contains("version     1.0.0 -> 1.1.0"), "{text}");
    // The labels the image brings (its constraint) are named too, with what they replace.
    assert!(text.contains(r#"annotations {"io.molt.app-bundle":null,"io.molt.upgrade.from":null} -> "#) && text.contains(r#""io.molt.upgrade.from":">=1.0.0, <2.0.0"}"#), "{text}");
    assert!(store_entries(&s.root).is_empty(), "{:?}", store_entries(&s.root));
    let out = s.upgrade(&["--image", &reference]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(s.version(), "version=1.1.0 hostname=app-one");
    assert_eq!(s.ask("COUNT"), "1", "the container's own volume came along");
    let hex = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
    let store = s.root.path.join("images").join(format!("sha256-{hex}"));
    assert_eq!(store_entries(&s.root), vec![format!("sha256-{hex}")]);
    let st = s.root.state("imgl");
    assert_eq!(st["annotations"]["io.molt.upgrade.from"], ">=1.0.0, <2.0.0", "{st}");
    // A release that fails its gate is rolled back, and its unpacked image goes with it.
    let mut bad = app_config("1.2.0");
    bad["config"]["Env"].as_array_mut().unwrap().push(json!("APP_FAIL=1"));
    let m_bad = l.image(&bad, &[(LAYER_GZIP, rootfs_layer())]);
    l.add(m_bad, Some("1.2.0-bad"));
    let out = s.upgrade(&["--image", &l.reference(Some("1.2.0-bad")), "--health", "tcp:8080", "--health-timeout", "2s"]);
    assert!(!out.status.success() && stderr_of(&out).contains("rolled back"), "{}", stderr_of(&out));
    assert_eq!((s.version().as_str(), s.ask("COUNT").as_str()), ("version=1.1.0 hostname=app-one", "1"));
    assert_eq!(store_entries(&s.root), vec![format!("sha256-{hex}")]);
    // The next release replaces the image dir of the one it upgrades from.
    let m2 = l.image(&app_config("1.3.0"), &[(LAYER_GZIP, rootfs_layer())]);
    l.add(m2.clone(), Some("1.3.0"));
    let out = s.upgrade(&["--image", &l.reference(Some("1.3.0"))]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!((s.version().as_str(), s.ask("COUNT").as_str()), ("version=1.3.0 hostname=app-one", "1"));
    let hex2 = m2["digest"].as_str().unwrap().trim_start_matches("sha256:");
    assert_eq!(store_entries(&s.root), vec![format!("sha256-{hex2}")], "the 1.1.0 image had its last user");
    assert!(!store.exists());
    // Back to a plain application bundle: the last image dir has no user any more.
    let mut app = Bundle::new(&["/bin/molt-testapp"]);
    app.config["process"]["env"] = json!(["PATH=/bin", "APP_VERSION=1.4.0"]);
    app.config["annotations"] = json!({"org.opencontainers.image.version": "1.4.0"});
    let out = s.upgrade(&["--bundle", &app.write(), "--derive"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!((s.version().as_str(), s.ask("COUNT").as_str()), ("version=1.4.0 hostname=app-one", "1"));
    assert!(store_entries(&s.root).is_empty(), "{:?}", store_entries(&s.root));
}

#[test]
fn upgrade_from_an_oci_archive_picks_this_hosts_platform() {
    require_root!();
    let s = Setup::start("imga");
    assert!(s.ask("APPEND one").starts_with("OK"));
    let mut l = Layout::new();
    // A multi-platform image: an index with a manifest for another platform and one for this host.
    let other = l.image(&config("s390x", &["/bin/true"], &[], "", "/", labels("1.2.0", None)), &[(LAYER_TAR, layer(vec![file("x", b"x")]))]);
    let mine = l.image(&app_config("1.2.0"), &[(LAYER_GZIP, rootfs_layer())]);
    let mut other = other;
    other["platform"] = json!({"os": "linux", "architecture": "s390x"});
    let mut mine = mine;
    mine["platform"] = json!({"os": "linux", "architecture": host_arch()});
    let idx = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [other, mine]});
    let idx = l.blob(INDEX, &serde_json::to_vec(&idx).unwrap());
    l.add(idx, Some("v1.2.0"));
    let tmp = TempDir::new("molt-archive");
    let file = tmp.join("app.tar");
    l.archive(&file);
    let out = s.upgrade(&["--image", &format!("oci-archive:{}:v1.2.0", file.display())]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(s.version(), "version=1.2.0 hostname=app-one");
    assert_eq!(s.ask("COUNT"), "1");
    let left = store_entries(&s.root);
    assert!(left.len() == 1 && left[0].starts_with("sha256-"), "the archive's scratch copy is gone: {left:?}");
}

/// The image path hands molt's listening socket over as the bundle path does: no client is
/// refused or reset under load. The image's own `io.molt.listen` label (another port) is not
/// taken: what to listen on belongs to the deployment.
#[test]
fn upgrade_from_an_image_hands_the_listening_socket_over_under_load() {
    require_root!();
    let s = Setup::start_listening("images-ls", "tcp:0.0.0.0:8080");
    let load = Load::start(&s.net, 2);
    assert!(load.wait_answers("version=1.0.0", 20), "v1 under load: {:?}", load.tally());
    let mut l = Layout::new();
    let mut cfg = app_config("1.1.0");
    cfg["config"]["ExposedPorts"] = json!({"8080/tcp": {}});
    cfg["config"]["Labels"]["io.molt.listen"] = json!("tcp:0.0.0.0:9999");
    let m = l.image(&cfg, &[(LAYER_GZIP, rootfs_layer())]);
    l.add(m, Some("1.1.0"));
    let out = s.upgrade(&["--image", &l.reference(Some("1.1.0")), "--health", "tcp:8080", "--health-timeout", "60s"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(text.contains("holds tcp:0.0.0.0:8080"), "the socket was handed over: {text}");
    assert!(load.wait_answers("version=1.1.0", 20), "v1.1.0 under load: {:?}", load.tally());
    let t = load.stop();
    assert_eq!((t.refused, t.reset, t.timed_out, t.other.len()), (0, 0, 0, 0), "every request answered: {t:?}");
    let st = s.root.state("images-ls");
    assert_eq!(st["annotations"]["io.molt.listen"], "tcp:0.0.0.0:8080", "{st}");
    assert_eq!(st["annotations"]["org.opencontainers.image.exposedPorts"], "8080/tcp", "{st}");
    let pid = st["pid"].as_i64().unwrap();
    let environ = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap()).to_string();
    assert!(environ.contains("LISTEN_FDS=1") && environ.contains("LISTEN_FDNAMES=tcp-8080"), "{environ}");
}

#[test]
fn image_unpack_writes_a_bundle_that_runs_and_inspect_names_the_image() {
    require_root!();
    let mut l = Layout::new();
    let cfg = config(host_arch(), &["sh", "-c", "echo $GREETING $(id -u):$(id -g) $(pwd)"], &["GREETING=hello"], "nobody", "/tmp", labels("3.0.0", Some(">=2.0.0")));
    let zst = zstd::encode_all(layer(vec![file("etc/motd", b"layer two\n")]).as_slice(), 1).unwrap();
    let m = l.image(&cfg, &[(LAYER_GZIP, rootfs_layer()), (LAYER_ZSTD, zst), (LAYER_TAR, layer(vec![file("etc/issue", b"three\n")]))]);
    l.add(m.clone(), None);
    let out = Root::new().molt(&["image", "inspect", &l.reference(None), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["version"].as_str(), v["constraint"].as_str()), (Some("3.0.0"), Some(">=2.0.0")), "{v}");
    assert_eq!(v["manifest"], m["digest"]);
    assert_eq!(v["platform"], format!("linux/{}", host_arch()));
    assert_eq!(v["layers"].as_array().map(Vec::len), Some(3));
    let tmp = TempDir::new("molt-unpack");
    let dir = tmp.join("bundle");
    let root = Root::new();
    root.ok(&["image", "unpack", &l.reference(None), dir.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(dir.join("rootfs/etc/motd")).unwrap(), "layer two\n", "the zstd layer");
    assert_eq!(std::fs::read_to_string(dir.join("rootfs/etc/issue")).unwrap(), "three\n", "the plain tar layer");
    let out = root.molt(&["run", "--bundle", dir.to_str().unwrap(), &unique("unp")]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(stdout_of(&out).trim(), "hello 65534:65534 /tmp");
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["annotations"]["org.opencontainers.image.version"], "3.0.0");
    // A second unpack into the same (now full) directory is refused.
    let out = root.molt(&["image", "unpack", &l.reference(None), dir.to_str().unwrap()]);
    assert!(!out.status.success() && stderr_of(&out).contains("not empty"), "{}", stderr_of(&out));
}

/// A `docker save` archive (written here in Docker 20's format) as the new application, named
/// by its RepoTag; one whose layer is not what its config's diff_id says is refused.
#[test]
fn upgrade_from_a_docker_archive_and_a_layer_that_is_not_its_diff_id_is_refused() {
    require_root!();
    let s = Setup::start("images-docker");
    assert!(s.ask("APPEND one").starts_with("OK"));
    let tmp = TempDir::new("molt-docker-archive");
    let archive = tmp.join("app.tar");
    docker_archive(&archive, app_config("1.1.0"), &[rootfs_tar()], &["registry:5000/app:1.1.0"], None);
    let out = s.upgrade(&["--image", &format!("docker-archive:{}:registry:5000/app:1.1.0", archive.display())]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!((s.version().as_str(), s.ask("COUNT").as_str()), ("version=1.1.0 hostname=app-one", "1"));
    let bad = tmp.join("bad.tar");
    let other = format!("sha256:{}", sha256(b"another layer"));
    docker_archive(&bad, config(host_arch(), &["/bin/sh"], &[], "", "/", labels("2.0.0", None)), &[layer(vec![file("etc/app", b"v2")])], &[], Some(vec![other.clone()]));
    refused(&format!("docker-archive:{}", bad.display()), &format!("the config's diff_id is {other}"));
}

/// An image made by Debian's umoci (`init`, `new`, `unpack`, `repack`, `config`, as scripts/setup
/// installs it) from the busybox rootfs fixture, in two layers, the second with the whiteout
/// umoci writes for a removed file: the upgrade takes it as it takes a layout written here.
#[test]
fn upgrade_from_an_image_made_by_umoci() {
    require_root!();
    let s = Setup::start("images-umoci");
    assert!(s.ask("APPEND one").starts_with("OK"));
    let tmp = TempDir::new("molt-umoci");
    let img = format!("{}:1.1.0", tmp.join("layout").display());
    let umoci = |args: &[&str]| {
        let out = std::process::Command::new("umoci").args(args).output().expect("run umoci (scripts/setup installs it)");
        assert!(out.status.success(), "umoci {args:?}: {}", stderr_of(&out));
    };
    let (b1, b2) = (tmp.join("b1"), tmp.join("b2"));
    umoci(&["init", "--layout", tmp.join("layout").to_str().unwrap()]);
    umoci(&["new", "--image", &img]);
    umoci(&["unpack", "--image", &img, b1.to_str().unwrap()]);
    let cp = std::process::Command::new("cp").arg("-a").arg(rootfs().join(".")).arg(b1.join("rootfs")).status().unwrap();
    assert!(cp.success());
    std::fs::write(b1.join("rootfs/etc/gone-in-layer-two"), "1").unwrap();
    umoci(&["repack", "--image", &img, b1.to_str().unwrap()]);
    umoci(&["unpack", "--image", &img, b2.to_str().unwrap()]);
    std::fs::remove_file(b2.join("rootfs/etc/gone-in-layer-two")).unwrap();
    std::fs::write(b2.join("rootfs/etc/new-in-layer-two"), "2").unwrap();
    umoci(&["repack", "--image", &img, b2.to_str().unwrap()]);
    let env = ["--config.env", "PATH=/bin:/sbin:/usr/bin", "--config.env", "APP_VERSION=1.1.0", "--config.exposedports", "8080/tcp"];
    let labels = ["--config.label", "org.opencontainers.image.version=1.1.0", "--config.label", "io.molt.upgrade.from=>=1.0.0, <2.0.0"];
    umoci(&[&["config", "--image", &img, "--config.cmd", "/bin/molt-testapp"][..], &env, &labels].concat());
    let out = s.upgrade(&["--image", &format!("oci:{img}")]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!((s.version().as_str(), s.ask("COUNT").as_str()), ("version=1.1.0 hostname=app-one", "1"));
    let st = s.root.state("images-umoci");
    assert_eq!(st["annotations"]["org.opencontainers.image.exposedPorts"], "8080/tcp", "{st}");
    let rootfs = std::path::PathBuf::from(st["rootfs"].as_str().unwrap());
    assert!(rootfs.starts_with(s.root.path.join("images")), "{}", rootfs.display());
    assert!(rootfs.join("etc/new-in-layer-two").is_file() && !rootfs.join("etc/gone-in-layer-two").exists(), "umoci's second layer and its whiteout");
}

/// `image unpack` killed part-way (after the tree and config.json are written, before the
/// rename) leaves its work beside DIR under a `.tmp-` name, never a DIR that looks complete; the
/// next unpack into DIR works.
#[test]
fn an_unpack_killed_part_way_leaves_no_dir_that_looks_complete() {
    require_root!();
    let mut l = Layout::new();
    let m = l.image(&app_config("1.0.0"), &[(LAYER_GZIP, rootfs_layer())]);
    l.add(m, None);
    let tmp = TempDir::new("molt-unpack-kill");
    let dir = tmp.join("bundle");
    let root = Root::new();
    let args = ["--root", root.path.to_str().unwrap(), "image", "unpack", &l.reference(None), dir.to_str().unwrap()];
    let out = run_to_files(std::process::Command::new(molt_bin()).args(args).env("MOLT_TEST_CRASH_AT", "image-unpack:applied"));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "did not die at the crash point: {}", stderr_of(&out));
    assert!(!dir.exists(), "no DIR until the unpack is complete");
    let left: Vec<String> = std::fs::read_dir(&*tmp).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
    assert!(left.len() == 1 && left[0].starts_with("bundle.tmp-"), "{left:?}");
    assert!(tmp.join(&left[0]).join("config.json").is_file(), "it died with the bundle written, under its .tmp- name");
    root.ok(&["image", "unpack", &l.reference(None), dir.to_str().unwrap()]);
    assert!(dir.join("config.json").is_file() && dir.join("rootfs/bin/molt-testapp").is_file());
}

/// A running container (busybox, v1.0.0) and an upgrade to `reference` that must fail with
/// `expect` in its message, leaving the container as it was and the store empty.
fn refused(reference: &str, expect: &str) {
    let root = Root::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.config["annotations"] = json!({"org.opencontainers.image.version": "1.0.0"});
    let id = unique("hostile");
    root.ok(&["run", "--detach", "--bundle", &b.write(), &id]);
    let before = root.state(&id);
    let out = root.molt(&["upgrade", &id, "--image", reference]);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "must fail: {}", stdout_of(&out));
    // The messages of runc's log records, unquoted.
    let msg = err.lines().filter_map(logrus_text).map(|(_, m)| m).collect::<Vec<_>>().join("\n");
    assert!(msg.contains(expect), "expected {expect:?} in: {err}");
    assert!(store_entries(&root).is_empty(), "left in the store: {:?}", store_entries(&root));
    assert!(!root.path.join(".derived").join(&id).exists(), "no derived config left");
    let after = root.state(&id);
    assert_eq!((after["status"].as_str(), &after["pid"], &after["bundle"]), (Some("running"), &before["pid"], &before["bundle"]));
}

/// A layout holding one image with the given layer, tagged "bad".
fn one_layer(layer_bytes: Vec<u8>) -> Layout {
    let mut l = Layout::new();
    let m = l.image(&config(host_arch(), &["/bin/sh"], &[], "", "/", labels("2.0.0", None)), &[(LAYER_TAR, layer_bytes)]);
    l.add(m, Some("bad"));
    l
}

/// The blob of the first layer of the layout's first image.
fn first_layer(l: &Layout) -> std::path::PathBuf {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(l.blob_path(&l.entries[0])).unwrap()).unwrap();
    l.blob_path(&m["layers"][0])
}

#[test]
fn a_blob_whose_digest_does_not_match_is_refused() {
    require_root!();
    let l = one_layer(layer(vec![file("etc/app", b"v2")]));
    // Same size, other content.
    let p = first_layer(&l);
    let mut data = std::fs::read(&p).unwrap();
    data[600] ^= 0xff;
    std::fs::write(&p, data).unwrap();
    refused(&l.reference(Some("bad")), "not the descriptor's");
}

#[test]
fn a_truncated_blob_is_refused() {
    require_root!();
    let l = one_layer(layer(vec![file("etc/app", b"v2")]));
    let p = first_layer(&l);
    let data = std::fs::read(&p).unwrap();
    std::fs::write(&p, &data[..data.len() / 2]).unwrap();
    refused(&l.reference(Some("bad")), "the descriptor says");
}

#[test]
fn a_manifest_only_for_another_platform_is_refused_naming_the_platforms() {
    require_root!();
    let mut l = Layout::new();
    let mut m = l.image(&config("s390x", &["/bin/sh"], &[], "", "/", labels("2.0.0", None)), &[(LAYER_TAR, layer(vec![file("x", b"x")]))]);
    m["platform"] = json!({"os": "linux", "architecture": "s390x"});
    let idx = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [m]});
    let idx = l.blob(INDEX, &serde_json::to_vec(&idx).unwrap());
    l.add(idx, Some("bad"));
    refused(&l.reference(Some("bad")), &format!("no manifest for this host's platform linux/{}; platforms found: linux/s390x", host_arch()));
}

#[test]
fn a_missing_tag_is_refused_naming_the_tags() {
    require_root!();
    let l = one_layer(layer(vec![file("etc/app", b"v2")]));
    refused(&l.reference(Some("v9")), "no manifest tagged \"v9\"");
}

#[test]
fn a_layer_with_dotdot_traversal_is_refused() {
    require_root!();
    let victim = TempDir::new("molt-victim");
    let name = format!("../../../../../../../..{}/pwned", victim.display());
    let l = one_layer(layer(vec![file("etc/ok", b"ok"), file(&name, b"pwned")]));
    refused(&l.reference(Some("bad")), "would leave the rootfs");
    assert!(!victim.join("pwned").exists());
}

#[test]
fn an_absolute_symlink_followed_by_a_file_under_it_is_refused() {
    require_root!();
    let victim = TempDir::new("molt-victim");
    let l = one_layer(layer(vec![link("evil", EntryType::Symlink, victim.to_str().unwrap()), file("evil/pwned", b"pwned")]));
    refused(&l.reference(Some("bad")), "is a symlink to the absolute path");
    assert!(!victim.join("pwned").exists());
}

#[test]
fn a_hard_link_to_a_host_path_is_refused() {
    require_root!();
    let victim = TempDir::new("molt-victim");
    std::fs::write(victim.join("secret"), "host").unwrap();
    let target = victim.join("secret");
    let l = one_layer(layer(vec![link("etc/stolen", EntryType::Link, target.to_str().unwrap())]));
    refused(&l.reference(Some("bad")), "hard link to the absolute path");
    let l = one_layer(layer(vec![link("etc/stolen", EntryType::Link, "../../../../etc/shadow")]));
    refused(&l.reference(Some("bad")), "would leave the rootfs");
}

#[test]
fn a_whiteout_of_the_directory_itself_or_its_parent_is_refused() {
    require_root!();
    for name in ["etc/.wh..", "etc/.wh...", ".wh..."] {
        let l = one_layer(layer(vec![file("etc/ok", b"ok"), file(name, b"")]));
        refused(&l.reference(Some("bad")), "a whiteout that names no file of its directory");
    }
}

#[test]
fn a_device_node_is_refused() {
    require_root!();
    let mut h = header("dev/sda-copy", EntryType::Block, 0);
    h.set_device_major(8).unwrap();
    h.set_device_minor(0).unwrap();
    let l = one_layer(layer(vec![file("etc/ok", b"ok"), (h, vec![])]));
    refused(&l.reference(Some("bad")), "a device node");
}

#[test]
fn whiteouts_and_opaque_dirs_hide_what_lower_layers_wrote_and_modes_owners_xattrs_links_are_kept() {
    require_root!();
    let mut l = Layout::new();
    let low = layer(vec![file("a/keep", b"1"), file("a/gone", b"1"), file("b/old", b"1"), file("c/hard", b"same")]);
    let mut suid = file("c/suid", b"#!/bin/sh\n");
    suid.0.set_mode(0o4755);
    suid.0.set_uid(1000);
    suid.0.set_gid(1001);
    let high = layer(vec![
        pax(&[("SCHILY.xattr.user.molt", b"kept")]),
        suid,
        file("a/.wh.gone", b""),
        (header("b", EntryType::Directory, 0), vec![]),
        file("b/.wh..wh..opq", b""),
        file("b/new", b"2"),
        link("c/linked", EntryType::Link, "c/hard"),
    ]);
    let m = l.image(&config(host_arch(), &["/bin/sh"], &[], "", "/", labels("1.0.0", None)), &[(LAYER_TAR, low), (LAYER_TAR, high)]);
    l.add(m, None);
    let tmp = TempDir::new("molt-unpack");
    let dir = tmp.join("b");
    Root::new().ok(&["image", "unpack", &l.reference(None), dir.to_str().unwrap()]);
    let r = dir.join("rootfs");
    assert!(r.join("a/keep").exists() && !r.join("a/gone").exists() && !r.join("a/.wh.gone").exists());
    assert!(!r.join("b/old").exists() && r.join("b/new").exists() && !r.join("b/.wh..wh..opq").exists());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(r.join("c/linked")).unwrap().ino(), std::fs::metadata(r.join("c/hard")).unwrap().ino());
    let m = std::fs::metadata(r.join("c/suid")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4755, 1000, 1001), "mode with set-uid and ownership kept");
    let mut buf = [0u8; 16];
    let path = std::ffi::CString::new(r.join("c/suid").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings and a buffer of buf.len() bytes.
    let n = unsafe { libc::lgetxattr(path.as_ptr(), c"user.molt".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(&buf[..n.max(0) as usize], b"kept", "the xattr from the pax header");
}

#[test]
fn image_prune_removes_interrupted_unpacks_and_images_no_container_uses() {
    require_root!();
    let root = Root::new();
    let images = root.path.join("images");
    let mut l = Layout::new();
    let m = l.image(&config(host_arch(), &["sleep", "1000"], &[], "", "/", labels("1.0.0", None)), &[(LAYER_GZIP, rootfs_layer())]);
    l.add(m, None);
    // One image dir a running container uses, one nothing uses, one unpack that was interrupted.
    let used = images.join("sha256-used");
    root.ok(&["image", "unpack", &l.reference(None), used.to_str().unwrap()]);
    let id = unique("pr");
    root.ok(&["run", "--detach", "--bundle", used.to_str().unwrap(), &id]);
    for stray in ["sha256-unused/rootfs/bin", ".tmp-sha256-abc-1-2/rootfs"] {
        std::fs::create_dir_all(images.join(stray)).unwrap();
    }
    let out = root.ok(&["image", "prune"]);
    assert!(out.contains("sha256-unused") && out.contains(".tmp-sha256-abc"), "{out}");
    assert_eq!(store_entries(&root), vec!["sha256-used".to_string()]);
    root.ok(&["delete", "--force", &id]);
    assert!(store_entries(&root).is_empty(), "removed with its last container: {:?}", store_entries(&root));
}

#[test]
fn a_crash_during_an_image_upgrade_is_rolled_back_or_committed_and_the_store_follows() {
    require_root!();
    let s = Setup::start("imgc");
    assert!(s.ask("APPEND one").starts_with("OK"));
    let mut l = Layout::new();
    let m = l.image(&app_config("1.1.0"), &[(LAYER_GZIP, rootfs_layer())]);
    l.add(m.clone(), None);
    let hex = m["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    for (crash_at, outcome, version, store) in [
        ("start-new:before", "rolled back", "1.0.0", vec![]),
        ("commit:before", "committed", "1.1.0", vec![format!("sha256-{hex}")]),
    ] {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net={}", s.net.path.display()))
            .arg(molt_bin())
            .args(["--root", s.root.path.to_str().unwrap(), "upgrade", "imgc", "--image", &l.reference(None)])
            .env("MOLT_TEST_CRASH_AT", crash_at);
        let out = run_to_files(&mut cmd);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "{crash_at} did not crash: {}", stderr_of(&out));
        let out = s.net.molt(&s.root, &["upgrade", "--resume", "imgc"]);
        assert!(out.status.success() && stdout_of(&out).contains(outcome), "{crash_at}: {}{}", stdout_of(&out), stderr_of(&out));
        assert_eq!(s.version(), format!("version={version} hostname=app-one"), "after {crash_at}");
        assert_eq!(s.ask("COUNT"), "1", "after {crash_at}");
        assert_eq!(store_entries(&s.root), store, "after {crash_at}");
    }
}
