//! LLDP listener in a network namespace made for the test: a veth pair, a
//! raw LLDP frame (as lldpd sends it) written on one end, heard on the other.
//! Needs root (namespaces, AF_PACKET); skipped with a message otherwise.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rackboot_agent::steps::lldp;

/// A frame lldpd 1.0.16 sent, configured as a leaf switch with PVID 42.
const FRAME: &str = "0180c200000eda3cd8feac8788cc020704da3cd8feac87040703da3cd8feac87060200040a0d6c6561662d30372e7261636b370c1d41636d65204661627269634f5320392e33206c656166207377697463680e04009c0080100c0501c0000207020000000300080b45746865726e6574312f37fe0900120f030100000000fe0900120f010080000036fe060080c201002a0000";

struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("rb-lldp-{}", std::process::id());
        let ip = |args: &[&str]| {
            let ok = Command::new("ip").args(args).status().unwrap().success();
            assert!(ok, "ip {args:?}");
        };
        ip(&["netns", "add", &name]);
        let ns = Netns(name.clone());
        ip(&[
            "-n", &name, "link", "add", "sw0", "type", "veth", "peer", "name", "eth0",
        ]);
        ip(&[
            "-n", &name, "link", "add", "sw1", "type", "veth", "peer", "name", "eth1",
        ]);
        for l in ["sw0", "sw1"] {
            ip(&["-n", &name, "link", "set", l, "up"]);
        }
        ns
    }

    /// Moves the calling thread into the namespace.
    fn enter(&self) {
        let f = std::fs::File::open(format!("/run/netns/{}", self.0)).unwrap();
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn a_frame_sent_on_one_end_is_heard_on_the_other() {
    if !rackboot_testenv::privileged("root (network namespaces, AF_PACKET)") {
        return;
    }
    let ns = Netns::new();
    let done = AtomicBool::new(false);
    let cancel = AtomicBool::new(false);
    let heard = std::thread::scope(|s| {
        let listener = s.spawn(|| {
            ns.enter();
            // eth0 is down until the listener brings it up; eth1 hears nothing.
            let heard = lldp::listen_all(
                &["eth0".to_string(), "eth1".to_string()],
                Duration::from_secs(3),
                &cancel,
            );
            done.store(true, Ordering::Relaxed);
            heard
        });
        s.spawn(|| {
            ns.enter();
            let frame = hex(FRAME);
            // Resend until the listener is done (it needs a moment to bind,
            // longer under load); the cap only bounds a stuck listener.
            for _ in 0..300 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                lldp::send_frame("sw0", &frame).unwrap();
            }
        });
        listener.join().unwrap()
    });
    assert_eq!(heard.len(), 1, "{heard:?}");
    let n = &heard["eth0"];
    assert_eq!(n.system_name.as_deref(), Some("leaf-07.rack7"));
    assert_eq!(n.port_description.as_deref(), Some("Ethernet1/7"));
    assert_eq!(n.chassis_id, "da:3c:d8:fe:ac:87");
    assert_eq!(n.management_address.as_deref(), Some("192.0.2.7"));
    assert_eq!(n.vlan_id, Some(42));
}
