//! Attaching one volume at its staging path and taking it down again, per kind. An attach
//! remembers each effect it has had and undoes them in reverse when a later step fails, so a
//! failed attach leaves nothing mounted, logged in or bound.

use super::command::{self, CommandSpec, RunError};
use super::loopdev;
use super::{Source, VolumeSpec};
use super::sys;
use super::VolumeError;
use nix::errno::Errno;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long molt waits for things outside its control.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// One helper program (mount.nfs, iscsiadm, mkfs).
    pub command: Duration,
    /// The iSCSI LUN's by-path device to appear after login.
    pub device: Duration,
    /// How long a user may exist without its container's state.json before `repair` drops it
    /// (the container is being created in that window).
    pub user_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command: Duration::from_secs(60),
            device: Duration::from_secs(30),
            user_grace: Duration::from_secs(120),
        }
    }
}

/// What an attach produced, kept in the record so that detach knows what to take down.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attached {
    /// The block device mounted (loop device, iSCSI disk, local device); None for NFS.
    pub device: Option<PathBuf>,
    pub loop_number: Option<u32>,
    /// molt logged in to the iSCSI target and must log out when its last LUN goes.
    pub session_owned: bool,
    /// Attached read-only because the device refused writes and the first user asked `ro`.
    pub read_only: bool,
}

enum Undo {
    Unmount,
    Loop(loopdev::LoopDevice),
    Logout { portal: String, port: u16, iqn: String },
}

pub(crate) struct Attach<'a> {
    pub spec: &'a VolumeSpec,
    pub staging: &'a Path,
    pub timeouts: Timeouts,
    /// Some(owned) when another molt attachment already uses the same iSCSI target.
    pub target_shared: Option<bool>,
}

impl Attach<'_> {
    fn key(&self) -> &str {
        &self.spec.key
    }

    fn cmd_err(&self, step: &str, cmd: &CommandSpec, e: RunError) -> VolumeError {
        VolumeError::Command {
            key: self.key().to_string(),
            step: step.to_string(),
            command: cmd.to_string(),
            detail: e.to_string(),
        }
    }

    /// Attaches, calling `progress` once something exists that a crash would leave behind.
    pub fn run(&self, progress: &mut dyn FnMut(&Attached) -> Result<(), VolumeError>) -> Result<Attached, VolumeError> {
        let mut undo = Vec::new();
        let mut out = Attached::default();
        match self.steps(&mut undo, &mut out, progress) {
            Ok(()) => {
                // Dropping the loop handle now hands the device's lifetime to the mount (autoclear).
                drop(undo);
                Ok(out)
            }
            Err(error) => {
                let failures = self.undo(undo);
                if failures.is_empty() {
                    Err(error)
                } else {
                    Err(VolumeError::UndoFailed { error: Box::new(error), undo: failures })
                }
            }
        }
    }

    fn undo(&self, undo: Vec<Undo>) -> Vec<String> {
        let mut failures = Vec::new();
        for u in undo.into_iter().rev() {
            match u {
                Undo::Unmount => {
                    if let Err(e) = sys::unmount(self.staging) {
                        failures.push(format!("unmount {}: {e}", self.staging.display()));
                    }
                }
                Undo::Loop(dev) => {
                    let path = dev.path.clone();
                    if let Err(e) = dev.detach() {
                        failures.push(format!("detach {}: {}: {}", path.display(), e.step, e.errno));
                    }
                }
                Undo::Logout { portal, port, iqn } => {
                    let cmd = command::iscsi_logout(&portal, port, &iqn);
                    if let Err(e) = command::run(&cmd, self.timeouts.command) {
                        failures.push(format!("`{cmd}`: {e}"));
                    }
                }
            }
        }
        failures
    }

    fn steps(
        &self,
        undo: &mut Vec<Undo>,
        out: &mut Attached,
        progress: &mut dyn FnMut(&Attached) -> Result<(), VolumeError>,
    ) -> Result<(), VolumeError> {
        let spec = self.spec;
        match &spec.source {
            Source::Nfs { .. } => self.attach_nfs(undo),
            Source::Iscsi { portal, port, iqn, lun } => {
                self.require_kernel("iscsi", "check the kernel's iSCSI initiator", "iscsi_tcp", "iSCSI initiator")?;
                let discover = command::iscsi_discovery(portal, *port);
                command::run(&discover, self.timeouts.command)
                    .map_err(|e| self.cmd_err("iscsi discovery", &discover, e))?;
                let login = command::iscsi_login(portal, *port, iqn);
                match command::run(&login, self.timeouts.command) {
                    Ok(_) => {
                        out.session_owned = true;
                        undo.push(Undo::Logout { portal: portal.clone(), port: *port, iqn: iqn.clone() });
                        progress(out)?;
                    }
                    // ISCSI_ERR_SESS_EXISTS: someone is logged in already; the session is ours to
                    // end only if it is another molt attachment's.
                    Err(RunError::Failed { code: Some(15), .. }) => {
                        out.session_owned = self.target_shared.unwrap_or(false);
                    }
                    Err(e) => return Err(self.cmd_err("iscsi login", &login, e)),
                }
                let by_path = command::iscsi_by_path(portal, *port, iqn, *lun);
                let device = self.wait_for_device(Path::new(&by_path))?;
                out.device = Some(device.clone());
                progress(out)?;
                self.mkfs_and_mount(&device, undo, out)
            }
            Source::Block { path } => {
                out.device = Some(path.clone());
                self.mkfs_and_mount(path, undo, out)
            }
            Source::Image { path } => {
                let dev = match loopdev::attach(path, false) {
                    Ok(d) => d,
                    // A read-only image can still serve a first user who asked for ro.
                    Err(e) if spec.read_only() && matches!(e.errno, Errno::EROFS | Errno::EACCES | Errno::EPERM) => {
                        out.read_only = true;
                        loopdev::attach(path, true)
                            .map_err(|e| VolumeError::sys(self.key(), format!("loop: {}", e.step), e.errno))?
                    }
                    Err(e) => return Err(VolumeError::sys(self.key(), format!("loop: {}", e.step), e.errno)),
                };
                out.device = Some(dev.path.clone());
                out.loop_number = Some(dev.number);
                let device = dev.path.clone();
                undo.push(Undo::Loop(dev));
                progress(out)?;
                self.mkfs_and_mount(&device, undo, out)
            }
        }
    }

    /// The kernel must know `fs` (maybe after loading `module`): a mount of an unknown type
    /// would fail with a bare ENODEV, and an NFS mount.nfs may retry for minutes.
    fn require_kernel(&self, fs: &str, step: &str, module: &str, what: &str) -> Result<(), VolumeError> {
        let present = |fs: &str| {
            if fs == "iscsi" {
                Path::new("/sys/module/iscsi_tcp").exists()
            } else {
                sys::kernel_has_fs(fs)
            }
        };
        if present(fs) {
            return Ok(());
        }
        let probe = command::modprobe(module);
        let result = command::run(&probe, self.timeouts.command);
        if present(fs) {
            return Ok(());
        }
        let why = match result {
            Ok(_) => "the module loaded but the kernel still lacks it".to_string(),
            Err(e) => e.to_string(),
        };
        Err(VolumeError::failed(
            self.key(),
            step,
            format!("{}: kernel has no {what} ({probe} failed: {why})", self.spec.source.kind()),
        ))
    }

    fn attach_nfs(&self, undo: &mut Vec<Undo>) -> Result<(), VolumeError> {
        let spec = self.spec;
        let module = if spec.fstype == "nfs4" { "nfsv4" } else { "nfs" };
        self.require_kernel(&spec.fstype, "check the kernel's NFS client", module, "NFS client")?;
        let staging = self.staging.to_string_lossy();
        let cmd = command::nfs_mount(&spec.source, &spec.fstype, &staging, &spec.data_options);
        let result = command::run(&cmd, self.timeouts.command);
        // A mount killed at the deadline may have completed in the kernel anyway.
        let mounted = sys::mount_at(self.staging).ok().flatten().is_some();
        if mounted {
            undo.push(Undo::Unmount);
        }
        match result {
            Ok(_) if mounted => Ok(()),
            Ok(_) => Err(VolumeError::failed(
                self.key(),
                "nfs mount",
                format!("`{cmd}` succeeded but {} is not a mount point", self.staging.display()),
            )),
            Err(e) => Err(self.cmd_err("nfs mount", &cmd, e)),
        }
    }

    fn wait_for_device(&self, by_path: &Path) -> Result<PathBuf, VolumeError> {
        let deadline = Instant::now() + self.timeouts.device;
        loop {
            if let Ok(dev) = std::fs::canonicalize(by_path) {
                return Ok(dev);
            }
            if Instant::now() >= deadline {
                return Err(VolumeError::failed(
                    self.key(),
                    "wait for the iSCSI disk",
                    format!(
                        "{} did not appear within {}s after login (LUN absent, or udev not running)",
                        by_path.display(),
                        self.timeouts.device.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The filesystem blkid finds on `device`, None when it finds no signature at all.
    fn probe(&self, device: &Path) -> Result<Option<String>, VolumeError> {
        let cmd = command::blkid_probe(&device.to_string_lossy());
        match command::run(&cmd, self.timeouts.command) {
            Ok(out) => Ok(Some(out.trim().to_string()).filter(|s| !s.is_empty())),
            Err(RunError::Failed { code: Some(2), .. }) => Ok(None),
            Err(e) => Err(self.cmd_err("probe the filesystem", &cmd, e)),
        }
    }

    fn mkfs_and_mount(&self, device: &Path, undo: &mut Vec<Undo>, out: &mut Attached) -> Result<(), VolumeError> {
        let spec = self.spec;
        if spec.mkfs {
            match self.probe(device)? {
                None => {
                    let cmd = command::mkfs(&spec.fstype, &device.to_string_lossy());
                    command::run(&cmd, self.timeouts.command).map_err(|e| self.cmd_err("mkfs", &cmd, e))?;
                }
                Some(found) if found == spec.fstype => {}
                Some(found) => {
                    return Err(VolumeError::failed(
                        self.key(),
                        "mkfs",
                        format!(
                            "{} already holds a filesystem of type {found}, the mount says {}: molt formats only empty devices",
                            device.display(),
                            spec.fstype
                        ),
                    ))
                }
            }
        }
        let mut result = sys::mount_device(device, self.staging, &spec.fstype, &spec.data_options, out.read_only);
        if matches!(result, Err(Errno::EROFS) | Err(Errno::EACCES)) && spec.read_only() && !out.read_only {
            out.read_only = true;
            result = sys::mount_device(device, self.staging, &spec.fstype, &spec.data_options, true);
        }
        match result {
            Ok(()) => {
                undo.push(Undo::Unmount);
                Ok(())
            }
            Err(errno) => {
                // Say what is really on the device: the usual cause is a type mismatch.
                let found = match self.probe(device) {
                    Ok(Some(t)) => format!(" (blkid finds {t})"),
                    Ok(None) => format!(" (blkid finds no filesystem; add {} to format it)", super::spec::MKFS_OPTION),
                    Err(_) => String::new(),
                };
                Err(VolumeError::sys(
                    self.key(),
                    format!(
                        "mount {} on {} as {}{found}",
                        device.display(),
                        self.staging.display(),
                        spec.fstype
                    ),
                    errno,
                ))
            }
        }
    }
}

/// Takes down what an attach set up, in reverse: unmount, unbind the loop device, log out of
/// the iSCSI target when `logout` says this attachment ends molt's session. Safe to repeat.
pub(crate) fn take_down(
    spec: &VolumeSpec,
    staging: &Path,
    attached: &Attached,
    logout: bool,
    timeouts: Timeouts,
) -> Result<(), VolumeError> {
    let key = spec.key.as_str();
    if sys::mount_at(staging)
        .map_err(|e| VolumeError::io(key, "read mountinfo", "/proc/self/mountinfo", e))?
        .is_some()
    {
        sys::unmount(staging).map_err(|e| VolumeError::sys(key, format!("unmount {}", staging.display()), e))?;
    }
    if let (Source::Image { path }, Some(n)) = (&spec.source, attached.loop_number) {
        loopdev::release(n, path).map_err(|e| VolumeError::sys(key, format!("loop: {}", e.step), e.errno))?;
    }
    if let (Source::Iscsi { portal, port, iqn, .. }, true) = (&spec.source, logout) {
        let cmd = command::iscsi_logout(portal, *port, iqn);
        match command::run(&cmd, timeouts.command) {
            // ISCSI_ERR_NO_OBJS_FOUND: no session left, which is the goal.
            Ok(_) | Err(RunError::Failed { code: Some(21), .. }) => {}
            Err(e) => {
                return Err(VolumeError::Command {
                    key: key.to_string(),
                    step: "iscsi logout".into(),
                    command: cmd.to_string(),
                    detail: e.to_string(),
                })
            }
        }
    }
    Ok(())
}
