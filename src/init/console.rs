//! `process.terminal`: a pty from the container's own devpts instance, its master sent to the
//! engine's console socket (one SCM_RIGHTS message, as runc does), its slave the process's stdio.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use super::InitError;
use crate::kernel::Kernel;
use crate::mount_target::{self, Links, Make, RootDir};

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

pub fn connect(socket: &Path) -> Result<UnixStream, InitError> {
    UnixStream::connect(socket)
        .map_err(|e| InitError::new(format!("connect to console socket {}: {e}", socket.display())))
}

/// Open a pty in the devpts under `rootfs`, send its master, return its slave. With
/// `bind_console`, /dev/console becomes the slave too (the init; `exec` leaves it alone). Every
/// step goes through fds: ptmx opened from the rootfs's fd (links followed only inside it), the
/// slave by TIOCGPTPEER on the master, and /dev/console a mount target as any other
/// (`mount_target`), so a link in the image cannot take a step to the host; its bind goes
/// through the kernel seam `k`.
pub fn open_and_send(
    k: &impl Kernel,
    stream: UnixStream,
    rootfs: &Path,
    size: Option<&oci_spec::runtime::Box>,
    bind_console: bool,
) -> Result<OwnedFd, InitError> {
    let root = RootDir::open(rootfs)?;
    let ptmx = rootfs.join("dev/pts/ptmx");
    let master = mount_target::open_in(&root, Path::new("dev/pts/ptmx"), libc::O_RDWR | libc::O_NOCTTY)
        .map_err(|e| InitError::new(format!("open {} (is /dev/pts a devpts mount with newinstance?): {e}", ptmx.display())))?;
    // SAFETY: unlockpt and TIOCGPTPEER on the master we own; TIOCGPTPEER returns a new fd.
    let slave = unsafe {
        if libc::unlockpt(master.as_raw_fd()) != 0 {
            return Err(InitError::new(format!("unlockpt: {}", std::io::Error::last_os_error())));
        }
        let fd = libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(InitError::new(format!("open the pty's slave (TIOCGPTPEER): {}", std::io::Error::last_os_error())));
        }
        OwnedFd::from_raw_fd(fd)
    };
    if let Some(sz) = size {
        let ws = libc::winsize { ws_row: sz.height() as u16, ws_col: sz.width() as u16, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize we own.
        unsafe { tiocswinsz(master.as_raw_fd(), &ws) }
            .map_err(|e| InitError::new(format!("set console size: {}", e.desc())))?;
    }
    if bind_console {
        // /dev/console in the container is the pty, as runc sets it up.
        let target = mount_target::open_target(&root, Path::new("/dev/console"), Make::File, Links::Follow).map_err(InitError::new)?;
        let tree = k.open_tree_fd(&slave, false)
            .map_err(|e| InitError::new(format!("bind the pty on {}: open_tree of the pty's slave: {e}", target.shown.display())))?;
        mount_target::attach_with(k, tree, &target).map_err(InitError::new)?;
    }
    let fds = [master.as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(name)], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .map_err(|e| InitError::new(format!("send pty master to the console socket: {}", e.desc())))?;
    Ok(slave)
}

/// Make the slave our controlling terminal and stdio (after setsid).
pub fn make_controlling(slave: &OwnedFd) -> Result<(), InitError> {
    // SAFETY: TIOCSCTTY on an fd we own; dup2 onto the standard descriptors.
    unsafe {
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) != 0 {
            return Err(InitError::new(format!("TIOCSCTTY: {}", std::io::Error::last_os_error())));
        }
        for fd in 0..3 {
            if libc::dup2(slave.as_raw_fd(), fd) < 0 {
                return Err(InitError::new(format!("dup2 pty to fd {fd}: {}", std::io::Error::last_os_error())));
            }
        }
    }
    Ok(())
}
