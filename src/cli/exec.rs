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
    /// Set no_new_privs for the process
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Exec into a paused container too: the process starts when the container is resumed
    #[arg(long = "ignore-paused")]
    pub ignore_paused: bool,
    /// Join a sub-cgroup of the container's: [CONTROLLER[,CONTROLLER]:]PATH (repeat per v1 controller)
    #[arg(long = "cgroup")]
    pub cgroup: Vec<String>,
    /// Additional group ids (repeat or comma-separate)
    #[arg(long = "additional-gids", short = 'g', value_delimiter = ',')]
    pub additional_gids: Vec<u32>,
    /// Add a capability to the bounding, effective and permitted sets (repeat)
    #[arg(long = "cap", short = 'c')]
    pub caps: Vec<String>,
    #[arg(trailing_var_arg = true)]
    pub args: Vec<String>,
}

/// process.json's bytes as `exec --process` reads them (the parse only).
pub fn parse_process(data: &[u8]) -> Result<Process, String> {
    let mut raw: serde_json::Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    crate::spec::process_attrs::check_process(&raw, "process").map_err(|e| e.to_string())?;
    crate::spec::process_attrs::translate_sched_flags(&mut raw);
    serde_json::from_value(raw).map_err(|e| e.to_string())
}

fn process_from(a: &Args, c: &Container) -> Result<Process, Box<dyn std::error::Error>> {
    if let Some(path) = &a.process {
        let data = std::fs::read(path).map_err(|e| format!("--process {}: {e}", path.display()))?;
        return Ok(parse_process(&data).map_err(|e| format!("--process {}: {e}", path.display()))?);
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
    if !a.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(user);
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !a.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.caps {
            let full = format!("CAP_{}", name.to_ascii_uppercase().trim_start_matches("CAP_"));
            let cap: oci_spec::runtime::Capability = serde_json::from_value(serde_json::Value::String(full))
                .map_err(|_| format!("--cap {name:?}: not a capability (CAP_SYS_ADMIN, ...)"))?;
            let add = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            caps.set_bounding(add(caps.bounding()));
            caps.set_effective(add(caps.effective()));
            caps.set_permitted(add(caps.permitted()));
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    // The exec child is a clone of this process among the container's: always sealed first.
    let c = Container::load(&ctx.root, &a.id)?;
    let process = process_from(&a, &c)?;
    let sub_cgroup = crate::cgroups::SubCgroup::parse(&a.cgroup)?;
    let new_user_ns = crate::spec::has_namespace(&c.state.config, oci_spec::runtime::LinuxNamespaceType::User, true);
    // A created init made by a molt that did not seal itself (an upgrade's replacement, an older
    // molt) is still molt's binary: a process that can ptrace it could take that binary.
    if sealed_exe::may_ptrace_runtime(&process, new_user_ns)
        && c.status() == crate::container::Status::Created
        && sealed_exe::init_is_unsealed(c.state.pid)
    {
        return Err(format!(
            "exec into container {}: the process could reach molt's binary through the created init (CAP_SYS_PTRACE without a user namespace, and the init does not run from a sealed binary); start the container first",
            a.id
        )
        .into());
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
        ignore_paused: a.ignore_paused,
        sub_cgroup,
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
