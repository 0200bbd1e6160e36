#![no_main]
//! Every RMCP/ASF/IPMI v1.5/RMCP+/RAKP/command decoder, integrity check and AES
//! decryption in rackboot-ipmi on arbitrary bytes (a BMC's reply): none may panic.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rackboot_ipmi::fuzzing::decode_all(data, None);
});
