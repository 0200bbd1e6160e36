//! Shared test fixtures: a minimal in-memory Store (unique names and MACs, like the
//! real ones; an optional delay on create widens race windows), fixed machines and
//! profiles, and a BootService over them.

#![allow(dead_code)]

pub mod qemu;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use rackboot_boot::{BootConfig, BootService, Fleet};
use rackboot_core::{
    AgentSession, BootIntent, Delivery, Event, EventHub, EventPersistQueue, Facts, InstallRequest,
    InstallState, InstallTemplate, Lease, LoaderKind, MacAddr, Machine, MachineId, Maintenance,
    NewEvent, Profile, Selector, Transition, Webhook, Workflow, WorkflowId,
};
use rackboot_store::{
    EventFilter, InstallAccess, InstallAccessAmend, LifecycleChange, Result, Store, StoreError,
    WorkflowFilter,
};

#[derive(Default)]
pub struct MemStore {
    pub machines: Mutex<Vec<Machine>>,
    pub profiles: Mutex<Vec<Profile>>,
    pub selectors: Mutex<Vec<Selector>>,
    pub templates: Mutex<Vec<InstallTemplate>>,
    pub installs: Mutex<Vec<InstallRequest>>,
    pub install_access: Mutex<Vec<InstallAccess>>,
    pub create_delay: Option<Duration>,
    pub create_calls: AtomicUsize,
}

fn not_found(what: &'static str, key: impl ToString) -> StoreError {
    StoreError::NotFound {
        what,
        key: key.to_string(),
    }
}

#[async_trait]
impl Store for MemStore {
    fn backend(&self) -> &'static str {
        "memory"
    }
    async fn create_machine(&self, machine: &Machine) -> Result<()> {
        self.create_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(d) = self.create_delay {
            tokio::time::sleep(d).await;
        }
        let mut ms = self.machines.lock().unwrap();
        if ms
            .iter()
            .any(|m| m.name == machine.name || m.macs.iter().any(|mac| machine.macs.contains(mac)))
        {
            return Err(StoreError::Conflict(format!(
                "machine {} or one of its MACs exists",
                machine.name
            )));
        }
        ms.push(machine.clone());
        Ok(())
    }
    async fn update_machine(&self, machine: &Machine) -> Result<()> {
        let mut ms = self.machines.lock().unwrap();
        let m = ms
            .iter_mut()
            .find(|m| m.id == machine.id)
            .ok_or_else(|| not_found("machine", machine.id))?;
        *m = machine.clone();
        Ok(())
    }
    async fn delete_machine(&self, id: MachineId) -> Result<()> {
        self.machines.lock().unwrap().retain(|m| m.id != id);
        Ok(())
    }
    async fn get_machine(&self, id: MachineId) -> Result<Machine> {
        self.machines
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .ok_or_else(|| not_found("machine", id))
    }
    async fn find_machine_by_name(&self, name: &str) -> Result<Option<Machine>> {
        Ok(self
            .machines
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.name == name)
            .cloned())
    }
    async fn find_machine_by_mac(&self, mac: MacAddr) -> Result<Option<Machine>> {
        Ok(self
            .machines
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.macs.contains(&mac))
            .cloned())
    }
    async fn list_machines(&self) -> Result<Vec<Machine>> {
        Ok(self.machines.lock().unwrap().clone())
    }
    async fn put_profile(&self, profile: &Profile) -> Result<()> {
        let mut ps = self.profiles.lock().unwrap();
        ps.retain(|p| p.name != profile.name);
        ps.push(profile.clone());
        Ok(())
    }
    async fn delete_profile(&self, name: &str) -> Result<()> {
        self.profiles.lock().unwrap().retain(|p| p.name != name);
        Ok(())
    }
    async fn get_profile(&self, name: &str) -> Result<Profile> {
        self.profiles
            .lock()
            .unwrap()
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| not_found("profile", name))
    }
    async fn list_profiles(&self) -> Result<Vec<Profile>> {
        Ok(self.profiles.lock().unwrap().clone())
    }
    async fn put_selector(&self, selector: &Selector) -> Result<()> {
        let mut ss = self.selectors.lock().unwrap();
        ss.retain(|s| s.name != selector.name);
        ss.push(selector.clone());
        Ok(())
    }
    async fn delete_selector(&self, name: &str) -> Result<()> {
        self.selectors.lock().unwrap().retain(|s| s.name != name);
        Ok(())
    }
    async fn list_selectors(&self) -> Result<Vec<Selector>> {
        Ok(self.selectors.lock().unwrap().clone())
    }
    async fn put_leases(&self, _leases: &[Lease]) -> Result<()> {
        Ok(())
    }
    async fn delete_lease(&self, _ip: Ipv4Addr) -> Result<()> {
        Ok(())
    }
    async fn list_leases(&self) -> Result<Vec<Lease>> {
        Ok(Vec::new())
    }
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<Event>> {
        Ok(events
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.with_id(i as i64 + 1))
            .collect())
    }
    async fn list_events(&self, _filter: &EventFilter) -> Result<Vec<Event>> {
        Ok(Vec::new())
    }
    async fn put_template(&self, template: &InstallTemplate) -> Result<()> {
        let mut all = self.templates.lock().unwrap();
        all.retain(|t| t.name != template.name);
        all.push(template.clone());
        Ok(())
    }
    async fn get_template(&self, name: &str) -> Result<InstallTemplate> {
        let all = self.templates.lock().unwrap();
        all.iter()
            .find(|t| t.name == name)
            .cloned()
            .ok_or_else(|| not_found("template", name))
    }
    async fn list_templates(&self) -> Result<Vec<InstallTemplate>> {
        Ok(self.templates.lock().unwrap().clone())
    }
    async fn delete_template(&self, name: &str) -> Result<()> {
        self.templates.lock().unwrap().retain(|t| t.name != name);
        Ok(())
    }
    async fn replace_installs(
        &self,
        machine: MachineId,
        installs: &[InstallRequest],
        intent: &BootIntent,
        _at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let mut m = self.get_machine(machine).await?;
        m.intent = intent.clone();
        self.update_machine(&m).await?;
        let mut all = self.installs.lock().unwrap();
        for i in all.iter_mut() {
            if i.machine == machine && i.state == InstallState::Pending {
                i.state = InstallState::Cancelled;
            }
        }
        all.extend(installs.iter().cloned());
        Ok(())
    }
    async fn get_install(&self, id: uuid::Uuid) -> Result<InstallRequest> {
        let all = self.installs.lock().unwrap();
        all.iter()
            .find(|i| i.id == id)
            .cloned()
            .ok_or_else(|| not_found("install", id))
    }
    async fn list_installs(&self, machine: Option<MachineId>) -> Result<Vec<InstallRequest>> {
        let all = self.installs.lock().unwrap();
        Ok(all
            .iter()
            .filter(|i| machine.is_none_or(|m| i.machine == m))
            .cloned()
            .collect())
    }
    async fn advance_install(
        &self,
        id: uuid::Uuid,
        token: &str,
        to: InstallState,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(InstallRequest, bool)> {
        let mut install = self.get_install(id).await?;
        if install.token != token {
            return Err(not_found("install", id));
        }
        let forward = match (install.state, to) {
            (InstallState::Completed, _) | (InstallState::Installed, InstallState::Installed) => {
                false
            }
            (InstallState::Cancelled, _) => {
                return Err(rackboot_store::StoreError::Conflict(format!(
                    "install {id} was cancelled"
                )));
            }
            _ => true,
        };
        if !forward {
            return Ok((install, false));
        }
        let was_pending = install.state == InstallState::Pending;
        install.state = to;
        if to == InstallState::Completed {
            install.completed_at = Some(at);
        }
        for i in self.installs.lock().unwrap().iter_mut() {
            if i.id == id {
                *i = install.clone();
            } else if was_pending
                && i.machine == install.machine
                && i.state == InstallState::Pending
            {
                i.state = InstallState::Cancelled;
            }
        }
        let mut machine = self.get_machine(install.machine).await?;
        if was_pending && machine.intent.install_ids().contains(&id) {
            machine.intent = BootIntent::LocalDisk;
            self.update_machine(&machine).await?;
        }
        Ok((install, true))
    }

    // Lifecycle, workflows, webhooks: the boot tests never reach these (the
    // fleet only reads agent sessions at load); anything else says so.
    async fn apply_lifecycle(&self, _change: &LifecycleChange) -> Result<()> {
        Err(unsupported("lifecycle"))
    }
    async fn set_maintenance(
        &self,
        _machine: MachineId,
        _maintenance: Option<&Maintenance>,
        _transition: &Transition,
    ) -> Result<()> {
        Err(unsupported("maintenance"))
    }
    async fn list_transitions(&self, _machine: MachineId, _limit: u32) -> Result<Vec<Transition>> {
        Ok(Vec::new())
    }
    async fn set_facts(
        &self,
        _machine: MachineId,
        _facts: &Facts,
        _at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        Err(unsupported("facts"))
    }
    async fn put_workflow(&self, _workflow: &Workflow) -> Result<()> {
        Err(unsupported("workflows"))
    }
    async fn get_workflow(&self, id: WorkflowId) -> Result<Workflow> {
        Err(not_found("workflow", id))
    }
    async fn list_workflows(&self, _filter: &WorkflowFilter) -> Result<Vec<Workflow>> {
        Ok(Vec::new())
    }
    async fn put_agent_session(&self, _session: &AgentSession) -> Result<()> {
        Err(unsupported("agent sessions"))
    }
    async fn list_agent_sessions(&self) -> Result<Vec<AgentSession>> {
        Ok(Vec::new())
    }
    async fn delete_agent_session(&self, machine: MachineId) -> Result<()> {
        Err(not_found("agent session", machine))
    }
    async fn bind_install_access(&self, access: &InstallAccess) -> Result<InstallAccess> {
        if !self
            .installs
            .lock()
            .unwrap()
            .iter()
            .any(|i| i.id == access.install)
        {
            return Err(not_found("install", access.install));
        }
        let mut all = self.install_access.lock().unwrap();
        if let Some(existing) = all.iter().find(|a| a.install == access.install) {
            return Ok(existing.clone());
        }
        all.push(access.clone());
        Ok(access.clone())
    }
    async fn get_install_access(&self, install: uuid::Uuid) -> Result<Option<InstallAccess>> {
        Ok(self
            .install_access
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.install == install)
            .cloned())
    }
    async fn amend_install_access(
        &self,
        install: uuid::Uuid,
        amend: InstallAccessAmend,
    ) -> Result<Option<InstallAccess>> {
        let mut all = self.install_access.lock().unwrap();
        let Some(a) = all.iter_mut().find(|a| a.install == install) else {
            return Ok(None);
        };
        a.closed_at = a.closed_at.or(amend.closed_at);
        a.done_ip = a.done_ip.or(amend.done_ip);
        Ok(Some(a.clone()))
    }
    async fn put_webhook(&self, _webhook: &Webhook) -> Result<()> {
        Err(unsupported("webhooks"))
    }
    async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        Ok(Vec::new())
    }
    async fn delete_webhook(&self, name: &str) -> Result<()> {
        Err(not_found("webhook", name))
    }
    async fn enqueue_deliveries(&self, _deliveries: &[Delivery]) -> Result<Vec<Delivery>> {
        Err(unsupported("deliveries"))
    }
    async fn due_deliveries(
        &self,
        _now: chrono::DateTime<chrono::Utc>,
        _limit: u32,
    ) -> Result<Vec<Delivery>> {
        Ok(Vec::new())
    }
    async fn update_delivery(&self, delivery: &Delivery) -> Result<()> {
        Err(not_found("delivery", delivery.id))
    }
    async fn list_deliveries(&self, _webhook: Option<&str>, _limit: u32) -> Result<Vec<Delivery>> {
        Ok(Vec::new())
    }
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Corrupt {
        table: "memstore",
        detail: format!("the boot tests' MemStore does not keep {what}"),
    }
}

pub fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

/// Fixed timestamps and ids so rendered output is stable.
pub fn machine(name: &str, mac_str: &str, intent: BootIntent) -> Machine {
    let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    Machine {
        id: uuid::Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
        name: name.into(),
        macs: vec![mac(mac_str)],
        uuid: None,
        arch: None,
        labels: Default::default(),
        intent,
        bmc: None,
        state: Default::default(),
        state_reason: None,
        state_changed_at: None,
        maintenance: None,
        facts: None,
        facts_at: None,
        created_at: t,
        updated_at: t,
    }
}

pub fn kernel_profile(name: &str, loader: LoaderKind) -> Profile {
    let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
    Profile {
        name: name.into(),
        description: String::new(),
        kernel: Some(format!("{name}/linux")),
        initrds: vec![
            format!("{name}/initrd.gz"),
            "http://mirror.example/extra.cpio".into(),
        ],
        cmdline: "console=ttyS0 hostname={{ machine.name }} url={{ base_url }}/ks/{{ mac }}".into(),
        ipxe_script: None,
        loader,
        created_at: t,
        updated_at: t,
    }
}

/// Events as emitted, in order (the persist side without a store).
pub fn collect_events(queue: EventPersistQueue) -> Arc<Mutex<Vec<NewEvent>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        let mut queue = queue;
        while let Some(batch) = queue.next_batch(256).await {
            out.lock().unwrap().extend(batch);
        }
    });
    seen
}

/// How many of the collected events are of `kind`.
pub fn count_of(events: &Mutex<Vec<NewEvent>>, kind: rackboot_core::EventKind) -> usize {
    events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

pub struct Fixture {
    pub store: Arc<MemStore>,
    pub service: Arc<BootService>,
    pub events: Arc<Mutex<Vec<NewEvent>>>,
}

pub async fn fixture(store: MemStore, config: BootConfig) -> Fixture {
    let store = Arc::new(store);
    let (hub, queue) = EventHub::new(4096);
    let events = collect_events(queue);
    let fleet = Fleet::load(store.clone(), None, hub).await.unwrap();
    let service = BootService::new(fleet, config).unwrap();
    Fixture {
        store,
        service,
        events,
    }
}

impl Fixture {
    /// Waits (bounded) until no discovery task runs and the event queue has drained.
    pub async fn settle(&self) {
        for _ in 0..500 {
            if self.service.discoveries_in_flight() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Waits (up to 10 s) until at least `n` events of `kind` were collected:
    /// they reach the list through a task. Returns them.
    pub async fn wait_events(&self, kind: rackboot_core::EventKind, n: usize) -> Vec<NewEvent> {
        for _ in 0..1000 {
            if self.events_of(kind).len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.events_of(kind)
    }

    pub fn events_of(&self, kind: rackboot_core::EventKind) -> Vec<NewEvent> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind == kind)
            .cloned()
            .collect()
    }
}
