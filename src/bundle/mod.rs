//! A bundled application across hosts (the mission's claim, step 3): the manifest and upgrade
//! documents, the plan that evaluates every container, the transport to the hosts, and the
//! rollout that runs `molt upgrade` on each host role by role, batch by batch.

pub mod control;
pub mod doc;
pub mod health;
pub mod history;
pub mod plan;
pub mod progress;
pub mod rollback;
pub mod rollout;
pub mod transport;

use std::path::PathBuf;

use doc::{Manifest, UpgradeDoc};
use plan::Observed;
use transport::{Session, Transport};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{file}: {reason}")]
    Read { file: PathBuf, reason: String },
    /// serde's message names the field (unknown field `x`, missing field `y`) and the line.
    #[error("{file}: {reason}")]
    Parse { file: PathBuf, reason: String },
    #[error("{file}: field {field}: {reason}")]
    Invalid { file: PathBuf, field: String, reason: String },
    #[error("host {host}: {reason}")]
    Transport { host: String, reason: String },
    #[error("bundle directory {dir}: {reason}")]
    Ship { dir: PathBuf, reason: String },
    #[error("{0}")]
    Refused(String),
}

/// One transport per host of the manifest, connected in parallel; a host that cannot be reached
/// is kept with its reason.
pub fn connect_all(manifest: &Manifest, session: &Session) -> Vec<(Transport, Option<String>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = manifest
            .hosts
            .iter()
            .map(|(name, h)| {
                s.spawn(move || {
                    let t = Transport::new(session, name, h);
                    let down = t.connect(session).err().map(|e| e.to_string());
                    (t, down)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("connect thread panicked"))).collect()
    })
}

/// What one host says about one container: `molt state ID` there.
pub fn observe_one(t: &Transport, id: &str) -> Observed {
    let out = match t.molt(&["state", id]) {
        Ok(o) => o,
        Err(e) => return Observed::Unreachable { reason: e.to_string() },
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if stderr.contains("does not exist") {
            return Observed::NotFound;
        }
        return Observed::Unreachable { reason: format!("host {}: molt state {id}: {}", t.name, crate::logging::messages_of(&stderr)) };
    }
    match serde_json::from_slice::<serde_json::Value>(&out.stdout) {
        Ok(v) => observed_from(&v),
        Err(e) => Observed::Unreachable { reason: format!("host {}: molt state {id}: not JSON: {e}", t.name) },
    }
}

/// The fields of one container in `molt list --format json` (runc's list) that a plan needs.
fn observed_from(v: &serde_json::Value) -> Observed {
    let ann = &v["annotations"];
    Observed::Found {
        status: v["status"].as_str().unwrap_or("unknown").to_string(),
        version: ann[crate::upgrade::eligibility::VERSION_ANNOTATION].as_str().map(String::from),
        // The application it runs: what a rollback-batch derives from again.
        bundle: ann[crate::upgrade::derive::APP_BUNDLE_ANNOTATION].as_str().or(v["bundle"].as_str()).map(String::from),
    }
}

/// What one host says about `ids`: one `molt list --format json` there, however many
/// containers it holds (a round trip per container would make the plan grow with N).
fn observe_host(t: &Transport, ids: &[&str]) -> Vec<Observed> {
    let all = |o: Observed| ids.iter().map(|_| o.clone()).collect();
    let out = match t.molt(&["list", "--format", "json"]) {
        Ok(o) => o,
        Err(e) => return all(Observed::Unreachable { reason: e.to_string() }),
    };
    if !out.status.success() {
        let why = crate::logging::messages_of(&String::from_utf8_lossy(&out.stderr));
        return all(Observed::Unreachable { reason: format!("host {}: molt list: {}", t.name, why.trim()) });
    }
    // runc prints `null` for no container.
    let list: Vec<serde_json::Value> = match serde_json::from_slice::<Option<Vec<serde_json::Value>>>(&out.stdout) {
        Ok(l) => l.unwrap_or_default(),
        Err(e) => return all(Observed::Unreachable { reason: format!("host {}: molt list: not JSON: {e}", t.name) }),
    };
    ids.iter().map(|id| list.iter().find(|c| c["id"] == *id).map(observed_from).unwrap_or(Observed::NotFound)).collect()
}

/// Every container of the manifest as its host sees it now, in manifest order; hosts are asked
/// in parallel, each once.
pub fn observe(manifest: &Manifest, hosts: &[(Transport, Option<String>)]) -> Vec<Observed> {
    let ids: Vec<(&str, &str)> = manifest.containers.iter().map(|c| (c.id.as_str(), c.host.as_str())).collect();
    observe_ids(hosts, &ids)
}

/// The containers `ids` (id, host) as their hosts see them now, in that order; each host with one
/// of them asked once, all in parallel.
pub fn observe_ids(hosts: &[(Transport, Option<String>)], ids: &[(&str, &str)]) -> Vec<Observed> {
    let per_host: Vec<Vec<(usize, Observed)>> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|(t, down)| {
                s.spawn(move || {
                    let mine: Vec<(usize, &str)> = ids.iter().enumerate().filter(|(_, (_, h))| *h == t.name).map(|(i, (id, _))| (i, *id)).collect();
                    let found = match down {
                        Some(reason) => mine.iter().map(|_| Observed::Unreachable { reason: reason.clone() }).collect(),
                        None if mine.is_empty() => vec![],
                        None => observe_host(t, &mine.iter().map(|(_, id)| *id).collect::<Vec<_>>()),
                    };
                    mine.iter().map(|(i, _)| *i).zip(found).collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    // A host the manifest does not name answers for none of its containers.
    let mut all = vec![Observed::Unreachable { reason: "its host is not in the manifest".into() }; ids.len()];
    for (i, o) in per_host.into_iter().flatten() {
        all[i] = o;
    }
    all
}

/// One container of `molt bundle status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusRow {
    pub id: String,
    pub role: String,
    pub host: String,
    /// running, created, paused, stopped, not found, or unreachable.
    pub status: String,
    pub version: Option<String>,
    /// healthy, unhealthy, running (no check named) or unknown: see [`health::health_of`].
    pub health: String,
    /// What the check found, or why there is none.
    pub health_detail: String,
    /// From the hosts' history: when, from which version to which, and the outcome.
    pub last_upgrade: Option<String>,
    /// Why a container could not be asked.
    pub detail: Option<String>,
}

/// Every container's status, health, version and last recorded upgrade; warnings for hosts whose
/// history could not be read. With `upgrade`, each running container's role's health check is
/// run now on its host.
pub fn status(manifest: &Manifest, hosts: &[(Transport, Option<String>)], upgrade: Option<&UpgradeDoc>) -> (Vec<StatusRow>, Vec<String>) {
    let observed = observe(manifest, hosts);
    let probed = health::probe_all(manifest, hosts, &observed, upgrade);
    let (records, warnings) = history::read(manifest, hosts);
    let last = history::last_per_container(&records);
    let rows = manifest
        .containers
        .iter()
        .zip(observed)
        .zip(probed)
        .map(|((c, o), p)| {
            let (health, health_detail) = health::health_of(&o, health::check_of(upgrade, &c.role), p.as_ref());
            let (status, version, detail) = match o {
                Observed::Found { status, version, .. } => (status, version, None),
                Observed::NotFound => ("not found".into(), None, None),
                Observed::Unreachable { reason } => ("unreachable".into(), None, Some(reason)),
            };
            StatusRow { id: c.id.clone(), role: c.role.clone(), host: c.host.clone(), status, version, health: health.into(), health_detail, last_upgrade: last.get(&c.id).cloned(), detail }
        })
        .collect();
    (rows, warnings)
}

/// The table, then a line per container that is not healthy or not checked, saying why.
pub fn status_table(rows: &[StatusRow]) -> String {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| vec![r.id.clone(), r.role.clone(), r.host.clone(), r.status.clone(), r.health.clone(), dash(&r.version), r.last_upgrade.clone().or_else(|| r.detail.clone()).unwrap_or_else(|| "-".into())])
        .collect();
    let mut out = crate::table::columns(&["CONTAINER", "ROLE", "HOST", "STATUS", "HEALTH", "VERSION", "LAST UPGRADE"], &cells);
    for r in rows.iter().filter(|r| r.health != "healthy" && r.health != "running") {
        out.push_str(&format!("{}: {}: {}\n", r.id, r.health, r.health_detail));
    }
    if rows.iter().any(|r| r.health == "running") {
        out.push_str("running: no health check was run for it (none given: `molt bundle status MANIFEST UPGRADE` runs each role's health gate now)\n");
    }
    out
}
