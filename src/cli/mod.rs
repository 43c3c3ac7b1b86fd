//! The command line: runc's commands, flags and output formats (engines call molt exactly as they
//! call runc), plus molt's own `upgrade` and `volume`. One file per command; each stays thin and
//! hands the work to the library.

mod bundle;
mod checkpoint;
mod create;
mod delete;
mod docs;
pub(crate) mod events;
pub(crate) mod exec;
mod features;
mod image;
mod kill;
mod list;
mod pause;
mod ps;
mod restore;
mod run;
mod spec;
mod start;
mod state;
pub(crate) mod update;
mod upgrade;
mod volume;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "molt", about = "A Linux OCI container runtime that upgrades running containers in place", disable_version_flag = true)]
pub struct Cli {
    /// Directory for container state (default /run/molt, or $XDG_RUNTIME_DIR/molt when not root)
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Append the runtime's log records to this file
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of the --log records: text or json
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Log debug records too
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for runc compatibility: cgroups paths in "slice:prefix:name" form
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility and ignored
    #[arg(long, global = true, hide = true)]
    criu: Option<String>,
    /// Accepted for runc compatibility and ignored
    #[arg(long, global = true, hide = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    /// Print the version
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a container: set everything up and hold the process until `start`
    Create(create::Args),
    /// Start the process of a created container
    Start(start::Args),
    /// Create, start and wait for a container
    Run(run::Args),
    /// Print a container's state as runtime-spec JSON
    State(state::Args),
    /// Send a signal to a container's init (or every process with --all)
    Kill(kill::Args),
    /// Delete a container and everything it holds
    Delete(delete::Args),
    /// List containers
    List(list::Args),
    /// Write a default config.json
    Spec(spec::Args),
    /// Print what this runtime supports, as runtime-spec features JSON
    Features,
    /// Run a new process in a running container
    Exec(exec::Args),
    /// List the processes of a container
    Ps(ps::Args),
    /// Change a container's resource limits (runtime-spec linux.resources)
    Update(update::Args),
    /// Resource statistics of a container as a stream of JSON events
    Events(events::Args),
    /// Freeze every process of a container
    Pause(pause::Args),
    /// Thaw a paused container
    Resume(pause::Args),
    /// Checkpoint a running container with criu (runc's flags)
    Checkpoint(checkpoint::Args),
    /// Restore a container from a checkpoint with criu (runc's flags)
    Restore(restore::Args),
    /// Replace a running container by one from a new bundle, keeping its volumes and identity
    Upgrade(upgrade::Args),
    /// Volumes attached on this host
    #[command(subcommand)]
    Volume(volume::Cmd),
    /// OCI images: unpack one into a bundle, inspect it, prune unpacked images nothing uses
    #[command(subcommand)]
    Image(image::Cmd),
    /// A bundled application over many hosts: plan and roll out an upgrade of every container
    #[command(subcommand)]
    Bundle(bundle::Cmd),
    /// Print a shell completion script for molt
    Completion(docs::CompletionArgs),
    /// Write molt's man pages into a directory
    Man(docs::ManArgs),
}

impl Command {
    /// Everything but writing a config, printing features and the operator's bundle commands
    /// (which reach hosts over ssh, where molt runs as root) makes namespaces, cgroups or mounts.
    fn needs_root(&self) -> bool {
        match self {
            Command::Image(c) => c.needs_root(),
            _ => !matches!(self, Command::Spec(_) | Command::Features | Command::Bundle(_) | Command::Completion(_) | Command::Man(_)),
        }
    }

    /// Queries report an interrupted upgrade; every other command settles it first.
    fn settle_mode(&self) -> crate::upgrade::Settle {
        match self {
            Command::State(_) | Command::Ps(_) | Command::Events(_) => crate::upgrade::Settle::Report,
            _ => crate::upgrade::Settle::Recover,
        }
    }

    /// Commands that clone processes into a container's namespaces.
    fn spawns_container_processes(&self) -> bool {
        matches!(self, Command::Create(_) | Command::Run(_) | Command::Exec(_) | Command::Upgrade(_))
    }

    fn container_id(&self) -> Option<&str> {
        Some(match self {
            Command::Start(a) => &a.id,
            Command::State(a) => &a.id,
            Command::Kill(a) => &a.id,
            Command::Delete(a) => &a.id,
            Command::Exec(a) => &a.id,
            Command::Ps(a) => &a.id,
            Command::Pause(a) | Command::Resume(a) => &a.id,
            Command::Update(a) => &a.id,
            Command::Events(a) => &a.id,
            Command::Checkpoint(a) => &a.id,
            _ => return None,
        })
    }
}

/// What every command gets: the resolved root and global flags.
pub struct Ctx {
    pub root: PathBuf,
    pub systemd_cgroup: bool,
}

pub type CmdResult = Result<i32, Box<dyn std::error::Error>>;

pub fn default_root() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if euid != 0 => PathBuf::from(dir).join("molt"),
        _ => PathBuf::from("/run/molt"),
    }
}

/// runc accepts Go-style single-dash long flags (`-no-subreaper`); clap does not.
fn normalize_args(args: impl Iterator<Item = String>) -> Vec<String> {
    let long = [
        "-no-subreaper", "-no-pivot", "-no-new-keyring", "-detach", "-bundle", "-pid-file",
        "-console-socket", "-preserve-fds", "-force", "-all", "-root", "-log", "-log-format", "-debug",
        "-process", "-tty", "-format", "-ignore-paused", "-systemd-cgroup", "-image-path", "-work-path", "-resources",
        "-parent-path", "-leave-running", "-tcp-established", "-ext-unix-sk", "-shell-job", "-lazy-pages", "-status-fd",
        "-page-server", "-file-locks", "-pre-dump", "-manage-cgroups-mode", "-empty-ns", "-auto-dedup", "-lsm-profile",
        "-lsm-mount-context",
    ];
    let mut out = vec![];
    let mut past_dashdash = false;
    for a in args {
        if a == "--" {
            past_dashdash = true;
        }
        let name = a.split('=').next().unwrap_or("");
        if !past_dashdash && long.contains(&name) {
            out.push(format!("-{a}"));
        } else {
            out.push(a);
        }
    }
    out
}

pub fn main() -> i32 {
    // SAFETY: reset to default so a closed stdout ends us quietly rather than panicking in print!.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = normalize_args(std::env::args());
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and the like: on stdout, success.
            let _ = e.print();
            return 0;
        }
        Err(e) => return usage_error(&args, &e),
    };
    let format = match crate::logging::Format::parse(&cli.log_format) {
        Ok(f) => f,
        Err(e) => {
            crate::logging::error(&e);
            return 1;
        }
    };
    crate::logging::init(cli.log.clone(), format, cli.debug);
    if cli.version {
        println!("molt version {}\ncommit: {}\nspec: {}", env!("CARGO_PKG_VERSION"), option_env!("MOLT_COMMIT").unwrap_or("unknown"), crate::spec::OCI_VERSION);
        return 0;
    }
    let Some(command) = cli.command else {
        crate::logging::error("no command given; see molt --help");
        return 1;
    };
    // SAFETY: geteuid has no preconditions.
    if command.needs_root() && unsafe { libc::geteuid() } != 0 {
        crate::logging::error("this command needs root: molt creates namespaces, cgroups and mounts, and rootless containers are not supported; run it as root (sudo molt ...)");
        return 1;
    }
    let ctx = Ctx { root: cli.root.clone().unwrap_or_else(default_root), systemd_cgroup: cli.systemd_cgroup };
    // CVE-2019-5736: every command that may clone a process into a container (create, run, exec,
    // upgrade, and any command that finishes or rolls back an interrupted upgrade) first
    // re-executes from a sealed binary, so the container never reaches molt's own (see sealed_exe).
    let settles = command.container_id().is_some_and(|id| command.settle_mode() == crate::upgrade::Settle::Recover && crate::upgrade::journal::path(&ctx.root, id).exists());
    if command.spawns_container_processes() || settles {
        if let Err(e) = crate::container::sealed_exe::reexec_sealed() {
            crate::logging::error(&e.to_string());
            return 1;
        }
    }
    if let Some(id) = command.container_id() {
        // An upgrade interrupted by a crash is finished or rolled back before a command acts on
        // the container; a query only reports it (runc users expect `state` to change nothing).
        if let Err(e) = crate::upgrade::settle(&ctx.root, id, command.settle_mode()) {
            // delete --force must still be able to clear everything away.
            let forced = matches!(&command, Command::Delete(a) if a.force);
            if !forced {
                crate::logging::error(&e.to_string());
                return 1;
            }
            crate::logging::warn(&format!("{e}; delete --force abandons the upgrade"));
            if let Err(e) = crate::upgrade::abandon(&ctx.root, id) {
                crate::logging::warn(&e.to_string());
            }
        }
    }
    let res = match command {
        Command::Create(a) => create::run(&ctx, a),
        Command::Start(a) => start::run(&ctx, a),
        Command::Run(a) => run::run(&ctx, a),
        Command::State(a) => state::run(&ctx, a),
        Command::Kill(a) => kill::run(&ctx, a),
        Command::Delete(a) => delete::run(&ctx, a),
        Command::List(a) => list::run(&ctx, a),
        Command::Spec(a) => spec::run(a),
        Command::Features => features::run(),
        Command::Exec(a) => exec::run(&ctx, a),
        Command::Ps(a) => ps::run(&ctx, a),
        Command::Update(a) => update::run(&ctx, a),
        Command::Events(a) => events::run(&ctx, a),
        Command::Pause(a) => pause::run(&ctx, a, true),
        Command::Resume(a) => pause::run(&ctx, a, false),
        Command::Checkpoint(a) => checkpoint::run(&ctx, a),
        Command::Restore(a) => restore::run(&ctx, a),
        Command::Upgrade(a) => upgrade::run(&ctx, a),
        Command::Volume(c) => volume::run(&ctx, c),
        Command::Image(c) => image::run(&ctx, c),
        Command::Bundle(c) => bundle::run(&ctx, c),
        Command::Completion(a) => docs::completion(a),
        Command::Man(a) => docs::man(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            crate::logging::error(&e.to_string());
            1
        }
    }
}

/// A command line clap refuses, reported as runc reports one: a log record (in the format and
/// place the global flags ask for, read here by hand since parsing failed), exit status 3 for an
/// unknown command and 1 for anything else.
fn usage_error(args: &[String], e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    let flag = |name: &str| {
        let eq = format!("{name}=");
        args.iter().take_while(|a| *a != "--").enumerate().find_map(|(i, a)| match a.strip_prefix(&eq) {
            Some(v) => Some(v.to_string()),
            None if a == name => args.get(i + 1).cloned(),
            None => None,
        })
    };
    let format = flag("--log-format").and_then(|f| crate::logging::Format::parse(&f).ok()).unwrap_or(crate::logging::Format::Text);
    crate::logging::init(flag("--log").map(PathBuf::from), format, false);
    // clap's message in one line: the error and what continues it, then the usage.
    let rendered = e.render().to_string();
    let lines: Vec<&str> = rendered.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let what: Vec<&str> = lines.iter().take_while(|l| !l.starts_with("Usage:") && !l.starts_with("tip:") && !l.starts_with("For more")).copied().collect();
    let what = what.join(" ");
    let mut msg = what.strip_prefix("error: ").unwrap_or(&what).to_string();
    if msg.is_empty() {
        msg = "invalid command line".into();
    }
    if let Some(usage) = lines.iter().find_map(|l| l.strip_prefix("Usage: ")) {
        msg.push_str(&format!(" (usage: {usage})"));
    }
    crate::logging::error(&msg);
    if e.kind() == ErrorKind::InvalidSubcommand { 3 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_flags_become_long_flags() {
        let v = normalize_args(["molt", "restore", "-no-subreaper", "-d", "--bundle", "b", "x"].into_iter().map(String::from));
        assert_eq!(v, ["molt", "restore", "--no-subreaper", "-d", "--bundle", "b", "x"]);
    }
}
