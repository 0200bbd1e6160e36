//! IPMI session wrappers: the v1.5 header (used pre-session for Get Channel Authentication
//! Capabilities) and the v2.0/RMCP+ header with payload types, integrity trailer and
//! encrypted payloads (IPMI v2.0 §13.6, §13.28).

use crate::crypto::{
    ConfidentialityAlgorithm, IntegrityAlgorithm, SessionKeys, aes_cbc_decrypt, aes_cbc_encrypt,
    ct_eq,
};
use crate::error::{DecodeError, need};
use crate::rmcp::{RmcpClass, RmcpHeader};

/// Session header auth type byte for RMCP+ (IPMI v2.0) packets.
pub const AUTH_TYPE_RMCP_PLUS: u8 = 0x06;
/// The "next header" byte of the integrity trailer.
pub const NEXT_HEADER_RMCP: u8 = 0x07;

/// RMCP+ payload types (IPMI v2.0 table 13-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    Ipmi,
    Sol,
    Oem,
    OpenSessionRequest,
    OpenSessionResponse,
    Rakp1,
    Rakp2,
    Rakp3,
    Rakp4,
    Other(u8),
}

impl PayloadType {
    pub fn from_byte(b: u8) -> PayloadType {
        match b & 0x3f {
            0x00 => PayloadType::Ipmi,
            0x01 => PayloadType::Sol,
            0x02 => PayloadType::Oem,
            0x10 => PayloadType::OpenSessionRequest,
            0x11 => PayloadType::OpenSessionResponse,
            0x12 => PayloadType::Rakp1,
            0x13 => PayloadType::Rakp2,
            0x14 => PayloadType::Rakp3,
            0x15 => PayloadType::Rakp4,
            other => PayloadType::Other(other),
        }
    }
    pub fn to_byte(self) -> u8 {
        match self {
            PayloadType::Ipmi => 0x00,
            PayloadType::Sol => 0x01,
            PayloadType::Oem => 0x02,
            PayloadType::OpenSessionRequest => 0x10,
            PayloadType::OpenSessionResponse => 0x11,
            PayloadType::Rakp1 => 0x12,
            PayloadType::Rakp2 => 0x13,
            PayloadType::Rakp3 => 0x14,
            PayloadType::Rakp4 => 0x15,
            PayloadType::Other(b) => b & 0x3f,
        }
    }
}

/// IPMI v1.5 session header and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionV15<'a> {
    pub auth_type: u8,
    pub session_seq: u32,
    pub session_id: u32,
    pub authcode: Option<&'a [u8]>,
    /// The IPMI message (request or response framing).
    pub message: &'a [u8],
}

/// Encode a pre-session IPMI v1.5 packet (auth type none, session 0), RMCP header included.
pub fn encode_v15_unauthenticated(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + message.len());
    RmcpHeader::ipmi().encode(&mut out);
    out.push(0x00); // auth type none
    out.extend_from_slice(&0u32.to_le_bytes()); // session sequence
    out.extend_from_slice(&0u32.to_le_bytes()); // session id
    out.push(message.len() as u8);
    out.extend_from_slice(message);
    out
}

/// Decode the session part of an IPMI v1.5 packet (after the RMCP header).
pub fn decode_v15(buf: &[u8]) -> Result<SessionV15<'_>, DecodeError> {
    need("IPMI v1.5 session header", buf, 10)?;
    let auth_type = buf[0] & 0x0f;
    if buf[0] == AUTH_TYPE_RMCP_PLUS {
        return Err(DecodeError::invalid(
            "IPMI v1.5 session header",
            "auth type 0x06 is an RMCP+ packet",
        ));
    }
    let session_seq = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let session_id = u32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
    let (authcode, rest) = if auth_type != 0 {
        need("IPMI v1.5 session header", buf, 9 + 16 + 1)?;
        (Some(&buf[9..25]), &buf[25..])
    } else {
        (None, &buf[9..])
    };
    let len = rest[0] as usize;
    need("IPMI v1.5 message", &rest[1..], len)?;
    Ok(SessionV15 {
        auth_type,
        session_seq,
        session_id,
        authcode,
        message: &rest[1..1 + len],
    })
}

/// The fixed part of an RMCP+ session header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionHeaderV2 {
    pub payload_type: PayloadType,
    pub encrypted: bool,
    pub authenticated: bool,
    /// For OEM payloads: IANA enterprise number and OEM payload id.
    pub oem: Option<(u32, u16)>,
    pub session_id: u32,
    pub session_seq: u32,
    pub payload_len: u16,
}

/// A decoded (not yet verified/decrypted) RMCP+ packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionV2Packet<'a> {
    pub header: SessionHeaderV2,
    /// The payload as carried (ciphertext with IV when `header.encrypted`).
    pub payload: &'a [u8],
    /// Bytes the integrity authcode covers: AuthType through Next Header.
    pub signed: &'a [u8],
    /// The trailer's authcode (empty when not authenticated).
    pub authcode: &'a [u8],
}

/// Security context of an active session.
#[derive(Debug, Clone)]
pub struct SessionSecurity {
    pub keys: SessionKeys,
    pub integrity: IntegrityAlgorithm,
    pub confidentiality: ConfidentialityAlgorithm,
}

/// Encode an RMCP+ packet, RMCP header included. With `security`, the payload is encrypted
/// (if the suite has confidentiality) with `iv` and the integrity trailer is appended.
pub fn encode_v2(
    payload_type: PayloadType,
    session_id: u32,
    session_seq: u32,
    payload: &[u8],
    security: Option<(&SessionSecurity, [u8; 16])>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + payload.len());
    RmcpHeader::ipmi().encode(&mut out);
    let start = out.len();
    out.push(AUTH_TYPE_RMCP_PLUS);
    let (body, encrypted, authenticated) = match security {
        Some((sec, iv)) => {
            let encrypted = sec.confidentiality == ConfidentialityAlgorithm::AesCbc128;
            let body = if encrypted {
                aes_cbc_encrypt(&sec.keys.k2, iv, payload)
            } else {
                payload.to_vec()
            };
            (body, encrypted, sec.integrity != IntegrityAlgorithm::None)
        }
        None => (payload.to_vec(), false, false),
    };
    out.push(
        payload_type.to_byte()
            | if encrypted { 0x80 } else { 0 }
            | if authenticated { 0x40 } else { 0 },
    );
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&session_seq.to_le_bytes());
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    if let Some((sec, _)) = security
        && authenticated
    {
        // Integrity pad (0xff) so that AuthType..=NextHeader is a multiple of 4 bytes.
        let covered = out.len() - start + 2;
        let pad = (4 - covered % 4) % 4;
        out.extend(std::iter::repeat_n(0xffu8, pad));
        out.push(pad as u8);
        out.push(NEXT_HEADER_RMCP);
        let code = sec.integrity.authcode(&sec.keys.k1, &out[start..]);
        out.extend_from_slice(&code);
    }
    out
}

/// Decode an RMCP+ packet (RMCP header included). `authcode_len` is the session's
/// integrity authcode length, used only when the authenticated bit is set.
pub fn decode_v2(buf: &[u8], authcode_len: usize) -> Result<SessionV2Packet<'_>, DecodeError> {
    let (rmcp, rest) = RmcpHeader::decode(buf)?;
    if rmcp.class != RmcpClass::Ipmi {
        return Err(DecodeError::invalid(
            "RMCP+ packet",
            format!("RMCP class {:?}, expected IPMI", rmcp.class),
        ));
    }
    need("RMCP+ session header", rest, 12)?;
    if rest[0] != AUTH_TYPE_RMCP_PLUS {
        return Err(DecodeError::invalid(
            "RMCP+ session header",
            format!("auth type 0x{:02x}, expected 0x06", rest[0]),
        ));
    }
    let pt = rest[1];
    let payload_type = PayloadType::from_byte(pt);
    let mut off = 2;
    let oem = if payload_type == PayloadType::Oem {
        need("RMCP+ OEM session header", rest, 18)?;
        let iana = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]);
        let id = u16::from_le_bytes([rest[6], rest[7]]);
        off += 6;
        Some((iana, id))
    } else {
        None
    };
    let session_id = u32::from_le_bytes([rest[off], rest[off + 1], rest[off + 2], rest[off + 3]]);
    let session_seq =
        u32::from_le_bytes([rest[off + 4], rest[off + 5], rest[off + 6], rest[off + 7]]);
    let payload_len = u16::from_le_bytes([rest[off + 8], rest[off + 9]]);
    off += 10;
    let plen = payload_len as usize;
    need("RMCP+ payload", &rest[off..], plen)?;
    let payload = &rest[off..off + plen];
    let header = SessionHeaderV2 {
        payload_type,
        encrypted: pt & 0x80 != 0,
        authenticated: pt & 0x40 != 0,
        oem,
        session_id,
        session_seq,
        payload_len,
    };
    let after = &rest[off + plen..];
    if !header.authenticated {
        return Ok(SessionV2Packet {
            header,
            payload,
            signed: &rest[..off + plen],
            authcode: &[],
        });
    }
    // Trailer: pad (0xff...) | pad length | next header | authcode.
    need("RMCP+ integrity trailer", after, authcode_len + 2)?;
    let code_at = after.len() - authcode_len;
    let next_header = after[code_at - 1];
    let pad_len = after[code_at - 2] as usize;
    if next_header != NEXT_HEADER_RMCP {
        return Err(DecodeError::invalid(
            "RMCP+ integrity trailer",
            format!("next header 0x{next_header:02x}, expected 0x07"),
        ));
    }
    if pad_len != code_at - 2 {
        return Err(DecodeError::invalid(
            "RMCP+ integrity trailer",
            format!(
                "pad length byte {pad_len} disagrees with {} pad bytes present",
                code_at - 2
            ),
        ));
    }
    let signed_len = off + plen + code_at;
    Ok(SessionV2Packet {
        header,
        payload,
        signed: &rest[..signed_len],
        authcode: &after[code_at..],
    })
}

impl SessionV2Packet<'_> {
    /// Check the integrity authcode with the session's K1.
    pub fn verify(&self, sec: &SessionSecurity) -> Result<(), DecodeError> {
        if sec.integrity == IntegrityAlgorithm::None {
            return Ok(());
        }
        if !self.header.authenticated {
            return Err(DecodeError::invalid(
                "RMCP+ packet",
                "unauthenticated packet in an authenticated session",
            ));
        }
        let expected = sec.integrity.authcode(&sec.keys.k1, self.signed);
        if !ct_eq(&expected, self.authcode) {
            return Err(DecodeError::invalid(
                "RMCP+ packet",
                "integrity authcode mismatch",
            ));
        }
        Ok(())
    }

    /// The payload in clear: decrypted when the encrypted bit is set.
    pub fn open_payload(&self, sec: Option<&SessionSecurity>) -> Result<Vec<u8>, DecodeError> {
        if !self.header.encrypted {
            return Ok(self.payload.to_vec());
        }
        match sec {
            Some(s) if s.confidentiality == ConfidentialityAlgorithm::AesCbc128 => {
                aes_cbc_decrypt(&s.keys.k2, self.payload)
            }
            _ => Err(DecodeError::invalid(
                "RMCP+ packet",
                "encrypted payload without a confidentiality key",
            )),
        }
    }
}

/// Classify a datagram: RMCP+ (auth type 0x06) or IPMI v1.5, after the RMCP header.
pub fn is_rmcp_plus(buf: &[u8]) -> bool {
    buf.len() > RmcpHeader::LEN && buf[RmcpHeader::LEN] == AUTH_TYPE_RMCP_PLUS
}
