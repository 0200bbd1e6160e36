//! Test harness: the real router over an in-memory SQLite store, with an event
//! persist task like the binary's (store a batch, then publish it).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use rackboot_api::{ApiState, AuthConfig, router};
use rackboot_core::{Event, EventHub, NewEvent};
use rackboot_fleet::Fleet;
use rackboot_store::{EventFilter, Store};
use serde_json::Value;
use tower::ServiceExt;

pub const TOKEN: &str = "test-token-0123456789";

pub struct Harness {
    pub state: ApiState,
    pub store: Arc<dyn Store>,
    pub hub: EventHub,
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with_capacity(1024).await
    }

    /// `capacity` bounds the persist queue and each live subscriber's backlog.
    pub async fn with_capacity(capacity: usize) -> Harness {
        Harness::build(capacity, None).await
    }

    /// With an OS catalog directory (see `debian_catalog`).
    pub async fn with_os_catalog(os_dir: &std::path::Path) -> Harness {
        Harness::build(1024, Some(os_dir.to_path_buf())).await
    }

    async fn build(capacity: usize, os_dir: Option<std::path::PathBuf>) -> Harness {
        let store = rackboot_store::open_sqlite_in_memory()
            .await
            .expect("store");
        let (hub, mut queue) = EventHub::new(capacity);
        let fleet = Fleet::load(store.clone(), os_dir, hub.clone())
            .await
            .expect("fleet");
        let persist_store = store.clone();
        let persist_hub = hub.clone();
        tokio::spawn(async move {
            while let Some(batch) = queue.next_batch(256).await {
                let stored = persist_store
                    .append_events(batch)
                    .await
                    .expect("append events");
                persist_hub.publish(stored);
            }
        });
        let state = ApiState::new(fleet, AuthConfig::new([TOKEN, "second-token"]));
        Harness { state, store, hub }
    }

    pub fn app(&self) -> Router {
        router(self.state.clone())
    }

    /// Sends one request with the test token and returns status and JSON body
    /// (`Value::Null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_raw(method, uri, body.map(|b| b.to_string()), Some(TOKEN))
            .await
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, None).await
    }

    pub async fn call_raw(
        &self,
        method: Method,
        uri: &str,
        body: Option<String>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.app().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    /// Waits until the store holds at least `n` events, and returns them all.
    pub async fn stored_events(&self, n: usize) -> Vec<Event> {
        self.stored_events_matching(n, |_| true).await
    }

    /// Waits (up to 10 s) until at least `n` stored events match `pred`:
    /// other events may be stored first. Returns all stored events.
    pub async fn stored_events_matching(
        &self,
        n: usize,
        pred: impl Fn(&Event) -> bool,
    ) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let events = self
                .store
                .list_events(&EventFilter::default())
                .await
                .unwrap();
            let matching = events.iter().filter(|e| pred(e)).count();
            if matching >= n {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {matching} of {n} matching events stored"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn emit(&self, event: NewEvent) {
        self.hub.emit(event);
    }
}

/// A profile body that passes validation.
pub fn kernel_profile() -> Value {
    serde_json::json!({
        "description": "Debian 12 installer",
        "kernel": "debian/linux",
        "initrds": ["debian/initrd.gz"],
        "cmdline": "auto=true hostname={{ machine.name }}",
    })
}

pub fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
}

/// One server-sent event block as it came over the wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseFrame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    /// True for a block holding only comments (keep-alives).
    pub comment_only: bool,
}

/// Splits an SSE byte stream into blocks (RFC: blocks end with a blank line).
#[derive(Default)]
pub struct SseParser {
    buf: String,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.push_str(&String::from_utf8_lossy(bytes));
    }

    pub fn next_frame(&mut self) -> Option<SseFrame> {
        let end = self.buf.find("\n\n")?;
        let block: String = self.buf.drain(..end + 2).collect();
        let mut frame = SseFrame {
            comment_only: true,
            ..SseFrame::default()
        };
        let mut data = Vec::new();
        for line in block.lines() {
            if line.is_empty() || line.starts_with(':') {
                continue;
            }
            frame.comment_only = false;
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => frame.id = Some(value.to_string()),
                "event" => frame.event = Some(value.to_string()),
                "data" => data.push(value.to_string()),
                _ => {}
            }
        }
        frame.data = data.join("\n");
        Some(frame)
    }
}

/// A small Debian install medium (the layout of a netinst ISO, tiny files)
/// imported into a fresh OS catalog under `dir`; returns the catalog
/// directory. Its release id is `debian-12.5.0-amd64`.
pub fn debian_catalog(dir: &std::path::Path) -> std::path::PathBuf {
    let tree = dir.join("medium");
    let files: [(&str, &[u8]); 5] = [
        (
            ".disk/info",
            b"Debian GNU/Linux 12.5.0 \"Bookworm\" - Official amd64 NETINST with firmware 20240210-11:27",
        ),
        (".disk/base_installable", b""),
        ("install.amd/vmlinuz", b"kernel"),
        ("install.amd/initrd.gz", b"initrd"),
        (
            "dists/bookworm/Release",
            b"Origin: Debian\nLabel: Debian\nSuite: stable\nVersion: 12.5\nCodename: bookworm\n",
        ),
    ];
    for (path, body) in files {
        let path = tree.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let catalog = dir.join("os");
    std::fs::create_dir_all(&catalog).unwrap();
    let release = rackboot_oscatalog::import(&tree, &catalog, &|_| {}).expect("import");
    assert_eq!(release.id, "debian-12.5.0-amd64");
    catalog
}

/// A WIM header followed by its XML metadata (UTF-16LE with BOM), which is
/// all the catalog reads of a WIM.
fn fake_wim(xml: &str) -> Vec<u8> {
    let mut xml_bytes = vec![0xFF, 0xFE];
    for unit in xml.encode_utf16() {
        xml_bytes.extend_from_slice(&unit.to_le_bytes());
    }
    let mut wim = vec![0u8; 208];
    wim[..8].copy_from_slice(b"MSWIM\0\0\0");
    wim[8..12].copy_from_slice(&208u32.to_le_bytes());
    wim[12..16].copy_from_slice(&0x10d00u32.to_le_bytes());
    wim[20..24].copy_from_slice(&32768u32.to_le_bytes());
    wim[40..42].copy_from_slice(&1u16.to_le_bytes());
    wim[42..44].copy_from_slice(&1u16.to_le_bytes());
    wim[44..48].copy_from_slice(&1u32.to_le_bytes());
    let size = xml_bytes.len() as u64;
    wim[72..79].copy_from_slice(&size.to_le_bytes()[..7]);
    wim[80..88].copy_from_slice(&208u64.to_le_bytes());
    wim[88..96].copy_from_slice(&size.to_le_bytes());
    wim.extend_from_slice(&xml_bytes);
    wim
}

/// A Windows Server 2022 medium (layout and WIM metadata of the real one,
/// tiny files) imported into the catalog under `dir`; its release id is
/// `windows-server-10.0.20348-amd64`.
pub fn windows_catalog(dir: &std::path::Path) -> std::path::PathBuf {
    let install_wim = "<WIM><IMAGE INDEX=\"1\"><WINDOWS><ARCH>9</ARCH>\
        <EDITIONID>ServerStandard</EDITIONID><INSTALLATIONTYPE>Server Core</INSTALLATIONTYPE>\
        <PRODUCTTYPE>ServerNT</PRODUCTTYPE>\
        <VERSION><MAJOR>10</MAJOR><MINOR>0</MINOR><BUILD>20348</BUILD></VERSION></WINDOWS>\
        <NAME>Windows Server 2022 SERVERSTANDARDCORE</NAME>\
        <DISPLAYNAME>Windows Server 2022 Standard</DISPLAYNAME></IMAGE></WIM>";
    let boot_wim = "<WIM><IMAGE INDEX=\"1\"><WINDOWS><ARCH>9</ARCH><EDITIONID>WindowsPE</EDITIONID>\
        <VERSION><MAJOR>10</MAJOR><MINOR>0</MINOR><BUILD>20348</BUILD></VERSION></WINDOWS>\
        <NAME>Microsoft Windows PE (amd64)</NAME></IMAGE></WIM>";
    let tree = dir.join("windows-medium");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("bootmgr", b"bootmgr".to_vec()),
        ("boot/bcd", b"bcd".to_vec()),
        ("boot/boot.sdi", b"sdi".to_vec()),
        ("efi/boot/bootx64.efi", b"efi".to_vec()),
        ("sources/boot.wim", fake_wim(boot_wim)),
        ("sources/install.wim", fake_wim(install_wim)),
        ("setup.exe", b"setup".to_vec()),
    ];
    for (path, body) in files {
        let path = tree.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let catalog = dir.join("os");
    std::fs::create_dir_all(&catalog).unwrap();
    let release = rackboot_oscatalog::import(&tree, &catalog, &|_| {}).expect("import");
    assert_eq!(release.id, "windows-server-10.0.20348-amd64");
    catalog
}
