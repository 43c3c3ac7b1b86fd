//! Holding the host's packets to a link's IPv4 addresses while the link changes namespace: they
//! wait, unresolved, in the host's neighbour queue instead of going to a veth that is away (and
//! being dropped there), and go out when the link announces itself from its new namespace
//! (announce.rs). A dropped SYN costs its client TCP's one-second retransmission.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::identity::LinkIdentity;
use super::netlink::Netlink;
use super::netns::NetnsFile;

/// How long `release` waits for a host interface to get its carrier back. The veth is up in its
/// new namespace by then; the kernel needs a few ms (its link-watch work) to forward on it again.
const CARRIER_WAIT: Duration = Duration::from_secs(1);

/// What `hold` changed on the host, for `release` to put back.
#[must_use = "release() puts the host's settings back"]
#[derive(Debug, Default)]
pub struct Hold {
    /// Host interfaces (index, name) whose neighbour entries we keep through a carrier loss,
    /// each with the `arp_evict_nocarrier` value it had.
    evict_off: Vec<(u32, String, String)>,
}

/// Just before `id`'s link leaves `from`: the link stops answering ARP there (arp_ignore 8; it
/// keeps its addresses, so a packet that still reaches it is refused, not dropped), and `here`
/// (the host's namespace, where the bridge is) forgets its neighbour entries of the addresses, so
/// new packets to them queue while the host resolves them again.
///
/// The entry holding that queue must also outlive the move. The kernel evicts every neighbour
/// entry of an interface that loses its carrier (`arp_evict_nocarrier`, default 1), queue and
/// all; a bridge whose only forwarding port is the moving veth loses its carrier for the move,
/// once the kernel's link-watch work sees it, which often falls inside the few ms the veth is away
/// (68 of 116 moves measured). The SYNs queued before it were lost: one run of the move tests in
/// 20-30. So eviction is off on the interface that reaches each address until `release`; the
/// setting exists since Linux 5.16.
/// Best effort: each part only shortens the loss; none is needed for the move itself. A molt
/// killed before `release` leaves eviction off on that interface (entries then stay through a
/// carrier loss and are probed again when used, as on a host whose bridge never loses carrier).
pub fn hold(from: &NetnsFile, here: &mut Netlink, id: &LinkIdentity) -> Hold {
    let addrs = id.ipv4_addresses();
    if addrs.is_empty() {
        return Hold::default();
    }
    let knob = format!("/proc/sys/net/ipv4/conf/{}/arp_ignore", id.name);
    // /proc/sys/net resolves against the opener's namespace: a thread in `from` opens it.
    if let Err(e) = from.open_in("stop answering ARP in", || std::fs::write(&knob, "8")) {
        crate::logging::debug(&format!("{knob}: {e}"));
    }
    let held = Hold { evict_off: keep_entries_through_carrier_loss(here, &addrs) };
    for a in &addrs {
        if let Err(e) = here.forget_neighbour(IpAddr::V4(*a)) {
            crate::logging::debug(&format!("forget the neighbour entry of {a} in {}: {e}", here.netns));
        }
    }
    held
}

impl Hold {
    /// After the link is in its new namespace (up, if `link_up`): once each interface we
    /// changed has its carrier again (bounded by CARRIER_WAIT), its eviction goes back to what it
    /// was. With the carrier back no eviction follows, whenever the kernel gets to the event.
    /// Called before the announcement, so the first gratuitous ARP finds the port forwarding.
    pub fn release(self, here: &mut Netlink, link_up: bool) {
        let t = Instant::now();
        for (index, name, was) in self.evict_off {
            if link_up {
                wait_for_carrier(here, index, &name, t + CARRIER_WAIT);
            }
            if let Err(e) = std::fs::write(evict_knob(&name), &was) {
                crate::logging::warn(&format!("put {} back to {was}: {e}", evict_knob(&name)));
            }
        }
        crate::logging::debug(&format!("neighbour hold in {} released after {} ms", here.netns, t.elapsed().as_millis()));
    }
}

fn evict_knob(ifname: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{ifname}/arp_evict_nocarrier")
}

/// Turns eviction on carrier loss off on the interfaces through which `here` reaches `addrs`;
/// returns those it changed, with their old value.
fn keep_entries_through_carrier_loss(here: &mut Netlink, addrs: &[Ipv4Addr]) -> Vec<(u32, String, String)> {
    let mut changed: Vec<(u32, String, String)> = vec![];
    let mut seen: Vec<u32> = vec![];
    for a in addrs {
        let oif = match here.route_oif(IpAddr::V4(*a)) {
            Ok(Some(oif)) => oif,
            Ok(None) => continue,
            Err(e) => {
                crate::logging::debug(&format!("route to {a} in {}: {e}", here.netns));
                continue;
            }
        };
        if seen.contains(&oif) {
            continue;
        }
        seen.push(oif);
        let Some(name) = here.links().ok().and_then(|ls| ls.into_iter().find(|l| l.index == oif)).map(|l| l.name) else { continue };
        let knob = evict_knob(&name);
        match std::fs::read_to_string(&knob) {
            Ok(was) if was.trim() != "0" => match std::fs::write(&knob, "0") {
                Ok(()) => changed.push((oif, name, was.trim().to_string())),
                Err(e) => crate::logging::debug(&format!("{knob}: {e}")),
            },
            Ok(_) => {}
            // Before Linux 5.16 there is no such setting (and no way to keep the entries).
            Err(e) => crate::logging::debug(&format!("{knob}: {e}")),
        }
    }
    changed
}

fn wait_for_carrier(here: &mut Netlink, index: u32, name: &str, deadline: Instant) {
    loop {
        match here.link_by_name(name) {
            Ok(Some(l)) if l.index == index && !l.carrier && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(Some(l)) if l.index == index && !l.carrier => {
                crate::logging::debug(&format!("{name} in {} has no carrier yet; its neighbour entries may be evicted", here.netns));
                return;
            }
            _ => return,
        }
    }
}
