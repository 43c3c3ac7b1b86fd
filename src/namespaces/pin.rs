//! Keeping a namespace alive after its processes end: a bind mount of its /proc file. The upgrade
//! pins the old container's network namespace so it can move the identity or roll back into it.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Bind `/proc/PID/ns/<kind>` onto `dest` so the namespace outlives its processes.
pub fn pin(pid: i32, kind: &str, dest: &Path) -> Result<PathBuf, String> {
    let src = super::path(pid, kind);
    std::fs::File::create(dest).map_err(|e| format!("create {}: {e}", dest.display()))?;
    mount(Some(&src), dest, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("bind {} on {}: {}", src.display(), dest.display(), e.desc()))?;
    Ok(dest.to_path_buf())
}

/// Undo `pin`; a missing pin is fine.
pub fn unpin(dest: &Path) {
    let _ = umount2(dest, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(dest);
}
