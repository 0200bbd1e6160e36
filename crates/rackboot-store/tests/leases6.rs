//! DHCPv6 leases on every backend: SQLite file, SQLite in memory, PostgreSQL
//! (a fresh database per test; see `common`), and surviving a reopen.

mod common;

use std::net::Ipv6Addr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rackboot_core::LeaseState;
use rackboot_store::{Lease6, Store, open, truncate_ms};

use common::TestDb;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 123_456_789).unwrap()
}

fn lease(ip: &str, duid: &str, iaid: u32, state: LeaseState) -> Lease6 {
    Lease6 {
        ip: ip.parse().unwrap(),
        duid: duid.into(),
        iaid,
        mac: Some("52:54:00:66:00:01".parse().unwrap()),
        hostname: None,
        state,
        expires_at: at(3600),
        subnet: "prov6".into(),
        updated_at: at(0),
    }
}

/// What a store gives back: timestamps truncated to milliseconds.
fn stored(mut l: Lease6) -> Lease6 {
    l.expires_at = truncate_ms(l.expires_at);
    l.updated_at = truncate_ms(l.updated_at);
    l
}

async fn upsert_and_list(store: Arc<dyn Store>) {
    store.put_leases6(&[]).await.unwrap();
    assert_eq!(store.list_leases6().await.unwrap(), []);
    let a = lease("2001:db8:77::10", "000100013", 1, LeaseState::Bound);
    let mut b = lease(
        "2001:db8:77::2",
        "0003000152540066",
        u32::MAX,
        LeaseState::Offered,
    );
    b.mac = None;
    b.hostname = Some("node2".into());
    let c = lease("2001:db8:77::1:0", "00040011", 7, LeaseState::Declined);
    store
        .put_leases6(&[a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    // Address order, not text order ("::10" after "::2").
    assert_eq!(
        store.list_leases6().await.unwrap(),
        vec![stored(b.clone()), stored(a.clone()), stored(c.clone())]
    );
    // Upsert; within one batch the last write of an address wins.
    let mut b2 = b.clone();
    b2.state = LeaseState::Bound;
    let mut b3 = b2.clone();
    b3.expires_at = at(7200);
    let mut a2 = a.clone();
    a2.state = LeaseState::Released;
    a2.updated_at = at(10);
    store
        .put_leases6(&[b2, a2.clone(), b3.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.list_leases6().await.unwrap(),
        vec![stored(b3), stored(a2), stored(c)]
    );
    // The DHCPv4 table is separate.
    assert_eq!(store.list_leases().await.unwrap(), []);
}

/// A group commit of 1,000 leases in one call (chunks of 256..1 on SQLite).
async fn batch_of_1000(store: Arc<dyn Store>) {
    let leases: Vec<Lease6> = (0..1000u32)
        .map(|i| {
            let mut l = lease(
                &Ipv6Addr::from(0x2001_0db8_0077_0000_0000_0000_0001_0000u128 + u128::from(i))
                    .to_string(),
                &format!("0001{i:08x}"),
                i,
                LeaseState::Bound,
            );
            l.expires_at = at(i64::from(i));
            l
        })
        .collect();
    store.put_leases6(&leases).await.unwrap();
    let got = store.list_leases6().await.unwrap();
    assert_eq!(got.len(), 1000);
    assert_eq!(got, leases.into_iter().map(stored).collect::<Vec<_>>());
}

async fn reopen_keeps_leases(db: &TestDb) {
    let l = lease("2001:db8:77::100", "00010001aa", 3, LeaseState::Bound);
    db.store
        .put_leases6(std::slice::from_ref(&l))
        .await
        .unwrap();
    let again = open(&db.url).await.unwrap();
    assert_eq!(again.list_leases6().await.unwrap(), vec![stored(l)]);
}

macro_rules! backend_suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn upsert_and_list() {
                if !common::backend_available(stringify!($backend)) {
                    return;
                }
                let db = $open.await;
                super::upsert_and_list(db.store.clone()).await;
                db.finish().await;
            }

            #[tokio::test]
            async fn batch_of_1000() {
                if !common::backend_available(stringify!($backend)) {
                    return;
                }
                let db = $open.await;
                super::batch_of_1000(db.store.clone()).await;
                db.finish().await;
            }
        }
    };
}

backend_suite!(sqlite, TestDb::sqlite_file());
backend_suite!(sqlite_memory, TestDb::sqlite_memory());
backend_suite!(postgres, TestDb::postgres());

#[tokio::test]
async fn sqlite_reopen_keeps_leases() {
    let db = TestDb::sqlite_file().await;
    reopen_keeps_leases(&db).await;
    db.finish().await;
}

#[tokio::test]
async fn postgres_reopen_keeps_leases() {
    if !common::backend_available("postgres") {
        return;
    }
    let db = TestDb::postgres().await;
    reopen_keeps_leases(&db).await;
    db.finish().await;
}
