//! Out-of-band power control: drivers for BMCs (Redfish, native IPMI v2.0/RMCP+, IPMI
//! through ipmitool, a fake for tests) behind one trait, and the layer that makes them
//! dependable ([`PowerController`]: one operation per BMC at a time, a global limit,
//! retries on transient errors, and verification that every action took effect).
//!
//! URL schemes ([`BmcUrl`]): `ipmi://` (native client), `ipmitool://` (the ipmitool
//! command), `redfish://` (HTTP), `redfish+https://`, `fake://name` (in memory).
//! IPMI URLs take `?cipher=3|17`; Redfish URLs may end in the system's path.
//!
//! How the server uses it:
//! - store: [`seal_bmc`] turns what the operator typed into a [`rackboot_core::Bmc`]
//!   (address without credentials, user, password sealed with a [`secrets::SecretKey`]);
//!   [`target_from_bmc`] turns it back into a [`BmcTarget`];
//! - API/conductor: one shared `Arc<PowerController>`; [`PowerController::power`],
//!   [`PowerController::set_boot_device`], [`PowerController::power_state`],
//!   [`PowerController::ping`]; then [`emit_request_event`] for the event log;
//! - background: [`run_power_sync`] with a [`PowerSyncSource`] over the store and a
//!   [`PowerStateMap`] the API reads.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rackboot_power::{BmcTarget, PowerAction, PowerConfig, PowerController};
//! let controller = PowerController::new(PowerConfig::default());
//! let target: BmcTarget = "redfish+https://admin:secret@10.0.0.5".parse::<BmcTarget>()?
//!     .with_insecure_tls(true);
//! let outcome = controller.power(&target, PowerAction::On).await?;
//! println!("{outcome}");
//! # Ok(()) }
//! ```

pub mod controller;
pub mod error;
pub mod fake;
pub mod ipmitool;
pub mod native_ipmi;
pub mod redfish;
/// The server key and sealing, from rackboot-seal (kept under this name for callers).
pub mod secrets {
    pub use rackboot_seal::*;
}
pub mod stored;
pub mod sync;
pub mod url;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use controller::{PowerConfig, PowerController, PowerFailure, PowerOutcome, PowerRequest};
pub use error::{PowerError, PowerErrorKind};
pub use stored::{StoredBmcError, seal_bmc, target_from_bmc};
pub use sync::{
    ObservedPower, PowerStateMap, PowerSyncSource, emit_request_event, request_event,
    run_power_sync,
};
pub use url::{BmcScheme, BmcTarget, BmcUrl};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    On,
    Off,
}

impl PowerState {
    pub fn as_str(&self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerAction {
    On,
    /// Hard off (pulls the power).
    Off,
    /// Asks the OS to shut down (ACPI power button).
    SoftOff,
    /// Off, then on.
    Cycle,
    /// Hard reset (warm reboot without removing power).
    Reset,
}

impl PowerAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::SoftOff => "soft_off",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
        }
    }

    /// The state that proves the action took effect.
    pub fn expected_state(&self) -> PowerState {
        match self {
            PowerAction::Off | PowerAction::SoftOff => PowerState::Off,
            PowerAction::On | PowerAction::Cycle | PowerAction::Reset => PowerState::On,
        }
    }
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootDevice {
    Pxe,
    Disk,
}

impl fmt::Display for BootDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
        })
    }
}

/// A BMC's boot override as read back after setting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDeviceReading {
    /// The driver cannot read it back; the set is taken on the BMC's word.
    Unknown,
    /// No override, or one to a device rackboot does not set (CD, BIOS setup...).
    Other,
    Device(BootDevice),
}

impl fmt::Display for BootDeviceReading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootDeviceReading::Unknown => f.write_str("unknown"),
            BootDeviceReading::Other => f.write_str("no override to pxe or disk"),
            BootDeviceReading::Device(d) => d.fmt(f),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootPersistence {
    /// Next boot only.
    Once,
    Persistent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    Uefi,
    Legacy,
}

/// What a BMC said about itself when pinged.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BmcInfo {
    /// "redfish", "ipmi" or "fake".
    pub protocol: String,
    pub vendor: Option<String>,
    pub model: Option<String>,
    /// BMC firmware version.
    pub firmware: Option<String>,
    /// Power state, when learning it came for free.
    pub power: Option<PowerState>,
}

/// One BMC, one protocol. Every method makes a bounded number of requests, each with
/// its own timeout, so a dead BMC yields an error in seconds. Drivers do not retry or
/// verify: [`PowerController`] does.
#[async_trait]
pub trait PowerDriver: Send + Sync {
    async fn power_state(&self) -> Result<PowerState, PowerError>;

    /// Sends the action; returns once the BMC accepted it (not once it took effect).
    async fn power(&self, action: PowerAction) -> Result<(), PowerError>;

    /// `mode` None leaves the firmware mode as the BMC has it.
    async fn set_boot_device(
        &self,
        device: BootDevice,
        persistence: BootPersistence,
        mode: Option<BootMode>,
    ) -> Result<(), PowerError>;

    /// The boot override the BMC now holds, read back to verify a set.
    async fn boot_device(&self) -> Result<BootDeviceReading, PowerError> {
        Ok(BootDeviceReading::Unknown)
    }

    /// Reachability (with the credentials) and what the BMC is.
    async fn ping(&self) -> Result<BmcInfo, PowerError>;

    /// Ends any session (Redfish session, RMCP+ session). Best effort.
    async fn close(&self) {}
}

/// Knobs a driver takes besides its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverOptions {
    /// Bound on one request (HTTP request, one ipmitool run).
    pub request_timeout: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            request_timeout: Duration::from_secs(10),
        }
    }
}

type DriverFactory = fn(&BmcTarget, &DriverOptions) -> Result<Box<dyn PowerDriver>, PowerError>;

/// Which driver serves which scheme. Adding a driver means one line here; callers only
/// ever go through [`driver_for`].
const DRIVERS: &[(BmcScheme, DriverFactory)] = &[
    (BmcScheme::Ipmi, native_ipmi::NativeIpmiDriver::boxed),
    (BmcScheme::Ipmitool, ipmitool::IpmitoolDriver::boxed),
    (BmcScheme::Redfish, redfish::RedfishDriver::boxed),
    (BmcScheme::RedfishHttps, redfish::RedfishDriver::boxed),
    (BmcScheme::Fake, fake::FakeDriver::boxed),
];

/// The driver for a target, chosen by its URL scheme, with default options.
pub fn driver_for(target: &BmcTarget) -> Result<Box<dyn PowerDriver>, PowerError> {
    driver_with_options(target, &DriverOptions::default())
}

pub fn driver_with_options(
    target: &BmcTarget,
    options: &DriverOptions,
) -> Result<Box<dyn PowerDriver>, PowerError> {
    let scheme = target.url.scheme();
    let factory = DRIVERS
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, f)| f)
        .ok_or_else(|| PowerError::Unsupported {
            bmc: target.redacted(),
            detail: format!("no driver for scheme {}", scheme.as_str()),
        })?;
    factory(target, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_has_a_driver() {
        for scheme in BmcScheme::ALL {
            assert!(DRIVERS.iter().any(|(s, _)| *s == scheme), "{scheme:?}");
        }
    }

    #[tokio::test]
    async fn driver_for_picks_by_scheme() {
        let target: BmcTarget = "fake://registry-test".parse().unwrap();
        let driver = driver_for(&target).unwrap();
        assert_eq!(driver.ping().await.unwrap().protocol, "fake");
    }
}
