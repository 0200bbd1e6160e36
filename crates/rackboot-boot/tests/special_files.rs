//! A FIFO, socket or device in any tree boot HTTP serves (/assets, /os,
//! /images, /ramdisk, /boot/loader) is refused with 403 at once, over a real
//! socket with reqwest: none is opened for reading (a FIFO's plain open waits
//! for a writer, which held the request, and a blocking-pool thread, forever).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rackboot_boot::{BootConfig, BootService};
use rackboot_core::{EventHub, EventKind};
use rackboot_fleet::Fleet;

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo (coreutils)");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_sockets_and_devices_in_served_trees_are_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        mkfifo(&dir.join("fifo"));
        std::fs::write(dir.join("file"), name.as_bytes()).unwrap();
        dir
    };
    let (assets, loaders, ramdisk, images, os) = (
        tree("assets"),
        tree("loaders"),
        tree("ramdisk"),
        tree("images"),
        tree("os"),
    );
    let _socket = std::os::unix::net::UnixListener::bind(assets.join("socket")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", assets.join("zero")).unwrap();
    std::os::unix::fs::symlink("fifo", loaders.join("fifo.efi")).unwrap();
    std::fs::write(loaders.join("file.efi"), b"MZ loader").unwrap();
    let mut config = BootConfig {
        asset_dir: assets,
        loader_dir: loaders,
        ramdisk_dir: Some(ramdisk),
        images_dir: Some(images),
        ..BootConfig::default()
    };
    config.loaders.uefi_arm64 = Some("fifo.efi".into());
    config.loaders.uefi_x64_ipxe = "file.efi".into();
    let store = Arc::new(MemStore::default());
    let (hub, queue) = EventHub::new(4096);
    let events = collect_events(queue);
    let fleet = Fleet::load(store, Some(os), hub).await.unwrap();
    let service = BootService::new(fleet, config).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(rackboot_boot::serve(listener, service, shutdown.clone()));
    // A blocked open would show as this client's timeout.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let refused = [
        "/assets/fifo",
        "/assets/socket",
        "/assets/zero",
        "/boot/loader/fifo.efi",
        "/ramdisk/fifo",
        "/images/fifo",
        "/os/fifo",
    ];
    // Several at once, more than once: none holds a worker.
    for round in 0..2 {
        let answers = futures::future::join_all(refused.iter().map(|path| {
            let client = client.clone();
            async move {
                let url = format!("http://{addr}{path}");
                let get = client.get(&url).send().await;
                let head = client.head(&url).send().await;
                (path, get, head)
            }
        }))
        .await;
        for (path, get, head) in answers {
            let get = get.unwrap_or_else(|e| panic!("round {round}: GET {path}: {e}"));
            assert_eq!(get.status(), 403, "GET {path}");
            let text = get.text().await.unwrap();
            assert!(text.contains("is not a regular file"), "GET {path}: {text}");
            let head = head.unwrap_or_else(|e| panic!("round {round}: HEAD {path}: {e}"));
            assert_eq!(head.status(), 403, "HEAD {path}");
        }
    }
    for (path, body) in [
        ("/assets/file", "assets"),
        ("/boot/loader/file.efi", "MZ loader"),
        ("/ramdisk/file", "ramdisk"),
        ("/images/file", "images"),
        ("/os/file", "os"),
    ] {
        let res = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.text().await.unwrap(), body, "{path}");
    }
    // The five downloads are in the log (once each body is over); no refusal is.
    let mut served = Vec::new();
    for _ in 0..500 {
        served = events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind == EventKind::AssetServed)
            .map(|e| e.data["path"].as_str().unwrap_or_default().to_string())
            .collect();
        if served.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    served.sort();
    assert_eq!(
        served,
        ["file", "file", "file", "file", "file.efi"],
        "{served:?}"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
