//! Debian's ifupdown: `/etc/network/interfaces`. Interfaces are named only by
//! name, so NICs pinned by MAC get `.link` files (see `super::link_files`).
//! Bonds need the image to have `ifenslave` (its hooks read `bond-*`); VLANs
//! named `PARENT.ID` are built into ifupdown 0.8 (`vlan-raw-device` is written
//! too, for the `vlan` package's hooks).

use crate::vars::Ipv4Config;

use super::Model;

struct Stanzas {
    out: String,
}

impl Stanzas {
    /// `auto NAME` + `iface NAME inet METHOD` + options, and a blank line.
    fn iface(
        &mut self,
        m: &Model,
        name: &str,
        cfg: &Ipv4Config,
        mtu: Option<u16>,
        extra: &[String],
    ) {
        let method = match cfg {
            Ipv4Config::None => "manual",
            Ipv4Config::Dhcp => "dhcp",
            Ipv4Config::Static { .. } => "static",
        };
        self.out
            .push_str(&format!("auto {name}\niface {name} inet {method}\n"));
        for line in extra {
            self.out.push_str(&format!("    {line}\n"));
        }
        if let Ipv4Config::Static {
            address,
            prefix,
            gateway,
            dns,
        } = cfg
        {
            self.out
                .push_str(&format!("    address {address}/{prefix}\n"));
            if let Some(gw) = gateway {
                self.out.push_str(&format!("    gateway {gw}\n"));
            }
            if !dns.is_empty() {
                let servers: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
                self.out
                    .push_str(&format!("    dns-nameservers {}\n", servers.join(" ")));
                if let Some(domain) = m.search() {
                    self.out.push_str(&format!("    dns-search {domain}\n"));
                }
            }
        }
        if let Some(mtu) = mtu {
            if matches!(cfg, Ipv4Config::Dhcp) {
                // The dhcp method has no `mtu` option.
                self.out
                    .push_str(&format!("    pre-up ip link set dev {name} mtu {mtu}\n"));
            } else {
                self.out.push_str(&format!("    mtu {mtu}\n"));
            }
        }
        self.out.push('\n');
    }
}

/// The whole `/etc/network/interfaces`. It does not `source` interfaces.d:
/// leftovers there would fight these stanzas. Bond members get no stanza of
/// their own (the bond's `bond-slaves` brings them in, with its MTU).
pub(crate) fn interfaces(m: &Model) -> String {
    let mut s = Stanzas {
        out: format!(
            "{}# NICs without a name are renamed lan<i> by /etc/systemd/network/10-rackboot-lan<i>.link.\n\n\
             auto lo\niface lo inet loopback\n\n",
            m.banner("#")
        ),
    };
    for link in m.links.iter().filter(|l| l.bond.is_none()) {
        s.iface(m, &link.name, link.ipv4, link.mtu, &[]);
    }
    for bond in &m.bonds {
        let extra = [
            format!("bond-slaves {}", bond.members.join(" ")),
            format!("bond-mode {}", bond.cfg.mode.as_str()),
            "bond-miimon 100".to_string(),
        ];
        s.iface(m, &bond.cfg.name, &bond.cfg.ipv4, bond.cfg.mtu, &extra);
    }
    for vlan in &m.vlans {
        let extra = [format!("vlan-raw-device {}", vlan.parent_name)];
        s.iface(m, &vlan.name, &vlan.cfg.ipv4, vlan.cfg.mtu, &extra);
    }
    // One trailing newline, not a blank line.
    s.out.truncate(s.out.trim_end().len());
    s.out.push('\n');
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::NetworkVars;

    #[test]
    fn stanzas_for_the_example() {
        let net: NetworkVars = serde_json::from_str(crate::EXAMPLE_NETWORK_JSON).unwrap();
        let text = interfaces(&Model::new(&net));
        for want in [
            "auto lo\niface lo inet loopback\n",
            "auto lan0\niface lan0 inet static\n    address 10.0.0.11/24\n    gateway 10.0.0.1\n    dns-nameservers 10.0.0.1 10.0.0.2\n    dns-search rack1.example.com\n",
            "auto eno4\niface eno4 inet dhcp\n    pre-up ip link set dev eno4 mtu 9000\n",
            "auto bond0\niface bond0 inet manual\n    bond-slaves lan2 lan3\n    bond-mode 802.3ad\n    bond-miimon 100\n    mtu 9000\n",
            "auto bond0.100\niface bond0.100 inet static\n    vlan-raw-device bond0\n    address 10.100.0.11/24\n",
            "auto lan0.200\niface lan0.200 inet dhcp\n    vlan-raw-device lan0\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("iface lan2"), "members have no stanza");
        assert!(!text.contains("source"));
    }
}
