//! What an operator reads: a plain word when molt is not run as root, the commit in --version,
//! one ociVersion across state and list, an exec error said once, aligned volume columns,
//! every upgrade option described in --help, and a VM lab that runs from any folder.

mod common;
use common::app::*;
use common::*;

use std::process::Command;

#[test]
fn not_root_is_told_plainly_and_nothing_is_created() {
    require_root!();
    let dir = TempDir::new("molt-nonroot");
    let root = dir.join("root");
    for args in [vec!["list"], vec!["state", "x"], vec!["run", "--bundle", "/nonexistent", "x"]] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(molt_bin())
            .arg("--root")
            .arg(&root)
            .args(&args)
            .output()
            .expect("setpriv (util-linux)");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr_of(&out);
        assert!(err.contains("needs root") && err.contains("rootless containers are not supported"), "{args:?}: {err}");
        assert!(!root.exists(), "{args:?} created {}", root.display());
    }
    // What needs no privilege still works without it.
    let out = Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(molt_bin()).arg("features").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = Command::new(molt_bin()).arg("--version").output().unwrap();
    let text = stdout_of(&out);
    let head = Command::new("git").args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"]).output().ok().filter(|o| o.status.success());
    match head {
        // The test binary and molt were built together, from this checkout's HEAD.
        Some(h) => assert!(text.contains(&format!("commit: {}", stdout_of(&h).trim())), "{text}"),
        None => assert!(text.contains("commit: unknown"), "not a git checkout: {text}"),
    }
}

#[test]
fn state_and_list_agree_on_oci_version_and_a_missing_command_is_said_once() {
    require_root!();
    let root = Root::new();
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.config["ociVersion"] = serde_json::json!("1.0.2");
    let dir = b.write();
    root.ok(&["run", "--detach", "--bundle", &dir, "ov"]);
    assert_eq!(root.state("ov")["ociVersion"], "1.0.2");
    let list: serde_json::Value = serde_json::from_str(&stdout_of(&root.molt(&["list", "--format", "json"]))).unwrap();
    assert_eq!(list[0]["ociVersion"], "1.0.2", "{list}");
    let out = root.molt(&["exec", "ov", "nosuchcmd"]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    let msg = err.lines().find_map(logrus_text).map(|(_, m)| m).unwrap_or_else(|| panic!("no log record: {err}"));
    assert!(msg.contains(r#"unable to start container process: exec: "nosuchcmd": executable file not found in $PATH"#), "{msg}");
    assert!(!msg.contains("exec: exec:"), "{msg}");
}

#[test]
fn volume_list_columns_line_up() {
    require_root!();
    let root = Root::new();
    let dir = TempDir::new("molt-vol-cols");
    let img = make_volume(&dir);
    let mut b = Bundle::new(&["sleep", "1000"]);
    b.config["mounts"].as_array_mut().unwrap().push(loop_volume(&img));
    let bundle = b.write();
    root.ok(&["run", "--detach", "--bundle", &bundle, "vc"]);
    let text = stdout_of(&root.molt(&["volume", "list"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for col in ["KIND", "STATE", "USERS", "SOURCE"] {
        let at = lines[0].find(col).unwrap_or_else(|| panic!("{col} in {text}"));
        let cell = &lines[1][at..];
        assert!(at > 0 && lines[1].as_bytes()[at - 1] == b' ' && !cell.starts_with(' '), "{col} does not line up:\n{text}");
    }
    root.ok(&["delete", "--force", "vc"]);
}

#[test]
fn every_upgrade_option_is_described_in_help() {
    let out = Command::new(molt_bin()).args(["upgrade", "--help"]).output().unwrap();
    let text = stdout_of(&out);
    // clap's long help: each option line is followed by its description, indented deeper.
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        if t.starts_with("--") || t.starts_with("-b") {
            let next = lines.get(i + 1).copied().unwrap_or("");
            assert!(next.starts_with("          ") && !next.trim().is_empty() && !next.trim_start().starts_with('-'), "{t} has no description:\n{text}");
        }
    }
    assert!(text.contains("<ID>  The running container to upgrade"), "{text}");
}

#[test]
fn man_pages_and_completions_come_from_the_same_flags() {
    // scripts/install with the binary under test (it builds a release one without --bin): the
    // binary, its pages and completions, as an operator gets them.
    let dir = TempDir::new("molt-man");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install");
    let out = Command::new(&script).arg("--bin").arg(molt_bin()).arg("--destdir").arg(&dir.0).args(["--prefix", "/usr"]).output().unwrap();
    assert!(out.status.success(), "scripts/install: {}", stderr_of(&out));
    let usr = dir.join("usr");
    let installed = Command::new(usr.join("bin/molt")).arg("--version").output().unwrap();
    assert!(installed.status.success() && stdout_of(&installed).contains("spec:"), "installed molt --version: {}", stderr_of(&installed));
    let man = usr.join("share/man/man1");
    for page in ["molt.1", "molt-run.1", "molt-upgrade.1", "molt-bundle-upgrade.1"] {
        let text = std::fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page} is not roff");
    }
    let upgrade = std::fs::read_to_string(man.join("molt-upgrade.1")).unwrap();
    assert!(upgrade.contains("derive") && upgrade.contains("stop\\-timeout"), "{upgrade}");
    let completions = usr.join("share");
    for file in ["bash-completion/completions/molt", "zsh/site-functions/_molt", "fish/vendor_completions.d/molt.fish"] {
        let text = std::fs::read_to_string(completions.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains("upgrade"), "{file} does not complete upgrade");
    }
    let st = Command::new("bash").arg("-n").arg(completions.join("bash-completion/completions/molt")).status().unwrap();
    assert!(st.success(), "the bash completion does not parse");
}

#[test]
fn debug_logs_namespaces_mounts_cgroup_writes_and_hooks() {
    require_root!();
    let root = Root::new();
    let dir = TempDir::new("molt-debug");
    let log = dir.join("log.json");
    let mut b = Bundle::new(&["true"]);
    b.config["hooks"] = serde_json::json!({"prestart": [{"path": "/bin/true"}]});
    let bundle = b.write();
    let molt = |args: &[&str], debug: bool| {
        let mut cmd = Command::new(molt_bin());
        cmd.arg("--root").arg(&root.path).arg("--log").arg(&log).args(["--log-format", "json"]);
        if debug {
            cmd.arg("--debug");
        }
        let out = cmd.args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
    };
    molt(&["run", "--bundle", &bundle, "quiet"], false);
    assert!(!std::fs::read_to_string(&log).unwrap_or_default().contains("\"debug\""), "no debug records without --debug");
    molt(&["run", "--bundle", &bundle, "dbg"], true);
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&log).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let debug: Vec<String> = records.iter().filter(|r| r["level"] == "debug").map(|r| r["msg"].as_str().unwrap_or("").to_string()).collect();
    for want in ["namespace: unshare", "mount: ", "cgroup: mkdir", "cgroup: write", "hook prestart: run /bin/true"] {
        assert!(debug.iter().any(|m| m.starts_with(want)), "no {want:?} record in {debug:#?}");
    }
}

/// The VM lab from any folder, without booting: virtme-ng hides /var/tmp (and /run, /var/log,
/// /var/cache) under a tmpfs in the guest, so a checkout there must be shared with `--rodir` at
/// its real path, also when reached through a symlink from elsewhere; one under /tmp (the guest
/// sees the host's) needs no share. `--dry-run` prints the vng command and checks no host tools.
#[test]
fn the_vm_lab_shares_a_checkout_that_the_guest_would_not_see() {
    let top = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy_under = |parent: &str| {
        let dir = TempDir(std::path::Path::new(parent).join(unique("molt-lab-checkout")));
        std::fs::create_dir_all(dir.join("scripts")).unwrap();
        let st = Command::new("cp").arg("-a").arg(top.join("scripts/vm-lab")).arg(top.join("scripts/lab")).arg(dir.join("scripts")).status().expect("cp");
        assert!(st.success(), "copy scripts/vm-lab and scripts/lab into {}", dir.display());
        dir
    };
    let hidden = copy_under("/var/tmp");
    let visible = copy_under("/tmp");
    let link = TempDir(std::path::Path::new("/tmp").join(unique("molt-lab-link")));
    std::os::unix::fs::symlink(&hidden.0, &link.0).unwrap();
    let dry_run = |checkout: &std::path::Path| {
        let out = Command::new(checkout.join("scripts/vm-lab")).args(["--dry-run", "--kernel", "/boot/vmlinuz-lab"]).output().expect("run scripts/vm-lab");
        assert!(out.status.success(), "{}: {}", checkout.display(), stderr_of(&out));
        stdout_of(&out)
    };
    for (checkout, shared) in [(&hidden.0, Some(&hidden.0)), (&link.0, Some(&hidden.0)), (&visible.0, None)] {
        let vng = dry_run(checkout);
        assert!(vng.starts_with("vng --run /boot/vmlinuz-lab "), "{vng}");
        let real = shared.unwrap_or(checkout).display().to_string();
        assert!(vng.contains(&format!("{real}/scripts/lab/guest-main")), "the guest runs the lab from {real}: {vng}");
        match shared {
            Some(dir) => assert!(vng.contains(&format!("--rodir {} ", dir.display())), "{} not shared: {vng}", dir.display()),
            None => assert!(!vng.contains("--rodir"), "{vng}"),
        }
    }
}
