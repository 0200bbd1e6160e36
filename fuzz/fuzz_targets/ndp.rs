#![no_main]
//! An ICMPv6 message as the router-advertisement responders receive it: a
//! router solicitation, or another router's advertisement. None may panic; an
//! advertisement we encode must parse back.

use libfuzzer_sys::fuzz_target;
use rackboot_wire::{ndp, ra};

fuzz_target!(|data: &[u8]| {
    let _ = ndp::parse_router_solicitation(data);
    if let Ok(advert) = ra::parse_router_advertisement(data) {
        let bytes = advert.encode();
        assert!(ra::parse_router_advertisement(&bytes).is_ok(), "encoded advertisement does not parse");
    }
});
