//! Which processes hold a filesystem: an open fd, cwd, root or memory mapping on it, found by
//! comparing st_dev through /proc. Used before a volume changes hands, so that nothing outside
//! molt's containers is still writing to it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// st_dev of the filesystem mounted at `path`.
pub fn device_of(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.dev())
}

/// `/proc/PID/maps` prints the device as hex `major:minor`.
fn maps_device(field: &str) -> Option<u64> {
    let (ma, mi) = field.split_once(':')?;
    let ma = u32::from_str_radix(ma, 16).ok()?;
    let mi = u32::from_str_radix(mi, 16).ok()?;
    Some(libc::makedev(ma, mi))
}

fn holds(pid_dir: &Path, dev: u64) -> bool {
    // stat follows the magic links to the object itself; a process that vanished or that we
    // cannot inspect simply does not match.
    let on = |p: &Path| std::fs::metadata(p).map(|m| m.dev() == dev).unwrap_or(false);
    if on(&pid_dir.join("cwd")) || on(&pid_dir.join("root")) {
        return true;
    }
    if let Ok(fds) = std::fs::read_dir(pid_dir.join("fd")) {
        if fds.filter_map(|e| e.ok()).any(|e| on(&e.path())) {
            return true;
        }
    }
    if let Ok(maps) = std::fs::read_to_string(pid_dir.join("maps")) {
        if maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3))
            .any(|f| f != "00:00" && maps_device(f) == Some(dev))
        {
            return true;
        }
    }
    false
}

/// All pids holding filesystem `dev`, in ascending order.
pub fn holders_of(dev: u64) -> std::io::Result<Vec<i32>> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| holds(&Path::new("/proc").join(pid.to_string()), dev))
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_devices_are_hex() {
        assert_eq!(maps_device("fd:01"), Some(libc::makedev(0xfd, 1)));
        assert_eq!(maps_device("103:0a"), Some(libc::makedev(0x103, 10)));
        assert_eq!(maps_device("x"), None);
    }
}
