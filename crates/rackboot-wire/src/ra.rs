//! IPv6 Router Advertisements that carry information (RFC 4861 4.2): the managed
//! (M) and other-configuration (O) flags that send hosts to DHCPv6, and Prefix
//! Information options. rackboot's DHCPv6 service sends them on a provisioning
//! network with no router, so clients run DHCPv6 and know the prefix is on-link
//! (DHCPv6 hands out bare /128 addresses). [`crate::ndp`] reads the solicitations;
//! this module writes and reads advertisements. Bytes are ICMPv6 messages as a
//! raw ICMPv6 socket gives and takes them (no IPv6 header; the kernel fills in the
//! checksum).

use std::net::Ipv6Addr;

use rackboot_core::MacAddr;

use crate::ndp::ROUTER_ADVERTISEMENT;

const OPTION_SOURCE_LINK_ADDR: u8 = 1;
const OPTION_PREFIX_INFORMATION: u8 = 3;
const FLAG_MANAGED: u8 = 0x80;
const FLAG_OTHER: u8 = 0x40;
const PREFIX_ON_LINK: u8 = 0x80;
const PREFIX_AUTONOMOUS: u8 = 0x40;

/// A Prefix Information option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixInfo {
    pub prefix: Ipv6Addr,
    pub length: u8,
    /// L: addresses in the prefix are on this link.
    pub on_link: bool,
    /// A: hosts may form addresses from it by themselves (SLAAC).
    pub autonomous: bool,
    pub valid_secs: u32,
    pub preferred_secs: u32,
}

/// A Router Advertisement's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterAdvertisement {
    pub hop_limit: u8,
    /// M: addresses come from DHCPv6.
    pub managed: bool,
    /// O: other configuration comes from DHCPv6.
    pub other: bool,
    /// 0: the sender is not a default router.
    pub router_lifetime_secs: u16,
    pub prefixes: Vec<PrefixInfo>,
    pub source_link_addr: Option<MacAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaError {
    #[error("{0} bytes is shorter than a Router Advertisement (16)")]
    Truncated(usize),
    #[error("ICMPv6 type {0} is not a Router Advertisement")]
    NotRouterAdvertisement(u8),
    #[error("Router Advertisement with code {0} (must be 0)")]
    BadCode(u8),
    #[error("option of length 0 at byte {0}")]
    ZeroLengthOption(usize),
    #[error("option at byte {0} runs past the end")]
    OptionOverrun(usize),
    #[error("prefix information option at byte {0} is not 32 bytes")]
    BadPrefixOption(usize),
}

impl RouterAdvertisement {
    /// The ICMPv6 message (checksum left 0 for the kernel).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 + 32 * self.prefixes.len());
        out.extend_from_slice(&[ROUTER_ADVERTISEMENT, 0, 0, 0, self.hop_limit]);
        let mut flags = 0;
        if self.managed {
            flags |= FLAG_MANAGED;
        }
        if self.other {
            flags |= FLAG_OTHER;
        }
        out.push(flags);
        out.extend_from_slice(&self.router_lifetime_secs.to_be_bytes());
        out.extend_from_slice(&[0; 8]); // reachable time, retrans timer: unspecified
        if let Some(mac) = self.source_link_addr {
            out.extend_from_slice(&[OPTION_SOURCE_LINK_ADDR, 1]);
            out.extend_from_slice(&mac.octets());
        }
        for p in &self.prefixes {
            let mut flags = 0;
            if p.on_link {
                flags |= PREFIX_ON_LINK;
            }
            if p.autonomous {
                flags |= PREFIX_AUTONOMOUS;
            }
            out.extend_from_slice(&[OPTION_PREFIX_INFORMATION, 4, p.length, flags]);
            out.extend_from_slice(&p.valid_secs.to_be_bytes());
            out.extend_from_slice(&p.preferred_secs.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&p.prefix.octets());
        }
        out
    }
}

/// Parses a Router Advertisement (the hop limit and checksum are the socket's to check).
pub fn parse_router_advertisement(icmp: &[u8]) -> Result<RouterAdvertisement, RaError> {
    if icmp.len() < 16 {
        return Err(RaError::Truncated(icmp.len()));
    }
    if icmp[0] != ROUTER_ADVERTISEMENT {
        return Err(RaError::NotRouterAdvertisement(icmp[0]));
    }
    if icmp[1] != 0 {
        return Err(RaError::BadCode(icmp[1]));
    }
    let mut ra = RouterAdvertisement {
        hop_limit: icmp[4],
        managed: icmp[5] & FLAG_MANAGED != 0,
        other: icmp[5] & FLAG_OTHER != 0,
        router_lifetime_secs: u16::from_be_bytes([icmp[6], icmp[7]]),
        prefixes: Vec::new(),
        source_link_addr: None,
    };
    let mut at = 16;
    while at < icmp.len() {
        if at + 2 > icmp.len() {
            return Err(RaError::OptionOverrun(at));
        }
        let len = usize::from(icmp[at + 1]) * 8;
        if len == 0 {
            return Err(RaError::ZeroLengthOption(at));
        }
        let option = icmp.get(at..at + len).ok_or(RaError::OptionOverrun(at))?;
        match option[0] {
            OPTION_SOURCE_LINK_ADDR if ra.source_link_addr.is_none() => {
                ra.source_link_addr = MacAddr::from_slice(&option[2..8]);
            }
            OPTION_PREFIX_INFORMATION => {
                if len != 32 {
                    return Err(RaError::BadPrefixOption(at));
                }
                let u32_at = |i: usize| {
                    u32::from_be_bytes([option[i], option[i + 1], option[i + 2], option[i + 3]])
                };
                let prefix: [u8; 16] = option[16..32].try_into().expect("16 bytes");
                ra.prefixes.push(PrefixInfo {
                    prefix: Ipv6Addr::from(prefix),
                    length: option[2],
                    on_link: option[3] & PREFIX_ON_LINK != 0,
                    autonomous: option[3] & PREFIX_AUTONOMOUS != 0,
                    valid_secs: u32_at(4),
                    preferred_secs: u32_at(8),
                });
            }
            _ => {}
        }
        at += len;
    }
    Ok(ra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stateful() -> RouterAdvertisement {
        RouterAdvertisement {
            hop_limit: 64,
            managed: true,
            other: true,
            router_lifetime_secs: 0,
            prefixes: vec![PrefixInfo {
                prefix: "2001:db8:77::".parse().unwrap(),
                length: 64,
                on_link: true,
                autonomous: false,
                valid_secs: 86400,
                preferred_secs: 14400,
            }],
            source_link_addr: Some("52:54:00:12:34:56".parse().unwrap()),
        }
    }

    #[test]
    fn encodes_the_managed_flag_and_an_on_link_prefix() {
        let bytes = stateful().encode();
        assert_eq!(bytes.len(), 16 + 8 + 32);
        assert_eq!(&bytes[..8], &[134, 0, 0, 0, 64, 0xc0, 0, 0]);
        // Source link-layer address, then prefix information: /64, L set, A clear.
        assert_eq!(&bytes[16..24], &[1, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(&bytes[24..28], &[3, 4, 64, 0x80]);
        assert_eq!(&bytes[28..32], &86400u32.to_be_bytes());
        assert_eq!(&bytes[40..48], &[0x20, 0x01, 0x0d, 0xb8, 0, 0x77, 0, 0]);
        assert_eq!(parse_router_advertisement(&bytes), Ok(stateful()));
    }

    /// Kernel radvd-style advertisement captured with tcpdump (ICMPv6 part): a
    /// router with lifetime 1800 s, a SLAAC prefix and an MTU option.
    #[test]
    fn parses_another_routers_advertisement() {
        let bytes: [u8; 64] = [
            0x86, 0x00, 0x4b, 0x3e, 0x40, 0x00, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, // header
            0x03, 0x04, 0x40, 0xc0, 0x00, 0x01, 0x51, 0x80, 0x00, 0x00, 0x38, 0x40, 0, 0, 0, 0,
            0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix
            0x05, 0x01, 0, 0, 0, 0, 0x05, 0xdc, // MTU 1500
            0x01, 0x01, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, // source link-layer address
        ];
        let ra = parse_router_advertisement(&bytes).unwrap();
        assert!(!ra.managed && !ra.other);
        assert_eq!(ra.router_lifetime_secs, 1800);
        assert_eq!(ra.prefixes.len(), 1);
        assert!(ra.prefixes[0].on_link && ra.prefixes[0].autonomous);
        assert_eq!(ra.prefixes[0].valid_secs, 86400);
        assert_eq!(ra.source_link_addr, "02:11:22:33:44:55".parse().ok());
    }

    #[test]
    fn malformed_advertisements() {
        let good = stateful().encode();
        let mut zero = good.clone();
        zero[17] = 0;
        let mut prefix_len = good.clone();
        prefix_len[25] = 3;
        prefix_len.truncate(48);
        let mut solicit = good.clone();
        solicit[0] = 133;
        let cases = [
            (good[..15].to_vec(), RaError::Truncated(15)),
            (solicit, RaError::NotRouterAdvertisement(133)),
            (zero, RaError::ZeroLengthOption(16)),
            (good[..30].to_vec(), RaError::OptionOverrun(24)),
            (good[..17].to_vec(), RaError::OptionOverrun(16)),
            (prefix_len, RaError::BadPrefixOption(24)),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse_router_advertisement(&bytes), Err(want));
        }
    }
}
