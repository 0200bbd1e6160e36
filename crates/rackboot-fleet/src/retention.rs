//! Event retention: the event log grows by a few events per DHCP exchange
//! and per boot, so a background task deletes what the policy no longer
//! keeps, a bounded step at a time.

use std::time::Duration;

use metrics::counter;
use rackboot_store::{Store, StoreError};

/// What the event log keeps. `None` fields do not bound it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRetention {
    /// Events older than this are deleted.
    pub max_age: Option<Duration>,
    /// Only the newest this many are kept.
    pub max_events: Option<u64>,
    /// Time between two pruning passes.
    pub interval: Duration,
}

impl EventRetention {
    /// True when the policy deletes anything at all.
    pub fn bounds_anything(&self) -> bool {
        self.max_age.is_some() || self.max_events.is_some()
    }
}

/// Rows deleted per store call: short transactions, so DHCP's lease writes
/// and the event persist task never wait long behind a pruning pass.
const STEP_ROWS: u32 = 5000;
/// Pause between two steps of one pass.
const STEP_PAUSE: Duration = Duration::from_millis(20);

/// One pass: deletes everything `policy` no longer keeps, in steps; returns
/// how many events it deleted.
pub async fn prune_events_once(
    store: &dyn Store,
    policy: &EventRetention,
) -> Result<u64, StoreError> {
    let older_than = policy.max_age.map(|age| {
        chrono::Utc::now() - chrono::TimeDelta::from_std(age).unwrap_or(chrono::TimeDelta::MAX)
    });
    let mut total = 0;
    loop {
        let deleted = store
            .prune_events(older_than, policy.max_events, STEP_ROWS)
            .await?;
        total += deleted;
        counter!("rackboot_events_pruned_total").increment(deleted);
        if deleted < u64::from(STEP_ROWS) {
            return Ok(total);
        }
        tokio::time::sleep(STEP_PAUSE).await;
    }
}

/// Prunes on `policy.interval` (the first pass at once) until `shutdown`
/// completes. Errors are logged; the next pass tries again.
pub async fn run_event_pruning(
    store: std::sync::Arc<dyn Store>,
    policy: EventRetention,
    shutdown: impl std::future::Future<Output = ()>,
) {
    if !policy.bounds_anything() {
        return;
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(policy.interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let pass = prune_events_once(store.as_ref(), &policy);
        tokio::select! {
            () = &mut shutdown => return,
            result = pass => match result {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "pruned the event log"),
                Err(e) => tracing::warn!(error = %e, "pruning the event log failed"),
            },
        }
    }
}
