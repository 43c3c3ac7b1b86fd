//! Mount options as the OCI config spells them, split into what mount(2) and mount_setattr(2)
//! take: the one table the init's mounts, the upgrade's volume hand-over and `molt features` share.

use nix::mount::MsFlags;

/// Flags and data from a mount's option list, split the way mount(2) wants them.
#[derive(Debug, PartialEq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    pub bind: bool,
    pub recursive: bool,
    /// tmpfs only: start with a copy of the directory it covers.
    pub tmpcopyup: bool,
    /// MOUNT_ATTR_* flags the recursive options (rro, rnosuid, ...) set and clear.
    pub attr_set: u64,
    pub attr_clr: u64,
}

/// Options that are mount(2) flags: (name, flags set, flags cleared).
const FLAG_OPTIONS: &[(&str, MsFlags, MsFlags)] = &[
    ("ro", MsFlags::MS_RDONLY, MsFlags::empty()),
    ("rw", MsFlags::empty(), MsFlags::MS_RDONLY),
    ("nosuid", MsFlags::MS_NOSUID, MsFlags::empty()),
    ("suid", MsFlags::empty(), MsFlags::MS_NOSUID),
    ("nodev", MsFlags::MS_NODEV, MsFlags::empty()),
    ("dev", MsFlags::empty(), MsFlags::MS_NODEV),
    ("noexec", MsFlags::MS_NOEXEC, MsFlags::empty()),
    ("exec", MsFlags::empty(), MsFlags::MS_NOEXEC),
    ("sync", MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
    ("async", MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
    ("dirsync", MsFlags::MS_DIRSYNC, MsFlags::empty()),
    ("remount", MsFlags::MS_REMOUNT, MsFlags::empty()),
    ("mand", MsFlags::MS_MANDLOCK, MsFlags::empty()),
    ("nomand", MsFlags::empty(), MsFlags::MS_MANDLOCK),
    ("atime", MsFlags::empty(), MsFlags::MS_NOATIME),
    ("noatime", MsFlags::MS_NOATIME, MsFlags::empty()),
    ("diratime", MsFlags::empty(), MsFlags::MS_NODIRATIME),
    ("nodiratime", MsFlags::MS_NODIRATIME, MsFlags::empty()),
    ("relatime", MsFlags::MS_RELATIME, MsFlags::empty()),
    ("norelatime", MsFlags::empty(), MsFlags::MS_RELATIME),
    ("strictatime", MsFlags::MS_STRICTATIME, MsFlags::empty()),
    ("nostrictatime", MsFlags::empty(), MsFlags::MS_STRICTATIME),
    ("lazytime", MsFlags::MS_LAZYTIME, MsFlags::empty()),
    ("nolazytime", MsFlags::empty(), MsFlags::MS_LAZYTIME),
    ("nosymfollow", MS_NOSYMFOLLOW, MsFlags::empty()),
    ("symfollow", MsFlags::empty(), MS_NOSYMFOLLOW),
    ("silent", MsFlags::MS_SILENT, MsFlags::empty()),
    ("loud", MsFlags::empty(), MsFlags::MS_SILENT),
    ("iversion", MsFlags::MS_I_VERSION, MsFlags::empty()),
    ("noiversion", MsFlags::empty(), MsFlags::MS_I_VERSION),
    ("acl", MsFlags::MS_POSIXACL, MsFlags::empty()),
    ("noacl", MsFlags::empty(), MsFlags::MS_POSIXACL),
    ("defaults", MsFlags::empty(), MsFlags::empty()),
];

/// MS_NOSYMFOLLOW (Linux 5.10), missing from nix's MsFlags.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
const MOUNT_ATTR_RELATIME: u64 = 0x0;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x200000;

/// runc's recursive options, applied with mount_setattr(AT_RECURSIVE) to the mount and every
/// mount under it: (name, cleared rather than set, MOUNT_ATTR_* flag).
const RECURSIVE_OPTIONS: &[(&str, bool, u64)] = &[
    ("rro", false, MOUNT_ATTR_RDONLY),
    ("rrw", true, MOUNT_ATTR_RDONLY),
    ("rnosuid", false, MOUNT_ATTR_NOSUID),
    ("rsuid", true, MOUNT_ATTR_NOSUID),
    ("rnodev", false, MOUNT_ATTR_NODEV),
    ("rdev", true, MOUNT_ATTR_NODEV),
    ("rnoexec", false, MOUNT_ATTR_NOEXEC),
    ("rexec", true, MOUNT_ATTR_NOEXEC),
    ("rnodiratime", false, MOUNT_ATTR_NODIRATIME),
    ("rdiratime", true, MOUNT_ATTR_NODIRATIME),
    ("rnosymfollow", false, MOUNT_ATTR_NOSYMFOLLOW),
    ("rsymfollow", true, MOUNT_ATTR_NOSYMFOLLOW),
];

/// The recursive access-time options. The kernel's access time is one mode, not flags: it is
/// changed by clearing the whole MOUNT_ATTR__ATIME field and setting the new mode (a partial clear
/// is EINVAL), so each option names the mode it leaves, and the last one wins. Clearing noatime
/// or strictatime leaves the kernel's default, relatime (as `atime` does for mount(2)); clearing
/// relatime leaves every access recorded, strictatime.
const RECURSIVE_ATIME_OPTIONS: &[(&str, u64)] = &[
    ("rrelatime", MOUNT_ATTR_RELATIME),
    ("rnorelatime", MOUNT_ATTR_STRICTATIME),
    ("rnoatime", MOUNT_ATTR_NOATIME),
    ("ratime", MOUNT_ATTR_RELATIME),
    ("rstrictatime", MOUNT_ATTR_STRICTATIME),
    ("rnostrictatime", MOUNT_ATTR_RELATIME),
];

const PROPAGATION_OPTIONS: &[&str] = &["private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable"];

/// Every option name molt itself understands (what `molt features` reports as mountOptions);
/// any other goes to the filesystem as mount data.
pub fn known_options() -> Vec<&'static str> {
    let mut v: Vec<&str> = FLAG_OPTIONS.iter().map(|(n, _, _)| *n).collect();
    v.extend(RECURSIVE_OPTIONS.iter().map(|(n, _, _)| *n));
    v.extend(RECURSIVE_ATIME_OPTIONS.iter().map(|(n, _)| *n));
    v.extend(PROPAGATION_OPTIONS);
    v.extend(["bind", "rbind", "tmpcopyup", "idmap", "ridmap"]);
    v.sort_unstable();
    v
}

pub fn parse_options(options: &[String]) -> MountOptions {
    let mut o = MountOptions {
        flags: MsFlags::empty(),
        propagation: vec![],
        data: vec![],
        bind: false,
        recursive: false,
        tmpcopyup: false,
        attr_set: 0,
        attr_clr: 0,
    };
    for opt in options {
        if let Some((_, set, clear)) = FLAG_OPTIONS.iter().find(|(n, _, _)| n == opt) {
            o.flags.insert(*set);
            o.flags.remove(*clear);
            continue;
        }
        if let Some((_, clear, flag)) = RECURSIVE_OPTIONS.iter().find(|(n, _, _)| n == opt) {
            if *clear {
                o.attr_clr |= flag;
                o.attr_set &= !flag;
            } else {
                o.attr_set |= flag;
                o.attr_clr &= !flag;
            }
            continue;
        }
        if let Some((_, mode)) = RECURSIVE_ATIME_OPTIONS.iter().find(|(n, _)| n == opt) {
            o.attr_set = (o.attr_set & !MOUNT_ATTR_ATIME_MASK) | mode;
            o.attr_clr |= MOUNT_ATTR_ATIME_MASK;
            continue;
        }
        match opt.as_str() {
            "bind" => o.bind = true,
            "rbind" => {
                o.bind = true;
                o.recursive = true;
            }
            p if PROPAGATION_OPTIONS.contains(&p) => o.propagation.push(propagation_flag(p).unwrap_or(MsFlags::MS_PRIVATE)),
            "tmpcopyup" => o.tmpcopyup = true,
            // Options handled elsewhere (volumes, idmapped mounts) never reach mount(2).
            s if s.starts_with("x-") => {}
            "idmap" | "ridmap" => {}
            "loop" => {}
            _ => o.data.push(opt.clone()),
        }
    }
    o
}

pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// mount(2)'s per-mount flags in `flags` as mount_setattr's MOUNT_ATTR_* (set, clear): the
/// access-time mode is one field, cleared whole when the options name a mode.
pub fn mount_attrs(flags: MsFlags) -> (u64, u64) {
    let mut set = 0;
    for (ms, attr) in [
        (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (MsFlags::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
        (MS_NOSYMFOLLOW, MOUNT_ATTR_NOSYMFOLLOW),
    ] {
        if flags.contains(ms) {
            set |= attr;
        }
    }
    let atime = [(MsFlags::MS_NOATIME, MOUNT_ATTR_NOATIME), (MsFlags::MS_STRICTATIME, MOUNT_ATTR_STRICTATIME), (MsFlags::MS_RELATIME, MOUNT_ATTR_RELATIME)]
        .into_iter()
        .find(|(ms, _)| flags.contains(*ms));
    match atime {
        Some((_, mode)) => (set | mode, MOUNT_ATTR_ATIME_MASK),
        None => (set, 0),
    }
}

/// The superblock flags in `flags` as fsconfig(2) names them (what mount(2) gives a new
/// filesystem; mandatory locking is gone from the kernel and not passed).
pub fn superblock_flags(flags: MsFlags) -> Vec<&'static str> {
    [(MsFlags::MS_RDONLY, "ro"), (MsFlags::MS_SYNCHRONOUS, "sync"), (MsFlags::MS_DIRSYNC, "dirsync"), (MsFlags::MS_LAZYTIME, "lazytime")]
        .into_iter()
        .filter(|(ms, _)| flags.contains(*ms))
        .map(|(_, name)| name)
        .collect()
}

/// A propagation option's flags as mount_setattr takes them: (the mode, whether recursive).
pub fn propagation_attr(flag: MsFlags) -> (u64, bool) {
    ((flag & !MsFlags::MS_REC).bits(), flag.contains(MsFlags::MS_REC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&["nosuid".into(), "ro".into(), "mode=755".into(), "rbind".into(), "rslave".into()]);
        assert!(o.flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_RDONLY));
        assert!(o.bind && o.recursive);
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data, vec!["mode=755".to_string()]);
        let o = parse_options(&["ro".into(), "rw".into()]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn recursive_atime_options_clear_the_whole_field_and_the_last_wins() {
        let attrs = |opts: &[&str]| {
            let o = parse_options(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            (o.attr_set, o.attr_clr)
        };
        let field = MOUNT_ATTR_ATIME_MASK;
        assert_eq!(attrs(&["rnoatime"]), (MOUNT_ATTR_NOATIME, field));
        assert_eq!(attrs(&["rstrictatime"]), (MOUNT_ATTR_STRICTATIME, field));
        assert_eq!(attrs(&["rrelatime"]), (MOUNT_ATTR_RELATIME, field));
        assert_eq!(attrs(&["ratime"]), (MOUNT_ATTR_RELATIME, field));
        assert_eq!(attrs(&["rnostrictatime"]), (MOUNT_ATTR_RELATIME, field));
        assert_eq!(attrs(&["rnorelatime"]), (MOUNT_ATTR_STRICTATIME, field));
        assert_eq!(attrs(&["rnoatime", "ratime"]), (MOUNT_ATTR_RELATIME, field));
        assert_eq!(attrs(&["rro", "rnoatime", "rnodiratime"]), (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOATIME | MOUNT_ATTR_NODIRATIME, field));
        assert_eq!(attrs(&["rro", "rrw"]), (0, MOUNT_ATTR_RDONLY));
        assert_eq!(attrs(&["nosuid"]), (0, 0));
    }

    #[test]
    fn mount_flags_as_mount_attributes() {
        let o = parse_options(&["ro".into(), "nosuid".into(), "noatime".into(), "sync".into()]);
        assert_eq!(mount_attrs(o.flags), (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME_MASK));
        assert_eq!(superblock_flags(o.flags), ["ro", "sync"]);
        assert_eq!(mount_attrs(parse_options(&["nodev".into()]).flags), (MOUNT_ATTR_NODEV, 0));
        assert_eq!(propagation_attr(propagation_flag("rslave").unwrap()), (MsFlags::MS_SLAVE.bits(), true));
        assert_eq!(propagation_attr(propagation_flag("shared").unwrap()), (MsFlags::MS_SHARED.bits(), false));
    }
}
