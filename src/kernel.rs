//! The seam between molt's ordering of namespace and mount work and the kernel: one narrow trait
//! over the system calls whose order is security (setns, unshare, clone, mount(2), pivot_root, the
//! new mount API), as youki's `Syscall`. The init and the upgrade's hand-over call them through
//! it; `Real` makes the calls, and the tests' `Recording` writes them down instead, so the order
//! and arguments are unit-tested without root.

use std::fs::File;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::Pid;

/// The system calls the init and the upgrade make where their order matters.
pub trait Kernel {
    /// setns(2) into the namespace `ns` (opened from `named`) of kind `kind`.
    fn setns(&self, ns: &File, kind: CloneFlags, named: &Path) -> nix::Result<()>;
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// Whether `ns` is the namespace of this kind (`user`, `mnt`, ...) this process is in.
    fn is_own_ns(&self, ns: &File, kind: &str) -> bool;
    /// setresgid and setresuid to 0: root of the user namespace just entered or created.
    fn become_root(&self) -> nix::Result<()>;
    /// clone(2) a child running `child` with `flags` (and SIGCHLD at its exit).
    fn clone_child(&self, flags: CloneFlags, child: &mut dyn FnMut() -> isize) -> nix::Result<Pid>;
    /// Runs `f` in a short-lived child that joined `targets` (namespace files, in that order).
    fn run_in<F: FnOnce() -> Result<(), String>>(&self, targets: &[(CloneFlags, PathBuf)], f: F) -> Result<(), String>;

    /// mount(2).
    fn mount(&self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> nix::Result<()>;
    /// umount2(2) with MNT_DETACH.
    fn umount_detach(&self, target: &Path) -> nix::Result<()>;
    /// pivot_root(".", "."): the cwd becomes the root, the old root stacked under it.
    fn pivot_root_here(&self) -> nix::Result<()>;
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    fn fchdir(&self, fd: RawFd) -> nix::Result<()>;
    fn chroot(&self, path: &Path) -> nix::Result<()>;

    /// open_tree(OPEN_TREE_CLONE): a detached copy of the mount at `path`.
    fn open_tree_clone(&self, path: &Path, recursive: bool) -> Result<OwnedFd, String>;
    /// open_tree(OPEN_TREE_CLONE | AT_EMPTY_PATH): a detached bind of what `fd` is open on.
    fn open_tree_fd(&self, fd: &OwnedFd, recursive: bool) -> std::io::Result<OwnedFd>;
    /// fsopen/fsconfig/fsmount: a new detached mount of a `fstype` filesystem.
    fn fs_mount(&self, fstype: &str, source: &str, data: &str, sb_flags: &[&str], attrs: u64) -> Result<OwnedFd, String>;
    /// move_mount(2) of the detached `tree` onto the file or directory `target` is open on.
    fn move_mount_onto_fd(&self, tree: &OwnedFd, target: &OwnedFd) -> Result<(), String>;
    /// mount_setattr(2) on the mount `fd` is open on: MOUNT_ATTR_* set and cleared.
    fn mount_setattr(&self, fd: &OwnedFd, recursive: bool, set: u64, clear: u64) -> std::io::Result<()>;
    /// mount_setattr(2)'s propagation change on the mount `fd` is open on.
    fn set_propagation(&self, fd: &OwnedFd, flag: u64, recursive: bool) -> std::io::Result<()>;
}

/// The real system calls.
pub struct Real;

impl Kernel for Real {
    fn setns(&self, ns: &File, kind: CloneFlags, _named: &Path) -> nix::Result<()> {
        nix::sched::setns(ns, kind)
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn is_own_ns(&self, ns: &File, kind: &str) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (ns.metadata(), std::fs::metadata(format!("/proc/self/ns/{kind}"))) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    fn become_root(&self) -> nix::Result<()> {
        let (u, g) = (nix::unistd::Uid::from_raw(0), nix::unistd::Gid::from_raw(0));
        nix::unistd::setresgid(g, g, g)?;
        nix::unistd::setresuid(u, u, u)
    }

    fn clone_child(&self, flags: CloneFlags, child: &mut dyn FnMut() -> isize) -> nix::Result<Pid> {
        let mut stack = vec![0u8; 1 << 20];
        // SAFETY: the child runs `child` on its own copy of this address space (no CLONE_VM) and
        // leaves through exec or exit; it never returns into the parent's frames.
        unsafe { nix::sched::clone(Box::new(child), &mut stack, flags, Some(libc::SIGCHLD)) }
    }

    fn run_in<F: FnOnce() -> Result<(), String>>(&self, targets: &[(CloneFlags, PathBuf)], f: F) -> Result<(), String> {
        crate::namespaces::run_in(targets, f)
    }

    fn mount(&self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount_detach(&self, target: &Path) -> nix::Result<()> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH)
    }

    fn pivot_root_here(&self) -> nix::Result<()> {
        nix::unistd::pivot_root(".", ".")
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }

    fn fchdir(&self, fd: RawFd) -> nix::Result<()> {
        nix::unistd::fchdir(fd)
    }

    fn chroot(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chroot(path)
    }

    fn open_tree_clone(&self, path: &Path, recursive: bool) -> Result<OwnedFd, String> {
        crate::mount_api::open_tree_clone(path, recursive)
    }

    fn open_tree_fd(&self, fd: &OwnedFd, recursive: bool) -> std::io::Result<OwnedFd> {
        if recursive { crate::mount_api::open_tree_clone_fd_recursive(fd) } else { crate::mount_api::open_tree_clone_fd(fd) }
    }

    fn fs_mount(&self, fstype: &str, source: &str, data: &str, sb_flags: &[&str], attrs: u64) -> Result<OwnedFd, String> {
        crate::mount_api::fs_mount(fstype, source, data, sb_flags, attrs)
    }

    fn move_mount_onto_fd(&self, tree: &OwnedFd, target: &OwnedFd) -> Result<(), String> {
        crate::mount_api::move_mount_onto_fd(tree, target)
    }

    fn mount_setattr(&self, fd: &OwnedFd, recursive: bool, set: u64, clear: u64) -> std::io::Result<()> {
        crate::mount_api::setattr(Some(fd), Path::new(""), recursive, set, clear, None)
    }

    fn set_propagation(&self, fd: &OwnedFd, flag: u64, recursive: bool) -> std::io::Result<()> {
        crate::mount_api::set_propagation(fd, flag, recursive)
    }
}

/// The short name of one namespace kind, as /proc/PID/ns names it.
pub fn ns_name(kind: CloneFlags) -> &'static str {
    const NAMES: &[(i32, &str)] = &[
        (libc::CLONE_NEWUSER, "user"),
        (libc::CLONE_NEWPID, "pid"),
        (libc::CLONE_NEWNS, "mnt"),
        (libc::CLONE_NEWNET, "net"),
        (libc::CLONE_NEWIPC, "ipc"),
        (libc::CLONE_NEWUTS, "uts"),
        (libc::CLONE_NEWCGROUP, "cgroup"),
        (libc::CLONE_NEWTIME, "time"),
    ];
    NAMES.iter().find(|(bit, _)| kind.bits() == *bit).map_or("?", |(_, n)| n)
}

/// The kernel written down: each call as a line (`setns user /x`, `mount none / MS_REC|MS_SLAVE`,
/// `move_mount tree:/staging -> /tmp/root/data`), nothing done. A detached tree it hands out is
/// an fd on a fresh directory of its own (so a chmod or copy into it harms nothing), named in the
/// lines by what made it; any other fd by the path it is open on.
#[cfg(test)]
pub mod recording {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::os::fd::AsRawFd;

    pub struct Recording {
        pub calls: RefCell<Vec<String>>,
        scratch: PathBuf,
        made: RefCell<Vec<(PathBuf, String)>>,
        n: Cell<usize>,
        /// A call whose line starts with this fails (EPERM).
        pub fail_at: Option<&'static str>,
        /// A child cloned without namespace flags (a helper, such as the one that clones an init
        /// from a joined user namespace) is run inline, its pid 4343; any other child never runs.
        pub run_helpers: bool,
    }

    impl Default for Recording {
        fn default() -> Recording {
            Recording::new()
        }
    }

    impl Recording {
        fn new() -> Recording {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let scratch = std::env::temp_dir().join(format!("molt-kernel-rec-{}-{k}", std::process::id()));
            Recording { calls: RefCell::default(), scratch, made: RefCell::default(), n: Cell::new(0), fail_at: None, run_helpers: false }
        }
    }

    impl Drop for Recording {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.scratch);
        }
    }

    impl Recording {
        /// A recording whose first call starting with `prefix` fails.
        pub fn failing_at(prefix: &'static str) -> Recording {
            let mut r = Recording::new();
            r.fail_at = Some(prefix);
            r
        }

        fn note(&self, line: String) -> nix::Result<()> {
            let fail = self.fail_at.is_some_and(|f| line.starts_with(f));
            self.calls.borrow_mut().push(line);
            if fail { Err(nix::errno::Errno::EPERM) } else { Ok(()) }
        }

        /// A new detached "mount": an fd on a fresh directory, remembered as `label`.
        fn tree(&self, label: String) -> Result<OwnedFd, String> {
            self.n.set(self.n.get() + 1);
            let dir = self.scratch.join(self.n.get().to_string());
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let f = File::open(&dir).map_err(|e| e.to_string())?;
            self.made.borrow_mut().push((dir, label));
            Ok(OwnedFd::from(f))
        }

        /// What `fd` is: the label of a tree made here, or the path it is open on.
        pub fn fd(&self, fd: &OwnedFd) -> String {
            let at = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default();
            match self.made.borrow().iter().find(|(d, _)| *d == at) {
                Some((_, label)) => label.clone(),
                None => at.display().to_string(),
            }
        }

        pub fn lines(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }

        /// Index of the first call starting with `prefix`; panics naming the calls if none.
        pub fn pos(&self, prefix: &str) -> usize {
            let calls = self.calls.borrow();
            calls.iter().position(|c| c.starts_with(prefix)).unwrap_or_else(|| panic!("no call {prefix:?} in {calls:#?}"))
        }

        pub fn has(&self, prefix: &str) -> bool {
            self.calls.borrow().iter().any(|c| c.starts_with(prefix))
        }
    }

    fn io(e: nix::Result<()>) -> std::io::Result<()> {
        e.map_err(|e| std::io::Error::from_raw_os_error(e as i32))
    }

    impl Kernel for Recording {
        fn setns(&self, _ns: &File, kind: CloneFlags, named: &Path) -> nix::Result<()> {
            self.note(format!("setns {} {}", ns_name(kind), named.display()))
        }
        fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
            self.note(format!("unshare {flags:?}"))
        }
        fn is_own_ns(&self, _ns: &File, _kind: &str) -> bool {
            false
        }
        fn become_root(&self) -> nix::Result<()> {
            self.note("become-root".into())
        }
        fn clone_child(&self, flags: CloneFlags, child: &mut dyn FnMut() -> isize) -> nix::Result<Pid> {
            self.note(format!("clone {flags:?}"))?;
            if flags.is_empty() && self.run_helpers {
                child();
                return Ok(Pid::from_raw(4343));
            }
            Ok(Pid::from_raw(4242))
        }
        fn run_in<F: FnOnce() -> Result<(), String>>(&self, targets: &[(CloneFlags, PathBuf)], f: F) -> Result<(), String> {
            for (kind, path) in targets {
                self.note(format!("setns {} {}", ns_name(*kind), path.display())).map_err(|e| e.to_string())?;
            }
            let r = f();
            self.calls.borrow_mut().push("leave".into());
            r
        }
        fn mount(&self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> nix::Result<()> {
            let src = source.map_or("none".to_string(), |s| s.display().to_string());
            let extra = [fstype.map(|t| format!(" type {t}")), data.map(|d| format!(" data {d}"))].into_iter().flatten().collect::<String>();
            let flags = format!("{flags:?}");
            let flags = flags.strip_prefix("MsFlags(").and_then(|f| f.strip_suffix(')')).unwrap_or(&flags);
            self.note(format!("mount {src} {} {flags}{extra}", target.display()))
        }
        fn umount_detach(&self, target: &Path) -> nix::Result<()> {
            self.note(format!("umount {}", target.display()))
        }
        fn pivot_root_here(&self) -> nix::Result<()> {
            self.note("pivot_root".into())
        }
        fn chdir(&self, path: &Path) -> nix::Result<()> {
            self.note(format!("chdir {}", path.display()))
        }
        fn fchdir(&self, fd: RawFd) -> nix::Result<()> {
            let at = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
            self.note(format!("fchdir {}", at.display()))
        }
        fn chroot(&self, path: &Path) -> nix::Result<()> {
            self.note(format!("chroot {}", path.display()))
        }
        fn open_tree_clone(&self, path: &Path, recursive: bool) -> Result<OwnedFd, String> {
            self.note(format!("open_tree {}{}", path.display(), if recursive { " recursive" } else { "" })).map_err(|e| e.to_string())?;
            self.tree(format!("tree:{}", path.display()))
        }
        fn open_tree_fd(&self, fd: &OwnedFd, recursive: bool) -> std::io::Result<OwnedFd> {
            let at = self.fd(fd);
            io(self.note(format!("open_tree_fd {at}{}", if recursive { " recursive" } else { "" })))?;
            self.tree(format!("tree:{at}")).map_err(std::io::Error::other)
        }
        fn fs_mount(&self, fstype: &str, source: &str, data: &str, sb_flags: &[&str], attrs: u64) -> Result<OwnedFd, String> {
            self.note(format!("fsmount {fstype} {source} data {data:?} sb {sb_flags:?} attrs {attrs:#x}")).map_err(|e| e.to_string())?;
            self.tree(format!("fs:{fstype}:{source}"))
        }
        fn move_mount_onto_fd(&self, tree: &OwnedFd, target: &OwnedFd) -> Result<(), String> {
            self.note(format!("move_mount {} -> {}", self.fd(tree), self.fd(target))).map_err(|e| e.to_string())
        }
        fn mount_setattr(&self, fd: &OwnedFd, recursive: bool, set: u64, clear: u64) -> std::io::Result<()> {
            io(self.note(format!("mount_setattr {} set {set:#x} clear {clear:#x}{}", self.fd(fd), if recursive { " recursive" } else { "" })))
        }
        fn set_propagation(&self, fd: &OwnedFd, flag: u64, recursive: bool) -> std::io::Result<()> {
            io(self.note(format!("propagation {} {flag:#x}{}", self.fd(fd), if recursive { " recursive" } else { "" })))
        }
    }
}
