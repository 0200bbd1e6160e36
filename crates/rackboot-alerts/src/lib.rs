//! Alerts: events POSTed as JSON to operators' webhooks, through a durable
//! outbox in the store, retried with backoff until delivered or given up.
//!
//! [`run`] is one task with two loops:
//! - the **enqueuer** follows the live event stream (backfilling from the
//!   store after a lag, and after a restart from the newest event already in
//!   the outbox) and stores one delivery per event and webhook that wants it;
//! - the **deliverer** takes due deliveries every second (or when the
//!   enqueuer wakes it) and POSTs them, one at a time per webhook and in
//!   order, several webhooks at once.
//!
//! A delivery is at least once: a delivery whose result could not be
//! recorded (a crash mid-request, a store error) is sent again. Receivers
//! deduplicate by `X-Rackboot-Delivery`.
//!
//! # What a receiver gets
//!
//! `POST <url>` with the JSON body `{"id", "at", "kind", "machine",
//! "machine_name", "mac", "message", "data"}` (see
//! [`rackboot_fleet::webhooks::AlertBody`]; `kind` is `webhook_test` and `id`
//! 0 for a test delivery) and these headers:
//!
//! | header | value |
//! |---|---|
//! | `Content-Type` | `application/json` |
//! | `X-Rackboot-Event` | the event kind (`workflow_failed`) |
//! | `X-Rackboot-Delivery` | the delivery id; the same on every retry |
//! | `X-Rackboot-Timestamp` | Unix seconds when this attempt was signed |
//! | `X-Rackboot-Signature` | `sha256=` + hex HMAC-SHA256 of `"<timestamp>.<body>"` |
//!
//! The HMAC key is the webhook's secret as text (its UTF-8 bytes; a
//! generated secret is 64 hex characters and is used as those characters).
//! To verify: recompute the HMAC over the timestamp header, a `.`, and the raw
//! body bytes as received; compare in constant time; reject a timestamp more
//! than a few minutes from your clock (a replayed request keeps its old
//! timestamp, and changing it breaks the signature). In Python:
//!
//! ```text
//! expected = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
//! ok = hmac.compare_digest(expected, request.headers["X-Rackboot-Signature"])
//! ```
//!
//! A 2xx answer delivers; anything else (another status, no connection, a
//! timeout) is retried after a backoff (doubling from
//! [`AlertConfig::backoff_initial`] up to [`AlertConfig::backoff_max`]), and
//! after [`AlertConfig::max_attempts`] the delivery is `failed` and a
//! `webhook_failed` warning is recorded. Redirects are not followed.

use std::sync::Arc;
use std::time::Duration;

use rackboot_fleet::Fleet;
use rackboot_seal::SecretKey;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

mod deliver;
mod enqueue;
pub mod retry;
pub mod sign;

pub use enqueue::should_send;
pub use retry::{AttemptResult, RetryPolicy, after_attempt};
pub use sign::signature;

/// How alerts are delivered. `Default` is the production setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertConfig {
    /// Attempts before a delivery is given up (default 12).
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles after each (default 1 s).
    pub backoff_initial: Duration,
    /// Longest wait between attempts (default 10 min).
    pub backoff_max: Duration,
    /// Whole-request timeout of one POST (default 10 s).
    pub timeout: Duration,
    /// How often due deliveries are looked for without a wake-up (default 1 s).
    pub poll_interval: Duration,
    /// Webhooks delivered to at once (each gets one request at a time; default 8).
    pub max_concurrent: usize,
    /// Deliveries taken from the outbox per round (default 256).
    pub batch: u32,
    /// The enqueuer re-reads the webhook list at least this often, for
    /// changes made by another server sharing the store (default 5 s; changes
    /// through this server's fleet are seen at once).
    pub webhook_refresh: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            max_attempts: 12,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            max_concurrent: 8,
            batch: 256,
            webhook_refresh: Duration::from_secs(5),
        }
    }
}

impl AlertConfig {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max.max(self.backoff_initial),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("alerts: cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// Runs the enqueuer and the deliverer until `shutdown`. Deliveries in
/// flight at shutdown get two seconds to finish; those still unanswered
/// then stay pending and are sent by the next run.
///
/// Subscribes to the live event stream when called, not when first polled:
/// no event published after `run(...)` returns is missed, however late the
/// future is spawned.
pub fn run(
    fleet: Arc<Fleet>,
    key: Arc<SecretKey>,
    config: AlertConfig,
    shutdown: CancellationToken,
) -> impl Future<Output = Result<(), AlertsError>> + Send + 'static {
    let live = fleet.events().subscribe();
    async move {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rackboot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AlertsError::HttpClient)?;
        let wake = Arc::new(Notify::new());
        tracing::info!(
            max_attempts = config.max_attempts,
            backoff_initial = ?config.backoff_initial,
            backoff_max = ?config.backoff_max,
            "alerts running"
        );
        tokio::join!(
            enqueue::run(
                fleet.clone(),
                live,
                wake.clone(),
                config.clone(),
                shutdown.clone()
            ),
            deliver::run(fleet, key, client, config, wake, shutdown),
        );
        Ok(())
    }
}
