//! The step library: every step a workflow can use, where it runs, what it
//! takes (`with`), and its default timeout and retry policy.

use rackboot_agent_proto::EraseMode;
use rackboot_core::RetryPolicy;
use serde::{Deserialize, Serialize};

/// A step of the library, by the name workflows use in `uses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Reach the BMC and read the power state (skipped without a BMC).
    VerifyBmc,
    PowerOn,
    /// Through the BMC; without one, the agent powers the machine off.
    PowerOff,
    /// Through the BMC (skipped without one).
    SetBootDevice,
    /// Point the machine at the agent's RAM-disk, network-boot it (BMC: boot
    /// device PXE once, power cycle) and wait for the agent's hello.
    BootAgent,
    /// Hardware facts, stored on the machine.
    Inspect,
    Erase,
    BuildRaid,
    WriteImage,
    /// Network, host name and cloud-init seed of the installed system.
    Configure,
    /// Boot intent local disk, and the BMC's boot device disk (persistent).
    SetLocalBoot,
    /// Through the BMC (power cycle); without one, the agent reboots.
    Reboot,
    /// Wait until the installed OS is seen running: its first-boot callback,
    /// or its configured address answering from one of the machine's MACs.
    WaitBooted,
    /// Sleep `secs` (operators' workflows: burn-in, settle time).
    Wait,
}

/// Where a step's work happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// In rackboot (BMC, boot intent, waiting).
    Server,
    /// In the agent on the machine.
    Agent,
    /// In rackboot through the BMC when the machine has one, else in the agent.
    BmcOrAgent,
}

impl StepKind {
    pub const ALL: [StepKind; 14] = [
        StepKind::VerifyBmc,
        StepKind::PowerOn,
        StepKind::PowerOff,
        StepKind::SetBootDevice,
        StepKind::BootAgent,
        StepKind::Inspect,
        StepKind::Erase,
        StepKind::BuildRaid,
        StepKind::WriteImage,
        StepKind::Configure,
        StepKind::SetLocalBoot,
        StepKind::Reboot,
        StepKind::WaitBooted,
        StepKind::Wait,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            StepKind::VerifyBmc => "verify_bmc",
            StepKind::PowerOn => "power_on",
            StepKind::PowerOff => "power_off",
            StepKind::SetBootDevice => "set_boot_device",
            StepKind::BootAgent => "boot_agent",
            StepKind::Inspect => "inspect",
            StepKind::Erase => "erase",
            StepKind::BuildRaid => "build_raid",
            StepKind::WriteImage => "write_image",
            StepKind::Configure => "configure",
            StepKind::SetLocalBoot => "set_local_boot",
            StepKind::Reboot => "reboot",
            StepKind::WaitBooted => "wait_booted",
            StepKind::Wait => "wait",
        }
    }

    pub fn parse(s: &str) -> Option<StepKind> {
        StepKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn runs(&self) -> Runs {
        match self {
            StepKind::Inspect
            | StepKind::Erase
            | StepKind::BuildRaid
            | StepKind::WriteImage
            | StepKind::Configure => Runs::Agent,
            StepKind::PowerOff | StepKind::Reboot => Runs::BmcOrAgent,
            _ => Runs::Server,
        }
    }

    /// Needs the agent running (so a `boot_agent` step must come before it).
    pub fn needs_agent(&self) -> bool {
        self.runs() == Runs::Agent
    }

    /// Default time an attempt may take. Generous: the lab runs machines under
    /// software emulation, and a firmware's POST alone takes minutes on real servers.
    pub fn default_timeout_secs(&self) -> u64 {
        match self {
            StepKind::VerifyBmc => 120,
            StepKind::PowerOn | StepKind::PowerOff | StepKind::SetBootDevice => 300,
            StepKind::SetLocalBoot => 300,
            StepKind::BootAgent => 1200,
            StepKind::Inspect => 600,
            // A full erase of a large disk takes hours.
            StepKind::Erase => 12 * 3600,
            StepKind::BuildRaid => 600,
            StepKind::WriteImage => 4 * 3600,
            StepKind::Configure => 600,
            StepKind::Reboot => 600,
            StepKind::WaitBooted => 1800,
            StepKind::Wait => 24 * 3600,
        }
    }

    pub fn default_retry(&self) -> RetryPolicy {
        let base = RetryPolicy::default();
        match self {
            // A machine that did not reach the agent is power cycled again.
            StepKind::BootAgent => RetryPolicy {
                max_attempts: 2,
                backoff_secs: 5,
                ..base
            },
            // Waiting longer is the timeout's job.
            StepKind::WaitBooted | StepKind::Wait => RetryPolicy {
                max_attempts: 1,
                ..base
            },
            _ => base,
        }
    }

    /// Checks `with` for this step; the message names the field.
    pub fn parse_with(&self, with: &serde_json::Value) -> Result<StepParams, String> {
        let with = if with.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            with.clone()
        };
        fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
            serde_json::from_value(v).map_err(|e| e.to_string())
        }
        Ok(match self {
            StepKind::SetBootDevice => StepParams::SetBootDevice(typed(with)?),
            StepKind::Inspect => StepParams::Inspect(typed(with)?),
            StepKind::Erase => StepParams::Erase(typed(with)?),
            StepKind::WaitBooted => StepParams::WaitBooted(typed(with)?),
            StepKind::Wait => {
                let w: WaitWith = typed(with)?;
                if w.secs == 0 || w.secs > 7 * 24 * 3600 {
                    return Err("secs: between 1 and 604800".into());
                }
                StepParams::Wait(w)
            }
            _ => {
                let _: NoParams = typed(with)?;
                StepParams::None
            }
        })
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step's `with`, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum StepParams {
    None,
    SetBootDevice(SetBootDeviceWith),
    Inspect(InspectWith),
    Erase(EraseWith),
    WaitBooted(WaitBootedWith),
    Wait(WaitWith),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBootDeviceWith {
    /// `pxe` or `disk`.
    pub device: BootTarget,
    /// From now on, not only for the next boot.
    #[serde(default)]
    pub persistent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootTarget {
    Pxe,
    Disk,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InspectWith {
    /// Listen this long for LLDP on every NIC with a link.
    #[serde(default)]
    pub lldp_wait_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EraseWith {
    /// Overrides the request's erase policy.
    #[serde(default)]
    pub mode: Option<ErasePolicy>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitBootedWith {
    /// Also probe the configured static addresses (ARP from the server's
    /// provisioning interface); otherwise only the first-boot callback counts.
    #[serde(default = "yes")]
    pub probe: bool,
}

impl Default for WaitBootedWith {
    fn default() -> Self {
        WaitBootedWith { probe: true }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitWith {
    pub secs: u64,
}

/// What a deploy or a cleaning does to the disks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErasePolicy {
    /// Leave the disks as they are (the image overwrites what it covers).
    None,
    /// Every signature and partition table gone (fast).
    #[default]
    Metadata,
    /// Every byte (secure erase or overwrite; hours on large disks).
    Full,
}

impl ErasePolicy {
    pub fn mode(&self) -> Option<EraseMode> {
        match self {
            ErasePolicy::None => None,
            ErasePolicy::Metadata => Some(EraseMode::Metadata),
            ErasePolicy::Full => Some(EraseMode::Full),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ErasePolicy::None => "none",
            ErasePolicy::Metadata => "metadata",
            ErasePolicy::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Option<ErasePolicy> {
        [ErasePolicy::None, ErasePolicy::Metadata, ErasePolicy::Full]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_round_trip_and_params_are_checked() {
        for k in StepKind::ALL {
            assert_eq!(StepKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(
            StepKind::Erase
                .parse_with(&json!({"mode": "full"}))
                .unwrap(),
            StepParams::Erase(EraseWith {
                mode: Some(ErasePolicy::Full)
            })
        );
        let e = StepKind::Erase
            .parse_with(&json!({"mode": "everything"}))
            .unwrap_err();
        assert!(e.contains("everything"), "{e}");
        let e = StepKind::PowerOn.parse_with(&json!({"x": 1})).unwrap_err();
        assert!(e.contains("unknown field `x`"), "{e}");
        assert!(StepKind::Wait.parse_with(&json!({"secs": 0})).is_err());
        assert_eq!(
            StepKind::WaitBooted
                .parse_with(&serde_json::Value::Null)
                .unwrap(),
            StepParams::WaitBooted(WaitBootedWith { probe: true })
        );
        assert!(StepKind::WriteImage.needs_agent());
        assert!(!StepKind::Reboot.needs_agent());
    }
}
