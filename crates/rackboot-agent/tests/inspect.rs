//! Inspection from a fake /proc + /sys tree in a tempdir (the layout of a
//! QEMU machine with a virtio disk, an NVMe disk, a SATA disk and NICs),
//! plus a sanity check on the real host.

use std::os::unix::fs::symlink;
use std::path::Path;

use rackboot_agent::steps::inspect;
use rackboot_agent::sysfs;
use rackboot_agent_proto::BootMode;

fn write(root: &Path, path: &str, content: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn link(root: &Path, path: &str, target: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    symlink(target, p).unwrap();
}

/// A block device: its directory under /sys/devices and the /sys/block link.
fn block(root: &Path, name: &str, devpath: &str, files: &[(&str, &str)]) {
    let dir = format!("sys/devices/{devpath}");
    for (f, v) in files {
        write(root, &format!("{dir}/{f}"), v);
    }
    link(
        root,
        &format!("sys/block/{name}"),
        &format!("../devices/{devpath}"),
    );
}

fn nic(root: &Path, name: &str, devpath: &str, files: &[(&str, &str)]) {
    let dir = format!("sys/devices/{devpath}");
    for (f, v) in files {
        write(root, &format!("{dir}/{f}"), v);
    }
    link(
        root,
        &format!("sys/class/net/{name}"),
        &format!("../../devices/{devpath}"),
    );
}

fn fake_machine(root: &Path) {
    write(
        root,
        "proc/cpuinfo",
        &(0..4)
            .map(|i| {
                format!(
                    "processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Silver 4210 CPU @ 2.20GHz\n\
                     physical id\t: {}\ncore id\t\t: {}\ncpu cores\t: 2\nflags\t\t: fpu vme sse2 vmx avx2\n\n",
                    i / 2,
                    i % 2
                )
            })
            .collect::<String>(),
    );
    write(
        root,
        "proc/meminfo",
        "MemTotal:       65842000 kB\nMemFree:        1000 kB\n",
    );
    let dmi = [
        ("sys_vendor", "Supermicro\n"),
        ("product_name", "SYS-1029P-WTR\n"),
        ("product_serial", "S123456X\n"),
        ("product_uuid", "4C4C4544-0042-3510-8052-B4C04F4B4E32\n"),
        ("board_vendor", "Supermicro\n"),
        ("board_name", "X11DDW-L\n"),
        ("board_serial", "To be filled by O.E.M.\n"),
        ("chassis_serial", "0123456789\n"),
        ("bios_vendor", "American Megatrends Inc.\n"),
        ("bios_version", "3.4\n"),
    ];
    for (f, v) in dmi {
        write(root, &format!("sys/devices/virtual/dmi/id/{f}"), v);
    }
    link(root, "sys/class/dmi/id", "../../devices/virtual/dmi/id");

    block(
        root,
        "vda",
        "pci0000:00/0000:00:04.0/virtio1/block/vda",
        &[
            ("size", "41943040\n"),
            ("serial", "VIRTIO-1\n"),
            ("removable", "0\n"),
            ("queue/rotational", "1\n"),
            ("queue/logical_block_size", "512\n"),
            ("queue/physical_block_size", "512\n"),
            ("queue/discard_max_bytes", "2147483648\n"),
            ("vda1/partition", "1\n"),
            ("vda1/start", "2048\n"),
            ("vda1/size", "409600\n"),
            ("vda2/partition", "2\n"),
            ("vda2/start", "411648\n"),
            ("vda2/size", "1000000\n"),
        ],
    );
    block(
        root,
        "nvme0n1",
        "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1",
        &[
            ("size", "1953525168\n"),
            ("nsid", "1\n"),
            ("wwid", "eui.0025388b91b2c3d4\n"),
            ("removable", "0\n"),
            ("queue/rotational", "0\n"),
            ("queue/logical_block_size", "4096\n"),
            ("queue/physical_block_size", "4096\n"),
            ("queue/discard_max_bytes", "2199023255040\n"),
        ],
    );
    // The controller's attributes (`device` is the controller).
    write(
        root,
        "sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/serial",
        "S4EWNX0R123456     \n",
    );
    write(
        root,
        "sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/model",
        "Samsung SSD 970 EVO Plus 1TB\n",
    );
    link(
        root,
        "sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1/device",
        "..",
    );

    let sata = "pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0";
    block(
        root,
        "sda",
        &format!("{sata}/block/sda"),
        &[
            ("size", "3907029168\n"),
            ("removable", "0\n"),
            ("queue/rotational", "1\n"),
        ],
    );
    write(
        root,
        &format!("sys/devices/{sata}/model"),
        "ST2000NM0055-1V4\n",
    );
    write(root, &format!("sys/devices/{sata}/vendor"), "ATA     \n");
    write(
        root,
        &format!("sys/devices/{sata}/wwid"),
        "naa.5000c500a1b2c3d4\n",
    );
    // VPD page 0x80: header (00 80 00 len) then the serial.
    let mut vpd = vec![0x00, 0x80, 0x00, 0x14];
    vpd.extend(b"            ZC1ABCDE");
    std::fs::write(root.join(format!("sys/devices/{sata}/vpd_pg80")), vpd).unwrap();
    link(
        root,
        &format!("sys/devices/{sata}/block/sda/device"),
        "../..",
    );

    // Skipped: loop, md, dm, sr, and an empty card reader.
    block(root, "loop0", "virtual/block/loop0", &[("size", "2048\n")]);
    block(root, "md127", "virtual/block/md127", &[("size", "2048\n")]);
    block(root, "dm-0", "virtual/block/dm-0", &[("size", "2048\n")]);
    block(
        root,
        "sr0",
        "pci0000:00/0000:00:1f.2/ata4/host3/target3:0:0/3:0:0:0/block/sr0",
        &[("size", "2048\n")],
    );
    block(
        root,
        "sdb",
        "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
        &[("size", "0\n")],
    );

    nic(
        root,
        "eno1",
        "pci0000:00/0000:00:03.0/virtio0/net/eno1",
        &[
            ("address", "52:54:00:12:34:56\n"),
            ("flags", "0x1003\n"),
            ("carrier", "1\n"),
            ("speed", "-1\n"),
            ("mtu", "1500\n"),
        ],
    );
    link(
        root,
        "sys/devices/pci0000:00/0000:00:03.0/virtio0/driver",
        "../../../../bus/virtio/drivers/virtio_net",
    );
    link(
        root,
        "sys/devices/pci0000:00/0000:00:03.0/virtio0/net/eno1/device",
        "../..",
    );
    nic(
        root,
        "enp59s0f1",
        "pci0000:00/0000:00:1c.0/0000:3b:00.1/net/enp59s0f1",
        &[
            ("address", "3c:fd:fe:aa:bb:cc\n"),
            ("flags", "0x1003\n"),
            ("carrier", "1\n"),
            ("speed", "25000\n"),
            ("mtu", "9000\n"),
        ],
    );
    link(
        root,
        "sys/devices/pci0000:00/0000:00:1c.0/0000:3b:00.1/driver",
        "../../../bus/pci/drivers/ice",
    );
    link(
        root,
        "sys/devices/pci0000:00/0000:00:1c.0/0000:3b:00.1/net/enp59s0f1/device",
        "../..",
    );
    // Administratively down: no link state.
    nic(
        root,
        "enp59s0f0",
        "pci0000:00/0000:00:1c.0/0000:3b:00.0/net/enp59s0f0",
        &[
            ("address", "3c:fd:fe:aa:bb:cb\n"),
            ("flags", "0x1002\n"),
            ("mtu", "1500\n"),
        ],
    );
    // Skipped: lo, a bridge, a bond, a VLAN (all virtual), and a bridge on PCI.
    nic(
        root,
        "lo",
        "virtual/net/lo",
        &[("address", "00:00:00:00:00:00\n")],
    );
    nic(
        root,
        "br0",
        "virtual/net/br0",
        &[
            ("address", "52:54:00:00:00:01\n"),
            ("bridge/stp_state", "0\n"),
        ],
    );
    nic(
        root,
        "bond0",
        "virtual/net/bond0",
        &[("address", "52:54:00:00:00:02\n")],
    );
    nic(
        root,
        "eno1.42",
        "virtual/net/eno1.42",
        &[("address", "52:54:00:12:34:56\n")],
    );

    write(root, "sys/firmware/efi/efivars/placeholder", "");
    let mut sb = vec![0x06, 0x00, 0x00, 0x00, 0x01];
    sb.truncate(5);
    std::fs::write(
        root.join("sys/firmware/efi/efivars")
            .join(inspect::SECURE_BOOT_VAR),
        sb,
    )
    .unwrap();
}

/// name, mac, driver, link, speed, mtu, pci
type NicRow<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<bool>,
    Option<u32>,
    u32,
    Option<&'a str>,
);

#[test]
fn facts_from_a_fake_tree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fake_machine(root);
    let f = inspect::gather(root);

    assert_eq!(f.cpu.model, "Intel(R) Xeon(R) Silver 4210 CPU @ 2.20GHz");
    assert_eq!((f.cpu.sockets, f.cpu.cores, f.cpu.threads), (2, 4, 4));
    assert!(f.cpu.flags.contains(&"vmx".to_string()));
    assert_eq!(f.memory_bytes, 65_842_000 * 1024);

    assert_eq!(f.dmi.vendor.as_deref(), Some("Supermicro"));
    assert_eq!(f.dmi.serial.as_deref(), Some("S123456X"));
    assert_eq!(
        f.dmi.uuid.as_deref(),
        Some("4c4c4544-0042-3510-8052-b4c04f4b4e32")
    );
    assert_eq!(f.dmi.board_serial, None);
    assert_eq!(f.dmi.chassis_serial, None);
    assert_eq!(f.dmi.bios_version.as_deref(), Some("3.4"));

    let names: Vec<&str> = f.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["nvme0n1", "sda", "vda"]);
    let nvme = &f.disks[0];
    assert_eq!(nvme.size_bytes, 1_953_525_168 * 512);
    assert_eq!(nvme.serial.as_deref(), Some("S4EWNX0R123456"));
    assert_eq!(nvme.model.as_deref(), Some("Samsung SSD 970 EVO Plus 1TB"));
    assert_eq!(nvme.wwn.as_deref(), Some("eui.0025388b91b2c3d4"));
    assert_eq!(nvme.by_path.as_deref(), Some("pci-0000:3d:00.0-nvme-1"));
    assert_eq!(nvme.transport.as_deref(), Some("nvme"));
    assert_eq!(
        (nvme.logical_block_size, nvme.rotational, nvme.discard),
        (4096, false, true)
    );
    let sda = &f.disks[1];
    assert_eq!(sda.serial.as_deref(), Some("ZC1ABCDE"));
    assert_eq!(sda.vendor.as_deref(), Some("ATA"));
    assert_eq!(sda.wwn.as_deref(), Some("naa.5000c500a1b2c3d4"));
    assert_eq!(sda.by_path.as_deref(), Some("pci-0000:00:1f.2-ata-3"));
    assert_eq!(sda.transport.as_deref(), Some("ata"));
    assert!(sda.rotational && !sda.discard);
    let vda = &f.disks[2];
    assert_eq!(vda.path, "/dev/vda");
    assert_eq!(vda.size_bytes, 20 << 30);
    assert_eq!(vda.serial.as_deref(), Some("VIRTIO-1"));
    assert_eq!(vda.by_path.as_deref(), Some("pci-0000:00:04.0"));
    assert_eq!(vda.transport.as_deref(), Some("virtio"));

    let nics: Vec<NicRow> = f
        .nics
        .iter()
        .map(|n| {
            (
                n.name.as_str(),
                n.mac.as_str(),
                n.driver.as_deref(),
                n.link_up,
                n.speed_mbps,
                n.mtu,
                n.pci.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        nics,
        [
            (
                "eno1",
                "52:54:00:12:34:56",
                Some("virtio_net"),
                Some(true),
                None,
                1500,
                Some("0000:00:03.0")
            ),
            (
                "enp59s0f0",
                "3c:fd:fe:aa:bb:cb",
                None,
                None,
                None,
                1500,
                Some("0000:3b:00.0")
            ),
            (
                "enp59s0f1",
                "3c:fd:fe:aa:bb:cc",
                Some("ice"),
                Some(true),
                Some(25000),
                9000,
                Some("0000:3b:00.1")
            ),
        ]
    );
    assert_eq!(f.boot.mode, BootMode::Uefi);
    assert_eq!(f.boot.secure_boot, Some(true));

    let parts = sysfs::partitions(root, "vda");
    assert_eq!(parts.len(), 2);
    assert_eq!(
        (
            parts[1].name.as_str(),
            parts[1].start_sector,
            parts[1].size_sectors
        ),
        ("vda2", 411_648, 1_000_000)
    );
}

#[test]
fn cpuinfo_meminfo_and_dmi_tables() {
    // arm64 has no model name or physical id; one socket, threads = cores.
    let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd aes\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd aes\n\n";
    let c = inspect::parse_cpuinfo(arm, "aarch64");
    assert_eq!(
        (c.sockets, c.cores, c.threads, c.arch.as_str()),
        (1, 2, 2, "aarch64")
    );
    assert_eq!(c.flags, ["fp", "asimd", "aes"]);
    // Hyper-threads: two logical CPUs per core.
    let ht: String = (0..4)
        .map(|i| format!("processor\t: {i}\nmodel name\t: X\nphysical id\t: 0\ncore id\t\t: {}\ncpu cores\t: 2\n\n", i % 2))
        .collect();
    let c = inspect::parse_cpuinfo(&ht, "x86_64");
    assert_eq!((c.sockets, c.cores, c.threads), (1, 2, 4));
    assert_eq!(inspect::parse_cpuinfo("", "x86_64").threads, 0);

    for (text, want) in [
        ("MemTotal:        2048 kB\n", Some(2048 * 1024)),
        ("MemFree: 1 kB\nMemTotal: 10 kB\n", Some(10240)),
        ("MemTotal: x kB\n", None),
        ("", None),
    ] {
        assert_eq!(inspect::parse_meminfo(text), want, "{text:?}");
    }

    for (raw, want) in [
        ("Dell Inc.\n", Some("Dell Inc.")),
        ("  CZ1234  ", Some("CZ1234")),
        ("To be filled by O.E.M.", None),
        ("To Be Filled By O.E.M.", None),
        ("Default string", None),
        ("0123456789", None),
        ("", None),
        ("Not Specified", None),
        ("00000000", None),
        ("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", None),
        ("03000200-0400-0500-0006-000700080009", None),
        ("0", None),
        ("100", Some("100")),
    ] {
        assert_eq!(inspect::dmi_value(raw).as_deref(), want, "{raw:?}");
    }
}

#[test]
fn the_real_host_has_a_cpu_memory_and_a_kernel() {
    let f = inspect::gather(Path::new("/"));
    assert!(f.cpu.threads >= 1, "{:?}", f.cpu);
    assert!(f.cpu.cores >= 1 && f.cpu.sockets >= 1);
    assert!(!f.cpu.arch.is_empty());
    assert!(f.memory_bytes > 64 << 20);
    assert!(!f.kernel.is_empty());
    for d in &f.disks {
        assert!(
            d.size_bytes > 0 && d.path == format!("/dev/{}", d.name),
            "{d:?}"
        );
        assert!(sysfs::is_os_disk_name(&d.name));
    }
    for n in &f.nics {
        assert_ne!(n.name, "lo");
        assert_eq!(n.mac.len(), 17, "{n:?}");
    }
    // JSON round trip through the contract.
    let json = serde_json::to_string(&f).unwrap();
    let back: rackboot_agent_proto::Facts = serde_json::from_str(&json).unwrap();
    assert_eq!(back, f);
}
