//! Profiles, selectors and the OS catalog: what machines can boot. Each write
//! re-reads profiles and selectors into the snapshot (not the machines) and
//! records a `profile_changed` event.

use chrono::Utc;
use rackboot_core::{BootIntent, EventKind, NewEvent, Profile, Selector};
use rackboot_store::StoreError;
use serde_json::json;

use crate::{Actor, Fleet, FleetError, Result};

impl Fleet {
    /// Creates or replaces a profile (keeping the stored `created_at`); returns
    /// it as stored and whether it was created.
    pub async fn put_profile(&self, mut profile: Profile, by: &Actor) -> Result<(Profile, bool)> {
        profile.validate().map_err(FleetError::Invalid)?;
        let store = self.store();
        let existing = match store.get_profile(&profile.name).await {
            Ok(p) => Some(p),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let now = Utc::now();
        profile.created_at = existing.as_ref().map_or(now, |p| p.created_at);
        profile.updated_at = now;
        store.put_profile(&profile).await?;
        let stored = store.get_profile(&profile.name).await?;
        self.inventory().reload_catalog().await?;
        let action = if existing.is_some() {
            "replaced"
        } else {
            "created"
        };
        self.profile_event(
            &format!("profile {:?}", profile.name),
            action,
            by,
            json!({"name": profile.name}),
        );
        Ok((stored, existing.is_none()))
    }

    /// Deletes a profile that no selector and no machine uses (the refusal names them).
    pub async fn delete_profile(&self, name: &str, by: &Actor) -> Result<()> {
        let store = self.store();
        store.get_profile(name).await?;
        let selectors: Vec<String> = store
            .list_selectors()
            .await?
            .into_iter()
            .filter(|s| s.profile == name)
            .map(|s| s.name)
            .collect();
        let machines: Vec<String> = store
            .list_machines()
            .await?
            .into_iter()
            .filter(|m| intent_uses(&m.intent, name))
            .map(|m| m.name)
            .collect();
        if !selectors.is_empty() || !machines.is_empty() {
            let mut users = Vec::new();
            if !selectors.is_empty() {
                users.push(format!("selectors {}", selectors.join(", ")));
            }
            if !machines.is_empty() {
                users.push(format!("machines {}", machines.join(", ")));
            }
            return Err(FleetError::Conflict(format!(
                "profile {name:?} is still used by {}",
                users.join(" and ")
            )));
        }
        store.delete_profile(name).await?;
        self.inventory().reload_catalog().await?;
        self.profile_event(
            &format!("profile {name:?}"),
            "deleted",
            by,
            json!({"name": name}),
        );
        Ok(())
    }

    /// Creates or replaces a selector whose profile exists; returns whether it was created.
    pub async fn put_selector(&self, selector: Selector, by: &Actor) -> Result<bool> {
        selector
            .validate()
            .map_err(|e| FleetError::Invalid(e.to_string()))?;
        let store = self.store();
        match store.get_profile(&selector.profile).await {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => {
                return Err(FleetError::Invalid(format!(
                    "profile: no profile named {:?}",
                    selector.profile
                )));
            }
            Err(e) => return Err(e.into()),
        }
        let existed = self.find_selector(&selector.name).await?.is_some();
        store.put_selector(&selector).await?;
        self.inventory().reload_catalog().await?;
        self.profile_event(
            &format!("selector {:?}", selector.name),
            if existed { "replaced" } else { "created" },
            by,
            json!({"selector": selector.name, "name": selector.profile}),
        );
        Ok(!existed)
    }

    pub async fn find_selector(&self, name: &str) -> Result<Option<Selector>> {
        Ok(self
            .store()
            .list_selectors()
            .await?
            .into_iter()
            .find(|s| s.name == name))
    }

    pub async fn delete_selector(&self, name: &str, by: &Actor) -> Result<()> {
        let Some(selector) = self.find_selector(name).await? else {
            return Err(FleetError::NotFound(format!("selector {name:?} not found")));
        };
        self.store().delete_selector(name).await?;
        self.inventory().reload_catalog().await?;
        self.profile_event(
            &format!("selector {name:?}"),
            "deleted",
            by,
            json!({"selector": name, "name": selector.profile}),
        );
        Ok(())
    }

    /// Re-reads the OS catalog directory (after an import or a delete); the
    /// machines are not re-read.
    pub async fn reload_os_catalog(&self) -> Result<()> {
        Ok(self.inventory().reload_os().await?)
    }

    // There is no selector event kind: a selector decides which profile
    // machines boot, so its changes are reported as profile changes naming it.
    fn profile_event(&self, what: &str, action: &str, by: &Actor, mut data: serde_json::Value) {
        data["who"] = json!(by.as_str());
        data["action"] = json!(action);
        self.emit(
            NewEvent::new(
                EventKind::ProfileChanged,
                format!("{what} {action} by {by}"),
            )
            .data(data),
        );
    }
}

/// True when `intent` boots or offers profile `name`.
pub(crate) fn intent_uses(intent: &BootIntent, name: &str) -> bool {
    match intent {
        BootIntent::Profile { name: Some(n) } => n == name,
        BootIntent::Menu(menu) => {
            menu.default.as_deref() == Some(name) || menu.entries.iter().any(|e| e.profile == name)
        }
        BootIntent::Discover
        | BootIntent::LocalDisk
        | BootIntent::Profile { name: None }
        | BootIntent::Install { .. }
        | BootIntent::Agent { .. } => false,
    }
}
