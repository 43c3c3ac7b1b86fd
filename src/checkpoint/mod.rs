//! `checkpoint` and `restore` through Debian's `criu` command line: what criu must be told about a
//! molt container (its mounts from the host, its stdio, its cgroup), running criu, and turning its
//! failures into errors that say why. runc talks to criu over its swrk RPC; the CLI takes the same
//! options, and keeps molt free of criu's protobuf definitions (see vendor-notes/criu.md).

mod dump;
mod restore;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use dump::{checkpoint, DumpOptions};
pub use restore::{restore, RestoreOptions};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// criu's own words from `criu check` (e.g. "vdso: Unexpected rt vDSO area bounds" on 6.18).
    #[error("container {id}: {action} needs CRIU, which cannot run on this kernel ({kernel}): `criu check` says: {reason}")]
    Unsupported { id: String, action: &'static str, kernel: String, reason: String },
    #[error("container {id}: {action}: criu is not installed ({source}); install Debian's criu package")]
    NoCriu { id: String, action: &'static str, source: std::io::Error },
    #[error("container {id}: {action} --{flag}: {reason}")]
    Flag { id: String, action: &'static str, flag: &'static str, reason: String },
    #[error("container {id}: {action}: {path}: {reason}")]
    Path { id: String, action: &'static str, path: PathBuf, reason: String },
    /// criu ran and failed: its log's error lines, and where the whole log is.
    #[error("container {id}: criu {action} failed ({status}): {reason}; full log: {log}")]
    Criu { id: String, action: &'static str, status: String, reason: String, log: PathBuf },
    #[error("container {id}: {action}: {reason}")]
    Step { id: String, action: &'static str, reason: String },
    #[error(transparent)]
    Container(#[from] crate::container::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// runc's `--manage-cgroups-mode` values, passed to criu's `--manage-cgroups`.
pub const CGROUP_MODES: &[&str] = &["soft", "full", "strict"];

/// The options `checkpoint` and `restore` share, as runc names them.
#[derive(Debug, Default, Clone)]
pub struct CriuOptions {
    pub image_dir: PathBuf,
    pub work_dir: Option<PathBuf>,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub manage_cgroups_mode: Option<String>,
    /// `--empty-ns`: runc accepts only "network", and always adds it (runc does not manage network
    /// devices, so criu neither dumps nor restores the network namespace's contents).
    pub empty_ns: Vec<String>,
    pub auto_dedup: bool,
    pub lazy_pages: bool,
}

impl CriuOptions {
    /// Flags with values criu would refuse, checked before anything is done.
    fn validate(&self, id: &str, action: &'static str) -> Result<()> {
        let flag = |flag, reason: String| Error::Flag { id: id.into(), action, flag, reason };
        if let Some(m) = &self.manage_cgroups_mode {
            if !CGROUP_MODES.contains(&m.as_str()) {
                return Err(flag("manage-cgroups-mode", format!("invalid manage cgroups mode {m:?}: use soft, full or strict")));
            }
        }
        if let Some(ns) = self.empty_ns.iter().find(|ns| ns.as_str() != "network") {
            return Err(flag("empty-ns", format!("namespace {ns:?} is not supported (only \"network\", as with runc)")));
        }
        Ok(())
    }

    /// The criu arguments both directions take.
    fn common_args(&self, log_file: &str) -> Vec<String> {
        let mut a: Vec<String> = vec!["-D".into(), self.image_dir.display().to_string()];
        if let Some(w) = &self.work_dir {
            a.extend(["-W".into(), w.display().to_string()]);
        }
        a.extend(["-v4".into(), "-o".into(), log_file.into(), "--empty-ns".into(), "net".into()]);
        a.push(match &self.manage_cgroups_mode {
            Some(m) => format!("--manage-cgroups={m}"),
            None => "--manage-cgroups".into(),
        });
        for (on, f) in [
            (self.tcp_established, "--tcp-established"),
            (self.ext_unix_sk, "--ext-unix-sk"),
            (self.shell_job, "--shell-job"),
            (self.file_locks, "--file-locks"),
            (self.auto_dedup, "--auto-dedup"),
            (self.lazy_pages, "--lazy-pages"),
        ] {
            if on {
                a.push(f.into());
            }
        }
        a
    }

    /// Where criu writes its log: the work directory, else the image directory (criu's default).
    fn log_path(&self, log_file: &str) -> PathBuf {
        self.work_dir.as_ref().unwrap_or(&self.image_dir).join(log_file)
    }
}

/// Makes `dir` (and its parents) when missing, 0700 as runc makes the image directory.
fn make_dir(id: &str, action: &'static str, dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Error::Path {
        id: id.into(),
        action,
        path: dir.into(),
        reason: e.to_string(),
    })
}

/// `criu check`: on a kernel criu does not support every dump fails, so say so before touching
/// the container, in criu's own words.
pub fn check(id: &str, action: &'static str) -> Result<()> {
    let out = Command::new("criu").arg("check").output().map_err(|source| Error::NoCriu { id: id.into(), action, source })?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let reason = error_lines(&text).unwrap_or_else(|| format!("exit status {}", out.status));
    let kernel = nix::sys::utsname::uname().map(|u| format!("Linux {}", u.release().to_string_lossy())).unwrap_or_else(|_| "Linux".into());
    Err(Error::Unsupported { id: id.into(), action, kernel, reason })
}

/// criu's "Error (file.c:123): what" lines as "what; what", the first ones first.
fn error_lines(text: &str) -> Option<String> {
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("Error (").or_else(|| l.split_once(": Error (").map(|(_, r)| r))?;
            Some(rest.split_once("): ").map(|(_, what)| what).unwrap_or(rest).trim())
        })
        .collect();
    (!lines.is_empty()).then(|| lines.into_iter().take(4).collect::<Vec<_>>().join("; "))
}

/// Runs `criu ARGS` to its end; a failure carries the error lines of its log.
fn run_criu(id: &str, action: &'static str, mut cmd: Command, log: &Path) -> Result<()> {
    crate::logging::debug(&format!("container {id}: {cmd:?}"));
    let status = cmd.status().map_err(|source| Error::NoCriu { id: id.into(), action, source })?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let reason = error_lines(&text).unwrap_or_else(|| "no error line in its log".into());
    Err(Error::Criu { id: id.into(), action, status: status.to_string(), reason, log: log.into() })
}

/// How the container's stdio reaches criu: a pipe or socket it recreates, or a file on a mount
/// outside the container (the host's /dev/null, a log file), which it can neither dump nor reopen
/// and is told is external. Restore gives the restoring molt's own fd N in each one's place.
/// Kept in the image directory as `descriptors.json` (runc's name), one key per fd 0, 1, 2.
const DESCRIPTORS: &str = "descriptors.json";

fn stdio_keys(pid: i32) -> Vec<String> {
    let container_mounts = mount_ids(pid);
    (0..3)
        .map(|fd| {
            let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).map(|l| l.display().to_string()).unwrap_or_default();
            if link.starts_with("pipe:") || link.starts_with("socket:") || link.is_empty() {
                return link;
            }
            let mnt = fd_mount_id(pid, fd);
            match (mnt, inode_of(&format!("/proc/{pid}/fd/{fd}"))) {
                (Some(m), Some(ino)) if !container_mounts.contains(&m) => format!("file[{m:x}:{ino:x}]"),
                _ => String::new(),
            }
        })
        .collect()
}

fn mount_ids(pid: i32) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

fn fd_mount_id(pid: i32, fd: i32) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    info.lines().find_map(|l| l.strip_prefix("mnt_id:")?.trim().parse().ok())
}

fn inode_of(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_error_lines_lose_their_source_positions() {
        let text = "Warn (criu/kerndat.c:1): x\nError (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n\
                    Error (criu/crtools.c:260): Could not initialize kernel features detection.\n";
        assert_eq!(error_lines(text).as_deref(), Some("vdso: Unexpected rt vDSO area bounds; Could not initialize kernel features detection."));
        assert_eq!(error_lines("(00.1) 1: Error (criu/mount.c:9): mnt: no root\n").as_deref(), Some("mnt: no root"));
        assert_eq!(error_lines("all good\n"), None);
    }

    #[test]
    fn bad_flag_values_are_refused_naming_the_flag() {
        let o = CriuOptions { manage_cgroups_mode: Some("loose".into()), ..Default::default() };
        assert!(o.validate("c1", "checkpoint").unwrap_err().to_string().contains("--manage-cgroups-mode"));
        let o = CriuOptions { empty_ns: vec!["pid".into()], ..Default::default() };
        assert!(o.validate("c1", "restore").unwrap_err().to_string().contains("--empty-ns"));
        let o = CriuOptions { empty_ns: vec!["network".into()], manage_cgroups_mode: Some("full".into()), ..Default::default() };
        assert!(o.validate("c1", "restore").is_ok());
    }
}
