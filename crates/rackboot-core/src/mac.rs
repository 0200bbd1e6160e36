//! Ethernet MAC address with the textual forms operators type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet MAC address. Displays as `52:54:00:12:34:56`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid MAC address {0:?}: expected six hex octets like 52:54:00:12:34:56")]
pub struct ParseMacError(pub String);

impl MacAddr {
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// From a chaddr field (first six bytes); `None` when shorter than six.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let b: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(MacAddr(b))
    }

    /// pxelinux's per-MAC config name: `01-52-54-00-12-34-56` (ARP type 1, dashes, lower case).
    pub fn pxelinux_name(&self) -> String {
        format!("01-{}", self.dashed())
    }

    /// `52-54-00-12-34-56`.
    pub fn dashed(&self) -> String {
        self.to_string().replace(':', "-")
    }

    /// Refuses addresses no NIC boots with: all zeros, broadcast, and
    /// multicast (the group bit of the first octet). Operators' input only:
    /// what arrives on the wire is taken as it is.
    pub fn check_assignable(&self) -> Result<(), String> {
        if self.0 == [0; 6] {
            return Err(format!("{self} is the all-zero address, not a NIC's"));
        }
        if self.0 == [0xff; 6] {
            return Err(format!("{self} is the broadcast address, not a NIC's"));
        }
        if self.0[0] & 1 == 1 {
            return Err(format!(
                "{self} is a multicast address (first octet odd), not a NIC's"
            ));
        }
        Ok(())
    }

    /// `525400123456`, used in generated machine names.
    pub fn compact(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for MacAddr {
    /// `52:54:00:12:34:56`. Written by hand: a MAC is formatted several times per
    /// DHCP exchange (event text, lease rows), and six `{:02x}` cost ten times more.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b':'; 17];
        for (i, byte) in self.0.iter().enumerate() {
            text[3 * i] = HEX[usize::from(byte >> 4)];
            text[3 * i + 1] = HEX[usize::from(byte & 0xf)];
        }
        // Only ASCII hex digits and colons were written.
        f.pad(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Accepts `52:54:00:12:34:56`, `52-54-00-12-34-56`, `5254.0012.3456` and `525400123456`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let hex: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(err());
        }
        // Separators, when present, must split the address into even groups.
        let seps = s
            .trim()
            .chars()
            .filter(|c| matches!(c, ':' | '-' | '.'))
            .count();
        if !matches!(seps, 0 | 2 | 5) {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).map_err(|_| err())?;
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for MacAddr {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .examples(["52:54:00:12:34:56"])
            .into()
    }
}

impl utoipa::ToSchema for MacAddr {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_forms() {
        let want = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        for s in [
            "52:54:00:12:34:56",
            "52-54-00-12-34-56",
            "5254.0012.3456",
            "525400123456",
            "52:54:00:12:34:56 ",
            "52:54:00:12:34:56".to_uppercase().as_str(),
        ] {
            assert_eq!(s.parse::<MacAddr>(), Ok(want), "{s}");
        }
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:5g",
            "5:2:54:00:12:34:56",
            "52:54:00:12:34:56:78",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_unicast_addresses_are_assignable() {
        for ok in [
            "52:54:00:12:34:56",
            "00:00:00:00:00:01",
            "fe:ff:ff:ff:ff:ff",
        ] {
            assert_eq!(
                ok.parse::<MacAddr>().unwrap().check_assignable(),
                Ok(()),
                "{ok}"
            );
        }
        for (bad, why) in [
            ("00:00:00:00:00:00", "all-zero"),
            ("ff:ff:ff:ff:ff:ff", "broadcast"),
            ("01:00:5e:00:00:01", "multicast"),
            ("33:33:00:00:00:01", "multicast"),
        ] {
            let err = bad
                .parse::<MacAddr>()
                .unwrap()
                .check_assignable()
                .unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn pxelinux_name() {
        let m: MacAddr = "52:54:00:AB:cd:01".parse().unwrap();
        assert_eq!(m.pxelinux_name(), "01-52-54-00-ab-cd-01");
        assert_eq!(m.compact(), "525400abcd01");
    }

    #[test]
    fn displays_lowercase_colon_form() {
        for (bytes, text) in [
            ([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef], "52:54:00:ab:cd:ef"),
            ([0; 6], "00:00:00:00:00:00"),
            ([0xff; 6], "ff:ff:ff:ff:ff:ff"),
            ([0x0f, 0xf0, 0x01, 0x10, 0x9a, 0xa9], "0f:f0:01:10:9a:a9"),
        ] {
            let mac = MacAddr(bytes);
            assert_eq!(mac.to_string(), text);
            assert_eq!(text.parse::<MacAddr>().unwrap(), mac);
        }
        assert_eq!(
            format!("[{:>19}]", MacAddr([1; 6])),
            "[  01:01:01:01:01:01]"
        );
    }
}
