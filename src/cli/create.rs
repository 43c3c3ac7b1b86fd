//! `molt create ID`

use std::path::PathBuf;

use super::{CmdResult, Ctx};
use crate::container::create::{create, CreateOptions};

#[derive(clap::Args, Debug)]
#[group(id = "create-args")]
pub struct Args {
    pub id: String,
    /// Bundle directory (default: the current directory)
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container's host pid here
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master when process.terminal is true
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    /// Use MS_MOVE and chroot instead of pivot_root (rootfs on a ramfs)
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted for runc compatibility: molt never creates a session keyring
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass this many fds after stdio (3..3+N-1) to the container
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: i32,
}

impl Args {
    pub fn options(&self, ctx: &Ctx) -> CreateOptions {
        CreateOptions {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
            no_pivot: self.no_pivot,
            preserve_fds: self.preserve_fds,
            systemd_cgroup: ctx.systemd_cgroup,
            upgrade: None,
        }
    }
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    create(&ctx.root, &a.options(ctx))?;
    Ok(0)
}
