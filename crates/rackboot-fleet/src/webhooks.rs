//! Webhooks: where alerts go. A webhook is checked (name, URL, event filter)
//! and stored with its HMAC secret sealed by the server's key; a secret the
//! server generates is handed to the caller once and never shown again.
//!
//! This module also defines what a receiver gets (the JSON body of an alert,
//! [`alert_body`]) so that the alerts task and the API's test delivery build
//! it the same way.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use rackboot_core::{
    Delivery, DeliveryState, Event, EventKind, MacAddr, MachineId, Webhook, machine::validate_name,
};
use rackboot_seal::SecretKey;
use rackboot_store::StoreError;
use serde::Serialize;

use crate::{Actor, Fleet, FleetError, Result};

/// Longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Longest secret accepted (bytes).
pub const MAX_SECRET_LEN: usize = 512;

/// `event_id` of a test delivery (`POST /webhooks/{name}/test`): stored
/// events are numbered from 1, so 0 is never a real event.
pub const TEST_EVENT_ID: i64 = 0;
/// The `kind` a receiver sees in a test delivery's body and
/// `X-Rackboot-Event` header.
pub const TEST_EVENT_NAME: &str = "webhook_test";
/// What a test delivery's row records as its event kind. The outbox column
/// holds an [`EventKind`] and none means "test"; [`TEST_EVENT_ID`] is what
/// marks a test delivery.
pub const TEST_EVENT_KIND: EventKind = EventKind::ServiceStarted;

/// What [`Fleet::put_webhook`] stored.
#[derive(Debug, Clone)]
pub struct SavedWebhook {
    /// As stored (its sealed secret included; never serialised).
    pub webhook: Webhook,
    /// No webhook of that name existed.
    pub created: bool,
    /// The secret the server generated (when the caller gave none for a new
    /// webhook). Shown to the caller once; only its sealed form is kept.
    pub generated_secret: Option<String>,
}

/// What a webhook receives: the JSON body of one POST.
#[derive(Debug, Clone, Serialize)]
pub struct AlertBody<'a> {
    /// The event's id (increases with time; 0 for a test delivery).
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The event kind (`workflow_failed`), or `webhook_test`.
    pub kind: &'a str,
    pub machine: Option<MachineId>,
    /// The machine's name when the server knew it.
    pub machine_name: Option<&'a str>,
    pub mac: Option<MacAddr>,
    pub message: &'a str,
    pub data: &'a serde_json::Value,
}

/// The exact body sent (and signed) for `event`.
pub fn alert_body(event: &Event, machine_name: Option<&str>) -> String {
    let body = AlertBody {
        id: event.id,
        at: event.at,
        kind: event.kind.as_str(),
        machine: event.machine,
        machine_name,
        mac: event.mac,
        message: &event.message,
        data: &event.data,
    };
    serde_json::to_string(&body).expect("an alert body serialises")
}

/// The name receivers see for a delivery's event (`X-Rackboot-Event`).
pub fn delivery_kind_name(delivery: &Delivery) -> &'static str {
    if delivery.event_id == TEST_EVENT_ID {
        TEST_EVENT_NAME
    } else {
        delivery.event_kind.as_str()
    }
}

/// A pending delivery of `body` to `webhook`, due now.
pub fn new_delivery(
    webhook: &str,
    event_id: i64,
    kind: EventKind,
    body: String,
    now: DateTime<Utc>,
) -> Delivery {
    Delivery {
        id: 0,
        webhook: webhook.to_string(),
        event_id,
        event_kind: kind,
        body,
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_status: None,
        last_error: None,
        created_at: now,
        delivered_at: None,
    }
}

/// Checks a webhook URL: `http` or `https`, a host, no credentials (the URL
/// is shown by the API; receivers authenticate rackboot by the signature).
/// The message names the field.
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("url: longer than {MAX_URL_LEN} characters"));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("url: {url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "url: scheme {:?} is not supported, use http or https",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("url: {url:?} has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "url: must not carry credentials (receivers check the X-Rackboot-Signature header)"
                .into(),
        );
    }
    Ok(())
}

/// Checks a caller's secret; the message names the field.
pub fn check_webhook_secret(secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        return Err("secret: must not be empty (omit it to have one generated)".into());
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(format!("secret: longer than {MAX_SECRET_LEN} bytes"));
    }
    if secret.chars().any(char::is_control) {
        return Err("secret: must not contain control characters (a newline?)".into());
    }
    Ok(())
}

/// A fresh secret: 32 random bytes as lower-case hex.
pub fn generate_webhook_secret() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Fleet {
    /// Creates or replaces a webhook. `secret`: the HMAC key receivers verify
    /// with; when `None`, a new webhook gets a generated one (returned once)
    /// and an existing one keeps its own. `created_at` of an existing webhook
    /// is kept, so events from before it existed are never sent to it.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_webhook(
        &self,
        name: &str,
        url: &str,
        events: Vec<String>,
        enabled: bool,
        secret: Option<String>,
        key: &SecretKey,
        by: &Actor,
    ) -> Result<SavedWebhook> {
        validate_name("webhook name", name)
            .map_err(|e| FleetError::Invalid(format!("name: {e}")))?;
        check_webhook_url(url).map_err(FleetError::Invalid)?;
        Webhook::validate_filter(&events)
            .map_err(|e| FleetError::Invalid(format!("events: {e}")))?;
        if let Some(s) = &secret {
            check_webhook_secret(s).map_err(FleetError::Invalid)?;
        }
        let existing = self.find_webhook(name).await?;
        let (sealed_secret, generated_secret) = match (secret, &existing) {
            (Some(s), _) => (key.encrypt(&s), None),
            (None, Some(old)) => (old.sealed_secret.clone(), None),
            (None, None) => {
                let s = generate_webhook_secret();
                (key.encrypt(&s), Some(s))
            }
        };
        let webhook = Webhook {
            name: name.to_string(),
            url: url.to_string(),
            events,
            enabled,
            created_at: existing.as_ref().map_or_else(Utc::now, |w| w.created_at),
            sealed_secret,
        };
        self.store().put_webhook(&webhook).await?;
        self.webhooks_changed();
        // Answer with what the store kept (it rounds timestamps).
        let webhook = self.get_webhook(name).await?;
        tracing::info!(
            webhook = %name,
            url = %webhook.url,
            events = ?webhook.events,
            enabled,
            who = %by,
            "webhook {}",
            if existing.is_some() { "replaced" } else { "created" }
        );
        Ok(SavedWebhook {
            webhook,
            created: existing.is_none(),
            generated_secret,
        })
    }

    /// Deletes a webhook and its deliveries (pending ones are never sent).
    pub async fn delete_webhook(&self, name: &str, by: &Actor) -> Result<()> {
        self.store().delete_webhook(name).await?;
        self.webhooks_changed();
        tracing::info!(webhook = %name, who = %by, "webhook deleted");
        Ok(())
    }

    /// Every webhook, by name.
    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        Ok(self.store().list_webhooks().await?)
    }

    /// One webhook; NotFound naming it.
    pub async fn get_webhook(&self, name: &str) -> Result<Webhook> {
        self.find_webhook(name)
            .await?
            .ok_or_else(|| FleetError::NotFound(format!("webhook {name:?} not found")))
    }

    async fn find_webhook(&self, name: &str) -> Result<Option<Webhook>> {
        Ok(self
            .store()
            .list_webhooks()
            .await?
            .into_iter()
            .find(|w| w.name == name))
    }

    /// A webhook's deliveries, newest first, at most `limit` (0: 1000).
    pub async fn list_deliveries(&self, name: &str, limit: u32) -> Result<Vec<Delivery>> {
        self.get_webhook(name).await?;
        Ok(self.store().list_deliveries(Some(name), limit).await?)
    }

    /// Enqueues a synthetic event ([`TEST_EVENT_NAME`], id [`TEST_EVENT_ID`])
    /// to this webhook only, whether it is enabled or not; the alerts task
    /// sends it like any other delivery.
    pub async fn test_webhook(&self, name: &str, by: &Actor) -> Result<Delivery> {
        let webhook = self.get_webhook(name).await?;
        let now = Utc::now();
        let data = serde_json::json!({"webhook": webhook.name, "who": by.as_str()});
        let message = format!(
            "test delivery to webhook {:?} requested by {by}",
            webhook.name
        );
        let body = AlertBody {
            id: TEST_EVENT_ID,
            at: now,
            kind: TEST_EVENT_NAME,
            machine: None,
            machine_name: None,
            mac: None,
            message: &message,
            data: &data,
        };
        let body = serde_json::to_string(&body).expect("an alert body serialises");
        let delivery = new_delivery(&webhook.name, TEST_EVENT_ID, TEST_EVENT_KIND, body, now);
        let mut stored = match self.store().enqueue_deliveries(&[delivery]).await {
            Ok(stored) => stored,
            // Deleted between the read and the write.
            Err(e @ StoreError::NotFound { .. }) => {
                return Err(FleetError::NotFound(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(webhook = %name, who = %by, "webhook test delivery enqueued");
        Ok(stored.remove(0))
    }

    /// Changes each time a webhook is created, replaced or deleted through
    /// this fleet: the alerts task re-reads its webhook list when it moves.
    pub fn webhooks_generation(&self) -> u64 {
        self.webhooks_generation.load(Ordering::Acquire)
    }

    fn webhooks_changed(&self) {
        self.webhooks_generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http://127.0.0.1:9000/hook", None),
            ("https://alerts.example.com/rackboot?x=1", None),
            ("http://[::1]:8080/", None),
            ("ftp://example.com/", Some("scheme \"ftp\"")),
            ("example.com/hook", Some("is not a URL")),
            ("http:///nohost", None), // the url crate reads "nohost" as the host
            ("https://user:pw@example.com/", Some("credentials")),
            ("https://token@example.com/", Some("credentials")),
            ("mailto:ops@example.com", Some("scheme")),
        ];
        for (url, want) in cases {
            let got = check_webhook_url(url);
            match want {
                None => assert!(got.is_ok(), "{url}: {got:?}"),
                Some(part) => {
                    let err = got.expect_err(url);
                    assert!(
                        err.starts_with("url: ") && err.contains(part),
                        "{url}: {err}"
                    );
                }
            }
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_webhook_url(&long).unwrap_err().contains("longer"));
    }

    #[test]
    fn secrets() {
        assert!(check_webhook_secret("s3cret").is_ok());
        assert!(
            check_webhook_secret("")
                .unwrap_err()
                .starts_with("secret: ")
        );
        assert!(
            check_webhook_secret("abc\n")
                .unwrap_err()
                .contains("control")
        );
        assert!(check_webhook_secret(&"x".repeat(513)).is_err());
        let a = generate_webhook_secret();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, generate_webhook_secret());
    }

    #[test]
    fn body_has_every_field() {
        let event = Event {
            id: 42,
            at: "2025-01-02T03:04:05.678Z".parse().unwrap(),
            kind: EventKind::WorkflowFailed,
            machine: Some(uuid::Uuid::nil()),
            mac: Some("52:54:00:00:00:01".parse().unwrap()),
            message: "deploy failed".into(),
            data: serde_json::json!({"step": "write_image"}),
        };
        let body: serde_json::Value =
            serde_json::from_str(&alert_body(&event, Some("r1-01"))).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "id": 42,
                "at": "2025-01-02T03:04:05.678Z",
                "kind": "workflow_failed",
                "machine": "00000000-0000-0000-0000-000000000000",
                "machine_name": "r1-01",
                "mac": "52:54:00:00:00:01",
                "message": "deploy failed",
                "data": {"step": "write_image"},
            })
        );
        let d = new_delivery(
            "h",
            42,
            EventKind::WorkflowFailed,
            String::new(),
            Utc::now(),
        );
        assert_eq!(delivery_kind_name(&d), "workflow_failed");
        let t = new_delivery(
            "h",
            TEST_EVENT_ID,
            TEST_EVENT_KIND,
            String::new(),
            Utc::now(),
        );
        assert_eq!(delivery_kind_name(&t), "webhook_test");
    }
}
