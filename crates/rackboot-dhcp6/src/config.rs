//! The `[dhcp6]` section as operators write it, and its validated form.

use std::collections::HashSet;
use std::net::Ipv6Addr;

use rackboot_core::MacAddr;
use serde::{Deserialize, Serialize};

/// The `[dhcp6]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dhcp6Config {
    /// Prefixes served: the link's own (contains one of the server's addresses on
    /// the interface) and any behind relays (contain the relay's link address).
    #[serde(default)]
    pub subnets: Vec<Subnet6Config>,
    /// Answer a Solicit that asks for Rapid Commit with a Reply (two messages
    /// instead of four). Default true.
    #[serde(default = "default_true")]
    pub rapid_commit: bool,
    /// Preference option in Advertise (0-255; 255 makes clients take it at once). Default 255.
    #[serde(default = "default_preference")]
    pub preference: u8,
    /// How long an advertised address is held for the client's Request. Default 60 s.
    #[serde(default = "default_offer_hold")]
    pub offer_hold_secs: u32,
    /// How long a declined address stays out of the pool. Default 600 s.
    #[serde(default = "default_decline_hold")]
    pub decline_hold_secs: u32,
    /// Group commit window (as `[dhcp] commit_window_ms`). Default 10.
    #[serde(default = "default_commit_window")]
    pub commit_window_ms: u32,
    /// Router advertisements on the interface when no other router is heard.
    #[serde(default)]
    pub router_advertisements: RaConfig,
}

/// Router advertisements (RFC 4861) from rackboot itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RaConfig {
    /// Send them (while no other router advertises on the link). Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds between unsolicited advertisements (solicitations are answered at
    /// once). 4-1800. Default 60.
    #[serde(default = "default_ra_interval")]
    pub interval_secs: u32,
    /// Also set the A flag on the local prefix, so hosts add SLAAC addresses
    /// beside their DHCPv6 one. Default false (stateful only).
    #[serde(default)]
    pub autonomous: bool,
    /// Router lifetime of the advertisements: above 0, hosts take rackboot
    /// for the link's default router. rackboot forwards nothing, so off-link
    /// traffic goes nowhere, but UEFI PXE over IPv6 (EDK2's PxeBc) waits 10 s
    /// for a default router before it fetches its loader; 0 (the default)
    /// announces no router.
    #[serde(default)]
    pub router_lifetime_secs: u16,
}

impl Default for RaConfig {
    fn default() -> Self {
        RaConfig {
            enabled: true,
            interval_secs: default_ra_interval(),
            autonomous: false,
            router_lifetime_secs: 0,
        }
    }
}

impl Default for Dhcp6Config {
    fn default() -> Self {
        Dhcp6Config {
            subnets: Vec::new(),
            rapid_commit: true,
            preference: default_preference(),
            offer_hold_secs: default_offer_hold(),
            decline_hold_secs: default_decline_hold(),
            commit_window_ms: default_commit_window(),
            router_advertisements: RaConfig::default(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_preference() -> u8 {
    255
}
fn default_offer_hold() -> u32 {
    60
}
fn default_decline_hold() -> u32 {
    600
}
fn default_commit_window() -> u32 {
    10
}
fn default_ra_interval() -> u32 {
    60
}
fn default_preferred() -> u32 {
    3600
}
fn default_valid() -> u32 {
    7200
}

/// One prefix.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Subnet6Config {
    /// Name recorded on leases. Default: the prefix.
    #[serde(default)]
    pub name: Option<String>,
    /// `2001:db8:77::/64`.
    pub prefix: String,
    /// Dynamic pool: `"2001:db8:77::100-2001:db8:77::1ff"`, inside `prefix`.
    #[serde(default)]
    pub ranges: Vec<String>,
    /// Option 23.
    #[serde(default)]
    pub dns: Vec<Ipv6Addr>,
    /// Preferred lifetime of addresses (T1 is half of it, T2 four fifths). Default 3600.
    #[serde(default = "default_preferred")]
    pub preferred_lifetime_secs: u32,
    /// Valid lifetime, at least the preferred one. Default 7200.
    #[serde(default = "default_valid")]
    pub valid_lifetime_secs: u32,
    /// Fixed addresses by DUID and/or MAC.
    #[serde(default)]
    pub reservations: Vec<Reservation6Config>,
}

/// A fixed address for the client with this DUID (hex, `:` allowed) or this MAC
/// (from its DUID-LL/LLT, the relay's RFC 6939 option, or its EUI-64 link-local
/// address). Give one or both; the DUID wins when a client matches both ways.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation6Config {
    #[serde(default)]
    pub duid: Option<String>,
    #[serde(default)]
    pub mac: Option<MacAddr>,
    pub ip: Ipv6Addr,
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Config6Error {
    #[error(
        "subnet {subnet}: invalid prefix {prefix:?}: expected ADDRESS/LENGTH like 2001:db8:77::/64"
    )]
    Prefix { subnet: String, prefix: String },
    #[error("subnet {subnet}: invalid range {range:?}: {why}")]
    Range {
        subnet: String,
        range: String,
        why: String,
    },
    #[error("subnet {subnet}: reservation {ip}: {why}")]
    Reservation {
        subnet: String,
        ip: Ipv6Addr,
        why: String,
    },
    #[error(
        "subnet {subnet}: valid_lifetime_secs must be at least preferred_lifetime_secs, and preferred at least 10"
    )]
    Lifetimes { subnet: String },
    #[error("subnets {a} and {b} overlap")]
    Overlap { a: String, b: String },
    #[error("subnet names must be unique: {0} is used twice")]
    DuplicateName(String),
    #[error("router_advertisements.interval_secs must be 4 to 1800")]
    RaInterval,
    #[error("[dhcp6] needs at least one subnet")]
    NoSubnets,
}

/// A validated subnet. Addresses are handled as `u128`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet6 {
    pub name: String,
    pub prefix: Ipv6Addr,
    pub prefix_len: u8,
    /// Inclusive (first, last) pairs.
    pub ranges: Vec<(u128, u128)>,
    pub dns: Vec<Ipv6Addr>,
    pub preferred_secs: u32,
    pub valid_secs: u32,
    pub reservations: Vec<Reservation6>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation6 {
    /// Lowercase hex.
    pub duid: Option<String>,
    pub mac: Option<MacAddr>,
    pub ip: Ipv6Addr,
    pub hostname: Option<String>,
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl Subnet6 {
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & mask(self.prefix_len) == u128::from(self.prefix)
    }
    pub fn in_pool(&self, ip: Ipv6Addr) -> bool {
        let v = u128::from(ip);
        self.ranges.iter().any(|(a, b)| *a <= v && v <= *b)
    }
    /// Addresses in the pool (saturating: a /64 range is more than anyone leases).
    pub fn pool_size(&self) -> u128 {
        self.ranges
            .iter()
            .fold(0u128, |n, (a, b)| n.saturating_add(b - a).saturating_add(1))
    }
    /// The `n`th pool address, in range order.
    pub fn nth(&self, mut n: u128) -> Option<Ipv6Addr> {
        for (a, b) in &self.ranges {
            let size = b - a;
            if n <= size {
                return Some(Ipv6Addr::from(a + n));
            }
            n -= size + 1;
        }
        None
    }
    /// T1 and T2 (RFC 8415 21.4 recommends 0.5 and 0.8 of the preferred lifetime).
    pub fn t1_t2(&self) -> (u32, u32) {
        (self.preferred_secs / 2, self.preferred_secs / 5 * 4)
    }
}

fn parse_prefix(s: &str) -> Option<(Ipv6Addr, u8)> {
    let (ip, len) = s.trim().split_once('/')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= 128 && u128::from(ip) & !mask(len) == 0).then_some((ip, len))
}

/// Lowercase hex without separators, or `None` when `s` is not hex pairs.
pub fn normalize_duid(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':' && *c != '-' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    (!hex.is_empty() && hex.len().is_multiple_of(2) && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then_some(hex)
}

impl Dhcp6Config {
    /// Checks everything and compiles the subnets.
    pub fn compile(&self) -> Result<Vec<Subnet6>, Config6Error> {
        if self.subnets.is_empty() {
            return Err(Config6Error::NoSubnets);
        }
        if !(4..=1800).contains(&self.router_advertisements.interval_secs) {
            return Err(Config6Error::RaInterval);
        }
        let mut out: Vec<Subnet6> = Vec::new();
        let mut names = HashSet::new();
        let (mut duids, mut macs, mut ips) = (HashSet::new(), HashSet::new(), HashSet::new());
        for sc in &self.subnets {
            let name = sc.name.clone().unwrap_or_else(|| sc.prefix.clone());
            if !names.insert(name.clone()) {
                return Err(Config6Error::DuplicateName(name));
            }
            let (prefix, prefix_len) =
                parse_prefix(&sc.prefix).ok_or_else(|| Config6Error::Prefix {
                    subnet: name.clone(),
                    prefix: sc.prefix.clone(),
                })?;
            if sc.preferred_lifetime_secs < 10
                || sc.valid_lifetime_secs < sc.preferred_lifetime_secs
            {
                return Err(Config6Error::Lifetimes { subnet: name });
            }
            let mut subnet = Subnet6 {
                name: name.clone(),
                prefix,
                prefix_len,
                ranges: Vec::new(),
                dns: sc.dns.clone(),
                preferred_secs: sc.preferred_lifetime_secs,
                valid_secs: sc.valid_lifetime_secs,
                reservations: Vec::new(),
            };
            for r in &sc.ranges {
                let bad = |why: &str| Config6Error::Range {
                    subnet: name.clone(),
                    range: r.clone(),
                    why: why.to_string(),
                };
                let (a, b) = r.split_once('-').ok_or_else(|| {
                    bad("expected FIRST-LAST like 2001:db8:77::100-2001:db8:77::1ff")
                })?;
                let a: Ipv6Addr = a
                    .trim()
                    .parse()
                    .map_err(|_| bad("first is not an IPv6 address"))?;
                let b: Ipv6Addr = b
                    .trim()
                    .parse()
                    .map_err(|_| bad("last is not an IPv6 address"))?;
                if a > b {
                    return Err(bad("first is after last"));
                }
                if !subnet.contains(a) || !subnet.contains(b) {
                    return Err(bad("outside the prefix"));
                }
                if a == prefix {
                    return Err(bad(
                        "includes the subnet-router anycast address (the prefix itself)",
                    ));
                }
                let (a, b) = (u128::from(a), u128::from(b));
                if subnet.ranges.iter().any(|(x, y)| a <= *y && *x <= b) {
                    return Err(bad("overlaps another range"));
                }
                subnet.ranges.push((a, b));
            }
            for rc in &sc.reservations {
                let bad = |why: String| Config6Error::Reservation {
                    subnet: name.clone(),
                    ip: rc.ip,
                    why,
                };
                if !subnet.contains(rc.ip) {
                    return Err(bad("outside the prefix".into()));
                }
                let duid = match &rc.duid {
                    Some(d) => Some(
                        normalize_duid(d).ok_or_else(|| bad(format!("duid {d:?} is not hex")))?,
                    ),
                    None => None,
                };
                if duid.is_none() && rc.mac.is_none() {
                    return Err(bad("give a duid, a mac or both".into()));
                }
                if let Some(d) = &duid
                    && !duids.insert(d.clone())
                {
                    return Err(bad(format!("duid {d} is reserved twice")));
                }
                if let Some(m) = rc.mac
                    && !macs.insert(m)
                {
                    return Err(bad(format!("MAC {m} is reserved twice")));
                }
                if !ips.insert(rc.ip) {
                    return Err(bad("address reserved twice".into()));
                }
                subnet.reservations.push(Reservation6 {
                    duid,
                    mac: rc.mac,
                    ip: rc.ip,
                    hostname: rc.hostname.clone(),
                });
            }
            for other in &out {
                if other.contains(subnet.prefix) || subnet.contains(other.prefix) {
                    return Err(Config6Error::Overlap {
                        a: other.name.clone(),
                        b: subnet.name.clone(),
                    });
                }
            }
            out.push(subnet);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Dhcp6Config {
        toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn example_compiles() {
        let cfg = parse(
            r#"
            rapid_commit = false
            router_advertisements = { interval_secs = 30, autonomous = true, router_lifetime_secs = 1800 }
            [[subnets]]
            name = "prov6"
            prefix = "2001:db8:77::/64"
            ranges = ["2001:db8:77::100-2001:db8:77::1ff", "2001:db8:77::1:0-2001:db8:77::1:ffff"]
            dns = ["2001:db8:77::53"]
            preferred_lifetime_secs = 1800
            valid_lifetime_secs = 3600
            reservations = [
              { duid = "00:01:00:01:32:a9:58:42:52:54:00:66:00:01", ip = "2001:db8:77::10", hostname = "n1" },
              { mac = "52:54:00:bb:00:02", ip = "2001:db8:77::11" },
            ]
            "#,
        );
        assert_eq!(cfg.router_advertisements.router_lifetime_secs, 1800);
        let s = &cfg.compile().unwrap()[0];
        assert_eq!(s.pool_size(), 256 + 65536);
        let ra = crate::ra::advertisement(s, true, 1800, None);
        assert_eq!(ra.router_lifetime_secs, 1800);
        assert_eq!(s.nth(0), Some("2001:db8:77::100".parse().unwrap()));
        assert_eq!(s.nth(256), Some("2001:db8:77::1:0".parse().unwrap()));
        assert_eq!(s.nth(256 + 65536), None);
        assert_eq!(s.t1_t2(), (900, 1440));
        assert_eq!(
            s.reservations[0].duid.as_deref(),
            Some("0001000132a95842525400660001")
        );
        assert!(s.contains("2001:db8:77:0:ffff::1".parse().unwrap()));
        assert!(!s.contains("2001:db8:78::1".parse().unwrap()));
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let subnet = "[[subnets]]\nprefix = \"2001:db8::/64\"\n";
        let cases = [
            ("", "at least one subnet"),
            ("[[subnets]]\nprefix = \"2001:db8::1/64\"", "invalid prefix"),
            ("[[subnets]]\nprefix = \"2001:db8::/129\"", "invalid prefix"),
            (
                &format!("{subnet}ranges = [\"2001:db8::9-2001:db8::2\"]"),
                "first is after last",
            ),
            (
                &format!("{subnet}ranges = [\"2001:db8:1::1-2001:db8:1::2\"]"),
                "outside the prefix",
            ),
            (
                &format!("{subnet}ranges = [\"2001:db8::-2001:db8::2\"]"),
                "anycast",
            ),
            (
                &format!(
                    "{subnet}ranges = [\"2001:db8::1-2001:db8::20\", \"2001:db8::5-2001:db8::6\"]"
                ),
                "overlaps another range",
            ),
            (
                &format!("{subnet}reservations = [{{ ip = \"2001:db8::5\" }}]"),
                "a duid, a mac",
            ),
            (
                &format!("{subnet}reservations = [{{ duid = \"xyz\", ip = \"2001:db8::5\" }}]"),
                "not hex",
            ),
            (
                &format!(
                    "{subnet}reservations = [{{ mac = \"52:54:00:00:00:01\", ip = \"2001:db8::5\" }}, {{ mac = \"52:54:00:00:00:01\", ip = \"2001:db8::6\" }}]"
                ),
                "reserved twice",
            ),
            (
                &format!("{subnet}preferred_lifetime_secs = 600\nvalid_lifetime_secs = 300"),
                "valid_lifetime_secs",
            ),
            (
                &format!("{subnet}[[subnets]]\nprefix = \"2001:db8::/48\""),
                "overlap",
            ),
            (
                &format!("router_advertisements = {{ interval_secs = 2 }}\n{subnet}"),
                "interval_secs",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).compile().unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        let e =
            toml::from_str::<Dhcp6Config>("[[subnets]]\nprefix = \"x\"\nrange = 1").unwrap_err();
        assert!(e.to_string().contains("unknown field `range`"), "{e}");
    }
}
