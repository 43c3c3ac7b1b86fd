//! `restore`: the container's state, cgroup and volumes are made again from the bundle as
//! `create` makes them, then criu recreates the process tree from the image inside them: the
//! host mounts the image calls external are given their sources now (a volume's new staging
//! mount), the restoring molt's stdio takes the place of the pipes and host files the old stdio
//! was, and the restored init becomes molt's child (`--restore-sibling`).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::dump::{config_file_args, external_mounts, ns_key, refuse_terminal};
use super::{CriuOptions, Error, Result};
use crate::container::create::{self, CreateOptions};
use crate::container::{Container, Status};

#[derive(Debug, Default, Clone)]
pub struct RestoreOptions {
    pub criu: CriuOptions,
    pub create: CreateOptions,
    pub lsm_profile: Option<String>,
    pub lsm_mount_context: Option<String>,
}

const ACTION: &str = "restore";

pub fn restore(root: &Path, o: &RestoreOptions) -> Result<Container> {
    let id = o.create.id.clone();
    crate::container::validate_id(&id)?;
    if Container::load(root, &id).is_ok() {
        return Err(crate::container::Error::Exists(id).into());
    }
    o.criu.validate(&id, ACTION)?;
    let flag = |flag, reason: &str| Error::Flag { id: id.clone(), action: ACTION, flag, reason: reason.into() };
    if o.create.console_socket.is_some() {
        return Err(flag("console-socket", "a terminal cannot be restored through criu's command line (runc hands the pty master over with the RPC's orphan-pts-master)"));
    }
    if o.create.no_pivot {
        return Err(flag("no-pivot", "criu always pivots into the restored root; molt cannot restore without pivot_root"));
    }
    let keys = read_descriptors(&id, &o.criu.image_dir)?;
    let bundle = o.create.bundle.canonicalize().map_err(|e| Error::Path { id: id.clone(), action: ACTION, path: o.create.bundle.clone(), reason: e.to_string() })?;
    let spec = create::load_spec(&bundle)?;
    create::validate_process(&spec)?;
    let rootfs = create::rootfs_of(&bundle, &spec)?;
    let volumes = create::volumes_of(&spec)?;
    let mut c = Container { root: root.to_path_buf(), state: create::first_state(&o.create, bundle, rootfs, spec) };
    refuse_terminal(&c, ACTION)?;
    super::check(&id, ACTION)?;
    if let Some(w) = &o.criu.work_dir {
        super::make_dir(&id, ACTION, w)?;
    }
    crate::container::create_root(root).map_err(crate::container::io_err(root))?;
    crate::container::publish_state_dir(root, &c.state)?;
    match build(&mut c, o, volumes, &keys) {
        Ok(()) => Ok(c),
        Err(e) => {
            crate::container::delete::teardown(&mut c, false);
            Err(e)
        }
    }
}

/// The image's stdio keys, written by `checkpoint`: also the sign that the directory holds one.
fn read_descriptors(id: &str, image_dir: &Path) -> Result<Vec<String>> {
    let path_err = |path: PathBuf, reason: String| Error::Path { id: id.into(), action: ACTION, path, reason };
    if !image_dir.join("inventory.img").is_file() {
        let reason = match image_dir.is_dir() {
            true => "holds no checkpoint (no inventory.img): give the --image-path a checkpoint wrote".to_string(),
            false => "no such directory: give the --image-path a checkpoint wrote".to_string(),
        };
        return Err(path_err(image_dir.into(), reason));
    }
    let path = image_dir.join(super::DESCRIPTORS);
    let data = std::fs::read(&path).map_err(|e| path_err(path.clone(), format!("{e} (not a checkpoint molt or runc wrote)")))?;
    serde_json::from_slice(&data).map_err(|e| path_err(path, e.to_string()))
}

/// Each part is recorded in the state before it is made, as `create` does, so a failure (or a
/// later `delete`) releases all of it.
fn build(c: &mut Container, o: &RestoreOptions, volumes: Vec<(usize, crate::volume::VolumeSpec)>, keys: &[String]) -> Result<()> {
    let id = c.state.id.clone();
    let cg = create::make_cgroup(c, &o.create)?;
    let (binds, _) = create::acquire_volumes(c, &o.create, volumes)?;
    let spec = c.state.config.clone();
    let criu_root = c.dir().join("criu-root");
    std::fs::create_dir(&criu_root).map_err(crate::container::io_err(&criu_root))?;
    let pid_file = c.dir().join("criu.pid");

    let mut cmd = Command::new("criu");
    cmd.arg("restore").args(o.criu.common_args("restore.log"));
    cmd.arg("--root").arg(&criu_root).args(["--restore-detached", "--restore-sibling", "--evasive-devices"]);
    cmd.arg("--pidfile").arg(&pid_file);
    for (dest, i) in external_mounts(&spec)? {
        let source = match binds.iter().find(|(idx, _, _)| *idx == i) {
            Some((_, staging, _)) => staging.clone(),
            None => bind_source(&c.state.bundle, &spec, i),
        };
        cmd.arg("--external").arg(format!("mnt[{dest}]:{}", source.display()));
    }
    for (fd, key) in keys.iter().enumerate() {
        if key.starts_with("pipe:") || key.starts_with("file[") {
            cmd.args(["--inherit-fd", &format!("fd[{fd}]:{key}")]);
        }
    }
    let _ns_fds = namespace_args(&id, &spec, &mut cmd)?;
    if let Some(p) = &o.lsm_profile {
        cmd.args(["--lsm-profile", p]);
    }
    if let Some(p) = &o.lsm_mount_context {
        cmd.args(["--lsm-mount-context", p]);
    }
    cmd.args(config_file_args(c));
    in_cgroup_with_root(&mut cmd, &cg, &c.state.rootfs, &criu_root)?;
    super::run_criu(&id, ACTION, cmd, &o.criu.log_path("restore.log"))?;
    let _ = std::fs::remove_dir(&criu_root);

    let pid = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()).ok_or_else(|| Error::Step {
        id: id.clone(),
        action: ACTION,
        reason: format!("criu wrote no pid to {}", pid_file.display()),
    })?;
    c.state.pid = pid;
    c.state.pid_start_time = crate::container::start_time(pid).unwrap_or(0);
    c.state.status = Status::Running;
    c.save()?;
    // criu leaves the network namespace empty (runc's rule: runtimes do not hand network devices
    // to criu); the veth of molt's annotations is set up in it again.
    create::attach_network(c, &o.create, crate::spec::has_namespace(&spec, LinuxNamespaceType::Network, true))?;
    if let Some(pf) = &o.create.pid_file {
        create::write_pid_file(pf, pid)?;
    }
    Ok(())
}

/// A bind mount's source as the init resolves it: relative to the bundle when relative.
fn bind_source(bundle: &Path, spec: &Spec, index: usize) -> PathBuf {
    let src = spec.mounts().as_ref().and_then(|ms| ms.get(index)).and_then(|m| m.source().clone()).unwrap_or_default();
    if src.is_absolute() {
        src
    } else {
        bundle.join(src)
    }
}

/// Namespaces the container joined by path: network and pid ones were external to the dump and
/// are handed to criu as inherited fds (runc's way); the others criu joins itself.
fn namespace_args(id: &str, spec: &Spec, cmd: &mut Command) -> Result<Vec<OwnedFd>> {
    use LinuxNamespaceType as T;
    let mut fds = vec![];
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
    for ns in namespaces {
        let Some(path) = ns.path().clone() else { continue };
        let path_err = |reason: String| Error::Path { id: id.into(), action: ACTION, path: path.clone(), reason };
        let criu_name = match ns.typ() {
            T::Network => "net",
            T::Pid => "pid",
            T::Uts => "uts",
            T::Ipc => "ipc",
            T::Mount => "mnt",
            T::User => "user",
            T::Time => "time",
            T::Cgroup => return Err(path_err("criu cannot join a cgroup namespace by path (runc refuses it too)".into())),
        };
        if matches!(ns.typ(), T::Network | T::Pid) {
            let fd: OwnedFd = std::fs::File::open(&path).map_err(|e| path_err(format!("the namespace to restore into: {e}")))?.into();
            // Inherited by criu under its own number.
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).map_err(|e| path_err(e.to_string()))?;
            cmd.args(["--inherit-fd", &format!("fd[{}]:{}", fd.as_raw_fd(), ns_key(criu_name))]);
            fds.push(fd);
        } else {
            cmd.args(["--join-ns", &format!("{criu_name}:{}", path.display())]);
        }
    }
    Ok(fds)
}

/// criu runs in the container's cgroup, so the tasks it forks start there (runc moves its criu in
/// the same way), and in a mount namespace of its own where the rootfs is bound on `criu_root`:
/// criu needs the root to be a mount point, and the bind goes with criu, whatever becomes of molt.
fn in_cgroup_with_root(cmd: &mut Command, cg: &crate::cgroups::Cgroup, rootfs: &Path, criu_root: &Path) -> Result<()> {
    let cstr = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| Error::Step { id: String::new(), action: ACTION, reason: e.to_string() });
    let procs: Vec<CString> = cg.hierarchies().iter().map(|h| cstr(&h.dir.join("cgroup.procs"))).collect::<Result<_>>()?;
    let (src, dst, slash) = (cstr(rootfs)?, cstr(criu_root)?, cstr(Path::new("/"))?);
    // SAFETY: between fork and exec only async-signal-safe calls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return fail();
                }
                libc::close(fd);
            }
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(std::ptr::null(), slash.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0
                || libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND | libc::MS_REC, std::ptr::null()) != 0
            {
                return fail();
            }
            Ok(())
        });
    }
    Ok(())
}
