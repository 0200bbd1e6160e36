//! Lifecycle writes: state changes (with their transition record and the
//! workflow that causes them, in one transaction), the maintenance flag, and
//! inspection facts.

use chrono::Utc;
use rackboot_core::{
    EventKind, Facts, Machine, MachineId, Maintenance, NewEvent, ProvisionState, Transition,
};
use rackboot_store::LifecycleChange;
use serde_json::json;

use crate::{Actor, Fleet, FleetError, Result, on_machine};

impl Fleet {
    /// Applies `change` (state, reason, intent, transition, workflow: one
    /// store transaction), refreshes the machine and records
    /// `machine_state_changed` when the state changed.
    pub async fn apply_lifecycle(&self, change: LifecycleChange) -> Result<Machine> {
        self.store().apply_lifecycle(&change).await?;
        self.inventory().reload_machine(change.machine).await?;
        let machine = self.machine_by_id(change.machine).await?;
        let t = &change.transition;
        if t.from != t.to {
            self.emit(on_machine(
                NewEvent::new(
                    EventKind::MachineStateChanged,
                    format!("{}: {} → {} ({})", machine.name, t.from, t.to, t.reason),
                )
                .data(json!({
                    "from": t.from,
                    "to": t.to,
                    "who": t.by,
                    "reason": t.reason,
                    "workflow": t.workflow,
                })),
                &machine,
            ));
        }
        Ok(machine)
    }

    /// Sets (`Some(reason)`) or clears the maintenance flag.
    pub async fn set_maintenance(
        &self,
        machine: &Machine,
        reason: Option<String>,
        by: &Actor,
    ) -> Result<Machine> {
        let now = Utc::now();
        let maintenance = reason.as_ref().map(|r| Maintenance {
            reason: r.clone(),
            by: by.to_string(),
            since: now,
        });
        let why = match &reason {
            Some(r) => format!("maintenance on: {r}"),
            None => "maintenance off".to_string(),
        };
        let transition = Transition {
            machine: machine.id,
            at: now,
            from: machine.state,
            to: machine.state,
            by: by.to_string(),
            reason: why.clone(),
            workflow: None,
        };
        self.store()
            .set_maintenance(machine.id, maintenance.as_ref(), &transition)
            .await?;
        self.inventory().reload_machine(machine.id).await?;
        let machine = self.machine_by_id(machine.id).await?;
        self.emit(on_machine(
            NewEvent::new(
                EventKind::MaintenanceChanged,
                format!("{}: {why} (by {by})", machine.name),
            )
            .data(json!({"who": by.as_str(), "maintenance": maintenance})),
            &machine,
        ));
        Ok(machine)
    }

    /// Stores inspection facts and records `facts_updated` with a summary.
    pub async fn set_facts(&self, machine: MachineId, facts: &Facts) -> Result<Machine> {
        self.store().set_facts(machine, facts, Utc::now()).await?;
        self.inventory().reload_machine(machine).await?;
        let machine = self.machine_by_id(machine).await?;
        let disks: Vec<String> = facts
            .disks
            .iter()
            .map(|d| format!("{} {} GiB", d.name, d.size_bytes >> 30))
            .collect();
        self.emit(on_machine(
            NewEvent::new(
                EventKind::FactsUpdated,
                format!(
                    "{}: {} CPU threads, {} GiB memory, disks: {}, serial {}",
                    machine.name,
                    facts.cpu.threads,
                    facts.memory_gib(),
                    if disks.is_empty() {
                        "none".to_string()
                    } else {
                        disks.join(", ")
                    },
                    facts.dmi.serial.as_deref().unwrap_or("unknown"),
                ),
            )
            .data(json!({
                "cpu_threads": facts.cpu.threads,
                "memory_bytes": facts.memory_bytes,
                "disks": facts.disks.len(),
                "nics": facts.nics.len(),
                "serial": facts.dmi.serial,
                "boot_mode": facts.boot.mode,
            })),
            &machine,
        ));
        Ok(machine)
    }

    pub async fn transitions(&self, machine: MachineId, limit: u32) -> Result<Vec<Transition>> {
        Ok(self.store().list_transitions(machine, limit).await?)
    }

    /// The machine from the snapshot (just refreshed by the caller).
    pub(crate) async fn machine_by_id(&self, id: MachineId) -> Result<Machine> {
        match self.snapshot().machine_by_id(id) {
            Some(m) => Ok(m.clone()),
            None => Err(FleetError::NotFound(format!(
                "machine {id} no longer exists"
            ))),
        }
    }
}

/// A transition record for a change made now.
pub fn transition(
    machine: &Machine,
    to: ProvisionState,
    by: &Actor,
    reason: impl Into<String>,
    workflow: Option<uuid::Uuid>,
) -> Transition {
    Transition {
        machine: machine.id,
        at: Utc::now(),
        from: machine.state,
        to,
        by: by.to_string(),
        reason: reason.into(),
        workflow,
    }
}
