//! Several servers on one database: each runs the workflows of the machines
//! it owns (rendezvous hashing over the live members, see
//! `rackboot_fleet::cluster`), and no workflow runs on two servers.
//!
//! - A workflow is claimed in the store before it is resumed; the store then
//!   refuses every write to it from another member (fencing), and the actor
//!   drops a workflow whose write was refused before acting on it.
//! - A request accepted by a server that does not own the machine is stored
//!   and released to the owner, which claims it from the change feed.
//! - When a member dies, the survivors claim its machines' workflows by
//!   the same hash and resume them (server steps restart, agent steps keep
//!   their attempt), within a heartbeat and the dead-after interval.
//! - A server whose own heartbeat lapsed drops everything (it owns nothing
//!   while it cannot tell) and rejoins as a new incarnation.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rackboot_core::{Machine, Workflow, WorkflowId};
use rackboot_fleet::cluster::View;
use rackboot_fleet::{Cluster, FleetError};
use rackboot_store::{Change, StoreError};

use super::Actor;

/// Full scans of the active workflows at least this often (besides those
/// the membership and the change feed cause).
const SCAN_EVERY: Duration = Duration::from_secs(10);

/// What the actor tracks about ownership.
#[derive(Default)]
pub(super) struct Ownership {
    /// Workflows whose last write was refused: another member runs them.
    fenced: HashSet<WorkflowId>,
    /// The incarnation the active workflows were claimed by.
    me: Option<uuid::Uuid>,
    last_scan: Option<Instant>,
}

/// What wakes the actor about ownership.
pub(super) enum Event {
    /// The membership (or this server's health, or incarnation) changed.
    View,
    /// Another server wrote something.
    Change(Change),
    /// The time for a full scan.
    Scan,
}

/// The actor's sources of ownership events (none without a cluster).
pub(super) struct Events {
    view: tokio::sync::watch::Receiver<View>,
    changes: tokio::sync::broadcast::Receiver<Change>,
    scan: tokio::time::Interval,
}

impl Events {
    pub(super) async fn next(&mut self) -> Event {
        tokio::select! {
            r = self.view.changed() => match r {
                Ok(()) => Event::View,
                // The cluster is gone (shutdown): nothing more from it.
                Err(_) => std::future::pending().await,
            },
            r = self.changes.recv() => match r {
                Ok(c) => Event::Change(c),
                // Missed some: look at everything.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Event::Scan,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending().await,
            },
            _ = self.scan.tick() => Event::Scan,
        }
    }
}

/// Waits for the next event; never resolves without a cluster.
pub(super) async fn next_event(events: &mut Option<Events>) -> Event {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

/// Whether a fleet error is the store's refusal of a fenced write.
pub(super) fn is_fenced(e: &FleetError) -> bool {
    matches!(e, FleetError::Store(StoreError::Fenced(_)))
}

impl Actor {
    fn cluster(&self) -> Option<std::sync::Arc<Cluster>> {
        self.fleet.cluster().cloned()
    }

    /// The events ownership follows, when this server is in a cluster.
    pub(super) fn ownership_events(&self) -> Option<Events> {
        let cluster = self.cluster()?;
        let mut scan = tokio::time::interval(SCAN_EVERY);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(Events {
            view: cluster.subscribe(),
            changes: self.fleet.subscribe_changes(),
            scan,
        })
    }

    /// At start: the stored active workflows this server may run (all of
    /// them without a cluster); the others are left to their owners.
    pub(super) async fn owned(&mut self, stored: Vec<Workflow>) -> Vec<Workflow> {
        let Some(cluster) = self.cluster() else {
            return stored;
        };
        let view = cluster.view();
        self.own.me = Some(view.me);
        self.own.last_scan = Some(Instant::now());
        let live = view.ids();
        let mut mine = Vec::new();
        for wf in stored {
            if !view.owns(wf.machine) {
                continue;
            }
            match self
                .fleet
                .store()
                .claim_workflow(wf.id, view.me, &live)
                .await
            {
                Ok(true) => mine.push(wf),
                Ok(false) => {}
                Err(e) => tracing::warn!(workflow = %wf.id, "claiming a workflow: {e}"),
            }
        }
        mine
    }

    pub(super) async fn on_ownership(&mut self, event: Event) {
        match event {
            Event::View | Event::Scan | Event::Change(Change::Resync | Change::Members) => {
                self.scan_ownership().await
            }
            Event::Change(Change::Workflow { id, machine }) => {
                self.on_workflow_written(id, machine).await
            }
            Event::Change(_) => {}
        }
        self.drop_fenced();
    }

    /// Another server wrote workflow `id`: if this one runs it, it lost it;
    /// if this one owns the machine and nobody live runs it, it takes it.
    async fn on_workflow_written(&mut self, id: WorkflowId, machine: uuid::Uuid) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let view = cluster.view();
        if self.active.contains_key(&id) {
            // Only the member running a workflow writes it (the store
            // fences the rest), but a notification can be older than this
            // server's claim: the writes of the server that accepted the
            // workflow and handed it over arrive after this one claimed it
            // from the first of them. The store says who runs it now.
            if self.still_mine(id, view.me).await {
                return;
            }
            tracing::warn!(workflow = %id, "another server runs this workflow now; dropping it here");
            self.own.fenced.insert(id);
            return;
        }
        if view.owns(machine) && !self.by_machine.contains_key(&machine) {
            self.adopt(id, &view).await;
        }
    }

    /// Looks at every active workflow in the store: claims those of this
    /// server's machines that nobody live runs, drops those another member
    /// claimed. Without a healthy view, or under a new incarnation, drops
    /// everything first.
    pub(super) async fn scan_ownership(&mut self) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let view = cluster.view();
        self.own.last_scan = Some(Instant::now());
        if !view.healthy || self.own.me != Some(view.me) {
            if !self.active.is_empty() {
                tracing::warn!(
                    workflows = self.active.len(),
                    healthy = view.healthy,
                    "this server's cluster membership lapsed: leaving its workflows to the store"
                );
            }
            let all: Vec<WorkflowId> = self.active.keys().copied().collect();
            for id in all {
                self.drop_workflow(id);
            }
            self.own.me = view.healthy.then_some(view.me);
            if !view.healthy {
                return;
            }
        }
        let rows = match self.fleet.store().active_workflow_owners().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("listing active workflows: {e}");
                return;
            }
        };
        let live = view.ids();
        for (id, machine, owner) in rows {
            if self.active.contains_key(&id) {
                if owner.is_some_and(|o| o != view.me) {
                    self.own.fenced.insert(id);
                }
                continue;
            }
            let runner_alive = owner.is_some_and(|o| o != view.me && live.contains(&o));
            if runner_alive || !view.owns(machine) || self.by_machine.contains_key(&machine) {
                continue;
            }
            self.adopt(id, &view).await;
        }
    }

    /// Whether workflow `id`, active here, is still this incarnation's in
    /// the store: claimed by `me`, or by nobody (this server's next write
    /// claims it). When the store cannot tell, true: a real loss is caught
    /// by the fence at the next write, before anything is acted on.
    async fn still_mine(&self, id: WorkflowId, me: uuid::Uuid) -> bool {
        match self.fleet.store().active_workflow_owners().await {
            Ok(rows) => rows
                .iter()
                .find(|(w, _, _)| *w == id)
                .is_some_and(|(_, _, owner)| owner.is_none_or(|o| o == me)),
            Err(e) => {
                tracing::warn!(workflow = %id, "reading who runs a workflow: {e}");
                true
            }
        }
    }

    /// Claims workflow `id` and resumes it here.
    async fn adopt(&mut self, id: WorkflowId, view: &View) {
        let store = self.fleet.store().clone();
        match store.claim_workflow(id, view.me, &view.ids()).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(workflow = %id, "claiming a workflow: {e}");
                return;
            }
        }
        let wf = match store.get_workflow(id).await {
            Ok(wf) if wf.state.is_active() => wf,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(workflow = %id, "reading a claimed workflow: {e}");
                return;
            }
        };
        tracing::info!(workflow = %id, machine = %wf.machine, "taking over a workflow");
        metrics::counter!("rackboot_cluster_workflows_taken_over_total").increment(1);
        // Scheduled by the next tick's pass (within a second).
        self.resume(wf).await;
    }

    /// Forgets a workflow here without writing it (its tasks stop): the
    /// store has it as last written, and another member runs it.
    fn drop_workflow(&mut self, id: WorkflowId) {
        if let Some(a) = self.active.remove(&id) {
            self.by_machine.remove(&a.wf.machine);
            for t in a.tasks.values() {
                t.abort();
            }
        }
    }

    /// Drops the workflows whose writes were refused.
    pub(super) fn drop_fenced(&mut self) {
        for id in std::mem::take(&mut self.own.fenced) {
            self.drop_workflow(id);
        }
    }

    /// True when `id`'s last write was refused: act on nothing of it.
    pub(super) fn fenced(&self, id: WorkflowId) -> bool {
        self.own.fenced.contains(&id)
    }

    /// Notes a failed write of workflow `id`; true when it was fenced.
    pub(super) fn note_write_error(&mut self, id: WorkflowId, e: &FleetError) -> bool {
        if is_fenced(e) {
            tracing::warn!(workflow = %id, "another server runs this workflow; dropping it here");
            self.own.fenced.insert(id);
            return true;
        }
        false
    }

    /// A workflow just accepted for a machine another member owns: released
    /// to it (it claims it from the change feed). True when released.
    pub(super) async fn hand_over(&mut self, wf: &Workflow, machine: &Machine) -> bool {
        let Some(cluster) = self.cluster() else {
            return false;
        };
        let view = cluster.view();
        if view.owns(machine.id) {
            return false;
        }
        if let Err(e) = self.fleet.store().release_workflow(wf.id, view.me).await {
            // Kept here: this server runs it until the owner takes it.
            tracing::warn!(workflow = %wf.id, "handing a workflow to its machine's owner: {e}");
            return false;
        }
        tracing::info!(
            workflow = %wf.id,
            machine = %machine.name,
            owner = ?view.owner_of(machine.id),
            "workflow handed to the server that owns the machine"
        );
        true
    }
}
