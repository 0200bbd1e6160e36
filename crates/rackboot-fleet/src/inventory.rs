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

use crate::sharded::ShardedMap;

/// The machines of a snapshot, by id. Clones share storage, so replacing one
/// machine in a new snapshot costs about the same at 100 or 100,000 machines.
#[derive(Debug, Default, Clone)]
pub struct Machines(ShardedMap<MachineId, Arc<Machine>>);

impl Machines {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// In no particular order (see [`Machines::by_name`]).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Machine>> {
        self.0.values()
    }

    pub fn get(&self, id: &MachineId) -> Option<&Arc<Machine>> {
        self.0.get(id)
    }

    /// Every machine, sorted by name (O(N log N): for listings, not lookups).
    pub fn by_name(&self) -> Vec<&Arc<Machine>> {
        let mut all: Vec<&Arc<Machine>> = self.iter().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// One consistent view of the inventory. Cloning it is cheap (its machine
/// maps share storage); profiles, selectors and OS releases are copied, and
/// there are few of them.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub machines: Machines,
    pub profiles: HashMap<String, Profile>,
    pub selectors: Vec<Selector>,
    /// Pending install requests by id (what `BootIntent::Install` points at).
    pub installs: ShardedMap<uuid::Uuid, InstallRequest>,
    /// Imported OS releases by id (the OS catalog directory).
    pub os: HashMap<String, OsRelease>,
    by_mac: ShardedMap<MacAddr, MachineId>,
    by_uuid: ShardedMap<uuid::Uuid, MachineId>,
    /// Each machine's pending installs (to drop them when it is re-read).
    installs_of: ShardedMap<MachineId, Vec<uuid::Uuid>>,
}

impl Snapshot {
    pub fn new(
        machines: Vec<Machine>,
        profiles: Vec<Profile>,
        selectors: Vec<Selector>,
    ) -> Snapshot {
        let mut snap = Snapshot {
            profiles: profiles.into_iter().map(|p| (p.name.clone(), p)).collect(),
            selectors,
            ..Snapshot::default()
        };
        for m in machines {
            snap.put_machine(m, Vec::new());
        }
        snap
    }

    pub fn machine_by_id(&self, id: MachineId) -> Option<&Machine> {
        self.machines.get(&id).map(|m| m.as_ref())
    }

    pub fn machine_by_mac(&self, mac: MacAddr) -> Option<&Machine> {
        self.by_mac.get(&mac).and_then(|id| self.machine_by_id(*id))
    }

    pub fn machine_by_uuid(&self, uuid: uuid::Uuid) -> Option<&Machine> {
        self.by_uuid
            .get(&uuid)
            .and_then(|id| self.machine_by_id(*id))
    }

    /// Drops a machine, its lookups and its pending installs.
    fn remove_machine(&mut self, id: MachineId) {
        if let Some(old) = self.machines.0.remove(&id) {
            for mac in &old.macs {
                if self.by_mac.get(mac) == Some(&id) {
                    self.by_mac.remove(mac);
                }
            }
            if let Some(u) = old.uuid
                && self.by_uuid.get(&u) == Some(&id)
            {
                self.by_uuid.remove(&u);
            }
        }
        for install in self.installs_of.remove(&id).unwrap_or_default() {
            self.installs.remove(&install);
        }
    }

    /// Adds (or replaces) a machine with its pending installs.
    fn put_machine(&mut self, machine: Machine, pending: Vec<InstallRequest>) {
        let id = machine.id;
        self.remove_machine(id);
        for mac in &machine.macs {
            self.by_mac.insert(*mac, id);
        }
        if let Some(u) = machine.uuid {
            self.by_uuid.insert(u, id);
        }
        if !pending.is_empty() {
            self.installs_of
                .insert(id, pending.iter().map(|i| i.id).collect());
            for install in pending {
                self.installs.insert(install.id, install);
            }
        }
        self.machines.0.insert(id, Arc::new(machine));
    }

    /// A snapshot of `machines` with their pending installs (`installs` may
    /// hold other machines' too: those are left out).
    fn build(
        machines: Vec<Machine>,
        installs: Vec<InstallRequest>,
        profiles: HashMap<String, Profile>,
        selectors: Vec<Selector>,
        os: HashMap<String, OsRelease>,
    ) -> Snapshot {
        let mut snap = Snapshot {
            profiles,
            selectors,
            os,
            ..Snapshot::default()
        };
        let mut pending = group_by_machine(installs);
        for m in machines {
            let mine = pending.remove(&m.id).unwrap_or_default();
            snap.put_machine(m, mine);
        }
        snap
    }
}

fn group_by_machine(installs: Vec<InstallRequest>) -> HashMap<MachineId, Vec<InstallRequest>> {
    let mut by: HashMap<MachineId, Vec<InstallRequest>> = HashMap::new();
    for i in installs {
        by.entry(i.machine).or_default().push(i);
    }
    by
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

    /// Re-reads everything: the store and the OS catalog. Writes call the
    /// narrower reloads below; this one is for the start and for a resync
    /// (another server's writes may have been missed). When it returns,
    /// [`Inventory::snapshot`] includes every write that finished before it
    /// was called.
    ///
    /// Concurrent calls share reads: a caller whose write an already
    /// published read includes returns without reading.
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
        let snap = Snapshot::build(
            self.store.list_machines().await?,
            self.store.list_pending_installs().await?,
            self.store
                .list_profiles()
                .await?
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
            self.store.list_selectors().await?,
            self.read_os_catalog().await,
        );
        self.publish(snap);
        *published = covers;
        Ok(())
    }

    /// Re-reads one machine after a write to it (create, update, delete) and
    /// its pending installs (which machine writes change with it); the rest of
    /// the snapshot is shared with the previous one. The cost does not grow
    /// with the fleet: a full [`Inventory::reload`] re-reads every machine
    /// (4 s at 100,000 of them).
    pub async fn reload_machine(&self, id: MachineId) -> Result<(), StoreError> {
        self.reload_machines(&[id]).await
    }

    /// [`Inventory::reload_machine`] for several machines at once: one read
    /// of the machines, one of their pending installs, one publish.
    pub async fn reload_machines(&self, ids: &[MachineId]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        // Serialised with the other reloads, so none publishes over a newer read.
        let _published = self.published.lock().await;
        let machines = self.store.get_machines(ids).await?;
        let installs = self.store.list_pending_installs_of(ids).await?;
        let mut snap = (*self.snapshot()).clone();
        let mut pending = group_by_machine(installs);
        let mut found = std::collections::HashSet::with_capacity(machines.len());
        for m in machines {
            found.insert(m.id);
            let mine = pending.remove(&m.id).unwrap_or_default();
            snap.put_machine(m, mine);
        }
        for id in ids.iter().filter(|id| !found.contains(id)) {
            snap.remove_machine(*id);
        }
        self.publish(snap);
        Ok(())
    }

    /// Re-reads profiles and selectors (after a write to one of them).
    pub async fn reload_catalog(&self) -> Result<(), StoreError> {
        let _published = self.published.lock().await;
        let profiles = self.store.list_profiles().await?;
        let selectors = self.store.list_selectors().await?;
        let mut snap = (*self.snapshot()).clone();
        snap.profiles = profiles.into_iter().map(|p| (p.name.clone(), p)).collect();
        snap.selectors = selectors;
        self.publish(snap);
        Ok(())
    }

    /// Re-reads the OS catalog directory only (after an import or a delete,
    /// and when the API lists it).
    pub async fn reload_os(&self) -> Result<(), StoreError> {
        let os = self.read_os_catalog().await;
        let _published = self.published.lock().await;
        let mut snap = (*self.snapshot()).clone();
        snap.os = os;
        self.publish(snap);
        Ok(())
    }

    fn publish(&self, snap: Snapshot) {
        // A poisoned lock only means a reader panicked; the Arc inside is still whole.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
    }

    /// How many full reloads read the store since this inventory was loaded
    /// (the first load included); the rest were covered by a concurrent one.
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
