//! Ends iPXE's wait for IPv6 routers. iPXE configures IPv6 beside DHCPv4 and,
//! on a network without an IPv6 router, keeps sending Router Solicitations for
//! about 13 s before it fetches anything: on every boot, for every machine.
//! This responder answers the solicitations of iPXE clients the DHCP server has
//! just seen (DHCP with iPXE's user class) with a Router Advertisement that
//! announces nothing (rackboot_wire::ndp), which iPXE takes as "no IPv6 here".
//!
//! Only those clients, once per sighting, and unicast to the client's link-local
//! address: other hosts on the link never hear from rackboot, and an operating
//! system that solicits later (the sighting is used up) hears only real routers.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::counter;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg, setsockopt, sockopt};
use rackboot_core::MacAddr;
use rackboot_wire::ndp;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

/// How long after its DHCP an iPXE client's solicitation is answered. iPXE
/// solicits for about 13 s; the margin covers a slow DHCP exchange.
const SIGHTING_TTL: Duration = Duration::from_secs(60);
/// Bound on remembered sightings (a boot storm of distinct MACs).
const MAX_SIGHTINGS: usize = 65_536;

/// iPXE clients the DHCP server saw recently, by MAC. Cloned handles share it.
#[derive(Clone, Default)]
pub struct IpxeSightings {
    seen: Arc<Mutex<HashMap<MacAddr, Instant>>>,
}

impl IpxeSightings {
    /// Records a DHCP message from iPXE on `mac`.
    pub fn note(&self, mac: MacAddr, now: Instant) {
        let mut seen = self.lock();
        if seen.len() >= MAX_SIGHTINGS && !seen.contains_key(&mac) {
            seen.retain(|_, at| now.saturating_duration_since(*at) < SIGHTING_TTL);
            if seen.len() >= MAX_SIGHTINGS {
                return;
            }
        }
        seen.insert(mac, now);
    }

    /// Whether `mac` was seen within the last [`SIGHTING_TTL`]; uses the sighting up.
    pub fn take(&self, mac: MacAddr, now: Instant) -> bool {
        self.lock()
            .remove(&mac)
            .is_some_and(|at| now.saturating_duration_since(at) < SIGHTING_TTL)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MacAddr, Instant>> {
        // A poisoned map is still a valid map.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A raw ICMPv6 socket on one interface that receives Router Solicitations only.
pub struct RouterSolicitSocket {
    socket: Socket,
    ifindex: u32,
}

/// Linux's ICMPV6_FILTER socket option (linux/icmpv6.h); libc does not export it.
const ICMPV6_FILTER: nix::libc::c_int = 1;
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

impl RouterSolicitSocket {
    /// Opens the socket on `ifname` (needs CAP_NET_RAW and IPv6 on the interface):
    /// joins all-routers (ff02::2, where solicitations go), lets only type 133
    /// through, sends with hop limit 255 and reports each packet's hop limit.
    pub fn bind(ifname: &str) -> io::Result<RouterSolicitSocket> {
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        socket.bind_device(Some(ifname.as_bytes()))?;
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
        socket.join_multicast_v6(&ALL_ROUTERS, ifindex)?;
        socket.set_unicast_hops_v6(u32::from(ndp::REQUIRED_HOP_LIMIT))?;
        socket.set_multicast_hops_v6(u32::from(ndp::REQUIRED_HOP_LIMIT))?;
        setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
        // A set bit blocks that ICMPv6 type.
        let mut filter = [u32::MAX; 8];
        let t = usize::from(ndp::ROUTER_SOLICITATION);
        filter[t >> 5] &= !(1u32 << (t & 31));
        // SAFETY: a valid socket and a 32-byte filter, the size the kernel expects.
        let rc = unsafe {
            nix::libc::setsockopt(
                socket.as_raw_fd(),
                nix::libc::IPPROTO_ICMPV6,
                ICMPV6_FILTER,
                filter.as_ptr().cast(),
                std::mem::size_of_val(&filter) as nix::libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        socket.set_nonblocking(true)?;
        Ok(RouterSolicitSocket { socket, ifindex })
    }
}

/// One solicitation as received.
struct Solicitation {
    from: SocketAddrV6,
    hop_limit: Option<i32>,
    len: usize,
}

fn recv_solicitation(socket: &Socket, buf: &mut [u8]) -> io::Result<Solicitation> {
    let mut cmsg = nix::cmsg_space!(nix::libc::c_int);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn6>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let from = msg
        .address
        .map(SocketAddrV6::from)
        .ok_or_else(|| io::Error::other("solicitation without a source address"))?;
    let mut hop_limit = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::Ipv6HopLimit(h) = c {
                hop_limit = Some(h);
            }
        }
    }
    Ok(Solicitation {
        from,
        hop_limit,
        len: msg.bytes,
    })
}

fn drop_packet(reason: &'static str) {
    counter!("rackboot_dhcp_ipxe_ra_dropped_total", "reason" => reason).increment(1);
}

/// What to do with one received solicitation.
fn answer_to(
    s: &Solicitation,
    icmp: &[u8],
    sightings: &IpxeSightings,
    ifindex: u32,
) -> Option<SocketAddrV6> {
    if s.hop_limit
        .is_some_and(|h| h != i32::from(ndp::REQUIRED_HOP_LIMIT))
    {
        drop_packet("hop_limit");
        return None;
    }
    let rs = match ndp::parse_router_solicitation(icmp) {
        Ok(rs) => rs,
        Err(e) => {
            tracing::debug!(from = %s.from, error = %e, "dropping malformed router solicitation");
            drop_packet(e.reason());
            return None;
        }
    };
    // The unspecified source (a host without an address yet) cannot be answered
    // unicast, and carries no link-layer address to match.
    let mac = rs.source_link_addr?;
    if s.from.ip().is_unspecified() || !sightings.take(mac, Instant::now()) {
        return None;
    }
    let scope = if s.from.scope_id() != 0 {
        s.from.scope_id()
    } else {
        ifindex
    };
    Some(SocketAddrV6::new(*s.from.ip(), 0, 0, scope))
}

/// Answers solicitations until `shutdown`.
pub async fn run(
    socket: RouterSolicitSocket,
    sightings: IpxeSightings,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let ifindex = socket.ifindex;
    // SAFETY: the Socket owns its descriptor, which stays open and the same for
    // as long as the AsyncFd (its only owner) lives.
    let fd = unsafe { AsyncFd::register(socket.socket) }.map_err(io::Error::from)?;
    let advert = ndp::empty_router_advertisement();
    let mut buf = [0u8; 1500];
    loop {
        let mut ready = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = fd.readable() => r?,
        };
        let received = match ready.try_io(|inner| recv_solicitation(inner.get_ref(), &mut buf)) {
            Ok(r) => r,
            Err(_would_block) => continue,
        };
        let s = match received {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "receiving a router solicitation failed");
                continue;
            }
        };
        let Some(to) = answer_to(&s, &buf[..s.len], &sightings, ifindex) else {
            continue;
        };
        match fd.get_ref().send_to(&advert, &SockAddr::from(to)) {
            Ok(_) => {
                counter!("rackboot_dhcp_ipxe_ra_sent_total").increment(1);
                tracing::debug!(%to, "told iPXE there is no IPv6 router");
            }
            Err(e) => tracing::debug!(%to, error = %e, "sending a router advertisement failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_sighting_answers_one_solicitation_within_its_ttl() {
        let sightings = IpxeSightings::default();
        let t0 = Instant::now();
        let a = mac("52:54:00:00:00:01");
        assert!(!sightings.take(a, t0), "never seen");
        sightings.note(a, t0);
        assert!(sightings.take(a, t0 + Duration::from_secs(13)));
        assert!(!sightings.take(a, t0 + Duration::from_secs(14)), "used up");
        sightings.note(a, t0);
        assert!(!sightings.take(a, t0 + SIGHTING_TTL), "expired");
    }

    fn solicitation(from: &str, hop_limit: Option<i32>) -> Solicitation {
        Solicitation {
            from: SocketAddrV6::new(from.parse().unwrap(), 0, 0, 7),
            hop_limit,
            len: 16,
        }
    }

    /// iPXE's solicitation as captured in the lab (ICMPv6 part).
    const IPXE_RS: [u8; 16] = [
        0x85, 0x00, 0xda, 0x83, 0, 0, 0, 0, 0x01, 0x01, 0x52, 0x54, 0x00, 0x00, 0x00, 0x01,
    ];

    #[test]
    fn only_seen_ipxe_clients_with_hop_limit_255_are_answered() {
        let sightings = IpxeSightings::default();
        let ipxe = solicitation("fe80::5054:ff:fe00:1", Some(255));
        assert_eq!(answer_to(&ipxe, &IPXE_RS, &sightings, 3), None, "not seen");
        sightings.note(mac("52:54:00:00:00:01"), Instant::now());
        let forwarded = solicitation("fe80::5054:ff:fe00:1", Some(64));
        assert_eq!(
            answer_to(&forwarded, &IPXE_RS, &sightings, 3),
            None,
            "hop limit 64"
        );
        let unspecified = solicitation("::", Some(255));
        assert_eq!(answer_to(&unspecified, &IPXE_RS, &sightings, 3), None);
        sightings.note(mac("52:54:00:00:00:01"), Instant::now());
        assert_eq!(
            answer_to(&ipxe, &IPXE_RS, &sightings, 3),
            Some(SocketAddrV6::new(
                "fe80::5054:ff:fe00:1".parse().unwrap(),
                0,
                0,
                7
            ))
        );
        assert_eq!(
            answer_to(&ipxe, &IPXE_RS, &sightings, 3),
            None,
            "once per sighting"
        );
        assert_eq!(
            answer_to(&ipxe, &IPXE_RS[..6], &sightings, 3),
            None,
            "malformed"
        );
    }
}
