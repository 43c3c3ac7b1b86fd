//! The attachments on this host: one directory per volume under `<molt root>/volumes`, holding
//! the staging mount point `mnt` and the record `record.json` (spec, users, what was attached).
//! Every change takes an exclusive flock on `volumes/.lock`, so concurrent molt processes see
//! one order of events; records are replaced atomically, so readers never need the lock.

mod report;

pub use report::{AttachmentInfo, AttachmentState};

use super::attach::{self, Attach, Attached, Timeouts};
use super::holders;
use super::sys;
use super::{Source, VolumeError, VolumeSpec};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const RECORD: &str = "record.json";
const STAGING: &str = "mnt";
const LOCK: &str = ".lock";
const RECORD_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Phase {
    /// Written before the first effect: seen under the lock, it means the attaching process died.
    Attaching,
    Attached,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: String,
    /// Seconds since the epoch when the user was added, for `repair`'s grace period.
    since: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    version: u32,
    phase: Phase,
    spec: VolumeSpec,
    users: Vec<User>,
    device: Option<PathBuf>,
    loop_number: Option<u32>,
    session_owned: bool,
    read_only: bool,
}

impl Record {
    fn attached(&self) -> Attached {
        Attached {
            device: self.device.clone(),
            loop_number: self.loop_number,
            session_owned: self.session_owned,
            read_only: self.read_only,
        }
    }

    fn user_ids(&self) -> Vec<String> {
        self.users.iter().map(|u| u.id.clone()).collect()
    }

    fn has_user(&self, id: &str) -> bool {
        self.users.iter().any(|u| u.id == id)
    }

    fn add_user(&mut self, id: &str) {
        if !self.has_user(id) {
            self.users.push(User { id: id.to_string(), since: now() });
        }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The volume attachments under one molt root.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
    dir: PathBuf,
    timeouts: Timeouts,
}

/// Held while the registry is being changed; the flock goes with the file.
struct LockGuard(#[allow(dead_code)] File);

impl Registry {
    pub fn new(molt_root: &Path) -> Registry {
        Registry {
            root: molt_root.to_path_buf(),
            dir: molt_root.join("volumes"),
            timeouts: Timeouts::default(),
        }
    }

    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Registry {
        self.timeouts = timeouts;
        self
    }

    /// `<root>/volumes`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where volume `key` is mounted on the host, whether attached or not.
    pub fn staging_path(&self, key: &str) -> PathBuf {
        self.dir.join(key).join(STAGING)
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join(key).join(RECORD)
    }

    fn lock(&self) -> Result<LockGuard, VolumeError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| VolumeError::io("*", "create the registry directory", &self.dir, e))?;
        let path = self.dir.join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| VolumeError::io("*", "open the registry lock", &path, e))?;
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(LockGuard(f));
            }
            let e = nix::errno::Errno::last();
            if e != nix::errno::Errno::EINTR {
                return Err(VolumeError::sys("*", format!("flock {}", path.display()), e));
            }
        }
    }

    fn check_key(&self, key: &str) -> Result<(), VolumeError> {
        if key.is_empty() || key.starts_with('.') || key.contains('/') || key.contains('\0') {
            return Err(VolumeError::NotAttached { key: key.to_string(), dir: self.dir.clone() });
        }
        Ok(())
    }

    fn check_user(key: &str, user: &str) -> Result<(), VolumeError> {
        if user.is_empty() || user.contains('/') || user.contains('\0') {
            return Err(VolumeError::failed(key, "check the user", format!("{user:?} is not a container id")));
        }
        Ok(())
    }

    fn read_record(&self, key: &str) -> Result<Option<Record>, VolumeError> {
        let path = self.record_path(key);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(VolumeError::io(key, "read the record", &path, e)),
        };
        let rec: Record = serde_json::from_str(&text).map_err(|e| {
            VolumeError::io(key, "parse the record", &path, std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        if rec.version != RECORD_VERSION || rec.spec.key != key {
            return Err(VolumeError::failed(
                key,
                "read the record",
                format!("{} has version {} and key {:?}", path.display(), rec.version, rec.spec.key),
            ));
        }
        Ok(Some(rec))
    }

    /// tmp + fsync + rename + fsync(dir): after a crash the record is the old or the new one.
    fn write_record(&self, rec: &Record) -> Result<(), VolumeError> {
        let key = rec.spec.key.as_str();
        let path = self.record_path(key);
        let tmp = self.dir.join(key).join(".record.json.tmp");
        let text = serde_json::to_vec_pretty(rec).map_err(|e| {
            VolumeError::io(key, "encode the record", &path, std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            File::open(self.dir.join(key))?.sync_all()
        };
        write().map_err(|e| VolumeError::io(key, "write the record", &path, e))
    }

    fn is_mounted(&self, key: &str) -> Result<bool, VolumeError> {
        sys::mount_at(&self.staging_path(key))
            .map(|m| m.is_some())
            .map_err(|e| VolumeError::io(key, "read mountinfo", "/proc/self/mountinfo", e))
    }

    fn remove_dir(&self, key: &str) -> Result<(), VolumeError> {
        let dir = self.dir.join(key);
        // remove_dir (not remove_dir_all) on mnt: if something is still mounted there, this fails
        // with EBUSY instead of deleting the volume's files.
        for (step, r) in [
            ("remove the record", fs::remove_file(dir.join(RECORD))),
            ("remove the record", fs::remove_file(dir.join(".record.json.tmp"))),
            ("remove the staging directory", fs::remove_dir(dir.join(STAGING))),
            ("remove the volume directory", fs::remove_dir(&dir)),
        ] {
            match r {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(VolumeError::io(key, step, &dir, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Other records that use the iSCSI target of `spec`: their keys and whether any owns the session.
    fn target_users(&self, spec: &VolumeSpec) -> Result<Vec<Record>, VolumeError> {
        let Source::Iscsi { portal, port, iqn, .. } = &spec.source else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for key in self.keys()? {
            if key == spec.key {
                continue;
            }
            if let Ok(Some(rec)) = self.read_record(&key) {
                if let Source::Iscsi { portal: p, port: o, iqn: i, .. } = &rec.spec.source {
                    if (p, o, i) == (portal, port, iqn) {
                        out.push(rec);
                    }
                }
            }
        }
        Ok(out)
    }

    fn keys(&self) -> Result<Vec<String>, VolumeError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(VolumeError::io("*", "list the registry", &self.dir, e)),
        };
        let mut keys: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|k| !k.starts_with('.'))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Attaches the volume if no container uses it yet, makes `user` one of its users, and
    /// returns the staging directory to bind-mount from. On failure nothing this call did stays.
    ///
    /// The staging mount is read-write whatever the container asked: `ro` is a property of each
    /// container's bind mount, so a read-only and a read-write container can share a volume.
    /// Only when the device itself refuses writes and the first user asked `ro` is the staging
    /// mount read-only; a later read-write user of it is refused.
    pub fn acquire(&self, spec: &VolumeSpec, user: &str) -> Result<PathBuf, VolumeError> {
        Self::check_user(&spec.key, user)?;
        self.check_key(&spec.key)?;
        let _lock = self.lock()?;
        let staging = self.staging_path(&spec.key);
        if let Some(mut rec) = self.read_record(&spec.key)? {
            if rec.phase == Phase::Attaching {
                // We hold the lock, so the process that wrote this died mid-attach.
                self.take_down(&rec)?;
            } else {
                self.check_compatible(&rec, spec)?;
                if !self.is_mounted(&spec.key)? {
                    return Err(self.stale_error(&rec, "acquire"));
                }
                rec.add_user(user);
                self.write_record(&rec)?;
                return Ok(staging);
            }
        }
        self.attach_new(spec, user, &staging)?;
        Ok(staging)
    }

    fn check_compatible(&self, rec: &Record, spec: &VolumeSpec) -> Result<(), VolumeError> {
        let have = &rec.spec;
        if have.fstype != spec.fstype || have.data_options != spec.data_options {
            return Err(VolumeError::failed(
                &spec.key,
                "share the attachment",
                format!(
                    "already attached as {} with options [{}] for {}; this mount asks {} with [{}]",
                    have.fstype,
                    have.data_options.join(","),
                    rec.user_ids().join(", "),
                    spec.fstype,
                    spec.data_options.join(",")
                ),
            ));
        }
        if rec.read_only && !spec.read_only() {
            return Err(VolumeError::failed(
                &spec.key,
                "share the attachment",
                "the device is read-only and attached read-only; this mount asks read-write",
            ));
        }
        Ok(())
    }

    fn stale_error(&self, rec: &Record, step: &str) -> VolumeError {
        VolumeError::failed(
            &rec.spec.key,
            step,
            format!(
                "stale attachment: the record lists users [{}] but {} is not mounted (run repair)",
                rec.user_ids().join(", "),
                self.staging_path(&rec.spec.key).display()
            ),
        )
    }

    fn attach_new(&self, spec: &VolumeSpec, user: &str, staging: &Path) -> Result<(), VolumeError> {
        let key = spec.key.as_str();
        let others = self.target_users(spec)?;
        let target_shared = (!others.is_empty()).then(|| others.iter().any(|r| r.session_owned));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(staging)
            .map_err(|e| VolumeError::io(key, "create the staging directory", staging, e))?;
        let mut rec = Record {
            version: RECORD_VERSION,
            phase: Phase::Attaching,
            spec: spec.clone(),
            users: Vec::new(),
            device: None,
            loop_number: None,
            session_owned: false,
            read_only: false,
        };
        let result = self.write_record(&rec).and_then(|()| {
            let timeouts = match spec.timeout {
                Some(d) => Timeouts { command: d, device: d, ..self.timeouts },
                None => self.timeouts,
            };
            let attach = Attach { spec, staging, timeouts, target_shared };
            let mut progress = |a: &Attached| {
                let mut r = rec.clone();
                set_attached(&mut r, a);
                self.write_record(&r)
            };
            attach.run(&mut progress)
        });
        let attached = match result {
            Ok(a) => a,
            Err(e) => return Err(self.with_cleanup(e, key)),
        };
        set_attached(&mut rec, &attached);
        rec.phase = Phase::Attached;
        rec.add_user(user);
        if let Err(e) = self.write_record(&rec) {
            let undo = attach::take_down(spec, staging, &attached, attached.session_owned && target_shared.is_none(), self.timeouts);
            let e = match undo {
                Ok(()) => e,
                Err(u) => VolumeError::UndoFailed { error: Box::new(e), undo: vec![u.to_string()] },
            };
            return Err(self.with_cleanup(e, key));
        }
        Ok(())
    }

    /// Removes the volume's directory after a failed attach, adding any failure to the error.
    fn with_cleanup(&self, error: VolumeError, key: &str) -> VolumeError {
        match self.remove_dir(key) {
            Ok(()) => error,
            Err(e) => match error {
                VolumeError::UndoFailed { error, mut undo } => {
                    undo.push(e.to_string());
                    VolumeError::UndoFailed { error, undo }
                }
                error => VolumeError::UndoFailed { error: Box::new(error), undo: vec![e.to_string()] },
            },
        }
    }

    /// Unmounts, unbinds, logs out as the record says, then removes the directory. For iSCSI the
    /// session is ended only with the target's last molt attachment; ownership passes on to
    /// the next one otherwise.
    fn take_down(&self, rec: &Record) -> Result<(), VolumeError> {
        let key = rec.spec.key.as_str();
        let mut logout = rec.session_owned;
        if logout {
            if let Some(mut heir) = self.target_users(&rec.spec)?.into_iter().next() {
                heir.session_owned = true;
                self.write_record(&heir)?;
                logout = false;
            }
        }
        attach::take_down(&rec.spec, &self.staging_path(key), &rec.attached(), logout, self.timeouts)?;
        self.remove_dir(key)
    }

    /// Drops `user`; with the last user gone the volume is detached. Releasing a user that holds
    /// nothing (or a volume already gone) succeeds, so a delete interrupted by a crash can be
    /// repeated.
    pub fn release(&self, key: &str, user: &str) -> Result<(), VolumeError> {
        self.check_key(key)?;
        let _lock = self.lock()?;
        let Some(mut rec) = self.read_record(key)? else {
            return Ok(());
        };
        rec.users.retain(|u| u.id != user);
        if rec.users.is_empty() {
            // Record the drop first: if the take-down fails (EBUSY) the user is gone all the same
            // and `detach` or `repair` finishes later.
            self.write_record(&rec)?;
            return self.take_down(&rec);
        }
        self.write_record(&rec)
    }

    /// Replaces user `from` by `to` in one record write: the upgrade hands the volume to the new
    /// container and the attachment never has zero users.
    pub fn hand_over(&self, key: &str, from: &str, to: &str) -> Result<(), VolumeError> {
        self.check_key(key)?;
        Self::check_user(key, to)?;
        let _lock = self.lock()?;
        let mut rec = self.attached_record(key, "hand over")?;
        if !rec.has_user(from) {
            return Err(VolumeError::NotUser { key: key.to_string(), user: from.to_string(), users: rec.user_ids() });
        }
        if rec.has_user(to) {
            rec.users.retain(|u| u.id != from);
        } else if let Some(u) = rec.users.iter_mut().find(|u| u.id == from) {
            *u = User { id: to.to_string(), since: now() };
        }
        self.write_record(&rec)
    }

    /// Makes `user` a user of an existing attachment without attaching anything.
    pub fn add_user(&self, key: &str, user: &str) -> Result<PathBuf, VolumeError> {
        self.check_key(key)?;
        Self::check_user(key, user)?;
        let _lock = self.lock()?;
        let mut rec = self.attached_record(key, "add user")?;
        rec.add_user(user);
        self.write_record(&rec)?;
        Ok(self.staging_path(key))
    }

    /// The record of a live attachment, or why there is none.
    fn attached_record(&self, key: &str, step: &str) -> Result<Record, VolumeError> {
        let rec = self
            .read_record(key)?
            .ok_or_else(|| VolumeError::NotAttached { key: key.to_string(), dir: self.dir.clone() })?;
        if rec.phase != Phase::Attached {
            return Err(VolumeError::failed(key, step, "an attach was interrupted (run repair)"));
        }
        if !self.is_mounted(key)? {
            return Err(self.stale_error(&rec, step));
        }
        Ok(rec)
    }

    /// Detaches a volume no container uses; refuses, naming them, while users remain.
    pub fn detach(&self, key: &str) -> Result<(), VolumeError> {
        self.check_key(key)?;
        let _lock = self.lock()?;
        match self.read_record(key)? {
            Some(rec) if !rec.users.is_empty() => Err(VolumeError::InUse { key: key.to_string(), users: rec.user_ids() }),
            Some(rec) => self.take_down(&rec),
            None if self.dir.join(key).exists() => self.take_down_unrecorded(key).map(|_| ()),
            None => Err(VolumeError::NotAttached { key: key.to_string(), dir: self.dir.clone() }),
        }
    }

    /// syncfs on the staging mount: everything written through any container's bind is on the
    /// device (or the NFS server) when this returns.
    pub fn flush(&self, key: &str) -> Result<(), VolumeError> {
        self.check_key(key)?;
        let _lock = self.lock()?;
        self.attached_record(key, "flush")?;
        let staging = self.staging_path(key);
        // syncfs on the directory, not the mount source: it must be the mounted filesystem.
        let dir = File::open(&staging).map_err(|e| VolumeError::io(key, "open the staging directory", &staging, e))?;
        nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| VolumeError::sys(key, format!("syncfs {}", staging.display()), e))
    }

    /// Processes outside `allowed` that hold the volume: an open file, cwd, root or mapping on
    /// its filesystem.
    pub fn foreign_holders(&self, key: &str, allowed: &[i32]) -> Result<Vec<i32>, VolumeError> {
        self.check_key(key)?;
        let rec = self.attached_record(key, "find holders")?;
        let staging = self.staging_path(&rec.spec.key);
        let dev = holders::device_of(&staging).map_err(|e| VolumeError::io(key, "stat the staging mount", &staging, e))?;
        let pids = holders::holders_of(dev).map_err(|e| VolumeError::io(key, "scan processes", "/proc", e))?;
        Ok(pids.into_iter().filter(|p| !allowed.contains(p)).collect())
    }

}

fn set_attached(rec: &mut Record, a: &Attached) {
    rec.device = a.device.clone();
    rec.loop_number = a.loop_number;
    rec.session_owned = a.session_owned;
    rec.read_only = a.read_only;
}
