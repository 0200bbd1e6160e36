//! PostgreSQL: machine lifecycle (state, maintenance, facts, the transition
//! log), workflows and agent sessions.

use chrono::{DateTime, Utc};
use rackboot_core::{
    AgentSession, Facts, MachineId, Maintenance, ProvisionState, Transition, Workflow, WorkflowId,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row, Transaction};

use crate::postgres::PgStore;
use crate::postgres_installs::set_intent_cancelling_installs;
use crate::{
    LifecycleChange, Result, StoreError, WorkflowFilter, backend, check_transition_machine, codec,
    is_unique_violation, limit_or_default, machine_write_error, state_conflict, stored_maintenance,
    stored_workflow, truncate_ms,
};

const SESSION_COLUMNS: &str = "machine_id, token_sha256, host(bound_ip) AS bound_ip, issued_at, \
     workflow_id, instance, boot_id";

impl PgStore {
    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool()
            .begin()
            .await
            .map_err(backend("beginning write transaction"))
    }

    pub(crate) async fn apply_lifecycle_impl(&self, change: &LifecycleChange) -> Result<()> {
        let ctx = "changing a machine's lifecycle";
        check_transition_machine(change.machine, &change.transition)?;
        let mut tx = self.begin().await?;
        // The row stays locked until commit: a concurrent change with the
        // same expectation waits, then sees the new state and is refused.
        let (name, current) = lock_machine_state(&mut tx, change.machine, ctx).await?;
        if let Some(expected) = change.expect_state
            && current != expected
        {
            return Err(state_conflict(&name, change.machine, current, expected));
        }
        let at = truncate_ms(change.transition.at);
        sqlx::query(
            "UPDATE machines SET state = $2, state_reason = $3, state_changed_at = $4, updated_at = $4 \
             WHERE id = $1",
        )
        .bind(change.machine)
        .bind(change.state.as_str())
        .bind(&change.state_reason)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(backend(ctx))?;
        if let Some(intent) = &change.intent {
            set_intent_cancelling_installs(&mut tx, change.machine, intent, at, ctx).await?;
        }
        let t = &change.transition;
        insert_transition(&mut tx, t, t.from, t.to, ctx).await?;
        if let Some(workflow) = &change.workflow {
            upsert_workflow(&mut tx, workflow, self.fence(), ctx).await?;
        }
        tx.commit().await.map_err(backend(ctx))
    }

    pub(crate) async fn set_maintenance_impl(
        &self,
        machine: MachineId,
        maintenance: Option<&Maintenance>,
        transition: &Transition,
    ) -> Result<()> {
        let ctx = "setting maintenance";
        check_transition_machine(machine, transition)?;
        let mut tx = self.begin().await?;
        let (_, current) = lock_machine_state(&mut tx, machine, ctx).await?;
        sqlx::query("UPDATE machines SET maintenance = $2, updated_at = $3 WHERE id = $1")
            .bind(machine)
            .bind(maintenance.map(|m| codec::json_text(&stored_maintenance(m))))
            .bind(truncate_ms(transition.at))
            .execute(&mut *tx)
            .await
            .map_err(backend(ctx))?;
        // The flag does not move the lifecycle: from and to are the state
        // read (and locked) in this transaction, whatever the caller last saw.
        insert_transition(&mut tx, transition, current, current, ctx).await?;
        tx.commit().await.map_err(backend(ctx))
    }

    pub(crate) async fn list_transitions_impl(
        &self,
        machine: MachineId,
        limit: u32,
    ) -> Result<Vec<Transition>> {
        // The newest `limit`, returned oldest first.
        sqlx::query(
            "SELECT * FROM (SELECT * FROM transitions WHERE machine_id = $1 ORDER BY id DESC LIMIT $2) t \
             ORDER BY id",
        )
        .bind(machine)
        .bind(limit_or_default(limit))
        .fetch_all(self.pool())
        .await
        .map_err(backend("listing transitions"))?
        .iter()
        .map(transition_from_row)
        .collect()
    }

    pub(crate) async fn set_facts_impl(
        &self,
        machine: MachineId,
        facts: &Facts,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let updated = sqlx::query(
            "UPDATE machines SET facts = $2, facts_at = $3, updated_at = $3 WHERE id = $1",
        )
        .bind(machine)
        .bind(codec::json_text(facts))
        .bind(truncate_ms(at))
        .execute(self.pool())
        .await
        .map_err(backend("storing facts"))?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "machine",
                key: machine.to_string(),
            });
        }
        Ok(())
    }

    pub(crate) async fn put_workflow_impl(&self, workflow: &Workflow) -> Result<()> {
        let mut conn = self
            .pool()
            .acquire()
            .await
            .map_err(backend("writing a workflow"))?;
        // One statement: atomic without a transaction.
        upsert_workflow(&mut conn, workflow, self.fence(), "writing a workflow").await
    }

    pub(crate) async fn get_workflow_impl(&self, id: WorkflowId) -> Result<Workflow> {
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM workflows WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("reading a workflow"))?;
        match body {
            Some(body) => codec::workflow_body(&id.to_string(), &body),
            None => Err(StoreError::NotFound {
                what: "workflow",
                key: id.to_string(),
            }),
        }
    }

    pub(crate) async fn list_workflows_impl(&self, f: &WorkflowFilter) -> Result<Vec<Workflow>> {
        // One fixed statement per filter shape, so each is prepared once and uses its index.
        let sql = match (f.machine.is_some(), !f.states.is_empty()) {
            (false, false) => {
                "SELECT id, body FROM workflows ORDER BY created_at DESC, id DESC LIMIT $1"
            }
            (true, false) => {
                "SELECT id, body FROM workflows WHERE machine_id = $2 \
                 ORDER BY created_at DESC, id DESC LIMIT $1"
            }
            (false, true) => {
                "SELECT id, body FROM workflows WHERE state = ANY($2) \
                 ORDER BY created_at DESC, id DESC LIMIT $1"
            }
            (true, true) => {
                "SELECT id, body FROM workflows WHERE machine_id = $2 AND state = ANY($3) \
                 ORDER BY created_at DESC, id DESC LIMIT $1"
            }
        };
        let mut q = sqlx::query(sql).bind(limit_or_default(f.limit));
        if let Some(machine) = f.machine {
            q = q.bind(machine);
        }
        if !f.states.is_empty() {
            let states: Vec<&str> = f.states.iter().map(|s| s.as_str()).collect();
            q = q.bind(states);
        }
        q.fetch_all(self.pool())
            .await
            .map_err(backend("listing workflows"))?
            .iter()
            .map(|row| {
                let get = |e| backend("decoding a workflow row")(e);
                let id: uuid::Uuid = row.try_get("id").map_err(get)?;
                codec::workflow_body(
                    &id.to_string(),
                    &row.try_get::<String, _>("body").map_err(get)?,
                )
            })
            .collect()
    }

    pub(crate) async fn put_agent_session_impl(&self, s: &AgentSession) -> Result<()> {
        // Replacing the row replaces the token hash: the old token stops working.
        let written = sqlx::query(
            "INSERT INTO agent_sessions (machine_id, token_sha256, bound_ip, issued_at, workflow_id, instance, boot_id) \
             VALUES ($1, $2, $3::inet, $4, $5, $6, $7) \
             ON CONFLICT (machine_id) DO UPDATE SET token_sha256 = excluded.token_sha256, \
             bound_ip = excluded.bound_ip, issued_at = excluded.issued_at, workflow_id = excluded.workflow_id, \
             instance = excluded.instance, boot_id = excluded.boot_id",
        )
        .bind(s.machine)
        .bind(&s.token_sha256)
        .bind(s.bound_ip.to_string())
        .bind(truncate_ms(s.issued_at))
        .bind(s.workflow)
        .bind(s.instance)
        .bind(&s.boot_id)
        .execute(self.pool())
        .await;
        match written {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(crate::token_conflict(s.machine)),
            Err(e) => Err(machine_write_error("writing an agent session", s.machine)(
                e,
            )),
        }
    }

    pub(crate) async fn list_agent_sessions_impl(&self) -> Result<Vec<AgentSession>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM agent_sessions ORDER BY machine_id");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.pool())
            .await
            .map_err(backend("listing agent sessions"))?
            .iter()
            .map(session_from_row)
            .collect()
    }

    pub(crate) async fn get_agent_session_impl(
        &self,
        machine: MachineId,
    ) -> Result<Option<AgentSession>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM agent_sessions WHERE machine_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(machine)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("reading an agent session"))?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    pub(crate) async fn delete_agent_session_impl(&self, machine: MachineId) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM agent_sessions WHERE machine_id = $1")
            .bind(machine)
            .execute(self.pool())
            .await
            .map_err(backend("deleting an agent session"))?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "agent session",
                key: machine.to_string(),
            });
        }
        Ok(())
    }
}

/// The machine's name and state, its row locked until the transaction ends.
async fn lock_machine_state(
    tx: &mut PgConnection,
    machine: MachineId,
    ctx: &'static str,
) -> Result<(String, ProvisionState)> {
    let row = sqlx::query("SELECT name, state FROM machines WHERE id = $1 FOR UPDATE")
        .bind(machine)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend(ctx))?;
    let Some(row) = row else {
        return Err(StoreError::NotFound {
            what: "machine",
            key: machine.to_string(),
        });
    };
    let get = |e| backend("decoding a machine row")(e);
    let name: String = row.try_get("name").map_err(get)?;
    let state = codec::provision_state(
        "machines",
        "state",
        &row.try_get::<String, _>("state").map_err(get)?,
    )?;
    Ok((name, state))
}

/// Appends `t` with the given states (set_maintenance records the current one).
async fn insert_transition(
    tx: &mut PgConnection,
    t: &Transition,
    from: ProvisionState,
    to: ProvisionState,
    ctx: &'static str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO transitions (machine_id, at, from_state, to_state, changed_by, reason, workflow_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(t.machine)
    .bind(truncate_ms(t.at))
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(&t.by)
    .bind(&t.reason)
    .bind(t.workflow)
    .execute(&mut *tx)
    .await
    .map_err(machine_write_error(ctx, t.machine))?;
    Ok(())
}

/// Inserts or replaces a workflow: the whole body (timestamps truncated to
/// milliseconds, like every column) and the columns queries use. With an
/// `owner` (a cluster member's incarnation) the write is fenced: a workflow
/// another member claimed is refused (`Fenced`), an unclaimed one becomes
/// `owner`'s.
async fn upsert_workflow(
    tx: &mut PgConnection,
    w: &Workflow,
    owner: Option<uuid::Uuid>,
    ctx: &'static str,
) -> Result<()> {
    let w = stored_workflow(w);
    let written = sqlx::query(
        "INSERT INTO workflows (id, machine_id, name, state, created_at, updated_at, body, owner) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (id) DO UPDATE SET machine_id = excluded.machine_id, name = excluded.name, \
         state = excluded.state, created_at = excluded.created_at, updated_at = excluded.updated_at, \
         body = excluded.body, owner = COALESCE(excluded.owner, workflows.owner) \
         WHERE $8::uuid IS NULL OR workflows.owner IS NULL OR workflows.owner = $8",
    )
    .bind(w.id)
    .bind(w.machine)
    .bind(&w.name)
    .bind(w.state.as_str())
    .bind(w.created_at)
    .bind(w.updated_at)
    .bind(codec::json_text(&w))
    .bind(owner)
    .execute(&mut *tx)
    .await
    .map_err(machine_write_error(ctx, w.machine))?;
    if written.rows_affected() == 0 {
        return Err(StoreError::Fenced(format!(
            "workflow {} is run by another server",
            w.id
        )));
    }
    Ok(())
}

fn transition_from_row(row: &PgRow) -> Result<Transition> {
    let get = |e| backend("decoding a transition row")(e);
    let t = "transitions";
    Ok(Transition {
        machine: row.try_get("machine_id").map_err(get)?,
        at: row.try_get("at").map_err(get)?,
        from: codec::provision_state(
            t,
            "from_state",
            &row.try_get::<String, _>("from_state").map_err(get)?,
        )?,
        to: codec::provision_state(
            t,
            "to_state",
            &row.try_get::<String, _>("to_state").map_err(get)?,
        )?,
        by: row.try_get("changed_by").map_err(get)?,
        reason: row.try_get("reason").map_err(get)?,
        workflow: row.try_get("workflow_id").map_err(get)?,
    })
}

fn session_from_row(row: &PgRow) -> Result<AgentSession> {
    let get = |e| backend("decoding an agent session row")(e);
    Ok(AgentSession {
        machine: row.try_get("machine_id").map_err(get)?,
        token_sha256: row.try_get("token_sha256").map_err(get)?,
        bound_ip: codec::ip(
            "agent_sessions",
            "bound_ip",
            &row.try_get::<String, _>("bound_ip").map_err(get)?,
        )?,
        issued_at: row.try_get("issued_at").map_err(get)?,
        workflow: row.try_get("workflow_id").map_err(get)?,
        instance: row.try_get("instance").map_err(get)?,
        boot_id: row.try_get("boot_id").map_err(get)?,
    })
}
