#![no_main]
//! A DHCPv6 datagram as the server receives it (a client message, or relay
//! forwards nested around one): decoded, its identifiers checked, classified;
//! each option's own decoder run on its bytes; a reply wrapped back through
//! the relays. None may panic.

use libfuzzer_sys::fuzz_target;
use rackboot_wire::dhcp6;

fuzz_target!(|data: &[u8]| {
    if let Ok(options) = dhcp6::parse_options(data) {
        for option in options {
            let _ = dhcp6::parse_ia_na(option.data);
            let _ = dhcp6::parse_status(option.data);
            let _ = dhcp6::duid_mac(option.data);
            let _ = dhcp6::duid_uuid(option.data);
        }
    }
    let Ok(req) = dhcp6::parse_request(data) else {
        return;
    };
    let _ = dhcp6::classify(&req);
    if let Some(duid) = &req.client_id {
        let _ = dhcp6::duid_mac(duid);
        let _ = dhcp6::duid_uuid(duid);
    }
    let _ = dhcp6::wrap_relay_reply(&req.relays, vec![7, 1, 2, 3]);
});
