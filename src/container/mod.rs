//! A container as the runtime process sees it: its id, its state directory under the molt root, its
//! recorded state, and the truth about its status read from the kernel. One file per lifecycle
//! operation next to this one.

pub(crate) mod config;
pub mod create;
pub mod delete;
pub mod exec;
pub mod kill;
pub mod notify;
pub mod sealed_exe;
mod spawn;
pub mod start;
pub mod terminal;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroup;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid container id {0:?}: use 1-1024 characters from [A-Za-z0-9_+.-], not starting with '.'")]
    InvalidId(String),
    #[error("container id {0:?} is reserved: molt keeps its volume registry and image store under these names in its root")]
    ReservedId(String),
    #[error("container {0} already exists")]
    Exists(String),
    /// Keeps runc's "already exists" words (engines match them) and says how to get the id back.
    #[error("container {0} already exists: a create of it was interrupted; `molt delete --force {0}` removes what it left")]
    ExistsInterrupted(String),
    /// A state directory without its state: made by a molt older than the staged create, or by hand.
    #[error("container {id}: {dir} holds no state.json (a create or delete was interrupted); `molt delete --force {id}` removes it")]
    NoState { id: String, dir: PathBuf },
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container {id} is {status}, {action} needs it {wanted}")]
    WrongStatus { id: String, status: Status, action: &'static str, wanted: &'static str },
    /// containerd and docker key on the words "container not running" (runc's ErrNotRunning).
    #[error("cannot signal {0}: container not running")]
    NotRunning(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("state of container {id} in {path} is unreadable: {reason}")]
    BadState { id: String, path: PathBuf, reason: String },
    #[error("bundle {bundle}: {reason}")]
    Bundle { bundle: PathBuf, reason: String },
    #[error("config.json {field}: {reason}")]
    Config { field: String, reason: String },
    #[error("container {id}: {step}: {reason}")]
    Step { id: String, step: &'static str, reason: String },
    #[error("container {id}: {step}: {errno}")]
    Sys { id: String, step: String, errno: nix::errno::Errno },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
}

pub type Result<T> = std::result::Result<T, Error>;

pub fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What molt keeps about a container between commands: `<root>/<id>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    /// The status last written by molt; `Container::status` corrects it from the kernel.
    pub status: Status,
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: tells our init from a later process that reused its pid.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    pub config: oci_spec::runtime::Spec,
    pub cgroup: Option<Cgroup>,
    #[serde(default)]
    pub net: Option<crate::net::Attachment>,
    /// Volume keys this container holds in the volume registry.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Network namespace kept alive by a bind mount (upgrade hand-over, or `keep` mode).
    #[serde(default)]
    pub netns_pin: Option<PathBuf>,
    #[serde(default)]
    pub use_systemd_cgroup: bool,
    /// The `molt create` building the container (pid and start time): while it lives, a pid of 0
    /// means the init is not cloned yet; once it is gone, the create was interrupted.
    #[serde(default)]
    pub creator_pid: i32,
    #[serde(default)]
    pub creator_start_time: u64,
}

impl State {
    pub fn annotations(&self) -> HashMap<String, String> {
        self.config.annotations().clone().unwrap_or_default()
    }
}

pub struct Container {
    pub root: PathBuf,
    pub state: State,
}

/// Directories of molt's own under a root, beside the containers': never a container's id (a
/// `delete --force volumes` would take the volume registry with it), never listed.
pub const RESERVED_IDS: &[&str] = &["volumes", "images"];

pub fn validate_id(id: &str) -> Result<()> {
    if RESERVED_IDS.contains(&id) {
        return Err(Error::ReservedId(id.to_string()));
    }
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "_+.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

pub fn state_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Where `molt upgrade --derive` keeps the configs it derived for `id` (they go with the id).
pub fn derived_dir(root: &Path, id: &str) -> PathBuf {
    root.join(".derived").join(id)
}

impl Container {
    pub fn load(root: &Path, id: &str) -> Result<Container> {
        let c = Container::load_renamed(root, id)?;
        // A state copied or moved under another name would have molt act on the wrong container
        // (its pid, cgroup and mounts) while answering for this one.
        if c.state.id != id {
            return Err(Error::BadState {
                id: id.into(),
                path: state_dir(root, id).join("state.json"),
                reason: format!("it records container id {:?}; a state directory must carry its container's id", c.state.id),
            });
        }
        Ok(c)
    }

    /// The state in `id`'s directory whatever id it records: only for the upgrade, which renames
    /// state directories and then corrects the id inside (also on resume after a crash between).
    pub fn load_renamed(root: &Path, id: &str) -> Result<Container> {
        validate_id(id)?;
        let dir = state_dir(root, id);
        let path = dir.join("state.json");
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.is_dir() => return Err(Error::NoState { id: id.into(), dir }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(id.into())),
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        let state: State = serde_json::from_slice(&data).map_err(|e| Error::BadState {
            id: id.into(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Container { root: root.to_path_buf(), state })
    }

    pub fn dir(&self) -> PathBuf {
        state_dir(&self.root, &self.state.id)
    }

    pub fn fifo_path(&self) -> PathBuf {
        self.dir().join("exec.fifo")
    }

    /// Written with fsync and rename so a crash leaves the old or the new state, never half of one.
    pub fn save(&self) -> Result<()> {
        let path = self.dir().join("state.json");
        let data = serde_json::to_vec(&self.state).map_err(|e| Error::BadState {
            id: self.state.id.clone(),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &data)
    }

    /// The status as the kernel sees it now, not as it was last written.
    pub fn status(&self) -> Status {
        let s = &self.state;
        if s.status == Status::Creating && s.pid <= 0 && !self.create_interrupted() {
            return Status::Creating;
        }
        if s.pid <= 0 || !process_is(s.pid, s.pid_start_time) {
            return Status::Stopped;
        }
        if s.status == Status::Creating {
            return Status::Creating;
        }
        if let Some(cg) = &s.cgroup {
            if cg.is_frozen().unwrap_or(false) {
                return Status::Paused;
            }
        }
        if self.fifo_path().exists() {
            Status::Created
        } else {
            Status::Running
        }
    }

    /// The state says "creating" but the `molt create` that wrote it is gone (killed, or a crash):
    /// nothing will finish it, and only a delete can free the id.
    pub fn create_interrupted(&self) -> bool {
        let s = &self.state;
        s.status == Status::Creating && (s.creator_pid <= 0 || !process_is(s.creator_pid, s.creator_start_time))
    }

    /// The runtime-spec state document (`molt state`, and hooks' stdin).
    pub fn oci_state(&self, status: Status) -> OciState {
        let s = &self.state;
        let ann = s.annotations();
        OciState {
            oci_version: crate::spec::OCI_VERSION.into(),
            id: s.id.clone(),
            pid: if status == Status::Stopped { 0 } else { s.pid },
            status,
            bundle: s.bundle.clone(),
            rootfs: s.rootfs.clone(),
            created: s.created.clone(),
            owner: s.owner.clone(),
            annotations: (!ann.is_empty()).then_some(ann),
        }
    }
}

/// The runtime-spec state, its fields in the order runc prints them.
#[derive(Debug, Clone, Serialize)]
pub struct OciState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

impl std::fmt::Display for OciState {
    /// Compact JSON, as hooks get it on stdin.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

/// The process as it can be set up on this host: capabilities the runtime does not hold itself are
/// left out with a warning, as runc does ("ignoring unknown or unavailable capabilities").
pub fn usable_process(id: &str, mut p: oci_spec::runtime::Process) -> oci_spec::runtime::Process {
    let dropped = crate::init::process::drop_unavailable_caps(&mut p);
    if !dropped.is_empty() {
        crate::logging::warn(&format!("container {id}: ignoring unknown or unavailable capabilities: {}", dropped.join(", ")));
    }
    p
}

/// The state root, made when missing: only root may look into it (0700, as runc makes it), since
/// it holds every container's config and exec fifo.
pub fn create_root(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(root)
}

/// Names in the root for a state directory on its way in (`create`) or out (`delete`): a leading
/// dot keeps them apart from ids, and the pid and start time of the molt at work let the next
/// molt remove what a killed one left.
const STAGED_PREFIXES: [&str; 2] = [".creating-", ".deleting-"];

fn staged_name(prefix: &str) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let me = std::process::id() as i32;
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{me}-{}-{seq}", start_time(me).unwrap_or(0))
}

/// `state`'s directory made and given its first state.json under a staged name, then renamed to
/// the id with RENAME_NOREPLACE: the id appears with a state in it or not at all, so a create
/// killed at any point never leaves an empty directory that no command would own.
pub fn publish_state_dir(root: &Path, state: &State) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    sweep_staged(root);
    let staged = root.join(staged_name(STAGED_PREFIXES[0]));
    // 0711: the init, maybe in a user namespace, opens the exec fifo inside by path.
    fs::DirBuilder::new().mode(0o711).create(&staged).map_err(io_err(&staged))?;
    let data = serde_json::to_vec(state).map_err(|e| Error::BadState {
        id: state.id.clone(),
        path: staged.join("state.json"),
        reason: e.to_string(),
    })?;
    let dir = state_dir(root, &state.id);
    let res = write_atomic(&staged.join("state.json"), &data).and_then(|_| {
        nix::fcntl::renameat2(None, &staged, None, &dir, nix::fcntl::RenameFlags::RENAME_NOREPLACE).map_err(|errno| match errno {
            nix::errno::Errno::EEXIST => exists_error(root, &state.id),
            errno => Error::Sys { id: state.id.clone(), step: format!("rename {} to {}", staged.display(), dir.display()), errno },
        })
    });
    if res.is_err() {
        let _ = fs::remove_dir_all(&staged);
    }
    res
}

/// Why `id` cannot be created again, with what to do when nothing is at work on it. A create
/// that looks interrupted is looked at again for up to a second before it is called so: a
/// concurrent create of the id that is alive and at work moves on (or its creator is seen) in
/// that time, and a wrong "interrupted" would send the caller to `delete --force` a live one.
fn exists_error(root: &Path, id: &str) -> Error {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match Container::load(root, id) {
            Err(e @ Error::NoState { .. }) => return e,
            Ok(c) if c.create_interrupted() => {
                if std::time::Instant::now() >= deadline {
                    return Error::ExistsInterrupted(id.into());
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            _ => return Error::Exists(id.into()),
        }
    }
}

/// The id's directory renamed away in one step, then removed: a delete killed while removing
/// leaves the id free (and a staged name the next create or delete removes), never a directory
/// whose state.json is gone but whose fifo or pid file keeps the id taken.
pub fn remove_state_dir(root: &Path, dir: &Path) -> std::io::Result<()> {
    let gone = root.join(staged_name(STAGED_PREFIXES[1]));
    match fs::rename(dir, &gone) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let res = fs::remove_dir_all(&gone);
    sweep_staged(root);
    res
}

/// Staged directories of a molt that is gone. Nothing outside them refers to one: a creating one
/// holds only the first state (no cgroup or process was made for it yet), a deleting one what
/// was left after everything was released.
pub fn sweep_staged(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = STAGED_PREFIXES.iter().find_map(|p| name.strip_prefix(p)) else { continue };
        let mut it = rest.split('-').map(|w| w.parse::<u64>().ok());
        let (Some(Some(pid)), Some(Some(start))) = (it.next(), it.next()) else { continue };
        if !process_is(pid as i32, start) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

pub fn write_atomic(dest: &Path, data: &[u8]) -> Result<()> {
    write_file_atomic(dest, data).map_err(io_err(dest))
}

/// `data` to `dest` through a temporary file beside it, fsync'ed and renamed over `dest`. The
/// temporary name is unique and created with O_EXCL|O_NOFOLLOW: a name known in advance in a
/// directory others can write (a pid file's) could be a planted symlink, and writing through it
/// would overwrite whatever it points to.
pub fn write_file_atomic(dest: &Path, data: &[u8]) -> std::io::Result<()> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dest.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mut attempt = 0;
    let (tmp, mut f) = loop {
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}-{nanos:x}-{seq}.tmp", std::process::id()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(e),
        }
    };
    let res = f.write_all(data).and_then(|_| f.sync_all()).and_then(|_| fs::rename(&tmp, dest));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Field 22 (starttime) of /proc/PID/stat, None once the process is gone.
pub fn start_time(pid: i32) -> Option<u64> {
    crate::procfs::stat(pid).ok().map(|s| s.start_time)
}

/// Our process still exists and is not a zombie waiting for its reaper.
pub fn process_is(pid: i32, start: u64) -> bool {
    crate::procfs::stat(pid).is_ok_and(|s| s.start_time == start && !matches!(s.state, 'Z' | 'X'))
}

/// All containers under a root, sorted by id; unreadable entries are skipped, with a warning
/// for a directory that has no state (it keeps its id taken until deleted).
pub fn list(root: &Path) -> Result<Vec<Container>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::Io { path: root.into(), source: e }),
    };
    let mut out = vec![];
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        // Reserved names (the volume registry, the image store) fail validate_id too.
        if validate_id(&name).is_err() || !entry.path().is_dir() {
            continue;
        }
        match Container::load(root, &name) {
            Ok(c) => out.push(c),
            Err(e @ Error::NoState { .. }) => crate::logging::warn(&e.to_string()),
            Err(_) => {}
        }
    }
    out.sort_by(|a, b| a.state.id.cmp(&b.state.id));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "abc-1.2_3+x", "A0"] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "a/b", ".hidden", "a b", "x\n", "volumes", "images"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_id("volumes").unwrap_err().to_string().contains("reserved"));
    }

    #[test]
    fn own_start_time_is_read() {
        let me = std::process::id() as i32;
        let st = start_time(me).expect("own stat");
        assert!(process_is(me, st));
        assert!(!process_is(me, st + 1));
    }
}
