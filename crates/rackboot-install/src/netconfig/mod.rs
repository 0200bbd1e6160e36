//! The network configuration of a deployed image: the files the agent writes
//! into the installed system's root ([`render_target_network`], after
//! removing [`target_cleanup_paths`]), and a cloud-init NoCloud seed
//! ([`render_nocloud_seed`]). Both take [`NetworkVars`], the network part of
//! [`crate::InstallVars`], so an image deploy and an installer-based install
//! of the same machine get the same network.
//!
//! Interface names follow the rules on [`crate::NicConfig`]: a NIC with a
//! `name` is configured under that name; one without is pinned by MAC and
//! called `lan<i>`. VLANs are `PARENT.ID`. Every format below says how it
//! pins a MAC. Files per [`TargetFamily`]:
//!
//! | family | files (besides `/etc/hostname`, `/etc/hosts`, the cloud-init switch-off) |
//! |---|---|
//! | `debian` (ifupdown) | `/etc/network/interfaces`; `/etc/systemd/network/10-rackboot-lan<i>.link` per pinned NIC; `/etc/resolv.conf` when static DNS servers are given |
//! | `ubuntu` (netplan) | `/etc/netplan/50-rackboot.yaml` (0600) |
//! | `rhel` (NetworkManager, RHEL 8+) | `/etc/NetworkManager/system-connections/<name>.nmconnection` (0600) per NIC, bond port, bond and VLAN |
//! | `rhel-ifcfg` (initscripts, RHEL 7) | `/etc/sysconfig/network-scripts/ifcfg-<name>` |
//! | `suse` (wicked) | `/etc/sysconfig/network/ifcfg-<name>`, `/etc/sysconfig/network/routes`; `.link` files and `/etc/resolv.conf` as for Debian |
//!
//! Every family also gets `/etc/cloud/cloud.cfg.d/99-rackboot-network.cfg`
//! (`network: {config: disabled}`): an image with cloud-init and no seed
//! would otherwise replace these files with its fallback (DHCP on one NIC) at
//! first boot. Use the seed *instead of* target files when cloud-init should
//! configure the network.

mod ifcfg;
mod ifupdown;
mod keyfile;
mod netplan;
mod nocloud;

use std::fmt;
use std::net::Ipv4Addr;

use rackboot_core::{MacAddr, OsFamily};
use serde::Serialize;

use crate::RenderError;
use crate::vars::{BondConfig, InstalledLink, Ipv4Config, NetworkVars, VlanConfig};

pub use nocloud::{SeedInput, render_nocloud_seed};

/// How the installed system configures its network, which decides the files
/// written. Chosen from the image's OS (see [`TargetFamily::for_os`]), or
/// explicitly for images that differ from their family's default (a Debian
/// 12 cloud image uses netplan: `ubuntu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetFamily {
    /// ifupdown: `/etc/network/interfaces`.
    Debian,
    /// netplan: `/etc/netplan/50-rackboot.yaml`.
    Ubuntu,
    /// NetworkManager keyfiles (RHEL, Rocky, Alma 8 and later; Fedora).
    Rhel,
    /// initscripts `ifcfg-*` files (RHEL/CentOS 7).
    RhelIfcfg,
    /// wicked `ifcfg-*` files (SLES, openSUSE Leap 15).
    Suse,
}

impl TargetFamily {
    pub const ALL: [TargetFamily; 5] = [
        TargetFamily::Debian,
        TargetFamily::Ubuntu,
        TargetFamily::Rhel,
        TargetFamily::RhelIfcfg,
        TargetFamily::Suse,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            TargetFamily::Debian => "debian",
            TargetFamily::Ubuntu => "ubuntu",
            TargetFamily::Rhel => "rhel",
            TargetFamily::RhelIfcfg => "rhel-ifcfg",
            TargetFamily::Suse => "suse",
        }
    }

    /// The family name, or the tool it stands for (`ifupdown`, `netplan`,
    /// `networkmanager`, `ifcfg`, `wicked`); case-insensitive.
    pub fn parse(s: &str) -> Option<TargetFamily> {
        match s.to_ascii_lowercase().as_str() {
            "debian" | "ifupdown" => Some(TargetFamily::Debian),
            "ubuntu" | "netplan" => Some(TargetFamily::Ubuntu),
            "rhel" | "networkmanager" | "nm" => Some(TargetFamily::Rhel),
            "rhel-ifcfg" | "ifcfg" | "initscripts" => Some(TargetFamily::RhelIfcfg),
            "suse" | "wicked" => Some(TargetFamily::Suse),
            _ => None,
        }
    }

    /// The usual family of an OS release: RHEL 7 uses ifcfg files, later
    /// releases NetworkManager keyfiles. None for ESXi and Windows, whose
    /// images rackboot does not configure.
    pub fn for_os(family: OsFamily, version: &str) -> Option<TargetFamily> {
        let major = version.split(['.', '-', ' ']).next().unwrap_or(version);
        match family {
            OsFamily::Debian => Some(TargetFamily::Debian),
            OsFamily::Ubuntu => Some(TargetFamily::Ubuntu),
            OsFamily::Rhel if major.parse::<u32>().is_ok_and(|m| m <= 7) => {
                Some(TargetFamily::RhelIfcfg)
            }
            OsFamily::Rhel => Some(TargetFamily::Rhel),
            OsFamily::Suse => Some(TargetFamily::Suse),
            OsFamily::Esxi | OsFamily::Windows => None,
        }
    }
}

impl fmt::Display for TargetFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file to write into the installed system (the agent's `FileSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetFile {
    /// Absolute path inside the installed system.
    pub path: String,
    pub content: String,
    /// Permission bits: 0o644, or 0o600 for files netplan and NetworkManager
    /// want private.
    pub mode: u32,
}

impl TargetFile {
    fn new(path: impl Into<String>, content: String, mode: u32) -> TargetFile {
        TargetFile {
            path: path.into(),
            content,
            mode,
        }
    }
}

/// The installed system's network configuration for `net`, as files. Validates
/// `net` first ([`NetworkVars::validate`]). Remove [`target_cleanup_paths`]
/// before writing these.
pub fn render_target_network(
    family: TargetFamily,
    net: &NetworkVars,
) -> Result<Vec<TargetFile>, RenderError> {
    net.validate()?;
    let model = Model::new(net);
    let mut files = vec![
        TargetFile::new("/etc/hostname", format!("{}\n", net.hostname), 0o644),
        TargetFile::new("/etc/hosts", hosts(&model), 0o644),
    ];
    match family {
        TargetFamily::Debian => {
            files.push(TargetFile::new(
                "/etc/network/interfaces",
                ifupdown::interfaces(&model),
                0o644,
            ));
            files.extend(link_files(&model));
            files.extend(resolv_conf(&model));
        }
        TargetFamily::Ubuntu => files.push(TargetFile::new(
            "/etc/netplan/50-rackboot.yaml",
            netplan::target_file(&model),
            0o600,
        )),
        TargetFamily::Rhel => files.extend(keyfile::connections(&model)),
        TargetFamily::RhelIfcfg => files.extend(ifcfg::rhel(&model)),
        TargetFamily::Suse => {
            files.extend(ifcfg::suse(&model));
            files.extend(link_files(&model));
            files.extend(resolv_conf(&model));
        }
    }
    files.push(TargetFile::new(
        "/etc/cloud/cloud.cfg.d/99-rackboot-network.cfg",
        "# Written by rackboot: the network is configured by the files rackboot wrote.\n\
         # Without this, cloud-init (when the image has it and finds no seed) would\n\
         # replace them at first boot with its fallback, DHCP on one NIC.\n\
         network: {config: disabled}\n"
            .to_string(),
        0o644,
    ));
    Ok(files)
}

/// Network configuration files that images commonly ship (cloud-init's and
/// installers' output, persistent-net rules) and that would fight the files of
/// [`render_target_network`]; the agent removes them first (missing ones are
/// fine). Exact paths, no globs.
pub fn target_cleanup_paths(family: TargetFamily) -> Vec<&'static str> {
    // cloud-init's eni and sysconfig renderers, and old udev, pin NIC names
    // here; stale names would override ours.
    let mut paths = vec!["/etc/udev/rules.d/70-persistent-net.rules"];
    paths.extend_from_slice(match family {
        TargetFamily::Debian => &[
            "/etc/network/interfaces.d/50-cloud-init",
            "/etc/network/interfaces.d/50-cloud-init.cfg",
        ][..],
        TargetFamily::Ubuntu => &[
            "/etc/netplan/50-cloud-init.yaml",
            "/etc/netplan/00-installer-config.yaml",
            "/etc/netplan/01-netcfg.yaml",
        ],
        TargetFamily::Rhel => &[
            "/etc/sysconfig/network-scripts/ifcfg-eth0",
            "/etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection",
            // cloud-init's `dns = none`: NetworkManager would ignore our DNS.
            "/etc/NetworkManager/conf.d/99-cloud-init.conf",
        ],
        TargetFamily::RhelIfcfg => &[
            "/etc/sysconfig/network-scripts/ifcfg-eth0",
            "/etc/NetworkManager/conf.d/99-cloud-init.conf",
        ],
        TargetFamily::Suse => &[
            "/etc/sysconfig/network/ifcfg-eth0",
            "/etc/udev/rules.d/85-persistent-net-cloud-init.rules",
        ],
    });
    paths
}

/// `net` with every name resolved, for the format writers.
pub(crate) struct Model<'a> {
    pub net: &'a NetworkVars,
    pub fqdn: String,
    pub links: Vec<InstalledLink<'a>>,
    pub bonds: Vec<Bond<'a>>,
    pub vlans: Vec<Vlan<'a>>,
}

pub(crate) struct Bond<'a> {
    pub cfg: &'a BondConfig,
    /// Installed-system names of the members, in `members` order.
    pub members: Vec<String>,
}

/// What a VLAN sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parent {
    /// Index into `Model::links`.
    Link(usize),
    /// Index into `Model::bonds`.
    Bond(usize),
}

pub(crate) struct Vlan<'a> {
    pub cfg: &'a VlanConfig,
    /// `PARENT.ID`.
    pub name: String,
    /// The parent's installed-system name.
    pub parent_name: String,
    pub parent: Parent,
}

impl<'a> Model<'a> {
    /// `net` must be valid.
    pub(crate) fn new(net: &'a NetworkVars) -> Model<'a> {
        let links = net.installed_links();
        let name_of = |mac: &MacAddr| {
            links
                .iter()
                .find(|l| l.mac == *mac)
                .map(|l| l.name.clone())
                .unwrap_or_else(|| mac.to_string())
        };
        let bonds = net
            .bonds
            .iter()
            .map(|cfg| Bond {
                cfg,
                members: cfg.members.iter().map(name_of).collect(),
            })
            .collect();
        let vlans = net
            .vlans
            .iter()
            .map(|cfg| {
                let parent = match cfg.parent.parse::<MacAddr>() {
                    Ok(mac) => Parent::Link(links.iter().position(|l| l.mac == mac).unwrap_or(0)),
                    Err(_) => Parent::Bond(
                        net.bonds
                            .iter()
                            .position(|b| b.name == cfg.parent)
                            .unwrap_or(0),
                    ),
                };
                Vlan {
                    cfg,
                    name: net.vlan_name(cfg),
                    parent_name: net.vlan_parent_name(cfg),
                    parent,
                }
            })
            .collect();
        Model {
            net,
            fqdn: net.fqdn(),
            links,
            bonds,
            vlans,
        }
    }

    /// Every static DNS server, first seen first, without repeats.
    pub(crate) fn nameservers(&self) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = Vec::new();
        let configs = self
            .links
            .iter()
            .map(|l| l.ipv4)
            .chain(self.bonds.iter().map(|b| &b.cfg.ipv4))
            .chain(self.vlans.iter().map(|v| &v.cfg.ipv4));
        for cfg in configs {
            if let Ipv4Config::Static { dns, .. } = cfg {
                for d in dns {
                    if !out.contains(d) {
                        out.push(*d);
                    }
                }
            }
        }
        out
    }

    /// The search domain written beside static DNS servers.
    pub(crate) fn search(&self) -> Option<&str> {
        self.net.domain.as_deref()
    }

    /// The one-line header of every written file.
    pub(crate) fn banner(&self, comment: &str) -> String {
        format!(
            "{comment} Written by rackboot for {}; rewritten on every deploy.\n",
            self.fqdn
        )
    }
}

/// `/etc/hosts`: localhost, and the machine's own name on 127.0.1.1 (Debian's
/// convention; resolves the FQDN without DNS).
fn hosts(m: &Model) -> String {
    let own = if m.fqdn == m.net.hostname {
        m.net.hostname.clone()
    } else {
        format!("{} {}", m.fqdn, m.net.hostname)
    };
    format!(
        "{}127.0.0.1\tlocalhost localhost.localdomain localhost4\n\
         127.0.1.1\t{own}\n\
         ::1\tlocalhost localhost.localdomain localhost6 ip6-localhost ip6-loopback\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
        m.banner("#")
    )
}

/// One systemd `.link` file per NIC pinned by MAC, for formats that name
/// interfaces only by name (ifupdown, wicked): udev gives the NIC with that
/// MAC the name `lan<i>`. `Type=!vlan bond bridge` keeps the match off
/// bonds, bridges and VLANs, which carry a member's MAC.
fn link_files(m: &Model) -> Vec<TargetFile> {
    m.links
        .iter()
        .filter(|l| l.pinned)
        .map(|l| {
            TargetFile::new(
                format!("/etc/systemd/network/10-rackboot-{}.link", l.name),
                format!(
                    "{}[Match]\nMACAddress={}\nType=!vlan bond bridge\n\n[Link]\nName={}\n",
                    m.banner("#"),
                    l.mac,
                    l.name
                ),
                0o644,
            )
        })
        .collect()
}

/// `/etc/resolv.conf` with the static DNS servers, for formats whose own DNS
/// settings need a helper the image may lack (ifupdown's `dns-nameservers`
/// needs resolvconf or systemd-resolved; wicked has no per-interface DNS).
/// None when no static server is given: DHCP clients manage the file then.
fn resolv_conf(m: &Model) -> Option<TargetFile> {
    let servers = m.nameservers();
    if servers.is_empty() {
        return None;
    }
    let mut out = m.banner("#");
    for s in servers.iter().take(3) {
        // The resolver reads at most three (MAXNS).
        out.push_str(&format!("nameserver {s}\n"));
    }
    if let Some(domain) = m.search() {
        out.push_str(&format!("search {domain}\n"));
    }
    Some(TargetFile::new("/etc/resolv.conf", out, 0o644))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> NetworkVars {
        serde_json::from_str(crate::EXAMPLE_NETWORK_JSON).unwrap()
    }

    #[test]
    fn family_names_round_trip_and_aliases_parse() {
        for f in TargetFamily::ALL {
            assert_eq!(TargetFamily::parse(f.as_str()), Some(f));
            assert_eq!(f.to_string(), f.as_str());
        }
        for (alias, want) in [
            ("ifupdown", TargetFamily::Debian),
            ("Netplan", TargetFamily::Ubuntu),
            ("NetworkManager", TargetFamily::Rhel),
            ("ifcfg", TargetFamily::RhelIfcfg),
            ("wicked", TargetFamily::Suse),
        ] {
            assert_eq!(TargetFamily::parse(alias), Some(want), "{alias}");
        }
        assert_eq!(TargetFamily::parse("windows"), None);
        assert_eq!(
            TargetFamily::for_os(OsFamily::Rhel, "7.9"),
            Some(TargetFamily::RhelIfcfg)
        );
        assert_eq!(
            TargetFamily::for_os(OsFamily::Rhel, "9.4"),
            Some(TargetFamily::Rhel)
        );
        assert_eq!(TargetFamily::for_os(OsFamily::Esxi, "8.0"), None);
    }

    #[test]
    fn names_follow_the_documented_rules() {
        let net = example();
        let m = Model::new(&net);
        let names: Vec<(&str, bool)> = m
            .links
            .iter()
            .map(|l| (l.name.as_str(), l.pinned))
            .collect();
        // nics in order (index names, or the given name), then bond-only members.
        assert_eq!(
            names,
            [
                ("lan0", true),
                ("eno4", false),
                ("lan2", true),
                ("lan3", true)
            ]
        );
        assert_eq!(m.bonds[0].members, ["lan2", "lan3"]);
        assert_eq!(m.links[2].mtu, Some(9000), "members take the bond's MTU");
        assert_eq!(m.vlans[0].name, "bond0.100");
        assert_eq!(m.vlans[0].parent, Parent::Bond(0));
        assert_eq!(m.vlans[1].name, "lan0.200");
        assert_eq!(m.vlans[1].parent, Parent::Link(0));
        assert_eq!(
            m.nameservers(),
            [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );
    }

    #[test]
    fn a_named_nic_is_its_vlans_and_bonds_parent_by_name() {
        let mut net = example();
        net.nics[0].name = Some("eno1".into());
        net.bonds[0].members[0] = net.nics[1].mac;
        net.nics[1].ipv4 = Ipv4Config::None;
        let m = Model::new(&net);
        assert_eq!(m.vlans[1].name, "eno1.200");
        assert_eq!(m.bonds[0].members, ["eno4", "lan2"]);
    }

    /// What is wrong, how to make it so, and the field the error must name.
    type Case = (&'static str, Box<dyn Fn(&mut NetworkVars)>, &'static str);

    #[test]
    fn installed_names_must_be_distinct_and_short() {
        let cases: Vec<Case> = vec![
            (
                "given name equals a lan<i> name",
                Box::new(|n| n.nics[1].name = Some("lan0".into())),
                "nics[1].name",
            ),
            (
                "bond named like a pinned NIC",
                Box::new(|n| {
                    n.bonds[0].name = "lan2".into();
                    n.vlans[0].parent = "lan2".into();
                }),
                "bonds[0].name",
            ),
            (
                "VLAN name over 15 bytes",
                Box::new(|n| {
                    n.bonds[0].name = "bond-uplink-01".into();
                    n.vlans[0].parent = "bond-uplink-01".into();
                }),
                "vlans[0]",
            ),
            (
                "bad NIC name",
                Box::new(|n| n.nics[0].name = Some("eth0.5".into())),
                "nics[0].name",
            ),
            (
                "two NICs with one name",
                Box::new(|n| {
                    n.nics[0].name = Some("eno4".into());
                }),
                "nics[1].name",
            ),
            (
                "NIC named like a bond",
                Box::new(|n| n.nics[0].name = Some("bond0".into())),
                "bonds[0].name",
            ),
        ];
        for (what, mutate, field) in cases {
            let mut net = example();
            mutate(&mut net);
            match render_target_network(TargetFamily::Debian, &net) {
                Err(RenderError::InvalidValue { name, .. }) => {
                    assert_eq!(name, field, "{what}")
                }
                other => panic!("{what}: expected InvalidValue, got {other:?}"),
            }
        }
    }

    #[test]
    fn install_vars_give_the_same_network() {
        let vars: crate::InstallVars = serde_json::from_str(crate::EXAMPLE_VARS_JSON).unwrap();
        let net = vars.network();
        net.validate().unwrap();
        assert_eq!(net.hostname, vars.hostname);
        assert_eq!(net.nics, vars.nics);
        // The same JSON parses as either; an absent name stays absent.
        let json = serde_json::to_value(&net).unwrap();
        assert!(json["nics"][0].get("name").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<NetworkVars>(json).unwrap(), net);

        // InstallVars checks NIC names too.
        let secrets = crate::RenderSecrets::default();
        let mut vars = vars.clone();
        vars.nics[0].name = Some("eno1".into());
        vars.validate(OsFamily::Rhel, &secrets).unwrap();
        vars.nics[0].name = Some("en o1".into());
        match vars.validate(OsFamily::Rhel, &secrets) {
            Err(RenderError::InvalidValue { name, .. }) => assert_eq!(name, "nics[0].name"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_family_writes_hostname_hosts_and_the_cloud_init_switch() {
        let net = example();
        for family in TargetFamily::ALL {
            let files = render_target_network(family, &net).unwrap();
            let get = |p: &str| {
                files
                    .iter()
                    .find(|f| f.path == p)
                    .unwrap_or_else(|| panic!("{family}: no {p}"))
            };
            assert_eq!(get("/etc/hostname").content, "node1\n");
            assert!(
                get("/etc/hosts")
                    .content
                    .contains("\n127.0.1.1\tnode1.rack1.example.com node1\n")
            );
            assert!(
                get("/etc/cloud/cloud.cfg.d/99-rackboot-network.cfg")
                    .content
                    .contains("network: {config: disabled}")
            );
            let mut paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
            paths.sort();
            paths.dedup();
            assert_eq!(paths.len(), files.len(), "{family}: a path twice");
            for f in &files {
                assert!(f.path.starts_with("/etc/"), "{}", f.path);
                assert!(f.content.ends_with('\n'), "{}", f.path);
                assert!(f.mode == 0o644 || f.mode == 0o600, "{}", f.path);
            }
            assert!(!target_cleanup_paths(family).is_empty());
        }
    }

    #[test]
    fn link_files_only_for_pinned_nics_of_name_based_formats() {
        let net = example();
        for (family, want) in [
            (TargetFamily::Debian, 3),
            (TargetFamily::Suse, 3),
            (TargetFamily::Ubuntu, 0),
            (TargetFamily::Rhel, 0),
            (TargetFamily::RhelIfcfg, 0),
        ] {
            let files = render_target_network(family, &net).unwrap();
            let links: Vec<&TargetFile> =
                files.iter().filter(|f| f.path.ends_with(".link")).collect();
            assert_eq!(links.len(), want, "{family}");
        }
        let files = render_target_network(TargetFamily::Debian, &net).unwrap();
        let lan2 = files
            .iter()
            .find(|f| f.path == "/etc/systemd/network/10-rackboot-lan2.link")
            .unwrap();
        assert!(lan2.content.contains("\nMACAddress=52:54:00:00:00:02\n"));
        assert!(lan2.content.ends_with("[Link]\nName=lan2\n"));
    }

    #[test]
    fn resolv_conf_only_with_static_dns() {
        let mut net = example();
        let files = render_target_network(TargetFamily::Debian, &net).unwrap();
        let resolv = files.iter().find(|f| f.path == "/etc/resolv.conf").unwrap();
        assert!(
            resolv
                .content
                .ends_with("nameserver 10.0.0.1\nnameserver 10.0.0.2\nsearch rack1.example.com\n")
        );
        net.nics[0].ipv4 = Ipv4Config::Dhcp;
        let files = render_target_network(TargetFamily::Suse, &net).unwrap();
        assert!(files.iter().all(|f| f.path != "/etc/resolv.conf"));
    }
}
