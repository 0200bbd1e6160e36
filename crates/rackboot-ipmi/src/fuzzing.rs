//! Entry point shared by the cargo-fuzz target and the stable robustness test: feed one
//! datagram to every decoder in the crate. Decoders must return errors, never panic.

use std::sync::OnceLock;

use crate::commands::{
    BootFlags, BootOptionResponse, ChannelAuthCapabilities, ChassisStatus, DeviceId,
};
use crate::crypto::{
    AuthAlgorithm, ConfidentialityAlgorithm, IntegrityAlgorithm, aes_cbc_decrypt,
    derive_session_keys,
};
use crate::msg::{IpmiRequest, IpmiResponse};
use crate::rakp::{OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp3, Rakp4};
use crate::rmcp::{RmcpHeader, decode_presence_pong};
use crate::session::{SessionSecurity, decode_v2, decode_v15};

/// A fixed session security context so the fuzzer also reaches integrity checking and
/// decryption.
pub fn fixed_security(auth: AuthAlgorithm) -> SessionSecurity {
    let keys = derive_session_keys(auth, b"fuzz", &[1; 16], &[2; 16], 0x14, b"admin");
    SessionSecurity {
        keys,
        integrity: match auth {
            AuthAlgorithm::HmacSha1 => IntegrityAlgorithm::HmacSha1_96,
            AuthAlgorithm::HmacSha256 => IntegrityAlgorithm::HmacSha256_128,
        },
        confidentiality: ConfidentialityAlgorithm::AesCbc128,
    }
}

/// Run every decoder on `data` (as a whole packet and as a bare payload), plus
/// integrity verification and decryption with `security` (or fixed keys).
pub fn decode_all(data: &[u8], security: Option<&SessionSecurity>) {
    let _ = decode_presence_pong(data);
    if let Ok((_, rest)) = RmcpHeader::decode(data)
        && let Ok(s) = decode_v15(rest)
    {
        let _ = IpmiRequest::decode(s.message);
        let _ = IpmiResponse::decode(s.message);
    }
    static FIXED: OnceLock<[SessionSecurity; 2]> = OnceLock::new();
    let [fixed3, fixed17] = FIXED.get_or_init(|| {
        [
            fixed_security(AuthAlgorithm::HmacSha1),
            fixed_security(AuthAlgorithm::HmacSha256),
        ]
    });
    for sec in [security, Some(fixed3), Some(fixed17)]
        .into_iter()
        .flatten()
    {
        for authcode_len in [0, sec.integrity.authcode_len()] {
            if let Ok(p) = decode_v2(data, authcode_len) {
                let _ = p.verify(sec);
                if let Ok(clear) = p.open_payload(Some(sec)) {
                    decode_payload(&clear);
                }
                decode_payload(p.payload);
            }
        }
    }
    decode_payload(data);
    let _ = aes_cbc_decrypt(&fixed3.keys.k2, data);
}

fn decode_payload(p: &[u8]) {
    let _ = OpenSessionRequest::decode(p);
    let _ = OpenSessionResponse::decode(p);
    let _ = Rakp1::decode(p);
    let _ = Rakp2::decode(p);
    let _ = Rakp3::decode(p);
    let _ = Rakp4::decode(p);
    let _ = IpmiRequest::decode(p);
    if let Ok(r) = IpmiResponse::decode(p) {
        decode_command_data(&r.data);
    }
    decode_command_data(p);
}

fn decode_command_data(d: &[u8]) {
    let _ = ChannelAuthCapabilities::decode(d);
    let _ = DeviceId::decode(d);
    let _ = ChassisStatus::decode(d);
    let _ = crate::commands::decode_set_session_privilege(d);
    if let Ok(b) = BootOptionResponse::decode(d) {
        let _ = BootFlags::decode(&b.data);
    }
    let _ = BootFlags::decode(d);
}
