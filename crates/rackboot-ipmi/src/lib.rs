//! Native IPMI v2.0-over-LAN (RMCP+) client.
//!
//! Two layers:
//! - pure codecs (bytes in, values out, never panic): [`rmcp`] (RMCP header, ASF
//!   ping/pong), [`session`] (IPMI v1.5 and v2.0 session wrappers, integrity trailer,
//!   encrypted payloads), [`msg`] (IPMI LAN message framing and checksums), [`rakp`]
//!   (Open Session, RAKP 1-4 and their authcodes), [`crypto`] (cipher suites 3 and 17,
//!   SIK/K1/K2 derivation, HMAC-SHA1-96 / HMAC-SHA256-128, AES-CBC-128), [`commands`]
//!   (channel auth caps, session privilege, close session, device id, chassis status and
//!   control, system boot options);
//! - [`IpmiClient`], an async session over a tokio UDP socket with retransmission.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rackboot_ipmi::IpmiError> {
//! use rackboot_ipmi::{BootDevice, ChassisControl, IpmiClient, IpmiOptions};
//! let mut bmc = IpmiClient::connect("127.0.0.1:623".parse().unwrap(), "admin", "secret",
//!     IpmiOptions::default()).await?;
//! bmc.set_boot_device(BootDevice::Pxe, false, true).await?;
//! if bmc.chassis_status().await?.power_on {
//!     bmc.chassis_control(ChassisControl::HardReset).await?;
//! } else {
//!     bmc.chassis_control(ChassisControl::PowerUp).await?;
//! }
//! bmc.close().await?;
//! # Ok(()) }
//! ```

pub mod client;
pub mod commands;
pub mod crypto;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod msg;
pub mod rakp;
pub mod rmcp;
pub mod session;

pub use client::{CipherSuiteChoice, IpmiClient, IpmiOptions, presence_ping};
pub use commands::{
    BootDevice, BootDeviceSelector, BootFlags, ChassisControl, ChassisStatus, DeviceId,
    PowerRestorePolicy,
};
pub use crypto::CipherSuite;
pub use error::{AuthFailure, CompletionCode, DecodeError, IpmiError, RakpStatus};
pub use rakp::Privilege;

/// The standard RMCP/IPMI-over-LAN UDP port.
pub const IPMI_PORT: u16 = 623;
