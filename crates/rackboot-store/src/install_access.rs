//! Who may fetch a pending install's boot script and files and call its
//! callbacks: one row per install (migration 0008), written on the first
//! fetch and then only amended. The rules that read it live in
//! rackboot-boot (`access`); this is the record.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

/// The access record of one install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallAccess {
    pub install: uuid::Uuid,
    /// The only address its script and files are served to, and its
    /// installer's callbacks accepted from: rackboot's DHCP lease of the
    /// machine at the first fetch, else the address that fetched first.
    pub bound_ip: IpAddr,
    /// The first fetch; the files are served for a short window after it.
    pub first_fetch_at: DateTime<Utc>,
    /// When the window closed early: the installer reported `started`.
    pub closed_at: Option<DateTime<Utc>>,
    /// The address of the installed system's first completion callback,
    /// when it was not `bound_ip` (an installed system with a static
    /// address); later completions are accepted from it too.
    pub done_ip: Option<IpAddr>,
}

/// What [`crate::Store::amend_install_access`] sets: each field only where
/// the record has none yet (the first close and the first completion
/// address win).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstallAccessAmend {
    pub closed_at: Option<DateTime<Utc>>,
    pub done_ip: Option<IpAddr>,
}
