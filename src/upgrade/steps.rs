//! The upgrade as its steps: one table, each step named, its forward function and its undo beside
//! it. The forward run journals each step before and after it (`Run::step`); the rollback
//! (rollback.rs) runs the undos of the steps the journal shows started, in reverse. The kernel
//! pieces are in handover.rs; the parts the rollback shares (create held, attach volumes, move
//! the links, rename) are parameterised here, so both directions run the same code.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::journal::{self, Entry, Record, Step};
use super::rollback::{give_id_back, rebuild_old, remove_new, Back};
use super::{derive, handover, health, NetworkMode, Options, StepEvent, StepReport};
use super::interrupt::check_interrupt;
use crate::container::create::{create, load_spec, CreateOptions, UpgradePrep};
use crate::container::{Container, Status};

/// A step's forward function: does the step and returns its note for the report.
pub(super) type Forward = fn(&mut Run) -> Result<String, String>;
/// A step's undo, run by the rollback.
pub(super) type Undo = fn(&mut Back) -> Result<(), String>;

/// One step of the upgrade: what it does, how, and what undoes it.
pub struct StepDef {
    pub step: Step,
    /// What the step does, as the dry run lists it.
    pub what: &'static str,
    /// Does the step and returns its note for the report.
    pub(super) forward: Forward,
    /// Run by a rollback when the journal shows the step started (or `always`); None when the
    /// step leaves nothing an undo must take back, or another step's undo does it (named).
    pub(super) undo: Option<Undo>,
    /// The undo is idempotent and runs whatever the journal says (see the step).
    pub(super) always: bool,
}

/// The upgrade, in the order it runs; the rollback reads it bottom up.
pub const STEPS: &[StepDef] = &[
    StepDef {
        step: Step::CreateNew,
        what: "create the new container from the new bundle, held before its process starts",
        forward: create_new,
        // The new container goes, with what only it held.
        undo: Some(remove_new),
        always: false,
    },
    StepDef {
        step: Step::StopOld,
        what: "stop the old container (stop signal, timeout, then SIGKILL)",
        forward: stop_old,
        // The new version stops; the old one, once stopped, is rebuilt by the same functions that
        // built the new one (create held, attach volumes, move the links) and gets back what
        // hand-over-volumes and move-network gave away. Also when stop-old never started: an old
        // version that stopped on its own is rebuilt too.
        undo: Some(rebuild_old),
        always: true,
    },
    StepDef {
        step: Step::HandOverVolumes,
        what: "flush the volumes and mount their host attachments into the new container",
        forward: hand_over_volumes,
        // The volumes stay attached on the host: stop-old's undo mounts them into the rebuilt
        // old version, whichever container holds them now.
        undo: None,
        always: false,
    },
    StepDef {
        step: Step::MoveNetwork,
        what: "move the network identity (veth, addresses, routes, MAC) and the hostname",
        forward: move_network,
        // The links stay in a pinned namespace: stop-old's undo moves them into the rebuilt old
        // version from wherever they are.
        undo: None,
        always: false,
    },
    StepDef {
        step: Step::TransferId,
        what: "give the container id to the new container; keep the old one aside",
        forward: take_id,
        // Idempotent; it also corrects a record a crash left half renamed in an earlier rollback.
        undo: Some(give_id_back),
        always: true,
    },
    StepDef {
        step: Step::StartNew,
        what: "start the new application",
        forward: start_new,
        // The new application stops in stop-old's undo, started or only created: either way its
        // init holds the sockets the old version gets back.
        undo: None,
        always: false,
    },
    StepDef { step: Step::HealthGate, what: "run the health gate", forward: health::health_gate, undo: None, always: false },
    StepDef {
        step: Step::Commit,
        what: "remove the old container (or roll back on any failure)",
        forward: |r| commit(r.root, &r.rec).map(|_| "old container removed".to_string()),
        // A commit that began is finished (recovery.rs), never undone.
        undo: None,
        always: false,
    },
];

pub(super) fn pins_dir(root: &Path) -> PathBuf {
    root.join(".pins")
}

pub(super) struct Run<'a> {
    pub(super) root: &'a Path,
    pub(super) opts: &'a Options,
    pub(super) rec: Record,
    pub(super) steps: Vec<StepReport>,
    pub(super) stopped_at: Option<Instant>,
    pub(super) started_at: Option<Instant>,
    pub(super) held: handover::Held,
}

impl Run<'_> {
    /// Every step of the table in order; the first failure ends the run (the caller rolls back).
    pub(super) fn forward(&mut self) -> Result<(), (Step, String)> {
        for s in STEPS {
            self.step(s)?;
        }
        Ok(())
    }

    /// Journal the start, run, journal the end: the shape every step has.
    fn step(&mut self, def: &StepDef) -> Result<(), (Step, String)> {
        let step = def.step;
        // An interrupt before a step rolls back; one during the commit lets it finish.
        check_interrupt().map_err(|e| (step, e))?;
        self.tell(step, "start", None, None);
        crate::logging::debug(&format!("upgrade {}: step {} starts", self.opts.id, step.name()));
        self.rec.entries.push(Entry { step, done: false, at: crate::logging::now_rfc3339(), millis: None, note: None });
        journal::save(self.root, &self.rec).map_err(|e| (step, e.to_string()))?;
        journal::maybe_crash(step, "before");
        let t = Instant::now();
        let note = match (def.forward)(self) {
            Ok(note) => note,
            Err(e) => {
                self.tell(step, "failed", Some(t.elapsed().as_millis()), Some(&e));
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
        self.tell(step, "done", Some(millis), Some(&note));
        self.steps.push(StepReport { step: step.name(), millis, note });
        Ok(())
    }

    fn tell(&self, step: Step, phase: &'static str, millis: Option<u128>, note: Option<&str>) {
        if let Some(p) = self.opts.progress {
            p(&StepEvent { id: &self.opts.id, step: step.name(), phase, millis, note });
        }
    }

    pub(super) fn load(&self, id: &str) -> Result<Container, String> {
        Container::load(self.root, id).map_err(|e| e.to_string())
    }

    /// Pin the network namespace of `pid` at `pin`, which the caller has just recorded: the
    /// journal names a pin before it exists, so a crash cannot leave one nobody removes.
    pub(super) fn pin_netns(&self, pid: i32, pin: &Path) -> Result<(), String> {
        journal::save(self.root, &self.rec).map_err(|e| e.to_string())?;
        crate::namespaces::pin(pid, "net", pin).map(|_| ())
    }

    /// A container created from `bundle` as `id`, held before its process starts, with the
    /// sockets and stdio molt holds; its volumes come by `attach_volumes` and its network by
    /// joining `join_netns` or by `move_links`. Create-new builds the new version with it, the
    /// rollback the old one again.
    pub(super) fn create_held(&mut self, id: &str, bundle: &Path, join_netns: Option<PathBuf>, cgroup: Option<crate::cgroups::Cgroup>, systemd_cgroup: bool) -> Result<Container, String> {
        let mode = self.rec.network;
        let prep = self.held.prep(|e| hands_over(mode, e))?;
        let co = CreateOptions {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            systemd_cgroup,
            // A stopped old version left no namespace to join or links to move: the new one is
            // given the container's address as `create` gives it (stopped.rs).
            upgrade: Some(UpgradePrep { defer_volumes: true, join_netns, skip_net_setup: !self.rec.old_stopped, listen_fds: prep.listen.clone(), stdio: Some(prep.stdio), cgroup }),
            ..CreateOptions::default()
        };
        create(self.root, &co).map_err(|e| e.to_string())
    }
}

/// Step 1. Also pins the old network namespace and records what must move.
fn create_new(r: &mut Run) -> Result<String, String> {
    let old = r.load(&r.rec.id)?;
    if r.rec.old_stopped {
        return super::stopped::create_new(r, &old);
    }
    std::fs::create_dir_all(pins_dir(r.root)).map_err(|e| format!("mkdir {}: {e}", pins_dir(r.root).display()))?;
    let old_pin = pins_dir(r.root).join(format!("{}-old-net", r.rec.next_id));
    r.rec.old_netns_pin = Some(old_pin.clone());
    r.pin_netns(old.state.pid, &old_pin)?;
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
    let (next_id, new_bundle) = (r.rec.next_id.clone(), r.rec.new_bundle.clone());
    let join = (mode == NetworkMode::Keep).then(|| old_pin.clone());
    let new = r.create_held(&next_id, &new_bundle, join, r.rec.new_cgroup_temp.clone(), r.opts.systemd_cgroup)?;
    if mode == NetworkMode::Move {
        // A veth dies with the namespace holding it: keep the new one alive whatever its app does.
        let new_pin = pins_dir(r.root).join(format!("{next_id}-new-net"));
        r.rec.new_netns_pin = Some(new_pin.clone());
        r.pin_netns(new.state.pid, &new_pin)?;
    }
    Ok(format!("{next_id} created from {}, held before start{}", new_bundle.display(), r.held.describe()))
}

/// The `io.molt.listen` endpoints of these configs, each once.
pub(super) fn listen_endpoints(specs: &[&oci_spec::runtime::Spec]) -> Result<Vec<crate::listen::Endpoint>, String> {
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
pub(super) fn hands_over(mode: NetworkMode, ep: &crate::listen::Endpoint) -> bool {
    mode == NetworkMode::Keep || matches!(ep.addr, crate::listen::Addr::Unix(_))
}

/// Step 2.
fn stop_old(r: &mut Run) -> Result<String, String> {
    let old = r.load(&r.rec.id)?;
    let note = stop_container(&old, r.opts.stop_signal, r.opts.stop_timeout)?;
    r.stopped_at = Some(Instant::now());
    Ok(note)
}

pub fn stop_container(c: &Container, signal: i32, timeout: Duration) -> Result<String, String> {
    if c.status() == Status::Stopped {
        return Ok("already stopped".into());
    }
    // A pidfd taken before the signal wakes the wait at the exit itself: the old version's exit
    // is inside the window where nothing answers, so no polling interval is added to it.
    let exit = crate::listen::Pidfd::open(c.state.pid).ok();
    let _ = c.kill(signal, false);
    journal::maybe_crash(Step::StopOld, "signalled");
    let deadline = Instant::now() + timeout;
    while c.status() != Status::Stopped {
        check_interrupt()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // Slices of at most 50 ms, so an interrupt is seen; without a pidfd, a 5 ms poll.
        match &exit {
            Some(fd) => fd.wait_exit(left.min(Duration::from_millis(50))),
            None => std::thread::sleep(left.min(Duration::from_millis(5))),
        }
    }
    let graceful = c.status() == Status::Stopped;
    // Every process of the container must be gone before its volume changes hands.
    if !crate::container::delete::stop_all(c, Duration::from_secs(10)) {
        return Err(format!("processes of {} still alive after SIGKILL", c.state.id));
    }
    Ok(if graceful { format!("stopped by signal {signal}") } else { format!("killed after {}ms timeout", timeout.as_millis()) })
}

/// Step 3.
fn hand_over_volumes(r: &mut Run) -> Result<String, String> {
    let mut old = r.load(&r.rec.id)?;
    let mut new = r.load(&r.rec.next_id)?;
    let registry = crate::volume::Registry::new(r.root);
    let keys = attach_volumes(&new, |v| {
        if old.state.volumes.contains(&v.key) {
            registry.flush(&v.key).map_err(|e| e.to_string())?;
            let holders = registry.foreign_holders(&v.key, &[]).map_err(|e| e.to_string())?;
            if !holders.is_empty() {
                return Err(format!("volume {} is still held open by pids {holders:?}; it will not change hands", v.key));
            }
            Ok(registry.staging_path(&v.key))
        } else {
            // A volume only the new version declares: attached now, under the same container id.
            registry.acquire(v, &r.rec.id).map_err(|e| e.to_string())
        }
    })?;
    // Volumes the new version no longer declares stay with the old record until commit.
    old.state.volumes.retain(|k| !keys.contains(k));
    new.state.volumes = keys.clone();
    new.save().map_err(|e| e.to_string())?;
    old.save().map_err(|e| e.to_string())?;
    Ok(if keys.is_empty() { "no volumes".into() } else { format!("handed over {}", keys.join(", ")) })
}

/// Mount every volume `to`'s config declares into it (created, not started), from the host
/// attachment `staging` gives for it; the keys attached. Hand-over and the rollback differ only
/// in where that attachment comes from.
pub(super) fn attach_volumes(to: &Container, mut staging: impl FnMut(&crate::volume::VolumeSpec) -> Result<PathBuf, String>) -> Result<Vec<String>, String> {
    let mut keys = vec![];
    for m in to.state.config.mounts().clone().unwrap_or_default() {
        let Some(v) = crate::volume::from_mount(&m).map_err(|e| e.to_string())? else { continue };
        let path = staging(&v)?;
        handover::attach_volume(to.state.pid, &path, m.destination(), &v.bind_options)?;
        keys.push(v.key);
    }
    Ok(keys)
}

/// Step 4.
fn move_network(r: &mut Run) -> Result<String, String> {
    if r.rec.old_stopped {
        return Ok(super::stopped::NETWORK_NOTE.into());
    }
    let mut old = r.load(&r.rec.id)?;
    let mut new = r.load(&r.rec.next_id)?;
    let mut note = String::new();
    if r.opts.network == NetworkMode::Move {
        let from = r.rec.old_netns_pin.clone().ok_or("old network namespace was not pinned")?;
        move_links_into(&r.rec, &from, &new)?;
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
    Ok(note)
}

/// The recorded links from the namespace pinned at `from` into `to`'s: move-network and the
/// rollback, each from where the links are then.
pub(super) fn move_links_into(rec: &Record, from: &Path, to: &Container) -> Result<(), String> {
    crate::net::move_links(from, &crate::namespaces::path(to.state.pid, "net"), &rec.links).map_err(|e| e.to_string())
}

/// Step 5: the id names the new container (its cgroup path follows in start-new).
fn take_id(r: &mut Run) -> Result<String, String> {
    transfer_id(r.root, &r.rec, false)?;
    Ok(format!("{} is now the new container", r.rec.id))
}

/// Step 6, second half: the new container, now the id, takes the id's cgroup path. Done after
/// its start, outside the window where nothing answers: on cgroup v2 a move migrates the
/// processes, and the first migration waits for an RCU grace period (10-20 ms). The old
/// container's processes are all gone (stop-old), so when both versions use the same path its
/// cgroup is removed first; its record forgets it before, so no later teardown of the old record
/// can touch the new container's cgroup. The rollback finds the new container in either place.
fn move_cgroup_in(root: &Path, rec: &Record) -> Result<String, String> {
    let (Some(temp), Some(fin)) = (&rec.new_cgroup_temp, &rec.new_cgroup) else { return Ok(String::new()) };
    let mut old = Container::load(root, &rec.prev_id).map_err(|e| e.to_string())?;
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
    let mut new = Container::load(root, &rec.id).map_err(|e| e.to_string())?;
    let limits = crate::container::create::with_default_device_rules(&new.state.config.linux().clone().unwrap_or_default());
    temp.move_to(&target, &limits).map_err(|e| format!("move the new container into the cgroup {}: {e}", fin.path()))?;
    new.state.cgroup = Some(target);
    new.save().map_err(|e| e.to_string())?;
    Ok(format!("; in cgroup {}", fin.path()))
}

/// Step 5 (and its undo with `back`): the id names the new container; the old is kept aside.
pub(super) fn transfer_id(root: &Path, rec: &Record, back: bool) -> Result<(), String> {
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

pub(super) fn rename_container(root: &Path, from: &str, to: &str) -> Result<(), String> {
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

/// Step 6: the new application starts, then the container takes the id's cgroup path.
fn start_new(r: &mut Run) -> Result<String, String> {
    let mut new = r.load(&r.rec.id)?;
    new.start().map_err(|e| e.to_string())?;
    r.started_at = Some(Instant::now());
    let down = r.stopped_at.map(|s| s.elapsed().as_millis());
    let moved = move_cgroup_in(r.root, &r.rec)?;
    Ok(match down { Some(ms) => format!("started pid {}; unavailable {ms}ms{moved}", new.state.pid), None => format!("started pid {}{moved}", new.state.pid) })
}

/// Step 7: the old record goes, with whatever it still held that the new one does not use.
pub(super) fn commit(root: &Path, rec: &Record) -> Result<(), String> {
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

pub(super) fn unpin_all(rec: &Record) {
    for p in [&rec.old_netns_pin, &rec.new_netns_pin].into_iter().flatten().chain(&rec.restore_netns_pins) {
        crate::namespaces::unpin(p);
    }
}
