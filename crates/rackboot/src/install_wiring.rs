//! What the boot side needs to know for installer-based installs that only
//! the binary can tell it: which subnets rackboot's own DHCP serves and what
//! it offers on them (router, DNS, NTP), so installers on a network without
//! them are told not to wait for them.

use rackboot_boot::ServedSubnet;
use rackboot_dhcp::{DhcpConfig, DhcpMode};
use rackboot_install::InstallerNetwork;

/// The subnets of a full-mode `[dhcp]` section, as installers see them.
/// Empty for ProxyDHCP (the network's own DHCP server decides, unseen) and
/// without DHCP; a section that does not compile serves nothing (serve's
/// preflight refuses it before this is asked).
pub fn served_subnets(dhcp: Option<&DhcpConfig>) -> Vec<ServedSubnet> {
    let Some(dhcp) = dhcp.filter(|d| d.mode == DhcpMode::Full) else {
        return Vec::new();
    };
    dhcp.compile()
        .map(|subnets| {
            subnets
                .into_iter()
                .map(|s| ServedSubnet {
                    network: s.network,
                    prefix: s.prefix,
                    offer: InstallerNetwork {
                        router: s.router,
                        dns: s.dns,
                        ntp: s.ntp,
                    },
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackboot_dhcp::SubnetConfig;

    #[test]
    fn full_mode_subnets_with_what_they_offer() {
        let mut lab = SubnetConfig::new("10.77.0.0/24");
        lab.ranges = vec!["10.77.0.100-10.77.0.150".into()];
        let mut routed = SubnetConfig::new("10.1.0.0/16");
        routed.ranges = vec!["10.1.0.100-10.1.0.200".into()];
        routed.router = Some([10, 1, 0, 1].into());
        routed.dns = vec![[10, 1, 0, 2].into()];
        let dhcp = DhcpConfig {
            subnets: vec![lab, routed],
            ..DhcpConfig::default()
        };
        let served = served_subnets(Some(&dhcp));
        assert_eq!(served.len(), 2);
        assert_eq!(served[0].offer, InstallerNetwork::default());
        assert!(served[0].contains([10, 77, 0, 120].into()));
        assert!(!served[0].contains([10, 78, 0, 1].into()));
        assert_eq!(served[1].offer.router, Some([10, 1, 0, 1].into()));
        assert_eq!(served[1].offer.dns, [std::net::Ipv4Addr::new(10, 1, 0, 2)]);
        assert!(served_subnets(Some(&DhcpConfig::proxy())).is_empty());
        assert!(served_subnets(None).is_empty());
    }
}
