//! `molt restore ID` with runc 1.1.5's flags: the container made again from its bundle and a
//! checkpoint's images; without --detach molt waits for it as `run` does and exits with its status.

use std::path::PathBuf;

use super::{CmdResult, Ctx};
use crate::checkpoint::RestoreOptions;
use crate::container::create::CreateOptions;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
    #[command(flatten)]
    pub criu: super::checkpoint::CriuArgs,
    /// Bundle directory (default: the current directory)
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Return once the container is restored
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Write the restored container's host pid here
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket to receive the pty master (refused: see `molt restore --help`)
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility: the restored init is molt's own child, no subreaper is set
    #[arg(long = "no-subreaper")]
    pub no_subreaper: bool,
    /// Refused: criu always pivots into the restored root
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// LSM profile for the restored process, TYPE:NAME
    #[arg(long = "lsm-profile")]
    pub lsm_profile: Option<String>,
    /// LSM mount context for the restore
    #[arg(long = "lsm-mount-context")]
    pub lsm_mount_context: Option<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    let o = RestoreOptions {
        criu: a.criu.options()?,
        create: CreateOptions {
            id: a.id.clone(),
            bundle: a.bundle.clone(),
            pid_file: a.pid_file.clone(),
            console_socket: a.console_socket.clone(),
            no_pivot: a.no_pivot,
            preserve_fds: 0,
            systemd_cgroup: ctx.systemd_cgroup,
            upgrade: None,
        },
        lsm_profile: a.lsm_profile.clone(),
        lsm_mount_context: a.lsm_mount_context.clone(),
    };
    if a.detach {
        crate::checkpoint::restore(&ctx.root, &o)?;
        return Ok(0);
    }
    // Blocked before the restore, as `run` blocks them before start: none meant for it is lost.
    let set = super::run::forwarded_signals();
    set.thread_block()?;
    let mut c = crate::checkpoint::restore(&ctx.root, &o)?;
    let code = super::run::wait_forwarding(&c, &set, None)?;
    c.delete(true)?;
    Ok(code)
}
