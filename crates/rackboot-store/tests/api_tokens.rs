//! API tokens on every backend: create, find by hash, list, last use,
//! revoke; names and hashes unique.

#[allow(dead_code)]
mod common;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rackboot_core::{ApiToken, Role};
use rackboot_store::{Store, StoreError};

use common::TestDb;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 123_456_789).unwrap()
}

fn token(name: &str, role: Role, sha256: &str) -> ApiToken {
    ApiToken {
        name: name.into(),
        role,
        sha256: sha256.into(),
        created_at: t(1_700_000_000),
        created_by: "api:admin-token".into(),
        last_used_at: None,
    }
}

/// As the store returns it: times at millisecond precision.
fn stored(mut token: ApiToken) -> ApiToken {
    token.created_at = rackboot_store::truncate_ms(token.created_at);
    token.last_used_at = token.last_used_at.map(rackboot_store::truncate_ms);
    token
}

async fn api_tokens(store: Arc<dyn Store>) {
    let ci = token("ci", Role::Operator, "aa11");
    let alice = token("alice", Role::Viewer, "bb22");
    store.create_api_token(&ci).await.unwrap();
    store.create_api_token(&alice).await.unwrap();

    // Listed by name, found by hash; an unknown hash is nobody.
    assert_eq!(
        store.list_api_tokens().await.unwrap(),
        [stored(alice.clone()), stored(ci.clone())]
    );
    assert_eq!(
        store.find_api_token("aa11").await.unwrap(),
        Some(stored(ci.clone()))
    );
    assert_eq!(store.find_api_token("cc33").await.unwrap(), None);

    // A name or a hash used twice is a conflict naming the token.
    for dup in [
        token("ci", Role::Admin, "dd44"),
        token("bob", Role::Admin, "aa11"),
    ] {
        match store.create_api_token(&dup).await {
            Err(StoreError::Conflict(m)) => assert!(m.contains(&format!("{:?}", dup.name)), "{m}"),
            other => panic!("{}: {other:?}", dup.name),
        }
    }

    // Last use is recorded; touching a revoked name is not an error.
    store.touch_api_token("ci", t(1_700_000_100)).await.unwrap();
    let found = store.find_api_token("aa11").await.unwrap().unwrap();
    assert_eq!(
        found.last_used_at,
        Some(rackboot_store::truncate_ms(t(1_700_000_100)))
    );

    // Revoked: gone at once, by name and by hash; twice is NotFound.
    store.delete_api_token("ci").await.unwrap();
    assert_eq!(store.find_api_token("aa11").await.unwrap(), None);
    store.touch_api_token("ci", t(1_700_000_200)).await.unwrap();
    match store.delete_api_token("ci").await {
        Err(StoreError::NotFound { what, key }) => {
            assert_eq!((what, key.as_str()), ("API token", "ci"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.list_api_tokens().await.unwrap(),
        [stored(alice.clone())]
    );
}

#[tokio::test]
async fn sqlite_api_tokens() {
    let db = TestDb::sqlite_file().await;
    api_tokens(db.store.clone()).await;
    db.finish().await;
}

#[tokio::test]
async fn sqlite_memory_api_tokens() {
    let db = TestDb::sqlite_memory().await;
    api_tokens(db.store.clone()).await;
    db.finish().await;
}

#[tokio::test]
async fn postgres_api_tokens() {
    let db = TestDb::postgres().await;
    api_tokens(db.store.clone()).await;
    db.finish().await;
}
