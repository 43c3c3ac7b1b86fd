//! The container process as the config describes it: executable lookup, rlimits, oom_score_adj,
//! user and groups, the five capability sets, no_new_privs, umask, cwd, environment, and the final
//! execve. Shared by the container's init and by `exec`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability as Cap, CapsHashSet};
use nix::sys::signal::{SigSet, SigmaskHow};
use oci_spec::runtime::{LinuxCapabilities, PosixRlimitType, Process};

use super::InitError;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment as execve gets it: a later NAME=VALUE replaces an earlier one of the same name
/// (so `exec --env` overrides process.env), each name once, in the order of its last occurrence,
/// as runc's prepareEnv makes it.
pub fn dedup_env(env: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = env
        .iter()
        .rev()
        .filter(|kv| seen.insert(kv.split_once('=').map_or(kv.as_str(), |(k, _)| k)))
        .cloned()
        .collect();
    out.reverse();
    out
}

/// HOME from the container's /etc/passwd when the environment has none (or an empty one), "/" for
/// a uid it does not list: runc sets it so, and shells and programs rely on it.
pub fn add_home(env: &mut Vec<String>, uid: u32) {
    if env.iter().any(|kv| kv.strip_prefix("HOME=").is_some_and(|v| !v.is_empty())) {
        return;
    }
    env.retain(|kv| !kv.starts_with("HOME="));
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let home = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[2].parse() == Ok(uid))
        .map_or("/".to_string(), |f| f[5].to_string());
    env.push(format!("HOME={home}"));
}

pub fn env_path(env: &[String]) -> String {
    env.iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string()
}

/// Find args[0] the way execvp would, but now, so `create` fails rather than `start`.
/// Messages follow runc's, which podman and docker map to exit codes 126 and 127.
pub fn find_executable(arg0: &str, path_env: &str, cwd: &Path) -> Result<PathBuf, InitError> {
    let check = |p: &Path| -> Result<PathBuf, String> {
        let m = std::fs::metadata(p).map_err(|e| format!("stat {}: {}", p.display(), io_desc(&e)))?;
        if m.is_dir() || m.permissions().mode() & 0o111 == 0 {
            return Err(format!("{}: permission denied", p.display()));
        }
        Ok(p.to_path_buf())
    };
    if arg0.contains('/') {
        let p = if Path::new(arg0).is_absolute() { PathBuf::from(arg0) } else { cwd.join(arg0) };
        return check(&p).map_err(|e| InitError::new(format!("exec: {arg0:?}: {e}")));
    }
    for dir in path_env.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(arg0);
        if let Ok(found) = check(&p) {
            return Ok(found);
        }
    }
    Err(InitError::new(format!("exec: {arg0:?}: executable file not found in $PATH")))
}

fn io_desc(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Written by the runtime process into /proc/PID: from inside a new user namespace the write
/// would be refused (raising the score needs CAP_SYS_RESOURCE in the initial namespace).
pub fn set_oom_score_adj(pid: i32, p: &Process) -> Result<(), String> {
    if let Some(adj) = p.oom_score_adj() {
        let path = format!("/proc/{pid}/oom_score_adj");
        std::fs::write(&path, adj.to_string()).map_err(|e| format!("process.oomScoreAdj {adj}: write {path}: {e}"))?;
    }
    Ok(())
}

pub fn set_rlimits(p: &Process) -> Result<(), InitError> {
    for r in p.rlimits().clone().unwrap_or_default() {
        let resource = rlimit_resource(r.typ());
        let lim = libc::rlimit { rlim_cur: r.soft(), rlim_max: r.hard() };
        // SAFETY: setrlimit reads a plain struct we own.
        if unsafe { libc::setrlimit(resource as _, &lim) } != 0 {
            return Err(InitError::new(format!(
                "process.rlimits {} soft={} hard={}: {} (a limit cannot exceed the hard limit molt runs under)",
                serde_json::to_value(r.typ()).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                r.soft(),
                r.hard(),
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

fn rlimit_resource(t: PosixRlimitType) -> libc::c_int {
    (match t {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::c_int
}

fn to_caps(set: &Option<oci_spec::runtime::Capabilities>, field: &str) -> Result<CapsHashSet, InitError> {
    let mut out = CapsHashSet::new();
    for c in set.clone().unwrap_or_default() {
        let name = format!("CAP_{}", c.to_string().trim_start_matches("CAP_"));
        let cap: Cap = name
            .parse()
            .map_err(|_| InitError::new(format!("process.capabilities.{field}: unknown capability {name}")))?;
        out.insert(cap);
    }
    Ok(out)
}

/// The process's capability sets without those the runtime itself cannot grant (not in its bounding
/// set, or unknown to this kernel). runc drops them the same way with a warning; returns what was dropped.
pub fn drop_unavailable_caps(p: &mut Process) -> Vec<String> {
    let Some(mut c) = p.capabilities().clone() else { return vec![] };
    let have = caps::read(None, CapSet::Bounding).unwrap_or_default();
    let mut dropped: Vec<String> = vec![];
    let keep = |set: &Option<oci_spec::runtime::Capabilities>, dropped: &mut Vec<String>| {
        set.as_ref().map(|s| {
            s.iter()
                .filter(|cap| {
                    let name = format!("CAP_{}", cap.to_string().trim_start_matches("CAP_"));
                    let ok = name.parse::<Cap>().is_ok_and(|c| have.contains(&c));
                    if !ok && !dropped.contains(&name) {
                        dropped.push(name);
                    }
                    ok
                })
                .cloned()
                .collect()
        })
    };
    c.set_bounding(keep(c.bounding(), &mut dropped));
    c.set_effective(keep(c.effective(), &mut dropped));
    c.set_permitted(keep(c.permitted(), &mut dropped));
    c.set_inheritable(keep(c.inheritable(), &mut dropped));
    c.set_ambient(keep(c.ambient(), &mut dropped));
    p.set_capabilities(Some(c));
    dropped.sort();
    dropped
}

/// Give fds 0-2 to the container's user before dropping to it, as runc does: programs reopen
/// /dev/stdout, which needs the pipe or file to be theirs. /dev/null is left alone, and so is what
/// the user namespace cannot own (EINVAL, EPERM) or a read-only file system (EROFS).
pub fn give_stdio_to_user(p: &Process) -> Result<(), InitError> {
    use std::os::unix::fs::MetadataExt;
    let null = std::fs::metadata("/dev/null").map(|m| m.rdev()).ok();
    let (uid, gid) = (p.user().uid(), p.user().gid());
    for fd in 0..3 {
        // SAFETY: a plain C struct, all-zero is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat fills a struct we own; fd may be closed, which it reports.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            continue;
        }
        let is_chr = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
        if (is_chr && Some(st.st_rdev) == null) || (st.st_uid == uid && st.st_gid == gid) {
            continue;
        }
        // SAFETY: fchown on one of our standard fds.
        if unsafe { libc::fchown(fd, uid, gid) } != 0 {
            let e = std::io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EPERM) | Some(libc::EROFS)) {
                return Err(InitError::new(format!("chown fd {fd} to {uid}:{gid}: {e}")));
            }
        }
    }
    Ok(())
}

/// Drop to the configured user keeping the capabilities the config grants.
pub fn set_user_and_caps(p: &Process) -> Result<(), InitError> {
    let caps_cfg: LinuxCapabilities = p.capabilities().clone().unwrap_or_default();
    let bounding = to_caps(caps_cfg.bounding(), "bounding")?;
    let effective = to_caps(caps_cfg.effective(), "effective")?;
    let permitted = to_caps(caps_cfg.permitted(), "permitted")?;
    let inheritable = to_caps(caps_cfg.inheritable(), "inheritable")?;
    let ambient = to_caps(caps_cfg.ambient(), "ambient")?;
    let all = caps::all();
    // The bounding set can only be lowered while we still hold CAP_SETPCAP.
    for cap in all.iter() {
        if !bounding.contains(cap) && caps::has_cap(None, CapSet::Bounding, *cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, *cap)
                .map_err(|e| InitError::new(format!("drop {cap} from the bounding set: {e}")))?;
        }
    }
    let user = p.user();
    // Keep permitted caps across the uid change; the configured sets are applied right after.
    nix::sys::prctl::set_keepcaps(true).map_err(|e| InitError::new(format!("prctl(PR_SET_KEEPCAPS): {e}")))?;
    let groups: Vec<nix::unistd::Gid> = user
        .additional_gids()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(nix::unistd::Gid::from_raw)
        .collect();
    // setgroups is refused in a user namespace whose setgroups file says deny; only try when asked.
    if !groups.is_empty() || !in_user_ns_with_setgroups_denied() {
        nix::unistd::setgroups(&groups)
            .map_err(|e| InitError::new(format!("process.user.additionalGids {groups:?}: setgroups: {e}")))?;
    }
    let gid = nix::unistd::Gid::from_raw(user.gid());
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresgid(gid, gid, gid)
        .map_err(|e| InitError::new(format!("process.user.gid {}: setresgid: {e}", user.gid())))?;
    nix::unistd::setresuid(uid, uid, uid)
        .map_err(|e| InitError::new(format!("process.user.uid {}: setresuid: {e}", user.uid())))?;
    capset(&effective, &permitted, &inheritable)?;
    caps::clear(None, CapSet::Ambient).ok();
    for cap in &ambient {
        // Ambient caps must be permitted and inheritable; runc skips those that are not, silently
        // (gocapability drops the EPERM). No warning here: runc's own default spec asks for ambient
        // caps without inheritable ones, so every such container would warn.
        if permitted.contains(cap) && inheritable.contains(cap) {
            caps::raise(None, CapSet::Ambient, *cap)
                .map_err(|e| InitError::new(format!("process.capabilities.ambient {cap}: {e}")))?;
        }
    }
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask as libc::mode_t));
    }
    if p.no_new_privileges().unwrap_or(false) {
        nix::sys::prctl::set_no_new_privs().map_err(|e| InitError::new(format!("prctl(PR_SET_NO_NEW_PRIVS): {e}")))?;
    }
    Ok(())
}

/// All three sets in one capset(2): set one at a time and the kernel refuses the intermediate
/// states (effective must stay within permitted).
fn capset(effective: &CapsHashSet, permitted: &CapsHashSet, inheritable: &CapsHashSet) -> Result<(), InitError> {
    let mask = |set: &CapsHashSet| -> u64 { set.iter().fold(0u64, |m, c| m | c.bitmask()) };
    let (e, p, i) = (mask(effective), mask(permitted), mask(inheritable));
    let mut header = libc_cap_header { version: 0x2008_0522, pid: 0 };
    let data = [
        libc_cap_data { effective: e as u32, permitted: p as u32, inheritable: i as u32 },
        libc_cap_data { effective: (e >> 32) as u32, permitted: (p >> 32) as u32, inheritable: (i >> 32) as u32 },
    ];
    // SAFETY: capset with a v3 header and two data words, both owned by this frame.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut _, data.as_ptr()) };
    if r != 0 {
        return Err(InitError::new(format!(
            "process.capabilities: capset(effective={e:#x}, permitted={p:#x}, inheritable={i:#x}): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[repr(C)]
struct libc_cap_header {
    version: u32,
    pid: i32,
}

#[repr(C)]
struct libc_cap_data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn in_user_ns_with_setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

/// Close every fd from `first` up except `keep`, before the process changes into its cwd: an open
/// directory of the host (a bind source opened by molt, anything an `exec` inherited) would
/// otherwise be reachable as /proc/self/fd/N, and a cwd of that path lands outside the rootfs
/// (CVE-2024-21626). Closing, not close-on-exec, since the chdir comes before the execve.
pub fn close_fds_except(first: i32, keep: &[std::os::fd::RawFd]) -> Result<(), InitError> {
    let mut keep: Vec<i32> = keep.iter().copied().filter(|fd| *fd >= first).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut ranges = vec![];
    let mut from = first;
    for k in keep {
        if k > from {
            ranges.push((from, k - 1));
        }
        from = k + 1;
    }
    ranges.push((from, i32::MAX));
    for (lo, hi) in ranges {
        // SAFETY: close_range only closes fds of this process; the ones still needed are skipped,
        // and no live Rust value owns the others (the caller drops its own first).
        let r = unsafe { libc::syscall(libc::SYS_close_range, lo as libc::c_uint, hi as libc::c_uint, 0 as libc::c_uint) };
        if r != 0 {
            // Kernels before 5.9: the numbers from /proc/self/fd (its own fd is gone once listed).
            let dir = std::fs::read_dir("/proc/self/fd")
                .map_err(|e| InitError::new(format!("close the runtime's fds: read /proc/self/fd: {e}")))?;
            let fds: Vec<i32> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
            for fd in fds.into_iter().filter(|fd| (lo..=hi).contains(fd)) {
                // SAFETY: as above; an fd already closed only makes close fail with EBADF.
                unsafe { libc::close(fd) };
            }
        }
    }
    Ok(())
}

/// After chdir(process.cwd): the cwd must lie inside the container's root. getcwd(2) prefixes a
/// directory outside the root with "(unreachable)" (glibc's wrapper turns that into ENOENT, so
/// the raw system call).
pub fn check_cwd_inside_root(cwd: &Path) -> Result<(), InitError> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: getcwd writes at most buf.len() bytes into the buffer we own.
    let n = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if n < 0 {
        return Err(InitError::new(format!("process.cwd {}: getcwd: {}", cwd.display(), std::io::Error::last_os_error())));
    }
    let got = String::from_utf8_lossy(&buf[..(n as usize).saturating_sub(1)]).to_string();
    if !got.starts_with('/') {
        return Err(InitError::new(format!(
            "process.cwd {}: resolves to {got}, outside the container's root; refused (CVE-2024-21626)",
            cwd.display()
        )));
    }
    Ok(())
}

/// Mark every fd from `first` up close-on-exec so nothing of the runtime leaks into the container.
pub fn close_fds_on_exec(first: i32) {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes fd flags.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if r != 0 {
        // Kernels before 5.11: walk /proc/self/fd.
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<i32> = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
            for fd in fds.into_iter().filter(|fd| *fd >= first) {
                // SAFETY: setting FD_CLOEXEC on an fd number; harmless if it is already closed.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
}

/// execve the process; returns only on failure. A seccomp filter given here goes on last, so
/// that only execve itself has to be allowed by it.
pub fn exec(
    path: &Path,
    args: &[String],
    env: &[String],
    seccomp: Option<(&oci_spec::runtime::LinuxSeccomp, &super::seccomp::Program)>,
) -> InitError {
    let c = |s: &[u8]| CString::new(s).unwrap_or_default();
    let cpath = c(path.as_os_str().as_bytes());
    let cargs: Vec<CString> = args.iter().map(|a| c(a.as_bytes())).collect();
    let cenv: Vec<CString> = env.iter().map(|a| c(a.as_bytes())).collect();
    // An ignored signal stays ignored across execve: Rust ignores SIGPIPE, and a caller started
    // under nohup (or `trap '' TERM`) ignores more. The container starts with every disposition
    // at its default, as under runc.
    // The raw system call, since glibc's signal() refuses the two real-time signals it reserves.
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::sighandler_t,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: rt_sigaction with a valid struct of the kernel's layout and size 8 mask;
            // resetting a disposition to default has no Rust-side state.
            unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, &dfl as *const KernelSigaction, std::ptr::null_mut::<KernelSigaction>(), 8usize) };
        }
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    if let Some((s, prog)) = seccomp {
        // Never a notify profile here: those are installed early, their listener sent out.
        if let Err(e) = super::seccomp::install(s, prog) {
            return e;
        }
    }
    match nix::unistd::execve(&cpath, &cargs, &cenv) {
        Err(e) => InitError::new(format!("exec {}: {}", path.display(), e.desc())),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_variable_replaces_an_earlier_one() {
        let env: Vec<String> = ["A=1", "PATH=/bin", "B=2", "A=3", "PATH=/x"].iter().map(|s| s.to_string()).collect();
        assert_eq!(dedup_env(&env), ["B=2", "A=3", "PATH=/x"]);
        assert_eq!(env_path(&dedup_env(&env)), "/x");
    }
}
