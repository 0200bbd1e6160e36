#![no_main]
//! A Windows image file (WIM/ESD) as `rackboot os import` reads one from
//! install media: the header, the XML resource it points to, and the XML
//! (UTF-16) decoded into the image description; the bytes also as the XML
//! text itself. None may panic.

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use rackboot_oscatalog::wim;

fuzz_target!(|data: &[u8]| {
    let _ = wim::read_image_info(&mut Cursor::new(data));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = wim::parse_xml(text);
    }
});
