//! PostgreSQL: what large fleets need: batched reads by id, pages, bulk
//! enrolment in one transaction, and event pruning.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use rackboot_core::{InstallRequest, Lease, Machine, MachineId, Workflow, WorkflowId};
use sqlx::Row;

use crate::postgres::{MACHINE_COLUMNS, PgStore};
use crate::postgres_installs::install_from_row;
use crate::{
    Result, StoreError, WorkflowFilter, backend, check_own_macs, codec, is_unique_violation,
    limit_or_default,
};

impl PgStore {
    pub(crate) async fn get_machines_impl(&self, ids: &[MachineId]) -> Result<Vec<Machine>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {MACHINE_COLUMNS} FROM machines m WHERE m.id = ANY($1)");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ids)
            .fetch_all(self.pool())
            .await
            .map_err(backend("reading machines"))?
            .iter()
            .map(Self::machine_from_row)
            .collect()
    }

    pub(crate) async fn list_machines_page_impl(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Machine>> {
        // COLLATE "C": the same byte order as SQLite and Rust, whatever the
        // database's collation, so a cursor means the same on both.
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machines m WHERE m.name COLLATE \"C\" > $1 \
             ORDER BY m.name COLLATE \"C\" LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.unwrap_or(""))
            .bind(limit_or_default(limit))
            .fetch_all(self.pool())
            .await
            .map_err(backend("listing machines"))?
            .iter()
            .map(Self::machine_from_row)
            .collect()
    }

    pub(crate) async fn create_machines_impl(
        &self,
        machines: &[Machine],
    ) -> Result<Vec<Result<()>>> {
        let ctx = "enrolling machines";
        let mut out: Vec<Result<()>> = machines.iter().map(check_own_macs).collect();
        let mut tx = self.pool().begin().await.map_err(backend(ctx))?;
        for (m, outcome) in machines.iter().zip(out.iter_mut()) {
            if outcome.is_err() {
                continue;
            }
            // A savepoint per machine: a taken name or MAC undoes that
            // machine only, and the batch stays one transaction.
            sqlx::query("SAVEPOINT enrol")
                .execute(&mut *tx)
                .await
                .map_err(backend(ctx))?;
            match Self::insert_machine(&mut tx, m).await {
                Ok(()) => {}
                Err(e) if is_unique_violation(&e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT enrol")
                        .execute(&mut *tx)
                        .await
                        .map_err(backend(ctx))?;
                    *outcome = Err(StoreError::Conflict(String::new()));
                }
                Err(e) => return Err(backend(ctx)(e)),
            }
            sqlx::query("RELEASE SAVEPOINT enrol")
                .execute(&mut *tx)
                .await
                .map_err(backend(ctx))?;
        }
        tx.commit().await.map_err(backend(ctx))?;
        for (m, outcome) in machines.iter().zip(out.iter_mut()) {
            if matches!(outcome, Err(StoreError::Conflict(msg)) if msg.is_empty()) {
                *outcome = Err(self
                    .describe_conflict(m, true, sqlx::Error::RowNotFound)
                    .await);
            }
        }
        Ok(out)
    }

    pub(crate) async fn list_pending_installs_of_impl(
        &self,
        machines: &[MachineId],
    ) -> Result<Vec<InstallRequest>> {
        if machines.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query(
            "SELECT * FROM installs WHERE state = 'pending' AND machine_id = ANY($1) \
             ORDER BY requested_at, id",
        )
        .bind(machines)
        .fetch_all(self.pool())
        .await
        .map_err(backend("listing pending installs"))?
        .iter()
        .map(install_from_row)
        .collect()
    }

    pub(crate) async fn list_leases_page_impl(
        &self,
        after: Option<Ipv4Addr>,
        limit: u32,
    ) -> Result<Vec<Lease>> {
        sqlx::query(
            "SELECT host(l.ip) AS ip, l.mac, l.client_id, l.hostname, l.state, l.expires_at, \
             l.subnet, l.updated_at FROM leases l WHERE l.ip > $1::inet ORDER BY l.ip LIMIT $2",
        )
        .bind(after.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string())
        .bind(limit_or_default(limit))
        .fetch_all(self.pool())
        .await
        .map_err(backend("listing leases"))?
        .iter()
        .map(Self::lease_from_row)
        .collect()
    }

    pub(crate) async fn prune_events_impl(
        &self,
        older_than: Option<DateTime<Utc>>,
        keep_newest: Option<u64>,
        max_rows: u32,
    ) -> Result<u64> {
        let ctx = "pruning events";
        let Some(newest) = sqlx::query_scalar::<_, Option<i64>>("SELECT max(id) FROM events")
            .fetch_one(self.pool())
            .await
            .map_err(backend(ctx))?
        else {
            return Ok(0);
        };
        let mut cut = 0i64;
        if let Some(keep) = keep_newest {
            cut = cut.max(newest - i64::try_from(keep).unwrap_or(i64::MAX));
        }
        if let Some(t) = older_than {
            // Ids and `at` grow together: the first event at or after `t`
            // bounds the cut (the scan runs over the events to delete).
            let first_kept: Option<i64> =
                sqlx::query_scalar("SELECT id FROM events WHERE at >= $1 ORDER BY id LIMIT 1")
                    .bind(crate::truncate_ms(t))
                    .fetch_optional(self.pool())
                    .await
                    .map_err(backend(ctx))?;
            cut = cut.max(first_kept.map_or(newest, |id| id - 1));
        }
        if cut <= 0 || max_rows == 0 {
            return Ok(0);
        }
        let done = sqlx::query(
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= $1 ORDER BY id LIMIT $2)",
        )
        .bind(cut)
        .bind(i64::from(max_rows))
        .execute(self.pool())
        .await
        .map_err(backend(ctx))?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn list_workflows_before_impl(
        &self,
        f: &WorkflowFilter,
        before: Option<(DateTime<Utc>, WorkflowId)>,
    ) -> Result<Vec<Workflow>> {
        // $1 limit, then each present filter's parameters in order.
        let mut clauses = Vec::new();
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        if f.machine.is_some() {
            clauses.push(format!("machine_id = ${}", next()));
        }
        if !f.states.is_empty() {
            clauses.push(format!("state = ANY(${})", next()));
        }
        if before.is_some() {
            let (t, id) = (next(), next());
            clauses.push(format!("(created_at, id) < (${t}, ${id})"));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT id, body FROM workflows {filter} ORDER BY created_at DESC, id DESC LIMIT $1"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(limit_or_default(f.limit));
        if let Some(machine) = f.machine {
            q = q.bind(machine);
        }
        if !f.states.is_empty() {
            let states: Vec<&str> = f.states.iter().map(|s| s.as_str()).collect();
            q = q.bind(states);
        }
        if let Some((t, id)) = before {
            q = q.bind(crate::truncate_ms(t)).bind(id);
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
}
