//! Conditions on a machine's inspected facts, as selectors use them:
//! `fact.memory_gib: ">=64"`, `fact.disks: "2"`, `fact.vendor: "Dell*"`.
//! Pure: a key and a condition are parsed once, then evaluated on [`Facts`].

use rackboot_agent_proto::Facts;
use rackboot_agent_proto::facts::BootMode as FirmwareMode;

const GIB: f64 = (1u64 << 30) as f64;

/// A fact a selector can test, with its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactKey {
    /// Usable memory (the kernel's MemTotal) in GiB: a little under what is
    /// installed (a 64 GiB machine shows about 62.7), so compare with `>=`.
    MemoryGib,
    CpuCores,
    CpuThreads,
    CpuSockets,
    CpuModel,
    CpuArch,
    /// Number of disks that can hold an OS.
    Disks,
    /// Disks that are not rotational (SSD, NVMe).
    Ssds,
    /// Rotational disks.
    Hdds,
    /// Size of the largest disk, GiB.
    LargestDiskGib,
    /// Size of the smallest disk, GiB.
    SmallestDiskGib,
    /// All disks together, GiB.
    TotalDiskGib,
    /// Physical NICs.
    Nics,
    /// Fastest NIC link speed, Mbit/s.
    NicSpeedMbps,
    Vendor,
    Product,
    Serial,
    /// `bios` or `uefi`.
    BootMode,
    /// `true` or `false` (unknown never matches).
    SecureBoot,
}

/// Every key, with its name in selectors (`fact.<name>`).
pub const FACT_KEYS: &[(&str, FactKey)] = &[
    ("memory_gib", FactKey::MemoryGib),
    ("cpu_cores", FactKey::CpuCores),
    ("cpu_threads", FactKey::CpuThreads),
    ("cpu_sockets", FactKey::CpuSockets),
    ("cpu_model", FactKey::CpuModel),
    ("cpu_arch", FactKey::CpuArch),
    ("disks", FactKey::Disks),
    ("ssds", FactKey::Ssds),
    ("hdds", FactKey::Hdds),
    ("largest_disk_gib", FactKey::LargestDiskGib),
    ("smallest_disk_gib", FactKey::SmallestDiskGib),
    ("total_disk_gib", FactKey::TotalDiskGib),
    ("nics", FactKey::Nics),
    ("nic_speed_mbps", FactKey::NicSpeedMbps),
    ("vendor", FactKey::Vendor),
    ("product", FactKey::Product),
    ("serial", FactKey::Serial),
    ("boot_mode", FactKey::BootMode),
    ("secure_boot", FactKey::SecureBoot),
];

impl FactKey {
    pub fn parse(name: &str) -> Option<FactKey> {
        FACT_KEYS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    }

    fn is_numeric(self) -> bool {
        use FactKey::*;
        matches!(
            self,
            MemoryGib
                | CpuCores
                | CpuThreads
                | CpuSockets
                | Disks
                | Ssds
                | Hdds
                | LargestDiskGib
                | SmallestDiskGib
                | TotalDiskGib
                | Nics
                | NicSpeedMbps
        )
    }

    fn value(self, f: &Facts) -> Option<FactValue> {
        use FactKey::*;
        let num = |x: f64| Some(FactValue::Number(x));
        let text = |s: Option<&str>| s.map(|s| FactValue::Text(s.to_string()));
        let sizes = || f.disks.iter().map(|d| d.size_bytes as f64 / GIB);
        match self {
            MemoryGib => num(f.memory_bytes as f64 / GIB),
            CpuCores => num(f.cpu.cores as f64),
            CpuThreads => num(f.cpu.threads as f64),
            CpuSockets => num(f.cpu.sockets as f64),
            CpuModel => text(Some(&f.cpu.model)),
            CpuArch => text(Some(&f.cpu.arch)),
            Disks => num(f.disks.len() as f64),
            Ssds => num(f.disks.iter().filter(|d| !d.rotational).count() as f64),
            Hdds => num(f.disks.iter().filter(|d| d.rotational).count() as f64),
            LargestDiskGib => sizes().reduce(f64::max).and_then(num),
            SmallestDiskGib => sizes().reduce(f64::min).and_then(num),
            TotalDiskGib => num(sizes().sum()),
            Nics => num(f.nics.len() as f64),
            NicSpeedMbps => f
                .nics
                .iter()
                .filter_map(|n| n.speed_mbps)
                .max()
                .and_then(|s| num(s as f64)),
            Vendor => text(f.dmi.vendor.as_deref()),
            Product => text(f.dmi.product.as_deref()),
            Serial => text(f.dmi.serial.as_deref()),
            BootMode => text(Some(match f.boot.mode {
                FirmwareMode::Bios => "bios",
                FirmwareMode::Uefi => "uefi",
            })),
            SecureBoot => f.boot.secure_boot.map(|b| FactValue::Text(b.to_string())),
        }
    }
}

enum FactValue {
    Number(f64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Compare {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

/// What a fact must be.
#[derive(Debug, Clone, PartialEq)]
pub enum FactCondition {
    /// `N`, `=N`, `>=N`, `>N`, `<=N`, `<N`.
    Number(Compare, f64),
    /// Exact text, or with `*` standing for any run of characters
    /// (`Intel(R) Xeon(R)*`); case-insensitive.
    Pattern(String),
}

/// A fact key and its condition, parsed from a selector's `fact.KEY: VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct FactMatch {
    pub key: FactKey,
    pub condition: FactCondition,
}

impl FactMatch {
    /// `key` is the part after `fact.`. Errors say what is wrong in words.
    pub fn parse(key: &str, value: &str) -> Result<FactMatch, String> {
        let fact = FactKey::parse(key).ok_or_else(|| {
            let names: Vec<&str> = FACT_KEYS.iter().map(|(n, _)| *n).collect();
            format!("unknown fact {key:?}: use one of {}", names.join(", "))
        })?;
        let value = value.trim();
        let condition = if fact.is_numeric() {
            let (op, rest) = [
                (">=", Compare::Ge),
                ("<=", Compare::Le),
                (">", Compare::Gt),
                ("<", Compare::Lt),
                ("=", Compare::Eq),
            ]
            .iter()
            .find_map(|(p, op)| value.strip_prefix(p).map(|r| (*op, r)))
            .unwrap_or((Compare::Eq, value));
            let n: f64 = rest
                .trim()
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| {
                    format!("expected a number, optionally after >=, >, <=, < or = (got {value:?})")
                })?;
            FactCondition::Number(op, n)
        } else {
            if value.is_empty() {
                return Err("expected text to match (`*` matches any run of characters)".into());
            }
            if fact == FactKey::BootMode && !matches!(value, "bios" | "uefi") {
                return Err("expected bios or uefi".into());
            }
            if fact == FactKey::SecureBoot && !matches!(value, "true" | "false") {
                return Err("expected true or false".into());
            }
            FactCondition::Pattern(value.to_string())
        };
        Ok(FactMatch {
            key: fact,
            condition,
        })
    }

    /// False when the fact is unknown (not inspected, or not reported).
    pub fn matches(&self, facts: &Facts) -> bool {
        match (self.key.value(facts), &self.condition) {
            (Some(FactValue::Number(have)), FactCondition::Number(op, want)) => {
                // Sizes in GiB are fractional: compare to a thousandth so
                // `=2` matches a disk of exactly 2 GiB.
                let (have, want) = ((have * 1000.0).round(), (want * 1000.0).round());
                match op {
                    Compare::Eq => have == want,
                    Compare::Ge => have >= want,
                    Compare::Gt => have > want,
                    Compare::Le => have <= want,
                    Compare::Lt => have < want,
                }
            }
            (Some(FactValue::Text(have)), FactCondition::Pattern(p)) => {
                wildcard_match(&p.to_lowercase(), &have.to_lowercase())
            }
            _ => false,
        }
    }
}

/// `*` matches any run of characters; everything else is literal.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackboot_agent_proto::facts::{DiskFacts, NicFacts};

    fn facts() -> Facts {
        let disk = |name: &str, gib: u64, rotational: bool| DiskFacts {
            name: name.into(),
            size_bytes: gib << 30,
            rotational,
            ..Default::default()
        };
        let mut f = Facts {
            memory_bytes: 67_309_436_928, // MemTotal of a 64 GiB machine: 62.7 GiB
            disks: vec![disk("sda", 480, false), disk("sdb", 4000, true)],
            nics: vec![
                NicFacts {
                    name: "eno1".into(),
                    speed_mbps: Some(25000),
                    ..Default::default()
                },
                NicFacts {
                    name: "eno2".into(),
                    speed_mbps: None,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        f.cpu.model = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz".into();
        f.cpu.cores = 32;
        f.cpu.arch = "x86_64".into();
        f.dmi.vendor = Some("Dell Inc.".into());
        f.boot.mode = FirmwareMode::Uefi;
        f
    }

    #[test]
    fn conditions_on_a_machine_s_facts() {
        let f = facts();
        let table: &[(&str, &str, bool)] = &[
            ("memory_gib", ">=60", true),
            ("memory_gib", ">=64", false),
            ("memory_gib", "<63", true),
            ("disks", "2", true),
            ("disks", "=2", true),
            ("disks", ">2", false),
            ("ssds", "1", true),
            ("hdds", ">=1", true),
            ("largest_disk_gib", ">=4000", true),
            ("smallest_disk_gib", "480", true),
            ("total_disk_gib", "4480", true),
            ("nics", "2", true),
            ("nic_speed_mbps", ">=25000", true),
            ("nic_speed_mbps", ">25000", false),
            ("cpu_cores", ">= 32", true),
            ("cpu_model", "*xeon*", true),
            ("cpu_model", "Intel(R) Xeon(R) Gold*", true),
            ("cpu_model", "*EPYC*", false),
            ("cpu_arch", "x86_64", true),
            ("vendor", "Dell*", true),
            ("vendor", "Dell", false),
            ("product", "*", false), // not reported: never matches
            ("boot_mode", "uefi", true),
            ("boot_mode", "bios", false),
            ("secure_boot", "false", false), // unknown
        ];
        for (key, value, want) in table {
            let m = FactMatch::parse(key, value).unwrap();
            assert_eq!(m.matches(&f), *want, "fact.{key}: {value:?}");
        }
    }

    #[test]
    fn bad_conditions_say_why() {
        let table: &[(&str, &str, &str)] = &[
            (
                "memory",
                "64",
                "unknown fact \"memory\": use one of memory_gib",
            ),
            ("memory_gib", "lots", "expected a number"),
            ("memory_gib", ">=", "expected a number"),
            ("disks", "=>2", "expected a number"),
            ("memory_gib", "inf", "expected a number"),
            ("boot_mode", "efi", "expected bios or uefi"),
            ("secure_boot", "yes", "expected true or false"),
            ("vendor", " ", "expected text"),
        ];
        for (key, value, want) in table {
            let err = FactMatch::parse(key, value).unwrap_err();
            assert!(err.contains(want), "fact.{key}: {value:?}: {err}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("a*c", "abc"));
        assert!(wildcard_match("a*c", "ac"));
        assert!(!wildcard_match("a*c", "a"));
        assert!(wildcard_match("*b*", "abc"));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxcyyb"));
        assert!(wildcard_match("*", ""));
    }
}
