//! BMC addresses: `ipmi://user:pass@host[:port]`, `redfish+https://host/redfish/v1/Systems/1`,
//! `fake://name`, and the target (address + credentials + TLS policy) a driver is built from.
//!
//! Passwords never leave through `Display` or `Debug`: both print the redacted form.

use std::fmt;
use std::str::FromStr;

use percent_encoding::percent_decode_str;

use crate::PowerError;

/// How to talk to a BMC; chosen by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BmcScheme {
    /// IPMI v2.0 over LAN (RMCP+), with the best backend available.
    Ipmi,
    /// IPMI through the `ipmitool` command, whatever else is available.
    Ipmitool,
    /// Redfish over plain HTTP.
    Redfish,
    /// Redfish over HTTPS.
    RedfishHttps,
    /// In-memory BMC for tests.
    Fake,
}

impl BmcScheme {
    pub const ALL: [BmcScheme; 5] = [
        BmcScheme::Ipmi,
        BmcScheme::Ipmitool,
        BmcScheme::Redfish,
        BmcScheme::RedfishHttps,
        BmcScheme::Fake,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            BmcScheme::Ipmi => "ipmi",
            BmcScheme::Ipmitool => "ipmitool",
            BmcScheme::Redfish => "redfish",
            BmcScheme::RedfishHttps => "redfish+https",
            BmcScheme::Fake => "fake",
        }
    }

    /// The port used when the URL names none.
    pub fn default_port(&self) -> Option<u16> {
        match self {
            BmcScheme::Ipmi | BmcScheme::Ipmitool => Some(623),
            BmcScheme::Redfish => Some(80),
            BmcScheme::RedfishHttps => Some(443),
            BmcScheme::Fake => None,
        }
    }

    fn is_ipmi(&self) -> bool {
        matches!(self, BmcScheme::Ipmi | BmcScheme::Ipmitool)
    }

    fn is_redfish(&self) -> bool {
        matches!(self, BmcScheme::Redfish | BmcScheme::RedfishHttps)
    }
}

/// A parsed BMC URL. Build it with `str::parse`.
#[derive(Clone, PartialEq, Eq)]
pub struct BmcUrl {
    scheme: BmcScheme,
    /// Host name or address; IPv6 without brackets. For `fake://` the fake BMC's name.
    host: String,
    port: Option<u16>,
    username: Option<String>,
    password: Option<String>,
    /// Redfish: the ComputerSystem path (`/redfish/v1/Systems/1`) when given.
    system_path: Option<String>,
    /// IPMI: RMCP+ cipher suite from `?cipher=N`.
    cipher_suite: Option<u8>,
}

fn invalid(msg: impl Into<String>) -> PowerError {
    PowerError::InvalidUrl(msg.into())
}

fn decode(part: &str, what: &str) -> Result<String, PowerError> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            invalid(format!(
                "the {what} is not valid UTF-8 once percent-decoded"
            ))
        })
}

impl FromStr for BmcUrl {
    type Err = PowerError;

    fn from_str(s: &str) -> Result<BmcUrl, PowerError> {
        let s = s.trim();
        let (scheme_str, rest) = s
            .split_once("://")
            .ok_or_else(|| invalid("missing '://' (expected e.g. ipmi://user:pass@host)"))?;
        let scheme = BmcScheme::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(scheme_str))
            .ok_or_else(|| {
                invalid(format!(
                    "unknown scheme '{scheme_str}' (expected ipmi, ipmitool, redfish, redfish+https or fake)"
                ))
            })?;

        // User info runs to the LAST '@': host names and paths never contain one, so a
        // password may hold raw '@', '/', '?' or ':' and still parse.
        let (userinfo, after_user) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let user = decode(user, "user name")?;
                if user.is_empty() {
                    return Err(invalid("empty user name before '@'"));
                }
                let pass = pass.map(|p| decode(p, "password")).transpose()?;
                (Some(user), pass)
            }
        };

        let authority_end = after_user.find(['/', '?']).unwrap_or(after_user.len());
        let (authority, tail) = after_user.split_at(authority_end);
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (tail, None),
        };

        let (host, port_str) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid("IPv6 address is missing its closing ']'"))?;
            let port =
                match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(|| {
                        invalid(format!("unexpected '{p}' after the IPv6 address"))
                    })?),
                };
            (h, port)
        } else {
            match authority.split_once(':') {
                Some((_, p)) if p.contains(':') => {
                    return Err(invalid(
                        "IPv6 addresses must be written in brackets: [fd00::1]",
                    ));
                }
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid(format!("no host in {}:// URL", scheme.as_str())));
        }
        let port = match port_str {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(invalid(format!(
                        "port '{p}' is not a number between 1 and 65535"
                    )));
                }
            },
        };
        if scheme == BmcScheme::Fake && port.is_some() {
            return Err(invalid("fake:// URLs take a name, not a port"));
        }

        let path = path.trim_end_matches('/');
        let system_path = if path.is_empty() {
            None
        } else if scheme.is_redfish() {
            Some(decode(path, "path")?)
        } else {
            return Err(invalid(format!(
                "{}:// URLs take no path (got '{path}')",
                scheme.as_str()
            )));
        };

        let mut cipher_suite = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("cipher", v)) if scheme.is_ipmi() => {
                    let n: u8 = v.parse().map_err(|_| {
                        invalid(format!("cipher suite '{v}' is not a number (e.g. 3 or 17)"))
                    })?;
                    cipher_suite = Some(n);
                }
                _ => {
                    return Err(invalid(format!(
                        "unknown option '{pair}' (ipmi URLs accept ?cipher=N; others none)"
                    )));
                }
            }
        }

        Ok(BmcUrl {
            scheme,
            host: host.to_string(),
            port,
            username,
            password,
            system_path,
            cipher_suite,
        })
    }
}

impl BmcUrl {
    pub fn scheme(&self) -> BmcScheme {
        self.scheme
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to connect to: the URL's, or the scheme's default (0 for `fake://`).
    pub fn port(&self) -> u16 {
        self.port.or(self.scheme.default_port()).unwrap_or_default()
    }

    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn system_path(&self) -> Option<&str> {
        self.system_path.as_deref()
    }

    pub fn cipher_suite(&self) -> Option<u8> {
        self.cipher_suite
    }

    /// `host:port` (bracketed for IPv6), or `fake:name`: one BMC, whatever the scheme,
    /// so operations through ipmi:// and redfish:// on the same host still serialise.
    pub fn bmc_key(&self) -> String {
        match self.scheme {
            BmcScheme::Fake => format!("fake:{}", self.host),
            _ => format!("{}:{}", self.host_for_url(), self.port()),
        }
    }

    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The URL with the password replaced by `***` (user kept). Safe for logs.
    pub fn redacted(&self) -> String {
        self.render(
            self.username.as_deref(),
            self.password.as_ref().map(|_| "***"),
        )
    }

    /// The URL without any password, for storing next to a separately encrypted one.
    pub fn without_password(&self) -> String {
        self.render(self.username.as_deref(), None)
    }

    /// The URL without user name or password: the `address` the store keeps.
    pub fn address(&self) -> String {
        self.render(None, None)
    }

    /// A copy with the credentials removed (the store keeps them apart).
    pub fn without_credentials(&self) -> BmcUrl {
        BmcUrl {
            username: None,
            password: None,
            ..self.clone()
        }
    }

    fn render(&self, user: Option<&str>, password: Option<&str>) -> String {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let mut out = format!("{}://", self.scheme.as_str());
        if let Some(user) = user {
            out.push_str(&utf8_percent_encode(user, NON_ALPHANUMERIC).to_string());
            if let Some(p) = password {
                out.push(':');
                out.push_str(p);
            }
            out.push('@');
        }
        out.push_str(&self.host_for_url());
        if let Some(port) = self.port {
            out.push_str(&format!(":{port}"));
        }
        if let Some(path) = &self.system_path {
            out.push_str(path);
        }
        if let Some(c) = self.cipher_suite {
            out.push_str(&format!("?cipher={c}"));
        }
        out
    }
}

impl fmt::Display for BmcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for BmcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BmcUrl({})", self.redacted())
    }
}

/// Everything a driver needs to reach one BMC.
///
/// Credentials come from the URL (`BmcTarget::new`) or separately
/// (`with_username` / `with_password`), which is how the store keeps them: the URL
/// without password, the password encrypted apart (see [`crate::secrets`]).
#[derive(Clone, PartialEq, Eq)]
pub struct BmcTarget {
    pub url: BmcUrl,
    pub username: String,
    pub password: String,
    /// Accept self-signed or otherwise unverifiable certificates (Redfish over HTTPS).
    pub insecure_tls: bool,
}

impl BmcTarget {
    /// Credentials taken from the URL (empty when it has none); certificates verified.
    pub fn new(url: BmcUrl) -> BmcTarget {
        BmcTarget {
            username: url.username().unwrap_or_default().to_string(),
            password: url.password().unwrap_or_default().to_string(),
            url,
            insecure_tls: false,
        }
    }

    pub fn with_username(mut self, username: impl Into<String>) -> BmcTarget {
        self.username = username.into();
        self
    }

    pub fn with_password(mut self, password: impl Into<String>) -> BmcTarget {
        self.password = password.into();
        self
    }

    pub fn with_insecure_tls(mut self, insecure: bool) -> BmcTarget {
        self.insecure_tls = insecure;
        self
    }

    /// The URL with this target's user name and `***` for its password.
    pub fn redacted(&self) -> String {
        let user = (!self.username.is_empty()).then_some(self.username.as_str());
        let pass = (!self.password.is_empty() && user.is_some()).then_some("***");
        self.url.render(user, pass)
    }

    /// Operations with the same key are serialised (see [`crate::PowerController`]).
    pub fn bmc_key(&self) -> String {
        self.url.bmc_key()
    }
}

impl FromStr for BmcTarget {
    type Err = PowerError;
    fn from_str(s: &str) -> Result<BmcTarget, PowerError> {
        Ok(BmcTarget::new(s.parse()?))
    }
}

impl fmt::Debug for BmcTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BmcTarget")
            .field("url", &self.redacted())
            .field("username", &self.username)
            .field("password", &"***")
            .field("insecure_tls", &self.insecure_tls)
            .finish()
    }
}

impl fmt::Display for BmcTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> BmcUrl {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_each_scheme() {
        let u = parse("ipmi://admin:secret@10.0.0.5");
        assert_eq!(
            (u.scheme(), u.host(), u.port(), u.username(), u.password()),
            (
                BmcScheme::Ipmi,
                "10.0.0.5",
                623,
                Some("admin"),
                Some("secret")
            )
        );
        let u = parse("ipmitool://root:x@bmc.example:6230?cipher=17");
        assert_eq!(
            (u.scheme(), u.host(), u.port(), u.cipher_suite()),
            (BmcScheme::Ipmitool, "bmc.example", 6230, Some(17))
        );
        let u = parse("redfish://u:p@127.0.0.1:8000/redfish/v1/Systems/abc/");
        assert_eq!(
            (u.scheme(), u.port(), u.system_path()),
            (BmcScheme::Redfish, 8000, Some("/redfish/v1/Systems/abc"))
        );
        let u = parse("REDFISH+HTTPS://u:p@[fd00::5]");
        assert_eq!(
            (u.scheme(), u.host(), u.port(), u.bmc_key()),
            (
                BmcScheme::RedfishHttps,
                "fd00::5",
                443,
                "[fd00::5]:443".to_string()
            )
        );
        let u = parse("fake://rack1-node3");
        assert_eq!(
            (u.scheme(), u.host(), u.username(), u.bmc_key()),
            (
                BmcScheme::Fake,
                "rack1-node3",
                None,
                "fake:rack1-node3".to_string()
            )
        );
    }

    #[test]
    fn percent_decodes_and_tolerates_raw_specials_in_password() {
        let u = parse("ipmi://ad%40min:p%3Ass%2Fw%25rd@h");
        assert_eq!(
            (u.username(), u.password()),
            (Some("ad@min"), Some("p:ss/w%rd"))
        );
        // Raw '@', '/' and '?' in a password: user info runs to the last '@'.
        let u = parse("redfish://root:a@b/c?d@bmc:8443/redfish/v1/Systems/1");
        assert_eq!(
            (u.password(), u.host(), u.port(), u.system_path()),
            (Some("a@b/c?d"), "bmc", 8443, Some("/redfish/v1/Systems/1"))
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("10.0.0.1", "missing '://'"),
            ("http://h", "unknown scheme 'http'"),
            ("ipmi://u:p@", "no host"),
            ("ipmi://u:p@h:99999", "port '99999'"),
            ("ipmi://u:p@h:0", "port '0'"),
            ("ipmi://u:p@h:abc", "port 'abc'"),
            ("ipmi://u:p@fd00::1", "brackets"),
            ("ipmi://u:p@[fd00::1", "closing ']'"),
            ("ipmi://u:p@h/redfish", "take no path"),
            ("ipmi://u:p@h?cipher=x", "cipher suite 'x'"),
            ("redfish://u:p@h?cipher=3", "unknown option 'cipher=3'"),
            ("ipmi://:p@h", "empty user name"),
            ("fake://x:5", "not a port"),
            ("ipmi://u:%FF@h", "password is not valid UTF-8"),
        ];
        for (input, want) in cases {
            let err = input.parse::<BmcUrl>().expect_err(input).to_string();
            assert!(err.contains(want), "{input}: {err} (want {want})");
            assert!(err.starts_with("invalid BMC URL: "), "{err}");
        }
    }

    #[test]
    fn password_never_displayed() {
        let u = parse("redfish+https://admin:hunter2@10.1.1.1:8443/redfish/v1/Systems/1");
        assert_eq!(
            u.redacted(),
            "redfish+https://admin:***@10.1.1.1:8443/redfish/v1/Systems/1"
        );
        assert_eq!(
            u.without_password(),
            "redfish+https://admin@10.1.1.1:8443/redfish/v1/Systems/1"
        );
        assert!(!format!("{u}").contains("hunter2"));
        assert!(!format!("{u:?}").contains("hunter2"));
        let t = BmcTarget::new(u);
        assert!(!format!("{t:?}").contains("hunter2"), "{t:?}");
        assert!(!format!("{t}").contains("hunter2"));
        // The stored form parses back to the same place without the password.
        let back = parse(&t.url.without_password());
        assert_eq!(back.password(), None);
        assert_eq!(back.bmc_key(), t.bmc_key());
    }

    #[test]
    fn target_credentials_from_url_or_separately() {
        let t: BmcTarget = "ipmi://root:calvin@bmc7".parse().unwrap();
        assert_eq!(
            (t.username.as_str(), t.password.as_str()),
            ("root", "calvin")
        );
        let stored = parse("ipmi://bmc7");
        let t = BmcTarget::new(stored)
            .with_username("admin")
            .with_password("from-store")
            .with_insecure_tls(true);
        assert_eq!(t.redacted(), "ipmi://admin:***@bmc7");
        assert!(t.insecure_tls);
        assert_eq!(t.bmc_key(), "bmc7:623");
    }
}
