//! Socket setup for the binary (and tests): UDP bound to a named interface with
//! broadcast enabled, the raw ICMP socket for the conflict probe, and the raw
//! ICMPv6 socket that answers iPXE's router solicitations.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{DhcpConfig, DhcpMode};
use crate::ipxe_ra::RouterSolicitSocket;
use rackboot_wire::dhcp::{PXE_PORT, SERVER_PORT};

/// UDP socket on 0.0.0.0:`port` tied to `ifname` (SO_BINDTODEVICE) so it receives
/// broadcasts from that link only and sends broadcasts out of it; SO_BROADCAST on.
/// Returned non-blocking, ready for tokio.
pub fn bind_interface(ifname: &str, port: u16) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(ifname.as_bytes()))?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())?;
    s.set_nonblocking(true)?;
    grow_buffers(&s);
    // Receive timestamps from the start, so the server can tell how long a request
    // waited in the queue (it sheds those over a second old). Best effort.
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::ReceiveTimestampns, &true);
    Ok(s.into())
}

/// Socket buffer size for boot storms: a burst of requests (or of ACKs released by
/// one group commit) must not overflow the kernel's ~200 KiB default.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Best effort: the `*FORCE` options pass `net.core.[rw]mem_max` with CAP_NET_ADMIN;
/// without it the plain options give whatever the limit allows.
fn grow_buffers(s: &Socket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(s, sockopt::RcvBufForce, &SOCKET_BUFFER_BYTES).is_err() {
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    }
    if setsockopt(s, sockopt::SndBufForce, &SOCKET_BUFFER_BYTES).is_err() {
        let _ = s.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    }
}

/// Raw ICMP socket for echo probes (needs CAP_NET_RAW). Blocking; the prober
/// thread reads it with a timeout.
pub fn bind_icmp(ifname: Option<&str>) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    if let Some(ifname) = ifname {
        s.bind_device(Some(ifname.as_bytes()))?;
    }
    Ok(s)
}

/// Already-bound sockets and the address the server answers as.
pub struct DhcpSockets {
    /// Port 67: requests from clients and relays.
    pub dhcp: UdpSocket,
    /// Port 4011: PXE boot server requests (ProxyDHCP).
    pub pxe: Option<UdpSocket>,
    /// Raw ICMP socket for the conflict probe (when `probe.enabled`).
    pub icmp: Option<Socket>,
    /// Router solicitations on the interface (`answer_ipxe_router_solicitations`).
    pub router_solicit: Option<RouterSolicitSocket>,
    /// Server identifier (option 54), `siaddr` default and local subnet selector.
    pub server_ip: Ipv4Addr,
    /// Where replies to clients go (68 except in tests).
    pub client_port: u16,
    /// Where replies to relays go (67 except in tests).
    pub relay_port: u16,
}

impl DhcpSockets {
    /// Sockets with the standard reply ports.
    pub fn new(dhcp: UdpSocket, pxe: Option<UdpSocket>, server_ip: Ipv4Addr) -> DhcpSockets {
        DhcpSockets {
            dhcp,
            pxe,
            icmp: None,
            router_solicit: None,
            server_ip,
            client_port: rackboot_wire::dhcp::CLIENT_PORT,
            relay_port: SERVER_PORT,
        }
    }

    /// Binds what `config` needs on `ifname`: port 67, port 4011 in proxy mode,
    /// the ICMP socket when probing, the router-solicitation socket when asked
    /// for (a host without IPv6 on `ifname` only loses that, with a warning).
    pub fn bind(ifname: &str, server_ip: Ipv4Addr, config: &DhcpConfig) -> io::Result<DhcpSockets> {
        let dhcp = bind_interface(ifname, SERVER_PORT)?;
        let pxe = match config.mode {
            DhcpMode::Proxy => Some(bind_interface(ifname, PXE_PORT)?),
            DhcpMode::Full => None,
        };
        let mut sockets = DhcpSockets::new(dhcp, pxe, server_ip);
        if config.mode == DhcpMode::Full && config.probe.enabled {
            sockets.icmp = Some(bind_icmp(None)?);
        }
        if config.answer_ipxe_router_solicitations {
            match RouterSolicitSocket::bind(ifname) {
                Ok(s) => sockets.router_solicit = Some(s),
                Err(e) => tracing::warn!(
                    interface = ifname,
                    error = %e,
                    "cannot answer iPXE's IPv6 router solicitations (iPXE waits ~13 s for a router)"
                ),
            }
        }
        Ok(sockets)
    }
}
