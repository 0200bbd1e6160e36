//! RMCP header (DMTF ASF 2.0 §3.2.2) and ASF presence ping/pong.

use crate::error::{DecodeError, need};

pub const RMCP_VERSION_1_0: u8 = 0x06;
/// RMCP sequence number 0xff: "no RMCP ACK requested" (IPMI always uses this).
pub const RMCP_SEQ_NO_ACK: u8 = 0xff;
/// ASF IANA enterprise number 4542, big endian on the wire.
pub const ASF_IANA: u32 = 4542;
pub const ASF_PRESENCE_PING: u8 = 0x80;
pub const ASF_PRESENCE_PONG: u8 = 0x40;

/// RMCP message class (low 5 bits of the class byte; bit 7 = ACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmcpClass {
    Asf,
    Ipmi,
    Oem,
    Other(u8),
}

impl RmcpClass {
    pub fn from_byte(b: u8) -> RmcpClass {
        match b & 0x1f {
            0x06 => RmcpClass::Asf,
            0x07 => RmcpClass::Ipmi,
            0x08 => RmcpClass::Oem,
            other => RmcpClass::Other(other),
        }
    }
    pub fn to_byte(self) -> u8 {
        match self {
            RmcpClass::Asf => 0x06,
            RmcpClass::Ipmi => 0x07,
            RmcpClass::Oem => 0x08,
            RmcpClass::Other(b) => b & 0x1f,
        }
    }
}

/// The 4-byte RMCP header in front of every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RmcpHeader {
    pub version: u8,
    pub sequence: u8,
    pub class: RmcpClass,
    /// Bit 7 of the class byte: this is an RMCP ACK, not data.
    pub is_ack: bool,
}

impl RmcpHeader {
    pub const LEN: usize = 4;

    pub fn ipmi() -> RmcpHeader {
        RmcpHeader {
            version: RMCP_VERSION_1_0,
            sequence: RMCP_SEQ_NO_ACK,
            class: RmcpClass::Ipmi,
            is_ack: false,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.push(0); // reserved
        out.push(self.sequence);
        out.push(self.class.to_byte() | if self.is_ack { 0x80 } else { 0 });
    }

    /// Decode the header; returns it and the rest of the packet.
    pub fn decode(buf: &[u8]) -> Result<(RmcpHeader, &[u8]), DecodeError> {
        need("RMCP header", buf, Self::LEN)?;
        if buf[0] != RMCP_VERSION_1_0 {
            return Err(DecodeError::invalid(
                "RMCP header",
                format!("version 0x{:02x}, expected 0x06", buf[0]),
            ));
        }
        Ok((
            RmcpHeader {
                version: buf[0],
                sequence: buf[2],
                class: RmcpClass::from_byte(buf[3]),
                is_ack: buf[3] & 0x80 != 0,
            },
            &buf[Self::LEN..],
        ))
    }
}

/// Build an ASF Presence Ping (RMCP class ASF) with the given message tag.
pub fn encode_presence_ping(tag: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    RmcpHeader {
        class: RmcpClass::Asf,
        ..RmcpHeader::ipmi()
    }
    .encode(&mut out);
    out.extend_from_slice(&ASF_IANA.to_be_bytes());
    out.push(ASF_PRESENCE_PING);
    out.push(tag);
    out.push(0); // reserved
    out.push(0); // data length
    out
}

/// A decoded ASF Presence Pong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresencePong {
    pub tag: u8,
    pub iana: u32,
    pub oem: u32,
    /// Supported entities: bit 7 = IPMI supported.
    pub entities: u8,
    pub interactions: u8,
}

impl PresencePong {
    pub fn ipmi_supported(&self) -> bool {
        self.entities & 0x80 != 0
    }
}

/// Decode an ASF Presence Pong, RMCP header included.
pub fn decode_presence_pong(buf: &[u8]) -> Result<PresencePong, DecodeError> {
    let (hdr, rest) = RmcpHeader::decode(buf)?;
    if hdr.class != RmcpClass::Asf {
        return Err(DecodeError::invalid(
            "ASF pong",
            format!("RMCP class {:?}, expected ASF", hdr.class),
        ));
    }
    need("ASF message header", rest, 8)?;
    if rest[4] != ASF_PRESENCE_PONG {
        return Err(DecodeError::invalid(
            "ASF pong",
            format!("message type 0x{:02x}, expected 0x40", rest[4]),
        ));
    }
    let data_len = rest[7] as usize;
    let data = &rest[8..];
    need("ASF pong data", data, data_len.max(10))?;
    Ok(PresencePong {
        tag: rest[5],
        iana: u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
        oem: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        entities: data[8],
        interactions: data[9],
    })
}
