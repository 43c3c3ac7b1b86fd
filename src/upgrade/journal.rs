//! The upgrade's journal: one JSON file per upgrade in progress, rewritten (fsync, rename, fsync of
//! the directory) before and after every step, so that after a crash the next molt knows exactly
//! what was done and can finish or roll back.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::UpgradeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    CreateNew,
    StopOld,
    HandOverVolumes,
    MoveNetwork,
    TransferId,
    StartNew,
    HealthGate,
    Commit,
    Rollback,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::CreateNew => "create-new",
            Step::StopOld => "stop-old",
            Step::HandOverVolumes => "hand-over-volumes",
            Step::MoveNetwork => "move-network",
            Step::TransferId => "transfer-id",
            Step::StartNew => "start-new",
            Step::HealthGate => "health-gate",
            Step::Commit => "commit",
            Step::Rollback => "rollback",
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        ALL.iter().copied().find(|st| st.name() == s)
    }
}

pub const ALL: &[Step] = &[
    Step::CreateNew,
    Step::StopOld,
    Step::HandOverVolumes,
    Step::MoveNetwork,
    Step::TransferId,
    Step::StartNew,
    Step::HealthGate,
    Step::Commit,
    Step::Rollback,
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub step: Step,
    pub done: bool,
    pub at: String,
    #[serde(default)]
    pub millis: Option<u128>,
    #[serde(default)]
    pub note: Option<String>,
}

/// What the upgrade needs to finish or undo itself without the process that started it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    /// Where the new container lives until it takes the id.
    pub next_id: String,
    /// Where the old container is kept once it gave up the id.
    pub prev_id: String,
    pub old_bundle: PathBuf,
    pub new_bundle: PathBuf,
    pub network: super::NetworkMode,
    pub old_hostname: Option<String>,
    /// The old container's network namespace, pinned by a bind mount until the upgrade ends.
    pub old_netns_pin: Option<PathBuf>,
    /// The new container's, pinned so a crash of the new app cannot destroy a moved veth.
    pub new_netns_pin: Option<PathBuf>,
    /// One per rollback attempt: the re-created old container's namespace, pinned as well so a
    /// crash in the middle of a rollback cannot destroy the links it already received.
    #[serde(default)]
    pub restore_netns_pins: Vec<PathBuf>,
    pub links: Vec<crate::net::LinkIdentity>,
    pub volumes: Vec<String>,
    /// The upgrade's --systemd-cgroup: a rollback by `--resume` or by another command builds the
    /// old version again with the driver it was made with, whatever flags that command has.
    #[serde(default)]
    pub systemd_cgroup: Option<bool>,
    /// The upgrade's --stop-timeout: how long a rollback waits for an old process that got its
    /// stop signal to exit before taking it for one that outlived it.
    #[serde(default)]
    pub stop_timeout_ms: Option<u64>,
    /// The id's cgroup as the old container had it, before the upgrade.
    #[serde(default)]
    pub old_cgroup: Option<crate::cgroups::Cgroup>,
    /// The id's cgroup for the new version (its config's linux.cgroupsPath, honoured as given)...
    #[serde(default)]
    pub new_cgroup: Option<crate::cgroups::Cgroup>,
    /// ...and the one beside it where the new container waits until transfer-id moves it in.
    #[serde(default)]
    pub new_cgroup_temp: Option<crate::cgroups::Cgroup>,
    pub entries: Vec<Entry>,
}

impl Record {
    pub fn started(&self, step: Step) -> bool {
        self.entries.iter().any(|e| e.step == step)
    }

    pub fn finished(&self, step: Step) -> bool {
        self.entries.iter().any(|e| e.step == step && e.done)
    }
}

pub fn path(root: &Path, id: &str) -> PathBuf {
    // A leading dot cannot start a container id, so this never collides with a state directory.
    root.join(format!(".upgrade-{id}.json"))
}

pub fn load(root: &Path, id: &str) -> Result<Option<Record>, UpgradeError> {
    let p = path(root, id);
    match fs::read(&p) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| UpgradeError::Journal { path: p, reason: format!("unreadable: {e}") }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(UpgradeError::Journal { path: p, reason: e.to_string() }),
    }
}

pub fn save(root: &Path, rec: &Record) -> Result<(), UpgradeError> {
    let p = path(root, &rec.id);
    let err = |e: std::io::Error| UpgradeError::Journal { path: p.clone(), reason: e.to_string() };
    let data = serde_json::to_vec_pretty(rec).map_err(|e| UpgradeError::Journal { path: p.clone(), reason: e.to_string() })?;
    crate::container::write_file_atomic(&p, &data).map_err(err)?;
    // The rename itself must reach the disk before the step it records runs.
    fs::File::open(root).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}

pub fn remove(root: &Path, id: &str) {
    let _ = fs::remove_file(path(root, id));
    if let Ok(d) = fs::File::open(root) {
        let _ = d.sync_all();
    }
}

/// Held by the process running (or resuming) an upgrade, so that no other molt settles a
/// journal that is still being written. The file names its owner by pid and start time: not an
/// flock, because the new container's init is forked from the owner and would inherit the lock.
pub struct Lock {
    path: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

pub fn lock_path(root: &Path, id: &str) -> PathBuf {
    root.join(format!(".upgrade-{id}.lock"))
}

/// The pid of the live process that holds the lock, if one does.
pub fn holder(root: &Path, id: &str) -> Option<i32> {
    let text = fs::read_to_string(lock_path(root, id)).ok()?;
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().unwrap_or(0));
    let (pid, start) = (it.next().unwrap_or(0) as i32, it.next().unwrap_or(0));
    (pid > 0 && crate::container::process_is(pid, start)).then_some(pid)
}

/// Ok(None): another live process holds it.
pub fn try_lock(root: &Path, id: &str) -> Result<Option<Lock>, UpgradeError> {
    let p = lock_path(root, id);
    let me = std::process::id() as i32;
    let stamp = format!("{me} {}", crate::container::start_time(me).unwrap_or(0));
    for _ in 0..2 {
        match fs::OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(mut f) => {
                f.write_all(stamp.as_bytes()).map_err(|e| UpgradeError::Journal { path: p.clone(), reason: e.to_string() })?;
                return Ok(Some(Lock { path: p }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = fs::read_to_string(&p).unwrap_or_default();
                let mut it = text.split_whitespace().map(|w| w.parse::<u64>().unwrap_or(0));
                let (pid, start) = (it.next().unwrap_or(0) as i32, it.next().unwrap_or(0));
                if pid > 0 && crate::container::process_is(pid, start) {
                    return Ok(None);
                }
                // The owner died (crash): the lock is stale.
                let _ = fs::remove_file(&p);
            }
            Err(e) => return Err(UpgradeError::Journal { path: p, reason: e.to_string() }),
        }
    }
    Ok(None)
}

/// Test-only fault injection: MOLT_TEST_CRASH_AT=<step>:<point> makes molt SIGKILL itself
/// right there, so tests can prove recovery from every step. Only with the `fault-injection`
/// feature (on for `cargo test`): a release build ignores the variable.
#[cfg(feature = "fault-injection")]
pub fn maybe_crash(step: Step, when: &str) {
    if let Ok(spec) = std::env::var("MOLT_TEST_CRASH_AT") {
        if spec == format!("{}:{when}", step.name()) {
            // SAFETY: raising SIGKILL on ourselves; nothing after this runs.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn maybe_crash(_step: Step, _when: &str) {}
