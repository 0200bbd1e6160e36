//! Refusals of a machine's install script, files, callbacks, agent token or
//! agent requests on the machine's timeline (`access_refused` events), bounded: at most one
//! event per machine and reason per [`REFUSAL_EVENT_INTERVAL`], so a scanner
//! cannot flood the event log (the metric counts every refusal). The next
//! event after a quiet spell says how many refusals it stands for.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rackboot_core::{EventKind, Machine, MachineId, NewEvent};
use serde_json::json;

use crate::{Fleet, on_machine};

/// At most one `access_refused` event per machine and reason in this time.
pub const REFUSAL_EVENT_INTERVAL: Duration = Duration::from_secs(60);

/// Past this many keys the limiter forgets those whose interval is over
/// (keys are known machines times a handful of reasons: bounded anyway).
const PRUNE_AT: usize = 4096;

/// When each (machine, reason) last had an event, and the refusals since.
#[derive(Debug, Default)]
pub(crate) struct RefusalLimiter {
    last: HashMap<(MachineId, &'static str), (Instant, u64)>,
}

impl RefusalLimiter {
    /// Whether a refusal of `machine` for `reason` at `now` gets an event:
    /// `Some(n)` with the refusals it stands for (itself and those held
    /// back since the last event), `None` when it is held back.
    pub(crate) fn admit(
        &mut self,
        machine: MachineId,
        reason: &'static str,
        now: Instant,
    ) -> Option<u64> {
        if self.last.len() >= PRUNE_AT {
            self.last
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < REFUSAL_EVENT_INTERVAL);
        }
        match self.last.get_mut(&(machine, reason)) {
            Some((at, held)) if now.saturating_duration_since(*at) < REFUSAL_EVENT_INTERVAL => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held + 1;
                (*at, *held) = (now, 0);
                Some(n)
            }
            None => {
                self.last.insert((machine, reason), (now, 0));
                Some(1)
            }
        }
    }
}

impl Fleet {
    /// Records a refusal of `asked` (`file`, `script`, `tftp_config`, a
    /// callback, `agent_token`, `agent_request`) for `reason` to `peer` on
    /// `machine`'s timeline, unless one was recorded for this machine and
    /// reason in the last minute. Boot HTTP, TFTP and the agent endpoints
    /// share the bound.
    pub fn record_refusal(
        &self,
        machine: &Machine,
        asked: &'static str,
        reason: &'static str,
        peer: Option<IpAddr>,
        why: &str,
    ) {
        let admitted = self
            .refusals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .admit(machine.id, reason, Instant::now());
        let Some(refusals) = admitted else {
            return;
        };
        let from = peer.map_or_else(|| "an unknown address".to_string(), |p| p.to_string());
        let mut message = format!("refused {asked} of {} to {from}: {why}", machine.name);
        if refusals > 1 {
            message.push_str(&format!(
                " ({refusals} refusals for {reason} since the last such event)"
            ));
        }
        let event = NewEvent::new(EventKind::AccessRefused, message).data(json!({
            "asked": asked,
            "reason": reason,
            "peer": peer.map(|p| p.to_string()),
            "refusals": refusals,
        }));
        self.emit(on_machine(event, machine));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_machine_and_reason_a_minute() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let (a, b) = (MachineId::from_u128(1), MachineId::from_u128(2));
        let mut limiter = RefusalLimiter::default();
        // (machine, reason, at, expected)
        let steps = [
            (a, "wrong_address", s(0), Some(1)),
            (a, "wrong_address", s(1), None),
            (a, "wrong_address", s(59), None),
            // Another reason, another machine: their own minute.
            (a, "bad_secret", s(2), Some(1)),
            (b, "wrong_address", s(3), Some(1)),
            // A minute after the first: one event for it and the two held back.
            (a, "wrong_address", s(60), Some(3)),
            (a, "wrong_address", s(61), None),
            (a, "bad_secret", s(200), Some(1)),
        ];
        for (i, (machine, reason, at, want)) in steps.into_iter().enumerate() {
            assert_eq!(limiter.admit(machine, reason, at), want, "step {i}");
        }
    }

    #[test]
    fn keys_past_their_minute_are_forgotten_when_there_are_many() {
        let t0 = Instant::now();
        let mut limiter = RefusalLimiter::default();
        for i in 0..PRUNE_AT {
            limiter.admit(MachineId::from_u128(i as u128), "wrong_address", t0);
        }
        assert_eq!(limiter.last.len(), PRUNE_AT);
        let later = t0 + REFUSAL_EVENT_INTERVAL;
        assert_eq!(
            limiter.admit(MachineId::from_u128(u128::MAX), "closed", later),
            Some(1)
        );
        assert_eq!(limiter.last.len(), 1);
    }
}
