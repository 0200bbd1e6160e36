//! LLDP (IEEE 802.1AB): a pure parser of LLDPDUs, and a listener that waits
//! on every NIC at once (AF_PACKET, EtherType 0x88cc) for the switch's frame.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rackboot_agent_proto::LldpNeighbor;

use crate::alog;

pub const ETHERTYPE_LLDP: u16 = 0x88cc;
/// Nearest-bridge group address, where switches send LLDP.
pub const NEAREST_BRIDGE: [u8; 6] = [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LldpError {
    #[error("not an LLDP frame (EtherType {0:#06x})")]
    NotLldp(u16),
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("LLDPDU without a {0} TLV")]
    Missing(&'static str),
}

fn mac_text(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An IANA address family number (1 IPv4, 2 IPv6, 6 802 MAC) and its bytes.
fn address_text(family: u8, b: &[u8]) -> Option<String> {
    match (family, b.len()) {
        (1, 4) => Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
        (2, 16) => Some(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
        (6, 6) => Some(mac_text(b)),
        _ => None,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string()
}

/// Chassis ID or Port ID as text: subtype `mac_subtype` is a MAC, subtype
/// `net_subtype` a network address, anything else a string.
fn id_text(value: &[u8], mac_subtype: u8, net_subtype: u8) -> String {
    let Some((&subtype, rest)) = value.split_first() else {
        return String::new();
    };
    if subtype == mac_subtype && rest.len() == 6 {
        return mac_text(rest);
    }
    if subtype == net_subtype
        && let Some((&family, addr)) = rest.split_first()
        && let Some(s) = address_text(family, addr)
    {
        return s;
    }
    text(rest)
}

/// Parses an Ethernet frame (destination, source, optional 802.1Q tags,
/// EtherType) holding an LLDPDU.
pub fn parse_frame(frame: &[u8]) -> Result<LldpNeighbor, LldpError> {
    let mut at = 12;
    loop {
        let ty = frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(LldpError::Truncated(at))?;
        match ty {
            0x8100 | 0x88a8 => at += 4,
            ETHERTYPE_LLDP => return parse_lldpdu(&frame[at + 2..]),
            other => return Err(LldpError::NotLldp(other)),
        }
    }
}

/// Parses the TLVs of an LLDPDU (the bytes after the EtherType).
pub fn parse_lldpdu(pdu: &[u8]) -> Result<LldpNeighbor, LldpError> {
    let mut n = LldpNeighbor::default();
    let (mut chassis, mut port) = (false, false);
    let mut at = 0;
    while at < pdu.len() {
        let head = pdu.get(at..at + 2).ok_or(LldpError::Truncated(at))?;
        let ty = head[0] >> 1;
        let len = (usize::from(head[0] & 1) << 8) | usize::from(head[1]);
        let value = pdu
            .get(at + 2..at + 2 + len)
            .ok_or(LldpError::Truncated(at + 2))?;
        at += 2 + len;
        match ty {
            0 => break,
            1 => {
                n.chassis_id = id_text(value, 4, 5);
                chassis = true;
            }
            2 => {
                n.port_id = id_text(value, 3, 4);
                port = true;
            }
            4 => n.port_description = Some(text(value)),
            5 => n.system_name = Some(text(value)),
            6 => n.system_description = Some(text(value)),
            8 if n.management_address.is_none() => {
                // length (subtype + address), subtype, address, ...
                if let Some((&len, rest)) = value.split_first()
                    && len >= 1
                    && let Some(addr) = rest.get(..usize::from(len))
                {
                    n.management_address = address_text(addr[0], &addr[1..]);
                }
            }
            // IEEE 802.1 (00-80-C2), subtype 1: Port VLAN ID.
            127 if value.len() >= 6 && value[..4] == [0x00, 0x80, 0xc2, 0x01] => {
                let vid = u16::from_be_bytes([value[4], value[5]]);
                if vid != 0 {
                    n.vlan_id = Some(vid);
                }
            }
            _ => {}
        }
    }
    if !chassis {
        return Err(LldpError::Missing("Chassis ID"));
    }
    if !port {
        return Err(LldpError::Missing("Port ID"));
    }
    Ok(n)
}

fn last_error(what: &str, name: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what} on {name}: {e}"))
}

fn if_index(name: &str) -> io::Result<i32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::other("NUL in name"))?;
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(last_error("if_nametoindex", name));
    }
    Ok(idx as i32)
}

/// Sets IFF_UP on a link (the RAM-disk brings up only the boot NIC).
pub fn bring_up(name: &str) -> io::Result<()> {
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_error("socket", name));
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::other(format!("interface name {name} too long")));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(last_error("SIOCGIFFLAGS", name));
    }
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(last_error("SIOCSIFFLAGS", name));
    }
    Ok(())
}

/// A packet socket bound to one interface for EtherType 0x88cc, member of
/// the nearest-bridge group so the NIC's filter lets LLDP in.
pub fn lldp_socket(name: &str) -> io::Result<OwnedFd> {
    let proto = ETHERTYPE_LLDP.to_be();
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(last_error("socket(AF_PACKET)", name));
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let ifindex = if_index(name)?;
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex;
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(last_error("bind", name));
    }
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = ifindex;
    mreq.mr_type = libc::PACKET_MR_MULTICAST as u16;
    mreq.mr_alen = 6;
    mreq.mr_address[..6].copy_from_slice(&NEAREST_BRIDGE);
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq as *const libc::packet_mreq as *const libc::c_void,
            std::mem::size_of::<libc::packet_mreq>() as u32,
        )
    };
    if rc < 0 {
        return Err(last_error("PACKET_ADD_MEMBERSHIP", name));
    }
    Ok(sock)
}

/// Sends one raw Ethernet frame out of `name` (tests, and nothing else).
pub fn send_frame(name: &str, frame: &[u8]) -> io::Result<()> {
    let sock = lldp_socket(name)?;
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETHERTYPE_LLDP.to_be();
    addr.sll_ifindex = if_index(name)?;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&frame[..6]);
    let rc = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr() as *const libc::c_void,
            frame.len(),
            0,
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(last_error("sendto", name));
    }
    Ok(())
}

/// Waits on one NIC until a valid LLDP frame arrives, `wait` passes or
/// `cancel` is set.
pub fn listen(name: &str, wait: Duration, cancel: &AtomicBool) -> io::Result<Option<LldpNeighbor>> {
    if let Err(e) = bring_up(name) {
        alog!("lldp: cannot bring {name} up: {e}");
    }
    let sock = lldp_socket(name)?;
    let tick = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tick as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 9216];
    while Instant::now() < deadline && !cancel.load(Ordering::Relaxed) {
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) {
                continue;
            }
            return Err(io::Error::new(e.kind(), format!("recv on {name}: {e}")));
        }
        match parse_frame(&buf[..n as usize]) {
            Ok(neighbor) => return Ok(Some(neighbor)),
            Err(e) => alog!("lldp: ignoring a frame on {name}: {e}"),
        }
    }
    Ok(None)
}

/// Listens on every NIC in parallel; returns the neighbours heard, by NIC.
pub fn listen_all(
    names: &[String],
    wait: Duration,
    cancel: &AtomicBool,
) -> HashMap<String, LldpNeighbor> {
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| (name, s.spawn(move || listen(name, wait, cancel))))
            .collect();
        let mut heard = HashMap::new();
        for (name, h) in handles {
            match h.join() {
                Ok(Ok(Some(n))) => {
                    alog!(
                        "lldp: {name} is on {} port {}",
                        n.system_name.as_deref().unwrap_or(&n.chassis_id),
                        n.port_id
                    );
                    heard.insert(name.clone(), n);
                }
                Ok(Ok(None)) => alog!("lldp: nothing heard on {name}"),
                Ok(Err(e)) => alog!("lldp: {e}"),
                Err(_) => alog!("lldp: listener on {name} panicked"),
            }
        }
        heard
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Frames sent by lldpd 1.0.16 (Debian 12) on a veth and captured with
    // tcpdump: its defaults with an IPv4 management address; with an IPv6
    // one; and configured as a switch would be (names, an 802.1 Port VLAN ID).
    const LLDPD_IPV4: &str = "0180c200000ea6d97512879488cc020704a6d975128794040703a6d975128794060200780a02766d0c5644656269616e20474e552f4c696e75782031322028626f6f6b776f726d29204c696e757820362e31382e34342d66632d763133303020233120534d5020505245454d50545f44594e414d4943204030207838365f36340e04009c0080100c0501c000020a0200000003000806766574682d61fe0900120f030100000000fe0900120f0100800000360000";
    const LLDPD_IPV6: &str = "0180c200000e86a05039ee4688cc02070486a05039ee4604070386a05039ee46060200780a02766d0c5644656269616e20474e552f4c696e75782031322028626f6f6b776f726d29204c696e757820362e31382e34342d66632d763133303020233120534d5020505245454d50545f44594e414d4943204030207838365f36340e04009c008010181102fe80000000000000ac7cf0fffeb882900200000002000806766574682d61fe0900120f030100000000fe0900120f0100800000360000";
    pub(crate) const LLDPD_SWITCH: &str = "0180c200000eda3cd8feac8788cc020704da3cd8feac87040703da3cd8feac87060200040a0d6c6561662d30372e7261636b370c1d41636d65204661627269634f5320392e33206c656166207377697463680e04009c0080100c0501c0000207020000000300080b45746865726e6574312f37fe0900120f030100000000fe0900120f010080000036fe060080c201002a0000";

    #[test]
    fn real_lldpd_frames() {
        let table = [
            (
                LLDPD_IPV4,
                LldpNeighbor {
                    chassis_id: "a6:d9:75:12:87:94".into(),
                    port_id: "a6:d9:75:12:87:94".into(),
                    port_description: Some("veth-a".into()),
                    system_name: Some("vm".into()),
                    system_description: Some(
                        "Debian GNU/Linux 12 (bookworm) Linux 6.18.44-fc-v1300 #1 SMP PREEMPT_DYNAMIC @0 x86_64".into(),
                    ),
                    management_address: Some("192.0.2.10".into()),
                    vlan_id: None,
                },
            ),
            (
                LLDPD_IPV6,
                LldpNeighbor {
                    chassis_id: "86:a0:50:39:ee:46".into(),
                    port_id: "86:a0:50:39:ee:46".into(),
                    port_description: Some("veth-a".into()),
                    system_name: Some("vm".into()),
                    system_description: Some(
                        "Debian GNU/Linux 12 (bookworm) Linux 6.18.44-fc-v1300 #1 SMP PREEMPT_DYNAMIC @0 x86_64".into(),
                    ),
                    management_address: Some("fe80::ac7c:f0ff:feb8:8290".into()),
                    vlan_id: None,
                },
            ),
            (
                LLDPD_SWITCH,
                LldpNeighbor {
                    chassis_id: "da:3c:d8:fe:ac:87".into(),
                    port_id: "da:3c:d8:fe:ac:87".into(),
                    port_description: Some("Ethernet1/7".into()),
                    system_name: Some("leaf-07.rack7".into()),
                    system_description: Some("Acme FabricOS 9.3 leaf switch".into()),
                    management_address: Some("192.0.2.7".into()),
                    vlan_id: Some(42),
                },
            ),
        ];
        for (frame, want) in table {
            assert_eq!(parse_frame(&hex(frame)).unwrap(), want);
        }
    }

    #[test]
    fn id_subtypes_and_tags() {
        // A VLAN-tagged frame whose chassis is a network address and whose
        // port is an interface name (subtype 5).
        let mut f = hex("0180c200000e020000000001");
        f.extend([0x81, 0x00, 0x00, 0x2a, 0x88, 0xcc]);
        f.extend([0x02, 0x06, 0x05, 0x01, 10, 0, 0, 1]); // chassis: IPv4 10.0.0.1
        f.extend([0x04, 0x06, 0x05]);
        f.extend(b"swp12"); // port: ifname
        f.extend([0x06, 0x02, 0x00, 0x78, 0x00, 0x00]);
        let n = parse_frame(&f).unwrap();
        assert_eq!(n.chassis_id, "10.0.0.1");
        assert_eq!(n.port_id, "swp12");
    }

    #[test]
    fn malformed_frames_are_refused() {
        let ipv4 = hex(LLDPD_IPV4);
        let mut not_lldp = ipv4.clone();
        not_lldp[12..14].copy_from_slice(&[0x08, 0x00]);
        let table: [(&[u8], &str); 5] = [
            (&ipv4[..45], "truncated at byte 28"),
            (&not_lldp, "EtherType 0x0800"),
            (&ipv4[..10], "truncated at byte 12"),
            // Only the port TLV and the end.
            (
                &hex("0180c200000e02000000000188cc040703a6d9751287940000"),
                "Chassis ID",
            ),
            // Only the chassis TLV.
            (
                &hex("0180c200000e02000000000188cc020704a6d9751287940000"),
                "Port ID",
            ),
        ];
        for (frame, want) in table {
            let e = parse_frame(frame).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
