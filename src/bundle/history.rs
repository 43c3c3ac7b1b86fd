//! The bundle's memory, kept on its hosts: every rollout appends one JSON line per host it
//! touched to `<root>/bundle-history.jsonl` there; `history` and `status` read them back.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::doc::{Documents, Manifest};
use super::plan::{Action, Row};
use super::rollout::{Done, Say, Summary};
use super::transport::{quote, Session, Transport};

pub const FILE: &str = "bundle-history.jsonl";

/// One rollout as one host recorded it (`containers`: those of that host it touched; `plan`: the
/// whole plan, every host's containers with their decision, rule and batch, skipped ones too).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub at: String,
    pub who: String,
    pub bundle: String,
    pub version: String,
    pub constraint: Option<String>,
    pub upgrade_document: Option<PathBuf>,
    pub completed: bool,
    pub containers: Vec<Done>,
    /// Empty in records written before the plan was kept.
    #[serde(default)]
    pub plan: Vec<Row>,
}

pub fn who() -> String {
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| {
        // SAFETY: getuid has no preconditions.
        format!("uid {}", unsafe { libc::getuid() })
    });
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{user}@{}", host.trim())
}

fn ok_or_stderr(o: std::process::Output) -> Result<std::process::Output, String> {
    if o.status.success() {
        Ok(o)
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    }
}

/// Append the rollout's record on every host it touched; a host that cannot be written is
/// named in a warning (the rollout's outcome stands).
pub fn record(docs: &Documents, hosts: &[(Transport, Option<String>)], session: &Session, s: &Summary, plan: &[Row], say: Say) {
    let at = crate::logging::now_rfc3339();
    let at = &at;
    // Every host at once: a rollout's end should not grow with the number of hosts.
    std::thread::scope(|scope| {
        for (t, down) in hosts {
            scope.spawn(move || record_on(docs, t, down.is_some(), session, (s, plan), at, say));
        }
    });
}

fn record_on(docs: &Documents, t: &Transport, down: bool, session: &Session, (s, plan): (&Summary, &[Row]), at: &str, say: Say) {
    let mine: Vec<Done> = s.containers.iter().filter(|d| d.host == t.name && d.millis > 0).cloned().collect();
    if down || mine.is_empty() {
        return;
    }
    let rec = Record {
        at: at.to_string(),
        who: who(),
        bundle: s.bundle.clone(),
        version: s.version.clone(),
        constraint: docs.upgrade.constraint.clone(),
        upgrade_document: Some(docs.upgrade_file.clone()),
        completed: s.completed,
        containers: mine,
        plan: plan.to_vec(),
    };
    let file = session.path().join(format!("{}.history.json", t.name.replace('/', "_")));
    let root = quote(&t.host.root.display().to_string());
    let res = serde_json::to_string(&rec)
        .map_err(|e| e.to_string())
        .and_then(|line| std::fs::write(&file, line + "\n").map_err(|e| e.to_string()))
        .and_then(|_| t.run(&format!("mkdir -p {root} && cat >> {root}/{FILE}"), Some(&file)).map_err(|e| e.to_string()))
        .and_then(ok_or_stderr);
    if let Err(e) = res {
        say(&format!("warning: history record on {} not written: {e}", t.name));
    }
}

/// Every record of this bundle on every reachable host, one per rollout (the hosts' records of
/// the same rollout merged), oldest first; plus a warning per host that could not be read.
pub fn read(manifest: &Manifest, hosts: &[(Transport, Option<String>)]) -> (Vec<Record>, Vec<String>) {
    let mut warnings = vec![];
    let mut merged: BTreeMap<(String, String, String), Record> = BTreeMap::new();
    for (t, down) in hosts {
        if let Some(reason) = down {
            warnings.push(format!("host {}: not read: {reason}", t.name));
            continue;
        }
        let root = quote(&t.host.root.display().to_string());
        let text = match t.run(&format!("cat {root}/{FILE} 2>/dev/null || true"), None).map_err(|e| e.to_string()).and_then(ok_or_stderr) {
            Ok(o) => String::from_utf8_lossy(&o.stdout).to_string(),
            Err(e) => {
                warnings.push(format!("host {}: {FILE} not read: {e}", t.name));
                continue;
            }
        };
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let rec: Record = match serde_json::from_str(line) {
                Ok(r) => r,
                Err(e) => {
                    warnings.push(format!("host {}: {FILE} line {}: skipped: {e}", t.name, n + 1));
                    continue;
                }
            };
            if rec.bundle != manifest.name {
                continue;
            }
            match merged.entry((rec.at.clone(), rec.who.clone(), rec.version.clone())) {
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    let r = o.get_mut();
                    r.containers.extend(rec.containers);
                    if r.plan.is_empty() {
                        r.plan = rec.plan;
                    }
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(rec);
                }
            }
        }
    }
    (merged.into_values().collect(), warnings)
}

/// One block per rollout: when, who, to which version, how it ended; a line per container of its
/// plan in plan order: what the rollout did to it, or the plan's decision and rule for one it
/// left alone.
pub fn table(records: &[Record]) -> String {
    if records.is_empty() {
        return "no rollout of this bundle is recorded on its hosts\n".into();
    }
    let mut out = String::new();
    for r in records {
        let up = r.containers.iter().filter(|d| d.outcome == "upgraded").count();
        let left = |upgrade: bool| r.plan.iter().filter(|p| (p.decision == Action::Upgrade) == upgrade && !r.containers.iter().any(|d| d.id == p.id)).count();
        let more: String = [(left(false), "skipped"), (left(true), "not started")].iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!(", {n} {what}")).collect();
        out.push_str(&format!(
            "{}  {}  -> {}  {} ({up} of {} upgraded{more})\n",
            r.at,
            r.who,
            r.version,
            if r.completed { "complete" } else { "STOPPED" },
            r.containers.len()
        ));
        out.push_str(&crate::table::columns(&["", "CONTAINER", "HOST", "ROLE", "VERSIONS", "OUTCOME", "TIME", "DETAIL"], &lines(r)));
    }
    out
}

/// The table's lines of one rollout: the plan's containers in order (each with its outcome if
/// the rollout touched it), then any touched container the plan does not name (an older record
/// without a plan).
fn lines(r: &Record) -> Vec<Vec<String>> {
    let versions = |from: Option<&str>| format!("{} -> {}", from.unwrap_or("-"), r.version);
    let done = |d: &Done| vec![String::new(), d.id.clone(), d.host.clone(), d.role.clone(), versions(d.from.as_deref()), d.outcome.clone(), format!("{} ms", d.millis), d.detail.clone()];
    let planned = |p: &Row| {
        let (outcome, detail) = match p.decision {
            Action::Upgrade => ("not started", format!("planned for batch {}", p.batch.unwrap_or(0))),
            d => (d.label(), p.rule.clone()),
        };
        vec![String::new(), p.id.clone(), p.host.clone(), p.role.clone(), versions(p.running.as_deref()), outcome.into(), "-".into(), detail]
    };
    let mut out: Vec<Vec<String>> = r.plan.iter().map(|p| r.containers.iter().find(|d| d.id == p.id).map(done).unwrap_or_else(|| planned(p))).collect();
    out.extend(r.containers.iter().filter(|d| !r.plan.iter().any(|p| p.id == d.id)).map(done));
    out
}

/// The newest record line of each container: (when, what happened).
pub fn last_per_container(records: &[Record]) -> BTreeMap<String, String> {
    let mut last = BTreeMap::new();
    for r in records {
        for d in &r.containers {
            last.insert(d.id.clone(), format!("{} {} -> {} {}", r.at, d.from.as_deref().unwrap_or("-"), d.to, d.outcome));
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = r#"{"at":"2026-12-01T10:00:00Z","who":"root@x","bundle":"b","version":"1.1.0","constraint":null,"upgrade_document":null,"completed":false,
        "containers":[{"id":"db-1","role":"db","host":"h1","from":"1.0.0","to":"1.1.0","outcome":"upgraded","upgraded":true,"millis":900,"detail":""}]}"#;

    fn row(id: &str, decision: &str, rule: &str, batch: Option<usize>) -> Row {
        serde_json::from_value(serde_json::json!({"id": id, "role": "db", "host": "h1", "running": "1.0.0", "status": "running",
            "decision": decision, "rule": rule, "batch": batch, "canary": false}))
        .unwrap()
    }

    #[test]
    fn a_record_without_a_plan_still_reads_and_shows_its_containers() {
        let rec: Record = serde_json::from_str(OLD).unwrap();
        assert!(rec.plan.is_empty());
        let t = table(&[rec]);
        assert!(t.contains("STOPPED (1 of 1 upgraded)") && t.contains("db-1") && t.contains("900 ms"), "{t}");
    }

    #[test]
    fn the_table_shows_every_container_of_the_plan_in_plan_order() {
        let mut rec: Record = serde_json::from_str(OLD).unwrap();
        rec.plan = vec![row("db-0", "skip: not newer", "new version 1.1.0 is not later", None), row("db-1", "upgrade", "later", Some(1)), row("db-2", "upgrade", "later", Some(2))];
        let t = table(&[rec]);
        assert!(t.contains("STOPPED (1 of 1 upgraded, 1 skipped, 1 not started)"), "{t}");
        let at = |id: &str| t.find(&format!(" {id} ")).unwrap_or_else(|| panic!("{id} missing:\n{t}"));
        assert!(at("db-0") < at("db-1") && at("db-1") < at("db-2"), "{t}");
        let line = |id: &str| t.lines().find(|l| l.contains(&format!(" {id} "))).unwrap_or_default().to_string();
        assert!(line("db-0").contains("skip: not newer") && line("db-0").contains("is not later"), "{t}");
        assert!(line("db-2").contains("not started") && line("db-2").contains("planned for batch 2"), "{t}");
    }
}
