//! What runs inside the new container: the cloned child of the runtime process joins or creates its
//! namespaces, builds the rootfs, prepares the process, reports ready, waits on the exec fifo for
//! `start`, and execs the user's program. `exec` uses the same path with joined namespaces only.

mod assemble;
pub mod cgroupfs;
pub mod channel;
pub mod console;
pub mod idmap;
mod copyup;
mod devices;
mod enter_ns;
mod finish;
pub mod process;
pub mod process_attrs;
pub mod rootfs;
pub mod seccomp;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{Hook, Process, Spec};

use channel::{Channel, Msg};
use crate::kernel::{Kernel, Real};

/// An error inside the container's init: its text goes back to the runtime process as it is.
#[derive(Debug)]
pub struct InitError(pub String);

impl InitError {
    pub fn new(msg: impl Into<String>) -> InitError {
        InitError(msg.into())
    }
}

impl From<String> for InitError {
    fn from(e: String) -> InitError {
        InitError(e)
    }
}

impl From<crate::safe_path::ResolveError> for InitError {
    fn from(e: crate::safe_path::ResolveError) -> InitError {
        InitError(e.to_string())
    }
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything the child needs; it is a copy of the parent's memory, so no serialisation.
pub struct InitPlan {
    pub spec: Spec,
    pub process: Process,
    pub rootfs: PathBuf,
    /// Namespaces to join, user first: (kind, path).
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// Namespaces to create with unshare (pid and user come from clone itself).
    pub unshare: CloneFlags,
    pub new_user_ns: bool,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: i32,
    pub volume_binds: Vec<(usize, PathBuf, Vec<String>)>,
    pub deferred_mounts: Vec<usize>,
    /// None for `exec`: the process starts as soon as it is ready.
    pub fifo: Option<OwnedFd>,
    /// `exec` joins a running container: no rootfs work, no hooks.
    pub is_exec: bool,
    /// No mount namespace of its own (runtime-spec: it shares the runtime's): nothing is
    /// mounted, the process is chrooted into `rootfs` instead of pivoting.
    pub shared_mounts: bool,
    /// The `io.molt.listen` sockets, each with molt's fds to use instead of a new socket (an
    /// upgrade's handover; the clone inherited molt's fd table).
    pub listen: Vec<(crate::listen::Endpoint, Option<crate::listen::Handed>)>,
    /// fds of molt's to become the process's 0, 1, 2 (an upgrade: the old container's stdio).
    pub stdio: Option<[std::os::fd::RawFd; 3]>,
}

/// The child's entry point after clone. Never returns to the caller's code path.
pub fn child_main(plan: &InitPlan, chan: &Channel) -> isize {
    // This process is a copy of molt inside the container's pid namespace: an `exec` child (or an
    // init joining a shared pid namespace) is visible to the container's processes at once, so it
    // must not be dumpable from the start, or they could open /proc/PID/exe (the molt binary) and
    // write it once molt has exited (CVE-2019-5736). A fresh init in a new user namespace waits
    // (nothing can see it yet, and it must still write its own /proc/self files as its own user).
    if plan.is_exec || !plan.new_user_ns {
        let _ = nix::sys::prctl::set_dumpable(false);
    }
    let err = match run(plan, chan) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = chan.send(&Msg::Error(err.0));
    1
}

fn expect(chan: &Channel, step: &str) -> Result<Msg, InitError> {
    expect_with_fds(chan, step).map(|(m, _)| m)
}

/// The next message from the runtime and the fds sent with it; an Error message is our error.
fn expect_with_fds(chan: &Channel, step: &str) -> Result<(Msg, Vec<OwnedFd>), InitError> {
    match chan.recv_with_fds() {
        Ok(Some((Msg::Error(e), _))) => Err(InitError::new(e)),
        Ok(Some(m)) => Ok(m),
        Ok(None) => Err(InitError::new(format!("runtime went away during {step}"))),
        Err(e) => Err(InitError::new(format!("{step}: reading the setup channel: {e}"))),
    }
}

fn run(plan: &InitPlan, chan: &Channel) -> Result<std::convert::Infallible, InitError> {
    // The parent has written our uid/gid maps and put us in the cgroup.
    expect(chan, "waiting for the runtime")?;
    if let Some(fds) = plan.stdio {
        take_stdio(fds)?;
    }
    // The socket path is the caller's: connect before any namespace changes what it resolves to.
    let console_stream = if plan.process.terminal().unwrap_or(false) && plan.stdio.is_none() {
        let sock = plan.console_socket.as_ref().ok_or_else(|| {
            InitError::new("process.terminal is true but no --console-socket was given")
        })?;
        Some(console::connect(sock)?)
    } else {
        None
    };
    let k = &Real;
    // The init's cgroups as the host names them: read before a new cgroup namespace hides them.
    let own_cgroups = enter_ns::enter(k, &plan.join, plan.unshare, plan.new_user_ns, cgroupfs::own_membership)?;
    if plan.unshare.contains(CloneFlags::CLONE_NEWNET) {
        loopback_up()?;
    }
    if plan.unshare.contains(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)) {
        set_time_offsets(k, &plan.spec)?;
    }
    if plan.is_exec {
        if plan.shared_mounts {
            rootfs::chroot_into(k, &plan.rootfs)?;
        }
        let console = match console_stream {
            Some(stream) => Some(console::open_and_send(k, stream, Path::new("/"), plan.process.console_size().as_ref(), false)?),
            None => None,
        };
        return prepare_and_exec(plan, chan, console, None, vec![]);
    }
    chan.send(&Msg::NamespacesReady).map_err(|e| InitError::new(format!("report namespaces ready: {e}")))?;
    let mut bind_fds: Vec<(usize, OwnedFd)> = vec![];
    let mut idmapped: Vec<(usize, OwnedFd)> = vec![];
    let state_json = loop {
        match expect_with_fds(chan, "network and createRuntime hooks")? {
            (Msg::BindSources { mounts }, fds) if mounts.len() == fds.len() => bind_fds.extend(mounts.into_iter().zip(fds)),
            (Msg::IdmappedMounts { mounts }, fds) if mounts.len() == fds.len() => idmapped.extend(mounts.into_iter().zip(fds)),
            (Msg::Continue { state_json }, _) => break state_json,
            (other, _) => return Err(InitError::new(format!("unexpected message {other:?}"))),
        }
    };
    if plan.shared_mounts {
        return finish_in_shared_mounts(plan, chan, state_json);
    }
    let rplan = rootfs::RootfsPlan {
        spec: &plan.spec,
        rootfs: &plan.rootfs,
        volume_binds: &plan.volume_binds,
        deferred: &plan.deferred_mounts,
        // Host directories, closed once the mounts are made.
        bind_fds,
        idmapped,
        // Created or joined, mknod is refused all the same.
        in_user_ns: plan.new_user_ns || plan.join.iter().any(|(k, _)| *k == CloneFlags::CLONE_NEWUSER),
        own_cgroups: &own_cgroups,
    };
    let (mut console, mut listeners) = (None, vec![]);
    let mut console_stream = console_stream;
    let between = assemble::Between {
        before_switch: &mut || {
            if let Some(stream) = console_stream.take() {
                console = Some(console::open_and_send(k, stream, &plan.rootfs, plan.process.console_size().as_ref(), true)?);
            }
            run_create_container_hooks(plan, &state_json)
        },
        after_switch: &mut || {
            listeners = listen_sockets(plan)?;
            Ok(())
        },
        names_and_sysctls: &mut || {
            set_names(&plan.spec)?;
            rootfs::set_sysctls(&plan.spec)
        },
    };
    assemble::assemble(k, &plan.spec, rplan, plan.no_pivot, between)?;
    prepare_and_exec(plan, chan, console, Some(state_json), listeners)
}

/// createContainer, before the switch to the container's root: in the root's directory, with the
/// container process's environment (as yet without the HOME it gets later, as with runc).
fn run_create_container_hooks(plan: &InitPlan, state_json: &str) -> Result<(), InitError> {
    let env = process::dedup_env(plan.process.env().as_deref().unwrap_or_default());
    let place = crate::hooks::Place::Container { env: &env, cwd: &plan.rootfs };
    crate::hooks::run_all("createContainer", &hooks_of(&plan.spec, |h| h.create_container().clone()), &state_seen_inside(state_json, "creating"), place)
        .map_err(|e| InitError::new(e.to_string()))
}

/// A container without a mount namespace of its own: create checked that it asks for no mount,
/// device, masked or read-only path and no terminal, so nothing here touches the host's mounts.
fn finish_in_shared_mounts(plan: &InitPlan, chan: &Channel, state_json: String) -> Result<std::convert::Infallible, InitError> {
    run_create_container_hooks(plan, &state_json)?;
    // /proc is still the host's mount, which shows this process's own namespaces' values.
    rootfs::set_sysctls(&plan.spec)?;
    rootfs::chroot_into(&Real, &plan.rootfs)?;
    set_names(&plan.spec)?;
    let listeners = listen_sockets(plan)?;
    prepare_and_exec(plan, chan, None, Some(state_json), listeners)
}

/// The upgrade's stdio (the old container's 0, 1, 2) replaces what molt was started with.
fn take_stdio(fds: [std::os::fd::RawFd; 3]) -> Result<(), InitError> {
    for (target, fd) in fds.into_iter().enumerate() {
        // SAFETY: dup2 of an fd this process inherited onto 0, 1 or 2.
        if unsafe { libc::dup2(fd, target as i32) } < 0 {
            return Err(InitError::new(format!("take the old container's fd {target}: {}", std::io::Error::last_os_error())));
        }
    }
    Ok(())
}

/// One listening socket per `io.molt.listen` entry: the one handed over, or a new one made here,
/// in the container's network and mount namespaces. A handed-over unix socket's file is attached
/// at its path when the container has mounts of its own (with the runtime's, the path is the
/// host's and holds the file already).
fn listen_sockets(plan: &InitPlan) -> Result<Vec<OwnedFd>, InitError> {
    let mut out = vec![];
    for (ep, given) in &plan.listen {
        let fd = match given {
            Some(h) => {
                // SAFETY: a duplicate of an fd this process inherited from molt, owned at once.
                let d = unsafe { libc::fcntl(h.socket, libc::F_DUPFD_CLOEXEC, 3) };
                if d < 0 {
                    return Err(InitError::new(format!("listening socket {ep}: dup: {}", std::io::Error::last_os_error())));
                }
                if let (Some(file), false) = (h.file, plan.shared_mounts) {
                    crate::listen::place_file(ep, file).map_err(|e| InitError::new(e.to_string()))?;
                }
                // SAFETY: a fresh fd.
                unsafe { std::os::fd::FromRawFd::from_raw_fd(d) }
            }
            None => crate::listen::open(ep).map_err(|e| InitError::new(e.to_string()))?,
        };
        out.push(fd);
    }
    Ok(out)
}

/// The part shared with `exec`: session and terminal, process attributes, ready, wait, exec.
/// `chan` reports errors (and, for the init, Ready); `init_state` is the state for the init's
/// startContainer hooks, None for `exec`.
fn prepare_and_exec(
    plan: &InitPlan,
    chan: &Channel,
    console: Option<OwnedFd>,
    init_state: Option<String>,
    listeners: Vec<OwnedFd>,
) -> Result<std::convert::Infallible, InitError> {
    let p = &plan.process;
    let _ = nix::unistd::setsid();
    if let Some(slave) = &console {
        console::make_controlling(slave)?;
    } else if plan.stdio.is_some() && p.terminal().unwrap_or(false) {
        // The old container's terminal, handed over: best effort, it may still be another
        // session's controlling terminal.
        // SAFETY: TIOCSCTTY on fd 0 changes only this process's session.
        unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    }
    process::set_rlimits(p)?;
    let mut env = process::dedup_env(p.env().as_deref().unwrap_or_default());
    process::add_home(&mut env, p.user().uid());
    let args = p.args().clone().unwrap_or_default();
    let attr_err = |e: process_attrs::AttrError| InitError::new(e.to_string());
    process_attrs::set_personality(&plan.spec).map_err(attr_err)?;
    // While the process still has CAP_SYS_ADMIN and CAP_SYS_NICE: the real-time I/O class and
    // scheduling policies need them.
    process_attrs::set_io_priority(p).map_err(attr_err)?;
    process_attrs::set_scheduler(p).map_err(attr_err)?;
    process_attrs::set_memory_policy(&plan.spec).map_err(attr_err)?;
    // Compiled now so a bad profile fails create, not start.
    let profile = plan.spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let filter = match profile {
        Some(s) => Some((s, seccomp::compile(s)?)),
        None => None,
    };
    process::give_stdio_to_user(p)?;
    let order = finish::Order {
        filter: filter.is_some(),
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        notify: profile.is_some_and(seccomp::uses_notify),
        is_exec: plan.is_exec,
        is_init: init_state.is_some(),
    };
    let mut real = finish::Real { plan, chan, console, listeners, filter, env, args, exe: None, init_state };
    Err(finish::finish(&mut real, order))
}

fn wait_for_start(fifo: &OwnedFd) -> Result<(), InitError> {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(fifo.as_raw_fd(), &mut b) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(1) => return Ok(()),
            Ok(_) => return Err(InitError::new("exec fifo closed before start")),
            Err(e) => return Err(InitError::new(format!("read exec fifo: {}", e.desc()))),
        }
    }
}

/// The state for the hooks the init runs itself (createContainer, startContainer): they live in the
/// container's pid namespace, so the pid is the init's own there (1), as runc reports it.
fn state_seen_inside(state_json: &str, status: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(state_json).unwrap_or_default();
    if v.is_object() {
        v["status"] = status.into();
        v["pid"] = std::process::id().into();
    }
    v.to_string()
}

pub fn hooks_of(spec: &Spec, pick: impl Fn(&oci_spec::runtime::Hooks) -> Option<Vec<Hook>>) -> Vec<Hook> {
    spec.hooks().as_ref().and_then(pick).unwrap_or_default()
}

fn set_names(spec: &Spec) -> Result<(), InitError> {
    let has_uts = crate::spec::has_namespace(spec, oci_spec::runtime::LinuxNamespaceType::Uts, false);
    if let Some(h) = spec.hostname() {
        if !has_uts {
            return Err(InitError::new("hostname is set but linux.namespaces has no uts namespace"));
        }
        nix::unistd::sethostname(h).map_err(|e| InitError::new(format!("hostname {h:?}: {}", e.desc())))?;
    }
    if let Some(d) = spec.domainname() {
        if !has_uts {
            return Err(InitError::new("domainname is set but linux.namespaces has no uts namespace"));
        }
        // SAFETY: the pointer and length describe a live byte slice.
        if unsafe { libc::setdomainname(d.as_ptr() as *const libc::c_char, d.len()) } != 0 {
            return Err(InitError::new(format!("domainname {d:?}: {}", std::io::Error::last_os_error())));
        }
    }
    Ok(())
}

/// A new network namespace has `lo` down; runc brings it up, and programs expect 127.0.0.1.
fn loopback_up() -> Result<(), InitError> {
    let err = |what: &str| InitError::new(format!("set lo up in the new network namespace: {what}: {}", std::io::Error::last_os_error()));
    // SAFETY: a plain socket for the interface ioctls, closed below; ifreq is a C struct we own,
    // zeroed, with the name copied into its fixed-size array.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(err("socket"));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let res = if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            Err(err("SIOCGIFFLAGS"))
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
                Err(err("SIOCSIFFLAGS"))
            } else {
                Ok(())
            }
        };
        libc::close(fd);
        res
    }
}

fn set_time_offsets(k: &impl Kernel, spec: &Spec) -> Result<(), InitError> {
    let offsets = spec.linux().as_ref().and_then(|l| l.time_offsets().clone()).unwrap_or_default();
    let mut text = String::new();
    for (clock, off) in &offsets {
        if clock != "monotonic" && clock != "boottime" {
            return Err(InitError::new(format!("linux.timeOffsets {clock:?}: only monotonic and boottime exist")));
        }
        text.push_str(&format!("{clock} {} {}\n", off.secs().unwrap_or(0), off.nanosecs().unwrap_or(0)));
    }
    if !text.is_empty() {
        // After setresuid in a new user namespace the kernel made this process non-dumpable, and
        // a non-dumpable task's /proc/self files belong to the host's root, not to its own uid:
        // the write would be refused (EACCES). Dumpable for the write only; nothing else lives in
        // the container yet, and the init is made non-dumpable again before it execs.
        let was = nix::sys::prctl::get_dumpable().unwrap_or(false);
        let _ = nix::sys::prctl::set_dumpable(true);
        let res = std::fs::write("/proc/self/timens_offsets", &text);
        let _ = nix::sys::prctl::set_dumpable(was);
        res.map_err(|e| InitError::new(format!("linux.timeOffsets: write /proc/self/timens_offsets: {e}")))?;
    }
    // unshare only prepares the namespace for children; kernels before 6.x do not move the
    // caller in at execve either. Entering it here works on every kernel with time namespaces.
    let path = Path::new("/proc/self/ns/time_for_children");
    let ns = std::fs::File::open(path).map_err(|e| InitError::new(format!("open /proc/self/ns/time_for_children: {e}")))?;
    k.setns(&ns, CloneFlags::from_bits_retain(libc::CLONE_NEWTIME), path)
        .map_err(|e| InitError::new(format!("enter the new time namespace: {}", e.desc())))?;
    Ok(())
}

