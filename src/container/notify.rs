//! The seccomp agent hand-off (runtime-spec `linux.seccomp.listenerPath`): when a profile has
//! SCMP_ACT_NOTIFY, the container's process sends the filter's listener fd to the runtime, which
//! connects to the agent's unix socket and sends it the container process state with the fd
//! (SCM_RIGHTS), as the spec describes. Without a listenerPath such a profile is refused.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use oci_spec::runtime::Spec;

/// The listener path of a notify profile, or an error naming the field when there is none.
pub fn listener_path(spec: &Spec) -> Result<Option<String>, String> {
    let Some(s) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else { return Ok(None) };
    let notify = s.default_action() == oci_spec::runtime::LinuxSeccompAction::ScmpActNotify
        || s.syscalls().iter().flatten().any(|r| r.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActNotify);
    match (notify, s.listener_path()) {
        (false, _) => Ok(None),
        (true, Some(p)) if p.is_absolute() => Ok(Some(p.display().to_string())),
        (true, Some(p)) => Err(format!("linux.seccomp.listenerPath {}: must be an absolute path", p.display())),
        (true, None) => Err("linux.seccomp: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath (the seccomp agent's socket)".into()),
    }
}

/// Send `fd` with the container process state to the agent.
pub fn send_to_agent(spec: &Spec, pid: i32, state_json: &str, fd: &OwnedFd) -> Result<(), String> {
    let path = listener_path(spec)?.ok_or("linux.seccomp: a notify listener came without a notify action")?;
    let metadata = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()).and_then(|s| s.listener_metadata().clone()).unwrap_or_default();
    let state: serde_json::Value = serde_json::from_str(state_json).map_err(|e| e.to_string())?;
    let doc = serde_json::json!({
        "ociVersion": crate::spec::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": metadata,
        "state": state,
    });
    let sock = UnixStream::connect(&path).map_err(|e| format!("linux.seccomp.listenerPath {path}: connect: {e}"))?;
    let data = doc.to_string();
    let iov = [std::io::IoSlice::new(data.as_bytes())];
    let fds = [fd.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, nix::sys::socket::MsgFlags::empty(), None)
        .map_err(|e| format!("linux.seccomp.listenerPath {path}: send the listener: {}", e.desc()))?;
    Ok(())
}
