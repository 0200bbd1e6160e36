//! Machines: enrol, change, remove, set what they boot, record the unknown
//! ones that network-boot. Every change re-reads that machine into the
//! snapshot and records a `machine_changed` (or `machine_discovered`) event.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::counter;
use rackboot_core::{
    Arch, BootIntent, EventKind, MacAddr, Machine, MachineId, NewEvent, machine::validate_name,
};
use rackboot_store::{Store, StoreError};
use serde_json::json;

use crate::{Actor, Fleet, FleetError, Result, on_machine};

/// What a discovery attempt did.
#[derive(Debug, PartialEq, Eq)]
pub enum DiscoveryOutcome {
    /// This call created the machine.
    Recorded,
    /// Another call (or another server sharing the store) got there first.
    AlreadyKnown,
    /// Over the discovery bound: not recorded (counted in
    /// `rackboot_discovery_dropped_total`).
    Limited,
}

/// How many unknown machines discovery may record: a network-booting host
/// needs no credentials, so without a bound anyone on the provisioning
/// network could fill the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryLimit {
    /// Machines recorded per minute at most (a burst of this many, refilled
    /// evenly); 0: no bound.
    pub per_minute: u32,
}

impl Default for DiscoveryLimit {
    fn default() -> Self {
        DiscoveryLimit { per_minute: 1000 }
    }
}

/// A token bucket over discoveries, and the MACs turned away recently (each
/// is counted once per minute, however often it retries).
#[derive(Default)]
pub(crate) struct DiscoveryGate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    limit: DiscoveryLimit,
    tokens: f64,
    refilled: Option<Instant>,
    /// MACs refused, and when (forgotten after [`REFUSAL_MEMORY`]).
    refused: HashMap<MacAddr, Instant>,
    /// Set while discoveries are being refused: the event is emitted once
    /// on entering this state, which ends when the bucket is full again.
    limiting: bool,
}

/// How long a refused MAC is remembered (its retries are not counted again).
const REFUSAL_MEMORY: Duration = Duration::from_secs(60);
/// Most refused MACs remembered (beyond it, the oldest memory is cleared).
const REFUSAL_MEMORY_MAX: usize = 65_536;

/// What the gate decided about one discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Yes,
    /// Refused; `first` when this MAC was not refused within the memory.
    No {
        first: bool,
        started_limiting: bool,
    },
}

impl GateState {
    fn admit(&mut self, mac: MacAddr, now: Instant) -> Admit {
        if self.limit.per_minute == 0 {
            return Admit::Yes;
        }
        let capacity = f64::from(self.limit.per_minute);
        let elapsed = self.refilled.map_or(Duration::from_secs(60), |t| {
            now.saturating_duration_since(t)
        });
        self.tokens = (self.tokens + elapsed.as_secs_f64() * capacity / 60.0).min(capacity);
        self.refilled = Some(now);
        if self.limiting && self.tokens >= capacity {
            self.limiting = false;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused.remove(&mac);
            return Admit::Yes;
        }
        if self.refused.len() >= REFUSAL_MEMORY_MAX {
            self.refused
                .retain(|_, at| now.saturating_duration_since(*at) < REFUSAL_MEMORY);
            if self.refused.len() >= REFUSAL_MEMORY_MAX {
                self.refused.clear();
            }
        }
        let first = match self.refused.get(&mac) {
            Some(at) if now.saturating_duration_since(*at) < REFUSAL_MEMORY => false,
            _ => {
                self.refused.insert(mac, now);
                true
            }
        };
        let started_limiting = !self.limiting;
        self.limiting = true;
        Admit::No {
            first,
            started_limiting,
        }
    }
}

impl DiscoveryGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Fleet {
    /// Finds a machine by id, then name, then any of its MACs (read from the
    /// store, so a write through another server is seen).
    pub async fn find_machine(&self, reference: &str) -> Result<Machine> {
        let store = self.store();
        if let Ok(id) = reference.parse::<uuid::Uuid>() {
            match store.get_machine(id).await {
                Ok(m) => return Ok(m),
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(m) = store.find_machine_by_name(reference).await? {
            return Ok(m);
        }
        if let Ok(mac) = reference.parse::<MacAddr>()
            && let Some(m) = store.find_machine_by_mac(mac).await?
        {
            return Ok(m);
        }
        Err(FleetError::NotFound(format!(
            "no machine with id, name or MAC {reference:?}"
        )))
    }

    /// Enrols `machine` (built by the caller with its id and timestamps) after
    /// checking every field.
    pub async fn create_machine(&self, machine: Machine, by: &Actor) -> Result<Machine> {
        check_fields(&machine)?;
        check_intent(self.store().as_ref(), "intent", &machine.intent).await?;
        check_unique(self.store().as_ref(), &machine).await?;
        self.store().create_machine(&machine).await?;
        // Answer with what the store kept (it rounds timestamps).
        let machine = self.store().get_machine(machine.id).await?;
        self.machine_changed(&machine, "created", by).await?;
        Ok(machine)
    }

    /// Stores `machine` as changed by the caller. With `intent_changed`, the
    /// new intent is checked and the machine's pending installs are withdrawn.
    pub async fn update_machine(
        &self,
        mut machine: Machine,
        intent_changed: bool,
        by: &Actor,
    ) -> Result<Machine> {
        check_fields(&machine)?;
        if intent_changed {
            check_intent(self.store().as_ref(), "intent", &machine.intent).await?;
        }
        check_unique(self.store().as_ref(), &machine).await?;
        machine.updated_at = chrono::Utc::now();
        self.store().update_machine(&machine).await?;
        if intent_changed {
            self.store()
                .replace_installs(machine.id, &[], &machine.intent, machine.updated_at)
                .await?;
        }
        let machine = self.store().get_machine(machine.id).await?;
        self.machine_changed(&machine, "updated", by).await?;
        Ok(machine)
    }

    /// Removes a machine; its events stay in the log.
    pub async fn delete_machine(&self, machine: &Machine, by: &Actor) -> Result<()> {
        self.store().delete_machine(machine.id).await?;
        self.forget_agent_session(machine.id);
        self.machine_changed(machine, "deleted", by).await
    }

    /// Sets what the machine boots next, withdrawing its pending installs.
    pub async fn set_intent(
        &self,
        machine: &Machine,
        intent: BootIntent,
        by: &Actor,
    ) -> Result<Machine> {
        check_intent(self.store().as_ref(), "intent", &intent).await?;
        self.store()
            .replace_installs(machine.id, &[], &intent, chrono::Utc::now())
            .await?;
        let machine = self.store().get_machine(machine.id).await?;
        self.machine_changed(&machine, "boot_set", by).await?;
        Ok(machine)
    }

    /// Sets the intent a workflow needs (the agent's RAM-disk, local disk),
    /// withdrawing pending installs. Not for operators: no hand check.
    pub async fn set_workflow_intent(
        &self,
        machine: MachineId,
        intent: BootIntent,
        by: &Actor,
    ) -> Result<Machine> {
        self.store()
            .replace_installs(machine, &[], &intent, chrono::Utc::now())
            .await?;
        let machine = self.store().get_machine(machine).await?;
        self.machine_changed(&machine, "boot_set", by).await?;
        Ok(machine)
    }

    /// Sets the bound on discovery (the binary's `[discovery]` config).
    pub fn set_discovery_limit(&self, limit: DiscoveryLimit) {
        let mut gate = self.discovery.lock();
        gate.limit = limit;
        gate.tokens = f64::from(limit.per_minute);
        gate.refilled = None;
    }

    /// Records a MAC seen on the wire as a new machine, unless someone (this
    /// server or another sharing the store) already has, or discovery is over
    /// its bound ([`DiscoveryLimit`]): then it is dropped and counted, and
    /// the first refusal of an overload records one `discovery_limited`
    /// warning event.
    pub async fn record_discovery(
        &self,
        mac: MacAddr,
        uuid: Option<uuid::Uuid>,
        arch: Option<Arch>,
    ) -> Result<DiscoveryOutcome> {
        let admit = self.discovery.lock().admit(mac, Instant::now());
        if let Admit::No {
            first,
            started_limiting,
        } = admit
        {
            if first {
                counter!("rackboot_discovery_dropped_total").increment(1);
            }
            if started_limiting {
                let per_minute = self.discovery.lock().limit.per_minute;
                tracing::warn!(
                    %mac,
                    per_minute,
                    "discovery limit reached: unknown machines are not recorded until the rate falls"
                );
                self.emit(
                    NewEvent::new(
                        EventKind::MachineDiscovered,
                        format!(
                            "discovery limit of {per_minute} machines a minute reached: \
                             {mac} and further unknown machines are not recorded until the rate falls"
                        ),
                    )
                    .mac(mac)
                    .data(json!({
                        "limited": true,
                        "per_minute": per_minute,
                    })),
                );
            }
            return Ok(DiscoveryOutcome::Limited);
        }
        let machine = Machine::discovered(mac, uuid, arch);
        let outcome = match self.store().create_machine(&machine).await {
            Ok(()) => DiscoveryOutcome::Recorded,
            Err(StoreError::Conflict(_)) => DiscoveryOutcome::AlreadyKnown,
            Err(e) => return Err(e.into()),
        };
        // The MAC's machine, whoever recorded it: this one, or the one that
        // got there first (this server may not have seen it yet).
        match outcome {
            DiscoveryOutcome::Recorded => self.inventory().reload_machine(machine.id).await?,
            _ => {
                if let Some(known) = self.store().find_machine_by_mac(mac).await? {
                    self.inventory().reload_machine(known.id).await?;
                }
            }
        }
        if outcome == DiscoveryOutcome::Recorded {
            counter!("rackboot_boot_discovered_total").increment(1);
            tracing::info!(%mac, name = %machine.name, "discovered machine");
            self.emit(
                NewEvent::new(
                    EventKind::MachineDiscovered,
                    format!("discovered {} ({mac})", machine.name),
                )
                .mac(mac)
                .machine(machine.id)
                .data(json!({
                    "name": machine.name,
                    "arch": arch.map(|a| a.as_str()),
                    "uuid": uuid,
                })),
            );
        }
        Ok(outcome)
    }

    /// Enrols many machines (built by the caller with ids and timestamps) in
    /// one store transaction: a bulk import. Each gets its own outcome, in
    /// order: the machine as stored, or why it was refused (a bad field, an
    /// unknown profile, a name or MAC taken by a stored machine or an
    /// earlier row). The snapshot is updated once for the batch, and one
    /// `machine_changed` event (action `imported`) names the machines.
    pub async fn create_machines(
        &self,
        machines: Vec<Machine>,
        by: &Actor,
    ) -> Result<Vec<Result<Machine>>> {
        let profiles: BTreeSet<String> = self
            .store()
            .list_profiles()
            .await?
            .into_iter()
            .map(|p| p.name)
            .collect();
        let mut outcomes: Vec<Option<Result<Machine>>> = Vec::with_capacity(machines.len());
        let mut valid = Vec::with_capacity(machines.len());
        let mut names = HashSet::new();
        let mut macs = HashSet::new();
        for m in &machines {
            let checked = check_fields(m)
                .and_then(|()| check_intent_against(&profiles, "intent", &m.intent))
                .and_then(|()| {
                    // The store would refuse these too, but only after the
                    // earlier row is in; saying so here names the row.
                    if !names.insert(m.name.clone()) {
                        return Err(FleetError::Conflict(format!(
                            "machine name {:?} is listed twice",
                            m.name
                        )));
                    }
                    for mac in &m.macs {
                        if !macs.insert(*mac) {
                            return Err(FleetError::Conflict(format!("MAC {mac} is listed twice")));
                        }
                    }
                    Ok(())
                });
            match checked {
                Ok(()) => {
                    outcomes.push(None);
                    valid.push(m.clone());
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        let written = self.store().create_machines(&valid).await?;
        let mut created_ids = Vec::with_capacity(valid.len());
        let mut stored_results = valid.iter().zip(written);
        for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
            let (m, result) = stored_results
                .next()
                .expect("one store outcome per valid machine");
            *slot = Some(match result {
                Ok(()) => {
                    created_ids.push(m.id);
                    Ok(m.clone())
                }
                Err(e) => Err(e.into()),
            });
        }
        self.inventory().reload_machines(&created_ids).await?;
        // Answer with what the store kept (it rounds timestamps).
        let snapshot = self.snapshot();
        let results: Vec<Result<Machine>> = outcomes
            .into_iter()
            .map(|o| {
                o.expect("every row decided")
                    .map(|m| snapshot.machine_by_id(m.id).cloned().unwrap_or(m))
            })
            .collect();
        if !created_ids.is_empty() {
            let created: Vec<serde_json::Value> = results
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|m| json!({"id": m.id, "name": m.name}))
                .collect();
            self.emit(
                NewEvent::new(
                    EventKind::MachineChanged,
                    format!("{} machines imported by {by}", created.len()),
                )
                .data(json!({
                    "who": by.as_str(),
                    "action": "imported",
                    "count": created.len(),
                    "machines": created,
                })),
            );
        }
        Ok(results)
    }

    /// Refreshes the machine in the snapshot and records the change.
    pub(crate) async fn machine_changed(
        &self,
        machine: &Machine,
        action: &str,
        by: &Actor,
    ) -> Result<()> {
        self.inventory().reload_machine(machine.id).await?;
        self.emit(on_machine(
            NewEvent::new(
                EventKind::MachineChanged,
                format!(
                    "machine {:?} {} by {by}",
                    machine.name,
                    action.replace('_', " ")
                ),
            )
            .data(json!({
                "who": by.as_str(),
                "action": action,
                "name": machine.name,
                "intent": machine.intent,
            })),
            machine,
        ));
        Ok(())
    }
}

fn check_fields(machine: &Machine) -> Result<()> {
    validate_name("machine name", &machine.name)
        .map_err(|e| FleetError::Invalid(format!("name: {e}")))?;
    check_macs(&machine.macs)?;
    check_labels(&machine.labels)
}

/// Checks that `intent` can be set by hand and every profile it names exists;
/// the message names the field.
pub async fn check_intent(store: &dyn Store, field: &str, intent: &BootIntent) -> Result<()> {
    if intent_profiles(field, intent)?.is_empty() {
        return Ok(());
    }
    let known: BTreeSet<String> = store
        .list_profiles()
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect();
    check_intent_against(&known, field, intent)
}

/// [`check_intent`] against a known set of profile names.
fn check_intent_against(known: &BTreeSet<String>, field: &str, intent: &BootIntent) -> Result<()> {
    for (field, name) in intent_profiles(field, intent)? {
        if !known.contains(name) {
            return Err(FleetError::Invalid(format!(
                "{field}: no profile named {name:?}"
            )));
        }
    }
    Ok(())
}

/// The profiles `intent` names, with the field naming each; an error for
/// intents that cannot be set by hand.
fn intent_profiles<'a>(field: &str, intent: &'a BootIntent) -> Result<Vec<(String, &'a str)>> {
    let mut wanted: Vec<(String, &str)> = Vec::new();
    match intent {
        BootIntent::Discover | BootIntent::LocalDisk | BootIntent::Profile { name: None } => {}
        // An install needs its request (variables, callback token): it is made
        // by POST /machines/{id}/install, never set as a bare intent.
        BootIntent::Install { .. } => {
            return Err(FleetError::Invalid(format!(
                "{field}: an install intent is set by requesting an install (POST /api/v1/machines/{{id}}/install)"
            )));
        }
        BootIntent::Agent { .. } => {
            return Err(FleetError::Invalid(format!(
                "{field}: the agent intent is set by workflows (rackboot inspect, clean, deploy, rescue)"
            )));
        }
        BootIntent::Profile { name: Some(name) } => wanted.push((format!("{field}.name"), name)),
        BootIntent::Menu(menu) => {
            for (i, entry) in menu.entries.iter().enumerate() {
                // Install entries need their requests (variables, callback
                // tokens): they are made by POST /machines/{id}/install-menu.
                if entry.install.is_some() {
                    return Err(FleetError::Invalid(format!(
                        "{field}.entries[{i}].install: installer entries are set by requesting an install menu (POST /api/v1/machines/{{id}}/install-menu)"
                    )));
                }
                wanted.push((format!("{field}.entries[{i}].profile"), &entry.profile));
            }
            if let Some(default) = &menu.default {
                wanted.push((format!("{field}.default"), default));
                if !menu.entries.iter().any(|e| &e.profile == default) {
                    return Err(FleetError::Invalid(format!(
                        "{field}.default: profile {default:?} is not one of the menu entries"
                    )));
                }
            }
        }
    }
    Ok(wanted)
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in labels {
        validate_name("label key", key).map_err(|e| FleetError::Invalid(format!("labels: {e}")))?;
        if value.len() > 255 || value.chars().any(char::is_control) {
            return Err(FleetError::Invalid(format!(
                "labels.{key}: value must be at most 255 characters without control characters"
            )));
        }
    }
    Ok(())
}

fn check_macs(macs: &[MacAddr]) -> Result<()> {
    if macs.is_empty() {
        return Err(FleetError::Invalid(
            "macs: at least one MAC address is required".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for mac in macs {
        if !seen.insert(*mac) {
            return Err(FleetError::Invalid(format!("macs: {mac} is listed twice")));
        }
    }
    Ok(())
}

/// Refuses a name or MAC already used by another machine (the store would too,
/// but without saying which machine).
async fn check_unique(store: &dyn Store, machine: &Machine) -> Result<()> {
    if let Some(other) = store.find_machine_by_name(&machine.name).await?
        && other.id != machine.id
    {
        return Err(FleetError::Conflict(format!(
            "machine name {:?} is already taken (machine {})",
            machine.name, other.id
        )));
    }
    for mac in &machine.macs {
        if let Some(other) = store.find_machine_by_mac(*mac).await?
            && other.id != machine.id
        {
            return Err(FleetError::Conflict(format!(
                "MAC {mac} already belongs to machine {:?}",
                other.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        format!("02:00:00:00:00:{n:02x}").parse().unwrap()
    }

    #[test]
    fn the_gate_admits_a_burst_then_the_refill_rate() {
        let mut gate = GateState {
            limit: DiscoveryLimit { per_minute: 60 },
            ..GateState::default()
        };
        let t0 = Instant::now();
        for i in 0..60 {
            assert_eq!(gate.admit(mac(i), t0), Admit::Yes, "burst {i}");
        }
        assert_eq!(
            gate.admit(mac(100), t0),
            Admit::No {
                first: true,
                started_limiting: true
            }
        );
        // The same MAC retrying is not counted again; a new one is, but the
        // overload started already.
        assert_eq!(
            gate.admit(mac(100), t0 + Duration::from_millis(500)),
            Admit::No {
                first: false,
                started_limiting: false
            }
        );
        assert_eq!(
            gate.admit(mac(101), t0 + Duration::from_millis(600)),
            Admit::No {
                first: true,
                started_limiting: false
            }
        );
        // One a second comes back (60 a minute).
        assert_eq!(
            gate.admit(mac(102), t0 + Duration::from_millis(1700)),
            Admit::Yes
        );
        assert!(matches!(
            gate.admit(mac(103), t0 + Duration::from_millis(1800)),
            Admit::No { .. }
        ));
        // A full minute later the bucket is full: the overload is over, and
        // the next one records its event again.
        let later = t0 + Duration::from_secs(120);
        for i in 0..60 {
            assert_eq!(gate.admit(mac(i), later), Admit::Yes);
        }
        assert_eq!(
            gate.admit(mac(200), later),
            Admit::No {
                first: true,
                started_limiting: true
            }
        );
    }

    #[test]
    fn no_bound_admits_everything() {
        let mut gate = GateState {
            limit: DiscoveryLimit { per_minute: 0 },
            ..GateState::default()
        };
        let t0 = Instant::now();
        for i in 0..=255 {
            assert_eq!(gate.admit(mac(i), t0), Admit::Yes);
        }
    }

    #[test]
    fn intents_name_their_profiles_and_refuse_what_workflows_set() {
        let known: BTreeSet<String> = ["debian".to_string()].into();
        let ok = BootIntent::Profile {
            name: Some("debian".into()),
        };
        assert!(check_intent_against(&known, "intent", &ok).is_ok());
        let missing = BootIntent::Profile {
            name: Some("nope".into()),
        };
        let err = check_intent_against(&known, "intent", &missing)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "intent.name: no profile named \"nope\"");
        let agent = BootIntent::Agent { workflow: None };
        assert!(
            check_intent_against(&known, "intent", &agent)
                .unwrap_err()
                .to_string()
                .contains("set by workflows")
        );
    }
}
