//! `create`: everything up to the point where the user's process is set up and blocked on the exec
//! fifo. The runtime process clones the init, gives it its uid maps, cgroup, network and volumes,
//! runs the createRuntime hooks, and returns once the init reports ready. On any failure nothing
//! is left behind: the same teardown as `delete` undoes what was done.

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::{io_err, Container, Error, Result, State, Status};
use crate::init::channel::{Channel, Msg};
use crate::init::{self, InitPlan};

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
    pub listen_fds: Vec<(crate::listen::Endpoint, std::os::fd::RawFd)>,
    /// molt's fds to become the new process's 0, 1, 2 instead of molt's own.
    pub stdio: Option<[std::os::fd::RawFd; 3]>,
    /// Built in this cgroup instead of the config's: the id's own path is the old container's
    /// until it stops, so the replacement waits beside it and moves in at transfer-id.
    pub cgroup: Option<crate::cgroups::Cgroup>,
}

pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    if !bundle.is_dir() {
        return Err(Error::Bundle { bundle: bundle.into(), reason: "not a directory".into() });
    }
    let data = fs::read(&path).map_err(|e| Error::Bundle {
        bundle: bundle.into(),
        reason: format!("config.json: {e}"),
    })?;
    let not_oci = |e: serde_json::Error| Error::Bundle {
        bundle: bundle.into(),
        reason: format!("config.json is not a valid OCI runtime config: {e}"),
    };
    // The runtime-spec 1.3 process attributes are checked on the raw JSON first: serde's
    // "unknown variant" would not say which field holds it.
    let mut raw: serde_json::Value = serde_json::from_slice(&data).map_err(not_oci)?;
    crate::init::process_attrs::check_config(&raw).map_err(attr_error)?;
    if let Some(p) = raw.get_mut("process") {
        crate::init::process_attrs::translate_sched_flags(p);
    }
    let spec: Spec = serde_json::from_value(raw).map_err(not_oci)?;
    check_oci_version(spec.version())?;
    Ok(spec)
}

/// A runtime-spec 1.3 attribute the config gets wrong (the checks make no system call).
fn attr_error(e: crate::init::process_attrs::AttrError) -> Error {
    match e {
        crate::init::process_attrs::AttrError::Invalid { field, reason } => Error::Config { field, reason },
        kernel @ crate::init::process_attrs::AttrError::Kernel { field, .. } => Error::Config { field: field.into(), reason: kernel.to_string() },
    }
}

/// runtime-spec: ociVersion is REQUIRED and MUST be SemVer 2.0.0; versions are compatible within
/// a major version, and molt implements 1.x. (runc 1.1.5 does not check it.)
pub fn check_oci_version(v: &str) -> Result<()> {
    let bad = |reason: String| Error::Config { field: "ociVersion".into(), reason };
    if v.is_empty() {
        return Err(bad("missing (required: the runtime-spec version the config follows, such as \"1.2.0\")".into()));
    }
    let version = semver::Version::parse(v).map_err(|e| bad(format!("{v:?} is not a SemVer 2.0.0 version: {e}")))?;
    if version.major != 1 {
        return Err(bad(format!("{v:?}: molt implements runtime-spec 1.x, and major versions are not compatible")));
    }
    Ok(())
}

fn rootfs_of(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
    let root = spec.root().as_ref().ok_or_else(|| Error::Config {
        field: "root".into(),
        reason: "missing".into(),
    })?;
    let p = bundle.join(root.path());
    let p = p.canonicalize().map_err(|e| Error::Config {
        field: "root.path".into(),
        reason: format!("{}: {e}", p.display()),
    })?;
    if !p.is_dir() {
        return Err(Error::Config { field: "root.path".into(), reason: format!("{} is not a directory", p.display()) });
    }
    Ok(p)
}

/// Namespaces from the config, split into what clone creates, what unshare creates and what is joined.
struct NsPlan {
    clone: CloneFlags,
    unshare: CloneFlags,
    join: Vec<(CloneFlags, PathBuf)>,
    join_pid: Option<PathBuf>,
    new_user: bool,
    new_net: bool,
    /// No mount namespace in the config: the container shares molt's.
    shared_mounts: bool,
}

/// Without a mount namespace the container shares the host's mounts (runtime-spec), so whatever
/// would mount something is refused rather than done on the host: mounts, devices, masked and
/// read-only paths, a read-only root, a root propagation, a terminal (its /dev/console).
fn refuse_mounts_without_namespace(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let given = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    let mounts = spec.mounts().clone().unwrap_or_default();
    let asked: Vec<String> = [
        mounts.first().map(|m| format!("mounts[0] ({})", m.destination().display())),
        linux.devices().as_ref().filter(|d| !d.is_empty()).map(|_| "linux.devices".to_string()),
        given(linux.masked_paths()).then(|| "linux.maskedPaths".to_string()),
        given(linux.readonly_paths()).then(|| "linux.readonlyPaths".to_string()),
        spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false).then(|| "root.readonly".to_string()),
        linux.rootfs_propagation().as_ref().map(|_| "linux.rootfsPropagation".to_string()),
        spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false).then(|| "process.terminal".to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    match asked.first() {
        None => Ok(()),
        Some(field) => Err(Error::Config {
            field: field.clone(),
            reason: "needs a mount namespace: linux.namespaces has none, so the container shares the host's mounts and this would change them".into(),
        }),
    }
}

fn plan_namespaces(spec: &Spec, join_netns: Option<&Path>) -> Result<NsPlan> {
    let list = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
    let mut plan = NsPlan {
        clone: CloneFlags::empty(),
        unshare: CloneFlags::empty(),
        join: vec![],
        join_pid: None,
        new_user: false,
        new_net: false,
        shared_mounts: false,
    };
    let mut seen = vec![];
    for ns in &list {
        let typ = ns.typ();
        // The config's own word for it ("network", not the kernel's "net").
        let name = serde_json::to_value(typ).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        if seen.contains(&typ) {
            return Err(Error::Config { field: "linux.namespaces".into(), reason: format!("{name} listed twice") });
        }
        seen.push(typ);
        let flag = CloneFlags::from_bits_retain(typ as i32);
        let path = match (typ, join_netns) {
            (LinuxNamespaceType::Network, Some(p)) => Some(p.to_path_buf()),
            _ => ns.path().clone(),
        };
        match (typ, path) {
            (LinuxNamespaceType::Pid, Some(p)) => plan.join_pid = Some(p),
            (LinuxNamespaceType::User, Some(p)) => plan.join.insert(0, (flag, p)),
            (_, Some(p)) => {
                if let Err(e) = fs::metadata(&p) {
                    return Err(Error::Config {
                        field: "linux.namespaces".into(),
                        reason: format!("{name} namespace path {}: {e}", p.display()),
                    });
                }
                plan.join.push((flag, p))
            }
            (LinuxNamespaceType::Pid, None) => plan.clone |= flag,
            (LinuxNamespaceType::User, None) => {
                plan.clone |= flag;
                plan.new_user = true;
            }
            (t, None) => {
                plan.unshare |= flag;
                if t == LinuxNamespaceType::Network {
                    plan.new_net = true;
                }
            }
        }
    }
    if !seen.contains(&LinuxNamespaceType::Mount) {
        refuse_mounts_without_namespace(spec)?;
        plan.shared_mounts = true;
    }
    if plan.new_user {
        let l = spec.linux().clone().unwrap_or_default();
        if l.uid_mappings().as_ref().is_none_or(|m| m.is_empty()) || l.gid_mappings().as_ref().is_none_or(|m| m.is_empty()) {
            return Err(Error::Config {
                field: "linux.uidMappings".into(),
                reason: "a new user namespace needs uidMappings and gidMappings".into(),
            });
        }
    }
    Ok(plan)
}

pub fn validate_process(spec: &Spec) -> Result<()> {
    let p = spec.process().as_ref().ok_or_else(|| Error::Config { field: "process".into(), reason: "missing".into() })?;
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::Config { field: "process.args".into(), reason: "must not be empty".into() });
    }
    if !p.cwd().is_absolute() {
        return Err(Error::Config { field: "process.cwd".into(), reason: format!("{:?} is not an absolute path", p.cwd()) });
    }
    Ok(())
}

/// `io.molt.listen` must parse, and owns the socket-activation fds (3 up) alone.
pub fn validate_listen(spec: &Spec, preserve_fds: i32) -> Result<()> {
    let field = || format!("annotations {}", crate::listen::ANNOTATION);
    let eps = crate::listen::from_spec(spec).map_err(|e| Error::Config { field: field(), reason: e.to_string() })?;
    if !eps.is_empty() && preserve_fds > 0 {
        return Err(Error::Config { field: field(), reason: "cannot be combined with --preserve-fds: both pass fds from 3 up".into() });
    }
    Ok(())
}

/// Only sysctls that belong to a namespace the container has of its own may be set: anything else
/// would change the host (runc refuses the same ones).
pub fn validate_sysctls(spec: &Spec) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let has = |t: LinuxNamespaceType| crate::spec::has_namespace(spec, t, false);
    const IPC: &[&str] = &[
        "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
        "kernel.shmmni", "kernel.shm_rmid_forced",
    ];
    for key in linux.sysctl().clone().unwrap_or_default().keys() {
        let (ns, name) = if IPC.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            (LinuxNamespaceType::Ipc, "ipc")
        } else if key.starts_with("net.") {
            (LinuxNamespaceType::Network, "network")
        } else if key == "kernel.hostname" || key == "kernel.domainname" {
            (LinuxNamespaceType::Uts, "uts")
        } else {
            return Err(Error::Config {
                field: format!("linux.sysctl {key}"),
                reason: "not in a kernel namespace the container can have; it would change the host".into(),
            });
        };
        if !has(ns) {
            return Err(Error::Config {
                field: format!("linux.sysctl {key}"),
                reason: format!("needs a {name} namespace in linux.namespaces"),
            });
        }
    }
    Ok(())
}

/// What the config asks for that molt does not do yet: said in the log (engines send seccomp
/// profiles with every container; refusing them would make molt unusable, silence would hide it).
fn warn_unsupported(id: &str, spec: &Spec) {
    let linux = spec.linux().clone().unwrap_or_default();
    let mut missing = vec![];
    if spec.process().as_ref().is_some_and(|p| p.apparmor_profile().is_some()) {
        missing.push("process.apparmorProfile");
    }
    if spec.process().as_ref().is_some_and(|p| p.selinux_label().is_some()) || linux.mount_label().is_some() {
        missing.push("SELinux labels");
    }
    if !missing.is_empty() {
        crate::logging::warn(&format!("container {id}: not supported by molt, ignored: {}", missing.join(", ")));
    }
}

/// `linux.intelRdt` is refused, never ignored: a cache or memory-bandwidth partition the user
/// asked for would silently not exist. runc refuses it too where the host has no resctrl; molt
/// also where it has one, since it does not implement it yet (no host here has resctrl to test on).
fn refuse_intel_rdt(spec: &Spec) -> Result<()> {
    if spec.linux().as_ref().and_then(|l| l.intel_rdt().as_ref()).is_none() {
        return Ok(());
    }
    // The root group's schemata exists only where resctrl is mounted at its usual place.
    let mounted = Path::new("/sys/fs/resctrl/schemata").exists();
    let reason = if mounted {
        "molt does not apply Intel RDT yet (resctrl is mounted here, but molt writes no schemata): refused rather than ignored"
    } else {
        "Intel RDT is not supported or enabled on this host (no resctrl filesystem at /sys/fs/resctrl)"
    };
    Err(Error::Config { field: "linux.intelRdt".into(), reason: reason.into() })
}

pub fn create(root: &Path, o: &CreateOptions) -> Result<Container> {
    super::validate_id(&o.id)?;
    let bundle = o.bundle.canonicalize().map_err(|e| Error::Bundle { bundle: o.bundle.clone(), reason: e.to_string() })?;
    let spec = load_spec(&bundle)?;
    validate_process(&spec)?;
    validate_sysctls(&spec)?;
    refuse_intel_rdt(&spec)?;
    warn_unsupported(&o.id, &spec);
    let rootfs = rootfs_of(&bundle, &spec)?;
    validate_listen(&spec, o.preserve_fds)?;
    // A notify profile without an agent would hang its process at the first trapped call.
    super::notify::listener_path(&spec).map_err(|reason| Error::Config { field: "linux.seccomp".into(), reason })?;
    let ns = plan_namespaces(&spec, o.upgrade.as_ref().and_then(|u| u.join_netns.as_deref()))?;
    let idmaps = idmap_requests(&spec, &bundle, ns.new_user)?;
    if !super::sealed_exe::is_sealed() {
        crate::logging::debug(&format!(
            "container {}: its init runs from molt's own binary until it execs, not a sealed one (this molt did not re-execute sealed first)",
            o.id
        ));
    }
    super::create_root(root).map_err(io_err(root))?;
    let me = std::process::id() as i32;
    let mut c = Container {
        root: root.to_path_buf(),
        state: State {
            id: o.id.clone(),
            status: Status::Creating,
            pid: 0,
            pid_start_time: 0,
            bundle: bundle.clone(),
            rootfs: rootfs.clone(),
            created: crate::logging::now_rfc3339(),
            owner: String::new(),
            config: spec,
            cgroup: None,
            net: None,
            volumes: vec![],
            netns_pin: None,
            use_systemd_cgroup: o.systemd_cgroup,
            creator_pid: me,
            creator_start_time: super::start_time(me).unwrap_or(0),
        },
    };
    super::publish_state_dir(root, &c.state)?;
    match build(&mut c, o, ns, &idmaps) {
        Ok(()) => Ok(c),
        Err(e) => {
            super::delete::teardown(&mut c, false);
            Err(e)
        }
    }
}

/// The idmapped mounts the config asks for (checked before anything is made).
fn idmap_requests(spec: &Spec, bundle: &Path, new_user_ns: bool) -> Result<Vec<init::idmap::Request>> {
    let mut volumes = vec![];
    for (i, m) in spec.mounts().clone().unwrap_or_default().iter().enumerate() {
        if crate::volume::from_mount(m)?.is_some() {
            volumes.push(i);
        }
    }
    init::idmap::requests(spec, bundle, new_user_ns, &volumes).map_err(|(field, reason)| Error::Config { field, reason })
}

fn build(c: &mut Container, o: &CreateOptions, ns: NsPlan, idmaps: &[init::idmap::Request]) -> Result<()> {
    let spec = c.state.config.clone();
    let id = c.state.id.clone();
    let linux = spec.linux().clone().unwrap_or_default();

    // Each thing is recorded in the state before it is made, so that whenever molt is killed, a
    // delete finds all of it (releasing what was never made is a no-op).
    let cgroups_path = linux.cgroups_path().as_ref().map(|p| p.to_string_lossy().to_string());
    let cg = match o.upgrade.as_ref().and_then(|u| u.cgroup.clone()) {
        Some(cg) => cg,
        None => crate::cgroups::Cgroup::resolve(cgroups_path.as_deref(), &id, o.systemd_cgroup)?,
    };
    c.state.cgroup = Some(cg.clone());
    c.save()?;
    cg.create()?;
    cg.apply(&with_default_device_rules(&linux))?;

    let registry = crate::volume::Registry::new(&c.root);
    let mut volume_binds = vec![];
    let mut deferred = vec![];
    let defer = o.upgrade.as_ref().is_some_and(|u| u.defer_volumes);
    for (i, m) in spec.mounts().clone().unwrap_or_default().iter().enumerate() {
        let Some(v) = crate::volume::from_mount(m)? else { continue };
        if defer {
            deferred.push(i);
            continue;
        }
        c.state.volumes.push(v.key.clone());
        c.save()?;
        let staging = registry.acquire(&v, &id)?;
        volume_binds.push((i, staging, v.bind_options.clone()));
    }

    let fifo_path = c.fifo_path();
    // 0600: only molt itself opens it by name (`start` writes it); the init has the fd.
    nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o600))
        .map_err(|e| Error::Sys { id: id.clone(), step: format!("mkfifo {}", fifo_path.display()), errno: e })?;
    // O_RDWR: opening never blocks, and the init's read blocks until `start` writes.
    let fifo = nix::fcntl::open(&fifo_path, nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| Error::Sys { id: id.clone(), step: format!("open {}", fifo_path.display()), errno: e })?;
    // SAFETY: `open` returned a fresh fd that nothing else owns.
    let fifo = unsafe { OwnedFd::from_raw_fd(fifo) };

    let bind_sources = if ns.new_user { bind_sources(&spec, &volume_binds, &deferred) } else { vec![] };
    let process = super::usable_process(&id, spec.process().clone().unwrap_or_default());
    let given = o.upgrade.as_ref().map(|u| u.listen_fds.clone()).unwrap_or_default();
    let listen = crate::listen::from_spec(&spec)
        .map_err(|e| Error::Config { field: format!("annotations {}", crate::listen::ANNOTATION), reason: e.to_string() })?
        .into_iter()
        .map(|ep| {
            let fd = given.iter().find(|(g, _)| g.addr == ep.addr).map(|(_, fd)| *fd);
            (ep, fd)
        })
        .collect();
    let plan = InitPlan {
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
    };
    let (parent_end, child_end) = Channel::pair().map_err(io_err("socketpair"))?;
    let pid = spawn_init(&plan, &child_end, &parent_end, ns.clone_flags(), ns.join_pid.as_deref(), &id)?;
    drop(child_end);
    let plan_process = plan.process.clone();
    drop(plan);
    c.state.pid = pid.as_raw();
    c.state.pid_start_time = super::start_time(pid.as_raw()).unwrap_or(0);
    c.save()?;

    if ns.new_user {
        write_id_maps(pid, &spec).map_err(|reason| Error::Step { id: id.clone(), step: "write uid/gid maps", reason })?;
    }
    crate::init::process::set_oom_score_adj(pid.as_raw(), &plan_process)
        .map_err(|reason| Error::Step { id: id.clone(), step: "set up the process", reason })?;
    cg.add_process(pid.as_raw())?;
    let fail = |e: std::io::Error| Error::Step { id: id.clone(), step: "talk to the container's init", reason: e.to_string() };
    parent_end.send(&Msg::Go).map_err(fail)?;
    expect(&parent_end, &id, Msg::NamespacesReady)?;
    if !bind_sources.is_empty() {
        send_bind_sources(&parent_end, pid.as_raw(), &bind_sources)
            .map_err(|reason| Error::Step { id: id.clone(), step: "open bind mount sources", reason })?;
    }
    if !idmaps.is_empty() {
        init::idmap::send(&parent_end, pid.as_raw(), idmaps).map_err(|reason| Error::Step { id: id.clone(), step: "make idmapped mounts", reason })?;
    }

    let netns = crate::namespaces::path(pid.as_raw(), "net");
    let skip_net = o.upgrade.as_ref().is_some_and(|u| u.skip_net_setup || u.join_netns.is_some());
    if let Some(net) = crate::net::spec_from_annotations(&c.state.annotations())? {
        if !skip_net {
            if !ns.new_net {
                return Err(Error::Config {
                    field: "annotations io.molt.net.bridge".into(),
                    reason: "needs a new network namespace in linux.namespaces".into(),
                });
            }
            let att = crate::net::attach(&net, &id, &netns)?;
            c.state.net = Some(att);
            c.save()?;
        }
    }
    for (host_name, dev) in linux.net_devices().clone().unwrap_or_default() {
        crate::net::move_host_device(&host_name, dev.name().as_deref(), &netns)?;
    }

    let state_json = c.oci_state(Status::Creating).to_string();
    crate::hooks::run_all("prestart", &init::hooks_of(&spec, |h| h.prestart().clone()), &state_json)?;
    crate::hooks::run_all("createRuntime", &init::hooks_of(&spec, |h| h.create_runtime().clone()), &state_json)?;
    parent_end.send(&Msg::Continue { state_json: state_json.clone() }).map_err(fail)?;
    // A notify profile's listener arrives before Ready: it goes on to the seccomp agent.
    loop {
        match parent_end.recv_with_fds() {
            Ok(Some((Msg::SeccompListener, fds))) => {
                let fd = fds.into_iter().next().ok_or_else(|| Error::Step { id: id.clone(), step: "seccomp agent", reason: "the listener came without its fd".into() })?;
                super::notify::send_to_agent(&spec, pid.as_raw(), &state_json, &fd).map_err(|reason| Error::Step { id: id.clone(), step: "seccomp agent", reason })?;
            }
            Ok(Some((Msg::Ready, _))) => break,
            Ok(Some((Msg::Error(e), _))) => return Err(Error::Step { id: id.clone(), step: "set up the container", reason: e }),
            Ok(Some((m, _))) => return Err(Error::Step { id: id.clone(), step: "set up the container", reason: format!("unexpected message {m:?}") }),
            Ok(None) => return Err(Error::Step { id: id.clone(), step: "set up the container", reason: "the container's init exited".into() }),
            Err(e) => return Err(fail(e)),
        }
    }

    c.state.status = Status::Created;
    c.save()?;
    if let Some(pf) = &o.pid_file {
        write_pid_file(pf, pid.as_raw())?;
    }
    Ok(())
}

/// The config's device rules, then allow rules for the devices every container gets and the
/// devices the config creates (runc appends the same), so a deny-all rule cannot break /dev/null.
/// Without rules of its own the config gets none: a new devices cgroup already allows everything
/// its parent does, and no rules means nothing to warn about where they cannot be applied.
pub(crate) fn with_default_device_rules(linux: &oci_spec::runtime::Linux) -> oci_spec::runtime::LinuxResources {
    use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType as T};
    let mut r = linux.resources().clone().unwrap_or_default();
    let mut rules = r.devices().clone().unwrap_or_default();
    if rules.is_empty() {
        return r;
    }
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

impl NsPlan {
    fn clone_flags(&self) -> CloneFlags {
        self.clone
    }
}

fn expect(chan: &Channel, id: &str, want: Msg) -> Result<()> {
    match chan.recv() {
        Ok(Some(m)) if m == want => Ok(()),
        Ok(Some(Msg::Error(e))) => Err(Error::Step { id: id.into(), step: "set up the container", reason: e }),
        Ok(Some(m)) => Err(Error::Step { id: id.into(), step: "set up the container", reason: format!("unexpected message {m:?}") }),
        Ok(None) => Err(Error::Step { id: id.into(), step: "set up the container", reason: "the container's init exited".into() }),
        Err(e) => Err(Error::Step { id: id.into(), step: "set up the container", reason: e.to_string() }),
    }
}

/// Clone the init. A pid namespace given by path is entered by this process for the clone only.
/// `parent_end` is closed in the child first thing: holding both ends, it would never see the
/// runtime go away (a create killed mid-way left its init waiting forever).
pub fn spawn_init(
    plan: &InitPlan,
    chan: &Channel,
    parent_end: &Channel,
    flags: CloneFlags,
    join_pid: Option<&Path>,
    id: &str,
) -> Result<Pid> {
    let sys = |step: &str, errno| Error::Sys { id: id.into(), step: step.into(), errno };
    let own_pid_ns = match join_pid {
        Some(p) => {
            let own = fs::File::open("/proc/self/ns/pid").map_err(io_err("/proc/self/ns/pid"))?;
            let target = fs::File::open(p).map_err(io_err(p))?;
            nix::sched::setns(&target, CloneFlags::CLONE_NEWPID).map_err(|e| sys(&format!("setns pid {}", p.display()), e))?;
            Some(own)
        }
        None => None,
    };
    let user_by_path = plan.join.iter().find(|(k, _)| *k == CloneFlags::CLONE_NEWUSER).map(|(_, p)| p.as_path());
    let res = match user_by_path {
        // A new pid namespace is owned by the user namespace of the process that clones it; for
        // a user namespace joined by path that must be the joined one (as runc orders it), and
        // molt itself cannot enter it (it could never leave).
        Some(user) if flags.contains(CloneFlags::CLONE_NEWPID) => clone_in_user_ns(plan, chan, parent_end, flags, user),
        _ => clone_init(plan, chan, parent_end, flags),
    };
    if let Some(own) = own_pid_ns {
        let _ = nix::sched::setns(&own, CloneFlags::CLONE_NEWPID);
    }
    res.map_err(|e| sys("clone the container's init", e))
}

fn clone_init(plan: &InitPlan, chan: &Channel, parent_end: &Channel, flags: CloneFlags) -> nix::Result<Pid> {
    let mut stack = vec![0u8; 1 << 20];
    // SAFETY: the child runs `child_main` on its own copy of this address space (no CLONE_VM) and
    // leaves through exec or exit; it never returns into the parent's frames.
    unsafe {
        nix::sched::clone(
            Box::new(|| {
                parent_end.close_in_child();
                init::child_main(plan, chan)
            }),
            &mut stack,
            flags,
            Some(libc::SIGCHLD),
        )
    }
}

/// A short-lived helper joins the user namespace `user` and clones the init from there with
/// CLONE_PARENT, so the init is molt's child (molt waits for it) and its pid namespace is owned
/// by the joined user namespace. The helper reports the init's pid, or the errno, on a pipe.
fn clone_in_user_ns(plan: &InitPlan, chan: &Channel, parent_end: &Channel, flags: CloneFlags, user: &Path) -> nix::Result<Pid> {
    use std::os::fd::AsRawFd;
    let ns = fs::File::open(user).map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let helper = clone_init_helper(&|| {
        let r = nix::sched::setns(&ns, CloneFlags::CLONE_NEWUSER)
            .and_then(|_| clone_init(plan, chan, parent_end, flags | CloneFlags::CLONE_PARENT));
        let v: i64 = match r {
            Ok(pid) => pid.as_raw() as i64,
            Err(e) => -(e as i64),
        };
        let _ = nix::unistd::write(&wr, &v.to_ne_bytes());
        0
    })?;
    drop(wr);
    let mut buf = [0u8; 8];
    let n = loop {
        match nix::unistd::read(rd.as_raw_fd(), &mut buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    let _ = nix::sys::wait::waitpid(helper, None);
    match (n, i64::from_ne_bytes(buf)) {
        (Ok(8), v) if v > 0 => Ok(Pid::from_raw(v as i32)),
        (Ok(8), v) => Err(nix::errno::Errno::from_raw(-v as i32)),
        (Err(e), _) => Err(e),
        _ => Err(nix::errno::Errno::ECHILD),
    }
}

fn clone_init_helper(f: &dyn Fn() -> isize) -> nix::Result<Pid> {
    let mut stack = vec![0u8; 1 << 20];
    // SAFETY: as in clone_init: the helper has its own copy of the address space and leaves
    // through the return of `f` (the process exits), never into the parent's frames.
    unsafe { nix::sched::clone(Box::new(f), &mut stack, CloneFlags::empty(), Some(libc::SIGCHLD)) }
}

fn write_id_maps(pid: Pid, spec: &Spec) -> std::result::Result<(), String> {
    let l = spec.linux().clone().unwrap_or_default();
    let fmt = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| init::idmap::map_text(maps.as_deref().unwrap_or_default());
    for (file, text) in [("uid_map", fmt(l.uid_mappings())), ("gid_map", fmt(l.gid_mappings()))] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, &text).map_err(|e| format!("{path} <- {text:?}: {e}"))?;
    }
    Ok(())
}

/// Digits only, no newline, replaced atomically: go-runc Atoi()s the whole file.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    super::write_atomic(path, pid.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(namespaces: &[&str], sysctl: &[(&str, &str)]) -> Spec {
        let v = serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {
                "namespaces": namespaces.iter().map(|n| serde_json::json!({"type": n})).collect::<Vec<_>>(),
                "sysctl": sysctl.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            }
        });
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn oci_version_must_be_semver_of_major_one() {
        for ok in ["1.0.0", "1.0.2-dev", "1.2.0", "1.3.0", "1.10.1+build"] {
            assert!(check_oci_version(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [("", "missing"), ("banana", "not a SemVer"), ("1.0", "not a SemVer"), ("v1.0.0", "not a SemVer"), ("2.0.0", "1.x"), ("0.1.0", "1.x")] {
            let e = check_oci_version(bad).unwrap_err().to_string();
            assert!(e.contains("ociVersion") && e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn sysctls_must_belong_to_an_own_namespace() {
        assert!(validate_sysctls(&spec_with(&["ipc", "network"], &[("kernel.shmmax", "1"), ("net.ipv4.ip_forward", "1"), ("fs.mqueue.msg_max", "5")])).is_ok());
        let e = validate_sysctls(&spec_with(&["ipc", "network"], &[("vm.swappiness", "1")])).unwrap_err().to_string();
        assert!(e.contains("vm.swappiness") && e.contains("change the host"), "{e}");
        let e = validate_sysctls(&spec_with(&["ipc"], &[("net.ipv4.ip_forward", "1")])).unwrap_err().to_string();
        assert!(e.contains("needs a network namespace"), "{e}");
        assert!(validate_sysctls(&spec_with(&["network"], &[("kernel.msgmax", "1")])).is_err());
        assert!(validate_sysctls(&spec_with(&["uts"], &[("kernel.domainname", "x")])).is_ok());
    }
}

/// The absolute source of every bind mount (volumes' staging directories included) the init
/// will make, by mount index.
fn bind_sources(spec: &Spec, volume_binds: &[(usize, PathBuf, Vec<String>)], deferred: &[usize]) -> Vec<(usize, PathBuf)> {
    let mounts = spec.mounts().clone().unwrap_or_default();
    let mut out = vec![];
    for (i, m) in mounts.iter().enumerate() {
        if deferred.contains(&i) {
            continue;
        }
        let source = match volume_binds.iter().find(|(idx, _, _)| *idx == i) {
            Some((_, staging, _)) => Some(staging.clone()),
            None if crate::init::rootfs::is_bind(m) => m.source().clone(),
            None => None,
        };
        if let Some(s) = source.filter(|s| s.is_absolute()) {
            out.push((i, s));
        }
    }
    out
}

/// For an init in a new user namespace, whose root may not be allowed to walk to a bind source
/// (podman's 0700 container directories): a helper joins the init's mount namespace, opens each
/// source (O_PATH) with molt's own credentials and sends the fds to the init, which binds from
/// /proc/self/fd/N, as runc does. A source that cannot be opened is left to the init, which then
/// names it in its error.
fn send_bind_sources(chan: &Channel, pid: i32, sources: &[(usize, PathBuf)]) -> std::result::Result<(), String> {
    let ns = [(nix::sched::CloneFlags::CLONE_NEWNS, crate::namespaces::path(pid, "mnt"))];
    crate::namespaces::run_in(&ns, || {
        let mut opened = vec![];
        for (i, path) in sources {
            let flags = nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC;
            if let Ok(fd) = nix::fcntl::open(path, flags, Mode::empty()) {
                // SAFETY: `open` returned a fresh fd that nothing else owns.
                opened.push((*i, unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        for chunk in opened.chunks(crate::init::channel::MAX_FDS) {
            let mounts = chunk.iter().map(|(i, _)| *i).collect();
            let fds: Vec<_> = chunk.iter().map(|(_, fd)| std::os::fd::AsRawFd::as_raw_fd(fd)).collect();
            chan.send_with_fds(&Msg::BindSources { mounts }, &fds).map_err(|e| format!("send to the init: {e}"))?;
        }
        Ok(())
    })
}
