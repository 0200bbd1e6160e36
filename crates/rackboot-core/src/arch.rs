//! Client firmware architecture (RFC 4578 option 93) and what a PXE client said about itself.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Firmware architecture of a network-booting client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// x86 legacy BIOS (option 93 type 0).
    Bios,
    /// UEFI x86-64 (types 7 and 9).
    UefiX64,
    /// UEFI 32-bit x86 (type 6).
    UefiIa32,
    /// UEFI arm64 (type 11).
    UefiArm64,
    /// Anything else; the raw option 93 value is kept.
    Other(u16),
}

impl Arch {
    /// Maps an RFC 4578 / IANA processor architecture type. HTTP-boot types
    /// (15, 16, 19) map to their firmware arch; whether the client boots over
    /// HTTP is recorded separately in [`PxeClient::http_boot`].
    pub fn from_client_arch(code: u16) -> Arch {
        match code {
            0 => Arch::Bios,
            6 | 15 => Arch::UefiIa32,
            7 | 9 | 16 => Arch::UefiX64,
            11 | 19 => Arch::UefiArm64,
            other => Arch::Other(other),
        }
    }

    /// True for every UEFI flavour.
    pub fn is_uefi(&self) -> bool {
        matches!(self, Arch::UefiX64 | Arch::UefiIa32 | Arch::UefiArm64)
    }

    pub fn as_str(&self) -> String {
        match self {
            Arch::Bios => "bios".into(),
            Arch::UefiX64 => "uefi_x64".into(),
            Arch::UefiIa32 => "uefi_ia32".into(),
            Arch::UefiArm64 => "uefi_arm64".into(),
            Arch::Other(n) => format!("other_{n}"),
        }
    }

    pub fn parse(s: &str) -> Option<Arch> {
        Some(match s {
            "bios" => Arch::Bios,
            "uefi_x64" => Arch::UefiX64,
            "uefi_ia32" => Arch::UefiIa32,
            "uefi_arm64" => Arch::UefiArm64,
            other => Arch::Other(other.strip_prefix("other_")?.parse().ok()?),
        })
    }
}

/// What a booting client told us about itself in its DHCP request
/// (options 60, 77, 93, 94, 97, 175). Produced by the wire crate's classifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeClient {
    /// Architecture from option 93 (BIOS when absent but the client is PXE).
    pub arch: Arch,
    /// Vendor class `HTTPClient...`: UEFI HTTP boot, wants a URL as the boot file.
    pub http_boot: bool,
    /// iPXE is already running (user class "iPXE" or option 175 present):
    /// hand it the script URL, never iPXE again, to break the chainload loop.
    pub ipxe: bool,
    /// SMBIOS UUID from option 97, when sent.
    pub uuid: Option<uuid::Uuid>,
    /// Option 94 network interface identifier (UNDI major, minor), when sent.
    pub undi: Option<(u8, u8)>,
}
