//! `ipmi://`: IPMI v2.0 / RMCP+ through rackboot's own client ([`rackboot_ipmi`]),
//! no external program. One session per driver, opened on first use and closed by
//! [`PowerDriver::close`]; after a transient error the session is dropped, so the
//! controller's retry opens a fresh one (BMCs drop idle sessions on their side).

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use rackboot_ipmi::{ChassisControl, CipherSuiteChoice, IpmiClient, IpmiError, IpmiOptions};
use tokio::sync::Mutex;

use crate::{
    BmcInfo, BmcTarget, BootDevice, BootDeviceReading, BootMode, BootPersistence, DriverOptions,
    PowerAction, PowerDriver, PowerError, PowerState,
};

pub struct NativeIpmiDriver {
    bmc: String,
    host: String,
    port: u16,
    username: String,
    password: String,
    options: IpmiOptions,
    session: Mutex<Option<IpmiClient>>,
}

/// IANA enterprise numbers of common BMC makers (Get Device ID gives only the number).
fn manufacturer_name(id: u32) -> Option<&'static str> {
    Some(match id {
        2 => "IBM",
        11 => "Hewlett Packard Enterprise",
        343 => "Intel",
        674 => "Dell",
        4753 => "MontaVista Software, Inc.",
        10876 => "Supermicro",
        19046 => "Lenovo",
        20301 => "IBM",
        42385 => "Cisco",
        49622 => "OpenBMC",
        _ => return None,
    })
}

/// Maps the IPMI client's error to ours, keeping its message (it names the socket
/// address and user, never the password).
pub fn map_error(bmc: &str, e: &IpmiError) -> PowerError {
    let bmc = bmc.to_string();
    let detail = e.to_string();
    match e {
        IpmiError::AuthFailed { .. } => PowerError::Authentication { bmc, detail },
        IpmiError::Unreachable { .. } | IpmiError::Io { .. } => {
            PowerError::Unreachable { bmc, detail }
        }
        IpmiError::Unsupported { .. } | IpmiError::InvalidArgument(_) => {
            PowerError::Unsupported { bmc, detail }
        }
        IpmiError::SessionRefused { .. } | IpmiError::Completion { .. } => PowerError::Bmc {
            bmc,
            message: detail,
            transient: e.is_transient(),
        },
        IpmiError::Protocol { .. } | IpmiError::Closed { .. } => PowerError::Protocol {
            bmc,
            message: detail,
        },
    }
}

impl NativeIpmiDriver {
    pub fn new(
        target: &BmcTarget,
        options: &DriverOptions,
    ) -> Result<NativeIpmiDriver, PowerError> {
        let cipher_suite = match target.url.cipher_suite() {
            None => CipherSuiteChoice::Auto,
            Some(3) => CipherSuiteChoice::Suite3,
            Some(17) => CipherSuiteChoice::Suite17,
            Some(n) => {
                return Err(PowerError::Unsupported {
                    bmc: target.redacted(),
                    detail: format!(
                        "cipher suite {n}: the native IPMI client speaks 3 and 17 (use ipmitool:// for others)"
                    ),
                });
            }
        };
        // Retransmit once a second, as many times as fit in the request timeout.
        let per_try = Duration::from_secs(1);
        let retries = (options.request_timeout.as_secs() as u32)
            .saturating_sub(1)
            .clamp(0, 3);
        Ok(NativeIpmiDriver {
            bmc: target.redacted(),
            host: target.url.host().to_string(),
            port: target.url.port(),
            username: target.username.clone(),
            password: target.password.clone(),
            options: IpmiOptions {
                cipher_suite,
                timeout: per_try.min(options.request_timeout),
                retries,
                ..IpmiOptions::default()
            },
            session: Mutex::new(None),
        })
    }

    pub(crate) fn boxed(
        target: &BmcTarget,
        options: &DriverOptions,
    ) -> Result<Box<dyn PowerDriver>, PowerError> {
        Ok(Box::new(NativeIpmiDriver::new(target, options)?))
    }

    async fn resolve(&self) -> Result<SocketAddr, PowerError> {
        let mut addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| PowerError::Unreachable {
                bmc: self.bmc.clone(),
                detail: format!("cannot resolve {}: {e}", self.host),
            })?
            .collect::<Vec<_>>();
        addrs.sort_by_key(|a| !a.is_ipv4());
        addrs
            .into_iter()
            .next()
            .ok_or_else(|| PowerError::Unreachable {
                bmc: self.bmc.clone(),
                detail: format!("{} has no address", self.host),
            })
    }

    /// Runs one command in the session (opening it if needed). A transient failure
    /// drops the session so the next call starts a new one.
    async fn with_session<T>(
        &self,
        f: impl AsyncFnOnce(&mut IpmiClient) -> Result<T, IpmiError>,
    ) -> Result<T, PowerError> {
        let mut session = self.session.lock().await;
        if session.is_none() {
            let addr = self.resolve().await?;
            let client =
                IpmiClient::connect(addr, &self.username, &self.password, self.options.clone())
                    .await
                    .map_err(|e| map_error(&self.bmc, &e))?;
            *session = Some(client);
        }
        let client = session.as_mut().expect("session opened above");
        match f(client).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_transient() {
                    *session = None;
                }
                Err(map_error(&self.bmc, &e))
            }
        }
    }
}

/// What parameter 5 says the next boot is. The device only: ipmi_sim (and some BMCs)
/// answer with the valid bit clear right after a set that did take.
pub(crate) fn boot_device_reading(flags: &rackboot_ipmi::BootFlags) -> BootDeviceReading {
    match flags.device {
        rackboot_ipmi::BootDeviceSelector::Pxe => BootDeviceReading::Device(BootDevice::Pxe),
        rackboot_ipmi::BootDeviceSelector::Disk => BootDeviceReading::Device(BootDevice::Disk),
        _ => BootDeviceReading::Other,
    }
}

#[async_trait]
impl PowerDriver for NativeIpmiDriver {
    async fn power_state(&self) -> Result<PowerState, PowerError> {
        let status = self
            .with_session(async |c: &mut IpmiClient| c.chassis_status().await)
            .await?;
        Ok(if status.power_on {
            PowerState::On
        } else {
            PowerState::Off
        })
    }

    async fn power(&self, action: PowerAction) -> Result<(), PowerError> {
        let control = match action {
            PowerAction::On => ChassisControl::PowerUp,
            PowerAction::Off => ChassisControl::PowerDown,
            PowerAction::SoftOff => ChassisControl::SoftOff,
            PowerAction::Cycle => ChassisControl::PowerCycle,
            PowerAction::Reset => ChassisControl::HardReset,
        };
        self.with_session(async move |c: &mut IpmiClient| c.chassis_control(control).await)
            .await
    }

    async fn set_boot_device(
        &self,
        device: BootDevice,
        persistence: BootPersistence,
        mode: Option<BootMode>,
    ) -> Result<(), PowerError> {
        let device = match device {
            BootDevice::Pxe => rackboot_ipmi::BootDevice::Pxe,
            BootDevice::Disk => rackboot_ipmi::BootDevice::Disk,
        };
        let persistent = persistence == BootPersistence::Persistent;
        // IPMI boot flags always carry a mode bit; no preference means legacy (as ipmitool).
        let efi = mode == Some(BootMode::Uefi);
        self.with_session(async move |c: &mut IpmiClient| {
            c.set_boot_device(device, persistent, efi).await
        })
        .await
    }

    async fn boot_device(&self) -> Result<BootDeviceReading, PowerError> {
        let flags = self
            .with_session(async |c: &mut IpmiClient| c.get_boot_device().await)
            .await?;
        Ok(boot_device_reading(&flags))
    }

    async fn ping(&self) -> Result<BmcInfo, PowerError> {
        let id = self
            .with_session(async |c: &mut IpmiClient| c.get_device_id().await)
            .await?;
        Ok(BmcInfo {
            protocol: "ipmi".into(),
            vendor: Some(
                manufacturer_name(id.manufacturer_id)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("IANA {}", id.manufacturer_id)),
            ),
            model: Some(format!("product 0x{:04x}", id.product_id)),
            firmware: Some(format!("{}.{:02x}", id.firmware_major, id.firmware_minor)),
            power: None,
        })
    }

    async fn close(&self) {
        if let Some(mut client) = self.session.lock().await.take()
            && let Err(e) = client.close().await
        {
            tracing::debug!(bmc = %self.bmc, error = %e, "closing the IPMI session failed");
        }
    }
}
