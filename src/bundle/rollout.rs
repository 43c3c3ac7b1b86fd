//! The rollout: ship each role's new application to the hosts that need it, then batch by batch
//! run `molt upgrade` on each container's host (with the role's pre/post-upgrade commands),
//! stopping before the next batch when one fails; a history record on every host touched.
//! Nothing here remembers progress: a re-run recomputes the plan from what the hosts run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::doc::{Documents, FailurePolicy};
use super::plan::{Action, Plan, Row};
use super::progress::{Progress, StepEvent};
use super::rollback::canary_gate;
pub use super::rollback::Steer;
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

pub(super) fn host_of<'a>(hosts: &'a [(Transport, Option<String>)], name: &str) -> Result<&'a Transport, BundleError> {
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
    // Per host: each (host, role) and where its bundle arrived there.
    type Shipped = Vec<((String, String), PathBuf)>;
    let results: Vec<Result<Shipped, BundleError>> = std::thread::scope(|s| {
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
    Archive { file: PathBuf, tag: Option<String>, kind: &'static str },
}

fn app_of(r: &super::doc::RoleUpgrade) -> Result<(App, PathBuf), BundleError> {
    use crate::image::layout::{Reference, Source};
    match (&r.bundle, &r.image) {
        (Some(b), _) => Ok((App::Bundle, b.clone())),
        (None, Some(i)) => {
            let r = Reference::parse(i).map_err(|e| BundleError::Refused(e.to_string()))?;
            Ok(match r.source {
                Source::Dir(d) => (App::Layout { tag: r.tag }, d),
                Source::Archive(f) => (App::Archive { file: f.clone(), tag: r.tag, kind: "oci-archive" }, f),
                Source::DockerArchive(f) => (App::Archive { file: f.clone(), tag: r.tag, kind: "docker-archive" }, f),
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
        App::Archive { tag, kind, .. } => vec!["--image".into(), tagged(format!("{kind}:{}", shipped.join("image.tar").display()), &tag)],
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

/// One container: pre-upgrade commands, `molt upgrade` on its host (its step events shown as
/// they come), post-upgrade commands.
fn upgrade_one(docs: &Documents, t: &Transport, row: &Row, bundle_dir: &Path, progress: &Progress) -> Done {
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
    // The image it runs now (if it runs one) stays on its host until the rollout ends: the way
    // back of a rollback-batch.
    let hold = super::rollback::hold_name(&docs.manifest.name, &row.id);
    let mut args = vec!["upgrade", &row.id, "--format", "json", "--hold-old-image", &hold];
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
    let show = |line: &str| {
        if let Some(e) = StepEvent::parse(line) {
            progress.step(&row.id, &e);
        }
    };
    let out = match t.molt_lines(&args, &show) {
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

/// A container of the plan the rollout did not upgrade: why, in the summary.
fn not_done(docs: &Documents, r: &Row, outcome: &str, detail: &str) -> Done {
    Done {
        id: r.id.clone(),
        role: r.role.clone(),
        host: r.host.clone(),
        from: r.running.clone(),
        to: docs.upgrade.version.clone(),
        outcome: outcome.into(),
        upgraded: false,
        millis: 0,
        detail: detail.into(),
    }
}

/// One batch: every container upgraded at the same time, its steps shown live and a result line
/// as it ends; then each one upgraded must still run the new version.
fn run_batch(docs: &Documents, hosts: &[(Transport, Option<String>)], rows: &[&Row], shipped: &BTreeMap<(String, String), PathBuf>, widths: (usize, usize, usize), live: bool, say: Say) -> Vec<Done> {
    let names: Vec<(&str, &str)> = rows.iter().map(|r| (r.id.as_str(), r.host.as_str())).collect();
    let progress = &Progress::new(say, live, (widths.0, widths.1), &names);
    let mut done: Vec<Done> = std::thread::scope(|s| {
        let handles: Vec<_> = rows
            .iter()
            .map(|row| {
                s.spawn(move || {
                    let d = match (host_of(hosts, &row.host), shipped.get(&(row.role.clone(), row.host.clone()))) {
                        (Ok(t), Some(dir)) => upgrade_one(docs, t, row, dir, progress),
                        _ => not_done(docs, row, "failed", "no shipped bundle for its host"),
                    };
                    progress.ended(&d.id, line(&d, widths));
                    d
                })
            })
            .collect();
        progress.tick_until_ended();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    super::rollback::check_still_upgraded(docs, hosts, &mut done);
    for d in done.iter().filter(|d| d.upgraded && d.outcome != "upgraded") {
        say(&format!("  {}: {}", d.id, d.detail));
    }
    done
}

/// A role's canary gate failed (`why`) under rollback-batch: the canaries this rollout upgraded
/// go back (their batch has failed); one that ran the new version before it began is named.
fn roll_back_canaries(docs: &Documents, plan: &Plan, hosts: &[(Transport, Option<String>)], canaries: &[(String, String)], why: &str, results: &mut BTreeMap<String, Done>, say: Say) {
    let ours = |id: &str| results.get(id).is_some_and(|d| d.upgraded);
    let rows: Vec<&Row> = plan.rows.iter().filter(|r| canaries.iter().any(|(id, _)| *id == r.id) && ours(&r.id)).collect();
    for (id, _) in canaries.iter().filter(|(id, _)| !ours(id)) {
        say(&format!("  rollback-batch {id}: NOT rolled back: it ran {} before this rollout began", docs.upgrade.version));
    }
    let mut done: Vec<Done> = rows.iter().filter_map(|r| results.remove(&r.id)).collect();
    for d in done.iter_mut() {
        d.outcome = "failed".into();
        d.detail = format!("its canary batch failed: {why}");
    }
    super::rollback::roll_back_batch(docs, hosts, &rows, &mut done, say);
    results.extend(done.into_iter().map(|d| (d.id.clone(), d)));
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
    let rollback_batch = docs.upgrade.failure_policy == FailurePolicy::RollbackBatch;
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
        let mut what = format!("batch {n}");
        if !canary && docs.upgrade.canary > 0 && !gated.iter().any(|g| g == role) {
            gated.push(role.into());
            if let Some(c) = on_new.get(role) {
                if let Err(e) = canary_gate(docs, hosts, c, role, steer, say) {
                    if rollback_batch {
                        roll_back_canaries(docs, plan, hosts, c, &e, &mut results, say);
                    }
                    failed.push(e);
                    what = format!("the canary gate of role {role} before batch {n}");
                }
            }
        }
        // After the gate: a pause asked while a canary was watched holds the batch that follows.
        steer.control.wait_while_paused(&|l| say(l), &format!("batch {n}"))?;
        if failed.is_empty() {
            let ids = rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ");
            say(&format!("batch {n}/{} ({role}{}): {ids}", plan.batches, if canary { ", canary" } else { "" }));
            let mut done = run_batch(docs, hosts, &rows, &shipped, widths, steer.live, say);
            failed = done.iter().filter(|d| d.outcome != "upgraded").map(|d| format!("{} ({}: {})", d.id, d.outcome, d.detail)).collect();
            if !failed.is_empty() && rollback_batch {
                super::rollback::roll_back_batch(docs, hosts, &rows, &mut done, say);
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
            say(&format!("{what} failed: {}", failed.join("; ")));
            say(if rollback_batch {
                "failure policy rollback-batch: the failed batch's upgraded containers went back to the version they ran (each line above says if one could not); no further batch is started"
            } else {
                "failure policy stop: a container whose upgrade failed was rolled back by molt upgrade; no further batch is started"
            });
            break;
        }
    }
    let containers: Vec<Done> = plan
        .rows
        .iter()
        .map(|r| {
            results.remove(&r.id).unwrap_or_else(|| match r.decision {
                Action::Upgrade => not_done(docs, r, "not started", "an earlier batch failed"),
                d => not_done(docs, r, d.label(), &r.rule),
            })
        })
        .collect();
    let summary = Summary { bundle: plan.bundle.clone(), version: plan.version.clone(), completed, containers };
    // The history record and the clean-up touch different files: both at once, one round trip
    // to each host rather than one after the other.
    std::thread::scope(|s| {
        s.spawn(|| super::history::record(docs, hosts, session, &summary, &plan.rows, say));
        clean_up(docs, hosts, started, say);
    });
    Ok(summary)
}

/// The end of a rollout on every host it reached: the image holds of its batches go, and the
/// shipped bundles nothing uses any more (each its own command, both at once: the image store
/// and the shipped bundles are apart).
fn clean_up(docs: &Documents, hosts: &[(Transport, Option<String>)], started: u64, say: Say) {
    std::thread::scope(|s| {
        for (t, _) in hosts.iter().filter(|(_, down)| down.is_none()) {
            s.spawn(move || match super::rollback::release_holds(t, &docs.manifest.name) {
                Ok(0) => {}
                Ok(n) => say(&format!("host {}: released the {n} image hold(s) of this rollout's way back", t.name)),
                Err(e) => say(&format!("warning: {e}")),
            });
            s.spawn(move || {
                match t.prune_bundles(started) {
                    Ok(gone) if gone.is_empty() => {}
                    Ok(gone) => say(&format!("host {}: removed {} shipped bundle(s) nothing uses any more: {}", t.name, gone.len(), gone.join(", "))),
                    Err(e) => say(&format!("warning: {e}")),
                }
            });
        }
    });
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
