//! The only place the cgroups module touches cgroupfs files: read, write, mkdir, rmdir, each
//! failure turned into a CgroupError that names the path and errno.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use nix::errno::Errno;

use super::error::{errno_of, CgroupError};

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| CgroupError::Read {
        path: path.to_path_buf(),
        errno: errno_of(&e),
    })
}

/// One write(2) of the whole value: cgroupfs parses each write separately, so a value must
/// never be split. No O_CREAT: a missing file means a missing controller, and must say so.
pub(crate) fn write(path: &Path, value: &str, context: &str) -> Result<(), CgroupError> {
    crate::logging::debug(&format!("cgroup: write {value:?} to {} ({context})", path.display()));
    let err = |e: std::io::Error| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        context: context.to_string(),
        errno: errno_of(&e),
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// Returns whether this call created the directory (false when it already existed).
pub(crate) fn mkdir(path: &Path) -> Result<bool, CgroupError> {
    crate::logging::debug(&format!("cgroup: mkdir {}", path.display()));
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(CgroupError::Mkdir {
            path: path.to_path_buf(),
            errno: errno_of(&e),
        }),
    }
}

/// rmdir that treats a missing directory as done, so destroy stays idempotent.
pub(crate) fn rmdir(path: &Path) -> Result<(), CgroupError> {
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CgroupError::Rmdir {
            path: path.to_path_buf(),
            errno: errno_of(&e),
        }),
    }
}

/// Exiting tasks keep a cgroup busy for a moment after kill(2) returns (until their parent has
/// reaped them), so EBUSY is retried in short steps (a doubling pause made `delete` wait up to
/// twice as long as the cgroup actually stayed busy), for up to five seconds: a loaded or
/// emulated machine can take seconds to reap.
pub(crate) fn rmdir_retrying(path: &Path) -> Result<(), CgroupError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut pause = Duration::from_millis(1);
    loop {
        match rmdir(path) {
            Err(e) if e.errno() == Some(Errno::EBUSY) && std::time::Instant::now() < deadline => {
                sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(4));
            }
            other => return other,
        }
    }
}

/// Depth-first removal of a cgroup and any child cgroups the container made inside it
/// (cgroupfs only lets empty directories go, and the control files go with them).
pub(crate) fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                errno: errno_of(&e),
            })
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&entry.path())?;
        }
    }
    rmdir_retrying(dir)
}

/// Every directory at and below `dir`, parents first; a missing `dir` is an error the caller sees.
pub(crate) fn walk_dirs(dir: &Path) -> Result<Vec<std::path::PathBuf>, CgroupError> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let entries = match fs::read_dir(&out[i]) {
            Ok(entries) => entries,
            // A child cgroup removed while we walk is simply no longer there.
            Err(e) if i > 0 && e.kind() == std::io::ErrorKind::NotFound => {
                i += 1;
                continue;
            }
            Err(e) => {
                return Err(CgroupError::Read {
                    path: out[i].clone(),
                    errno: errno_of(&e),
                })
            }
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(entry.path());
            }
        }
        i += 1;
    }
    Ok(out)
}
