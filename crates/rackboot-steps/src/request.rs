//! What a workflow is asked to do: the image, the erase policy, RAID, the root
//! disk, the installed system's network and keys. Stored as the workflow's
//! `params` and checked when the request is made, so a workflow never fails
//! late on input that was wrong from the start.

use rackboot_agent_proto::RaidLevel;
use rackboot_install::{NetworkVars, TargetFamily};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::file::WorkflowDef;
use crate::library::{ErasePolicy, StepKind};

/// The parameters of any workflow; which fields matter depends on its steps
/// (`image` for `write_image`, `network` for `configure`...).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRequest {
    /// Image catalog name (deploys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Filled from the catalog when the request is accepted; the agent refuses
    /// an image whose manifest says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_raw_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_sha256: Option<String>,
    /// The SHA-256 of the image's manifest, from the catalog when it has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_manifest_sha256: Option<String>,
    /// Disks are erased first: `none`, `metadata` (default) or `full`.
    #[serde(default)]
    pub erase: ErasePolicy,
    /// Software RAID across the machine's disks; the image goes on the array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid: Option<RaidRequest>,
    /// The disk the image goes to when there is no RAID.
    #[serde(default)]
    pub root_disk: RootDisk,
    /// The installed system's host name and network (the same input as
    /// installer-based installs' network variables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub network: Option<NetworkVars>,
    /// How the installed system configures its network, which decides the
    /// files written: `debian` (ifupdown), `ubuntu` (netplan), `rhel`
    /// (NetworkManager), `rhel-ifcfg`, `suse` (wicked). From the image when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_family: Option<String>,
    /// Also (or only) configure the installed system through a cloud-init
    /// NoCloud seed partition. From the image when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<bool>,
    /// OpenSSH public keys for root (and cloud-init's default user).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RaidRequest {
    /// `0`, `1`, `5`, `6` or `10`.
    #[schema(value_type = String)]
    pub level: RaidLevel,
    /// How many disks (the smallest first); all of them when absent.
    #[serde(default)]
    pub disks: Option<u32>,
    /// md superblock format; `1.0` for RAID-1 (firmware boots a member as a
    /// plain disk), `1.2` otherwise.
    #[serde(default)]
    pub metadata: Option<String>,
}

impl RaidRequest {
    pub fn metadata(&self) -> &str {
        match (&self.metadata, self.level) {
            (Some(m), _) => m,
            (None, RaidLevel::Raid1) => "1.0",
            (None, _) => "1.2",
        }
    }
}

/// Which disk receives the image.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(tag = "rule", content = "value", rename_all = "snake_case")]
pub enum RootDisk {
    /// The smallest non-removable disk that holds the image.
    #[default]
    Smallest,
    Largest,
    /// By kernel name (`sda`, `nvme0n1`).
    Name(String),
    /// By serial number.
    Serial(String),
    /// By WWN.
    Wwn(String),
}

impl WorkflowRequest {
    /// The target family, checked.
    pub fn target_family(&self) -> Result<Option<TargetFamily>, String> {
        match &self.target_family {
            None => Ok(None),
            Some(s) => TargetFamily::parse(s).map(Some).ok_or_else(|| {
                format!(
                    "target_family: unknown {s:?}; use {}",
                    TargetFamily::ALL.map(|f| f.as_str()).join(", ")
                )
            }),
        }
    }

    /// Checks what the request says against what the workflow's steps need;
    /// the message names the field.
    pub fn check_for(&self, def: &WorkflowDef) -> Result<(), String> {
        let uses = |k: StepKind| def.steps.iter().any(|s| s.kind == k);
        if uses(StepKind::WriteImage) && self.image.is_none() {
            return Err(format!(
                "image: workflow {:?} writes an image; name one from the image catalog",
                def.name
            ));
        }
        if let Some(raid) = &self.raid {
            if !matches!(raid.metadata(), "1.0" | "1.1" | "1.2") {
                return Err(format!(
                    "raid.metadata: {:?}; use 1.0, 1.1 or 1.2",
                    raid.metadata()
                ));
            }
            if let Some(n) = raid.disks
                && (n as usize) < raid.level.min_members()
            {
                return Err(format!(
                    "raid.disks: RAID-{} needs at least {} disks",
                    raid.level.as_str(),
                    raid.level.min_members()
                ));
            }
        }
        self.target_family()?;
        if let Some(net) = &self.network {
            net.validate().map_err(|e| format!("network: {e}"))?;
            if self.target_family.is_none() && self.cloud_init != Some(true) {
                return Err(
                    "network: say how the installed system reads it: target_family (debian, ubuntu, rhel, rhel-ifcfg, suse) or cloud_init".into(),
                );
            }
        }
        for (i, key) in self.ssh_authorized_keys.iter().enumerate() {
            let words: Vec<&str> = key.split_whitespace().collect();
            if words.len() < 2
                || !words[0].starts_with("ssh-") && !words[0].starts_with("ecdsa-")
                || key.contains('\n')
            {
                return Err(format!(
                    "ssh_authorized_keys[{i}]: not an OpenSSH public key line"
                ));
            }
        }
        Ok(())
    }
}

/// Lets an image's catalog record fill what the request left out.
pub fn with_image_defaults(
    mut request: WorkflowRequest,
    os_family: Option<&str>,
    cloud_init: bool,
) -> WorkflowRequest {
    if request.target_family.is_none()
        && let Some(f) = os_family.and_then(TargetFamily::parse)
    {
        request.target_family = Some(f.as_str().to_string());
    }
    if request.cloud_init.is_none() {
        request.cloud_init = Some(cloud_init);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> &'static WorkflowDef {
        crate::builtin::get("deploy").unwrap()
    }

    #[test]
    fn a_deploy_needs_an_image_and_a_way_to_configure_its_network() {
        let r = WorkflowRequest::default();
        assert!(r.check_for(deploy()).unwrap_err().starts_with("image:"));
        let r: WorkflowRequest = serde_json::from_value(json!({
            "image": "testos",
            "network": {"hostname": "node1", "nics": [{"mac": "52:54:00:00:00:01", "name": "eth0",
                "ipv4": {"mode": "static", "address": "10.77.0.50", "prefix": 24}}]},
        }))
        .unwrap();
        let e = r.check_for(deploy()).unwrap_err();
        assert!(e.contains("target_family"), "{e}");
        let r = WorkflowRequest {
            target_family: Some("debian".into()),
            ..r
        };
        r.check_for(deploy()).unwrap();
        let r = WorkflowRequest {
            target_family: Some("gentoo".into()),
            ..r
        };
        assert!(r.check_for(deploy()).unwrap_err().contains("gentoo"));
    }

    #[test]
    fn raid_and_keys_are_checked() {
        let r: WorkflowRequest = serde_json::from_value(json!({
            "image": "x", "raid": {"level": "1", "disks": 1}
        }))
        .unwrap();
        assert!(r.check_for(deploy()).unwrap_err().contains("at least 2"));
        let raid: RaidRequest = serde_json::from_value(json!({"level": "1"})).unwrap();
        assert_eq!(raid.metadata(), "1.0");
        let raid: RaidRequest = serde_json::from_value(json!({"level": "5"})).unwrap();
        assert_eq!(raid.metadata(), "1.2");
        let r = WorkflowRequest {
            image: Some("x".into()),
            ssh_authorized_keys: vec!["not a key".into()],
            ..Default::default()
        };
        assert!(
            r.check_for(deploy())
                .unwrap_err()
                .contains("ssh_authorized_keys[0]")
        );
        assert!(serde_json::from_value::<WorkflowRequest>(json!({"imag": "x"})).is_err());
    }

    #[test]
    fn the_image_fills_in_the_family() {
        let r = with_image_defaults(WorkflowRequest::default(), Some("ubuntu"), true);
        assert_eq!(r.target_family.as_deref(), Some("ubuntu"));
        assert_eq!(r.cloud_init, Some(true));
        let r = with_image_defaults(
            WorkflowRequest {
                target_family: Some("rhel".into()),
                cloud_init: Some(false),
                ..Default::default()
            },
            Some("ubuntu"),
            true,
        );
        assert_eq!(r.target_family.as_deref(), Some("rhel"));
        assert_eq!(r.cloud_init, Some(false));
    }
}
