use super::*;

/// One captured UDP payload (testdata/dhcp6, see capture.sh there).
fn capture(hex: &str) -> Vec<u8> {
    let digits: String = hex.split_whitespace().collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

macro_rules! testdata {
    ($name:literal) => {
        capture(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/dhcp6/",
            $name,
            ".hex"
        )))
    };
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

const DHCLIENT_DUID: &[u8] = &[
    0, 1, 0, 1, 0x32, 0xa9, 0x58, 0x42, 0x52, 0x54, 0, 0x66, 0, 1,
];
const KEA_DUID: &[u8] = &[0, 3, 0, 1, 0xfa, 0x2a, 0xbb, 0xa9, 0x7d, 0x58];
const CLIENT_LL: &str = "fe80::5054:ff:fe66:1";

/// Real client messages: what each says, as the server needs it.
#[test]
fn captured_client_messages() {
    struct Want {
        kind: MessageType,
        xid: [u8; 3],
        server_id: Option<&'static [u8]>,
        ia: Option<(u32, Option<&'static str>)>,
        oro: &'static [u16],
        rapid_commit: bool,
    }
    use MessageType::*;
    let leased = Some("2001:db8:77::100");
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        (
            "dhclient solicit",
            testdata!("01-dhclient-solicit"),
            Want {
                kind: Solicit,
                xid: [0xa1, 0x05, 0x3e],
                server_id: None,
                ia: Some((0x0066_0001, None)),
                oro: &[23, 24, 39, 31],
                rapid_commit: false,
            },
        ),
        (
            "dhclient request",
            testdata!("03-dhclient-request"),
            Want {
                kind: Request,
                xid: [0xe1, 0xeb, 0xe1],
                server_id: Some(KEA_DUID),
                ia: Some((0x0066_0001, leased)),
                oro: &[23, 24, 39, 31],
                rapid_commit: false,
            },
        ),
        (
            "dhclient renew",
            testdata!("05-dhclient-renew"),
            Want {
                kind: Renew,
                xid: [0xcb, 0xa7, 0x0f],
                server_id: Some(KEA_DUID),
                ia: Some((0x0066_0001, leased)),
                oro: &[23, 24, 39, 31],
                rapid_commit: false,
            },
        ),
        (
            "dhclient confirm",
            testdata!("07-dhclient-confirm"),
            Want {
                kind: Confirm,
                xid: [0xfd, 0x0b, 0x88],
                server_id: None,
                ia: Some((0x0066_0001, leased)),
                oro: &[23, 24, 39, 31],
                rapid_commit: false,
            },
        ),
        (
            "dhclient release",
            testdata!("13-dhclient-release"),
            Want {
                kind: Release,
                xid: [0xe8, 0xb8, 0x7a],
                server_id: Some(KEA_DUID),
                ia: Some((0x0066_0001, leased)),
                oro: &[23, 24, 39, 31],
                rapid_commit: false,
            },
        ),
        (
            "dhclient -S information-request",
            testdata!("15-dhclient-stateless-information-request"),
            Want {
                kind: InformationRequest,
                xid: [0x7b, 0x23, 0xc6],
                server_id: None,
                ia: None,
                oro: &[23, 24, 39, 31],
                rapid_commit: false,
            },
        ),
        (
            "dhcpcd solicit",
            testdata!("17-dhcpcd-solicit"),
            Want {
                kind: Solicit,
                xid: [0x19, 0xb8, 0x2a],
                server_id: None,
                ia: Some((1, None)),
                oro: &[82, 83],
                rapid_commit: false,
            },
        ),
        (
            "dhcpcd request",
            testdata!("19-dhcpcd-request"),
            Want {
                kind: Request,
                xid: [0x24, 0x1e, 0x31],
                server_id: Some(KEA_DUID),
                ia: Some((1, Some("2001:db8:77::101"))),
                oro: &[82, 83],
                rapid_commit: false,
            },
        ),
        (
            "perfdhcp solicit",
            testdata!("21-perfdhcp-solicit"),
            Want {
                kind: Solicit,
                xid: [0, 0, 0],
                server_id: None,
                ia: Some((1, None)),
                oro: &[23, 24],
                rapid_commit: false,
            },
        ),
        (
            "perfdhcp request",
            testdata!("23-perfdhcp-request"),
            Want {
                kind: Request,
                xid: [0, 0, 1],
                server_id: Some(KEA_DUID),
                ia: Some((1, Some("2001:db8:77::102"))),
                oro: &[],
                rapid_commit: false,
            },
        ),
        (
            "perfdhcp rapid-commit solicit",
            testdata!("27-perfdhcp-rapid-solicit"),
            Want {
                kind: Solicit,
                xid: [0, 0, 0],
                server_id: None,
                ia: Some((1, None)),
                oro: &[23, 24],
                rapid_commit: true,
            },
        ),
    ];
    for (name, bytes, want) in cases {
        let req = parse_request(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(req.kind, want.kind, "{name}");
        assert_eq!(req.xid, want.xid, "{name}");
        assert!(req.client_id.is_some(), "{name}");
        assert_eq!(req.server_id.as_deref(), want.server_id, "{name}");
        let ia = req
            .ia_na
            .first()
            .map(|ia| (ia.iaid, ia.addrs.first().map(|a| a.addr)));
        assert_eq!(ia, want.ia.map(|(id, a)| (id, a.map(ip))), "{name}");
        assert_eq!(req.oro, want.oro, "{name}");
        assert_eq!(req.rapid_commit, want.rapid_commit, "{name}");
        assert!(!req.is_relayed(), "{name}");
        assert_eq!(classify(&req), None, "{name}: not a boot client");
    }
}

#[test]
fn client_mac_from_duid_or_link_local() {
    let solicit = parse_request(&testdata!("01-dhclient-solicit")).unwrap();
    assert_eq!(solicit.client_id.as_deref(), Some(DHCLIENT_DUID));
    // DUID-LLT carries the MAC.
    assert_eq!(
        solicit.mac(Ipv6Addr::UNSPECIFIED),
        Some(mac("52:54:00:66:00:01"))
    );
    // DUID-LL (dhclient -S).
    let info = parse_request(&testdata!("15-dhclient-stateless-information-request")).unwrap();
    assert_eq!(
        info.mac(Ipv6Addr::UNSPECIFIED),
        Some(mac("52:54:00:66:00:01"))
    );
    // A DUID-UUID: only the EUI-64 link-local source tells the MAC.
    let mut uuid_client = solicit.clone();
    let mut duid = vec![0, 4];
    duid.extend_from_slice(&[0x11; 16]);
    uuid_client.client_id = Some(duid);
    assert_eq!(
        uuid_client.mac(ip(CLIENT_LL)),
        Some(mac("52:54:00:66:00:01"))
    );
    assert_eq!(
        uuid_client.mac(ip("fe80::1234:5678:9abc:def0")),
        None,
        "not EUI-64"
    );
    assert_eq!(
        uuid_client.mac(ip("2001:db8::5054:ff:fe66:1")),
        None,
        "not link-local"
    );
}

#[test]
fn duid_helpers() {
    assert_eq!(duid_mac(DHCLIENT_DUID), Some(mac("52:54:00:66:00:01")));
    assert_eq!(duid_mac(KEA_DUID), Some(mac("fa:2a:bb:a9:7d:58")));
    assert_eq!(duid_mac(&KEA_DUID[..9]), None, "short");
    assert_eq!(
        duid_mac(&[0, 3, 0, 6, 1, 2, 3, 4, 5, 6]),
        None,
        "not Ethernet"
    );
    assert_eq!(duid_ll(mac("fa:2a:bb:a9:7d:58")), KEA_DUID);
    let mut duid = vec![0, 4];
    duid.extend_from_slice(&[
        0x21, 0x43, 0x65, 0x87, 0x21, 0x43, 0xcd, 0xab, 0xef, 0x01, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ]);
    assert_eq!(
        duid_uuid(&duid),
        Some("87654321-4321-abcd-ef01-0a0b0c0d0e0f".parse().unwrap())
    );
    assert_eq!(duid_uuid(DHCLIENT_DUID), None);
}

/// Malformed and misdirected messages are errors naming the problem.
#[test]
fn malformed_messages() {
    let solicit = testdata!("01-dhclient-solicit");
    let request = testdata!("03-dhclient-request");
    let advertise = testdata!("02-kea-to-dhclient-advertise");
    let mut long_option = solicit.clone();
    long_option[7] = 0xff; // client id length 255: past the end
    let mut odd_oro = solicit.clone();
    // ORO starts at byte 4 + 18 (client id); make its length 7 and drop a byte.
    assert_eq!(&odd_oro[22..24], &[0, 6]);
    odd_oro[25] = 7;
    odd_oro.remove(30);
    let mut with_server_id = solicit.clone();
    with_server_id.extend_from_slice(&[0, 2, 0, 10]);
    with_server_id.extend_from_slice(KEA_DUID);
    let mut two_client_ids = solicit.clone();
    two_client_ids.extend_from_slice(&solicit[4..22]);
    // A Request without its server id: drop option 2 (14 bytes after the client id).
    let mut no_server_id = request.clone();
    no_server_id.drain(22..36);
    let mut no_client_id = solicit.clone();
    no_client_id.drain(4..22);
    let mut short_ia = solicit.clone();
    let ia_at = solicit.len() - 16;
    assert_eq!(&short_ia[ia_at..ia_at + 4], &[0, 3, 0, 12]);
    short_ia[ia_at + 3] = 8;
    short_ia.truncate(ia_at + 12);
    let relay_without_msg = relay_forward(
        &RelayHop {
            hop_count: 0,
            link_addr: ip("2001:db8:1::1"),
            peer_addr: ip(CLIENT_LL),
            interface_id: None,
            client_link_addr: None,
        },
        &[],
    );
    let mut relay_without_msg = relay_without_msg;
    relay_without_msg.truncate(34);
    let mut deep = solicit.clone();
    for _ in 0..10 {
        deep = relay_forward(
            &RelayHop {
                hop_count: 0,
                link_addr: Ipv6Addr::UNSPECIFIED,
                peer_addr: ip(CLIENT_LL),
                interface_id: None,
                client_link_addr: None,
            },
            &deep,
        );
    }
    let cases: Vec<(&str, Vec<u8>, Dhcp6Error)> = vec![
        ("empty", vec![], Dhcp6Error::Truncated(0)),
        (
            "header only part",
            solicit[..3].to_vec(),
            Dhcp6Error::Truncated(3),
        ),
        ("type 0", vec![0, 1, 2, 3], Dhcp6Error::UnknownType(0)),
        ("type 200", vec![200, 1, 2, 3], Dhcp6Error::UnknownType(200)),
        (
            "a server's advertise",
            advertise,
            Dhcp6Error::NotClientMessage("advertise"),
        ),
        (
            "option past the end",
            long_option,
            Dhcp6Error::OptionOverrun(0),
        ),
        (
            "half an option header",
            solicit[..6].to_vec(),
            Dhcp6Error::OptionOverrun(0),
        ),
        (
            "odd ORO",
            odd_oro,
            Dhcp6Error::BadOptionLength { code: 6, len: 7 },
        ),
        (
            "solicit with server id",
            with_server_id,
            Dhcp6Error::UnexpectedServerId("solicit"),
        ),
        (
            "two client ids",
            two_client_ids,
            Dhcp6Error::DuplicateOption(1),
        ),
        (
            "request without server id",
            no_server_id,
            Dhcp6Error::MissingServerId("request"),
        ),
        (
            "solicit without client id",
            no_client_id,
            Dhcp6Error::MissingClientId("solicit"),
        ),
        (
            "IA_NA of 8 bytes",
            short_ia,
            Dhcp6Error::BadOptionLength { code: 3, len: 8 },
        ),
        (
            "relay without message",
            relay_without_msg,
            Dhcp6Error::RelayWithoutMessage,
        ),
        ("ten relays", deep, Dhcp6Error::RelayTooDeep),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(parse_request(&bytes), Err(want), "{name}");
    }
}

/// Every prefix of every captured message parses or fails; none panics.
#[test]
fn truncations_never_panic() {
    for bytes in [
        testdata!("03-dhclient-request"),
        testdata!("19-dhcpcd-request"),
        testdata!("27-perfdhcp-rapid-solicit"),
    ] {
        for n in 0..bytes.len() {
            let _ = parse_request(&bytes[..n]);
        }
        let relayed = relay_forward(
            &RelayHop {
                hop_count: 0,
                link_addr: ip("2001:db8:1::1"),
                peer_addr: ip(CLIENT_LL),
                interface_id: Some(b"eth0".to_vec()),
                client_link_addr: Some((1, vec![0x52, 0x54, 0, 0x66, 0, 1])),
            },
            &bytes,
        );
        for n in 0..relayed.len() {
            let _ = parse_request(&relayed[..n]);
        }
    }
}

/// A relayed Solicit: hops outermost first, the client's MAC from option 79,
/// and the reply wrapped back with each relay's Interface-Id.
#[test]
fn relayed_request_and_reply() {
    let solicit = testdata!("21-perfdhcp-solicit");
    let inner_hop = RelayHop {
        hop_count: 0,
        link_addr: ip("2001:db8:1::1"),
        peer_addr: ip("fe80::1234:5678:9abc:def0"),
        interface_id: Some(b"port7".to_vec()),
        client_link_addr: Some((1, vec![0x52, 0x54, 0, 0xaa, 0, 7])),
    };
    let outer_hop = RelayHop {
        hop_count: 1,
        link_addr: Ipv6Addr::UNSPECIFIED,
        peer_addr: ip("2001:db8:1::1"),
        interface_id: None,
        client_link_addr: None,
    };
    let bytes = relay_forward(&outer_hop, &relay_forward(&inner_hop, &solicit));
    let req = parse_request(&bytes).unwrap();
    assert_eq!(req.kind, MessageType::Solicit);
    assert_eq!(req.relays, vec![outer_hop.clone(), inner_hop.clone()]);
    assert_eq!(req.first_relay(), Some(&inner_hop));
    // Option 79 beats perfdhcp's DUID-LLT MAC (00:0c:01:02:03:04).
    assert_eq!(req.mac(ip("2001:db8:1::1")), Some(mac("52:54:00:aa:00:07")));

    let mut reply = MessageBuilder::new(MessageType::Advertise, req.xid);
    reply.option(code::SERVERID, KEA_DUID);
    let reply = reply.finish();
    let wrapped = wrap_relay_reply(&req.relays, reply.clone());
    // Unwrap by hand: outer Relay-Reply, hop 1, no Interface-Id.
    assert_eq!(wrapped[0], 13);
    assert_eq!(wrapped[1], 1);
    let outer = parse_options(&wrapped[34..]).unwrap();
    assert_eq!(outer.len(), 1);
    assert_eq!(outer[0].code, code::RELAY_MSG);
    let inner = outer[0].data;
    assert_eq!(inner[0], 13);
    assert_eq!(&inner[2..18], &ip("2001:db8:1::1").octets());
    assert_eq!(&inner[18..34], &ip("fe80::1234:5678:9abc:def0").octets());
    let inner_opts = parse_options(&inner[34..]).unwrap();
    assert_eq!(
        inner_opts,
        vec![
            RawOption {
                code: code::INTERFACE_ID,
                data: b"port7"
            },
            RawOption {
                code: code::RELAY_MSG,
                data: &reply
            },
        ]
    );
}

/// Kea's replies, read with the same option parser: what the tests of the server
/// read from rackboot's replies.
#[test]
fn kea_replies_parse() {
    let reply = testdata!("04-kea-to-dhclient-reply");
    assert_eq!(reply[0], MessageType::Reply.code());
    let opts = parse_options(&reply[4..]).unwrap();
    let ia = opts.iter().find(|o| o.code == code::IA_NA).unwrap();
    let ia = parse_ia_na(ia.data).unwrap();
    assert_eq!(ia.iaid, 0x0066_0001);
    assert_eq!((ia.t1, ia.t2), (3, 5));
    assert_eq!(
        ia.addrs,
        vec![IaAddr {
            addr: ip("2001:db8:77::100"),
            preferred: 8,
            valid: 10
        }]
    );
    // Kea sends the configured boot file URL only to clients that ask for it
    // (ORO); dhclient does not.
    assert!(opts.iter().all(|o| o.code != code::BOOTFILE_URL));
    // The Confirm reply: a status code of Success.
    let confirm = testdata!("08-kea-to-dhclient-reply");
    let opts = parse_options(&confirm[4..]).unwrap();
    let status = opts.iter().find(|o| o.code == code::STATUS_CODE).unwrap();
    assert_eq!(parse_status(status.data).unwrap().0, Status::Success as u16);
}

#[test]
fn builder_writes_what_the_parser_reads() {
    let ia = IaNa {
        iaid: 7,
        t1: 1800,
        t2: 2880,
        addrs: vec![IaAddr {
            addr: ip("2001:db8:77::100"),
            preferred: 3600,
            valid: 7200,
        }],
        status: None,
    };
    let mut b = MessageBuilder::new(MessageType::Reply, [1, 2, 3]);
    b.option(code::SERVERID, KEA_DUID)
        .ia_na(&ia, None)
        .ia_na(
            &IaNa {
                iaid: 8,
                t1: 0,
                t2: 0,
                addrs: vec![],
                status: None,
            },
            Some((Status::NoAddrsAvail, "no addresses")),
        )
        .bootfile_url("http://[2001:db8:77::1]:8080/boot/ipxe/52:54:00:66:00:01")
        .bootfile_params(&["a".into(), "bc".into()])
        .addresses(code::DNS_SERVERS, &[ip("2001:db8::53")])
        .status(Status::Success, "");
    let bytes = b.finish();
    assert_eq!(&bytes[..4], &[7, 1, 2, 3]);
    let opts = parse_options(&bytes[4..]).unwrap();
    let codes: Vec<u16> = opts.iter().map(|o| o.code).collect();
    assert_eq!(codes, vec![2, 3, 3, 59, 60, 23, 13]);
    assert_eq!(parse_ia_na(opts[1].data).unwrap(), ia);
    let empty = parse_ia_na(opts[2].data).unwrap();
    assert_eq!(
        (empty.iaid, empty.status),
        (8, Some(Status::NoAddrsAvail as u16))
    );
    assert_eq!(opts[4].data, &[0, 1, b'a', 0, 2, b'b', b'c']);
    assert_eq!(opts[5].data, &ip("2001:db8::53").octets());
    assert_eq!(opts[6].data, &[0, 0]);
}

/// Boot clients: option 61, user class iPXE, HTTPClient vendor class, DUID-UUID.
#[test]
fn classify_boot_clients() {
    let base = parse_request(&testdata!("01-dhclient-solicit")).unwrap();
    let mut uefi = base.clone();
    uefi.client_arch = vec![7];
    uefi.nii = Some([1, 3, 16]);
    let mut duid = vec![0, 4];
    duid.extend_from_slice(&[0x11; 16]);
    uefi.client_id = Some(duid);
    let got = classify(&uefi).unwrap();
    assert_eq!(got.arch, Arch::UefiX64);
    assert!(!got.ipxe && !got.http_boot);
    assert_eq!(got.undi, Some((3, 16)));
    assert_eq!(got.uuid, Some(uuid::Uuid::from_bytes([0x11; 16])));

    let mut ipxe = base.clone();
    ipxe.user_class = vec![b"iPXE".to_vec()];
    ipxe.client_arch = vec![7];
    let got = classify(&ipxe).unwrap();
    assert!(got.ipxe);
    assert_eq!(got.arch, Arch::UefiX64);

    let mut http = base.clone();
    http.client_arch = vec![16];
    http.vendor_class = Some(VendorClass {
        enterprise: 343,
        data: vec![b"HTTPClient:Arch:00016".to_vec()],
    });
    let got = classify(&http).unwrap();
    assert!(got.http_boot);
    assert_eq!(got.arch, Arch::UefiX64);

    let mut bios = base.clone();
    bios.vendor_class = Some(VendorClass {
        enterprise: 343,
        data: vec![b"PXEClient:Arch:00000".to_vec()],
    });
    assert_eq!(classify(&bios).unwrap().arch, Arch::Bios);

    assert_eq!(classify(&base), None);
}

#[test]
fn link_local_eui64() {
    assert_eq!(
        mac_from_link_local(ip(CLIENT_LL)),
        Some(mac("52:54:00:66:00:01"))
    );
    assert_eq!(
        mac_from_link_local(ip("fe80::f82a:bbff:fea9:7d58")),
        Some(mac("fa:2a:bb:a9:7d:58"))
    );
    assert_eq!(mac_from_link_local(ip("fe80::1")), None);
}

/// OVMF's IPv6 PXE (EDK2 UefiPxeBcDxe), QEMU -uuid 87654321-4321-abcd-ef01-0a0b0c0d0e0f,
/// MAC 52:54:00:bb:00:02 (capture-ovmf.sh).
#[test]
fn ovmf_pxe_solicit() {
    let req = parse_request(&testdata!("29-ovmf-pxe-solicit")).unwrap();
    assert_eq!(req.kind, MessageType::Solicit);
    assert_eq!(req.oro, vec![59, 60, 23, 16]);
    assert_eq!(req.ia_na.len(), 1);
    assert_eq!((req.ia_na[0].t1, req.ia_na[0].t2), (u32::MAX, u32::MAX));
    assert_eq!(req.client_arch, vec![7]);
    assert_eq!(req.nii, Some([1, 3, 1]));
    let vendor = req.vendor_class.as_ref().unwrap();
    assert_eq!(vendor.enterprise, 343);
    assert_eq!(
        vendor.data,
        vec![b"PXEClient:Arch:00007:UNDI:003001".to_vec()]
    );
    let client = classify(&req).unwrap();
    assert_eq!(
        client,
        PxeClient {
            arch: Arch::UefiX64,
            http_boot: false,
            ipxe: false,
            uuid: Some("87654321-4321-abcd-ef01-0a0b0c0d0e0f".parse().unwrap()),
            undi: Some((3, 1)),
        }
    );
    // DUID-UUID: the MAC comes from the EUI-64 link-local source.
    assert_eq!(
        req.mac(ip("fe80::5054:ff:febb:2")),
        Some(mac("52:54:00:bb:00:02"))
    );
}
