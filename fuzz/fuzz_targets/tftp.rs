#![no_main]
//! A TFTP datagram as the server receives it: decoded; a read request's file
//! name normalised (confinement) and its options negotiated against the
//! server's limits, the OACK encoded; netascii decoding and encoding of the
//! bytes. None may panic; a packet we encode must decode back the same.

use libfuzzer_sys::fuzz_target;
use rackboot_wire::tftp::{self, OptionLimits, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::parse(data) {
        let again = packet.encode();
        assert_eq!(Packet::parse(&again).as_ref(), Ok(&packet), "encode/parse round trip");
        if let Packet::Rrq(req) | Packet::Wrq(req) = &packet {
            let _ = rackboot_tftp::normalize(&req.filename);
            let limits = OptionLimits {
                max_blksize: 1468,
                max_windowsize: 16,
                max_window_bytes: 1 << 20,
            };
            let negotiated = tftp::negotiate_read(&req.options, &limits, Some(data.len() as u64));
            assert!(negotiated.blksize <= 1468 && negotiated.windowsize >= 1);
            if let Some(oack) = negotiated.oack_packet() {
                let _ = oack.encode();
            }
            let _ = tftp::has_option(&req.options, "tsize");
        }
    }
    let _ = tftp::netascii_decode(data);
    let mut encoder = tftp::NetasciiEncoder::new();
    let mut out = [0u8; 512];
    let mut rest = data;
    let mut total = 0u64;
    // Bounded: every call consumes input or fills the block.
    for _ in 0..=2 * data.len() + 2 {
        let (used, written) = encoder.encode(rest, &mut out);
        total += written as u64;
        rest = &rest[used..];
        if rest.is_empty() && !encoder.has_pending() {
            break;
        }
    }
    assert_eq!(total, tftp::netascii_encoded_len(data));
});
