//! Pure protocol codecs: DHCP helpers over dhcproto, PXE client classification,
//! TFTP packets and option negotiation, IPv6 router solicitations. No I/O, no clocks.

pub mod dhcp;
pub mod ndp;
pub mod pxe;
pub mod tftp;
