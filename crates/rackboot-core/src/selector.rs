//! Selectors map machines to profiles. Matching is a pure, deterministic function:
//! every key of a selector must match; the selector with the most keys wins; ties go
//! to the lexically smallest selector name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::fact_match::FactMatch;
use crate::{MacAddr, Machine, machine::validate_name};

/// `match` keys: `mac`, `uuid`, `arch` (bios, uefi_x64, uefi_arm64...), `name`,
/// `label.KEY`, and `fact.KEY` on the inspected facts (`fact.memory_gib: ">=60"`,
/// `fact.disks: "2"`, `fact.cpu_model: "*Xeon*"`; see [`crate::fact_match`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Selector {
    pub name: String,
    /// Profile booted by machines this selector matches.
    pub profile: String,
    /// All must match. An empty map matches every machine (a fleet default).
    #[serde(rename = "match", default)]
    pub matches: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("{0}")]
    Name(String),
    #[error("unknown selector key {0:?}: use mac, uuid, arch, name, label.KEY or fact.KEY")]
    UnknownKey(String),
    #[error("selector key {key:?} has invalid value {value:?}: {why}")]
    BadValue {
        key: String,
        value: String,
        why: String,
    },
}

impl Selector {
    pub fn validate(&self) -> Result<(), SelectorError> {
        validate_name("selector name", &self.name).map_err(SelectorError::Name)?;
        validate_name("profile name", &self.profile).map_err(SelectorError::Name)?;
        for (key, value) in &self.matches {
            let bad = |why: &str| SelectorError::BadValue {
                key: key.clone(),
                value: value.clone(),
                why: why.to_string(),
            };
            match key.as_str() {
                "mac" => {
                    value.parse::<MacAddr>().map_err(|e| bad(&e.to_string()))?;
                }
                "uuid" => {
                    value
                        .parse::<uuid::Uuid>()
                        .map_err(|e| bad(&e.to_string()))?;
                }
                "arch" => {
                    crate::Arch::parse(value)
                        .ok_or_else(|| bad("expected bios, uefi_x64, uefi_ia32 or uefi_arm64"))?;
                }
                "name" => {}
                k if k.strip_prefix("label.").is_some_and(|l| !l.is_empty()) => {}
                k if k.starts_with("fact.") => {
                    FactMatch::parse(&k["fact.".len()..], value).map_err(|why| bad(&why))?;
                }
                other => return Err(SelectorError::UnknownKey(other.to_string())),
            }
        }
        Ok(())
    }

    /// True when every key matches `machine`.
    pub fn matches(&self, machine: &Machine) -> bool {
        self.matches.iter().all(|(key, want)| match key.as_str() {
            "mac" => want
                .parse::<MacAddr>()
                .is_ok_and(|m| machine.macs.contains(&m)),
            "uuid" => want
                .parse::<uuid::Uuid>()
                .is_ok_and(|u| machine.uuid == Some(u)),
            "arch" => machine.arch.is_some_and(|a| a.as_str() == *want),
            "name" => machine.name == *want,
            k => match (k.strip_prefix("label."), k.strip_prefix("fact.")) {
                (Some(label), _) => machine.labels.get(label) == Some(want),
                // A machine never inspected matches no fact condition.
                (_, Some(fact)) => match (&machine.facts, FactMatch::parse(fact, want)) {
                    (Some(facts), Ok(cond)) => cond.matches(facts),
                    _ => false,
                },
                _ => false,
            },
        })
    }
}

/// The most specific selector matching `machine`, if any.
pub fn select<'a>(selectors: &'a [Selector], machine: &Machine) -> Option<&'a Selector> {
    selectors
        .iter()
        .filter(|s| s.matches(machine))
        .min_by(|a, b| {
            b.matches
                .len()
                .cmp(&a.matches.len())
                .then_with(|| a.name.cmp(&b.name))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(name: &str, profile: &str, kv: &[(&str, &str)]) -> Selector {
        Selector {
            name: name.into(),
            profile: profile.into(),
            matches: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn most_specific_wins_then_name() {
        let mut m = Machine::discovered(
            "52:54:00:00:00:01".parse().unwrap(),
            None,
            Some(crate::Arch::Bios),
        );
        m.labels.insert("rack".into(), "r1".into());
        let selectors = vec![
            sel("default", "p-default", &[]),
            sel("rack", "p-rack", &[("label.rack", "r1")]),
            sel(
                "rack-bios",
                "p-rack-bios",
                &[("label.rack", "r1"), ("arch", "bios")],
            ),
            sel(
                "a-rack-bios",
                "p-a",
                &[("label.rack", "r1"), ("arch", "bios")],
            ),
            sel(
                "other",
                "p-other",
                &[("label.rack", "r2"), ("arch", "bios"), ("name", "x")],
            ),
        ];
        assert_eq!(select(&selectors, &m).unwrap().name, "a-rack-bios");
        // Order of the list does not matter.
        let mut rev = selectors.clone();
        rev.reverse();
        assert_eq!(select(&rev, &m).unwrap().name, "a-rack-bios");
        m.labels.insert("rack".into(), "r9".into());
        assert_eq!(select(&selectors, &m).unwrap().name, "default");
    }

    #[test]
    fn facts_select_a_profile_once_a_machine_is_inspected() {
        let mut m = Machine::discovered("52:54:00:00:00:02".parse().unwrap(), None, None);
        let selectors = vec![
            sel("default", "small", &[]),
            sel(
                "big-two-disks",
                "raid1",
                &[("fact.disks", "2"), ("fact.memory_gib", ">=60")],
            ),
        ];
        // Not inspected yet: no fact condition holds.
        assert_eq!(select(&selectors, &m).unwrap().profile, "small");
        let disk = |gib: u64| rackboot_agent_proto::facts::DiskFacts {
            size_bytes: gib << 30,
            ..Default::default()
        };
        m.facts = Some(crate::Facts {
            memory_bytes: 64 << 30,
            disks: vec![disk(100), disk(100)],
            ..Default::default()
        });
        assert_eq!(select(&selectors, &m).unwrap().profile, "raid1");
        m.facts.as_mut().unwrap().disks.pop();
        assert_eq!(select(&selectors, &m).unwrap().profile, "small");
    }

    #[test]
    fn validation_names_the_key() {
        let err = sel("s", "p", &[("fact.memory_gib", "lots")])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fact.memory_gib") && err.contains("expected a number"),
            "{err}"
        );
        assert!(sel("s", "p", &[("fact.nope", "1")]).validate().is_err());
        assert_eq!(
            sel("s", "p", &[("colour", "red")]).validate(),
            Err(SelectorError::UnknownKey("colour".into()))
        );
        assert!(sel("s", "p", &[("mac", "zz")]).validate().is_err());
        assert!(
            sel("s", "p", &[("label.rack", "r1"), ("arch", "uefi_x64")])
                .validate()
                .is_ok()
        );
    }
}
