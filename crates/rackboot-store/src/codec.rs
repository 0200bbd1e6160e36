//! Conversions between domain values and column values shared by both backends.
//! Decoding failures become [`StoreError::Corrupt`] naming the table and value.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, Utc};
use rackboot_core::{
    Arch, BootIntent, DeliveryState, EventKind, LeaseState, LoaderKind, MacAddr, ProvisionState,
    Workflow,
};

use crate::{Result, StoreError};

fn corrupt(table: &'static str, detail: String) -> StoreError {
    StoreError::Corrupt { table, detail }
}

pub fn json_text<T: serde::Serialize>(value: &T) -> String {
    // Maps of strings, enums of plain data and serde_json::Value cannot fail to serialise.
    serde_json::to_string(value).expect("domain values serialise to JSON")
}

pub fn json_value<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("domain values serialise to JSON")
}

pub fn parse_json<T: serde::de::DeserializeOwned>(
    table: &'static str,
    column: &str,
    text: &str,
) -> Result<T> {
    serde_json::from_str(text).map_err(|e| corrupt(table, format!("{column} {text:?}: {e}")))
}

pub fn from_json_value<T: serde::de::DeserializeOwned>(
    table: &'static str,
    column: &str,
    value: serde_json::Value,
) -> Result<T> {
    serde_json::from_value(value.clone())
        .map_err(|e| corrupt(table, format!("{column} {value}: {e}")))
}

pub fn labels(table: &'static str, text: &str) -> Result<BTreeMap<String, String>> {
    parse_json(table, "labels", text)
}

pub fn intent(table: &'static str, text: &str) -> Result<BootIntent> {
    parse_json(table, "intent", text)
}

pub fn uuid(table: &'static str, column: &str, text: &str) -> Result<uuid::Uuid> {
    text.parse()
        .map_err(|e| corrupt(table, format!("{column} {text:?}: {e}")))
}

pub fn mac(table: &'static str, text: &str) -> Result<MacAddr> {
    text.parse()
        .map_err(|e| corrupt(table, format!("mac {text:?}: {e}")))
}

pub fn arch(table: &'static str, text: &str) -> Result<Arch> {
    Arch::parse(text).ok_or_else(|| corrupt(table, format!("unknown arch {text:?}")))
}

pub fn lease_state(text: &str) -> Result<LeaseState> {
    LeaseState::parse(text).ok_or_else(|| corrupt("leases", format!("unknown state {text:?}")))
}

pub fn event_kind(text: &str) -> Result<EventKind> {
    EventKind::parse(text).ok_or_else(|| corrupt("events", format!("unknown kind {text:?}")))
}

pub fn event_kind_in(table: &'static str, text: &str) -> Result<EventKind> {
    EventKind::parse(text).ok_or_else(|| corrupt(table, format!("unknown event kind {text:?}")))
}

pub fn provision_state(table: &'static str, column: &str, text: &str) -> Result<ProvisionState> {
    ProvisionState::parse(text).ok_or_else(|| corrupt(table, format!("unknown {column} {text:?}")))
}

pub fn delivery_state(text: &str) -> Result<DeliveryState> {
    DeliveryState::parse(text)
        .ok_or_else(|| corrupt("deliveries", format!("unknown state {text:?}")))
}

/// A workflow's JSON body; the message names the workflow, not the (long) body.
pub fn workflow_body(id: &str, text: &str) -> Result<Workflow> {
    serde_json::from_str(text).map_err(|e| corrupt("workflows", format!("body of {id}: {e}")))
}

/// An integer column into its domain type (attempt counts, HTTP statuses).
pub fn int<T: TryFrom<i64>>(table: &'static str, column: &str, value: i64) -> Result<T> {
    T::try_from(value).map_err(|_| corrupt(table, format!("{column} {value} out of range")))
}

pub fn ip(table: &'static str, column: &str, text: &str) -> Result<IpAddr> {
    text.parse()
        .map_err(|e| corrupt(table, format!("{column} {text:?}: {e}")))
}

pub fn ipv4(table: &'static str, text: &str) -> Result<Ipv4Addr> {
    text.parse()
        .map_err(|e| corrupt(table, format!("ip {text:?}: {e}")))
}

pub fn loader_text(loader: LoaderKind) -> &'static str {
    match loader {
        LoaderKind::Ipxe => "ipxe",
        LoaderKind::Pxelinux => "pxelinux",
        LoaderKind::Grub => "grub",
        LoaderKind::Shim => "shim",
    }
}

pub fn loader(text: &str) -> Result<LoaderKind> {
    Ok(match text {
        "ipxe" => LoaderKind::Ipxe,
        "pxelinux" => LoaderKind::Pxelinux,
        "grub" => LoaderKind::Grub,
        "shim" => LoaderKind::Shim,
        other => return Err(corrupt("profiles", format!("unknown loader {other:?}"))),
    })
}

/// Unix milliseconds, the SQLite representation; sub-millisecond digits are dropped.
pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(table: &'static str, ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| corrupt(table, format!("timestamp {ms} ms out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_names_match_serde() {
        for l in [
            LoaderKind::Ipxe,
            LoaderKind::Pxelinux,
            LoaderKind::Grub,
            LoaderKind::Shim,
        ] {
            assert_eq!(serde_json::to_value(l).unwrap(), loader_text(l));
            assert_eq!(loader(loader_text(l)).unwrap(), l);
        }
        assert!(matches!(
            loader("lilo"),
            Err(StoreError::Corrupt {
                table: "profiles",
                ..
            })
        ));
    }

    #[test]
    fn millis_round_trip_and_negative_times() {
        let t = DateTime::from_timestamp_millis(-1_500).unwrap();
        assert_eq!(from_millis("t", millis(t)).unwrap(), t);
        assert!(from_millis("t", i64::MAX).is_err());
    }
}
