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
    /// The old version had stopped before the upgrade began (`--allow-stopped`, stopped.rs).
    #[serde(default)]
    pub old_stopped: bool,
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
        Ok(data) => parse(&p, &data).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(UpgradeError::Journal { path: p, reason: e.to_string() }),
    }
}

/// A journal's bytes (the parse only).
pub fn parse(path: &Path, data: &[u8]) -> Result<Record, UpgradeError> {
    serde_json::from_slice(data).map_err(|e| UpgradeError::Journal { path: path.into(), reason: format!("unreadable: {e}") })
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
/// journal that is still being written. The kernel decides who holds it: an exclusive flock on
/// the lock file, which dies with its holder, so a stale lock is taken over by exactly one
/// process (deciding "stale" from the file and then replacing it let two racers both win). The
/// fd is close-on-exec, and the init of a container the holder creates closes every inherited fd
/// before it waits for `start`, so no container keeps the lock. The file's text, "pid
/// start_time", only names the holder in messages.
pub struct Lock {
    path: PathBuf,
    _file: fs::File,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Unlinked while still locked: a waiter that opened this file sees it is no longer the
        // one at the path and tries again, instead of holding a lock nobody else can see.
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
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let p = lock_path(root, id);
    let err = |e: std::io::Error| UpgradeError::Journal { path: p.clone(), reason: e.to_string() };
    let me = std::process::id() as i32;
    let stamp = format!("{me} {}", crate::container::start_time(me).unwrap_or(0));
    loop {
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&p)
            .map_err(err)?;
        // SAFETY: flock on an fd this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(err(e)),
            };
        }
        // The holder before us may have unlinked the file between our open and our flock: a
        // lock on a file no longer at the path excludes nobody.
        let held = f.metadata().map_err(err)?;
        match fs::symlink_metadata(&p) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {}
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(e)),
        }
        f.set_len(0).and_then(|_| f.write_all(stamp.as_bytes())).map_err(err)?;
        return Ok(Some(Lock { path: p, _file: f }));
    }
}

/// Test-only fault injection at `<step>:<when>` (see `crate::fault`).
#[cfg(feature = "fault-injection")]
pub fn maybe_crash(step: Step, when: &str) {
    crate::fault::crash_at(&format!("{}:{when}", step.name()));
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn maybe_crash(_step: Step, _when: &str) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Racers for a lock its dead holder left behind: the kernel gives it to exactly one, and
    /// the others are told it is held (before, both of two racers could decide it was stale,
    /// remove it and each create their own).
    #[test]
    fn a_stale_lock_is_taken_over_by_exactly_one_racer() {
        let root = std::env::temp_dir().join(format!("molt-lock-race-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        for round in 0..40 {
            let id = format!("c{round}");
            // What a holder killed with SIGKILL leaves: its stamp, a pid no process has now.
            fs::write(lock_path(&root, &id), "2147483647 1").unwrap();
            let racers = 8;
            let barrier = std::sync::Barrier::new(racers);
            let (won, unnamed, failed) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
            std::thread::scope(|s| {
                for _ in 0..racers {
                    // No assert in here: a panicking racer would leave the others at the barrier.
                    s.spawn(|| {
                        barrier.wait();
                        let lock = try_lock(&root, &id);
                        if let Ok(Some(_)) = &lock {
                            won.fetch_add(1, Ordering::SeqCst);
                            if holder(&root, &id) != Some(std::process::id() as i32) {
                                unnamed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        if lock.is_err() {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        // Every racer has tried before the winner lets go.
                        barrier.wait();
                        drop(lock);
                    });
                }
            });
            assert_eq!(failed.load(Ordering::SeqCst), 0, "round {round}: try_lock failed");
            assert_eq!(won.load(Ordering::SeqCst), 1, "round {round}: racers that took the stale lock");
            assert_eq!(unnamed.load(Ordering::SeqCst), 0, "round {round}: the lock file does not name the winner");
            assert!(!lock_path(&root, &id).exists(), "round {round}: the released lock file is left");
        }
        fs::remove_dir_all(&root).unwrap();
    }
}
