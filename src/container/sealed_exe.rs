//! CVE-2019-5736: until it execs the user's program, a container's init (and an exec child) is a
//! copy of molt, so /proc/PID/exe inside the container is the molt binary. Non-dumpable, it is out
//! of reach unless the container holds CAP_SYS_PTRACE over the initial user namespace; a process
//! that does can keep an fd of the binary and write it once molt has exited. For such containers
//! molt first re-executes itself from a sealed memfd copy (as runc always does), so what the
//! container can reach is a copy nobody can write.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use oci_spec::runtime::{Capability, Process};

use super::{Error, Result};

const MARK: &str = "_MOLT_SEALED_EXE";

/// Whether a process with this config could reach the runtime's binary through /proc: it may gain
/// CAP_SYS_PTRACE (in its bounding set: file capabilities can raise it) in the initial user
/// namespace (no user namespace of its own created by molt).
pub fn exposes_runtime(p: &Process, new_user_ns: bool) -> bool {
    let bounding = p.capabilities().as_ref().and_then(|c| c.bounding().clone()).unwrap_or_default();
    !new_user_ns && bounding.contains(&Capability::SysPtrace)
}

/// This process already runs from a sealed copy.
pub fn is_sealed() -> bool {
    std::env::var_os(MARK).is_some()
}

/// Re-execute molt, same arguments and pid, from a sealed memfd copy of itself; returns only when
/// already running from one. The marker variable is removed again after the re-exec.
pub fn reexec_sealed() -> Result<()> {
    if is_sealed() {
        std::env::remove_var(MARK);
        return Ok(());
    }
    let fail = |step: &str, e: &dyn std::fmt::Display| Error::Step {
        id: String::new(),
        step: "re-execute molt from a sealed copy",
        reason: format!("{step}: {e}"),
    };
    let name = c"molt-sealed";
    // SAFETY: memfd_create with a valid C string; the fd is owned right away.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(fail("memfd_create", &std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd from memfd_create.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut src = std::fs::File::open("/proc/self/exe").map_err(|e| fail("open /proc/self/exe", &e))?;
    let mut dst = std::fs::File::from(memfd.try_clone().map_err(|e| fail("dup memfd", &e))?);
    std::io::copy(&mut src, &mut dst).map_err(|e| fail("copy the binary", &e))?;
    dst.flush().map_err(|e| fail("copy the binary", &e))?;
    drop(dst);
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our own memfd.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(fail("seal the copy", &std::io::Error::last_os_error()));
    }
    let cstr = |s: std::ffi::OsString| std::ffi::CString::new(std::os::unix::ffi::OsStringExt::into_vec(s)).ok();
    let args: Vec<_> = std::env::args_os().filter_map(cstr).collect();
    let mut env: Vec<_> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            kv
        })
        .filter_map(cstr)
        .collect();
    env.extend(cstr(format!("{MARK}=1").into()));
    match nix::unistd::fexecve(memfd.as_raw_fd(), &args, &env) {
        Err(e) => Err(fail("fexecve", &e)),
        Ok(never) => match never {},
    }
}

/// The init of a running container still is molt's own binary (not a sealed copy).
pub fn init_is_unsealed(pid: i32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| !p.to_string_lossy().starts_with("/memfd:molt-sealed"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(bounding: &[&str]) -> Process {
        serde_json::from_value(serde_json::json!({
            "cwd": "/", "args": ["true"], "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": bounding}
        }))
        .unwrap()
    }

    #[test]
    fn only_ptrace_capable_processes_outside_a_user_namespace_are_exposed() {
        assert!(!exposes_runtime(&process(&["CAP_KILL", "CAP_NET_BIND_SERVICE"]), false));
        assert!(exposes_runtime(&process(&["CAP_KILL", "CAP_SYS_PTRACE"]), false));
        assert!(!exposes_runtime(&process(&["CAP_SYS_PTRACE"]), true));
    }
}
