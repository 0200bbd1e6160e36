//! IPv6 Neighbor Discovery (RFC 4861), the two messages rackboot uses: it reads
//! Router Solicitations and answers iPXE's with a Router Advertisement that
//! announces nothing. iPXE configures IPv6 beside DHCPv4 and, on a network with
//! no IPv6 router, keeps soliciting for about 13 s before it fetches anything; an
//! advertisement with no flags ends that wait at once (no address, no route, no
//! DHCPv6). Bytes are ICMPv6 messages as a raw ICMPv6 socket gives and takes them
//! (no IPv6 header; the kernel fills in the checksum).

use rackboot_core::MacAddr;

pub const ROUTER_SOLICITATION: u8 = 133;
pub const ROUTER_ADVERTISEMENT: u8 = 134;
/// Option type: the sender's link-layer address.
const OPTION_SOURCE_LINK_ADDR: u8 = 1;
/// RFC 4861 6.1.1: Neighbor Discovery packets must arrive with this hop limit,
/// which proves they were not forwarded by a router.
pub const REQUIRED_HOP_LIMIT: u8 = 255;

/// A Router Solicitation's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSolicitation {
    /// The Source Link-Layer Address option, when present and Ethernet-sized.
    pub source_link_addr: Option<MacAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NdpError {
    #[error("{0} bytes is shorter than a Router Solicitation (8)")]
    Truncated(usize),
    #[error("ICMPv6 type {0} is not a Router Solicitation")]
    NotRouterSolicitation(u8),
    #[error("Router Solicitation with code {0} (must be 0)")]
    BadCode(u8),
    #[error("option of length 0 at byte {0}")]
    ZeroLengthOption(usize),
    #[error("option at byte {0} runs past the end")]
    OptionOverrun(usize),
}

impl NdpError {
    /// Label for the dropped-packet metric.
    pub fn reason(&self) -> &'static str {
        match self {
            NdpError::Truncated(_) => "truncated",
            NdpError::NotRouterSolicitation(_) => "not_router_solicitation",
            NdpError::BadCode(_) => "bad_code",
            NdpError::ZeroLengthOption(_) | NdpError::OptionOverrun(_) => "bad_option",
        }
    }
}

/// Parses and validates a Router Solicitation (RFC 4861 6.1.1; the hop limit and
/// checksum are the socket's to check).
pub fn parse_router_solicitation(icmp: &[u8]) -> Result<RouterSolicitation, NdpError> {
    if icmp.len() < 8 {
        return Err(NdpError::Truncated(icmp.len()));
    }
    if icmp[0] != ROUTER_SOLICITATION {
        return Err(NdpError::NotRouterSolicitation(icmp[0]));
    }
    if icmp[1] != 0 {
        return Err(NdpError::BadCode(icmp[1]));
    }
    let mut source_link_addr = None;
    let mut at = 8;
    while at < icmp.len() {
        if at + 2 > icmp.len() {
            return Err(NdpError::OptionOverrun(at));
        }
        // Option length is in units of 8 bytes, type and length included.
        let len = usize::from(icmp[at + 1]) * 8;
        if len == 0 {
            return Err(NdpError::ZeroLengthOption(at));
        }
        let option = icmp.get(at..at + len).ok_or(NdpError::OptionOverrun(at))?;
        if option[0] == OPTION_SOURCE_LINK_ADDR && source_link_addr.is_none() {
            source_link_addr = MacAddr::from_slice(&option[2..8]);
        }
        at += len;
    }
    Ok(RouterSolicitation { source_link_addr })
}

/// A Router Advertisement that announces nothing: router lifetime 0 (not a
/// default router), no managed or other-configuration flags (no DHCPv6), no
/// prefixes, no hop-limit, reachable-time or retransmit-timer advice.
pub fn empty_router_advertisement() -> [u8; 16] {
    let mut ra = [0u8; 16];
    ra[0] = ROUTER_ADVERTISEMENT;
    ra
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on the lab bridge (tcpdump), ICMPv6 part only.
    const IPXE_RS: [u8; 16] = [
        0x85, 0x00, 0xda, 0x83, 0x00, 0x00, 0x00, 0x00, // type, code, checksum, reserved
        0x01, 0x01, 0x52, 0x54, 0x00, 0x00, 0x00, 0x01, // source link-layer address
    ];
    /// The Linux bridge in the same capture, soliciting for itself.
    const LINUX_RS: [u8; 16] = [
        0x85, 0x00, 0x85, 0x71, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0xa6, 0xb6, 0xab, 0xd6, 0x9c,
        0x10,
    ];

    fn mac(s: &str) -> Option<MacAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn router_solicitations() {
        let no_option = IPXE_RS[..8].to_vec();
        let mut unknown_then_source = IPXE_RS[..8].to_vec();
        unknown_then_source.extend_from_slice(&[14, 1, 0, 0, 0, 0, 0, 0]); // nonce, 8 bytes
        unknown_then_source.extend_from_slice(&IPXE_RS[8..]);
        let mut zero_len = IPXE_RS.to_vec();
        zero_len[9] = 0;
        let mut overrun = IPXE_RS.to_vec();
        overrun[9] = 2;
        let half_option = IPXE_RS[..9].to_vec();
        let mut advert = IPXE_RS.to_vec();
        advert[0] = ROUTER_ADVERTISEMENT;
        let mut code = IPXE_RS.to_vec();
        code[1] = 1;
        type Case<'a> = (&'a str, &'a [u8], Result<Option<MacAddr>, NdpError>);
        let cases: Vec<Case> = vec![
            ("iPXE", &IPXE_RS, Ok(mac("52:54:00:00:00:01"))),
            ("Linux", &LINUX_RS, Ok(mac("a6:b6:ab:d6:9c:10"))),
            ("no option", &no_option, Ok(None)),
            (
                "other option first",
                &unknown_then_source,
                Ok(mac("52:54:00:00:00:01")),
            ),
            (
                "zero-length option",
                &zero_len,
                Err(NdpError::ZeroLengthOption(8)),
            ),
            (
                "option past the end",
                &overrun,
                Err(NdpError::OptionOverrun(8)),
            ),
            (
                "half an option header",
                &half_option,
                Err(NdpError::OptionOverrun(8)),
            ),
            ("truncated", &IPXE_RS[..7], Err(NdpError::Truncated(7))),
            (
                "an advertisement",
                &advert,
                Err(NdpError::NotRouterSolicitation(134)),
            ),
            ("nonzero code", &code, Err(NdpError::BadCode(1))),
        ];
        for (name, bytes, want) in cases {
            let got = parse_router_solicitation(bytes).map(|rs| rs.source_link_addr);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn empty_advertisement_bytes() {
        let ra = empty_router_advertisement();
        assert_eq!(ra[0], 134);
        assert!(
            ra[1..].iter().all(|&b| b == 0),
            "code, flags, lifetime, timers all 0"
        );
    }
}
