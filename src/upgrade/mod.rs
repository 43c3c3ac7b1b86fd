//! In-place upgrade of a running container (the mission's claim, steps b-f and the identifier
//! clause): a new container is prepared beside the old one, the old one stops, its volumes and
//! network identity move across, the new one takes the id and starts; a health gate decides
//! between commit and rollback. Every step is journaled so a crash is finished or undone later.

pub mod derive;
pub mod eligibility;
pub mod preflight;
pub mod handover;
pub mod journal;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::container::create::{create, load_spec, CreateOptions, UpgradePrep};
use crate::container::{Container, Status};
use eligibility::Decision;
use journal::{Entry, Record, Step};

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

#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    None,
    Exec(Vec<String>),
    Tcp(u16),
    Running(Duration),
}

impl Health {
    pub fn parse(s: &str) -> Result<Health, String> {
        let (kind, arg) = s.split_once(':').ok_or_else(|| format!("--health {s:?}: use exec:CMD, tcp:PORT or running:DUR"))?;
        match kind {
            "exec" if !arg.trim().is_empty() => Ok(Health::Exec(arg.split_whitespace().map(String::from).collect())),
            "tcp" => arg.parse().map(Health::Tcp).map_err(|_| format!("--health {s:?}: {arg:?} is not a port")),
            "running" => parse_duration(arg).map(Health::Running),
            _ => Err(format!("--health {s:?}: use exec:CMD, tcp:PORT or running:DUR")),
        }
    }
}

/// "500ms", "10s", "2m", or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: f64 = num.parse().map_err(|_| format!("duration {s:?}: not a number"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("duration {s:?}: unit must be ms, s or m")),
    };
    seconds(secs).ok_or_else(|| format!("duration {s:?}: out of range (0 up to {} seconds)", u64::MAX))
}

/// A number of seconds from the user as a Duration; None when negative, not finite or too large
/// (Duration::from_secs_f64 panics on those).
pub fn seconds(secs: f64) -> Option<Duration> {
    if secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
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

pub const PLAN: &[(Step, &str)] = &[
    (Step::CreateNew, "create the new container from the new bundle, held before its process starts"),
    (Step::StopOld, "stop the old container (stop signal, timeout, then SIGKILL)"),
    (Step::HandOverVolumes, "flush the volumes and mount their host attachments into the new container"),
    (Step::MoveNetwork, "move the network identity (veth, addresses, routes, MAC) and the hostname"),
    (Step::TransferId, "give the container id to the new container; keep the old one aside"),
    (Step::StartNew, "start the new application"),
    (Step::HealthGate, "run the health gate"),
    (Step::Commit, "remove the old container (or roll back on any failure)"),
];

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

/// The SIGINT or SIGTERM that reached `molt upgrade` (0: none). The handler only notes it; the
/// upgrade acts on it at its next step or wait, where it can still roll back cleanly.
static INTERRUPT: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_interrupt(sig: libc::c_int) {
    let _ = INTERRUPT.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM interrupt the upgrade instead of killing molt: it rolls back
/// (or finishes a commit that had begun) and the command exits 128 + the signal.
pub fn catch_interrupts() -> Result<(), nix::Error> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    // SA_RESTART: a system call the signal lands in goes on; the flag is read between steps.
    let act = SigAction::new(SigHandler::Handler(note_interrupt), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &act) }?;
    }
    Ok(())
}

/// The signal that interrupted this upgrade, if one did.
pub fn interrupted_by() -> Option<i32> {
    Some(INTERRUPT.load(Ordering::SeqCst)).filter(|s| *s != 0)
}

pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig).map(|s| s.as_str().to_string()).unwrap_or_else(|_| format!("signal {sig}"))
}

fn check_interrupt() -> Result<(), String> {
    match interrupted_by() {
        Some(sig) => Err(format!("interrupted by {}", signal_name(sig))),
        None => Ok(()),
    }
}

fn pins_dir(root: &Path) -> PathBuf {
    root.join(".pins")
}

struct Run<'a> {
    root: &'a Path,
    opts: &'a Options,
    rec: Record,
    steps: Vec<StepReport>,
    stopped_at: Option<Instant>,
    started_at: Option<Instant>,
    held: handover::Held,
}

impl Run<'_> {
    /// Journal the start, run, journal the end: the shape every step has.
    fn step<T>(&mut self, step: Step, f: impl FnOnce(&mut Self) -> Result<(T, String), String>) -> Result<T, (Step, String)> {
        // An interrupt before a step rolls back; one during the commit lets it finish.
        check_interrupt().map_err(|e| (step, e))?;
        let tell = |phase: &'static str, millis: Option<u128>, note: Option<&str>| {
            if let Some(p) = self.opts.progress {
                p(&StepEvent { id: &self.opts.id, step: step.name(), phase, millis, note });
            }
        };
        tell("start", None, None);
        crate::logging::debug(&format!("upgrade {}: step {} starts", self.opts.id, step.name()));
        self.rec.entries.push(Entry { step, done: false, at: crate::logging::now_rfc3339(), millis: None, note: None });
        journal::save(self.root, &self.rec).map_err(|e| (step, e.to_string()))?;
        journal::maybe_crash(step, "before");
        let t = Instant::now();
        let (value, note) = match f(self) {
            Ok(v) => v,
            Err(e) => {
                if let Some(p) = self.opts.progress {
                    p(&StepEvent { id: &self.opts.id, step: step.name(), phase: "failed", millis: Some(t.elapsed().as_millis()), note: Some(&e) });
                }
                return Err((step, e));
            }
        };
        journal::maybe_crash(step, "after");
        let millis = t.elapsed().as_millis();
        self.rec.entries.push(Entry { step, done: true, at: crate::logging::now_rfc3339(), millis: Some(millis), note: Some(note.clone()) });
        // A finished commit has removed the journal: writing it again would leave a finished
        // upgrade for the next command to "settle".
        if step != Step::Commit {
            journal::save(self.root, &self.rec).map_err(|e| (step, e.to_string()))?;
        }
        if let Some(p) = self.opts.progress {
            p(&StepEvent { id: &self.opts.id, step: step.name(), phase: "done", millis: Some(millis), note: Some(&note) });
        }
        self.steps.push(StepReport { step: step.name(), millis, note });
        Ok(value)
    }

    fn load(&self, id: &str) -> Result<Container, String> {
        Container::load(self.root, id).map_err(|e| e.to_string())
    }
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
    // A derived bundle lives only as long as this upgrade does, until the journal owns it.
    // An image is unpacked (or found) in the store and held from prunes until this upgrade ends;
    // then whatever it left unreferenced (a refused or rolled-back image, the old version's, also
    // when the new version comes as a bundle) is pruned. Declared before the scratch so the
    // derived config is gone before that prune.
    let image_err = |source| UpgradeError::Image { id: id.clone(), source };
    let uses_store = opts.image.is_some() || crate::image::store::images_dir(root).is_dir();
    let _image_use = if uses_store { Some(crate::image::store::InUse::take(root).map_err(image_err)?) } else { None };
    let mut scratch = derive::Scratch(None);
    let app_bundle = match &opts.image {
        Some(r) => crate::image::store::unpack(root, r).map_err(image_err)?,
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
    let status = old.status();
    if status != Status::Running {
        return Err(UpgradeError::Precondition { id: id.clone(), reason: format!("container is {status}; only a running container is upgraded") });
    }
    if let Some((ppid, engine)) = engine_parent(old.state.pid) {
        return Err(UpgradeError::Precondition {
            id: id.clone(),
            reason: format!(
                "the container is managed by {engine} (pid {ppid}), which waits for its process {} and would take its exit for the \
                 container's end (and delete it); upgrade it through its engine, or run it with molt directly to upgrade it in place",
                old.state.pid
            ),
        });
    }
    check_new_config(&old, &new_spec, opts)?;
    if opts.dry_run {
        // Everything create would need, then the steps that would run, none of them taken.
        report.checks = preflight::check(&new_bundle, &new_spec).map_err(precondition)?;
        report.steps = PLAN.iter().map(|(step, what)| StepReport { step: step.name(), millis: 0, note: format!("would {what}") }).collect();
        report.outcome = "dry-run";
        report.changes = derive::changes(&old.state.config, &new_spec);
        return Ok(report);
    }
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    // The id keeps its cgroup path (engines and monitoring read it): the new container is built
    // beside it and moved in once the old one is gone (transfer-id).
    let new_cgroups_path = new_spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()).map(|p| p.to_string_lossy().to_string());
    let new_cgroup = crate::cgroups::Cgroup::resolve(new_cgroups_path.as_deref(), id, opts.systemd_cgroup).map_err(crate::container::Error::from)?;
    let new_cgroup_temp = new_cgroup.beside(&format!(".next-{stamp}"));
    let rec = Record {
        id: id.clone(),
        next_id: format!("{id}.next-{stamp}"),
        prev_id: format!("{id}.prev-{stamp}"),
        old_bundle: old.state.bundle.clone(),
        new_bundle: new_bundle.clone(),
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
        entries: vec![],
    };
    journal::save(root, &rec)?;
    scratch.0 = None;
    let mut run = Run { root, opts, rec, steps: vec![], stopped_at: None, started_at: None, held: Default::default() };
    match forward(&mut run) {
        Ok(()) => {
            report.outcome = "upgraded";
        }
        Err((step, reason)) => {
            let tell = |phase: &'static str, note: Option<&str>| {
                if let Some(p) = opts.progress {
                    p(&StepEvent { id, step: "rollback", phase, millis: None, note });
                }
            };
            if opts.rollback {
                tell("start", None);
            }
            let (rollback, rolled_back) = if opts.rollback {
                match rollback(&mut run) {
                    Ok(()) => ("; rolled back: the old version runs again under the same id".to_string(), true),
                    Err(e) => (format!("; ROLLBACK FAILED: {e}; the journal is kept, run `molt upgrade --resume {id}`"), false),
                }
            } else {
                (format!("; --no-rollback: left as it is, the journal is kept; run `molt upgrade --resume {id}` to roll back"), false)
            };
            if opts.rollback {
                tell(if rolled_back { "done" } else { "failed" }, Some(rollback.trim_start_matches("; ")));
            }
            return Err(UpgradeError::StepFailed { id: id.clone(), step: step.name(), reason, rollback, rolled_back, steps: run.steps });
        }
    }
    report.steps = run.steps;
    report.unavailable_ms = match (run.stopped_at, run.started_at) {
        (Some(a), Some(b)) => Some(b.duration_since(a).as_millis()),
        _ => None,
    };
    Ok(report)
}

/// The engine that is the parent of a container's init: podman's conmon or a containerd shim
/// (docker's too). Both reap the init by the pid they were given.
fn engine_parent(pid: i32) -> Option<(i32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may hold spaces and parentheses: the ppid follows the last ')'.
    let ppid: i32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
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

fn forward(run: &mut Run) -> Result<(), (Step, String)> {
    let id = run.opts.id.clone();
    run.step(Step::CreateNew, create_new)?;
    run.step(Step::StopOld, stop_old)?;
    run.step(Step::HandOverVolumes, hand_over_volumes)?;
    run.step(Step::MoveNetwork, move_network)?;
    run.step(Step::TransferId, |r| {
        let moved = move_cgroup_in(r.root, &r.rec)?;
        transfer_id(r.root, &r.rec, false)?;
        Ok(((), format!("{} is now the new container{moved}", r.rec.id)))
    })?;
    run.step(Step::StartNew, start_new)?;
    run.step(Step::HealthGate, health_gate)?;
    run.step(Step::Commit, |r| commit(r.root, &r.rec).map(|_| ((), "old container removed".to_string())))?;
    let _ = id;
    Ok(())
}

/// Step 1. Also pins the old network namespace and records what must move.
fn create_new(r: &mut Run) -> Result<((), String), String> {
    let old = r.load(&r.rec.id)?;
    std::fs::create_dir_all(pins_dir(r.root)).map_err(|e| format!("mkdir {}: {e}", pins_dir(r.root).display()))?;
    let old_pin = pins_dir(r.root).join(format!("{}-old-net", r.rec.next_id));
    r.rec.old_netns_pin = Some(old_pin.clone());
    journal::save(r.root, &r.rec).map_err(|e| e.to_string())?;
    crate::nsutil::pin(old.state.pid, "net", &old_pin)?;
    r.rec.old_hostname = handover::read_hostname(old.state.pid).ok();
    if r.opts.network == NetworkMode::Move {
        r.rec.links = crate::net::snapshot(&old_pin).map_err(|e| e.to_string())?;
    }
    journal::save(r.root, &r.rec).map_err(|e| e.to_string())?;
    // The listening sockets of both versions and the old stdio, held from now until the end.
    let new_spec = load_spec(&r.rec.new_bundle).map_err(|e| e.to_string())?;
    // Only what the new container will use: a held TCP socket of the old namespace in `move`
    // would queue connections that die when the veth leaves (the clients then time out).
    let mode = r.opts.network;
    let eps: Vec<_> = listen_endpoints(&[&new_spec, &old.state.config])?.into_iter().filter(|e| hands_over(mode, e)).collect();
    r.held.take_from(&old, &eps);
    let (listen_fds, stdio) = r.held.prep(|e| hands_over(r.opts.network, e))?;
    let co = CreateOptions {
        id: r.rec.next_id.clone(),
        bundle: r.rec.new_bundle.clone(),
        systemd_cgroup: r.opts.systemd_cgroup,
        upgrade: Some(UpgradePrep {
            defer_volumes: true,
            join_netns: (r.opts.network == NetworkMode::Keep).then(|| old_pin.clone()),
            skip_net_setup: true,
            listen_fds,
            stdio: Some(stdio),
            cgroup: r.rec.new_cgroup_temp.clone(),
        }),
        ..CreateOptions::default()
    };
    let new = create(r.root, &co).map_err(|e| e.to_string())?;
    if r.opts.network == NetworkMode::Move {
        // A veth dies with the namespace holding it: keep the new one alive whatever its app does.
        let new_pin = pins_dir(r.root).join(format!("{}-new-net", r.rec.next_id));
        r.rec.new_netns_pin = Some(new_pin.clone());
        journal::save(r.root, &r.rec).map_err(|e| e.to_string())?;
        crate::nsutil::pin(new.state.pid, "net", &new_pin)?;
    }
    Ok(((), format!("{} created from {}, held before start{}", r.rec.next_id, r.rec.new_bundle.display(), r.held.describe())))
}

/// The `io.molt.listen` endpoints of these configs, each once.
fn listen_endpoints(specs: &[&oci_spec::runtime::Spec]) -> Result<Vec<crate::listen::Endpoint>, String> {
    let mut out: Vec<crate::listen::Endpoint> = vec![];
    for spec in specs {
        for ep in crate::listen::from_spec(spec).map_err(|e| e.to_string())? {
            if !out.iter().any(|o| o.addr == ep.addr) {
                out.push(ep);
            }
        }
    }
    Ok(out)
}

/// A TCP socket belongs to its network namespace for good: it is handed over only when the new
/// container joins the old namespace (`keep`). A unix socket is reached by its path: always.
fn hands_over(mode: NetworkMode, ep: &crate::listen::Endpoint) -> bool {
    mode == NetworkMode::Keep || matches!(ep.addr, crate::listen::Addr::Unix(_))
}

/// Step 2.
fn stop_old(r: &mut Run) -> Result<((), String), String> {
    let old = r.load(&r.rec.id)?;
    let note = stop_container(&old, r.opts.stop_signal, r.opts.stop_timeout)?;
    r.stopped_at = Some(Instant::now());
    Ok(((), note))
}

pub fn stop_container(c: &Container, signal: i32, timeout: Duration) -> Result<String, String> {
    if c.status() == Status::Stopped {
        return Ok("already stopped".into());
    }
    let _ = c.kill(signal, false);
    journal::maybe_crash(Step::StopOld, "signalled");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && c.status() != Status::Stopped {
        check_interrupt()?;
        std::thread::sleep(Duration::from_millis(5));
    }
    let graceful = c.status() == Status::Stopped;
    // Every process of the container must be gone before its volume changes hands.
    if !crate::container::delete::stop_all(c, Duration::from_secs(10)) {
        return Err(format!("processes of {} still alive after SIGKILL", c.state.id));
    }
    Ok(if graceful { format!("stopped by signal {signal}") } else { format!("killed after {}ms timeout", timeout.as_millis()) })
}

/// Step 3.
fn hand_over_volumes(r: &mut Run) -> Result<((), String), String> {
    let mut old = r.load(&r.rec.id)?;
    let mut new = r.load(&r.rec.next_id)?;
    let registry = crate::volume::Registry::new(r.root);
    let mut keys = vec![];
    for m in new.state.config.mounts().clone().unwrap_or_default() {
        let Some(v) = crate::volume::from_mount(&m).map_err(|e| e.to_string())? else { continue };
        let staging = if old.state.volumes.contains(&v.key) {
            registry.flush(&v.key).map_err(|e| e.to_string())?;
            let holders = registry.foreign_holders(&v.key, &[]).map_err(|e| e.to_string())?;
            if !holders.is_empty() {
                return Err(format!("volume {} is still held open by pids {holders:?}; it will not change hands", v.key));
            }
            registry.staging_path(&v.key)
        } else {
            // A volume only the new version declares: attached now, under the same container id.
            registry.acquire(&v, &r.rec.id).map_err(|e| e.to_string())?
        };
        handover::attach_volume(new.state.pid, &staging, m.destination(), &v.bind_options)?;
        keys.push(v.key.clone());
    }
    // Volumes the new version no longer declares stay with the old record until commit.
    old.state.volumes.retain(|k| !keys.contains(k));
    new.state.volumes = keys.clone();
    new.save().map_err(|e| e.to_string())?;
    old.save().map_err(|e| e.to_string())?;
    Ok(((), if keys.is_empty() { "no volumes".into() } else { format!("handed over {}", keys.join(", ")) }))
}

/// Step 4.
fn move_network(r: &mut Run) -> Result<((), String), String> {
    let mut old = r.load(&r.rec.id)?;
    let mut new = r.load(&r.rec.next_id)?;
    let mut note = String::new();
    if r.opts.network == NetworkMode::Move {
        let from = r.rec.old_netns_pin.clone().ok_or("old network namespace was not pinned")?;
        let to = crate::init::ns_path(new.state.pid, "net");
        crate::net::move_links(&from, &to, &r.rec.links).map_err(|e| e.to_string())?;
        let names: Vec<_> = r.rec.links.iter().map(|l| l.name.clone()).collect();
        note = format!("moved {}", if names.is_empty() { "no interfaces".into() } else { names.join(", ") });
        new.state.net = old.state.net.take();
    } else {
        note.push_str("kept the old network namespace");
    }
    if let Some(h) = &r.rec.old_hostname {
        handover::set_hostname(new.state.pid, h)?;
        note.push_str(&format!("; hostname {h}"));
    }
    new.save().map_err(|e| e.to_string())?;
    old.save().map_err(|e| e.to_string())?;
    Ok(((), note))
}

/// Step 5, first half: the new container takes the id's cgroup path. The old container's
/// processes are all gone (stop-old), so when both versions use the same path its cgroup is
/// removed first; its record forgets it before, so no later teardown of the old record can
/// touch the new container's cgroup.
fn move_cgroup_in(root: &Path, rec: &Record) -> Result<String, String> {
    let (Some(temp), Some(fin)) = (&rec.new_cgroup_temp, &rec.new_cgroup) else { return Ok(String::new()) };
    let mut old = Container::load(root, &rec.id).map_err(|e| e.to_string())?;
    // The same path: the new record takes the old one's cgroup as it is, with the parents it
    // made, so deleting the id later removes those too.
    let mut target = fin.clone();
    if old.state.cgroup.as_ref().is_some_and(|c| c.same_place(fin)) {
        if let Some(cg) = old.state.cgroup.take() {
            old.save().map_err(|e| e.to_string())?;
            cg.remove_dirs().map_err(|e| format!("remove the old container's cgroup: {e}"))?;
            target = cg;
        }
    }
    let mut new = Container::load(root, &rec.next_id).map_err(|e| e.to_string())?;
    let limits = crate::container::create::with_default_device_rules(&new.state.config.linux().clone().unwrap_or_default());
    temp.move_to(&target, &limits).map_err(|e| format!("move the new container into the cgroup {}: {e}", fin.path()))?;
    new.state.cgroup = Some(target);
    new.save().map_err(|e| e.to_string())?;
    Ok(format!(" in cgroup {}", fin.path()))
}

/// Step 5 (and its undo with `back`): the id names the new container; the old is kept aside.
fn transfer_id(root: &Path, rec: &Record, back: bool) -> Result<(), String> {
    let (holder_now, aside, incoming) = if back { (&rec.id, &rec.next_id, &rec.prev_id) } else { (&rec.id, &rec.prev_id, &rec.next_id) };
    let dir = |id: &str| crate::container::state_dir(root, id);
    // Idempotent: each rename is skipped if it already happened (resume after a crash).
    if dir(incoming).exists() {
        if dir(holder_now).exists() {
            rename_container(root, holder_now, aside)?;
        }
        rename_container(root, incoming, holder_now)?;
    }
    // A crash between a rename and its id correction leaves a state under a new name still
    // recording the old one: corrected here on resume (molt refuses such a state otherwise).
    for id in [holder_now, aside] {
        if dir(id).exists() {
            record_own_id(root, id)?;
        }
    }
    Ok(())
}

fn rename_container(root: &Path, from: &str, to: &str) -> Result<(), String> {
    let (a, b) = (crate::container::state_dir(root, from), crate::container::state_dir(root, to));
    std::fs::rename(&a, &b).map_err(|e| format!("rename {} to {}: {e}", a.display(), b.display()))?;
    record_own_id(root, to)?;
    std::fs::File::open(root).and_then(|d| d.sync_all()).map_err(|e| e.to_string())
}

/// The state in `id`'s directory records `id`: the second half of a rename.
fn record_own_id(root: &Path, id: &str) -> Result<(), String> {
    let mut c = Container::load_renamed(root, id).map_err(|e| e.to_string())?;
    if c.state.id != id {
        c.state.id = id.to_string();
        c.save().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Step 6.
fn start_new(r: &mut Run) -> Result<((), String), String> {
    let mut new = r.load(&r.rec.id)?;
    new.start().map_err(|e| e.to_string())?;
    r.started_at = Some(Instant::now());
    let down = r.stopped_at.map(|s| s.elapsed().as_millis());
    Ok(((), match down { Some(ms) => format!("started pid {}; unavailable {ms}ms", new.state.pid), None => format!("started pid {}", new.state.pid) }))
}

/// Step 6, second half: the new application must prove itself before the old one is removed.
fn health_gate(r: &mut Run) -> Result<((), String), String> {
    let new = r.load(&r.rec.id)?;
    let deadline = Instant::now() + r.opts.health_timeout;
    let alive = |c: &Container| c.status() == Status::Running;
    let note = match &r.opts.health {
        Health::None => {
            if !alive(&new) {
                return Err("the new application exited right after start".into());
            }
            "no gate; the process is running".to_string()
        }
        Health::Running(d) => {
            let until = Instant::now() + *d;
            while Instant::now() < until {
                check_interrupt()?;
                std::thread::sleep(Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())));
            }
            if !alive(&new) {
                return Err(format!("the new application did not stay up for {}ms", d.as_millis()));
            }
            format!("still running after {}ms", d.as_millis())
        }
        Health::Tcp(port) => loop {
            check_interrupt()?;
            match handover::tcp_probe(new.state.pid, *port).and_then(|()| app_accepts(&new, *port, deadline)) {
                Ok(note) => break note,
                Err(e) if Instant::now() >= deadline || !alive(&new) => return Err(format!("health gate tcp:{port}: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        },
        Health::Exec(args) => loop {
            check_interrupt()?;
            let res = exec_probe(&new, args);
            match res {
                Ok(()) => break format!("`{}` exited 0", args.join(" ")),
                Err(e) if Instant::now() >= deadline || !alive(&new) => return Err(format!("health gate exec: {e}")),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        },
    };
    Ok(((), note))
}

/// With a socket molt holds, the kernel completes every handshake whether or not the application
/// runs: the gate also waits for the application to take the connections from the accept queue.
fn app_accepts(new: &Container, port: u16, deadline: Instant) -> Result<String, String> {
    let eps: Vec<_> = crate::listen::from_spec(&new.state.config)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| matches!(e.addr, crate::listen::Addr::Tcp(a) if a.port() == port))
        .collect();
    let taken = crate::listen::take(&handover::pids_of(new), &eps);
    let Some(fd) = taken.into_iter().flatten().next() else { return Ok(format!("port {port} accepts connections")) };
    use std::os::fd::AsRawFd;
    loop {
        if crate::listen::accept_queue(fd.as_raw_fd()) == Some(0) {
            return Ok(format!("port {port} accepts connections and the application takes them from the queue"));
        }
        if Instant::now() >= deadline || new.status() != Status::Running {
            return Err(format!("connections to port {port} wait in the handed-over socket's queue; the application does not accept them"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exec_probe(c: &Container, args: &[String]) -> Result<(), String> {
    let mut p = c.state.config.process().clone().unwrap_or_default();
    p.set_args(Some(args.to_vec()));
    p.set_terminal(Some(false));
    let pid = c
        .exec(crate::container::exec::ExecOptions { process: p, ..Default::default() })
        .map_err(|e| e.to_string())?;
    match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
        other => Err(format!("`{}` ended with {other:?}", args.join(" "))),
    }
}

/// Step 7: the old record goes, with whatever it still held that the new one does not use.
fn commit(root: &Path, rec: &Record) -> Result<(), String> {
    if let Ok(mut old) = Container::load(root, &rec.prev_id) {
        // Volumes the new version dropped are released under the id they were attached for.
        let registry = crate::volume::Registry::new(root);
        for key in std::mem::take(&mut old.state.volumes) {
            registry.release(&key, &rec.id).map_err(|e| format!("release volume {key}: {e}"))?;
        }
        old.state.net = None;
        crate::container::delete::teardown(&mut old, false);
    }
    // Nothing of the upgrade stays: transfer-id moved the new container out of this one.
    if let Some(tmp) = &rec.new_cgroup_temp {
        tmp.remove_dirs().map_err(|e| format!("remove the cgroup the new container was built in: {e}"))?;
    }
    unpin_all(rec);
    derive::prune(root, &rec.id, &rec.new_bundle);
    journal::remove(root, &rec.id);
    Ok(())
}

fn unpin_all(rec: &Record) {
    for p in [&rec.old_netns_pin, &rec.new_netns_pin].into_iter().flatten().chain(&rec.restore_netns_pins) {
        crate::nsutil::unpin(p);
    }
}

/// Undo: the old version runs again under the id, with the same volumes, network identity and
/// cgroup path. Works from any point of the journal (after a failure, or with --resume after a
/// crash). If it cannot, it says so (Err) and keeps the journal.
fn rollback(run: &mut Run) -> Result<(), String> {
    let root = run.root;
    run.rec.entries.push(Entry { step: Step::Rollback, done: false, at: crate::logging::now_rfc3339(), millis: None, note: None });
    journal::save(root, &run.rec).map_err(|e| e.to_string())?;
    let rec = run.rec.clone();
    // 1. The id back to the old record, the failed new container back to its own name.
    transfer_id(root, &rec, true)?;
    // 2. The failed new container stops; its netns stays pinned so moved links survive. What it
    // holds of the handover (after a crash molt holds nothing) is taken first.
    let failed = Container::load(root, &rec.next_id).ok();
    let old_spec = load_spec(&rec.old_bundle).ok();
    let mut eps = old_spec.as_ref().map(|s| listen_endpoints(&[s])).transpose()?.unwrap_or_default();
    eps.retain(|e| hands_over(rec.network, e));
    if let Some(f) = &failed {
        run.held.take_from(f, &eps);
        let _ = crate::container::delete::stop_all(f, Duration::from_secs(10));
    }
    let mut old = Container::load(root, &rec.id).map_err(|e| format!("the old container's record is gone: {e}"))?;
    // Once stop-old began, the old process may have its stop signal (a crash or an interrupt can
    // come right after it): it is given its stop timeout to exit, then rebuilt like a stopped one.
    if old.status() != Status::Stopped && rec.started(Step::StopOld) {
        // Its listening sockets, taken while it still has them, go to the rebuilt old version.
        run.held.take_from(&old, &eps);
        let timeout = rec.stop_timeout_ms.map(Duration::from_millis).unwrap_or(run.opts.stop_timeout);
        let deadline = Instant::now() + timeout;
        while old.status() != Status::Stopped && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if old.status() != Status::Stopped {
        // The old container never stopped (or outlived its stop signal): its links and volumes
        // never left it.
        if let Some(mut f) = failed {
            f.state.volumes.clear();
            f.state.net = None;
            crate::container::delete::teardown(&mut f, false);
        }
        release_new_only_volumes(root, &rec, &old.state.volumes)?;
        unpin_all(&rec);
        journal::remove(root, &rec.id);
        return Ok(());
    }
    // Every process of the old container is gone before its volumes are attached again.
    if !crate::container::delete::stop_all(&old, Duration::from_secs(10)) {
        return Err(format!("processes of {} still alive after SIGKILL", old.state.id));
    }
    // 3. The old container stopped: build it again from its bundle and give everything back.
    let restore_id = format!("{}.restore", rec.next_id);
    if let Ok(mut stale) = Container::load(root, &restore_id) {
        stale.state.volumes.clear();
        stale.state.net = None;
        crate::container::delete::teardown(&mut stale, false);
    }
    // Built beside the id's cgroup path, moved into it once the failed container is gone.
    let suffix = rec.next_id.strip_prefix(rec.id.as_str()).unwrap_or(".next");
    let restore_cgroup = rec.old_cgroup.as_ref().map(|c| c.beside(&format!("{suffix}.restore")));
    let (listen_fds, stdio) = run.held.prep(|e| hands_over(rec.network, e))?;
    let co = CreateOptions {
        id: restore_id.clone(),
        bundle: rec.old_bundle.clone(),
        systemd_cgroup: rec.systemd_cgroup.unwrap_or(run.opts.systemd_cgroup),
        upgrade: Some(UpgradePrep {
            defer_volumes: true,
            join_netns: (rec.network == NetworkMode::Keep).then(|| rec.old_netns_pin.clone()).flatten(),
            skip_net_setup: true,
            listen_fds,
            stdio: Some(stdio),
            cgroup: restore_cgroup.clone(),
        }),
        ..CreateOptions::default()
    };
    let mut restored = create(root, &co).map_err(|e| format!("re-create the old version: {e}"))?;
    if rec.network == NetworkMode::Move {
        let pin = pins_dir(root).join(format!("{}-restore-net-{}", rec.next_id, rec.restore_netns_pins.len()));
        run.rec.restore_netns_pins.push(pin.clone());
        journal::save(root, &run.rec).map_err(|e| e.to_string())?;
        crate::nsutil::pin(restored.state.pid, "net", &pin)?;
    }
    let rec = run.rec.clone();
    let registry = crate::volume::Registry::new(root);
    let mut keys = vec![];
    for m in restored.state.config.mounts().clone().unwrap_or_default() {
        let Some(v) = crate::volume::from_mount(&m).map_err(|e| e.to_string())? else { continue };
        let staging = registry.add_user(&v.key, &rec.id).or_else(|_| registry.acquire(&v, &rec.id)).map_err(|e| e.to_string())?;
        handover::attach_volume(restored.state.pid, &staging, m.destination(), &v.bind_options)?;
        keys.push(v.key);
    }
    restored.state.volumes = keys.clone();
    if rec.network == NetworkMode::Move && !rec.links.is_empty() {
        let to = crate::init::ns_path(restored.state.pid, "net");
        // Wherever the links are now: a restore container of an interrupted rollback (newest
        // first), the failed new container, or still the old namespace.
        let mut sources: Vec<&PathBuf> = rec.restore_netns_pins.iter().rev().skip(1).collect();
        sources.extend([&rec.new_netns_pin, &rec.old_netns_pin].into_iter().flatten());
        let holder = sources.into_iter().find(|src| crate::net::snapshot(src).map(|l| !l.is_empty()).unwrap_or(false));
        let src = holder.ok_or("no pinned namespace holds the container's interfaces any more")?;
        crate::net::move_links(src, &to, &rec.links).map_err(|e| e.to_string())?;
        restored.state.net = old.state.net.take().or_else(|| failed.as_ref().and_then(|f| f.state.net.clone()));
    }
    journal::maybe_crash(Step::Rollback, "moved");
    if let Some(h) = &rec.old_hostname {
        handover::set_hostname(restored.state.pid, h)?;
    }
    restored.save().map_err(|e| e.to_string())?;
    // The old record and the failed container go; the restored one takes the id and starts.
    old.state.volumes.clear();
    old.state.net = None;
    old.save().map_err(|e| e.to_string())?;
    crate::container::delete::teardown(&mut old, false);
    if let Some(mut f) = Container::load(root, &rec.next_id).ok() {
        f.state.volumes.clear();
        f.state.net = None;
        crate::container::delete::teardown(&mut f, false);
    }
    release_new_only_volumes(root, &rec, &keys)?;
    if let (Some(tmp), Some(orig)) = (&restore_cgroup, &rec.old_cgroup) {
        // What a crash may have left of the new container's cgroups (its record named one of
        // them only); the id's own path is emptied by the move below.
        for left in [&rec.new_cgroup_temp, &rec.new_cgroup].into_iter().flatten().filter(|c| !c.same_place(orig)) {
            left.remove_dirs().map_err(|e| format!("remove the failed version's cgroup: {e}"))?;
        }
        let limits = crate::container::create::with_default_device_rules(&restored.state.config.linux().clone().unwrap_or_default());
        tmp.move_to(orig, &limits).map_err(|e| format!("move the old version back into the cgroup {}: {e}", orig.path()))?;
        restored.state.cgroup = Some(orig.clone());
        restored.save().map_err(|e| e.to_string())?;
    }
    rename_container(root, &restore_id, &rec.id)?;
    let mut back = Container::load(root, &rec.id).map_err(|e| e.to_string())?;
    back.start().map_err(|e| format!("start the old version again: {e}"))?;
    unpin_all(&rec);
    derive::prune(root, &rec.id, &rec.old_bundle);
    journal::remove(root, &rec.id);
    Ok(())
}

/// Volumes only the new version declared were attached for the id at hand-over: a rollback
/// releases those the old version (`kept`) does not use. Read from the new bundle, not from the
/// failed container's record, which a crash may not have reached.
fn release_new_only_volumes(root: &Path, rec: &Record, kept: &[String]) -> Result<(), String> {
    let Ok(spec) = load_spec(&rec.new_bundle) else { return Ok(()) };
    let registry = crate::volume::Registry::new(root);
    for m in spec.mounts().clone().unwrap_or_default() {
        let Ok(Some(v)) = crate::volume::from_mount(&m) else { continue };
        if !kept.contains(&v.key) && !rec.volumes.contains(&v.key) {
            registry.release(&v.key, &rec.id).map_err(|e| format!("release volume {} of the new version: {e}", v.key))?;
        }
    }
    Ok(())
}

/// `molt upgrade --resume ID`: finish a commit that had begun, otherwise roll back.
pub fn resume(root: &Path, id: &str, systemd_cgroup: bool) -> Result<&'static str, UpgradeError> {
    crate::container::validate_id(id)?;
    let _lock = journal::try_lock(root, id)?.ok_or_else(|| UpgradeError::Precondition {
        id: id.into(),
        reason: "another molt is upgrading this container right now".into(),
    })?;
    resume_locked(root, id, systemd_cgroup)
}

fn resume_locked(root: &Path, id: &str, systemd_cgroup: bool) -> Result<&'static str, UpgradeError> {
    let rec = journal::load(root, id)?.ok_or_else(|| UpgradeError::Precondition { id: id.into(), reason: "no upgrade in progress".into() })?;
    if rec.started(Step::Commit) {
        commit(root, &rec).map_err(|reason| UpgradeError::StepFailed { id: id.into(), step: "commit", reason, rollback: String::new(), rolled_back: false, steps: vec![] })?;
        crate::image::store::prune_quietly(root);
        return Ok("committed");
    }
    let opts = Options {
        id: id.into(),
        new_bundle: rec.new_bundle.clone(),
        network: rec.network,
        stop_signal: libc::SIGTERM,
        stop_timeout: rec.stop_timeout_ms.map(Duration::from_millis).unwrap_or(Duration::from_secs(10)),
        health: Health::None,
        health_timeout: Duration::from_secs(10),
        rollback: true,
        dry_run: false,
        // Journals written before the flag was recorded fall back to this command's.
        systemd_cgroup: rec.systemd_cgroup.unwrap_or(systemd_cgroup),
        force: None,
        derive: false,
        progress: None,
        image: None,
    };
    let mut run = Run { root, opts: &opts, rec, steps: vec![], stopped_at: None, started_at: None, held: Default::default() };
    rollback(&mut run).map_err(|reason| UpgradeError::StepFailed { id: id.into(), step: "rollback", reason, rollback: String::new(), rolled_back: false, steps: vec![] })?;
    crate::image::store::prune_quietly(root);
    Ok("rolled back")
}

/// `delete --force` when the journal cannot be settled: remove every container and pin the
/// upgrade made, so that deleting ID afterwards leaves nothing behind.
pub fn abandon(root: &Path, id: &str) -> Result<(), UpgradeError> {
    let Some(rec) = journal::load(root, id)? else { return Ok(()) };
    let mut extra = vec![rec.next_id.clone(), rec.prev_id.clone(), format!("{}.restore", rec.next_id)];
    extra.retain(|x| x != id);
    for other in extra {
        if let Ok(mut c) = Container::load(root, &other) {
            // Volumes are registered under ID whichever container holds them now; the veth dies
            // with the namespace it is in once that is unpinned.
            let registry = crate::volume::Registry::new(root);
            for key in std::mem::take(&mut c.state.volumes) {
                registry.release(&key, id).map_err(|e| UpgradeError::Precondition { id: id.into(), reason: format!("release volume {key}: {e}") })?;
            }
            c.state.net = None;
            crate::container::delete::teardown(&mut c, false);
        }
    }
    // The cgroups the new and the restored container were built in, if a crash left them there.
    let suffix = rec.next_id.strip_prefix(rec.id.as_str()).unwrap_or(".next");
    let restore = rec.old_cgroup.as_ref().map(|c| c.beside(&format!("{suffix}.restore")));
    for left in [&rec.new_cgroup_temp, &restore].into_iter().flatten() {
        let _ = left.remove_dirs();
    }
    unpin_all(&rec);
    journal::remove(root, id);
    Ok(())
}

/// How long a command waits for a running upgrade of its container (MOLT_UPGRADE_WAIT overrides,
/// in seconds): longer than a stop timeout and a health gate together take by default.
fn upgrade_wait() -> Duration {
    let secs = std::env::var("MOLT_UPGRADE_WAIT").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    Duration::from_secs(secs)
}

/// What a command may do about an upgrade a crash interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// A command that acts on the container (start, kill, delete, exec, ...): finish or roll back
    /// first, so it acts on one whole container.
    Recover,
    /// A query (state, ps, events, list): it must not change anything; it reports the
    /// interrupted upgrade and leaves it to a command that acts.
    Report,
}

/// Set to "interrupted" in `molt state`'s annotations while an interrupted upgrade is unsettled.
pub const INTERRUPTED_ANNOTATION: &str = "io.molt.upgrade";

/// The ids whose upgrade a crash interrupted, from the journals in `root` (for `molt list`).
pub fn interrupted_ids(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else { return vec![] };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.strip_prefix(".upgrade-").and_then(|r| r.strip_suffix(".json")).map(str::to_string)
        })
        .filter(|id| interrupted(root, id))
        .collect();
    ids.sort();
    ids
}

/// Whether an upgrade of `id` was interrupted: a journal nobody is working on.
pub fn interrupted(root: &Path, id: &str) -> bool {
    journal::path(root, id).exists() && journal::holder(root, id).is_none()
}

/// The note a query prints about an interrupted upgrade.
pub fn interrupted_note(id: &str) -> String {
    format!(
        "container {id}: an upgrade was interrupted and is not settled; `molt upgrade --resume {id}` (or any command that acts \
         on the container) finishes or rolls it back"
    )
}

/// Called by every command that names a container. A running upgrade is waited for, so no
/// command sees or acts on a half-moved container (an engine that saw the old init exit would
/// delete right then); an upgrade interrupted by a crash is finished or rolled back first when
/// `mode` is Recover, and only reported (stderr) when it is Report.
pub fn settle(root: &Path, id: &str, mode: Settle) -> Result<(), UpgradeError> {
    if crate::container::validate_id(id).is_err() {
        return Ok(());
    }
    let deadline = Instant::now() + upgrade_wait();
    loop {
        if !journal::path(root, id).exists() && !journal::lock_path(root, id).exists() {
            return Ok(());
        }
        if mode == Settle::Report && journal::holder(root, id).is_none() {
            if journal::path(root, id).exists() {
                crate::logging::warn(&interrupted_note(id));
            }
            return Ok(());
        }
        if mode == Settle::Recover {
            if let Some(_lock) = journal::try_lock(root, id)? {
                if !journal::path(root, id).exists() {
                    return Ok(());
                }
                let outcome = resume_locked(root, id, false)?;
                crate::logging::warn(&format!("container {id}: an interrupted upgrade was found and {outcome}"));
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            let by = journal::holder(root, id).map(|p| format!(" (molt pid {p})")).unwrap_or_default();
            return Err(UpgradeError::Precondition {
                id: id.into(),
                reason: format!("an upgrade{by} is still in progress after {}s; try again when it has finished", upgrade_wait().as_secs()),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_from_the_user_never_panic() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        for bad in ["99999999999999999999999", "1e300", "-1s", "NaN", "inf", "1e400ms", "5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(seconds(f64::NAN).is_none() && seconds(f64::INFINITY).is_none() && seconds(-0.5).is_none());
    }
}
