//! The enqueuer: turns events into outbox rows, one per event and webhook
//! that wants it.
//!
//! Where it starts: after the newest event already in the outbox (so events
//! stored while alerts were down are still sent), or, when nothing was ever
//! enqueued, at the live stream (history is never replayed to a new
//! webhook). A webhook also never gets events from before its `created_at`.
//!
//! The webhook list is cached: re-read when the fleet's webhook generation
//! moves (a write through this server, seen before the next event it
//! causes) and every `webhook_refresh` (writes through another server
//! sharing the store). One small read per few seconds instead of one per
//! event batch.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use metrics::counter;
use rackboot_core::{Delivery, Event, EventKind, Webhook};
use rackboot_fleet::Fleet;
use rackboot_fleet::webhooks::{alert_body, new_delivery};
use rackboot_store::{EventFilter, StoreError};
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::AlertConfig;

/// Stored events read per page while catching up.
const REPLAY_PAGE: u32 = 500;
/// Live events taken into one batch (one outbox write).
const LIVE_BATCH: usize = 256;
/// How far back the outbox is read for the newest enqueued event (test
/// deliveries, numbered 0, may be the newest rows).
const RESUME_SCAN: u32 = 100;

/// Whether `event` goes to `hook`: the hook wants its kind (and is enabled),
/// the event is not older than the hook, and it is not a `webhook_failed`
/// about this hook (it would fail the same way) or about a failed delivery of
/// a `webhook_failed` (two broken hooks would alert each other forever).
pub fn should_send(hook: &Webhook, event: &Event) -> bool {
    if !hook.wants(event) || event.at < hook.created_at {
        return false;
    }
    if event.kind == EventKind::WebhookFailed {
        let about = |field: &str| event.data.get(field).and_then(|v| v.as_str());
        if about("webhook") == Some(hook.name.as_str())
            || about("event_kind") == Some(EventKind::WebhookFailed.as_str())
        {
            return false;
        }
    }
    true
}

/// The outbox rows for `events` (in event order, webhooks by name).
fn deliveries_for(fleet: &Fleet, hooks: &[Webhook], events: &[Event]) -> Vec<Delivery> {
    let snapshot = fleet.snapshot();
    let now = Utc::now();
    let mut out = Vec::new();
    for event in events {
        let mut body: Option<String> = None;
        for hook in hooks.iter().filter(|h| should_send(h, event)) {
            let body = body
                .get_or_insert_with(|| {
                    let name = event
                        .machine
                        .and_then(|id| snapshot.machine_by_id(id))
                        .map(|m| m.name.as_str());
                    alert_body(event, name)
                })
                .clone();
            out.push(new_delivery(&hook.name, event.id, event.kind, body, now));
        }
    }
    out
}

struct Enqueuer {
    fleet: Arc<Fleet>,
    wake: Arc<Notify>,
    config: AlertConfig,
    shutdown: CancellationToken,
    hooks: Vec<Webhook>,
    /// Fleet generation and time of the cached list; `None` before the first read.
    read: Option<(u64, Instant)>,
}

impl Enqueuer {
    /// Sleeps `d` unless shut down first; false on shutdown.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    async fn refresh_hooks(&mut self, force: bool) -> Result<(), StoreError> {
        let generation = self.fleet.webhooks_generation();
        let fresh = self
            .read
            .is_some_and(|(g, at)| g == generation && at.elapsed() < self.config.webhook_refresh);
        if force || !fresh {
            // Generation read first: a write during the read moves it again.
            self.hooks = self.fleet.store().list_webhooks().await?;
            self.read = Some((generation, Instant::now()));
        }
        Ok(())
    }

    /// Stores the deliveries of `events`, retrying store failures until
    /// they succeed; false on shutdown (then nothing of `events` was stored,
    /// and the next run starts before them).
    async fn enqueue(&mut self, events: &[Event]) -> bool {
        let mut wait = Duration::from_millis(500);
        let mut force = false;
        loop {
            let result = match self.refresh_hooks(force).await {
                Ok(()) => {
                    let deliveries = deliveries_for(&self.fleet, &self.hooks, events);
                    if deliveries.is_empty() {
                        return true;
                    }
                    self.fleet
                        .store()
                        .enqueue_deliveries(&deliveries)
                        .await
                        .map(|stored| stored.len())
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(n) => {
                    counter!("rackboot_webhook_enqueued_total").increment(n as u64);
                    self.wake.notify_one();
                    return true;
                }
                // A webhook was deleted since the list was read: read it again.
                Err(StoreError::NotFound { .. }) if !force => force = true,
                Err(e) => {
                    counter!("rackboot_webhook_enqueue_errors_total").increment(1);
                    tracing::warn!(error = %e, "cannot enqueue webhook deliveries; retrying");
                    if !self.pause(wait).await {
                        return false;
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                    force = false;
                }
            }
        }
    }

    /// The newest event id in the outbox (test deliveries aside), retried
    /// until the store answers; `Err(())` on shutdown.
    async fn resume_point(&self) -> Result<Option<i64>, ()> {
        loop {
            match self.fleet.store().list_deliveries(None, RESUME_SCAN).await {
                Ok(rows) => {
                    return Ok(rows
                        .iter()
                        .map(|d| d.event_id)
                        .filter(|&id| id > rackboot_fleet::webhooks::TEST_EVENT_ID)
                        .max());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "alerts: cannot read the outbox; retrying");
                    if !self.pause(Duration::from_secs(1)).await {
                        return Err(());
                    }
                }
            }
        }
    }
}

fn lagged(missed: u64, cursor: Option<i64>) {
    counter!("rackboot_alerts_lagged_total").increment(1);
    match cursor {
        Some(after) => {
            tracing::warn!(
                missed,
                after,
                "alerts fell behind the event stream; catching up from the store"
            )
        }
        // Nothing processed yet, so no id to catch up from. Needs 4,096
        // events before the first one is handled.
        None => {
            counter!("rackboot_alerts_events_missed_total").increment(missed);
            tracing::error!(
                missed,
                "alerts fell behind before its first event; those events are not sent"
            )
        }
    }
}

/// `live` was subscribed before this reads the store: every later event is
/// then in the store read or in the subscription (or both, skipped by id).
pub(crate) async fn run(
    fleet: Arc<Fleet>,
    mut live: broadcast::Receiver<Event>,
    wake: Arc<Notify>,
    config: AlertConfig,
    shutdown: CancellationToken,
) {
    let mut me = Enqueuer {
        fleet,
        wake,
        config,
        shutdown,
        hooks: Vec::new(),
        read: None,
    };
    let Ok(mut cursor) = me.resume_point().await else {
        return;
    };
    let mut replay = cursor.is_some();
    if let Some(after) = cursor {
        tracing::info!(
            after,
            "alerts: enqueuing events stored after the newest one in the outbox"
        );
    }
    loop {
        let batch: Vec<Event> = if replay {
            let filter = EventFilter {
                after_id: cursor,
                limit: REPLAY_PAGE,
                ..EventFilter::default()
            };
            match me.fleet.store().list_events(&filter).await {
                Ok(page) => {
                    replay = page.len() >= REPLAY_PAGE as usize;
                    page
                }
                Err(e) => {
                    tracing::warn!(error = %e, "alerts: cannot read stored events; retrying");
                    if !me.pause(Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            }
        } else {
            let first = tokio::select! {
                _ = me.shutdown.cancelled() => return,
                r = live.recv() => r,
            };
            match first {
                Ok(event) => {
                    let mut batch = vec![event];
                    while batch.len() < LIVE_BATCH {
                        match live.try_recv() {
                            Ok(event) => batch.push(event),
                            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                                // The batch precedes the gap: store it, then catch up.
                                lagged(missed, batch.last().map(|e| e.id));
                                replay = true;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    batch
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    lagged(missed, cursor);
                    replay = cursor.is_some();
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        };
        let batch: Vec<Event> = batch
            .into_iter()
            .filter(|e| cursor.is_none_or(|c| e.id > c))
            .collect();
        let Some(newest) = batch.iter().map(|e| e.id).max() else {
            continue;
        };
        if !me.enqueue(&batch).await {
            return;
        }
        cursor = Some(newest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeDelta};

    fn hook(name: &str, events: &[&str], created_at: DateTime<Utc>) -> Webhook {
        Webhook {
            name: name.into(),
            url: "http://127.0.0.1:9/".into(),
            events: events.iter().map(|s| s.to_string()).collect(),
            enabled: true,
            created_at,
            sealed_secret: String::new(),
        }
    }

    fn event(kind: EventKind, at: DateTime<Utc>, data: serde_json::Value) -> Event {
        Event {
            id: 1,
            at,
            kind,
            machine: None,
            mac: None,
            message: String::new(),
            data,
        }
    }

    #[test]
    fn which_events_go_where() {
        let t0: DateTime<Utc> = "2025-01-01T00:00:00Z".parse().unwrap();
        let later = t0 + TimeDelta::seconds(1);
        let earlier = t0 - TimeDelta::seconds(1);
        let null = serde_json::Value::Null;
        let failed_about =
            |hook: &str, kind: &str| serde_json::json!({"webhook": hook, "event_kind": kind});
        let warnings = hook("ops", &[], t0);
        let all = hook("all", &["*"], t0);
        let cases = [
            (
                &warnings,
                event(EventKind::WorkflowFailed, later, null.clone()),
                true,
            ),
            (
                &warnings,
                event(EventKind::LeaseAcked, later, null.clone()),
                false,
            ),
            (
                &all,
                event(EventKind::LeaseAcked, later, null.clone()),
                true,
            ),
            (&all, event(EventKind::LeaseAcked, t0, null.clone()), true),
            // From before the hook existed.
            (
                &all,
                event(EventKind::LeaseAcked, earlier, null.clone()),
                false,
            ),
            // A failure of another hook is news; of this one, it is not.
            (
                &warnings,
                event(
                    EventKind::WebhookFailed,
                    later,
                    failed_about("pager", "agent_lost"),
                ),
                true,
            ),
            (
                &warnings,
                event(
                    EventKind::WebhookFailed,
                    later,
                    failed_about("ops", "agent_lost"),
                ),
                false,
            ),
            // A failure to deliver a failure notice goes nowhere.
            (
                &all,
                event(
                    EventKind::WebhookFailed,
                    later,
                    failed_about("pager", "webhook_failed"),
                ),
                false,
            ),
        ];
        for (i, (hook, event, want)) in cases.iter().enumerate() {
            assert_eq!(
                should_send(hook, event),
                *want,
                "case {i}: {} {:?}",
                hook.name,
                event.kind
            );
        }
    }
}
