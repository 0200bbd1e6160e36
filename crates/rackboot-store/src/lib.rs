//! Persistence for rackboot. One trait, [`Store`], with a SQLite implementation
//! (the embedded default, a file in the state directory) and a PostgreSQL one
//! (several servers sharing a fleet). No other crate contains SQL.

use std::net::Ipv4Addr;

use async_trait::async_trait;
use rackboot_core::{Event, Lease, MacAddr, Machine, MachineId, NewEvent, Profile, Selector};

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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Backend name for logs and `/api/v1/status`: "sqlite" or "postgres".
    fn backend(&self) -> &'static str;

    // Machines. Names and MACs are unique across machines (Conflict otherwise).
    async fn create_machine(&self, machine: &Machine) -> Result<()>;
    /// Replaces every field but `id` and `created_at`.
    async fn update_machine(&self, machine: &Machine) -> Result<()>;
    async fn delete_machine(&self, id: MachineId) -> Result<()>;
    async fn get_machine(&self, id: MachineId) -> Result<Machine>;
    async fn find_machine_by_name(&self, name: &str) -> Result<Option<Machine>>;
    async fn find_machine_by_mac(&self, mac: MacAddr) -> Result<Option<Machine>>;
    async fn list_machines(&self) -> Result<Vec<Machine>>;

    // Profiles, keyed by name.
    async fn put_profile(&self, profile: &Profile) -> Result<()>;
    async fn delete_profile(&self, name: &str) -> Result<()>;
    async fn get_profile(&self, name: &str) -> Result<Profile>;
    async fn list_profiles(&self) -> Result<Vec<Profile>>;

    // Selectors, keyed by name.
    async fn put_selector(&self, selector: &Selector) -> Result<()>;
    async fn delete_selector(&self, name: &str) -> Result<()>;
    async fn list_selectors(&self) -> Result<Vec<Selector>>;

    // Leases, keyed by address. `put_leases` writes a batch in one transaction
    // (the DHCP server group-commits ACKs) and returns once it is durable
    // against a process kill.
    async fn put_leases(&self, leases: &[Lease]) -> Result<()>;
    async fn delete_lease(&self, ip: Ipv4Addr) -> Result<()>;
    async fn list_leases(&self) -> Result<Vec<Lease>>;

    // Events: appended in one transaction, returned with their ids in order.
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>>;
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>>;
}
