//! Background power-state sync: polls every machine's BMC on an interval, keeps the
//! last state seen in a shared map the API reads, and emits `PowerChanged` when a
//! machine's state changes (first observation included). Plus the helper that turns
//! a controller result into the matching event.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rackboot_core::{EventHub, EventKind, MachineId, NewEvent};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{BmcTarget, PowerController, PowerFailure, PowerOutcome, PowerRequest, PowerState};

/// Where the sync learns which machines to poll (the store, in the binary).
#[async_trait]
pub trait PowerSyncSource: Send + Sync {
    /// Every machine with a BMC, with its target (credentials decrypted).
    /// An error skips this round (logged); the next round asks again.
    async fn machines(&self) -> Result<Vec<(MachineId, BmcTarget)>, String>;

    /// Resolves when the set of machines may have changed in a way that
    /// should not wait for the next round (a server of the cluster died and
    /// this one took its machines over). The default never resolves.
    async fn changed(&self) {
        std::future::pending::<()>().await
    }
}

/// The last thing learnt about one machine's power.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedPower {
    /// Last state read successfully (kept when later reads fail).
    pub state: Option<PowerState>,
    /// When `state` was read.
    pub seen_at: Option<DateTime<Utc>>,
    /// The error of the latest read, if it failed (redacted BMC in the message).
    pub error: Option<String>,
    pub checked_at: DateTime<Utc>,
}

/// What one read changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observed {
    /// The previous state, when the state changed (`Some(None)`: first seen).
    state_changed: Option<Option<PowerState>>,
    /// `Some(false)` when the BMC stopped answering, `Some(true)` when it
    /// answers again; `None` when that did not change.
    answering: Option<bool>,
}

/// Shared, cheap to clone: the sync task writes, the API reads.
#[derive(Debug, Clone, Default)]
pub struct PowerStateMap {
    inner: Arc<RwLock<HashMap<MachineId, ObservedPower>>>,
}

impl PowerStateMap {
    pub fn new() -> PowerStateMap {
        PowerStateMap::default()
    }

    pub fn get(&self, machine: &MachineId) -> Option<ObservedPower> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(machine)
            .cloned()
    }

    pub fn snapshot(&self) -> HashMap<MachineId, ObservedPower> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records a state learnt elsewhere (e.g. the `final_state` of a verified power
    /// action), so the map is current without waiting for the next round. Emits
    /// nothing, and the sync will then not emit `PowerChanged` for this change either
    /// (the action's own `PowerActionDone` event tells it).
    pub fn record_state(&self, machine: MachineId, state: PowerState) {
        let now = Utc::now();
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                machine,
                ObservedPower {
                    state: Some(state),
                    seen_at: Some(now),
                    error: None,
                    checked_at: now,
                },
            );
    }

    /// Applies a read; returns what changed: the power state (with the
    /// previous one, `None` on a first observation) and whether the BMC
    /// stopped or started answering again. A BMC that never answered counts
    /// as having stopped on its first failed read.
    fn observe(&self, machine: MachineId, result: &Result<PowerState, String>) -> Observed {
        let now = Utc::now();
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(machine).or_insert(ObservedPower {
            state: None,
            seen_at: None,
            error: None,
            checked_at: now,
        });
        entry.checked_at = now;
        let was_failing = entry.error.is_some();
        match result {
            Ok(state) => {
                let previous = entry.state;
                entry.state = Some(*state);
                entry.seen_at = Some(now);
                entry.error = None;
                Observed {
                    state_changed: (previous != Some(*state)).then_some(previous),
                    answering: was_failing.then_some(true),
                }
            }
            Err(e) => {
                entry.error = Some(e.clone());
                Observed {
                    state_changed: None,
                    answering: (!was_failing).then_some(false),
                }
            }
        }
    }

    fn retain(&self, keep: impl Fn(&MachineId) -> bool) {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| keep(id));
    }
}

/// Polls every machine from `source` each `interval` until `shutdown`. Reads go
/// through the controller (so they never interleave with a power action on the same
/// BMC, and count against the global limit); a machine whose BMC is busy is skipped
/// for the round. Machines gone from the source are dropped from the map.
pub async fn run_power_sync(
    controller: Arc<PowerController>,
    source: Arc<dyn PowerSyncSource>,
    states: PowerStateMap,
    events: EventHub,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            // A round now (machines taken over are read within seconds, not
            // after the interval); the next round follows the interval again.
            () = source.changed() => ticker.reset(),
        }
        let machines = match source.machines().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "power sync: cannot list machines");
                continue;
            }
        };
        let ids: std::collections::HashSet<MachineId> =
            machines.iter().map(|(id, _)| *id).collect();
        states.retain(|id| ids.contains(id));
        let limit = controller.config().max_concurrent.max(1);
        let round = futures::stream::iter(machines)
            .map(|(machine, target)| {
                let controller = controller.clone();
                async move {
                    let result = controller.power_state_if_idle(&target).await;
                    (machine, target, result)
                }
            })
            .buffer_unordered(limit)
            .for_each(|(machine, target, result)| {
                let Some(result) = result else {
                    return futures::future::ready(());
                };
                let result = result.map_err(|e| e.to_string());
                let observed = states.observe(machine, &result);
                match (observed.answering, &result) {
                    (Some(false), Err(error)) => {
                        tracing::warn!(
                            %machine,
                            bmc = %target.redacted(),
                            %error,
                            "BMC stopped answering"
                        );
                        events.emit(
                            NewEvent::new(
                                EventKind::BmcUnreachable,
                                format!("BMC {} does not answer: {error}", target.redacted()),
                            )
                            .machine(machine)
                            .data(serde_json::json!({
                                "bmc": target.redacted(),
                                "error": error,
                            })),
                        );
                    }
                    (Some(true), Ok(state)) => {
                        tracing::info!(%machine, bmc = %target.redacted(), "BMC answers again");
                        events.emit(
                            NewEvent::new(
                                EventKind::BmcReachable,
                                format!("BMC {} answers again (power {state})", target.redacted()),
                            )
                            .machine(machine)
                            .data(serde_json::json!({
                                "bmc": target.redacted(),
                                "state": state,
                            })),
                        );
                    }
                    _ => {}
                }
                if let Some(previous) = observed.state_changed
                    && let Ok(state) = result
                {
                    let message = match previous {
                        Some(p) => format!("power {p} -> {state}"),
                        None => format!("power is {state}"),
                    };
                    events.emit(
                        NewEvent::new(EventKind::PowerChanged, message)
                            .machine(machine)
                            .data(serde_json::json!({
                                "state": state,
                                "previous": previous,
                                "bmc": target.redacted(),
                            })),
                    );
                }
                futures::future::ready(())
            });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = round => {}
        }
    }
}

/// Emits the event for a controller result: `PowerActionDone` or `BootDeviceSet` on
/// success, `PowerActionFailed` on failure, with the machine id, a one-line message
/// and the outcome or failure as data. Call it from the API after
/// [`PowerController::power`] or [`PowerController::set_boot_device`].
pub fn emit_request_event(
    events: &EventHub,
    machine: MachineId,
    result: &Result<PowerOutcome, PowerFailure>,
) {
    events.emit(request_event(machine, result));
}

/// The event [`emit_request_event`] emits, for a caller that adds to it
/// (who asked).
pub fn request_event(machine: MachineId, result: &Result<PowerOutcome, PowerFailure>) -> NewEvent {
    let event = match result {
        Ok(outcome) => {
            let kind = match outcome.request {
                PowerRequest::Power { .. } => EventKind::PowerActionDone,
                PowerRequest::BootDevice { .. } => EventKind::BootDeviceSet,
            };
            NewEvent::new(kind, outcome.to_string())
                .data(serde_json::to_value(outcome).unwrap_or_default())
        }
        Err(failure) => NewEvent::new(EventKind::PowerActionFailed, failure.to_string()).data(
            serde_json::json!({
                "request": failure.request,
                "error": failure.error.to_string(),
                "kind": failure.error.kind().as_str(),
                "transient": failure.error.is_transient(),
                "attempts": failure.attempts,
                "elapsed": failure.elapsed.as_millis() as u64,
            }),
        ),
    };
    event.machine(machine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeBmc;
    use crate::{PowerAction, PowerConfig, PowerErrorKind};

    struct Fixed(Vec<(MachineId, BmcTarget)>);

    #[async_trait]
    impl PowerSyncSource for Fixed {
        async fn machines(&self) -> Result<Vec<(MachineId, BmcTarget)>, String> {
            Ok(self.0.clone())
        }
    }

    fn fast() -> PowerConfig {
        PowerConfig {
            call_timeout: Duration::from_secs(2),
            verify_timeout: Duration::from_secs(2),
            poll_interval: Duration::from_millis(10),
            backoff_initial: Duration::from_millis(5),
            ..PowerConfig::default()
        }
    }

    async fn next_event(
        live: &mut tokio::sync::broadcast::Receiver<rackboot_core::Event>,
    ) -> rackboot_core::Event {
        tokio::time::timeout(Duration::from_secs(5), live.recv())
            .await
            .expect("an event within 5 s")
            .expect("hub open")
    }

    #[tokio::test]
    async fn emits_on_first_observation_and_on_change_only() {
        let (hub, queue) = EventHub::new(64);
        let mut live = hub.subscribe();
        tokio::spawn(queue.run_unpersisted(hub.clone()));
        FakeBmc::remove("sync-a");
        FakeBmc::remove("sync-b");
        let a = MachineId::new_v4();
        let b = MachineId::new_v4();
        FakeBmc::get("sync-b").set_power(PowerState::On);
        let source = Arc::new(Fixed(vec![
            (a, "fake://sync-a".parse().unwrap()),
            (b, "fake://sync-b".parse().unwrap()),
        ]));
        let states = PowerStateMap::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_power_sync(
            Arc::new(PowerController::new(fast())),
            source,
            states.clone(),
            hub.clone(),
            Duration::from_millis(30),
            shutdown.clone(),
        ));
        let mut first = [next_event(&mut live).await, next_event(&mut live).await];
        first.sort_by_key(|e| e.machine == Some(b));
        assert_eq!(first[0].kind, EventKind::PowerChanged);
        assert_eq!(
            (first[0].machine, first[0].data["state"].as_str()),
            (Some(a), Some("off"))
        );
        assert_eq!(
            (first[1].machine, first[1].data["state"].as_str()),
            (Some(b), Some("on"))
        );
        assert_eq!(first[1].message, "power is on");

        // Several quiet rounds, then a change on a only.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(live.try_recv().is_err(), "no event without a change");
        FakeBmc::get("sync-a").set_power(PowerState::On);
        let e = next_event(&mut live).await;
        assert_eq!(
            (e.machine, e.message.as_str()),
            (Some(a), "power off -> on")
        );
        assert_eq!(states.get(&a).unwrap().state, Some(PowerState::On));

        // A failing read keeps the last state and records the error: one
        // event when the BMC stops answering (not one per poll), one when
        // it answers again.
        FakeBmc::get("sync-b").fail_next(PowerErrorKind::Authentication, 3);
        let e = next_event(&mut live).await;
        assert_eq!((e.kind, e.machine), (EventKind::BmcUnreachable, Some(b)));
        assert!(e.message.contains("does not answer"), "{}", e.message);
        let e = next_event(&mut live).await;
        assert_eq!((e.kind, e.machine), (EventKind::BmcReachable, Some(b)));
        assert_eq!(states.get(&b).unwrap().state, Some(PowerState::On));
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(live.try_recv().is_err(), "no event while nothing changes");
        let seen = states.snapshot();
        assert_eq!(seen.len(), 2);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("sync stops on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn request_events_by_result() {
        let (hub, queue) = EventHub::new(16);
        let mut live = hub.subscribe();
        tokio::spawn(queue.run_unpersisted(hub.clone()));
        FakeBmc::remove("sync-events");
        let target: BmcTarget = "fake://sync-events".parse().unwrap();
        let controller = PowerController::new(fast());
        let machine = MachineId::new_v4();

        let ok = controller.power(&target, PowerAction::On).await;
        emit_request_event(&hub, machine, &ok);
        let e = next_event(&mut live).await;
        assert_eq!(
            (e.kind, e.machine),
            (EventKind::PowerActionDone, Some(machine))
        );
        assert_eq!(e.data["final_state"], "on");

        let boot = controller
            .set_boot_device(
                &target,
                crate::BootDevice::Pxe,
                crate::BootPersistence::Once,
                None,
            )
            .await;
        emit_request_event(&hub, machine, &boot);
        assert_eq!(next_event(&mut live).await.kind, EventKind::BootDeviceSet);

        FakeBmc::get("sync-events").fail_next(PowerErrorKind::Authentication, 1);
        let failed = controller.power(&target, PowerAction::Off).await;
        emit_request_event(&hub, machine, &failed);
        let e = next_event(&mut live).await;
        assert_eq!(e.kind, EventKind::PowerActionFailed);
        assert_eq!(e.data["kind"], "authentication");
        assert!(e.message.contains("fake://sync-events"), "{}", e.message);
    }
}
