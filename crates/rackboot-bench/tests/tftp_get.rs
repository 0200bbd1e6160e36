//! The bench client against rackboot's TFTP server on loopback: every mode the
//! benchmark uses returns the file's exact bytes, including a block-number
//! rollover, an exact multiple of the block size and a refused file.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rackboot_bench::tftp_get::{GetOptions, tftp_get};
use rackboot_core::{EventHub, GeneratedFile, TftpContent};
use rackboot_tftp::TftpConfig;
use tokio_util::sync::CancellationToken;

struct DiskOnly;

impl TftpContent for DiskOnly {
    fn generate(&self, _path: &str, _client: Ipv4Addr) -> GeneratedFile {
        GeneratedFile::NotGenerated
    }
}

fn pattern(len: usize) -> Vec<u8> {
    // Not periodic in any block size, so a repeated or skipped block shows.
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_match_the_file_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("big.bin", pattern(3 * 1024 * 1024 + 77)),
        ("exact.bin", pattern(1468 * 40)),
        ("empty.bin", Vec::new()),
        // 65536+ blocks of 8 bytes: the block number wraps to 0.
        ("rollover.bin", pattern(8 * 65_540 + 3)),
    ];
    for (name, data) in &files {
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server: SocketAddr = socket.local_addr().unwrap();
    let (hub, queue) = EventHub::new(1024);
    tokio::spawn(queue.run_unpersisted(hub.clone()));
    let shutdown = CancellationToken::new();
    let config = TftpConfig {
        root: Some(dir.path().to_path_buf()),
        ..TftpConfig::default()
    };
    let task = tokio::spawn(rackboot_tftp::run(
        socket,
        config,
        Arc::new(DiskOnly),
        hub,
        shutdown.clone(),
    ));

    let modes: [(Option<u16>, Option<u16>); 4] = [
        (None, None),
        (Some(1468), None),
        (Some(1468), Some(16)),
        (Some(512), Some(64)),
    ];
    for (name, want) in &files {
        let modes: &[(Option<u16>, Option<u16>)] = if *name == "rollover.bin" {
            &[(Some(8), None), (Some(8), Some(16))]
        } else {
            &modes
        };
        for &(blksize, windowsize) in modes {
            let opts = GetOptions {
                server,
                file: name.to_string(),
                blksize,
                windowsize,
                timeout: Duration::from_millis(500),
                retries: 5,
            };
            let got = tokio::task::spawn_blocking(move || tftp_get(&opts))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{name} {blksize:?}/{windowsize:?}: {e:#}"));
            assert_eq!(
                got.data.len(),
                want.len(),
                "{name} {blksize:?}/{windowsize:?}"
            );
            assert!(
                got.data == *want,
                "{name} {blksize:?}/{windowsize:?}: bytes differ"
            );
            assert_eq!(got.blksize, blksize.unwrap_or(512));
            assert_eq!(got.windowsize, windowsize.unwrap_or(1));
        }
    }

    let opts = GetOptions {
        server,
        file: "missing.bin".into(),
        blksize: Some(1468),
        windowsize: None,
        timeout: Duration::from_millis(500),
        retries: 2,
    };
    let err = tokio::task::spawn_blocking(move || tftp_get(&opts))
        .await
        .unwrap()
        .unwrap_err();
    assert!(format!("{err:#}").contains("server error 1"), "{err:#}");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
