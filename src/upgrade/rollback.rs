//! The rollback: the undos of the steps table (steps.rs), bottom up, for the steps the journal
//! shows started, so the old version runs again under the id with the same volumes, network
//! identity and cgroup path. Works from any point of the journal (after a failure, or with
//! --resume after a crash, also one inside a rollback). If it cannot, it says so (Err) and keeps
//! the journal.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::journal::{self, Entry, Record, Step};
use super::steps::{attach_volumes, hands_over, listen_endpoints, move_links_into, pins_dir, rename_container, transfer_id, unpin_all, Run, STEPS};
use super::{derive, handover, NetworkMode};
use crate::container::create::load_spec;
use crate::container::delete::stop_all;
use crate::container::{Container, Status};

/// What the undos share while they run.
pub(super) struct Back<'r, 'a> {
    pub(super) run: &'r mut Run<'a>,
    /// The old version as rebuilt by stop-old's undo, under `{next}.restore` until it takes the
    /// id; None when the old version never stopped.
    restored: Option<Restored>,
    /// The volumes the old version keeps: a volume only the new version declared is released.
    pub(super) kept: Vec<String>,
}

struct Restored {
    id: String,
    container: Container,
    /// Beside the id's cgroup path, moved into it once the failed version is gone.
    cgroup: Option<crate::cgroups::Cgroup>,
}

pub(super) fn rollback(run: &mut Run) -> Result<(), String> {
    run.rec.entries.push(Entry { step: Step::Rollback, done: false, at: crate::logging::now_rfc3339(), millis: None, note: None });
    journal::save(run.root, &run.rec).map_err(|e| e.to_string())?;
    let mut back = Back { run, restored: None, kept: vec![] };
    for def in STEPS.iter().rev() {
        if let Some(undo) = def.undo {
            if def.always || back.run.rec.started(def.step) {
                crate::logging::debug(&format!("upgrade {}: undo {}", back.run.rec.id, def.step.name()));
                undo(&mut back)?;
            }
        }
    }
    back.finish()
}

/// Undo of transfer-id: the id back to the old record, the failed new container back to its
/// own name.
pub(super) fn give_id_back(b: &mut Back) -> Result<(), String> {
    transfer_id(b.run.root, &b.run.rec, true)
}

/// Undo of stop-old. The failed new version stops first (its netns stays pinned so moved links
/// survive); what it holds of the hand-over (after a crash molt holds nothing) is taken first.
/// Then, if the old version stopped, it is built again from its bundle and given back its
/// volumes, links and hostname; its old record goes.
pub(super) fn rebuild_old(b: &mut Back) -> Result<(), String> {
    if b.run.rec.old_stopped {
        return super::stopped::leave_stopped(b);
    }
    let (root, rec) = (b.run.root, b.run.rec.clone());
    let failed = Container::load(root, &rec.next_id).ok();
    let old_spec = load_spec(&rec.old_bundle).ok();
    let mut eps = old_spec.as_ref().map(|s| listen_endpoints(&[s])).transpose()?.unwrap_or_default();
    eps.retain(|e| hands_over(rec.network, e));
    if let Some(f) = &failed {
        b.run.held.take_from(f, &eps);
        let _ = stop_all(f, Duration::from_secs(10));
    }
    let mut old = Container::load(root, &rec.id).map_err(|e| format!("the old container's record is gone: {e}"))?;
    // Once stop-old began, the old process may have its stop signal (a crash or an interrupt can
    // come right after it): it is given its stop timeout to exit, then rebuilt like a stopped one.
    if old.status() != Status::Stopped && rec.started(Step::StopOld) {
        // Its listening sockets, taken while it still has them, go to the rebuilt old version.
        b.run.held.take_from(&old, &eps);
        let timeout = rec.stop_timeout_ms.map(Duration::from_millis).unwrap_or(b.run.opts.stop_timeout);
        let deadline = Instant::now() + timeout;
        while old.status() != Status::Stopped && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if old.status() != Status::Stopped {
        // The old container never stopped (or outlived its stop signal): its links and volumes
        // never left it.
        b.kept = old.state.volumes.clone();
        return Ok(());
    }
    // Every process of the old container is gone before its volumes are attached again.
    if !stop_all(&old, Duration::from_secs(10)) {
        return Err(format!("processes of {} still alive after SIGKILL", old.state.id));
    }
    let mut restored = recreate_old(b)?;
    let failed_net = failed.and_then(|f| f.state.net);
    give_back(b, &mut restored.container, old.state.net.take().or(failed_net))?;
    // The old record goes; the rebuilt one takes the id in `finish`.
    discard(&mut old)?;
    b.kept = restored.container.state.volumes.clone();
    b.restored = Some(restored);
    Ok(())
}

/// The old version created again from its bundle, held before start, as create-new made the new
/// one: beside the id's cgroup path, with the sockets and stdio molt holds, in the old network
/// namespace (`keep`) or a new one pinned for the links to come (`move`).
fn recreate_old(b: &mut Back) -> Result<Restored, String> {
    let (root, rec) = (b.run.root, b.run.rec.clone());
    let id = format!("{}.restore", rec.next_id);
    if let Ok(mut stale) = Container::load(root, &id) {
        discard(&mut stale)?;
    }
    let suffix = rec.next_id.strip_prefix(rec.id.as_str()).unwrap_or(".next");
    let cgroup = rec.old_cgroup.as_ref().map(|c| c.beside(&format!("{suffix}.restore")));
    let join = (rec.network == NetworkMode::Keep).then(|| rec.old_netns_pin.clone()).flatten();
    let systemd_cgroup = rec.systemd_cgroup.unwrap_or(b.run.opts.systemd_cgroup);
    let container = b.run.create_held(&id, &rec.old_bundle, join, cgroup.clone(), systemd_cgroup).map_err(|e| format!("re-create the old version: {e}"))?;
    if rec.network == NetworkMode::Move {
        let pin = pins_dir(root).join(format!("{}-restore-net-{}", rec.next_id, rec.restore_netns_pins.len()));
        b.run.rec.restore_netns_pins.push(pin.clone());
        b.run.pin_netns(container.state.pid, &pin)?;
    }
    Ok(Restored { id, container, cgroup })
}

/// Hand-over and move-network in the other direction: the rebuilt old version gets its volumes
/// (attached for the id whatever happened to them), its links from wherever they are now, and
/// its hostname.
fn give_back(b: &mut Back, restored: &mut Container, net: Option<crate::net::Attachment>) -> Result<(), String> {
    let (root, rec) = (b.run.root, &b.run.rec);
    let registry = crate::volume::Registry::new(root);
    let keys = attach_volumes(restored, |v| registry.add_user(&v.key, &rec.id).or_else(|_| registry.acquire(v, &rec.id)).map_err(|e| e.to_string()))?;
    restored.state.volumes = keys;
    if rec.network == NetworkMode::Move && !rec.links.is_empty() {
        // Wherever the links are now: a restore container of an interrupted rollback (newest
        // first), the failed new container, or still the old namespace.
        let mut sources: Vec<&PathBuf> = rec.restore_netns_pins.iter().rev().skip(1).collect();
        sources.extend([&rec.new_netns_pin, &rec.old_netns_pin].into_iter().flatten());
        let holder = sources.into_iter().find(|src| crate::net::snapshot(src).map(|l| !l.is_empty()).unwrap_or(false));
        let src = holder.ok_or("no pinned namespace holds the container's interfaces any more")?;
        move_links_into(rec, src, restored)?;
        restored.state.net = net;
    }
    journal::maybe_crash(Step::Rollback, "moved");
    if let Some(h) = &rec.old_hostname {
        handover::set_hostname(restored.state.pid, h)?;
    }
    restored.save().map_err(|e| e.to_string())
}

/// Undo of create-new: the failed new container goes. Its volumes and links belong to the id
/// (the rebuilt old version has them, or the old one never gave them away).
pub(super) fn remove_new(b: &mut Back) -> Result<(), String> {
    match Container::load(b.run.root, &b.run.rec.next_id) {
        Ok(mut failed) => discard(&mut failed),
        Err(_) => Ok(()),
    }
}

impl Back<'_, '_> {
    /// After the undos: volumes only the new version used are released; the rebuilt old version
    /// takes the id's cgroup path and the id and starts; the pins and the journal go.
    fn finish(self) -> Result<(), String> {
        let (root, rec) = (self.run.root, &self.run.rec);
        release_new_only_volumes(root, rec, &self.kept)?;
        if let Some(Restored { id, mut container, cgroup }) = self.restored {
            if let (Some(tmp), Some(orig)) = (&cgroup, &rec.old_cgroup) {
                // What a crash may have left of the new container's cgroups (its record named one
                // of them only); the id's own path is emptied by the move below.
                for left in [&rec.new_cgroup_temp, &rec.new_cgroup].into_iter().flatten().filter(|c| !c.same_place(orig)) {
                    left.remove_dirs().map_err(|e| format!("remove the failed version's cgroup: {e}"))?;
                }
                let limits = crate::container::create::with_default_device_rules(&container.state.config.linux().clone().unwrap_or_default());
                tmp.move_to(orig, &limits).map_err(|e| format!("move the old version back into the cgroup {}: {e}", orig.path()))?;
                container.state.cgroup = Some(orig.clone());
                container.save().map_err(|e| e.to_string())?;
            }
            rename_container(root, &id, &rec.id)?;
            let mut back = Container::load(root, &rec.id).map_err(|e| e.to_string())?;
            back.start().map_err(|e| format!("start the old version again: {e}"))?;
            unpin_all(rec);
            derive::prune(root, &rec.id, &rec.old_bundle);
        } else {
            unpin_all(rec);
        }
        journal::remove(root, &rec.id);
        Ok(())
    }
}

/// Tear down a container record whose volumes and network identity are not its own (handed
/// over, given back, or never given): its record forgets them first, so neither this teardown
/// nor a later one after a crash releases or removes what another container uses.
fn discard(c: &mut Container) -> Result<(), String> {
    c.state.volumes.clear();
    c.state.net = None;
    c.save().map_err(|e| e.to_string())?;
    crate::container::delete::teardown(c, false);
    Ok(())
}

/// Volumes only the new version declared were attached for the id at hand-over: a rollback
/// releases those the old version (`kept`) does not use. Read from the new bundle, not from the
/// failed container's record, which a crash may not have reached.
fn release_new_only_volumes(root: &std::path::Path, rec: &Record, kept: &[String]) -> Result<(), String> {
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
