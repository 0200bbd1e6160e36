//! IPMI LAN message framing (IPMI v2.0 §13.8): the addresses, netFn/LUN, rqSeq, command,
//! data and the two 2's-complement checksums carried as the IPMI payload.

use crate::error::{CompletionCode, DecodeError, need};

/// The BMC's responder address.
pub const BMC_SLAVE_ADDR: u8 = 0x20;
/// Remote console software ID 0x40, as a requester address (0x81 = SWID 0x40 << 1 | 1).
pub const REMOTE_CONSOLE_SWID: u8 = 0x81;

pub const NETFN_CHASSIS: u8 = 0x00;
pub const NETFN_APP: u8 = 0x06;

/// 2's-complement checksum: the byte that makes the sum of `bytes` + it equal 0 mod 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    let sum = bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b));
    sum.wrapping_neg()
}

/// A request to the BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiRequest {
    pub netfn: u8,
    pub cmd: u8,
    /// Request sequence number, 6 bits (0..=63); reused on retransmission.
    pub rq_seq: u8,
    pub data: Vec<u8>,
}

impl IpmiRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(7 + self.data.len());
        out.push(BMC_SLAVE_ADDR);
        out.push(self.netfn << 2); // rsLUN 0
        out.push(checksum(&out[0..2]));
        out.push(REMOTE_CONSOLE_SWID);
        out.push((self.rq_seq & 0x3f) << 2); // rqLUN 0
        out.push(self.cmd);
        out.extend_from_slice(&self.data);
        let c2 = checksum(&out[3..]);
        out.push(c2);
        out
    }

    /// Decode a request (used by tests and the fuzzer on captured ipmitool traffic).
    pub fn decode(buf: &[u8]) -> Result<IpmiRequest, DecodeError> {
        need("IPMI request", buf, 7)?;
        verify_checksums("IPMI request", buf)?;
        Ok(IpmiRequest {
            netfn: buf[1] >> 2,
            cmd: buf[5],
            rq_seq: buf[4] >> 2,
            data: buf[6..buf.len() - 1].to_vec(),
        })
    }
}

/// A response from the BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiResponse {
    /// Response netFn (the request's netFn + 1).
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
    pub rq_addr: u8,
    pub rs_addr: u8,
    pub completion: CompletionCode,
    /// Response data after the completion code.
    pub data: Vec<u8>,
}

impl IpmiResponse {
    pub fn decode(buf: &[u8]) -> Result<IpmiResponse, DecodeError> {
        need("IPMI response", buf, 8)?;
        verify_checksums("IPMI response", buf)?;
        Ok(IpmiResponse {
            rq_addr: buf[0],
            netfn: buf[1] >> 2,
            rs_addr: buf[3],
            rq_seq: buf[4] >> 2,
            cmd: buf[5],
            completion: CompletionCode(buf[6]),
            data: buf[7..buf.len() - 1].to_vec(),
        })
    }

    /// Encode (used by tests to build BMC replies).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.rq_addr, self.netfn << 2];
        out.push(checksum(&out));
        out.push(self.rs_addr);
        out.push(self.rq_seq << 2);
        out.push(self.cmd);
        out.push(self.completion.0);
        out.extend_from_slice(&self.data);
        let c2 = checksum(&out[3..]);
        out.push(c2);
        out
    }

    /// Does this response answer `req`?
    pub fn answers(&self, req: &IpmiRequest) -> bool {
        self.netfn == req.netfn + 1 && self.cmd == req.cmd && self.rq_seq == req.rq_seq & 0x3f
    }
}

fn verify_checksums(what: &'static str, buf: &[u8]) -> Result<(), DecodeError> {
    // Header checksum covers bytes 0..2, data checksum covers 3..end (both including the
    // checksum byte itself sum to zero).
    let sum1 = buf[0..3].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    if sum1 != 0 {
        return Err(DecodeError::invalid(what, "bad header checksum"));
    }
    let sum2 = buf[3..].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    if sum2 != 0 {
        return Err(DecodeError::invalid(what, "bad data checksum"));
    }
    Ok(())
}
