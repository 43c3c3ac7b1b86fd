//! Which processes hold a filesystem: an open fd, cwd, root or memory mapping on it, found by
//! comparing st_dev through /proc (the scan is `crate::procfs::holds_device`). Used before a
//! volume changes hands, so that nothing outside molt's containers is still writing to it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::procfs;

/// st_dev of the filesystem mounted at `path`.
pub fn device_of(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.dev())
}

/// All pids holding filesystem `dev` (an open fd, cwd, root or mapping on it), ascending.
pub fn holders_of(dev: u64) -> std::io::Result<Vec<i32>> {
    Ok(procfs::pids()?.into_iter().filter(|pid| procfs::holds_device(*pid, dev)).collect())
}
