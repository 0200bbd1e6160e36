//! End to end on real firmware: QEMU machines (SeaBIOS with iPXE ROM, OVMF with
//! its own PXE client) in a private namespace boot Debian's stock kernel with a
//! marker initramfs through `rackboot serve` alone — its DHCP, TFTP and boot
//! HTTP — and the boot shows up in the machine's timeline. Needs root and the
//! packages scripts/install-deps installs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Rack, VMS, assert_timeline_has};
use rackboot_lab::{MARKER, MachineSpec, firmware};

#[tokio::test]
async fn bios_machine_boots_linux_through_rackboot() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let mut rack = Rack::start(
        vec![MachineSpec::bios()],
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    rack.enroll(0, &["profile", "--profile", "linux"]);
    let line = rack.boot_and_wait(0, MARKER).await;
    assert!(
        line.contains("rackboot.machine=m1"),
        "kernel command line not rendered per machine: {line}"
    );
    let timeline = rack.timeline(0);
    assert_timeline_has(
        &timeline,
        &[
            "lease_offered",
            "lease_acked",
            "script_served",
            "asset_served",
        ],
    );
    let leases = rack.cli(&["lease", "list"]);
    assert!(
        leases.contains("52:54:00:00:00:01") && leases.contains("bound"),
        "{leases}"
    );
    // iPXE solicited an IPv6 router and was told there is none (instead of
    // waiting ~13 s for one).
    assert!(
        rack.metric("rackboot_dhcp_ipxe_ra_sent_total") >= 1.0,
        "no router advertisement was sent to iPXE; server log:\n{}",
        rack.server_log()
    );
}

#[tokio::test]
async fn uefi_machine_boots_linux_through_rackboot() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    // No NIC ROM: OVMF's own PXE client gets snponly.efi over TFTP, then iPXE gets its script.
    let mut rack = Rack::start(
        vec![MachineSpec::uefi()],
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    rack.enroll(0, &["profile", "--profile", "linux"]);
    rack.boot_and_wait(0, MARKER).await;
    let timeline = rack.timeline(0);
    assert_timeline_has(&timeline, &["lease_acked", "tftp_sent", "script_served"]);
    assert!(
        timeline.contains("snponly.efi"),
        "OVMF should have fetched snponly.efi over TFTP:\n{timeline}"
    );
    // OVMF (no client id) and then iPXE (client id 01:MAC) are one client: one address.
    let acked: std::collections::BTreeSet<&str> = timeline
        .lines()
        .filter_map(|l| l.split("acknowledged ").nth(1)?.split(' ').next())
        .collect();
    assert!(
        timeline.matches("acknowledged").count() >= 2,
        "firmware and iPXE each take a lease:\n{timeline}"
    );
    assert_eq!(acked.len(), 1, "one address for both stages:\n{timeline}");
}

#[tokio::test]
async fn unknown_machine_is_discovered_and_boots_by_selector() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let mut rack = Rack::start(
        vec![MachineSpec::bios()],
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    // Not enrolled: it is recorded on its first request; a catch-all selector picks its profile
    // once an operator sets it to boot by selector.
    rack.cli(&["selector", "add", "everything", "--profile", "linux"]);
    let m = rack.lab.machine(0).mac();
    rack.lab.start_machine(0).unwrap();
    let mut found = false;
    for _ in 0..600 {
        if rack.try_cli(&["machine", "show", &m]).is_ok() {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        found,
        "machine {m} was not discovered; server log:\n{}",
        rack.server_log()
    );
    let shown = rack.cli(&["machine", "show", &m, "-o", "json"]);
    assert!(
        shown.contains("\"discover\"") && shown.contains("bios"),
        "{shown}"
    );
    // The event is stored just after the machine (in the next batch).
    for attempt in 0.. {
        let events = rack.cli(&["events", "--mac", &m, "--tail", "1000"]);
        if events.contains("machine_discovered") {
            break;
        }
        assert!(attempt < 100, "no machine_discovered event: {events}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn local_boot_machine_exits_to_disk() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let mut rack = Rack::start(
        vec![MachineSpec::bios().with_disk(16)],
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    rack.enroll(0, &["local"]);
    // iPXE's script says `exit`; SeaBIOS moves on to the (blank) disk.
    rack.boot_and_wait(0, firmware::SEABIOS_DISK_NOT_BOOTABLE)
        .await;
    let serial = std::fs::read_to_string(rack.lab.machine(0).config().serial_log()).unwrap();
    assert!(
        !serial.contains(MARKER),
        "a local-boot machine must not boot the profile"
    );
    let timeline = rack.timeline(0);
    assert!(
        timeline.contains("local"),
        "script should be the local-disk one:\n{timeline}"
    );
}

#[tokio::test]
async fn proxy_dhcp_beside_dnsmasq_boots_linux() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let mut rack = Rack::start(vec![MachineSpec::bios()], &["--proxy-dhcp"]).await;
    // dnsmasq hands out addresses only, from a second namespace wired to the lab bridge.
    let dhcp = DhcpNeighbour::start(rack.lab.netns().name(), rack.dir());
    rack.enroll(0, &["profile", "--profile", "linux"]);
    rack.boot_and_wait(0, MARKER).await;
    let timeline = rack.timeline(0);
    assert_timeline_has(&timeline, &["proxy_dhcp_reply", "script_served"]);
    assert!(
        !timeline.contains("lease_acked"),
        "proxy mode must not hand out addresses:\n{timeline}"
    );
    let leases = std::fs::read_to_string(dhcp.dir.join("dnsmasq.leases")).unwrap_or_default();
    assert!(
        leases.contains("52:54:00:00:00:01"),
        "dnsmasq should have leased the address: {leases:?}"
    );
}

/// dnsmasq as the network's address-only DHCP server, in its own namespace joined
/// to the lab bridge by a veth pair. Dropped: dnsmasq killed, namespace deleted.
struct DhcpNeighbour {
    ns: String,
    child: std::process::Child,
    dir: PathBuf,
}

impl DhcpNeighbour {
    fn start(lab_ns: &str, dir: &Path) -> DhcpNeighbour {
        let ns = format!("rbd-{}", std::process::id());
        let ip = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {}", args.join(" "));
        };
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &ns, "link", "add", "vd0", "type", "veth", "peer", "name", "vd1", "netns", lab_ns,
        ]);
        ip(&["-n", &ns, "addr", "add", "10.77.0.2/24", "dev", "vd0"]);
        ip(&["-n", &ns, "link", "set", "vd0", "up"]);
        ip(&["-n", lab_ns, "link", "set", "vd1", "master", "br0"]);
        ip(&["-n", lab_ns, "link", "set", "vd1", "up"]);
        let dir = dir.to_path_buf();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "dnsmasq",
                "--no-daemon",
                "--port=0",
                "--interface=vd0",
                "--bind-interfaces",
                "--user=root",
            ])
            .arg("--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,1h")
            .arg(format!(
                "--dhcp-leasefile={}",
                dir.join("dnsmasq.leases").display()
            ))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .arg("--log-dhcp")
            .stdout(std::fs::File::create(dir.join("dnsmasq.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("dnsmasq.err")).unwrap())
            .spawn()
            .expect("start dnsmasq");
        DhcpNeighbour { ns, child, dir }
    }
}

impl Drop for DhcpNeighbour {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `ip netns exec` execs dnsmasq, so the child PID is dnsmasq itself.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}
