//! Socket helpers tokio lacks: the destination address of a request (IP_PKTINFO,
//! IPV6_RECVPKTINFO) and UDP GSO sends (one syscall for a whole window of DATA packets).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrStorage, recvmsg, sendmsg,
    setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Asks the kernel to report each datagram's destination address.
pub fn enable_pktinfo(socket: &UdpSocket) -> io::Result<()> {
    match socket.local_addr()? {
        SocketAddr::V4(_) => setsockopt(&socket.as_fd(), sockopt::Ipv4PacketInfo, &true),
        SocketAddr::V6(_) => setsockopt(&socket.as_fd(), sockopt::Ipv6RecvPacketInfo, &true),
    }
    .map_err(io::Error::from)
}

/// One received datagram: its length, sender, and the local address it was sent to.
pub struct Received {
    pub len: usize,
    pub peer: SocketAddr,
    pub local_ip: Option<IpAddr>,
}

pub async fn recv_with_pktinfo(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    // Room for either family's packet info.
    let mut cmsg = nix::cmsg_space!(nix::libc::in6_pktinfo);
    socket
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buf)];
            let msg = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .map_err(io::Error::from)?;
            let peer = msg
                .address
                .and_then(|a| {
                    if let Some(v4) = a.as_sockaddr_in() {
                        Some(SocketAddr::from((v4.ip(), v4.port())))
                    } else {
                        a.as_sockaddr_in6()
                            .map(|v6| SocketAddr::V6(std::net::SocketAddrV6::from(*v6)))
                    }
                })
                .ok_or_else(|| io::Error::other("datagram without a source address"))?;
            let mut local_ip = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::Ipv4PacketInfo(info) => {
                            // ipi_spec_dst is the local address replies should come from
                            // (for unicast: the destination; for broadcast: the interface's).
                            let spec = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                            let dst = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                            local_ip =
                                Some(IpAddr::V4(if spec.is_unspecified() { dst } else { spec }));
                        }
                        ControlMessageOwned::Ipv6PacketInfo(info) => {
                            local_ip = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                        }
                        _ => {}
                    }
                }
            }
            Ok(Received {
                len: msg.bytes,
                peer,
                local_ip,
            })
        })
        .await
}

/// Sends `buf` (consecutive packets of `segment` bytes, the last may be shorter)
/// as one GSO send on a connected socket.
pub async fn send_gso(socket: &UdpSocket, buf: &[u8], segment: u16) -> io::Result<()> {
    socket
        .async_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(buf)];
            let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
            sendmsg::<SockaddrIn>(socket.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
                .map_err(io::Error::from)
        })
        .await
        .map(|_| ())
}

/// The network namespace a socket lives in (ioctl SIOCGSKNS, Linux 4.9+), or
/// `None` when the kernel cannot tell.
pub fn socket_netns(socket: &UdpSocket) -> Option<OwnedFd> {
    const SIOCGSKNS: nix::libc::c_ulong = 0x894C;
    // SAFETY: SIOCGSKNS takes no argument and returns a new fd we then own.
    let fd = unsafe { nix::libc::ioctl(socket.as_raw_fd(), SIOCGSKNS as _) };
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves the calling thread into `netns` unless it is already there (which needs
/// no privilege, so unprivileged servers in one namespace never call setns).
pub fn enter_netns(netns: &OwnedFd) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let target = nix::sys::stat::fstat(netns.as_fd()).map_err(io::Error::from)?;
    let current = std::fs::metadata("/proc/thread-self/ns/net")?;
    if current.ino() == target.st_ino && current.dev() == target.st_dev {
        return Ok(());
    }
    nix::sched::setns(netns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}
