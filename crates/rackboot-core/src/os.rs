//! Operating-system families rackboot can install with the distribution's own
//! unattended installer. The family decides the automation file format and the
//! kernel arguments that point the installer at it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OsFamily {
    /// RHEL, Rocky, Alma, CentOS, Fedora: Kickstart.
    Rhel,
    /// VMware ESXi: its own Kickstart dialect.
    Esxi,
    /// Debian: preseed.
    Debian,
    /// Ubuntu server (live installer): autoinstall cloud-init user-data.
    Ubuntu,
    /// SUSE Linux Enterprise / openSUSE: AutoYaST.
    Suse,
    /// Windows Server through wimboot + WinPE: unattend.xml.
    Windows,
}

impl OsFamily {
    /// Whether the installer is a Linux kernel and initrd, which every loader
    /// (iPXE, pxelinux, GRUB) boots; ESXi's mboot and Windows' wimboot need iPXE.
    pub fn installer_is_linux(&self) -> bool {
        !matches!(self, OsFamily::Esxi | OsFamily::Windows)
    }

    pub const ALL: [OsFamily; 6] = [
        OsFamily::Rhel,
        OsFamily::Esxi,
        OsFamily::Debian,
        OsFamily::Ubuntu,
        OsFamily::Suse,
        OsFamily::Windows,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            OsFamily::Rhel => "rhel",
            OsFamily::Esxi => "esxi",
            OsFamily::Debian => "debian",
            OsFamily::Ubuntu => "ubuntu",
            OsFamily::Suse => "suse",
            OsFamily::Windows => "windows",
        }
    }

    pub fn parse(s: &str) -> Option<OsFamily> {
        OsFamily::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The name of the unattended-install format this family's installer reads.
    pub fn automation_format(&self) -> &'static str {
        match self {
            OsFamily::Rhel | OsFamily::Esxi => "kickstart",
            OsFamily::Debian => "preseed",
            OsFamily::Ubuntu => "autoinstall",
            OsFamily::Suse => "autoyast",
            OsFamily::Windows => "unattend",
        }
    }
}

impl std::fmt::Display for OsFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for family in OsFamily::ALL {
            assert_eq!(OsFamily::parse(family.as_str()), Some(family));
            let json = serde_json::to_string(&family).unwrap();
            assert_eq!(json, format!("\"{}\"", family.as_str()));
        }
        assert_eq!(OsFamily::parse("windoze"), None);
    }
}
