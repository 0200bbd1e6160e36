//! dnsmasq as a stand-in boot server inside a lab, until `rackboot serve` replaces it. The TFTP
//! root and iPXE scripts staged here are what rackboot must serve for the same tests.

#![allow(dead_code)] // each test binary uses a different part

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rackboot_lab::{Lab, MARKER_KERNEL_CMDLINE, build_marker_initramfs, firmware, host_kernel};

/// iPXE script: load the host kernel and marker initramfs from the same TFTP server. The
/// `initrd=` argument is what this (2019) iPXE needs on UEFI for the EFI stub to find the initrd;
/// BIOS ignores it. `lab.mac=${net0/mac}` proves which machine ran the script.
pub fn marker_script() -> String {
    format!(
        "#!ipxe\n\
         echo rackboot-lab: booting marker kernel platform=${{platform}}\n\
         kernel vmlinuz initrd=marker.cpio.gz {MARKER_KERNEL_CMDLINE} lab.mac=${{net0/mac}}\n\
         initrd marker.cpio.gz\n\
         boot\n"
    )
}

/// iPXE script that hands the machine back to its firmware ("boot from local disk").
pub const LOCAL_BOOT_SCRIPT: &str = "#!ipxe\necho rackboot-lab: boot local disk\nexit\n";

/// Stages a TFTP root: host kernel as `vmlinuz`, `marker.cpio.gz`, the iPXE binaries, and
/// `boot.ipxe` with `script`.
pub fn stage_tftp_root(dir: &Path, script: &str) -> PathBuf {
    let root = dir.join("tftp");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(host_kernel().unwrap(), root.join("vmlinuz")).unwrap();
    build_marker_initramfs(&root.join("marker.cpio.gz")).unwrap();
    for binary in firmware::ipxe_binaries() {
        std::fs::copy(&binary, root.join(binary.file_name().unwrap()))
            .unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
    }
    std::fs::write(root.join("boot.ipxe"), script).unwrap();
    root
}

/// Starts dnsmasq in the lab's namespace as a full DHCP server + TFTP server on the bridge:
/// - iPXE (sends option 175) gets `boot.ipxe`;
/// - UEFI x86-64 firmware PXE (client arch 7) gets `snponly.efi` to chainload iPXE (`ipxe.efi`
///   boots too, but hangs when its script `exit`s back to OVMF: see `firmware`);
/// - BIOS firmware PXE gets `undionly.kpxe` (unused with QEMU's iPXE ROM, which is iPXE itself).
///
/// Returns once dnsmasq has bound its sockets.
pub async fn start_dnsmasq(lab: &mut Lab, tftp_root: &Path) {
    let net = lab.bridge_addr().octets();
    let range_start = Ipv4Addr::new(net[0], net[1], net[2], 100);
    let range_end = Ipv4Addr::new(net[0], net[1], net[2], 200);
    let bridge = lab.netns().bridge().to_string();
    let mut cmd = lab.netns().command("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--log-facility=-",
        "--conf-file=/dev/null",
        "--port=0",
        // The TFTP root is in a private temporary directory: stay root to read it.
        "--user=root",
        "--group=root",
        "--bind-interfaces",
        &format!("--interface={bridge}"),
        &format!("--dhcp-range={range_start},{range_end},255.255.255.0,10m"),
        &format!(
            "--dhcp-leasefile={}",
            lab.dir().join("dnsmasq.leases").display()
        ),
        "--log-dhcp",
        "--enable-tftp",
        &format!("--tftp-root={}", tftp_root.display()),
        "--dhcp-match=set:ipxe,175",
        "--dhcp-match=set:efi64,option:client-arch,7",
        "--dhcp-boot=tag:ipxe,boot.ipxe",
        "--dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi",
        "--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe",
    ]);
    let dnsmasq = lab.spawn_helper("dnsmasq", cmd).unwrap();
    dnsmasq
        .wait_for_output(
            "sockets bound exclusively to interface",
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|e| panic!("dnsmasq did not start: {e}"));
}
