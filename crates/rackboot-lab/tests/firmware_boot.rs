//! Real firmware in the virtual rack: SeaBIOS and OVMF network-boot the host kernel with the marker
//! initramfs from a stand-in server (dnsmasq), and fall through to the local disk when iPXE exits.
//! Needs root (namespaces, taps), qemu-system-x86, ipxe-qemu, ipxe, ovmf, busybox-static,
//! dnsmasq-base and a /boot/vmlinuz-*. Run with `--nocapture` to see the boot timings.

use std::time::{Duration, Instant};

use rackboot_lab::{
    DnsmasqRole, LOCAL_BOOT_IPXE_SCRIPT, Lab, LabConfig, MARKER, MARKER_KERNEL_CMDLINE,
    MachineConfig, MachineSpec, Netns, NetnsConfig, QemuMachine, build_marker_initramfs, firmware,
    host_kernel, lab_mac, marker_ipxe_script, stage_tftp_root,
};
use tokio::sync::Mutex;

/// The VMs are CPU-bound under TCG: run one test's machines at a time so the timings mean
/// something and nothing times out on a 2-core machine.
static VMS: Mutex<()> = Mutex::const_new(());

/// Generous: measured ~26 s (BIOS) and ~39 s (UEFI) for the whole boot with two VMs at once.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test]
async fn marker_initramfs_boots_the_host_kernel_directly() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("marker.cpio.gz");
    build_marker_initramfs(&initrd).unwrap();
    let kernel = host_kernel().unwrap();

    let netns = Netns::create(&NetnsConfig::new(
        &rackboot_lab::unique_name("rbl-direct"),
        "10.77.0.1".parse().unwrap(),
        24,
        1,
    ))
    .unwrap();
    let mut machine = QemuMachine::new(MachineConfig {
        name: "direct".into(),
        mac: lab_mac(0),
        tap: netns.taps()[0].clone(),
        dir: dir.path().to_path_buf(),
        no_reboot: true,
        extra_args: vec![
            "-kernel".into(),
            kernel.display().to_string(),
            "-initrd".into(),
            initrd.display().to_string(),
            "-append".into(),
            format!("{MARKER_KERNEL_CMDLINE} lab.test=direct"),
        ],
        ..lab_machine_config(dir.path())
    })
    .unwrap();
    let started = Instant::now();
    machine.start(&netns).unwrap();
    let line = machine
        .wait_for_serial(MARKER, Duration::from_secs(120))
        .await
        .unwrap();
    eprintln!("direct kernel boot: marker after {:?}", started.elapsed());
    assert!(line.contains("lab.test=direct"), "{line}");
    // /init powers off, so QEMU exits by itself.
    let status = machine.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn bios_and_uefi_machines_netboot_the_marker_kernel() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tftp = stage_tftp_root(&dir.path().join("tftp"), &marker_ipxe_script()).unwrap();
    let mut lab = Lab::create(LabConfig::new(
        dir.path().join("lab"),
        // SeaBIOS + QEMU's iPXE ROM; OVMF's own PXE client chainloading snponly.efi.
        vec![MachineSpec::bios(), MachineSpec::uefi()],
    ))
    .unwrap();
    lab.start_dnsmasq(DnsmasqRole::BootServer { tftp_root: tftp })
        .await
        .unwrap();

    let started = Instant::now();
    lab.start_all().unwrap();
    let (bios, uefi) = (lab.machine(0), lab.machine(1));
    let (bios_line, uefi_line) = tokio::join!(
        async {
            let line = bios.wait_for_serial(MARKER, BOOT_TIMEOUT).await;
            eprintln!(
                "BIOS (SeaBIOS + iPXE ROM): marker after {:?}",
                started.elapsed()
            );
            line
        },
        async {
            let line = uefi.wait_for_serial(MARKER, BOOT_TIMEOUT).await;
            eprintln!(
                "UEFI (OVMF PXE + snponly.efi): marker after {:?}",
                started.elapsed()
            );
            line
        },
    );
    let bios_line = bios_line.unwrap();
    let uefi_line = uefi_line.unwrap();
    assert!(
        bios_line.contains("lab.mac=52:54:00:00:00:01"),
        "{bios_line}"
    );
    assert!(
        uefi_line.contains("lab.mac=52:54:00:00:00:02"),
        "{uefi_line}"
    );

    // The path each firmware took, as the lead's rackboot tests must reproduce it.
    let bios_serial = bios.serial_text();
    assert!(
        bios_serial.contains(firmware::SEABIOS_BOOTING_ROM),
        "{bios_serial}"
    );
    assert!(bios_serial.contains("Filename: boot.ipxe"), "{bios_serial}");
    assert!(bios_serial.contains("rackboot-lab: booting marker kernel platform=pcbios"));
    let uefi_serial = uefi.serial_text();
    assert!(
        uefi_serial.contains(firmware::OVMF_START_PXE),
        "{uefi_serial}"
    );
    assert!(
        uefi_serial.contains("NBP filename is snponly.efi"),
        "{uefi_serial}"
    );
    assert!(uefi_serial.contains("rackboot-lab: booting marker kernel platform=efi"));

    for machine in [bios, uefi] {
        let status = machine.wait_exit(Duration::from_secs(60)).await.unwrap();
        assert!(status.success(), "{}: {status}", machine.name());
    }
    lab.teardown().unwrap();
}

#[tokio::test]
async fn boot_local_disk_falls_through_to_the_blank_disk() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let tftp = stage_tftp_root(&dir.path().join("tftp"), LOCAL_BOOT_IPXE_SCRIPT).unwrap();
    let mut lab = Lab::create(LabConfig::new(
        dir.path().join("lab"),
        vec![
            MachineSpec::bios().with_disk(64),
            MachineSpec::uefi().with_disk(64),
        ],
    ))
    .unwrap();
    lab.start_dnsmasq(DnsmasqRole::BootServer { tftp_root: tftp })
        .await
        .unwrap();

    let started = Instant::now();
    lab.start_all().unwrap();
    let (bios, uefi) = (lab.machine(0), lab.machine(1));
    let (bios_result, uefi_result) = tokio::join!(
        async {
            let line = bios
                .wait_for_serial(firmware::SEABIOS_NO_BOOT_DEVICE, BOOT_TIMEOUT)
                .await;
            eprintln!(
                "BIOS fall-through: {:?} after {:?}",
                line,
                started.elapsed()
            );
            line
        },
        async {
            let line = uefi
                .wait_for_serial(firmware::OVMF_FALLBACK_UI, BOOT_TIMEOUT)
                .await;
            eprintln!(
                "UEFI fall-through: {:?} after {:?}",
                line,
                started.elapsed()
            );
            line
        },
    );
    bios_result.unwrap();
    uefi_result.unwrap();

    // The script ran and iPXE returned to the firmware, which then tried the disk.
    let bios_serial = bios.serial_text();
    for expected in [
        "rackboot-lab: boot local disk",
        firmware::IPXE_NO_MORE_NET_DEVICES,
        "Booting from Hard Disk...",
        firmware::SEABIOS_DISK_NOT_BOOTABLE,
    ] {
        assert!(
            bios_serial.contains(expected),
            "BIOS: no {expected:?} in\n{bios_serial}"
        );
    }
    let bios_order = [
        "rackboot-lab: boot local disk",
        firmware::SEABIOS_DISK_NOT_BOOTABLE,
        firmware::SEABIOS_NO_BOOT_DEVICE,
    ]
    .map(|s| bios_serial.find(s).unwrap());
    assert!(bios_order.is_sorted(), "BIOS order {bios_order:?}");
    let uefi_serial = uefi.serial_text();
    for expected in [
        "rackboot-lab: boot local disk",
        firmware::IPXE_NO_MORE_NET_DEVICES,
    ] {
        assert!(
            uefi_serial.contains(expected),
            "UEFI: no {expected:?} in\n{uefi_serial}"
        );
    }
    assert!(!uefi_serial.contains(MARKER) && !bios_serial.contains(MARKER));
    lab.teardown().unwrap();
}

fn lab_machine_config(dir: &std::path::Path) -> MachineConfig {
    let spec = MachineSpec::bios();
    MachineConfig {
        name: "m".into(),
        mac: lab_mac(0),
        tap: "tap1".into(),
        firmware: spec.firmware,
        memory_mib: spec.memory_mib,
        nic_rom: spec.nic_rom,
        disks_mib: spec.disks_mib,
        dmi_serial: spec.dmi_serial,
        boot: spec.boot,
        no_reboot: spec.no_reboot,
        dir: dir.to_path_buf(),
        extra_args: spec.extra_args,
    }
}
