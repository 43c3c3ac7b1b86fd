//! What a container's network should look like, read from its config.json annotations, and the
//! pure naming rules (host veth names, interface name limits). No kernel access here.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::NetError;

pub const ANNOTATION_BRIDGE: &str = "io.molt.net.bridge";
pub const ANNOTATION_ADDRESS: &str = "io.molt.net.address";
pub const ANNOTATION_GATEWAY: &str = "io.molt.net.gateway";

/// The kernel's IFNAMSIZ is 16 including the terminating NUL.
pub const IFNAME_MAX: usize = 15;

/// An address with its prefix length, e.g. `10.88.0.5/24`. Serialized as that string so the
/// upgrade journal stays readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpCidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpCidr, String> {
        let max = max_prefix(&addr);
        if prefix > max {
            return Err(format!("prefix length {prefix} is larger than {max}"));
        }
        Ok(IpCidr { addr, prefix })
    }

    /// True when `ip` is inside this address's subnet.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(*ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(*ip) & mask
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<IpCidr, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| "expected ADDRESS/PREFIX, e.g. 10.88.0.5/24".to_string())?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 or IPv6 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("prefix length {prefix:?} is not a number"))?;
        IpCidr::new(addr, prefix)
    }
}

impl TryFrom<String> for IpCidr {
    type Error = String;
    fn try_from(s: String) -> Result<IpCidr, String> {
        s.parse()
    }
}

impl From<IpCidr> for String {
    fn from(c: IpCidr) -> String {
        c.to_string()
    }
}

/// The network a container asked for: one veth on a host bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSpec {
    pub bridge: String,
    pub address: IpCidr,
    pub gateway: Option<IpAddr>,
}

/// Reads the `io.molt.net.*` annotations. `Ok(None)` means the container asked for no network of
/// ours (no bridge annotation); the other two annotations are then ignored.
pub fn spec_from_annotations(a: &HashMap<String, String>) -> Result<Option<NetSpec>, NetError> {
    let Some(bridge) = a.get(ANNOTATION_BRIDGE) else {
        return Ok(None);
    };
    check_ifname(bridge).map_err(|reason| NetError::Annotation {
        annotation: ANNOTATION_BRIDGE,
        value: bridge.clone(),
        reason,
    })?;

    let raw_address = a
        .get(ANNOTATION_ADDRESS)
        .ok_or_else(|| NetError::Annotation {
            annotation: ANNOTATION_ADDRESS,
            value: String::new(),
            reason: format!("required when {ANNOTATION_BRIDGE} is set"),
        })?;
    let address: IpCidr = raw_address
        .trim()
        .parse()
        .map_err(|reason| NetError::Annotation {
            annotation: ANNOTATION_ADDRESS,
            value: raw_address.clone(),
            reason,
        })?;
    // A /32 (or /128) would leave the container with no on-link subnet, so the bridge could never
    // reach it without extra routes we do not set up.
    if address.prefix == max_prefix(&address.addr) {
        return Err(NetError::Annotation {
            annotation: ANNOTATION_ADDRESS,
            value: raw_address.clone(),
            reason: "a host prefix leaves no subnet on the bridge; use e.g. /24".into(),
        });
    }
    if address.addr.is_unspecified() || address.addr.is_loopback() || address.addr.is_multicast() {
        return Err(NetError::Annotation {
            annotation: ANNOTATION_ADDRESS,
            value: raw_address.clone(),
            reason: "not a unicast host address".into(),
        });
    }

    let gateway = match a.get(ANNOTATION_GATEWAY) {
        None => None,
        Some(raw) => {
            let bad = |reason: String| NetError::Annotation {
                annotation: ANNOTATION_GATEWAY,
                value: raw.clone(),
                reason,
            };
            let gw: IpAddr = raw
                .trim()
                .parse()
                .map_err(|_| bad("not an IPv4 or IPv6 address".into()))?;
            if gw.is_ipv4() != address.addr.is_ipv4() {
                return Err(bad(format!(
                    "address family differs from {ANNOTATION_ADDRESS} {address}"
                )));
            }
            if !address.contains(&gw) {
                return Err(bad(format!(
                    "not inside the subnet of {ANNOTATION_ADDRESS} {address}"
                )));
            }
            if gw == address.addr {
                return Err(bad(format!("same as {ANNOTATION_ADDRESS}")));
            }
            Some(gw)
        }
    };

    Ok(Some(NetSpec {
        bridge: bridge.clone(),
        address,
        gateway,
    }))
}

/// The rules the kernel applies to interface names (dev_valid_name), checked up front so the
/// user sees which annotation is wrong rather than a bare EINVAL.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > IFNAME_MAX {
        return Err(format!(
            "interface name is {} bytes, the kernel allows at most {IFNAME_MAX}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err("interface name cannot be . or ..".into());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(
            "interface name cannot contain '/', ':', whitespace or control characters".into(),
        );
    }
    Ok(())
}

/// Host end of a container's veth: "mv" + 8 hex digits of a 32-bit FNV-1a hash of the container
/// id. FNV rather than std's hasher because the name must be the same across builds: a newer
/// molt must find the veth an older one created.
pub fn host_veth_name(container_id: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in container_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("mv{h:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err_text(pairs: &[(&str, &str)]) -> String {
        match spec_from_annotations(&ann(pairs)) {
            Err(e) => e.to_string(),
            Ok(s) => panic!("expected an error, got {s:?}"),
        }
    }

    #[test]
    fn no_bridge_means_no_network() {
        assert_eq!(spec_from_annotations(&ann(&[])).ok(), Some(None));
        assert_eq!(
            spec_from_annotations(&ann(&[(ANNOTATION_ADDRESS, "10.0.0.2/24")])).ok(),
            Some(None)
        );
    }

    #[test]
    fn full_spec_parses() {
        let s = spec_from_annotations(&ann(&[
            (ANNOTATION_BRIDGE, "molt0"),
            (ANNOTATION_ADDRESS, "10.88.0.5/24"),
            (ANNOTATION_GATEWAY, "10.88.0.1"),
        ]))
        .expect("valid")
        .expect("some");
        assert_eq!(s.bridge, "molt0");
        assert_eq!(s.address.to_string(), "10.88.0.5/24");
        assert_eq!(s.gateway, Some("10.88.0.1".parse().expect("ip")));
        let v6 = spec_from_annotations(&ann(&[
            (ANNOTATION_BRIDGE, "molt0"),
            (ANNOTATION_ADDRESS, "fd00::5/64"),
        ]))
        .expect("valid")
        .expect("some");
        assert_eq!(v6.gateway, None);
    }

    #[test]
    fn bad_values_name_the_annotation_and_value() {
        let e = err_text(&[(ANNOTATION_BRIDGE, "br0")]);
        assert!(
            e.contains(ANNOTATION_ADDRESS) && e.contains("required"),
            "{e}"
        );

        let e = err_text(&[
            (ANNOTATION_BRIDGE, "a-very-long-bridge-name"),
            (ANNOTATION_ADDRESS, "10.0.0.2/24"),
        ]);
        assert!(
            e.contains(ANNOTATION_BRIDGE)
                && e.contains("a-very-long-bridge-name")
                && e.contains("15"),
            "{e}"
        );

        let e = err_text(&[
            (ANNOTATION_BRIDGE, "br/0"),
            (ANNOTATION_ADDRESS, "10.0.0.2/24"),
        ]);
        assert!(e.contains(ANNOTATION_BRIDGE), "{e}");

        for bad in [
            "10.0.0.2",
            "10.0.0.300/24",
            "10.0.0.2/33",
            "10.0.0.2/x",
            "10.0.0.2/32",
            "0.0.0.0/8",
        ] {
            let e = err_text(&[(ANNOTATION_BRIDGE, "br0"), (ANNOTATION_ADDRESS, bad)]);
            assert!(e.contains(ANNOTATION_ADDRESS) && e.contains(bad), "{e}");
        }

        for bad in ["10.0.0.256", "10.1.0.1", "fd00::1", "10.0.0.2"] {
            let e = err_text(&[
                (ANNOTATION_BRIDGE, "br0"),
                (ANNOTATION_ADDRESS, "10.0.0.2/24"),
                (ANNOTATION_GATEWAY, bad),
            ]);
            assert!(e.contains(ANNOTATION_GATEWAY) && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn cidr_round_trips_through_json() {
        let c: IpCidr = "fd00::5/64".parse().expect("cidr");
        let j = serde_json::to_string(&c).expect("json");
        assert_eq!(j, "\"fd00::5/64\"");
        let back: IpCidr = serde_json::from_str(&j).expect("parse");
        assert_eq!(back, c);
        assert!(serde_json::from_str::<IpCidr>("\"10.0.0.1/40\"").is_err());
    }

    #[test]
    fn contains_respects_prefix() {
        let c: IpCidr = "10.88.0.5/24".parse().expect("cidr");
        assert!(c.contains(&"10.88.0.1".parse().expect("ip")));
        assert!(!c.contains(&"10.88.1.1".parse().expect("ip")));
        let all: IpCidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(&"192.0.2.1".parse().expect("ip")));
    }

    #[test]
    fn host_veth_names_are_stable_and_short() {
        let a = host_veth_name("my-container");
        assert_eq!(a, host_veth_name("my-container"));
        assert_ne!(a, host_veth_name("my-container2"));
        assert_eq!(a.len(), 10);
        assert!(check_ifname(&a).is_ok());
        // Pinned: a rename of the hash would orphan veths created by an older molt.
        assert_eq!(host_veth_name(""), "mv811c9dc5");
    }
}
