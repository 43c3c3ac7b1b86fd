//! The one reader of the kernel's process files under /proc: mountinfo, stat, cgroup membership,
//! and the scan of a process's fds, cwd, root and memory maps. stat, cgroup and maps are parsed
//! by procfs-core; mountinfo and the fd scan are ours (vendor-notes/procfs.md says why).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use procfs_core::FromRead;

pub const OWN_MOUNTINFO: &str = "/proc/self/mountinfo";
pub const OWN_CGROUP: &str = "/proc/self/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: line {line:?}: {reason}", path.display())]
    Line { path: PathBuf, line: String, reason: String },
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
}

impl From<ProcError> for io::Error {
    fn from(e: ProcError) -> io::Error {
        match e {
            ProcError::Read { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// A line the parser refused, and why; the caller knows which file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: String,
    pub reason: String,
}

impl BadLine {
    fn new(line: &str, reason: &str) -> BadLine {
        BadLine { line: line.to_string(), reason: reason.to_string() }
    }

    pub fn in_file(self, path: &str) -> ProcError {
        ProcError::Line { path: PathBuf::from(path), line: self.line, reason: self.reason }
    }
}

fn read(path: &str) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read { path: PathBuf::from(path), source })
}

// ------------------------------------------------------------------ mountinfo

/// One line of a mountinfo file, the fields molt uses, with the kernel's octal escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    pub major: u32,
    pub minor: u32,
    /// The directory of the filesystem this mount shows (field 4).
    pub root: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options, as the kernel prints them (comma-separated).
    pub super_options: String,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = u16::from(b[i + 1] - b'0') * 64 + u16::from(b[i + 2] - b'0') * 8 + u16::from(b[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every line of a mountinfo text, in order (stacked mounts: the topmost last). Blank lines are
/// skipped; a line without the fields the kernel always writes is an error naming it.
pub fn parse_mountinfo(text: &str) -> Result<Vec<MountLine>, BadLine> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        // Optional fields (shared:N, master:N) come before the "-" separator; their count varies.
        let sep = fields.iter().position(|f| *f == "-").ok_or_else(|| BadLine::new(line, "no \" - \" separator"))?;
        if sep < 6 || fields.len() < sep + 4 {
            return Err(BadLine::new(line, "too few fields"));
        }
        let (major, minor) = fields[2]
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| BadLine::new(line, "field 3 is not major:minor"))?;
        out.push(MountLine {
            major,
            minor,
            root: unescape(fields[3]),
            mount_point: PathBuf::from(unescape(fields[4])),
            fstype: fields[sep + 1].to_string(),
            source: unescape(fields[sep + 2]),
            super_options: fields[sep + 3].to_string(),
        });
    }
    Ok(out)
}

/// The mounts of molt's own mount namespace.
pub fn own_mountinfo() -> Result<Vec<MountLine>, ProcError> {
    parse_mountinfo(&read(OWN_MOUNTINFO)?).map_err(|e| e.in_file(OWN_MOUNTINFO))
}

// ------------------------------------------------------------------ cgroup membership

/// One line of /proc/PID/cgroup: "hierarchy-id:controllers:path".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    /// Empty for the cgroup2 line ("0::/path").
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_cgroup(text: &str) -> Result<Vec<CgroupLine>, BadLine> {
    // One line at a time, so that a refused line is named.
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let parsed = procfs_core::ProcessCGroups::from_read(line.as_bytes())
                .map_err(|_| BadLine::new(line, "expected id:controllers:path"))?;
            let g = parsed.0.into_iter().next().ok_or_else(|| BadLine::new(line, "expected id:controllers:path"))?;
            Ok(CgroupLine { controllers: g.controllers, path: g.pathname })
        })
        .collect()
}

/// The cgroups molt itself is in.
pub fn own_cgroup() -> Result<Vec<CgroupLine>, ProcError> {
    parse_cgroup(&read(OWN_CGROUP)?).map_err(|e| e.in_file(OWN_CGROUP))
}

// ------------------------------------------------------------------ stat

/// The fields of /proc/PID/stat molt uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// R, S, D, Z (zombie), X (dead), T, t, ...
    pub state: char,
    pub ppid: i32,
    /// Clock ticks after boot (field 22): tells a process from a later one that reused its pid.
    pub start_time: u64,
}

pub fn parse_stat(text: &str) -> Result<Stat, String> {
    // procfs-core 0.18 slices around the parentheses of the command name without checking them
    // and panics on a line that is not the kernel's shape (found by fuzzing: "1 (a (b) c)"
    // with nothing after, a '(' first or after a multi-byte character): checked here first.
    let t = text.trim();
    let shaped = match (t.find('('), t.rfind(')')) {
        (Some(open), Some(close)) => {
            open >= 2 && t.as_bytes()[open - 1] == b' ' && close > open && t.len() > close + 2 && t.as_bytes()[close + 1] == b' '
        }
        _ => false,
    };
    if !shaped {
        return Err(format!("not a stat line: {:?}", t.chars().take(80).collect::<String>()));
    }
    let s = procfs_core::process::Stat::from_read(text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(Stat { state: s.state, ppid: s.ppid, start_time: s.starttime })
}

/// /proc/PID/stat; an error once the process is gone (and reaped).
pub fn stat(pid: i32) -> Result<Stat, ProcError> {
    let path = format!("/proc/{pid}/stat");
    parse_stat(&read(&path)?).map_err(|reason| ProcError::Format { path: PathBuf::from(path), reason })
}

// ------------------------------------------------------------------ processes and what they hold

/// Every pid in /proc, ascending.
pub fn pids() -> io::Result<Vec<i32>> {
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// The open fds of `pid`: (number, its /proc/PID/fd/N magic link).
pub fn fds(pid: i32) -> io::Result<Vec<(i32, PathBuf)>> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect())
}

/// The devices (st_dev) of the files `pid` has mapped; anonymous mappings are left out.
pub fn mapped_devices(pid: i32) -> Result<Vec<u64>, ProcError> {
    let path = format!("/proc/{pid}/maps");
    let maps = procfs_core::process::MemoryMaps::from_file(&path)
        .map_err(|e| ProcError::Format { path: PathBuf::from(&path), reason: e.to_string() })?;
    Ok(maps
        .iter()
        .filter(|m| m.dev != (0, 0))
        .map(|m| libc::makedev(m.dev.0 as u32, m.dev.1 as u32))
        .collect())
}

/// Whether `pid` holds filesystem `dev` through an open fd, its cwd, its root or a memory mapping.
/// A process that vanished or that we cannot inspect does not.
pub fn holds_device(pid: i32, dev: u64) -> bool {
    // stat follows the magic links to the object itself.
    let on = |p: &Path| std::fs::metadata(p).map(|m| m.dev() == dev).unwrap_or(false);
    let dir = PathBuf::from(format!("/proc/{pid}"));
    on(&dir.join("cwd"))
        || on(&dir.join("root"))
        || fds(pid).map(|fds| fds.iter().any(|(_, p)| on(p))).unwrap_or(false)
        || mapped_devices(pid).map(|d| d.contains(&dev)).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_decode_escapes_and_keep_order() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 36 0:52 / /run/molt/volumes/k/mnt rw shared:5 - nfs store:/srv rw,vers=3\n";
        let m = parse_mountinfo(text).expect("parse");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, Path::new("/mnt/with space"));
        assert_eq!((m[0].major, m[0].minor), (98, 0));
        assert_eq!(m[0].root, "/mnt1");
        assert_eq!(m[1].fstype, "nfs");
        assert_eq!(m[1].source, "store:/srv");
        assert_eq!(m[1].super_options, "rw,vers=3");
    }

    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/x\\"), "/x\\");
        assert_eq!(unescape("/x\\04"), "/x\\04");
    }

    /// Why mountinfo is parsed here and not by procfs-core (vendor-notes/procfs.md): it keeps the
    /// kernel's escapes. If this fails, procfs-core decodes them now and could take the file over.
    #[test]
    fn procfs_core_keeps_mountinfo_escapes() {
        let line = "36 35 98:0 /mnt1 /mnt/with\\040space rw - ext3 /dev/root rw";
        let m = procfs_core::process::MountInfo::from_line(line).expect("parse");
        assert_eq!(m.mount_point, Path::new("/mnt/with\\040space"));
    }

    #[test]
    fn a_bad_mountinfo_line_is_named() {
        let e = parse_mountinfo("1 2 3\n").expect_err("must fail");
        assert_eq!(e.line, "1 2 3");
        let e = parse_mountinfo("1 2 x / /a rw - ext4 /dev/x rw\n").expect_err("must fail");
        assert!(e.reason.contains("major:minor"), "{e:?}");
    }

    #[test]
    fn cgroup_lines_keep_colons_in_the_path() {
        let g = parse_cgroup("4:cpu,cpuacct:/a:b\n0::/x\n").expect("parse");
        assert_eq!(g[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(g[0].path, "/a:b");
        assert!(g[1].controllers.is_empty());
        assert_eq!(g[1].path, "/x");
        assert_eq!(parse_cgroup("nonsense\n").expect_err("must fail").line, "nonsense");
    }

    #[test]
    fn stat_survives_parentheses_and_spaces_in_comm() {
        let text = "42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 1 1 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        assert_eq!(parse_stat(text), Ok(Stat { state: 'S', ppid: 7, start_time: 12345 }));
        assert!(parse_stat("garbage").is_err());
        // Lines that made procfs-core panic (fuzz target kernel_files).
        for bad in ["1234 (molt (x) y)", "1234 (m234 (mxx)", "(molt) S 1", "\u{fffd}(a) S 1 2", "1 (a)S 1", "1 (a) "] {
            assert!(parse_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn this_process_is_readable() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("own stat");
        assert!(s.start_time > 0);
        assert!(s.ppid > 0);
        assert!(pids().expect("pids").contains(&me));
        assert!(!own_mountinfo().expect("mountinfo").is_empty());
        assert!(!own_cgroup().expect("cgroup").is_empty());
        assert!(fds(me).expect("fds").iter().any(|(n, _)| *n == 0 || *n == 1 || *n == 2));
        // A file we map shows with its filesystem's device. (Not our executable's: under an
        // overlay root, as in the VM lab, maps names the lower filesystem and stat the overlay.)
        let path = std::path::PathBuf::from(format!("/run/molt-procfs-test-{me}"));
        std::fs::write(&path, [7u8; 4096]).expect("write the mapped file");
        let file = std::fs::File::open(&path).expect("open the mapped file");
        let dev = file.metadata().expect("stat").dev();
        use std::os::fd::AsRawFd;
        // SAFETY: a read-only shared mapping of a 4096-byte file we hold open; unmapped below.
        let map = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        assert_ne!(map, libc::MAP_FAILED);
        drop(file);
        let _ = std::fs::remove_file(&path);
        let (mapped, held) = (mapped_devices(me).expect("maps"), holds_device(me, dev));
        // SAFETY: the mapping made above, not used after this.
        unsafe { libc::munmap(map, 4096) };
        assert!(mapped.contains(&dev), "{dev:#x} not in {mapped:?}");
        assert!(held, "a mapped file's device is held");
    }
}
