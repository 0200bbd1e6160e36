//! DHCP message helpers over dhcproto.
