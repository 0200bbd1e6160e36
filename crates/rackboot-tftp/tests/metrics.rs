//! Malformed packets are dropped, counted by reason, and never stop the server.
//! Its own test binary: it installs the process-wide metrics recorder.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use rackboot_wire::tftp::Mode;
use tokio::net::UdpSocket;

fn counters(snapshotter: &metrics_util::debugging::Snapshotter) -> HashMap<String, u64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = if labels.is_empty() {
                key.name().to_string()
            } else {
                format!("{}{{{}}}", key.name(), labels.join(","))
            };
            match value {
                DebugValue::Counter(c) => Some((name, c)),
                DebugValue::Gauge(g) => Some((name, g.into_inner() as u64)),
                DebugValue::Histogram(_) => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let mut server = start(|_, _| {}).await;
    server.write("f", &random_bytes(3000, 5));
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let garbage: &[&[u8]] = &[
        b"",
        b"\x00",
        b"\x00\x09\x00\x00",
        b"\x00\x01no-nul",
        b"\x00\x01f\x00mail\x00",
        b"\x00\x01\xff\xfe\x00octet\x00",
        b"\x00\x01f\x00octet\x00blksize\x00",
        b"\x00\x03\x00\x01data to the listener",
        b"\x00\x04\x00\x01",
    ];
    for g in garbage {
        sock.send_to(g, ("127.0.0.1", server.port)).await.unwrap();
    }
    // Still serving, in octet and netascii.
    let r = raw_get(server.port, "f", Mode::Octet, &[("blksize", "1000")]).await;
    assert_eq!(r.data, random_bytes(3000, 5));
    let r = raw_get(server.port, "f", Mode::Netascii, &[]).await;
    assert_eq!(
        rackboot_wire::tftp::netascii_decode(&r.data),
        random_bytes(3000, 5)
    );
    let r = raw_get(server.port, "nope", Mode::Octet, &[]).await;
    assert_eq!(r.error.map(|e| e.0), Some(1));
    // Loaders' probes for optional files: file not found too, counted apart.
    for probe in ["revocations_sbat.efi", "grub/x86_64-efi/command.lst"] {
        let r = raw_get(server.port, probe, Mode::Octet, &[]).await;
        assert_eq!(r.error.map(|e| e.0), Some(1), "{probe}");
    }
    // Completions are counted after the final ACK on the server's task: wait
    // for the events (2 sent, 1 failed) instead of sleeping.
    let mut failed = Vec::new();
    let mut sent = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (sent < 2 || failed.is_empty()) && std::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), server.events.recv()).await {
            Ok(Ok(e)) if e.kind == rackboot_core::EventKind::TftpFailed => failed.push(e.message),
            Ok(Ok(e)) if e.kind == rackboot_core::EventKind::TftpSent => sent += 1,
            _ => {}
        }
    }
    // Stragglers: only the real miss is an event.
    while let Ok(e) = server.events.try_recv() {
        if e.kind == rackboot_core::EventKind::TftpFailed {
            failed.push(e.message);
        }
    }
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("nope"), "{failed:?}");

    // The slot (gauge) is released just after the event. A snapshot drains
    // counters and gauges, so sum counters over snapshots until the gauge is 0.
    let mut c: HashMap<String, u64> = HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        for (k, v) in counters(&snapshotter) {
            if k == "rackboot_tftp_active_transfers" {
                c.insert(k, v);
            } else {
                *c.entry(k).or_default() += v;
            }
        }
        if c.get("rackboot_tftp_active_transfers") == Some(&0)
            || std::time::Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    assert_eq!(
        get("rackboot_tftp_dropped_total{reason=truncated}"),
        2,
        "{c:#?}"
    );
    assert_eq!(get("rackboot_tftp_dropped_total{reason=unknown_opcode}"), 1);
    assert_eq!(get("rackboot_tftp_dropped_total{reason=missing_nul}"), 1);
    assert_eq!(
        get("rackboot_tftp_dropped_total{reason=unsupported_mode}"),
        1
    );
    assert_eq!(get("rackboot_tftp_dropped_total{reason=not_utf8}"), 1);
    assert_eq!(
        get("rackboot_tftp_dropped_total{reason=option_without_value}"),
        1
    );
    assert_eq!(
        get("rackboot_tftp_dropped_total{reason=unexpected_opcode}"),
        2
    );
    assert_eq!(get("rackboot_tftp_transfers_started_total"), 5);
    assert_eq!(get("rackboot_tftp_transfers_completed_total"), 2);
    assert_eq!(
        get("rackboot_tftp_requests_rejected_total{reason=not_found}"),
        1
    );
    assert_eq!(
        get("rackboot_tftp_requests_rejected_total{reason=probe_miss}"),
        2
    );
    assert!(get("rackboot_tftp_bytes_sent_total") >= 6000);
    assert_eq!(get("rackboot_tftp_active_transfers"), 0);
    server.stop().await;
}
