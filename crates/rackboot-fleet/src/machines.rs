//! Machines: enrol, change, remove, set what they boot, record the unknown
//! ones that network-boot. Every change re-reads that machine into the
//! snapshot and records a `machine_changed` (or `machine_discovered`) event.

use std::collections::{BTreeMap, BTreeSet};

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

    /// Records a MAC seen on the wire as a new machine, unless someone (this
    /// server or another sharing the store) already has.
    pub async fn record_discovery(
        &self,
        mac: MacAddr,
        uuid: Option<uuid::Uuid>,
        arch: Option<Arch>,
    ) -> Result<DiscoveryOutcome> {
        let machine = Machine::discovered(mac, uuid, arch);
        let outcome = match self.store().create_machine(&machine).await {
            Ok(()) => DiscoveryOutcome::Recorded,
            Err(StoreError::Conflict(_)) => DiscoveryOutcome::AlreadyKnown,
            Err(e) => return Err(e.into()),
        };
        // A full reload: discoveries come in storms, which share reads.
        self.inventory().reload().await?;
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
    if wanted.is_empty() {
        return Ok(());
    }
    let known: BTreeSet<String> = store
        .list_profiles()
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect();
    for (field, name) in wanted {
        if !known.contains(name) {
            return Err(FleetError::Invalid(format!(
                "{field}: no profile named {name:?}"
            )));
        }
    }
    Ok(())
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
