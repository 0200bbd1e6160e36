//! `ifcfg-<name>` files: RHEL 7's initscripts
//! (`/etc/sysconfig/network-scripts`) and SUSE's wicked
//! (`/etc/sysconfig/network`, plus its `routes` file). Both are shell
//! variable assignments; every value here is a validated token, quoted only
//! where it holds a space (RHEL) or always in single quotes (SUSE's own style).
//!
//! Pinning: RHEL's `HWADDR=` with `DEVICE=lan<i>` makes initscripts' udev
//! helper (rename_device) give the NIC that name. wicked matches by name
//! only, so SUSE gets `.link` files (see `super::link_files`).

use crate::vars::Ipv4Config;

use super::{Model, TargetFile};

/// One file's assignments, in order.
#[derive(Default)]
struct Vars(Vec<(String, String)>);

impl Vars {
    fn new(pairs: Vec<(&str, String)>) -> Vars {
        Vars(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.push((key.into(), value.into()));
    }
}

fn rhel_quote(value: &str) -> String {
    if value.contains(' ') {
        format!("\"{value}\"")
    } else {
        value.to_string()
    }
}

fn render(m: &Model, vars: &Vars, quote: fn(&str) -> String) -> String {
    let mut out = m.banner("#");
    for (key, value) in &vars.0 {
        out.push_str(&format!("{key}={}\n", quote(value)));
    }
    out
}

/// RHEL address keys: `BOOTPROTO`, `IPADDR`/`PREFIX`/`GATEWAY`, `DNS<n>`,
/// `DOMAIN` (the search list).
fn rhel_ipv4(m: &Model, vars: &mut Vars, cfg: &Ipv4Config) {
    match cfg {
        Ipv4Config::None => vars.set("BOOTPROTO", "none"),
        Ipv4Config::Dhcp => vars.set("BOOTPROTO", "dhcp"),
        Ipv4Config::Static {
            address,
            prefix,
            gateway,
            dns,
        } => {
            vars.set("BOOTPROTO", "none");
            vars.set("IPADDR", address.to_string());
            vars.set("PREFIX", prefix.to_string());
            if let Some(gw) = gateway {
                vars.set("GATEWAY", gw.to_string());
            }
            for (i, server) in dns.iter().enumerate() {
                vars.set(format!("DNS{}", i + 1), server.to_string());
            }
            if !dns.is_empty()
                && let Some(domain) = m.search()
            {
                vars.set("DOMAIN", domain.to_string());
            }
        }
    }
}

fn mtu(vars: &mut Vars, mtu: Option<u16>) {
    if let Some(mtu) = mtu {
        vars.set("MTU", mtu.to_string());
    }
}

/// `/etc/sysconfig/network-scripts/ifcfg-<name>` for every NIC, bond and VLAN.
pub(crate) fn rhel(m: &Model) -> Vec<TargetFile> {
    let mut files = Vec::new();
    let mut write = |name: &str, vars: Vars| {
        files.push(TargetFile::new(
            format!("/etc/sysconfig/network-scripts/ifcfg-{name}"),
            render(m, &vars, rhel_quote),
            0o644,
        ));
    };
    for link in &m.links {
        let mut vars = Vars::new(vec![
            ("DEVICE", link.name.clone()),
            ("NAME", link.name.clone()),
            ("TYPE", "Ethernet".into()),
        ]);
        if link.pinned {
            vars.set("HWADDR", link.mac.to_string());
        }
        vars.set("ONBOOT", "yes");
        match link.bond {
            Some(bond) => {
                vars.set("BOOTPROTO", "none");
                vars.set("MASTER", bond.name.clone());
                vars.set("SLAVE", "yes");
            }
            None => rhel_ipv4(m, &mut vars, link.ipv4),
        }
        mtu(&mut vars, link.mtu);
        write(&link.name, vars);
    }
    for bond in &m.bonds {
        let name = &bond.cfg.name;
        let mut vars = Vars::new(vec![
            ("DEVICE", name.clone()),
            ("NAME", name.clone()),
            ("TYPE", "Bond".into()),
            ("BONDING_MASTER", "yes".into()),
            (
                "BONDING_OPTS",
                format!("mode={} miimon=100", bond.cfg.mode.as_str()),
            ),
            ("ONBOOT", "yes".into()),
        ]);
        rhel_ipv4(m, &mut vars, &bond.cfg.ipv4);
        mtu(&mut vars, bond.cfg.mtu);
        write(name, vars);
    }
    for vlan in &m.vlans {
        let mut vars = Vars::new(vec![
            ("DEVICE", vlan.name.clone()),
            ("NAME", vlan.name.clone()),
            ("TYPE", "Vlan".into()),
            ("VLAN", "yes".into()),
            ("PHYSDEV", vlan.parent_name.clone()),
            ("VLAN_ID", vlan.cfg.id.to_string()),
            ("ONBOOT", "yes".into()),
        ]);
        rhel_ipv4(m, &mut vars, &vlan.cfg.ipv4);
        mtu(&mut vars, vlan.cfg.mtu);
        write(&vlan.name, vars);
    }
    files
}

fn suse_quote(value: &str) -> String {
    format!("'{value}'")
}

/// SUSE address keys: `BOOTPROTO` (`none`, `dhcp4`, `static`) and
/// `IPADDR=a.b.c.d/prefix`. Gateways go to the `routes` file, DNS servers to
/// `/etc/resolv.conf` (see `super::resolv_conf`).
fn suse_ipv4(vars: &mut Vars, cfg: &Ipv4Config) {
    match cfg {
        Ipv4Config::None => vars.set("BOOTPROTO", "none"),
        Ipv4Config::Dhcp => vars.set("BOOTPROTO", "dhcp4"),
        Ipv4Config::Static {
            address, prefix, ..
        } => {
            vars.set("BOOTPROTO", "static");
            vars.set("IPADDR", format!("{address}/{prefix}"));
        }
    }
}

/// `/etc/sysconfig/network/ifcfg-<name>` for every NIC, bond and VLAN, and
/// `/etc/sysconfig/network/routes` (always written, so a default route the
/// image shipped does not survive).
pub(crate) fn suse(m: &Model) -> Vec<TargetFile> {
    let mut files = Vec::new();
    let mut routes = format!("{}# DESTINATION GATEWAY NETMASK INTERFACE\n", m.banner("#"));
    let mut write = |name: &str, vars: Vars, ipv4: &Ipv4Config| {
        if let Ipv4Config::Static {
            gateway: Some(gw), ..
        } = ipv4
        {
            routes.push_str(&format!("default {gw} - {name}\n"));
        }
        files.push(TargetFile::new(
            format!("/etc/sysconfig/network/ifcfg-{name}"),
            render(m, &vars, suse_quote),
            0o644,
        ));
    };
    for link in &m.links {
        let mut vars = Vars::default();
        match link.bond {
            Some(_) => {
                // Ports are brought up by their bond.
                vars.set("STARTMODE", "hotplug");
                vars.set("BOOTPROTO", "none");
            }
            None => {
                vars.set("STARTMODE", "auto");
                suse_ipv4(&mut vars, link.ipv4);
            }
        }
        mtu(&mut vars, link.mtu);
        let ipv4 = if link.bond.is_some() {
            &Ipv4Config::None
        } else {
            link.ipv4
        };
        write(&link.name, vars, ipv4);
    }
    for bond in &m.bonds {
        let mut vars = Vars::new(vec![
            ("STARTMODE", "auto".into()),
            ("BONDING_MASTER", "yes".into()),
            (
                "BONDING_MODULE_OPTS",
                format!("mode={} miimon=100", bond.cfg.mode.as_str()),
            ),
        ]);
        for (i, member) in bond.members.iter().enumerate() {
            vars.set(format!("BONDING_SLAVE{i}"), member.clone());
        }
        suse_ipv4(&mut vars, &bond.cfg.ipv4);
        mtu(&mut vars, bond.cfg.mtu);
        write(&bond.cfg.name, vars, &bond.cfg.ipv4);
    }
    for vlan in &m.vlans {
        let mut vars = Vars::new(vec![
            ("STARTMODE", "auto".into()),
            ("ETHERDEVICE", vlan.parent_name.clone()),
            ("VLAN_ID", vlan.cfg.id.to_string()),
        ]);
        suse_ipv4(&mut vars, &vlan.cfg.ipv4);
        mtu(&mut vars, vlan.cfg.mtu);
        write(&vlan.name, vars, &vlan.cfg.ipv4);
    }
    files.push(TargetFile::new(
        "/etc/sysconfig/network/routes",
        routes,
        0o644,
    ));
    files
}
