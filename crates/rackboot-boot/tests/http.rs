//! Boot HTTP router tests with tower's oneshot: scripts, loaders, assets with
//! Range and HEAD, traversal attempts, events.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use http_body_util::BodyExt;
use rackboot_boot::{BootConfig, router};
use rackboot_core::{BootIntent, EventKind, LoaderKind};
use tower::ServiceExt;

const KNOWN: &str = "52:54:00:12:34:56";

struct Http {
    f: Fixture,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    asset: Vec<u8>,
}

async fn setup() -> Http {
    // root/assets is the asset dir; root/rackboot-secret must stay out of reach.
    let root = tempfile::tempdir().unwrap();
    let loaders = tempfile::tempdir().unwrap();
    let asset_dir = root.path().join("assets");
    std::fs::create_dir_all(asset_dir.join("debian")).unwrap();
    let asset: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(asset_dir.join("debian/linux"), &asset).unwrap();
    std::fs::write(loaders.path().join("snponly.efi"), b"MZ fake ipxe").unwrap();
    std::fs::write(root.path().join("rackboot-secret"), b"x").unwrap();

    let mut config = BootConfig {
        asset_dir,
        loader_dir: loaders.path().into(),
        ..BootConfig::default()
    };
    config.loaders.uefi_arm64 = Some("arm64.efi".into());
    let store = MemStore::default();
    *store.machines.lock().unwrap() = vec![machine(
        "node1",
        KNOWN,
        BootIntent::Profile {
            name: Some("debian".into()),
        },
    )];
    *store.profiles.lock().unwrap() = vec![kernel_profile("debian", LoaderKind::Ipxe)];
    Http {
        f: fixture(store, config).await,
        _dirs: (root, loaders),
        asset,
    }
}

async fn send(h: &Http, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = router(h.f.service.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, "10.77.0.1:8080")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn ipxe_script_for_a_known_machine() {
    let h = setup().await;
    let (status, headers, body) = send(&h, get("/boot/ipxe/52-54-00-12-34-56")).await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert!(body.starts_with("#!ipxe\n"), "{body}");
    assert!(
        body.contains("kernel http://10.77.0.1:8080/assets/debian/linux initrd=initrd0"),
        "{body}"
    );
    h.f.settle().await;
    let served = h.f.events_of(EventKind::ScriptServed);
    assert_eq!(served.len(), 1);
    assert_eq!(
        served[0].machine,
        Some(machine("node1", KNOWN, BootIntent::LocalDisk).id)
    );
    assert_eq!(served[0].data["intent"], "profile");
    assert_eq!(served[0].data["profile"], "debian");
}

#[tokio::test]
async fn unknown_mac_is_recorded_and_gets_the_discover_script() {
    let h = setup().await;
    let (status, _, body) = send(&h, get("/boot/ipxe/52:54:00:aa:bb:cc")).await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("no discovery profile") && body.contains("\nexit\n"),
        "{body}"
    );
    h.f.settle().await;
    let snap = h.f.service.inventory().snapshot();
    let m = snap
        .machine_by_mac(mac("52:54:00:aa:bb:cc"))
        .expect("recorded");
    assert_eq!(m.name, "m-525400aabbcc");
    assert_eq!(h.f.events_of(EventKind::MachineDiscovered).len(), 1);
}

#[tokio::test]
async fn grub_and_pxelinux_views() {
    let h = setup().await;
    let (status, _, body) = send(&h, get("/boot/grub/52:54:00:12:34:56")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("linux (tftp)/assets/debian/linux")
    );
    let (status, _, body) = send(&h, get("/boot/pxelinux/52-54-00-12-34-56")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("KERNEL /assets/debian/linux")
    );
    // The debugging view records nothing.
    send(&h, get("/boot/pxelinux/52-54-00-99-99-99")).await;
    h.f.settle().await;
    assert_eq!(h.f.store.machines.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_requests_say_why() {
    let h = setup().await;
    let (status, _, body) = send(&h, get("/boot/ipxe/not-a-mac")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8(body).unwrap().contains("invalid MAC"));
    let no_host = Request::get("/boot/ipxe/52-54-00-12-34-56")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&h, no_host).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8(body).unwrap().contains("Host"));
    let evil = Request::get("/boot/ipxe/52-54-00-12-34-56")
        .header(header::HOST, "x\"; shell")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&h, evil).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn loaders_only_by_configured_name() {
    let h = setup().await;
    let (status, headers, body) = send(&h, get("/boot/loader/snponly.efi")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"MZ fake ipxe");
    assert_eq!(headers[header::CONTENT_LENGTH], "12");
    let (status, _, body) = send(&h, get("/boot/loader/secret.bin")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8(body).unwrap().contains("no loader named"));
    let (status, _, body) = send(&h, get("/boot/loader/arm64.efi")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8(body).unwrap().contains("is missing"));
}

#[tokio::test]
async fn assets_whole_range_and_head() {
    let h = setup().await;
    let (status, headers, body) = send(&h, get("/assets/debian/linux")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, h.asset);
    assert_eq!(headers[header::ACCEPT_RANGES], "bytes");

    let ranged = Request::get("/assets/debian/linux")
        .header(header::RANGE, "bytes=1000-1999")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&h, ranged).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &h.asset[1000..2000]);
    assert_eq!(headers[header::CONTENT_RANGE], "bytes 1000-1999/100000");

    let tail = Request::get("/assets/debian/linux")
        .header(header::RANGE, "bytes=-10")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(&h, tail).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &h.asset[99_990..]);

    let beyond = Request::get("/assets/debian/linux")
        .header(header::RANGE, "bytes=200000-")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&h, beyond).await.0, StatusCode::RANGE_NOT_SATISFIABLE);

    let head = Request::head("/assets/debian/linux")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&h, head).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_LENGTH], "100000");
    assert!(body.is_empty());

    h.f.settle().await;
    let served = h.f.events_of(EventKind::AssetServed);
    // One per GET response (whole, range, tail), none for HEAD or the 416.
    let bytes: Vec<_> = served
        .iter()
        .map(|e| (e.data["bytes"].as_u64().unwrap(), e.data["range"].clone()))
        .collect();
    assert_eq!(
        bytes,
        vec![
            (100_000, serde_json::Value::Null),
            (1000, serde_json::json!("bytes=1000-1999")),
            (10, serde_json::json!("bytes=-10")),
        ]
    );
    assert!(
        served
            .iter()
            .all(|e| e.data["path"] == "debian/linux" && e.data["complete"] == true)
    );
    // Each says how long it took (the dashboard draws it as a span).
    for e in &served {
        assert!(e.data["duration_ms"].is_u64(), "{:?}", e.data);
        assert!(e.message.contains(" ms"), "{}", e.message);
    }
}

#[tokio::test]
async fn traversal_is_refused() {
    let h = setup().await;
    for uri in [
        "/assets/../../etc/passwd",
        "/assets/debian/../../rackboot-secret",
        "/assets/%2e%2e/%2e%2e/etc/passwd",
        "/assets/%2E%2E/rackboot-secret",
        "/assets/debian/%2e%2e%2f%2e%2e%2frackboot-secret",
        "/assets/./debian/linux",
        "/assets//etc/passwd",
        "/assets/debian%5c..%5c..%5crackboot-secret",
    ] {
        let (status, _, body) = send(&h, get(uri)).await;
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
            "{uri}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        assert_ne!(body, b"x", "{uri} leaked a file outside the asset dir");
    }
    for uri in [
        "/assets/debian/missing",
        "/assets/debian",
        "/assets/debian/",
    ] {
        let (status, _, _) = send(&h, get(uri)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
    h.f.settle().await;
    assert!(h.f.events_of(EventKind::AssetServed).is_empty());
}

#[tokio::test]
async fn serves_over_a_real_socket_and_shuts_down() {
    let h = setup().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(rackboot_boot::serve(
        listener,
        h.f.service.clone(),
        shutdown.clone(),
    ));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!("GET /boot/ipxe/52-54-00-12-34-56 HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert!(
        reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"),
        "{reply}"
    );
    assert!(
        reply.contains(&format!("kernel http://{addr}/assets/debian/linux")),
        "{reply}"
    );
    shutdown.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
