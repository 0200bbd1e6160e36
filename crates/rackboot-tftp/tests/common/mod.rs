//! Test harness: a server on 127.0.0.1:0 with a temporary root, real client
//! processes, and a small raw client for cases real clients cannot produce.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rackboot_core::{Event, EventHub, GeneratedFile, TftpContent};
use rackboot_tftp::TftpConfig;
use rackboot_wire::tftp::{ErrorCode, Mode, Packet, Request};
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub struct Server {
    pub port: u16,
    pub root: PathBuf,
    pub dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    pub events: broadcast::Receiver<Event>,
    pub task: tokio::task::JoinHandle<Result<(), rackboot_tftp::TftpError>>,
}

/// Generates `pxelinux.cfg/default` (with the client address in it), owns
/// `pxelinux.cfg/01-*` (NotFound), and leaves everything else to disk.
pub struct TestContent;

impl TftpContent for TestContent {
    fn generate(&self, path: &str, client: Ipv4Addr) -> GeneratedFile {
        if path == "pxelinux.cfg/default" {
            GeneratedFile::Content(format!("DEFAULT local\n# for {client}\n").into_bytes())
        } else if path.starts_with("pxelinux.cfg/01-") {
            GeneratedFile::NotFound
        } else {
            GeneratedFile::NotGenerated
        }
    }

    /// IPv6 clients are named in the generated file too (the server passes them here).
    fn generate_for(&self, path: &str, client: std::net::IpAddr) -> GeneratedFile {
        match client {
            std::net::IpAddr::V4(v4) => self.generate(path, v4),
            std::net::IpAddr::V6(v6) if path == "pxelinux.cfg/default" => {
                GeneratedFile::Content(format!("DEFAULT local\n# for {v6}\n").into_bytes())
            }
            std::net::IpAddr::V6(_) => self.generate(path, Ipv4Addr::UNSPECIFIED),
        }
    }
}

pub async fn start(tweak: impl FnOnce(&mut TftpConfig, &Path)) -> Server {
    start_on("127.0.0.1:0", tweak).await
}

/// As [`start`], listening on `addr` (e.g. `[::1]:0`).
pub async fn start_on(addr: &str, tweak: impl FnOnce(&mut TftpConfig, &Path)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let mut config = TftpConfig {
        root: Some(root.clone()),
        timeout_ms: 300,
        max_timeout_ms: 1000,
        retries: 3,
        ..TftpConfig::default()
    };
    tweak(&mut config, dir.path());
    let socket = UdpSocket::bind(addr).await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let (hub, queue) = EventHub::new(4096);
    let events = hub.subscribe();
    tokio::spawn(queue.run_unpersisted(hub.clone()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(rackboot_tftp::run(
        socket,
        config,
        Arc::new(TestContent),
        hub,
        shutdown.clone(),
    ));
    Server {
        port,
        root,
        dir,
        shutdown,
        events,
        task,
    }
}

impl Server {
    pub fn write(&self, name: &str, data: &[u8]) {
        let path = self.root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }

    /// Next event (waits up to 5 s).
    pub async fn next_event(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("an event")
            .unwrap()
    }
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Runs a client command (at most 120 s); returns (success, stderr).
pub async fn run_client(args: &[String]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(&args[0]);
    cmd.args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", args[0]));
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} timed out"))
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    AtftpWindowed,
    AtftpPlain,
    Curl,
    Busybox,
    TftpHpa,
}

pub const ALL_CLIENTS: [Client; 5] = [
    Client::AtftpWindowed,
    Client::AtftpPlain,
    Client::Curl,
    Client::Busybox,
    Client::TftpHpa,
];

pub fn client_args(client: Client, port: u16, file: &str, out: &Path) -> Vec<String> {
    let port = port.to_string();
    let out = out.to_str().unwrap().to_string();
    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    match client {
        Client::AtftpWindowed => s(&[
            "atftp",
            "--option",
            "blksize 1468",
            "--option",
            "windowsize 16",
            "-g",
            "-r",
            file,
            "-l",
            &out,
            "127.0.0.1",
            &port,
        ]),
        Client::AtftpPlain => s(&["atftp", "-g", "-r", file, "-l", &out, "127.0.0.1", &port]),
        Client::Curl => s(&[
            "curl",
            "-sS",
            "--fail",
            "--tftp-blksize",
            "1468",
            "-o",
            &out,
            &format!("tftp://127.0.0.1:{port}/{file}"),
        ]),
        Client::Busybox => s(&[
            "busybox",
            "tftp",
            "-g",
            "-b",
            "1468",
            "-r",
            file,
            "-l",
            &out,
            "127.0.0.1",
            &port,
        ]),
        Client::TftpHpa => s(&[
            "tftp",
            "127.0.0.1",
            &port,
            "-m",
            "binary",
            "-c",
            "get",
            file,
            &out,
        ]),
    }
}

/// Result of a raw transfer.
#[derive(Debug, Default)]
pub struct RawResult {
    pub data: Vec<u8>,
    pub oack: Option<Vec<(String, String)>>,
    pub error: Option<(u16, String)>,
    /// DATA packets received, including duplicates.
    pub data_packets: usize,
}

/// A minimal RFC 7440 receiver: ACKs every `windowsize`-th block and the last one.
pub async fn raw_get(port: u16, file: &str, mode: Mode, options: &[(&str, &str)]) -> RawResult {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let req = Packet::Rrq(Request {
        filename: file.to_string(),
        mode,
        options: options
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    });
    sock.send_to(&req.encode(), ("127.0.0.1", port))
        .await
        .unwrap();
    let mut result = RawResult::default();
    let mut blksize = 512usize;
    let mut window = 1u64;
    let mut expected: u16 = 1;
    let mut received_in_window = 0u64;
    let mut buf = vec![0u8; 70000];
    let mut server: Option<SocketAddr> = None;
    loop {
        let (n, from) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
            .await
            .expect("server answers")
            .unwrap();
        if let Some(s) = server {
            assert_eq!(s, from, "packet from a second TID");
        }
        server = Some(from);
        match Packet::parse(&buf[..n]).unwrap() {
            Packet::Oack { options } => {
                for (name, value) in &options {
                    if name.eq_ignore_ascii_case("blksize") {
                        blksize = value.parse().unwrap();
                    }
                    if name.eq_ignore_ascii_case("windowsize") {
                        window = value.parse().unwrap();
                    }
                }
                result.oack = Some(options);
                sock.send_to(&Packet::Ack { block: 0 }.encode(), from)
                    .await
                    .unwrap();
            }
            Packet::Data { block, data } => {
                result.data_packets += 1;
                if block != expected {
                    continue;
                }
                result.data.extend_from_slice(data);
                expected = expected.wrapping_add(1);
                received_in_window += 1;
                let last = data.len() < blksize;
                if last || received_in_window == window {
                    received_in_window = 0;
                    sock.send_to(&Packet::Ack { block }.encode(), from)
                        .await
                        .unwrap();
                }
                if last {
                    return result;
                }
            }
            Packet::Error { code, message } => {
                result.error = Some((code.as_u16(), message));
                return result;
            }
            other => panic!("unexpected packet {other:?}"),
        }
    }
}

pub fn error_code(code: ErrorCode) -> u16 {
    code.as_u16()
}
