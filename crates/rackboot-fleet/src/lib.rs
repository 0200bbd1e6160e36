//! The fleet service layer. Every write to machines, profiles, selectors,
//! installs, the lifecycle, workflows, agent sessions and API tokens goes through
//! [`Fleet`], which in one place
//! 1. checks the request (names, MACs, labels, intents, uniqueness),
//! 2. writes the store (one transaction where several rows change together),
//! 3. updates the in-memory [`Snapshot`] that DHCP, TFTP and boot HTTP answer from,
//! 4. records the event (and, for lifecycle changes, the transition) with who
//!    asked.
//!
//! The API, the boot HTTP handlers, the agent endpoints and the workflow
//! engine are adapters that call it; none of them writes the store.

use std::path::PathBuf;
use std::sync::Arc;

use rackboot_core::{EventHub, Machine, MachineId, NewEvent};
use rackboot_store::{Store, StoreError};

mod agents;
mod catalog;
mod changes;
pub mod cluster;
mod install_access;
mod installs;
pub mod inventory;
mod lifecycle;
mod machines;
mod refusals;
pub mod retention;
mod sharded;
mod tokens;
pub mod webhooks;
mod workflows;

pub use agents::{AgentAuthError, IssuedToken, token_sha256};
pub use cluster::{Cluster, ClusterConfig};
pub use installs::InstallCompletion;
pub use inventory::{Inventory, Machines, Snapshot};
pub use lifecycle::transition;
pub use machines::{DiscoveryLimit, DiscoveryOutcome, check_intent};
pub use sharded::ShardedMap;
pub use tokens::NewToken;
pub use webhooks::SavedWebhook;

/// Who asked for a change: recorded in events (`data.who`) and transitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// An API request; `token` names the API token when tokens are named.
    pub fn api(token: Option<&str>) -> Actor {
        match token {
            Some(name) => Actor(format!("api:{name}")),
            None => Actor("api".into()),
        }
    }

    pub fn engine() -> Actor {
        Actor("engine".into())
    }

    pub fn agent() -> Actor {
        Actor("agent".into())
    }

    /// A network service acting on what a machine sent (discovery, the
    /// installer's callback).
    pub fn service(name: &str) -> Actor {
        Actor(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a fleet operation was refused or failed. Adapters map these to their
/// protocol (the API: 400, 404, 409, 503).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A value the caller gave is wrong; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with what exists (a taken name or MAC, a machine in
    /// the wrong state for a workflow).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for FleetError {
    fn from(e: StoreError) -> FleetError {
        match e {
            StoreError::NotFound { .. } => FleetError::NotFound(e.to_string()),
            StoreError::Conflict(m) => FleetError::Conflict(m),
            other => FleetError::Store(other),
        }
    }
}

pub type Result<T, E = FleetError> = std::result::Result<T, E>;

/// The fleet: the store, the snapshot built from it, the event hub, and the
/// live agent sessions.
pub struct Fleet {
    inventory: Arc<Inventory>,
    events: EventHub,
    agents: agents::Sessions,
    /// Bumped by every webhook write (see [`Fleet::webhooks_generation`]).
    webhooks_generation: std::sync::atomic::AtomicU64,
    /// The bound on machines recorded by discovery.
    discovery: machines::DiscoveryGate,
    /// This server's cluster membership, when several servers share the store.
    cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// Other servers' writes that adapters follow (workflows, members, resyncs).
    changes: tokio::sync::broadcast::Sender<rackboot_store::Change>,
    /// Install access records read or written here (see [`Fleet::install_access`]).
    install_access: install_access::AccessCache,
    /// When each API token's last use was written.
    token_uses: tokens::TokenUses,
    /// Bounds `access_refused` events (see [`Fleet::record_refusal`]).
    refusals: std::sync::Mutex<refusals::RefusalLimiter>,
}

impl Fleet {
    /// Loads the snapshot (and the OS catalog in `os_dir`) and the agent sessions.
    pub async fn load(
        store: Arc<dyn Store>,
        os_dir: Option<PathBuf>,
        events: EventHub,
    ) -> Result<Arc<Fleet>, StoreError> {
        let inventory = Inventory::load_with_os_catalog(store.clone(), os_dir).await?;
        let agents = agents::Sessions::load(store.as_ref()).await?;
        let install_access = install_access::AccessCache::load(store.as_ref()).await?;
        Ok(Arc::new(Fleet {
            inventory,
            events,
            agents,
            webhooks_generation: Default::default(),
            discovery: Default::default(),
            cluster: std::sync::OnceLock::new(),
            changes: tokio::sync::broadcast::channel(4096).0,
            install_access,
            token_uses: Default::default(),
            refusals: Default::default(),
        }))
    }

    /// Joins this server to a cluster (once, before the services start).
    pub fn set_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// This server's cluster membership, when several servers share the store.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Whether this server owns `machine` (its BMC polling, its workflows):
    /// always, without a cluster.
    pub fn owns(&self, machine: MachineId) -> bool {
        self.cluster().is_none_or(|c| c.owns(machine))
    }

    /// Workflow and membership changes other servers made, and resyncs (see
    /// [`Fleet::follow_changes`]).
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<rackboot_store::Change> {
        self.changes.subscribe()
    }

    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.inventory.store()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inventory.snapshot()
    }

    pub fn events(&self) -> &EventHub {
        &self.events
    }

    /// Emits an event that changes nothing in the store (progress, a file served).
    pub fn emit(&self, event: NewEvent) {
        self.events.emit(event);
    }
}

/// `event` with the machine and its boot MAC attached.
pub fn on_machine(event: NewEvent, machine: &Machine) -> NewEvent {
    let event = event.machine(machine.id);
    match machine.macs.first() {
        Some(mac) => event.mac(*mac),
        None => event,
    }
}
