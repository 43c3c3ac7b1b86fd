//! Where a volume's data lives: the source strings a config names (an NFS export, an iSCSI
//! LUN, a local device or image file), parsed and normalised, and the stable key each gets.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};


/// The default iSCSI port (RFC 7143).
pub const ISCSI_DEFAULT_PORT: u16 = 3260;

/// Where a volume's data lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// An NFS export, mounted by the kernel's NFS client through mount.nfs.
    Nfs { server: String, export: String },
    /// A LUN of an iSCSI target, logged in through open-iscsi and mounted from its by-path device.
    Iscsi {
        portal: String,
        port: u16,
        iqn: String,
        lun: u32,
    },
    /// A local block device (canonical path).
    Block { path: PathBuf },
    /// A filesystem image file attached through a loop device (canonical path).
    Image { path: PathBuf },
}

impl Source {
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Nfs { .. } => "nfs",
            Source::Iscsi { .. } => "iscsi",
            Source::Block { .. } => "block",
            Source::Image { .. } => "image",
        }
    }

    /// `portal:port` as iscsiadm's `-p` wants it (IPv6 in brackets).
    pub fn iscsi_portal_arg(portal: &str, port: u16) -> String {
        if portal.contains(':') {
            format!("[{portal}]:{port}")
        } else {
            format!("{portal}:{port}")
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Nfs { server, export } if server.contains(':') => write!(f, "[{server}]:{export}"),
            Source::Nfs { server, export } => write!(f, "{server}:{export}"),
            Source::Iscsi { portal, port, iqn, lun } => {
                write!(f, "iscsi://{}/{iqn}/{lun}", Source::iscsi_portal_arg(portal, *port))
            }
            Source::Block { path } | Source::Image { path } => write!(f, "{}", path.display()),
        }
    }
}

/// `server:/export`, `[v6addr]:/export`.
pub fn parse_nfs(s: &str) -> Result<Source, String> {
    let (server, export) = if let Some(rest) = s.strip_prefix('[') {
        let (addr, rest) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 server needs a closing ']'".to_string())?;
        let export = rest
            .strip_prefix(':')
            .ok_or_else(|| "expected ':' after the bracketed server (server:/export)".to_string())?;
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        (addr, export)
    } else {
        s.split_once(':')
            .ok_or_else(|| "an nfs source has no ':' (expected server:/export)".to_string())?
    };
    if server.is_empty() {
        return Err("the nfs server is empty (expected server:/export)".into());
    }
    if !server
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err(format!("nfs server {server:?} is not a host name or address"));
    }
    if !export.starts_with('/') {
        return Err(format!("nfs export {export:?} is not an absolute path (expected server:/export)"));
    }
    Ok(Source::Nfs {
        server: server.to_ascii_lowercase(),
        export: normalize_export(export),
    })
}

fn normalize_export(export: &str) -> String {
    let parts: Vec<&str> = export.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// `iscsi://PORTAL[:PORT]/TARGET-IQN/LUN`. The portal must be an IP address: udev names the
/// device `/dev/disk/by-path/ip-ADDR:PORT-iscsi-IQN-lun-N` after the address, and molt waits
/// for exactly that name.
pub fn parse_iscsi(s: &str) -> Result<Source, String> {
    let rest = s
        .strip_prefix("iscsi://")
        .ok_or_else(|| "an iscsi source starts with iscsi://".to_string())?;
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| "expected iscsi://PORTAL[:PORT]/TARGET-IQN/LUN".to_string())?;
    let (portal, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| "an IPv6 portal needs a closing ']'".to_string())?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {p:?} after the IPv6 portal"))?,
            ),
        };
        (addr, port)
    } else {
        match authority.split_once(':') {
            Some((a, p)) => (a, Some(p)),
            None => (authority, None),
        }
    };
    let ip: IpAddr = portal
        .parse()
        .map_err(|_| format!("portal {portal:?} is not an IP address (iscsi://PORTAL[:PORT]/TARGET-IQN/LUN)"))?;
    let port = match port {
        None => ISCSI_DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("port {p:?} is not a number from 1 to 65535")),
        },
    };
    let (iqn, lun) = path
        .split_once('/')
        .ok_or_else(|| "missing the LUN (iscsi://PORTAL[:PORT]/TARGET-IQN/LUN)".to_string())?;
    let iqn = iqn.to_ascii_lowercase();
    if !(iqn.starts_with("iqn.") || iqn.starts_with("eui.") || iqn.starts_with("naa.")) {
        return Err(format!("target {iqn:?} is not an iSCSI name (iqn., eui. or naa.)"));
    }
    if !iqn
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
    {
        return Err(format!("target {iqn:?} holds characters an iSCSI name cannot have"));
    }
    let lun: u32 = lun
        .parse()
        .map_err(|_| format!("LUN {lun:?} is not a number"))?;
    Ok(Source::Iscsi {
        portal: ip.to_string(),
        port,
        iqn,
        lun,
    })
}

pub(super) fn absolute_path(s: &str) -> Result<PathBuf, String> {
    let p = Path::new(s);
    if !p.is_absolute() {
        return Err("a local volume source must be an absolute path".into());
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err("a local volume source must not contain '..'".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// `<kind>-<readable part of the source>-<hash>`: readable in `molt volume list`, safe as a
/// directory name, unique through the hash of the whole canonical source.
pub fn derive_key(source: &Source) -> String {
    let canonical = format!("{}:{}", source.kind(), source);
    let mut readable = String::new();
    for c in source.to_string().trim_start_matches("iscsi://").chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' };
        if !(c == '_' && readable.ends_with('_')) {
            readable.push(c);
        }
    }
    let readable = readable.trim_matches('_');
    // Keep the name short; the hash carries the uniqueness.
    let readable: String = readable.chars().rev().take(48).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{}-{}-{:012x}", source.kind(), readable, fnv1a(canonical.as_bytes()) >> 16)
}

/// FNV-1a: stable across Rust releases, unlike `DefaultHasher`, so keys survive an upgrade of molt.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
