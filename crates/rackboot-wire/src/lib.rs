//! Pure protocol codecs: DHCP helpers over dhcproto, PXE client classification,
//! TFTP packets and option negotiation. No I/O, no clocks.

pub mod dhcp;
pub mod pxe;
pub mod tftp;
