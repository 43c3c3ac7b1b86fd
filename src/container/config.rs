//! The bundle's config as `create` reads it: parsed, checked field by field (each error names
//! the field), and turned into the namespace plan, before anything on the host is made.

use std::fs;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::{Error, Result};


pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    if !bundle.is_dir() {
        return Err(Error::Bundle { bundle: bundle.into(), reason: "not a directory".into() });
    }
    let data = fs::read(&path).map_err(|e| Error::Bundle {
        bundle: bundle.into(),
        reason: format!("config.json: {e}"),
    })?;
    spec_from_bytes(bundle, &data)
}

/// config.json's bytes as `create` reads them (the parse only: no file or system call).
pub fn spec_from_bytes(bundle: &Path, data: &[u8]) -> Result<Spec> {
    let not_oci = |e: serde_json::Error| Error::Bundle {
        bundle: bundle.into(),
        reason: format!("config.json is not a valid OCI runtime config: {e}"),
    };
    // The runtime-spec 1.3 process attributes are checked on the raw JSON first: serde's
    // "unknown variant" would not say which field holds it.
    let mut raw: serde_json::Value = serde_json::from_slice(data).map_err(not_oci)?;
    crate::spec::process_attrs::check_config(&raw).map_err(attr_error)?;
    if let Some(p) = raw.get_mut("process") {
        crate::spec::process_attrs::translate_sched_flags(p);
    }
    let spec: Spec = serde_json::from_value(raw).map_err(not_oci)?;
    check_oci_version(spec.version())?;
    Ok(spec)
}

/// A runtime-spec 1.3 attribute the config gets wrong (the checks make no system call).
fn attr_error(e: crate::spec::process_attrs::AttrError) -> Error {
    match e {
        crate::spec::process_attrs::AttrError::Invalid { field, reason } => Error::Config { field, reason },
        kernel @ crate::spec::process_attrs::AttrError::Kernel { field, .. } => Error::Config { field: field.into(), reason: kernel.to_string() },
    }
}

/// runtime-spec: ociVersion is REQUIRED and MUST be SemVer 2.0.0; versions are compatible within
/// a major version, and molt implements 1.x. (runc 1.1.5 does not check it.) Only what the spec
/// calls invalid is refused: a 1.x newer than molt's (a config "not compatible with a runtime
/// that supports" only older ones) may still run, since its new fields are optional, and gets a
/// warning at create (warn_unsupported); engines send older ones ("1.0.2-dev", "1.1.0"), which run
/// as they are.
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

/// Pre-releases of molt's own version (SemVer puts "1.3.0-rc.1" before 1.3.0) are not newer.
fn newer_than_molt(v: &semver::Version) -> bool {
    let own = semver::Version::parse(crate::spec::OCI_VERSION).unwrap_or_else(|_| semver::Version::new(1, 0, 0));
    (v.major, v.minor, v.patch) > (own.major, own.minor, own.patch)
}

pub fn rootfs_of(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
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
pub(crate) struct NsPlan {
    pub(super) clone: CloneFlags,
    pub(super) unshare: CloneFlags,
    pub(super) join: Vec<(CloneFlags, PathBuf)>,
    pub(super) join_pid: Option<PathBuf>,
    pub(super) new_user: bool,
    pub(super) new_net: bool,
    /// No mount namespace in the config: the container shares molt's.
    pub(super) shared_mounts: bool,
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

pub(crate) fn plan_namespaces(spec: &Spec, join_netns: Option<&Path>) -> Result<NsPlan> {
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
pub(super) fn warn_unsupported(id: &str, spec: &Spec) {
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
    if semver::Version::parse(spec.version()).is_ok_and(|v| newer_than_molt(&v)) {
        crate::logging::warn(&format!(
            "container {id}: config.json's ociVersion {} is newer than runtime-spec {}, which molt implements: fields added since are ignored",
            spec.version(),
            crate::spec::OCI_VERSION
        ));
    }
}

/// `linux.intelRdt` is refused, never ignored: a cache or memory-bandwidth partition the user
/// asked for would silently not exist. runc refuses it too where the host has no resctrl; molt
/// also where it has one, since it does not implement it yet (no host here has resctrl to test on).
pub(super) fn refuse_intel_rdt(spec: &Spec) -> Result<()> {
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

impl NsPlan {
    pub(super) fn clone_flags(&self) -> CloneFlags {
        self.clone
    }
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
        assert!(!newer_than_molt(&semver::Version::parse(crate::spec::OCI_VERSION).unwrap()));
        assert!(!newer_than_molt(&semver::Version::parse("1.3.0-rc.1").unwrap()) && !newer_than_molt(&semver::Version::parse("1.0.2-dev").unwrap()));
        assert!(newer_than_molt(&semver::Version::parse("1.3.1").unwrap()) && newer_than_molt(&semver::Version::parse("1.4.0").unwrap()));
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
