//! Small namespace tools the lifecycle and the upgrade share: keep a namespace alive with a bind
//! mount, and run a piece of code inside another process's namespaces in a short-lived child.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, CloneFlags};
use nix::unistd::{fork, ForkResult};

/// Bind `/proc/PID/ns/<kind>` onto `dest` so the namespace outlives its processes.
pub fn pin(pid: i32, kind: &str, dest: &Path) -> Result<PathBuf, String> {
    let src = crate::init::ns_path(pid, kind);
    std::fs::File::create(dest).map_err(|e| format!("create {}: {e}", dest.display()))?;
    mount(Some(&src), dest, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("bind {} on {}: {}", src.display(), dest.display(), e.desc()))?;
    Ok(dest.to_path_buf())
}

/// Undo `pin`; a missing pin is fine.
pub fn unpin(dest: &Path) {
    let _ = umount2(dest, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(dest);
}

/// Run `f` in a forked child that has joined the given namespaces of `pid` (or namespace files).
/// A child, because the mount namespace cannot be changed by a multi-threaded process and the
/// caller must keep its own.
pub fn run_in(
    targets: &[(CloneFlags, PathBuf)],
    f: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    let (mut rd, wr) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let files: Vec<(CloneFlags, std::fs::File)> = targets
        .iter()
        .map(|(k, p)| std::fs::File::open(p).map(|f| (*k, f)).map_err(|e| format!("open {}: {e}", p.display())))
        .collect::<Result<_, _>>()?;
    // SAFETY: the child only runs `f` and exits with _exit; the parent is single-threaded here.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(rd);
            let mut res = Ok(());
            for (kind, file) in &files {
                if let Err(e) = setns(file, *kind) {
                    res = Err(format!("setns {kind:?}: {}", e.desc()));
                    break;
                }
            }
            let res = res.and_then(|_| f());
            let code = match res {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = nix::unistd::write(&wr, msg.as_bytes());
                    1
                }
            };
            let _ = wr.as_raw_fd();
            // SAFETY: leave without running the parent's destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let mut msg = String::new();
            let _ = rd.read_to_string(&mut msg);
            let status = nix::sys::wait::waitpid(child, None).map_err(|e| format!("wait: {e}"))?;
            match status {
                nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
                _ if !msg.is_empty() => Err(msg),
                s => Err(format!("helper ended with {s:?}")),
            }
        }
    }
}
