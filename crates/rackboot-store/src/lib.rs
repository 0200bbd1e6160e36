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
//! That holds inside stored JSON too: a workflow's body (its steps' times
//! included) and a maintenance flag's `since` are truncated before they are
//! serialised.

use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rackboot_core::{
    AgentSession, ApiToken, BootIntent, Delivery, Event, Facts, InstallRequest, InstallState,
    InstallTemplate, Lease, MacAddr, Machine, MachineId, Maintenance, NewEvent, Profile,
    ProvisionState, Selector, StepRun, Transition, Webhook, Workflow, WorkflowId, WorkflowState,
};

mod api_tokens;
mod codec;
mod install_access;
mod leases6;
mod postgres;
mod postgres_cluster;
mod postgres_install_access;
mod postgres_installs;
mod postgres_lifecycle;
mod postgres_scale;
mod postgres_webhooks;
mod sqlite;
mod sqlite_install_access;
mod sqlite_installs;
mod sqlite_lifecycle;
mod sqlite_scale;
mod sqlite_webhooks;
mod unavailable;

pub use install_access::{InstallAccess, InstallAccessAmend};
pub use leases6::Lease6;
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
    /// The store has no such table (a test double that implements only part of the trait).
    #[error("{what} is not supported by the {backend} store")]
    Unsupported {
        what: &'static str,
        backend: &'static str,
    },
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// A write refused because another server runs what it would change (a
    /// workflow claimed by another cluster member): the writer must stop
    /// acting on it.
    #[error("{0}")]
    Fenced(String),
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

/// A write another process made to a store several servers share, from
/// [`Store::change_feed`]: the snapshot re-reads what it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The machine's row or its pending installs changed (or it was deleted).
    Machine(MachineId),
    /// Profiles or selectors changed.
    Catalog,
    /// The machine's agent session changed.
    AgentSession(MachineId),
    Workflow {
        id: WorkflowId,
        machine: MachineId,
    },
    /// A server joined or left the cluster.
    Members,
    /// Another server wrote this DHCP lease (an offer, a binding, a release).
    Lease(Lease),
    /// Changes may have been missed (the feed's connection was lost and is
    /// back): re-read everything.
    Resync,
}

/// Changes made by other processes, in the order the database sent them.
pub struct ChangeFeed {
    rx: tokio::sync::mpsc::Receiver<Change>,
}

impl ChangeFeed {
    pub fn new(rx: tokio::sync::mpsc::Receiver<Change>) -> ChangeFeed {
        ChangeFeed { rx }
    }

    /// The next change; `None` when the feed stopped.
    pub async fn next(&mut self) -> Option<Change> {
        self.rx.recv().await
    }

    /// A change already waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Change> {
        self.rx.try_recv().ok()
    }
}

/// A lease [`Store::claim_leases`] did not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRefused {
    /// The address the refused lease was for.
    pub ip: std::net::Ipv4Addr,
    /// What is in the way: the lease holding that address (another
    /// client's, or a decline), or the lease the same client already holds
    /// elsewhere. `None` when it changed again before it could be read.
    pub holder: Option<Lease>,
}

/// One live incarnation of a server in a cluster sharing the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// This incarnation: a server that lapsed comes back under a new id.
    pub id: uuid::Uuid,
    /// For people: the host name, or what the config says.
    pub name: String,
    /// Where its API and agent endpoints are reached.
    pub api_url: String,
    pub started_at: DateTime<Utc>,
    /// The database's time of its last heartbeat (set by the store).
    pub heartbeat_at: DateTime<Utc>,
}

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

/// Which workflows to list, newest first. Every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct WorkflowFilter {
    pub machine: Option<MachineId>,
    /// Only these states (empty: all).
    pub states: Vec<WorkflowState>,
    /// At most this many; 0 means 1000.
    pub limit: u32,
}

impl WorkflowFilter {
    /// Limit used when `limit` is 0.
    pub const DEFAULT_LIMIT: u32 = 1000;
}

/// A change of a machine's lifecycle, written in one transaction (see
/// [`Store::apply_lifecycle`]).
#[derive(Debug, Clone)]
pub struct LifecycleChange {
    pub machine: MachineId,
    /// Compare-and-set: the change is refused (Conflict naming both states)
    /// when the machine is not in this state. `None` skips the check.
    pub expect_state: Option<ProvisionState>,
    pub state: ProvisionState,
    /// Stored as the machine's `state_reason` (cleared when `None`).
    pub state_reason: Option<String>,
    /// A new boot intent; like `replace_installs`, it cancels the machine's
    /// pending installs.
    pub intent: Option<BootIntent>,
    /// Recorded in the transition log.
    pub transition: Transition,
    /// Upserted in the same transaction (the workflow that causes the change).
    pub workflow: Option<Workflow>,
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
    /// Deletes the machine and its MACs, installs, workflows, transitions and
    /// agent session (its events stay). NotFound if absent.
    async fn delete_machine(&self, id: MachineId) -> Result<()>;
    async fn get_machine(&self, id: MachineId) -> Result<Machine>;
    async fn find_machine_by_name(&self, name: &str) -> Result<Option<Machine>>;
    async fn find_machine_by_mac(&self, mac: MacAddr) -> Result<Option<Machine>>;
    async fn list_machines(&self) -> Result<Vec<Machine>>;
    /// The machines with these ids that exist, in no particular order (one
    /// read for a batch; the snapshot re-reads what a write changed).
    async fn get_machines(&self, ids: &[MachineId]) -> Result<Vec<Machine>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get_machine(*id).await {
                Ok(m) => out.push(m),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
    /// One page of machines by name: those named after `after` (all when
    /// `None`), at most `limit` (0: 1000).
    async fn list_machines_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<Machine>> {
        let limit = limit_or_default(limit) as usize;
        Ok(self
            .list_machines()
            .await?
            .into_iter()
            .filter(|m| after.is_none_or(|a| m.name.as_str() > a))
            .take(limit)
            .collect())
    }
    /// Enrols many machines in one transaction (bulk import). Each machine
    /// gets its own outcome, in order: a name or MAC already taken (by a
    /// stored machine or an earlier one in the batch) is that row's
    /// Conflict, and the others are still written. `Err` only when the
    /// transaction itself failed (nothing written).
    async fn create_machines(&self, machines: &[Machine]) -> Result<Vec<Result<()>>> {
        let mut out = Vec::with_capacity(machines.len());
        for m in machines {
            out.push(match self.create_machine(m).await {
                Ok(()) => Ok(()),
                Err(e @ (StoreError::Conflict(_) | StoreError::NotFound { .. })) => Err(e),
                Err(e) => return Err(e),
            });
        }
        Ok(out)
    }

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
    /// One page of leases in address order: those after `after`, at most
    /// `limit` (0: 1000).
    async fn list_leases_page(&self, after: Option<Ipv4Addr>, limit: u32) -> Result<Vec<Lease>> {
        let limit = limit_or_default(limit) as usize;
        Ok(self
            .list_leases()
            .await?
            .into_iter()
            .filter(|l| after.is_none_or(|a| l.ip > a))
            .take(limit)
            .collect())
    }

    // DHCPv6 leases, keyed by address, with the same contract as `put_leases`
    // (one transaction, durable on return, last lease per address wins). Listed
    // in address order. SQLite and PostgreSQL implement them; the defaults are
    // for test doubles that have no IPv6 leases.
    async fn put_leases6(&self, leases: &[Lease6]) -> Result<()> {
        let _ = leases;
        Err(StoreError::Unsupported {
            what: "IPv6 leases",
            backend: self.backend(),
        })
    }
    async fn list_leases6(&self) -> Result<Vec<Lease6>> {
        Err(StoreError::Unsupported {
            what: "IPv6 leases",
            backend: self.backend(),
        })
    }

    // Events: appended in one transaction, returned with their ids in order.
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>>;
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>>;
    /// Deletes the oldest events: every event recorded before `older_than`,
    /// and all but the newest `keep_newest`; at most `max_rows` in this call
    /// (one short transaction), so a caller prunes a large backlog in steps.
    /// Returns how many it deleted.
    async fn prune_events(
        &self,
        older_than: Option<DateTime<Utc>>,
        keep_newest: Option<u64>,
        max_rows: u32,
    ) -> Result<u64> {
        let _ = (older_than, keep_newest, max_rows);
        Err(StoreError::Unsupported {
            what: "event pruning",
            backend: self.backend(),
        })
    }

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
    /// The pending installs of these machines.
    async fn list_pending_installs_of(
        &self,
        machines: &[MachineId],
    ) -> Result<Vec<InstallRequest>> {
        let wanted: std::collections::HashSet<&MachineId> = machines.iter().collect();
        Ok(self
            .list_pending_installs()
            .await?
            .into_iter()
            .filter(|i| wanted.contains(&i.machine))
            .collect())
    }
    /// An installer callback, in one transaction: checks the token (a wrong
    /// one is NotFound, so tokens cannot be probed) and moves the install
    /// forward to `to`, `Installed` (the installer finished; the installed
    /// system has yet to report) or `Completed` (it did). Leaving `Pending`,
    /// it cancels the machine's other pending installs (its menu's other
    /// entries) and sets the machine's intent to local disk if it still
    /// references this install (its own intent or a menu entry). `Completed`
    /// also sets `completed_at`. Idempotent: an install already at `to` or
    /// past it returns `(install, false)`; a cancelled install is a Conflict;
    /// `to` of `Pending` or `Cancelled` is a Conflict too.
    async fn advance_install(
        &self,
        id: uuid::Uuid,
        token: &str,
        to: InstallState,
        at: DateTime<Utc>,
    ) -> Result<(InstallRequest, bool)>;
    /// [`Store::advance_install`] to `Completed`.
    async fn complete_install(
        &self,
        id: uuid::Uuid,
        token: &str,
        at: DateTime<Utc>,
    ) -> Result<(InstallRequest, bool)> {
        self.advance_install(id, token, InstallState::Completed, at)
            .await
    }

    // ---------- lifecycle ----------

    /// One transaction: checks `expect_state`, sets the machine's state,
    /// state_reason and state_changed_at (= `transition.at`), its intent when
    /// given (cancelling pending installs, as `replace_installs` does),
    /// appends `transition` and upserts `workflow`. NotFound if the machine is
    /// gone (or the workflow's machine is); Conflict when `expect_state` does
    /// not hold, or when `transition` is another machine's. The machine's
    /// `updated_at` becomes `transition.at`.
    async fn apply_lifecycle(&self, change: &LifecycleChange) -> Result<()>;
    /// Sets or clears the maintenance flag and appends `transition` (from and
    /// to are the machine's current state, read in the same transaction: the
    /// ones in `transition` are not used; the reason says what changed).
    /// `updated_at` becomes `transition.at`. NotFound if the machine is gone.
    async fn set_maintenance(
        &self,
        machine: MachineId,
        maintenance: Option<&Maintenance>,
        transition: &Transition,
    ) -> Result<()>;
    /// A machine's transitions, oldest first, at most `limit` (0: 1000) of the newest.
    async fn list_transitions(&self, machine: MachineId, limit: u32) -> Result<Vec<Transition>>;
    /// Stores inspection facts (and the time they were collected, which also
    /// becomes the machine's `updated_at`). NotFound if the machine is gone.
    async fn set_facts(&self, machine: MachineId, facts: &Facts, at: DateTime<Utc>) -> Result<()>;

    // ---------- workflows ----------

    /// Inserts or replaces the whole workflow (steps included). NotFound if
    /// its machine is gone.
    async fn put_workflow(&self, workflow: &Workflow) -> Result<()>;
    async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow>;
    /// Newest first.
    async fn list_workflows(&self, filter: &WorkflowFilter) -> Result<Vec<Workflow>>;
    /// [`Store::list_workflows`] continued: only workflows older than
    /// `before` (created_at, then id, as listed) when given.
    async fn list_workflows_before(
        &self,
        filter: &WorkflowFilter,
        before: Option<(DateTime<Utc>, WorkflowId)>,
    ) -> Result<Vec<Workflow>> {
        match before {
            None => self.list_workflows(filter).await,
            Some(_) => Err(StoreError::Unsupported {
                what: "workflow paging",
                backend: self.backend(),
            }),
        }
    }

    // ---------- agent sessions (one per machine) ----------

    /// Inserts or replaces the machine's session: a new token revokes the old
    /// one. Token hashes are unique across sessions (Conflict); NotFound if
    /// the machine is gone.
    async fn put_agent_session(&self, session: &AgentSession) -> Result<()>;
    async fn list_agent_sessions(&self) -> Result<Vec<AgentSession>>;
    /// NotFound if the machine has none.
    async fn delete_agent_session(&self, machine: MachineId) -> Result<()>;
    /// The machine's session, if it has one.
    async fn get_agent_session(&self, machine: MachineId) -> Result<Option<AgentSession>> {
        Ok(self
            .list_agent_sessions()
            .await?
            .into_iter()
            .find(|s| s.machine == machine))
    }

    // ---------- install access (migration 0008, see [`InstallAccess`]) ----------
    // SQLite and PostgreSQL implement them; the defaults are for test doubles.

    /// Records `access` unless the install has a record: the first binding
    /// wins (across servers too). Returns the record in force. NotFound if
    /// the install is gone.
    async fn bind_install_access(&self, access: &InstallAccess) -> Result<InstallAccess> {
        let _ = access;
        Err(unsupported_install_access(self.backend()))
    }
    /// The install's record, if its script or files were fetched.
    async fn get_install_access(&self, install: uuid::Uuid) -> Result<Option<InstallAccess>> {
        let _ = install;
        Err(unsupported_install_access(self.backend()))
    }
    /// Sets the given fields where the record has none yet; returns the
    /// record (None when the install has none).
    async fn amend_install_access(
        &self,
        install: uuid::Uuid,
        amend: InstallAccessAmend,
    ) -> Result<Option<InstallAccess>> {
        let _ = (install, amend);
        Err(unsupported_install_access(self.backend()))
    }
    /// The records of pending installs (what a starting server caches).
    async fn list_install_access(&self) -> Result<Vec<InstallAccess>> {
        Ok(Vec::new())
    }

    // ---------- several servers on one store (PostgreSQL) ----------
    // SQLite has one server per file (the state directory's lock): the
    // defaults say there is nothing to share.

    /// The changes other processes make from now on; `None` when the store
    /// has no other writers.
    async fn change_feed(&self) -> Result<Option<ChangeFeed>> {
        Ok(None)
    }
    /// The DHCP leases other processes write from now on (as
    /// `Change::Lease`, and `Change::Resync` after a gap); `None` when the
    /// store has no other writers.
    async fn lease_feed(&self) -> Result<Option<ChangeFeed>> {
        Ok(None)
    }
    /// Records `me` as alive now (the database's clock), and returns every
    /// member whose heartbeat is younger than `dead_after` (`me` included),
    /// by id. Rows dead for long are deleted.
    async fn member_heartbeat(
        &self,
        me: &Member,
        dead_after: std::time::Duration,
    ) -> Result<Vec<Member>> {
        let _ = (me, dead_after);
        Err(StoreError::Unsupported {
            what: "cluster membership",
            backend: self.backend(),
        })
    }
    /// Removes a member (a server shutting down), so its share moves at once.
    async fn member_leave(&self, id: uuid::Uuid) -> Result<()> {
        let _ = id;
        Ok(())
    }
    /// From now on, workflow writes are `owner`'s: a workflow another member
    /// claimed is refused (`Fenced`), one nobody claimed becomes `owner`'s.
    /// `None`: writes are not fenced (one server).
    fn set_workflow_owner(&self, owner: Option<uuid::Uuid>) {
        let _ = owner;
    }
    /// Claims an active workflow for `owner` when nobody live runs it
    /// (unclaimed, or claimed by a member not in `live`); true when `owner`
    /// runs it now.
    async fn claim_workflow(
        &self,
        id: WorkflowId,
        owner: uuid::Uuid,
        live: &[uuid::Uuid],
    ) -> Result<bool> {
        let _ = (id, owner, live);
        Ok(true)
    }
    /// Gives up `owner`'s claim on a workflow (it was accepted by a server
    /// that does not own the machine): the owner claims it.
    async fn release_workflow(&self, id: WorkflowId, owner: uuid::Uuid) -> Result<()> {
        let _ = (id, owner);
        Ok(())
    }
    /// Queued and running workflows: id, machine and the member running it.
    async fn active_workflow_owners(
        &self,
    ) -> Result<Vec<(WorkflowId, MachineId, Option<uuid::Uuid>)>> {
        Ok(self
            .list_workflows(&WorkflowFilter {
                machine: None,
                states: vec![WorkflowState::Queued, WorkflowState::Running],
                limit: u32::MAX,
            })
            .await?
            .into_iter()
            .map(|w| (w.id, w.machine, None))
            .collect())
    }
    /// Writes leases like [`Store::put_leases`], except where that would
    /// give an address to two clients or a client two addresses: a lease of
    /// an address another client holds (not expired, or declined and still
    /// held), and an offer or binding for a client that holds another
    /// unexpired binding (or, for an offer, another unexpired offer). Those
    /// are not written and come back as [`ClaimRefused`], with the lease in
    /// the way. A binding that is written ends the same client's offers of
    /// other addresses (the client took this one). Several servers allocating
    /// from one pool use it. The default (one server) writes everything.
    async fn claim_leases(&self, leases: &[Lease]) -> Result<Vec<ClaimRefused>> {
        self.put_leases(leases).await?;
        Ok(Vec::new())
    }

    // ---------- webhooks and their outbox ----------

    /// Inserts or replaces by name, keeping `created_at` of an existing one.
    async fn put_webhook(&self, webhook: &Webhook) -> Result<()>;
    async fn list_webhooks(&self) -> Result<Vec<Webhook>>;
    /// Deletes the webhook and its deliveries. NotFound if absent.
    async fn delete_webhook(&self, name: &str) -> Result<()>;
    /// Appends deliveries (their `id` is ignored) and returns them with ids,
    /// in one transaction; NotFound naming a webhook that does not exist.
    async fn enqueue_deliveries(&self, deliveries: &[Delivery]) -> Result<Vec<Delivery>>;
    /// Pending deliveries whose `next_attempt_at` is at or before `now`,
    /// oldest (first enqueued) first, at most `limit`.
    async fn due_deliveries(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Delivery>>;
    /// Replaces a delivery's state, attempts, next_attempt_at, last_status,
    /// last_error and delivered_at. NotFound if absent.
    async fn update_delivery(&self, delivery: &Delivery) -> Result<()>;
    /// Newest first; one webhook's or all; at most `limit` (0: 1000).
    async fn list_deliveries(&self, webhook: Option<&str>, limit: u32) -> Result<Vec<Delivery>>;

    // ---------- API tokens ----------
    // Keyed by name, found by the token's SHA-256 (unique). SQLite and
    // PostgreSQL implement them; the defaults are for test doubles.

    /// Conflict when the name is taken (or, by a collision, the hash).
    async fn create_api_token(&self, token: &ApiToken) -> Result<()> {
        let _ = token;
        Err(unsupported_tokens(self.backend()))
    }
    /// By name.
    async fn list_api_tokens(&self) -> Result<Vec<ApiToken>> {
        Err(unsupported_tokens(self.backend()))
    }
    /// The token whose SHA-256 (lower-case hex) this is, if any.
    async fn find_api_token(&self, sha256: &str) -> Result<Option<ApiToken>> {
        let _ = sha256;
        Err(unsupported_tokens(self.backend()))
    }
    /// Revokes (deletes) a token. NotFound if absent.
    async fn delete_api_token(&self, name: &str) -> Result<()> {
        let _ = name;
        Err(unsupported_tokens(self.backend()))
    }
    /// Sets a token's `last_used_at`; a missing name is not an error (it
    /// was revoked meanwhile).
    async fn touch_api_token(&self, name: &str, at: DateTime<Utc>) -> Result<()> {
        let _ = (name, at);
        Err(unsupported_tokens(self.backend()))
    }
}

fn unsupported_tokens(backend: &'static str) -> StoreError {
    StoreError::Unsupported {
        what: "API tokens",
        backend,
    }
}

fn unsupported_install_access(backend: &'static str) -> StoreError {
    StoreError::Unsupported {
        what: "install access records",
        backend,
    }
}

/// Token and state check of an install callback, shared by both backends:
/// `Ok(true)` when the install must move to `to`, `Ok(false)` when it is
/// already there or past it.
pub(crate) fn check_install_callback(
    install: &InstallRequest,
    token: &str,
    to: InstallState,
) -> Result<bool> {
    if !matches!(to, InstallState::Installed | InstallState::Completed) {
        return Err(StoreError::Conflict(format!(
            "an installer callback cannot move install {} to {}",
            install.id,
            to.as_str()
        )));
    }
    if !install.token_matches(token) {
        return Err(StoreError::NotFound {
            what: "install",
            key: install.id.to_string(),
        });
    }
    match install.state {
        InstallState::Cancelled => Err(StoreError::Conflict(format!(
            "install {} was cancelled (a newer install or an operator replaced it)",
            install.id
        ))),
        InstallState::Completed => Ok(false),
        InstallState::Installed => Ok(to == InstallState::Completed),
        InstallState::Pending => Ok(true),
    }
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

/// The default of 1000 rows for every listing whose `limit` is 0.
fn limit_or_default(limit: u32) -> i64 {
    if limit == 0 {
        WorkflowFilter::DEFAULT_LIMIT.into()
    } else {
        limit.into()
    }
}

/// `w` as the store keeps it: every timestamp, its steps' included, truncated
/// to milliseconds, so that the JSON body reads back equal to the columns and
/// to what `put_workflow` callers expect (`truncate_ms` of what they wrote).
/// Destructured field by field: a new timestamp field cannot be forgotten.
fn stored_workflow(w: &Workflow) -> Workflow {
    let Workflow {
        id,
        machine,
        name,
        lifecycle,
        state,
        started_from,
        params,
        steps,
        created_by,
        created_at,
        started_at,
        finished_at,
        updated_at,
        error,
        batch,
    } = w.clone();
    Workflow {
        id,
        machine,
        name,
        lifecycle,
        state,
        started_from,
        params,
        steps: steps.into_iter().map(stored_step).collect(),
        created_by,
        created_at: truncate_ms(created_at),
        started_at: started_at.map(truncate_ms),
        finished_at: finished_at.map(truncate_ms),
        updated_at: truncate_ms(updated_at),
        error,
        batch,
    }
}

fn stored_step(s: StepRun) -> StepRun {
    let StepRun {
        name,
        uses,
        with,
        after,
        timeout_secs,
        retry,
        state,
        attempts,
        attempt,
        started_at,
        attempt_started_at,
        finished_at,
        deadline,
        retry_at,
        waiting_for,
        error,
        output,
    } = s;
    StepRun {
        name,
        uses,
        with,
        after,
        timeout_secs,
        retry,
        state,
        attempts,
        attempt,
        started_at: started_at.map(truncate_ms),
        attempt_started_at: attempt_started_at.map(truncate_ms),
        finished_at: finished_at.map(truncate_ms),
        deadline: deadline.map(truncate_ms),
        retry_at: retry_at.map(truncate_ms),
        waiting_for,
        error,
        output,
    }
}

/// `m` as stored: `since` at millisecond precision (it lives inside JSON).
fn stored_maintenance(m: &Maintenance) -> Maintenance {
    Maintenance {
        since: truncate_ms(m.since),
        ..m.clone()
    }
}

/// The compare-and-set failure of [`Store::apply_lifecycle`].
fn state_conflict(
    name: &str,
    id: MachineId,
    current: ProvisionState,
    expected: ProvisionState,
) -> StoreError {
    StoreError::Conflict(format!(
        "machine {name} ({id}) is {current}, not {expected}: its state changed meanwhile"
    ))
}

/// A transition must belong to the machine it is written for.
fn check_transition_machine(machine: MachineId, transition: &Transition) -> Result<()> {
    if transition.machine != machine {
        return Err(StoreError::Conflict(format!(
            "a transition of machine {} cannot be recorded for machine {machine}",
            transition.machine
        )));
    }
    Ok(())
}

/// Two sessions may not share a token hash (a put that would is a bug or a
/// SHA-256 collision; neither must let one agent act as another machine).
fn token_conflict(machine: MachineId) -> StoreError {
    StoreError::Conflict(format!(
        "the agent token issued to machine {machine} is already another machine's token"
    ))
}

/// The first webhook a batch of deliveries names that is not in `existing`.
fn missing_webhook<'a>(deliveries: &'a [Delivery], existing: &[String]) -> Option<&'a str> {
    deliveries
        .iter()
        .map(|d| d.webhook.as_str())
        .find(|name| !existing.iter().any(|e| e == name))
}

/// `deliveries` as `enqueue_deliveries` returns them: with their new ids (in
/// order) and millisecond timestamps.
fn stored_deliveries(deliveries: &[Delivery], ids: &[i64]) -> Vec<Delivery> {
    deliveries
        .iter()
        .zip(ids)
        .map(|(d, &id)| Delivery {
            id,
            next_attempt_at: truncate_ms(d.next_attempt_at),
            created_at: truncate_ms(d.created_at),
            delivered_at: d.delivered_at.map(truncate_ms),
            ..d.clone()
        })
        .collect()
}

fn backend(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Backend { context, source }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
}

/// A row written for a machine that does not exist (a foreign key violation)
/// is NotFound naming that machine; other errors keep their context.
fn machine_write_error(
    context: &'static str,
    machine: MachineId,
) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| {
        if is_foreign_key_violation(&e) {
            StoreError::NotFound {
                what: "machine",
                key: machine.to_string(),
            }
        } else {
            backend(context)(e)
        }
    }
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

    #[test]
    fn listing_limits_default_to_1000() {
        for (limit, want) in [(0, 1000), (1, 1), (5000, 5000)] {
            assert_eq!(limit_or_default(limit), want, "{limit}");
        }
    }

    #[test]
    fn missing_webhook_is_the_first_unknown_name() {
        let d = |hook: &str| Delivery {
            id: 0,
            webhook: hook.into(),
            event_id: 1,
            event_kind: rackboot_core::EventKind::WorkflowFailed,
            body: "{}".into(),
            state: rackboot_core::DeliveryState::Pending,
            attempts: 0,
            next_attempt_at: DateTime::UNIX_EPOCH,
            last_status: None,
            last_error: None,
            created_at: DateTime::UNIX_EPOCH,
            delivered_at: None,
        };
        let existing = ["a".to_string(), "b".to_string()];
        for (batch, want) in [
            (vec![d("a"), d("b"), d("a")], None),
            (vec![d("a"), d("x"), d("y")], Some("x")),
            (vec![], None),
        ] {
            assert_eq!(missing_webhook(&batch, &existing), want, "{batch:?}");
        }
    }

    #[test]
    fn state_conflicts_name_the_machine_and_both_states() {
        let id = uuid::Uuid::nil();
        let msg = state_conflict(
            "web-1",
            id,
            ProvisionState::Deploying,
            ProvisionState::Available,
        )
        .to_string();
        assert_eq!(
            msg,
            format!(
                "machine web-1 ({id}) is deploying, not available: its state changed meanwhile"
            )
        );
    }

    #[test]
    fn stored_workflow_truncates_every_timestamp() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let step = StepRun {
            name: "s".into(),
            uses: "noop".into(),
            with: serde_json::Value::Null,
            after: vec![],
            timeout_secs: 1,
            retry: rackboot_core::RetryPolicy::default(),
            state: rackboot_core::StepState::Running,
            attempts: 1,
            attempt: None,
            started_at: Some(t),
            attempt_started_at: Some(t),
            finished_at: Some(t),
            deadline: Some(t),
            retry_at: Some(t),
            waiting_for: None,
            error: None,
            output: serde_json::Value::Null,
        };
        let w = Workflow {
            id: uuid::Uuid::nil(),
            machine: uuid::Uuid::nil(),
            name: "w".into(),
            lifecycle: rackboot_core::Lifecycle::None,
            state: WorkflowState::Running,
            started_from: ProvisionState::Active,
            params: serde_json::Value::Null,
            steps: vec![step],
            created_by: "test".into(),
            created_at: t,
            started_at: Some(t),
            finished_at: Some(t),
            updated_at: t,
            error: None,
            batch: None,
        };
        // All nine timestamps (four of the workflow, five of its step) have three
        // fractional digits.
        let json = serde_json::to_string(&stored_workflow(&w)).unwrap();
        assert_eq!(json.matches(".123Z").count(), 9, "{json}");
        assert!(!json.contains("123456789"), "{json}");
    }

    #[tokio::test]
    async fn open_rejects_unknown_schemes_naming_the_url() {
        let err = open("mysql://u:pw@h/db").await.err().unwrap().to_string();
        assert!(err.contains("mysql://u:***@h/db"), "{err}");
        assert!(err.contains("unsupported scheme"), "{err}");
    }
}
