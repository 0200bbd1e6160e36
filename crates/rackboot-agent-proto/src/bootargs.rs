//! What the RAM-disk's kernel command line tells the agent.
//!
//! `rackboot.url=http://10.77.0.1:8080 rackboot.token=<hex> [rackboot.debug=1]`
//! (on IPv6: `rackboot.url=http://[2001:db8::1]:8080 ... rackboot.ip6=ADDR/64`)
//! The server writes these into the boot script of a machine that has work
//! for an agent; the agent reads `/proc/cmdline`.

use std::fmt;

/// Kernel command line keys.
pub const URL_KEY: &str = "rackboot.url";
pub const TOKEN_KEY: &str = "rackboot.token";
pub const DEBUG_KEY: &str = "rackboot.debug";
/// `rackboot.ip6=ADDR/LEN`: on an IPv6 network, the address the RAM-disk's
/// /init puts on the boot NIC (the one its token is bound to: the address
/// the machine's loader leased). Read by /init, not by the agent; absent on
/// IPv4, where /init asks DHCP.
pub const IP6_KEY: &str = "rackboot.ip6";

#[derive(Clone, PartialEq, Eq)]
pub struct BootArgs {
    /// Base URL of the server's boot HTTP, no trailing '/': `http://10.77.0.1:8080`.
    pub url: String,
    /// Per-boot agent token.
    pub token: String,
    pub debug: bool,
}

impl fmt::Debug for BootArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootArgs")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("debug", &self.debug)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootArgsError {
    Missing(&'static str),
    Invalid { key: &'static str, why: String },
}

impl fmt::Display for BootArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootArgsError::Missing(key) => {
                write!(
                    f,
                    "kernel command line has no {key}= (was this boot started by rackboot?)"
                )
            }
            BootArgsError::Invalid { key, why } => write!(f, "kernel command line {key}: {why}"),
        }
    }
}

impl std::error::Error for BootArgsError {}

impl BootArgs {
    /// Parses a kernel command line (`/proc/cmdline`). Unknown words are ignored;
    /// the last occurrence of a key wins, as the kernel does.
    pub fn from_cmdline(cmdline: &str) -> Result<BootArgs, BootArgsError> {
        let mut url = None;
        let mut token = None;
        let mut debug = false;
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            match key {
                URL_KEY => url = Some(value),
                TOKEN_KEY => token = Some(value),
                DEBUG_KEY => debug = matches!(value, "" | "1" | "true" | "yes"),
                _ => {}
            }
        }
        let url = url.ok_or(BootArgsError::Missing(URL_KEY))?;
        let url = url.trim_end_matches('/');
        if !url.starts_with("http://") || url.len() <= "http://".len() {
            return Err(BootArgsError::Invalid {
                key: URL_KEY,
                why: format!("{url:?} is not an http:// URL"),
            });
        }
        let token = token.ok_or(BootArgsError::Missing(TOKEN_KEY))?;
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(BootArgsError::Invalid {
                key: TOKEN_KEY,
                why: "expected at least 16 letters or digits".into(),
            });
        }
        Ok(BootArgs {
            url: url.to_string(),
            token: token.to_string(),
            debug,
        })
    }

    /// The words the server puts on the kernel command line.
    pub fn to_cmdline(&self) -> String {
        let mut s = format!("{URL_KEY}={} {TOKEN_KEY}={}", self.url, self.token);
        if self.debug {
            s.push_str(&format!(" {DEBUG_KEY}=1"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_command_line() {
        let args = BootArgs::from_cmdline(
            "BOOT_IMAGE=vmlinuz console=ttyS0 rackboot.url=http://10.77.0.1:8080/ \
             rackboot.token=0123456789abcdef0123 quiet\n",
        )
        .unwrap();
        assert_eq!(args.url, "http://10.77.0.1:8080");
        assert_eq!(args.token, "0123456789abcdef0123");
        assert!(!args.debug);
        assert_eq!(BootArgs::from_cmdline(&args.to_cmdline()).unwrap(), args);
        // IPv6: a bracketed server address; rackboot.ip6= is /init's.
        let args = BootArgs::from_cmdline(
            "console=ttyS0 rackboot.url=http://[2001:db8:77::1]:8080              rackboot.token=0123456789abcdef0123 rackboot.ip6=2001:db8:77::100/64",
        )
        .unwrap();
        assert_eq!(args.url, "http://[2001:db8:77::1]:8080");
    }

    #[test]
    fn refuses_what_is_missing_or_malformed() {
        let table = [
            ("console=ttyS0", "no rackboot.url="),
            ("rackboot.url=http://a:1", "no rackboot.token="),
            (
                "rackboot.url=ftp://a rackboot.token=0123456789abcdef",
                "not an http:// URL",
            ),
            ("rackboot.url=http://a rackboot.token=short", "at least 16"),
            (
                "rackboot.url=http://a rackboot.token=0123456789abcdef;rm",
                "at least 16",
            ),
        ];
        for (cmdline, want) in table {
            let err = BootArgs::from_cmdline(cmdline).unwrap_err().to_string();
            assert!(err.contains(want), "{cmdline}: {err}");
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let args =
            BootArgs::from_cmdline("rackboot.url=http://a rackboot.token=0123456789abcdefXYZ")
                .unwrap();
        assert!(!format!("{args:?}").contains("XYZ"));
    }
}
