//! Giving a new container its network: a veth from a host bridge into the container's namespace,
//! and taking the host end away again on delete.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::NetError;
use super::netlink::{Netlink, Route, RT_TABLE_MAIN};
use super::netns::{current_socket, NetnsFile};
use super::spec::{host_veth_name, NetSpec};

/// Name of the container end; fixed, as every container sees exactly one molt interface.
pub const CONTAINER_IF: &str = "eth0";

/// What `attach` created, kept in the container's state so `detach` can undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub host_veth: String,
    pub bridge: String,
    pub container_if: String,
}

/// The IFLA_IFALIAS of a bridge molt created: removed with its last port (`detach`).
pub const BRIDGE_ALIAS: &str = "molt: created for containers, removed with the last one";

/// Serialises making a bridge and taking a port on it with removing an empty one, between
/// molt processes (an flock released when the guard drops, never inherited).
fn bridge_lock() -> Option<std::fs::File> {
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open("/run/molt-bridges.lock").ok()?;
    // SAFETY: flock on an fd we own.
    (unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) } == 0).then_some(f)
}

pub fn attach(spec: &NetSpec, container_id: &str, netns: &Path) -> Result<Attachment, NetError> {
    // Open the target first: a wrong path should fail before anything is created.
    let target = NetnsFile::open(netns)?;
    let mut host = current_socket()?;
    let _lock = bridge_lock();
    let bridge = ensure_bridge(&mut host, &spec.bridge)?;

    let host_veth = host_veth_name(container_id);
    if host
        .link_by_name(&host_veth)
        .map_err(|e| NetError::netlink("look up", &host_veth, &host.netns, e))?
        .is_some()
    {
        return Err(NetError::LinkExists {
            iface: host_veth,
            netns: host.netns.clone(),
            why: format!("it is the host veth name for container {container_id}; is the container already attached, or a stale veth left behind?"),
        });
    }
    host.add_veth(&host_veth, CONTAINER_IF, target.fd())
        .map_err(|e| {
            NetError::netlink(
                "create veth pair (peer eth0 in the container) for",
                &host_veth,
                &host.netns,
                e,
            )
        })?;

    let result = wire_up(&mut host, &host_veth, bridge, spec, &target);
    if let Err(e) = result {
        // Deleting one end of a veth deletes both, so this also takes eth0 out of the container.
        if let Ok(Some(l)) = host.link_by_name(&host_veth) {
            let _ = host.del_link(l.index);
        }
        return Err(e);
    }
    Ok(Attachment {
        host_veth,
        bridge: spec.bridge.clone(),
        container_if: CONTAINER_IF.to_string(),
    })
}

/// Everything after the veth exists; any error here makes `attach` delete the veth.
fn wire_up(
    host: &mut Netlink,
    host_veth: &str,
    bridge: u32,
    spec: &NetSpec,
    target: &NetnsFile,
) -> Result<(), NetError> {
    let veth = host
        .link_by_name(host_veth)
        .map_err(|e| NetError::netlink("look up", host_veth, &host.netns, e))?
        .ok_or_else(|| NetError::LinkMissing {
            iface: host_veth.to_string(),
            netns: host.netns.clone(),
        })?;
    host.set_master(veth.index, bridge)
        .map_err(|e| NetError::netlink("attach to bridge", host_veth, &host.netns, e))?;
    host.set_up(veth.index, true)
        .map_err(|e| NetError::netlink("set up", host_veth, &host.netns, e))?;

    let mut ns = target.socket()?;
    lo_up(&mut ns)?;
    let eth0 = ns
        .link_by_name(CONTAINER_IF)
        .map_err(|e| NetError::netlink("look up", CONTAINER_IF, &ns.netns, e))?
        .ok_or_else(|| NetError::LinkMissing {
            iface: CONTAINER_IF.to_string(),
            netns: ns.netns.clone(),
        })?;
    ns.add_address(eth0.index, spec.address.addr, spec.address.prefix, None)
        .map_err(|e| NetError::netlink("add address to", CONTAINER_IF, &ns.netns, e))?;
    ns.set_up(eth0.index, true)
        .map_err(|e| NetError::netlink("set up", CONTAINER_IF, &ns.netns, e))?;
    if let Some(gw) = spec.gateway {
        let default = Route {
            family: if gw.is_ipv4() {
                libc::AF_INET as u8
            } else {
                libc::AF_INET6 as u8
            },
            dst: None,
            dst_prefix: 0,
            gateway: Some(gw),
            prefsrc: None,
            oif: Some(eth0.index),
            scope: libc::RT_SCOPE_UNIVERSE,
            protocol: libc::RTPROT_BOOT,
            metric: None,
            table: RT_TABLE_MAIN,
        };
        ns.add_route(&default).map_err(|e| {
            NetError::netlink(
                "add default route via gateway on",
                CONTAINER_IF,
                &ns.netns,
                e,
            )
        })?;
    }
    Ok(())
}

/// Returns the bridge's index, creating the bridge (without an address: the host decides how
/// the bridge reaches the world) if it is missing, and making sure it is up.
fn ensure_bridge(host: &mut Netlink, name: &str) -> Result<u32, NetError> {
    let lookup = |host: &mut Netlink| {
        host.link_by_name(name)
            .map_err(|e| NetError::netlink("look up bridge", name, &host.netns, e))
    };
    let link = match lookup(host)? {
        Some(l) => l,
        None => {
            let made = match host.add_bridge(name) {
                Ok(()) => true,
                // Another molt attaching a container at the same moment created it first.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
                Err(e) => return Err(NetError::netlink("create bridge", name, &host.netns, e)),
            };
            let link = lookup(host)?.ok_or_else(|| NetError::LinkMissing {
                iface: name.to_string(),
                netns: host.netns.clone(),
            })?;
            if made {
                host.set_alias(link.index, BRIDGE_ALIAS).map_err(|e| NetError::netlink("mark the bridge molt made", name, &host.netns, e))?;
            }
            link
        }
    };
    if link.kind.as_deref() != Some("bridge") {
        return Err(NetError::WrongKind {
            iface: name.to_string(),
            netns: host.netns.clone(),
            found: link.kind.unwrap_or_else(|| "device of unknown kind".into()),
            expected: "bridge",
        });
    }
    if !link.up {
        host.set_up(link.index, true)
            .map_err(|e| NetError::netlink("set up bridge", name, &host.netns, e))?;
    }
    Ok(link.index)
}

pub(crate) fn lo_up(ns: &mut Netlink) -> Result<(), NetError> {
    let lo = ns
        .link_by_name("lo")
        .map_err(|e| NetError::netlink("look up", "lo", &ns.netns, e))?
        .ok_or_else(|| NetError::LinkMissing {
            iface: "lo".into(),
            netns: ns.netns.clone(),
        })?;
    if !lo.up {
        ns.set_up(lo.index, true)
            .map_err(|e| NetError::netlink("set up", "lo", &ns.netns, e))?;
    }
    Ok(())
}

pub fn set_lo_up(netns: &Path) -> Result<(), NetError> {
    let mut ns = NetnsFile::open(netns)?.socket()?;
    lo_up(&mut ns)
}

/// Removes the host end, and the bridge molt made once it has no port left. A missing veth is
/// success: the kernel already removed the pair when the container's namespace died (the bridge
/// may still have to go).
pub fn detach(a: &Attachment) -> Result<(), NetError> {
    let mut host = current_socket()?;
    let Some(link) = host
        .link_by_name(&a.host_veth)
        .map_err(|e| NetError::netlink("look up", &a.host_veth, &host.netns, e))?
    else {
        let _lock = bridge_lock();
        return remove_bridge_if_unused(&mut host, &a.bridge);
    };
    // Refuse to delete something that merely took the name since.
    if link.kind.as_deref() != Some("veth") {
        return Err(NetError::WrongKind {
            iface: a.host_veth.clone(),
            netns: host.netns.clone(),
            found: link.kind.unwrap_or_else(|| "device of unknown kind".into()),
            expected: "veth",
        });
    }
    let _lock = bridge_lock();
    match host.del_link(link.index) {
        Ok(()) => {}
        // Gone between the look-up and the delete: the container's namespace just died.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
        Err(e) => return Err(NetError::netlink("delete", &a.host_veth, &host.netns, e)),
    }
    remove_bridge_if_unused(&mut host, &a.bridge)
}

/// A bridge molt created goes with its last port; one the host made (no molt alias) stays.
fn remove_bridge_if_unused(host: &mut Netlink, name: &str) -> Result<(), NetError> {
    let Some(bridge) = host.link_by_name(name).map_err(|e| NetError::netlink("look up bridge", name, &host.netns, e))? else {
        return Ok(());
    };
    if bridge.kind.as_deref() != Some("bridge") || bridge.alias.as_deref() != Some(BRIDGE_ALIAS) {
        return Ok(());
    }
    let links = host.links().map_err(|e| NetError::netlink("list links beside bridge", name, &host.netns, e))?;
    if links.iter().any(|l| l.master == Some(bridge.index)) {
        return Ok(());
    }
    match host.del_link(bridge.index) {
        Err(e) if e.raw_os_error() != Some(libc::ENODEV) => Err(NetError::netlink("delete unused bridge", name, &host.netns, e)),
        _ => Ok(()),
    }
}
