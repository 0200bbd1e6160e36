//! Binding helpers for the binary and tests: the DHCPv6 UDP socket on one
//! interface, its addresses and the server DUID, and the raw ICMPv6 socket for
//! router advertisements.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use rackboot_core::MacAddr;
use rackboot_wire::dhcp6;
use socket2::{Domain, Protocol, Socket, Type};

/// Already-bound sockets and what the server says about itself.
pub struct Dhcp6Sockets {
    /// UDP [::]:547 on the interface, joined to ff02::1:2.
    pub dhcp: UdpSocket,
    /// Raw ICMPv6 socket for router advertisements (see [`RaSocket::bind`]).
    pub ra: Option<RaSocket>,
    /// Where boot URLs point (a global address of the server on the interface).
    pub server_addr: Ipv6Addr,
    /// Every address of the interface: picks the local subnet.
    pub server_addrs: Vec<Ipv6Addr>,
    /// Server identifier (DUID-LL of the interface's MAC: stable across restarts).
    pub server_duid: Vec<u8>,
    /// The interface's MAC (the advertisements' source link-layer option).
    pub mac: Option<MacAddr>,
}

/// The interface's IPv6 addresses, global ones first.
pub fn interface_addrs(ifname: &str) -> io::Result<Vec<Ipv6Addr>> {
    let mut addrs: Vec<Ipv6Addr> = nix::ifaddrs::getifaddrs()
        .map_err(io::Error::from)?
        .filter(|i| i.interface_name == ifname)
        .filter_map(|i| i.address.and_then(|a| a.as_sockaddr_in6().map(|s| s.ip())))
        .collect();
    addrs.sort_by_key(|a| a.is_unicast_link_local());
    Ok(addrs)
}

/// The interface's MAC from sysfs.
pub fn interface_mac(ifname: &str) -> io::Result<MacAddr> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::other(format!("{ifname} has no Ethernet address")))
}

/// UDP [::]:`port` tied to `ifname`, joined to All_DHCP_Relay_Agents_and_Servers.
pub fn bind_dhcp6(ifname: &str, port: u16) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(ifname.as_bytes()))?;
    s.bind(&SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)).into())?;
    let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
    s.join_multicast_v6(&dhcp6::ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ifindex)?;
    s.set_nonblocking(true)?;
    // Room for a boot storm's burst (best effort without CAP_NET_ADMIN).
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    Ok(s.into())
}

impl Dhcp6Sockets {
    /// Binds port 547 on `ifname` and, when `with_ra`, the advertisement socket.
    /// The interface needs a global address inside one of the configured prefixes.
    pub fn bind(ifname: &str, with_ra: bool) -> io::Result<Dhcp6Sockets> {
        let server_addrs = interface_addrs(ifname)?;
        let server_addr = server_addrs
            .iter()
            .copied()
            .find(|a| !a.is_unicast_link_local())
            .ok_or_else(|| io::Error::other(format!("{ifname} has no global IPv6 address")))?;
        let mac = interface_mac(ifname).ok();
        let server_duid = match mac {
            Some(m) => dhcp6::duid_ll(m),
            // DUID-EN-like fallback from the address (no MAC: a tun device).
            None => [&[0, 2, 0, 0, 0xb7, 0x5a][..], &server_addr.octets()].concat(),
        };
        Ok(Dhcp6Sockets {
            dhcp: bind_dhcp6(ifname, dhcp6::SERVER_PORT)?,
            ra: if with_ra {
                Some(RaSocket::bind(ifname)?)
            } else {
                None
            },
            server_addr,
            server_addrs,
            server_duid,
            mac,
        })
    }
}

/// Linux's ICMPV6_FILTER socket option (linux/icmpv6.h); libc does not export it.
const ICMPV6_FILTER: nix::libc::c_int = 1;
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// A raw ICMPv6 socket on one interface that receives Router Solicitations and
/// other routers' Advertisements and sends advertisements with hop limit 255.
pub struct RaSocket {
    pub(crate) socket: Socket,
    pub(crate) ifindex: u32,
}

impl RaSocket {
    pub fn bind(ifname: &str) -> io::Result<RaSocket> {
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        socket.bind_device(Some(ifname.as_bytes()))?;
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
        socket.join_multicast_v6(&ALL_ROUTERS, ifindex)?;
        socket.set_multicast_if_v6(ifindex)?;
        socket.set_unicast_hops_v6(255)?;
        socket.set_multicast_hops_v6(255)?;
        // Our own multicast advertisements must not look like another router's.
        socket.set_multicast_loop_v6(false)?;
        let mut filter = [u32::MAX; 8];
        for t in [
            rackboot_wire::ndp::ROUTER_SOLICITATION,
            rackboot_wire::ndp::ROUTER_ADVERTISEMENT,
        ] {
            let t = usize::from(t);
            filter[t >> 5] &= !(1u32 << (t & 31));
        }
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
        Ok(RaSocket { socket, ifindex })
    }
}
