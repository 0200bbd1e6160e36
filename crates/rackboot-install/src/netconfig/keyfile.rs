//! NetworkManager keyfiles (RHEL 8 and later):
//! `/etc/NetworkManager/system-connections/<name>.nmconnection`, mode 0600
//! (NetworkManager ignores keyfiles others can read). One connection per
//! addressed or unaddressed NIC, per bond port, per bond and per VLAN.
//!
//! - A NIC pinned by MAC binds its connection with `[ethernet] mac-address`
//!   (the kernel name stays whatever udev gives it; `lan<i>` is the
//!   connection's id); a named NIC with `interface-name`.
//! - Bond ports use `master=`/`slave-type=bond` (what RHEL 8's
//!   NetworkManager 1.40 understands; later releases read them too).
//! - A VLAN's `parent` is its parent connection's UUID, which works whether
//!   the parent is pinned by MAC or named.
//! - UUIDs are name-based (v5) on the FQDN and connection id, so a redeploy
//!   writes the same files.
//!
//! IPv4 as configured; IPv6 `auto` (NetworkManager's default) on addressed
//! interfaces and `disabled` on unaddressed ones (bond or VLAN carriers).

use uuid::Uuid;

use crate::vars::Ipv4Config;

use super::{Model, Parent, TargetFile};

/// Namespace of rackboot's connection UUIDs (a fixed random UUID).
const UUID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f3a52_2f0e_4c57_9d5e_7a1c0b9e4d21);

const DIR: &str = "/etc/NetworkManager/system-connections";

fn uuid(m: &Model, id: &str) -> String {
    Uuid::new_v5(&UUID_NAMESPACE, format!("{}/{id}", m.fqdn).as_bytes()).to_string()
}

/// A keyfile: `[group]` then `key=value` lines, every group given (an
/// ethernet connection needs its `[ethernet]` group even when empty). Values
/// are validated tokens (names, addresses, numbers): none needs GKeyFile
/// escaping.
fn keyfile(m: &Model, groups: &[(&str, Vec<(&str, String)>)]) -> String {
    let mut out = m.banner("#");
    for (name, entries) in groups {
        out.push_str(&format!("\n[{name}]\n"));
        for (key, value) in entries {
            out.push_str(&format!("{key}={value}\n"));
        }
    }
    out
}

fn ipv4_groups(m: &Model, cfg: &Ipv4Config) -> [(&'static str, Vec<(&'static str, String)>); 2] {
    let mut ipv4 = Vec::new();
    match cfg {
        Ipv4Config::None => ipv4.push(("method", "disabled".to_string())),
        Ipv4Config::Dhcp => ipv4.push(("method", "auto".to_string())),
        Ipv4Config::Static {
            address,
            prefix,
            gateway,
            dns,
        } => {
            ipv4.push(("method", "manual".to_string()));
            ipv4.push(("address1", format!("{address}/{prefix}")));
            if let Some(gw) = gateway {
                ipv4.push(("gateway", gw.to_string()));
            }
            if !dns.is_empty() {
                let list: String = dns.iter().map(|d| format!("{d};")).collect();
                ipv4.push(("dns", list));
                if let Some(domain) = m.search() {
                    ipv4.push(("dns-search", format!("{domain};")));
                }
            }
        }
    }
    let ipv6 = if cfg.is_configured() {
        "auto"
    } else {
        "disabled"
    };
    [("ipv4", ipv4), ("ipv6", vec![("method", ipv6.to_string())])]
}

fn mtu_entry(mtu: Option<u16>) -> Option<(&'static str, String)> {
    mtu.map(|m| ("mtu", m.to_string()))
}

pub(crate) fn connections(m: &Model) -> Vec<TargetFile> {
    let mut files = Vec::new();
    let mut write = |id: &str, content: String| {
        files.push(TargetFile::new(
            format!("{DIR}/{id}.nmconnection"),
            content,
            0o600,
        ))
    };
    for link in &m.links {
        let mut connection = vec![
            ("id", link.name.clone()),
            ("uuid", uuid(m, &link.name)),
            ("type", "ethernet".to_string()),
        ];
        if !link.pinned {
            connection.push(("interface-name", link.name.clone()));
        }
        let mut ethernet = Vec::new();
        if link.pinned {
            ethernet.push(("mac-address", link.mac.to_string()));
        }
        ethernet.extend(mtu_entry(link.mtu));
        let mut groups = Vec::new();
        match link.bond {
            Some(bond) => {
                connection.push(("master", bond.name.clone()));
                connection.push(("slave-type", "bond".to_string()));
                groups.push(("connection", connection));
                groups.push(("ethernet", ethernet));
            }
            None => {
                groups.push(("connection", connection));
                groups.push(("ethernet", ethernet));
                groups.extend(ipv4_groups(m, link.ipv4));
            }
        }
        write(&link.name, keyfile(m, &groups));
    }
    for bond in &m.bonds {
        let name = &bond.cfg.name;
        let mut groups = vec![
            (
                "connection",
                vec![
                    ("id", name.clone()),
                    ("uuid", uuid(m, name)),
                    ("type", "bond".to_string()),
                    ("interface-name", name.clone()),
                ],
            ),
            (
                "bond",
                vec![
                    ("mode", bond.cfg.mode.as_str().to_string()),
                    ("miimon", "100".to_string()),
                ],
            ),
        ];
        // Bonds and VLANs take their MTU from an optional ethernet group.
        if let Some(mtu) = mtu_entry(bond.cfg.mtu) {
            groups.push(("ethernet", vec![mtu]));
        }
        groups.extend(ipv4_groups(m, &bond.cfg.ipv4));
        write(name, keyfile(m, &groups));
    }
    for vlan in &m.vlans {
        let parent_id = match vlan.parent {
            Parent::Link(i) => &m.links[i].name,
            Parent::Bond(i) => &m.bonds[i].cfg.name,
        };
        let mut groups = vec![
            (
                "connection",
                vec![
                    ("id", vlan.name.clone()),
                    ("uuid", uuid(m, &vlan.name)),
                    ("type", "vlan".to_string()),
                    ("interface-name", vlan.name.clone()),
                ],
            ),
            (
                "vlan",
                vec![
                    ("id", vlan.cfg.id.to_string()),
                    ("parent", uuid(m, parent_id)),
                ],
            ),
        ];
        if let Some(mtu) = mtu_entry(vlan.cfg.mtu) {
            groups.push(("ethernet", vec![mtu]));
        }
        groups.extend(ipv4_groups(m, &vlan.cfg.ipv4));
        write(&vlan.name, keyfile(m, &groups));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vars::NetworkVars;

    #[test]
    fn connections_for_the_example() {
        let net: NetworkVars = serde_json::from_str(crate::EXAMPLE_NETWORK_JSON).unwrap();
        let m = Model::new(&net);
        let files = connections(&m);
        let names: Vec<&str> = files
            .iter()
            .map(|f| f.path.rsplit('/').next().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "lan0.nmconnection",
                "eno4.nmconnection",
                "lan2.nmconnection",
                "lan3.nmconnection",
                "bond0.nmconnection",
                "bond0.100.nmconnection",
                "lan0.200.nmconnection",
            ]
        );
        assert!(files.iter().all(|f| f.mode == 0o600));
        let get = |n: &str| &files.iter().find(|f| f.path.ends_with(n)).unwrap().content;
        assert!(
            get("/lan0.nmconnection").contains("\n[ethernet]\nmac-address=52:54:00:00:00:01\n")
        );
        assert!(get("/lan0.nmconnection").contains(
            "method=manual\naddress1=10.0.0.11/24\ngateway=10.0.0.1\ndns=10.0.0.1;10.0.0.2;\ndns-search=rack1.example.com;\n"
        ));
        assert!(get("/eno4.nmconnection").contains("interface-name=eno4\n"));
        assert!(!get("/eno4.nmconnection").contains("mac-address"));
        assert!(get("/lan2.nmconnection").contains("master=bond0\nslave-type=bond\n"));
        assert!(!get("/lan2.nmconnection").contains("[ipv4]"));
        // VLAN parents by connection UUID.
        let lan0_uuid = uuid(&m, "lan0");
        assert!(get("/lan0.200.nmconnection").contains(&format!("parent={lan0_uuid}\n")));
        assert!(
            get("/bond0.100.nmconnection").contains(&format!("parent={}\n", uuid(&m, "bond0")))
        );
        // Deterministic, distinct per connection and per machine.
        assert_eq!(uuid(&m, "lan0"), lan0_uuid);
        assert_ne!(uuid(&m, "lan1"), lan0_uuid);
        let mut other = net.clone();
        other.hostname = "node2".into();
        assert_ne!(uuid(&Model::new(&other), "lan0"), lan0_uuid);
    }
}
