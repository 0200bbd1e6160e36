//! Install access records (migration 0008) on every backend: the first
//! binding wins, amendments set each field once, the records of finished
//! installs drop out of the list, and deleting the machine removes them.

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use common::TestDb;
use rackboot_core::{BootIntent, InstallRequest, InstallState, Machine, ProvisionState};
use rackboot_store::{InstallAccess, InstallAccessAmend, Store, StoreError, truncate_ms};

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000 + secs, 123_456_789).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn machine(name: &str, mac: &str) -> Machine {
    Machine {
        id: uuid::Uuid::new_v4(),
        name: name.into(),
        macs: vec![mac.parse().unwrap()],
        uuid: None,
        arch: None,
        labels: BTreeMap::new(),
        intent: BootIntent::LocalDisk,
        bmc: None,
        state: ProvisionState::Manageable,
        state_reason: None,
        state_changed_at: None,
        maintenance: None,
        facts: None,
        facts_at: None,
        created_at: t(0),
        updated_at: t(0),
    }
}

fn install(machine: &Machine, token: &str) -> InstallRequest {
    InstallRequest {
        id: uuid::Uuid::new_v4(),
        machine: machine.id,
        os: "debian-12-amd64".into(),
        template: None,
        vars: serde_json::json!({"vars": {}}),
        token: token.into(),
        state: InstallState::Pending,
        requested_at: t(1),
        completed_at: None,
    }
}

async fn access_records(store: Arc<dyn Store>) {
    let m = machine("acc-1", "52:54:00:00:1a:01");
    store.create_machine(&m).await.unwrap();
    let first = install(&m, "tok-acc-1");
    store.create_install(&first).await.unwrap();
    assert_eq!(store.get_install_access(first.id).await.unwrap(), None);

    let bound = InstallAccess {
        install: first.id,
        bound_ip: ip("10.77.0.101"),
        first_fetch_at: t(10),
        closed_at: None,
        done_ip: None,
    };
    let got = store.bind_install_access(&bound).await.unwrap();
    let want = InstallAccess {
        first_fetch_at: truncate_ms(t(10)),
        ..bound.clone()
    };
    assert_eq!(got, want);
    // A second binding (another address, later) changes nothing.
    let other = InstallAccess {
        bound_ip: ip("fd00::66"),
        first_fetch_at: t(20),
        ..bound.clone()
    };
    assert_eq!(store.bind_install_access(&other).await.unwrap(), want);
    assert_eq!(
        store.get_install_access(first.id).await.unwrap(),
        Some(want.clone())
    );
    assert_eq!(
        store.list_install_access().await.unwrap(),
        std::slice::from_ref(&want)
    );

    // Each amendment sets its field once.
    let closed = store
        .amend_install_access(
            first.id,
            InstallAccessAmend {
                closed_at: Some(t(30)),
                done_ip: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.closed_at, Some(truncate_ms(t(30))));
    let again = store
        .amend_install_access(
            first.id,
            InstallAccessAmend {
                closed_at: Some(t(40)),
                done_ip: Some(ip("10.77.0.9")),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.closed_at, Some(truncate_ms(t(30))));
    assert_eq!(again.done_ip, Some(ip("10.77.0.9")));
    let kept = store
        .amend_install_access(
            first.id,
            InstallAccessAmend {
                closed_at: None,
                done_ip: Some(ip("10.77.0.10")),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.done_ip, Some(ip("10.77.0.9")));

    // No record: nothing to amend.
    let second = install(&m, "tok-acc-2");
    store.create_install(&second).await.unwrap();
    assert_eq!(
        store
            .amend_install_access(second.id, InstallAccessAmend::default())
            .await
            .unwrap(),
        None
    );
    // The first install was cancelled by the second: its record is no
    // longer listed (only pending installs' are).
    assert_eq!(store.list_install_access().await.unwrap(), []);

    let ghost = InstallAccess {
        install: uuid::Uuid::new_v4(),
        ..bound.clone()
    };
    match store.bind_install_access(&ghost).await {
        Err(StoreError::NotFound {
            what: "install", ..
        }) => {}
        other => panic!("binding an unknown install: {other:?}"),
    }

    // Deleting the machine deletes its installs and their records.
    store.delete_machine(m.id).await.unwrap();
    assert_eq!(store.get_install_access(first.id).await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_file() {
    let db = TestDb::sqlite_file().await;
    access_records(db.store.clone()).await;
    db.finish().await;
}

#[tokio::test]
async fn sqlite_memory() {
    let db = TestDb::sqlite_memory().await;
    access_records(db.store.clone()).await;
    db.finish().await;
}

#[tokio::test]
async fn postgres() {
    let db = TestDb::postgres().await;
    access_records(db.store.clone()).await;
    db.finish().await;
}
