//! What large fleets need from the store, on every backend: reads of many
//! machines by id, pages of machines, leases and workflows with a cursor,
//! bulk enrolment with an outcome per row, and event pruning.

#[allow(dead_code)] // `url` is for the tests that reopen a store.
mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use rackboot_core::{
    BootIntent, EventKind, InstallRequest, InstallState, Lease, LeaseState, Lifecycle, MacAddr,
    Machine, NewEvent, ProvisionState, Workflow, WorkflowState,
};
use rackboot_store::{EventFilter, Store, StoreError, WorkflowFilter};
use serde_json::json;

use common::TestDb;

fn mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3])
        .parse()
        .unwrap()
}

fn machine(name: &str, i: u32) -> Machine {
    let mut m = Machine::discovered(mac(i), None, None);
    m.name = name.into();
    m
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap()
}

fn names(machines: &[Machine]) -> Vec<&str> {
    machines.iter().map(|m| m.name.as_str()).collect()
}

async fn many_machines_by_id_and_by_page(store: Arc<dyn Store>) {
    // Names that sort differently by bytes and by a locale ("B" < "a").
    let all = ["a-1", "B-2", "a-10", "c", "a-2", "Z"];
    let mut made = Vec::new();
    for (i, name) in all.iter().enumerate() {
        let m = machine(name, i as u32);
        store.create_machine(&m).await.unwrap();
        made.push(m);
    }
    let wanted = [made[0].id, made[3].id, uuid::Uuid::new_v4()];
    let mut got = names(&store.get_machines(&wanted).await.unwrap())
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(got, ["a-1", "c"], "existing ones only");
    assert!(store.get_machines(&[]).await.unwrap().is_empty());

    // Pages of two follow the byte order and end with a short page.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let page = store.list_machines_page(after.as_deref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        seen.extend(page.iter().map(|m| m.name.clone()));
        after = page.last().map(|m| m.name.clone());
    }
    assert_eq!(seen, ["B-2", "Z", "a-1", "a-10", "a-2", "c"]);
    assert_eq!(
        names(&store.list_machines_page(Some("a-10"), 0).await.unwrap()),
        ["a-2", "c"]
    );
    // The page carries MACs like a single read.
    assert_eq!(
        store.list_machines_page(None, 1).await.unwrap()[0].macs,
        [mac(1)]
    );
}

async fn bulk_enrolment_outcome_per_row(store: Arc<dyn Store>) {
    store.create_machine(&machine("taken", 1)).await.unwrap();
    let mut twice = machine("twice-mac", 10);
    twice.macs.push(mac(10));
    let batch = vec![
        machine("n1", 2),
        machine("taken", 3), // name of a stored machine
        machine("n2", 1),    // MAC of a stored machine
        machine("n3", 4),
        machine("n4", 4), // MAC of an earlier row in this batch
        twice,            // its own MAC twice
        machine("n5", 5),
    ];
    let out = store.create_machines(&batch).await.unwrap();
    assert_eq!(out.len(), batch.len());
    let oks: Vec<bool> = out.iter().map(Result::is_ok).collect();
    assert_eq!(oks, [true, false, false, true, false, false, true]);
    let msg = |i: usize| match &out[i] {
        Err(StoreError::Conflict(m)) => m.clone(),
        other => panic!("row {i}: expected Conflict, got {other:?}"),
    };
    assert!(msg(1).contains("\"taken\""), "{}", msg(1));
    assert!(
        msg(2).contains(&mac(1).to_string()) && msg(2).contains("taken"),
        "{}",
        msg(2)
    );
    assert!(
        msg(4).contains(&mac(4).to_string()) && msg(4).contains("n3"),
        "{}",
        msg(4)
    );
    assert!(msg(5).contains("listed twice"), "{}", msg(5));
    let mut stored: Vec<String> = store
        .list_machines()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    stored.sort();
    assert_eq!(stored, ["n1", "n3", "n5", "taken"]);
    // The refused rows left nothing behind: their MACs are free.
    assert!(store.find_machine_by_mac(mac(3)).await.unwrap().is_none());
    assert!(store.create_machines(&[]).await.unwrap().is_empty());
}

async fn pending_installs_of_some_machines(store: Arc<dyn Store>) {
    let a = machine("a", 1);
    let b = machine("b", 2);
    let c = machine("c", 3);
    for m in [&a, &b, &c] {
        store.create_machine(m).await.unwrap();
    }
    let install = |m: &Machine, token: &str| InstallRequest {
        id: uuid::Uuid::new_v4(),
        machine: m.id,
        os: "debian-12-amd64".into(),
        template: None,
        vars: json!({}),
        token: token.into(),
        state: InstallState::Pending,
        requested_at: t(1),
        completed_at: None,
    };
    let (ia, ib, ic) = (install(&a, "ta"), install(&b, "tb"), install(&c, "tc"));
    for i in [&ia, &ib, &ic] {
        store.create_install(i).await.unwrap();
    }
    // b's install is completed: no longer pending.
    store.complete_install(ib.id, "tb", t(2)).await.unwrap();
    let mut got: Vec<uuid::Uuid> = store
        .list_pending_installs_of(&[a.id, b.id])
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    got.sort();
    assert_eq!(got, [ia.id]);
    assert!(
        store
            .list_pending_installs_of(&[])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn lease_pages_in_address_order(store: Arc<dyn Store>) {
    let lease = |last: u8| Lease {
        ip: Ipv4Addr::new(10, 0, 0, last),
        mac: Some(mac(u32::from(last))),
        client_id: None,
        hostname: None,
        state: LeaseState::Bound,
        expires_at: t(3600),
        subnet: "lab".into(),
        updated_at: t(0),
    };
    let leases: Vec<Lease> = [2, 10, 1, 100, 20].into_iter().map(lease).collect();
    store.put_leases(&leases).await.unwrap();
    let ips = |page: Vec<Lease>| page.iter().map(|l| l.ip.octets()[3]).collect::<Vec<u8>>();
    assert_eq!(ips(store.list_leases_page(None, 2).await.unwrap()), [1, 2]);
    assert_eq!(
        ips(store
            .list_leases_page(Some(Ipv4Addr::new(10, 0, 0, 2)), 2)
            .await
            .unwrap()),
        [10, 20]
    );
    assert_eq!(
        ips(store
            .list_leases_page(Some(Ipv4Addr::new(10, 0, 0, 20)), 2)
            .await
            .unwrap()),
        [100]
    );
}

async fn workflow_pages_newest_first(store: Arc<dyn Store>) {
    let m = machine("w", 1);
    store.create_machine(&m).await.unwrap();
    let wf = |created: i64, state: WorkflowState| Workflow {
        id: uuid::Uuid::new_v4(),
        machine: m.id,
        name: format!("wf{created}"),
        lifecycle: Lifecycle::None,
        state,
        started_from: ProvisionState::Enrolled,
        params: json!({}),
        steps: vec![],
        created_by: "test".into(),
        created_at: t(created),
        started_at: None,
        finished_at: None,
        updated_at: t(created),
        error: None,
        batch: None,
    };
    // Two share a creation time: the id breaks the tie, as listed.
    let all = [
        wf(1, WorkflowState::Succeeded),
        wf(2, WorkflowState::Failed),
        wf(2, WorkflowState::Succeeded),
        wf(3, WorkflowState::Succeeded),
        wf(4, WorkflowState::Running),
    ];
    for w in &all {
        store.put_workflow(w).await.unwrap();
    }
    let filter = WorkflowFilter {
        limit: 2,
        ..WorkflowFilter::default()
    };
    let listed: Vec<String> = store
        .list_workflows(&WorkflowFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|w| w.id.to_string())
        .collect();
    let mut paged = Vec::new();
    let mut before = None;
    for _ in 0..10 {
        let page = store.list_workflows_before(&filter, before).await.unwrap();
        if page.is_empty() {
            break;
        }
        paged.extend(page.iter().map(|w| w.id.to_string()));
        before = page.last().map(|w| (w.created_at, w.id));
    }
    assert_eq!(paged, listed, "pages in the order of the whole listing");
    assert_eq!(paged.len(), 5);
    // With a state filter and a machine filter.
    let succeeded = WorkflowFilter {
        machine: Some(m.id),
        states: vec![WorkflowState::Succeeded],
        limit: 1,
    };
    let first = store.list_workflows_before(&succeeded, None).await.unwrap();
    assert_eq!(first[0].name, "wf3");
    let second = store
        .list_workflows_before(&succeeded, Some((first[0].created_at, first[0].id)))
        .await
        .unwrap();
    assert_eq!(second[0].name, "wf2");
}

async fn events_pruned_by_count_and_age(store: Arc<dyn Store>) {
    let now = Utc::now();
    let event = |age_days: i64, i: usize| {
        let mut e = NewEvent::new(EventKind::MachineChanged, format!("e{i}"));
        e.at = now - TimeDelta::days(age_days);
        e
    };
    // 10 old events (40 days), then 10 recent ones.
    let mut batch: Vec<NewEvent> = (0..10).map(|i| event(40, i)).collect();
    batch.extend((10..20).map(|i| event(0, i)));
    let stored = store.append_events(batch).await.unwrap();
    let first_recent = stored[10].id;
    let remaining = |store: Arc<dyn Store>| async move {
        store
            .list_events(&EventFilter::default())
            .await
            .unwrap()
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
    };
    // Nothing asked: nothing deleted.
    assert_eq!(store.prune_events(None, None, 100).await.unwrap(), 0);
    // By age, in steps of 4: 4, 4, 2, then nothing left to prune.
    let cutoff = Some(now - TimeDelta::days(30));
    let mut deleted = Vec::new();
    for _ in 0..4 {
        deleted.push(store.prune_events(cutoff, None, 4).await.unwrap());
    }
    assert_eq!(deleted, [4, 4, 2, 0]);
    let left = remaining(store.clone()).await;
    assert_eq!(left.len(), 10);
    assert_eq!(left[0], "e10");
    // By count: keep the newest 3.
    assert_eq!(store.prune_events(None, Some(3), 1000).await.unwrap(), 7);
    assert_eq!(remaining(store.clone()).await, ["e17", "e18", "e19"]);
    assert!(first_recent > 0);
    // New events keep counting up after pruning.
    let more = store.append_events(vec![event(0, 20)]).await.unwrap();
    assert!(more[0].id > stored[19].id);
}

async fn an_intent_survives_bulk_enrolment(store: Arc<dyn Store>) {
    let mut m = machine("local", 7);
    m.intent = BootIntent::LocalDisk;
    let out = store
        .create_machines(std::slice::from_ref(&m))
        .await
        .unwrap();
    assert!(out[0].is_ok());
    assert_eq!(
        store.get_machine(m.id).await.unwrap().intent,
        BootIntent::LocalDisk
    );
}

macro_rules! backend_suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;

            fn available() -> bool {
                common::backend_available(stringify!($backend))
            }

            backend_suite!(@tests $open;
                many_machines_by_id_and_by_page,
                bulk_enrolment_outcome_per_row,
                pending_installs_of_some_machines,
                lease_pages_in_address_order,
                workflow_pages_newest_first,
                events_pruned_by_count_and_age,
                an_intent_survives_bulk_enrolment,
            );
        }
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                if !available() {
                    return;
                }
                let db = $open.await;
                super::$name(db.store.clone()).await;
                db.finish().await;
            }
        )*
    };
}

backend_suite!(sqlite, TestDb::sqlite_file());
backend_suite!(sqlite_memory, TestDb::sqlite_memory());
backend_suite!(postgres, TestDb::postgres());
