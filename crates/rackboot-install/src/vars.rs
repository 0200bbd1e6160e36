//! Typed per-machine install variables. The API builds an [`InstallVars`] from
//! the machine, its profile and operator input; [`InstallVars::validate`] checks
//! it before any template sees it, so a bad value is a client error naming the
//! field, never a half-rendered file.
//!
//! JSON shape: see [`EXAMPLE_VARS_JSON`] (every field is documented on the
//! structs; unknown keys are rejected).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use rackboot_core::{MacAddr, OsFamily};
use serde::{Deserialize, Serialize};

use crate::RenderError;

/// A complete example (a RHEL machine with a static NIC, a DHCP NIC, an LACP
/// bond carrying a VLAN, disk by serial, LVM), parsed and rendered in tests.
pub const EXAMPLE_VARS_JSON: &str = include_str!("../examples/vars.json");

/// Everything a template may know about one machine's installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallVars {
    /// Short host name (one RFC 1123 label: letters, digits, '-'). Required.
    pub hostname: String,
    /// DNS domain; the FQDN is `hostname.domain` when set.
    #[serde(default)]
    pub domain: Option<String>,
    /// Physical NICs to configure, identified by MAC. At least one interface
    /// (NIC, bond or VLAN) must carry an IPv4 configuration.
    #[serde(default)]
    pub nics: Vec<NicConfig>,
    /// Bonds (link aggregation) of NICs chosen by MAC. Members must not appear
    /// in `nics` with an address of their own.
    #[serde(default)]
    pub bonds: Vec<BondConfig>,
    /// 802.1Q VLAN interfaces on a NIC (by MAC) or a bond (by name).
    #[serde(default)]
    pub vlans: Vec<VlanConfig>,
    /// Which disk the OS goes to.
    pub disk: DiskSelector,
    /// Partition layout on that disk.
    #[serde(default)]
    pub layout: PartitionLayout,
    /// Extra packages (names as the distribution spells them).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Extra package repositories, added to the installer and the installed system.
    #[serde(default)]
    pub repositories: Vec<Repository>,
    /// IANA time zone, e.g. `Etc/UTC`, `Asia/Shanghai`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// POSIX locale, e.g. `en_US.UTF-8`.
    #[serde(default = "default_locale")]
    pub locale: String,
    /// Keyboard layout (X11 name), e.g. `us`, `de`.
    #[serde(default = "default_keyboard")]
    pub keyboard: String,
    /// Root password as a SHA-512 crypt hash (`$6$...`, see
    /// [`crate::hash_root_password`]). Never a plain password. When absent the
    /// root password is locked and `ssh_authorized_keys` must be non-empty
    /// (Linux and ESXi families; ESXi requires a hash).
    #[serde(default)]
    pub root_password_hash: Option<String>,
    /// OpenSSH public keys for root, one per entry (single line each).
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Operator's shell script (PowerShell for Windows) run in the installed
    /// system near the end of the installation, before the completion callback.
    #[serde(default)]
    pub post_script: Option<String>,
    /// The OS installation tree served over HTTP (for Ubuntu: the live-server
    /// ISO URL; for Windows: an `smb://server/share/path` holding the ISO
    /// contents, because Windows Setup cannot install over HTTP). Required.
    pub install_source_url: String,
    /// Completion callback with its single-use token: the install is done
    /// when it is called. With `installed_url` set, the built-in Linux
    /// templates call it from the installed system on its first boot (a
    /// one-shot systemd unit; ESXi: `%firstboot`); without it, or in a
    /// template that only knows this URL, the installer's last step does.
    /// Windows calls it at first logon, which is the installed system too.
    /// POST with an empty body, retrying. Required.
    pub callback_url: String,
    /// "The installer finished": the installer's last step POSTs here
    /// (retrying) before it reboots, so the server makes the machine boot
    /// its disk; the installed system then calls `callback_url`. Optional
    /// (server-filled).
    #[serde(default)]
    pub installed_url: Option<String>,
    /// What the provisioning network's DHCP gives the installer, when the
    /// server knows it (it leases the address itself). Templates tell the
    /// installer about what is missing (no router, no DNS, no NTP) so it
    /// does not stop to ask. Optional (server-filled).
    #[serde(default)]
    pub installer_network: Option<InstallerNetwork>,
    /// Optional progress callback the installer calls once, as soon as it has
    /// read this file (Debian: `preseed/early_command`), so the server knows the
    /// file parsed. Best effort: a failure never stops the install.
    #[serde(default)]
    pub started_url: Option<String>,
    /// Windows-only settings; ignored by other families.
    #[serde(default)]
    pub windows: Option<WindowsVars>,
}

/// The network part of [`InstallVars`] (the same fields, the same JSON), for
/// deployed images: [`crate::render_target_network`] writes it as the
/// installed system's configuration, [`crate::render_nocloud_seed`] as a
/// cloud-init NoCloud seed. Interface naming rules: see [`NicConfig`]; IPv4
/// only (IPv6 is left at each system's default on addressed interfaces).
///
/// JSON: see [`EXAMPLE_NETWORK_JSON`] (unknown keys are rejected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkVars {
    /// Short host name (one RFC 1123 label). Required.
    pub hostname: String,
    /// DNS domain; the FQDN is `hostname.domain` when set. It is also the
    /// search domain of interfaces with static DNS servers.
    #[serde(default)]
    pub domain: Option<String>,
    /// Physical NICs (see [`NicConfig`] for how they are named). At least one
    /// interface (NIC, bond or VLAN) must carry an IPv4 configuration.
    #[serde(default)]
    pub nics: Vec<NicConfig>,
    /// Bonds of NICs chosen by MAC; members need not be listed in `nics`.
    #[serde(default)]
    pub bonds: Vec<BondConfig>,
    /// VLANs on a NIC (by MAC) or a bond (by name), named `PARENT.ID` in the
    /// installed system (`bond0.100`, `lan0.200`): at most 15 bytes.
    #[serde(default)]
    pub vlans: Vec<VlanConfig>,
}

/// A rich example network (a static NIC pinned by MAC, a named DHCP NIC with
/// jumbo frames, an LACP bond carrying a static VLAN, a DHCP VLAN on the
/// static NIC), parsed and rendered in tests.
pub const EXAMPLE_NETWORK_JSON: &str = include_str!("../examples/network.json");

/// A physical NIC as the installed system sees it: every entry of `nics` in
/// order, then the bond members not in `nics` (they carry no address and take
/// their bond's MTU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstalledLink<'a> {
    /// `NicConfig::name`, or `lan<i>`.
    pub name: String,
    pub mac: MacAddr,
    /// No name was given: match the MAC and give the NIC `name`.
    pub pinned: bool,
    pub ipv4: &'a Ipv4Config,
    pub mtu: Option<u16>,
    /// The bond this NIC is a member of.
    pub bond: Option<&'a BondConfig>,
}

impl NetworkVars {
    /// The fully qualified name, or the bare host name without a domain.
    pub fn fqdn(&self) -> String {
        match &self.domain {
            Some(d) => format!("{}.{d}", self.hostname),
            None => self.hostname.clone(),
        }
    }

    /// Checks every value as [`InstallVars::validate`] does for the network
    /// (same rules, same error names), and that the names the installed system
    /// will use are usable: NIC names (given or `lan<i>`), bond names and VLAN
    /// names (`PARENT.ID`) all distinct and at most 15 bytes.
    pub fn validate(&self) -> Result<(), RenderError> {
        check_hostname(&self.hostname)?;
        check_domain(self.domain.as_deref())?;
        check_links(&self.nics, &self.bonds, &self.vlans)?;
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut claim = |field: String, name: String| {
            if name.len() > 15 {
                return Err(invalid(
                    field,
                    format!("interface name {name:?} is longer than 15 bytes"),
                ));
            }
            if !seen.insert(name.clone()) {
                return Err(invalid(
                    field,
                    format!("interface name {name:?} is used twice in the installed system"),
                ));
            }
            Ok(())
        };
        for (i, link) in self.installed_links().into_iter().enumerate() {
            let field = if i < self.nics.len() {
                format!("nics[{i}].name")
            } else {
                format!("bonds (member {})", link.mac)
            };
            claim(field, link.name)?;
        }
        for (i, bond) in self.bonds.iter().enumerate() {
            claim(format!("bonds[{i}].name"), bond.name.clone())?;
        }
        for (i, vlan) in self.vlans.iter().enumerate() {
            claim(format!("vlans[{i}]"), self.vlan_name(vlan))?;
        }
        Ok(())
    }

    /// Every physical NIC with its installed-system name (see [`NicConfig`]).
    pub(crate) fn installed_links(&self) -> Vec<InstalledLink<'_>> {
        let bond_of = |mac: MacAddr| self.bonds.iter().find(|b| b.members.contains(&mac));
        let mut links: Vec<InstalledLink<'_>> = self
            .nics
            .iter()
            .enumerate()
            .map(|(i, nic)| InstalledLink {
                name: nic.name.clone().unwrap_or_else(|| format!("lan{i}")),
                mac: nic.mac,
                pinned: nic.name.is_none(),
                ipv4: &nic.ipv4,
                mtu: nic.mtu.or_else(|| bond_of(nic.mac).and_then(|b| b.mtu)),
                bond: bond_of(nic.mac),
            })
            .collect();
        for bond in &self.bonds {
            for mac in &bond.members {
                if links.iter().all(|l| l.mac != *mac) {
                    links.push(InstalledLink {
                        name: format!("lan{}", links.len()),
                        mac: *mac,
                        pinned: true,
                        ipv4: &Ipv4Config::None,
                        mtu: bond.mtu,
                        bond: Some(bond),
                    });
                }
            }
        }
        links
    }

    /// The installed-system name of a VLAN's parent: a NIC's name (given or
    /// `lan<i>`) when `parent` is a MAC, else the bond's name.
    pub(crate) fn vlan_parent_name(&self, vlan: &VlanConfig) -> String {
        match vlan.parent.parse::<MacAddr>() {
            Ok(mac) => self
                .installed_links()
                .into_iter()
                .find(|l| l.mac == mac)
                .map(|l| l.name)
                .unwrap_or_else(|| vlan.parent.clone()),
            Err(_) => vlan.parent.clone(),
        }
    }

    /// `PARENT.ID`, the VLAN interface's name in the installed system.
    pub(crate) fn vlan_name(&self, vlan: &VlanConfig) -> String {
        format!("{}.{}", self.vlan_parent_name(vlan), vlan.id)
    }
}

impl InstallVars {
    /// The network part of these variables, for a deployed image.
    pub fn network(&self) -> NetworkVars {
        NetworkVars {
            hostname: self.hostname.clone(),
            domain: self.domain.clone(),
            nics: self.nics.clone(),
            bonds: self.bonds.clone(),
            vlans: self.vlans.clone(),
        }
    }
}

fn default_timezone() -> String {
    "Etc/UTC".into()
}
fn default_locale() -> String {
    "en_US.UTF-8".into()
}
fn default_keyboard() -> String {
    "us".into()
}

/// One physical NIC.
///
/// How it is named in a deployed image's configuration (see
/// [`crate::render_target_network`] and [`crate::render_nocloud_seed`]):
/// - with `name`, every file refers to the NIC by that name (its bond's member
///   list, its VLANs' parent), and nothing matches its MAC: the name must be
///   the one the installed system's kernel/udev gives the NIC (`eno1`);
/// - without `name`, the NIC is pinned by its MAC and named `lan<i>`, `i`
///   being its index in `nics` (bond members not listed in `nics` follow as
///   `lan<len(nics)>`, `lan<len(nics)+1>`, ... in bond order). Formats that can
///   match a MAC do so (netplan `match: macaddress` + `set-name`, NetworkManager
///   `mac-address`, RHEL ifcfg `HWADDR`); for ifupdown (Debian) and wicked
///   (SUSE), which configure interfaces by name only, a systemd `.link` file
///   (`/etc/systemd/network/10-rackboot-lan<i>.link`) makes udev give the NIC
///   with that MAC the name `lan<i>`.
///
/// Installer templates ([`crate::render`]) ignore `name`: they call links
/// `nic0`, `nic1`, ... and match them by MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicConfig {
    pub mac: MacAddr,
    /// The interface name in the installed system (letters, digits, '_',
    /// '-', at most 15 bytes); absent: pinned by MAC as `lan<i>` (see above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Address configuration; `none` brings the link up without an address.
    #[serde(default)]
    pub ipv4: Ipv4Config,
    /// MTU in bytes (68..=9216); the OS default when absent.
    #[serde(default)]
    pub mtu: Option<u16>,
}

/// IPv4 configuration of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Ipv4Config {
    /// Link up, no address (bond member, VLAN parent, unused port).
    #[default]
    None,
    Dhcp,
    Static {
        address: Ipv4Addr,
        /// Prefix length, 1..=32.
        prefix: u8,
        #[serde(default)]
        gateway: Option<Ipv4Addr>,
        #[serde(default)]
        dns: Vec<Ipv4Addr>,
    },
}

impl Ipv4Config {
    pub fn is_configured(&self) -> bool {
        !matches!(self, Ipv4Config::None)
    }
}

/// A bond of NICs chosen by MAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BondConfig {
    /// Interface name, e.g. `bond0` (letters, digits, '_', '-', at most 15 bytes).
    pub name: String,
    /// Member NICs by MAC; at least one.
    pub members: Vec<MacAddr>,
    #[serde(default)]
    pub mode: BondMode,
    #[serde(default)]
    pub ipv4: Ipv4Config,
    #[serde(default)]
    pub mtu: Option<u16>,
}

/// Linux bonding modes (the names the kernel, NetworkManager and netplan use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BondMode {
    #[default]
    ActiveBackup,
    #[serde(rename = "802.3ad")]
    Lacp,
    BalanceRr,
    BalanceXor,
    Broadcast,
    BalanceTlb,
    BalanceAlb,
}

impl BondMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            BondMode::ActiveBackup => "active-backup",
            BondMode::Lacp => "802.3ad",
            BondMode::BalanceRr => "balance-rr",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }
}

/// An 802.1Q VLAN interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VlanConfig {
    /// VLAN id, 1..=4094.
    pub id: u16,
    /// The parent link: a NIC's MAC or a bond's name.
    pub parent: String,
    #[serde(default)]
    pub ipv4: Ipv4Config,
    #[serde(default)]
    pub mtu: Option<u16>,
}

/// What the provisioning network offers a machine by DHCP while it runs its
/// installer. `None` of it (an empty value) means the network has none:
/// d-i is then told there is no default route and given `127.0.0.1` as its
/// name server (it asks for one otherwise), and NTP is not tried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallerNetwork {
    /// DHCP option 3.
    #[serde(default)]
    pub router: Option<Ipv4Addr>,
    /// DHCP option 6.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// DHCP option 42.
    #[serde(default)]
    pub ntp: Vec<Ipv4Addr>,
}

/// Which disk receives the OS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", content = "value", rename_all = "snake_case")]
pub enum DiskSelector {
    /// A device path, preferably stable: `/dev/disk/by-id/...`,
    /// `/dev/disk/by-path/...` (or `/dev/sda`). ESXi: a device name such as
    /// `mpx.vmhba0:C0:T0:L0`; Windows: a disk number (`0`).
    Path(String),
    /// The disk whose serial number (udev `ID_SERIAL_SHORT`) equals this.
    Serial(String),
    /// The smallest non-removable disk.
    Smallest,
    /// The largest non-removable disk.
    Largest,
}

impl DiskSelector {
    pub fn rule(&self) -> &'static str {
        match self {
            DiskSelector::Path(_) => "path",
            DiskSelector::Serial(_) => "serial",
            DiskSelector::Smallest => "smallest",
            DiskSelector::Largest => "largest",
        }
    }
}

/// Partition layout: an EFI/boot partition plus the root file system either
/// directly on a partition or in an LVM volume group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PartitionLayout {
    #[default]
    Plain,
    Lvm,
}

/// A named package repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repository {
    /// Letters, digits, '.', '_', '-'.
    pub name: String,
    /// http(s) URL. Debian/Ubuntu: `URL SUITE COMPONENTS` is written as one
    /// apt line `deb URL`, so put the suite and components after the URL
    /// separated by spaces (`http://mirror/debian bookworm main`).
    pub url: String,
}

/// Windows Server settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WindowsVars {
    /// The `/IMAGE/NAME` inside install.wim, e.g.
    /// `Windows Server 2022 SERVERSTANDARD`. Defaults to the version's Standard
    /// edition (Server Core).
    #[serde(default)]
    pub image_name: Option<String>,
    /// Product key (KMS client key or MAK); absent: none (evaluation media).
    #[serde(default)]
    pub product_key: Option<String>,
    /// User for the SMB share holding the install media (`install_source_url`).
    #[serde(default)]
    pub share_user: Option<String>,
    /// Registered organisation/owner shown in Windows.
    #[serde(default)]
    pub organization: Option<String>,
    /// Firmware of the machine: decides the partition layout (GPT with
    /// EFI + MSR partitions, or MBR with a system partition).
    #[serde(default)]
    pub firmware: WindowsFirmware,
}

/// Boot firmware, for Windows' disk layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WindowsFirmware {
    #[default]
    Uefi,
    Bios,
}

/// Secrets that must be plain at render time and are therefore not part of
/// [`InstallVars`] (which may be logged, stored and shown). Only Windows needs
/// them: see `crate::password` for why and how they are encoded.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RenderSecrets {
    /// The local Administrator password (Windows).
    pub windows_admin_password: Option<String>,
    /// Password for `WindowsVars::share_user` on the SMB share.
    pub windows_share_password: Option<String>,
}

impl std::fmt::Debug for RenderSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("RenderSecrets")
            .field(
                "windows_admin_password",
                &shown(&self.windows_admin_password),
            )
            .field(
                "windows_share_password",
                &shown(&self.windows_share_password),
            )
            .finish()
    }
}

/// `powershell -NoProfile -ExecutionPolicy Bypass -EncodedCommand ` (see
/// templates/windows.xml).
const WINDOWS_POST_PREFIX_LEN: usize = 62;

pub(crate) fn missing(name: &str) -> RenderError {
    RenderError::MissingValue {
        name: name.to_string(),
    }
}

pub(crate) fn invalid(name: impl Into<String>, reason: impl Into<String>) -> RenderError {
    RenderError::InvalidValue {
        name: name.into(),
        reason: reason.into(),
    }
}

fn unsupported(family: OsFamily, what: impl Into<String>) -> RenderError {
    RenderError::Unsupported {
        family,
        what: what.into(),
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn is_simple_token(s: &str, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

pub(crate) fn check_http_url(name: &str, value: &str) -> Result<url::Url, RenderError> {
    let url = url::Url::parse(value).map_err(|e| invalid(name, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(name, "must be an http:// or https:// URL"));
    }
    if url.host_str().is_none() {
        return Err(invalid(name, "URL has no host"));
    }
    check_no_shell_breakers(name, value)?;
    Ok(url)
}

/// URLs end up inside shell commands, XML and YAML; characters that would
/// need quoting there are refused (percent-encode them instead).
fn check_no_shell_breakers(name: &str, value: &str) -> Result<(), RenderError> {
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "'\"`\\<>$;".contains(*c))
    {
        return Err(invalid(
            name,
            format!("character {c:?} is not allowed (percent-encode it)"),
        ));
    }
    Ok(())
}

fn check_ipv4(name: &str, cfg: &Ipv4Config) -> Result<(), RenderError> {
    if let Ipv4Config::Static {
        address,
        prefix,
        gateway,
        ..
    } = cfg
    {
        if !(1..=32).contains(prefix) {
            return Err(invalid(format!("{name}.prefix"), "must be 1..=32"));
        }
        if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
            return Err(invalid(
                format!("{name}.address"),
                format!("{address} is not a host address"),
            ));
        }
        if let Some(gw) = gateway {
            let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
            if u32::from(*gw) & mask != u32::from(*address) & mask {
                return Err(invalid(
                    format!("{name}.gateway"),
                    format!("{gw} is outside {address}/{prefix}"),
                ));
            }
        }
    }
    Ok(())
}

fn check_mtu(name: &str, mtu: Option<u16>) -> Result<(), RenderError> {
    match mtu {
        Some(m) if !(68..=9216).contains(&m) => {
            Err(invalid(format!("{name}.mtu"), "must be 68..=9216"))
        }
        _ => Ok(()),
    }
}

fn check_hostname(hostname: &str) -> Result<(), RenderError> {
    if hostname.is_empty() {
        return Err(missing("hostname"));
    }
    if !is_label(hostname) {
        return Err(invalid(
            "hostname",
            "must be one DNS label: letters, digits and '-', at most 63, not starting or ending with '-'",
        ));
    }
    Ok(())
}

fn check_domain(domain: Option<&str>) -> Result<(), RenderError> {
    if let Some(domain) = domain
        && (domain.len() > 253 || !domain.split('.').all(is_label))
    {
        return Err(invalid("domain", "must be dot-separated DNS labels"));
    }
    Ok(())
}

/// Each key must be one line `TYPE BASE64 [comment]` without characters that
/// would need quoting in shell, YAML or XML. Errors name
/// `ssh_authorized_keys[i]`.
pub(crate) fn check_ssh_keys(keys: &[String]) -> Result<(), RenderError> {
    for (i, key) in keys.iter().enumerate() {
        let mut parts = key.split_whitespace();
        let (Some(kind), Some(_blob)) = (parts.next(), parts.next()) else {
            return Err(invalid(
                format!("ssh_authorized_keys[{i}]"),
                "expected `TYPE BASE64 [comment]`",
            ));
        };
        if !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
            || key
                .chars()
                .any(|c| c.is_control() || "'\"`\\<>$".contains(c))
        {
            return Err(invalid(
                format!("ssh_authorized_keys[{i}]"),
                "not a single-line OpenSSH public key (no quotes, backslashes or '$')",
            ));
        }
    }
    Ok(())
}

/// A Linux interface name rackboot accepts: letters, digits, '_', '-', at
/// most 15 bytes (IFNAMSIZ - 1), not `lo`. No '.', which marks VLANs.
pub(crate) fn is_interface_name(s: &str) -> bool {
    is_simple_token(s, b"_-") && s.len() <= 15 && s != "lo"
}

/// The family-independent checks of a network (NICs, bonds, VLANs), shared by
/// [`InstallVars::validate`] and [`NetworkVars::validate`]. Returns how many
/// interfaces carry an address (at least one).
fn check_links(
    nics: &[NicConfig],
    bonds: &[BondConfig],
    vlans: &[VlanConfig],
) -> Result<usize, RenderError> {
    let mut macs = BTreeSet::new();
    for (i, nic) in nics.iter().enumerate() {
        if !macs.insert(nic.mac) {
            return Err(invalid(
                format!("nics[{i}].mac"),
                format!("{} is listed twice", nic.mac),
            ));
        }
        check_ipv4(&format!("nics[{i}].ipv4"), &nic.ipv4)?;
        check_mtu(&format!("nics[{i}]"), nic.mtu)?;
        if let Some(name) = &nic.name {
            if !is_interface_name(name) {
                return Err(invalid(
                    format!("nics[{i}].name"),
                    "letters, digits, '_', '-', at most 15 bytes, not \"lo\"",
                ));
            }
            if nics[..i].iter().any(|n| n.name.as_deref() == Some(name)) {
                return Err(invalid(
                    format!("nics[{i}].name"),
                    format!("{name:?} is the name of another NIC"),
                ));
            }
        }
    }
    let mut bond_names = BTreeSet::new();
    let mut members = BTreeSet::new();
    for (i, bond) in bonds.iter().enumerate() {
        if !is_simple_token(&bond.name, b"_-") || bond.name.len() > 15 {
            return Err(invalid(
                format!("bonds[{i}].name"),
                "letters, digits, '_', '-', at most 15 bytes",
            ));
        }
        if !bond_names.insert(bond.name.as_str()) {
            return Err(invalid(
                format!("bonds[{i}].name"),
                format!("duplicate bond {:?}", bond.name),
            ));
        }
        if nics
            .iter()
            .any(|n| n.name.as_deref() == Some(bond.name.as_str()))
        {
            return Err(invalid(
                format!("bonds[{i}].name"),
                format!("{:?} is also a NIC's name", bond.name),
            ));
        }
        if bond.members.is_empty() {
            return Err(missing(&format!("bonds[{i}].members")));
        }
        for m in &bond.members {
            if !members.insert(*m) {
                return Err(invalid(
                    format!("bonds[{i}].members"),
                    format!("{m} is in more than one bond"),
                ));
            }
            if let Some(nic) = nics.iter().find(|n| n.mac == *m)
                && nic.ipv4.is_configured()
            {
                return Err(invalid(
                    format!("bonds[{i}].members"),
                    format!("{m} is a bond member and also has its own ipv4 in nics"),
                ));
            }
        }
        check_ipv4(&format!("bonds[{i}].ipv4"), &bond.ipv4)?;
        check_mtu(&format!("bonds[{i}]"), bond.mtu)?;
    }
    let mut vlan_keys = BTreeSet::new();
    for (i, vlan) in vlans.iter().enumerate() {
        if !(1..=4094).contains(&vlan.id) {
            return Err(invalid(format!("vlans[{i}].id"), "must be 1..=4094"));
        }
        let parent_ok = match vlan.parent.parse::<MacAddr>() {
            Ok(mac) => macs.contains(&mac) || members.contains(&mac),
            Err(_) => bond_names.contains(vlan.parent.as_str()),
        };
        if !parent_ok {
            return Err(invalid(
                format!("vlans[{i}].parent"),
                format!(
                    "{:?} is neither a NIC MAC in nics nor a bond name",
                    vlan.parent
                ),
            ));
        }
        if vlan
            .parent
            .parse::<MacAddr>()
            .is_ok_and(|m| members.contains(&m))
        {
            return Err(invalid(
                format!("vlans[{i}].parent"),
                "a VLAN on a bond member: put it on the bond",
            ));
        }
        if !vlan_keys.insert((vlan.parent.to_ascii_lowercase(), vlan.id)) {
            return Err(invalid(
                format!("vlans[{i}]"),
                "duplicate VLAN id on the same parent",
            ));
        }
        check_ipv4(&format!("vlans[{i}].ipv4"), &vlan.ipv4)?;
        check_mtu(&format!("vlans[{i}]"), vlan.mtu)?;
    }
    let configured = nics.iter().filter(|n| n.ipv4.is_configured()).count()
        + bonds.iter().filter(|b| b.ipv4.is_configured()).count()
        + vlans.iter().filter(|v| v.ipv4.is_configured()).count();
    if configured == 0 {
        return Err(missing(
            "nics (at least one interface with ipv4 dhcp or static)",
        ));
    }
    Ok(configured)
}

impl InstallVars {
    /// The fully qualified name, or the bare host name without a domain.
    pub fn fqdn(&self) -> String {
        match &self.domain {
            Some(d) => format!("{}.{d}", self.hostname),
            None => self.hostname.clone(),
        }
    }

    /// Checks every value, and that `family` can express what is asked for.
    /// Errors name the offending field (`nics[1].ipv4.gateway`).
    pub fn validate(&self, family: OsFamily, secrets: &RenderSecrets) -> Result<(), RenderError> {
        check_hostname(&self.hostname)?;
        if family == OsFamily::Windows && self.hostname.len() > 15 {
            return Err(invalid(
                "hostname",
                "Windows computer names are at most 15 characters",
            ));
        }
        check_domain(self.domain.as_deref())?;
        if self.install_source_url.is_empty() {
            return Err(missing("install_source_url"));
        }
        if family == OsFamily::Windows {
            let url = url::Url::parse(&self.install_source_url)
                .map_err(|e| invalid("install_source_url", format!("not a URL: {e}")))?;
            if url.scheme() != "smb" || url.host_str().is_none() || url.path().len() < 2 {
                return Err(invalid(
                    "install_source_url",
                    "Windows Setup installs from an SMB share: smb://server/share[/path]",
                ));
            }
            check_no_shell_breakers("install_source_url", &self.install_source_url)?;
            if url.password().is_some() {
                // The variables are stored and shown as they are: the share's
                // password goes in windows_share_password, which is sealed.
                return Err(invalid(
                    "install_source_url",
                    "must not carry a password: give windows.share_user and windows_share_password (stored sealed)",
                ));
            }
        } else if check_http_url("install_source_url", &self.install_source_url)?
            .password()
            .is_some()
        {
            return Err(invalid(
                "install_source_url",
                "must not carry a password (install variables are stored and shown in clear)",
            ));
        }
        if self.callback_url.is_empty() {
            return Err(missing("callback_url"));
        }
        check_http_url("callback_url", &self.callback_url)?;
        if let Some(url) = &self.started_url {
            check_http_url("started_url", url)?;
        }
        if let Some(url) = &self.installed_url {
            check_http_url("installed_url", url)?;
        }

        self.validate_network(family)?;
        self.validate_disk(family)?;

        for (i, p) in self.packages.iter().enumerate() {
            // '@' groups (kickstart), '^' environments/patterns, '-' exclusions.
            if !is_simple_token(p, b"._+-@^:~") {
                return Err(invalid(
                    format!("packages[{i}]"),
                    format!("{p:?} is not a package name"),
                ));
            }
        }
        let mut repo_names = BTreeSet::new();
        for (i, r) in self.repositories.iter().enumerate() {
            if !is_simple_token(&r.name, b"._-") {
                return Err(invalid(
                    format!("repositories[{i}].name"),
                    "letters, digits, '.', '_' and '-' only",
                ));
            }
            if !repo_names.insert(&r.name) {
                return Err(invalid(
                    format!("repositories[{i}].name"),
                    format!("duplicate repository {:?}", r.name),
                ));
            }
            let mut words = r.url.split(' ');
            check_http_url(
                &format!("repositories[{i}].url"),
                words.next().unwrap_or_default(),
            )?;
            if words.any(|w| !is_simple_token(w, b"._-/")) {
                return Err(invalid(
                    format!("repositories[{i}].url"),
                    "suite/components after the URL: letters, digits, '.', '_', '-', '/'",
                ));
            }
            let apt = matches!(family, OsFamily::Debian | OsFamily::Ubuntu);
            if apt && !r.url.contains(' ') {
                return Err(invalid(
                    format!("repositories[{i}].url"),
                    "Debian/Ubuntu repositories need `URL SUITE [COMPONENTS...]`",
                ));
            }
            if !apt && r.url.contains(' ') {
                return Err(invalid(
                    format!("repositories[{i}].url"),
                    "only Debian and Ubuntu repositories take a suite and components",
                ));
            }
        }
        if !is_simple_token(&self.timezone, b"/_+-") {
            return Err(invalid("timezone", "not an IANA time zone name"));
        }
        if !is_simple_token(&self.locale, b"._@-") {
            return Err(invalid("locale", "not a locale name like en_US.UTF-8"));
        }
        if !is_simple_token(&self.keyboard, b"_-()") {
            return Err(invalid("keyboard", "not a keyboard layout name"));
        }
        if let Some(hash) = &self.root_password_hash {
            crate::password::check_sha512_crypt(hash)
                .map_err(|reason| invalid("root_password_hash", reason))?;
        }
        check_ssh_keys(&self.ssh_authorized_keys)?;
        match family {
            OsFamily::Windows => {
                if let Some(script) = &self.post_script {
                    // It becomes `powershell ... -EncodedCommand BASE64(UTF-16LE)`
                    // in a FirstLogonCommands CommandLine, which Windows
                    // limits to 1024 characters.
                    let encoded = script.encode_utf16().count() * 2;
                    let command_len = WINDOWS_POST_PREFIX_LEN + encoded.div_ceil(3) * 4;
                    if command_len > 1024 {
                        return Err(invalid(
                            "post_script",
                            format!(
                                "Windows runs it from a 1024-character FirstLogonCommands line: this one needs {command_len}; keep it short (about 360 characters) or let it download a larger script"
                            ),
                        ));
                    }
                }
                if crate::context::windows_timezone(&self.timezone).is_none() {
                    return Err(invalid(
                        "timezone",
                        format!(
                            "no Windows time zone known for {:?} (known: {})",
                            self.timezone,
                            crate::context::WINDOWS_TIMEZONES
                                .iter()
                                .map(|(iana, _)| *iana)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                if secrets
                    .windows_admin_password
                    .as_deref()
                    .unwrap_or("")
                    .is_empty()
                {
                    return Err(missing("windows_admin_password"));
                }
                let w = self.windows.clone().unwrap_or_default();
                if let Some(user) = &w.share_user {
                    if !is_simple_token(user, b"._-\\@") {
                        return Err(invalid("windows.share_user", "not a user name"));
                    }
                    if secrets.windows_share_password.is_none() {
                        return Err(missing("windows_share_password"));
                    }
                }
                if let Some(key) = &w.product_key
                    && !is_simple_token(key, b"-")
                {
                    return Err(invalid("windows.product_key", "XXXXX-XXXXX-... expected"));
                }
                for (name, v) in [
                    ("windows.image_name", &w.image_name),
                    ("windows.organization", &w.organization),
                ] {
                    if let Some(v) = v
                        && (v.is_empty() || v.chars().any(|c| c.is_control()))
                    {
                        return Err(invalid(name, "empty or contains a control character"));
                    }
                }
                if let Some(secret) = &secrets.windows_share_password
                    && secret
                        .chars()
                        .any(|c| c.is_control() || "\"%^&|<>".contains(c))
                {
                    return Err(invalid(
                        "windows_share_password",
                        "must not contain control characters or \"%^&|<> (it is passed to `net use` in a cmd script)",
                    ));
                }
            }
            OsFamily::Esxi => {
                if self.root_password_hash.is_none() {
                    return Err(missing("root_password_hash"));
                }
            }
            _ => {
                if self.root_password_hash.is_none() && self.ssh_authorized_keys.is_empty() {
                    return Err(invalid(
                        "root_password_hash",
                        "set a root password hash or at least one SSH key, or nobody can log in",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_network(&self, family: OsFamily) -> Result<(), RenderError> {
        let configured = check_links(&self.nics, &self.bonds, &self.vlans)?;
        let has_bonds_or_vlans = !self.bonds.is_empty() || !self.vlans.is_empty();
        if family == OsFamily::Windows && has_bonds_or_vlans {
            return Err(unsupported(
                family,
                "bonds and VLANs (unattend.xml has no NIC teaming or VLAN settings)",
            ));
        }
        if family == OsFamily::Esxi {
            // Kickstart configures exactly one management interface (vmk0):
            // an addressed NIC, or one VLAN on a NIC.
            if !self.bonds.is_empty() {
                return Err(unsupported(
                    family,
                    "bonds (configure NIC teaming after install)",
                ));
            }
            if configured > 1 || self.vlans.len() > 1 {
                return Err(unsupported(
                    family,
                    "more than one addressed interface or VLAN: ESXi kickstart configures one management interface (vmk0)",
                ));
            }
            if let Some(vlan) = self.vlans.first()
                && !vlan.ipv4.is_configured()
            {
                return Err(unsupported(
                    family,
                    "a VLAN without an address (the VLAN is the management interface's)",
                ));
            }
        }
        Ok(())
    }

    fn validate_disk(&self, family: OsFamily) -> Result<(), RenderError> {
        match &self.disk {
            DiskSelector::Path(p) => {
                if p.is_empty() {
                    return Err(missing("disk.value"));
                }
                match family {
                    OsFamily::Windows => {
                        if p.parse::<u8>().is_err() {
                            return Err(invalid("disk.value", "Windows: a disk number like 0"));
                        }
                    }
                    OsFamily::Esxi => {
                        if !is_simple_token(p, b"._:-/") {
                            return Err(invalid("disk.value", "not an ESXi device name"));
                        }
                    }
                    OsFamily::Ubuntu
                        if p.starts_with("/dev/disk/") && !p.starts_with("/dev/disk/by-path/") =>
                    {
                        // subiquity matches `path` against /dev/NAME and
                        // `id_path` against the by-path name only.
                        return Err(unsupported(
                            family,
                            "disk paths under /dev/disk/ other than by-path (use rule serial for by-id names)",
                        ));
                    }
                    _ => {
                        if !p.starts_with("/dev/") || !is_simple_token(p, b"._:-/+") {
                            return Err(invalid(
                                "disk.value",
                                "a device path such as /dev/disk/by-id/... (letters, digits, ._:-/+)",
                            ));
                        }
                    }
                }
            }
            DiskSelector::Serial(s) => {
                if s.is_empty() {
                    return Err(missing("disk.value"));
                }
                if !is_simple_token(s, b"._:-") {
                    return Err(invalid("disk.value", "serial: letters, digits, ._:- only"));
                }
                if family == OsFamily::Windows {
                    return Err(unsupported(family, "disk by serial (use a disk number)"));
                }
            }
            DiskSelector::Smallest | DiskSelector::Largest => {
                if family == OsFamily::Windows {
                    return Err(unsupported(
                        family,
                        "disk smallest/largest rules (use a disk number)",
                    ));
                }
            }
        }
        Ok(())
    }
}
