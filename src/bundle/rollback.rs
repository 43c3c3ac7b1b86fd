//! What stops a rollout and takes a batch back: the canary gate, the check that a batch's
//! upgraded containers still run the new version once the batch is done, the failure policy
//! rollback-batch (every container of the failed batch back to what it ran before, a stopped one
//! too), and the image holds that keep its way back on each host until the rollout ends.

use super::control::{Control, Gate};
use super::doc::Documents;
use super::plan::{Observed, Row};
use super::rollout::{host_of, Done, Say};
use super::transport::{quote, Transport};

/// The hold `molt upgrade --hold-old-image` takes on a container's image for a rollout of
/// `bundle` (names and ids have no '@': one bundle's holds never match another's prefix).
pub fn hold_name(bundle: &str, id: &str) -> String {
    format!("bundle@{bundle}@{id}")
}

/// Whether a container runs `version` now; why not in words.
fn on_version(hosts: &[(Transport, Option<String>)], id: &str, host: &str, version: &str) -> Result<(), String> {
    let t = host_of(hosts, host).map_err(|e| e.to_string())?;
    still_on(super::observe_one(t, id), version)
}

fn still_on(o: Observed, version: &str) -> Result<(), String> {
    match o {
        Observed::Found { status, version: v, .. } if status == "running" && v.as_deref() == Some(version) => Ok(()),
        Observed::Found { status, version: v, .. } => Err(format!("it is {status} on version {}", v.as_deref().unwrap_or("-"))),
        Observed::NotFound => Err("it no longer exists".into()),
        Observed::Unreachable { reason } => Err(format!("it cannot be asked: {reason}")),
    }
}

/// The canaries of a role (its containers now running the new version) must still run it.
fn canaries_hold(docs: &Documents, hosts: &[(Transport, Option<String>)], ids: &[(String, String)]) -> Result<(), String> {
    for (id, host) in ids {
        on_version(hosts, id, host, &docs.upgrade.version).map_err(|why| format!("canary {id} did not stay healthy: {why}"))?;
    }
    Ok(())
}

/// After a batch: each container it upgraded must still run the new version (an application that
/// passed its health gate and died after it fails the batch too, and is taken back with it).
pub fn check_still_upgraded(docs: &Documents, hosts: &[(Transport, Option<String>)], done: &mut [Done]) {
    // One `molt list` per host of the batch, not a `molt state` per container: a round trip and
    // a molt process on the host per upgrade cost as much as a small upgrade's own steps.
    let upgraded: Vec<(&str, &str)> = done.iter().filter(|d| d.outcome == "upgraded").map(|d| (d.id.as_str(), d.host.as_str())).collect();
    let seen = super::observe_ids(hosts, &upgraded);
    for (d, o) in done.iter_mut().filter(|d| d.outcome == "upgraded").zip(seen) {
        if let Err(why) = still_on(o, &docs.upgrade.version) {
            d.outcome = "failed".into();
            d.detail = format!("upgraded, then {why}");
        }
    }
}

/// How the operator steers a rollout: the control file, and whether a canary that stays
/// healthy for `min_healthy` goes on without `promote`.
pub struct Steer<'a> {
    pub control: &'a Control,
    pub auto_promote: bool,
    /// The batches' progress redrawn in place (stdout is a terminal) rather than plain lines.
    pub live: bool,
}

/// Before the first non-canary batch of a role whose upgrade has canaries: hold until promoted
/// (or, with --auto-promote, until the canaries stayed healthy for min_healthy), then check the
/// canaries still run the new version.
pub fn canary_gate(docs: &Documents, hosts: &[(Transport, Option<String>)], canaries: &[(String, String)], role: &str, steer: &Steer, say: Say) -> Result<(), String> {
    let gate = Gate { version: docs.upgrade.version.clone(), role: role.into() };
    let names = canaries.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", ");
    if steer.control.promoted(&gate).map_err(|e| e.to_string())? {
        say(&format!("canary: role {role} was promoted earlier ({names})"));
    } else if steer.auto_promote {
        let wait = docs.upgrade.min_healthy.as_deref().map(crate::upgrade::parse_duration).transpose()?.unwrap_or_default();
        say(&format!("canary: watching {names} for {wait:?} (--auto-promote)"));
        std::thread::sleep(wait);
        canaries_hold(docs, hosts, canaries)?;
        steer.control.mark_promoted(&gate).map_err(|e| e.to_string())?;
        say(&format!("canary of role {role} promoted automatically"));
        return Ok(());
    } else {
        steer.control.wait_for_promotion(&gate, &|l| say(l)).map_err(|e| e.to_string())?;
    }
    canaries_hold(docs, hosts, canaries)
}

/// rollback-batch: the batch's containers that did upgrade go back to the application they ran
/// before, by `molt upgrade --force` (the version rule refuses a downgrade by design) with
/// `--allow-stopped` (a container whose new version died is created afresh on the old one, with
/// its id, volumes and address). The old application is the bundle it ran, or the image dir its
/// upgrade held on its host. Each container that cannot go back says why.
pub fn roll_back_batch(docs: &Documents, hosts: &[(Transport, Option<String>)], rows: &[&Row], done: &mut [Done], say: Say) {
    for d in done.iter_mut().filter(|d| d.upgraded) {
        let Some(row) = rows.iter().find(|r| r.id == d.id) else { continue };
        let Some(old) = &row.bundle else {
            d.detail = format!("{}; NOT rolled back: the application it ran before is unknown", d.detail);
            say(&format!("  rollback-batch {}: {}", d.id, d.detail));
            continue;
        };
        let why = format!("bundle {} failure policy rollback-batch", docs.manifest.name);
        let mut args = vec!["upgrade", &row.id, "--bundle", old, "--force", &why, "--allow-stopped", "--format", "json"];
        // An image's bundle dir is only an application: the container keeps its deployment.
        if docs.upgrade.derive || docs.upgrade.roles.get(&row.role).is_some_and(|r| r.image.is_some()) {
            args.push("--derive");
        }
        if let Some(sig) = &docs.upgrade.stop_signal {
            args.extend(["--stop-signal", sig]);
        }
        if let Some(st) = &docs.upgrade.stop_timeout {
            args.extend(["--stop-timeout", st]);
        }
        let res = host_of(hosts, &row.host).map_err(|e| e.to_string()).and_then(|t| t.molt(&args).map_err(|e| e.to_string()));
        let failed = |reason: String| format!("{}; NOT rolled back: {reason}", d.detail);
        d.detail = match res {
            Ok(out) if out.status.success() => {
                d.outcome = "rolled-back".into();
                d.upgraded = false;
                format!("{}; back to {} by rollback-batch", d.detail, row.running.as_deref().unwrap_or("its old application"))
            }
            Ok(out) => {
                let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                failed(report["error"].as_str().map(String::from).unwrap_or_else(|| crate::logging::messages_of(&String::from_utf8_lossy(&out.stderr))))
            }
            Err(e) => failed(e),
        };
        say(&format!("  rollback-batch {}: {}", d.id, d.detail));
    }
}

/// The end of a rollout on one host: its image holds go (`<root>/images/.holds/`, see
/// `molt upgrade --hold-old-image`) and the store is pruned of what they alone kept (when an
/// upgrade holds the store right then, its own end prunes). Returns how many holds went.
pub fn release_holds(t: &Transport, bundle: &str) -> Result<usize, String> {
    let holds = crate::image::store::holds_dir(&t.host.root);
    let script = format!(
        "set -- {}/{}*; [ -e \"$1\" ] || {{ echo 0; exit 0; }}; rm -f -- \"$@\" || exit 1; echo $#; {} --root {} image prune >/dev/null 2>&1 || true",
        quote(&holds.display().to_string()),
        hold_name(bundle, ""),
        quote(&t.host.molt),
        quote(&t.host.root.display().to_string())
    );
    let out = t.run(&script, None).map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("host {}: releasing the image holds of the rollout: {}", t.name, crate::logging::messages_of(&String::from_utf8_lossy(&out.stderr))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0))
}
