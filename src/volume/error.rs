use nix::errno::Errno;
use std::path::PathBuf;

/// Every failure of the volume module. Messages name the volume (its key, or the mount's
/// destination and source while it is still being parsed), the step that failed and the errno.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The config.json mount does not describe a usable volume.
    #[error("volume mount {destination}: source {source_text:?}: {reason}")]
    Invalid {
        destination: String,
        source_text: String,
        reason: String,
    },

    /// A system call failed.
    #[error("volume {key}: {step}: {errno}")]
    Sys {
        key: String,
        step: String,
        errno: Errno,
    },

    /// A file operation failed (records, lock file, staging directory, /proc).
    #[error("volume {key}: {step}: {path}: {source}")]
    Io {
        key: String,
        step: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A helper program (mount.nfs, iscsiadm, mkfs, blkid) failed or could not run.
    #[error("volume {key}: {step}: `{command}`: {detail}")]
    Command {
        key: String,
        step: String,
        command: String,
        detail: String,
    },

    /// A step that cannot succeed on this host or in this state (no NFS client, a timeout, a
    /// conflicting declaration of the same volume, a stale attachment).
    #[error("volume {key}: {step}: {reason}")]
    Failed {
        key: String,
        step: String,
        reason: String,
    },

    /// Detach refused while containers still use the volume.
    #[error("volume {key}: still in use by {}", .users.join(", "))]
    InUse { key: String, users: Vec<String> },

    /// No attachment record for this key.
    #[error("volume {key}: not attached (no record under {dir})")]
    NotAttached { key: String, dir: PathBuf },

    /// The user named is not a user of the attachment.
    #[error("volume {key}: {user:?} is not a user (users: {})", .users.join(", "))]
    NotUser {
        key: String,
        user: String,
        users: Vec<String>,
    },

    /// An attach failed and undoing part of it failed too: what is left is named so that
    /// `repair` or a person can finish the job.
    #[error("{error}; undoing the attach also failed: {}", .undo.join("; "))]
    UndoFailed {
        error: Box<VolumeError>,
        undo: Vec<String>,
    },
}

impl VolumeError {
    pub(crate) fn sys(key: &str, step: impl Into<String>, errno: Errno) -> Self {
        VolumeError::Sys {
            key: key.to_string(),
            step: step.into(),
            errno,
        }
    }

    pub(crate) fn io(
        key: &str,
        step: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        VolumeError::Io {
            key: key.to_string(),
            step: step.into(),
            path: path.into(),
            source,
        }
    }

    pub(crate) fn failed(key: &str, step: impl Into<String>, reason: impl Into<String>) -> Self {
        VolumeError::Failed {
            key: key.to_string(),
            step: step.into(),
            reason: reason.into(),
        }
    }
}
