//! A bundled application across hosts (the mission's claim, step 3): the manifest and upgrade
//! documents, the plan that evaluates every container, the transport to the hosts, and the
//! rollout that runs `molt upgrade` on each host role by role, batch by batch.

pub mod doc;
pub mod plan;
pub mod rollout;
pub mod transport;

use std::path::PathBuf;

use doc::Documents;
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
pub fn connect_all(docs: &Documents, session: &Session) -> Vec<(Transport, Option<String>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = docs
            .manifest
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
        Ok(v) => Observed::Found {
            status: v["status"].as_str().unwrap_or("unknown").to_string(),
            version: v["annotations"][crate::upgrade::eligibility::VERSION_ANNOTATION].as_str().map(String::from),
        },
        Err(e) => Observed::Unreachable { reason: format!("host {}: molt state {id}: not JSON: {e}", t.name) },
    }
}

/// Every container of the manifest as its host sees it now, in manifest order; hosts are asked
/// in parallel.
pub fn observe(docs: &Documents, hosts: &[(Transport, Option<String>)]) -> Vec<Observed> {
    let per_host: Vec<Vec<(usize, Observed)>> = std::thread::scope(|s| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|(t, down)| {
                s.spawn(move || {
                    docs.manifest
                        .containers
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.host == t.name)
                        .map(|(i, c)| match down {
                            Some(reason) => (i, Observed::Unreachable { reason: reason.clone() }),
                            None => (i, observe_one(t, &c.id)),
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let mut all = vec![Observed::NotFound; docs.manifest.containers.len()];
    for (i, o) in per_host.into_iter().flatten() {
        all[i] = o;
    }
    all
}
