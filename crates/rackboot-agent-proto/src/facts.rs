//! Hardware facts an inspection reports. Every field has a default so that a
//! server accepts a report from an older or newer agent.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct Facts {
    pub cpu: CpuFacts,
    /// Usable memory (`MemTotal`), bytes.
    pub memory_bytes: u64,
    pub dmi: DmiFacts,
    /// Block devices that can hold an OS: no loop, ram, zram, md, dm or
    /// optical devices; sorted by name.
    pub disks: Vec<DiskFacts>,
    /// Physical NICs (no loopback, bridges, bonds, VLANs, tun/tap); by name.
    pub nics: Vec<NicFacts>,
    pub boot: BootFacts,
    /// `uname -r` of the RAM-disk kernel.
    pub kernel: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct CpuFacts {
    /// `model name` of /proc/cpuinfo.
    pub model: String,
    /// `x86_64`, `aarch64`.
    pub arch: String,
    /// Physical packages.
    pub sockets: u32,
    /// Physical cores in all.
    pub cores: u32,
    /// Logical CPUs (hardware threads).
    pub threads: u32,
    /// Feature flags of the first CPU (`vmx`, `avx2`, ...).
    pub flags: Vec<String>,
}

/// SMBIOS / DMI identity, from /sys/class/dmi/id. Empty strings and the
/// usual placeholders ("To be filled by O.E.M.") are reported as `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct DmiFacts {
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub uuid: Option<String>,
    pub board_vendor: Option<String>,
    pub board_product: Option<String>,
    pub board_serial: Option<String>,
    pub chassis_serial: Option<String>,
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct DiskFacts {
    /// Kernel name: `sda`, `nvme0n1`, `vda`.
    pub name: String,
    /// `/dev/<name>`.
    pub path: String,
    pub size_bytes: u64,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    /// World wide name (`wwn-...` / `eui.` / `naa.`), when the device has one.
    pub wwn: Option<String>,
    /// Spinning disk (queue/rotational).
    pub rotational: bool,
    pub removable: bool,
    /// `/dev/disk/by-path/...` name (without the directory), built from the
    /// device's sysfs path when udev is not running.
    pub by_path: Option<String>,
    /// `virtio`, `nvme`, `scsi`, `ata`, `usb`, `mmc`...
    pub transport: Option<String>,
    pub logical_block_size: u32,
    pub physical_block_size: u32,
    /// The device accepts discard (TRIM/UNMAP).
    pub discard: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct NicFacts {
    /// Kernel name: `eth0`, `ens3`.
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff` (the permanent address when the driver reports one).
    pub mac: String,
    /// Kernel driver (`virtio_net`, `ixgbe`).
    pub driver: Option<String>,
    /// Carrier detected. `None` when the link is administratively down.
    pub link_up: Option<bool>,
    /// Negotiated speed in Mbit/s, when the link is up and the driver says.
    pub speed_mbps: Option<u32>,
    pub mtu: u32,
    /// PCI address (`0000:00:03.0`), when on PCI.
    pub pci: Option<String>,
    /// The switch port this NIC is cabled to, when an LLDP frame was heard.
    pub lldp: Option<LldpNeighbor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct LldpNeighbor {
    /// Chassis ID as text (a MAC as `aa:bb:..`, a network address, or the raw string).
    pub chassis_id: String,
    /// Port ID as text.
    pub port_id: String,
    pub port_description: Option<String>,
    pub system_name: Option<String>,
    pub system_description: Option<String>,
    pub management_address: Option<String>,
    /// Port VLAN ID (IEEE 802.1 organisationally specific TLV).
    pub vlan_id: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    #[default]
    Bios,
    Uefi,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct BootFacts {
    pub mode: BootMode,
    /// UEFI Secure Boot enforced (the SecureBoot EFI variable); `None` on BIOS
    /// or when the variable cannot be read.
    pub secure_boot: Option<bool>,
}

impl BootFacts {
    /// `uefi, secure boot on` / `off` / `unknown`, or `bios`: for people.
    pub fn summary(&self) -> &'static str {
        match (self.mode, self.secure_boot) {
            (BootMode::Bios, _) => "bios",
            (BootMode::Uefi, Some(true)) => "uefi, secure boot on",
            (BootMode::Uefi, Some(false)) => "uefi, secure boot off",
            (BootMode::Uefi, None) => "uefi, secure boot unknown",
        }
    }
}

impl Facts {
    /// Memory in whole GiB, rounded to the nearest (firmware reserves a little,
    /// so a 64 GiB machine reports a bit less than 64 GiB).
    pub fn memory_gib(&self) -> u64 {
        (self.memory_bytes + (1 << 29)) >> 30
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_missing_fields_are_accepted() {
        let f: Facts = serde_json::from_str(
            r#"{"memory_bytes": 68000000000, "disks": [{"name": "vda", "future": 1}], "new": true}"#,
        )
        .unwrap();
        assert_eq!(f.disks[0].name, "vda");
        assert_eq!(f.memory_gib(), 63);
        assert_eq!(f.boot.mode, BootMode::Bios);
        // An agent from before secure_boot was reported: unknown, not off.
        let f: Facts = serde_json::from_str(r#"{"boot": {"mode": "uefi"}}"#).unwrap();
        assert_eq!(f.boot.secure_boot, None);
        assert_eq!(f.boot.summary(), "uefi, secure boot unknown");
        let f: Facts =
            serde_json::from_str(r#"{"boot": {"mode": "uefi", "secure_boot": true}}"#).unwrap();
        assert_eq!(f.boot.summary(), "uefi, secure boot on");
    }
}
