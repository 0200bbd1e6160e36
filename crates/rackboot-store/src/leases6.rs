//! DHCPv6 leases: the type and both backends' reads and writes. Like the DHCPv4
//! leases, keyed by address; a batch is written in one transaction and is durable
//! when `put_leases6` returns (the DHCPv6 server commits before it replies).

use std::net::Ipv6Addr;

use chrono::{DateTime, Utc};
use rackboot_core::{LeaseState, MacAddr};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::sqlite::{Batched, Insert, chunk_sizes};
use crate::{PgStore, Result, SqliteStore, StoreError, backend, codec, truncate_ms};

/// One IPv6 address's lease (an IA_NA address, RFC 8415).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease6 {
    pub ip: Ipv6Addr,
    /// The client's DUID, lowercase hex without separators.
    pub duid: String,
    /// The identity association the address belongs to.
    pub iaid: u32,
    /// The client's link-layer address when known (DUID-LL/LLT, the relay's
    /// RFC 6939 option, or an EUI-64 link-local source).
    pub mac: Option<MacAddr>,
    pub hostname: Option<String>,
    pub state: LeaseState,
    /// End of the valid lifetime (or of the hold, for offered and declined).
    pub expires_at: DateTime<Utc>,
    pub subnet: String,
    pub updated_at: DateTime<Utc>,
}

/// The last lease per address, in first-seen position (one upsert may not touch
/// a row twice).
fn dedup(leases: &[Lease6]) -> Vec<&Lease6> {
    let mut out: Vec<&Lease6> = Vec::with_capacity(leases.len());
    let mut seen = std::collections::HashMap::with_capacity(leases.len());
    for lease in leases {
        match seen.get(&lease.ip) {
            Some(&i) => out[i] = lease,
            None => {
                seen.insert(lease.ip, out.len());
                out.push(lease);
            }
        }
    }
    out
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt {
        table: "leases6",
        detail,
    }
}

fn ipv6(text: &str) -> Result<Ipv6Addr> {
    text.parse()
        .map_err(|e| corrupt(format!("ip {text:?}: {e}")))
}

fn iaid(value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(format!("iaid {value} out of range")))
}

fn mac(text: Option<String>) -> Result<Option<MacAddr>> {
    text.map(|m| codec::mac("leases6", &m)).transpose()
}

static LEASE6_UPSERT: Batched = Batched {
    head: "INSERT INTO leases6 (ip, duid, iaid, mac, hostname, state, expires_at, subnet, updated_at)",
    columns: 9,
    tail: "ON CONFLICT (ip) DO UPDATE SET duid = excluded.duid, iaid = excluded.iaid, \
     mac = excluded.mac, hostname = excluded.hostname, state = excluded.state, \
     expires_at = excluded.expires_at, subnet = excluded.subnet, updated_at = excluded.updated_at",
    texts: std::sync::OnceLock::new(),
};

fn sqlite_rows(sql: &'static str, chunk: &[&Lease6]) -> Insert {
    let mut q = sqlx::query(sql);
    for l in chunk {
        q = q
            .bind(l.ip.to_string())
            .bind(l.duid.clone())
            .bind(i64::from(l.iaid))
            .bind(l.mac.map(|m| m.to_string()))
            .bind(l.hostname.clone())
            .bind(l.state.as_str())
            .bind(codec::millis(l.expires_at))
            .bind(l.subnet.clone())
            .bind(codec::millis(l.updated_at));
    }
    q
}

impl SqliteStore {
    pub(crate) async fn put_leases6_impl(&self, leases: &[Lease6]) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let leases = dedup(leases);
        let mut tx = self.begin_write().await?;
        let mut rest = &leases[..];
        for size in chunk_sizes(leases.len()) {
            let (chunk, more) = rest.split_at(size);
            sqlite_rows(LEASE6_UPSERT.sql(size), chunk)
                .execute(&mut *tx)
                .await
                .map_err(backend("writing IPv6 leases"))?;
            rest = more;
        }
        tx.commit().await.map_err(backend("writing IPv6 leases"))
    }

    pub(crate) async fn list_leases6_impl(&self) -> Result<Vec<Lease6>> {
        let rows = sqlx::query("SELECT * FROM leases6")
            .fetch_all(self.reader())
            .await
            .map_err(backend("listing IPv6 leases"))?;
        let get = |e| backend("decoding an IPv6 lease row")(e);
        let mut leases = rows
            .iter()
            .map(|row| {
                Ok(Lease6 {
                    ip: ipv6(&row.try_get::<String, _>("ip").map_err(get)?)?,
                    duid: row.try_get("duid").map_err(get)?,
                    iaid: iaid(row.try_get("iaid").map_err(get)?)?,
                    mac: mac(row.try_get("mac").map_err(get)?)?,
                    hostname: row.try_get("hostname").map_err(get)?,
                    state: codec::lease_state(&row.try_get::<String, _>("state").map_err(get)?)?,
                    expires_at: codec::from_millis(
                        "leases6",
                        row.try_get("expires_at").map_err(get)?,
                    )?,
                    subnet: row.try_get("subnet").map_err(get)?,
                    updated_at: codec::from_millis(
                        "leases6",
                        row.try_get("updated_at").map_err(get)?,
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Text keys do not sort as addresses do.
        leases.sort_by_key(|l| l.ip);
        Ok(leases)
    }
}

impl PgStore {
    pub(crate) async fn put_leases6_impl(&self, leases: &[Lease6]) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let leases = dedup(leases);
        let n = leases.len();
        let mut ip = Vec::with_capacity(n);
        let mut duid = Vec::with_capacity(n);
        let mut iaid = Vec::with_capacity(n);
        let mut mac = Vec::with_capacity(n);
        let mut hostname = Vec::with_capacity(n);
        let mut state = Vec::with_capacity(n);
        let mut expires_at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
        let mut subnet = Vec::with_capacity(n);
        let mut updated_at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
        for l in leases {
            ip.push(l.ip.to_string());
            duid.push(l.duid.clone());
            iaid.push(i64::from(l.iaid));
            mac.push(l.mac.map(|m| m.to_string()));
            hostname.push(l.hostname.clone());
            state.push(l.state.as_str());
            expires_at.push(truncate_ms(l.expires_at));
            subnet.push(l.subnet.clone());
            updated_at.push(truncate_ms(l.updated_at));
        }
        // One statement: the batch commits or fails whole.
        sqlx::query(
            "INSERT INTO leases6 (ip, duid, iaid, mac, hostname, state, expires_at, subnet, updated_at) \
             SELECT ip::inet, duid, iaid, mac, hostname, state, expires_at, subnet, updated_at \
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], \
                         $7::timestamptz[], $8::text[], $9::timestamptz[]) \
                  AS t(ip, duid, iaid, mac, hostname, state, expires_at, subnet, updated_at) \
             ON CONFLICT (ip) DO UPDATE SET duid = excluded.duid, iaid = excluded.iaid, \
             mac = excluded.mac, hostname = excluded.hostname, state = excluded.state, \
             expires_at = excluded.expires_at, subnet = excluded.subnet, updated_at = excluded.updated_at",
        )
        .bind(ip)
        .bind(duid)
        .bind(iaid)
        .bind(mac)
        .bind(hostname)
        .bind(state)
        .bind(expires_at)
        .bind(subnet)
        .bind(updated_at)
        .execute(self.pool())
        .await
        .map_err(backend("writing IPv6 leases"))?;
        Ok(())
    }

    pub(crate) async fn list_leases6_impl(&self) -> Result<Vec<Lease6>> {
        let rows = sqlx::query(
            "SELECT host(l.ip) AS ip, l.duid, l.iaid, l.mac, l.hostname, l.state, l.expires_at, \
             l.subnet, l.updated_at FROM leases6 l ORDER BY l.ip",
        )
        .fetch_all(self.pool())
        .await
        .map_err(backend("listing IPv6 leases"))?;
        let get = |e| backend("decoding an IPv6 lease row")(e);
        rows.iter()
            .map(|row| {
                Ok(Lease6 {
                    ip: ipv6(&row.try_get::<String, _>("ip").map_err(get)?)?,
                    duid: row.try_get("duid").map_err(get)?,
                    iaid: iaid(row.try_get("iaid").map_err(get)?)?,
                    mac: mac(row.try_get("mac").map_err(get)?)?,
                    hostname: row.try_get("hostname").map_err(get)?,
                    state: codec::lease_state(&row.try_get::<String, _>("state").map_err(get)?)?,
                    expires_at: row.try_get("expires_at").map_err(get)?,
                    subnet: row.try_get("subnet").map_err(get)?,
                    updated_at: row.try_get("updated_at").map_err(get)?,
                })
            })
            .collect()
    }
}
