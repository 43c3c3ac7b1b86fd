//! `molt checkpoint ID` with runc 1.1.5's flags: criu dumps the container into an image directory.

use std::path::PathBuf;

use super::{CmdResult, Ctx};
use crate::checkpoint::{CriuOptions, DumpOptions};
use crate::container::Container;

/// The flags `checkpoint` and `restore` share (runc's names).
#[derive(clap::Args, Debug)]
pub struct CriuArgs {
    /// Directory for (restore: of) the criu image files (default: ./checkpoint)
    #[arg(long = "image-path")]
    pub image_path: Option<PathBuf>,
    /// Directory for criu's work files and logs (default: the image directory)
    #[arg(long = "work-path")]
    pub work_path: Option<PathBuf>,
    /// Allow open TCP connections
    #[arg(long = "tcp-established")]
    pub tcp_established: bool,
    /// Allow external unix sockets
    #[arg(long = "ext-unix-sk")]
    pub ext_unix_sk: bool,
    /// Allow shell jobs
    #[arg(long = "shell-job")]
    pub shell_job: bool,
    /// Handle file locks
    #[arg(long = "file-locks")]
    pub file_locks: bool,
    /// cgroups mode: soft (default), full or strict
    #[arg(long = "manage-cgroups-mode")]
    pub manage_cgroups_mode: Option<String>,
    /// Create a namespace but do not restore its properties (only "network", always on as with runc)
    #[arg(long = "empty-ns")]
    pub empty_ns: Vec<String>,
    /// Deduplicate memory images automatically
    #[arg(long = "auto-dedup")]
    pub auto_dedup: bool,
    /// Use userfaultfd to restore memory pages lazily
    #[arg(long = "lazy-pages")]
    pub lazy_pages: bool,
}

impl CriuArgs {
    pub fn options(&self) -> Result<CriuOptions, Box<dyn std::error::Error>> {
        // runc's default: ./checkpoint
        let image_dir = match &self.image_path {
            Some(p) => p.clone(),
            None => std::env::current_dir()?.join("checkpoint"),
        };
        Ok(CriuOptions {
            image_dir,
            work_dir: self.work_path.clone(),
            tcp_established: self.tcp_established,
            ext_unix_sk: self.ext_unix_sk,
            shell_job: self.shell_job,
            file_locks: self.file_locks,
            manage_cgroups_mode: self.manage_cgroups_mode.clone(),
            empty_ns: self.empty_ns.clone(),
            auto_dedup: self.auto_dedup,
            lazy_pages: self.lazy_pages,
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
    #[command(flatten)]
    pub criu: CriuArgs,
    /// Path of the previous (pre-)dump's images, relative to --image-path
    #[arg(long = "parent-path")]
    pub parent_path: Option<PathBuf>,
    /// Leave the container running after checkpointing
    #[arg(long = "leave-running")]
    pub leave_running: bool,
    /// ADDRESS:PORT of a criu page server to send the memory pages to
    #[arg(long = "page-server")]
    pub page_server: Option<String>,
    /// criu writes \0 to this fd once lazy pages are ready
    #[arg(long = "status-fd", default_value_t = -1, allow_negative_numbers = true)]
    pub status_fd: i32,
    /// Dump the memory only and leave the container running
    #[arg(long = "pre-dump")]
    pub pre_dump: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    let mut c = Container::load(&ctx.root, &a.id)?;
    let o = DumpOptions {
        criu: a.criu.options()?,
        leave_running: a.leave_running,
        pre_dump: a.pre_dump,
        parent_path: a.parent_path,
        page_server: a.page_server,
        status_fd: (a.status_fd >= 0).then_some(a.status_fd),
    };
    crate::checkpoint::checkpoint(&mut c, &o)?;
    Ok(0)
}
