//! Reading the packet captures in testdata/ (made with tcpdump on lo while ipmitool talked
//! to ipmi_sim, converted by testdata/pcap2hex.py) and replaying a whole RMCP+ session
//! from them with the known password.

#![allow(dead_code)]

use rackboot_ipmi::crypto::{AuthAlgorithm, derive_session_keys};
use rackboot_ipmi::msg::{IpmiRequest, IpmiResponse};
use rackboot_ipmi::rakp::{
    OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp3, Rakp4, RakpContext,
};
use rackboot_ipmi::session::{PayloadType, SessionSecurity, decode_v2};
use rackboot_ipmi::{CipherSuite, RakpStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Console (ipmitool) to BMC (ipmi_sim).
    ToBmc,
    FromBmc,
}

pub fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

pub fn load(name: &str) -> Vec<(Dir, Vec<u8>)> {
    let path = format!("{}/testdata/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (d, h) = l.split_once(' ').expect("direction and hex");
            let dir = match d {
                "C" => Dir::ToBmc,
                "B" => Dir::FromBmc,
                other => panic!("bad direction {other}"),
            };
            (dir, hex(h.trim()))
        })
        .collect()
}

pub const ALL_CAPTURES: &[&str] = &[
    "cs3-mc-info",
    "cs3-chassis",
    "cs3-power-on",
    "cs3-bootdev-pxe-efi",
    "cs3-bootparam-get5",
    "cs17-refused",
    "wrong-password",
    "unknown-user",
];

/// A message of the replayed session, in clear.
#[derive(Debug)]
pub enum Clear {
    Request(IpmiRequest),
    Response(IpmiResponse),
}

/// The decoded handshake and the in-session messages of a successful capture.
pub struct Replay {
    pub ctx: RakpContext,
    pub security: SessionSecurity,
    pub open_request: OpenSessionRequest,
    pub rakp3: Rakp3,
    pub rakp4: Rakp4,
    pub messages: Vec<SessionMessage>,
}

/// One in-session packet of a capture.
pub struct SessionMessage {
    pub dir: Dir,
    pub raw: Vec<u8>,
    pub session_seq: u32,
    pub iv: [u8; 16],
    pub clear: Clear,
}

/// Replay a cipher suite 3 session capture: packets 0/1 are Get Channel Auth Caps,
/// 2..=7 Open Session and RAKP 1-4, the rest in-session IPMI messages. Every
/// authcode is checked against what the spec's formulas give for `password`.
pub fn replay_suite3(name: &str, password: &str) -> Replay {
    let pkts = load(name);
    let payload = |i: usize, want: PayloadType| -> Vec<u8> {
        let p = decode_v2(&pkts[i].1, 0).unwrap_or_else(|e| panic!("{name} packet {i}: {e}"));
        assert_eq!(p.header.payload_type, want, "{name} packet {i}");
        assert!(!p.header.authenticated && !p.header.encrypted);
        assert_eq!(p.header.session_id, 0);
        p.payload.to_vec()
    };
    let open_request =
        OpenSessionRequest::decode(&payload(2, PayloadType::OpenSessionRequest)).unwrap();
    let open = OpenSessionResponse::decode(&payload(3, PayloadType::OpenSessionResponse)).unwrap();
    assert_eq!(open.status, RakpStatus::OK);
    let accepted = open.accepted.unwrap();
    assert!(accepted.matches(CipherSuite::Suite3));
    let rakp1 = Rakp1::decode(&payload(4, PayloadType::Rakp1)).unwrap();
    let rakp2 = Rakp2::decode(&payload(5, PayloadType::Rakp2)).unwrap();
    let rakp3 = Rakp3::decode(&payload(6, PayloadType::Rakp3)).unwrap();
    let rakp4 = Rakp4::decode(&payload(7, PayloadType::Rakp4)).unwrap();
    assert_eq!(rakp1.bmc_session_id, accepted.bmc_session_id);
    assert_eq!(rakp2.console_session_id, open_request.console_session_id);
    let body = rakp2.body.expect("RAKP 2 OK");
    let ctx = RakpContext {
        auth: AuthAlgorithm::HmacSha1,
        console_session_id: open_request.console_session_id,
        bmc_session_id: accepted.bmc_session_id,
        console_random: rakp1.console_random,
        bmc_random: body.bmc_random,
        bmc_guid: body.bmc_guid,
        role: rakp1.role,
        username: rakp1.username.clone(),
    };
    let kuid = password.as_bytes();
    assert_eq!(
        ctx.rakp2_authcode(kuid),
        body.authcode,
        "{name}: RAKP 2 authcode"
    );
    assert_eq!(
        ctx.rakp3_authcode(kuid),
        rakp3.authcode,
        "{name}: RAKP 3 authcode"
    );
    let keys = derive_session_keys(
        AuthAlgorithm::HmacSha1,
        kuid,
        &ctx.console_random,
        &ctx.bmc_random,
        ctx.role,
        &ctx.username,
    );
    assert_eq!(ctx.rakp4_icv(&keys.sik), rakp4.icv, "{name}: RAKP 4 ICV");
    let security = SessionSecurity {
        keys,
        integrity: CipherSuite::Suite3.integrity(),
        confidentiality: CipherSuite::Suite3.confidentiality(),
    };
    let mut messages = Vec::new();
    for (i, (dir, raw)) in pkts.iter().enumerate().skip(8) {
        let p = decode_v2(raw, 12).unwrap_or_else(|e| panic!("{name} packet {i}: {e}"));
        assert_eq!(p.header.payload_type, PayloadType::Ipmi);
        assert!(
            p.header.authenticated && p.header.encrypted,
            "{name} packet {i}"
        );
        let want_sid = match dir {
            Dir::ToBmc => ctx.bmc_session_id,
            Dir::FromBmc => ctx.console_session_id,
        };
        assert_eq!(
            p.header.session_id, want_sid,
            "{name} packet {i} session id"
        );
        p.verify(&security)
            .unwrap_or_else(|e| panic!("{name} packet {i}: {e}"));
        let clear = p.open_payload(Some(&security)).unwrap();
        let iv: [u8; 16] = p.payload[..16].try_into().unwrap();
        let msg = match dir {
            Dir::ToBmc => Clear::Request(IpmiRequest::decode(&clear).unwrap()),
            Dir::FromBmc => Clear::Response(IpmiResponse::decode(&clear).unwrap()),
        };
        messages.push(SessionMessage {
            dir: *dir,
            raw: raw.clone(),
            session_seq: p.header.session_seq,
            iv,
            clear: msg,
        });
    }
    Replay {
        ctx,
        security,
        open_request,
        rakp3,
        rakp4,
        messages,
    }
}

impl Replay {
    /// (request, response) pairs, checking each response answers its request.
    pub fn exchanges(&self) -> Vec<(&IpmiRequest, &IpmiResponse)> {
        let mut out = Vec::new();
        let mut pending: Option<&IpmiRequest> = None;
        for m in &self.messages {
            match &m.clear {
                Clear::Request(r) => pending = Some(r),
                Clear::Response(r) => {
                    let req = pending.take().expect("response after a request");
                    assert!(r.answers(req), "{r:?} does not answer {req:?}");
                    out.push((req, r));
                }
            }
        }
        out
    }
}
