//! PostgreSQL: what several servers on one database need. The change feed
//! (LISTEN on the channel the triggers of migration 0007 NOTIFY), cluster
//! membership by heartbeat rows, workflow claims, and conditional lease
//! writes so two servers never give one address to two clients.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rackboot_core::{Lease, LeaseState, MachineId, WorkflowId};
use sqlx::Row;
use sqlx::postgres::PgListener;

use crate::postgres::PgStore;
use crate::{Change, ChangeFeed, ClaimRefused, Member, Result, backend, dedup_leases, truncate_ms};

/// The channel the triggers notify of rows the snapshots depend on.
const CHANNEL: &str = "rackboot_changes";
/// The channel of DHCP lease writes.
const LEASE_CHANNEL: &str = "rackboot_leases";
/// Changes buffered for a slow reader before the feed waits on it.
const FEED_BUFFER: usize = 65_536;
/// A member's row is deleted once it has been dead this many times longer
/// than the dead-after interval (it is ignored from the first).
const FORGET_AFTER_DEAD: u32 = 60;
/// How often a change feed that lost the database tries to listen again.
const RECONNECT_EVERY: Duration = Duration::from_millis(200);

/// One notification's payload, as the triggers build it.
#[derive(Debug, serde::Deserialize)]
struct Payload {
    t: String,
    #[serde(default)]
    id: Option<uuid::Uuid>,
    #[serde(default)]
    machine: Option<uuid::Uuid>,
    #[serde(default)]
    src: Option<String>,
    #[serde(default)]
    lease: Option<Lease>,
}

/// The change a payload names; `None` for this process's own writes and for
/// payloads it does not know (a newer server's).
pub(crate) fn change_of(payload: &str, own_origin: &str) -> Option<Change> {
    let p: Payload = serde_json::from_str(payload).ok()?;
    if p.src.as_deref() == Some(own_origin) {
        return None;
    }
    match (p.t.as_str(), p.id, p.machine) {
        ("machine", Some(id), _) => Some(Change::Machine(id)),
        ("agent_session", Some(id), _) => Some(Change::AgentSession(id)),
        ("workflow", Some(id), Some(machine)) => Some(Change::Workflow { id, machine }),
        ("catalog", _, _) => Some(Change::Catalog),
        ("members", _, _) => Some(Change::Members),
        ("lease", _, _) => p.lease.map(Change::Lease),
        _ => None,
    }
}

/// A new connection that listens on `channel`.
async fn listen_again(pool: &sqlx::PgPool, channel: &str) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

fn member_from_row(row: &sqlx::postgres::PgRow) -> Result<Member> {
    let get = |e| backend("decoding a cluster member row")(e);
    Ok(Member {
        id: row.try_get("id").map_err(get)?,
        name: row.try_get("name").map_err(get)?,
        api_url: row.try_get("api_url").map_err(get)?,
        started_at: row.try_get("started_at").map_err(get)?,
        heartbeat_at: row.try_get("heartbeat_at").map_err(get)?,
    })
}

impl PgStore {
    pub(crate) async fn change_feed_impl(&self) -> Result<ChangeFeed> {
        self.feed(CHANNEL).await
    }

    pub(crate) async fn lease_feed_impl(&self) -> Result<ChangeFeed> {
        self.feed(LEASE_CHANNEL).await
    }

    async fn feed(&self, channel: &str) -> Result<ChangeFeed> {
        let ctx = "listening for changes";
        let mut listener = PgListener::connect_with(self.pool())
            .await
            .map_err(backend(ctx))?;
        listener.listen(channel).await.map_err(backend(ctx))?;
        let (tx, rx) = tokio::sync::mpsc::channel(FEED_BUFFER);
        let origin = self.origin().to_string();
        let pool = self.pool().clone();
        let channel = channel.to_string();
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    () = tx.closed() => return,
                    r = listener.try_recv() => r,
                };
                let change = match received {
                    Ok(Some(n)) => match change_of(n.payload(), &origin) {
                        Some(c) => c,
                        None => continue,
                    },
                    // The connection was lost and is back: what was sent in
                    // between is gone.
                    Ok(None) => Change::Resync,
                    // The database is away. Resync only once listening
                    // again: a resync read before the LISTEN would miss the
                    // writes committed between the two until the next gap.
                    Err(e) => {
                        tracing::warn!(error = %e, "change feed: lost the database; reconnecting");
                        listener = loop {
                            tokio::select! {
                                () = tx.closed() => return,
                                () = tokio::time::sleep(RECONNECT_EVERY) => {}
                            }
                            match listen_again(&pool, &channel).await {
                                Ok(l) => break l,
                                Err(e) => {
                                    tracing::debug!(error = %e, "change feed: still no database")
                                }
                            }
                        };
                        tracing::info!(channel, "change feed: listening again; resyncing");
                        Change::Resync
                    }
                };
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        });
        Ok(ChangeFeed::new(rx))
    }

    pub(crate) async fn member_heartbeat_impl(
        &self,
        me: &Member,
        dead_after: Duration,
    ) -> Result<Vec<Member>> {
        let ctx = "recording a cluster heartbeat";
        let dead_secs = dead_after.as_secs_f64();
        sqlx::query(
            "INSERT INTO cluster_members (id, name, api_url, started_at, heartbeat_at) \
             VALUES ($1, $2, $3, $4, now()) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, api_url = excluded.api_url, \
             heartbeat_at = now()",
        )
        .bind(me.id)
        .bind(&me.name)
        .bind(&me.api_url)
        .bind(truncate_ms(me.started_at))
        .execute(self.pool())
        .await
        .map_err(backend(ctx))?;
        // Long-dead rows go (a DELETE that finds none notifies nothing: the
        // trigger is per row).
        sqlx::query(
            "DELETE FROM cluster_members WHERE heartbeat_at < now() - make_interval(secs => $1)",
        )
        .bind(dead_secs * f64::from(FORGET_AFTER_DEAD))
        .execute(self.pool())
        .await
        .map_err(backend(ctx))?;
        sqlx::query(
            "SELECT id, name, api_url, started_at, heartbeat_at FROM cluster_members \
             WHERE heartbeat_at > now() - make_interval(secs => $1) ORDER BY id",
        )
        .bind(dead_secs)
        .fetch_all(self.pool())
        .await
        .map_err(backend(ctx))?
        .iter()
        .map(member_from_row)
        .collect()
    }

    pub(crate) async fn member_leave_impl(&self, id: uuid::Uuid) -> Result<()> {
        sqlx::query("DELETE FROM cluster_members WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(backend("leaving the cluster"))?;
        Ok(())
    }

    pub(crate) async fn claim_workflow_impl(
        &self,
        id: WorkflowId,
        owner: uuid::Uuid,
        live: &[uuid::Uuid],
    ) -> Result<bool> {
        let claimed = sqlx::query(
            "UPDATE workflows SET owner = $2 WHERE id = $1 AND state IN ('queued', 'running') \
             AND (owner IS NULL OR owner = $2 OR NOT (owner = ANY($3)))",
        )
        .bind(id)
        .bind(owner)
        .bind(live)
        .execute(self.pool())
        .await
        .map_err(backend("claiming a workflow"))?;
        Ok(claimed.rows_affected() == 1)
    }

    pub(crate) async fn release_workflow_impl(
        &self,
        id: WorkflowId,
        owner: uuid::Uuid,
    ) -> Result<()> {
        sqlx::query("UPDATE workflows SET owner = NULL WHERE id = $1 AND owner = $2")
            .bind(id)
            .bind(owner)
            .execute(self.pool())
            .await
            .map_err(backend("releasing a workflow"))?;
        Ok(())
    }

    pub(crate) async fn active_workflow_owners_impl(
        &self,
    ) -> Result<Vec<(WorkflowId, MachineId, Option<uuid::Uuid>)>> {
        sqlx::query(
            "SELECT id, machine_id, owner FROM workflows WHERE state IN ('queued', 'running') \
             ORDER BY created_at, id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(backend("listing active workflows"))?
        .iter()
        .map(|row| {
            let get = |e| backend("decoding a workflow row")(e);
            Ok((
                row.try_get("id").map_err(get)?,
                row.try_get("machine_id").map_err(get)?,
                row.try_get("owner").map_err(get)?,
            ))
        })
        .collect()
    }

    pub(crate) async fn claim_leases_impl(&self, leases: &[Lease]) -> Result<Vec<ClaimRefused>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let leases = dedup_leases(leases);
        let n = leases.len();
        let mut ip = Vec::with_capacity(n);
        let mut mac = Vec::with_capacity(n);
        let mut client_id = Vec::with_capacity(n);
        let mut hostname = Vec::with_capacity(n);
        let mut state = Vec::with_capacity(n);
        let mut expires_at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
        let mut subnet = Vec::with_capacity(n);
        let mut updated_at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
        for l in &leases {
            ip.push(l.ip.to_string());
            mac.push(l.mac.map(|m| m.to_string()));
            client_id.push(l.client_id.clone());
            hostname.push(l.hostname.clone());
            state.push(l.state.as_str());
            expires_at.push(truncate_ms(l.expires_at));
            subnet.push(l.subnet.clone());
            updated_at.push(truncate_ms(l.updated_at));
        }
        // One statement (one round trip), atomic; the row lock on an
        // address orders servers claiming it at once.
        // - `claim`: an offer or binding for a client (mac and client id)
        //   that holds another unexpired binding, or for an offer another
        //   unexpired offer, is not written: the client keeps one address.
        //   Rows this batch also writes are judged by what it writes (a
        //   server moving a client ends its old lease in the same batch).
        // - the upsert: a row is overwritten only when its address is free
        //   (expired, released) or held by the same client (an offer
        //   withdrawn, written as expired, ends only an offer: never a
        //   binding another server made meanwhile); a decline (which grants
        //   nothing, and blocks the address for everyone) always is.
        // - `superseded`: a binding written ends the client's offers of
        //   other addresses (it took this one; they go back to the pool).
        let written: Vec<String> = sqlx::query_scalar(
            "WITH claim AS ( \
               SELECT t.ip::inet AS ip, t.mac, t.client_id, t.hostname, t.state, t.expires_at, \
                      t.subnet, t.updated_at \
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                           $6::timestamptz[], $7::text[], $8::timestamptz[]) \
                    AS t(ip, mac, client_id, hostname, state, expires_at, subnet, updated_at) \
               WHERE t.mac IS NULL OR t.state NOT IN ('offered', 'bound') OR NOT EXISTS ( \
                 SELECT 1 FROM leases o WHERE o.mac = t.mac \
                   AND o.client_id IS NOT DISTINCT FROM t.client_id \
                   AND o.ip <> t.ip::inet AND o.expires_at > now() \
                   AND NOT (o.ip = ANY($1::inet[])) \
                   AND (o.state = 'bound' OR (o.state = 'offered' AND t.state = 'offered')))), \
             written AS ( \
               INSERT INTO leases (ip, mac, client_id, hostname, state, expires_at, subnet, updated_at) \
               SELECT ip, mac, client_id, hostname, state, expires_at, subnet, updated_at FROM claim \
               ON CONFLICT (ip) DO UPDATE SET mac = excluded.mac, client_id = excluded.client_id, \
               hostname = excluded.hostname, state = excluded.state, expires_at = excluded.expires_at, \
               subnet = excluded.subnet, updated_at = excluded.updated_at \
               WHERE excluded.state = 'declined' \
                  OR leases.expires_at <= now() \
                  OR leases.state IN ('released', 'expired') \
                  OR (leases.state <> 'declined' AND leases.mac IS NOT DISTINCT FROM excluded.mac \
                      AND leases.client_id IS NOT DISTINCT FROM excluded.client_id \
                      AND (excluded.state <> 'expired' OR leases.state = 'offered')) \
               RETURNING ip, mac, client_id, state), \
             superseded AS ( \
               UPDATE leases o SET state = 'expired', expires_at = now(), updated_at = now() \
               FROM written w \
               WHERE w.state = 'bound' AND o.mac = w.mac \
                 AND o.client_id IS NOT DISTINCT FROM w.client_id \
                 AND o.ip <> w.ip AND o.state = 'offered' AND o.expires_at > now() \
                 AND NOT (o.ip = ANY($1::inet[])) \
               RETURNING o.ip) \
             SELECT host(ip) FROM written",
        )
        .bind(ip)
        .bind(mac)
        .bind(client_id)
        .bind(hostname)
        .bind(state)
        .bind(expires_at)
        .bind(subnet)
        .bind(updated_at)
        .fetch_all(self.pool())
        .await
        .map_err(backend("claiming leases"))?;
        if written.len() == n {
            return Ok(Vec::new());
        }
        let written: std::collections::HashSet<String> = written.into_iter().collect();
        let refused: Vec<&Lease> = leases
            .iter()
            .copied()
            .filter(|l| !written.contains(&l.ip.to_string()))
            .collect();
        let refused_ips: Vec<String> = refused.iter().map(|l| l.ip.to_string()).collect();
        let refused_macs: Vec<String> = refused
            .iter()
            .filter_map(|l| l.mac.map(|m| m.to_string()))
            .collect();
        // What is in their way now: the rows of the refused addresses, and
        // the refused clients' live leases. The engine learns them.
        let now = Utc::now();
        let found: Vec<Lease> = sqlx::query(
            "SELECT host(l.ip) AS ip, l.mac, l.client_id, l.hostname, l.state, l.expires_at, \
             l.subnet, l.updated_at FROM leases l WHERE l.ip = ANY($1::inet[]) \
             OR (l.mac = ANY($2::text[]) AND l.state IN ('offered', 'bound') \
                 AND l.expires_at > now()) \
             ORDER BY l.ip",
        )
        .bind(refused_ips)
        .bind(refused_macs)
        .fetch_all(self.pool())
        .await
        .map_err(backend("reading refused leases"))?
        .iter()
        .map(Self::lease_from_row)
        .collect::<Result<_>>()?;
        Ok(refused
            .into_iter()
            .map(|claim| ClaimRefused {
                ip: claim.ip,
                holder: holder_of(claim, &found, now),
            })
            .collect())
    }
}

/// What stands in the way of a refused `claim`, among `found` (the rows of
/// the refused addresses and the refused clients' live leases): another
/// client's lease (or a decline) of its address, else the same client's
/// lease of another address (a binding first, then the newest).
fn holder_of(claim: &Lease, found: &[Lease], now: DateTime<Utc>) -> Option<Lease> {
    let same_client = |l: &Lease| l.mac == claim.mac && l.client_id == claim.client_id;
    let at_address = found.iter().find(|l| l.ip == claim.ip);
    if let Some(l) = at_address
        && (l.state == LeaseState::Declined || !same_client(l))
    {
        return Some(l.clone());
    }
    let elsewhere = found
        .iter()
        .filter(|l| {
            l.ip != claim.ip
                && claim.mac.is_some()
                && same_client(l)
                && l.expires_at > now
                && matches!(l.state, LeaseState::Bound | LeaseState::Offered)
        })
        .max_by_key(|l| (l.state == LeaseState::Bound, l.updated_at));
    elsewhere.or(at_address).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_their_change_and_own_writes_are_skipped() {
        let id = uuid::Uuid::new_v4();
        let m = uuid::Uuid::new_v4();
        for (payload, want) in [
            (
                format!(r#"{{"t": "machine", "id": "{id}", "src": "rackboot/b"}}"#),
                Some(Change::Machine(id)),
            ),
            (
                format!(r#"{{"t": "machine", "id": "{id}", "src": "rackboot/a"}}"#),
                None,
            ),
            (
                format!(r#"{{"t": "agent_session", "id": "{id}", "src": null}}"#),
                Some(Change::AgentSession(id)),
            ),
            (
                format!(r#"{{"t": "workflow", "id": "{id}", "machine": "{m}", "src": "x"}}"#),
                Some(Change::Workflow { id, machine: m }),
            ),
            (r#"{"t": "catalog", "src": "x"}"#.to_string(), Some(Change::Catalog)),
            (r#"{"t": "members", "src": "x"}"#.to_string(), Some(Change::Members)),
            (
                r#"{"t": "lease", "src": "x", "lease": {"ip": "10.0.0.7", "mac": "52:54:00:00:00:07",
                    "client_id": null, "hostname": null, "state": "offered",
                    "expires_at": "2026-12-07T13:14:15.123+00:00", "subnet": "lab",
                    "updated_at": "2026-12-07T13:13:15.123+00:00"}}"#
                    .to_string(),
                Some(Change::Lease(Lease {
                    ip: "10.0.0.7".parse().unwrap(),
                    mac: Some("52:54:00:00:00:07".parse().unwrap()),
                    client_id: None,
                    hostname: None,
                    state: rackboot_core::LeaseState::Offered,
                    expires_at: "2026-12-07T13:14:15.123Z".parse().unwrap(),
                    subnet: "lab".into(),
                    updated_at: "2026-12-07T13:13:15.123Z".parse().unwrap(),
                })),
            ),
            (r#"{"t": "toaster", "src": "x"}"#.to_string(), None),
            ("not json".to_string(), None),
        ] {
            assert_eq!(change_of(&payload, "rackboot/a"), want, "{payload}");
        }
    }
}
