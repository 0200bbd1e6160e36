//! Installer-based installs: arming pending installs (one, or a menu's
//! entries) with the intent that boots them, the installer's "installed"
//! callback that moves the machine to its local disk, and the completion
//! (the installed system's first-boot report, or the installer's last step
//! for templates without one).

use chrono::Utc;
use metrics::counter;
use rackboot_core::{BootIntent, EventKind, InstallRequest, InstallState, Machine, NewEvent};
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
    /// boot its local disk, in one store transaction. Idempotent. For an
    /// install the installer already reported `installed`, this is the
    /// installed system's first-boot report: the machine boots its disk
    /// already, and the install is completed now.
    pub async fn complete_install(&self, id: uuid::Uuid, token: &str) -> Result<InstallCompletion> {
        self.advance_install(id, token, InstallState::Completed)
            .await
    }

    /// The installer's "installed" callback (its last step, before it
    /// reboots): checks the token, marks the install `installed`, cancels the
    /// machine's other pending installs and sets it to boot its local disk,
    /// in one store transaction. The installed system's first-boot report
    /// ([`Fleet::complete_install`]) completes it. Idempotent.
    pub async fn finish_install(&self, id: uuid::Uuid, token: &str) -> Result<InstallCompletion> {
        self.advance_install(id, token, InstallState::Installed)
            .await
    }

    async fn advance_install(
        &self,
        id: uuid::Uuid,
        token: &str,
        to: InstallState,
    ) -> Result<InstallCompletion> {
        // Pending installs are in the snapshot: whether the machine left the
        // installer with this call decides what the events say.
        let was_pending = self.snapshot().installs.contains_key(&id);
        let (install, changed) = self
            .store()
            .advance_install(id, token, to, Utc::now())
            .await?;
        if changed {
            self.inventory().reload_machine(install.machine).await?;
            let snapshot = self.snapshot();
            let machine = snapshot
                .machines
                .iter()
                .find(|m| m.id == install.machine)
                .map(|m| m.as_ref());
            let name = machine.map(|m| m.name.as_str()).unwrap_or_default();
            let mut events = Vec::new();
            if was_pending && to == InstallState::Installed {
                events.push(
                    NewEvent::new(
                        EventKind::MachineChanged,
                        format!(
                            "the installer of {} finished on {name} (install {id}); it boots its disk next, and the installed system reports its first boot",
                            install.os
                        ),
                    )
                    .data(json!({
                        "who": "installer",
                        "action": "installer_finished",
                        "name": name,
                        "intent": machine.map(|m| &m.intent),
                        "install": id,
                        "os": install.os,
                    })),
                );
            }
            if to == InstallState::Completed {
                if !was_pending {
                    events.push(
                        NewEvent::new(
                            EventKind::MachineBooted,
                            format!(
                                "{name} booted the {} it installed from its disk (install {id})",
                                install.os
                            ),
                        )
                        .data(json!({"install": id, "os": install.os, "who": "installed system"})),
                    );
                }
                events.push(
                    NewEvent::new(
                        EventKind::InstallCompleted,
                        if was_pending {
                            format!(
                                "install {id} of {} on {name} completed; it boots from its disk next",
                                install.os
                            )
                        } else {
                            format!(
                                "install {id} of {} on {name} completed: the installed system is running",
                                install.os
                            )
                        },
                    )
                    .data(json!({
                        "install": id,
                        "os": install.os,
                        "who": if was_pending { "installer" } else { "installed system" },
                    })),
                );
                counter!("rackboot_installs_completed_total").increment(1);
            }
            for event in events {
                self.emit(match machine {
                    Some(m) => on_machine(event, m),
                    None => event.machine(install.machine),
                });
            }
        }
        Ok(InstallCompletion { install, changed })
    }
}
