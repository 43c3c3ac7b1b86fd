//! `molt exec ID [--process FILE | ARGS...]`: a new process in a running container.

use std::path::PathBuf;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::Process;

use super::{CmdResult, Ctx};
use crate::container::exec::ExecOptions;
use crate::container::sealed_exe;
use crate::container::terminal::{OwnConsole, Proxy};
use crate::container::Container;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
    /// Process description as JSON (runtime-spec `process`); replaces ARGS and the flags below
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    /// Return once the process runs
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Allocate a pty (ignored with --process)
    #[arg(long, short = 't')]
    pub tty: bool,
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Extra environment, KEY=VALUE
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// UID[:GID]
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: i32,
    /// Accepted for runc compatibility and ignored
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    #[arg(trailing_var_arg = true)]
    pub args: Vec<String>,
}

fn process_from(a: &Args, c: &Container) -> Result<Process, Box<dyn std::error::Error>> {
    if let Some(path) = &a.process {
        let data = std::fs::read(path).map_err(|e| format!("--process {}: {e}", path.display()))?;
        return Ok(serde_json::from_slice(&data).map_err(|e| format!("--process {}: {e}", path.display()))?);
    }
    if a.args.is_empty() {
        return Err("exec needs a command (ARGS) or --process".into());
    }
    let mut p = c.state.config.process().clone().unwrap_or_default();
    p.set_args(Some(a.args.clone()));
    p.set_terminal(Some(a.tty));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(u) = &a.user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, "0"));
        let mut user = p.user().clone();
        user.set_uid(uid.parse().map_err(|_| format!("--user {u:?}: not UID[:GID]"))?);
        user.set_gid(gid.parse().map_err(|_| format!("--user {u:?}: not UID[:GID]"))?);
        p.set_user(user);
    }
    Ok(p)
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    let c = Container::load(&ctx.root, &a.id)?;
    let process = process_from(&a, &c)?;
    let new_user_ns = crate::spec::has_namespace(&c.state.config, oci_spec::runtime::LinuxNamespaceType::User, true);
    let container_exposed = c.state.config.process().as_ref().is_some_and(|p| sealed_exe::exposes_runtime(p, new_user_ns));
    // The exec child is a copy of molt among the container's processes: sealed when it, or the
    // processes already there, may hold CAP_SYS_PTRACE.
    if container_exposed {
        sealed_exe::reexec_sealed()?;
    } else if sealed_exe::exposes_runtime(&process, new_user_ns) {
        // The init of a created container is still molt: a process that can ptrace it could take
        // molt's binary unless the init itself runs from a sealed copy.
        if c.status() == crate::container::Status::Created && sealed_exe::init_is_unsealed(c.state.pid) {
            return Err(format!(
                "exec into container {}: the process could reach molt's binary through the created init (CAP_SYS_PTRACE without a user namespace); start the container first",
                a.id
            )
            .into());
        }
        sealed_exe::reexec_sealed()?;
    }
    // A terminal and no --console-socket: molt's own stdio becomes the terminal, as with run.
    let own_console = if process.terminal().unwrap_or(false) && a.console_socket.is_none() {
        if a.detach {
            return Err("a terminal for exec --detach needs --console-socket (nobody would hold it)".into());
        }
        Some(OwnConsole::new()?)
    } else {
        None
    };
    let pid = c.exec(ExecOptions {
        process,
        console_socket: own_console.as_ref().map(|oc| oc.path()).or_else(|| a.console_socket.clone()),
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds,
    })?;
    if a.detach {
        return Ok(0);
    }
    let proxy = match &own_console {
        Some(oc) => Some(Proxy::start(oc.receive_master()?)),
        None => None,
    };
    drop(own_console);
    let status = waitpid(Pid::from_raw(pid), None);
    if let Some(p) = proxy {
        p.finish();
    }
    match status? {
        WaitStatus::Exited(_, code) => Ok(code),
        WaitStatus::Signaled(_, sig, _) => Ok(128 + sig as i32),
        other => Err(format!("exec in {}: unexpected wait status {other:?}", a.id).into()),
    }
}
