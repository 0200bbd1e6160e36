//! Installer-based installs: arming pending installs (one, or a menu's
//! entries) with the intent that boots them, and the installer's completion
//! callback that moves the machine to its local disk.

use chrono::Utc;
use metrics::counter;
use rackboot_core::{BootIntent, EventKind, InstallRequest, Machine, NewEvent};
use serde_json::json;

use crate::{Actor, Fleet, Result, on_machine};

/// What a completion callback did.
#[derive(Debug, Clone)]
pub struct InstallCompletion {
    pub install: InstallRequest,
    /// False when the install had already been completed (callbacks are idempotent).
    pub changed: bool,
}

impl Fleet {
    /// Cancels the machine's pending installs, stores `installs` (all for
    /// `machine`) and sets `intent`, which references them, in one
    /// transaction; `action` names the change in the machine's event.
    pub async fn replace_installs(
        &self,
        machine: &Machine,
        installs: &[InstallRequest],
        intent: &BootIntent,
        action: &str,
        by: &Actor,
    ) -> Result<Machine> {
        self.store()
            .replace_installs(machine.id, installs, intent, Utc::now())
            .await?;
        let machine = self.store().get_machine(machine.id).await?;
        self.machine_changed(&machine, action, by).await?;
        Ok(machine)
    }

    /// The installer's completion callback: checks the token, completes the
    /// install, cancels the machine's other pending installs and sets it to
    /// boot its local disk, in one store transaction. Idempotent.
    pub async fn complete_install(&self, id: uuid::Uuid, token: &str) -> Result<InstallCompletion> {
        let (install, changed) = self.store().complete_install(id, token, Utc::now()).await?;
        if changed {
            self.inventory().reload_machine(install.machine).await?;
            let snapshot = self.snapshot();
            let machine = snapshot
                .machines
                .iter()
                .find(|m| m.id == install.machine)
                .map(|m| m.as_ref());
            let name = machine.map(|m| m.name.as_str()).unwrap_or_default();
            let event = NewEvent::new(
                EventKind::InstallCompleted,
                format!(
                    "install {id} of {} on {name} completed; it boots from its disk next",
                    install.os
                ),
            )
            .data(json!({"install": id, "os": install.os, "who": "installer"}));
            self.emit(match machine {
                Some(m) => on_machine(event, m),
                None => event.machine(install.machine),
            });
            counter!("rackboot_installs_completed_total").increment(1);
        }
        Ok(InstallCompletion { install, changed })
    }
}
