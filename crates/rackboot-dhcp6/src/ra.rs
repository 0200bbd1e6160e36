//! Router advertisements from rackboot on a provisioning link without a router:
//! M and O set (addresses and other configuration come from DHCPv6), router
//! lifetime 0 (rackboot forwards nothing, so it is nobody's default router;
//! `router_lifetime_secs` changes that for UEFI PXE's sake), and
//! the local prefix as on-link (DHCPv6 addresses are bare /128s; the L flag tells
//! hosts the rest of the prefix is on the link), without the A flag unless the
//! config asks for SLAAC too. Sent every `interval_secs` and at once on a
//! solicitation, but never while another router advertises on the link.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use metrics::counter;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg, setsockopt, sockopt};
use rackboot_wire::ra::{PrefixInfo, RouterAdvertisement, parse_router_advertisement};
use socket2::SockAddr;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use crate::socket::RaSocket;

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// How long another router's advertisement silences ours (at least; longer when
/// its router lifetime is longer).
const QUIET_AFTER_OTHER_ROUTER: Duration = Duration::from_secs(1800);

/// The advertisement rackboot sends for `prefix`.
pub fn advertisement(
    prefix: &crate::config::Subnet6,
    autonomous: bool,
    router_lifetime_secs: u16,
    mac: Option<rackboot_core::MacAddr>,
) -> RouterAdvertisement {
    RouterAdvertisement {
        hop_limit: 64,
        managed: true,
        other: true,
        router_lifetime_secs,
        prefixes: vec![PrefixInfo {
            prefix: prefix.prefix,
            length: prefix.prefix_len,
            on_link: true,
            // SLAAC needs a /64.
            autonomous: autonomous && prefix.prefix_len == 64,
            valid_secs: prefix.valid_secs,
            preferred_secs: prefix.preferred_secs,
        }],
        source_link_addr: mac,
    }
}

fn recv(
    socket: &socket2::Socket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddrV6, Option<i32>)> {
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
        .ok_or_else(|| io::Error::other("ICMPv6 packet without a source address"))?;
    let mut hop_limit = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::Ipv6HopLimit(h) = c {
                hop_limit = Some(h);
            }
        }
    }
    Ok((msg.bytes, from, hop_limit))
}

/// Runs until `shutdown`: advertises `ra` every `interval` and on solicitations
/// while no other router is heard.
pub async fn run(
    socket: RaSocket,
    ra: RouterAdvertisement,
    interval: Duration,
    shutdown: CancellationToken,
) -> io::Result<()> {
    setsockopt(&socket.socket, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
    let ifindex = socket.ifindex;
    // SAFETY: the socket is moved into the AsyncFd, so its descriptor stays open
    // as long as the AsyncFd (its only owner) lives.
    let fd = unsafe { AsyncFd::register(socket.socket) }.map_err(io::Error::from)?;
    let bytes = ra.encode();
    let to = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, ifindex));
    let mut quiet_until: Option<Instant> = None;
    let mut tick = tokio::time::interval(interval);
    let mut last_sent: Option<Instant> = None;
    let mut buf = vec![0u8; 1500];
    loop {
        let send_now = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => true,
            r = fd.readable() => {
                let mut guard = r?;
                let mut solicited = false;
                loop {
                    match recv(fd.get_ref(), &mut buf) {
                        Ok((n, from, hops)) => {
                            if hops.is_some_and(|h| h != 255) || n == 0 {
                                counter!("rackboot_dhcp6_ra_dropped_total", "reason" => "hop_limit").increment(1);
                                continue;
                            }
                            match buf[0] {
                                rackboot_wire::ndp::ROUTER_SOLICITATION => solicited = true,
                                rackboot_wire::ndp::ROUTER_ADVERTISEMENT => {
                                    if let Ok(other) = parse_router_advertisement(&buf[..n]) {
                                        let hold = QUIET_AFTER_OTHER_ROUTER
                                            .max(Duration::from_secs(u64::from(other.router_lifetime_secs)));
                                        if quiet_until.is_none_or(|q| q < Instant::now()) {
                                            tracing::info!(router = %from.ip(), "another IPv6 router advertises on the link; rackboot stops advertising");
                                        }
                                        quiet_until = Some(Instant::now() + hold);
                                    }
                                }
                                _ => {}
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                // RFC 4861 6.2.6: solicited advertisements at most one per 3 s.
                solicited && last_sent.is_none_or(|t| t.elapsed() >= Duration::from_secs(3))
            }
        };
        if !send_now || quiet_until.is_some_and(|q| Instant::now() < q) {
            continue;
        }
        match fd.get_ref().send_to(&bytes, &to) {
            Ok(_) => {
                counter!("rackboot_dhcp6_ra_sent_total").increment(1);
                last_sent = Some(Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "sending a router advertisement failed"),
        }
    }
}
