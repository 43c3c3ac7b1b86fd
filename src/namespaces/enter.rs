//! Running a piece of code inside another process's namespaces: a short-lived forked child joins
//! them with setns, runs it, and reports its error text back through a pipe.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};
use nix::unistd::{fork, ForkResult};

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
