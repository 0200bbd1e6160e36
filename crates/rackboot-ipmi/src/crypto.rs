//! RMCP+ algorithms (IPMI v2.0 §13.28-13.29): authentication (RAKP HMACs), integrity,
//! confidentiality, cipher suites and session key derivation.

use aes::Aes128;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::error::{DecodeError, need};

/// RAKP authentication algorithm (Open Session payload type 0x00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAlgorithm {
    HmacSha1,
    HmacSha256,
}

impl AuthAlgorithm {
    pub fn id(self) -> u8 {
        match self {
            AuthAlgorithm::HmacSha1 => 0x01,
            AuthAlgorithm::HmacSha256 => 0x03,
        }
    }
    pub fn from_id(id: u8) -> Option<Self> {
        match id & 0x3f {
            0x01 => Some(AuthAlgorithm::HmacSha1),
            0x03 => Some(AuthAlgorithm::HmacSha256),
            _ => None,
        }
    }
    /// Full HMAC output length: RAKP 2/3 key exchange authcodes and the SIK.
    pub fn mac_len(self) -> usize {
        match self {
            AuthAlgorithm::HmacSha1 => 20,
            AuthAlgorithm::HmacSha256 => 32,
        }
    }
    /// RAKP 4 integrity check value length (HMAC truncated: 96 bits for SHA1,
    /// 128 bits for SHA256).
    pub fn icv_len(self) -> usize {
        match self {
            AuthAlgorithm::HmacSha1 => 12,
            AuthAlgorithm::HmacSha256 => 16,
        }
    }
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            AuthAlgorithm::HmacSha1 => hmac_sha1(key, parts).to_vec(),
            AuthAlgorithm::HmacSha256 => hmac_sha256(key, parts).to_vec(),
        }
    }
}

/// Per-packet integrity algorithm (Open Session payload type 0x01).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityAlgorithm {
    None,
    HmacSha1_96,
    HmacSha256_128,
}

impl IntegrityAlgorithm {
    pub fn id(self) -> u8 {
        match self {
            IntegrityAlgorithm::None => 0x00,
            IntegrityAlgorithm::HmacSha1_96 => 0x01,
            IntegrityAlgorithm::HmacSha256_128 => 0x04,
        }
    }
    pub fn from_id(id: u8) -> Option<Self> {
        match id & 0x3f {
            0x00 => Some(IntegrityAlgorithm::None),
            0x01 => Some(IntegrityAlgorithm::HmacSha1_96),
            0x04 => Some(IntegrityAlgorithm::HmacSha256_128),
            _ => None,
        }
    }
    /// AuthCode length in the session trailer.
    pub fn authcode_len(self) -> usize {
        match self {
            IntegrityAlgorithm::None => 0,
            IntegrityAlgorithm::HmacSha1_96 => 12,
            IntegrityAlgorithm::HmacSha256_128 => 16,
        }
    }
    /// AuthCode over `data` (AuthType through Next Header) keyed with K1.
    pub fn authcode(self, k1: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            IntegrityAlgorithm::None => Vec::new(),
            IntegrityAlgorithm::HmacSha1_96 => hmac_sha1(k1, &[data])[..12].to_vec(),
            IntegrityAlgorithm::HmacSha256_128 => hmac_sha256(k1, &[data])[..16].to_vec(),
        }
    }
}

/// Payload confidentiality algorithm (Open Session payload type 0x02).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfidentialityAlgorithm {
    None,
    AesCbc128,
}

impl ConfidentialityAlgorithm {
    pub fn id(self) -> u8 {
        match self {
            ConfidentialityAlgorithm::None => 0x00,
            ConfidentialityAlgorithm::AesCbc128 => 0x01,
        }
    }
    pub fn from_id(id: u8) -> Option<Self> {
        match id & 0x3f {
            0x00 => Some(ConfidentialityAlgorithm::None),
            0x01 => Some(ConfidentialityAlgorithm::AesCbc128),
            _ => None,
        }
    }
}

/// The cipher suites this crate implements (IPMI v2.0 table 22-20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherSuite {
    /// 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    Suite3,
    /// 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Suite17,
}

impl CipherSuite {
    pub fn id(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 3,
            CipherSuite::Suite17 => 17,
        }
    }
    pub fn auth(self) -> AuthAlgorithm {
        match self {
            CipherSuite::Suite3 => AuthAlgorithm::HmacSha1,
            CipherSuite::Suite17 => AuthAlgorithm::HmacSha256,
        }
    }
    pub fn integrity(self) -> IntegrityAlgorithm {
        match self {
            CipherSuite::Suite3 => IntegrityAlgorithm::HmacSha1_96,
            CipherSuite::Suite17 => IntegrityAlgorithm::HmacSha256_128,
        }
    }
    pub fn confidentiality(self) -> ConfidentialityAlgorithm {
        ConfidentialityAlgorithm::AesCbc128
    }
}

pub fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison for authcodes.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Keys of an established RMCP+ session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub sik: Vec<u8>,
    /// K1 = HMAC(SIK, 0x01 × 20): integrity key.
    pub k1: Vec<u8>,
    /// K2 = HMAC(SIK, 0x02 × 20): confidentiality key (AES uses its first 16 bytes).
    pub k2: Vec<u8>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

/// Derive SIK, K1 and K2 (IPMI v2.0 §13.31-13.32).
///
/// SIK = HMAC_Kg(Rm | Rc | RoleM | ULengthM | UNameM) where Rm is the remote console
/// random number (ours, RAKP 1), Rc the managed system random number (RAKP 2), RoleM the
/// role byte exactly as sent in RAKP 1. Kg is the BMC key, or the user password (Kuid)
/// when the BMC has no key ("one-key login"). The constants for K1/K2 are 20 bytes for
/// both SHA1 and SHA256 suites, as ipmitool and OpenBMC do.
pub fn derive_session_keys(
    auth: AuthAlgorithm,
    kg: &[u8],
    console_random: &[u8; 16],
    bmc_random: &[u8; 16],
    role: u8,
    username: &[u8],
) -> SessionKeys {
    let sik = auth.hmac(
        kg,
        &[
            console_random,
            bmc_random,
            &[role, username.len() as u8],
            username,
        ],
    );
    let k1 = auth.hmac(&sik, &[&[0x01; 20]]);
    let k2 = auth.hmac(&sik, &[&[0x02; 20]]);
    SessionKeys { sik, k1, k2 }
}

/// Encrypt a payload with AES-CBC-128 (IPMI v2.0 §13.29): output is
/// IV (16) | AES(K2[..16], IV, payload | pad 1,2,3.. | pad length).
pub fn aes_cbc_encrypt(k2: &[u8], iv: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let key: [u8; 16] = k2[..16].try_into().expect("K2 is at least 16 bytes");
    let pad_len = (16 - (payload.len() + 1) % 16) % 16;
    let mut plain = Vec::with_capacity(payload.len() + pad_len + 1);
    plain.extend_from_slice(payload);
    plain.extend((1..=pad_len).map(|i| i as u8));
    plain.push(pad_len as u8);
    let n = plain.len();
    let enc = cbc::Encryptor::<Aes128>::new(&key.into(), &iv.into());
    let ct = enc
        .encrypt_padded::<NoPadding>(&mut plain, n)
        .expect("length is a multiple of the block size");
    let mut out = Vec::with_capacity(16 + ct.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(ct);
    out
}

/// Decrypt an AES-CBC-128 payload (IV first) and strip the confidentiality trailer.
pub fn aes_cbc_decrypt(k2: &[u8], data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    need("AES-CBC-128 payload", data, 32)?;
    if !data.len().is_multiple_of(16) {
        return Err(DecodeError::invalid(
            "AES-CBC-128 payload",
            format!("length {} is not a multiple of 16", data.len()),
        ));
    }
    if k2.len() < 16 {
        return Err(DecodeError::invalid(
            "AES-CBC-128 key",
            "K2 shorter than 16",
        ));
    }
    let key: [u8; 16] = k2[..16].try_into().expect("checked length");
    let iv: [u8; 16] = data[..16].try_into().expect("checked length");
    let mut buf = data[16..].to_vec();
    let dec = cbc::Decryptor::<Aes128>::new(&key.into(), &iv.into());
    let plain = dec
        .decrypt_padded::<NoPadding>(&mut buf)
        .map_err(|_| DecodeError::invalid("AES-CBC-128 payload", "decryption failed"))?;
    let pad_len = *plain.last().expect("at least one block") as usize;
    if pad_len > 15 || pad_len + 1 > plain.len() {
        return Err(DecodeError::invalid(
            "AES-CBC-128 payload",
            format!("confidentiality pad length {pad_len} invalid"),
        ));
    }
    let body_len = plain.len() - 1 - pad_len;
    let pad = &plain[body_len..plain.len() - 1];
    if pad.iter().enumerate().any(|(i, b)| *b as usize != i + 1) {
        return Err(DecodeError::invalid(
            "AES-CBC-128 payload",
            "confidentiality pad bytes are not 1, 2, 3, ...",
        ));
    }
    Ok(plain[..body_len].to_vec())
}
