//! Reading disks and NICs from sysfs, under a root path so tests use a fake
//! tree. Pure helpers (`by_path`, `transport`, name filters) take the
//! device's sysfs path as a string.

use std::path::{Path, PathBuf};

use rackboot_agent_proto::{DiskFacts, NicFacts};

use crate::context::read_trimmed;

/// Kernel block device names that cannot hold an OS: loop, RAM disks, md
/// and device-mapper arrays, optical and floppy drives.
pub fn is_os_disk_name(name: &str) -> bool {
    const SKIP: [&str; 7] = ["loop", "ram", "zram", "md", "dm-", "sr", "fd"];
    !SKIP.iter().any(|p| name.starts_with(p))
}

/// The device's path under `/sys/devices`, e.g.
/// `pci0000:00/0000:00:04.0/virtio1/block/vda`, from the `/sys/block/NAME`
/// or `/sys/class/net/NAME` link.
pub fn device_path(sys_root: &Path, link: &str) -> Option<String> {
    let real = std::fs::canonicalize(sys_root.join(link)).ok()?;
    let devices = std::fs::canonicalize(sys_root.join("sys/devices")).ok()?;
    let rel = real.strip_prefix(&devices).ok()?;
    Some(rel.to_string_lossy().into_owned())
}

fn is_pci_address(s: &str) -> bool {
    // dddd:bb:dd.f
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

fn is_scsi_hctl(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
}

/// The last PCI address on a device path: the device's own function.
pub fn pci_address(device_path: &str) -> Option<String> {
    device_path
        .split('/')
        .rfind(|c| is_pci_address(c))
        .map(str::to_string)
}

/// How the disk is attached, from its sysfs path.
pub fn transport(device_path: &str) -> Option<String> {
    let comps: Vec<&str> = device_path.split('/').collect();
    let has = |pred: &dyn Fn(&str) -> bool| comps.iter().any(|c| pred(c));
    let t = if has(&|c| c == "nvme" || c.starts_with("nvme-subsys")) {
        "nvme"
    } else if has(&|c| c.starts_with("usb")) {
        "usb"
    } else if has(&|c| c.starts_with("ata") && c[3..].bytes().all(|b| b.is_ascii_digit())) {
        "ata"
    } else if has(&|c| c.starts_with("mmc_host") || c.starts_with("mmc")) {
        "mmc"
    } else if has(&|c| is_scsi_hctl(c)) {
        "scsi"
    } else if has(&|c| c.starts_with("virtio")) {
        "virtio"
    } else {
        return None;
    };
    Some(t.to_string())
}

/// The `/dev/disk/by-path/` name udev's `path_id` would give, built from the
/// sysfs path alone (the RAM-disk runs no udev). An approximation of
/// path_id covering the common cases:
/// - virtio-blk: `pci-0000:00:04.0`;
/// - NVMe: `pci-0000:01:00.0-nvme-<nsid>`;
/// - ATA (AHCI): `pci-0000:00:1f.2-ata-<port>` (udev's compat name; newer
///   udev also makes `ata-<port>.0`), the port from `ataN`;
/// - other SCSI (virtio-scsi, SAS HBAs): `pci-...-scsi-H:C:T:L` (udev names
///   SAS disks `sas-0x<addr>-lun-N`, which needs the SAS transport's
///   attributes: not built here);
/// - USB: `pci-...-usb-0:<port>:<config>.<interface>-scsi-H:C:T:L`.
///
/// `None` when no PCI device is on the path.
pub fn by_path(device_path: &str, nvme_nsid: Option<u32>) -> Option<String> {
    let comps: Vec<&str> = device_path.split('/').collect();
    let pci_index = comps.iter().rposition(|c| is_pci_address(c))?;
    let mut name = format!("pci-{}", comps[pci_index]);
    let after = &comps[pci_index + 1..];
    if after.iter().any(|c| *c == "nvme" || c.starts_with("nvme")) {
        let nsid = nvme_nsid.unwrap_or(1);
        name.push_str(&format!("-nvme-{nsid}"));
        return Some(name);
    }
    if let Some(usb) = after
        .iter()
        .find(|c| c.contains(':') && c.contains('-') && c.contains('.') && !is_scsi_hctl(c))
    {
        // `1-1.2:1.0`: bus-ports:config.interface.
        if let Some((_, ports)) = usb.split_once('-') {
            name.push_str(&format!("-usb-0:{ports}"));
        }
    }
    if let Some(ata) = after
        .iter()
        .find(|c| c.len() > 3 && c.starts_with("ata") && c[3..].bytes().all(|b| b.is_ascii_digit()))
    {
        name.push_str(&format!("-ata-{}", &ata[3..]));
        return Some(name);
    }
    if let Some(hctl) = after.iter().rev().find(|c| is_scsi_hctl(c)) {
        name.push_str(&format!("-scsi-{hctl}"));
    }
    Some(name)
}

/// A disk's serial number: `serial` (virtio, NVMe controller, MMC), else
/// the SCSI/ATA unit serial number VPD page (0x80) that udev reads.
pub fn disk_serial(sys_root: &Path, name: &str) -> Option<String> {
    let block = sys_root.join("sys/block").join(name);
    for p in ["device/serial", "serial"] {
        if let Some(s) = read_trimmed(&block.join(p)) {
            return Some(s);
        }
    }
    let vpd = std::fs::read(block.join("device/vpd_pg80")).ok()?;
    // 4-byte header (qualifier, page code, length), then the serial.
    let len = *vpd.get(3)? as usize;
    let raw = vpd.get(4..(4 + len).min(vpd.len()))?;
    let s = String::from_utf8_lossy(raw)
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string();
    (!s.is_empty()).then_some(s)
}

pub fn disk_wwn(sys_root: &Path, name: &str) -> Option<String> {
    let block = sys_root.join("sys/block").join(name);
    ["wwid", "device/wwid"]
        .iter()
        .find_map(|p| read_trimmed(&block.join(p)))
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

/// Facts of one block device `/sys/block/NAME`.
pub fn disk_facts(sys_root: &Path, name: &str) -> DiskFacts {
    let block = sys_root.join("sys/block").join(name);
    let dev_path = device_path(sys_root, &format!("sys/block/{name}")).unwrap_or_default();
    let nsid = read_trimmed(&block.join("nsid")).and_then(|s| s.parse().ok());
    let flag = |p: &str| read_trimmed(&block.join(p)).as_deref() == Some("1");
    DiskFacts {
        name: name.to_string(),
        path: format!("/dev/{name}"),
        size_bytes: read_u64(&block.join("size")).unwrap_or(0) * 512,
        model: read_trimmed(&block.join("device/model")),
        vendor: read_trimmed(&block.join("device/vendor")),
        serial: disk_serial(sys_root, name),
        wwn: disk_wwn(sys_root, name),
        rotational: flag("queue/rotational"),
        removable: flag("removable"),
        by_path: by_path(&dev_path, nsid),
        transport: transport(&dev_path),
        logical_block_size: read_u64(&block.join("queue/logical_block_size")).unwrap_or(512) as u32,
        physical_block_size: read_u64(&block.join("queue/physical_block_size")).unwrap_or(512)
            as u32,
        discard: read_u64(&block.join("queue/discard_max_bytes")).unwrap_or(0) > 0,
    }
}

/// Disks that can hold an OS, sorted by name.
pub fn disks(sys_root: &Path) -> Vec<DiskFacts> {
    let mut names: Vec<String> = list_dir(&sys_root.join("sys/block"))
        .into_iter()
        .filter(|n| is_os_disk_name(n))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| disk_facts(sys_root, n))
        .filter(|d| d.size_bytes > 0)
        .collect()
}

pub fn list_dir(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// One partition of a disk, from `/sys/block/DISK/PART/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// `vda1`, `nvme0n1p2`, `md127p1`.
    pub name: String,
    pub number: u32,
    /// In 512-byte sectors, as sysfs counts whatever the logical block size.
    pub start_sector: u64,
    pub size_sectors: u64,
}

/// Partitions of `disk`, by number.
pub fn partitions(sys_root: &Path, disk: &str) -> Vec<PartitionInfo> {
    let block = sys_root.join("sys/block").join(disk);
    let mut parts: Vec<PartitionInfo> = list_dir(&block)
        .into_iter()
        .filter(|n| n.starts_with(disk))
        .filter_map(|n| {
            let dir = block.join(&n);
            Some(PartitionInfo {
                number: read_trimmed(&dir.join("partition"))?.parse().ok()?,
                start_sector: read_u64(&dir.join("start"))?,
                size_sectors: read_u64(&dir.join("size"))?,
                name: n,
            })
        })
        .collect();
    parts.sort_by_key(|p| p.number);
    parts
}

/// md arrays (`md127`) holding the disk or one of its partitions.
pub fn md_holders(sys_root: &Path, disk: &str) -> Vec<String> {
    let block = sys_root.join("sys/block").join(disk);
    let mut dirs: Vec<PathBuf> = vec![block.join("holders")];
    dirs.extend(
        partitions(sys_root, disk)
            .iter()
            .map(|p| block.join(&p.name).join("holders")),
    );
    let mut md: Vec<String> = dirs
        .iter()
        .flat_map(|d| list_dir(d))
        .filter(|h| h.starts_with("md"))
        .collect();
    md.sort();
    md.dedup();
    md
}

/// Facts of `/sys/class/net/NAME`, or `None` when it is not a physical NIC
/// (loopback, anything under /sys/devices/virtual such as bridges, bonds,
/// VLANs, veth, tun/tap; and bridges or bonds wherever they live).
pub fn nic_facts(sys_root: &Path, name: &str) -> Option<NicFacts> {
    if name == "lo" {
        return None;
    }
    let dir = sys_root.join("sys/class/net").join(name);
    let dev_path = device_path(sys_root, &format!("sys/class/net/{name}"))?;
    if dev_path.starts_with("virtual/")
        || dir.join("bridge").exists()
        || dir.join("bonding").exists()
    {
        return None;
    }
    let flags = read_trimmed(&dir.join("flags"))
        .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let admin_up = flags & libc::IFF_UP as u32 != 0;
    let link_up = if admin_up {
        match read_trimmed(&dir.join("carrier")).as_deref() {
            Some("1") => Some(true),
            Some("0") => Some(false),
            _ => None,
        }
    } else {
        None
    };
    let speed_mbps = if link_up == Some(true) {
        read_trimmed(&dir.join("speed"))
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|&s| s > 0)
            .and_then(|s| u32::try_from(s).ok())
    } else {
        None
    };
    let driver = std::fs::read_link(dir.join("device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    Some(NicFacts {
        name: name.to_string(),
        mac: read_trimmed(&dir.join("address")).unwrap_or_default(),
        driver,
        link_up,
        speed_mbps,
        mtu: read_u64(&dir.join("mtu")).unwrap_or(0) as u32,
        pci: pci_address(&dev_path),
        lldp: None,
    })
}

/// Physical NICs by name.
pub fn nics(sys_root: &Path) -> Vec<NicFacts> {
    list_dir(&sys_root.join("sys/class/net"))
        .iter()
        .filter_map(|n| nic_facts(sys_root, n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_path_names_as_udev_would() {
        for (path, nsid, want) in [
            (
                "pci0000:00/0000:00:04.0/virtio1/block/vda",
                None,
                Some("pci-0000:00:04.0"),
            ),
            (
                "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1",
                Some(1),
                Some("pci-0000:3d:00.0-nvme-1"),
            ),
            (
                "pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sdb",
                None,
                Some("pci-0000:00:1f.2-ata-3"),
            ),
            (
                "pci0000:00/0000:00:05.0/virtio2/host0/target0:0:1/0:0:1:0/block/sda",
                None,
                Some("pci-0000:00:05.0-scsi-0:0:1:0"),
            ),
            (
                "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdc",
                None,
                Some("pci-0000:00:14.0-usb-0:1:1.0-scsi-6:0:0:0"),
            ),
            ("platform/soc/mmc0/mmc0:0001/block/mmcblk0", None, None),
        ] {
            assert_eq!(by_path(path, nsid).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn transports_from_paths() {
        for (path, want) in [
            ("pci0000:00/0000:00:04.0/virtio1/block/vda", Some("virtio")),
            (
                "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1",
                Some("nvme"),
            ),
            (
                "pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0/block/sdb",
                Some("ata"),
            ),
            (
                "pci0000:00/0000:00:05.0/virtio2/host0/target0:0:1/0:0:1:0/block/sda",
                Some("scsi"),
            ),
            (
                "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdc",
                Some("usb"),
            ),
            (
                "platform/soc/mmc_host/mmc0/mmc0:0001/block/mmcblk0",
                Some("mmc"),
            ),
            ("virtual/block/loop0", None),
        ] {
            assert_eq!(transport(path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn disk_names() {
        for (name, want) in [
            ("vda", true),
            ("sda", true),
            ("nvme0n1", true),
            ("mmcblk0", true),
            ("loop0", false),
            ("ram0", false),
            ("zram0", false),
            ("md127", false),
            ("dm-0", false),
            ("sr0", false),
            ("fd0", false),
        ] {
            assert_eq!(is_os_disk_name(name), want, "{name}");
        }
    }
}
