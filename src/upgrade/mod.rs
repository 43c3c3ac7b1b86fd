//! In-place upgrade of a running container (the mission's claim, steps b-f and the identifier
//! clause): a new container is prepared beside the old one, the old one stops, its volumes and
//! network identity move across, the new one takes the id and starts; a health gate decides
//! between commit and rollback. Every step is journaled so a crash is finished or undone later.
//! This file is the command (checks, the journal's first record, the report); the steps and their
//! undos are one table in steps.rs, run backwards by rollback.rs; recovery.rs settles a crash.

// UpgradeError carries the whole report of a failed upgrade (its steps, the rollback's outcome)
// to the command's output; it is returned once per command, on the cold path, so its size costs
// nothing a Box would save.
#![allow(clippy::result_large_err)]

pub mod derive;
pub mod eligibility;
pub mod preflight;
pub mod handover;
pub mod journal;
mod health;
mod interrupt;
mod recovery;
mod rollback;
mod steps;
mod stopped;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::container::create::load_spec;
use crate::container::{Container, Status};
use eligibility::Decision;
use journal::Record;

pub use health::{parse_duration, seconds, Health};
pub use interrupt::{catch_interrupts, interrupted_by, signal_name};
pub use recovery::{abandon, interrupted, interrupted_ids, interrupted_note, resume, settle, Settle, INTERRUPTED_ANNOTATION};
pub use steps::{stop_container, StepDef, STEPS};
use recovery::resume_locked;
use steps::Run;

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("upgrade of {id} refused: {}", decision.reason)]
    Refused { id: String, decision: Decision },
    #[error("upgrade of {id}: {source}")]
    Eligibility { id: String, source: eligibility::EligibilityError },
    #[error("upgrade of {id}: {reason}")]
    Precondition { id: String, reason: String },
    #[error("upgrade journal {path}: {reason}")]
    Journal { path: PathBuf, reason: String },
    #[error("upgrade of {id} failed at step {step}: {reason}{rollback}")]
    StepFailed { id: String, step: &'static str, reason: String, rollback: String, rolled_back: bool, steps: Vec<StepReport> },
    #[error("upgrade of {id}: {source}")]
    Image { id: String, source: crate::image::ImageError },
    #[error(transparent)]
    Container(#[from] crate::container::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Move,
    Keep,
}


#[derive(Debug, Clone)]
pub struct Options {
    pub id: String,
    pub new_bundle: PathBuf,
    pub network: NetworkMode,
    pub stop_signal: i32,
    pub stop_timeout: Duration,
    pub health: Health,
    pub health_timeout: Duration,
    pub rollback: bool,
    pub dry_run: bool,
    pub systemd_cgroup: bool,
    /// Upgrade past the eligibility rule (a downgrade, a bundle without a version), with the
    /// operator's reason: logged and kept in the report's decision.
    pub force: Option<String>,
    /// Take only the application from the new bundle; the running container keeps its
    /// deployment (derive.rs).
    pub derive: bool,
    /// Told of every step as it starts and ends (the CLI's live display).
    pub progress: Option<fn(&StepEvent)>,
    /// The new application as an OCI image reference (`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`):
    /// unpacked into the image store, then upgraded to as with `derive` (`new_bundle` unused).
    pub image: Option<String>,
    /// Take a stopped container too (stopped.rs): what a bundle's rollback-batch asks for a
    /// container whose new version died after its upgrade.
    pub allow_stopped: bool,
    /// Keep the image the container runs now from prunes under this hold name (image store)
    /// until the hold is removed: a bundle rollout's way back for its batch.
    pub hold_old_image: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: &'static str,
    pub millis: u128,
    pub note: String,
}

/// A step as it happens, for a live display (`Options::progress`): `phase` is start, done or
/// failed; `millis` and `note` come with done and failed.
#[derive(Debug, Clone, Serialize)]
pub struct StepEvent<'a> {
    pub id: &'a str,
    pub step: &'static str,
    pub phase: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub millis: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub id: String,
    pub outcome: &'static str,
    pub decision: Option<Decision>,
    pub steps: Vec<StepReport>,
    /// Old process stopped to new process started.
    pub unavailable_ms: Option<u128>,
    pub error: Option<String>,
    /// --dry-run: what was checked of the new bundle (preflight.rs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// Dry run: how the new config differs from the running one (args, env, cwd, user, version).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<derive::Change>,
}

/// Check everything that can be checked without touching the running container.
/// `force` carries the operator's reason to upgrade past a refusal or an unreadable version.
pub fn decide(root: &Path, id: &str, new_bundle: &Path, force: Option<&str>) -> Result<(Container, oci_spec::runtime::Spec, Decision), UpgradeError> {
    let old = Container::load(root, id)?;
    let new_spec = load_spec(new_bundle)?;
    crate::container::create::validate_process(&new_spec)?;
    let ann = old.state.annotations();
    let new_ann = new_spec.annotations().clone().unwrap_or_default();
    let running = ann.get(eligibility::VERSION_ANNOTATION).map(String::as_str);
    let new = new_ann.get(eligibility::VERSION_ANNOTATION).map(String::as_str);
    let decision = match (eligibility::evaluate(running, new, new_ann.get(eligibility::CONSTRAINT_ANNOTATION).map(String::as_str)), force) {
        (Ok(d), None) => d,
        (Err(source), None) => return Err(UpgradeError::Eligibility { id: id.into(), source }),
        (Ok(d), Some(_)) if d.eligible => d,
        (res, Some(why)) => {
            let refusal = match res {
                Ok(d) => d.reason,
                Err(e) => e.to_string(),
            };
            crate::logging::warn(&format!("container {id}: upgrade forced past the version rule ({refusal}): {why}"));
            Decision {
                eligible: true,
                running: running.unwrap_or("-").into(),
                new: new.unwrap_or("-").into(),
                constraint: new_ann.get(eligibility::CONSTRAINT_ANNOTATION).cloned(),
                reason: format!("forced ({why}); the rule said: {refusal}"),
            }
        }
    };
    Ok((old, new_spec, decision))
}

pub fn upgrade(root: &Path, opts: &Options) -> Result<Report, UpgradeError> {
    let id = &opts.id;
    crate::container::validate_id(id)?;
    crate::container::create_root(root).map_err(|e| UpgradeError::Precondition { id: id.clone(), reason: format!("{}: {e}", root.display()) })?;
    let _lock = journal::try_lock(root, id)?.ok_or_else(|| UpgradeError::Precondition {
        id: id.clone(),
        reason: "another molt is upgrading this container right now".into(),
    })?;
    if journal::load(root, id)?.is_some() {
        let outcome = resume_locked(root, id, opts.systemd_cgroup)?;
        crate::logging::warn(&format!("container {id}: an interrupted upgrade was found and {outcome}"));
    }
    let precondition = |reason: String| UpgradeError::Precondition { id: id.clone(), reason };
    // An image is unpacked (or found) in the store and held from prunes until this upgrade ends;
    // then whatever it left unreferenced (a refused or rolled-back image, the old version's, also
    // when the new version comes as a bundle) is pruned. Declared before the scratch so the
    // derived config is gone before that prune.
    let uses_store = opts.image.is_some() || crate::image::store::images_dir(root).is_dir();
    let _image_use = if uses_store { Some(crate::image::store::InUse::take(root).map_err(|source| UpgradeError::Image { id: id.clone(), source })?) } else { None };
    // A derived bundle lives only as long as this upgrade does, until the journal owns it.
    let mut scratch = derive::Scratch(None);
    let app_bundle = match &opts.image {
        Some(r) => crate::image::store::unpack(root, r).map_err(|source| UpgradeError::Image { id: id.clone(), source })?,
        None => opts.new_bundle.clone(),
    };
    let new_bundle = if opts.derive || opts.image.is_some() {
        let running = Container::load(root, id)?;
        let dir = derive::write(root, id, &running.state.config, &running.state.bundle, &app_bundle).map_err(precondition)?;
        scratch.0 = Some(dir.clone());
        dir
    } else {
        opts.new_bundle.canonicalize().map_err(|e| precondition(format!("new bundle {}: {e}", opts.new_bundle.display())))?
    };
    let (old, new_spec, decision) = decide(root, id, &new_bundle, opts.force.as_deref())?;
    let mut report = Report { id: id.clone(), outcome: "refused", decision: Some(decision.clone()), steps: vec![], unavailable_ms: None, error: None, checks: vec![], changes: vec![] };
    if !decision.eligible {
        return Err(UpgradeError::Refused { id: id.clone(), decision });
    }
    check_old(&old, opts.allow_stopped).map_err(precondition)?;
    check_new_config(&old, &new_spec, opts)?;
    if opts.dry_run {
        // Everything create would need, then the steps that would run, none of them taken.
        // `keep` joins the old container's network namespace, as create-new will.
        let join = (opts.network == NetworkMode::Keep && old.status() == Status::Running).then(|| crate::namespaces::path(old.state.pid, "net"));
        report.checks = preflight::check(&new_bundle, &new_spec, join.as_deref()).map_err(precondition)?;
        report.steps = STEPS.iter().map(|s| StepReport { step: s.step.name(), millis: 0, note: format!("would {}", s.what) }).collect();
        report.outcome = "dry-run";
        report.changes = derive::changes(&old.state.config, &new_spec);
        return Ok(report);
    }
    if let Some(name) = &opts.hold_old_image {
        hold_image_of(root, &old, name).map_err(|source| UpgradeError::Image { id: id.clone(), source })?;
    }
    let rec = record(opts, &old, &new_spec, &new_bundle)?;
    journal::save(root, &rec)?;
    scratch.0 = None;
    let mut run = Run { root, opts, rec, steps: vec![], stopped_at: None, started_at: None, held: Default::default() };
    if let Err((step, reason)) = run.forward() {
        return Err(failed(&mut run, step, reason));
    }
    report.outcome = "upgraded";
    report.steps = run.steps;
    report.unavailable_ms = match (run.stopped_at, run.started_at) {
        (Some(a), Some(b)) => Some(b.duration_since(a).as_millis()),
        _ => None,
    };
    Ok(report)
}

/// Only a running container that molt itself runs is upgraded; a stopped one when asked.
fn check_old(old: &Container, allow_stopped: bool) -> Result<(), String> {
    let status = old.status();
    if status == Status::Stopped && allow_stopped {
        return Ok(());
    }
    if status != Status::Running {
        let stopped = if status == Status::Stopped { " (or a stopped one with --allow-stopped)" } else { "" };
        return Err(format!("container is {status}; only a running container is upgraded{stopped}"));
    }
    if let Some((ppid, engine)) = engine_parent(old.state.pid) {
        return Err(format!(
            "the container is managed by {engine} (pid {ppid}), which waits for its process {} and would take its exit for the \
             container's end (and delete it); upgrade it through its engine, or run it with molt directly to upgrade it in place",
            old.state.pid
        ));
    }
    Ok(())
}

/// The container's rootfs held under `name` (as its config names it: what a prune compares)
/// when it is in the image store; nothing for a container that does not run an image.
fn hold_image_of(root: &Path, old: &Container, name: &str) -> Result<(), crate::image::ImageError> {
    let images = crate::image::store::images_dir(root);
    let rootfs = old.state.config.root().as_ref().map(|r| r.path().clone()).unwrap_or_default();
    let in_store = [images.canonicalize().ok(), Some(images)].into_iter().flatten().any(|i| rootfs.starts_with(i));
    if in_store {
        crate::image::store::hold(root, name, &[rootfs])
    } else {
        Ok(())
    }
}

/// The journal's first record: the names, pins and cgroups the steps will use.
fn record(opts: &Options, old: &Container, new_spec: &oci_spec::runtime::Spec, new_bundle: &Path) -> Result<Record, crate::container::Error> {
    let id = &opts.id;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    // The id keeps its cgroup path (engines and monitoring read it): the new container is built
    // beside it and moved in once the old one is gone (transfer-id).
    let new_cgroups_path = new_spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()).map(|p| p.to_string_lossy().to_string());
    let new_cgroup = crate::cgroups::Cgroup::resolve(new_cgroups_path.as_deref(), id, opts.systemd_cgroup)?;
    let new_cgroup_temp = new_cgroup.beside(&format!(".next-{stamp}"));
    Ok(Record {
        id: id.clone(),
        next_id: format!("{id}.next-{stamp}"),
        prev_id: format!("{id}.prev-{stamp}"),
        old_bundle: old.state.bundle.clone(),
        new_bundle: new_bundle.to_path_buf(),
        network: opts.network,
        old_hostname: None,
        old_netns_pin: None,
        new_netns_pin: None,
        restore_netns_pins: vec![],
        links: vec![],
        volumes: old.state.volumes.clone(),
        systemd_cgroup: Some(opts.systemd_cgroup),
        stop_timeout_ms: Some(opts.stop_timeout.as_millis() as u64),
        old_cgroup: old.state.cgroup.clone(),
        new_cgroup: Some(new_cgroup),
        new_cgroup_temp: Some(new_cgroup_temp),
        old_stopped: opts.allow_stopped && old.status() == Status::Stopped,
        entries: vec![],
    })
}

/// A step failed: roll back unless told not to, and say which step failed and what was done.
fn failed(run: &mut Run, step: journal::Step, reason: String) -> UpgradeError {
    let opts = run.opts;
    let id = &opts.id;
    let tell = |phase: &'static str, note: Option<&str>| {
        if let Some(p) = opts.progress {
            p(&StepEvent { id, step: "rollback", phase, millis: None, note });
        }
    };
    let (rollback, rolled_back) = if opts.rollback {
        tell("start", None);
        let (text, ok) = match rollback::rollback(run) {
            Ok(()) => ("; rolled back: the old version runs again under the same id".to_string(), true),
            Err(e) => (format!("; ROLLBACK FAILED: {e}; the journal is kept, run `molt upgrade --resume {id}`"), false),
        };
        tell(if ok { "done" } else { "failed" }, Some(text.trim_start_matches("; ")));
        (text, ok)
    } else {
        (format!("; --no-rollback: left as it is, the journal is kept; run `molt upgrade --resume {id}` to roll back"), false)
    };
    UpgradeError::StepFailed { id: id.clone(), step: step.name(), reason, rollback, rolled_back, steps: std::mem::take(&mut run.steps) }
}

/// The engine that is the parent of a container's init: podman's conmon or a containerd shim
/// (docker's too). Both reap the init by the pid they were given.
fn engine_parent(pid: i32) -> Option<(i32, String)> {
    let ppid = crate::procfs::stat(pid).ok()?.ppid;
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?.trim().to_string();
    (comm == "conmon" || comm.starts_with("containerd-shim")).then_some((ppid, comm))
}

fn check_new_config(_old: &Container, new_spec: &oci_spec::runtime::Spec, opts: &Options) -> Result<(), UpgradeError> {
    let err = |reason: String| UpgradeError::Precondition { id: opts.id.clone(), reason };
    let new_linux = new_spec.linux().clone().unwrap_or_default();
    let new_net = new_linux.namespaces().clone().unwrap_or_default().into_iter().find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network);
    match (&new_net, opts.network) {
        (None, _) => return Err(err("the new bundle has no network namespace; the identity cannot move into it".into())),
        (Some(n), NetworkMode::Move) if n.path().is_some() => {
            return Err(err("--network move needs a new network namespace in the new bundle, not a path".into()))
        }
        _ => {}
    }
    Ok(())
}
