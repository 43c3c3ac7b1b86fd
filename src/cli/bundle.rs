//! `molt bundle plan MANIFEST UPGRADE` and `molt bundle upgrade MANIFEST UPGRADE`: the work is in
//! `crate::bundle`; this reads the flags and prints.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::CmdResult;
use crate::bundle::{self, doc::Documents, plan, rollout, transport::Session};

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Ask every host what each container runs and print the decision and batch of each; changes nothing
    Plan(PlanArgs),
    /// Ship the new application and upgrade every eligible container, role by role, batch by batch
    Upgrade(UpgradeArgs),
}

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    pub manifest: PathBuf,
    pub upgrade: PathBuf,
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Batch size (default: the upgrade document's batch_size)
    #[arg(long)]
    pub parallel: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct UpgradeArgs {
    pub manifest: PathBuf,
    pub upgrade: PathBuf,
    /// Containers upgraded at once (default: the upgrade document's batch_size)
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Do not ask before starting
    #[arg(long)]
    pub yes: bool,
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
fn plan_now(manifest: &Path, upgrade: &Path, parallel: Option<usize>, format: &str) -> Result<(Documents, Session, Hosts, plan::Plan), Box<dyn std::error::Error>> {
    check_format(format)?;
    let docs = Documents::load(manifest, upgrade)?;
    let size = batch_size(&docs, parallel)?;
    let session = Session::new()?;
    let hosts = bundle::connect_all(&docs, &session);
    let p = plan::build(&docs, &bundle::observe(&docs, &hosts), size);
    Ok((docs, session, hosts, p))
}

pub fn run(cmd: Cmd) -> CmdResult {
    match cmd {
        Cmd::Plan(a) => {
            let (_, _, _, p) = plan_now(&a.manifest, &a.upgrade, a.parallel, &a.format)?;
            let text = if a.format == "json" { serde_json::to_string_pretty(&p)? + "\n" } else { plan::table(&p) };
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(0)
        }
        Cmd::Upgrade(a) => {
            let (docs, session, hosts, p) = plan_now(&a.manifest, &a.upgrade, a.parallel, &a.format)?;
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
            let summary = rollout::run(&docs, &p, &hosts, &session, progress)?;
            let text = if a.format == "json" { serde_json::to_string_pretty(&summary)? + "\n" } else { rollout::summary_table(&summary) };
            std::io::stdout().write_all(text.as_bytes())?;
            Ok(if summary.completed { 0 } else { 1 })
        }
    }
}
