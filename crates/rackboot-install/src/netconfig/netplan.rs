//! Network config version 2 (netplan's schema): Ubuntu's
//! `/etc/netplan/50-rackboot.yaml` and the NoCloud seed's `network-config`.
//! Built as text so every scalar is quoted the same way (see [`q`]).

use crate::vars::Ipv4Config;

use super::Model;

/// A YAML double-quoted scalar (JSON string syntax is a subset of it). Every
/// string is quoted: unquoted, YAML 1.1 readers (PyYAML in cloud-init) take
/// `52:54:00:00:00:01` for a base-60 integer and `yes`/`on` for booleans.
pub(crate) fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

/// A flow sequence of quoted scalars: `["a", "b"]`.
fn q_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// How the default route's destination is spelled: netplan's `default`
/// keyword, or `0.0.0.0/0` for cloud-init, whose v2 parser (22.4, Debian 12)
/// rejects `default` ("Address default is not a valid ip address") when it
/// converts the config for ifupdown, sysconfig or NetworkManager.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DefaultRoute {
    Keyword,
    Cidr,
}

struct Lines {
    out: String,
    indent: usize,
}

impl Lines {
    fn push(&mut self, level: usize, text: &str) {
        for _ in 0..self.indent + 2 * level {
            self.out.push(' ');
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// `dhcp4`, addresses, the default route, nameservers, at `level`.
    fn ipv4(&mut self, level: usize, m: &Model, cfg: &Ipv4Config, route: DefaultRoute) {
        match cfg {
            Ipv4Config::None => self.push(level, "dhcp4: false"),
            Ipv4Config::Dhcp => self.push(level, "dhcp4: true"),
            Ipv4Config::Static {
                address,
                prefix,
                gateway,
                dns,
            } => {
                self.push(level, "dhcp4: false");
                self.push(
                    level,
                    &format!("addresses: {}", q_list(&[format!("{address}/{prefix}")])),
                );
                if let Some(gw) = gateway {
                    let to = match route {
                        DefaultRoute::Keyword => "default",
                        DefaultRoute::Cidr => "0.0.0.0/0",
                    };
                    self.push(level, "routes:");
                    self.push(level + 1, &format!("- to: {}", q(to)));
                    self.push(level + 2, &format!("via: {}", q(&gw.to_string())));
                }
                if !dns.is_empty() {
                    let servers: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
                    self.push(level, "nameservers:");
                    self.push(level + 1, &format!("addresses: {}", q_list(&servers)));
                    if let Some(domain) = m.search() {
                        self.push(level + 1, &format!("search: {}", q_list(&[domain])));
                    }
                }
            }
        }
    }

    fn mtu(&mut self, level: usize, mtu: Option<u16>) {
        if let Some(mtu) = mtu {
            self.push(level, &format!("mtu: {mtu}"));
        }
    }
}

/// `version: 2` and the `ethernets`, `bonds` and `vlans` mappings, every line
/// indented by `indent` spaces. NICs pinned by MAC are matched by
/// `macaddress` and renamed with `set-name`; named NICs are keyed by their
/// name alone.
pub(crate) fn body(m: &Model, indent: usize, route: DefaultRoute) -> String {
    let mut l = Lines {
        out: String::new(),
        indent,
    };
    l.push(0, "version: 2");
    l.push(0, "ethernets:");
    for link in &m.links {
        if !link.pinned && link.bond.is_some() && link.mtu.is_none() {
            // A named bond member with nothing to set: an empty mapping, not null.
            l.push(1, &format!("{}: {{}}", q(&link.name)));
            continue;
        }
        l.push(1, &format!("{}:", q(&link.name)));
        if link.pinned {
            l.push(2, "match:");
            l.push(3, &format!("macaddress: {}", q(&link.mac.to_string())));
            l.push(2, &format!("set-name: {}", q(&link.name)));
        }
        // Bond members carry no address of their own (validation ensures it).
        if link.bond.is_none() {
            l.ipv4(2, m, link.ipv4, route);
        }
        l.mtu(2, link.mtu);
    }
    if !m.bonds.is_empty() {
        l.push(0, "bonds:");
        for bond in &m.bonds {
            l.push(1, &format!("{}:", q(&bond.cfg.name)));
            l.push(2, &format!("interfaces: {}", q_list(&bond.members)));
            l.push(2, "parameters:");
            l.push(3, &format!("mode: {}", q(bond.cfg.mode.as_str())));
            l.push(3, "mii-monitor-interval: 100");
            l.ipv4(2, m, &bond.cfg.ipv4, route);
            l.mtu(2, bond.cfg.mtu);
        }
    }
    if !m.vlans.is_empty() {
        l.push(0, "vlans:");
        for vlan in &m.vlans {
            l.push(1, &format!("{}:", q(&vlan.name)));
            l.push(2, &format!("id: {}", vlan.cfg.id));
            l.push(2, &format!("link: {}", q(&vlan.parent_name)));
            l.ipv4(2, m, &vlan.cfg.ipv4, route);
            l.mtu(2, vlan.cfg.mtu);
        }
    }
    l.out
}

/// Ubuntu's `/etc/netplan/50-rackboot.yaml`.
pub(crate) fn target_file(m: &Model) -> String {
    format!(
        "{}network:\n{}",
        m.banner("#"),
        body(m, 2, DefaultRoute::Keyword)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::NetworkVars;

    #[test]
    fn quoting_keeps_every_value_a_string() {
        assert_eq!(q("52:54:00:00:00:01"), "\"52:54:00:00:00:01\"");
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&format!("a: {}\nb: {}", q("yes"), q_list(&["on", "1e3"])))
                .unwrap();
        assert_eq!(doc["a"].as_str(), Some("yes"));
        assert_eq!(doc["b"][1].as_str(), Some("1e3"));
    }

    #[test]
    fn the_target_file_parses_back_to_the_input() {
        let net: NetworkVars = serde_json::from_str(crate::EXAMPLE_NETWORK_JSON).unwrap();
        let m = Model::new(&net);
        let doc: serde_yaml::Value = serde_yaml::from_str(&target_file(&m)).unwrap();
        let n = &doc["network"];
        assert_eq!(n["version"].as_u64(), Some(2));
        let lan0 = &n["ethernets"]["lan0"];
        assert_eq!(
            lan0["match"]["macaddress"].as_str(),
            Some("52:54:00:00:00:01")
        );
        assert_eq!(lan0["set-name"].as_str(), Some("lan0"));
        assert_eq!(lan0["addresses"][0].as_str(), Some("10.0.0.11/24"));
        assert_eq!(lan0["routes"][0]["to"].as_str(), Some("default"));
        assert_eq!(lan0["routes"][0]["via"].as_str(), Some("10.0.0.1"));
        assert_eq!(
            lan0["nameservers"]["addresses"][1].as_str(),
            Some("10.0.0.2")
        );
        assert_eq!(
            lan0["nameservers"]["search"][0].as_str(),
            Some("rack1.example.com")
        );
        let eno4 = &n["ethernets"]["eno4"];
        assert!(eno4.get("match").is_none(), "named NICs are not matched");
        assert_eq!(eno4["dhcp4"].as_bool(), Some(true));
        assert_eq!(eno4["mtu"].as_u64(), Some(9000));
        assert!(n["ethernets"]["lan2"].get("dhcp4").is_none());
        let bond = &n["bonds"]["bond0"];
        assert_eq!(bond["interfaces"][1].as_str(), Some("lan3"));
        assert_eq!(bond["parameters"]["mode"].as_str(), Some("802.3ad"));
        assert_eq!(n["vlans"]["bond0.100"]["link"].as_str(), Some("bond0"));
        assert_eq!(n["vlans"]["lan0.200"]["id"].as_u64(), Some(200));
        assert_eq!(n["vlans"]["lan0.200"]["link"].as_str(), Some("lan0"));
        let seed: serde_yaml::Value =
            serde_yaml::from_str(&body(&m, 0, DefaultRoute::Cidr)).unwrap();
        assert_eq!(
            seed["ethernets"]["lan0"]["routes"][0]["to"].as_str(),
            Some("0.0.0.0/0")
        );
    }
}
