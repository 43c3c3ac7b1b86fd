//! `checkpoint`: criu dumps the container's process tree into an image directory. Mounts that
//! come from the host (binds, volumes) and namespaces the container joined are external to criu:
//! the image names them, and `restore` says where they are now. The container is gone afterwards
//! (as with runc) unless `--leave-running` or `--pre-dump`.

use std::path::{Path, PathBuf};
use std::process::Command;

use oci_spec::runtime::LinuxNamespaceType;

use super::{CriuOptions, Error, Result};
use crate::container::{Container, Status};

#[derive(Debug, Default, Clone)]
pub struct DumpOptions {
    pub criu: CriuOptions,
    pub leave_running: bool,
    pub pre_dump: bool,
    /// `--parent-path`: the previous (pre-)dump, relative to the image directory.
    pub parent_path: Option<PathBuf>,
    /// `--page-server ADDRESS:PORT`
    pub page_server: Option<String>,
    pub status_fd: Option<i32>,
}

const ACTION: &str = "checkpoint";

pub fn checkpoint(c: &mut Container, o: &DumpOptions) -> Result<()> {
    let id = c.state.id.clone();
    let status = c.status();
    if !matches!(status, Status::Running | Status::Paused) {
        return Err(crate::container::Error::WrongStatus { id, status, action: ACTION, wanted: "running or paused" }.into());
    }
    o.criu.validate(&id, ACTION)?;
    let flag = |flag, reason: String| Error::Flag { id: id.clone(), action: ACTION, flag, reason };
    let page_server = o.page_server.as_deref().map(parse_page_server).transpose().map_err(|r| flag("page-server", r))?;
    if o.parent_path.as_ref().is_some_and(|p| p.is_absolute()) {
        return Err(flag("parent-path", "--parent-path must be relative (to --image-path)".into()));
    }
    refuse_terminal(c, ACTION)?;
    // Before anything is made: on a kernel criu cannot work with, the container stays as it is.
    super::check(&id, ACTION)?;
    super::make_dir(&id, ACTION, &o.criu.image_dir)?;
    // runc's order: the image directory first, then the parent is looked for from it.
    if let Some(p) = &o.parent_path {
        check_parent(&o.criu.image_dir, p).map_err(|r| flag("parent-path", r))?;
    }
    if let Some(w) = &o.criu.work_dir {
        super::make_dir(&id, ACTION, w)?;
    }
    let pid = c.state.pid;
    // Restore gives its own stdio in place of these (runc keeps the same file).
    let keys = super::stdio_keys(pid);
    let descriptors = o.criu.image_dir.join(super::DESCRIPTORS);
    let data = serde_json::to_vec(&keys).map_err(|e| Error::Step { id: id.clone(), action: ACTION, reason: e.to_string() })?;
    crate::container::write_atomic(&descriptors, &data)?;

    let mut cmd = Command::new("criu");
    cmd.arg(if o.pre_dump { "pre-dump" } else { "dump" }).args(["-t", &pid.to_string()]);
    cmd.args(o.criu.common_args("dump.log"));
    if o.leave_running {
        cmd.arg("--leave-running");
    }
    if let Some(dir) = freezer_dir(c) {
        cmd.arg(format!("--freeze-cgroup={}", dir.display()));
    }
    for ext in externals(c, &keys)? {
        cmd.args(["--external", &ext]);
    }
    if let Some(p) = &o.parent_path {
        cmd.arg("--prev-images-dir").arg(p).arg("--track-mem");
    } else if o.pre_dump {
        cmd.arg("--track-mem");
    }
    if let Some((addr, port)) = page_server {
        cmd.args(["--page-server", "--address", &addr, "--port", &port.to_string()]);
    }
    if let Some(fd) = o.status_fd {
        cmd.args(["--status-fd", &fd.to_string()]);
    }
    cmd.args(config_file_args(c));
    super::run_criu(&id, ACTION, cmd, &o.criu.log_path("dump.log"))?;
    if !(o.leave_running || o.pre_dump) {
        // criu has ended every process; the rest goes as with `delete` (runc destroys it too).
        crate::container::delete::teardown(c, true);
    }
    Ok(())
}

/// A terminal's pty master lives outside the container (with whoever holds the console socket):
/// runc restores it through the RPC's orphan-pts-master, which criu's command line lacks.
pub(super) fn refuse_terminal(c: &Container, action: &'static str) -> Result<()> {
    if c.state.config.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false) {
        return Err(Error::Step {
            id: c.state.id.clone(),
            action,
            reason: "process.terminal is true: molt drives criu by its command line, which cannot hand a restored pty master to a console socket (runc uses the RPC's orphan-pts-master); run the container without a terminal".into(),
        });
    }
    Ok(())
}

/// runc's check: ADDRESS:PORT with both parts.
fn parse_page_server(s: &str) -> std::result::Result<(String, u16), String> {
    let bad = || format!("{s:?}: use --page-server ADDRESS:PORT to specify page server");
    let (addr, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    if addr.is_empty() {
        return Err(bad());
    }
    let port = port.parse::<u16>().map_err(|_| format!("{s:?}: invalid port number"))?;
    Ok((addr.to_string(), port))
}

/// runc's rule: a directory, relative to the image directory.
fn check_parent(image_dir: &Path, parent: &Path) -> std::result::Result<(), String> {
    let real = image_dir.join(parent);
    match std::fs::metadata(&real) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("invalid --parent-path: {}: not a directory", real.display())),
        Err(e) => Err(format!("invalid --parent-path: {}: {e}", real.display())),
    }
}

/// criu freezes the tree through the cgroup (v1 freezer, or v2's cgroup.freeze) rather than
/// stopping each task with ptrace.
fn freezer_dir(c: &Container) -> Option<PathBuf> {
    let cg = c.state.cgroup.as_ref()?;
    cg.dir_for("freezer").or_else(|| cg.dir_for("cgroup")).map(Path::to_path_buf)
}

/// What criu must leave out of the image and find again at restore: every mount whose source is
/// on the host (binds and volumes, keyed by their destination as runc keys them), the network and
/// pid namespaces the container joined by path, and stdio files on host mounts.
fn externals(c: &Container, stdio: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = external_mounts(&c.state.config)?.into_iter().map(|(dest, _)| format!("mnt[{dest}]:{dest}")).collect();
    for (typ, key) in [(LinuxNamespaceType::Network, "net"), (LinuxNamespaceType::Pid, "pid")] {
        if let Some(path) = joined_namespace(&c.state.config, typ) {
            let ino = super::inode_of(&path.display().to_string()).ok_or_else(|| Error::Path {
                id: c.state.id.clone(),
                action: ACTION,
                path: path.clone(),
                reason: format!("the {key} namespace the container joined is gone"),
            })?;
            out.push(format!("{key}[{ino}]:{}", ns_key(key)));
        }
    }
    out.extend(stdio.iter().filter(|k| k.starts_with("file[")).cloned());
    Ok(out)
}

/// criu's key for a joined namespace, as runc names it ("extRootNetNS", "extRootPidNS").
pub(super) fn ns_key(criu_name: &str) -> String {
    let mut name = criu_name.to_string();
    name[..1].make_ascii_uppercase();
    format!("extRoot{name}NS")
}

fn joined_namespace(spec: &oci_spec::runtime::Spec, typ: LinuxNamespaceType) -> Option<PathBuf> {
    let namespaces = spec.linux().as_ref()?.namespaces().clone()?;
    namespaces.into_iter().find(|n| n.typ() == typ).and_then(|n| n.path().clone())
}

/// The config's mounts with a host source, by index order: (destination, mount index).
pub(super) fn external_mounts(spec: &oci_spec::runtime::Spec) -> Result<Vec<(String, usize)>> {
    let mut out = vec![];
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let volume = crate::volume::from_mount(m).map_err(crate::container::Error::from)?.is_some();
        if volume || crate::init::rootfs::is_bind(m) {
            let dest = m.destination().display().to_string();
            let dest = if dest.len() > 1 { dest.trim_end_matches('/').to_string() } else { dest };
            out.push((dest, i));
        }
    }
    Ok(out)
}

/// runc's `org.criu.config` annotation: a criu configuration file for this container.
pub(super) fn config_file_args(c: &Container) -> Vec<String> {
    match c.state.annotations().get("org.criu.config") {
        Some(f) if !f.is_empty() => vec!["--config".into(), f.clone()],
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_server_needs_address_and_port() {
        assert_eq!(parse_page_server("10.0.0.1:27").unwrap(), ("10.0.0.1".to_string(), 27));
        assert_eq!(parse_page_server("[::1]:27").unwrap(), ("::1".to_string(), 27));
        assert!(parse_page_server(":27").is_err());
        assert!(parse_page_server("host").is_err());
        assert!(parse_page_server("host:port").unwrap_err().contains("invalid port"));
    }

    #[test]
    fn namespace_keys_are_runcs() {
        assert_eq!(ns_key("net"), "extRootNetNS");
        assert_eq!(ns_key("pid"), "extRootPidNS");
    }
}
