//! Table tests of the small pure pieces: checksums, names, classifications, flag bytes.

use std::net::SocketAddr;
use std::time::Duration;

use rackboot_ipmi::commands::{BootFlags, ChassisStatus, DeviceId};
use rackboot_ipmi::msg::{IpmiRequest, IpmiResponse, checksum};
use rackboot_ipmi::rmcp::{decode_presence_pong, encode_presence_ping};
use rackboot_ipmi::{
    AuthFailure, BootDevice, BootDeviceSelector, CompletionCode, DecodeError, IpmiError, RakpStatus,
};

#[test]
fn checksums() {
    for (bytes, want) in [
        (&[0x20u8, 0x18][..], 0xc8u8),
        (&[0x81, 0x00, 0x38, 0x8e, 0x04], 0xb5),
        (&[], 0x00),
        (&[0x01], 0xff),
    ] {
        assert_eq!(checksum(bytes), want, "{bytes:02x?}");
    }
}

#[test]
fn request_encoding_and_checksum_errors() {
    let req = IpmiRequest {
        netfn: 0x06,
        cmd: 0x38,
        rq_seq: 0,
        data: vec![0x8e, 0x04],
    };
    // The message ipmitool sends for Get Channel Auth Caps (testdata/cs3-mc-info.txt).
    assert_eq!(
        req.encode(),
        vec![0x20, 0x18, 0xc8, 0x81, 0x00, 0x38, 0x8e, 0x04, 0xb5]
    );
    let mut bad = req.encode();
    bad[2] ^= 1;
    assert!(matches!(
        IpmiRequest::decode(&bad),
        Err(DecodeError::Invalid { .. })
    ));
    let mut bad = req.encode();
    *bad.last_mut().unwrap() ^= 1;
    assert!(IpmiRequest::decode(&bad).is_err());
    assert!(matches!(
        IpmiResponse::decode(&[0x81, 0x1c]),
        Err(DecodeError::Truncated {
            need: 8,
            got: 2,
            ..
        })
    ));
}

#[test]
fn completion_code_names_and_transience() {
    for (code, name, transient) in [
        (0x00, "command completed normally", false),
        (0xc0, "node busy", true),
        (0xc1, "invalid command", false),
        (0xc3, "timeout while processing command", true),
        (0xcc, "invalid data field in request", false),
        (0xd4, "insufficient privilege level", false),
        (
            0xd2,
            "BMC initialization or initialization agent in progress",
            true,
        ),
        (0xff, "unspecified error", true),
        (0x80, "parameter not supported (command-specific)", false),
    ] {
        let cc = CompletionCode(code);
        assert_eq!(cc.name(), name);
        assert_eq!(cc.is_transient(), transient, "{cc}");
    }
    assert_eq!(CompletionCode(0xc1).to_string(), "0xc1 (invalid command)");
}

#[test]
fn rakp_status_classes() {
    for (code, algo, auth) in [
        (0x01, false, false),
        (0x04, true, false),
        (0x05, true, false),
        (0x11, true, false),
        (0x0d, false, true),
        (0x0f, false, true),
        (0x09, false, true),
        (0x12, false, false),
    ] {
        let s = RakpStatus(code);
        assert_eq!(s.is_algorithm_refusal(), algo, "{s}");
        assert_eq!(s.is_auth_refusal(), auth, "{s}");
    }
}

#[test]
fn error_transience() {
    let t: SocketAddr = "127.0.0.1:623".parse().unwrap();
    let cases = [
        (
            IpmiError::Unreachable {
                target: t,
                what: "x",
                attempts: 4,
                timeout: Duration::from_secs(1),
                last_io_error: None,
            },
            true,
        ),
        (
            IpmiError::AuthFailed {
                target: t,
                user: "u".into(),
                reason: AuthFailure::Rakp2AuthcodeMismatch,
            },
            false,
        ),
        (
            IpmiError::Unsupported {
                target: t,
                what: "cipher suite 17".into(),
            },
            false,
        ),
        (
            IpmiError::SessionRefused {
                target: t,
                stage: "Open Session",
                status: RakpStatus::INSUFFICIENT_RESOURCES,
            },
            true,
        ),
        (
            IpmiError::Completion {
                target: t,
                command: "Chassis Control",
                code: CompletionCode::NODE_BUSY,
            },
            true,
        ),
        (
            IpmiError::Completion {
                target: t,
                command: "Chassis Control",
                code: CompletionCode(0xcc),
            },
            false,
        ),
        (
            IpmiError::Protocol {
                target: t,
                what: "x",
                source: DecodeError::Invalid {
                    what: "x",
                    detail: "y".into(),
                },
            },
            false,
        ),
    ];
    for (e, transient) in cases {
        assert_eq!(e.is_transient(), transient, "{e}");
    }
}

#[test]
fn boot_flag_bytes() {
    for (dev, persistent, efi, want) in [
        (BootDevice::Pxe, false, false, [0x80, 0x04, 0, 0, 0]),
        (BootDevice::Pxe, false, true, [0xa0, 0x04, 0, 0, 0]),
        (BootDevice::Pxe, true, true, [0xe0, 0x04, 0, 0, 0]),
        (BootDevice::Disk, true, false, [0xc0, 0x08, 0, 0, 0]),
        (BootDevice::Disk, false, true, [0xa0, 0x08, 0, 0, 0]),
    ] {
        let bytes = BootFlags::encode(dev, persistent, efi);
        assert_eq!(bytes, want);
        let f = BootFlags::decode(&bytes).unwrap();
        assert_eq!((f.persistent, f.efi, f.valid), (persistent, efi, true));
        assert_eq!(f.device.as_boot_device(), Some(dev));
    }
    assert_eq!(
        BootFlags::decode(&[0x80, 0x14, 0, 0, 0]).unwrap().device,
        BootDeviceSelector::CdDvd
    );
    assert!(BootFlags::decode(&[0x80, 0x04, 0, 0]).is_err());
}

#[test]
fn chassis_status_and_device_id_lengths() {
    assert!(ChassisStatus::decode(&[0x01, 0x00]).is_err());
    let s = ChassisStatus::decode(&[0x41, 0x10, 0x00]).unwrap();
    assert!(s.power_on);
    assert_eq!(
        s.restore_policy,
        rackboot_ipmi::PowerRestorePolicy::AlwaysOn
    );
    assert!(DeviceId::decode(&[0; 10]).is_err());
    let id = DeviceId::decode(&[
        0x20, 0x81, 0x02, 0x15, 0x02, 0xbf, 0x57, 0x01, 0x00, 0x34, 0x12,
    ])
    .unwrap();
    assert_eq!(id.manufacturer_id, 0x157);
    assert_eq!(id.product_id, 0x1234);
    assert!(id.provides_sdrs);
    assert_eq!(id.aux_firmware, None);
}

#[test]
fn asf_ping_pong() {
    let ping = encode_presence_ping(0x42);
    assert_eq!(
        ping,
        vec![
            0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x42, 0x00, 0x00
        ]
    );
    // A pong as ipmi_sim sends it: IANA 4542, no OEM, IPMI supported.
    let pong = [
        0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x40, 0x42, 0x00, 0x10, 0x00, 0x00, 0x11,
        0xbe, 0x00, 0x00, 0x00, 0x00, 0x81, 0x00, 0, 0, 0, 0, 0, 0,
    ];
    let p = decode_presence_pong(&pong).unwrap();
    assert_eq!(p.tag, 0x42);
    assert_eq!(p.iana, 4542);
    assert!(p.ipmi_supported());
    assert!(decode_presence_pong(&pong[..15]).is_err());
    assert!(decode_presence_pong(&ping).is_err());
}
