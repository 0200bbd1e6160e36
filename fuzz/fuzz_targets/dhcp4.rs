#![no_main]
//! A DHCPv4 datagram as the server receives it on port 67 or 4011: decoded
//! and validated, classified (PXE, iPXE, client UUID), and answered the way
//! the server builds replies (echoed options and all), then encoded. None may
//! panic; a reply must encode and decode back.

use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;
use libfuzzer_sys::fuzz_target;
use rackboot_wire::{dhcp, pxe};

fuzz_target!(|data: &[u8]| {
    let _ = dhcp::decode_reply(data);
    let Ok(req) = dhcp::parse_request(data) else {
        return;
    };
    let _ = pxe::classify(&req.msg);
    let _ = pxe::is_ipxe(&req.msg);
    let _ = dhcp::file_field(&req.msg);
    if let Some(uuid) = &req.client_uuid {
        let _ = pxe::uuid_from_option97(uuid);
    }
    let server = Ipv4Addr::new(10, 0, 0, 1);
    for kind in [MessageType::Offer, MessageType::Ack, MessageType::Nak] {
        let mut reply = dhcp::reply(&req, kind, server);
        dhcp::set_lease_times(&mut reply, 3600);
        dhcp::set_boot(&mut reply, "snponly.efi", server, false);
        let _ = dhcp::reply_destination(&req, kind, Ipv4Addr::new(10, 0, 0, 100));
        if let Ok(bytes) = dhcp::encode(&reply) {
            assert!(dhcp::decode_reply(&bytes).is_some(), "a reply we encoded does not decode");
        }
    }
    let proxy = dhcp::proxy_reply(&req, MessageType::Ack, server, "ipxe.efi", server, true);
    let _ = dhcp::encode(&proxy);
});
