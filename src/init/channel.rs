//! The message channel between the runtime process and the container's init while the container is
//! being set up: a SOCK_SEQPACKET pair, one JSON message a packet, so neither side parses partial reads.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Msg {
    /// Parent to child: uid/gid maps are written and the child is in its cgroup; go on.
    Go,
    /// Child to parent: namespaces exist (network set-up and createRuntime hooks can run).
    NamespacesReady,
    /// Parent to child: network and createRuntime hooks are done; here is the state for hooks.
    Continue { state_json: String },
    /// Child to parent: everything is set up; the child now waits on the exec fifo.
    Ready,
    /// Either side: a step failed; the text names it.
    Error(String),
}

pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// In a cloned child: close this (the other side's) copy of the fd. The parent's stays open;
    /// the value is not dropped here, the child never returns to the code that owns it.
    pub fn close_in_child(&self) {
        let _ = nix::unistd::close(self.fd.as_raw_fd());
    }

    pub fn send(&self, msg: &Msg) -> std::io::Result<()> {
        let data = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
        let n = nix::unistd::write(self.fd.as_fd(), &data).map_err(std::io::Error::from)?;
        if n != data.len() {
            return Err(std::io::Error::other("short write on setup channel"));
        }
        Ok(())
    }

    /// None when the other side closed the channel (it exited).
    pub fn recv(&self) -> std::io::Result<Option<Msg>> {
        let mut buf = vec![0u8; 1 << 16];
        let n = loop {
            match nix::unistd::read(self.fd.as_raw_fd(), &mut buf) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r.map_err(std::io::Error::from)?,
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n]).map(Some).map_err(std::io::Error::other)
    }
}
