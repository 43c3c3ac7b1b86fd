//! The caller's own terminal as the container's, for `run` and `exec` with a terminal but no
//! `--console-socket` (what `runc run` does with `runc spec`'s default config): molt listens on a
//! console socket of its own, receives the pty master on it, and copies between it and its stdio.

use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

use super::{Error, Result};

fn err(step: &str, e: impl std::fmt::Display) -> Error {
    Error::Step { id: String::new(), step: "terminal", reason: format!("{step}: {e}") }
}

/// A console socket in a private temporary directory; removed with it.
pub struct OwnConsole {
    listener: UnixListener,
    dir: PathBuf,
}

impl OwnConsole {
    pub fn new() -> Result<OwnConsole> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!("molt-console-{}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| err(&format!("mkdir {}", dir.display()), e))?;
        let path = dir.join("sock");
        let listener = UnixListener::bind(&path).map_err(|e| {
            let _ = std::fs::remove_dir(&dir);
            err(&format!("listen on {}", path.display()), e)
        })?;
        Ok(OwnConsole { listener, dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The pty master the container's init (or exec'd process) sent; it connected during create.
    pub fn receive_master(&self) -> Result<OwnedFd> {
        let (stream, _) = self.listener.accept().map_err(|e| err("accept on the console socket", e))?;
        let mut name = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|e| err("receive the pty master", e))?;
        for c in msg.cmsgs().map_err(|e| err("read the pty master message", e))? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: the fd just arrived by SCM_RIGHTS; nothing else owns it.
                    return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
                }
            }
        }
        Err(err("receive the pty master", "no fd in the message"))
    }
}

impl Drop for OwnConsole {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Copies stdin to the pty and the pty to stdout while the container runs; our terminal is raw
/// meanwhile and restored by `finish`.
pub struct Proxy {
    master: Arc<OwnedFd>,
    saved: Option<Termios>,
    done: Arc<AtomicBool>,
    output: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(master: OwnedFd) -> Proxy {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            cfmakeraw(&mut raw);
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        }
        let master = Arc::new(master);
        resize(&master);
        let done = Arc::new(AtomicBool::new(false));
        let (out_master, out_done) = (master.clone(), done.clone());
        let output = std::thread::spawn(move || copy_out(&out_master, &out_done));
        let in_master = master.clone();
        // Input: a blocking read of stdin that may outlive the container; molt exits anyway.
        std::thread::spawn(move || {
            let Ok(fd) = in_master.try_clone() else { return };
            let mut to_pty = std::fs::File::from(fd);
            let mut buf = [0u8; 4096];
            loop {
                match std::io::stdin().read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if to_pty.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Proxy { master, saved, done, output: Some(output) }
    }

    /// Give the pty our terminal's size again (SIGWINCH).
    pub fn resize(&self) {
        resize(&self.master);
    }

    /// After the container exited: let the output drain, then restore our terminal.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(h) = self.output.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, t);
        }
    }
}

fn resize(master: &OwnedFd) {
    // SAFETY: TIOCGWINSZ fills a winsize we own from stdin (failing when it is no terminal);
    // TIOCSWINSZ reads it for the master.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Until the pty has no writer left (EIO), or the container is done and nothing came for a while
/// (a process that outlives it may hold the pty open).
fn copy_out(master: &OwnedFd, done: &AtomicBool) {
    let mut buf = [0u8; 4096];
    let mut stdout = std::io::stdout();
    loop {
        let mut pfd = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(master), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(100u16)) {
            Ok(0) => {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        match nix::unistd::read(master.as_raw_fd(), &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stdout.write_all(&buf[..n]).and_then(|_| stdout.flush()).is_err() {
                    return;
                }
            }
        }
    }
}

