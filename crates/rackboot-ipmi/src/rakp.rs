//! RMCP+ Open Session and RAKP messages 1-4 (IPMI v2.0 §13.17-13.23) and the RAKP
//! authcode formulas (§13.31). Session ids are little endian on the wire.

use crate::crypto::{AuthAlgorithm, CipherSuite, ConfidentialityAlgorithm, IntegrityAlgorithm};
use crate::error::{DecodeError, RakpStatus, need};

/// RAKP 1 role bit: look the user up by name only (ipmitool's default, `-L` aside).
pub const ROLE_NAME_ONLY_LOOKUP: u8 = 0x10;

/// IPMI privilege levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Privilege {
    Callback,
    User,
    Operator,
    #[default]
    Administrator,
}

impl Privilege {
    pub fn level(self) -> u8 {
        match self {
            Privilege::Callback => 1,
            Privilege::User => 2,
            Privilege::Operator => 3,
            Privilege::Administrator => 4,
        }
    }
    pub fn from_level(l: u8) -> Option<Privilege> {
        match l & 0x0f {
            1 => Some(Privilege::Callback),
            2 => Some(Privilege::User),
            3 => Some(Privilege::Operator),
            4 => Some(Privilege::Administrator),
            _ => None,
        }
    }
}

/// RMCP+ Open Session Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionRequest {
    pub tag: u8,
    /// Requested maximum privilege (0 = highest level matching the proposed algorithms).
    pub max_privilege: u8,
    pub console_session_id: u32,
    pub auth: u8,
    pub integrity: u8,
    pub confidentiality: u8,
}

impl OpenSessionRequest {
    pub fn for_suite(
        tag: u8,
        max_privilege: u8,
        console_session_id: u32,
        suite: CipherSuite,
    ) -> Self {
        OpenSessionRequest {
            tag,
            max_privilege,
            console_session_id,
            auth: suite.auth().id(),
            integrity: suite.integrity().id(),
            confidentiality: suite.confidentiality().id(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(self.tag);
        out.push(self.max_privilege);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.console_session_id.to_le_bytes());
        for (ptype, alg) in [
            (0u8, self.auth),
            (1, self.integrity),
            (2, self.confidentiality),
        ] {
            out.extend_from_slice(&[ptype, 0, 0, 8, alg, 0, 0, 0]);
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        need("Open Session Request", buf, 32)?;
        let algs = decode_alg_payloads("Open Session Request", &buf[8..32])?;
        Ok(OpenSessionRequest {
            tag: buf[0],
            max_privilege: buf[1],
            console_session_id: le32(&buf[4..8]),
            auth: algs[0],
            integrity: algs[1],
            confidentiality: algs[2],
        })
    }
}

/// RMCP+ Open Session Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionResponse {
    pub tag: u8,
    pub status: RakpStatus,
    pub max_privilege: u8,
    pub console_session_id: u32,
    /// Present when status is OK.
    pub accepted: Option<AcceptedSession>,
}

/// What the BMC accepted in a successful Open Session Response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptedSession {
    pub bmc_session_id: u32,
    pub auth: u8,
    pub integrity: u8,
    pub confidentiality: u8,
}

impl OpenSessionResponse {
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        need("Open Session Response", buf, 2)?;
        let status = RakpStatus(buf[1]);
        if status != RakpStatus::OK {
            // Error responses may be cut short after the status (spec allows 8 bytes).
            return Ok(OpenSessionResponse {
                tag: buf[0],
                status,
                max_privilege: buf.get(2).copied().unwrap_or(0),
                console_session_id: if buf.len() >= 8 { le32(&buf[4..8]) } else { 0 },
                accepted: None,
            });
        }
        need("Open Session Response", buf, 36)?;
        let algs = decode_alg_payloads("Open Session Response", &buf[12..36])?;
        Ok(OpenSessionResponse {
            tag: buf[0],
            status,
            max_privilege: buf[2],
            console_session_id: le32(&buf[4..8]),
            accepted: Some(AcceptedSession {
                bmc_session_id: le32(&buf[8..12]),
                auth: algs[0],
                integrity: algs[1],
                confidentiality: algs[2],
            }),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, self.status.0, self.max_privilege, 0];
        out.extend_from_slice(&self.console_session_id.to_le_bytes());
        if let Some(a) = &self.accepted {
            out.extend_from_slice(&a.bmc_session_id.to_le_bytes());
            for (ptype, alg) in [(0u8, a.auth), (1, a.integrity), (2, a.confidentiality)] {
                out.extend_from_slice(&[ptype, 0, 0, 8, alg, 0, 0, 0]);
            }
        }
        out
    }
}

impl AcceptedSession {
    /// Check the BMC accepted exactly the suite we proposed.
    pub fn matches(&self, suite: CipherSuite) -> bool {
        AuthAlgorithm::from_id(self.auth) == Some(suite.auth())
            && IntegrityAlgorithm::from_id(self.integrity) == Some(suite.integrity())
            && ConfidentialityAlgorithm::from_id(self.confidentiality)
                == Some(suite.confidentiality())
    }
}

fn decode_alg_payloads(what: &'static str, buf: &[u8]) -> Result<[u8; 3], DecodeError> {
    let mut algs = [0u8; 3];
    for (i, alg) in algs.iter_mut().enumerate() {
        let p = &buf[i * 8..i * 8 + 8];
        if p[0] != i as u8 {
            return Err(DecodeError::invalid(
                what,
                format!("algorithm payload {i} has type 0x{:02x}", p[0]),
            ));
        }
        *alg = p[4] & 0x3f;
    }
    Ok(algs)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// RAKP Message 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp1 {
    pub tag: u8,
    pub bmc_session_id: u32,
    pub console_random: [u8; 16],
    /// Requested maximum privilege | name-only-lookup bit: also enters every RAKP HMAC.
    pub role: u8,
    pub username: Vec<u8>,
}

impl Rakp1 {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + self.username.len());
        out.push(self.tag);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&self.bmc_session_id.to_le_bytes());
        out.extend_from_slice(&self.console_random);
        out.push(self.role);
        out.extend_from_slice(&[0, 0]);
        out.push(self.username.len() as u8);
        out.extend_from_slice(&self.username);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        need("RAKP 1", buf, 28)?;
        let ulen = buf[27] as usize;
        if ulen > 16 {
            return Err(DecodeError::invalid(
                "RAKP 1",
                format!("user name length {ulen}"),
            ));
        }
        need("RAKP 1 user name", &buf[28..], ulen)?;
        Ok(Rakp1 {
            tag: buf[0],
            bmc_session_id: le32(&buf[4..8]),
            console_random: buf[8..24].try_into().expect("checked length"),
            role: buf[24],
            username: buf[28..28 + ulen].to_vec(),
        })
    }
}

/// RAKP Message 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2 {
    pub tag: u8,
    pub status: RakpStatus,
    pub console_session_id: u32,
    /// Present when status is OK.
    pub body: Option<Rakp2Body>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2Body {
    pub bmc_random: [u8; 16],
    pub bmc_guid: [u8; 16],
    /// HMAC_Kuid(SIDm | SIDc | Rm | Rc | GUIDc | RoleM | ULengthM | UNameM).
    pub authcode: Vec<u8>,
}

impl Rakp2 {
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        need("RAKP 2", buf, 2)?;
        let status = RakpStatus(buf[1]);
        let console_session_id = if buf.len() >= 8 { le32(&buf[4..8]) } else { 0 };
        if status != RakpStatus::OK {
            return Ok(Rakp2 {
                tag: buf[0],
                status,
                console_session_id,
                body: None,
            });
        }
        need("RAKP 2", buf, 40)?;
        Ok(Rakp2 {
            tag: buf[0],
            status,
            console_session_id,
            body: Some(Rakp2Body {
                bmc_random: buf[8..24].try_into().expect("checked length"),
                bmc_guid: buf[24..40].try_into().expect("checked length"),
                authcode: buf[40..].to_vec(),
            }),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, self.status.0, 0, 0];
        out.extend_from_slice(&self.console_session_id.to_le_bytes());
        if let Some(b) = &self.body {
            out.extend_from_slice(&b.bmc_random);
            out.extend_from_slice(&b.bmc_guid);
            out.extend_from_slice(&b.authcode);
        }
        out
    }
}

/// RAKP Message 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp3 {
    pub tag: u8,
    pub status: RakpStatus,
    pub bmc_session_id: u32,
    pub authcode: Vec<u8>,
}

impl Rakp3 {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, self.status.0, 0, 0];
        out.extend_from_slice(&self.bmc_session_id.to_le_bytes());
        out.extend_from_slice(&self.authcode);
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        need("RAKP 3", buf, 8)?;
        Ok(Rakp3 {
            tag: buf[0],
            status: RakpStatus(buf[1]),
            bmc_session_id: le32(&buf[4..8]),
            authcode: buf[8..].to_vec(),
        })
    }
}

/// RAKP Message 4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp4 {
    pub tag: u8,
    pub status: RakpStatus,
    pub console_session_id: u32,
    /// HMAC_SIK(Rm | SIDc | GUIDc) truncated to the algorithm's ICV length.
    pub icv: Vec<u8>,
}

impl Rakp4 {
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        need("RAKP 4", buf, 2)?;
        Ok(Rakp4 {
            tag: buf[0],
            status: RakpStatus(buf[1]),
            console_session_id: if buf.len() >= 8 { le32(&buf[4..8]) } else { 0 },
            icv: buf.get(8..).map(<[u8]>::to_vec).unwrap_or_default(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.tag, self.status.0, 0, 0];
        out.extend_from_slice(&self.console_session_id.to_le_bytes());
        out.extend_from_slice(&self.icv);
        out
    }
}

/// Everything the RAKP HMACs are computed over, gathered from Open Session and RAKP 1/2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RakpContext {
    pub auth: AuthAlgorithm,
    /// SIDm: the remote console's (our) session id.
    pub console_session_id: u32,
    /// SIDc: the managed system's (BMC's) session id.
    pub bmc_session_id: u32,
    /// Rm
    pub console_random: [u8; 16],
    /// Rc
    pub bmc_random: [u8; 16],
    /// GUIDc
    pub bmc_guid: [u8; 16],
    /// RoleM as sent in RAKP 1.
    pub role: u8,
    pub username: Vec<u8>,
}

impl RakpContext {
    /// RAKP 2 authcode the BMC should have sent, keyed with Kuid (the password).
    pub fn rakp2_authcode(&self, kuid: &[u8]) -> Vec<u8> {
        self.auth.hmac(
            kuid,
            &[
                &self.console_session_id.to_le_bytes(),
                &self.bmc_session_id.to_le_bytes(),
                &self.console_random,
                &self.bmc_random,
                &self.bmc_guid,
                &[self.role, self.username.len() as u8],
                &self.username,
            ],
        )
    }

    /// RAKP 3 authcode we send: HMAC_Kuid(Rc | SIDm | RoleM | ULengthM | UNameM).
    pub fn rakp3_authcode(&self, kuid: &[u8]) -> Vec<u8> {
        self.auth.hmac(
            kuid,
            &[
                &self.bmc_random,
                &self.console_session_id.to_le_bytes(),
                &[self.role, self.username.len() as u8],
                &self.username,
            ],
        )
    }

    /// RAKP 4 integrity check value the BMC should send: HMAC_SIK(Rm | SIDc | GUIDc),
    /// truncated (12 bytes for SHA1, 16 for SHA256).
    pub fn rakp4_icv(&self, sik: &[u8]) -> Vec<u8> {
        let mut full = self.auth.hmac(
            sik,
            &[
                &self.console_random,
                &self.bmc_session_id.to_le_bytes(),
                &self.bmc_guid,
            ],
        );
        full.truncate(self.auth.icv_len());
        full
    }
}
