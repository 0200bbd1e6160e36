//! What one delivery attempt does to the outbox row: pure, table-tested.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rackboot_core::{Delivery, DeliveryState};

/// How often and how patiently a delivery is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before a delivery is given up (Failed). At least 1.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles after each further one.
    pub backoff_initial: Duration,
    /// The wait never exceeds this.
    pub backoff_max: Duration,
}

impl RetryPolicy {
    /// The wait after the `attempts`-th failed attempt (1-based):
    /// `initial * 2^(attempts-1)`, capped at `max`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(31);
        self.backoff_initial
            .checked_mul(1u32 << doublings)
            .map_or(self.backoff_max, |d| d.min(self.backoff_max))
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// A 2xx answer.
    Accepted { status: u16 },
    /// Any other answer; `detail` is the start of its body, for operators.
    Refused { status: u16, detail: String },
    /// No answer: connection refused, reset, timed out, TLS failure, or a
    /// secret that could not be opened.
    Failed { error: String },
}

/// The row after an attempt at `now`: Delivered, Pending again after the
/// backoff, or Failed once `policy.max_attempts` attempts failed.
pub fn after_attempt(
    delivery: &Delivery,
    result: &AttemptResult,
    now: DateTime<Utc>,
    policy: &RetryPolicy,
) -> Delivery {
    let mut d = delivery.clone();
    d.attempts = d.attempts.saturating_add(1);
    match result {
        AttemptResult::Accepted { status } => {
            d.state = DeliveryState::Delivered;
            d.last_status = Some(*status);
            d.last_error = None;
            d.delivered_at = Some(now);
            return d;
        }
        AttemptResult::Refused { status, detail } => {
            d.last_status = Some(*status);
            d.last_error = Some(if detail.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {detail}")
            });
        }
        AttemptResult::Failed { error } => {
            d.last_status = None;
            d.last_error = Some(error.clone());
        }
    }
    if d.attempts >= policy.max_attempts.max(1) {
        d.state = DeliveryState::Failed;
    } else {
        let wait = TimeDelta::from_std(policy.backoff(d.attempts)).unwrap_or(TimeDelta::MAX);
        d.next_attempt_at = now.checked_add_signed(wait).unwrap_or(now);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackboot_core::EventKind;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 12,
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(600),
    };

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let table = [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (10, 512),
            (11, 600),
            (12, 600),
            (40, 600),
            (u32::MAX, 600),
        ];
        for (attempts, secs) in table {
            assert_eq!(
                POLICY.backoff(attempts),
                Duration::from_secs(secs),
                "after {attempts} attempts"
            );
        }
        let ms = RetryPolicy {
            max_attempts: 3,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(120),
        };
        assert_eq!(ms.backoff(2), Duration::from_millis(100));
        assert_eq!(ms.backoff(3), Duration::from_millis(120));
    }

    fn pending(attempts: u32) -> Delivery {
        let t: DateTime<Utc> = "2025-01-01T00:00:00Z".parse().unwrap();
        Delivery {
            id: 7,
            webhook: "ops".into(),
            event_id: 3,
            event_kind: EventKind::WorkflowFailed,
            body: "{}".into(),
            state: DeliveryState::Pending,
            attempts,
            next_attempt_at: t,
            last_status: Some(500),
            last_error: Some("HTTP 500".into()),
            created_at: t,
            delivered_at: None,
        }
    }

    #[test]
    fn attempts_move_the_row() {
        let now: DateTime<Utc> = "2025-01-01T01:00:00Z".parse().unwrap();
        let secs = |s: i64| now + TimeDelta::seconds(s);

        let ok = after_attempt(
            &pending(2),
            &AttemptResult::Accepted { status: 204 },
            now,
            &POLICY,
        );
        assert_eq!(ok.state, DeliveryState::Delivered);
        assert_eq!((ok.attempts, ok.last_status), (3, Some(204)));
        assert_eq!((ok.last_error, ok.delivered_at), (None, Some(now)));

        let refused = AttemptResult::Refused {
            status: 503,
            detail: "busy".into(),
        };
        let r = after_attempt(&pending(0), &refused, now, &POLICY);
        assert_eq!(r.state, DeliveryState::Pending);
        assert_eq!((r.attempts, r.next_attempt_at), (1, secs(1)));
        assert_eq!(r.last_status, Some(503));
        assert_eq!(r.last_error.as_deref(), Some("HTTP 503: busy"));

        let bare = AttemptResult::Refused {
            status: 404,
            detail: String::new(),
        };
        let r = after_attempt(&pending(3), &bare, now, &POLICY);
        assert_eq!((r.attempts, r.next_attempt_at), (4, secs(8)));
        assert_eq!(r.last_error.as_deref(), Some("HTTP 404"));

        let down = AttemptResult::Failed {
            error: "connection refused".into(),
        };
        let r = after_attempt(&pending(10), &down, now, &POLICY);
        assert_eq!((r.state, r.attempts), (DeliveryState::Pending, 11));
        assert_eq!(r.next_attempt_at, secs(600));
        assert_eq!(r.last_status, None, "no answer, no status");
        assert_eq!(r.last_error.as_deref(), Some("connection refused"));

        let last = after_attempt(&pending(11), &down, now, &POLICY);
        assert_eq!((last.state, last.attempts), (DeliveryState::Failed, 12));
        assert_eq!(last.delivered_at, None);

        let once = RetryPolicy {
            max_attempts: 0,
            ..POLICY
        };
        let r = after_attempt(&pending(0), &down, now, &once);
        assert_eq!(r.state, DeliveryState::Failed, "0 attempts means 1");
    }
}
