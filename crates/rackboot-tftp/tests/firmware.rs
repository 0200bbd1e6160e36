//! Real firmware: a QEMU BIOS machine (iPXE option ROM) in a private network
//! namespace boots pxelinux.0 from this server, then pxelinux loads ldlinux.c32
//! and a generated pxelinux.cfg/default whose SAY line appears on a serial port.
//! dnsmasq (DHCP only) hands out the address and boot file name. Needs root,
//! qemu-system-x86, ipxe-qemu, pxelinux, syslinux-common, dnsmasq-base.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rackboot_core::{EventHub, EventKind, GeneratedFile, TftpContent};
use rackboot_lab::strip_ansi;
use rackboot_tftp::TftpConfig;
use tokio_util::sync::CancellationToken;

/// Deletes the namespace and kills our children, even when the test fails.
struct Lab {
    ns: String,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}");
}

/// Binds a UDP socket inside the namespace (a socket stays in the namespace it was
/// created in), from a throwaway thread so the test's own threads stay outside.
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

struct PxelinuxConfig;

impl TftpContent for PxelinuxConfig {
    fn generate(&self, path: &str, client: Ipv4Addr) -> GeneratedFile {
        match path {
            "pxelinux.cfg/default" => GeneratedFile::Content(
                format!("SERIAL 1 115200\nSAY rackboot-tftp-ok {client}\nPROMPT 0\nDEFAULT nothing\nLABEL nothing\n  LOCALBOOT -1\n")
                    .into_bytes(),
            ),
            p if p.starts_with("pxelinux.cfg/") => GeneratedFile::NotFound,
            _ => GeneratedFile::NotGenerated,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bios_pxe_boots_pxelinux_from_our_server() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let ns = format!("rbt-tftp-{}", std::process::id());
    let work = tempfile::tempdir().unwrap();
    ip(&["netns", "add", &ns]);
    let mut lab = Lab {
        ns: ns.clone(),
        children: Vec::new(),
    };
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &ns, "addr", "add", "10.77.0.1/24", "dev", "br0"]);
    ip(&["-n", &ns, "link", "set", "br0", "up"]);
    ip(&["-n", &ns, "tuntap", "add", "dev", "tap0", "mode", "tap"]);
    ip(&["-n", &ns, "link", "set", "tap0", "master", "br0"]);
    ip(&["-n", &ns, "link", "set", "tap0", "up"]);

    // Wildcard bind: replies must come from 10.77.0.1 (IP_PKTINFO).
    let socket = tokio::net::UdpSocket::from_std(bind_in_netns(&ns, "0.0.0.0:69")).unwrap();
    let (hub, queue) = EventHub::new(1024);
    let mut events = hub.subscribe();
    tokio::spawn(queue.run_unpersisted(hub.clone()));
    let shutdown = CancellationToken::new();
    let config = TftpConfig {
        files: [
            (
                "pxelinux.0".to_string(),
                "/usr/lib/PXELINUX/pxelinux.0".into(),
            ),
            (
                "ldlinux.c32".to_string(),
                "/usr/lib/syslinux/modules/bios/ldlinux.c32".into(),
            ),
        ]
        .into(),
        ..TftpConfig::default()
    };
    let server = tokio::spawn(rackboot_tftp::run(
        socket,
        config,
        Arc::new(PxelinuxConfig),
        hub,
        shutdown.clone(),
    ));

    let leases = work.path().join("leases");
    lab.children.push(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
            ])
            .args([
                "--interface=br0",
                "--bind-interfaces",
                "--dhcp-range=10.77.0.100,10.77.0.150,1h",
            ])
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg("--dhcp-boot=pxelinux.0,,10.77.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq"),
    );
    // COM1 carries SeaBIOS's serial console (the screen, with cursor escapes);
    // pxelinux's SERIAL 1 goes to COM2, so its raw copy cannot interleave with the
    // screen's character by character (as it did on COM1 in a CI run).
    let console = work.path().join("console.log");
    let serial = work.path().join("pxelinux-serial.log");
    lab.children.push(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "qemu-system-x86_64",
                "-accel",
                "tcg",
                "-m",
                "256",
            ])
            .args(["-nographic", "-nodefaults", "-boot", "n"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
            .args(["-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu"),
    );

    let mut sent = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !sent.iter().any(|f: &String| f == "pxelinux.cfg/default") {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out; sent so far: {sent:?}"))
            .unwrap();
        assert_eq!(e.kind, EventKind::TftpSent, "{e:?}");
        assert_eq!(e.data["server_ip"], "10.77.0.1");
        sent.push(e.data["file"].as_str().unwrap().to_string());
    }
    assert_eq!(sent, ["pxelinux.0", "ldlinux.c32", "pxelinux.cfg/default"]);
    // pxelinux printed our generated config's SAY line. It reaches the screen
    // (which SeaBIOS mirrors to COM1 with cursor escapes) and not always its own
    // serial port (COM2 here, seen missing), so both are read, escapes stripped.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let com2 = std::fs::read_to_string(&serial).unwrap_or_default();
        let com1 = std::fs::read_to_string(&console).unwrap_or_default();
        if [&com1, &com2]
            .iter()
            .any(|log| strip_ansi(log).contains("rackboot-tftp-ok 10.77.0."))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "COM2 (pxelinux): {com2}\nCOM1 (screen): {com1}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    server.await.unwrap().unwrap();
    drop(lab);
}
