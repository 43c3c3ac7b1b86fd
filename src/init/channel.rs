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
    /// Parent to child, before Continue, with one fd per index (SCM_RIGHTS): the sources of
    /// these bind mounts (indexes into `mounts`), opened by molt in the child's mount namespace
    /// with the host's credentials (a new user namespace's root may not walk to them).
    BindSources { mounts: Vec<usize> },
    /// Parent to child, before Continue, with one fd per index: detached idmapped copies of
    /// these bind mounts' sources, to attach with move_mount (see init::idmap).
    IdmappedMounts { mounts: Vec<usize> },
    /// Parent to child: network and createRuntime hooks are done; here is the state for hooks.
    Continue { state_json: String },
    /// Child to parent: everything is set up; the child now waits on the exec fifo.
    Ready,
    /// Child to parent, with one fd: the seccomp filter's notify listener, for the agent at
    /// linux.seccomp.listenerPath.
    SeccompListener,
    /// Either side: a step failed; the text names it.
    Error(String),
}

/// The most file descriptors one message carries.
pub const MAX_FDS: usize = 64;

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

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// A message with file descriptors attached (at most `MAX_FDS`).
    pub fn send_with_fds(&self, msg: &Msg, fds: &[std::os::fd::RawFd]) -> std::io::Result<()> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let data = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
        let iov = [std::io::IoSlice::new(&data)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let n = sendmsg::<()>(self.fd.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map_err(std::io::Error::from)?;
        if n != data.len() {
            return Err(std::io::Error::other("short write on setup channel"));
        }
        Ok(())
    }

    /// None when the other side closed the channel (it exited).
    pub fn recv(&self) -> std::io::Result<Option<Msg>> {
        Ok(self.recv_with_fds()?.map(|(m, _)| m))
    }

    /// A message and the file descriptors that came with it (close-on-exec).
    pub fn recv_with_fds(&self) -> std::io::Result<Option<(Msg, Vec<OwnedFd>)>> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::os::fd::FromRawFd;
        let mut buf = vec![0u8; 1 << 16];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
        let (n, fds) = loop {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(self.fd.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(std::io::Error::from(e)),
                Ok(m) => {
                    let mut fds = vec![];
                    for c in m.cmsgs().map_err(std::io::Error::from)? {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            // SAFETY: the kernel just installed these fds in our table for us.
                            fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                        }
                    }
                    break (m.bytes, fds);
                }
            }
        };
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&buf[..n]).map(|m| Some((m, fds))).map_err(std::io::Error::other)
    }
}
