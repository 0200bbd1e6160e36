//! Install access records (who may fetch a pending install's script and
//! files and call its callbacks; see `rackboot_store::InstallAccess`). The
//! store holds them, so a binding survives a restart and is the same on
//! every server; a cache serves the TFTP path, which cannot wait on the
//! store (GRUB and pxelinux configs are generated synchronously).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use rackboot_store::{InstallAccess, InstallAccessAmend, Store, StoreError};

use crate::{Fleet, Result};

/// The records this server has read or written, by install.
#[derive(Default)]
pub(crate) struct AccessCache(RwLock<HashMap<uuid::Uuid, InstallAccess>>);

impl AccessCache {
    /// The records of pending installs (a store without them has none).
    pub(crate) async fn load(store: &dyn Store) -> Result<AccessCache, StoreError> {
        let cache = AccessCache::default();
        for a in store.list_install_access().await? {
            cache.put(a);
        }
        Ok(cache)
    }

    fn put(&self, access: InstallAccess) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(access.install, access);
    }

    fn get(&self, install: uuid::Uuid) -> Option<InstallAccess> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&install)
            .cloned()
    }
}

impl Fleet {
    /// The install's access record as the store has it now (another server
    /// may have written it), or `None` when nothing was fetched yet.
    pub async fn install_access(&self, install: uuid::Uuid) -> Result<Option<InstallAccess>> {
        let access = self.store().get_install_access(install).await?;
        if let Some(a) = &access {
            self.install_access.put(a.clone());
        }
        Ok(access)
    }

    /// The record this server last saw, without asking the store (for
    /// synchronous callers: TFTP).
    pub fn install_access_cached(&self, install: uuid::Uuid) -> Option<InstallAccess> {
        self.install_access.get(install)
    }

    /// Binds the install to `ip` as of `at`, unless it is bound already;
    /// returns the record in force (the first binding wins, on every server).
    pub async fn bind_install_access(
        &self,
        install: uuid::Uuid,
        ip: IpAddr,
        at: DateTime<Utc>,
    ) -> Result<InstallAccess> {
        let access = self
            .store()
            .bind_install_access(&InstallAccess {
                install,
                bound_ip: ip,
                first_fetch_at: at,
                closed_at: None,
                done_ip: None,
            })
            .await?;
        self.install_access.put(access.clone());
        Ok(access)
    }

    /// Records a binding in the cache before the store has it (TFTP, which
    /// cannot wait): the caller writes it with
    /// [`Fleet::bind_install_access`] next, which replaces it with the
    /// record in force.
    pub fn bind_install_access_provisionally(
        &self,
        install: uuid::Uuid,
        ip: IpAddr,
        at: DateTime<Utc>,
    ) -> InstallAccess {
        let access = InstallAccess {
            install,
            bound_ip: ip,
            first_fetch_at: at,
            closed_at: None,
            done_ip: None,
        };
        self.install_access.put(access.clone());
        access
    }

    /// Closes the install's files (its installer reported started) and/or
    /// records the address its completion came from; each only once.
    pub async fn amend_install_access(
        &self,
        install: uuid::Uuid,
        amend: InstallAccessAmend,
    ) -> Result<Option<InstallAccess>> {
        let access = self.store().amend_install_access(install, amend).await?;
        if let Some(a) = &access {
            self.install_access.put(a.clone());
        }
        Ok(access)
    }
}
