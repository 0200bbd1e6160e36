//! The values a template sees. Built from validated [`InstallVars`] with the
//! derived forms every family needs (netmasks, FQDN, logical interface names,
//! a disk-picking shell line, the retrying callback command), so templates
//! stay declarative. This is the template authors' reference:
//!
//! | name | what |
//! |---|---|
//! | `os.family`, `os.version`, `os.major` | `rhel`, `9.4`, `9` |
//! | `hostname`, `domain` (or none), `fqdn` | |
//! | `links` | every physical NIC (from `nics` and bond members): `name` (`nic0`...), `mac`, `mac_dashed`, `ipv4`, `mtu`, `bond` (bond name or none), `vlan_parent` (bool) |
//! | `bonds` | `name`, `mode`, `members` (list of links), `ipv4`, `mtu` |
//! | `vlans` | `name` (`nic0.100`, `bond0.100`), `id`, `parent` (a link or bond: `kind` `nic`/`bond`, `name`, `mac` or none), `ipv4`, `mtu` |
//! | `interfaces` | every addressed interface (links, bonds, vlans with ipv4 not none), in that order: `kind`, `name`, `mac` (none for bond/vlan), `ipv4`, `mtu`, `vlan_id`, `parent_mac` |
//! | `primary` | the first of `interfaces` |
//! | `ipv4` (on each) | `mode` (`none`/`dhcp`/`static`), `address`, `prefix`, `netmask`, `cidr`, `gateway`, `dns` (list); unset ones are none |
//! | `nameservers`, `gateway` | all static DNS servers; the first static gateway (or none) |
//! | `disk` | `rule` (`path`/`serial`/`smallest`/`largest`), `value` (or none), `pick_sh`: one POSIX sh line that prints the chosen `/dev/...` (exits 1 if none), `release_sh`: one POSIX sh line that frees and wipes the disk in `$disk` (see [`disk_release_sh`]) |
//! | `layout` | `plain` or `lvm` |
//! | `packages`, `repositories` (`name`, `url`, `spec` = `URL SUITE COMPONENTS` as given, `apt_line` = `deb SPEC`) | |
//! | `timezone`, `locale`, `language` (`en_US`), `keyboard` | |
//! | `root_password_hash` (or none), `ssh_authorized_keys`, `post_script` (or none) | |
//! | `install_source` | `url`, `scheme`, `host`, `host_port`, `path` (no trailing `/`), `unc` (Windows: `\\server\share\path`) |
//! | `started_sh` | when `started_url` is set: one best-effort GET of it (the installer read its file) |
//! | `callback_url`, `callback_sh` | the callback and a one-line POSIX sh command that POSTs to it, retrying for ~10 minutes, exiting 1 if it never succeeds |
//! | `installed_url`, `installed_sh` | when `installed_url` is set: "the installer finished" and the same retrying POST to it, the installer's last step; the installed system then calls `callback_url` (see `firstboot`) |
//! | `firstboot` | when `installed_url` is set: `script` (POSIX sh that runs `callback_sh` once, then removes itself and its unit), `script_path`, `unit` (a systemd oneshot after network-online.target), `unit_path`, `wants_path` (the `multi-user.target.wants` link that enables it) |
//! | `installer_network` | what DHCP gives the installer, when the server knows: `known` (bool), `router` (or none), `dns`, `ntp` (lists); `known` false means "assume a full network" |
//! | `windows` | `image_name`, `product_key`/`organization`/`share_user`/`share_password` (or none), `admin_password_encoded`, `autologon_password_encoded`, `uefi`, `timezone` (Windows name), `language` (`en-US`) |
//!
//! Filters: `b64encode`, `utf16_b64encode` (PowerShell `-EncodedCommand`), `sh_quote` (single-quoted sh word), `xml` (escape),
//! `netmask` (prefix → dotted), `yaml` (JSON-quoted scalar, valid YAML).
//! Templates for XML formats (AutoYaST, unattend) auto-escape every printed
//! value; printing an unset (none) value is an error in every template.

use rackboot_core::{MacAddr, OsFamily};
use serde::Serialize;

use crate::vars::{
    DiskSelector, InstallVars, Ipv4Config, PartitionLayout, RenderSecrets, WindowsFirmware,
};
use crate::{RenderError, password};

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Context {
    os: OsCtx,
    hostname: String,
    domain: Option<String>,
    fqdn: String,
    links: Vec<LinkCtx>,
    bonds: Vec<BondCtx>,
    vlans: Vec<VlanCtx>,
    interfaces: Vec<IfaceCtx>,
    primary: IfaceCtx,
    nameservers: Vec<String>,
    gateway: Option<String>,
    disk: DiskCtx,
    layout: &'static str,
    packages: Vec<String>,
    repositories: Vec<RepoCtx>,
    timezone: String,
    locale: String,
    language: String,
    keyboard: String,
    root_password_hash: Option<String>,
    ssh_authorized_keys: Vec<String>,
    post_script: Option<String>,
    install_source: SourceCtx,
    callback_url: String,
    callback_sh: String,
    /// One best-effort GET of `started_url` (never fails), when set.
    started_sh: Option<String>,
    installed_url: Option<String>,
    installed_sh: Option<String>,
    firstboot: Option<FirstbootCtx>,
    installer_network: NetCtx,
    windows: Option<WindowsCtx>,
}

#[derive(Debug, Clone, Serialize)]
struct OsCtx {
    family: &'static str,
    version: String,
    major: String,
}

#[derive(Debug, Clone, Serialize)]
struct Ipv4Ctx {
    mode: &'static str,
    address: Option<String>,
    prefix: Option<u8>,
    netmask: Option<String>,
    cidr: Option<String>,
    gateway: Option<String>,
    dns: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct LinkCtx {
    name: String,
    mac: String,
    mac_dashed: String,
    ipv4: Ipv4Ctx,
    mtu: Option<u16>,
    bond: Option<String>,
    vlan_parent: bool,
}

#[derive(Debug, Clone, Serialize)]
struct BondCtx {
    name: String,
    mode: &'static str,
    members: Vec<LinkCtx>,
    ipv4: Ipv4Ctx,
    mtu: Option<u16>,
}

#[derive(Debug, Clone, Serialize)]
struct ParentCtx {
    kind: &'static str,
    name: String,
    mac: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct VlanCtx {
    name: String,
    id: u16,
    parent: ParentCtx,
    ipv4: Ipv4Ctx,
    mtu: Option<u16>,
}

#[derive(Debug, Clone, Serialize)]
struct IfaceCtx {
    kind: &'static str,
    name: String,
    mac: Option<String>,
    mac_dashed: Option<String>,
    ipv4: Ipv4Ctx,
    mtu: Option<u16>,
    vlan_id: Option<u16>,
    parent_mac: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct DiskCtx {
    rule: &'static str,
    value: Option<String>,
    pick_sh: String,
    release_sh: String,
}

/// The installed system's one-shot first-boot report (see [`firstboot_script`]).
#[derive(Debug, Clone, Serialize)]
struct FirstbootCtx {
    script: String,
    script_path: &'static str,
    unit: String,
    unit_path: &'static str,
    wants_path: &'static str,
}

#[derive(Debug, Clone, Serialize)]
struct NetCtx {
    known: bool,
    router: Option<String>,
    dns: Vec<String>,
    ntp: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct RepoCtx {
    name: String,
    url: String,
    /// Debian/Ubuntu: `URL SUITE COMPONENTS` as given.
    spec: String,
    apt_line: String,
}

#[derive(Debug, Clone, Serialize)]
struct SourceCtx {
    url: String,
    scheme: String,
    host: String,
    host_port: String,
    path: String,
    unc: String,
}

#[derive(Debug, Clone, Serialize)]
struct WindowsCtx {
    image_name: String,
    product_key: Option<String>,
    organization: Option<String>,
    share_user: Option<String>,
    /// Only for install.cmd's `net use`; never put it in unattend.xml.
    share_password: Option<String>,
    admin_password_encoded: String,
    autologon_password_encoded: String,
    uefi: bool,
    timezone: &'static str,
    /// `en-US` from `en_US.UTF-8`.
    language: String,
}

/// IANA → Windows time zone names (from CLDR windowsZones), the common ones.
pub const WINDOWS_TIMEZONES: &[(&str, &str)] = &[
    ("Etc/UTC", "UTC"),
    ("UTC", "UTC"),
    ("Etc/GMT", "UTC"),
    ("Europe/London", "GMT Standard Time"),
    ("Europe/Dublin", "GMT Standard Time"),
    ("Europe/Lisbon", "GMT Standard Time"),
    ("Europe/Berlin", "W. Europe Standard Time"),
    ("Europe/Amsterdam", "W. Europe Standard Time"),
    ("Europe/Zurich", "W. Europe Standard Time"),
    ("Europe/Stockholm", "W. Europe Standard Time"),
    ("Europe/Rome", "W. Europe Standard Time"),
    ("Europe/Vienna", "W. Europe Standard Time"),
    ("Europe/Paris", "Romance Standard Time"),
    ("Europe/Madrid", "Romance Standard Time"),
    ("Europe/Brussels", "Romance Standard Time"),
    ("Europe/Copenhagen", "Romance Standard Time"),
    ("Europe/Warsaw", "Central European Standard Time"),
    ("Europe/Prague", "Central Europe Standard Time"),
    ("Europe/Budapest", "Central Europe Standard Time"),
    ("Europe/Helsinki", "FLE Standard Time"),
    ("Europe/Kiev", "FLE Standard Time"),
    ("Europe/Athens", "GTB Standard Time"),
    ("Europe/Moscow", "Russian Standard Time"),
    ("Asia/Shanghai", "China Standard Time"),
    ("Asia/Hong_Kong", "China Standard Time"),
    ("Asia/Taipei", "Taipei Standard Time"),
    ("Asia/Tokyo", "Tokyo Standard Time"),
    ("Asia/Seoul", "Korea Standard Time"),
    ("Asia/Singapore", "Singapore Standard Time"),
    ("Asia/Kolkata", "India Standard Time"),
    ("Asia/Dubai", "Arabian Standard Time"),
    ("Australia/Sydney", "AUS Eastern Standard Time"),
    ("America/New_York", "Eastern Standard Time"),
    ("America/Chicago", "Central Standard Time"),
    ("America/Denver", "Mountain Standard Time"),
    ("America/Phoenix", "US Mountain Standard Time"),
    ("America/Los_Angeles", "Pacific Standard Time"),
    ("America/Sao_Paulo", "E. South America Standard Time"),
];

/// The Windows name of an IANA time zone, when known.
pub fn windows_timezone(iana: &str) -> Option<&'static str> {
    WINDOWS_TIMEZONES
        .iter()
        .find(|(i, _)| *i == iana)
        .map(|(_, w)| *w)
}

/// Dotted netmask for a prefix length (0..=32).
pub fn netmask(prefix: u8) -> String {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    std::net::Ipv4Addr::from(bits).to_string()
}

fn ipv4_ctx(cfg: &Ipv4Config) -> Ipv4Ctx {
    match cfg {
        Ipv4Config::None | Ipv4Config::Dhcp => Ipv4Ctx {
            mode: if matches!(cfg, Ipv4Config::Dhcp) {
                "dhcp"
            } else {
                "none"
            },
            address: None,
            prefix: None,
            netmask: None,
            cidr: None,
            gateway: None,
            dns: vec![],
        },
        Ipv4Config::Static {
            address,
            prefix,
            gateway,
            dns,
        } => Ipv4Ctx {
            mode: "static",
            address: Some(address.to_string()),
            prefix: Some(*prefix),
            netmask: Some(netmask(*prefix)),
            cidr: Some(format!("{address}/{prefix}")),
            gateway: gateway.map(|g| g.to_string()),
            dns: dns.iter().map(|d| d.to_string()).collect(),
        },
    }
}

/// One line of POSIX sh (bash, dash, busybox ash) that prints the chosen
/// whole-disk device as `/dev/NAME`, or fails; meant for `disk=$(...)` (it
/// sets scratch variables). It skips loop, ram, zram,
/// optical, floppy, md/dm, removable, read-only, zero-sized and USB devices.
/// Serial matches udev's `ID_SERIAL_SHORT` (falling back to `ID_SERIAL` and
/// the sysfs `serial` file, which virtio disks have).
pub fn disk_pick_sh(disk: &DiskSelector) -> String {
    let candidates = "for d in /sys/block/*; do n=${d##*/}; \
case $n in loop*|ram*|zram*|sr*|fd*|md*|dm-*|nbd*|mtdblock*) continue;; esac; \
[ \"$(cat $d/removable 2>/dev/null)\" = 0 ] || continue; \
[ \"$(cat $d/ro 2>/dev/null)\" = 1 ] && continue; \
case $(readlink -f $d) in */usb*) continue;; esac; \
s=$(cat $d/size 2>/dev/null); [ \"${s:-0}\" -gt 0 ] || continue;";
    match disk {
        DiskSelector::Path(p) => format!(
            "d=$(readlink -f {p}) && [ -b \"$d\" ] && echo \"$d\" || {{ echo 'rackboot: disk {p} not found' >&2; false; }}"
        ),
        DiskSelector::Serial(serial) => format!(
            "found=; {candidates} \
p=$(udevadm info --query=property --name=/dev/$n 2>/dev/null); \
ser=$(echo \"$p\" | sed -n 's/^ID_SERIAL_SHORT=//p'); [ -n \"$ser\" ] || ser=$(echo \"$p\" | sed -n 's/^ID_SERIAL=//p'); [ -n \"$ser\" ] || ser=$(cat $d/serial $d/device/serial 2>/dev/null | head -n1); \
[ \"$ser\" = '{serial}' ] && {{ found=/dev/$n; break; }}; done; \
[ -n \"$found\" ] && echo $found || {{ echo 'rackboot: no disk with serial {serial}' >&2; false; }}"
        ),
        DiskSelector::Smallest | DiskSelector::Largest => {
            let cmp = if matches!(disk, DiskSelector::Smallest) {
                "-lt"
            } else {
                "-gt"
            };
            format!(
                "best=; bs=; {candidates} \
if [ -z \"$best\" ] || [ \"$s\" {cmp} \"$bs\" ]; then best=/dev/$n; bs=$s; fi; done; \
[ -n \"$best\" ] && echo $best || {{ echo 'rackboot: no usable disk' >&2; false; }}"
            )
        }
    }
}

/// One line of POSIX sh (bash, dash, busybox ash) that frees the whole disk
/// named by `$disk` (`/dev/vda`) and wipes what an earlier life left on it,
/// so the partitioner finds a blank disk instead of asking about it. For the
/// disk and each of its partitions: file systems and swap on it are
/// unmounted and switched off, and whatever holds it is taken down first,
/// deepest first (LVM volumes and other device-mapper devices with
/// `dmsetup remove`, md arrays with `mdadm --stop`); then md superblocks
/// are zeroed and the first and last 4 MiB are overwritten (partition
/// tables and their GPT backup, md 0.90/1.0/1.1/1.2 superblocks, LVM
/// labels, file system and swap signatures). Other disks are left alone,
/// even when they hold the other half of a mirror. Tools that are missing
/// (an installer without mdadm) are skipped; the line never fails.
pub fn disk_release_sh() -> String {
    // Mounts are found by device number (/proc/self/mountinfo), not by
    // name: a volume mounted as /dev/VG/LV shows under that name only.
    "rb_off() { local d x dev mp; d=$(cat /sys/class/block/$1/dev 2>/dev/null) || return 0; \
while read -r x x dev x mp x; do [ \"$dev\" = \"$d\" ] && umount \"$mp\"; done < /proc/self/mountinfo; \
swapoff /dev/$1; } 2>/dev/null; \
rb_free() { local h n; for h in /sys/class/block/$1/holders/*; do [ -e \"$h\" ] || continue; n=${h##*/}; rb_free $n; rb_off $n; \
case $n in dm-*) dmsetup remove \"$(cat $h/dm/name)\";; md*) mdadm --stop /dev/$n;; esac; done 2>/dev/null; }; \
rb_n=${disk##*/}; for rb_s in /sys/block/$rb_n/$rb_n* /sys/block/$rb_n; do rb_p=${rb_s##*/}; [ -b /dev/$rb_p ] || continue; \
rb_off $rb_p; rb_free $rb_p; mdadm --zero-superblock /dev/$rb_p >/dev/null 2>&1; \
rb_z=$(cat $rb_s/size); dd if=/dev/zero of=/dev/$rb_p bs=512 count=8192 conv=fsync 2>/dev/null; \
if [ \"${rb_z:-0}\" -gt 16384 ]; then dd if=/dev/zero of=/dev/$rb_p bs=512 seek=$((rb_z - 8192)) count=8192 conv=fsync 2>/dev/null; fi; done; \
blockdev --rereadpt $disk 2>/dev/null; true"
        .to_string()
}

/// The installed system's first-boot report: a script that POSTs to the
/// completion callback (retrying as [`callback_sh`] does), then removes
/// itself and its unit, so it runs once; the systemd unit that runs it
/// after the network is up (it prints to the console too).
pub fn firstboot_script(callback_url: &str) -> (String, String) {
    let script = format!(
        "#!/bin/sh
# Written by rackboot at install time: tells rackboot this system is up
# (the install completes then), once; removed when it has succeeded.
{}
echo \"rackboot: $(hostname) reported its first boot\"
systemctl disable rackboot-firstboot.service
rm -f {FIRSTBOOT_UNIT} {FIRSTBOOT_SCRIPT}
",
        callback_sh(callback_url)
    );
    let unit = format!(
        "[Unit]
Description=Report this system's first boot to rackboot
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart={FIRSTBOOT_SCRIPT}
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"
    );
    (script, unit)
}

const FIRSTBOOT_SCRIPT: &str = "/usr/local/sbin/rackboot-firstboot";
const FIRSTBOOT_UNIT: &str = "/etc/systemd/system/rackboot-firstboot.service";
const FIRSTBOOT_WANTS: &str =
    "/etc/systemd/system/multi-user.target.wants/rackboot-firstboot.service";

/// The "file read" progress call as one line of POSIX sh: a single GET that
/// never fails the installer (busybox wget in the Debian installer, else curl).
pub fn started_sh(url: &str) -> String {
    format!(
        "wget -q -O /dev/null -T 10 '{url}' || curl -fsS -o /dev/null --max-time 10 '{url}' || true"
    )
}

/// The retrying completion callback as one line of POSIX sh: POST with curl
/// if the environment has it, else with wget `--post-data`, else (a busybox
/// wget built without it) a GET, so the endpoint must accept both. 60 tries, 10 s apart; exits 1 at
/// the end so the installer stops with an error instead of rebooting into a
/// reinstall.
pub fn callback_sh(url: &str) -> String {
    format!(
        "i=0; until curl -fsS -o /dev/null -X POST -d '' --max-time 20 '{url}' || wget -q -O /dev/null --post-data='' -T 20 '{url}' || wget -q -O /dev/null -T 20 '{url}'; do i=$((i+1)); if [ $i -ge 60 ]; then echo 'rackboot: completion callback failed' >&2; exit 1; fi; sleep 10; done"
    )
}

/// Default `/IMAGE/NAME` of the Standard edition (Server Core) per version.
fn windows_default_image(version_major: &str) -> String {
    format!("Windows Server {version_major} SERVERSTANDARDCORE")
}

impl Context {
    pub(crate) fn build(
        family: OsFamily,
        version: &str,
        vars: &InstallVars,
        secrets: &RenderSecrets,
    ) -> Result<Context, RenderError> {
        vars.validate(family, secrets)?;
        let major = version
            .split(['.', '-', ' '])
            .next()
            .unwrap_or(version)
            .to_string();

        // Physical links: NICs in order, then bond-only members.
        let mut links: Vec<LinkCtx> = Vec::new();
        let mut add_link = |mac: MacAddr, ipv4: &Ipv4Config, mtu: Option<u16>| {
            if links.iter().all(|l| l.mac != mac.to_string()) {
                let bond = vars
                    .bonds
                    .iter()
                    .find(|b| b.members.contains(&mac))
                    .map(|b| b.name.clone());
                links.push(LinkCtx {
                    name: format!("nic{}", links.len()),
                    mac: mac.to_string(),
                    mac_dashed: mac.dashed(),
                    ipv4: ipv4_ctx(ipv4),
                    mtu,
                    bond,
                    vlan_parent: vars
                        .vlans
                        .iter()
                        .any(|v| v.parent.parse::<MacAddr>() == Ok(mac)),
                });
            }
        };
        for nic in &vars.nics {
            add_link(nic.mac, &nic.ipv4, nic.mtu);
        }
        for bond in &vars.bonds {
            for m in &bond.members {
                add_link(*m, &Ipv4Config::None, bond.mtu);
            }
        }
        let link_of = |mac: &MacAddr| {
            links
                .iter()
                .find(|l| l.mac == mac.to_string())
                .cloned()
                .expect("every member was added as a link")
        };
        let bonds: Vec<BondCtx> = vars
            .bonds
            .iter()
            .map(|b| BondCtx {
                name: b.name.clone(),
                mode: b.mode.as_str(),
                members: b.members.iter().map(link_of).collect(),
                ipv4: ipv4_ctx(&b.ipv4),
                mtu: b.mtu,
            })
            .collect();
        let vlans: Vec<VlanCtx> = vars
            .vlans
            .iter()
            .map(|v| {
                let parent = match v.parent.parse::<MacAddr>() {
                    Ok(mac) => {
                        let l = link_of(&mac);
                        ParentCtx {
                            kind: "nic",
                            name: l.name,
                            mac: Some(l.mac),
                        }
                    }
                    Err(_) => ParentCtx {
                        kind: "bond",
                        name: v.parent.clone(),
                        mac: None,
                    },
                };
                VlanCtx {
                    name: format!("{}.{}", parent.name, v.id),
                    id: v.id,
                    parent,
                    ipv4: ipv4_ctx(&v.ipv4),
                    mtu: v.mtu,
                }
            })
            .collect();

        let mut interfaces = Vec::new();
        for l in links.iter().filter(|l| l.ipv4.mode != "none") {
            interfaces.push(IfaceCtx {
                kind: "nic",
                name: l.name.clone(),
                mac: Some(l.mac.clone()),
                mac_dashed: Some(l.mac_dashed.clone()),
                ipv4: l.ipv4.clone(),
                mtu: l.mtu,
                vlan_id: None,
                parent_mac: None,
            });
        }
        for b in bonds.iter().filter(|b| b.ipv4.mode != "none") {
            interfaces.push(IfaceCtx {
                kind: "bond",
                name: b.name.clone(),
                mac: None,
                mac_dashed: None,
                ipv4: b.ipv4.clone(),
                mtu: b.mtu,
                vlan_id: None,
                parent_mac: None,
            });
        }
        for v in vlans.iter().filter(|v| v.ipv4.mode != "none") {
            interfaces.push(IfaceCtx {
                kind: "vlan",
                name: v.name.clone(),
                mac: None,
                mac_dashed: None,
                ipv4: v.ipv4.clone(),
                mtu: v.mtu,
                vlan_id: Some(v.id),
                parent_mac: v.parent.mac.clone(),
            });
        }
        let primary = interfaces
            .first()
            .cloned()
            .ok_or_else(|| RenderError::MissingValue {
                name: "nics".into(),
            })?;
        let mut nameservers: Vec<String> = Vec::new();
        for i in &interfaces {
            for d in &i.ipv4.dns {
                if !nameservers.contains(d) {
                    nameservers.push(d.clone());
                }
            }
        }
        let gateway = interfaces.iter().find_map(|i| i.ipv4.gateway.clone());

        let source =
            url::Url::parse(&vars.install_source_url).map_err(|e| RenderError::InvalidValue {
                name: "install_source_url".into(),
                reason: e.to_string(),
            })?;
        let host = source.host_str().unwrap_or_default().to_string();
        let host_port = match source.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let path = source.path().trim_end_matches('/').to_string();
        let install_source = SourceCtx {
            url: vars.install_source_url.clone(),
            scheme: source.scheme().to_string(),
            unc: format!("\\\\{host}{}", path.replace('/', "\\")),
            host,
            host_port,
            path,
        };

        let windows = if family == OsFamily::Windows {
            let w = vars.windows.clone().unwrap_or_default();
            let plain = secrets
                .windows_admin_password
                .as_deref()
                .unwrap_or_default();
            Some(WindowsCtx {
                image_name: w
                    .image_name
                    .unwrap_or_else(|| windows_default_image(&major)),
                product_key: w.product_key,
                organization: w.organization,
                share_user: w.share_user,
                share_password: secrets.windows_share_password.clone(),
                admin_password_encoded: password::encode_windows_password(
                    plain,
                    "AdministratorPassword",
                ),
                autologon_password_encoded: password::encode_windows_password(plain, "Password"),
                uefi: w.firmware == WindowsFirmware::Uefi,
                timezone: windows_timezone(&vars.timezone).unwrap_or("UTC"),
                language: vars
                    .locale
                    .split(['.', '@'])
                    .next()
                    .unwrap_or("en_US")
                    .replace('_', "-"),
            })
        } else {
            None
        };

        Ok(Context {
            os: OsCtx {
                family: family.as_str(),
                version: version.to_string(),
                major,
            },
            hostname: vars.hostname.clone(),
            domain: vars.domain.clone(),
            fqdn: vars.fqdn(),
            links,
            bonds,
            vlans,
            interfaces,
            primary,
            nameservers,
            gateway,
            disk: DiskCtx {
                rule: vars.disk.rule(),
                value: match &vars.disk {
                    DiskSelector::Path(v) | DiskSelector::Serial(v) => Some(v.clone()),
                    _ => None,
                },
                pick_sh: disk_pick_sh(&vars.disk),
                release_sh: disk_release_sh(),
            },
            layout: match vars.layout {
                PartitionLayout::Plain => "plain",
                PartitionLayout::Lvm => "lvm",
            },
            packages: vars.packages.clone(),
            repositories: vars
                .repositories
                .iter()
                .map(|r| RepoCtx {
                    name: r.name.clone(),
                    url: r.url.split(' ').next().unwrap_or_default().to_string(),
                    spec: r.url.clone(),
                    apt_line: format!("deb {}", r.url),
                })
                .collect(),
            timezone: vars.timezone.clone(),
            locale: vars.locale.clone(),
            language: vars
                .locale
                .split(['.', '@'])
                .next()
                .unwrap_or("en_US")
                .to_string(),
            keyboard: vars.keyboard.clone(),
            root_password_hash: vars.root_password_hash.clone(),
            ssh_authorized_keys: vars.ssh_authorized_keys.clone(),
            post_script: vars.post_script.clone().filter(|s| !s.trim().is_empty()),
            install_source,
            callback_url: vars.callback_url.clone(),
            callback_sh: callback_sh(&vars.callback_url),
            started_sh: vars.started_url.as_deref().map(started_sh),
            installed_url: vars.installed_url.clone(),
            installed_sh: vars.installed_url.as_deref().map(callback_sh),
            firstboot: vars.installed_url.as_ref().map(|_| {
                let (script, unit) = firstboot_script(&vars.callback_url);
                FirstbootCtx {
                    script,
                    script_path: FIRSTBOOT_SCRIPT,
                    unit,
                    unit_path: FIRSTBOOT_UNIT,
                    wants_path: FIRSTBOOT_WANTS,
                }
            }),
            installer_network: match &vars.installer_network {
                Some(n) => NetCtx {
                    known: true,
                    router: n.router.map(|r| r.to_string()),
                    dns: n.dns.iter().map(|d| d.to_string()).collect(),
                    ntp: n.ntp.iter().map(|d| d.to_string()).collect(),
                },
                None => NetCtx {
                    known: false,
                    router: None,
                    dns: vec![],
                    ntp: vec![],
                },
            },
            windows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks() {
        assert_eq!(netmask(24), "255.255.255.0");
        assert_eq!(netmask(32), "255.255.255.255");
        assert_eq!(netmask(0), "0.0.0.0");
        assert_eq!(netmask(21), "255.255.248.0");
    }
}
