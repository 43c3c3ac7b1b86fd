//! What an operator sees and mends: `molt volume list` compares each record with the host, and
//! `repair` undoes what a crash left (interrupted attaches, mounts without a record, users whose
//! container is gone).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::super::sys;
use super::{now, Phase, Record, Registry, User};
use crate::volume::{Source, VolumeError};

/// State of one attachment as `list` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum AttachmentState {
    Attached,
    /// An attach is running now, or was interrupted (repair undoes it).
    Attaching,
    /// Record and host disagree; the reason says how. `repair` fixes or reports it.
    Stale(String),
}

impl fmt::Display for AttachmentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachmentState::Attached => write!(f, "attached"),
            AttachmentState::Attaching => write!(f, "attaching"),
            AttachmentState::Stale(why) => write!(f, "stale: {why}"),
        }
    }
}

/// One row of `molt volume list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentInfo {
    pub key: String,
    /// nfs, iscsi, block, image; empty when there is no record.
    pub kind: String,
    pub source: String,
    pub fstype: String,
    pub staging: PathBuf,
    pub device: Option<PathBuf>,
    pub users: Vec<String>,
    pub read_only: bool,
    pub state: AttachmentState,
}

impl Registry {
    /// All attachments, live or stale. Reads records without the lock (they are replaced
    /// atomically), so listing never waits for a slow attach.
    pub fn list(&self) -> Result<Vec<AttachmentInfo>, VolumeError> {
        let mut out = Vec::new();
        for key in self.keys()? {
            let staging = self.staging_path(&key);
            let mounted = self.is_mounted(&key)?;
            let info = match self.read_record(&key) {
                Ok(Some(rec)) => {
                    let state = match rec.phase {
                        Phase::Attaching => AttachmentState::Attaching,
                        Phase::Attached => self.check_host(&rec, mounted),
                    };
                    AttachmentInfo {
                        kind: rec.spec.source.kind().to_string(),
                        source: rec.spec.source.to_string(),
                        fstype: rec.spec.fstype.clone(),
                        staging,
                        device: rec.device.clone(),
                        users: rec.user_ids(),
                        read_only: rec.read_only,
                        state,
                        key,
                    }
                }
                other => {
                    let why = match other {
                        Err(e) => format!("unreadable record: {e}"),
                        _ if mounted => "mounted without a record".to_string(),
                        _ => "directory without a record".to_string(),
                    };
                    AttachmentInfo {
                        kind: String::new(),
                        source: String::new(),
                        fstype: String::new(),
                        staging,
                        device: None,
                        users: Vec::new(),
                        read_only: false,
                        state: AttachmentState::Stale(why),
                        key,
                    }
                }
            };
            out.push(info);
        }
        Ok(out)
    }

    /// Does the host still show what the record says?
    fn check_host(&self, rec: &Record, mounted: bool) -> AttachmentState {
        let staging = self.staging_path(&rec.spec.key);
        if !mounted {
            return AttachmentState::Stale(format!("{} is not mounted", staging.display()));
        }
        if let (Source::Image { path }, Some(n)) = (&rec.spec.source, rec.loop_number) {
            if crate::volume::loopdev::backing_file(n).as_deref() != Some(path.as_path()) {
                return AttachmentState::Stale(format!("/dev/loop{n} is no longer bound to {}", path.display()));
            }
        }
        if let Some(dev) = &rec.device {
            if !dev.exists() {
                return AttachmentState::Stale(format!("device {} is gone", dev.display()));
            }
        }
        if rec.users.is_empty() {
            return AttachmentState::Stale("no users left (run detach or repair)".into());
        }
        AttachmentState::Attached
    }

    /// A staging mount without a record (a crash between mount and record, or a record deleted
    /// by hand): unmount it and remove the directory. A loop device under it is released (its
    /// autoclear may run after the unmount returns: waited for, then cleared); an iSCSI session
    /// cannot be named without the record and is reported.
    pub(super) fn take_down_unrecorded(&self, key: &str) -> Result<Vec<String>, VolumeError> {
        let staging = self.staging_path(key);
        let mut done = Vec::new();
        if let Some(m) = sys::mount_at(&staging).map_err(|e| VolumeError::io(key, "read mountinfo", "/proc/self/mountinfo", e))? {
            let bound = m.source.strip_prefix("/dev/loop").and_then(|n| n.parse::<u32>().ok()).and_then(|n| Some((n, crate::volume::loopdev::backing_file(n)?)));
            sys::unmount(&staging).map_err(|e| VolumeError::sys(key, format!("unmount {}", staging.display()), e))?;
            done.push(format!("{key}: unmounted {} ({} from {}) that had no record", staging.display(), m.fstype, m.source));
            if let Some((n, image)) = bound {
                crate::volume::loopdev::release(n, &image).map_err(|e| VolumeError::sys(key, format!("loop: {}", e.step), e.errno))?;
                done.push(format!("{key}: released /dev/loop{n} ({})", image.display()));
            }
        }
        self.remove_dir(key)?;
        done.push(format!("{key}: removed directory without a record"));
        Ok(done)
    }

    /// Finds what a crash left behind and fixes it, or reports what it cannot fix: interrupted
    /// attaches are undone, mounts without a record unmounted, users whose container no longer
    /// exists (`<root>/<id>/state.json`) dropped, and attachments with no user left detached.
    /// Returns one line per thing found.
    pub fn repair(&self) -> Result<Vec<String>, VolumeError> {
        let _lock = self.lock()?;
        let mut report = Vec::new();
        let keys = self.keys()?;
        for key in &keys {
            match self.repair_one(key, &mut report) {
                Ok(()) => {}
                Err(e) => report.push(format!("{key}: not repaired: {e}")),
            }
        }
        // Always a last word, so an operator knows it looked (and at what).
        report.push(match (keys.len(), report.len()) {
            (0, _) => format!("no volumes recorded under {}: nothing to repair", self.root.display()),
            (n, 0) => format!("{n} volume(s) checked: each attached and in use as recorded, nothing to repair"),
            (n, _) => format!("{n} volume(s) checked"),
        });
        Ok(report)
    }

    fn repair_one(&self, key: &str, report: &mut Vec<String>) -> Result<(), VolumeError> {
        let Some(mut rec) = self.read_record(key)? else {
            report.extend(self.take_down_unrecorded(key)?);
            return Ok(());
        };
        if rec.phase == Phase::Attaching {
            self.take_down(&rec)?;
            report.push(format!("{key}: undid an interrupted attach of {}", rec.spec.source));
            return Ok(());
        }
        let grace = self.timeouts.user_grace.as_secs();
        let (gone, kept): (Vec<User>, Vec<User>) = rec.users.drain(..).partition(|u| {
            !self.root.join(&u.id).join("state.json").exists() && now().saturating_sub(u.since) >= grace
        });
        rec.users = kept;
        if !gone.is_empty() {
            let ids: Vec<&str> = gone.iter().map(|u| u.id.as_str()).collect();
            self.write_record(&rec)?;
            report.push(format!("{key}: dropped users whose container no longer exists: {}", ids.join(", ")));
        }
        let mounted = self.is_mounted(key)?;
        if rec.users.is_empty() {
            self.take_down(&rec)?;
            report.push(format!(
                "{key}: detached {} (no user left{})",
                rec.spec.source,
                if mounted { "" } else { "; its mount was already gone" }
            ));
        } else if !mounted {
            report.push(format!(
                "{key}: stale: {} is not mounted but users [{}] remain; stop or delete them, then repair again",
                self.staging_path(key).display(),
                rec.user_ids().join(", ")
            ));
        }
        Ok(())
    }
}
