//! Following the writes of the other servers sharing the store: each change
//! the store's feed names is re-read into this server's snapshot (machines
//! and their pending installs, profiles and selectors, agent sessions), so a
//! write through one server is served by every other within milliseconds. A
//! gap in the feed, and a periodic timer as a safety net, re-read everything.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rackboot_core::MachineId;
use rackboot_store::{Change, StoreError};

use crate::Fleet;

/// Changes applied together at most (the rest wait for the next round).
const BATCH: usize = 4096;
/// Machines re-read in one store read.
const READ_CHUNK: usize = 1000;
/// Wait between re-reads of everything while they fail (the database is
/// away): short, so a snapshot is current soon after the database is back.
const STALE_RETRY: Duration = Duration::from_millis(250);

/// When to re-read everything again: `None` once a re-read worked.
fn retry_unless(current: bool) -> Option<tokio::time::Instant> {
    (!current).then(|| tokio::time::Instant::now() + STALE_RETRY)
}

/// Waits until `at`; forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What one round of changes asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Round {
    pub machines: Vec<MachineId>,
    pub catalog: bool,
    pub sessions: Vec<MachineId>,
    pub resync: bool,
    /// Passed on to the subscribers (the engine, the cluster).
    pub forward: Vec<Change>,
}

/// Folds a batch of changes into one round: each machine read once, the
/// catalog once; a resync covers everything read.
pub(crate) fn fold(changes: Vec<Change>) -> Round {
    let mut round = Round::default();
    let mut machines = HashSet::new();
    let mut sessions = HashSet::new();
    for c in changes {
        match c {
            Change::Machine(id) => {
                if machines.insert(id) {
                    round.machines.push(id);
                }
            }
            Change::AgentSession(id) => {
                if sessions.insert(id) {
                    round.sessions.push(id);
                }
            }
            Change::Catalog => round.catalog = true,
            Change::Resync => {
                round.resync = true;
                round.forward.push(Change::Resync);
            }
            Change::Workflow { .. } | Change::Members => round.forward.push(c),
            // The DHCP server follows leases itself.
            Change::Lease(_) => {}
        }
    }
    if round.resync {
        round.machines.clear();
        round.sessions.clear();
        round.catalog = false;
    }
    round
}

impl Fleet {
    /// Follows the store's change feed until `shutdown` (returns at once for
    /// a store without other writers: SQLite). Every `resync_every` it
    /// re-reads everything anyway. A lost feed is reopened (every second
    /// until it works), then everything is re-read.
    pub async fn follow_changes(
        self: Arc<Self>,
        resync_every: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut shutdown = std::pin::pin!(shutdown);
        // Set while the snapshot may miss writes because re-reading it failed
        // (the database was away): when to re-read again. A deadline rather
        // than a sleep started each round, so a stream of other changes
        // cannot put it off.
        let mut stale: Option<tokio::time::Instant> = None;
        let mut feed = match self.store().change_feed().await {
            Ok(Some(feed)) => feed,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the other servers' writes yet");
                loop {
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    if let Ok(Some(feed)) = self.store().change_feed().await {
                        stale = retry_unless(self.apply(fold(vec![Change::Resync])).await);
                        break feed;
                    }
                }
            }
        };
        let mut resync = tokio::time::interval(resync_every.max(Duration::from_secs(1)));
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        loop {
            let first = tokio::select! {
                () = &mut shutdown => return,
                _ = resync.tick() => Some(Change::Resync),
                () = sleep_until_some(stale) => Some(Change::Resync),
                c = feed.next() => c,
            };
            let Some(first) = first else {
                // The feed stopped: open another, then re-read everything.
                loop {
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    match self.store().change_feed().await {
                        Ok(Some(f)) => {
                            feed = f;
                            break;
                        }
                        Ok(None) => return,
                        Err(e) => tracing::warn!(error = %e, "reopening the change feed"),
                    }
                }
                stale = retry_unless(self.apply(fold(vec![Change::Resync])).await);
                continue;
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match feed.try_next() {
                    Some(c) => batch.push(c),
                    None => break,
                }
            }
            let round = fold(batch);
            let full = round.resync;
            let current = self.apply(round).await;
            // Only a full re-read that worked makes a stale snapshot current.
            if full || !current {
                stale = match (current, stale) {
                    (true, _) => None,
                    (false, Some(at)) if !full => Some(at),
                    (false, _) => retry_unless(false),
                };
            }
        }
    }

    /// Re-reads what a round names; on a failure, everything. False when
    /// that failed too (logged): the snapshot may miss writes until a
    /// re-read works.
    async fn apply(&self, round: Round) -> bool {
        let mut current = true;
        if let Err(e) = self.try_apply(&round).await {
            tracing::warn!(error = %e, "applying another server's change; re-reading everything");
            if let Err(e) = self.resync().await {
                tracing::warn!(error = %e, "re-reading everything failed; retrying");
                current = false;
            }
        }
        for c in round.forward {
            if c == Change::Members
                && let Some(cluster) = self.cluster()
            {
                cluster.poke();
            }
            // Nobody listening is fine.
            let _ = self.changes.send(c);
        }
        current
    }

    async fn try_apply(&self, round: &Round) -> Result<(), StoreError> {
        if round.resync {
            return self.resync().await;
        }
        for chunk in round.machines.chunks(READ_CHUNK) {
            self.inventory().reload_machines(chunk).await?;
        }
        if round.catalog {
            self.inventory().reload_catalog().await?;
        }
        for machine in &round.sessions {
            let session = self.store().get_agent_session(*machine).await?;
            self.agents.refresh(*machine, session);
        }
        Ok(())
    }

    /// Re-reads the whole snapshot and every agent session.
    async fn resync(&self) -> Result<(), StoreError> {
        metrics::counter!("rackboot_cluster_resyncs_total").increment(1);
        self.inventory().reload().await?;
        self.agents
            .replace_all(self.store().list_agent_sessions().await?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_folds_into_one_read_per_thing() {
        let (a, b) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
        let wf = Change::Workflow {
            id: uuid::Uuid::from_u128(9),
            machine: a,
        };
        let round = fold(vec![
            Change::Machine(a),
            Change::Catalog,
            Change::Machine(b),
            Change::Machine(a),
            Change::AgentSession(b),
            Change::AgentSession(b),
            wf.clone(),
            Change::Catalog,
            Change::Members,
        ]);
        assert_eq!(
            round,
            Round {
                machines: vec![a, b],
                catalog: true,
                sessions: vec![b],
                resync: false,
                forward: vec![wf.clone(), Change::Members],
            }
        );
        // A resync covers the reads, not what is passed on.
        let round = fold(vec![Change::Machine(a), Change::Resync, wf.clone()]);
        assert_eq!(
            round,
            Round {
                machines: vec![],
                catalog: false,
                sessions: vec![],
                resync: true,
                forward: vec![Change::Resync, wf],
            }
        );
    }
}
