//! PostgreSQL backend, for several rackboot servers sharing one fleet.
//!
//! Native column types (uuid, timestamptz, jsonb, inet). Batches (`put_leases`,
//! `append_events`) are one statement over `UNNEST`ed arrays: one round trip per
//! batch instead of one per row. Migrations take sqlx's advisory lock, so servers
//! starting together migrate once.

use std::net::Ipv4Addr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rackboot_core::{
    AgentSession, Bmc, BootIntent, Delivery, Event, Facts, InstallRequest, InstallState,
    InstallTemplate, Lease, MacAddr, Machine, MachineId, Maintenance, NewEvent, Profile, Selector,
    Transition, Webhook, Workflow, WorkflowId,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};

use crate::codec;
use crate::{
    EventFilter, LifecycleChange, Result, Store, StoreError, WorkflowFilter, backend,
    check_own_macs, dedup_leases, is_unique_violation, redact_url, stored_maintenance, truncate_ms,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

const MAX_CONNECTIONS: u32 = 16;
/// Advisory lock key serialising event appends ("rbevents" in ASCII).
const EVENTS_APPEND_LOCK: i64 = 0x7262_6576_656e_7473;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PgStore {
    pool: PgPool,
    /// This process's `application_name`: the change feed skips the
    /// notifications of its own writes by it.
    origin: String,
    /// The cluster incarnation workflow writes are fenced to (see
    /// [`Store::set_workflow_owner`]).
    workflow_owner: std::sync::RwLock<Option<uuid::Uuid>>,
}

pub(crate) const MACHINE_COLUMNS: &str = "m.id, m.name, m.uuid, m.arch, m.labels, m.intent, m.bmc, m.bmc_password, m.created_at, m.updated_at, \
     m.state, m.state_reason, m.state_changed_at, m.maintenance, m.facts, m.facts_at, \
     ARRAY(SELECT mm.mac FROM machine_macs mm WHERE mm.machine_id = m.id ORDER BY mm.ordinal) AS macs";

impl PgStore {
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    pub(crate) fn fence(&self) -> Option<uuid::Uuid> {
        *self
            .workflow_owner
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_fence(&self, owner: Option<uuid::Uuid>) {
        *self
            .workflow_owner
            .write()
            .unwrap_or_else(|e| e.into_inner()) = owner;
    }

    /// Connects to an existing database and migrates it.
    pub async fn open(url: &str) -> Result<PgStore> {
        let open_err = |what: &'static str| {
            move |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
                url: redact_url(url),
                what,
                source: e,
            }
        };
        let origin = format!("rackboot/{}", uuid::Uuid::new_v4().simple());
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|e: sqlx::Error| open_err("parsing URL")(e.into()))?
            .application_name(&origin);
        // One direct attempt first: the pool retries refused connections until
        // its acquire timeout, which would turn a typo into a 10 s hang.
        sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(|e| open_err("connecting")(e.into()))?
            .close()
            .await
            .ok();
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| open_err("connecting")(e.into()))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| open_err("running migrations")(e.into()))?;
        tracing::debug!(url = %redact_url(url), "opened PostgreSQL store");
        Ok(PgStore {
            pool,
            origin,
            workflow_owner: std::sync::RwLock::new(None),
        })
    }

    async fn insert_macs(
        tx: &mut sqlx::PgConnection,
        id: MachineId,
        macs: &[MacAddr],
    ) -> Result<(), sqlx::Error> {
        if macs.is_empty() {
            return Ok(());
        }
        let macs: Vec<String> = macs.iter().map(|m| m.to_string()).collect();
        sqlx::query(
            "INSERT INTO machine_macs (mac, machine_id, ordinal) \
             SELECT mac, $1, ord - 1 FROM UNNEST($2::text[]) WITH ORDINALITY AS t(mac, ord)",
        )
        .bind(id)
        .bind(macs)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn try_create_machine(&self, m: &Machine) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        Self::insert_machine(&mut tx, m).await?;
        tx.commit().await
    }

    /// The machine's row and its MACs, inside the caller's transaction.
    pub(crate) async fn insert_machine(
        tx: &mut sqlx::PgConnection,
        m: &Machine,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO machines (id, name, uuid, arch, labels, intent, bmc, bmc_password, created_at, updated_at, \
             state, state_reason, state_changed_at, maintenance, facts, facts_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(m.id)
        .bind(&m.name)
        .bind(m.uuid)
        .bind(m.arch.map(|a| a.as_str()))
        .bind(codec::json_value(&m.labels))
        .bind(codec::json_value(&m.intent))
        .bind(m.bmc.as_ref().map(codec::json_value))
        .bind(m.bmc.as_ref().and_then(|b| b.sealed_password.clone()))
        .bind(truncate_ms(m.created_at))
        .bind(truncate_ms(m.updated_at))
        .bind(m.state.as_str())
        .bind(&m.state_reason)
        .bind(m.state_changed_at.map(truncate_ms))
        .bind(m.maintenance.as_ref().map(|x| codec::json_text(&stored_maintenance(x))))
        .bind(m.facts.as_ref().map(codec::json_text))
        .bind(m.facts_at.map(truncate_ms))
        .execute(&mut *tx)
        .await?;
        Self::insert_macs(tx, m.id, &m.macs).await
    }

    /// `Ok(false)` when no machine has this id.
    async fn try_update_machine(&self, m: &Machine) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE machines SET name = $2, uuid = $3, arch = $4, labels = $5, intent = $6, updated_at = $7, \
             bmc = $8, bmc_password = $9, state = $10, state_reason = $11, state_changed_at = $12, \
             maintenance = $13, facts = $14, facts_at = $15 \
             WHERE id = $1",
        )
        .bind(m.id)
        .bind(&m.name)
        .bind(m.uuid)
        .bind(m.arch.map(|a| a.as_str()))
        .bind(codec::json_value(&m.labels))
        .bind(codec::json_value(&m.intent))
        .bind(truncate_ms(m.updated_at))
        .bind(m.bmc.as_ref().map(codec::json_value))
        .bind(m.bmc.as_ref().and_then(|b| b.sealed_password.clone()))
        .bind(m.state.as_str())
        .bind(&m.state_reason)
        .bind(m.state_changed_at.map(truncate_ms))
        .bind(m.maintenance.as_ref().map(|x| codec::json_text(&stored_maintenance(x))))
        .bind(m.facts.as_ref().map(codec::json_text))
        .bind(m.facts_at.map(truncate_ms))
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM machine_macs WHERE machine_id = $1")
            .bind(m.id)
            .execute(&mut *tx)
            .await?;
        Self::insert_macs(&mut tx, m.id, &m.macs).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Names what a machine write collided with, after the failed transaction rolled back.
    pub(crate) async fn describe_conflict(
        &self,
        m: &Machine,
        creating: bool,
        cause: sqlx::Error,
    ) -> StoreError {
        if creating {
            match sqlx::query_scalar::<_, String>("SELECT name FROM machines WHERE id = $1")
                .bind(m.id)
                .fetch_optional(&self.pool)
                .await
            {
                Ok(Some(name)) => {
                    return StoreError::Conflict(format!(
                        "machine id {} already exists (machine {name})",
                        m.id
                    ));
                }
                Ok(None) => {}
                Err(e) => return backend("looking up a machine conflict")(e),
            }
        }
        match sqlx::query_scalar::<_, uuid::Uuid>(
            "SELECT id FROM machines WHERE name = $1 AND id <> $2",
        )
        .bind(&m.name)
        .bind(m.id)
        .fetch_optional(&self.pool)
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
            .bind(m.id)
            .fetch_optional(&self.pool)
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

    pub(crate) fn machine_from_row(row: &PgRow) -> Result<Machine> {
        let get = |e| backend("decoding a machine row")(e);
        let t = "machines";
        let sealed_password: Option<String> = row.try_get("bmc_password").map_err(get)?;
        Ok(Machine {
            id: row.try_get("id").map_err(get)?,
            name: row.try_get("name").map_err(get)?,
            macs: row
                .try_get::<Vec<String>, _>("macs")
                .map_err(get)?
                .iter()
                .map(|s| codec::mac("machine_macs", s))
                .collect::<Result<_>>()?,
            uuid: row.try_get("uuid").map_err(get)?,
            arch: row
                .try_get::<Option<String>, _>("arch")
                .map_err(get)?
                .map(|a| codec::arch(t, &a))
                .transpose()?,
            labels: codec::from_json_value(t, "labels", row.try_get("labels").map_err(get)?)?,
            intent: codec::from_json_value(t, "intent", row.try_get("intent").map_err(get)?)?,
            bmc: row
                .try_get::<Option<serde_json::Value>, _>("bmc")
                .map_err(get)?
                .map(|value| codec::from_json_value::<Bmc>(t, "bmc", value))
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
            state_changed_at: row.try_get("state_changed_at").map_err(get)?,
            // JSON in text columns (see migration 0003).
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
            facts_at: row.try_get("facts_at").map_err(get)?,
            created_at: row.try_get("created_at").map_err(get)?,
            updated_at: row.try_get("updated_at").map_err(get)?,
        })
    }

    fn profile_from_row(row: &PgRow) -> Result<Profile> {
        let get = |e| backend("decoding a profile row")(e);
        let t = "profiles";
        Ok(Profile {
            name: row.try_get("name").map_err(get)?,
            description: row.try_get("description").map_err(get)?,
            kernel: row.try_get("kernel").map_err(get)?,
            initrds: codec::from_json_value(t, "initrds", row.try_get("initrds").map_err(get)?)?,
            cmdline: row.try_get("cmdline").map_err(get)?,
            ipxe_script: row.try_get("ipxe_script").map_err(get)?,
            loader: codec::loader(&row.try_get::<String, _>("loader").map_err(get)?)?,
            created_at: row.try_get("created_at").map_err(get)?,
            updated_at: row.try_get("updated_at").map_err(get)?,
        })
    }

    pub(crate) fn lease_from_row(row: &PgRow) -> Result<Lease> {
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
            expires_at: row.try_get("expires_at").map_err(get)?,
            subnet: row.try_get("subnet").map_err(get)?,
            updated_at: row.try_get("updated_at").map_err(get)?,
        })
    }

    fn event_from_row(row: &PgRow) -> Result<Event> {
        let get = |e| backend("decoding an event row")(e);
        let t = "events";
        Ok(Event {
            id: row.try_get("id").map_err(get)?,
            at: row.try_get("at").map_err(get)?,
            kind: codec::event_kind(&row.try_get::<String, _>("kind").map_err(get)?)?,
            machine: row.try_get("machine_id").map_err(get)?,
            mac: row
                .try_get::<Option<String>, _>("mac")
                .map_err(get)?
                .map(|m| codec::mac(t, &m))
                .transpose()?,
            message: row.try_get("message").map_err(get)?,
            data: row.try_get("data").map_err(get)?,
        })
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
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
        let deleted = sqlx::query("DELETE FROM machines WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend("deleting a machine"))?;
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
            .bind(id)
            .fetch_optional(&self.pool)
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
            .fetch_optional(&self.pool)
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
            .fetch_optional(&self.pool)
            .await
            .map_err(backend("finding a machine by MAC"))?
            .map(|row| Self::machine_from_row(&row))
            .transpose()
    }

    async fn list_machines(&self) -> Result<Vec<Machine>> {
        let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines m ORDER BY m.name");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
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
        .bind(codec::json_value(&p.initrds))
        .bind(&p.cmdline)
        .bind(&p.ipxe_script)
        .bind(codec::loader_text(p.loader))
        .bind(truncate_ms(p.created_at))
        .bind(truncate_ms(p.updated_at))
        .execute(&self.pool)
        .await
        .map_err(backend("writing a profile"))?;
        Ok(())
    }

    async fn delete_profile(&self, name: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM profiles WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(backend("deleting a profile"))?;
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
            .fetch_optional(&self.pool)
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
            .fetch_all(&self.pool)
            .await
            .map_err(backend("listing profiles"))?
            .iter()
            .map(Self::profile_from_row)
            .collect()
    }

    async fn put_selector(&self, s: &Selector) -> Result<()> {
        sqlx::query(
            "INSERT INTO selectors (name, profile, matches) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET profile = excluded.profile, matches = excluded.matches",
        )
        .bind(&s.name)
        .bind(&s.profile)
        .bind(codec::json_value(&s.matches))
        .execute(&self.pool)
        .await
        .map_err(backend("writing a selector"))?;
        Ok(())
    }

    async fn delete_selector(&self, name: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM selectors WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(backend("deleting a selector"))?;
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
            .fetch_all(&self.pool)
            .await
            .map_err(backend("listing selectors"))?;
        rows.iter()
            .map(|row| {
                let get = |e| backend("decoding a selector row")(e);
                Ok(Selector {
                    name: row.try_get("name").map_err(get)?,
                    profile: row.try_get("profile").map_err(get)?,
                    matches: codec::from_json_value(
                        "selectors",
                        "matches",
                        row.try_get("matches").map_err(get)?,
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
        let n = leases.len();
        let mut ip = Vec::with_capacity(n);
        let mut mac = Vec::with_capacity(n);
        let mut client_id = Vec::with_capacity(n);
        let mut hostname = Vec::with_capacity(n);
        let mut state = Vec::with_capacity(n);
        let mut expires_at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
        let mut subnet = Vec::with_capacity(n);
        let mut updated_at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
        for l in leases {
            ip.push(l.ip.to_string());
            mac.push(l.mac.map(|m| m.to_string()));
            client_id.push(l.client_id.clone());
            hostname.push(l.hostname.clone());
            state.push(l.state.as_str());
            expires_at.push(truncate_ms(l.expires_at));
            subnet.push(l.subnet.clone());
            updated_at.push(truncate_ms(l.updated_at));
        }
        // A single statement is its own transaction: the batch commits or fails whole.
        sqlx::query(
            "INSERT INTO leases (ip, mac, client_id, hostname, state, expires_at, subnet, updated_at) \
             SELECT ip::inet, mac, client_id, hostname, state, expires_at, subnet, updated_at \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::timestamptz[], $7::text[], $8::timestamptz[]) \
                  AS t(ip, mac, client_id, hostname, state, expires_at, subnet, updated_at) \
             ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, client_id = excluded.client_id, \
             hostname = excluded.hostname, state = excluded.state, expires_at = excluded.expires_at, \
             subnet = excluded.subnet, updated_at = excluded.updated_at",
        )
        .bind(ip)
        .bind(mac)
        .bind(client_id)
        .bind(hostname)
        .bind(state)
        .bind(expires_at)
        .bind(subnet)
        .bind(updated_at)
        .execute(&self.pool)
        .await
        .map_err(backend("writing leases"))?;
        Ok(())
    }

    async fn delete_lease(&self, ip: Ipv4Addr) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM leases WHERE ip = $1::inet")
            .bind(ip.to_string())
            .execute(&self.pool)
            .await
            .map_err(backend("deleting a lease"))?;
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
        let mut leases = sqlx::query(
            "SELECT host(l.ip) AS ip, l.mac, l.client_id, l.hostname, l.state, l.expires_at, \
             l.subnet, l.updated_at FROM leases l ORDER BY l.ip",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend("listing leases"))?
        .iter()
        .map(Self::lease_from_row)
        .collect::<Result<Vec<_>>>()?;
        // Already in address order; sorting keeps the contract identical to SQLite's.
        leases.sort_by_key(|l| l.ip);
        Ok(leases)
    }

    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let n = events.len();
        let mut at = Vec::with_capacity(n);
        let mut kind = Vec::with_capacity(n);
        let mut machine = Vec::with_capacity(n);
        let mut mac = Vec::with_capacity(n);
        let mut message = Vec::with_capacity(n);
        let mut data = Vec::with_capacity(n);
        for e in &events {
            at.push(truncate_ms(e.at));
            kind.push(e.kind.as_str());
            machine.push(e.machine);
            mac.push(e.mac.map(|m| m.to_string()));
            message.push(e.message.clone());
            data.push(e.data.clone());
        }
        // Readers page with `after_id`, so ids must become visible in id order.
        // Identity values are taken at insert time and transactions may commit in
        // any order (several servers, or concurrent callers); holding this lock
        // until commit makes allocation order and commit order the same.
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(backend("appending events"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(EVENTS_APPEND_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(backend("locking the event log"))?;
        // Rows are inserted, and take identity values, in ORDER BY ord order; the
        // ids are sorted because RETURNING's order is not promised.
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO events (at, kind, machine_id, mac, message, data) \
             SELECT at, kind, machine_id, mac, message, data \
             FROM UNNEST($1::timestamptz[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::jsonb[]) \
                  WITH ORDINALITY AS t(at, kind, machine_id, mac, message, data, ord) \
             ORDER BY ord RETURNING id",
        )
        .bind(at)
        .bind(kind)
        .bind(machine)
        .bind(mac)
        .bind(message)
        .bind(data)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend("appending events"))?;
        tx.commit().await.map_err(backend("committing events"))?;
        ids.sort_unstable();
        if ids.len() != n {
            return Err(StoreError::Corrupt {
                table: "events",
                detail: format!("inserted {n} events but got {} ids back", ids.len()),
            });
        }
        Ok(events
            .into_iter()
            .zip(ids)
            .map(|(mut e, id)| {
                e.at = truncate_ms(e.at);
                e.with_id(id)
            })
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
            q = q.bind(machine);
        }
        if let Some(mac) = f.mac {
            q = q.bind(mac.to_string());
        }
        q.fetch_all(&self.pool)
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

    async fn get_agent_session(&self, machine: MachineId) -> Result<Option<AgentSession>> {
        self.get_agent_session_impl(machine).await
    }

    async fn change_feed(&self) -> Result<Option<crate::ChangeFeed>> {
        self.change_feed_impl().await.map(Some)
    }

    async fn lease_feed(&self) -> Result<Option<crate::ChangeFeed>> {
        self.lease_feed_impl().await.map(Some)
    }

    async fn member_heartbeat(
        &self,
        me: &crate::Member,
        dead_after: Duration,
    ) -> Result<Vec<crate::Member>> {
        self.member_heartbeat_impl(me, dead_after).await
    }

    async fn member_leave(&self, id: uuid::Uuid) -> Result<()> {
        self.member_leave_impl(id).await
    }

    fn set_workflow_owner(&self, owner: Option<uuid::Uuid>) {
        self.set_fence(owner);
    }

    async fn claim_workflow(
        &self,
        id: WorkflowId,
        owner: uuid::Uuid,
        live: &[uuid::Uuid],
    ) -> Result<bool> {
        self.claim_workflow_impl(id, owner, live).await
    }

    async fn release_workflow(&self, id: WorkflowId, owner: uuid::Uuid) -> Result<()> {
        self.release_workflow_impl(id, owner).await
    }

    async fn active_workflow_owners(
        &self,
    ) -> Result<Vec<(WorkflowId, MachineId, Option<uuid::Uuid>)>> {
        self.active_workflow_owners_impl().await
    }

    async fn claim_leases(&self, leases: &[Lease]) -> Result<Vec<crate::ClaimRefused>> {
        self.claim_leases_impl(leases).await
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
