//! `create`: everything up to the point where the user's process is set up and blocked on the exec
//! fifo. The runtime process clones the init, gives it its uid maps, cgroup, network and volumes,
//! runs the createRuntime hooks, and returns once the init reports ready. On any failure nothing
//! is left behind: the same teardown as `delete` undoes what was done.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;

use super::config::{plan_namespaces, refuse_intel_rdt, validate_listen, validate_sysctls, warn_unsupported, NsPlan};
use super::spawn::{bind_sources, expect, send_bind_sources, write_id_maps};
use super::{io_err, Container, Error, Result, State, Status};
use crate::init::channel::{Channel, Msg};
use crate::init::{self, InitPlan};
use crate::volume::VolumeSpec;

// Other commands (run, exec, upgrade) use these from here.
pub use super::config::{check_oci_version, load_spec, rootfs_of, validate_process};
pub use super::spawn::spawn_init;

#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: i32,
    pub systemd_cgroup: bool,
    pub upgrade: Option<UpgradePrep>,
}

/// How a container created as an upgrade's replacement differs from a plain one.
#[derive(Debug, Default, Clone)]
pub struct UpgradePrep {
    /// Volume mounts are left out; the upgrade hands them over after the old container stops.
    pub defer_volumes: bool,
    /// Join this (pinned) network namespace instead of creating one (`--network keep`).
    pub join_netns: Option<PathBuf>,
    /// Do not set up a veth from annotations: the old container's is moved in.
    pub skip_net_setup: bool,
    /// Listening sockets handed over (molt's fds), used for the `io.molt.listen` entries with
    /// the same address instead of new sockets.
    pub listen_fds: Vec<(crate::listen::Endpoint, crate::listen::Handed)>,
    /// molt's fds to become the new process's 0, 1, 2 instead of molt's own.
    pub stdio: Option<[std::os::fd::RawFd; 3]>,
    /// Built in this cgroup instead of the config's: the id's own path is the old container's
    /// until it stops, so the replacement waits beside it and moves in at transfer-id.
    pub cgroup: Option<crate::cgroups::Cgroup>,
}

pub fn create(root: &Path, o: &CreateOptions) -> Result<Container> {
    super::validate_id(&o.id)?;
    let bundle = o.bundle.canonicalize().map_err(|e| Error::Bundle { bundle: o.bundle.clone(), reason: e.to_string() })?;
    let spec = load_spec(&bundle)?;
    let Checked { rootfs, ns, volumes, idmaps } = check(&bundle, &spec, o.preserve_fds, o.upgrade.as_ref().and_then(|u| u.join_netns.as_deref()))?;
    warn_unsupported(&o.id, &spec);
    if !super::sealed_exe::is_sealed() {
        crate::logging::debug(&format!(
            "container {}: its init runs from molt's own binary until it execs, not a sealed one (this molt did not re-execute sealed first)",
            o.id
        ));
    }
    super::create_root(root).map_err(io_err(root))?;
    let mut c = Container { root: root.to_path_buf(), state: first_state(o, bundle, rootfs, spec) };
    super::publish_state_dir(root, &c.state)?;
    match build(&mut c, o, ns, volumes, &idmaps) {
        Ok(()) => Ok(c),
        Err(e) => {
            super::delete::teardown(&mut c, false);
            Err(e)
        }
    }
}

/// What `check` found and `create` builds from.
pub struct Checked {
    pub rootfs: PathBuf,
    ns: NsPlan,
    volumes: Vec<(usize, VolumeSpec)>,
    idmaps: Vec<init::idmap::Request>,
}

/// Every check of a bundle's config that `create` makes before anything is made; the upgrade's
/// `--dry-run` makes the same ones, so it passes exactly the bundles `create` would take.
/// `join_netns` is the network namespace joined instead of the config's (an upgrade's `keep`).
pub fn check(bundle: &Path, spec: &Spec, preserve_fds: i32, join_netns: Option<&Path>) -> Result<Checked> {
    validate_process(spec)?;
    validate_sysctls(spec)?;
    refuse_intel_rdt(spec)?;
    let rootfs = rootfs_of(bundle, spec)?;
    validate_listen(spec, preserve_fds)?;
    // A notify profile without an agent would hang its process at the first trapped call.
    super::notify::listener_path(spec).map_err(|reason| Error::Config { field: "linux.seccomp".into(), reason })?;
    let ns = plan_namespaces(spec, join_netns)?;
    let volumes = volumes_of(spec)?;
    let idmaps = idmap_requests(spec, bundle, ns.new_user, &volumes)?;
    Ok(Checked { rootfs, ns, volumes, idmaps })
}

/// A container's state before anything is made for it: creating, by this molt (`create` and
/// `restore`).
pub(crate) fn first_state(o: &CreateOptions, bundle: PathBuf, rootfs: PathBuf, config: Spec) -> State {
    let me = std::process::id() as i32;
    State {
        id: o.id.clone(),
        status: Status::Creating,
        pid: 0,
        pid_start_time: 0,
        bundle,
        rootfs,
        created: crate::logging::now_rfc3339(),
        owner: String::new(),
        config,
        cgroup: None,
        net: None,
        volumes: vec![],
        netns_pin: None,
        use_systemd_cgroup: o.systemd_cgroup,
        creator_pid: me,
        creator_start_time: super::start_time(me).unwrap_or(0),
    }
}

/// The config's mounts that are remote or loop volumes, by mount index: parsed once, for the
/// checks before anything is made and for the build.
pub(crate) fn volumes_of(spec: &Spec) -> Result<Vec<(usize, VolumeSpec)>> {
    let mut out = vec![];
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if let Some(v) = crate::volume::from_mount(m)? {
            out.push((i, v));
        }
    }
    Ok(out)
}

/// The idmapped mounts the config asks for (checked before anything is made).
fn idmap_requests(spec: &Spec, bundle: &Path, new_user_ns: bool, volumes: &[(usize, VolumeSpec)]) -> Result<Vec<init::idmap::Request>> {
    let indices: Vec<usize> = volumes.iter().map(|(i, _)| *i).collect();
    init::idmap::requests(spec, bundle, new_user_ns, &indices).map_err(|(field, reason)| Error::Config { field, reason })
}

/// Each thing is recorded in the state before it is made, so that whenever molt is killed, a
/// delete finds all of it (releasing what was never made is a no-op).
fn build(c: &mut Container, o: &CreateOptions, ns: NsPlan, volumes: Vec<(usize, VolumeSpec)>, idmaps: &[init::idmap::Request]) -> Result<()> {
    let spec = c.state.config.clone();
    let id = c.state.id.clone();
    let cg = make_cgroup(c, o)?;
    let (volume_binds, deferred) = acquire_volumes(c, o, volumes)?;
    let fifo = make_exec_fifo(c)?;
    let bind_sources = if ns.new_user { bind_sources(&spec, &volume_binds, &deferred) } else { vec![] };
    let plan = init_plan(c, o, &ns, volume_binds, deferred, fifo)?;
    let (parent_end, child_end) = Channel::pair().map_err(io_err("socketpair"))?;
    let pid = spawn_init(&plan, &child_end, &parent_end, ns.clone_flags(), ns.join_pid.as_deref(), &id)?;
    drop(child_end);
    let plan_process = plan.process.clone();
    drop(plan);
    c.state.pid = pid.as_raw();
    c.state.pid_start_time = super::start_time(pid.as_raw()).unwrap_or(0);
    c.save()?;

    let step_err = |step: &'static str| {
        let id = id.clone();
        move |reason: String| Error::Step { id, step, reason }
    };
    if ns.new_user {
        write_id_maps(pid, &spec).map_err(step_err("write uid/gid maps"))?;
    }
    crate::init::process::set_oom_score_adj(pid.as_raw(), &plan_process).map_err(step_err("set up the process"))?;
    cg.add_process(pid.as_raw())?;
    parent_end.send(&Msg::Go).map_err(|e| step_err("talk to the container's init")(e.to_string()))?;
    expect(&parent_end, &id, Msg::NamespacesReady)?;
    if !bind_sources.is_empty() {
        send_bind_sources(&parent_end, pid.as_raw(), &bind_sources).map_err(step_err("open bind mount sources"))?;
    }
    if !idmaps.is_empty() {
        init::idmap::send(&parent_end, pid.as_raw(), idmaps).map_err(step_err("make idmapped mounts"))?;
    }
    attach_network(c, o, ns.new_net)?;
    run_hooks_until_ready(c, &parent_end)?;

    c.state.status = Status::Created;
    c.save()?;
    if let Some(pf) = &o.pid_file {
        write_pid_file(pf, pid.as_raw())?;
    }
    Ok(())
}

/// The id's cgroup (or, for an upgrade's replacement, the one beside it), made and limited.
pub(crate) fn make_cgroup(c: &mut Container, o: &CreateOptions) -> Result<crate::cgroups::Cgroup> {
    let linux = c.state.config.linux().clone().unwrap_or_default();
    let cgroups_path = linux.cgroups_path().as_ref().map(|p| p.to_string_lossy().to_string());
    let cg = match o.upgrade.as_ref().and_then(|u| u.cgroup.clone()) {
        Some(cg) => cg,
        None => crate::cgroups::Cgroup::resolve(cgroups_path.as_deref(), &c.state.id, o.systemd_cgroup)?,
    };
    c.state.cgroup = Some(cg.clone());
    c.save()?;
    cg.create()?;
    cg.apply(&with_default_device_rules(&linux))?;
    Ok(cg)
}

/// Attaches every volume (each recorded first) and returns the bind each becomes, by mount
/// index; an upgrade's replacement defers them all to the hand-over instead.
#[allow(clippy::type_complexity)]
pub(crate) fn acquire_volumes(c: &mut Container, o: &CreateOptions, volumes: Vec<(usize, VolumeSpec)>) -> Result<(Vec<(usize, PathBuf, Vec<String>)>, Vec<usize>)> {
    if o.upgrade.as_ref().is_some_and(|u| u.defer_volumes) {
        return Ok((vec![], volumes.into_iter().map(|(i, _)| i).collect()));
    }
    let registry = crate::volume::Registry::new(&c.root);
    let mut binds = vec![];
    for (i, v) in volumes {
        c.state.volumes.push(v.key.clone());
        c.save()?;
        let staging = registry.acquire(&v, &c.state.id)?;
        binds.push((i, staging, v.bind_options));
    }
    Ok((binds, vec![]))
}

/// The exec fifo `start` writes to release the user's process.
fn make_exec_fifo(c: &Container) -> Result<OwnedFd> {
    let path = c.fifo_path();
    let sys = |what: &str, errno| Error::Sys { id: c.state.id.clone(), step: format!("{what} {}", path.display()), errno };
    // 0600: only molt itself opens it by name (`start` writes it); the init has the fd.
    nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).map_err(|e| sys("mkfifo", e))?;
    // O_RDWR: opening never blocks, and the init's read blocks until `start` writes.
    let fd = nix::fcntl::open(&path, nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| sys("open", e))?;
    // SAFETY: `open` returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Everything the init needs to know, sent across the clone.
fn init_plan(c: &Container, o: &CreateOptions, ns: &NsPlan, volume_binds: Vec<(usize, PathBuf, Vec<String>)>, deferred: Vec<usize>, fifo: OwnedFd) -> Result<InitPlan> {
    let spec = &c.state.config;
    let process = super::usable_process(&c.state.id, spec.process().clone().unwrap_or_default());
    let given = o.upgrade.as_ref().map(|u| u.listen_fds.clone()).unwrap_or_default();
    let listen = crate::listen::from_spec(spec)
        .map_err(|e| Error::Config { field: format!("annotations {}", crate::listen::ANNOTATION), reason: e.to_string() })?
        .into_iter()
        .map(|ep| {
            let fd = given.iter().find(|(g, _)| g.addr == ep.addr).map(|(_, fd)| *fd);
            (ep, fd)
        })
        .collect();
    Ok(InitPlan {
        listen,
        stdio: o.upgrade.as_ref().and_then(|u| u.stdio),
        spec: spec.clone(),
        process,
        rootfs: c.state.rootfs.clone(),
        join: ns.join.clone(),
        unshare: ns.unshare,
        new_user_ns: ns.new_user,
        console_socket: o.console_socket.clone(),
        no_pivot: o.no_pivot,
        preserve_fds: o.preserve_fds,
        volume_binds,
        deferred_mounts: deferred,
        fifo: Some(fifo),
        is_exec: false,
        shared_mounts: ns.shared_mounts,
    })
}

/// The veth the annotations ask for (not for an upgrade's replacement: the old one moves in)
/// and the host devices `linux.netDevices` moves into the container's namespace.
pub(crate) fn attach_network(c: &mut Container, o: &CreateOptions, new_net: bool) -> Result<()> {
    let netns = crate::namespaces::path(c.state.pid, "net");
    let skip_net = o.upgrade.as_ref().is_some_and(|u| u.skip_net_setup || u.join_netns.is_some());
    if let Some(net) = crate::net::spec_from_annotations(&c.state.annotations())? {
        if !skip_net {
            if !new_net {
                return Err(Error::Config {
                    field: "annotations io.molt.net.bridge".into(),
                    reason: "needs a new network namespace in linux.namespaces".into(),
                });
            }
            let att = crate::net::attach(&net, &c.state.id, &netns)?;
            c.state.net = Some(att);
            c.save()?;
        }
    }
    let linux = c.state.config.linux().clone().unwrap_or_default();
    for (host_name, dev) in linux.net_devices().clone().unwrap_or_default() {
        crate::net::move_host_device(&host_name, dev.name().as_deref(), &netns)?;
    }
    Ok(())
}

/// prestart and createRuntime hooks, then the init finishes its set-up; a seccomp notify
/// profile's listener arrives before Ready and goes on to the seccomp agent.
fn run_hooks_until_ready(c: &Container, parent_end: &Channel) -> Result<()> {
    let (spec, id, pid) = (&c.state.config, &c.state.id, c.state.pid);
    let step = |reason: String| Error::Step { id: id.clone(), step: "set up the container", reason };
    let talk = |e: std::io::Error| Error::Step { id: id.clone(), step: "talk to the container's init", reason: e.to_string() };
    let agent = |reason: String| Error::Step { id: id.clone(), step: "seccomp agent", reason };
    let state_json = c.oci_state(Status::Creating).to_string();
    let place = crate::hooks::Place::Runtime { bundle: &c.state.bundle };
    crate::hooks::run_all("prestart", &init::hooks_of(spec, |h| h.prestart().clone()), &state_json, place)?;
    crate::hooks::run_all("createRuntime", &init::hooks_of(spec, |h| h.create_runtime().clone()), &state_json, place)?;
    parent_end.send(&Msg::Continue { state_json: state_json.clone() }).map_err(talk)?;
    loop {
        match parent_end.recv_with_fds() {
            Ok(Some((Msg::SeccompListener, fds))) => {
                let fd = fds.into_iter().next().ok_or_else(|| agent("the listener came without its fd".into()))?;
                super::notify::send_to_agent(spec, pid, &state_json, &fd).map_err(agent)?;
            }
            Ok(Some((Msg::Ready, _))) => return Ok(()),
            Ok(Some((Msg::Error(e), _))) => return Err(step(e)),
            Ok(Some((m, _))) => return Err(step(format!("unexpected message {m:?}"))),
            Ok(None) => return Err(step("the container's init exited".into())),
            Err(e) => return Err(talk(e)),
        }
    }
}

/// Deny everything, the config's device rules, then allow rules for the devices every container
/// gets and the devices the config creates, as runc builds them: its rule set starts from deny
/// (an allow list) whatever the config says, so a config without rules, or with allow rules only,
/// still gets only those devices (a first "a" rule of the config's own resets that start), and a
/// deny-all rule cannot break /dev/null.
pub(crate) fn with_default_device_rules(linux: &oci_spec::runtime::Linux) -> oci_spec::runtime::LinuxResources {
    use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType as T};
    let mut r = linux.resources().clone().unwrap_or_default();
    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all.set_allow(false);
    deny_all.set_typ(Some(T::A));
    deny_all.set_access(Some("rwm".to_string()));
    let mut rules = vec![deny_all];
    rules.extend(r.devices().clone().unwrap_or_default());
    let rule = |typ: T, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(true);
        d.set_typ(Some(typ));
        d.set_major(major);
        d.set_minor(minor);
        d.set_access(Some(access.to_string()));
        d
    };
    for (typ, major, minor, access) in [
        (T::C, None, None, "m"),
        (T::B, None, None, "m"),
        (T::C, Some(1), Some(3), "rwm"),
        (T::C, Some(1), Some(5), "rwm"),
        (T::C, Some(1), Some(7), "rwm"),
        (T::C, Some(1), Some(8), "rwm"),
        (T::C, Some(1), Some(9), "rwm"),
        (T::C, Some(5), Some(0), "rwm"),
        (T::C, Some(5), Some(2), "rwm"),
        (T::C, Some(136), None, "rwm"),
        // /dev/net/tun: runc's default list has it (/dev/console is the pty, under 136).
        (T::C, Some(10), Some(200), "rwm"),
    ] {
        rules.push(rule(typ, major, minor, access));
    }
    // A FIFO is no device to the devices cgroup: nothing to allow.
    for d in linux.devices().clone().unwrap_or_default().iter().filter(|d| d.typ() != T::P) {
        rules.push(LinuxDeviceCgroup::from(d));
    }
    r.set_devices(Some(rules));
    r
}

/// Digits only, no newline, replaced atomically: go-runc Atoi()s the whole file.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    super::write_atomic(path, pid.to_string().as_bytes())
}
