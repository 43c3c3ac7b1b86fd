//! `molt run ID`: create, start, and unless --detach wait for the container, forwarding signals,
//! then delete it and exit with its status (128+N when killed by signal N), as runc does.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::{CmdResult, Ctx};
use crate::container::create::create;

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
    let mut c = create(&ctx.root, &a.create.options(ctx))?;
    // Block before start so no signal meant for the container is lost between start and wait.
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    if !a.detach {
        set.thread_block()?;
    }
    if let Err(e) = c.start() {
        let _ = c.delete(true);
        return Err(e.into());
    }
    if a.detach {
        return Ok(0);
    }
    let pid = Pid::from_raw(c.state.pid);
    let code = loop {
        match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) => {}
            Err(e) => return Err(format!("wait for container {}: {e}", c.state.id).into()),
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => continue,
            Ok(sig) => {
                let _ = nix::sys::signal::kill(pid, sig);
            }
            Err(_) => continue,
        }
    };
    if !a.keep {
        c.delete(true)?;
    }
    Ok(code)
}
