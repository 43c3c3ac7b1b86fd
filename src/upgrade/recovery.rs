//! After a crash: `--resume` and every command that acts on the container finish a commit that had
//! begun or roll back; queries only report the interrupted upgrade; `delete --force` abandons one
//! that cannot be settled.

use std::path::Path;
use std::time::{Duration, Instant};

use super::journal::{self, Step};
use super::rollback::rollback;
use super::steps::{commit, unpin_all, Run};
use super::{Health, Options, UpgradeError};
use crate::container::Container;

/// `molt upgrade --resume ID`: finish a commit that had begun, otherwise roll back.
pub fn resume(root: &Path, id: &str, systemd_cgroup: bool) -> Result<&'static str, UpgradeError> {
    crate::container::validate_id(id)?;
    let _lock = journal::try_lock(root, id)?.ok_or_else(|| UpgradeError::Precondition {
        id: id.into(),
        reason: "another molt is upgrading this container right now".into(),
    })?;
    resume_locked(root, id, systemd_cgroup)
}

pub(super) fn resume_locked(root: &Path, id: &str, systemd_cgroup: bool) -> Result<&'static str, UpgradeError> {
    let rec = journal::load(root, id)?.ok_or_else(|| UpgradeError::Precondition { id: id.into(), reason: "no upgrade in progress".into() })?;
    // The molt that was killed may have been inside a create (create-new, the rollback's rebuild)
    // or a delete (commit, the undo of create-new): a staged directory no record names is all
    // that is left of it, removed here rather than by the next create or delete of any id.
    crate::container::sweep_staged(root);
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
        allow_stopped: rec.old_stopped,
        hold_old_image: None,
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
