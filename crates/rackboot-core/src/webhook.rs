//! Alerts: webhooks that receive events as signed JSON, through a durable
//! outbox retried with backoff.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Event, EventKind};

/// A receiver of events.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Webhook {
    /// Unique name, `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`.
    pub name: String,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// Which events: event kinds (`workflow_failed`), `warnings` (every
    /// warning kind), or `*`. Empty means `warnings`.
    pub events: Vec<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    /// The HMAC-SHA256 key, sealed by the server's secret key; never serialised.
    #[serde(skip)]
    pub sealed_secret: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// Filter word for every warning kind.
pub const WARNINGS: &str = "warnings";

impl Webhook {
    /// Checks the filter words; the message names the bad one.
    pub fn validate_filter(events: &[String]) -> Result<(), String> {
        for word in events {
            if word != "*" && word != WARNINGS && EventKind::parse(word).is_none() {
                return Err(format!(
                    "unknown event filter {word:?}: use an event kind (e.g. workflow_failed), `warnings` or `*`"
                ));
            }
        }
        Ok(())
    }

    /// Whether this webhook receives `event`.
    pub fn wants(&self, event: &Event) -> bool {
        if !self.enabled {
            return false;
        }
        if self.events.is_empty() {
            return event.kind.is_warning();
        }
        self.events.iter().any(|w| {
            w == "*" || (w == WARNINGS && event.kind.is_warning()) || w == event.kind.as_str()
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not delivered yet; tried again at `next_attempt_at`.
    Pending,
    Delivered,
    /// Gave up after the last attempt.
    Failed,
}

impl DeliveryState {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One event on its way to one webhook (a row of the outbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// Store id; 0 before it is stored.
    pub id: i64,
    pub webhook: String,
    pub event_id: i64,
    pub event_kind: EventKind,
    /// The exact JSON body sent (and signed).
    pub body: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    /// HTTP status of the last attempt, if it got one.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(events: &[&str]) -> Webhook {
        Webhook {
            name: "h".into(),
            url: "http://127.0.0.1:9/".into(),
            events: events.iter().map(|s| s.to_string()).collect(),
            enabled: true,
            created_at: Utc::now(),
            sealed_secret: String::new(),
        }
    }

    fn event(kind: EventKind) -> Event {
        Event {
            id: 1,
            at: Utc::now(),
            kind,
            machine: None,
            mac: None,
            message: String::new(),
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn filters_choose_events() {
        assert!(hook(&[]).wants(&event(EventKind::PowerActionFailed)));
        assert!(!hook(&[]).wants(&event(EventKind::LeaseAcked)));
        assert!(hook(&["*"]).wants(&event(EventKind::LeaseAcked)));
        assert!(hook(&["lease_acked"]).wants(&event(EventKind::LeaseAcked)));
        assert!(!hook(&["lease_acked"]).wants(&event(EventKind::TftpSent)));
        let mut off = hook(&["*"]);
        off.enabled = false;
        assert!(!off.wants(&event(EventKind::LeaseAcked)));
        assert!(Webhook::validate_filter(&["nope".into()]).is_err());
        assert!(Webhook::validate_filter(&["warnings".into(), "*".into()]).is_ok());
    }
}
