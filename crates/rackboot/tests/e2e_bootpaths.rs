//! End to end on real firmware, beyond IPv4 PXE with iPXE, each through
//! `rackboot serve` alone and reaching the marker in the booted kernel:
//! - a UEFI machine on an IPv6-only lab network (OVMF's PXE over IPv6 →
//!   snponly.efi over TFTP/IPv6 → iPXE's DHCPv6 → script, kernel and initrd
//!   over HTTP/IPv6);
//! - a UEFI machine that boots by UEFI HTTP boot only (the TFTP server sees
//!   nothing from it);
//! - Secure Boot enforced with Microsoft's keys: shim → Debian's signed network
//!   GRUB → its generated config → the signed Debian kernel.
//!
//! Needs root and the packages scripts/install-deps installs.

mod common;

use std::time::Instant;

use common::{CMDLINE, Rack, VMS, assert_timeline_has};
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

#[tokio::test]
async fn uefi_http_boot_machine_never_touches_tftp() {
    let _vms = VMS.lock().await;
    let mut rack = Rack::start(
        vec![MachineSpec::uefi_http_boot()],
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    rack.enroll(0, &["profile", "--profile", "linux"]);
    let started = Instant::now();
    let line = rack.boot_and_wait(0, MARKER).await;
    eprintln!("UEFI HTTP boot: power-on to marker {:?}", started.elapsed());
    assert!(line.contains("rackboot.machine=m1"), "{line}");
    let serial = rack.lab.machine(0).serial_text();
    assert!(
        serial.contains("HTTP"),
        "the firmware should have booted its HTTP boot option:\n{serial}"
    );
    let timeline = rack.timeline(0);
    eprintln!("{timeline}");
    assert_timeline_has(&timeline, &["lease_acked", "script_served", "asset_served"]);
    // The firmware fetched iPXE by the URL it was given, over HTTP.
    assert!(
        lines_of(&timeline, "asset_served")
            .iter()
            .any(|l| l.contains("snponly.efi")),
        "the loader over HTTP:\n{timeline}"
    );
    assert!(
        rack.metric_labelled("rackboot_boot_dhcp_answers_total", "file=\"http_loader\"") >= 1.0
    );
    // And the TFTP server saw nothing at all from it.
    assert!(!timeline.contains("tftp"), "{timeline}");
    for metric in [
        "rackboot_tftp_transfers_started_total",
        "rackboot_tftp_requests_rejected_total",
        "rackboot_tftp_dropped_total",
    ] {
        assert_eq!(rack.metric(metric), 0.0, "{metric}");
    }
}

#[tokio::test]
async fn secure_boot_machine_boots_shim_grub_and_a_signed_kernel() {
    let _vms = VMS.lock().await;
    let mut rack = Rack::start(
        vec![MachineSpec::uefi_secure_boot().with_no_reboot()],
        &["--dhcp-range", "10.77.0.100-10.77.0.150"],
    )
    .await;
    // An unsigned kernel in a Secure Boot profile is refused when the profile
    // is saved, with the reason.
    let assets = rack.dir().join("assets");
    let unsigned = assets.join("vmlinuz-unsigned");
    std::fs::copy(assets.join("vmlinuz"), &unsigned).unwrap();
    let status = std::process::Command::new("sbattach")
        .arg("--remove")
        .arg(&unsigned)
        .status()
        .expect("sbattach (sbsigntool)");
    assert!(status.success(), "sbattach --remove");
    let refused = rack
        .try_cli(&[
            "profile",
            "add",
            "unsigned",
            "--kernel",
            "vmlinuz-unsigned",
            "--loader",
            "shim",
        ])
        .expect_err("an unsigned kernel in a shim profile must be refused");
    assert!(
        refused.contains("Secure Boot") && refused.contains("Authenticode"),
        "{refused}"
    );
    // Not quiet: the kernel says whether it found Secure Boot on.
    let cmdline = CMDLINE.replace(" quiet", "");
    rack.cli(&[
        "profile",
        "add",
        "signed",
        "--kernel",
        "vmlinuz",
        "--initrd",
        "marker.cpio.gz",
        "--cmdline",
        &cmdline,
        "--loader",
        "shim",
    ]);
    rack.enroll(0, &["profile", "--profile", "signed"]);
    let started = Instant::now();
    let line = rack.boot_and_wait(0, MARKER).await;
    eprintln!("Secure Boot: power-on to marker {:?}", started.elapsed());
    assert!(line.contains("rackboot.machine=m1"), "{line}");
    let serial = rack.lab.machine(0).serial_text();
    assert!(
        serial.contains("Secure boot enabled"),
        "the kernel should report Secure Boot on:\n{serial}"
    );
    let timeline = rack.timeline(0);
    eprintln!("{timeline}");
    for file in [
        "shimx64.efi",
        "grubx64.efi",
        "grub.cfg-01-52:54:00:00:00:01",
        "vmlinuz",
    ] {
        assert!(
            lines_of(&timeline, "tftp_sent")
                .iter()
                .any(|l| l.contains(file)),
            "{file} over TFTP:\n{timeline}"
        );
    }
    assert!(
        !timeline.contains("snponly.efi"),
        "a Secure Boot machine must never be handed iPXE:\n{timeline}"
    );
}
