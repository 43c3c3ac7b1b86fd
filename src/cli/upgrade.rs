//! `molt upgrade ID --bundle NEWDIR ...` and `molt upgrade --resume ID`.

use std::io::Write;
use std::path::PathBuf;

use super::{CmdResult, Ctx};
use crate::upgrade::{self, Health, NetworkMode, Options, Report, StepEvent, StepReport, UpgradeError, STEPS};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The running container to upgrade; it keeps this id
    pub id: String,
    /// Bundle of the new version
    #[arg(long, short = 'b', required_unless_present_any = ["resume", "image"], conflicts_with = "image")]
    pub bundle: Option<PathBuf>,
    /// The new version as an OCI image: oci:DIR[:TAG] (an image layout), oci-archive:FILE[:TAG]
    /// or docker-archive:FILE[:NAME:TAG] (docker save); unpacked into <root>/images/ and upgraded to as with --derive (the container keeps its
    /// deployment)
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// keep (default): the new container joins the old network namespace, with its veth, IP, MAC
    /// and routes, and takes over the listening sockets of io.molt.listen, so no client is refused;
    /// move: the veth moves into the new container's own namespace (the host holds packets while it
    /// moves), but connections are refused from the old app's exit to the move (measured:
    /// scripts/bench-upgrade --compare)
    #[arg(long, default_value = "keep")]
    pub network: String,
    /// Signal that asks the old application to stop (a name like SIGTERM, or a number)
    #[arg(long = "stop-signal", default_value = "SIGTERM")]
    pub stop_signal: String,
    /// How long the old application gets to stop before SIGKILL (e.g. 500ms, 10s, 2m)
    #[arg(long = "stop-timeout", default_value = "10s")]
    pub stop_timeout: String,
    /// Health gate of the new application: exec:CMD (exits 0 inside it), tcp:PORT (accepts), or
    /// running:DUR (still running after DUR); a failure rolls back
    #[arg(long)]
    pub health: Option<String>,
    /// How long the health gate may take before it counts as failed
    #[arg(long = "health-timeout", default_value = "30s")]
    pub health_timeout: String,
    /// On failure leave things as they are (the journal is kept for --resume)
    #[arg(long = "no-rollback")]
    pub no_rollback: bool,
    /// Print the decision and the steps, change nothing
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// text (a step table) or json (one report document, also on failure)
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Finish or roll back an upgrade that was interrupted
    #[arg(long)]
    pub resume: bool,
    /// Upgrade even where the version rule refuses (a downgrade, a bundle without a version);
    /// REASON is logged and kept in the report
    #[arg(long, value_name = "REASON")]
    pub force: Option<String>,
    /// Take only the application from the new bundle (rootfs, process args, env, cwd, user,
    /// annotations); keep the running container's mounts and volumes, namespaces, hostname,
    /// resources, hooks and other annotations. One bundle then upgrades many containers.
    #[arg(long)]
    pub derive: bool,
    /// Take a stopped container too: the new version is created fresh with the container's id,
    /// volumes, cgroup path and address (its io.molt.net annotations); a rollback leaves it
    /// stopped. What `molt bundle`'s rollback-batch uses for a container whose new version died
    #[arg(long = "allow-stopped")]
    pub allow_stopped: bool,
    /// Keep the image the container runs now (when it runs one of <root>/images/) from prunes
    /// under the hold NAME, until <root>/images/.holds/NAME is removed: how `molt bundle` keeps
    /// the way back for a batch until the rollout ends
    #[arg(long = "hold-old-image", value_name = "NAME")]
    pub hold_old_image: Option<String>,
}

fn options(ctx: &Ctx, a: &Args) -> Result<Options, String> {
    let network = match a.network.as_str() {
        "move" => NetworkMode::Move,
        "keep" => NetworkMode::Keep,
        n => return Err(format!("--network {n:?}: use move or keep")),
    };
    Ok(Options {
        id: a.id.clone(),
        new_bundle: a.bundle.clone().unwrap_or_default(),
        network,
        stop_signal: crate::container::kill::parse_signal(&a.stop_signal).map_err(|e| format!("--stop-signal: {e}"))?,
        stop_timeout: upgrade::parse_duration(&a.stop_timeout).map_err(|e| format!("--stop-timeout: {e}"))?,
        health: a.health.as_deref().map(Health::parse).transpose()?.unwrap_or(Health::None),
        health_timeout: upgrade::parse_duration(&a.health_timeout).map_err(|e| format!("--health-timeout: {e}"))?,
        rollback: !a.no_rollback,
        dry_run: a.dry_run,
        systemd_cgroup: ctx.systemd_cgroup,
        force: match a.force.as_deref().map(str::trim) {
            Some("") => return Err("--force needs a reason (it is logged with the upgrade)".into()),
            f => f.map(String::from),
        },
        derive: a.derive,
        progress: Some(if a.format == "json" { progress_json } else { progress_text }),
        image: a.image.clone(),
        allow_stopped: a.allow_stopped,
        hold_old_image: a.hold_old_image.clone(),
    })
}

/// The live display on stderr (stdout keeps the report): on a terminal one line per step,
/// rewritten when it ends; piped, a plain line as each step starts and ends.
fn progress_text(e: &StepEvent) {
    use std::io::IsTerminal;
    let mut err = std::io::stderr().lock();
    let tty = err.is_terminal();
    let timing = e.millis.map(|ms| format!("{ms:>6} ms")).unwrap_or_default();
    let note = e.note.unwrap_or("");
    let _ = match (tty, e.phase) {
        (true, "start") => write!(err, "  {:<18} ...", e.step),
        (true, phase) => writeln!(err, "\r\x1b[K  {:<18} {timing}  {}{note}", e.step, if phase == "failed" { "FAILED: " } else { "" }),
        (false, "start") => writeln!(err, "upgrade {}: {} ...", e.id, e.step),
        (false, phase) => writeln!(err, "upgrade {}: {} {phase} {}  {note}", e.id, e.step, timing.trim_start()),
    };
    let _ = err.flush();
}

/// With --format json: one JSON object per step event on stderr, as it happens.
fn progress_json(e: &StepEvent) {
    if let Ok(line) = serde_json::to_string(e) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

fn steps_text(steps: &[StepReport]) -> String {
    steps.iter().map(|s| format!("  {:<18} {:>6} ms  {}\n", s.step, s.millis, s.note)).collect()
}

fn print_text(r: &Report) -> String {
    let mut out = String::new();
    if let Some(d) = &r.decision {
        out.push_str(&format!("upgrade {}: {} -> {} ({})\n", r.id, d.running, d.new, d.reason));
    }
    if r.outcome == "dry-run" {
        if !r.changes.is_empty() {
            out.push_str("the new config differs from the running one in:\n");
            for c in &r.changes {
                out.push_str(&format!("  {:<11} {} -> {}\n", c.field, c.from, c.to));
            }
        }
        out.push_str("dry run: the new bundle passes what create checks:\n");
        for c in &r.checks {
            out.push_str(&format!("  ok  {c}\n"));
        }
        out.push_str("these steps would run, each journaled before and after:\n");
        for (i, s) in STEPS.iter().enumerate() {
            out.push_str(&format!("  {}. {:<18} {}\n", i + 1, s.step.name(), s.what));
        }
        return out;
    }
    out.push_str(&steps_text(&r.steps));
    if let Some(ms) = r.unavailable_ms {
        out.push_str(&format!("unavailable: {ms} ms (old process stopped -> new process started)\n"));
    }
    out.push_str(&format!("{}: {}\n", r.id, r.outcome));
    out
}

pub fn run(ctx: &Ctx, a: Args) -> CmdResult {
    if a.format != "text" && a.format != "json" {
        return Err(format!("--format {:?}: use text or json", a.format).into());
    }
    if a.resume {
        let outcome = upgrade::resume(&ctx.root, &a.id, ctx.systemd_cgroup)?;
        let text = if a.format == "json" { format!("{}\n", serde_json::json!({"id": a.id, "outcome": outcome})) } else { format!("{}: {outcome}\n", a.id) };
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(0);
    }
    let opts = options(ctx, &a)?;
    if !a.dry_run {
        upgrade::catch_interrupts().map_err(|e| format!("install the SIGINT/SIGTERM handler: {e}"))?;
    }
    let res = upgrade::upgrade(&ctx.root, &opts);
    let report = match res {
        Ok(r) => r,
        Err(UpgradeError::Refused { id, decision }) if a.format == "json" || a.dry_run => {
            let r = Report { id: id.clone(), outcome: "refused", decision: Some(decision.clone()), steps: vec![], unavailable_ms: None, error: Some(decision.reason.clone()), checks: vec![], changes: vec![] };
            let text = if a.format == "json" { format!("{}\n", serde_json::to_string_pretty(&r)?) } else { print_text(&r) };
            std::io::stdout().write_all(text.as_bytes())?;
            return Err(UpgradeError::Refused { id, decision }.into());
        }
        Err(e) => {
            if a.format == "json" {
                // One JSON document whatever happened; the message also goes to stderr.
                let outcome = match &e {
                    UpgradeError::StepFailed { rolled_back: true, .. } => "rolled-back",
                    _ => "failed",
                };
                let steps = match &e {
                    UpgradeError::StepFailed { steps, .. } => steps.clone(),
                    _ => vec![],
                };
                let doc = serde_json::json!({"id": a.id, "outcome": outcome, "error": e.to_string(), "steps": steps});
                std::io::stdout().write_all(format!("{}\n", serde_json::to_string_pretty(&doc)?).as_bytes())?;
            } else if let UpgradeError::StepFailed { steps, step, rolled_back, .. } = &e {
                // The steps that did finish, then the one that failed, as the report would show them.
                let end = if *rolled_back { "rolled back" } else { "failed" };
                let text = format!("{}  {:<18} FAILED\n{}: {end}\n", steps_text(steps), step, a.id);
                std::io::stdout().write_all(text.as_bytes())?;
            }
            // Interrupted: the error says it was rolled back (or why not); the status says why.
            if let Some(sig) = upgrade::interrupted_by() {
                crate::logging::error(&e.to_string());
                return Ok(128 + sig);
            }
            return Err(e.into());
        }
    };
    let text = if a.format == "json" { format!("{}\n", serde_json::to_string_pretty(&report)?) } else { print_text(&report) };
    std::io::stdout().write_all(text.as_bytes())?;
    if let Some(sig) = upgrade::interrupted_by() {
        // The signal came once the commit had begun, which was finished: the user asked to stop
        // and is told what happened instead.
        crate::logging::error(&format!(
            "upgrade of {}: interrupted by {} during the commit, which was finished: the new version runs",
            a.id,
            upgrade::signal_name(sig)
        ));
        return Ok(128 + sig);
    }
    Ok(0)
}
