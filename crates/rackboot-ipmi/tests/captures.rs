//! Table tests over real packets captured between ipmitool (lanplus) and ipmi_sim
//! (see testdata/*.txt headers for the exact commands). ipmitool is an independent
//! implementation, so matching its authcodes, keys and byte layout checks ours.

mod capture_util;

use capture_util::*;
use rackboot_ipmi::commands::{
    self, BootFlags, BootOptionResponse, ChannelAuthCapabilities, ChassisStatus, DeviceId,
};
use rackboot_ipmi::msg::{IpmiRequest, IpmiResponse};
use rackboot_ipmi::rakp::{OpenSessionRequest, OpenSessionResponse, Rakp1, Rakp2};
use rackboot_ipmi::rmcp::{RmcpClass, RmcpHeader};
use rackboot_ipmi::session::{PayloadType, decode_v2, decode_v15, encode_v2};
use rackboot_ipmi::{BootDevice, BootDeviceSelector, CipherSuite, CompletionCode, RakpStatus};

const PASSWORD: &str = "secret";

#[test]
fn get_channel_auth_caps_pre_session_v15() {
    let pkts = load("cs3-mc-info");
    let (hdr, rest) = RmcpHeader::decode(&pkts[0].1).unwrap();
    assert_eq!(hdr.class, RmcpClass::Ipmi);
    let s = decode_v15(rest).unwrap();
    assert_eq!((s.auth_type, s.session_id, s.session_seq), (0, 0, 0));
    let req = IpmiRequest::decode(s.message).unwrap();
    assert_eq!((req.netfn, req.cmd), (0x06, 0x38));
    assert_eq!(
        req.data,
        commands::get_channel_auth_caps_request(rackboot_ipmi::Privilege::Administrator)
    );
    // Our encoder produces ipmitool's request byte for byte (same rqSeq).
    assert_eq!(
        rackboot_ipmi::session::encode_v15_unauthenticated(&req.encode()),
        pkts[0].1
    );

    let (_, rest) = RmcpHeader::decode(&pkts[1].1).unwrap();
    let resp = IpmiResponse::decode(decode_v15(rest).unwrap().message).unwrap();
    assert!(resp.answers(&req));
    assert_eq!(resp.completion, CompletionCode::OK);
    let caps = ChannelAuthCapabilities::decode(&resp.data).unwrap();
    assert_eq!(caps.channel, 1);
    assert!(caps.supports_ipmi_v2());
}

#[test]
fn full_suite3_session_replays_with_ipmitool_keys() {
    let r = replay_suite3("cs3-mc-info", PASSWORD);
    // ipmitool's defaults: name-only lookup, administrator.
    assert_eq!(r.ctx.role, 0x14);
    assert_eq!(r.ctx.username, b"admin");
    assert_eq!(r.open_request.auth, 1);
    assert_eq!(r.open_request.integrity, 1);
    assert_eq!(r.open_request.confidentiality, 1);
    let ex = r.exchanges();
    let cmds: Vec<(u8, u8)> = ex.iter().map(|(q, _)| (q.netfn, q.cmd)).collect();
    assert_eq!(
        cmds.first(),
        Some(&(0x06, 0x3b)),
        "Set Session Privilege first"
    );
    assert_eq!(cmds.last(), Some(&(0x06, 0x3c)), "Close Session last");
    assert_eq!(ex[0].0.data, vec![4]);
    assert_eq!(
        commands::decode_set_session_privilege(&ex[0].1.data).unwrap(),
        4
    );
    let (_, dev) = ex
        .iter()
        .find(|(q, _)| (q.netfn, q.cmd) == (0x06, 0x01))
        .expect("Get Device ID in mc info");
    let id = DeviceId::decode(&dev.data).unwrap();
    assert_eq!(id.manufacturer_id, 0x1291);
    assert_eq!(id.product_id, 0x0f02);
    assert_eq!(id.ipmi_version, (2, 0));
    let (close, _) = ex.last().unwrap();
    assert_eq!(
        close.data,
        commands::close_session_request(r.ctx.bmc_session_id)
    );
}

/// Our encoder, given ipmitool's IV and sequence number, reproduces its packets byte
/// for byte (confidentiality pad 1,2,3.., integrity pad 0xff, pad length, next header,
/// HMAC-SHA1-96), and the same for ipmi_sim's replies.
#[test]
fn encoder_reproduces_captured_session_packets() {
    for name in [
        "cs3-mc-info",
        "cs3-chassis",
        "cs3-power-on",
        "cs3-bootdev-pxe-efi",
    ] {
        let r = replay_suite3(name, PASSWORD);
        for m in &r.messages {
            let (dir, raw, seq, iv) = (m.dir, &m.raw, m.session_seq, m.iv);
            let (sid, clear) = match (dir, &m.clear) {
                (Dir::ToBmc, Clear::Request(q)) => (r.ctx.bmc_session_id, q.encode()),
                (Dir::FromBmc, Clear::Response(p)) => (r.ctx.console_session_id, p.encode()),
                _ => unreachable!(),
            };
            let ours = encode_v2(PayloadType::Ipmi, sid, seq, &clear, Some((&r.security, iv)));
            assert_eq!(&ours, raw, "{name} seq {seq} {dir:?}");
        }
    }
}

#[test]
fn open_session_and_rakp1_encoders_match_ipmitool() {
    let pkts = load("cs3-mc-info");
    let p = decode_v2(&pkts[2].1, 0).unwrap();
    let req = OpenSessionRequest::decode(p.payload).unwrap();
    let ours = OpenSessionRequest::for_suite(
        req.tag,
        req.max_privilege,
        req.console_session_id,
        CipherSuite::Suite3,
    );
    assert_eq!(
        encode_v2(PayloadType::OpenSessionRequest, 0, 0, &ours.encode(), None),
        pkts[2].1
    );
    let p = decode_v2(&pkts[4].1, 0).unwrap();
    let rakp1 = Rakp1::decode(p.payload).unwrap();
    assert_eq!(
        encode_v2(PayloadType::Rakp1, 0, 0, &rakp1.encode(), None),
        pkts[4].1
    );
    let p = decode_v2(&pkts[3].1, 0).unwrap();
    let resp = OpenSessionResponse::decode(p.payload).unwrap();
    assert_eq!(resp.encode(), p.payload);
}

#[test]
fn chassis_status_power_on() {
    let r = replay_suite3("cs3-chassis", PASSWORD);
    let ex = r.exchanges();
    let (_, resp) = ex
        .iter()
        .find(|(q, _)| (q.netfn, q.cmd) == (0x00, 0x01))
        .expect("Get Chassis Status");
    let st = ChassisStatus::decode(&resp.data).unwrap();
    assert!(st.power_on);
    assert!(!st.power_fault);
}

#[test]
fn chassis_power_on_request() {
    let r = replay_suite3("cs3-power-on", PASSWORD);
    let ex = r.exchanges();
    let (req, resp) = ex
        .iter()
        .find(|(q, _)| (q.netfn, q.cmd) == (0x00, 0x02))
        .expect("Chassis Control");
    assert_eq!(
        req.data,
        vec![rackboot_ipmi::ChassisControl::PowerUp.code()]
    );
    assert_eq!(resp.completion, CompletionCode::OK);
}

#[test]
fn bootdev_pxe_efi_sequence_and_flags() {
    let r = replay_suite3("cs3-bootdev-pxe-efi", PASSWORD);
    let sets: Vec<(Vec<u8>, CompletionCode)> = r
        .exchanges()
        .iter()
        .filter(|(q, _)| (q.netfn, q.cmd) == (0x00, 0x08))
        .map(|(q, p)| (q.data.clone(), p.completion))
        .collect();
    // ipmitool: set-in-progress (ipmi_sim refuses with 0xcc, so no set-complete later),
    // boot info acknowledge, boot flags: the same sequence IpmiClient::set_boot_device sends.
    assert_eq!(
        sets,
        vec![
            (vec![0, 1], CompletionCode(0xcc)),
            (vec![4, 1, 1], CompletionCode::OK),
            (vec![5, 0xa0, 0x04, 0, 0, 0], CompletionCode::OK),
        ]
    );
    let flags = sets
        .iter()
        .find(|(d, _)| d[0] == commands::BOOT_PARAM_BOOT_FLAGS)
        .expect("boot flags write");
    assert_eq!(flags.1, CompletionCode::OK);
    // ipmitool's `bootdev pxe options=efiboot` is what we send for (Pxe, next boot, EFI).
    assert_eq!(
        &flags.0[1..],
        &BootFlags::encode(BootDevice::Pxe, false, true)
    );
    let decoded = BootFlags::decode(&flags.0[1..]).unwrap();
    assert!(decoded.valid && decoded.efi && !decoded.persistent);
    assert_eq!(decoded.device, BootDeviceSelector::Pxe);
}

#[test]
fn bootparam_get5_response() {
    let r = replay_suite3("cs3-bootparam-get5", PASSWORD);
    let ex = r.exchanges();
    let (req, resp) = ex
        .iter()
        .find(|(q, _)| (q.netfn, q.cmd) == (0x00, 0x09))
        .expect("Get System Boot Options");
    assert_eq!(req.data, commands::get_boot_option_request(5));
    let opt = BootOptionResponse::decode(&resp.data).unwrap();
    assert_eq!((opt.version, opt.param, opt.invalid), (1, 5, false));
    let flags = BootFlags::decode(&opt.data).unwrap();
    // ipmitool printed "Boot parameter data: 0004000000": PXE, flags byte not kept by ipmi_sim.
    assert_eq!(flags.raw, [0x00, 0x04, 0, 0, 0]);
    assert_eq!(flags.device, BootDeviceSelector::Pxe);
    assert!(!flags.valid);
}

#[test]
fn suite17_request_refused_by_ipmi_sim() {
    let pkts = load("cs17-refused");
    let p = decode_v2(&pkts[2].1, 0).unwrap();
    let req = OpenSessionRequest::decode(p.payload).unwrap();
    // ipmitool -C 17 proposes exactly our suite 17 algorithm ids.
    assert_eq!(
        req,
        OpenSessionRequest::for_suite(
            req.tag,
            req.max_privilege,
            req.console_session_id,
            CipherSuite::Suite17
        )
    );
    let p = decode_v2(&pkts[3].1, 0).unwrap();
    let resp = OpenSessionResponse::decode(p.payload).unwrap();
    assert_eq!(resp.status, RakpStatus::INVALID_AUTH_ALGORITHM);
    assert!(resp.status.is_algorithm_refusal());
    assert!(resp.accepted.is_none());
}

#[test]
fn wrong_password_rakp2_authcode_mismatch() {
    let pkts = load("wrong-password");
    let open_req = OpenSessionRequest::decode(decode_v2(&pkts[2].1, 0).unwrap().payload).unwrap();
    let open = OpenSessionResponse::decode(decode_v2(&pkts[3].1, 0).unwrap().payload).unwrap();
    let rakp1 = Rakp1::decode(decode_v2(&pkts[4].1, 0).unwrap().payload).unwrap();
    let rakp2 = Rakp2::decode(decode_v2(&pkts[5].1, 0).unwrap().payload).unwrap();
    assert_eq!(
        rakp2.status,
        RakpStatus::OK,
        "ipmi_sim answers OK; the authcode gives it away"
    );
    let body = rakp2.body.unwrap();
    let ctx = rackboot_ipmi::rakp::RakpContext {
        auth: rackboot_ipmi::crypto::AuthAlgorithm::HmacSha1,
        console_session_id: open_req.console_session_id,
        bmc_session_id: open.accepted.unwrap().bmc_session_id,
        console_random: rakp1.console_random,
        bmc_random: body.bmc_random,
        bmc_guid: body.bmc_guid,
        role: rakp1.role,
        username: rakp1.username,
    };
    assert_ne!(ctx.rakp2_authcode(b"wrong"), body.authcode);
    assert_eq!(ctx.rakp2_authcode(PASSWORD.as_bytes()), body.authcode);
}

#[test]
fn unknown_user_rakp2_unauthorized_name() {
    let pkts = load("unknown-user");
    let rakp1 = Rakp1::decode(decode_v2(&pkts[4].1, 0).unwrap().payload).unwrap();
    assert_eq!(rakp1.username, b"nobody");
    let rakp2 = Rakp2::decode(decode_v2(&pkts[5].1, 0).unwrap().payload).unwrap();
    assert_eq!(rakp2.status, RakpStatus::UNAUTHORIZED_NAME);
    assert!(rakp2.status.is_auth_refusal());
    assert_eq!(rakp2.status.name(), "unauthorized name");
}
