//! End to end on real firmware, beyond IPv4 PXE: a UEFI machine on an
//! IPv6-only lab network (OVMF's PXE over IPv6 → snponly.efi over TFTP/IPv6 →
//! iPXE's DHCPv6 → script, kernel and initrd over HTTP/IPv6), each through
//! `rackboot serve` alone, reaching the marker in the booted kernel. Needs root
//! and the packages scripts/install-deps installs.

mod common;

use std::time::Instant;

use common::{Rack, VMS, assert_timeline_has};
use rackboot_lab::{LabConfig, MARKER, MachineSpec};

/// `rackboot timeline` lines of one event kind.
fn lines_of<'a>(timeline: &'a str, kind: &str) -> Vec<&'a str> {
    timeline.lines().filter(|l| l.contains(kind)).collect()
}

#[tokio::test]
async fn uefi_machine_boots_on_an_ipv6_only_network() {
    let _vms = VMS.lock().await;
    let mut rack = Rack::start_lab(
        vec![MachineSpec::uefi_ipv6_pxe()],
        None,
        &["--dhcp6-range", "2001:db8:77::100-2001:db8:77::1ff"],
        LabConfig::ipv6_only,
    )
    .await;
    assert!(
        !rack.lab.netns().has_ipv4(),
        "the lab network must have no IPv4"
    );
    rack.enroll(0, &["profile", "--profile", "linux"]);
    let started = Instant::now();
    let line = rack.boot_and_wait(0, MARKER).await;
    eprintln!(
        "IPv6-only UEFI boot: power-on to marker {:?}",
        started.elapsed()
    );
    assert!(
        line.contains("rackboot.machine=m1"),
        "kernel command line not rendered per machine: {line}"
    );
    let timeline = rack.timeline(0);
    eprintln!("{timeline}");
    assert_timeline_has(
        &timeline,
        &["lease_acked", "tftp_sent", "script_served", "asset_served"],
    );
    // Firmware and iPXE both leased IPv6 addresses from the pool; the loader
    // went over TFTP to an IPv6 address, the kernel over HTTP.
    for ack in lines_of(&timeline, "lease_acked") {
        assert!(
            ack.contains("2001:db8:77::"),
            "an IPv6 lease: {ack}\n{timeline}"
        );
    }
    let tftp = lines_of(&timeline, "tftp_sent");
    assert!(
        tftp.iter()
            .any(|l| l.contains("snponly.efi") && l.contains("2001:db8:77::")),
        "snponly.efi over TFTP to an IPv6 client:\n{timeline}"
    );
    assert!(rack.metric("rackboot_dhcp6_replied_total") >= 2.0);
    assert!(rack.metric("rackboot_dhcp6_ra_sent_total") >= 1.0);
    assert_eq!(
        rack.metric("rackboot_dhcp_ipxe_ra_sent_total"),
        0.0,
        "no DHCPv4 on this network"
    );
}
