//! A container's network identity as data (links with MAC, MTU, addresses, routes), and moving it
//! between namespaces. The kernel keeps a moved link's MAC and veth peer but drops its
//! addresses, routes and up state, so we record them before the move and restore them after.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::attach::lo_up;
use super::error::NetError;
use super::netlink::{Addr, Link, Netlink, Route};
use super::netns::{current_socket, NetnsFile};
use super::spec::IpCidr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkIdentity {
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`; `None` for links without a hardware address.
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub up: bool,
    pub addresses: Vec<AddrIdentity>,
    pub routes: Vec<RouteIdentity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrIdentity {
    pub address: IpCidr,
    pub broadcast: Option<std::net::Ipv4Addr>,
    /// RT_SCOPE_* value, informational: the kernel derives it from the address.
    pub scope: u8,
    /// IFA_F_PERMANENT: configured rather than learnt (SLAAC, DHCP). Only these belong to the
    /// device in the runtime-spec's sense.
    pub permanent: bool,
}

/// A main-table route whose output interface is the link it is recorded under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteIdentity {
    /// `0.0.0.0/0` or `::/0` for the default route.
    pub destination: IpCidr,
    pub gateway: Option<IpAddr>,
    pub prefsrc: Option<IpAddr>,
    pub scope: u8,
    pub protocol: u8,
    pub metric: Option<u32>,
    pub table: u32,
}

impl LinkIdentity {
    pub fn ipv4_addresses(&self) -> Vec<std::net::Ipv4Addr> {
        self.addresses
            .iter()
            .filter_map(|a| match a.address.addr {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .collect()
    }
}

impl RouteIdentity {
    fn is_default(&self) -> bool {
        self.destination.prefix == 0
    }

    fn to_route(&self, oif: u32) -> Route {
        Route {
            family: if self.destination.addr.is_ipv4() {
                libc::AF_INET as u8
            } else {
                libc::AF_INET6 as u8
            },
            dst: (!self.is_default()).then_some(self.destination.addr),
            dst_prefix: self.destination.prefix,
            gateway: self.gateway,
            prefsrc: self.prefsrc,
            oif: Some(oif),
            scope: self.scope,
            protocol: self.protocol,
            metric: self.metric,
            table: self.table,
        }
    }
}

/// The order routes go back in: on-link routes first, since a gateway must already be
/// reachable when a route through it is added; the default route last.
pub fn restore_order(routes: &[RouteIdentity]) -> Vec<&RouteIdentity> {
    let mut v: Vec<&RouteIdentity> = routes.iter().collect();
    v.sort_by_key(|r| (r.is_default(), r.gateway.is_some()));
    v
}

fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(s: &str) -> Option<Vec<u8>> {
    s.split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect()
}

fn identity_of(link: &Link, addrs: &[Addr], routes: &[Route]) -> LinkIdentity {
    LinkIdentity {
        name: link.name.clone(),
        mac: link.mac.as_deref().map(format_mac),
        mtu: link.mtu,
        up: link.up,
        addresses: addrs
            .iter()
            .filter(|a| a.index == link.index)
            .map(|a| AddrIdentity {
                address: IpCidr {
                    addr: a.addr,
                    prefix: a.prefix,
                },
                broadcast: a.broadcast,
                scope: a.scope,
                permanent: a.permanent,
            })
            .collect(),
        routes: routes
            .iter()
            .filter(|r| r.oif == Some(link.index))
            .map(|r| RouteIdentity {
                destination: IpCidr {
                    addr: r.dst.unwrap_or(if r.family == libc::AF_INET6 as u8 {
                        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                    } else {
                        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                    }),
                    prefix: r.dst_prefix,
                },
                gateway: r.gateway,
                prefsrc: r.prefsrc,
                scope: r.scope,
                protocol: r.protocol,
                metric: r.metric,
                table: r.table,
            })
            .collect(),
    }
}

fn snapshot_with(ns: &mut Netlink) -> Result<Vec<(Link, LinkIdentity)>, NetError> {
    let label = ns.netns.clone();
    let links = ns
        .links()
        .map_err(|e| NetError::netlink("list links", "*", &label, e))?;
    let addrs = ns
        .addresses()
        .map_err(|e| NetError::netlink("list addresses", "*", &label, e))?;
    let routes = ns
        .routes()
        .map_err(|e| NetError::netlink("list routes", "*", &label, e))?;
    Ok(links
        .into_iter()
        .filter(|l| !l.loopback)
        .map(|l| {
            let id = identity_of(&l, &addrs, &routes);
            (l, id)
        })
        .collect())
}

pub fn snapshot(netns: &Path) -> Result<Vec<LinkIdentity>, NetError> {
    let mut ns = NetnsFile::open(netns)?.socket()?;
    Ok(snapshot_with(&mut ns)?
        .into_iter()
        .map(|(_, id)| id)
        .collect())
}

/// Treats "already there" as done, so a restore can be re-run after a crash half-way through.
fn tolerate_exists(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Puts a recorded identity back on the link `name` in the socket's namespace: MTU and MAC if
/// they differ, addresses, up state, then routes.
fn restore(ns: &mut Netlink, name: &str, id: &LinkIdentity) -> Result<(), NetError> {
    let link = ns
        .link_by_name(name)
        .map_err(|e| NetError::netlink("look up", name, &ns.netns, e))?
        .ok_or_else(|| NetError::LinkMissing {
            iface: name.to_string(),
            netns: ns.netns.clone(),
        })?;
    if let Some(mtu) = id.mtu {
        if link.mtu != Some(mtu) {
            ns.set_mtu(link.index, mtu)
                .map_err(|e| NetError::netlink("set MTU of", name, &ns.netns, e))?;
        }
    }
    if let Some(mac) = id.mac.as_deref() {
        let want = parse_mac(mac).ok_or_else(|| {
            NetError::netlink(
                "parse recorded MAC of",
                name,
                &ns.netns,
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad MAC {mac:?}")),
            )
        })?;
        if link.mac.as_deref() != Some(&want[..]) {
            ns.set_mac(link.index, want)
                .map_err(|e| NetError::netlink("set MAC of", name, &ns.netns, e))?;
        }
    }
    for a in &id.addresses {
        tolerate_exists(ns.add_address(link.index, a.address.addr, a.address.prefix, a.broadcast))
            .map_err(|e| {
                NetError::netlink(
                    "add address to",
                    format!("{name} ({})", a.address),
                    &ns.netns,
                    e,
                )
            })?;
    }
    if id.up != link.up {
        ns.set_up(link.index, id.up)
            .map_err(|e| NetError::netlink("set up state of", name, &ns.netns, e))?;
    }
    // Routes through a down link are refused (ENETDOWN), so only an up link gets them back.
    if id.up {
        for r in restore_order(&id.routes) {
            tolerate_exists(ns.add_route(&r.to_route(link.index))).map_err(|e| {
                NetError::netlink(
                    "add route",
                    format!("{name} ({} via {:?})", r.destination, r.gateway),
                    &ns.netns,
                    e,
                )
            })?;
        }
    }
    Ok(())
}

pub fn move_links(from: &Path, to: &Path, links: &[LinkIdentity]) -> Result<(), NetError> {
    let from_ns = NetnsFile::open(from)?;
    let to_ns = NetnsFile::open(to)?;
    let mut src = from_ns.socket()?;
    let mut dst = to_ns.socket()?;
    // Everything the move needs is open before the link goes down: it is down for the move call
    // alone (10-45 ms here, most of it the kernel's), not for our set-up too.
    let mut here = super::netns::current_socket()?;
    let arp = to_ns.open_in("open a packet socket in", super::announce::packet_socket)?;
    lo_up(&mut dst)?;
    for id in links {
        let found = src
            .link_by_name(&id.name)
            .map_err(|e| NetError::netlink("look up", &id.name, &src.netns, e))?;
        let held = match found {
            Some(l) => {
                let held = super::hold::hold(&from_ns, &mut here, id);
                if let Err(e) = src.move_to_netns(l.index, to_ns.fd(), None) {
                    held.release(&mut here, false);
                    return Err(NetError::netlink(
                        "move to the other namespace",
                        &id.name,
                        &format!("{} -> {}", src.netns, dst.netns),
                        e,
                    ));
                }
                Some(held)
            }
            None => {
                // Not in `from`: fine if an earlier, interrupted run already moved it.
                if dst
                    .link_by_name(&id.name)
                    .map_err(|e| NetError::netlink("look up", &id.name, &dst.netns, e))?
                    .is_none()
                {
                    return Err(NetError::LinkMissing {
                        iface: id.name.clone(),
                        netns: format!("{} (nor in {})", src.netns, dst.netns),
                    });
                }
                None
            }
        };
        let restored = restore(&mut dst, &id.name, id);
        if let Some(held) = held {
            held.release(&mut here, restored.is_ok() && id.up);
        }
        restored?;
        announce_moved(&mut dst, &arp, id);
    }
    Ok(())
}

/// Gratuitous ARP for the link's IPv4 addresses from its new namespace.
fn announce_moved(dst: &mut Netlink, arp: &std::os::fd::OwnedFd, id: &LinkIdentity) {
    let ips = id.ipv4_addresses();
    let mac: Option<[u8; 6]> = id.mac.as_deref().and_then(parse_mac).and_then(|m| m.try_into().ok());
    let index = dst.link_by_name(&id.name).ok().flatten().map(|l| l.index);
    if let (false, Some(mac), Some(index), true) = (ips.is_empty(), mac, index, id.up) {
        if let Err(e) = super::announce::announce(arp, index, mac, &ips) {
            crate::logging::warn(&format!("gratuitous ARP for {} from {}: {e}; neighbours learn the new place on their next ARP", id.name, dst.netns));
        }
    }
}

/// `linux.netDevices` (runtime-spec 1.3): move the host's device `name` into the container's
/// namespace as `new_name` (or under its own name). A name already taken there is an error,
/// unless it is a template with `%d` (the kernel picks the number); the device's permanent
/// addresses of global scope come along (a move to another namespace drops every address) and
/// it is up afterwards. Host routes through it are the host's policy, not the device's: they stay.
pub fn move_host_device(name: &str, new_name: Option<&str>, netns: &Path) -> Result<(), NetError> {
    let wanted = new_name.filter(|n| !n.is_empty()).unwrap_or(name);
    super::spec::check_ifname(wanted).map_err(|why| {
        NetError::netlink(
            "rename",
            format!("{name} -> {wanted}"),
            &netns.display().to_string(),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, why),
        )
    })?;
    let target = NetnsFile::open(netns)?;
    let mut ns = target.socket()?;
    let before = ns.links().map_err(|e| NetError::netlink("list", "links", &ns.netns, e))?;
    if !wanted.contains('%') && before.iter().any(|l| l.name == wanted) {
        return Err(NetError::LinkExists {
            iface: wanted.to_string(),
            netns: ns.netns.clone(),
            why: format!("linux.netDevices cannot move {name} in under that name (a template such as \"eth%d\" lets the kernel pick a free one)"),
        });
    }
    let mut host = current_socket()?;
    let (link, id) = snapshot_with(&mut host)?
        .into_iter()
        .find(|(l, _)| l.name == name)
        .ok_or_else(|| NetError::LinkMissing {
            iface: name.to_string(),
            netns: host.netns.clone(),
        })?;
    // The kernel takes the name only where the device's own is taken in the namespace.
    host.move_to_netns(link.index, target.fd(), Some(wanted))
        .map_err(|e| NetError::netlink("move into container namespace", name, &target.label(), e))?;
    // The moved device is the one that was not there before (its index may change on the way).
    let after = ns.links().map_err(|e| NetError::netlink("list", "links", &ns.netns, e))?;
    let moved = after
        .into_iter()
        .find(|l| !before.iter().any(|b| b.index == l.index))
        .ok_or_else(|| NetError::LinkMissing { iface: name.to_string(), netns: ns.netns.clone() })?;
    let mut final_name = moved.name.clone();
    if !name_fits(&moved.name, wanted) {
        ns.rename(moved.index, wanted)
            .map_err(|e| NetError::netlink("rename", format!("{name} -> {wanted}"), &ns.netns, e))?;
        final_name = ns
            .links()
            .map_err(|e| NetError::netlink("list", "links", &ns.netns, e))?
            .into_iter()
            .find(|l| l.index == moved.index)
            .map(|l| l.name)
            .ok_or_else(|| NetError::LinkMissing { iface: wanted.to_string(), netns: ns.netns.clone() })?;
    }
    let id = LinkIdentity {
        addresses: id.addresses.into_iter().filter(|a| a.permanent && a.scope == libc::RT_SCOPE_UNIVERSE).collect(),
        routes: Vec::new(),
        up: true,
        ..id
    };
    restore(&mut ns, &final_name, &id)
}

/// Whether a device's name is `wanted`, or what the kernel makes of the template `wanted`
/// ("eth%d" -> "eth0", "eth1", ...).
fn name_fits(name: &str, wanted: &str) -> bool {
    match wanted.split_once("%d") {
        None => name == wanted,
        Some((head, tail)) => name
            .strip_prefix(head)
            .and_then(|rest| rest.strip_suffix(tail))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, gw: Option<&str>) -> RouteIdentity {
        RouteIdentity {
            destination: dst.parse().expect("cidr"),
            gateway: gw.map(|g| g.parse().expect("ip")),
            prefsrc: None,
            scope: 0,
            protocol: 4,
            metric: None,
            table: 254,
        }
    }

    #[test]
    fn a_template_name_fits_what_the_kernel_makes_of_it() {
        assert!(name_fits("eth1", "eth1"));
        assert!(!name_fits("eth10", "eth1"));
        assert!(name_fits("eth0", "eth%d"));
        assert!(name_fits("net12x", "net%dx"));
        assert!(!name_fits("eth", "eth%d"));
        assert!(!name_fits("ethx", "eth%d"));
    }

    #[test]
    fn default_route_goes_last_and_onlink_first() {
        let routes = vec![
            route("0.0.0.0/0", Some("10.0.0.1")),
            route("192.168.5.0/24", Some("10.0.0.254")),
            route("10.0.0.0/24", None),
        ];
        let order: Vec<String> = restore_order(&routes)
            .iter()
            .map(|r| r.destination.to_string())
            .collect();
        assert_eq!(order, ["10.0.0.0/24", "192.168.5.0/24", "0.0.0.0/0"]);
    }

    #[test]
    fn mac_round_trips() {
        let m = [0x02u8, 0x42, 0xac, 0x11, 0x00, 0x0f];
        assert_eq!(format_mac(&m), "02:42:ac:11:00:0f");
        assert_eq!(parse_mac("02:42:ac:11:00:0f").as_deref(), Some(&m[..]));
        assert_eq!(parse_mac("02:zz"), None);
    }

    #[test]
    fn identity_serializes_for_the_journal() {
        let id = LinkIdentity {
            name: "eth0".into(),
            mac: Some("02:42:ac:11:00:0f".into()),
            mtu: Some(1500),
            up: true,
            addresses: vec![AddrIdentity {
                address: "10.88.0.5/24".parse().expect("cidr"),
                broadcast: None,
                scope: 0,
                permanent: true,
            }],
            routes: vec![route("0.0.0.0/0", Some("10.88.0.1"))],
        };
        let j = serde_json::to_string(&id).expect("json");
        assert!(j.contains("\"10.88.0.5/24\""), "{j}");
        let back: LinkIdentity = serde_json::from_str(&j).expect("parse");
        assert_eq!(back, id);
    }
}
