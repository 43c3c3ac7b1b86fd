//! `molt run ID`: create, start, and unless --detach wait for the container, forwarding signals,
//! then delete it and exit with its status (128+N when killed by signal N), as runc does.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::{CmdResult, Ctx};
use crate::container::create::create;
use crate::container::terminal::{OwnConsole, Proxy};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub create: super::create::Args,
    /// Return once the container is started
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Keep the container's state after it exits
    #[arg(long)]
    pub keep: bool,
}

const FORWARDED: &[Signal] = &[
    Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGWINCH,
];

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    let mut options = a.create.options(ctx);
    // With a terminal and no --console-socket, molt's own stdio becomes the terminal (runc's way).
    let own_console = if wants_terminal(&options.bundle) && options.console_socket.is_none() {
        if a.detach {
            return Err("process.terminal is true: run --detach needs --console-socket (nobody would hold the terminal)".into());
        }
        let oc = OwnConsole::new()?;
        options.console_socket = Some(oc.path());
        Some(oc)
    } else {
        None
    };
    let mut c = create(&ctx.root, &options)?;
    // Block before start so no signal meant for the container is lost between start and wait.
    let set = forwarded_signals();
    if !a.detach {
        set.thread_block()?;
    }
    let proxy = match own_console.as_ref().map(|oc| oc.receive_master()) {
        Some(Ok(master)) => Some(Proxy::start(master)),
        Some(Err(e)) => {
            let _ = c.delete(true);
            return Err(e.into());
        }
        None => None,
    };
    drop(own_console);
    if let Err(e) = c.start() {
        let _ = c.delete(true);
        return Err(e.into());
    }
    if a.detach {
        return Ok(0);
    }
    let code = wait_forwarding(&c, &set, proxy.as_ref())?;
    if let Some(p) = proxy {
        p.finish();
    }
    if !a.keep {
        c.delete(true)?;
    }
    Ok(code)
}

/// The signals `run` (and `restore`) pass on to the container, and SIGCHLD to see it end.
pub(super) fn forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Waits for the container's init (molt's child) with `set` blocked, passing each signal on;
/// its exit status, 128+N when killed by signal N.
pub(super) fn wait_forwarding(c: &crate::container::Container, set: &SigSet, proxy: Option<&Proxy>) -> Result<i32, Box<dyn std::error::Error>> {
    let pid = Pid::from_raw(c.state.pid);
    loop {
        match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => {}
            Err(e) => return Err(format!("wait for container {}: {e}", c.state.id).into()),
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => continue,
            // Our terminal changed size: the pty follows, and its foreground process hears of it.
            Ok(Signal::SIGWINCH) if proxy.is_some() => {
                if let Some(p) = proxy {
                    p.resize();
                }
            }
            Ok(sig) => {
                let _ = nix::sys::signal::kill(pid, sig);
            }
            Err(_) => continue,
        }
    }
}

/// process.terminal of the bundle's config; a bad config is reported by create itself.
fn wants_terminal(bundle: &std::path::Path) -> bool {
    crate::container::create::load_spec(bundle)
        .ok()
        .and_then(|s| s.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}
