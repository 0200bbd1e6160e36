//! SQLite: webhooks and their outbox of deliveries.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use rackboot_core::{Delivery, Webhook};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::sqlite::{Batched, Insert, SqliteStore, chunk_sizes};
use crate::{
    Result, StoreError, backend, codec, limit_or_default, missing_webhook, stored_deliveries,
};

// Like events: multi-row INSERTs without RETURNING, ids from last_insert_rowid().
static DELIVERY_INSERT: Batched = Batched {
    head: "INSERT INTO deliveries (webhook, event_id, event_kind, body, state, attempts, \
           next_attempt_at, last_status, last_error, created_at, delivered_at)",
    columns: 11,
    tail: "",
    texts: OnceLock::new(),
};

/// `DELIVERY_INSERT.sql(chunk.len())` with the chunk's values bound.
fn delivery_rows(sql: &'static str, chunk: &[Delivery]) -> Insert {
    let mut q = sqlx::query(sql);
    for d in chunk {
        q = q
            .bind(d.webhook.clone())
            .bind(d.event_id)
            .bind(d.event_kind.as_str())
            .bind(d.body.clone())
            .bind(d.state.as_str())
            .bind(i64::from(d.attempts))
            .bind(codec::millis(d.next_attempt_at))
            .bind(d.last_status.map(i64::from))
            .bind(d.last_error.clone())
            .bind(codec::millis(d.created_at))
            .bind(d.delivered_at.map(codec::millis));
    }
    q
}

impl SqliteStore {
    pub(crate) async fn put_webhook_impl(&self, w: &Webhook) -> Result<()> {
        let ctx = "writing a webhook";
        let mut tx = self.begin_write().await?;
        // An upsert, not a delete and insert: the webhook keeps its created_at
        // and its deliveries.
        sqlx::query(
            "INSERT INTO webhooks (name, url, events, enabled, sealed_secret, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (name) DO UPDATE SET url = excluded.url, events = excluded.events, \
             enabled = excluded.enabled, sealed_secret = excluded.sealed_secret",
        )
        .bind(&w.name)
        .bind(&w.url)
        .bind(codec::json_text(&w.events))
        .bind(w.enabled)
        .bind(&w.sealed_secret)
        .bind(codec::millis(w.created_at))
        .execute(&mut *tx)
        .await
        .map_err(backend(ctx))?;
        tx.commit().await.map_err(backend(ctx))
    }

    pub(crate) async fn list_webhooks_impl(&self) -> Result<Vec<Webhook>> {
        sqlx::query("SELECT * FROM webhooks ORDER BY name")
            .fetch_all(self.reader())
            .await
            .map_err(backend("listing webhooks"))?
            .iter()
            .map(webhook_from_row)
            .collect()
    }

    pub(crate) async fn delete_webhook_impl(&self, name: &str) -> Result<()> {
        let ctx = "deleting a webhook";
        let mut tx = self.begin_write().await?;
        // Its deliveries go with it (ON DELETE CASCADE).
        let deleted = sqlx::query("DELETE FROM webhooks WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(backend(ctx))?;
        tx.commit().await.map_err(backend(ctx))?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "webhook",
                key: name.to_string(),
            });
        }
        Ok(())
    }

    pub(crate) async fn enqueue_deliveries_impl(
        &self,
        deliveries: &[Delivery],
    ) -> Result<Vec<Delivery>> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        let ctx = "enqueueing deliveries";
        let mut tx = self.begin_write().await?;
        // Checked first so a missing webhook is NotFound by name rather than
        // an anonymous foreign key failure; the write lock keeps it true.
        let mut names: Vec<&str> = deliveries.iter().map(|d| d.webhook.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let existing: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM webhooks WHERE name IN (SELECT value FROM json_each($1))",
        )
        .bind(codec::json_text(&names))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend(ctx))?;
        if let Some(missing) = missing_webhook(deliveries, &existing) {
            return Err(StoreError::NotFound {
                what: "webhook",
                key: missing.to_string(),
            });
        }
        let (mut inserted, mut last) = (0, 0);
        let mut rest = deliveries;
        for size in chunk_sizes(deliveries.len()) {
            let (chunk, more) = rest.split_at(size);
            let done = delivery_rows(DELIVERY_INSERT.sql(size), chunk)
                .execute(&mut *tx)
                .await
                .map_err(backend(ctx))?;
            inserted += done.rows_affected();
            last = done.last_insert_rowid();
            rest = more;
        }
        tx.commit().await.map_err(backend(ctx))?;
        // One transaction on the only writer connection: consecutive ids
        // (AUTOINCREMENT, VALUES order) ending at the last.
        let n = deliveries.len() as i64;
        if inserted != n as u64 {
            return Err(StoreError::Corrupt {
                table: "deliveries",
                detail: format!("inserted {inserted} of {n} deliveries in one transaction"),
            });
        }
        let ids: Vec<i64> = (last - n + 1..=last).collect();
        Ok(stored_deliveries(deliveries, &ids))
    }

    pub(crate) async fn due_deliveries_impl(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        // Oldest = enqueued first (id order), so a receiver gets events in order.
        sqlx::query(
            "SELECT * FROM deliveries WHERE state = 'pending' AND next_attempt_at <= $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(codec::millis(now))
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await
        .map_err(backend("listing due deliveries"))?
        .iter()
        .map(delivery_from_row)
        .collect()
    }

    pub(crate) async fn update_delivery_impl(&self, d: &Delivery) -> Result<()> {
        let ctx = "updating a delivery";
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE deliveries SET state = $2, attempts = $3, next_attempt_at = $4, last_status = $5, \
             last_error = $6, delivered_at = $7 WHERE id = $1",
        )
        .bind(d.id)
        .bind(d.state.as_str())
        .bind(i64::from(d.attempts))
        .bind(codec::millis(d.next_attempt_at))
        .bind(d.last_status.map(i64::from))
        .bind(&d.last_error)
        .bind(d.delivered_at.map(codec::millis))
        .execute(&mut *tx)
        .await
        .map_err(backend(ctx))?;
        tx.commit().await.map_err(backend(ctx))?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "delivery",
                key: d.id.to_string(),
            });
        }
        Ok(())
    }

    pub(crate) async fn list_deliveries_impl(
        &self,
        webhook: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let limit = limit_or_default(limit);
        let q = match webhook {
            Some(name) => {
                sqlx::query("SELECT * FROM deliveries WHERE webhook = $1 ORDER BY id DESC LIMIT $2")
                    .bind(name)
                    .bind(limit)
            }
            None => sqlx::query("SELECT * FROM deliveries ORDER BY id DESC LIMIT $1").bind(limit),
        };
        q.fetch_all(self.reader())
            .await
            .map_err(backend("listing deliveries"))?
            .iter()
            .map(delivery_from_row)
            .collect()
    }
}

fn webhook_from_row(row: &SqliteRow) -> Result<Webhook> {
    let get = |e| backend("decoding a webhook row")(e);
    let t = "webhooks";
    Ok(Webhook {
        name: row.try_get("name").map_err(get)?,
        url: row.try_get("url").map_err(get)?,
        events: codec::parse_json(
            t,
            "events",
            &row.try_get::<String, _>("events").map_err(get)?,
        )?,
        enabled: row.try_get("enabled").map_err(get)?,
        created_at: codec::from_millis(t, row.try_get("created_at").map_err(get)?)?,
        sealed_secret: row.try_get("sealed_secret").map_err(get)?,
    })
}

fn delivery_from_row(row: &SqliteRow) -> Result<Delivery> {
    let get = |e| backend("decoding a delivery row")(e);
    let t = "deliveries";
    Ok(Delivery {
        id: row.try_get("id").map_err(get)?,
        webhook: row.try_get("webhook").map_err(get)?,
        event_id: row.try_get("event_id").map_err(get)?,
        event_kind: codec::event_kind_in(t, &row.try_get::<String, _>("event_kind").map_err(get)?)?,
        body: row.try_get("body").map_err(get)?,
        state: codec::delivery_state(&row.try_get::<String, _>("state").map_err(get)?)?,
        attempts: codec::int(t, "attempts", row.try_get("attempts").map_err(get)?)?,
        next_attempt_at: codec::from_millis(t, row.try_get("next_attempt_at").map_err(get)?)?,
        last_status: row
            .try_get::<Option<i64>, _>("last_status")
            .map_err(get)?
            .map(|s| codec::int(t, "last_status", s))
            .transpose()?,
        last_error: row.try_get("last_error").map_err(get)?,
        created_at: codec::from_millis(t, row.try_get("created_at").map_err(get)?)?,
        delivered_at: row
            .try_get::<Option<i64>, _>("delivered_at")
            .map_err(get)?
            .map(|ms| codec::from_millis(t, ms))
            .transpose()?,
    })
}
