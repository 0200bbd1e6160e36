//! Cipher suite 17 (RAKP-HMAC-SHA256 / HMAC-SHA256-128 / AES-CBC-128), which ipmi_sim
//! does not implement, checked against fixed vectors computed independently by
//! testdata/suite17_vectors.py (Python hmac/hashlib from the IPMI v2.0 formulas, AES by
//! `openssl enc -aes-128-cbc -nopad`), plus RFC 4231 / RFC 2202 HMAC vectors.

mod capture_util;

use capture_util::hex;
use rackboot_ipmi::CipherSuite;
use rackboot_ipmi::crypto::{
    AuthAlgorithm, ConfidentialityAlgorithm, IntegrityAlgorithm, aes_cbc_decrypt, aes_cbc_encrypt,
    derive_session_keys, hmac_sha1, hmac_sha256,
};
use rackboot_ipmi::msg::IpmiRequest;
use rackboot_ipmi::rakp::RakpContext;
use rackboot_ipmi::session::{PayloadType, SessionSecurity, decode_v2, encode_v2};

// Inputs, identical to testdata/suite17_vectors.py.
const KUID: &[u8] = b"password17";
const KG: &[u8] = b"bmc-key-0123456789ab";
const ROLE: u8 = 0x14;
const SID_M: u32 = 0xa0a2_a3a4;
const SID_C: u32 = 0x0000_0182;

fn ctx() -> RakpContext {
    RakpContext {
        auth: AuthAlgorithm::HmacSha256,
        console_session_id: SID_M,
        bmc_session_id: SID_C,
        console_random: core::array::from_fn(|i| 0x10 + i as u8),
        bmc_random: core::array::from_fn(|i| 0x20 + i as u8),
        bmc_guid: hex("a123456789abcdefa123456789abcdef").try_into().unwrap(),
        role: ROLE,
        username: b"admin".to_vec(),
    }
}

fn suite17_security(kg: &[u8]) -> SessionSecurity {
    let c = ctx();
    SessionSecurity {
        keys: derive_session_keys(
            AuthAlgorithm::HmacSha256,
            kg,
            &c.console_random,
            &c.bmc_random,
            c.role,
            &c.username,
        ),
        integrity: CipherSuite::Suite17.integrity(),
        confidentiality: CipherSuite::Suite17.confidentiality(),
    }
}

#[test]
fn suite17_algorithm_ids() {
    let s = CipherSuite::Suite17;
    assert_eq!(s.auth().id(), 0x03);
    assert_eq!(s.integrity().id(), 0x04);
    assert_eq!(s.confidentiality().id(), 0x01);
    assert_eq!(s.auth().mac_len(), 32);
    assert_eq!(s.auth().icv_len(), 16);
    assert_eq!(s.integrity().authcode_len(), 16);
}

#[test]
fn suite17_rakp_authcodes() {
    let c = ctx();
    assert_eq!(
        c.rakp2_authcode(KUID),
        hex("301588b8539ffacddd61cefdb822b3a820cd6f006d1235284542f79648a41c18")
    );
    assert_eq!(
        c.rakp3_authcode(KUID),
        hex("c3f66c300a7dafb6f8746a5e4590975830b52de3769f15832feec5b2f9b174be")
    );
    let sec = suite17_security(KUID);
    assert_eq!(
        c.rakp4_icv(&sec.keys.sik),
        hex("2fb730c1a17be77887759401361b2d5b")
    );
    // A different password gives a different RAKP 2 authcode (what the client checks).
    assert_ne!(c.rakp2_authcode(b"password18"), c.rakp2_authcode(KUID));
}

#[test]
fn suite17_key_derivation() {
    let sec = suite17_security(KUID);
    assert_eq!(
        sec.keys.sik,
        hex("435ab9404f3730cd5f9e805c9d9cd6ea6246a9e3bcf64aec023ea83291ace685")
    );
    assert_eq!(
        sec.keys.k1,
        hex("3e2c3b8efef481908776acf62cd1dcb5b6a4b044012c34cf30313854d9463d73")
    );
    assert_eq!(
        sec.keys.k2,
        hex("8051de09c3c790b2bfe1a7afc6bddbcf31c617a535aea185ea533b535ae8a367")
    );
    // Two-key login: the SIK is keyed with the BMC key Kg instead of the password.
    assert_eq!(
        suite17_security(KG).keys.sik,
        hex("bc178c5601dc0d6683f8cf274800d3a76aa50fcef6754dd768d6b7cfbc80a27b")
    );
}

fn chassis_status_request() -> Vec<u8> {
    IpmiRequest {
        netfn: 0x00,
        cmd: 0x01,
        rq_seq: 5,
        data: vec![],
    }
    .encode()
}

#[test]
fn suite17_integrity_trailer_hmac_sha256_128() {
    let msg = chassis_status_request();
    assert_eq!(msg, hex("2000e08114016a"));
    // Integrity only (no confidentiality) so the whole packet is fixed.
    let sec = SessionSecurity {
        confidentiality: ConfidentialityAlgorithm::None,
        ..suite17_security(KUID)
    };
    let pkt = encode_v2(PayloadType::Ipmi, SID_C, 7, &msg, Some((&sec, [0; 16])));
    let want = hex(
        "0600ff070640820100000700000007002000e08114016affffff0307c8a187f621d37584088a029e612fe66f",
    );
    assert_eq!(pkt, want);
    let p = decode_v2(&want, 16).unwrap();
    p.verify(&sec).unwrap();
    assert_eq!(p.open_payload(Some(&sec)).unwrap(), msg);
    // One flipped bit anywhere in the signed range fails the check.
    for i in 4..want.len() - 16 {
        let mut bad = want.clone();
        bad[i] ^= 0x01;
        if let Ok(p) = decode_v2(&bad, 16) {
            assert!(p.verify(&sec).is_err(), "flip at byte {i} went unnoticed");
        }
    }
}

#[test]
fn suite17_aes_cbc_128_payload() {
    let sec = suite17_security(KUID);
    let msg = chassis_status_request();
    let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
    let want = hex("000102030405060708090a0b0c0d0e0faeedfa751ea4ce7a8f8fb5ffdd516803");
    assert_eq!(aes_cbc_encrypt(&sec.keys.k2, iv, &msg), want);
    assert_eq!(aes_cbc_decrypt(&sec.keys.k2, &want).unwrap(), msg);
}

#[test]
fn suite17_session_packet_round_trip() {
    let sec = suite17_security(KUID);
    for len in [0usize, 1, 7, 14, 15, 16, 17, 31, 32, 100] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let iv = [0x5a; 16];
        let pkt = encode_v2(PayloadType::Ipmi, SID_C, 42, &payload, Some((&sec, iv)));
        // AuthType..NextHeader is a multiple of 4.
        assert_eq!((pkt.len() - 4 - 16) % 4, 0, "len {len}");
        let p = decode_v2(&pkt, 16).unwrap();
        assert!(p.header.encrypted && p.header.authenticated);
        assert_eq!((p.header.session_id, p.header.session_seq), (SID_C, 42));
        p.verify(&sec).unwrap();
        assert_eq!(p.open_payload(Some(&sec)).unwrap(), payload, "len {len}");
        // A different K1 rejects the packet.
        let other = suite17_security(KG);
        assert!(p.verify(&other).is_err());
    }
}

#[test]
fn integrity_algorithms_truncate() {
    let k = [0x11u8; 20];
    let d = b"data";
    assert_eq!(
        IntegrityAlgorithm::HmacSha256_128.authcode(&k, d),
        hmac_sha256(&k, &[d])[..16].to_vec()
    );
    assert_eq!(
        IntegrityAlgorithm::HmacSha1_96.authcode(&k, d),
        hmac_sha1(&k, &[d])[..12].to_vec()
    );
}

#[test]
fn rfc4231_hmac_sha256() {
    let cases: &[(Vec<u8>, Vec<u8>, &str)] = &[
        (
            vec![0x0b; 20],
            b"Hi There".to_vec(),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (
            vec![0xaa; 20],
            vec![0xdd; 50],
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        ),
        (
            vec![0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
    ];
    for (key, data, want) in cases {
        assert_eq!(hmac_sha256(key, &[data]).to_vec(), hex(want));
        // Split input gives the same MAC.
        let (a, b) = data.split_at(data.len() / 2);
        assert_eq!(hmac_sha256(key, &[a, b]).to_vec(), hex(want));
    }
}

#[test]
fn rfc2202_hmac_sha1() {
    assert_eq!(
        hmac_sha1(b"Jefe", &[b"what do ya want for nothing?"]).to_vec(),
        hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
    );
}
