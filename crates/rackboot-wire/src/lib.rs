//! Pure protocol codecs: DHCP helpers over dhcproto, PXE client classification,
//! TFTP packets and option negotiation, IPv6 router solicitations and advertisements,
//! DHCPv6 (RFC 8415) with the RFC 5970 boot options. No I/O, no clocks.

pub mod dhcp;
pub mod dhcp6;
pub mod ndp;
pub mod pxe;
pub mod ra;
pub mod tftp;
