//! The one error type of the cgroups module. Every message names the cgroup file (or the config
//! field) at fault, the value involved and the errno, so a runc-style CLI line is enough to debug.

use std::path::PathBuf;

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: reading {path}: {errno}")]
    Read { path: PathBuf, errno: Errno },

    #[error("cgroup: writing {value:?} to {path} ({context}): {errno}")]
    Write {
        path: PathBuf,
        value: String,
        context: String,
        errno: Errno,
    },

    #[error("cgroup: mkdir {path}: {errno}")]
    Mkdir { path: PathBuf, errno: Errno },

    #[error("cgroup: rename {from} to {to}: {errno}")]
    Rename { from: PathBuf, to: PathBuf, errno: Errno },

    #[error("cgroup: rmdir {path}: {errno}")]
    Rmdir { path: PathBuf, errno: Errno },

    #[error("cgroup: kill({pid}, {sig}) for a process listed in {path}: {errno}")]
    Signal {
        pid: i32,
        sig: i32,
        path: PathBuf,
        errno: Errno,
    },

    #[error("cgroup: invalid cgroupsPath {path:?}: {reason}")]
    BadPath { path: String, reason: String },

    #[error("cgroup: {file}: cannot parse line {line:?}: {reason}")]
    Parse {
        file: String,
        line: String,
        reason: String,
    },

    #[error("cgroup: no cgroup hierarchy is mounted (read {mountinfo})")]
    NoHierarchy { mountinfo: String },

    #[error(
        "cgroup: {field} needs the {controller} controller, which no mounted hierarchy provides"
    )]
    NoController { field: String, controller: String },

    #[error("cgroup: invalid {field} value {value:?}: {reason}")]
    BadValue {
        field: String,
        value: String,
        reason: String,
    },

    #[error("cgroup: exec --cgroup {arg:?}: {reason}")]
    SubCgroup { arg: String, reason: String },

    #[error("cgroup: linux.resources.unified key {key:?}: {reason}")]
    Unified { key: String, reason: String },

    #[error("cgroup: {path} did not read {want:?} within {waited_ms} ms (last read {last:?})")]
    StateTimeout {
        path: PathBuf,
        want: &'static str,
        waited_ms: u128,
        last: String,
    },
}

impl CgroupError {
    /// The errno of a failed kernel call, for callers that branch on it (EBUSY, ENOENT...).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            CgroupError::Read { errno, .. }
            | CgroupError::Write { errno, .. }
            | CgroupError::Mkdir { errno, .. }
            | CgroupError::Rmdir { errno, .. }
            | CgroupError::Signal { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// std reports kernel failures as io::Error; molt's messages want the errno name.
pub(crate) fn errno_of(e: &std::io::Error) -> Errno {
    // Errors without an OS code only come from std itself (e.g. short writes); EIO is the honest label.
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
