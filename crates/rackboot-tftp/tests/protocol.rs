//! Protocol behaviour real clients cannot be made to show: crafted with raw sockets.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use rackboot_core::EventKind;
use rackboot_wire::tftp::{Mode, Packet, Request};
use tokio::net::UdpSocket;

fn rrq(file: &str, options: &[(&str, &str)]) -> Vec<u8> {
    Packet::Rrq(Request {
        filename: file.into(),
        mode: Mode::Octet,
        options: options
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    })
    .encode()
}

async fn recv(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70000];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        _ => None,
    }
}

/// A PXE ROM asks for tsize, refuses the OACK with ERROR 8, then asks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_after_oack_ends_transfer_cleanly() {
    let mut server = start(|_, _| {}).await;
    server.write("pxelinux.0", &random_bytes(5000, 9));
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(
        &rrq("pxelinux.0", &[("tsize", "0")]),
        ("127.0.0.1", server.port),
    )
    .await
    .unwrap();
    let (pkt, tid) = recv(&sock, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        Packet::parse(&pkt).unwrap(),
        Packet::Oack {
            options: vec![("tsize".into(), "5000".into())]
        }
    );
    let mut err = Vec::new();
    rackboot_wire::tftp::encode_error(
        rackboot_wire::tftp::ErrorCode::OptionsRefused,
        "tsize only",
        &mut err,
    );
    sock.send_to(&err, tid).await.unwrap();
    // No retransmitted OACK, no DATA (server timeout is 300 ms).
    assert!(recv(&sock, Duration::from_millis(1000)).await.is_none());

    // The re-request from the same port is served in full.
    sock.send_to(
        &rrq("pxelinux.0", &[("blksize", "1456")]),
        ("127.0.0.1", server.port),
    )
    .await
    .unwrap();
    let (pkt, tid2) = recv(&sock, Duration::from_secs(5)).await.unwrap();
    assert_ne!(tid, tid2);
    assert!(matches!(Packet::parse(&pkt).unwrap(), Packet::Oack { .. }));
    sock.send_to(&Packet::Ack { block: 0 }.encode(), tid2)
        .await
        .unwrap();
    let mut data = Vec::new();
    let mut expected: u16 = 1;
    loop {
        let (pkt, _) = recv(&sock, Duration::from_secs(5)).await.unwrap();
        let Packet::Data { block, data: d } = Packet::parse(&pkt).unwrap() else {
            panic!()
        };
        // A timer retransmission under load: already have it.
        if block != expected {
            continue;
        }
        expected = expected.wrapping_add(1);
        data.extend_from_slice(d);
        sock.send_to(&Packet::Ack { block }.encode(), tid2)
            .await
            .unwrap();
        if d.len() < 1456 {
            break;
        }
    }
    assert_eq!(data, random_bytes(5000, 9));
    // Only the full transfer is an event; the probe is neither sent nor failed.
    let e = server.next_event().await;
    assert_eq!(e.kind, EventKind::TftpSent);
    server.stop().await;
}

/// UEFI firmware probes tsize and just closes its port: not a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_after_oack_is_not_a_failure() {
    let mut server = start(|_, _| {}).await;
    server.write("ipxe.efi", &random_bytes(3000, 2));
    {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(
            &rrq("ipxe.efi", &[("blksize", "1432"), ("tsize", "0")]),
            ("127.0.0.1", server.port),
        )
        .await
        .unwrap();
        let (pkt, _) = recv(&sock, Duration::from_secs(5)).await.unwrap();
        assert!(matches!(Packet::parse(&pkt).unwrap(), Packet::Oack { .. }));
    }
    // The OACK retransmission (after 300 ms) meets a closed port.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = raw_get(server.port, "ipxe.efi", Mode::Octet, &[("blksize", "1432")]).await;
    assert_eq!(r.data, random_bytes(3000, 2));
    let e = server.next_event().await;
    assert_eq!(e.kind, EventKind::TftpSent, "{e:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_requests_are_refused() {
    let server = start(|_, _| {}).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let wrq = Packet::Wrq(Request {
        filename: "upload".into(),
        mode: Mode::Octet,
        options: vec![],
    });
    sock.send_to(&wrq.encode(), ("127.0.0.1", server.port))
        .await
        .unwrap();
    let (pkt, _) = recv(&sock, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(
        Packet::parse(&pkt).unwrap(),
        Packet::Error {
            code: rackboot_wire::tftp::ErrorCode::AccessViolation,
            ..
        }
    ));
    assert!(!server.root.join("upload").exists());
    server.stop().await;
}

/// Lock-step: a lost ACK is recovered by the server's timer; a duplicate ACK
/// does not make the server send the next block twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retransmission_and_duplicate_acks() {
    // A 2 s timer: a stall under load must not look like a duplicate-ACK resend.
    let server = start(|c, _| {
        c.timeout_ms = 2000;
        c.max_timeout_ms = 2000;
    })
    .await;
    server.write("f", &random_bytes(512 * 3 + 10, 3));
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&rrq("f", &[]), ("127.0.0.1", server.port))
        .await
        .unwrap();
    let (first, tid) = recv(&sock, Duration::from_secs(5)).await.unwrap();
    assert_eq!(&first[..4], &[0, 3, 0, 1]);
    // Say nothing: block 1 comes again after the 2 s timeout.
    let (again, _) = recv(&sock, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again, first);
    // ACK 1 twice: exactly one DATA 2.
    sock.send_to(&Packet::Ack { block: 1 }.encode(), tid)
        .await
        .unwrap();
    sock.send_to(&Packet::Ack { block: 1 }.encode(), tid)
        .await
        .unwrap();
    let (d2, _) = recv(&sock, Duration::from_secs(5)).await.unwrap();
    assert_eq!(&d2[..4], &[0, 3, 0, 2]);
    let extra = recv(&sock, Duration::from_millis(150)).await;
    assert!(extra.is_none(), "duplicate ACK triggered {extra:?}");
    // An ACK from a stale window and garbage are ignored.
    sock.send_to(&Packet::Ack { block: 60000 }.encode(), tid)
        .await
        .unwrap();
    sock.send_to(&[0xff, 0xff, 1], tid).await.unwrap();
    sock.send_to(&Packet::Ack { block: 2 }.encode(), tid)
        .await
        .unwrap();
    let (d3, _) = recv(&sock, Duration::from_secs(5)).await.unwrap();
    assert_eq!(&d3[..4], &[0, 3, 0, 3]);
    server.stop().await;
}

/// Windowed: an ACK in the middle of the window restarts sending after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_restarts_after_partial_ack() {
    // A 2 s timer: a stall under load must not trigger a timer resend.
    let server = start(|c, _| {
        c.timeout_ms = 2000;
        c.max_timeout_ms = 2000;
    })
    .await;
    let content = random_bytes(100 * 20 + 1, 4);
    server.write("w", &content);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(
        &rrq("w", &[("blksize", "100"), ("windowsize", "4")]),
        ("127.0.0.1", server.port),
    )
    .await
    .unwrap();
    let (oack, tid) = recv(&sock, Duration::from_secs(5)).await.unwrap();
    assert!(matches!(Packet::parse(&oack).unwrap(), Packet::Oack { .. }));
    sock.send_to(&Packet::Ack { block: 0 }.encode(), tid)
        .await
        .unwrap();
    let mut blocks = Vec::new();
    for _ in 0..4 {
        let (pkt, _) = recv(&sock, Duration::from_secs(5)).await.unwrap();
        blocks.push(u16::from_be_bytes([pkt[2], pkt[3]]));
    }
    assert_eq!(blocks, [1, 2, 3, 4]);
    // Pretend block 3 was lost: ACK 2, the server resends from 3.
    sock.send_to(&Packet::Ack { block: 2 }.encode(), tid)
        .await
        .unwrap();
    let mut blocks = Vec::new();
    for _ in 0..4 {
        let (pkt, _) = recv(&sock, Duration::from_secs(5)).await.unwrap();
        blocks.push(u16::from_be_bytes([pkt[2], pkt[3]]));
    }
    assert_eq!(blocks, [3, 4, 5, 6]);
    server.stop().await;
}

/// A client that vanishes: the server retries, gives up, reports TftpFailed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_times_out() {
    let mut server = start(|c, _| {
        c.timeout_ms = 50;
        c.max_timeout_ms = 100;
        c.retries = 2;
    })
    .await;
    server.write("f", b"data");
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&rrq("f", &[]), ("127.0.0.1", server.port))
        .await
        .unwrap();
    let mut data_packets = 0;
    let mut error = None;
    while let Some((pkt, _)) = recv(&sock, Duration::from_secs(2)).await {
        match Packet::parse(&pkt).unwrap() {
            Packet::Data { .. } => data_packets += 1,
            Packet::Error { code, .. } => {
                error = Some(code.as_u16());
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((data_packets, error), (3, Some(0)));
    let e = server.next_event().await;
    assert_eq!(e.kind, EventKind::TftpFailed);
    assert!(e.message.contains("retransmissions"), "{}", e.message);
    server.stop().await;
}

/// Listener on 0.0.0.0: the reply comes from the address the request went to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_listener_replies_from_request_address() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let socket = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let (hub, _queue) = rackboot_core::EventHub::new(16);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(rackboot_tftp::run(
        socket,
        rackboot_tftp::TftpConfig {
            root: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
        std::sync::Arc::new(TestContent),
        hub,
        shutdown.clone(),
    ));
    for addr in ["127.0.0.1", "127.0.0.2", "127.3.4.5"] {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.send_to(&rrq("f", &[]), (addr, port)).await.unwrap();
        let (pkt, from) = recv(&sock, Duration::from_secs(5)).await.unwrap();
        assert_eq!(from.ip().to_string(), addr);
        assert_ne!(from.port(), port);
        assert_eq!(pkt, [0, 3, 0, 1, b'x']);
        sock.send_to(&Packet::Ack { block: 1 }.encode(), from)
            .await
            .unwrap();
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_transfers() {
    // A longer timer: 100 transfers on a loaded machine must not run out of
    // retries (300 ms timer gives up after ~3 s of stall).
    let mut server = start(|c, _| {
        c.max_transfers_per_client = 200;
        c.timeout_ms = 1000;
        c.max_timeout_ms = 4000;
    })
    .await;
    for i in 0..10 {
        server.write(
            &format!("f{i}"),
            &random_bytes(200_000 + i * 1000, i as u64 + 100),
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..100usize {
        let port = server.port;
        tasks.spawn(async move {
            let i = n % 10;
            let opts: &[(&str, &str)] = match n % 3 {
                0 => &[],
                1 => &[("blksize", "1468")],
                _ => &[("blksize", "1468"), ("windowsize", "8"), ("tsize", "0")],
            };
            let r = raw_get(port, &format!("f{i}"), Mode::Octet, opts).await;
            assert!(r.error.is_none(), "{n}: {:?}", r.error);
            assert!(
                r.data == random_bytes(200_000 + i * 1000, i as u64 + 100),
                "{n} differs"
            );
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
    all.await.expect("100 transfers within 60 s");
    for _ in 0..100 {
        assert_eq!(server.next_event().await.kind, EventKind::TftpSent);
    }
    server.stop().await;
}

/// Shutdown stops running transfers and run() returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_transfers() {
    // A transfer that ran to its own timeout would take 30 s: shutdown must
    // end it long before (the bound is generous for a loaded machine).
    let server = start(|c, _| {
        c.timeout_ms = 30_000;
        c.max_timeout_ms = 30_000;
    })
    .await;
    server.write("f", &random_bytes(10_000, 1));
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&rrq("f", &[]), ("127.0.0.1", server.port))
        .await
        .unwrap();
    recv(&sock, Duration::from_secs(5)).await.unwrap();
    let started = std::time::Instant::now();
    let shutdown = server.shutdown.clone();
    shutdown.cancel();
    let (pkt, _) = recv(&sock, Duration::from_secs(2)).await.unwrap();
    assert!(matches!(Packet::parse(&pkt).unwrap(), Packet::Error { .. }));
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}
