//! The test OS image: its layout read back with the standard tools, then real boots from a lab
//! machine's disk (SeaBIOS → syslinux → host kernel → busybox /init) with the hostname and static
//! address its root file system names, directly and through an IPMI BMC with only the second of
//! two disks attached. Needs root (namespaces, taps), qemu-system-x86, busybox-static,
//! linux-image-amd64, syslinux, syslinux-common, mtools, dosfstools, e2fsprogs, fdisk, openipmi,
//! iputils-ping. Run with `--nocapture` to see the boot timings.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rackboot_lab::test_os::{
    ROOT_LABEL, TESTOS_PREFIX, TestOsImage, TestOsMarker, TestOsOptions, build_image, parse_marker,
};
use rackboot_lab::{BmcKind, BootOrder, Lab, LabConfig, MachineSpec};
use tokio::sync::Mutex;

/// The VMs are CPU-bound under TCG: one at a time, so timings mean something on 2 cores.
static VMS: Mutex<()> = Mutex::const_new(());

/// Power-on to marker under TCG (SeaBIOS, syslinux, kernel, /init): ~6 s on an idle 2-core
/// machine, 14-17 s with other VMs running.
const BOOT_TIMEOUT: Duration = Duration::from_secs(100);

const INTERFACES: &str = "auto lo\niface lo inet loopback\n\n\
                          auto eth0\niface eth0 inet static\n    address 10.77.0.50/24\n";

/// The image a deploy would have produced: hostname testos1, eth0 at 10.77.0.50/24.
fn configured_image(dir: &Path) -> TestOsImage {
    let started = Instant::now();
    let image = build_image(
        &TestOsOptions::new(dir.join("testos.img"))
            .with_root_file("etc/hostname", "testos1\n")
            .with_root_file("/etc/network/interfaces", INTERFACES),
    )
    .unwrap();
    eprintln!("test OS image built in {:?}", started.elapsed());
    image
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies `len` bytes at `offset` of `image` into their own file (tools that take no offset).
fn extract(image: &Path, offset: u64, len: u64, to: &Path) {
    let data = std::fs::read(image).unwrap();
    std::fs::write(to, &data[offset as usize..(offset + len) as usize]).unwrap();
}

#[test]
fn image_has_mbr_syslinux_fat_and_a_labelled_ext4_root() {
    let dir = tempfile::tempdir().unwrap();
    let image = configured_image(dir.path());
    let path = image.path.to_str().unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), 96 << 20);
    assert!(
        !Path::new(&format!("{path}.work")).exists(),
        "scratch files are removed"
    );

    // Partition table: FAT16 active at 1 MiB, Linux after it up to the end.
    let table: serde_json::Value =
        serde_json::from_str(&tool("sfdisk", &["--json", path])).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{table}");
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[0]["type"], "e");
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(parts[1]["start"], image.root.start_sector);
    assert_eq!(parts[1]["type"], "83");
    assert_eq!(
        parts[1]["start"].as_u64().unwrap() + parts[1]["size"].as_u64().unwrap(),
        96 * 2048
    );

    // syslinux's MBR boot code, then the table and the boot signature.
    let bytes = std::fs::read(path).unwrap();
    let mbr = std::fs::read("/usr/lib/syslinux/mbr/mbr.bin").unwrap();
    assert_eq!(&bytes[..mbr.len()], &mbr[..]);
    assert_eq!(&bytes[510..512], &[0x55, 0xaa]);

    // The FAT partition: syslinux installed, config, kernel, initramfs.
    let fat = dir.path().join("boot.fat");
    extract(&image.path, image.boot.offset(), image.boot.len(), &fat);
    let fat_arg = format!("{}", fat.display());
    let listing = tool("mdir", &["-a", "-b", "-i", &fat_arg, "::"]);
    for name in [
        "LDLINUX.SYS",
        "LDLINUX.C32",
        "VMLINUZ",
        "INITRD.IMG",
        "SYSLINUX.CFG",
    ] {
        assert!(listing.to_uppercase().contains(name), "{name}: {listing}");
    }
    let cfg = tool("mtype", &["-i", &fat_arg, "::syslinux.cfg"]);
    assert!(cfg.contains("APPEND console=ttyS0 panic=-1 quiet"), "{cfg}");
    let kernel_copy = dir.path().join("vmlinuz");
    tool(
        "mcopy",
        &["-i", &fat_arg, "::vmlinuz", kernel_copy.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read(&kernel_copy).unwrap(),
        std::fs::read(&image.kernel).unwrap()
    );

    // The initramfs: /init, busybox and every module to load.
    let initrd = dir.path().join("initrd.img");
    tool(
        "mcopy",
        &["-i", &fat_arg, "::initrd.img", initrd.to_str().unwrap()],
    );
    let members = tool(
        "sh",
        &[
            "-c",
            &format!("zcat {} | cpio -t --quiet", initrd.display()),
        ],
    );
    let members: Vec<&str> = members.lines().collect();
    for needed in [
        "init",
        "bin/busybox",
        "bin/ifup",
        "bin/findfs",
        "dev/console",
    ] {
        assert!(members.contains(&needed), "{needed} missing");
    }
    assert!(
        image.modules.iter().any(|m| m.ends_with("/virtio_blk.ko")),
        "{:?}",
        image.modules
    );
    for module in &image.modules {
        let member = format!("lib/modules/{module}");
        assert!(members.contains(&member.as_str()), "{member} missing");
    }

    // The root partition: ext4 labelled rootfs with the default and the given files.
    let root = dir.path().join("root.ext4");
    extract(&image.path, image.root.offset(), image.root.len(), &root);
    let root_arg = root.to_str().unwrap();
    assert_eq!(tool("e2label", &[root_arg]).trim(), ROOT_LABEL);
    let cat = |file: &str| tool("debugfs", &["-R", &format!("cat {file}"), root_arg]);
    let os_release = cat("/etc/os-release");
    assert!(os_release.contains("ID=rackboot-testos\n"), "{os_release}");
    assert!(os_release.contains("ID_LIKE=debian\n"), "{os_release}");
    assert_eq!(cat("/etc/hostname"), "testos1\n");
    assert_eq!(cat("/etc/network/interfaces"), INTERFACES);
}

/// The line the test OS printed, checked to be the "up" marker (a failure line fails here with
/// its reason instead of after a timeout).
fn expect_marker(line: &str) -> TestOsMarker {
    parse_marker(line).unwrap_or_else(|| panic!("the test OS did not come up: {line}"))
}

fn configured_marker() -> TestOsMarker {
    TestOsMarker {
        host: "testos1".into(),
        addrs: vec!["10.77.0.50/24".into()],
    }
}

#[tokio::test]
async fn test_os_boots_from_disk_with_its_hostname_and_address_and_answers_ping() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let image = configured_image(dir.path());
    let mut lab = Lab::create(LabConfig::new(
        dir.path().join("lab"),
        vec![
            MachineSpec::bios()
                .with_disk(128)
                .with_boot(BootOrder::DiskFirst),
        ],
    ))
    .unwrap();
    image
        .write_to(&lab.machine(0).config().disk_path(0))
        .unwrap();

    let started = Instant::now();
    lab.start_machine(0).unwrap();
    let line = lab
        .machine(0)
        .wait_for_serial(TESTOS_PREFIX, BOOT_TIMEOUT)
        .await
        .unwrap();
    eprintln!(
        "disk boot (SeaBIOS, syslinux, kernel, /init) to marker: {:?}",
        started.elapsed()
    );
    assert_eq!(expect_marker(&line), configured_marker(), "{line}");

    let ping = |addr: &str| {
        lab.netns()
            .command("ping")
            .args(["-c", "1", "-W", "2", addr])
            .output()
            .unwrap()
    };
    let answer = ping("10.77.0.50");
    assert!(answer.status.success(), "{answer:?}");
    // Nobody else is on the lab bridge: only the configured address answers.
    assert!(!ping("10.77.0.51").status.success());
    lab.teardown().unwrap();
}

/// How the RAID-1 deploy test checks "boots from either disk": the same image on both disks,
/// the machine powered on by its BMC with only disk 2 attached.
#[tokio::test]
async fn two_disk_machine_boots_from_its_second_disk_alone_through_its_bmc() {
    if !rackboot_testenv::privileged("root: network namespaces, QEMU machines") {
        return;
    }
    let _vms = VMS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let image = configured_image(dir.path());
    let mut config = LabConfig::new(
        dir.path().join("lab"),
        vec![
            MachineSpec::bios()
                .with_disks(2, 128)
                .with_boot(BootOrder::DiskFirst),
        ],
    );
    config.bmc = Some(BmcKind::Ipmi);
    let mut lab = Lab::create(config).unwrap();
    let machine = lab.machine(0).config().clone();
    for disk in 0..2 {
        image.write_to(&machine.disk_path(disk)).unwrap();
    }
    lab.set_attached_disks(0, Some(vec![1])).unwrap();

    let bmc = lab.bmc(0).unwrap();
    let from = bmc.serial_len();
    let started = Instant::now();
    lab.start_machine(0).unwrap();
    let bmc = lab.bmc(0).unwrap();
    let line = bmc
        .wait_for_serial(TESTOS_PREFIX, from, BOOT_TIMEOUT)
        .await
        .unwrap();
    eprintln!(
        "disk 2 alone, powered on through the chassis program: marker after {:?}",
        started.elapsed()
    );
    assert_eq!(expect_marker(&line), configured_marker(), "{line}");

    // QEMU was given disk 2 (with its own serial) and not disk 1.
    let pid = bmc.qemu_pid().expect("powered on");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains(&format!("file={},", machine.disk_path(1).display())),
        "{cmdline}"
    );
    assert!(cmdline.contains("serial=rbm1d1,"), "{cmdline}");
    assert!(
        !cmdline.contains(&machine.disk_path(0).display().to_string()),
        "{cmdline}"
    );
    assert!(cmdline.contains("serial=RBLAB-m1"), "{cmdline}");
    lab.teardown().unwrap();
}
