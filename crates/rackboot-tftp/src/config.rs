//! Typed TFTP configuration (part of the `rackboot` config file).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rackboot_wire::tftp::{MAX_BLKSIZE, MIN_BLKSIZE, OptionLimits};
use serde::{Deserialize, Serialize};

use crate::TftpError;

/// Where files come from and how transfers behave. Every field has a default, so
/// `[tftp]` with only `root = "/srv/tftp"` is a complete config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TftpConfig {
    /// Directory served to clients. Paths are confined to it: `..` is refused and
    /// symlinks may point anywhere inside it but not outside. `None`: only
    /// `files`, `dirs` and generated content are served.
    pub root: Option<PathBuf>,
    /// Exact names mapped to files anywhere on disk, e.g.
    /// `"undionly.kpxe" = "/usr/lib/ipxe/undionly.kpxe"`. A leading '/' in the name
    /// is ignored. Checked before `dirs` and `root`.
    pub files: BTreeMap<String, PathBuf>,
    /// Virtual directory prefixes mapped to directories, e.g.
    /// `"syslinux" = "/usr/lib/syslinux/modules/bios"` serves
    /// `syslinux/ldlinux.c32`. Confined like `root`; the longest prefix wins.
    pub dirs: BTreeMap<String, PathBuf>,
    /// Largest block size granted (RFC 2348, 8..=65464).
    pub max_blksize: u16,
    /// Largest window granted (RFC 7440).
    pub max_windowsize: u16,
    /// Cap on blksize * windowsize (bytes in flight and buffered per transfer).
    pub max_window_bytes: u32,
    /// First retransmission timeout, unless the client negotiates `timeout`.
    pub timeout_ms: u64,
    /// Backoff doubles the timeout up to this.
    pub max_timeout_ms: u64,
    /// Retransmissions of one window (or OACK) before the transfer is abandoned.
    pub retries: u32,
    /// Concurrent transfers; requests beyond are dropped (the client retries).
    pub max_transfers: usize,
    /// Concurrent transfers per client address.
    pub max_transfers_per_client: usize,
    /// Threads running transfers (each a single-threaded runtime); 0 means one
    /// per CPU, at most 4.
    pub threads: usize,
}

impl Default for TftpConfig {
    fn default() -> Self {
        TftpConfig {
            root: None,
            files: BTreeMap::new(),
            dirs: BTreeMap::new(),
            max_blksize: MAX_BLKSIZE,
            max_windowsize: 64,
            max_window_bytes: 1 << 20,
            timeout_ms: 1000,
            max_timeout_ms: 8000,
            retries: 5,
            max_transfers: 1024,
            max_transfers_per_client: 64,
            threads: 0,
        }
    }
}

impl TftpConfig {
    pub fn validate(&self) -> Result<(), TftpError> {
        let bad = |msg: String| Err(TftpError::Config(msg));
        if !(MIN_BLKSIZE..=MAX_BLKSIZE).contains(&self.max_blksize) {
            return bad(format!(
                "max_blksize {} outside {MIN_BLKSIZE}..={MAX_BLKSIZE}",
                self.max_blksize
            ));
        }
        if self.max_windowsize == 0 {
            return bad("max_windowsize must be at least 1".into());
        }
        if self.timeout_ms == 0 || self.max_timeout_ms < self.timeout_ms {
            return bad(format!(
                "timeout_ms {} must be > 0 and <= max_timeout_ms {}",
                self.timeout_ms, self.max_timeout_ms
            ));
        }
        if self.max_transfers == 0 || self.max_transfers_per_client == 0 {
            return bad("max_transfers and max_transfers_per_client must be at least 1".into());
        }
        for name in self.files.keys().chain(self.dirs.keys()) {
            if crate::path::normalize(name).is_err() {
                return bad(format!("invalid virtual path {name:?}"));
            }
        }
        Ok(())
    }

    pub fn option_limits(&self) -> OptionLimits {
        OptionLimits {
            max_blksize: self.max_blksize,
            max_windowsize: self.max_windowsize,
            max_window_bytes: self.max_window_bytes,
        }
    }

    pub(crate) fn worker_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4),
            n => n,
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub(crate) fn max_timeout(&self) -> Duration {
        Duration::from_millis(self.max_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_example_and_rejects_unknown_keys() {
        let cfg: TftpConfig = toml::from_str(
            r#"
            root = "/srv/tftp"
            max_windowsize = 16
            [files]
            "undionly.kpxe" = "/usr/lib/ipxe/undionly.kpxe"
            "pxelinux.0" = "/usr/lib/PXELINUX/pxelinux.0"
            "ldlinux.c32" = "/usr/lib/syslinux/modules/bios/ldlinux.c32"
            [dirs]
            "syslinux" = "/usr/lib/syslinux/modules/bios"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.root, Some(PathBuf::from("/srv/tftp")));
        assert_eq!(cfg.files.len(), 3);
        assert_eq!(cfg.max_windowsize, 16);
        assert_eq!(cfg.retries, 5);
        cfg.validate().unwrap();

        let err = toml::from_str::<TftpConfig>("rot = \"/srv\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn validation_errors() {
        let table: &[(TftpConfig, &str)] = &[
            (
                TftpConfig {
                    max_blksize: 4,
                    ..Default::default()
                },
                "max_blksize",
            ),
            (
                TftpConfig {
                    max_windowsize: 0,
                    ..Default::default()
                },
                "max_windowsize",
            ),
            (
                TftpConfig {
                    timeout_ms: 0,
                    ..Default::default()
                },
                "timeout_ms",
            ),
            (
                TftpConfig {
                    files: [("../x".to_string(), PathBuf::from("/x"))].into(),
                    ..Default::default()
                },
                "invalid virtual path",
            ),
        ];
        for (cfg, needle) in table {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err} lacks {needle}");
        }
    }
}
