//! Turning a config.json mount into a volume specification: which mounts are volumes, how their
//! source parses, which options belong to the one host attachment and which to each bind mount.

use super::source::{absolute_path, parse_iscsi, parse_nfs};
use super::{derive_key, Source, VolumeError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The option that asks molt to format an empty device. Prefixed like mount(8)'s `x-` options
/// so that other tools reading the same config ignore it.
pub const MKFS_OPTION: &str = "x-molt.mkfs";
/// `x-molt.timeout=DUR` (e.g. `5s`, `800ms`): how long attaching may wait for the server.
pub const TIMEOUT_OPTION: &str = "x-molt.timeout";

/// Options applied per bind mount (each container its own), never to the shared attachment:
/// containers sharing a volume may differ in them.
const BIND_OPTIONS: &[&str] = &[
    "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "atime", "noatime",
    "relatime", "norelatime", "strictatime", "nostrictatime", "diratime", "nodiratime",
    "nosymfollow", "symfollow", "private", "rprivate", "shared", "rshared", "slave", "rslave",
    "unbindable", "runbindable",
];

/// fstab words that mean nothing for a volume that molt attaches itself.
const IGNORED_OPTIONS: &[&str] = &["defaults", "_netdev", "auto", "noauto", "nofail", "user", "nouser"];

/// Filesystem types that never live on a block device: a mount of one of them is not a volume.
const PSEUDO_FS: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devtmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "bind",
    "none", "overlay", "securityfs", "debugfs", "tracefs", "fusectl", "configfs", "hugetlbfs",
    "pstore", "bpf", "ramfs", "binfmt_misc", "efivarfs", "autofs", "rpc_pipefs", "nfsd",
];

/// One volume as declared by a config.json mount, independent of the container declaring it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// Stable, filesystem-safe identity derived from the kind and the source: two containers
    /// naming the same source share one attachment.
    pub key: String,
    pub source: Source,
    /// `nfs`/`nfs4` for NFS; the filesystem on the device otherwise.
    pub fstype: String,
    /// Options of the one host attachment (filesystem data options such as `vers=3`, `nolock`,
    /// `discard`, and superblock flags such as `sync`), in the order given.
    pub data_options: Vec<String>,
    /// Options of each container's bind mount (`ro`, `nosuid`, `nodev`, `noexec`, atime,
    /// propagation), in the order given.
    pub bind_options: Vec<String>,
    /// Format the device with `fstype` if, and only if, blkid finds no filesystem on it.
    pub mkfs: bool,
    /// From `x-molt.timeout=`: overrides the default waits for helper programs and devices.
    #[serde(default)]
    pub timeout: Option<std::time::Duration>,
}

impl VolumeSpec {
    /// Whether the container asked for a read-only view (the last of `ro`/`rw` wins, as in mount(8)).
    pub fn read_only(&self) -> bool {
        self.bind_options
            .iter()
            .rev()
            .find(|o| *o == "ro" || *o == "rw")
            .is_some_and(|o| o == "ro")
    }
}

/// Reads a config.json mount: `Ok(None)` when it is not a volume (bind, tmpfs, proc, ...).
/// Local sources are resolved to their canonical path here, because the key must not depend on
/// how a path was spelled: two loop devices over one image would mount it twice and corrupt it.
pub fn from_mount(m: &oci_spec::runtime::Mount) -> Result<Option<VolumeSpec>, VolumeError> {
    let options = m.options().clone().unwrap_or_default();
    let Some(mut spec) = parse_mount(
        m.destination(),
        m.typ().as_deref(),
        m.source().as_deref(),
        &options,
    )?
    else {
        return Ok(None);
    };
    let invalid = |reason: String| VolumeError::Invalid {
        destination: m.destination().display().to_string(),
        source_text: spec.source.to_string(),
        reason,
    };
    match &spec.source {
        Source::Block { path } | Source::Image { path } => {
            let canonical = std::fs::canonicalize(path)
                .map_err(|e| invalid(format!("cannot resolve the path: {e}")))?;
            let meta = std::fs::metadata(&canonical)
                .map_err(|e| invalid(format!("cannot stat {}: {e}", canonical.display())))?;
            use std::os::unix::fs::FileTypeExt;
            spec.source = match spec.source {
                Source::Block { .. } if meta.file_type().is_block_device() => Source::Block { path: canonical },
                Source::Block { .. } => {
                    return Err(invalid(format!(
                        "{} is not a block device (an image file needs the option \"loop\")",
                        canonical.display()
                    )))
                }
                Source::Image { .. } if meta.is_file() => Source::Image { path: canonical },
                _ => {
                    return Err(invalid(format!(
                        "{} is not a regular file (the option \"loop\" takes an image file)",
                        canonical.display()
                    )))
                }
            };
            spec.key = derive_key(&spec.source);
        }
        Source::Nfs { .. } | Source::Iscsi { .. } => {}
    }
    Ok(Some(spec))
}

/// The pure part of [`from_mount`]: classification, source parsing and option splitting, with
/// local paths only normalised lexically.
pub fn parse_mount(
    destination: &Path,
    typ: Option<&str>,
    source: Option<&Path>,
    options: &[String],
) -> Result<Option<VolumeSpec>, VolumeError> {
    let source_text = source.map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let invalid = |reason: String| VolumeError::Invalid {
        destination: destination.display().to_string(),
        source_text: source_text.clone(),
        reason,
    };
    let typ = typ.unwrap_or("");
    if typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind") {
        return Ok(None);
    }
    let is_loop = options.iter().any(|o| o == "loop");
    let src = if typ == "nfs" || typ == "nfs4" {
        if source_text.is_empty() {
            return Err(invalid("an nfs mount needs a source server:/export".into()));
        }
        parse_nfs(&source_text).map_err(invalid)?
    } else if source_text.starts_with("iscsi://") {
        parse_iscsi(&source_text).map_err(invalid)?
    } else if is_loop {
        Source::Image {
            path: absolute_path(&source_text).map_err(invalid)?,
        }
    } else if source_text.starts_with("/dev/") && !typ.is_empty() && !PSEUDO_FS.contains(&typ) {
        Source::Block {
            path: absolute_path(&source_text).map_err(invalid)?,
        }
    } else {
        return Ok(None);
    };
    if source.is_some_and(|s| s.to_str().is_none()) {
        return Err(invalid("the source is not valid UTF-8".into()));
    }
    if !matches!(src, Source::Nfs { .. }) {
        check_block_fstype(typ).map_err(invalid)?;
    }

    let mut data_options = Vec::new();
    let mut bind_options = Vec::new();
    let mut mkfs = false;
    let mut timeout = None;
    for o in options {
        if o.is_empty() || o.contains(',') || o.contains('\0') {
            return Err(invalid(format!("option {o:?} is empty or holds ',' or NUL")));
        }
        if BIND_OPTIONS.contains(&o.as_str()) {
            bind_options.push(o.clone());
        } else if o == MKFS_OPTION {
            mkfs = true;
        } else if let Some(v) = o.strip_prefix(TIMEOUT_OPTION).and_then(|r| r.strip_prefix('=')) {
            timeout = Some(parse_timeout(v).ok_or_else(|| invalid(format!("option {o:?}: use a duration such as 5s or 800ms")))?);
        } else if o.starts_with("x-molt.") {
            return Err(invalid(format!("unknown molt option {o:?} (known: {MKFS_OPTION}, {TIMEOUT_OPTION}=DUR)")));
        } else if o == "loop" || IGNORED_OPTIONS.contains(&o.as_str()) || o.starts_with("x-") {
            // Userspace-only words: mount(8) drops them too.
        } else if o.starts_with("loop=") || o.starts_with("offset=") || o.starts_with("sizelimit=") {
            return Err(invalid(format!("option {o:?} is not supported: molt picks the loop device")));
        } else {
            data_options.push(o.clone());
        }
    }
    if mkfs && matches!(src, Source::Nfs { .. }) {
        return Err(invalid(format!("{MKFS_OPTION} makes no sense for an nfs export")));
    }
    Ok(Some(VolumeSpec {
        key: derive_key(&src),
        source: src,
        fstype: typ.to_string(),
        data_options,
        bind_options,
        mkfs,
        timeout,
    }))
}

fn check_block_fstype(typ: &str) -> Result<(), String> {
    if typ.is_empty() || typ == "auto" {
        return Err("a block volume needs an explicit filesystem type (e.g. ext4, xfs)".into());
    }
    if PSEUDO_FS.contains(&typ) || typ.starts_with("nfs") {
        return Err(format!("type {typ:?} is not a filesystem that lives on a block device"));
    }
    if !typ.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_') {
        return Err(format!("type {typ:?} is not a filesystem type name"));
    }
    Ok(())
}

fn parse_timeout(v: &str) -> Option<std::time::Duration> {
    let (num, ms) = match v.strip_suffix("ms") {
        Some(n) => (n, true),
        None => (v.strip_suffix('s').unwrap_or(v), false),
    };
    let n: u64 = num.parse().ok().filter(|n| *n > 0)?;
    Some(if ms { std::time::Duration::from_millis(n) } else { std::time::Duration::from_secs(n) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn parse(typ: &str, source: &str, o: &[&str]) -> Result<Option<VolumeSpec>, VolumeError> {
        parse_mount(Path::new("/data"), Some(typ), Some(Path::new(source)), &opts(o))
    }

    #[test]
    fn nfs_source_and_option_split() {
        let s = parse("nfs", "Store1:/exports//app/", &["vers=3", "nolock", "ro", "nosuid", "rshared"])
            .unwrap()
            .unwrap();
        assert_eq!(
            s.source,
            Source::Nfs { server: "store1".into(), export: "/exports/app".into() }
        );
        assert_eq!(s.data_options, opts(&["vers=3", "nolock"]));
        assert_eq!(s.bind_options, opts(&["ro", "nosuid", "rshared"]));
        assert!(s.read_only());
        assert!(!s.mkfs);
        assert!(s.key.starts_with("nfs-store1_exports_app-"), "{}", s.key);
    }

    #[test]
    fn nfs4_ipv6_server() {
        let s = parse("nfs4", "[fd00::1]:/", &[]).unwrap().unwrap();
        assert_eq!(s.source, Source::Nfs { server: "fd00::1".into(), export: "/".into() });
        assert_eq!(s.source.to_string(), "[fd00::1]:/");
        assert_eq!(s.fstype, "nfs4");
    }

    #[test]
    fn nfs_bad_sources_name_the_problem() {
        for (src, want) in [
            ("server/export", "no ':'"),
            (":/export", "server is empty"),
            ("server:export", "not an absolute path"),
            ("[fd00::1/x", "closing ']'"),
            ("bad host:/x", "not a host name"),
        ] {
            let e = parse("nfs", src, &[]).unwrap_err().to_string();
            assert!(e.contains(want), "{src}: {e}");
            assert!(e.contains("/data"), "{e}");
        }
    }

    #[test]
    fn iscsi_forms() {
        let s = parse("ext4", "iscsi://10.0.0.5/iqn.2003-01.org.Example:disk1/1", &["x-molt.mkfs", "discard"])
            .unwrap()
            .unwrap();
        assert_eq!(
            s.source,
            Source::Iscsi {
                portal: "10.0.0.5".into(),
                port: 3260,
                iqn: "iqn.2003-01.org.example:disk1".into(),
                lun: 1
            }
        );
        assert!(s.mkfs);
        assert_eq!(s.data_options, opts(&["discard"]));
        let s = parse("xfs", "iscsi://[fd00::5]:3261/iqn.2020-01.lab:t/0", &[]).unwrap().unwrap();
        assert_eq!(
            s.source,
            Source::Iscsi { portal: "fd00::5".into(), port: 3261, iqn: "iqn.2020-01.lab:t".into(), lun: 0 }
        );
        assert_eq!(s.source.to_string(), "iscsi://[fd00::5]:3261/iqn.2020-01.lab:t/0");
    }

    #[test]
    fn iscsi_bad_urls() {
        for (typ, src, want) in [
            ("ext4", "iscsi://10.0.0.5", "expected iscsi://"),
            ("ext4", "iscsi://storage.lab/iqn.x:y/1", "not an IP address"),
            ("ext4", "iscsi://10.0.0.5:99999/iqn.x:y/1", "port"),
            ("ext4", "iscsi://10.0.0.5/iqn.x:y", "missing the LUN"),
            ("ext4", "iscsi://10.0.0.5/iqn.x:y/one", "not a number"),
            ("ext4", "iscsi://10.0.0.5/target/1", "not an iSCSI name"),
            ("ext4", "iscsi://10.0.0.5/iqn.a b/1", "characters"),
            ("auto", "iscsi://10.0.0.5/iqn.x:y/1", "explicit filesystem type"),
            ("tmpfs", "iscsi://10.0.0.5/iqn.x:y/1", "not a filesystem that lives"),
        ] {
            let e = parse(typ, src, &[]).unwrap_err().to_string();
            assert!(e.contains(want), "{src}: {e}");
        }
    }

    #[test]
    fn local_forms() {
        let s = parse("ext4", "/var/lib/img/../x.img", &["loop"]).unwrap_err().to_string();
        assert!(s.contains("'..'"), "{s}");
        let s = parse("ext4", "/var//lib/./x.img", &["loop", "rw", "noatime"]).unwrap().unwrap();
        assert_eq!(s.source, Source::Image { path: "/var/lib/x.img".into() });
        assert_eq!(s.bind_options, opts(&["rw", "noatime"]));
        assert!(s.data_options.is_empty());
        let s = parse("xfs", "/dev/vdb", &["sync", "ro", "rw"]).unwrap().unwrap();
        assert_eq!(s.source, Source::Block { path: "/dev/vdb".into() });
        assert_eq!(s.data_options, opts(&["sync"]));
        assert!(!s.read_only());
        assert!(parse("ext4", "x.img", &["loop"]).unwrap_err().to_string().contains("absolute"));
    }

    #[test]
    fn not_volumes() {
        assert!(parse("bind", "/srv", &["rbind"]).unwrap().is_none());
        assert!(parse("none", "/dev/sda", &["bind"]).unwrap().is_none());
        assert!(parse("ext4", "/dev/sda", &["rbind", "ro"]).unwrap().is_none());
        assert!(parse("tmpfs", "tmpfs", &[]).unwrap().is_none());
        assert!(parse("devtmpfs", "/dev/x", &[]).unwrap().is_none());
        assert!(parse("proc", "proc", &[]).unwrap().is_none());
        assert!(parse_mount(Path::new("/d"), None, Some(Path::new("/dev/sda")), &[]).unwrap().is_none());
    }

    #[test]
    fn option_errors() {
        let e = parse("ext4", "/dev/vdb", &["x-molt.format"]).unwrap_err().to_string();
        assert!(e.contains("unknown molt option"), "{e}");
        let e = parse("nfs", "h:/e", &["x-molt.mkfs"]).unwrap_err().to_string();
        assert!(e.contains("makes no sense"), "{e}");
        let e = parse("ext4", "/i", &["loop", "offset=4096"]).unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
        let e = parse("ext4", "/dev/vdb", &["a,b"]).unwrap_err().to_string();
        assert!(e.contains("','"), "{e}");
        // fstab-only words vanish.
        let s = parse("ext4", "/dev/vdb", &["defaults", "_netdev", "x-systemd.automount"]).unwrap().unwrap();
        assert!(s.data_options.is_empty() && s.bind_options.is_empty());
    }

    #[test]
    fn keys_are_stable_safe_and_distinct() {
        let a = derive_key(&Source::Nfs { server: "h".into(), export: "/e".into() });
        assert_eq!(a, derive_key(&parse_nfs("H:/e/").unwrap()));
        let b = derive_key(&Source::Nfs { server: "h".into(), export: "/e2".into() });
        assert_ne!(a, b);
        let c = derive_key(&Source::Image { path: "/h/e".into() });
        assert_ne!(a, c);
        for k in [a, b, c] {
            assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{k}");
            assert!(k.len() < 100);
        }
        let long = derive_key(&Source::Image { path: PathBuf::from(format!("/{}", "x".repeat(300))) });
        assert!(long.len() < 80, "{long}");
    }

    #[test]
    fn from_mount_resolves_local_paths() {
        let dir = std::env::temp_dir().join(format!("molt-spec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("a.img");
        std::fs::write(&img, b"").unwrap();
        let link = dir.join("link.img");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&img, &link).unwrap();
        let mount = |src: &Path, o: &[&str]| {
            oci_spec::runtime::MountBuilder::default()
                .destination("/data")
                .typ("ext4")
                .source(src)
                .options(opts(o))
                .build()
                .unwrap()
        };
        let a = from_mount(&mount(&img, &["loop"])).unwrap().unwrap();
        let b = from_mount(&mount(&link, &["loop"])).unwrap().unwrap();
        assert_eq!(a.key, b.key);
        let e = from_mount(&mount(&dir.join("missing.img"), &["loop"])).unwrap_err().to_string();
        assert!(e.contains("missing.img") && e.contains("cannot resolve"), "{e}");
        let e = from_mount(&mount(&dir, &["loop"])).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = from_mount(&mount(Path::new("/dev/null"), &[])).unwrap_err().to_string();
        assert!(e.contains("not a block device"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn timeout_option() {
        let s = parse("ext4", "iscsi://10.0.0.5/iqn.2003-01.org.example:d/1", &["x-molt.timeout=5s"]).unwrap().unwrap();
        assert_eq!(s.timeout, Some(std::time::Duration::from_secs(5)));
        let s = parse("nfs", "h:/e", &["x-molt.timeout=800ms"]).unwrap().unwrap();
        assert_eq!(s.timeout, Some(std::time::Duration::from_millis(800)));
        for bad in ["x-molt.timeout=", "x-molt.timeout=0", "x-molt.timeout=soon"] {
            let e = parse("nfs", "h:/e", &[bad]).unwrap_err().to_string();
            assert!(e.contains("duration"), "{bad}: {e}");
        }
    }
}
