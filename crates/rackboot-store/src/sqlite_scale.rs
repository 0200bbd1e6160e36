//! SQLite: what large fleets need: batched reads by id, pages, bulk
//! enrolment in one transaction, and event pruning.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use rackboot_core::{InstallRequest, Lease, Machine, MachineId, Workflow, WorkflowId};
use sqlx::Row;

use crate::sqlite::{MACHINE_COLUMNS, SqliteStore};
use crate::sqlite_installs::install_from_row;
use crate::{
    Result, StoreError, WorkflowFilter, backend, check_own_macs, codec, is_unique_violation,
    limit_or_default,
};

/// Ids as one JSON array parameter (`IN (SELECT value FROM json_each($1))`),
/// so any number of them is one prepared statement.
fn id_array(ids: &[MachineId]) -> String {
    codec::json_text(&ids.iter().map(|i| i.to_string()).collect::<Vec<_>>())
}

impl SqliteStore {
    pub(crate) async fn get_machines_impl(&self, ids: &[MachineId]) -> Result<Vec<Machine>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machines m WHERE m.id IN (SELECT value FROM json_each($1))"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id_array(ids))
            .fetch_all(self.reader())
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
        // The name's unique index gives the order and the start.
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machines m WHERE m.name > $1 ORDER BY m.name LIMIT $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.unwrap_or(""))
            .bind(limit_or_default(limit))
            .fetch_all(self.reader())
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
        let mut tx = self.begin_write().await?;
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
                    sqlx::query("ROLLBACK TO enrol")
                        .execute(&mut *tx)
                        .await
                        .map_err(backend(ctx))?;
                    *outcome = Err(StoreError::Conflict(String::new()));
                }
                Err(e) => return Err(backend(ctx)(e)),
            }
            sqlx::query("RELEASE enrol")
                .execute(&mut *tx)
                .await
                .map_err(backend(ctx))?;
        }
        tx.commit().await.map_err(backend(ctx))?;
        // Name what each refused machine collided with, now that the batch
        // (whose earlier rows may be the other party) is committed.
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
            "SELECT * FROM installs WHERE state = 'pending' \
             AND machine_id IN (SELECT value FROM json_each($1)) ORDER BY requested_at, id",
        )
        .bind(id_array(machines))
        .fetch_all(self.reader())
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
        // Addresses are text here ("10.0.0.10" sorts before "10.0.0.2"), so
        // the address order is made in memory; the table holds at most the
        // pools' addresses.
        let mut leases = sqlx::query("SELECT * FROM leases")
            .fetch_all(self.reader())
            .await
            .map_err(backend("listing leases"))?
            .iter()
            .map(Self::lease_from_row)
            .filter(|l| match (l, after) {
                (Ok(l), Some(a)) => l.ip > a,
                _ => true,
            })
            .collect::<Result<Vec<_>>>()?;
        leases.sort_by_key(|l| l.ip);
        leases.truncate(limit_or_default(limit) as usize);
        Ok(leases)
    }

    pub(crate) async fn prune_events_impl(
        &self,
        older_than: Option<DateTime<Utc>>,
        keep_newest: Option<u64>,
        max_rows: u32,
    ) -> Result<u64> {
        let ctx = "pruning events";
        let Some(newest) = sqlx::query_scalar::<_, Option<i64>>("SELECT max(id) FROM events")
            .fetch_one(self.reader())
            .await
            .map_err(backend(ctx))?
        else {
            return Ok(0);
        };
        // Delete ids up to `cut`: the larger of what each rule allows.
        let mut cut = 0i64;
        if let Some(keep) = keep_newest {
            cut = cut.max(newest - i64::try_from(keep).unwrap_or(i64::MAX));
        }
        if let Some(t) = older_than {
            // Events are appended in time order (ids and `at` grow together,
            // up to a few ms): the first event at or after `t` bounds the cut.
            // The scan runs over the events about to be deleted.
            let first_kept: Option<i64> =
                sqlx::query_scalar("SELECT id FROM events WHERE at >= $1 ORDER BY id LIMIT 1")
                    .bind(codec::millis(t))
                    .fetch_optional(self.reader())
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
        .execute(self.writer())
        .await
        .map_err(backend(ctx))?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn list_workflows_before_impl(
        &self,
        f: &WorkflowFilter,
        before: Option<(DateTime<Utc>, WorkflowId)>,
    ) -> Result<Vec<Workflow>> {
        // Parameters: $1 limit, $2 machine, $3 states (JSON), $4/$5 the cursor;
        // each clause is present only with its value, so unused ones are not bound.
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
            clauses.push(format!(
                "state IN (SELECT value FROM json_each(${}))",
                next()
            ));
        }
        if before.is_some() {
            let (t, id) = (next(), next());
            clauses.push(format!(
                "(created_at < ${t} OR (created_at = ${t} AND id < ${id}))"
            ));
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
            q = q.bind(machine.to_string());
        }
        if !f.states.is_empty() {
            let states: Vec<&str> = f.states.iter().map(|s| s.as_str()).collect();
            q = q.bind(codec::json_text(&states));
        }
        if let Some((t, id)) = before {
            q = q.bind(codec::millis(t)).bind(id.to_string());
        }
        q.fetch_all(self.reader())
            .await
            .map_err(backend("listing workflows"))?
            .iter()
            .map(|row| {
                let get = |e| backend("decoding a workflow row")(e);
                let id: String = row.try_get("id").map_err(get)?;
                codec::workflow_body(&id, &row.try_get::<String, _>("body").map_err(get)?)
            })
            .collect()
    }
}
