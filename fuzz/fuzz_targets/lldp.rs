#![no_main]
//! An LLDP frame as the deploy agent receives it from a switch port during
//! inspection: the Ethernet frame and the bare LLDPDU. None may panic.

use libfuzzer_sys::fuzz_target;
use rackboot_agent::steps::lldp;

fuzz_target!(|data: &[u8]| {
    let _ = lldp::parse_frame(data);
    let _ = lldp::parse_lldpdu(data);
});
