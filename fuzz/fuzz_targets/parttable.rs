#![no_main]
//! A disk's partition tables as the deploy agent reads them (MBR in sector 0,
//! a GPT header and its entry array), on whatever the disk holds. None may
//! panic.
//!
//! Input: sector 0 (512 bytes), the GPT header sector (512 bytes), then the
//! entry array.

use libfuzzer_sys::fuzz_target;
use rackboot_agent::parttable;

fuzz_target!(|data: &[u8]| {
    let mbr = &data[..data.len().min(512)];
    if let Ok(entries) = parttable::parse_mbr(mbr) {
        let _ = parttable::is_gpt(&entries);
    }
    let rest = data.get(512..).unwrap_or(&[]);
    let header = &rest[..rest.len().min(512)];
    if let Ok(h) = parttable::parse_gpt_header(header) {
        let entries = rest.get(512..).unwrap_or(&[]);
        let _ = parttable::parse_gpt_entries(&h, entries);
    }
    let _ = parttable::crc32(data);
});
