//! Over a real link: server and atftp in two network namespaces joined by a veth
//! pair (MTU 1500), the benchmark setup. blksize 1468 packets fill the MTU exactly
//! (one GSO send per window); blksize 8192 does not fit, so the kernel refuses GSO
//! (EMSGSIZE) and the transfer falls back to fragmented packets one by one.

use std::os::fd::AsFd;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rackboot_core::{EventHub, EventKind, GeneratedFile, TftpContent};
use rackboot_tftp::TftpConfig;
use tokio_util::sync::CancellationToken;

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    assert!(
        Command::new("ip").args(args).status().unwrap().success(),
        "ip {args:?}"
    );
}

fn bind_in_netns(ns: &str, addr: &str) -> std::net::UdpSocket {
    let path = format!("/run/netns/{ns}");
    let addr = addr.to_string();
    std::thread::spawn(move || {
        let f = std::fs::File::open(path).unwrap();
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = std::net::UdpSocket::bind(addr).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    })
    .join()
    .unwrap()
}

struct DiskOnly;

impl TftpContent for DiskOnly {
    fn generate(&self, _: &str, _: std::net::Ipv4Addr) -> GeneratedFile {
        GeneratedFile::NotGenerated
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftp_over_veth_between_namespaces() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let pid = std::process::id();
    let (a, b) = (format!("rbt-tfa-{pid}"), format!("rbt-tfb-{pid}"));
    ip(&["netns", "add", &a]);
    let _guard = Namespaces(vec![a.clone(), b.clone()]);
    ip(&["netns", "add", &b]);
    let (va, vb) = (format!("rbtva{pid}"), format!("rbtvb{pid}"));
    ip(&[
        "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b,
    ]);
    ip(&["-n", &a, "addr", "add", "10.99.0.1/24", "dev", &va]);
    ip(&["-n", &b, "addr", "add", "10.99.0.2/24", "dev", &vb]);
    ip(&["-n", &a, "link", "set", &va, "up"]);
    ip(&["-n", &b, "link", "set", &vb, "up"]);

    let dir = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let content: Vec<u8> = (0..(8 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.path().join("image"), &content).unwrap();
    let socket = tokio::net::UdpSocket::from_std(bind_in_netns(&a, "10.99.0.1:69")).unwrap();
    let (hub, queue) = EventHub::new(64);
    let mut events = hub.subscribe();
    tokio::spawn(queue.run_unpersisted(hub.clone()));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(rackboot_tftp::run(
        socket,
        TftpConfig {
            root: Some(dir.path().to_path_buf()),
            ..TftpConfig::default()
        },
        Arc::new(DiskOnly),
        hub,
        shutdown.clone(),
    ));

    for (blksize, window) in [(1468, 16), (8192, 4), (512, 1)] {
        let out = dir.path().join(format!("out-{blksize}"));
        let status = tokio::process::Command::new("ip")
            .args(["netns", "exec", &b, "atftp", "--option"])
            .arg(format!("blksize {blksize}"))
            .arg("--option")
            .arg(format!("windowsize {window}"))
            .args(["-g", "-r", "image", "-l"])
            .arg(&out)
            .args(["10.99.0.1", "69"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        let status = tokio::time::timeout(Duration::from_secs(60), status)
            .await
            .expect("atftp finishes")
            .unwrap();
        assert!(status.success(), "atftp {blksize}x{window}");
        assert!(
            std::fs::read(&out).unwrap() == content,
            "{blksize}x{window} differs"
        );
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.kind, EventKind::TftpSent);
        assert_eq!(
            (e.data["blksize"].as_u64(), e.data["windowsize"].as_u64()),
            (Some(blksize), Some(window))
        );
        assert_eq!(e.data["client_ip"], "10.99.0.2");
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
