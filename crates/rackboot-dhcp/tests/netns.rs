//! The server against real clients (dhclient, udhcpc) and crafted packets, over a
//! veth pair between two network namespaces this test creates and deletes.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dhcproto::v4::{DhcpOption, Flags, MessageType, OptionCode};
use rackboot_core::{EventKind, LeaseState};
use rackboot_store::{SqliteStore, Store};
use rackboot_wire::dhcp::{file_field, message_type, option_bytes};

const BCAST: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::BROADCAST), 67);

async fn sqlite(lab: &Lab) -> Arc<dyn Store> {
    Arc::new(
        SqliteStore::open_file(&lab.dir.path().join("leases.db"))
            .await
            .unwrap(),
    )
}

/// Collects events seen so far.
fn drain(
    events: &mut tokio::sync::broadcast::Receiver<rackboot_core::Event>,
) -> Vec<rackboot_core::Event> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        out.push(e);
    }
    out
}

/// Collects events until `done` holds for those seen, or 10 s; returns them.
/// Events reach the channel through the hub's task, after the packet.
async fn events_until(
    events: &mut tokio::sync::broadcast::Receiver<rackboot_core::Event>,
    done: impl Fn(&[rackboot_core::Event]) -> bool,
) -> Vec<rackboot_core::Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        seen.extend(drain(events));
        if done(&seen) || tokio::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dhclient_gets_a_lease_and_renews_it() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let lab = Lab::new();
    let store = sqlite(&lab).await;
    let mut server = start(
        lab.server_sockets(false, false),
        config(10, ""),
        store.clone(),
    );

    let dir = lab.dir.path();
    let log = dir.join("dhclient.log");
    let script = dir.join("script.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$reason $new_ip_address $new_domain_name $new_routers $new_dhcp_lease_time\" >> {}\n\
             case \"$reason\" in BOUND|RENEW|REBIND|REBOOT) ip addr replace \"$new_ip_address/24\" dev \"$interface\";; esac\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let stderr = std::fs::File::create(dir.join("dhclient.stderr")).unwrap();
    let _dhclient = Child(
        lab.client_cmd("dhclient")
            .args(["-4", "-d", "-v", "-sf"])
            .arg(&script)
            .arg("-lf")
            .arg(dir.join("lease"))
            .arg("-pf")
            .arg(dir.join("pid"))
            .arg(&lab.client_if)
            .stderr(stderr)
            .spawn()
            .expect("dhclient"),
    );
    let text = wait_for_file(&log, "BOUND 10.99.0.100 lab.test 10.99.0.1 10", 20).await;
    assert!(text.contains("PREINIT"), "{text}");
    // Lease 10 s, T1 5 s: dhclient renews by unicast.
    wait_for_file(&log, "RENEW 10.99.0.100", 20).await;

    let leases = store.list_leases().await.unwrap();
    let l = leases
        .iter()
        .find(|l| l.ip == Ipv4Addr::new(10, 99, 0, 100))
        .expect("lease stored");
    assert_eq!(l.state, LeaseState::Bound);
    assert_eq!(l.subnet, "local");
    let kinds: Vec<EventKind> = events_until(&mut server.events, |e| {
        e.iter().any(|e| e.kind == EventKind::LeaseOffered)
            && e.iter().filter(|e| e.kind == EventKind::LeaseAcked).count() >= 2
    })
    .await
    .into_iter()
    .map(|e| e.kind)
    .collect();
    assert!(kinds.contains(&EventKind::LeaseOffered), "{kinds:?}");
    assert!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::LeaseAcked)
            .count()
            >= 2,
        "{kinds:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn udhcpc_gets_a_lease() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let lab = Lab::new();
    let store = sqlite(&lab).await;
    let server = start(
        lab.server_sockets(false, false),
        config(3600, ""),
        store.clone(),
    );
    let log = lab.dir.path().join("udhcpc.log");
    let script = lab.dir.path().join("udhcpc.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 $ip $subnet $router $dns $domain $lease\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = lab.client_cmd("udhcpc");
    cmd.args([
        "-i",
        &lab.client_if,
        "-f",
        "-q",
        "-n",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
    ])
    .arg(&script);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "udhcpc failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("bound 10.99.0.100 255.255.255.0 10.99.0.1 10.99.0.1 lab.test 3600"),
        "{text}"
    );
    assert_eq!(
        store.list_leases().await.unwrap()[0].state,
        LeaseState::Bound
    );
    server.stop().await;
}

fn mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, n]
}

fn send_recv(
    sock: &UdpSocket,
    to: SocketAddr,
    bytes: Vec<u8>,
    xid: u32,
) -> Option<dhcproto::v4::Message> {
    sock.send_to(&bytes, to).unwrap();
    recv_reply(sock, xid).map(|(m, _)| m)
}

/// DORA with crafted packets; returns the ACKed address.
fn dora(sock: &UdpSocket, n: u8) -> Ipv4Addr {
    let xid = 0x1000 + u32::from(n);
    let d = packet(MessageType::Discover, mac(n), |m| {
        m.set_xid(xid);
    });
    let offer = send_recv(sock, BCAST, d, xid).expect("offer");
    assert_eq!(message_type(&offer), Some(MessageType::Offer));
    let ip = offer.yiaddr();
    let r = packet(MessageType::Request, mac(n), |m| {
        m.set_xid(xid);
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
    });
    let ack = send_recv(sock, BCAST, r, xid).expect("ack");
    assert_eq!(message_type(&ack), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), ip);
    ip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nak_decline_relay_and_restart() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let lab = Lab::new();
    let store = sqlite(&lab).await;
    let mut server = start(
        lab.server_sockets(false, false),
        config(3600, ""),
        store.clone(),
    );
    let sock = lab.client_socket(68);

    let s = sock.try_clone().unwrap();
    let (rt, st) = (tokio::runtime::Handle::current(), store.clone());
    let _declined = tokio::task::spawn_blocking(move || {
        // INIT-REBOOT for an address from another network: NAK, broadcast.
        let r = packet(MessageType::Request, mac(1), |m| {
            m.set_xid(1);
            m.opts_mut()
                .insert(DhcpOption::RequestedIpAddress([192, 168, 1, 5].into()));
        });
        let nak = send_recv(&s, BCAST, r, 1).expect("nak");
        assert_eq!(message_type(&nak), Some(MessageType::Nak));
        assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            option_bytes(&nak, 56),
            Some(b"address is not on this network".to_vec())
        );

        // SELECTING our server for an address never offered: NAK.
        let r = packet(MessageType::Request, mac(2), |m| {
            m.set_xid(2);
            m.opts_mut()
                .insert(DhcpOption::RequestedIpAddress([10, 99, 0, 115].into()));
            m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
        });
        assert_eq!(
            message_type(&send_recv(&s, BCAST, r, 2).expect("nak")),
            Some(MessageType::Nak)
        );

        // SELECTING another server: silence.
        let r = packet(MessageType::Request, mac(3), |m| {
            m.set_xid(3);
            m.opts_mut()
                .insert(DhcpOption::RequestedIpAddress([10, 99, 0, 115].into()));
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier([10, 99, 0, 7].into()));
        });
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        assert!(
            send_recv(&s, BCAST, r, 3).is_none(),
            "request for another server answered"
        );
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();

        // DORA, then DECLINE: the address stays out of the pool for everyone.
        let declined = dora(&s, 4);
        let d = packet(MessageType::Decline, mac(4), |m| {
            m.set_xid(4);
            m.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(declined));
            m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
        });
        s.send_to(&d, BCAST).unwrap();
        // Wait for the DECLINE to be taken (stored after the pool has it).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !rt
            .block_on(st.list_leases())
            .unwrap()
            .iter()
            .any(|l| l.state == LeaseState::Declined)
        {
            assert!(std::time::Instant::now() < deadline, "DECLINE not stored");
            std::thread::sleep(Duration::from_millis(20));
        }
        for n in [4, 5, 6] {
            let again = dora(&s, n);
            assert_ne!(again, declined, "declined address re-offered to client {n}");
        }
        declined
    })
    .await
    .unwrap();

    let leases = store.list_leases().await.unwrap();
    let declined: Vec<_> = leases
        .iter()
        .filter(|l| l.state == LeaseState::Declined)
        .collect();
    assert_eq!(declined.len(), 1, "{leases:?}");
    assert_eq!(declined[0].mac, None);
    let want = [
        EventKind::LeaseNak,
        EventKind::LeaseDeclined,
        EventKind::LeaseAcked,
    ];
    let kinds: Vec<EventKind> = events_until(&mut server.events, |e| {
        want.iter().all(|k| e.iter().any(|e| e.kind == *k))
    })
    .await
    .into_iter()
    .map(|e| e.kind)
    .collect();
    for k in want {
        assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
    }

    // Relay: the "relay" lives in the client namespace at 10.123.0.1 behind 10.99.0.254.
    lab.client(&["addr", "add", "10.99.0.254/24", "dev", &lab.client_if]);
    lab.client(&["addr", "add", "10.123.0.1/32", "dev", "lo"]);
    lab.server(&["route", "add", "10.123.0.0/24", "via", "10.99.0.254"]);
    let relay = lab.in_ns(&lab.client_ns.clone(), || {
        let s = UdpSocket::bind("10.123.0.1:67").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    });
    let relay_info = vec![
        1, 6, b'p', b'o', b'r', b't', b'-', b'7', 2, 4, b's', b'w', b'-', b'1',
    ];
    let info = relay_info.clone();
    tokio::task::spawn_blocking(move || {
        let to: SocketAddr = "10.99.0.1:67".parse().unwrap();
        let relayed = |kind, build: &dyn Fn(&mut dhcproto::v4::Message)| {
            packet(kind, mac(20), |m| {
                m.set_xid(20);
                m.set_giaddr([10, 123, 0, 1]);
                m.set_hops(1);
                build(m);
                m.opts_mut()
                    .insert(DhcpOption::Unknown(dhcproto::v4::UnknownOption::new(
                        OptionCode::RelayAgentInformation,
                        info.clone(),
                    )));
            })
        };
        let (offer, from) = {
            relay
                .send_to(&relayed(MessageType::Discover, &|_| {}), to)
                .unwrap();
            recv_reply(&relay, 20).expect("relayed offer")
        };
        assert_eq!(from, to, "reply comes from the server port");
        assert_eq!(message_type(&offer), Some(MessageType::Offer));
        assert_eq!(offer.giaddr(), Ipv4Addr::new(10, 123, 0, 1));
        let ip = offer.yiaddr();
        assert!(
            (Ipv4Addr::new(10, 123, 0, 10)..=Ipv4Addr::new(10, 123, 0, 20)).contains(&ip),
            "{ip}"
        );
        assert_eq!(option_bytes(&offer, 82), Some(info.clone()));
        assert_eq!(option_bytes(&offer, 3), Some(vec![10, 123, 0, 1]));
        let req = relayed(MessageType::Request, &|m| {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
            m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
        });
        relay.send_to(&req, to).unwrap();
        let (ack, _) = recv_reply(&relay, 20).expect("relayed ack");
        assert_eq!(message_type(&ack), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), ip);
        assert_eq!(option_bytes(&ack, 82), Some(info));
    })
    .await
    .unwrap();
    let _ = relay_info;
    // Committed leases are what boot HTTP binds agent tokens to.
    let acked_6 = store
        .list_leases()
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.mac.map(|m| m.0) == Some(mac(6)) && l.state == LeaseState::Bound)
        .unwrap()
        .ip;
    assert_eq!(
        server.bound.get(rackboot_core::MacAddr(mac(6))),
        Some(acked_6)
    );
    assert_eq!(server.bound.get(rackboot_core::MacAddr(mac(99))), None);
    server.stop().await;

    // Restart on the same store: client 4's successor address and the declined one survive.
    let before = store.list_leases().await.unwrap();
    let server = start(
        lab.server_sockets(false, false),
        config(3600, ""),
        store.clone(),
    );
    let sock = lab.client_socket(68);
    let bound_5 = before
        .iter()
        .find(|l| l.mac.map(|m| m.0) == Some(mac(5)) && l.state == LeaseState::Bound)
        .unwrap()
        .ip;
    let got = tokio::task::spawn_blocking(move || {
        let d = packet(MessageType::Discover, mac(5), |m| {
            m.set_xid(55);
        });
        send_recv(&sock, BCAST, d, 55)
            .expect("offer after restart")
            .yiaddr()
    })
    .await
    .unwrap();
    assert_eq!(
        got, bound_5,
        "a restarted server offers a client its persisted address"
    );
    assert_eq!(
        server.bound.get(rackboot_core::MacAddr(mac(5))),
        Some(bound_5),
        "a restarted server knows the bound leases it loaded"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ack_waits_for_the_lease_write() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let lab = Lab::new();
    let store = Arc::new(MemStore::default());
    let server = start(
        lab.server_sockets(false, false),
        config(3600, ""),
        store.clone(),
    );
    let sock = lab.client_socket(68);
    let s = sock.try_clone().unwrap();
    let offered = tokio::task::spawn_blocking(move || {
        let d = packet(MessageType::Discover, mac(1), |m| {
            m.set_xid(9);
        });
        send_recv(&s, BCAST, d, 9).expect("offer").yiaddr()
    })
    .await
    .unwrap();

    // Block the store, send the REQUEST: no ACK while the write cannot finish.
    let gate = store.gate.write().await;
    let s = sock.try_clone().unwrap();
    let waiter = tokio::task::spawn_blocking(move || {
        let r = packet(MessageType::Request, mac(1), |m| {
            m.set_xid(9);
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(offered));
            m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER_IP));
        });
        s.send_to(&r, BCAST).unwrap();
        let started = std::time::Instant::now();
        let ack = recv_reply(&s, 9).map(|(m, _)| m);
        (ack, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(store.leases.lock().unwrap().is_empty());
    drop(gate);
    let (ack, waited) = waiter.await.unwrap();
    let ack = ack.expect("ACK after the write");
    assert_eq!(message_type(&ack), Some(MessageType::Ack));
    assert!(
        waited >= Duration::from_millis(700),
        "ACK came before the write: {waited:?}"
    );
    assert_eq!(
        store.leases.lock().unwrap()[&offered].state,
        LeaseState::Bound
    );
    server.stop().await;
}

/// A request that waited in the socket queue for over a second (the server was
/// not reading: here, not yet started) is dropped unread; a fresh one is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_queued_too_long_are_shed() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let lab = Lab::new();
    let sockets = lab.server_sockets(false, false);
    let sock = lab.client_socket(68);
    // The kernel turns receive timestamping on asynchronously after the first socket asks.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stale = packet(MessageType::Discover, mac(3), |m| {
        m.set_xid(31);
    });
    sock.send_to(&stale, BCAST).unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;

    let store = Arc::new(MemStore::default());
    let server = start(sockets, config(3600, ""), store.clone());
    let s = sock.try_clone().unwrap();
    let (stale_reply, fresh_reply) = tokio::task::spawn_blocking(move || {
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let stale_reply = recv_reply(&s, 31);
        // The fresh one is answered; give a loaded machine time.
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let fresh = packet(MessageType::Discover, mac(4), |m| {
            m.set_xid(32);
        });
        let fresh_reply = send_recv(&s, BCAST, fresh, 32);
        (stale_reply, fresh_reply)
    })
    .await
    .unwrap();
    assert!(stale_reply.is_none(), "a second-old DISCOVER was answered");
    let offer = fresh_reply.expect("a fresh DISCOVER is answered");
    assert_eq!(message_type(&offer), Some(MessageType::Offer));
    server.stop().await;
}

/// DISCOVERs arriving back to back are taken in batches (the loop drains the
/// socket, pauses a millisecond under load, and sends the replies with one
/// `sendmmsg`): every client still gets its own OFFER, with its own address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_discovers_gets_an_offer_each() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    const BURST: u8 = 100;
    let lab = Lab::new();
    let sockets = lab.server_sockets(false, false);
    let sock = lab.client_socket(68);
    let config: rackboot_dhcp::DhcpConfig = toml::from_str(
        r#"
        [[subnets]]
        name = "local"
        cidr = "10.99.0.0/24"
        ranges = ["10.99.0.100-10.99.0.250"]
        "#,
    )
    .unwrap();
    let server = start(sockets, config, Arc::new(MemStore::default()));
    let offers = tokio::task::spawn_blocking(move || {
        for n in 0..BURST {
            let d = packet(MessageType::Discover, mac(n), |m| {
                m.set_xid(0x5000 + u32::from(n));
            });
            sock.send_to(&d, BCAST).unwrap();
        }
        let mut offers = std::collections::HashMap::new();
        let mut buf = [0u8; 2048];
        while offers.len() < usize::from(BURST) {
            let Ok((len, _)) = sock.recv_from(&mut buf) else {
                break;
            };
            if let Some(m) = rackboot_wire::dhcp::decode_reply(&buf[..len])
                && message_type(&m) == Some(MessageType::Offer)
            {
                offers.insert(m.xid(), (m.chaddr()[..6].to_vec(), m.yiaddr()));
            }
        }
        offers
    })
    .await
    .unwrap();
    assert_eq!(offers.len(), usize::from(BURST), "OFFERs received");
    for n in 0..BURST {
        let (chaddr, _) = &offers[&(0x5000 + u32::from(n))];
        assert_eq!(chaddr[..], mac(n), "OFFER for xid {n} names its client");
    }
    let addresses: std::collections::HashSet<_> = offers.values().map(|(_, ip)| *ip).collect();
    assert_eq!(
        addresses.len(),
        usize::from(BURST),
        "every client its own address"
    );
    server.stop().await;
}

fn load_capture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../rackboot-wire/testdata/dhcp/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text: String = std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .collect();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_dhcp_answers_pxe_clients_only() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let lab = Lab::new();
    let store = Arc::new(MemStore::default());
    let server = start(
        lab.server_sockets(true, false),
        rackboot_dhcp::DhcpConfig::proxy(),
        store.clone(),
    );
    lab.client(&["addr", "add", "10.99.0.254/24", "dev", &lab.client_if]);
    let sock = lab.client_socket(68);
    tokio::task::spawn_blocking(move || {
        // EDK2 UEFI PXE DISCOVER (real capture): ProxyDHCP offer with ipxe.efi.
        let edk2 = load_capture("uefi-edk2-pxe-05-discover.hex");
        let xid = u32::from_be_bytes(edk2[4..8].try_into().unwrap());
        let offer = send_recv(&sock, BCAST, edk2.clone(), xid).expect("proxy offer");
        assert_eq!(message_type(&offer), Some(MessageType::Offer));
        assert_eq!(
            offer.yiaddr(),
            Ipv4Addr::UNSPECIFIED,
            "ProxyDHCP never hands out addresses"
        );
        assert_eq!(option_bytes(&offer, 60), Some(b"PXEClient".to_vec()));
        assert_eq!(option_bytes(&offer, 43), Some(vec![6, 1, 0x0b, 255]));
        assert_eq!(option_bytes(&offer, 54), Some(SERVER_IP.octets().to_vec()));
        assert_eq!(file_field(&offer).as_deref(), Some("ipxe.efi"));
        assert_eq!(offer.siaddr(), SERVER_IP);
        assert!(offer.opts().get(OptionCode::AddressLeaseTime).is_none());

        // The same client then asks the boot server on 4011 (unicast, from its new address).
        let mut req = edk2.clone();
        req[12..16].copy_from_slice(&[10, 99, 0, 254]); // ciaddr
        let pos = 240 + 2; // option 53 value is the first option's value
        assert_eq!(&req[240..242], &[53, 1]);
        req[pos] = 3;
        let pxe_sock = sock.try_clone().unwrap();
        let ack =
            send_recv(&pxe_sock, "10.99.0.1:4011".parse().unwrap(), req, xid).expect("4011 ack");
        assert_eq!(message_type(&ack), Some(MessageType::Ack));
        assert_eq!(file_field(&ack).as_deref(), Some("ipxe.efi"));

        // iPXE (real BIOS ROM capture) gets the script URL, not iPXE again.
        let ipxe = load_capture("bios-ipxe-rom-01-discover.hex");
        let xid = u32::from_be_bytes(ipxe[4..8].try_into().unwrap());
        let offer = send_recv(&sock, BCAST, ipxe, xid).expect("proxy offer to iPXE");
        assert_eq!(
            option_bytes(&offer, 67),
            Some(b"http://10.99.0.1:8080/boot/ipxe?mac=52:54:00:aa:00:01".to_vec())
        );

        // A plain client is ignored.
        let plain = packet(MessageType::Discover, mac(1), |m| {
            m.set_xid(77);
            m.set_flags(Flags::default().set_broadcast());
        });
        sock.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        assert!(send_recv(&sock, BCAST, plain, 77).is_none());
    })
    .await
    .unwrap();
    assert!(store.leases.lock().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_mode_gives_pxe_clients_boot_info() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let lab = Lab::new();
    let store = Arc::new(MemStore::default());
    let server = start(lab.server_sockets(false, false), config(3600, ""), store);
    let sock = lab.client_socket(68);
    tokio::task::spawn_blocking(move || {
        let edk2 = load_capture("uefi-edk2-pxe-05-discover.hex");
        let xid = u32::from_be_bytes(edk2[4..8].try_into().unwrap());
        let offer = send_recv(&sock, BCAST, edk2, xid).expect("offer");
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 99, 0, 100));
        assert_eq!(file_field(&offer).as_deref(), Some("ipxe.efi"));
        assert_eq!(option_bytes(&offer, 67), Some(b"ipxe.efi".to_vec()));
        assert_eq!(option_bytes(&offer, 66), Some(b"10.99.0.1".to_vec()));
        assert_eq!(
            option_bytes(&offer, 252),
            Some(b"http://10.99.0.1/wpad.dat".to_vec())
        );
        assert_eq!(option_bytes(&offer, 1), Some(vec![255, 255, 255, 0]));
        assert_eq!(option_bytes(&offer, 28), Some(vec![10, 99, 0, 255]));
        // A reserved host gets its address and hostname.
        let d = packet(MessageType::Discover, mac(0x99), |m| {
            m.set_xid(5);
        });
        let offer = send_recv(&sock, BCAST, d, 5).expect("offer");
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 99, 0, 50));
        assert_eq!(option_bytes(&offer, 12), Some(b"fixed-host".to_vec()));
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probe_skips_an_address_that_answers_ping() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let lab = Lab::new();
    let store = Arc::new(MemStore::default());
    // Someone squats on the first pool address.
    lab.client(&["addr", "add", "10.99.0.100/24", "dev", &lab.client_if]);
    let cfg = config(3600, "probe = { enabled = true, timeout_ms = 300 }");
    let mut server = start(lab.server_sockets(false, true), cfg, store.clone());
    let sock = lab.client_socket(68);
    let (ip, waited) = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let d = packet(MessageType::Discover, mac(1), |m| {
            m.set_xid(31);
        });
        let ip = send_recv(&sock, BCAST, d, 31).expect("offer").yiaddr();
        (ip, started.elapsed())
    })
    .await
    .unwrap();
    assert_eq!(ip, Ipv4Addr::new(10, 99, 0, 101), "in-use address skipped");
    assert!(
        waited >= Duration::from_millis(300),
        "second probe timed out before the offer: {waited:?}"
    );
    // The conflict is stored after the offer: wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let conflict = loop {
        let conflict = store
            .leases
            .lock()
            .unwrap()
            .get(&Ipv4Addr::new(10, 99, 0, 100))
            .cloned();
        if conflict.as_ref().map(|l| l.state) == Some(LeaseState::Declined)
            || std::time::Instant::now() > deadline
        {
            break conflict;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(conflict.map(|l| l.state), Some(LeaseState::Declined));
    let is_conflict =
        |e: &rackboot_core::Event| e.kind == EventKind::LeaseDeclined && e.data["conflict"] == true;
    let events = events_until(&mut server.events, |e| e.iter().any(is_conflict)).await;
    assert!(events.iter().any(is_conflict), "{events:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pool_low_event_when_free_addresses_fall_below_threshold() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let lab = Lab::new();
    let store = Arc::new(MemStore::default());
    // The local pool has 21 addresses; below 50% free after the 11th lease.
    let mut server = start(
        lab.server_sockets(false, false),
        config(3600, "pool_low_percent = 50"),
        store,
    );
    let sock = lab.client_socket(68);
    let sock = tokio::task::spawn_blocking(move || {
        for n in 1..=10 {
            dora(&sock, n);
        }
        sock
    })
    .await
    .unwrap();
    // The pool is checked every second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let early = drain(&mut server.events);
    assert!(
        !early.iter().any(|e| e.kind == EventKind::PoolLow),
        "11 of 21 free is not low yet: {early:?}"
    );
    tokio::task::spawn_blocking(move || dora(&sock, 11))
        .await
        .unwrap();
    // Wait for the next check(s) to see it, then 1.5 s more: it is said once.
    let mut events = events_until(&mut server.events, |e| {
        e.iter().any(|e| e.kind == EventKind::PoolLow)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    events.extend(drain(&mut server.events));
    let low: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::PoolLow)
        .collect();
    assert_eq!(low.len(), 1, "{events:?}");
    assert_eq!(low[0].data["subnet"], "local");
    assert_eq!(low[0].data["free"], 10);
    assert_eq!(low[0].data["size"], 21);
    server.stop().await;
}

/// Waits until `ifname` in `ns` has a usable (not tentative) IPv6 link-local address.
fn wait_link_local(ns: &str, ifname: &str) {
    for _ in 0..100 {
        let out = std::process::Command::new("ip")
            .args(["-n", ns, "-6", "addr", "show", "dev", ifname])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("fe80::") && !text.contains("tentative") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{ifname} in {ns} got no IPv6 link-local address");
}

fn link_mac(ns: &str, ifname: &str) -> [u8; 6] {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", ifname])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = text.find("link/ether ").expect("an Ethernet address") + "link/ether ".len();
    let mac: rackboot_core::MacAddr = text[at..at + 17].parse().unwrap();
    mac.octets()
}

/// Sends one Router Solicitation from `client` (a raw ICMPv6 socket on the client
/// interface) with `mac` as its source link-layer address, and returns the Router
/// Advertisement that comes back within a second, if any.
fn solicit(client: &socket2::Socket, ifindex: u32, mac: [u8; 6]) -> Option<Vec<u8>> {
    let mut rs = vec![133, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    rs.extend_from_slice(&mac);
    let all_routers = std::net::SocketAddrV6::new("ff02::2".parse().unwrap(), 0, 0, ifindex);
    client.send_to(&rs, &all_routers.into()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
    while std::time::Instant::now() < deadline {
        let Ok((n, _)) = client.recv_from(&mut buf) else {
            continue;
        };
        // SAFETY: recv_from initialised the first n bytes.
        let bytes: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        if bytes.first() == Some(&134) {
            return Some(bytes);
        }
    }
    None
}

/// iPXE solicits IPv6 routers for ~13 s beside DHCP; the server answers the
/// solicitations of iPXE clients it just saw (once per DHCP sighting, unicast)
/// with an advertisement that announces nothing, and stays silent to others.
/// Its OFFER to iPXE also tells it not to wait for ProxyDHCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ipxe_router_solicitations_get_an_empty_advertisement() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let lab = Lab::new();
    wait_link_local(&lab.server_ns, &lab.server_if);
    wait_link_local(&lab.client_ns, &lab.client_if);
    let mut sockets = lab.server_sockets(false, false);
    let server_if = lab.server_if.clone();
    sockets.router_solicit = Some(lab.in_ns(&lab.server_ns.clone(), move || {
        rackboot_dhcp::ipxe_ra::RouterSolicitSocket::bind(&server_if).unwrap()
    }));
    let server = start(sockets, config(3600, ""), Arc::new(MemStore::default()));
    let client_mac = link_mac(&lab.client_ns, &lab.client_if);
    let client_if = lab.client_if.clone();
    let (raw, ifindex) = lab.in_ns(&lab.client_ns.clone(), move || {
        let s = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::RAW,
            Some(socket2::Protocol::ICMPV6),
        )
        .unwrap();
        s.bind_device(Some(client_if.as_bytes())).unwrap();
        s.set_multicast_hops_v6(255).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let ifindex = nix::net::if_::if_nametoindex(client_if.as_str()).unwrap();
        (s, ifindex)
    });
    let dhcp = lab.client_socket(68);
    let with_client_mac = move |capture: &str| {
        let mut bytes = load_capture(capture);
        bytes[28..34].copy_from_slice(&client_mac);
        let xid = u32::from_be_bytes(bytes[4..8].try_into().unwrap());
        (bytes, xid)
    };
    tokio::task::spawn_blocking(move || {
        assert_eq!(
            solicit(&raw, ifindex, client_mac),
            None,
            "a client the DHCP server has not seen is not answered"
        );
        // UEFI's own PXE client (not iPXE) asks for an address: still not answered.
        let (edk2, xid) = with_client_mac("uefi-edk2-pxe-05-discover.hex");
        let offer = send_recv(&dhcp, BCAST, edk2, xid).expect("an OFFER for the EDK2 client");
        assert_eq!(
            option_bytes(&offer, 175),
            None,
            "iPXE settings only for iPXE"
        );
        assert_eq!(solicit(&raw, ifindex, client_mac), None, "not iPXE");

        // iPXE's DISCOVER (real capture from the BIOS ROM, this veth's MAC).
        let (ipxe, xid) = with_client_mac("bios-ipxe-rom-01-discover.hex");
        let offer = send_recv(&dhcp, BCAST, ipxe, xid).expect("an OFFER for iPXE");
        // no-pxedhcp: iPXE need not wait ~2 s for ProxyDHCP offers that cannot come.
        assert_eq!(option_bytes(&offer, 175), Some(vec![176, 1, 1]));
        let advert = solicit(&raw, ifindex, client_mac).expect("an advertisement for iPXE");
        assert_eq!(advert.len(), 16, "no options: {advert:?}");
        assert_eq!(advert[1], 0, "code");
        assert_eq!(advert[5], 0, "no managed or other-configuration flag");
        assert_eq!(
            &advert[6..8],
            &[0, 0],
            "router lifetime 0: not a default router"
        );
        assert_eq!(
            solicit(&raw, ifindex, client_mac),
            None,
            "one advertisement per DHCP sighting"
        );
    })
    .await
    .unwrap();
    server.stop().await;
}

/// A quick DORA (iPXE requests within milliseconds of the offer): the OFFER's
/// event is recorded before the ACK's, so the timeline reads in order by id
/// (the API and the event stream serve events by id).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offer_event_is_recorded_before_the_ack_event() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let lab = Lab::new();
    let mut server = start(
        lab.server_sockets(false, false),
        config(3600, ""),
        Arc::new(MemStore::default()),
    );
    let sock = lab.client_socket(68);
    tokio::task::spawn_blocking(move || dora(&sock, 7))
        .await
        .unwrap();
    let seen = events_until(&mut server.events, |seen| {
        seen.iter().any(|e| e.kind == EventKind::LeaseOffered)
            && seen.iter().any(|e| e.kind == EventKind::LeaseAcked)
    })
    .await;
    let id_of = |kind| seen.iter().find(|e| e.kind == kind).map(|e| e.id);
    let (offered, acked) = (id_of(EventKind::LeaseOffered), id_of(EventKind::LeaseAcked));
    assert!(
        offered.is_some() && acked.is_some() && offered < acked,
        "OFFER event {offered:?} must come before ACK event {acked:?}"
    );
    server.stop().await;
}

/// Sends a DISCOVER for each of `clients` (xids from `xid_base`) and collects
/// every OFFER that comes back until 3 quiet seconds: per client, the server
/// identifiers that offered, and the address offered.
fn offers_by_server(
    sock: UdpSocket,
    clients: u8,
    xid_base: u32,
) -> std::collections::BTreeMap<u8, (Vec<Ipv4Addr>, Ipv4Addr)> {
    for n in 0..clients {
        let d = packet(MessageType::Discover, mac(n), |m| {
            m.set_xid(xid_base + u32::from(n));
        });
        sock.send_to(&d, BCAST).unwrap();
    }
    // A 3 s quiet gap: a loaded machine may pause longer than a second.
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got: std::collections::BTreeMap<u8, (Vec<Ipv4Addr>, Ipv4Addr)> = Default::default();
    let mut buf = [0u8; 2048];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let Ok((len, _)) = sock.recv_from(&mut buf) else {
            break;
        };
        if let Some(m) = rackboot_wire::dhcp::decode_reply(&buf[..len])
            && message_type(&m) == Some(MessageType::Offer)
            && let Some(n) = m.xid().checked_sub(xid_base)
            && n < u32::from(clients)
            && let Some(DhcpOption::ServerIdentifier(server)) =
                m.opts().get(OptionCode::ServerIdentifier)
        {
            let entry = got
                .entry(n as u8)
                .or_insert_with(|| (Vec::new(), m.yiaddr()));
            entry.0.push(*server);
        }
    }
    got
}

/// Two servers of a cluster on one link (Kea HA load balancing, RFC 3074):
/// each DISCOVER is answered by exactly one of them, both answer some
/// clients, and once one stops and leaves the live set, the other answers
/// every client.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_splits_clients_and_a_survivor_answers_all() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    const CLIENTS: u8 = 40;
    let lab = Lab::new();
    let second_ip = Ipv4Addr::new(10, 99, 0, 2);
    lab.server(&["addr", "add", "10.99.0.2/24", "dev", &lab.server_if]);
    let sockets_a = lab.server_sockets(false, false);
    // Both sockets on port 67 of the same link (SO_REUSEADDR): each gets
    // every broadcast, as two servers on one segment do.
    let mut sockets_b = lab.server_sockets(false, false);
    sockets_b.server_ip = second_ip;
    let config = || -> rackboot_dhcp::DhcpConfig {
        toml::from_str(
            r#"
            [[subnets]]
            name = "local"
            cidr = "10.99.0.0/24"
            ranges = ["10.99.0.100-10.99.0.250"]
            "#,
        )
        .unwrap()
    };
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let (_peers_a_tx, peers_a) = tokio::sync::watch::channel(rackboot_dhcp::Peers {
        me: a,
        live: vec![a, b],
    });
    let (peers_b_tx, peers_b) = tokio::sync::watch::channel(rackboot_dhcp::Peers {
        me: b,
        live: vec![a, b],
    });
    let server_a = start_in_cluster(sockets_a, config(), Arc::new(MemStore::default()), peers_a);
    let server_b = start_in_cluster(sockets_b, config(), Arc::new(MemStore::default()), peers_b);

    let sock = lab.client_socket(68);
    let sock2 = sock.try_clone().unwrap();
    let split = tokio::task::spawn_blocking(move || offers_by_server(sock, CLIENTS, 0x7000))
        .await
        .unwrap();
    let by = |server: Ipv4Addr| split.values().filter(|(s, _)| s[..] == [server]).count();
    let (by_a, by_b) = (by(SERVER_IP), by(second_ip));
    eprintln!("two live servers: a offered to {by_a}, b to {by_b} of {CLIENTS} clients");
    assert_eq!(
        split.len(),
        usize::from(CLIENTS),
        "every client got an offer"
    );
    assert_eq!(
        by_a + by_b,
        usize::from(CLIENTS),
        "one offer per client: {split:?}"
    );
    assert!(by_a > 0 && by_b > 0, "both servers answer some clients");

    // a stops; b's membership drops it from the live set.
    server_a.stop().await;
    peers_b_tx.send_replace(rackboot_dhcp::Peers {
        me: b,
        live: vec![b],
    });
    let after = tokio::task::spawn_blocking(move || offers_by_server(sock2, CLIENTS, 0x7100))
        .await
        .unwrap();
    assert_eq!(
        after.len(),
        usize::from(CLIENTS),
        "every client got an offer"
    );
    assert!(
        after.values().all(|(s, _)| s[..] == [second_ip]),
        "b alone answers every client: {after:?}"
    );
    // The clients b owned before are offered the same address again.
    for (n, (servers, ip)) in &split {
        if servers[..] == [second_ip] {
            assert_eq!(after[n].1, *ip, "client {n}");
        }
    }
    server_b.stop().await;
}
