//! The IPMI commands rackboot uses: request data encoders and response data decoders.
//! Response decoders take the data after the completion code.

use crate::error::{DecodeError, need};
use crate::msg::{NETFN_APP, NETFN_CHASSIS};
use crate::rakp::Privilege;

/// A command's netFn, code and name (for errors and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    pub netfn: u8,
    pub cmd: u8,
    pub name: &'static str,
}

pub const GET_DEVICE_ID: Command = Command {
    netfn: NETFN_APP,
    cmd: 0x01,
    name: "Get Device ID",
};
pub const GET_CHANNEL_AUTH_CAPABILITIES: Command = Command {
    netfn: NETFN_APP,
    cmd: 0x38,
    name: "Get Channel Authentication Capabilities",
};
pub const SET_SESSION_PRIVILEGE_LEVEL: Command = Command {
    netfn: NETFN_APP,
    cmd: 0x3b,
    name: "Set Session Privilege Level",
};
pub const CLOSE_SESSION: Command = Command {
    netfn: NETFN_APP,
    cmd: 0x3c,
    name: "Close Session",
};
pub const GET_CHASSIS_STATUS: Command = Command {
    netfn: NETFN_CHASSIS,
    cmd: 0x01,
    name: "Get Chassis Status",
};
pub const CHASSIS_CONTROL: Command = Command {
    netfn: NETFN_CHASSIS,
    cmd: 0x02,
    name: "Chassis Control",
};
pub const SET_SYSTEM_BOOT_OPTIONS: Command = Command {
    netfn: NETFN_CHASSIS,
    cmd: 0x08,
    name: "Set System Boot Options",
};
pub const GET_SYSTEM_BOOT_OPTIONS: Command = Command {
    netfn: NETFN_CHASSIS,
    cmd: 0x09,
    name: "Get System Boot Options",
};

/// Get Channel Authentication Capabilities request: current channel (0x0e) with bit 7 set
/// to ask for IPMI v2.0 extended capabilities.
pub fn get_channel_auth_caps_request(privilege: Privilege) -> Vec<u8> {
    vec![0x8e, privilege.level()]
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAuthCapabilities {
    pub channel: u8,
    /// IPMI v1.5 auth types bitmap (bit 7: v2.0 extended data present).
    pub auth_types: u8,
    pub flags: u8,
    /// Extended capabilities: bit 1 = IPMI v2.0 (RMCP+) supported, bit 0 = v1.5.
    pub ext_capabilities: u8,
    pub oem_id: u32,
    pub oem_aux: u8,
}

impl ChannelAuthCapabilities {
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        need("Get Channel Authentication Capabilities response", data, 8)?;
        Ok(ChannelAuthCapabilities {
            channel: data[0],
            auth_types: data[1],
            flags: data[2],
            ext_capabilities: data[3],
            oem_id: u32::from_le_bytes([data[4], data[5], data[6], 0]),
            oem_aux: data[7],
        })
    }
    pub fn supports_ipmi_v2(&self) -> bool {
        self.auth_types & 0x80 != 0 && self.ext_capabilities & 0x02 != 0
    }
}

pub fn set_session_privilege_request(privilege: Privilege) -> Vec<u8> {
    vec![privilege.level()]
}

pub fn decode_set_session_privilege(data: &[u8]) -> Result<u8, DecodeError> {
    need("Set Session Privilege Level response", data, 1)?;
    Ok(data[0] & 0x0f)
}

/// Close Session request: the BMC's session id.
pub fn close_session_request(bmc_session_id: u32) -> Vec<u8> {
    bmc_session_id.to_le_bytes().to_vec()
}

/// Get Device ID response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    pub device_id: u8,
    pub device_revision: u8,
    pub provides_sdrs: bool,
    /// Device available (false while in firmware update).
    pub device_available: bool,
    pub firmware_major: u8,
    /// BCD-encoded minor revision as carried (e.g. 0x09 for ".09").
    pub firmware_minor: u8,
    /// IPMI version, (major, minor): (2, 0) for 0x02.
    pub ipmi_version: (u8, u8),
    pub additional_support: u8,
    /// IANA manufacturer id (20 bits).
    pub manufacturer_id: u32,
    pub product_id: u16,
    pub aux_firmware: Option<[u8; 4]>,
}

impl DeviceId {
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        need("Get Device ID response", data, 11)?;
        Ok(DeviceId {
            device_id: data[0],
            device_revision: data[1] & 0x0f,
            provides_sdrs: data[1] & 0x80 != 0,
            device_available: data[2] & 0x80 == 0,
            firmware_major: data[2] & 0x7f,
            firmware_minor: data[3],
            ipmi_version: (data[4] & 0x0f, data[4] >> 4),
            additional_support: data[5],
            manufacturer_id: u32::from_le_bytes([data[6], data[7], data[8], 0]) & 0x0f_ffff,
            product_id: u16::from_le_bytes([data[9], data[10]]),
            aux_firmware: data.get(11..15).map(|a| a.try_into().expect("4 bytes")),
        })
    }
}

/// Power restore policy from Get Chassis Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerRestorePolicy {
    StayOff,
    Restore,
    AlwaysOn,
    Unknown,
}

/// Get Chassis Status response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChassisStatus {
    pub power_on: bool,
    pub power_overload: bool,
    pub interlock: bool,
    pub power_fault: bool,
    pub power_control_fault: bool,
    pub restore_policy: PowerRestorePolicy,
    /// Last power event byte (raw).
    pub last_power_event: u8,
    /// Misc chassis state byte (raw): bit 0 intrusion, bit 6 identify supported...
    pub misc: u8,
    pub front_panel: Option<u8>,
}

impl ChassisStatus {
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        need("Get Chassis Status response", data, 3)?;
        let p = data[0];
        Ok(ChassisStatus {
            power_on: p & 0x01 != 0,
            power_overload: p & 0x02 != 0,
            interlock: p & 0x04 != 0,
            power_fault: p & 0x08 != 0,
            power_control_fault: p & 0x10 != 0,
            restore_policy: match (p >> 5) & 0x03 {
                0 => PowerRestorePolicy::StayOff,
                1 => PowerRestorePolicy::Restore,
                2 => PowerRestorePolicy::AlwaysOn,
                _ => PowerRestorePolicy::Unknown,
            },
            last_power_event: data[1],
            misc: data[2],
            front_panel: data.get(3).copied(),
        })
    }
}

/// Chassis Control actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChassisControl {
    PowerDown,
    PowerUp,
    PowerCycle,
    HardReset,
    PulseDiagnosticInterrupt,
    /// Initiate a soft shutdown via ACPI (emulated over-temperature).
    SoftOff,
}

impl ChassisControl {
    pub fn code(self) -> u8 {
        match self {
            ChassisControl::PowerDown => 0,
            ChassisControl::PowerUp => 1,
            ChassisControl::PowerCycle => 2,
            ChassisControl::HardReset => 3,
            ChassisControl::PulseDiagnosticInterrupt => 4,
            ChassisControl::SoftOff => 5,
        }
    }
    pub fn from_code(c: u8) -> Option<Self> {
        Some(match c & 0x0f {
            0 => ChassisControl::PowerDown,
            1 => ChassisControl::PowerUp,
            2 => ChassisControl::PowerCycle,
            3 => ChassisControl::HardReset,
            4 => ChassisControl::PulseDiagnosticInterrupt,
            5 => ChassisControl::SoftOff,
            _ => return None,
        })
    }
}

/// Boot option parameter selectors.
pub const BOOT_PARAM_SET_IN_PROGRESS: u8 = 0;
pub const BOOT_PARAM_BOOT_FLAG_VALID_CLEARING: u8 = 3;
pub const BOOT_PARAM_BOOT_INFO_ACK: u8 = 4;
pub const BOOT_PARAM_BOOT_FLAGS: u8 = 5;

/// Boot devices rackboot asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    Pxe,
    Disk,
}

/// The device selector (boot flags data 2, bits 5:2) a BMC reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDeviceSelector {
    NoOverride,
    Pxe,
    Disk,
    DiskSafeMode,
    DiagnosticPartition,
    CdDvd,
    BiosSetup,
    RemoteFloppy,
    RemoteCdDvd,
    PrimaryRemoteMedia,
    RemoteDisk,
    Floppy,
    Reserved(u8),
}

impl BootDeviceSelector {
    pub fn from_bits(b: u8) -> Self {
        match b & 0x0f {
            0x0 => BootDeviceSelector::NoOverride,
            0x1 => BootDeviceSelector::Pxe,
            0x2 => BootDeviceSelector::Disk,
            0x3 => BootDeviceSelector::DiskSafeMode,
            0x4 => BootDeviceSelector::DiagnosticPartition,
            0x5 => BootDeviceSelector::CdDvd,
            0x6 => BootDeviceSelector::BiosSetup,
            0x7 => BootDeviceSelector::RemoteFloppy,
            0x8 => BootDeviceSelector::RemoteCdDvd,
            0x9 => BootDeviceSelector::PrimaryRemoteMedia,
            0xb => BootDeviceSelector::RemoteDisk,
            0xf => BootDeviceSelector::Floppy,
            other => BootDeviceSelector::Reserved(other),
        }
    }
    pub fn as_boot_device(self) -> Option<BootDevice> {
        match self {
            BootDeviceSelector::Pxe => Some(BootDevice::Pxe),
            BootDeviceSelector::Disk => Some(BootDevice::Disk),
            _ => None,
        }
    }
}

impl BootDevice {
    fn selector_bits(self) -> u8 {
        match self {
            BootDevice::Pxe => 0x1,
            BootDevice::Disk => 0x2,
        }
    }
}

/// Boot flags (boot option parameter 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags {
    pub valid: bool,
    /// true: applies to all future boots; false: next boot only.
    pub persistent: bool,
    /// true: EFI boot; false: legacy (PC compatible) boot.
    pub efi: bool,
    pub device: BootDeviceSelector,
    /// The five data bytes as carried.
    pub raw: [u8; 5],
}

impl BootFlags {
    /// The five parameter-5 data bytes that force `device`.
    pub fn encode(device: BootDevice, persistent: bool, efi: bool) -> [u8; 5] {
        let mut b1 = 0x80; // boot flags valid
        if persistent {
            b1 |= 0x40;
        }
        if efi {
            b1 |= 0x20;
        }
        [b1, device.selector_bits() << 2, 0, 0, 0]
    }

    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        need("boot flags parameter", data, 5)?;
        Ok(BootFlags {
            valid: data[0] & 0x80 != 0,
            persistent: data[0] & 0x40 != 0,
            efi: data[0] & 0x20 != 0,
            device: BootDeviceSelector::from_bits(data[1] >> 2),
            raw: data[..5].try_into().expect("checked length"),
        })
    }
}

/// Set System Boot Options request data: parameter selector then parameter data.
pub fn set_boot_option_request(param: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + data.len());
    out.push(param & 0x7f);
    out.extend_from_slice(data);
    out
}

/// Get System Boot Options request data: parameter, set selector 0, block selector 0.
pub fn get_boot_option_request(param: u8) -> Vec<u8> {
    vec![param & 0x7f, 0, 0]
}

/// A Get System Boot Options response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptionResponse {
    pub version: u8,
    pub param: u8,
    /// Bit 7 of the parameter byte: parameter marked invalid / locked.
    pub invalid: bool,
    pub data: Vec<u8>,
}

impl BootOptionResponse {
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        need("Get System Boot Options response", data, 2)?;
        Ok(BootOptionResponse {
            version: data[0] & 0x0f,
            param: data[1] & 0x7f,
            invalid: data[1] & 0x80 != 0,
            data: data[2..].to_vec(),
        })
    }
}
