//! Gratuitous ARP: after a moved veth is up in its new namespace, tell the neighbours that its
//! IPv4 addresses answer there, so packets the host held while the address was unresolved go out
//! at once instead of after ARP's one-second retry.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_ARP: u16 = 0x0806;

/// One ARP request announcing `ip` at `mac` (sender and target address both `ip`), as an
/// Ethernet frame to broadcast.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, oper request.
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // Target hardware address stays zero; the target protocol address is ours too.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// A raw packet socket (made in the namespace that holds the link, see `NetnsFile::open_in`).
pub fn packet_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(ETH_P_ARP.to_be())) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Send the announcements for `ips` out of link `ifindex`, a few times over ~30 ms (a frame can
/// be lost while the bridge port comes up), then again at ~50, 150 and 400 ms from a background
/// thread (a loaded machine can bring the port up later; a host still resolving would otherwise
/// wait for ARP's one-second retry). The caller goes on meanwhile.
pub fn announce(sock: &OwnedFd, ifindex: u32, mac: [u8; 6], ips: &[Ipv4Addr]) -> std::io::Result<()> {
    send_rounds(sock, ifindex, mac, ips, &[0, 2, 8, 20])?;
    if let Ok(late) = sock.try_clone() {
        let ips = ips.to_vec();
        std::thread::spawn(move || send_rounds(&late, ifindex, mac, &ips, &[30, 100, 250]));
    }
    Ok(())
}

fn send_rounds(sock: &OwnedFd, ifindex: u32, mac: [u8; 6], ips: &[Ipv4Addr], pauses_ms: &[u64]) -> std::io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for (i, pause_ms) in pauses_ms.iter().enumerate() {
        std::thread::sleep(std::time::Duration::from_millis(*pause_ms));
        for ip in ips {
            let frame = garp_frame(mac, *ip);
            // SAFETY: sendto with a live buffer and a sockaddr_ll of the right size.
            let r = unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    frame.as_ptr() as *const libc::c_void,
                    frame.len(),
                    0,
                    &to as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            // Only the first round must get out; later ones are insurance.
            if r < 0 && i == 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_arp_names_the_address_as_sender_and_target() {
        let f = garp_frame([2, 0, 0, 0, 0, 5], Ipv4Addr::new(10, 89, 0, 5));
        assert_eq!(&f[0..6], &[0xff; 6], "to broadcast");
        assert_eq!(&f[12..14], &[0x08, 0x06], "ARP");
        assert_eq!(&f[20..22], &[0, 1], "a request");
        assert_eq!(&f[22..28], &[2, 0, 0, 0, 0, 5]);
        assert_eq!(&f[28..32], &[10, 89, 0, 5], "sender address");
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 89, 0, 5], "target address");
    }
}
