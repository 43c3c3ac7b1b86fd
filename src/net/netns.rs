//! Reaching another network namespace without moving the caller: a short-lived thread enters it
//! and opens the netlink socket there. The socket stays bound to that namespace for its whole
//! life (the kernel resolves every rtnetlink request against the socket's netns, not the
//! thread's), so the caller's thread can then use it while never leaving its own namespace.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use super::error::NetError;
use super::netlink::Netlink;

/// An open namespace file (`/proc/PID/ns/net` or a bind mount of one). Holding it keeps the
/// namespace alive and gives the fd that IFLA_NET_NS_FD wants.
pub struct NetnsFile {
    file: File,
    path: PathBuf,
}

impl NetnsFile {
    pub fn open(path: &Path) -> Result<NetnsFile, NetError> {
        let file = File::open(path).map_err(|source| NetError::Netns {
            op: "open",
            netns: path.display().to_string(),
            source,
        })?;
        Ok(NetnsFile {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn label(&self) -> String {
        self.path.display().to_string()
    }

    /// A netlink socket inside this namespace, opened on a helper thread.
    pub fn socket(&self) -> Result<Netlink, NetError> {
        let label = self.label();
        self.open_in("open netlink socket in", || Netlink::open(label.clone()))
    }

    /// Run `open` (which makes a socket) on a helper thread that has entered this namespace: the
    /// socket belongs to the namespace for good, the caller's threads never leave theirs.
    pub fn open_in<T: Send>(&self, op: &'static str, open: impl FnOnce() -> std::io::Result<T> + Send) -> Result<T, NetError> {
        let label = self.label();
        let file = &self.file;
        std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name("molt-netns".into())
                .spawn_scoped(s, || -> Result<T, NetError> {
                    // setns(CLONE_NEWNET) changes only this thread; it ends right after, so the
                    // namespace switch cannot leak into anything else.
                    setns(file, CloneFlags::CLONE_NEWNET).map_err(|e| NetError::Netns {
                        op: "setns into",
                        netns: label.clone(),
                        source: std::io::Error::from(e),
                    })?;
                    open().map_err(|source| NetError::Netns { op, netns: label.clone(), source })
                })
                .map_err(|e| NetError::Thread {
                    netns: label.clone(),
                    reason: e.to_string(),
                })?;
            worker.join().map_err(|_| NetError::Thread {
                netns: label.clone(),
                reason: "panicked".into(),
            })?
        })
    }
}

/// A netlink socket in the calling thread's own namespace. Its label names the namespace by
/// inode (`net:[4026531840]`) so errors still say where they happened.
pub fn current_socket() -> Result<Netlink, NetError> {
    let label = std::fs::read_link("/proc/thread-self/ns/net")
        .map(|p| format!("current ({})", p.display()))
        .unwrap_or_else(|_| "current".to_string());
    Netlink::open(label.clone()).map_err(|source| NetError::Netns {
        op: "open netlink socket in",
        netns: label,
        source,
    })
}
