//! `process.terminal`: a pty from the container's own devpts instance, its master sent to the
//! engine's console socket (one SCM_RIGHTS message, as runc does), its slave the process's stdio.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;

use super::InitError;

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

pub fn connect(socket: &Path) -> Result<UnixStream, InitError> {
    UnixStream::connect(socket)
        .map_err(|e| InitError::new(format!("connect to console socket {}: {e}", socket.display())))
}

/// Open a pty in the devpts under `rootfs`, send its master, return its slave. With
/// `bind_console`, /dev/console becomes the slave too (the init; `exec` leaves it alone).
pub fn open_and_send(
    stream: UnixStream,
    rootfs: &Path,
    size: Option<&oci_spec::runtime::Box>,
    bind_console: bool,
) -> Result<OwnedFd, InitError> {
    let ptmx = rootfs.join("dev/pts/ptmx");
    let master = open(&ptmx, OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| InitError::new(format!("open {} (is /dev/pts a devpts mount with newinstance?): {}", ptmx.display(), e.desc())))?;
    // SAFETY: `open` just returned this fd and nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: unlockpt/TIOCGPTN operate on the fd we own; buffers are sized for them.
    let n = unsafe {
        if libc::unlockpt(master.as_raw_fd()) != 0 {
            return Err(InitError::new(format!("unlockpt: {}", std::io::Error::last_os_error())));
        }
        let mut num: libc::c_uint = 0;
        if libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut num) != 0 {
            return Err(InitError::new(format!("TIOCGPTN: {}", std::io::Error::last_os_error())));
        }
        num
    };
    let slave_path = rootfs.join(format!("dev/pts/{n}"));
    let slave = open(&slave_path, OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| InitError::new(format!("open {}: {}", slave_path.display(), e.desc())))?;
    // SAFETY: as above.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    if let Some(sz) = size {
        let ws = libc::winsize { ws_row: sz.height() as u16, ws_col: sz.width() as u16, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize we own.
        unsafe { tiocswinsz(master.as_raw_fd(), &ws) }
            .map_err(|e| InitError::new(format!("set console size: {}", e.desc())))?;
    }
    if bind_console {
        // /dev/console in the container is the pty, as runc sets it up.
        let console = rootfs.join("dev/console");
        if !console.exists() {
            std::fs::File::create(&console).map_err(|e| InitError::new(format!("create {}: {e}", console.display())))?;
        }
        nix::mount::mount(Some(&slave_path), &console, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| InitError::new(format!("bind {} on {}: {}", slave_path.display(), console.display(), e.desc())))?;
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
