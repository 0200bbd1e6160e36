//! Persistence for rackboot. One trait, [`Store`], with a SQLite implementation
//! (the embedded default, a file in the state directory) and a PostgreSQL one
//! (several servers sharing a fleet). No other crate contains SQL.
//!
//! Open a store with [`open`] (`sqlite:PATH`, `sqlite://PATH`, a bare path, or a
//! `postgres://` URL); tests of other crates use [`open_sqlite_in_memory`].
//!
//! Timestamps are stored with millisecond precision on both backends: every
//! `DateTime` is truncated to whole milliseconds when written, so what a caller
//! reads back equals `t.duration_trunc(1ms)` of what it wrote (see [`truncate_ms`]).

use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rackboot_core::{
    BootIntent, Event, InstallRequest, InstallState, InstallTemplate, Lease, MacAddr, Machine,
    MachineId, NewEvent, Profile, Selector,
};

mod codec;
mod postgres;
mod postgres_installs;
mod sqlite;
mod sqlite_installs;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Errors a caller can act on are their own variants; everything else is `Backend`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {key:?} not found")]
    NotFound { what: &'static str, key: String },
    /// Unique constraint: a machine name or MAC already taken, a profile name reused.
    #[error("{0}")]
    Conflict(String),
    #[error("store {context}: {source}")]
    Backend {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// [`open`] failed. `url` never contains a password.
    #[error("cannot open store {url}: {what}: {source}")]
    Open {
        url: String,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which events to list. All fields narrow the result; `after_id` pages forward.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Events of this machine: its id, or any of its MACs.
    pub machine: Option<MachineId>,
    pub mac: Option<MacAddr>,
    /// Only events with id greater than this.
    pub after_id: Option<i64>,
    /// At most this many, oldest first. 0 means a default of 1000.
    pub limit: u32,
}

impl EventFilter {
    /// Limit used when `limit` is 0.
    pub const DEFAULT_LIMIT: u32 = 1000;

    fn effective_limit(&self) -> i64 {
        if self.limit == 0 {
            Self::DEFAULT_LIMIT.into()
        } else {
            self.limit.into()
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Backend name for logs and `/api/v1/status`: "sqlite" or "postgres".
    fn backend(&self) -> &'static str;

    // Machines. Names and MACs are unique across machines (Conflict otherwise,
    // naming the value and the machine that has it). Listed by name; a
    // machine's MACs keep their order (the first is the boot NIC).
    async fn create_machine(&self, machine: &Machine) -> Result<()>;
    /// Replaces every field but `id` and `created_at`, MACs included. NotFound if absent.
    async fn update_machine(&self, machine: &Machine) -> Result<()>;
    /// Deletes the machine and its MACs (its events stay). NotFound if absent.
    async fn delete_machine(&self, id: MachineId) -> Result<()>;
    async fn get_machine(&self, id: MachineId) -> Result<Machine>;
    async fn find_machine_by_name(&self, name: &str) -> Result<Option<Machine>>;
    async fn find_machine_by_mac(&self, mac: MacAddr) -> Result<Option<Machine>>;
    async fn list_machines(&self) -> Result<Vec<Machine>>;

    // Profiles, keyed by name, listed by name. `put_profile` inserts or replaces,
    // keeping the stored `created_at` of an existing profile. Deletes of missing
    // names are NotFound.
    async fn put_profile(&self, profile: &Profile) -> Result<()>;
    async fn delete_profile(&self, name: &str) -> Result<()>;
    async fn get_profile(&self, name: &str) -> Result<Profile>;
    async fn list_profiles(&self) -> Result<Vec<Profile>>;

    // Selectors, keyed by name, listed by name; put inserts or replaces.
    async fn put_selector(&self, selector: &Selector) -> Result<()>;
    async fn delete_selector(&self, name: &str) -> Result<()>;
    async fn list_selectors(&self) -> Result<Vec<Selector>>;

    // Leases, keyed by address. `put_leases` writes a batch in one transaction
    // (the DHCP server group-commits ACKs) and returns once it is durable
    // against a process kill. Within a batch the last lease for an address wins.
    // Listed in address order; deleting a missing address is NotFound.
    async fn put_leases(&self, leases: &[Lease]) -> Result<()>;
    async fn delete_lease(&self, ip: Ipv4Addr) -> Result<()>;
    async fn list_leases(&self) -> Result<Vec<Lease>>;

    // Events: appended in one transaction, returned with their ids in order.
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>>;
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>>;

    // Install templates (user overrides of the built-in unattended files), keyed
    // by name, listed by name; put inserts or replaces keeping `created_at`.
    async fn put_template(&self, template: &InstallTemplate) -> Result<()>;
    async fn get_template(&self, name: &str) -> Result<InstallTemplate>;
    async fn list_templates(&self) -> Result<Vec<InstallTemplate>>;
    async fn delete_template(&self, name: &str) -> Result<()>;

    // Install requests. `replace_installs` is one transaction: it cancels the
    // machine's pending installs, stores these (all of `machine`; none to only
    // withdraw) and sets the machine's intent, which references them (NotFound
    // if the machine is gone).
    async fn replace_installs(
        &self,
        machine: MachineId,
        installs: &[InstallRequest],
        intent: &BootIntent,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// One install, the machine's intent pointing at it.
    async fn create_install(&self, install: &InstallRequest) -> Result<()> {
        let intent = BootIntent::Install {
            id: install.id,
            os: install.os.clone(),
        };
        self.replace_installs(
            install.machine,
            std::slice::from_ref(install),
            &intent,
            install.requested_at,
        )
        .await
    }
    async fn get_install(&self, id: uuid::Uuid) -> Result<InstallRequest>;
    /// Oldest first; one machine's, or all.
    async fn list_installs(&self, machine: Option<MachineId>) -> Result<Vec<InstallRequest>>;
    /// Pending installs only (what the boot inventory needs on every reload,
    /// without reading the whole install history).
    async fn list_pending_installs(&self) -> Result<Vec<InstallRequest>> {
        Ok(self
            .list_installs(None)
            .await?
            .into_iter()
            .filter(|i| i.state == InstallState::Pending)
            .collect())
    }
    /// The completion callback, in one transaction: checks the token (a wrong
    /// one is NotFound, so tokens cannot be probed), marks the install completed,
    /// cancels the machine's other pending installs (its menu's other entries)
    /// and sets the machine's intent to local disk if it still references this
    /// install (its own intent or a menu entry). Idempotent: a repeated callback returns `(install, false)`; a
    /// cancelled install is a Conflict.
    async fn complete_install(
        &self,
        id: uuid::Uuid,
        token: &str,
        at: DateTime<Utc>,
    ) -> Result<(InstallRequest, bool)>;
}

/// Token and state check of an install callback, shared by both backends.
pub(crate) fn check_install_callback(install: &InstallRequest, token: &str) -> Result<()> {
    if !install.token_matches(token) {
        return Err(StoreError::NotFound {
            what: "install",
            key: install.id.to_string(),
        });
    }
    if install.state == InstallState::Cancelled {
        return Err(StoreError::Conflict(format!(
            "install {} was cancelled (a newer install or an operator replaced it)",
            install.id
        )));
    }
    Ok(())
}

/// Opens (creating if needed) and migrates the store named by `url`:
///
/// - `sqlite:PATH`, `sqlite://PATH` or a bare file path: SQLite; the file and its
///   parent directories are created when missing. `sqlite::memory:` is an
///   in-memory database (see [`open_sqlite_in_memory`]).
/// - `postgres://...` or `postgresql://...`: PostgreSQL; the database must exist.
///
/// Migrations run every time; already-applied ones are skipped.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PgStore::open(url).await?));
    }
    let path = if let Some(rest) = url.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        rest
    } else if url.contains("://") {
        return Err(StoreError::Open {
            url: redact_url(url),
            what: "unsupported scheme",
            source: "use sqlite:PATH, a file path, or postgres://".into(),
        });
    } else {
        url
    };
    if path == ":memory:" {
        return open_sqlite_in_memory().await;
    }
    if path.is_empty() {
        return Err(StoreError::Open {
            url: url.to_string(),
            what: "parsing URL",
            source: "no SQLite file path given".into(),
        });
    }
    Ok(Arc::new(
        SqliteStore::open_file(std::path::Path::new(path)).await?,
    ))
}

/// A fresh, migrated in-memory SQLite store for tests. It lives on a single
/// connection (each SQLite in-memory connection is its own database), so
/// everything it stores is gone when the store is dropped.
pub async fn open_sqlite_in_memory() -> Result<Arc<dyn Store>> {
    Ok(Arc::new(SqliteStore::open_in_memory().await?))
}

/// `t` truncated to whole milliseconds: the precision both backends store.
pub fn truncate_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::milliseconds(1))
        .expect("millisecond truncation cannot overflow a chrono DateTime")
}

/// `url` with the password (if any) replaced by `***`, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..rest_start],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

fn backend(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Backend { context, source }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Checks a machine's own MAC list before it reaches the database, where a
/// repeated MAC would only show up as an anonymous unique violation.
fn check_own_macs(machine: &Machine) -> Result<()> {
    for (i, mac) in machine.macs.iter().enumerate() {
        if machine.macs[..i].contains(mac) {
            return Err(StoreError::Conflict(format!(
                "MAC {mac} is listed twice for machine {}",
                machine.name
            )));
        }
    }
    Ok(())
}

/// Leases with the same address collapse to the last one, as if written in order;
/// a single upsert statement may not touch one row twice.
fn dedup_leases(leases: &[Lease]) -> Vec<&Lease> {
    let mut out: Vec<&Lease> = Vec::with_capacity(leases.len());
    let mut seen = std::collections::HashMap::with_capacity(leases.len());
    for lease in leases {
        match seen.get(&lease.ip) {
            Some(&i) => out[i] = lease,
            None => {
                seen.insert(lease.ip, out.len());
                out.push(lease);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_the_password() {
        for (url, want) in [
            (
                "postgres://rb:s3cret@db:5432/rackboot",
                "postgres://rb:***@db:5432/rackboot",
            ),
            (
                "postgresql://rb:p@ss@db/x?sslmode=require",
                "postgresql://rb:***@db/x?sslmode=require",
            ),
            ("postgres://rb@db/x", "postgres://rb@db/x"),
            ("postgres://db/x?user=a", "postgres://db/x?user=a"),
            ("/var/lib/rackboot/state.db", "/var/lib/rackboot/state.db"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn truncates_to_milliseconds() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(truncate_ms(t).timestamp_subsec_nanos(), 123_000_000);
        assert_eq!(truncate_ms(t).timestamp(), 1_700_000_000);
    }

    #[test]
    fn dedup_keeps_last_lease_per_address_in_first_position() {
        let lease = |ip: [u8; 4], host: &str| Lease {
            ip: Ipv4Addr::from(ip),
            mac: None,
            client_id: None,
            hostname: Some(host.into()),
            state: rackboot_core::LeaseState::Bound,
            expires_at: DateTime::UNIX_EPOCH,
            subnet: "s".into(),
            updated_at: DateTime::UNIX_EPOCH,
        };
        let batch = [
            lease([10, 0, 0, 1], "a"),
            lease([10, 0, 0, 2], "b"),
            lease([10, 0, 0, 1], "c"),
        ];
        let got: Vec<_> = dedup_leases(&batch)
            .iter()
            .map(|l| l.hostname.clone().unwrap())
            .collect();
        assert_eq!(got, ["c", "b"]);
    }

    #[tokio::test]
    async fn open_rejects_unknown_schemes_naming_the_url() {
        let err = open("mysql://u:pw@h/db").await.err().unwrap().to_string();
        assert!(err.contains("mysql://u:***@h/db"), "{err}");
        assert!(err.contains("unsupported scheme"), "{err}");
    }
}
