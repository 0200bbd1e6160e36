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
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rackboot_core::{
    Bmc, BootIntent, Event, InstallRequest, InstallTemplate, Lease, MacAddr, Machine, MachineId,
    NewEvent, Profile, Selector,
};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use crate::codec;
use crate::{
    EventFilter, Result, Store, StoreError, backend, check_own_macs, dedup_leases,
    is_unique_violation, truncate_ms,
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

const MACHINE_COLUMNS: &str = "m.id, m.name, m.uuid, m.arch, m.labels, m.intent, m.bmc, m.bmc_password, m.created_at, m.updated_at, \
     (SELECT group_concat(mm.mac, ',' ORDER BY mm.ordinal) FROM machine_macs mm WHERE mm.machine_id = m.id) AS macs";

// Batches (DHCP leases, events) are written as one statement over a JSON array
// of rows (each an array of the column values) bound as a single parameter: one
// call into SQLite's worker thread whatever the batch size, and, being one
// statement, atomic without BEGIN/COMMIT (each of which is another round trip
// to that thread).
const LEASE_UPSERT: &str = "INSERT INTO leases (ip, mac, client_id, hostname, state, expires_at, subnet, updated_at) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7 \
     FROM json_each(?) WHERE true \
     ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, client_id = excluded.client_id, \
     hostname = excluded.hostname, state = excluded.state, expires_at = excluded.expires_at, \
     subnet = excluded.subnet, updated_at = excluded.updated_at";

// `-> 5` keeps the event's data as JSON text, whatever its type. No RETURNING:
// sqlx hands each returned row from its worker thread over a channel, which
// cost more than the insert itself; the ids come from last_insert_rowid() (see
// `append_events`).
const EVENT_INSERT: &str = "INSERT INTO events (at, kind, machine_id, mac, message, data) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value -> 5 \
     FROM json_each(?) ORDER BY key";

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
        let id = m.id.to_string();
        sqlx::query(
            "INSERT INTO machines (id, name, uuid, arch, labels, intent, bmc, bmc_password, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
        .execute(&mut *tx)
        .await?;
        Self::insert_macs(&mut tx, &id, &m.macs).await?;
        tx.commit().await
    }

    /// `Ok(false)` when no machine has this id.
    async fn try_update_machine(&self, m: &Machine) -> Result<bool, sqlx::Error> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let id = m.id.to_string();
        let updated = sqlx::query(
            "UPDATE machines SET name = $2, uuid = $3, arch = $4, labels = $5, intent = $6, updated_at = $7, \
             bmc = $8, bmc_password = $9 \
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
    async fn describe_conflict(
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

    fn machine_from_row(row: &SqliteRow) -> Result<Machine> {
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

    fn lease_from_row(row: &SqliteRow) -> Result<Lease> {
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
        let rows: Vec<_> = dedup_leases(leases)
            .into_iter()
            .map(|l| {
                (
                    l.ip.to_string(),
                    l.mac.map(|m| m.to_string()),
                    &l.client_id,
                    &l.hostname,
                    l.state.as_str(),
                    codec::millis(l.expires_at),
                    &l.subnet,
                    codec::millis(l.updated_at),
                )
            })
            .collect();
        sqlx::query(LEASE_UPSERT)
            .bind(codec::json_text(&rows))
            .execute(&self.writer)
            .await
            .map_err(backend("writing leases"))?;
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
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    codec::millis(e.at),
                    e.kind.as_str(),
                    e.machine.map(|m| m.to_string()),
                    e.mac.map(|m| m.to_string()),
                    &e.message,
                    &e.data,
                )
            })
            .collect();
        let done = sqlx::query(EVENT_INSERT)
            .bind(codec::json_text(&rows))
            .execute(&self.writer)
            .await
            .map_err(backend("appending events"))?;
        // One statement on the only writer connection: its rows got consecutive
        // ids (AUTOINCREMENT, array order) ending at the last.
        let n = events.len() as i64;
        if done.rows_affected() != n as u64 {
            return Err(StoreError::Corrupt {
                table: "events",
                detail: format!(
                    "inserted {} of {n} events in one statement",
                    done.rows_affected()
                ),
            });
        }
        let last = done.last_insert_rowid();
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

    async fn complete_install(
        &self,
        id: uuid::Uuid,
        token: &str,
        at: DateTime<Utc>,
    ) -> Result<(InstallRequest, bool)> {
        self.complete_install_impl(id, token, at).await
    }
}
