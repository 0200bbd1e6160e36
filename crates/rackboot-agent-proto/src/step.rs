//! What the server asks an agent to do ([`Action`]) and what it reports back
//! ([`StepOutput`]). The server resolves every choice (which disk, which
//! files) before sending an action, so the agent carries no policy: it does
//! exactly what it is told and refuses when the machine does not match what
//! the server expected (a disk of another size or serial).

use serde::{Deserialize, Serialize};

use crate::Facts;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Report hardware facts ([`StepOutput::Facts`]).
    Inspect {
        /// Listen this long for an LLDP frame on every NIC with a link
        /// (switches send one every 30 s by default); 0 skips LLDP.
        #[serde(default)]
        lldp_wait_secs: u32,
    },
    /// Erase disks, in parallel.
    Erase(EraseAction),
    /// Create a Linux software RAID (md) array.
    BuildRaid(RaidAction),
    /// Stream an image onto a block device.
    WriteImage(WriteImageAction),
    /// Write files into the installed system and/or a cloud-init seed partition.
    Configure(ConfigureAction),
    /// Report success, then reboot (`sync; reboot -f`) a moment later.
    Reboot,
    /// Report success, then power off a moment later.
    PowerOff,
}

impl Action {
    /// Short name for logs: `inspect`, `erase`, `build_raid`...
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Inspect { .. } => "inspect",
            Action::Erase(_) => "erase",
            Action::BuildRaid(_) => "build_raid",
            Action::WriteImage(_) => "write_image",
            Action::Configure(_) => "configure",
            Action::Reboot => "reboot",
            Action::PowerOff => "power_off",
        }
    }
}

/// A block device the server chose, with what it must look like: the agent
/// refuses to touch a device whose size or serial differ (disks renamed
/// between boots, a disk swapped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiskTarget {
    /// `/dev/vda`, `/dev/md/rackboot0`.
    pub path: String,
    /// Expected size in bytes; `None` skips the check (an md array the
    /// workflow just built).
    #[serde(default)]
    pub size_bytes: Option<u64>,
    #[serde(default)]
    pub serial: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EraseMode {
    /// Every partition table (both GPT copies), file system, RAID, LVM and
    /// other signature gone: the first and last MiB of the disk and of every
    /// partition are zeroed, after stopping md arrays that use the disk.
    Metadata,
    /// Every byte: NVMe format (user data erase), else ATA secure erase, else
    /// discard when the device reads zeros after it, else overwrite with zeros.
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EraseAction {
    pub mode: EraseMode,
    pub disks: Vec<DiskTarget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RaidLevel {
    #[serde(rename = "0")]
    Raid0,
    #[serde(rename = "1")]
    Raid1,
    #[serde(rename = "5")]
    Raid5,
    #[serde(rename = "6")]
    Raid6,
    #[serde(rename = "10")]
    Raid10,
}

impl RaidLevel {
    /// mdadm's `--level` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            RaidLevel::Raid0 => "0",
            RaidLevel::Raid1 => "1",
            RaidLevel::Raid5 => "5",
            RaidLevel::Raid6 => "6",
            RaidLevel::Raid10 => "10",
        }
    }

    /// Fewest member disks the level takes.
    pub fn min_members(&self) -> usize {
        match self {
            RaidLevel::Raid0 | RaidLevel::Raid1 => 2,
            RaidLevel::Raid5 => 3,
            RaidLevel::Raid6 | RaidLevel::Raid10 => 4,
        }
    }

    pub fn parse(s: &str) -> Option<RaidLevel> {
        [
            RaidLevel::Raid0,
            RaidLevel::Raid1,
            RaidLevel::Raid5,
            RaidLevel::Raid6,
            RaidLevel::Raid10,
        ]
        .into_iter()
        .find(|l| l.as_str() == s.trim_start_matches("raid"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RaidAction {
    /// Array device to create: `/dev/md/rackboot0`.
    pub device: String,
    /// Array name stored in its superblock (`rackboot0`).
    pub name: String,
    pub level: RaidLevel,
    /// Whole disks; their previous contents are lost.
    pub members: Vec<DiskTarget>,
    /// Superblock format: `1.0` (at the end of each member, so firmware sees a
    /// RAID-1 member as a plain disk and boots it) or `1.2`.
    pub metadata: String,
    /// Skip the initial resync (members were just fully erased, so already equal).
    #[serde(default)]
    pub assume_clean: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WriteImageAction {
    /// Catalog name, for logs.
    pub image: String,
    /// Absolute URL of the image's [`crate::ImageManifest`].
    pub manifest_url: String,
    /// Absolute URL of its compressed frames (Range requests honoured).
    pub data_url: String,
    /// Expected manifest values; a different manifest at the URL is refused.
    pub raw_size: u64,
    pub sha256: String,
    /// SHA-256 of the manifest file itself, when the catalog recorded it:
    /// the agent then trusts the manifest's per-frame checksums and verifies
    /// each frame as it arrives instead of hashing the whole raw image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    pub target: DiskTarget,
    /// The device already reads zeros everywhere (just fully erased): runs of
    /// zeros in the image are skipped instead of being zeroed on the device.
    #[serde(default)]
    pub device_reads_zeros: bool,
}

/// Where the installed system's root file system is, on the target device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "by", content = "value", rename_all = "snake_case")]
pub enum RootSelector {
    /// The partition holding `/etc/os-release` (ext4, xfs, btrfs).
    #[default]
    Auto,
    /// Partition number (1-based).
    Partition(u32),
    /// File system label.
    Label(String),
}

/// A file to write into the installed system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileSpec {
    /// Absolute path inside the installed system; parents are created.
    pub path: String,
    pub content: String,
    /// Permission bits, e.g. 0o644 (420) or 0o600 (384).
    pub mode: u32,
}

/// A cloud-init NoCloud seed: a small vfat partition labelled `cidata`, added
/// after the image's last partition, holding these files at its root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SeedSpec {
    /// File system label (`cidata`).
    pub label: String,
    /// Partition size in MiB.
    pub size_mib: u32,
    /// `meta-data`, `user-data`, `network-config`: (name, content).
    pub files: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigureAction {
    /// The device the image was written to.
    pub target: DiskTarget,
    #[serde(default)]
    pub root: RootSelector,
    /// Paths removed from the installed system first (network configs the
    /// image shipped that would fight the written ones).
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub seed: Option<SeedSpec>,
}

/// What a successful attempt produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepOutput {
    Facts(Box<Facts>),
    Erased {
        disks: Vec<ErasedDisk>,
    },
    RaidBuilt(RaidBuilt),
    ImageWritten(ImageWritten),
    Configured {
        /// The partition mounted as the installed system's root (`/dev/vda2`).
        root_device: Option<String>,
        files_written: u32,
        /// The seed partition created (`/dev/vda3`).
        seed_device: Option<String>,
    },
    /// Reboot and power-off: acknowledged, happening a moment after the report.
    Accepted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErasedDisk {
    pub path: String,
    /// `zero_ends` (metadata), `nvme_format`, `ata_secure_erase`, `discard`, `overwrite`.
    pub method: String,
    /// Bytes erased (the whole disk for full erases).
    pub bytes: u64,
    pub millis: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RaidBuilt {
    pub device: String,
    /// Array UUID as mdadm prints it.
    pub uuid: String,
    pub members: Vec<String>,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageWritten {
    pub target: String,
    /// Raw bytes of the image (all of it, zeros included).
    pub raw_bytes: u64,
    /// Bytes that were runs of zeros: zeroed on the device with a
    /// write-zeroes request, or skipped when the device already read zeros.
    pub zero_bytes: u64,
    /// Compressed bytes downloaded (more than the file when a download resumed).
    pub downloaded_bytes: u64,
    /// Verified SHA-256 of the raw bytes.
    pub sha256: String,
    /// Times the download was resumed after a broken connection.
    pub resumes: u32,
    pub millis: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_with_stable_tags() {
        let action = Action::Erase(EraseAction {
            mode: EraseMode::Metadata,
            disks: vec![DiskTarget {
                path: "/dev/vda".into(),
                size_bytes: Some(1 << 30),
                serial: Some("S1".into()),
            }],
        });
        let json = serde_json::to_value(&action).unwrap();
        assert_eq!(json["kind"], "erase");
        assert_eq!(json["mode"], "metadata");
        assert_eq!(serde_json::from_value::<Action>(json).unwrap(), action);
        let raid: RaidAction = serde_json::from_str(
            r#"{"device":"/dev/md/r0","name":"r0","level":"1","members":[],"metadata":"1.0"}"#,
        )
        .unwrap();
        assert_eq!(raid.level, RaidLevel::Raid1);
        assert_eq!(RaidLevel::parse("raid10"), Some(RaidLevel::Raid10));
        let root: RootSelector = serde_json::from_str(r#"{"by":"partition","value":2}"#).unwrap();
        assert_eq!(root, RootSelector::Partition(2));
    }
}
