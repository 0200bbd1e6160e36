//! PostgreSQL: webhooks and their outbox of deliveries.

use chrono::{DateTime, Utc};
use rackboot_core::{Delivery, Webhook};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::postgres::PgStore;
use crate::{
    Result, StoreError, backend, codec, limit_or_default, missing_webhook, stored_deliveries,
    truncate_ms,
};

impl PgStore {
    pub(crate) async fn put_webhook_impl(&self, w: &Webhook) -> Result<()> {
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
        .bind(truncate_ms(w.created_at))
        .execute(self.pool())
        .await
        .map_err(backend("writing a webhook"))?;
        Ok(())
    }

    pub(crate) async fn list_webhooks_impl(&self) -> Result<Vec<Webhook>> {
        sqlx::query("SELECT * FROM webhooks ORDER BY name")
            .fetch_all(self.pool())
            .await
            .map_err(backend("listing webhooks"))?
            .iter()
            .map(webhook_from_row)
            .collect()
    }

    pub(crate) async fn delete_webhook_impl(&self, name: &str) -> Result<()> {
        // Its deliveries go with it (ON DELETE CASCADE).
        let deleted = sqlx::query("DELETE FROM webhooks WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await
            .map_err(backend("deleting a webhook"))?;
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
        let n = deliveries.len();
        let mut webhook = Vec::with_capacity(n);
        let mut event_id = Vec::with_capacity(n);
        let mut event_kind = Vec::with_capacity(n);
        let mut body = Vec::with_capacity(n);
        let mut state = Vec::with_capacity(n);
        let mut attempts = Vec::with_capacity(n);
        let mut next_attempt_at = Vec::with_capacity(n);
        let mut last_status = Vec::with_capacity(n);
        let mut last_error = Vec::with_capacity(n);
        let mut created_at = Vec::with_capacity(n);
        let mut delivered_at = Vec::with_capacity(n);
        for d in deliveries {
            webhook.push(d.webhook.as_str());
            event_id.push(d.event_id);
            event_kind.push(d.event_kind.as_str());
            body.push(d.body.as_str());
            state.push(d.state.as_str());
            attempts.push(i64::from(d.attempts));
            next_attempt_at.push(truncate_ms(d.next_attempt_at));
            last_status.push(d.last_status.map(i32::from));
            last_error.push(d.last_error.as_deref());
            created_at.push(truncate_ms(d.created_at));
            delivered_at.push(d.delivered_at.map(truncate_ms));
        }
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(backend("beginning write transaction"))?;
        // Checked first so a missing webhook is NotFound by name rather than an
        // anonymous foreign key failure; KEY SHARE holds off its deletion
        // until commit.
        let mut names = webhook.clone();
        names.sort_unstable();
        names.dedup();
        let existing: Vec<String> =
            sqlx::query_scalar("SELECT name FROM webhooks WHERE name = ANY($1) FOR KEY SHARE")
                .bind(names)
                .fetch_all(&mut *tx)
                .await
                .map_err(backend(ctx))?;
        if let Some(missing) = missing_webhook(deliveries, &existing) {
            return Err(StoreError::NotFound {
                what: "webhook",
                key: missing.to_string(),
            });
        }
        // Rows are inserted, and take identity values, in ORDER BY ord order;
        // the ids are sorted because RETURNING's order is not promised.
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO deliveries (webhook, event_id, event_kind, body, state, attempts, \
             next_attempt_at, last_status, last_error, created_at, delivered_at) \
             SELECT webhook, event_id, event_kind, body, state, attempts, next_attempt_at, \
             last_status, last_error, created_at, delivered_at \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
                         $7::timestamptz[], $8::integer[], $9::text[], $10::timestamptz[], $11::timestamptz[]) \
                  WITH ORDINALITY AS t(webhook, event_id, event_kind, body, state, attempts, \
                  next_attempt_at, last_status, last_error, created_at, delivered_at, ord) \
             ORDER BY ord RETURNING id",
        )
        .bind(webhook)
        .bind(event_id)
        .bind(event_kind)
        .bind(body)
        .bind(state)
        .bind(attempts)
        .bind(next_attempt_at)
        .bind(last_status)
        .bind(last_error)
        .bind(created_at)
        .bind(delivered_at)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend(ctx))?;
        tx.commit().await.map_err(backend(ctx))?;
        ids.sort_unstable();
        if ids.len() != n {
            return Err(StoreError::Corrupt {
                table: "deliveries",
                detail: format!("inserted {n} deliveries but got {} ids back", ids.len()),
            });
        }
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
        .bind(truncate_ms(now))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(backend("listing due deliveries"))?
        .iter()
        .map(delivery_from_row)
        .collect()
    }

    pub(crate) async fn update_delivery_impl(&self, d: &Delivery) -> Result<()> {
        let updated = sqlx::query(
            "UPDATE deliveries SET state = $2, attempts = $3, next_attempt_at = $4, last_status = $5, \
             last_error = $6, delivered_at = $7 WHERE id = $1",
        )
        .bind(d.id)
        .bind(d.state.as_str())
        .bind(i64::from(d.attempts))
        .bind(truncate_ms(d.next_attempt_at))
        .bind(d.last_status.map(i32::from))
        .bind(&d.last_error)
        .bind(d.delivered_at.map(truncate_ms))
        .execute(self.pool())
        .await
        .map_err(backend("updating a delivery"))?;
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
        q.fetch_all(self.pool())
            .await
            .map_err(backend("listing deliveries"))?
            .iter()
            .map(delivery_from_row)
            .collect()
    }
}

fn webhook_from_row(row: &PgRow) -> Result<Webhook> {
    let get = |e| backend("decoding a webhook row")(e);
    Ok(Webhook {
        name: row.try_get("name").map_err(get)?,
        url: row.try_get("url").map_err(get)?,
        events: codec::parse_json(
            "webhooks",
            "events",
            &row.try_get::<String, _>("events").map_err(get)?,
        )?,
        enabled: row.try_get("enabled").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        sealed_secret: row.try_get("sealed_secret").map_err(get)?,
    })
}

fn delivery_from_row(row: &PgRow) -> Result<Delivery> {
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
        next_attempt_at: row.try_get("next_attempt_at").map_err(get)?,
        last_status: row
            .try_get::<Option<i32>, _>("last_status")
            .map_err(get)?
            .map(|s| codec::int(t, "last_status", i64::from(s)))
            .transpose()?,
        last_error: row.try_get("last_error").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        delivered_at: row.try_get("delivered_at").map_err(get)?,
    })
}
