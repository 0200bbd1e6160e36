//! DHCP ACKs as a client saw them on its wire: tcpdump in the client's
//! namespace writes a pcap file, decoded here (Ethernet, IPv4, UDP, then
//! rackboot-wire's DHCP decoder). What a server acknowledged is what reached
//! the wire, whatever its own logs or store say.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rackboot_core::MacAddr;
use rackboot_wire::dhcp::{decode_reply, message_type};

/// One DHCPACK seen on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    /// The capture's timestamp, seconds since the Unix epoch.
    pub at: f64,
    /// The server that sent it (the IPv4 source).
    pub server: Ipv4Addr,
    /// The address acknowledged (yiaddr).
    pub ip: Ipv4Addr,
    /// The client (chaddr), as the API writes MACs.
    pub mac: String,
}

/// Why a capture file could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum PcapError {
    TooShort,
    Magic(u32),
    LinkType(u32),
}

/// Every DHCPACK (UDP from port 67, a BOOTREPLY of type ACK) in a pcap
/// file of Ethernet frames; other packets are skipped. A record cut short
/// at the end (the capture was stopped while writing) ends the list.
pub fn acks_in_pcap(bytes: &[u8]) -> Result<Vec<Ack>, PcapError> {
    if bytes.len() < 24 {
        return Err(PcapError::TooShort);
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let (little, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        other => return Err(PcapError::Magic(other)),
    };
    let u32_at = |b: &[u8], at: usize| -> u32 {
        let raw: [u8; 4] = b[at..at + 4].try_into().unwrap();
        if little {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        }
    };
    let link = u32_at(bytes, 20);
    if link != 1 {
        return Err(PcapError::LinkType(link));
    }
    let mut acks = Vec::new();
    let mut offset = 24;
    while offset + 16 <= bytes.len() {
        let secs = u32_at(bytes, offset);
        let frac = u32_at(bytes, offset + 4);
        let len = u32_at(bytes, offset + 8) as usize;
        let start = offset + 16;
        if start + len > bytes.len() {
            break;
        }
        let at = f64::from(secs) + f64::from(frac) / if nanos { 1e9 } else { 1e6 };
        if let Some(ack) = ack_in_frame(&bytes[start..start + len], at) {
            acks.push(ack);
        }
        offset = start + len;
    }
    Ok(acks)
}

/// The ACK an Ethernet frame carries, if it carries one.
fn ack_in_frame(frame: &[u8], at: f64) -> Option<Ack> {
    // Ethernet II, IPv4 only (no VLAN tags on the test's veths).
    if frame.len() < 14 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let header = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    // A fragment's payload is not a whole UDP datagram.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || total < header + 8 {
        return None;
    }
    let server = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let udp = &ip[header..total];
    if u16::from_be_bytes([udp[0], udp[1]]) != 67 {
        return None;
    }
    let message = decode_reply(&udp[8..])?;
    if message_type(&message)? != dhcproto_ack() {
        return None;
    }
    let chaddr: [u8; 6] = message.chaddr().get(..6)?.try_into().ok()?;
    Some(Ack {
        at,
        server,
        ip: message.yiaddr(),
        mac: MacAddr(chaddr).to_string(),
    })
}

fn dhcproto_ack() -> dhcproto::v4::MessageType {
    dhcproto::v4::MessageType::Ack
}

/// Addresses acknowledged to more than one client, with those clients.
pub fn acked_to_two(acks: &[Ack]) -> BTreeMap<Ipv4Addr, BTreeSet<String>> {
    let mut by_ip: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    for a in acks {
        by_ip.entry(a.ip).or_default().insert(a.mac.clone());
    }
    by_ip.retain(|_, macs| macs.len() > 1);
    by_ip
}

/// tcpdump writing the DHCP packets of a namespace's `e0` to a file.
pub struct Capture {
    child: Child,
    file: PathBuf,
    stderr: PathBuf,
}

impl Capture {
    /// Starts tcpdump in namespace `ns` and waits until it listens.
    pub fn start(ns: &str, file: &Path) -> Capture {
        let stderr = file.with_extension("tcpdump.log");
        let child = Command::new("ip")
            .args([
                "netns", "exec", ns, "tcpdump", "-i", "e0", "-n", "-s", "0", "-U", "-w",
            ])
            .arg(file)
            .args(["udp", "and", "(port", "67", "or", "port", "68)"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("tcpdump (apt-get install tcpdump)");
        let capture = Capture {
            child,
            file: file.to_path_buf(),
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&capture.stderr)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(
                Instant::now() < deadline,
                "tcpdump did not start: {}",
                std::fs::read_to_string(&capture.stderr).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        capture
    }

    /// Stops tcpdump (SIGTERM: it writes what it holds) and reads its ACKs.
    pub fn stop(mut self) -> Captured {
        // `ip netns exec` execs tcpdump: this pid is tcpdump's own.
        let pid = self.child.id() as i32;
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let bytes = std::fs::read(&self.file).unwrap();
        Captured {
            acks: acks_in_pcap(&bytes).unwrap(),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a capture held.
pub struct Captured {
    pub acks: Vec<Ack>,
}

impl Captured {
    /// The ACKs `server` sent.
    pub fn acks_from(&self, server: Ipv4Addr) -> Vec<Ack> {
        self.acks
            .iter()
            .filter(|a| a.server == server)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap file (little-endian, microseconds, Ethernet) of these frames.
    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(0xa1b2_c3d4u32.to_le_bytes());
        out.extend(2u16.to_le_bytes());
        out.extend(4u16.to_le_bytes());
        out.extend([0u8; 8]);
        out.extend(65535u32.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        for (i, f) in frames.iter().enumerate() {
            out.extend((1_000 + i as u32).to_le_bytes());
            out.extend(500_000u32.to_le_bytes());
            out.extend((f.len() as u32).to_le_bytes());
            out.extend((f.len() as u32).to_le_bytes());
            out.extend(f);
        }
        out
    }

    /// An Ethernet/IPv4/UDP frame from 10.0.0.1:`sport` carrying `payload`.
    fn frame(sport: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend([2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        f.extend([0x45, 0]);
        f.extend(total.to_be_bytes());
        f.extend([0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 255, 255, 255, 255]);
        f.extend(sport.to_be_bytes());
        f.extend(68u16.to_be_bytes());
        f.extend(((8 + payload.len()) as u16).to_be_bytes());
        f.extend([0, 0]);
        f.extend(payload);
        f
    }

    fn reply(kind: dhcproto::v4::MessageType, yiaddr: Ipv4Addr) -> Vec<u8> {
        use dhcproto::Encodable;
        let mut m = dhcproto::v4::Message::default();
        m.set_opcode(dhcproto::v4::Opcode::BootReply)
            .set_yiaddr(yiaddr)
            .set_chaddr(&[0x00, 0x0c, 0x01, 0x02, 0x03, 0x04]);
        m.opts_mut()
            .insert(dhcproto::v4::DhcpOption::MessageType(kind));
        m.to_vec().unwrap()
    }

    #[test]
    fn acks_are_read_from_a_capture_and_the_rest_skipped() {
        use dhcproto::v4::MessageType::{Ack as A, Offer};
        let ip = Ipv4Addr::new(10, 0, 1, 5);
        let file = pcap(&[
            frame(67, &reply(Offer, ip)),
            frame(67, &reply(A, ip)),
            // Not from a server port.
            frame(5000, &reply(A, ip)),
            // Not DHCP at all.
            frame(67, b"hello"),
            // ARP.
            {
                let mut f = frame(67, &reply(A, ip));
                f[12..14].copy_from_slice(&[0x08, 0x06]);
                f
            },
        ]);
        let acks = acks_in_pcap(&file).unwrap();
        assert_eq!(
            acks,
            vec![Ack {
                at: 1001.5,
                server: Ipv4Addr::new(10, 0, 0, 1),
                ip,
                mac: "00:0c:01:02:03:04".into(),
            }]
        );
        // A record cut short at the end: the whole ones are kept.
        let cut = &file[..file.len() - 3];
        assert_eq!(acks_in_pcap(cut).unwrap(), acks);
        assert_eq!(acks_in_pcap(&file[..10]), Err(PcapError::TooShort));
        let mut other = file.clone();
        other[20] = 113;
        assert_eq!(acks_in_pcap(&other), Err(PcapError::LinkType(113)));
    }

    #[test]
    fn an_address_acknowledged_to_two_clients_is_named() {
        let ack = |ip: [u8; 4], mac: &str| Ack {
            at: 0.0,
            server: Ipv4Addr::new(10, 0, 0, 1),
            ip: Ipv4Addr::from(ip),
            mac: mac.into(),
        };
        let acks = [
            ack([10, 0, 1, 1], "00:00:00:00:00:01"),
            ack([10, 0, 1, 1], "00:00:00:00:00:01"),
            ack([10, 0, 1, 2], "00:00:00:00:00:02"),
            ack([10, 0, 1, 2], "00:00:00:00:00:03"),
        ];
        let twice = acked_to_two(&acks);
        assert_eq!(twice.len(), 1);
        assert_eq!(twice[&Ipv4Addr::new(10, 0, 1, 2)].len(), 2);
    }
}
