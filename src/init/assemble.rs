//! The order in which the container's root is put together, where order is security (runc's):
//! every config mount made through fds before the switch, the switch, then the read-only root,
//! the names and sysctls while /proc/sys is still writable, and last the read-only and masked
//! paths, over mounts that all exist by then (/proc included), and the root's own propagation.

use oci_spec::runtime::Spec;

use super::rootfs::{self, RootfsPlan};
use super::InitError;
use crate::kernel::Kernel;

/// The init's own steps between the mount steps.
pub(super) struct Between<'a> {
    /// After the config's mounts, before the switch: the console, the createContainer hooks.
    pub before_switch: &'a mut dyn FnMut() -> Result<(), InitError>,
    /// After the switch, before the root turns read-only: unix sockets bound at the container's paths.
    pub after_switch: &'a mut dyn FnMut() -> Result<(), InitError>,
    /// Hostname, domainname and sysctls.
    pub names_and_sysctls: &'a mut dyn FnMut() -> Result<(), InitError>,
}

pub(super) fn assemble(k: &impl Kernel, spec: &Spec, rplan: RootfsPlan, no_pivot: bool, between: Between) -> Result<(), InitError> {
    let root = rplan.rootfs;
    rootfs::prepare(k, rplan)?;
    (between.before_switch)()?;
    rootfs::switch_root(k, root, no_pivot)?;
    (between.after_switch)()?;
    rootfs::readonly_root(k, spec)?;
    (between.names_and_sysctls)()?;
    rootfs::protect_paths(k, spec)?;
    rootfs::root_propagation_last(k, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::recording::Recording;
    use std::path::{Path, PathBuf};

    struct Scratch {
        base: PathBuf,
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    /// A rootfs, a bind source, a read-only path and two masked paths (a directory and a file),
    /// all in a scratch directory: the fake kernel never switches root, so the paths the init
    /// would see after the switch are the host's and must exist here.
    fn config(tag: &str) -> (Scratch, Spec) {
        let base = std::env::temp_dir().join(format!("molt-seam-root-{tag}-{}", std::process::id()));
        for d in ["rootfs", "src", "ro", "masked-dir"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(base.join("masked-file"), "secret").unwrap();
        let p = |s: &str| base.join(s).display().to_string();
        let spec = serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": p("rootfs"), "readonly": true},
            "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "ro"]},
                {"destination": "/data", "type": "bind", "source": p("src"), "options": ["rbind", "ro", "rprivate"]}
            ],
            "linux": {
                "rootfsPropagation": "shared",
                "readonlyPaths": [p("ro")],
                "maskedPaths": [p("masked-dir"), p("masked-file"), p("absent")]
            }
        });
        (Scratch { base }, serde_json::from_value(spec).unwrap())
    }

    fn run(k: &Recording, spec: &Spec, rootfs: &Path) {
        let note = |s: &str| k.calls.borrow_mut().push(s.to_string());
        let rplan = RootfsPlan {
            spec,
            rootfs,
            volume_binds: &[],
            deferred: &[],
            bind_fds: vec![],
            idmapped: vec![],
            // The host's device nodes bound, as in a user namespace: no mknod in a unit test.
            in_user_ns: true,
            own_cgroups: &[],
        };
        let between = Between {
            before_switch: &mut || {
                note("hooks");
                Ok(())
            },
            after_switch: &mut || {
                note("listen");
                Ok(())
            },
            names_and_sysctls: &mut || {
                note("sysctls");
                Ok(())
            },
        };
        assemble(k, spec, rplan, false, between).unwrap();
    }

    #[test]
    fn every_mount_is_made_through_fds_before_the_switch_and_nothing_after_it_but_protection() {
        let (s, spec) = config("order");
        let rootfs = s.base.join("rootfs");
        let k = Recording::default();
        run(&k, &spec, &rootfs);
        let lines = k.lines();
        let r = rootfs.display().to_string();
        // Nothing may propagate to the host: the first call of all.
        assert_eq!(lines[0], "mount none / MS_REC | MS_SLAVE", "{lines:#?}");
        // The root is a mount of its own before any target is resolved in it.
        let self_bind = k.pos(&format!("mount {r} {r} MS_BIND | MS_REC"));
        assert!(self_bind < k.pos("fsmount") && self_bind < k.pos("open_tree"), "{lines:#?}");
        // Each config mount is attached on the fd of its target, never by a path.
        let pivot = k.pos("pivot_root");
        for (what, dest) in [("fs:proc:proc", "proc"), ("fs:tmpfs:tmpfs", "dev"), (&*format!("tree:{}", s.base.join("src").display()), "data")] {
            let attach = k.pos(&format!("move_mount {what} -> {r}/{dest}"));
            assert!(self_bind < attach && attach < pivot, "{what}: {lines:#?}");
        }
        for l in &lines[..pivot] {
            if let Some(rest) = l.strip_prefix("mount ") {
                let target = rest.split(' ').nth(1).unwrap_or("");
                assert!(target == "/" || target == r, "a mount by path under the rootfs: {l}");
            }
        }
        // The read-only tmpfs on /dev turns read-only after the device nodes are made in it.
        let dev_ro = k.pos("mount_setattr fs:tmpfs:tmpfs set 0x1 clear 0x0");
        let last_node = lines.iter().rposition(|l| l.starts_with("move_mount tree:/dev/") && l.contains(&format!("{r}/dev/"))).expect("device nodes bound");
        assert!(last_node < dev_ro && dev_ro < k.pos("hooks"), "{lines:#?}");
        // The old root goes right after the switch.
        assert!(k.pos("hooks") < pivot && pivot < k.pos("umount ."), "{lines:#?}");
        assert!(k.pos("umount .") < k.pos("listen"), "{lines:#?}");
        s.check_protection(&k);
    }

    impl Scratch {
        fn check_protection(&self, k: &Recording) {
            let lines = k.lines();
            let p = |s: &str| self.base.join(s).display().to_string();
            let ro_root = k.pos("mount none / MS_RDONLY | MS_REMOUNT | MS_BIND");
            assert!(k.pos("listen") < ro_root && ro_root < k.pos("sysctls"), "{lines:#?}");
            // Read-only paths, then masked ones (a masked path under a read-only one stays masked),
            // all after /proc and every other mount exist and after the sysctls are written; each
            // made detached, read-only before it is attached on the fd of its target.
            let ro = p("ro");
            let ro_path = k.pos(&format!("open_tree_fd {ro} recursive"));
            assert!(k.pos("sysctls") < ro_path, "{lines:#?}");
            assert_eq!(lines[ro_path + 1..ro_path + 3], [format!("mount_setattr tree:{ro} set 0x1 clear 0x0"), format!("move_mount tree:{ro} -> {ro}")], "{lines:#?}");
            let masked_dir = k.pos(&format!("move_mount fs:tmpfs:tmpfs -> {}", p("masked-dir")));
            assert_eq!(lines[masked_dir - 1], "fsmount tmpfs tmpfs data \"\" sb [\"ro\"] attrs 0x1", "{lines:#?}");
            let masked_file = k.pos(&format!("move_mount tree:/dev/null -> {}", p("masked-file")));
            assert!(ro_path < masked_dir && masked_dir < masked_file, "{lines:#?}");
            assert!(!lines.iter().any(|l| l.contains(&p("absent"))), "{lines:#?}");
            // Nothing after the switch is mounted by a path but the old root (made a slave before
            // it is detached) and the new root's own flags.
            for l in &lines[k.pos("pivot_root")..] {
                if let Some(rest) = l.strip_prefix("mount ") {
                    let target = rest.split(' ').nth(1).unwrap_or("");
                    assert!(target == "/" || target == ".", "a mount by path after the switch: {l}");
                }
            }
            // A shared root is given last: pivot_root refuses a shared new root.
            assert_eq!(lines.last().unwrap(), "mount none / MS_SHARED", "{lines:#?}");
            assert!(!lines[..k.pos("pivot_root")].iter().any(|l| l.contains("MS_SHARED")), "{lines:#?}");
        }
    }

    #[test]
    fn a_failed_mount_stops_before_the_switch() {
        let (s, spec) = config("fail");
        let k = Recording::failing_at("fsmount tmpfs");
        let rplan = RootfsPlan { spec: &spec, rootfs: &s.base.join("rootfs"), volume_binds: &[], deferred: &[], bind_fds: vec![], idmapped: vec![], in_user_ns: true, own_cgroups: &[] };
        let none = &mut || Ok(());
        let e = assemble(&k, &spec, rplan, false, Between { before_switch: none, after_switch: &mut || Ok(()), names_and_sysctls: &mut || Ok(()) }).unwrap_err();
        assert!(e.0.contains("mount tmpfs on") && e.0.contains("/dev"), "{e}");
        assert!(!k.has("pivot_root") && !k.has("move_mount fs:tmpfs"), "{:?}", k.lines());
    }
}
