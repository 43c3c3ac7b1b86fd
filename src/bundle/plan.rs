//! The plan: from what every host says each container runs, a decision per container (the
//! mission's rule: later, and the running version satisfies the constraint) and the batches the
//! rollout takes, role by role in the document's order. Pure: recomputed from current state on
//! every run, which is what makes a re-run after an interruption continue and never repeat.

use serde::{Deserialize, Serialize};

use super::doc::Documents;
use crate::upgrade::eligibility;

/// What a host said about one container.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Its status, the version annotation of its config if it has one, and the application
    /// bundle it runs on its host (`io.molt.app-bundle`, else its bundle: what a rollback-batch
    /// goes back to).
    Found { status: String, version: Option<String>, bundle: Option<String> },
    NotFound,
    Unreachable { reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "upgrade")]
    Upgrade,
    #[serde(rename = "skip: not newer")]
    SkipNotNewer,
    #[serde(rename = "skip: constraint not met")]
    SkipConstraint,
    #[serde(rename = "skip: not running")]
    SkipNotRunning,
    #[serde(rename = "skip: no version")]
    SkipNoVersion,
    #[serde(rename = "skip: role not upgraded")]
    SkipRole,
    #[serde(rename = "unreachable")]
    Unreachable,
}

impl Action {
    pub fn label(self) -> &'static str {
        match self {
            Action::Upgrade => "upgrade",
            Action::SkipNotNewer => "skip: not newer",
            Action::SkipConstraint => "skip: constraint not met",
            Action::SkipNotRunning => "skip: not running",
            Action::SkipNoVersion => "skip: no version",
            Action::SkipRole => "skip: role not upgraded",
            Action::Unreachable => "unreachable",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub id: String,
    pub role: String,
    pub host: String,
    pub running: Option<String>,
    pub status: Option<String>,
    /// The application bundle the running container was made from, on its host.
    #[serde(skip)]
    pub bundle: Option<String>,
    pub decision: Action,
    /// The rule that decided, in words.
    pub rule: String,
    /// 1-based, over the whole rollout; only for containers to upgrade.
    pub batch: Option<usize>,
    pub canary: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub bundle: String,
    pub version: String,
    pub constraint: Option<String>,
    pub rows: Vec<Row>,
    pub batches: usize,
}

impl Plan {
    pub fn to_upgrade(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.decision == Action::Upgrade)
    }

    pub fn unreachable(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.decision == Action::Unreachable)
    }

    /// The containers of batch `n`, in plan order.
    pub fn batch(&self, n: usize) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.batch == Some(n)).collect()
    }
}

/// Decide one container. The document's version and constraint were validated on load.
pub fn decide(observed: &Observed, version: &str, constraint: Option<&str>, role_upgraded: bool) -> (Action, String) {
    let (status, running) = match observed {
        Observed::Unreachable { reason } => return (Action::Unreachable, reason.clone()),
        Observed::NotFound => return (Action::SkipNotRunning, "no such container on its host".into()),
        Observed::Found { status, version, .. } => (status, version),
    };
    if !role_upgraded {
        return (Action::SkipRole, "its role has no new application in this upgrade".into());
    }
    if status != "running" {
        return (Action::SkipNotRunning, format!("container is {status}; only a running container is upgraded"));
    }
    match eligibility::evaluate(running.as_deref(), Some(version), constraint) {
        Ok(d) if d.eligible => (Action::Upgrade, d.reason),
        Ok(d) if eligibility::parse_semver(&d.new).ok() <= eligibility::parse_semver(&d.running).ok() => (Action::SkipNotNewer, d.reason),
        Ok(d) => (Action::SkipConstraint, d.reason),
        Err(e) => (Action::SkipNoVersion, e.to_string()),
    }
}

/// The plan for every container of the manifest, given what was observed (same order as
/// `manifest.containers`). Batches: per role in `order`, first `canary` containers alone, then
/// groups of `batch_size`.
pub fn build(docs: &Documents, observed: &[Observed], batch_size: usize) -> Plan {
    let (m, u) = (&docs.manifest, &docs.upgrade);
    let mut rows: Vec<Row> = m
        .containers
        .iter()
        .zip(observed)
        .map(|(c, o)| {
            let (decision, rule) = decide(o, &u.version, u.constraint.as_deref(), u.roles.contains_key(&c.role));
            let (status, running, bundle) = match o {
                Observed::Found { status, version, bundle } => (Some(status.clone()), version.clone(), bundle.clone()),
                _ => (None, None, None),
            };
            Row { id: c.id.clone(), role: c.role.clone(), host: c.host.clone(), running, status, bundle, decision, rule, batch: None, canary: false }
        })
        .collect();
    let mut next = 1;
    let size = batch_size.max(1);
    for role in &u.order {
        let idx: Vec<usize> = rows.iter().enumerate().filter(|(_, r)| &r.role == role && r.decision == Action::Upgrade).map(|(i, _)| i).collect();
        // Canaries upgraded by an earlier, interrupted run still count: a re-run does not pick new ones.
        let already = rows.iter().filter(|r| &r.role == role && r.status.as_deref() == Some("running") && r.running.as_deref() == Some(u.version.as_str())).count();
        let canary = u.canary.saturating_sub(already).min(idx.len());
        let (first, rest) = idx.split_at(canary);
        if !first.is_empty() {
            for &i in first {
                rows[i].batch = Some(next);
                rows[i].canary = true;
            }
            next += 1;
        }
        for chunk in rest.chunks(size) {
            for &i in chunk {
                rows[i].batch = Some(next);
            }
            next += 1;
        }
    }
    // Rows read in rollout order: batches first, then the skipped ones in manifest order.
    rows.sort_by_key(|r| r.batch.unwrap_or(usize::MAX));
    Plan { bundle: m.name.clone(), version: u.version.clone(), constraint: u.constraint.clone(), rows, batches: next - 1 }
}

/// The plan as a table for a terminal.
pub fn table(p: &Plan) -> String {
    let mut out = format!(
        "bundle {}: upgrade to {}{}\n",
        p.bundle,
        p.version,
        p.constraint.as_deref().map(|c| format!(" for running versions {c:?}")).unwrap_or_default()
    );
    let head = ["CONTAINER", "ROLE", "HOST", "RUNNING", "DECISION", "BATCH", "RULE"];
    let cells: Vec<Vec<String>> = p
        .rows
        .iter()
        .map(|r| {
            let batch = match (r.batch, r.canary) {
                (Some(b), true) => format!("{b} (canary)"),
                (Some(b), false) => b.to_string(),
                (None, _) => "-".into(),
            };
            vec![r.id.clone(), r.role.clone(), r.host.clone(), r.running.clone().unwrap_or_else(|| "-".into()), r.decision.label().into(), batch, r.rule.clone()]
        })
        .collect();
    out.push_str(&crate::table::columns(&head, &cells));
    let n = p.to_upgrade().count();
    out.push_str(&format!("{n} to upgrade in {} batches, {} skipped, {} unreachable\n", p.batches, p.rows.len() - n - p.unreachable().count(), p.unreachable().count()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::doc::{Manifest, UpgradeDoc};

    fn docs(canary: usize) -> Documents {
        let manifest: Manifest = serde_json::from_str(
            r#"{"name": "shop", "roles": ["db", "app", "cache"], "hosts": {"a": {"local": true}},
            "containers": [
              {"id": "app-1", "role": "app", "host": "a"}, {"id": "db-1", "role": "db", "host": "a"},
              {"id": "app-2", "role": "app", "host": "a"}, {"id": "app-3", "role": "app", "host": "a"},
              {"id": "app-4", "role": "app", "host": "a"}, {"id": "db-2", "role": "db", "host": "a"},
              {"id": "cache-1", "role": "cache", "host": "a"}]}"#,
        )
        .unwrap();
        let mut upgrade: UpgradeDoc = serde_json::from_str(
            r#"{"version": "1.1.0", "constraint": ">=1.0.0, <2.0.0", "roles": {"db": {"bundle": "db"}, "app": {"bundle": "app"}},
            "order": ["db", "app"], "batch_size": 2}"#,
        )
        .unwrap();
        upgrade.canary = canary;
        Documents { manifest_file: "m.json".into(), upgrade_file: "u.json".into(), manifest, upgrade }
    }

    fn found(v: &str) -> Observed {
        Observed::Found { status: "running".into(), version: Some(v.into()), bundle: None }
    }

    #[test]
    fn every_decision_kind() {
        let c = Some(">=1.0.0, <2.0.0");
        assert_eq!(decide(&found("1.0.0"), "1.1.0", c, true).0, Action::Upgrade);
        assert_eq!(decide(&found("1.1.0"), "1.1.0", c, true).0, Action::SkipNotNewer);
        assert_eq!(decide(&found("1.2.0"), "1.1.0", c, true).0, Action::SkipNotNewer);
        let (a, rule) = decide(&found("0.9.0"), "1.1.0", c, true);
        assert_eq!(a, Action::SkipConstraint);
        assert!(rule.contains("0.9.0") && rule.contains(">=1.0.0"), "{rule}");
        let stopped = Observed::Found { status: "stopped".into(), version: Some("1.0.0".into()), bundle: None };
        assert_eq!(decide(&stopped, "1.1.0", c, true).0, Action::SkipNotRunning);
        assert_eq!(decide(&Observed::NotFound, "1.1.0", c, true).0, Action::SkipNotRunning);
        let none = Observed::Found { status: "running".into(), version: None, bundle: None };
        assert_eq!(decide(&none, "1.1.0", c, true).0, Action::SkipNoVersion);
        assert_eq!(decide(&found("1.0.0"), "1.1.0", c, false).0, Action::SkipRole);
        let u = Observed::Unreachable { reason: "ssh: connect refused".into() };
        assert_eq!(decide(&u, "1.1.0", c, true), (Action::Unreachable, "ssh: connect refused".into()));
    }

    #[test]
    fn batches_follow_the_role_order_and_size() {
        let d = docs(0);
        let obs = vec![found("1.0.0"), found("1.0.0"), found("1.0.0"), found("1.1.0"), found("1.0.5"), found("1.0.0"), found("1.0.0")];
        let p = build(&d, &obs, 2);
        let order: Vec<(&str, Option<usize>)> = p.rows.iter().map(|r| (r.id.as_str(), r.batch)).collect();
        assert_eq!(
            order,
            vec![
                ("db-1", Some(1)),
                ("db-2", Some(1)),
                ("app-1", Some(2)),
                ("app-2", Some(2)),
                ("app-4", Some(3)),
                ("app-3", None),
                ("cache-1", None)
            ]
        );
        assert_eq!(p.batches, 3);
        assert_eq!(p.batch(2).len(), 2);
        let t = table(&p);
        assert!(t.contains("skip: not newer") && t.contains("skip: role not upgraded") && t.contains("5 to upgrade in 3 batches"), "{t}");
    }

    #[test]
    fn canaries_go_first_in_a_batch_of_their_own_per_role() {
        let d = docs(1);
        let obs = vec![found("1.0.0"); 7];
        let p = build(&d, &obs, 3);
        let b: Vec<(&str, Option<usize>, bool)> = p.rows.iter().filter(|r| r.batch.is_some()).map(|r| (r.id.as_str(), r.batch, r.canary)).collect();
        assert_eq!(
            b,
            vec![
                ("db-1", Some(1), true),
                ("db-2", Some(2), false),
                ("app-1", Some(3), true),
                ("app-2", Some(4), false),
                ("app-3", Some(4), false),
                ("app-4", Some(4), false)
            ]
        );
        // A re-run after the db canary was upgraded: no new db canary is picked.
        let mut obs = vec![found("1.0.0"); 7];
        obs[1] = found("1.1.0");
        let p = build(&d, &obs, 3);
        let db: Vec<(&str, Option<usize>, bool)> = p.rows.iter().filter(|r| r.role == "db").map(|r| (r.id.as_str(), r.batch, r.canary)).collect();
        assert_eq!(db, vec![("db-2", Some(1), false), ("db-1", None, false)]);
    }
}
