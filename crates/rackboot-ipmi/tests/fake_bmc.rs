//! The client's cipher suite 17 path end to end, against a small in-test BMC built from
//! the crate's codecs (ipmi_sim has no suite 17). The crypto itself is checked against
//! independent vectors in suite17_vectors.rs; this checks the client's state machine:
//! Auto picking 17, 32-byte RAKP authcodes, 16-byte ICV and HMAC-SHA256-128 trailers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rackboot_ipmi::crypto::{AuthAlgorithm, derive_session_keys};
use rackboot_ipmi::msg::{IpmiRequest, IpmiResponse};
use rackboot_ipmi::rakp::{
    AcceptedSession, OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2, Rakp2Body, Rakp3,
    Rakp4, RakpContext,
};
use rackboot_ipmi::rmcp::RmcpHeader;
use rackboot_ipmi::session::{
    PayloadType, SessionSecurity, decode_v2, decode_v15, encode_v2, encode_v15_unauthenticated,
    is_rmcp_plus,
};
use rackboot_ipmi::{
    AuthFailure, ChassisControl, CipherSuite, CipherSuiteChoice, CompletionCode, IpmiClient,
    IpmiError, IpmiOptions, RakpStatus,
};
use tokio::net::UdpSocket;

const USER: &str = "root";
const PASSWORD: &str = "calvin";
const BMC_SID: u32 = 0x0203_0405;
const GUID: [u8; 16] = *b"FAKE-BMC-GUID-01";

#[derive(Default)]
struct State {
    suite: Option<CipherSuite>,
    console_sid: u32,
    rakp: Option<RakpContext>,
    security: Option<SessionSecurity>,
    out_seq: u32,
    power_on: bool,
    commands: Vec<(u8, u8)>,
}

/// Serve on a fresh 127.0.0.1 port; `suites` are the suites the fake BMC accepts.
async fn start_fake_bmc(suites: Vec<CipherSuite>) -> (SocketAddr, Arc<Mutex<State>>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let state = Arc::new(Mutex::new(State::default()));
    let st = state.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            let reply = handle(&buf[..n], &suites, &mut st.lock().unwrap());
            if let Some(r) = reply {
                sock.send_to(&r, from).await.unwrap();
            }
        }
    });
    (addr, state)
}

fn respond(req: &IpmiRequest, cc: u8, data: Vec<u8>) -> Vec<u8> {
    IpmiResponse {
        netfn: req.netfn + 1,
        cmd: req.cmd,
        rq_seq: req.rq_seq,
        rq_addr: 0x81,
        rs_addr: 0x20,
        completion: CompletionCode(cc),
        data,
    }
    .encode()
}

fn handle(pkt: &[u8], suites: &[CipherSuite], st: &mut State) -> Option<Vec<u8>> {
    if !is_rmcp_plus(pkt) {
        let (_, rest) = RmcpHeader::decode(pkt).ok()?;
        let req = IpmiRequest::decode(decode_v15(rest).ok()?.message).ok()?;
        assert_eq!((req.netfn, req.cmd), (0x06, 0x38));
        let caps = respond(&req, 0, vec![0x01, 0x80, 0x04, 0x02, 0, 0, 0, 0]);
        return Some(encode_v15_unauthenticated(&caps));
    }
    let authcode_len = st
        .security
        .as_ref()
        .map_or(0, |s| s.integrity.authcode_len());
    let p = decode_v2(pkt, authcode_len).ok()?;
    let plain = |pt: PayloadType, payload: Vec<u8>| Some(encode_v2(pt, 0, 0, &payload, None));
    match p.header.payload_type {
        PayloadType::OpenSessionRequest => {
            let req = OpenSessionRequest::decode(p.payload).ok()?;
            let Some(suite) = suites.iter().copied().find(|s| {
                OpenSessionRequest::for_suite(0, 0, 0, *s).auth == req.auth
                    && OpenSessionRequest::for_suite(0, 0, 0, *s).integrity == req.integrity
            }) else {
                let r = OpenSessionResponse {
                    tag: req.tag,
                    status: RakpStatus::NO_CIPHER_SUITE_MATCH,
                    max_privilege: 0,
                    console_session_id: req.console_session_id,
                    accepted: None,
                };
                return plain(PayloadType::OpenSessionResponse, r.encode());
            };
            st.suite = Some(suite);
            st.console_sid = req.console_session_id;
            let r = OpenSessionResponse {
                tag: req.tag,
                status: RakpStatus::OK,
                max_privilege: 4,
                console_session_id: req.console_session_id,
                accepted: Some(AcceptedSession {
                    bmc_session_id: BMC_SID,
                    auth: req.auth,
                    integrity: req.integrity,
                    confidentiality: req.confidentiality,
                }),
            };
            plain(PayloadType::OpenSessionResponse, r.encode())
        }
        PayloadType::Rakp1 => {
            let r1 = Rakp1::decode(p.payload).ok()?;
            let suite = st.suite?;
            if r1.username != USER.as_bytes() {
                let r = Rakp2 {
                    tag: r1.tag,
                    status: RakpStatus::UNAUTHORIZED_NAME,
                    console_session_id: st.console_sid,
                    body: None,
                };
                return plain(PayloadType::Rakp2, r.encode());
            }
            let ctx = RakpContext {
                auth: suite.auth(),
                console_session_id: st.console_sid,
                bmc_session_id: BMC_SID,
                console_random: r1.console_random,
                bmc_random: rand::random(),
                bmc_guid: GUID,
                role: r1.role,
                username: r1.username,
            };
            let r = Rakp2 {
                tag: r1.tag,
                status: RakpStatus::OK,
                console_session_id: st.console_sid,
                body: Some(Rakp2Body {
                    bmc_random: ctx.bmc_random,
                    bmc_guid: GUID,
                    authcode: ctx.rakp2_authcode(PASSWORD.as_bytes()),
                }),
            };
            st.rakp = Some(ctx);
            plain(PayloadType::Rakp2, r.encode())
        }
        PayloadType::Rakp3 => {
            let r3 = Rakp3::decode(p.payload).ok()?;
            let ctx = st.rakp.clone()?;
            if r3.authcode != ctx.rakp3_authcode(PASSWORD.as_bytes()) {
                let r = Rakp4 {
                    tag: r3.tag,
                    status: RakpStatus::INVALID_INTEGRITY_CHECK,
                    console_session_id: st.console_sid,
                    icv: vec![],
                };
                return plain(PayloadType::Rakp4, r.encode());
            }
            let keys = derive_session_keys(
                ctx.auth,
                PASSWORD.as_bytes(),
                &ctx.console_random,
                &ctx.bmc_random,
                ctx.role,
                &ctx.username,
            );
            let r = Rakp4 {
                tag: r3.tag,
                status: RakpStatus::OK,
                console_session_id: st.console_sid,
                icv: ctx.rakp4_icv(&keys.sik),
            };
            let suite = st.suite?;
            st.security = Some(SessionSecurity {
                keys,
                integrity: suite.integrity(),
                confidentiality: suite.confidentiality(),
            });
            plain(PayloadType::Rakp4, r.encode())
        }
        PayloadType::Ipmi => {
            let sec = st.security.clone()?;
            assert_eq!(p.header.session_id, BMC_SID);
            p.verify(&sec)
                .expect("client packets carry a valid authcode");
            let req = IpmiRequest::decode(&p.open_payload(Some(&sec)).unwrap()).unwrap();
            st.commands.push((req.netfn, req.cmd));
            let msg = match (req.netfn, req.cmd) {
                (0x06, 0x3b) => respond(&req, 0, vec![req.data[0]]),
                (0x06, 0x01) => respond(
                    &req,
                    0,
                    vec![
                        0x20, 0x01, 0x05, 0x10, 0x02, 0xbf, 0xa2, 0x02, 0x00, 0x00, 0x01,
                    ],
                ),
                (0x00, 0x01) => respond(&req, 0, vec![st.power_on as u8, 0, 0]),
                (0x00, 0x02) => {
                    st.power_on = req.data[0] == 1;
                    respond(&req, 0, vec![])
                }
                (0x06, 0x3c) => respond(&req, 0, vec![]),
                _ => respond(&req, 0xc1, vec![]),
            };
            st.out_seq += 1;
            Some(encode_v2(
                PayloadType::Ipmi,
                st.console_sid,
                st.out_seq,
                &msg,
                Some((&sec, rand::random())),
            ))
        }
        _ => None,
    }
}

#[tokio::test]
async fn auto_negotiates_suite17_end_to_end() {
    let (addr, state) = start_fake_bmc(vec![CipherSuite::Suite17, CipherSuite::Suite3]).await;
    let mut bmc = IpmiClient::connect(addr, USER, PASSWORD, IpmiOptions::default())
        .await
        .expect("suite 17 session");
    assert_eq!(bmc.cipher_suite(), CipherSuite::Suite17);
    assert_eq!(
        state.lock().unwrap().suite.unwrap().auth(),
        AuthAlgorithm::HmacSha256
    );
    let id = bmc.get_device_id().await.unwrap();
    assert_eq!(id.manufacturer_id, 0x2a2); // Dell's IANA number, as the fake claims
    assert!(!bmc.chassis_status().await.unwrap().power_on);
    bmc.chassis_control(ChassisControl::PowerUp).await.unwrap();
    assert!(bmc.chassis_status().await.unwrap().power_on);
    let err = bmc.raw(0x06, 0xfe, &[]).await.unwrap_err();
    assert!(matches!(err, IpmiError::Unsupported { .. }), "{err:?}");
    bmc.close().await.unwrap();
    assert_eq!(bmc.ignored_packets(), 0);
    let cmds = state.lock().unwrap().commands.clone();
    assert_eq!(cmds.first(), Some(&(0x06, 0x3b)));
    assert_eq!(cmds.last(), Some(&(0x06, 0x3c)));
}

#[tokio::test]
async fn auto_falls_back_when_17_gets_no_cipher_suite_match() {
    let (addr, _state) = start_fake_bmc(vec![CipherSuite::Suite3]).await;
    let mut bmc = IpmiClient::connect(addr, USER, PASSWORD, IpmiOptions::default())
        .await
        .expect("suite 3 after 17 refused");
    assert_eq!(bmc.cipher_suite(), CipherSuite::Suite3);
    bmc.get_device_id().await.unwrap();
    bmc.close().await.unwrap();
}

#[tokio::test]
async fn suite17_wrong_password_and_unknown_user() {
    let (addr, _state) = start_fake_bmc(vec![CipherSuite::Suite17]).await;
    let opts = IpmiOptions {
        cipher_suite: CipherSuiteChoice::Suite17,
        ..IpmiOptions::default()
    };
    let err = IpmiClient::connect(addr, USER, "hobbes", opts.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            IpmiError::AuthFailed {
                reason: AuthFailure::Rakp2AuthcodeMismatch,
                ..
            }
        ),
        "{err:?}"
    );
    let err = IpmiClient::connect(addr, "admin", PASSWORD, opts)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            IpmiError::AuthFailed {
                reason: AuthFailure::Refused(RakpStatus::UNAUTHORIZED_NAME),
                ..
            }
        ),
        "{err:?}"
    );
}

/// The client's futures must be Send (and the client Send + Sync) so rackboot-power can
/// hold it in a tokio Mutex behind an async trait and spawn work on it.
#[test]
fn client_and_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<IpmiClient>();
    assert_send_sync::<IpmiError>();
    let fut = async {
        let addr: SocketAddr = "127.0.0.1:623".parse().unwrap();
        let mut c = IpmiClient::connect(addr, USER, PASSWORD, IpmiOptions::default()).await?;
        c.chassis_status().await?;
        c.chassis_control(ChassisControl::PowerCycle).await?;
        c.set_boot_device(rackboot_ipmi::BootDevice::Pxe, false, true)
            .await?;
        c.get_boot_device().await?;
        c.get_device_id().await?;
        c.close().await?;
        rackboot_ipmi::presence_ping(addr, &IpmiOptions::default()).await?;
        Ok::<(), IpmiError>(())
    };
    assert_send(&fut);
}
