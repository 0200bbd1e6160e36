//! The deliverer: POSTs due deliveries and records each result.
//!
//! Order per webhook: a round takes the due deliveries oldest first and
//! sends each webhook's in order, one request at a time. When one is to be
//! retried, the webhook is *held* until that retry: its later deliveries are
//! not sent but deferred to the same time (written to the outbox, so they
//! leave the due set and cannot starve other webhooks), and the held one goes
//! first again. A dead receiver thus gets one request per backoff step, not
//! one per pending event. Holds are kept in memory and rebuilt from the
//! outbox every [`SCAN_INTERVAL`] (and at start), which also sets the
//! outbox-depth gauge.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use metrics::{counter, gauge};
use rackboot_core::{Delivery, DeliveryState, EventKind, NewEvent};
use rackboot_fleet::Fleet;
use rackboot_fleet::webhooks::delivery_kind_name;
use rackboot_seal::SecretKey;
use rackboot_store::StoreError;
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::retry::{AttemptResult, RetryPolicy, after_attempt};
use crate::{AlertConfig, sign};

/// How often the whole pending outbox is read (depth gauge, holds).
const SCAN_INTERVAL: Duration = Duration::from_secs(15);
/// The depth gauge counts at most this many pending deliveries.
const DEPTH_CAP: u32 = 10_000;
/// Bytes of a refusing receiver's answer kept in `last_error`.
const DETAIL_BYTES: usize = 200;

/// A webhook as the deliverer needs it: where, and the opened secret (or why
/// it could not be opened).
struct Target {
    url: String,
    secret: Result<String, String>,
}

struct Deliverer {
    fleet: Arc<Fleet>,
    key: Arc<SecretKey>,
    client: reqwest::Client,
    config: AlertConfig,
    policy: RetryPolicy,
    /// Webhooks whose oldest pending delivery waits for a retry, until when.
    holds: HashMap<String, DateTime<Utc>>,
}

/// How long a shutdown waits for the deliveries already sent.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Resolves [`SHUTDOWN_GRACE`] after `shutdown` is cancelled.
async fn grace_after(shutdown: &CancellationToken) {
    shutdown.cancelled().await;
    tokio::time::sleep(SHUTDOWN_GRACE).await;
}

pub(crate) async fn run(
    fleet: Arc<Fleet>,
    key: Arc<SecretKey>,
    client: reqwest::Client,
    config: AlertConfig,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let policy = config.retry_policy();
    let mut me = Deliverer {
        fleet,
        key,
        client,
        config,
        policy,
        holds: HashMap::new(),
    };
    let mut next_scan = Instant::now();
    loop {
        if Instant::now() >= next_scan {
            me.scan().await;
            next_scan = Instant::now() + SCAN_INTERVAL;
        }
        // Rounds until nothing is due (a full batch may have more behind it).
        loop {
            let due = match me
                .fleet
                .store()
                .due_deliveries(Utc::now(), me.config.batch)
                .await
            {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "alerts: cannot read due deliveries");
                    break;
                }
            };
            let full = due.len() >= me.config.batch as usize;
            if due.is_empty() {
                break;
            }
            // A shutdown lets the requests under way finish for a moment
            // (a receiver that got one would get it again after a restart);
            // a round dropped later leaves its deliveries pending, and the
            // next run sends them again.
            let progressed = tokio::select! {
                _ = grace_after(&shutdown) => return,
                n = me.round(due) => n,
            };
            if shutdown.is_cancelled() {
                return;
            }
            if !full || progressed == 0 {
                break;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(me.config.poll_interval) => {}
        }
    }
}

impl Deliverer {
    /// Reads every pending delivery (up to [`DEPTH_CAP`]): sets the depth
    /// gauge and holds each webhook whose oldest pending delivery is waiting
    /// for a retry.
    async fn scan(&mut self) {
        let far = Utc::now() + TimeDelta::days(36_500);
        let pending = match self.fleet.store().due_deliveries(far, DEPTH_CAP).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "alerts: cannot read the outbox");
                return;
            }
        };
        gauge!("rackboot_webhook_outbox_pending").set(pending.len() as f64);
        let now = Utc::now();
        self.holds.retain(|_, until| *until > now);
        let mut seen = std::collections::HashSet::new();
        for d in &pending {
            // Oldest first: the first row of a webhook is its head.
            if seen.insert(d.webhook.as_str()) && d.attempts > 0 && d.next_attempt_at > now {
                let until = self
                    .holds
                    .entry(d.webhook.clone())
                    .or_insert(d.next_attempt_at);
                *until = (*until).max(d.next_attempt_at);
            }
        }
    }

    /// Opens every webhook's secret; `None` if the list cannot be read.
    async fn targets(&self) -> Option<HashMap<String, Target>> {
        let hooks = match self.fleet.store().list_webhooks().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "alerts: cannot read webhooks");
                return None;
            }
        };
        Some(
            hooks
                .into_iter()
                .map(|h| {
                    let secret = self
                        .key
                        .decrypt(&h.sealed_secret)
                        .map_err(|e| format!("cannot open the webhook's secret: {e}"));
                    (h.name, Target { url: h.url, secret })
                })
                .collect(),
        )
    }

    /// Sends one batch of due deliveries; returns how many rows it changed.
    async fn round(&mut self, due: Vec<Delivery>) -> usize {
        let Some(targets) = self.targets().await else {
            return 0;
        };
        // Group by webhook, keeping the outbox (event) order inside each.
        let mut groups: Vec<(String, Vec<Delivery>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for d in due {
            let i = *index.entry(d.webhook.clone()).or_insert_with(|| {
                groups.push((d.webhook.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(d);
        }
        let now = Utc::now();
        let this = &*self;
        let targets = &targets;
        let results: Vec<(String, Option<DateTime<Utc>>, usize)> =
            futures::stream::iter(groups.into_iter().map(|(name, deliveries)| {
                let hold = this.holds.get(&name).copied().filter(|t| *t > now);
                async move {
                    // A webhook deleted since: its rows went with it.
                    let Some(target) = targets.get(&name) else {
                        return (name, None, 0);
                    };
                    let (hold, changed) = this.send_in_order(target, &deliveries, hold).await;
                    (name, hold, changed)
                }
            }))
            .buffer_unordered(self.config.max_concurrent.max(1))
            .collect()
            .await;
        let mut changed = 0;
        for (name, hold, n) in results {
            changed += n;
            match hold {
                Some(until) => self.holds.insert(name, until),
                None => self.holds.remove(&name),
            };
        }
        changed
    }

    /// One webhook's due deliveries, oldest first, one at a time. Returns
    /// the hold the webhook ends with and how many rows changed.
    async fn send_in_order(
        &self,
        target: &Target,
        deliveries: &[Delivery],
        hold: Option<DateTime<Utc>>,
    ) -> (Option<DateTime<Utc>>, usize) {
        if let Some(until) = hold {
            return (Some(until), self.defer(deliveries, until).await);
        }
        let mut changed = 0;
        for (i, d) in deliveries.iter().enumerate() {
            let result = self.attempt(target, d).await;
            let updated = after_attempt(d, &result, Utc::now(), &self.policy);
            if self.record(&updated).await {
                changed += 1;
            }
            match updated.state {
                DeliveryState::Delivered => {
                    counter!("rackboot_webhook_deliveries_total", "result" => "delivered")
                        .increment(1);
                }
                DeliveryState::Failed => {
                    counter!("rackboot_webhook_deliveries_total", "result" => "failed")
                        .increment(1);
                    self.gave_up(&updated);
                }
                DeliveryState::Pending => {
                    counter!("rackboot_webhook_deliveries_total", "result" => "retry").increment(1);
                    tracing::debug!(
                        webhook = %updated.webhook,
                        delivery = updated.id,
                        attempts = updated.attempts,
                        error = updated.last_error.as_deref().unwrap_or(""),
                        "webhook delivery failed; will retry"
                    );
                    let until = updated.next_attempt_at;
                    let rest = &deliveries[i + 1..];
                    return (Some(until), changed + self.defer(rest, until).await);
                }
            }
        }
        (None, changed)
    }

    /// Moves `deliveries` (not attempted) to `until`, behind a held one.
    async fn defer(&self, deliveries: &[Delivery], until: DateTime<Utc>) -> usize {
        let mut changed = 0;
        for d in deliveries.iter().filter(|d| d.next_attempt_at < until) {
            let mut later = d.clone();
            later.next_attempt_at = until;
            if self.record(&later).await {
                changed += 1;
            }
        }
        changed
    }

    /// Writes a delivery's new state; false when it could not (a deleted
    /// webhook took the row; a store error leaves the row as it was, so the
    /// delivery is tried again).
    async fn record(&self, d: &Delivery) -> bool {
        match self.fleet.store().update_delivery(d).await {
            Ok(()) => true,
            Err(StoreError::NotFound { .. }) => false,
            Err(e) => {
                tracing::warn!(error = %e, delivery = d.id, "alerts: cannot record a delivery");
                false
            }
        }
    }

    /// The `webhook_failed` warning for a delivery given up.
    fn gave_up(&self, d: &Delivery) {
        let kind = delivery_kind_name(d);
        let error = d.last_error.as_deref().unwrap_or("unknown error");
        tracing::warn!(webhook = %d.webhook, delivery = d.id, event = d.event_id, error, "webhook delivery given up");
        let mut event = NewEvent::new(
            EventKind::WebhookFailed,
            format!(
                "webhook {:?} gave up on event {} ({kind}) after {} attempts: {error}",
                d.webhook, d.event_id, d.attempts
            ),
        )
        .data(json!({
            "webhook": d.webhook,
            "delivery": d.id,
            "event_id": d.event_id,
            "event_kind": kind,
            "attempts": d.attempts,
            "last_status": d.last_status,
            "last_error": d.last_error,
        }));
        // On the machine's timeline too, when the event was about one.
        if let Ok(body) = serde_json::from_str::<serde_json::Value>(&d.body) {
            if let Some(id) = body["machine"].as_str().and_then(|s| s.parse().ok()) {
                event = event.machine(id);
            }
            if let Some(mac) = body["mac"].as_str().and_then(|s| s.parse().ok()) {
                event = event.mac(mac);
            }
        }
        self.fleet.emit(event);
    }

    /// One signed POST.
    async fn attempt(&self, target: &Target, d: &Delivery) -> AttemptResult {
        let secret = match &target.secret {
            Ok(s) => s,
            Err(e) => return AttemptResult::Failed { error: e.clone() },
        };
        let timestamp = Utc::now().timestamp();
        let request = self
            .client
            .post(&target.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Rackboot-Event", delivery_kind_name(d))
            .header("X-Rackboot-Delivery", d.id.to_string())
            .header("X-Rackboot-Timestamp", timestamp.to_string())
            .header(
                "X-Rackboot-Signature",
                sign::signature(secret, timestamp, &d.body),
            )
            .body(d.body.clone());
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                if response.status().is_success() {
                    AttemptResult::Accepted { status }
                } else {
                    AttemptResult::Refused {
                        status,
                        detail: answer_start(response).await,
                    }
                }
            }
            Err(e) => AttemptResult::Failed {
                error: describe(&e, self.config.timeout),
            },
        }
    }
}

/// The first bytes of a refusal's body, on one line.
async fn answer_start(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < DETAIL_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(DETAIL_BYTES);
    one_line(&String::from_utf8_lossy(&bytes))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A request error with its causes ("...: tcp connect error: Connection refused").
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {timeout:?}");
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_one_line() {
        assert_eq!(one_line("  bad\r\n request\t\n"), "bad request");
        assert_eq!(one_line(""), "");
    }
}
