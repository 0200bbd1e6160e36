//! An in-memory copy of machines, profiles and selectors, so DHCP, TFTP and boot
//! HTTP answer from memory during a boot storm. [`crate::Fleet`] writes the
//! store and then calls [`Inventory::reload`] or [`Inventory::reload_machine`];
//! readers take a cheap [`Snapshot`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rackboot_core::{InstallRequest, MacAddr, Machine, MachineId, Profile, Selector};
use rackboot_oscatalog::OsRelease;
use rackboot_store::{Store, StoreError};

/// One consistent view of the inventory.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Sorted by name. Shared between snapshots: a write to one machine
    /// re-reads only that one ([`Inventory::reload_machine`]).
    pub machines: Vec<Arc<Machine>>,
    pub profiles: HashMap<String, Profile>,
    pub selectors: Vec<Selector>,
    /// Pending install requests by id (what `BootIntent::Install` points at).
    pub installs: HashMap<uuid::Uuid, InstallRequest>,
    /// Imported OS releases by id (the OS catalog directory).
    pub os: HashMap<String, OsRelease>,
    by_mac: HashMap<MacAddr, usize>,
    by_uuid: HashMap<uuid::Uuid, usize>,
    by_id: HashMap<MachineId, usize>,
}

impl Snapshot {
    pub fn new(
        machines: Vec<Machine>,
        profiles: Vec<Profile>,
        selectors: Vec<Selector>,
    ) -> Snapshot {
        Snapshot::from_parts(
            machines.into_iter().map(Arc::new).collect(),
            profiles.into_iter().map(|p| (p.name.clone(), p)).collect(),
            selectors,
            HashMap::new(),
            HashMap::new(),
        )
    }

    fn from_parts(
        machines: Vec<Arc<Machine>>,
        profiles: HashMap<String, Profile>,
        selectors: Vec<Selector>,
        installs: HashMap<uuid::Uuid, InstallRequest>,
        os: HashMap<String, OsRelease>,
    ) -> Snapshot {
        let mut by_mac = HashMap::new();
        let mut by_uuid = HashMap::new();
        let mut by_id = HashMap::with_capacity(machines.len());
        for (i, m) in machines.iter().enumerate() {
            by_id.insert(m.id, i);
            for mac in &m.macs {
                by_mac.insert(*mac, i);
            }
            if let Some(u) = m.uuid {
                by_uuid.insert(u, i);
            }
        }
        Snapshot {
            machines,
            profiles,
            selectors,
            installs,
            os,
            by_mac,
            by_uuid,
            by_id,
        }
    }

    pub fn machine_by_id(&self, id: MachineId) -> Option<&Machine> {
        self.by_id.get(&id).map(|&i| self.machines[i].as_ref())
    }

    pub fn machine_by_mac(&self, mac: MacAddr) -> Option<&Machine> {
        self.by_mac.get(&mac).map(|&i| self.machines[i].as_ref())
    }

    pub fn machine_by_uuid(&self, uuid: uuid::Uuid) -> Option<&Machine> {
        self.by_uuid.get(&uuid).map(|&i| self.machines[i].as_ref())
    }
}

pub struct Inventory {
    store: Arc<dyn Store>,
    /// The OS catalog directory (imported trees), when installs are served.
    os_dir: Option<PathBuf>,
    current: RwLock<Arc<Snapshot>>,
    /// Reload tickets handed out so far: a writer takes one after its write.
    requested: AtomicU64,
    /// Serialises reloads (so an older read never replaces a newer one) and holds
    /// the highest ticket whose writes the published snapshot is known to include.
    published: tokio::sync::Mutex<u64>,
    /// Reloads that actually read the store (the rest were covered by another).
    loads: AtomicU64,
}

impl Inventory {
    /// Loads everything from the store.
    pub async fn load(store: Arc<dyn Store>) -> Result<Arc<Inventory>, StoreError> {
        Inventory::load_with_os_catalog(store, None).await
    }

    /// Loads everything from the store and the OS catalog in `os_dir`.
    pub async fn load_with_os_catalog(
        store: Arc<dyn Store>,
        os_dir: Option<PathBuf>,
    ) -> Result<Arc<Inventory>, StoreError> {
        let inv = Arc::new(Inventory {
            store,
            os_dir,
            current: RwLock::new(Arc::new(Snapshot::default())),
            requested: AtomicU64::new(0),
            published: tokio::sync::Mutex::new(0),
            loads: AtomicU64::new(0),
        });
        inv.reload().await?;
        Ok(inv)
    }

    /// Re-reads the store and the OS catalog. Call after every write to
    /// machines, profiles, selectors, installs or the catalog; when it returns,
    /// [`Inventory::snapshot`] includes that write.
    ///
    /// Concurrent calls share reads: a boot storm of unknown machines records
    /// hundreds of them at once, and re-reading every machine once per discovery
    /// would cost time quadratic in the rack's size. A caller whose write an
    /// already published read includes returns without reading.
    pub async fn reload(&self) -> Result<(), StoreError> {
        // Taken after the caller's write: any read that starts later includes it.
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut published = self.published.lock().await;
        if *published >= ticket {
            return Ok(());
        }
        // Every ticket handed out so far belongs to a write that has finished, so
        // the read below covers them all.
        let covers = self.requested.load(Ordering::SeqCst);
        self.loads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("rackboot_inventory_loads_total").increment(1);
        let snap = Snapshot::from_parts(
            self.store
                .list_machines()
                .await?
                .into_iter()
                .map(Arc::new)
                .collect(),
            self.store
                .list_profiles()
                .await?
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
            self.store.list_selectors().await?,
            self.pending_installs().await?,
            self.read_os_catalog().await,
        );
        self.publish(snap);
        *published = covers;
        Ok(())
    }

    /// Re-reads one machine after a write to it (create, update, delete) and the
    /// pending installs (which machine writes change with it); the rest of the
    /// snapshot is reused. A full [`Inventory::reload`] re-reads every machine,
    /// about 100 ms at 10,000 of them, which enrolling a rack one API call at a
    /// time paid per call.
    pub async fn reload_machine(&self, id: MachineId) -> Result<(), StoreError> {
        // Serialised with full reloads, so neither publishes over the other's newer read.
        let _published = self.published.lock().await;
        let machine = match self.store.get_machine(id).await {
            Ok(m) => Some(m),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let installs = self.pending_installs().await?;
        let current = self.snapshot();
        let mut machines: Vec<Arc<Machine>> = current
            .machines
            .iter()
            .filter(|m| m.id != id)
            .cloned()
            .collect();
        if let Some(m) = machine {
            let at = machines.partition_point(|x| x.name < m.name);
            machines.insert(at, Arc::new(m));
        }
        let snap = Snapshot::from_parts(
            machines,
            current.profiles.clone(),
            current.selectors.clone(),
            installs,
            current.os.clone(),
        );
        self.publish(snap);
        Ok(())
    }

    async fn pending_installs(&self) -> Result<HashMap<uuid::Uuid, InstallRequest>, StoreError> {
        Ok(self
            .store
            .list_pending_installs()
            .await?
            .into_iter()
            .map(|i| (i.id, i))
            .collect())
    }

    fn publish(&self, snap: Snapshot) {
        // A poisoned lock only means a reader panicked; the Arc inside is still whole.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
    }

    /// How many reloads read the store since this inventory was loaded (the first
    /// load included); the rest were covered by a concurrent one.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn os_dir(&self) -> Option<&std::path::Path> {
        self.os_dir.as_deref()
    }

    /// The catalog's releases. An unreadable catalog is logged and served as
    /// empty: installs then fail with "OS not imported", boots still work.
    async fn read_os_catalog(&self) -> HashMap<String, OsRelease> {
        let Some(dir) = self.os_dir.clone() else {
            return HashMap::new();
        };
        let listed = tokio::task::spawn_blocking(move || rackboot_oscatalog::list(&dir)).await;
        match listed {
            Ok(Ok(entries)) => entries
                .into_iter()
                .map(|e| (e.release.id.clone(), e.release))
                .collect(),
            Ok(Err(e)) => {
                tracing::warn!("reading the OS catalog: {e}");
                HashMap::new()
            }
            Err(e) => {
                tracing::warn!("reading the OS catalog: {e}");
                HashMap::new()
            }
        }
    }
}
