//! Several servers on one PostgreSQL database: who is alive, and which live
//! server owns each machine (its BMC polling, its workflows).
//!
//! Each server upserts a heartbeat row every `heartbeat` (the database's
//! clock); one whose row is older than `dead_after` is dead. A machine's
//! owner is the live server with the highest rendezvous score for the
//! machine's id, so when a server dies only its machines move, spread over
//! the survivors, and when it comes back they move back.
//!
//! A server that cannot record its heartbeat for a while stops owning
//! anything before the others declare it dead (it acts on nothing it might
//! have lost), and when it records one again after that long it comes back
//! as a new incarnation (a new member id): rows claimed by its old id are
//! then another member's to take, and writes under the old id are refused
//! by the store (fencing), so it cannot act twice on what moved.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rackboot_store::{Member, Store};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// How this server joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// For people (`rackboot cluster` and logs): a host name.
    pub name: String,
    /// Where the other servers reach this one's API and agent endpoints.
    pub api_url: String,
    /// Time between two heartbeats.
    pub heartbeat: Duration,
    /// A server whose last heartbeat is older is dead.
    pub dead_after: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: "rackboot".into(),
            api_url: String::new(),
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(5),
        }
    }
}

/// What this server knows of the cluster at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// This server's incarnation.
    pub me: Uuid,
    /// The live members, by id (this server among them when healthy).
    pub members: Vec<Member>,
    /// False while this server's heartbeat is not being recorded: it owns
    /// nothing then.
    pub healthy: bool,
    /// Bumped by every change of the above.
    pub generation: u64,
}

impl View {
    /// The live members' ids, sorted.
    pub fn ids(&self) -> Vec<Uuid> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// The live server that owns `machine`; `None` when this server is not
    /// healthy (it cannot tell) or nobody is live.
    pub fn owner_of(&self, machine: Uuid) -> Option<Uuid> {
        if !self.healthy {
            return None;
        }
        rendezvous_owner(machine, self.members.iter().map(|m| m.id))
    }

    pub fn owns(&self, machine: Uuid) -> bool {
        self.owner_of(machine) == Some(self.me)
    }

    pub fn member(&self, id: Uuid) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// SplitMix64's finaliser: a fast, well-mixed, stable 64-bit hash step (the
/// same on every server and every build, unlike std's hashers).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rendezvous (highest random weight) score of `member` for `machine`.
pub fn score(member: Uuid, machine: Uuid) -> u64 {
    let (m_hi, m_lo) = member.as_u64_pair();
    let (x_hi, x_lo) = machine.as_u64_pair();
    mix(mix(mix(m_hi ^ mix(x_lo)) ^ m_lo) ^ x_hi)
}

/// The member with the highest score for `machine` (ties: the larger id).
pub fn rendezvous_owner(machine: Uuid, members: impl IntoIterator<Item = Uuid>) -> Option<Uuid> {
    members.into_iter().max_by_key(|&m| (score(m, machine), m))
}

/// This server's membership: its heartbeat task and the current [`View`].
pub struct Cluster {
    store: Arc<dyn Store>,
    config: ClusterConfig,
    started_at: chrono::DateTime<Utc>,
    view: watch::Sender<View>,
    /// When the last heartbeat was recorded.
    last_ok: Mutex<Option<Instant>>,
    /// Asks the heartbeat task for a beat now (a member joined or left).
    poke: Notify,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("config", &self.config)
            .field("view", &*self.view.borrow())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A member that owns nothing until its first heartbeat is recorded
    /// ([`Cluster::heartbeat`], or [`Cluster::run`]).
    pub fn new(store: Arc<dyn Store>, config: ClusterConfig) -> Arc<Cluster> {
        let me = Uuid::new_v4();
        store.set_workflow_owner(Some(me));
        let (view, _) = watch::channel(View {
            me,
            members: Vec::new(),
            healthy: false,
            generation: 0,
        });
        Arc::new(Cluster {
            store,
            config,
            started_at: Utc::now(),
            view,
            last_ok: Mutex::new(None),
            poke: Notify::new(),
        })
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// Wakes on every change of the view.
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    pub fn me(&self) -> Uuid {
        self.view.borrow().me
    }

    pub fn owns(&self, machine: Uuid) -> bool {
        self.view.borrow().owns(machine)
    }

    /// Asks for a heartbeat now (the membership changed).
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Records one heartbeat and updates the view. A server whose last
    /// recorded heartbeat is older than the dead-after interval comes back
    /// as a new incarnation.
    pub async fn heartbeat(&self) -> Result<(), rackboot_store::StoreError> {
        let now = Instant::now();
        let lapsed = {
            let last = self.last_ok.lock().unwrap_or_else(|e| e.into_inner());
            last.is_some_and(|t| now.duration_since(t) >= self.self_stale())
        };
        let mut me = self.me();
        if lapsed {
            let old = me;
            me = Uuid::new_v4();
            // Writes under the old id are refused from now on (they would
            // be anyway once another member claims what it ran).
            self.store.set_workflow_owner(Some(me));
            if let Err(e) = self.store.member_leave(old).await {
                tracing::debug!(error = %e, "removing the lapsed incarnation's row");
            }
            tracing::warn!(
                old = %old,
                new = %me,
                "this server's heartbeat lapsed: rejoining the cluster as a new member"
            );
        }
        let row = Member {
            id: me,
            name: self.config.name.clone(),
            api_url: self.config.api_url.clone(),
            started_at: self.started_at,
            heartbeat_at: Utc::now(),
        };
        let started = Instant::now();
        let members = self
            .store
            .member_heartbeat(&row, self.config.dead_after)
            .await?;
        // A beat that took longer than the margin may already have been too
        // late for the others: count from when it was sent.
        *self.last_ok.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
        self.publish(me, members, true);
        Ok(())
    }

    /// How long without a recorded heartbeat this server stops owning
    /// anything: a heartbeat interval before the others declare it dead.
    fn self_stale(&self) -> Duration {
        self.config
            .dead_after
            .saturating_sub(self.config.heartbeat)
            .max(self.config.heartbeat)
    }

    fn publish(&self, me: Uuid, members: Vec<Member>, healthy: bool) {
        let live = if healthy { members.len() } else { 0 };
        metrics::gauge!("rackboot_cluster_members").set(live as f64);
        self.view.send_if_modified(|v| {
            let same = v.me == me
                && v.healthy == healthy
                && v.members
                    .iter()
                    .map(|m| (m.id, &m.api_url))
                    .eq(members.iter().map(|m| (m.id, &m.api_url)));
            if same {
                // Heartbeat times move every beat; watchers need not wake.
                v.members = members;
                return false;
            }
            let lost: Vec<&str> = v
                .members
                .iter()
                .filter(|m| !members.iter().any(|n| n.id == m.id))
                .map(|m| m.name.as_str())
                .collect();
            let joined: Vec<&str> = members
                .iter()
                .filter(|m| !v.members.iter().any(|o| o.id == m.id))
                .map(|m| m.name.as_str())
                .collect();
            tracing::info!(
                members = members.len(),
                ?joined,
                ?lost,
                healthy,
                "cluster membership changed"
            );
            v.me = me;
            v.members = members;
            v.healthy = healthy;
            v.generation += 1;
            true
        });
    }

    /// Heartbeats until `shutdown`, then leaves (so the others take this
    /// server's machines at once rather than after the dead-after interval).
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => {}
                () = self.poke.notified() => {}
            }
            if let Err(e) = self.heartbeat().await {
                tracing::warn!(error = %e, "cluster heartbeat failed");
                let stale = self
                    .last_ok
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none_or(|t| t.elapsed() >= self.self_stale());
                if stale {
                    let view = self.view();
                    self.publish(view.me, view.members, false);
                }
            }
        }
        let me = self.me();
        if let Err(e) = self.store.member_leave(me).await {
            tracing::warn!(error = %e, "leaving the cluster");
        }
        let view = self.view();
        self.publish(me, view.members, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n)
            .map(|i| Uuid::from_u128(0x1000 + i as u128 * 7919))
            .collect()
    }

    #[test]
    fn scores_are_stable_across_builds() {
        // Fixed values: every server of a cluster must compute the same.
        let m = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let x = Uuid::from_u128(0xfedc_ba98_7654_3210_fedc_ba98_7654_3210);
        assert_eq!(score(m, x), score(m, x));
        assert_ne!(score(m, x), score(x, m));
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 0x5692_161d_100b_05e5);
    }

    #[test]
    fn machines_spread_evenly_and_only_a_dead_members_share_moves() {
        let members = ids(3);
        let machines: Vec<Uuid> = (0..30_000u128)
            .map(|i| Uuid::from_u128(i * 104_729 + 1))
            .collect();
        let owner = |ms: &[Uuid], x: Uuid| rendezvous_owner(x, ms.iter().copied()).unwrap();
        let before: Vec<Uuid> = machines.iter().map(|&x| owner(&members, x)).collect();
        for m in &members {
            let share = before.iter().filter(|o| *o == m).count();
            assert!((9_000..11_000).contains(&share), "{m}: {share} of 30,000");
        }
        // members[1] dies: its machines move, spread over both survivors;
        // nobody else's move.
        let survivors = [members[0], members[2]];
        let mut moved_to = [0usize; 2];
        for (x, was) in machines.iter().zip(&before) {
            let now = owner(&survivors, *x);
            if *was == members[1] {
                moved_to[usize::from(now == members[2])] += 1;
            } else {
                assert_eq!(now, *was, "{x} moved though its owner lives");
            }
        }
        assert!(moved_to.iter().all(|&n| n > 4_000), "{moved_to:?}");
        // It comes back: every machine returns to its first owner.
        for (x, was) in machines.iter().zip(&before) {
            assert_eq!(owner(&members, *x), *was);
        }
        assert_eq!(rendezvous_owner(machines[0], []), None);
    }

    #[test]
    fn an_unhealthy_server_owns_nothing() {
        let me = Uuid::from_u128(1);
        let member = |id: Uuid| Member {
            id,
            name: "x".into(),
            api_url: String::new(),
            started_at: Utc::now(),
            heartbeat_at: Utc::now(),
        };
        let mut view = View {
            me,
            members: vec![member(me)],
            healthy: true,
            generation: 1,
        };
        let x = Uuid::from_u128(42);
        assert!(view.owns(x));
        view.healthy = false;
        assert!(!view.owns(x));
        assert_eq!(view.owner_of(x), None);
    }
}
