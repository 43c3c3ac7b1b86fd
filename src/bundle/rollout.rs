//! The rollout: ship each role's new application to the hosts that need it, then batch by batch
//! run `molt upgrade` on each container's host (with the role's pre/post-upgrade commands),
//! stopping before the next batch when one fails; a history record on every host touched.
//! Nothing here remembers progress: a re-run recomputes the plan from what the hosts run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::doc::{Documents, FailurePolicy};
use super::plan::{Action, Plan, Row};
use super::control::{Control, Gate};
use super::transport::{quote, Archive, Session, Transport};
use super::BundleError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    pub id: String,
    pub role: String,
    pub host: String,
    pub from: Option<String>,
    pub to: String,
    /// upgraded, rolled-back, failed, refused, not started, or the plan's skip.
    pub outcome: String,
    /// `molt upgrade` succeeded (a post-upgrade command may still have failed it).
    #[serde(default)]
    pub upgraded: bool,
    pub millis: u128,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub bundle: String,
    pub version: String,
    pub completed: bool,
    pub containers: Vec<Done>,
}

/// Where a line of progress goes (stdout in the CLI), one call per line.
pub type Say<'a> = &'a (dyn Fn(&str) + Sync);

fn host_of<'a>(hosts: &'a [(Transport, Option<String>)], name: &str) -> Result<&'a Transport, BundleError> {
    hosts.iter().map(|(t, _)| t).find(|t| t.name == name).ok_or_else(|| BundleError::Refused(format!("host {name} is not connected")))
}

/// Ship every role's bundle to every host with a container of that role to upgrade.
fn ship(docs: &Documents, plan: &Plan, hosts: &[(Transport, Option<String>)], session: &Session, say: Say) -> Result<BTreeMap<(String, String), PathBuf>, BundleError> {
    // Each role's archive once, here; then every host is sent its roles at the same time.
    let mut archives = BTreeMap::new();
    let mut per_host: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for row in plan.to_upgrade() {
        if !archives.contains_key(&row.role) {
            let src = app_of(&docs.upgrade.roles[&row.role])?.local_dir(session, &row.role)?;
            archives.insert(row.role.clone(), Archive::make(session, &src, &row.role)?);
        }
        let roles = per_host.entry(row.host.as_str()).or_default();
        if !roles.contains(&row.role.as_str()) {
            roles.push(row.role.as_str());
        }
    }
    let archives = &archives;
    let results: Vec<Result<Vec<((String, String), PathBuf)>, BundleError>> = std::thread::scope(|s| {
        let handles: Vec<_> = per_host
            .into_iter()
            .map(|(host, roles)| {
                s.spawn(move || {
                    let t = host_of(hosts, host)?;
                    let mut out = vec![];
                    for role in roles {
                        let a = &archives[role];
                        let t0 = Instant::now();
                        let (dir, sent) = t.ship(a)?;
                        let how = if sent { format!("sent, sha256 verified on arrival, {} ms", t0.elapsed().as_millis()) } else { "already there".into() };
                        say(&format!("ship  {role:<8} -> {host:<8} sha256:{}  {how}", &a.digest[..12]));
                        out.push(((role.to_string(), host.to_string()), dir));
                    }
                    Ok(out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(BundleError::Refused("a shipping thread panicked".into())))).collect()
    });
    let mut shipped = BTreeMap::new();
    for r in results {
        shipped.extend(r?);
    }
    Ok(shipped)
}

/// A role's new application, as shipped: a bundle directory, an OCI layout directory, or an
/// OCI archive (shipped inside a directory of its own as `image.tar`).
enum App {
    Bundle,
    Layout { tag: Option<String> },
    Archive { file: PathBuf, tag: Option<String> },
}

fn app_of(r: &super::doc::RoleUpgrade) -> Result<(App, PathBuf), BundleError> {
    use crate::image::layout::{Reference, Source};
    match (&r.bundle, &r.image) {
        (Some(b), _) => Ok((App::Bundle, b.clone())),
        (None, Some(i)) => {
            let r = Reference::parse(i).map_err(|e| BundleError::Refused(e.to_string()))?;
            Ok(match r.source {
                Source::Dir(d) => (App::Layout { tag: r.tag }, d),
                Source::Archive(f) => (App::Archive { file: f.clone(), tag: r.tag }, f),
            })
        }
        (None, None) => Err(BundleError::Refused("a role without a bundle or an image".into())),
    }
}

trait LocalDir {
    fn local_dir(self, session: &Session, role: &str) -> Result<PathBuf, BundleError>;
}

impl LocalDir for (App, PathBuf) {
    /// The directory whose tar goes to the hosts.
    fn local_dir(self, session: &Session, role: &str) -> Result<PathBuf, BundleError> {
        match self {
            (App::Archive { file, .. }, _) => {
                let dir = session.path().join(format!("{role}.image"));
                let err = |e: std::io::Error| BundleError::Ship { dir: file.clone(), reason: e.to_string() };
                std::fs::create_dir_all(&dir).map_err(err)?;
                let dest = dir.join("image.tar");
                // A hard link when the file system allows it; a copy otherwise.
                if std::fs::hard_link(&file, &dest).is_err() {
                    std::fs::copy(&file, &dest).map_err(err)?;
                }
                Ok(dir)
            }
            (_, dir) => Ok(dir),
        }
    }
}

/// `molt upgrade` arguments naming the shipped application on its host.
fn app_args(r: &super::doc::RoleUpgrade, shipped: &std::path::Path, derive: bool) -> Result<Vec<String>, BundleError> {
    let tagged = |p: String, tag: &Option<String>| tag.as_ref().map(|t| format!("{p}:{t}")).unwrap_or(p);
    Ok(match app_of(r)?.0 {
        App::Bundle => {
            let mut a = vec!["--bundle".to_string(), shipped.display().to_string()];
            if derive {
                a.push("--derive".into());
            }
            a
        }
        App::Layout { tag } => vec!["--image".into(), tagged(format!("oci:{}", shipped.display()), &tag)],
        App::Archive { tag, .. } => vec!["--image".into(), tagged(format!("oci-archive:{}", shipped.join("image.tar").display()), &tag)],
    })
}

/// Role commands with the container named in the environment; the first failure ends them.
fn hooks(t: &Transport, which: &str, cmds: &[String], row: &Row, version: &str) -> Result<(), String> {
    for cmd in cmds {
        let script = format!(
            "MOLT_CONTAINER={} MOLT_ROLE={} MOLT_VERSION={} MOLT_ROOT={}; export MOLT_CONTAINER MOLT_ROLE MOLT_VERSION MOLT_ROOT; {cmd}",
            quote(&row.id),
            quote(&row.role),
            quote(version),
            quote(&t.host.root.display().to_string())
        );
        let out = t.run(&script, None).map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("{which} command {cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    Ok(())
}

/// One container: pre-upgrade commands, `molt upgrade` on its host, post-upgrade commands.
fn upgrade_one(docs: &Documents, t: &Transport, row: &Row, bundle_dir: &PathBuf) -> Done {
    let u = &docs.upgrade;
    let role = &u.roles[&row.role];
    let t0 = Instant::now();
    let mut done = Done {
        id: row.id.clone(),
        role: row.role.clone(),
        host: row.host.clone(),
        from: row.running.clone(),
        to: u.version.clone(),
        outcome: "failed".into(),
        upgraded: false,
        millis: 0,
        detail: String::new(),
    };
    let finish = |mut d: Done, outcome: &str, detail: String| {
        d.outcome = outcome.into();
        d.detail = detail;
        d.millis = t0.elapsed().as_millis();
        d
    };
    if let Err(e) = hooks(t, "pre_upgrade", &role.pre_upgrade, row, &u.version) {
        return finish(done, "failed", e);
    }
    let app = match app_args(role, bundle_dir, u.derive) {
        Ok(a) => a,
        Err(e) => return finish(done, "failed", e.to_string()),
    };
    let mut args = vec!["upgrade", &row.id, "--format", "json"];
    args.extend(app.iter().map(String::as_str));
    let health = role.health.as_ref().or(u.health.as_ref());
    if let Some(h) = health {
        args.extend(["--health", h]);
    }
    if let Some(ht) = &u.health_timeout {
        args.extend(["--health-timeout", ht]);
    }
    if let Some(sig) = &u.stop_signal {
        args.extend(["--stop-signal", sig]);
    }
    if let Some(st) = &u.stop_timeout {
        args.extend(["--stop-timeout", st]);
    }
    let out = match t.molt(&args) {
        Ok(o) => o,
        Err(e) => return finish(done, "failed", e.to_string()),
    };
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let outcome = report["outcome"].as_str().unwrap_or(if out.status.success() { "upgraded" } else { "failed" }).to_string();
    if !out.status.success() || outcome != "upgraded" {
        let err = report["error"].as_str().map(String::from).unwrap_or_else(|| crate::logging::messages_of(&String::from_utf8_lossy(&out.stderr)));
        return finish(done, &outcome, err);
    }
    done.upgraded = true;
    let unavailable = report["unavailable_ms"].as_u64().map(|ms| format!("unavailable {ms} ms")).unwrap_or_default();
    done.detail = unavailable;
    if let Err(e) = hooks(t, "post_upgrade", &role.post_upgrade, row, &u.version) {
        return finish(done, "failed", format!("upgraded, then {e}"));
    }
    let detail = done.detail.clone();
    finish(done, "upgraded", detail)
}

/// The canaries of a role (its containers now running the new version) must still run it.
fn canaries_hold(docs: &Documents, hosts: &[(Transport, Option<String>)], ids: &[(String, String)]) -> Result<(), String> {
    for (id, host) in ids {
        let t = host_of(hosts, host).map_err(|e| e.to_string())?;
        match super::observe_one(t, id) {
            super::plan::Observed::Found { status, version, .. } if status == "running" && version.as_deref() == Some(docs.upgrade.version.as_str()) => {}
            o => return Err(format!("canary {id} did not stay healthy: {o:?}")),
        }
    }
    Ok(())
}

/// How the operator steers a rollout: the control file, and whether a canary that stays
/// healthy for `min_healthy` goes on without `promote`.
pub struct Steer<'a> {
    pub control: &'a Control,
    pub auto_promote: bool,
}

/// Before the first non-canary batch of a role whose upgrade has canaries: hold until promoted
/// (or, with --auto-promote, until the canaries stayed healthy for min_healthy), then check the
/// canaries still run the new version.
fn canary_gate(docs: &Documents, hosts: &[(Transport, Option<String>)], canaries: &[(String, String)], role: &str, steer: &Steer, say: Say) -> Result<(), String> {
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

/// rollback-batch: the batch's containers that did upgrade go back to the bundle they ran
/// before, by `molt upgrade --force` (the version rule refuses a downgrade by design).
fn roll_back_batch(docs: &Documents, hosts: &[(Transport, Option<String>)], rows: &[&Row], done: &mut [Done], say: Say) {
    for d in done.iter_mut().filter(|d| d.upgraded) {
        let Some(row) = rows.iter().find(|r| r.id == d.id) else { continue };
        let Some(old) = &row.bundle else {
            d.detail = format!("{}; not rolled back: its old bundle directory is unknown", d.detail);
            continue;
        };
        let why = format!("bundle {} failure policy rollback-batch", docs.manifest.name);
        let mut args = vec!["upgrade", &row.id, "--bundle", old, "--force", &why, "--format", "json"];
        if docs.upgrade.derive {
            args.push("--derive");
        }
        if let Some(sig) = &docs.upgrade.stop_signal {
            args.extend(["--stop-signal", sig]);
        }
        if let Some(st) = &docs.upgrade.stop_timeout {
            args.extend(["--stop-timeout", st]);
        }
        let res = host_of(hosts, &row.host).map_err(|e| e.to_string()).and_then(|t| t.molt(&args).map_err(|e| e.to_string()));
        match res {
            Ok(out) if out.status.success() => {
                d.outcome = "rolled-back".into();
                d.upgraded = false;
                d.detail = format!("back to {} by rollback-batch", row.running.as_deref().unwrap_or("its old bundle"));
            }
            Ok(out) => d.detail = format!("rollback-batch failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
            Err(e) => d.detail = format!("rollback-batch failed: {e}"),
        }
        say(&format!("  rollback-batch {}: {}", d.id, d.detail));
    }
}

/// One progress line, its columns as wide as the plan's widest id, host and role.
fn line(d: &Done, w: (usize, usize, usize)) -> String {
    format!(
        "{:<iw$}  {:<hw$}  {:<rw$}  {} -> {}  {:<11}  {:>6} ms  {}",
        d.id,
        d.host,
        d.role,
        d.from.as_deref().unwrap_or("-"),
        d.to,
        d.outcome,
        d.millis,
        d.detail,
        iw = w.0,
        hw = w.1,
        rw = w.2
    )
}

/// Run the plan. Refuses to start while any host is unreachable: a rollout that cannot see all
/// of the bundle cannot keep its order.
pub fn run(docs: &Documents, plan: &Plan, hosts: &[(Transport, Option<String>)], session: &Session, steer: &Steer, say: Say) -> Result<Summary, BundleError> {
    let down: Vec<String> = plan.unreachable().map(|r| format!("{} on {}", r.id, r.host)).collect();
    if !down.is_empty() {
        let why: Vec<String> = hosts.iter().filter_map(|(t, d)| d.as_ref().map(|d| format!("{} ({d})", t.name))).collect();
        return Err(BundleError::Refused(format!(
            "not starting: {} unreachable ({}); hosts down: {}; nothing was changed",
            down.len(),
            down.join(", "),
            if why.is_empty() { "-".into() } else { why.join("; ") }
        )));
    }
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let shipped = ship(docs, plan, hosts, session, say)?;
    let widest = |f: fn(&Row) -> usize| plan.rows.iter().map(f).max().unwrap_or(0);
    let widths = (widest(|r| r.id.len()), widest(|r| r.host.len()), widest(|r| r.role.len()));
    let mut results: BTreeMap<String, Done> = BTreeMap::new();
    let mut completed = true;
    // Per role, the containers on the new version: the canaries a gate checks.
    let mut on_new: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for r in plan.rows.iter().filter(|r| r.status.as_deref() == Some("running") && r.running.as_deref() == Some(docs.upgrade.version.as_str())) {
        on_new.entry(r.role.as_str()).or_default().push((r.id.clone(), r.host.clone()));
    }
    let mut gated: Vec<String> = vec![];
    for n in 1..=plan.batches {
        let rows = plan.batch(n);
        let canary = rows.iter().any(|r| r.canary);
        let role = rows.first().map(|r| r.role.as_str()).unwrap_or("-");
        let mut failed: Vec<String> = vec![];
        if !canary && docs.upgrade.canary > 0 && !gated.iter().any(|g| g == role) {
            gated.push(role.into());
            if let Some(c) = on_new.get(role) {
                if let Err(e) = canary_gate(docs, hosts, c, role, steer, say) {
                    failed.push(e);
                }
            }
        }
        // After the gate: a pause asked while a canary was watched holds the batch that follows.
        steer.control.wait_while_paused(&|l| say(l), &format!("batch {n}"))?;
        if failed.is_empty() {
            say(&format!(
                "batch {n}/{} ({role}{}): {}",
                plan.batches,
                if canary { ", canary" } else { "" },
                rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
            ));
            let shipped = &shipped;
            let mut done: Vec<Done> = std::thread::scope(|s| {
                let handles: Vec<_> = rows
                    .iter()
                    .map(|row| {
                        s.spawn(move || {
                            let d = match (host_of(hosts, &row.host), shipped.get(&(row.role.clone(), row.host.clone()))) {
                                (Ok(t), Some(dir)) => upgrade_one(docs, t, row, dir),
                                _ => Done {
                                    id: row.id.clone(),
                                    role: row.role.clone(),
                                    host: row.host.clone(),
                                    from: row.running.clone(),
                                    to: docs.upgrade.version.clone(),
                                    outcome: "failed".into(),
                                    upgraded: false,
                                    millis: 0,
                                    detail: "no shipped bundle for its host".into(),
                                },
                            };
                            say(&format!("  {}", line(&d, widths)));
                            d
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().ok()).collect()
            });
            failed = done.iter().filter(|d| d.outcome != "upgraded").map(|d| format!("{} ({}: {})", d.id, d.outcome, d.detail)).collect();
            if !failed.is_empty() && docs.upgrade.failure_policy == FailurePolicy::RollbackBatch {
                roll_back_batch(docs, hosts, &rows, &mut done, say);
            }
            for d in done {
                if d.upgraded {
                    on_new.entry(role).or_default().push((d.id.clone(), d.host.clone()));
                }
                results.insert(d.id.clone(), d);
            }
        }
        if !failed.is_empty() {
            completed = false;
            say(&format!("batch {n} failed: {}", failed.join("; ")));
            match docs.upgrade.failure_policy {
                FailurePolicy::Stop => say("failure policy stop: the failed container was rolled back by molt upgrade; no further batch is started"),
                FailurePolicy::RollbackBatch => say("failure policy rollback-batch: the batch's containers are back on the version they ran; no further batch is started"),
            }
            break;
        }
    }
    let containers: Vec<Done> = plan
        .rows
        .iter()
        .map(|r| {
            results.remove(&r.id).unwrap_or_else(|| Done {
                id: r.id.clone(),
                role: r.role.clone(),
                host: r.host.clone(),
                from: r.running.clone(),
                to: docs.upgrade.version.clone(),
                outcome: if r.decision == Action::Upgrade { "not started".into() } else { r.decision.label().into() },
                upgraded: false,
                millis: 0,
                detail: if r.decision == Action::Upgrade { "an earlier batch failed".into() } else { r.rule.clone() },
            })
        })
        .collect();
    let summary = Summary { bundle: plan.bundle.clone(), version: plan.version.clone(), completed, containers };
    super::history::record(docs, hosts, session, &summary, say);
    std::thread::scope(|s| {
        for (t, _) in hosts.iter().filter(|(_, down)| down.is_none()) {
            s.spawn(move || match t.prune_bundles(started) {
                Ok(gone) if gone.is_empty() => {}
                Ok(gone) => say(&format!("host {}: removed {} shipped bundle(s) nothing uses any more: {}", t.name, gone.len(), gone.join(", "))),
                Err(e) => say(&format!("warning: {e}")),
            });
        }
    });
    Ok(summary)
}

/// The final table.
pub fn summary_table(s: &Summary) -> String {
    let head = ["CONTAINER", "HOST", "ROLE", "FROM", "TO", "OUTCOME", "TIME", "DETAIL"];
    let cells: Vec<Vec<String>> = s
        .containers
        .iter()
        .map(|d| {
            let time = if d.millis > 0 { format!("{} ms", d.millis) } else { "-".into() };
            vec![d.id.clone(), d.host.clone(), d.role.clone(), d.from.clone().unwrap_or_else(|| "-".into()), d.to.clone(), d.outcome.clone(), time, d.detail.clone()]
        })
        .collect();
    let mut out = crate::table::columns(&head, &cells);
    let up = s.containers.iter().filter(|d| d.outcome == "upgraded").count();
    out.push_str(&format!(
        "bundle {} -> {}: {up} upgraded, {}\n",
        s.bundle,
        s.version,
        if s.completed { "rollout complete" } else { "rollout STOPPED (re-run the same command after fixing the cause)" }
    ));
    out
}
