//! Boot configuration: where the boot HTTP server is reached, which loader
//! files the firmware is handed, where kernels and initrds live, and what
//! unknown machines get.

use std::path::PathBuf;

use rackboot_core::Menu;
use serde::{Deserialize, Serialize};

/// The `[boot]` section of the rackboot config. Unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootConfig {
    /// TCP port of the boot HTTP server. URLs handed to clients are
    /// `http://<DHCP server IP>:<http_port>/...` unless `public_url` is set.
    pub http_port: u16,
    /// Base URL clients use to reach the boot HTTP server (`http://boot.rack1:8080`),
    /// for a server behind NAT or a proxy. Overrides the address-and-port default.
    pub public_url: Option<String>,
    /// First-stage loader files, as paths in the TFTP root (and in `loader_dir`).
    pub loaders: LoaderFiles,
    /// Directory holding the loader binaries, normally the TFTP root. The boot
    /// HTTP server serves the configured loaders from it under `/boot/loader/`
    /// (UEFI HTTP-boot clients fetch iPXE from there).
    pub loader_dir: PathBuf,
    /// Kernels, initrds and images, served under `/assets/` with Range support.
    /// Profile `kernel`/`initrds` paths that are not URLs are relative to it.
    pub asset_dir: PathBuf,
    /// Where the TFTP server exposes `asset_dir`, relative to the TFTP root.
    /// pxelinux and GRUB load relative kernels and initrds over TFTP from
    /// `/<tftp_asset_prefix>/<path>`. Empty when the asset dir is the TFTP root.
    pub tftp_asset_prefix: String,
    /// Profile booted by machines whose intent is `discover` (new machines).
    /// When absent they are recorded and told to boot their next device.
    pub discovery_profile: Option<String>,
    /// What a MAC address rackboot has never seen gets.
    pub unknown_machines: UnknownPolicy,
    /// Site default: UEFI x86-64 machines have Secure Boot on, so they get
    /// shim (then the signed network GRUB and a generated grub.cfg) instead of
    /// iPXE. A profile with `loader = "shim"` asks for it too, and a machine's
    /// label `secure_boot` (`true`/`false`) overrides both.
    pub secure_boot: bool,
    /// The menu shown to unknown machines when `unknown_machines = "menu"`.
    /// When absent, every profile is listed by name, local disk first and default.
    pub unknown_menu: Option<Menu>,
    /// The deploy agent's RAM-disk (`vmlinuz`, `initramfs.img`), served under
    /// `/ramdisk/`; `rackboot ramdisk build` writes it. Default: STATE_DIR/ramdisk.
    pub ramdisk_dir: Option<PathBuf>,
    /// The image catalog, served under `/images/`. Default: STATE_DIR/images.
    pub images_dir: Option<PathBuf>,
    /// Kernel arguments of the agent's RAM-disk, besides rackboot's own
    /// (`rackboot.url`, `rackboot.token`, `BOOTIF`). The last `console=` is
    /// where the agent's log goes.
    pub agent_kernel_args: String,
    /// How long a pending install's boot script and files are served after
    /// their first fetch, when its installer does not report `started`
    /// sooner (which closes them at once; Windows Setup never reports it).
    /// Afterwards they answer 410 until the install is requested again.
    pub install_files_window_secs: u64,
    /// The subnets rackboot's own DHCP server leases from, with what it
    /// offers on each (router, DNS, NTP): installers are told what their
    /// network lacks. Filled by the binary from the `[dhcp]` section, never
    /// read from the config file; empty (ProxyDHCP, no DHCP) means unknown.
    #[serde(skip)]
    pub served_subnets: Vec<ServedSubnet>,
}

/// A subnet rackboot's DHCP server serves, as an installer on it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedSubnet {
    pub network: std::net::Ipv4Addr,
    pub prefix: u8,
    pub offer: rackboot_install::InstallerNetwork,
}

impl ServedSubnet {
    pub fn contains(&self, ip: std::net::Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.network) & mask
    }
}

/// Loader file names handed out in DHCP (`file` / option 67).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderFiles {
    /// iPXE for BIOS PXE ROMs (chains through the ROM's UNDI driver).
    pub bios_ipxe: String,
    /// iPXE for UEFI x86-64. Default `snponly.efi` (drives the NIC through the
    /// firmware's SNP): measured under OVMF, `ipxe.efi`'s `exit` never returns to
    /// the firmware, so local-disk boots hang, while `snponly.efi` returns.
    pub uefi_x64_ipxe: String,
    /// iPXE for UEFI arm64; arm64 clients get `uefi_arm64_grub` when absent.
    pub uefi_arm64: Option<String>,
    /// GRUB for UEFI arm64 (Debian's signed network GRUB, grubnetaa64.efi.signed
    /// from grub-efi-arm64-signed), then a generated grub.cfg: arm64 machines'
    /// default loader (Debian has no iPXE for arm64).
    pub uefi_arm64_grub: String,
    /// pxelinux for BIOS machines whose profile asks for `loader = "pxelinux"`.
    pub pxelinux: String,
    /// GRUB for UEFI x86-64 machines whose profile asks for `loader = "grub"`;
    /// such machines get iPXE when absent. Also turns on generated `grub.cfg` files.
    pub uefi_x64_grub: Option<String>,
    /// shim for UEFI x86-64 machines with Secure Boot (see `boot.secure_boot`):
    /// Debian's Microsoft-signed `shimx64.efi.signed` (package shim-signed).
    /// shim then loads `grubx64.efi` from the same place, which must be the
    /// distribution's signed network GRUB (`grubnetx64.efi.signed`).
    pub uefi_x64_shim: String,
}

/// The file shim loads after itself, from the directory it was loaded from
/// (shim's built-in default loader name).
pub const SHIM_NEXT_LOADER: &str = "grubx64.efi";

/// Machine label that turns Secure Boot on (`true`) or off (`false`) for one
/// machine, whatever its profile and the site default say.
pub const SECURE_BOOT_LABEL: &str = "secure_boot";

/// Policy for a MAC address not in the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownPolicy {
    /// Record the machine (intent `discover`) and boot the discovery profile,
    /// or tell it to boot its next device when there is none.
    #[default]
    Discover,
    /// Show `unknown_menu` without recording the machine.
    Menu,
}

impl Default for BootConfig {
    fn default() -> BootConfig {
        BootConfig {
            http_port: 8080,
            public_url: None,
            loaders: LoaderFiles::default(),
            loader_dir: PathBuf::from("/var/lib/rackboot/tftp"),
            asset_dir: PathBuf::from("/var/lib/rackboot/assets"),
            tftp_asset_prefix: "assets".into(),
            discovery_profile: None,
            unknown_machines: UnknownPolicy::Discover,
            secure_boot: false,
            unknown_menu: None,
            ramdisk_dir: None,
            images_dir: None,
            agent_kernel_args: DEFAULT_AGENT_KERNEL_ARGS.into(),
            install_files_window_secs: DEFAULT_INSTALL_FILES_WINDOW_SECS,
            served_subnets: Vec::new(),
        }
    }
}

/// Half an hour: an installer reads its file within minutes of its boot
/// script (its kernel and initrd load first), even on a slow emulated machine.
pub const DEFAULT_INSTALL_FILES_WINDOW_SECS: u64 = 1800;

/// Serial and screen consoles (a BMC's serial-over-LAN shows the serial one).
pub const DEFAULT_AGENT_KERNEL_ARGS: &str = "console=tty0 console=ttyS0,115200n8";

impl Default for LoaderFiles {
    fn default() -> LoaderFiles {
        LoaderFiles {
            bios_ipxe: "undionly.kpxe".into(),
            uefi_x64_ipxe: "snponly.efi".into(),
            uefi_arm64: None,
            uefi_arm64_grub: "grubaa64.efi".into(),
            pxelinux: "pxelinux.0".into(),
            uefi_x64_grub: None,
            uefi_x64_shim: "shimx64.efi".into(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootConfigError {
    #[error(
        "boot.public_url {0:?} must start with http:// and have a host (https is not supported by iPXE builds without TLS)"
    )]
    PublicUrl(String),
    #[error(
        "boot.loaders.{field} {value:?} must be a relative path of letters, digits, '.', '_', '-' and '/' without '..'"
    )]
    LoaderName { field: &'static str, value: String },
    #[error("boot.tftp_asset_prefix {0:?} must be a relative path without '..'")]
    AssetPrefix(String),
    #[error("boot.{field}: {why}")]
    Name { field: &'static str, why: String },
}

impl BootConfig {
    /// Checks what serde cannot: URL shape, loader names that are safe in a
    /// URL and a TFTP path, profile names.
    pub fn validate(&self) -> Result<(), BootConfigError> {
        if self.install_files_window_secs == 0 {
            return Err(BootConfigError::Name {
                field: "install_files_window_secs",
                why: "must be at least 1 (installers fetch their files after their boot script)"
                    .into(),
            });
        }
        if let Some(url) = &self.public_url {
            let host = url.strip_prefix("http://").unwrap_or("");
            if host.trim_end_matches('/').is_empty() || !is_safe_url_text(host) {
                return Err(BootConfigError::PublicUrl(url.clone()));
            }
        }
        let l = &self.loaders;
        let loaders = [
            ("bios_ipxe", Some(&l.bios_ipxe)),
            ("uefi_x64_ipxe", Some(&l.uefi_x64_ipxe)),
            ("uefi_arm64", l.uefi_arm64.as_ref()),
            ("uefi_arm64_grub", Some(&l.uefi_arm64_grub)),
            ("pxelinux", Some(&l.pxelinux)),
            ("uefi_x64_grub", l.uefi_x64_grub.as_ref()),
            ("uefi_x64_shim", Some(&l.uefi_x64_shim)),
        ];
        for (field, value) in loaders {
            if let Some(v) = value
                && !is_safe_relative_path(v)
            {
                return Err(BootConfigError::LoaderName {
                    field,
                    value: v.clone(),
                });
            }
        }
        let prefix = self.tftp_asset_prefix.trim_matches('/');
        if !prefix.is_empty() && !is_safe_relative_path(prefix) {
            return Err(BootConfigError::AssetPrefix(self.tftp_asset_prefix.clone()));
        }
        if self.agent_kernel_args.chars().any(|c| c.is_control())
            || self.agent_kernel_args.contains("${")
        {
            return Err(BootConfigError::Name {
                field: "agent_kernel_args",
                why: "must be one line without iPXE settings (${...})".into(),
            });
        }
        if let Some(p) = &self.discovery_profile {
            rackboot_core::machine::validate_name("profile name", p).map_err(|why| {
                BootConfigError::Name {
                    field: "discovery_profile",
                    why,
                }
            })?;
        }
        Ok(())
    }

    /// Every configured loader file name, for `/boot/loader/{name}`.
    pub fn loader_names(&self) -> Vec<&str> {
        let l = &self.loaders;
        let mut names = vec![
            l.bios_ipxe.as_str(),
            l.uefi_x64_ipxe.as_str(),
            l.pxelinux.as_str(),
        ];
        names.extend(l.uefi_arm64.as_deref());
        names.extend(l.uefi_x64_grub.as_deref());
        // Secure Boot over HTTP: shim, and the GRUB it loads from beside itself.
        names.push(l.uefi_x64_shim.as_str());
        names.push(SHIM_NEXT_LOADER);
        names
    }
}

/// `a/b.efi`: no empty, `.` or `..` segment, no leading '/', URL- and TFTP-safe characters.
pub(crate) fn is_safe_relative_path(p: &str) -> bool {
    !p.is_empty()
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

/// Host, port and path characters we are willing to put into a boot script.
pub(crate) fn is_safe_url_text(s: &str) -> bool {
    s.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '[' | ']' | '~')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: BootConfig = toml::from_str("").unwrap();
        assert_eq!(c, BootConfig::default());
        assert_eq!(c.loaders.bios_ipxe, "undionly.kpxe");
        c.validate().unwrap();

        let err = toml::from_str::<BootConfig>("http_prot = 80").unwrap_err();
        assert!(err.to_string().contains("http_prot"), "{err}");
        let err = toml::from_str::<BootConfig>("[loaders]\nbios = 'x'").unwrap_err();
        assert!(err.to_string().contains("bios"), "{err}");
    }

    #[test]
    fn full_example_parses() {
        let c: BootConfig = toml::from_str(
            r#"
            http_port = 8081
            public_url = "http://boot.rack1:8081"
            loader_dir = "/srv/tftp"
            asset_dir = "/srv/assets"
            tftp_asset_prefix = "assets"
            discovery_profile = "inspect"
            unknown_machines = "menu"
            [loaders]
            uefi_x64_ipxe = "ipxe.efi"
            uefi_arm64 = "arm64/ipxe.efi"
            uefi_x64_grub = "grubx64.efi"
            [unknown_menu]
            entries = [{ profile = "debian", label = "Debian 12" }]
            timeout_secs = 5
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.unknown_machines, UnknownPolicy::Menu);
        assert_eq!(c.loaders.uefi_arm64.as_deref(), Some("arm64/ipxe.efi"));
        assert_eq!(c.unknown_menu.unwrap().timeout_secs, 5);
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = BootConfig::default();
        c.loaders.bios_ipxe = "../undionly.kpxe".into();
        assert!(matches!(
            c.validate(),
            Err(BootConfigError::LoaderName {
                field: "bios_ipxe",
                ..
            })
        ));
        let mut c = BootConfig {
            public_url: Some("https://x".into()),
            ..BootConfig::default()
        };
        assert!(matches!(c.validate(), Err(BootConfigError::PublicUrl(_))));
        c.public_url = Some("http://x y".into());
        assert!(matches!(c.validate(), Err(BootConfigError::PublicUrl(_))));
        c.public_url = Some("http://10.0.0.1:8080/".into());
        c.validate().unwrap();
    }
}
