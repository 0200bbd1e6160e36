//! Seeing an installed system come up at its configured address: a datagram
//! to the address makes the kernel resolve it with ARP, and the neighbour
//! table then says which MAC answered. A deployed machine is seen when one of
//! its own MACs answers at the address the deploy gave it.

use std::net::{Ipv4Addr, UdpSocket};

use rackboot_core::MacAddr;

/// One complete entry of `/proc/net/arp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub device: String,
}

/// Complete entries (flag ATF_COM) of `/proc/net/arp` text.
pub fn parse_proc_net_arp(text: &str) -> Vec<Neighbour> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
            if flags & 0x2 == 0 {
                return None;
            }
            Some(Neighbour {
                ip: f[0].parse().ok()?,
                mac: f[3].parse().ok()?,
                device: f[5].to_string(),
            })
        })
        .collect()
}

/// Asks the kernel to resolve `ip` (one datagram to the discard port; only
/// sent where a route to `ip` exists) and returns the MAC that answered, if
/// it is in the neighbour table by now.
pub fn probe(ip: Ipv4Addr) -> Option<MacAddr> {
    if let Ok(sock) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        && sock.connect((ip, 9)).is_ok()
    {
        let _ = sock.send(b"rackboot");
    }
    let text = std::fs::read_to_string("/proc/net/arp").ok()?;
    parse_proc_net_arp(&text)
        .into_iter()
        .find(|n| n.ip == ip)
        .map(|n| n.mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_entries_only() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                    10.77.0.50       0x1         0x2         52:54:00:00:00:01     *        br0\n\
                    10.77.0.51       0x1         0x0         00:00:00:00:00:00     *        br0\n\
                    10.77.0.52       0x1         0x6         52:54:00:00:00:02     *        br0\n\
                    garbage\n";
        let n = parse_proc_net_arp(text);
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].ip, Ipv4Addr::new(10, 77, 0, 50));
        assert_eq!(n[0].mac.to_string(), "52:54:00:00:00:01");
        assert_eq!(n[0].device, "br0");
        assert_eq!(n[1].ip, Ipv4Addr::new(10, 77, 0, 52));
    }
}
