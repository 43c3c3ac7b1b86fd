//! A synchronous rtnetlink socket bound to one network namespace, and the few link, address and
//! route requests molt needs. Requests return `io::Error` (errno kept); callers add the context.

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Dumps arrive in datagrams of at most 32 KiB from the kernel (netlink_dump's cap); twice
/// that leaves room and MSG_TRUNC tells us if it ever is not enough.
const RECV_BUF: usize = 64 * 1024;

pub struct Netlink {
    socket: Socket,
    seq: u32,
    /// Which namespace the socket lives in, for error messages.
    pub netns: String,
}

/// The part of an RTM_NEWLINK reply molt looks at.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mac: Option<Vec<u8>>,
    pub mtu: Option<u32>,
    pub up: bool,
    /// IFF_LOWER_UP: the kernel's carrier flag (a bridge has it while a port forwards).
    pub carrier: bool,
    pub loopback: bool,
    pub master: Option<u32>,
    /// IFLA_IFALIAS: molt marks the bridges it creates with one.
    pub alias: Option<String>,
}

/// One address as the kernel reports it.
#[derive(Debug, Clone)]
pub struct Addr {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix: u8,
    pub broadcast: Option<std::net::Ipv4Addr>,
    pub scope: u8,
    pub permanent: bool,
}

/// One route in the main table; destination `None` means the default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub family: u8,
    pub dst: Option<IpAddr>,
    pub dst_prefix: u8,
    pub gateway: Option<IpAddr>,
    pub prefsrc: Option<IpAddr>,
    pub oif: Option<u32>,
    pub scope: u8,
    pub protocol: u8,
    pub metric: Option<u32>,
    pub table: u32,
}

pub const RT_TABLE_MAIN: u32 = 254;

impl Netlink {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open(netns: String) -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink {
            socket,
            seq: 0,
            netns,
        })
    }

    /// Sends one request and collects the replies: for a dump every message up to NLMSG_DONE,
    /// otherwise until the kernel's ACK (an NLMSG_ERROR with code 0).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        packet.header.sequence_number = seq;
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf[..]);
        self.socket.send(&buf, 0)?;

        let mut out = Vec::new();
        let mut rbuf = vec![0u8; RECV_BUF];
        loop {
            let n = self.socket.recv(&mut &mut rbuf[..], libc::MSG_TRUNC)?;
            if n > rbuf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("netlink reply of {n} bytes truncated to {}", rbuf.len()),
                ));
            }
            let mut off = 0;
            while off < n {
                let msg: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&rbuf[off..n]).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("undecodable netlink reply: {e}"),
                        )
                    })?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink reply of length 0",
                    ));
                }
                off += len;
                // Replies to an earlier request that timed out or was abandoned are not ours.
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(e.to_io()),
                        }
                    }
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(msg, flags).map(|_| ())
    }

    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    /// `Ok(None)` when no link has that name (ENODEV from the kernel).
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn add_bridge(&mut self, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Creates a veth pair whose peer is born directly in the namespace behind `peer_netns`
    /// under `peer_name`, so no temporary peer name is ever visible in this namespace.
    pub fn add_veth(&mut self, name: &str, peer_name: &str, peer_netns: RawFd) -> io::Result<()> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(peer_name.to_string()));
        peer.attributes.push(LinkAttribute::NetNsFd(peer_netns));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.ack(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    pub fn del_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.ack(RouteNetlinkMessage::DelLink(msg), 0)
    }

    fn set_link(&mut self, index: u32, edit: impl FnOnce(&mut LinkMessage)) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        edit(&mut msg);
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn set_up(&mut self, index: u32, up: bool) -> io::Result<()> {
        self.set_link(index, |m| {
            m.header.change_mask = LinkFlags::Up;
            if up {
                m.header.flags = LinkFlags::Up;
            }
        })
    }

    pub fn set_master(&mut self, index: u32, master: u32) -> io::Result<()> {
        self.set_link(index, |m| {
            m.attributes.push(LinkAttribute::Controller(master))
        })
    }

    /// IFLA_IFALIAS (the kernel takes it on a set, not on the create).
    pub fn set_alias(&mut self, index: u32, alias: &str) -> io::Result<()> {
        self.set_link(index, |m| m.attributes.push(LinkAttribute::IfAlias(alias.to_string())))
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        self.set_link(index, |m| m.attributes.push(LinkAttribute::Mtu(mtu)))
    }

    pub fn set_mac(&mut self, index: u32, mac: Vec<u8>) -> io::Result<()> {
        self.set_link(index, |m| m.attributes.push(LinkAttribute::Address(mac)))
    }

    pub fn rename(&mut self, index: u32, name: &str) -> io::Result<()> {
        self.set_link(index, |m| {
            m.attributes.push(LinkAttribute::IfName(name.to_string()))
        })
    }

    /// Moves a link to the namespace behind `netns_fd`. With `new_name` the kernel renames it
    /// there; it also uses that name if the old one is taken in the target, instead of EEXIST.
    /// RTM_NEWLINK rather than RTM_SETLINK as iproute2 does; both reach do_setlink.
    pub fn move_to_netns(
        &mut self,
        index: u32,
        netns_fd: RawFd,
        new_name: Option<&str>,
    ) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::NetNsFd(netns_fd));
        if let Some(n) = new_name {
            msg.attributes.push(LinkAttribute::IfName(n.to_string()));
        }
        self.ack(RouteNetlinkMessage::NewLink(msg), 0)
    }

    pub fn addresses(&mut self) -> io::Result<Vec<Addr>> {
        let replies = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => parse_addr(a),
                _ => None,
            })
            .collect())
    }

    pub fn add_address(
        &mut self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
        broadcast: Option<std::net::Ipv4Addr>,
    ) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = family_of(&addr);
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        // For IPv4 IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
        // point-to-point links and equal to it otherwise. IPv6 uses IFA_ADDRESS alone.
        if addr.is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(addr));
        }
        msg.attributes.push(AddressAttribute::Address(addr));
        if let Some(b) = broadcast {
            msg.attributes.push(AddressAttribute::Broadcast(b));
        }
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Forget every neighbour (ARP or NDP) entry for `addr`, on any interface of this namespace:
    /// the next packet to it waits in the neighbour queue until the address is resolved again.
    /// Returns how many entries were removed.
    pub fn forget_neighbour(&mut self, addr: IpAddr) -> io::Result<usize> {
        let mut q = NeighbourMessage::default();
        q.header.family = family_of(&addr);
        let replies = self.request(RouteNetlinkMessage::GetNeighbour(q), NLM_F_DUMP)?;
        let want = match addr {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        };
        let mut n = 0;
        for m in replies {
            let RouteNetlinkMessage::NewNeighbour(nb) = m else { continue };
            // An entry being resolved holds the packets queued for it: deleting it would drop
            // them (this is how a hold already begun looks).
            if nb.header.state == netlink_packet_route::neighbour::NeighbourState::Incomplete
                || !nb.attributes.iter().any(|a| matches!(a, NeighbourAttribute::Destination(d) if *d == want))
            {
                continue;
            }
            let mut del = NeighbourMessage::default();
            del.header.family = nb.header.family;
            del.header.ifindex = nb.header.ifindex;
            del.attributes.push(NeighbourAttribute::Destination(want.clone()));
            match self.ack(RouteNetlinkMessage::DelNeighbour(del), 0) {
                Ok(()) => n += 1,
                // Gone meanwhile (it expired, or the link went away).
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// The interface this namespace would send a packet for `addr` out of (RTM_GETROUTE, the
    /// kernel's own route lookup); `None` when the reply names none.
    pub fn route_oif(&mut self, addr: IpAddr) -> io::Result<Option<u32>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(&addr);
        msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        msg.attributes.push(RouteAttribute::Destination(route_addr(addr)));
        let replies = self.request(RouteNetlinkMessage::GetRoute(msg), 0)?;
        Ok(replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => r.attributes.into_iter().find_map(|a| match a {
                RouteAttribute::Oif(o) => Some(o),
                _ => None,
            }),
            _ => None,
        }))
    }

    /// Main-table unicast routes of both families.
    pub fn routes(&mut self) -> io::Result<Vec<Route>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            let replies = self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)?;
            out.extend(replies.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse_route(r),
                _ => None,
            }));
        }
        Ok(out
            .into_iter()
            .filter(|r| r.table == RT_TABLE_MAIN)
            .collect())
    }

    pub fn add_route(&mut self, r: &Route) -> io::Result<()> {
        use netlink_packet_route::route::{RouteProtocol, RouteScope, RouteType};
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::from(r.family);
        msg.header.destination_prefix_length = r.dst_prefix;
        msg.header.table = if r.table < 256 { r.table as u8 } else { 0 };
        msg.header.protocol = RouteProtocol::from(r.protocol);
        msg.header.scope = RouteScope::from(r.scope);
        msg.header.kind = RouteType::Unicast;
        if r.table >= 256 {
            msg.attributes.push(RouteAttribute::Table(r.table));
        }
        if let Some(d) = r.dst {
            msg.attributes
                .push(RouteAttribute::Destination(route_addr(d)));
        }
        if let Some(g) = r.gateway {
            msg.attributes.push(RouteAttribute::Gateway(route_addr(g)));
        }
        if let Some(s) = r.prefsrc {
            msg.attributes
                .push(RouteAttribute::PrefSource(route_addr(s)));
        }
        if let Some(o) = r.oif {
            msg.attributes.push(RouteAttribute::Oif(o));
        }
        if let Some(m) = r.metric {
            msg.attributes.push(RouteAttribute::Priority(m));
        }
        self.ack(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }
}

fn family_of(a: &IpAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn route_addr(a: IpAddr) -> RouteAddress {
    match a {
        IpAddr::V4(v) => RouteAddress::Inet(v),
        IpAddr::V6(v) => RouteAddress::Inet6(v),
    }
}

fn from_route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn parse_link(l: LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        kind: None,
        mac: None,
        mtu: None,
        up: l.header.flags.contains(LinkFlags::Up),
        carrier: l.header.flags.contains(LinkFlags::LowerUp),
        loopback: l.header.flags.contains(LinkFlags::Loopback),
        master: None,
        alias: None,
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(m) => link.mac = Some(m),
            LinkAttribute::Mtu(m) => link.mtu = Some(m),
            LinkAttribute::Controller(m) => link.master = Some(m),
            LinkAttribute::IfAlias(a) => link.alias = Some(a),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn parse_addr(a: AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    let mut broadcast = None;
    let mut permanent = a
        .header
        .flags
        .contains(netlink_packet_route::address::AddressHeaderFlags::Permanent);
    for attr in a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(ip),
            AddressAttribute::Address(ip) => address = Some(ip),
            AddressAttribute::Broadcast(b) => broadcast = Some(b),
            // The 32-bit IFA_FLAGS supersedes the 8-bit header field when present.
            AddressAttribute::Flags(f) => {
                permanent = f.contains(netlink_packet_route::address::AddressFlags::Permanent)
            }
            _ => {}
        }
    }
    Some(Addr {
        index: a.header.index,
        addr: local.or(address)?,
        prefix: a.header.prefix_len,
        broadcast,
        scope: u8::from(a.header.scope),
        permanent,
    })
}

fn parse_route(r: RouteMessage) -> Option<Route> {
    use netlink_packet_route::route::RouteType;
    if r.header.kind != RouteType::Unicast {
        return None;
    }
    let mut route = Route {
        family: u8::from(r.header.address_family),
        dst: None,
        dst_prefix: r.header.destination_prefix_length,
        gateway: None,
        prefsrc: None,
        oif: None,
        scope: u8::from(r.header.scope),
        protocol: u8::from(r.header.protocol),
        metric: None,
        table: u32::from(r.header.table),
    };
    for a in r.attributes {
        match a {
            RouteAttribute::Destination(d) => route.dst = from_route_addr(&d),
            RouteAttribute::Gateway(g) => route.gateway = from_route_addr(&g),
            RouteAttribute::PrefSource(s) => route.prefsrc = from_route_addr(&s),
            RouteAttribute::Oif(o) => route.oif = Some(o),
            RouteAttribute::Priority(p) => route.metric = Some(p),
            RouteAttribute::Table(t) => route.table = t,
            _ => {}
        }
    }
    Some(route)
}
