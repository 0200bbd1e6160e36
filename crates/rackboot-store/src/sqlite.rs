//! SQLite backend: the embedded default.
//!
//! Connections: one writer (a pool of exactly one connection, so writes are
//! serialised in-process and never fight over SQLite's single write lock) and a
//! small pool of readers; in WAL mode readers never block the writer or each other.
//! Write transactions start with `BEGIN IMMEDIATE` so a second process on the same
//! file waits on `busy_timeout` instead of failing mid-transaction; batch writes
//! (leases, events) are single statements, atomic on their own.
//!
//! Durability: WAL with `synchronous=NORMAL`. A commit has written its WAL frames
//! to the OS (write(2)) before it returns, so it survives a kill -9 of rackboot;
//! the WAL is fsynced at checkpoints, so a power loss can lose the last commits.
//!
//! An in-memory database lives on one connection, so it uses one pool for both.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rackboot_core::{
    AgentSession, Bmc, BootIntent, Delivery, Event, Facts, InstallRequest, InstallState,
    InstallTemplate, Lease, MacAddr, Machine, MachineId, Maintenance, NewEvent, Profile, Selector,
    Transition, Webhook, Workflow, WorkflowId,
};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use crate::codec;
use crate::{
    EventFilter, LifecycleChange, Result, Store, StoreError, WorkflowFilter, backend,
    check_own_macs, dedup_leases, is_unique_violation, stored_maintenance, truncate_ms,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a write waits for another process holding the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent readers (API listings, inventory reloads) on a file database.
const READERS: u32 = 4;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Background WAL checkpoints of a file database; stopped when the store drops.
    checkpointer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(task) = self.checkpointer.take() {
            task.abort();
        }
    }
}

/// How often the background task checkpoints the WAL into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Checkpoints the WAL from its own connection, so a commit (a DHCP ACK waiting
/// on its lease write) never pays for copying and fsyncing pages, which
/// SQLite's automatic checkpoint does on the committing connection.
async fn checkpoint_loop(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // PASSIVE never waits for readers or the writer; what it cannot copy now
        // is copied on a later tick.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!("SQLite WAL checkpoint failed: {e}");
        }
    }
}

pub(crate) const MACHINE_COLUMNS: &str = "m.id, m.name, m.uuid, m.arch, m.labels, m.intent, m.bmc, m.bmc_password, m.created_at, m.updated_at, \
     m.state, m.state_reason, m.state_changed_at, m.maintenance, m.facts, m.facts_at, \
     (SELECT group_concat(mm.mac, ',' ORDER BY mm.ordinal) FROM machine_macs mm WHERE mm.machine_id = m.id) AS macs";

// Batches (DHCP leases, events) are written as multi-row INSERTs with bound
// values. (They were one statement over a JSON array, which made SQLite parse
// and re-serialise every row: 40% of its worker's time under DHCP load.)
static LEASE_UPSERT: Batched = Batched {
    head: "INSERT INTO leases (ip, mac, client_id, hostname, state, expires_at, subnet, updated_at)",
    columns: 8,
    tail: "ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, client_id = excluded.client_id, \
     hostname = excluded.hostname, state = excluded.state, expires_at = excluded.expires_at, \
     subnet = excluded.subnet, updated_at = excluded.updated_at",
    texts: OnceLock::new(),
};

// No RETURNING: sqlx hands each returned row from its worker thread over a
// channel, which cost more than the insert itself; the ids come from
// last_insert_rowid() (see `append_events`).
static EVENT_INSERT: Batched = Batched {
    head: "INSERT INTO events (at, kind, machine_id, mac, message, data)",
    columns: 6,
    tail: "",
    texts: OnceLock::new(),
};

/// A multi-row INSERT: `head VALUES (?, ..), (?, ..) tail`.
pub(crate) struct Batched {
    pub(crate) head: &'static str,
    pub(crate) columns: usize,
    pub(crate) tail: &'static str,
    /// The statement for each of [`CHUNK_SIZES`], built on first use.
    pub(crate) texts: OnceLock<Vec<String>>,
}

/// A batch is written in chunks of these sizes, largest first: a few statements
/// per batch, and only these nine texts per table, so each is prepared once and
/// stays in sqlx's statement cache. 256 rows of 8 values stay far below SQLite's
/// 32,766 bound parameters.
const CHUNK_SIZES: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// How a batch of `n` rows is cut (sizes from [`CHUNK_SIZES`], largest first).
pub(crate) fn chunk_sizes(n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut rest = n;
    for size in CHUNK_SIZES {
        while rest >= size {
            sizes.push(size);
            rest -= size;
        }
    }
    sizes
}

pub(crate) type Insert = sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// `LEASE_UPSERT.sql(chunk.len())` with the chunk's values bound.
fn lease_rows(sql: &'static str, chunk: &[&Lease]) -> Insert {
    let mut q = sqlx::query(sql);
    for l in chunk {
        q = q
            .bind(l.ip.to_string())
            .bind(l.mac.map(|m| m.to_string()))
            .bind(l.client_id.clone())
            .bind(l.hostname.clone())
            .bind(l.state.as_str())
            .bind(codec::millis(l.expires_at))
            .bind(l.subnet.clone())
            .bind(codec::millis(l.updated_at));
    }
    q
}

/// `EVENT_INSERT.sql(chunk.len())` with the chunk's values bound.
fn event_rows(sql: &'static str, chunk: &[NewEvent]) -> Insert {
    let mut q = sqlx::query(sql);
    for e in chunk {
        q = q
            .bind(codec::millis(e.at))
            .bind(e.kind.as_str())
            .bind(e.machine.map(|m| m.to_string()))
            .bind(e.mac.map(|m| m.to_string()))
            .bind(e.message.clone())
            .bind(codec::json_text(&e.data));
    }
    q
}

impl Batched {
    /// The statement for `rows`, one of [`CHUNK_SIZES`].
    pub(crate) fn sql(&self, rows: usize) -> &str {
        let i = CHUNK_SIZES
            .iter()
            .position(|&n| n == rows)
            .expect("batches are cut into CHUNK_SIZES");
        &self
            .texts
            .get_or_init(|| CHUNK_SIZES.iter().map(|&n| self.text(n)).collect())[i]
    }

    fn text(&self, rows: usize) -> String {
        let row = format!("({})", vec!["?"; self.columns].join(", "));
        format!(
            "{} VALUES {} {}",
            self.head,
            vec![row; rows].join(", "),
            self.tail
        )
    }
}

impl SqliteStore {
    /// Opens (creating the file and its parent directories) and migrates a database file.
    pub async fn open_file(path: &Path) -> Result<SqliteStore> {
        let url = format!("sqlite:{}", path.display());
        let open_err = |what: &'static str| {
            let url = url.clone();
            move |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
                url,
                what,
                source: e,
            }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| open_err("creating parent directory")(e.into()))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // Commits never checkpoint; `checkpoint_loop` does (see there).
        let writer_options = options.clone().pragma("wal_autocheckpoint", "0");
        // The writer connection stays open for the life of the store: closing the
        // last connection would checkpoint and delete the WAL under the readers.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // The connection never leaves the process: a ping before every
            // write would be one more round trip to SQLite's worker thread.
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_options)
            .await
            .map_err(|e| open_err("opening database file")(e.into()))?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| open_err("running migrations")(e.into()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.clone().pragma("query_only", "ON"))
            .await
            .map_err(|e| open_err("opening reader connections")(e.into()))?;
        let checkpoint_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| open_err("opening checkpoint connection")(e.into()))?;
        tracing::debug!(path = %path.display(), "opened SQLite store");
        Ok(SqliteStore {
            writer,
            reader,
            checkpointer: Some(tokio::spawn(checkpoint_loop(checkpoint_pool))),
        })
    }

    /// A migrated in-memory database on a single connection.
    pub async fn open_in_memory() -> Result<SqliteStore> {
        let url = "sqlite::memory:";
        let open_err = |what: &'static str| {
            move |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
                url: url.to_string(),
                what,
                source: e,
            }
        };
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| open_err("opening in-memory database")(e.into()))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| open_err("running migrations")(e.into()))?;
        Ok(SqliteStore {
            writer: pool.clone(),
            reader: pool,
            checkpointer: None,
        })
    }

    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend("beginning write transaction"))
    }

    async fn insert_macs(
        tx: &mut sqlx::SqliteConnection,
        id: &str,
        macs: &[MacAddr],
    ) -> Result<(), sqlx::Error> {
        for (ordinal, mac) in macs.iter().enumerate() {
            sqlx::query("INSERT INTO machine_macs (mac, machine_id, ordinal) VALUES ($1, $2, $3)")
                .bind(mac.to_string())
                .bind(id)
                .bind(ordinal as i64)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    async fn try_create_machine(&self, m: &Machine) -> Result<(), sqlx::Error> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Self::insert_machine(&mut tx, m).await?;
        tx.commit().await
    }

    /// The machine's row and its MACs, inside the caller's transaction.
    pub(crate) async fn insert_machine(
        tx: &mut sqlx::SqliteConnection,
        m: &Machine,
    ) -> Result<(), sqlx::Error> {
        let id = m.id.to_string();
        sqlx::query(
            "INSERT INTO machines (id, name, uuid, arch, labels, intent, bmc, bmc_password, created_at, updated_at, \
             state, state_reason, state_changed_at, maintenance, facts, facts_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&id)
        .bind(&m.name)
        .bind(m.uuid.map(|u| u.to_string()))
        .bind(m.arch.map(|a| a.as_str()))
        .bind(codec::json_text(&m.labels))
        .bind(codec::json_text(&m.intent))
        .bind(m.bmc.as_ref().map(codec::json_text))
        .bind(m.bmc.as_ref().and_then(|b| b.sealed_password.clone()))
        .bind(codec::millis(m.created_at))
        .bind(codec::millis(m.updated_at))
        .bind(m.state.as_str())
        .bind(&m.state_reason)
        .bind(m.state_changed_at.map(codec::millis))
        .bind(m.maintenance.as_ref().map(|x| codec::json_text(&stored_maintenance(x))))
        .bind(m.facts.as_ref().map(codec::json_text))
        .bind(m.facts_at.map(codec::millis))
        .execute(&mut *tx)
        .await?;
        Self::insert_macs(tx, &id, &m.macs).await
    }

    /// `Ok(false)` when no machine has this id.
    async fn try_update_machine(&self, m: &Machine) -> Result<bool, sqlx::Error> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let id = m.id.to_string();
        let updated = sqlx::query(
            "UPDATE machines SET name = $2, uuid = $3, arch = $4, labels = $5, intent = $6, updated_at = $7, \
             bmc = $8, bmc_password = $9, state = $10, state_reason = $11, state_changed_at = $12, \
             maintenance = $13, facts = $14, facts_at = $15 \
             WHERE id = $1",
        )
        .bind(&id)
        .bind(&m.name)
        .bind(m.uuid.map(|u| u.to_string()))
        .bind(m.arch.map(|a| a.as_str()))
        .bind(codec::json_text(&m.labels))
        .bind(codec::json_text(&m.intent))
        .bind(codec::millis(m.updated_at))
        .bind(m.bmc.as_ref().map(codec::json_text))
        .bind(m.bmc.as_ref().and_then(|b| b.sealed_password.clone()))
        .bind(m.state.as_str())
        .bind(&m.state_reason)
        .bind(m.state_changed_at.map(codec::millis))
        .bind(m.maintenance.as_ref().map(|x| codec::json_text(&stored_maintenance(x))))
        .bind(m.facts.as_ref().map(codec::json_text))
        .bind(m.facts_at.map(codec::millis))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM machine_macs WHERE machine_id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        Self::insert_macs(&mut tx, &id, &m.macs).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Names what a machine write collided with. Runs after the failed transaction
    /// is gone (the in-memory store has a single connection).
    pub(crate) async fn describe_conflict(
        &self,
        m: &Machine,
        creating: bool,
        cause: sqlx::Error,
    ) -> StoreError {
        let id = m.id.to_string();
        if creating {
            match sqlx::query_scalar::<_, String>("SELECT name FROM machines WHERE id = $1")
                .bind(&id)
                .fetch_optional(&self.reader)
                .await
            {
                Ok(Some(name)) => {
                    return StoreError::Conflict(format!(
                        "machine id {id} already exists (machine {name})"
                    ));
                }
                Ok(None) => {}
                Err(e) => return backend("looking up a machine conflict")(e),
            }
        }
        match sqlx::query_scalar::<_, String>(
            "SELECT id FROM machines WHERE name = $1 AND id <> $2",
        )
        .bind(&m.name)
        .bind(&id)
        .fetch_optional(&self.reader)
        .await
        {
            Ok(Some(owner)) => {
                return StoreError::Conflict(format!(
                    "machine name {:?} already belongs to machine {owner}",
                    m.name
                ));
            }
            Ok(None) => {}
            Err(e) => return backend("looking up a machine conflict")(e),
        }
        for mac in &m.macs {
            match sqlx::query_scalar::<_, String>(
                "SELECT m.name FROM machine_macs mm JOIN machines m ON m.id = mm.machine_id \
                 WHERE mm.mac = $1 AND mm.machine_id <> $2",
            )
            .bind(mac.to_string())
            .bind(&id)
            .fetch_optional(&self.reader)
            .await
            {
                Ok(Some(owner)) => {
                    return StoreError::Conflict(format!(
                        "MAC {mac} already belongs to machine {owner}"
                    ));
                }
                Ok(None) => {}
                Err(e) => return backend("looking up a machine conflict")(e),
            }
        }
        // The other machine went away in between; report what the database said.
        StoreError::Conflict(format!(
            "machine {} conflicts with another machine: {cause}",
            m.name
        ))
    }

    pub(crate) fn machine_from_row(row: &SqliteRow) -> Result<Machine> {
        let get = |e| backend("decoding a machine row")(e);
        let t = "machines";
        let macs: Option<String> = row.try_get("macs").map_err(get)?;
        let sealed_password: Option<String> = row.try_get("bmc_password").map_err(get)?;
        Ok(Machine {
            id: codec::uuid(t, "id", &row.try_get::<String, _>("id").map_err(get)?)?,
            name: row.try_get("name").map_err(get)?,
            macs: macs
                .as_deref()
                .unwrap_or("")
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| codec::mac("machine_macs", s))
                .collect::<Result<_>>()?,
            uuid: row
                .try_get::<Option<String>, _>("uuid")
                .map_err(get)?
                .map(|u| codec::uuid(t, "uuid", &u))
                .transpose()?,
            arch: row
                .try_get::<Option<String>, _>("arch")
                .map_err(get)?
                .map(|a| codec::arch(t, &a))
                .transpose()?,
            labels: codec::labels(t, &row.try_get::<String, _>("labels").map_err(get)?)?,
            intent: codec::intent(t, &row.try_get::<String, _>("intent").map_err(get)?)?,
            bmc: row
                .try_get::<Option<String>, _>("bmc")
                .map_err(get)?
                .map(|text| codec::parse_json::<Bmc>(t, "bmc", &text))
                .transpose()?
                .map(|bmc| Bmc {
                    sealed_password: sealed_password.clone(),
                    ..bmc
                }),
            state: codec::provision_state(
                t,
                "state",
                &row.try_get::<String, _>("state").map_err(get)?,
            )?,
            state_reason: row.try_get("state_reason").map_err(get)?,
            state_changed_at: row
                .try_get::<Option<i64>, _>("state_changed_at")
                .map_err(get)?
                .map(|ms| codec::from_millis(t, ms))
                .transpose()?,
            maintenance: row
                .try_get::<Option<String>, _>("maintenance")
                .map_err(get)?
                .map(|text| codec::parse_json(t, "maintenance", &text))
                .transpose()?,
            facts: row
                .try_get::<Option<String>, _>("facts")
                .map_err(get)?
                .map(|text| codec::parse_json(t, "facts", &text))
                .transpose()?,
            facts_at: row
                .try_get::<Option<i64>, _>("facts_at")
                .map_err(get)?
                .map(|ms| codec::from_millis(t, ms))
                .transpose()?,
            created_at: codec::from_millis(t, row.try_get("created_at").map_err(get)?)?,
            updated_at: codec::from_millis(t, row.try_get("updated_at").map_err(get)?)?,
        })
    }

    fn profile_from_row(row: &SqliteRow) -> Result<Profile> {
        let get = |e| backend("decoding a profile row")(e);
        let t = "profiles";
        Ok(Profile {
            name: row.try_get("name").map_err(get)?,
            description: row.try_get("description").map_err(get)?,
            kernel: row.try_get("kernel").map_err(get)?,
            initrds: codec::parse_json(
                t,
                "initrds",
                &row.try_get::<String, _>("initrds").map_err(get)?,
            )?,
            cmdline: row.try_get("cmdline").map_err(get)?,
            ipxe_script: row.try_get("ipxe_script").map_err(get)?,
            loader: codec::loader(&row.try_get::<String, _>("loader").map_err(get)?)?,
            created_at: codec::from_millis(t, row.try_get("created_at").map_err(get)?)?,
            updated_at: codec::from_millis(t, row.try_get("updated_at").map_err(get)?)?,
        })
    }

    pub(crate) fn lease_from_row(row: &SqliteRow) -> Result<Lease> {
        let get = |e| backend("decoding a lease row")(e);
        let t = "leases";
        Ok(Lease {
            ip: codec::ipv4(t, &row.try_get::<String, _>("ip").map_err(get)?)?,
            mac: row
                .try_get::<Option<String>, _>("mac")
                .map_err(get)?
                .map(|m| codec::mac(t, &m))
                .transpose()?,
            client_id: row.try_get("client_id").map_err(get)?,
            hostname: row.try_get("hostname").map_err(get)?,
            state: codec::lease_state(&row.try_get::<String, _>("state").map_err(get)?)?,
            expires_at: codec::from_millis(t, row.try_get("expires_at").map_err(get)?)?,
            subnet: row.try_get("subnet").map_err(get)?,
            updated_at: codec::from_millis(t, row.try_get("updated_at").map_err(get)?)?,
        })
    }

    fn event_from_row(row: &SqliteRow) -> Result<Event> {
        let get = |e| backend("decoding an event row")(e);
        let t = "events";
        Ok(Event {
            id: row.try_get("id").map_err(get)?,
            at: codec::from_millis(t, row.try_get("at").map_err(get)?)?,
            kind: codec::event_kind(&row.try_get::<String, _>("kind").map_err(get)?)?,
            machine: row
                .try_get::<Option<String>, _>("machine_id")
                .map_err(get)?
                .map(|u| codec::uuid(t, "machine_id", &u))
                .transpose()?,
            mac: row
                .try_get::<Option<String>, _>("mac")
                .map_err(get)?
                .map(|m| codec::mac(t, &m))
                .transpose()?,
            message: row.try_get("message").map_err(get)?,
            data: codec::parse_json(t, "data", &row.try_get::<String, _>("data").map_err(get)?)?,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_machine(&self, machine: &Machine) -> Result<()> {
        check_own_macs(machine)?;
        match self.try_create_machine(machine).await {
            Ok(()) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(self.describe_conflict(machine, true, e).await)
            }
            Err(e) => Err(backend("creating a machine")(e)),
        }
    }

    async fn update_machine(&self, machine: &Machine) -> Result<()> {
        check_own_macs(machine)?;
        match self.try_update_machine(machine).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StoreError::NotFound {
                what: "machine",
                key: machine.id.to_string(),
            }),
            Err(e) if is_unique_violation(&e) => {
                Err(self.describe_conflict(machine, false, e).await)
            }
            Err(e) => Err(backend("updating a machine")(e)),
        }
    }

    async fn delete_machine(&self, id: MachineId) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM machines WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend("deleting a machine"))?;
        tx.commit().await.map_err(backend("deleting a machine"))?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "machine",
                key: id.to_string(),
            });
        }
        Ok(())
    }

    async fn get_machine(&self, id: MachineId) -> Result<Machine> {
        let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines m WHERE m.id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend("reading a machine"))?;
        match row {
            Some(row) => Self::machine_from_row(&row),
            None => Err(StoreError::NotFound {
                what: "machine",
                key: id.to_string(),
            }),
        }
    }

    async fn find_machine_by_name(&self, name: &str) -> Result<Option<Machine>> {
        let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines m WHERE m.name = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend("finding a machine by name"))?
            .map(|row| Self::machine_from_row(&row))
            .transpose()
    }

    async fn find_machine_by_mac(&self, mac: MacAddr) -> Result<Option<Machine>> {
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machine_macs f JOIN machines m ON m.id = f.machine_id \
             WHERE f.mac = $1"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(mac.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend("finding a machine by MAC"))?
            .map(|row| Self::machine_from_row(&row))
            .transpose()
    }

    async fn list_machines(&self) -> Result<Vec<Machine>> {
        let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines m ORDER BY m.name");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await
            .map_err(backend("listing machines"))?
            .iter()
            .map(Self::machine_from_row)
            .collect()
    }

    async fn get_machines(&self, ids: &[MachineId]) -> Result<Vec<Machine>> {
        self.get_machines_impl(ids).await
    }

    async fn list_machines_page(&self, after: Option<&str>, limit: u32) -> Result<Vec<Machine>> {
        self.list_machines_page_impl(after, limit).await
    }

    async fn create_machines(&self, machines: &[Machine]) -> Result<Vec<Result<()>>> {
        self.create_machines_impl(machines).await
    }

    async fn list_leases_page(&self, after: Option<Ipv4Addr>, limit: u32) -> Result<Vec<Lease>> {
        self.list_leases_page_impl(after, limit).await
    }

    async fn prune_events(
        &self,
        older_than: Option<DateTime<Utc>>,
        keep_newest: Option<u64>,
        max_rows: u32,
    ) -> Result<u64> {
        self.prune_events_impl(older_than, keep_newest, max_rows)
            .await
    }

    async fn list_pending_installs_of(
        &self,
        machines: &[MachineId],
    ) -> Result<Vec<InstallRequest>> {
        self.list_pending_installs_of_impl(machines).await
    }

    async fn list_workflows_before(
        &self,
        filter: &WorkflowFilter,
        before: Option<(DateTime<Utc>, WorkflowId)>,
    ) -> Result<Vec<Workflow>> {
        self.list_workflows_before_impl(filter, before).await
    }

    async fn put_profile(&self, p: &Profile) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // An existing profile keeps its created_at.
        sqlx::query(
            "INSERT INTO profiles (name, description, kernel, initrds, cmdline, ipxe_script, loader, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (name) DO UPDATE SET description = excluded.description, kernel = excluded.kernel, \
             initrds = excluded.initrds, cmdline = excluded.cmdline, ipxe_script = excluded.ipxe_script, \
             loader = excluded.loader, updated_at = excluded.updated_at",
        )
        .bind(&p.name)
        .bind(&p.description)
        .bind(&p.kernel)
        .bind(codec::json_text(&p.initrds))
        .bind(&p.cmdline)
        .bind(&p.ipxe_script)
        .bind(codec::loader_text(p.loader))
        .bind(codec::millis(p.created_at))
        .bind(codec::millis(p.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(backend("writing a profile"))?;
        tx.commit().await.map_err(backend("writing a profile"))
    }

    async fn delete_profile(&self, name: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM profiles WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(backend("deleting a profile"))?;
        tx.commit().await.map_err(backend("deleting a profile"))?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "profile",
                key: name.to_string(),
            });
        }
        Ok(())
    }

    async fn get_profile(&self, name: &str) -> Result<Profile> {
        let row = sqlx::query("SELECT * FROM profiles WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend("reading a profile"))?;
        match row {
            Some(row) => Self::profile_from_row(&row),
            None => Err(StoreError::NotFound {
                what: "profile",
                key: name.to_string(),
            }),
        }
    }

    async fn list_profiles(&self) -> Result<Vec<Profile>> {
        sqlx::query("SELECT * FROM profiles ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(backend("listing profiles"))?
            .iter()
            .map(Self::profile_from_row)
            .collect()
    }

    async fn put_selector(&self, s: &Selector) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO selectors (name, profile, matches) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET profile = excluded.profile, matches = excluded.matches",
        )
        .bind(&s.name)
        .bind(&s.profile)
        .bind(codec::json_text(&s.matches))
        .execute(&mut *tx)
        .await
        .map_err(backend("writing a selector"))?;
        tx.commit().await.map_err(backend("writing a selector"))
    }

    async fn delete_selector(&self, name: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM selectors WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(backend("deleting a selector"))?;
        tx.commit().await.map_err(backend("deleting a selector"))?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "selector",
                key: name.to_string(),
            });
        }
        Ok(())
    }

    async fn list_selectors(&self) -> Result<Vec<Selector>> {
        let rows = sqlx::query("SELECT name, profile, matches FROM selectors ORDER BY name")
            .fetch_all(&self.reader)
            .await
            .map_err(backend("listing selectors"))?;
        rows.iter()
            .map(|row| {
                let get = |e| backend("decoding a selector row")(e);
                Ok(Selector {
                    name: row.try_get("name").map_err(get)?,
                    profile: row.try_get("profile").map_err(get)?,
                    matches: codec::parse_json(
                        "selectors",
                        "matches",
                        &row.try_get::<String, _>("matches").map_err(get)?,
                    )?,
                })
            })
            .collect()
    }

    async fn put_leases(&self, leases: &[Lease]) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let leases = dedup_leases(leases);
        let sizes = chunk_sizes(leases.len());
        let bind = lease_rows;
        let err = backend("writing leases");
        if let [size] = sizes[..] {
            // One statement is atomic by itself: no BEGIN/COMMIT round trips.
            bind(LEASE_UPSERT.sql(size), &leases)
                .execute(&self.writer)
                .await
                .map_err(err)?;
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let mut rest = &leases[..];
        for size in sizes {
            let (chunk, more) = rest.split_at(size);
            bind(LEASE_UPSERT.sql(size), chunk)
                .execute(&mut *tx)
                .await
                .map_err(backend("writing leases"))?;
            rest = more;
        }
        tx.commit().await.map_err(err)?;
        Ok(())
    }

    async fn delete_lease(&self, ip: Ipv4Addr) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM leases WHERE ip = $1")
            .bind(ip.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend("deleting a lease"))?;
        tx.commit().await.map_err(backend("deleting a lease"))?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "lease",
                key: ip.to_string(),
            });
        }
        Ok(())
    }

    async fn put_leases6(&self, leases: &[crate::Lease6]) -> Result<()> {
        self.put_leases6_impl(leases).await
    }

    async fn list_leases6(&self) -> Result<Vec<crate::Lease6>> {
        self.list_leases6_impl().await
    }

    async fn list_leases(&self) -> Result<Vec<Lease>> {
        let mut leases = sqlx::query("SELECT * FROM leases")
            .fetch_all(&self.reader)
            .await
            .map_err(backend("listing leases"))?
            .iter()
            .map(Self::lease_from_row)
            .collect::<Result<Vec<_>>>()?;
        // Text keys sort "10.0.0.10" before "10.0.0.2"; order by address instead.
        leases.sort_by_key(|l| l.ip);
        Ok(leases)
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let events: Vec<NewEvent> = events
            .into_iter()
            .map(|mut e| {
                e.at = truncate_ms(e.at);
                e
            })
            .collect();
        let sizes = chunk_sizes(events.len());
        let bind = event_rows;
        let err = backend("appending events");
        let (inserted, last) = if let [size] = sizes[..] {
            let done = bind(EVENT_INSERT.sql(size), &events)
                .execute(&self.writer)
                .await
                .map_err(err)?;
            (done.rows_affected(), done.last_insert_rowid())
        } else {
            let mut tx = self.begin_write().await?;
            let (mut inserted, mut last) = (0, 0);
            let mut rest = &events[..];
            for size in sizes {
                let (chunk, more) = rest.split_at(size);
                let done = bind(EVENT_INSERT.sql(size), chunk)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend("appending events"))?;
                inserted += done.rows_affected();
                last = done.last_insert_rowid();
                rest = more;
            }
            tx.commit().await.map_err(err)?;
            (inserted, last)
        };
        // One transaction on the only writer connection: its rows got consecutive
        // ids (AUTOINCREMENT, VALUES order) ending at the last.
        let n = events.len() as i64;
        if inserted != n as u64 {
            return Err(StoreError::Corrupt {
                table: "events",
                detail: format!("inserted {inserted} of {n} events in one transaction"),
            });
        }
        let ids = last - n + 1..=last;
        Ok(events
            .into_iter()
            .zip(ids)
            .map(|(e, id)| e.with_id(id))
            .collect())
    }

    async fn list_events(&self, f: &EventFilter) -> Result<Vec<Event>> {
        // One fixed statement per filter shape, so each is prepared once and uses its index.
        let sql = match (f.machine.is_some(), f.mac.is_some()) {
            (false, false) => "SELECT * FROM events WHERE id > $1 ORDER BY id LIMIT $2",
            (true, false) => {
                "SELECT * FROM events WHERE id > $1 AND (machine_id = $3 OR mac IN \
                 (SELECT mac FROM machine_macs WHERE machine_id = $3)) ORDER BY id LIMIT $2"
            }
            (false, true) => "SELECT * FROM events WHERE id > $1 AND mac = $3 ORDER BY id LIMIT $2",
            (true, true) => {
                "SELECT * FROM events WHERE id > $1 AND mac = $4 AND (machine_id = $3 OR mac IN \
                 (SELECT mac FROM machine_macs WHERE machine_id = $3)) ORDER BY id LIMIT $2"
            }
        };
        let mut q = sqlx::query(sql)
            .bind(f.after_id.unwrap_or(0))
            .bind(f.effective_limit());
        if let Some(machine) = f.machine {
            q = q.bind(machine.to_string());
        }
        if let Some(mac) = f.mac {
            q = q.bind(mac.to_string());
        }
        q.fetch_all(&self.reader)
            .await
            .map_err(backend("listing events"))?
            .iter()
            .map(Self::event_from_row)
            .collect()
    }

    async fn put_template(&self, template: &InstallTemplate) -> Result<()> {
        self.put_template_impl(template).await
    }

    async fn get_template(&self, name: &str) -> Result<InstallTemplate> {
        self.get_template_impl(name).await
    }

    async fn list_templates(&self) -> Result<Vec<InstallTemplate>> {
        self.list_templates_impl().await
    }

    async fn delete_template(&self, name: &str) -> Result<()> {
        self.delete_template_impl(name).await
    }

    async fn replace_installs(
        &self,
        machine: MachineId,
        installs: &[InstallRequest],
        intent: &BootIntent,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.replace_installs_impl(machine, installs, intent, at)
            .await
    }

    async fn get_install(&self, id: uuid::Uuid) -> Result<InstallRequest> {
        self.get_install_impl(id).await
    }

    async fn list_installs(&self, machine: Option<MachineId>) -> Result<Vec<InstallRequest>> {
        self.list_installs_impl(machine).await
    }

    async fn list_pending_installs(&self) -> Result<Vec<InstallRequest>> {
        self.list_pending_installs_impl().await
    }

    async fn advance_install(
        &self,
        id: uuid::Uuid,
        token: &str,
        to: InstallState,
        at: DateTime<Utc>,
    ) -> Result<(InstallRequest, bool)> {
        self.advance_install_impl(id, token, to, at).await
    }

    async fn apply_lifecycle(&self, change: &LifecycleChange) -> Result<()> {
        self.apply_lifecycle_impl(change).await
    }

    async fn set_maintenance(
        &self,
        machine: MachineId,
        maintenance: Option<&Maintenance>,
        transition: &Transition,
    ) -> Result<()> {
        self.set_maintenance_impl(machine, maintenance, transition)
            .await
    }

    async fn list_transitions(&self, machine: MachineId, limit: u32) -> Result<Vec<Transition>> {
        self.list_transitions_impl(machine, limit).await
    }

    async fn set_facts(&self, machine: MachineId, facts: &Facts, at: DateTime<Utc>) -> Result<()> {
        self.set_facts_impl(machine, facts, at).await
    }

    async fn put_workflow(&self, workflow: &Workflow) -> Result<()> {
        self.put_workflow_impl(workflow).await
    }

    async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow> {
        self.get_workflow_impl(id).await
    }

    async fn list_workflows(&self, filter: &WorkflowFilter) -> Result<Vec<Workflow>> {
        self.list_workflows_impl(filter).await
    }

    async fn put_agent_session(&self, session: &AgentSession) -> Result<()> {
        self.put_agent_session_impl(session).await
    }

    async fn list_agent_sessions(&self) -> Result<Vec<AgentSession>> {
        self.list_agent_sessions_impl().await
    }

    async fn delete_agent_session(&self, machine: MachineId) -> Result<()> {
        self.delete_agent_session_impl(machine).await
    }

    async fn bind_install_access(
        &self,
        access: &crate::InstallAccess,
    ) -> Result<crate::InstallAccess> {
        self.bind_install_access_impl(access).await
    }

    async fn get_install_access(
        &self,
        install: uuid::Uuid,
    ) -> Result<Option<crate::InstallAccess>> {
        self.get_install_access_impl(install).await
    }

    async fn amend_install_access(
        &self,
        install: uuid::Uuid,
        amend: crate::InstallAccessAmend,
    ) -> Result<Option<crate::InstallAccess>> {
        self.amend_install_access_impl(install, amend).await
    }

    async fn list_install_access(&self) -> Result<Vec<crate::InstallAccess>> {
        self.list_install_access_impl().await
    }

    async fn put_webhook(&self, webhook: &Webhook) -> Result<()> {
        self.put_webhook_impl(webhook).await
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        self.list_webhooks_impl().await
    }

    async fn delete_webhook(&self, name: &str) -> Result<()> {
        self.delete_webhook_impl(name).await
    }

    async fn enqueue_deliveries(&self, deliveries: &[Delivery]) -> Result<Vec<Delivery>> {
        self.enqueue_deliveries_impl(deliveries).await
    }

    async fn due_deliveries(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Delivery>> {
        self.due_deliveries_impl(now, limit).await
    }

    async fn update_delivery(&self, delivery: &Delivery) -> Result<()> {
        self.update_delivery_impl(delivery).await
    }

    async fn list_deliveries(&self, webhook: Option<&str>, limit: u32) -> Result<Vec<Delivery>> {
        self.list_deliveries_impl(webhook, limit).await
    }

    async fn create_api_token(&self, token: &rackboot_core::ApiToken) -> Result<()> {
        self.create_api_token_impl(token).await
    }

    async fn list_api_tokens(&self) -> Result<Vec<rackboot_core::ApiToken>> {
        self.list_api_tokens_impl().await
    }

    async fn find_api_token(&self, sha256: &str) -> Result<Option<rackboot_core::ApiToken>> {
        self.find_api_token_impl(sha256).await
    }

    async fn delete_api_token(&self, name: &str) -> Result<()> {
        self.delete_api_token_impl(name).await
    }

    async fn touch_api_token(&self, name: &str, at: DateTime<Utc>) -> Result<()> {
        self.touch_api_token_impl(name, at).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cut_into_few_cached_sizes() {
        for (n, sizes) in [
            (0, vec![]),
            (1, vec![1]),
            (3, vec![2, 1]),
            (256, vec![256]),
            (1005, vec![256, 256, 256, 128, 64, 32, 8, 4, 1]),
        ] {
            assert_eq!(chunk_sizes(n), sizes, "{n} rows");
        }
    }

    #[test]
    fn multi_row_statement_text() {
        let b = Batched {
            head: "INSERT INTO t (a, b)",
            columns: 2,
            tail: "ON CONFLICT DO NOTHING",
            texts: OnceLock::new(),
        };
        assert_eq!(
            b.sql(2),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?) ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            b.text(3),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) ON CONFLICT DO NOTHING"
        );
    }
}
