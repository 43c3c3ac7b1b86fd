//! `molt bundle plan MANIFEST UPGRADE` and `molt bundle upgrade MANIFEST UPGRADE`: the work is in
//! `crate::bundle`; this reads the flags and prints.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::CmdResult;
use crate::bundle::{self, control, control::Control, doc::Documents, doc::Manifest, plan, rollout, transport::Session};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Ask every host what each container runs and print the decision and batch of each; changes nothing
    Plan(PlanArgs),
    /// Ship the new application and upgrade every eligible container, role by role, batch by batch
    Upgrade(UpgradeArgs),
    /// Hold a rollout of the bundle before its next batch (a rollout started later holds too)
    Pause(ControlArgs),
    /// Release a paused rollout
    Resume(ControlArgs),
    /// Let a rollout held at a canary go on with the rest of the role
    Promote(PromoteArgs),
    /// Every container's status, health, version and last recorded upgrade
    ///
    /// HEALTH is healthy (its check passed now), unhealthy (its check failed now, or it is not
    /// running: stopped, created, paused, not found), running (it runs and no check is named) or
    /// unknown (its host, or the check, could not be reached). The check is the health gate the
    /// upgrade document names for the container's role (the role's `health`, else the document's),
    /// run once now on the container's host: exec:CMD runs CMD in the container, tcp:PORT connects
    /// to the port in its network namespace, running:DUR only checks that it runs. Without UPGRADE
    /// no check is run.
    Status(StatusArgs),
    /// Every rollout of the bundle recorded on its hosts, oldest first
    History(ViewArgs),
    /// Run health checks of containers on this host now and print the results as JSON (what
    /// `status` runs on each host)
    Probe(ProbeArgs),
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The bundle manifest
    pub manifest: PathBuf,
    /// An upgrade document whose health gates are run now (each container's role's)
    pub upgrade: Option<PathBuf>,
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// ID=CHECK, CHECK as `molt upgrade --health`: exec:CMD, tcp:PORT or running:DUR
    #[arg(required = true)]
    pub checks: Vec<String>,
    /// How long one check may take
    #[arg(long, default_value = "10s")]
    pub timeout: String,
    /// Run the one check given here, in this process (what each check of a probe runs as)
    #[arg(long, hide = true)]
    pub one: bool,
}

#[derive(clap::Args, Debug)]
pub struct StateDir {
    /// Where the operator's machine keeps each bundle's pause and promote state
    #[arg(long = "state-dir", env = "MOLT_BUNDLE_STATE", default_value = control::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The bundle manifest (what runs where)
    pub manifest: PathBuf,
    /// The upgrade document (what to roll out, how)
    pub upgrade: PathBuf,
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Batch size (default: the upgrade document's batch_size)
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Canaries per role (default: the upgrade document's canary)
    #[arg(long)]
    pub canary: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct UpgradeArgs {
    /// The bundle manifest (what runs where)
    pub manifest: PathBuf,
    /// The upgrade document (what to roll out, how)
    pub upgrade: PathBuf,
    /// Containers upgraded at once (default: the upgrade document's batch_size)
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Canaries per role, upgraded first in a batch of their own (default: the document's canary)
    #[arg(long)]
    pub canary: Option<usize>,
    /// Go on past a canary that stayed healthy for min_healthy, without `molt bundle promote`
    #[arg(long = "auto-promote")]
    pub auto_promote: bool,
    /// Do not ask before starting
    #[arg(long)]
    pub yes: bool,
    /// table (progress lines and a summary) or json (the summary only)
    #[arg(long, default_value = "table")]
    pub format: String,
    #[command(flatten)]
    pub state: StateDir,
}

#[derive(clap::Args, Debug)]
pub struct ControlArgs {
    /// The bundle manifest (its name names the rollout)
    pub manifest: PathBuf,
    #[command(flatten)]
    pub state: StateDir,
}

#[derive(clap::Args, Debug)]
pub struct PromoteArgs {
    /// The bundle manifest (its name names the rollout)
    pub manifest: PathBuf,
    /// Promote only if the rollout waits on this role's canary
    #[arg(long)]
    pub role: Option<String>,
    #[command(flatten)]
    pub state: StateDir,
}

#[derive(clap::Args, Debug)]
pub struct ViewArgs {
    /// The bundle manifest
    pub manifest: PathBuf,
    /// table or json
    #[arg(long, default_value = "table")]
    pub format: String,
}

fn check_format(f: &str) -> Result<(), String> {
    match f {
        "table" | "json" => Ok(()),
        _ => Err(format!("--format {f:?}: use table or json")),
    }
}

fn batch_size(docs: &Documents, parallel: Option<usize>) -> Result<usize, String> {
    match parallel {
        Some(0) => Err("--parallel 0: at least 1".into()),
        Some(n) => Ok(n),
        None => Ok(docs.upgrade.batch_size),
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

type Hosts = Vec<(bundle::transport::Transport, Option<String>)>;

/// Documents checked first (nothing is touched when they are wrong), then every host asked.
fn plan_now(manifest: &Path, upgrade: &Path, parallel: Option<usize>, canary: Option<usize>, format: &str) -> Result<(Documents, Session, Hosts, plan::Plan), Box<dyn std::error::Error>> {
    check_format(format)?;
    let mut docs = Documents::load(manifest, upgrade)?;
    let size = batch_size(&docs, parallel)?;
    if let Some(k) = canary {
        docs.upgrade.canary = k;
    }
    let session = Session::new()?;
    let hosts = bundle::connect_all(&docs.manifest, &session);
    let p = plan::build(&docs, &bundle::observe(&docs.manifest, &hosts), size);
    Ok((docs, session, hosts, p))
}

/// The manifest alone and its hosts connected: for status and history.
fn view(manifest: &Path, format: &str) -> Result<(Manifest, Session, Hosts), Box<dyn std::error::Error>> {
    check_format(format)?;
    let m = Manifest::load(manifest)?;
    let session = Session::new()?;
    let hosts = bundle::connect_all(&m, &session);
    Ok((m, session, hosts))
}

fn control_of(manifest: &Path, state: &StateDir) -> Result<Control, Box<dyn std::error::Error>> {
    Ok(Control::new(&state.state_dir, &Manifest::load(manifest)?.name)?)
}

fn warn_all(warnings: &[String]) {
    for w in warnings {
        crate::logging::warn(w);
    }
}

fn print(text: &str) -> CmdResult {
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(0)
}

pub fn run(ctx: &super::Ctx, cmd: Cmd) -> CmdResult {
    match cmd {
        Cmd::Plan(a) => {
            let (_, _, _, p) = plan_now(&a.manifest, &a.upgrade, a.parallel, a.canary, &a.format)?;
            let text = if a.format == "json" { serde_json::to_string_pretty(&p)? + "\n" } else { plan::table(&p) };
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(0)
        }
        Cmd::Upgrade(a) => {
            let (docs, session, hosts, p) = plan_now(&a.manifest, &a.upgrade, a.parallel, a.canary, &a.format)?;
            let ctl = Control::new(&a.state.state_dir, &docs.manifest.name)?;
            let _rollout = ctl.lock_rollout()?;
            if a.format == "table" {
                say(plan::table(&p).trim_end());
            }
            if p.to_upgrade().count() == 0 && p.unreachable().count() == 0 {
                say("nothing to upgrade: every container is skipped by the plan");
                return Ok(0);
            }
            if !a.yes {
                if !std::io::stdin().is_terminal() {
                    return Err("not starting without --yes: standard input is not a terminal to ask on".into());
                }
                print!("start the rollout? [y/N] ");
                std::io::stdout().flush()?;
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Err("rollout not started".into());
                }
            }
            let quiet = |_: &str| {};
            let progress: rollout::Say = if a.format == "table" { &say } else { &quiet };
            let steer = rollout::Steer { control: &ctl, auto_promote: a.auto_promote, live: a.format == "table" && std::io::stdout().is_terminal() };
            let summary = rollout::run(&docs, &p, &hosts, &session, &steer, progress)?;
            let text = if a.format == "json" { serde_json::to_string_pretty(&summary)? + "\n" } else { rollout::summary_table(&summary) };
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(if summary.completed { 0 } else { 1 })
        }
        Cmd::Pause(a) => {
            let ctl = control_of(&a.manifest, &a.state)?;
            ctl.pause(&bundle::history::who())?;
            print(&format!("paused: a rollout of this bundle holds before its next batch until `molt bundle resume` ({})\n", ctl.dir().display()))
        }
        Cmd::Resume(a) => {
            let was = control_of(&a.manifest, &a.state)?.resume()?;
            print(if was { "resumed\n" } else { "not paused: nothing to resume\n" })
        }
        Cmd::Promote(a) => {
            let g = control_of(&a.manifest, &a.state)?.promote(a.role.as_deref())?;
            print(&format!("promoted: the canary of role {} on {}; the rollout goes on with the rest of the role\n", g.role, g.version))
        }
        Cmd::Status(a) => {
            let upgrade = match &a.upgrade {
                Some(u) => Some(Documents::load(&a.manifest, u)?.upgrade),
                None => None,
            };
            let (m, _session, hosts) = view(&a.manifest, &a.format)?;
            let (rows, warnings) = bundle::status(&m, &hosts, upgrade.as_ref());
            warn_all(&warnings);
            print(&if a.format == "json" { serde_json::to_string_pretty(&rows)? + "\n" } else { bundle::status_table(&rows) })
        }
        Cmd::History(a) => {
            let (m, _session, hosts) = view(&a.manifest, &a.format)?;
            let (records, warnings) = bundle::history::read(&m, &hosts);
            warn_all(&warnings);
            print(&if a.format == "json" { serde_json::to_string_pretty(&records)? + "\n" } else { bundle::history::table(&records) })
        }
        Cmd::Probe(a) => {
            let checks = a.checks.iter().map(|c| bundle::health::parse_check(c)).collect::<Result<Vec<_>, _>>()?;
            let timeout = crate::upgrade::parse_duration(&a.timeout).map_err(|e| format!("--timeout: {e}"))?;
            if !a.one {
                return print(&(serde_json::to_string(&bundle::health::probe_here(&ctx.root, &a.checks, timeout))? + "\n"));
            }
            let [(id, check)] = <[_; 1]>::try_from(checks).map_err(|_| "--one: give exactly one ID=CHECK")?;
            // An exec check clones a process into the container (CVE-2019-5736, as `molt exec`).
            crate::container::sealed_exe::reexec_sealed()?;
            print(&(serde_json::to_string(&bundle::health::probe_one(&ctx.root, id, &check))? + "\n"))
        }
    }
}
