//! The inventory snapshot against the real SQLite store: a discovery storm
//! reads no more than its own machines, and a write to one machine re-reads
//! that machine only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackboot_core::{EventHub, EventKind, EventPersistQueue, MacAddr, NewEvent};
use rackboot_fleet::{DiscoveryOutcome, Fleet, Inventory};

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

/// Events as emitted, in order (the persist side without a store).
fn collect_events(mut queue: EventPersistQueue) -> Arc<Mutex<Vec<NewEvent>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        while let Some(batch) = queue.next_batch(256).await {
            out.lock().unwrap().extend(batch);
        }
    });
    seen
}

fn count_of(events: &Mutex<Vec<NewEvent>>, kind: EventKind) -> usize {
    events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

/// A rack of unknown machines powering on at once: every one is recorded, each
/// discovery returns with its machine in the snapshot, and none re-reads the
/// whole inventory (which, once per discovery, grew with the square of the
/// rack).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_discoveries_reads_only_its_machines() {
    const MACHINES: usize = 300;
    let store = rackboot_store::open_sqlite_in_memory().await.unwrap();
    let (hub, queue) = EventHub::new(4096);
    let events = collect_events(queue);
    let fleet = Fleet::load(store.clone(), None, hub).await.unwrap();
    let inventory = fleet.inventory().clone();
    let loads_before = inventory.loads();
    let mut tasks = Vec::new();
    for i in 0..MACHINES {
        let inventory = inventory.clone();
        let fleet = fleet.clone();
        tasks.push(tokio::spawn(async move {
            let m = mac(&format!("52:54:00:bb:{:02x}:{:02x}", i / 256, i % 256));
            let outcome = fleet.record_discovery(m, None, None).await.unwrap();
            assert_eq!(outcome, DiscoveryOutcome::Recorded);
            // Reload returned: this machine must already be visible.
            assert!(
                inventory.snapshot().machine_by_mac(m).is_some(),
                "{m} not in the snapshot after its reload"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.list_machines().await.unwrap().len(), MACHINES);
    assert_eq!(inventory.snapshot().machines.len(), MACHINES);
    assert_eq!(
        inventory.loads(),
        loads_before,
        "a discovery re-read the whole inventory"
    );
    // Events reach the list through a task: wait for them (bounded).
    let mut discovered = 0;
    for _ in 0..500 {
        discovered = count_of(&events, EventKind::MachineDiscovered);
        if discovered >= MACHINES {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(discovered, MACHINES);
}

/// A write to one machine re-reads that machine only: creates land in name
/// order, changed MACs move in the lookup, deletes disappear, and the result is
/// what a full reload would read, without one.
#[tokio::test]
async fn a_machine_write_refreshes_that_machine_only() {
    let store = rackboot_store::open_sqlite_in_memory().await.unwrap();
    let named = |name: &str, m: &str| {
        let mut machine = rackboot_core::Machine::discovered(mac(m), None, None);
        machine.name = name.into();
        machine
    };
    for (name, m) in [
        ("b", "02:00:00:00:00:0b"),
        ("a", "02:00:00:00:00:0a"),
        ("c", "02:00:00:00:00:0c"),
    ] {
        store.create_machine(&named(name, m)).await.unwrap();
    }
    let inventory = Inventory::load(store.clone()).await.unwrap();
    let loads = inventory.loads();

    let aa = named("aa", "02:00:00:00:00:aa");
    store.create_machine(&aa).await.unwrap();
    inventory.reload_machine(aa.id).await.unwrap();

    let mut b = store
        .find_machine_by_mac(mac("02:00:00:00:00:0b"))
        .await
        .unwrap()
        .unwrap();
    b.macs = vec![mac("02:00:00:00:00:bb")];
    b.intent = rackboot_core::BootIntent::LocalDisk;
    store.update_machine(&b).await.unwrap();
    inventory.reload_machine(b.id).await.unwrap();

    let c = store
        .find_machine_by_mac(mac("02:00:00:00:00:0c"))
        .await
        .unwrap()
        .unwrap();
    store.delete_machine(c.id).await.unwrap();
    inventory.reload_machine(c.id).await.unwrap();

    let snap = inventory.snapshot();
    let names: Vec<&str> = snap
        .machines
        .by_name()
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["a", "aa", "b"]);
    assert_eq!(
        snap.machine_by_mac(mac("02:00:00:00:00:aa")).unwrap().name,
        "aa"
    );
    assert!(
        snap.machine_by_mac(mac("02:00:00:00:00:0b")).is_none(),
        "old MAC gone"
    );
    let b_now = snap.machine_by_mac(mac("02:00:00:00:00:bb")).unwrap();
    assert_eq!(
        (b_now.name.as_str(), &b_now.intent),
        ("b", &rackboot_core::BootIntent::LocalDisk)
    );
    assert!(
        snap.machine_by_mac(mac("02:00:00:00:00:0c")).is_none(),
        "deleted"
    );
    assert_eq!(inventory.loads(), loads, "no full reload");

    let full = Inventory::load(store.clone()).await.unwrap().snapshot();
    let as_listed = |s: &rackboot_fleet::Snapshot| {
        s.machines
            .by_name()
            .iter()
            .map(|m| (m.name.clone(), m.macs.clone(), m.intent.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(as_listed(&snap), as_listed(&full));
}

/// A bulk import writes one transaction, reports each row, puts the machines
/// in the snapshot with one publish and records one event.
#[tokio::test]
async fn a_bulk_import_reports_each_row() {
    let store = rackboot_store::open_sqlite_in_memory().await.unwrap();
    let (hub, queue) = EventHub::new(64);
    let events = collect_events(queue);
    let fleet = Fleet::load(store.clone(), None, hub).await.unwrap();
    let named = |name: &str, m: &str| {
        let mut machine = rackboot_core::Machine::discovered(mac(m), None, None);
        machine.name = name.into();
        machine.intent = rackboot_core::BootIntent::Profile { name: None };
        machine
    };
    let by = rackboot_fleet::Actor::api(None);
    fleet
        .create_machine(named("old", "02:00:00:00:01:00"), &by)
        .await
        .unwrap();
    let mut bad_name = named("x", "02:00:00:00:01:05");
    bad_name.name = "no spaces allowed".into();
    let mut unknown_profile = named("p", "02:00:00:00:01:06");
    unknown_profile.intent = rackboot_core::BootIntent::Profile {
        name: Some("missing".into()),
    };
    let rows = vec![
        named("a", "02:00:00:00:01:01"),
        named("old", "02:00:00:00:01:02"),
        named("b", "02:00:00:00:01:00"),
        bad_name,
        unknown_profile,
        named("a", "02:00:00:00:01:07"),
        named("c", "02:00:00:00:01:03"),
    ];
    let out = fleet.create_machines(rows, &by).await.unwrap();
    let verdicts: Vec<String> = out
        .iter()
        .map(|r| match r {
            Ok(m) => format!("ok {}", m.name),
            Err(e) => format!("err {e}"),
        })
        .collect();
    assert_eq!(verdicts[0], "ok a");
    assert!(verdicts[1].contains("\"old\""), "{}", verdicts[1]);
    assert!(verdicts[2].contains("02:00:00:00:01:00"), "{}", verdicts[2]);
    assert!(verdicts[3].starts_with("err name:"), "{}", verdicts[3]);
    assert!(
        verdicts[4].contains("no profile named \"missing\""),
        "{}",
        verdicts[4]
    );
    assert!(verdicts[5].contains("listed twice"), "{}", verdicts[5]);
    assert_eq!(verdicts[6], "ok c");
    let snap = fleet.snapshot();
    assert_eq!(snap.machines.len(), 3);
    assert_eq!(
        snap.machine_by_mac(mac("02:00:00:00:01:03")).unwrap().name,
        "c"
    );
    assert!(snap.machine_by_mac(mac("02:00:00:00:01:02")).is_none());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let imported: Vec<NewEvent> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.data["action"] == "imported")
        .cloned()
        .collect();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].data["count"], 2);
}

/// Over the discovery bound an unknown MAC is not recorded; the overload
/// records one event however many MACs it turns away.
#[tokio::test]
async fn discovery_over_its_bound_is_dropped_with_one_event() {
    let store = rackboot_store::open_sqlite_in_memory().await.unwrap();
    let (hub, queue) = EventHub::new(64);
    let events = collect_events(queue);
    let fleet = Fleet::load(store.clone(), None, hub).await.unwrap();
    fleet.set_discovery_limit(rackboot_fleet::DiscoveryLimit { per_minute: 3 });
    let mut outcomes = Vec::new();
    for i in 0..6 {
        let m = mac(&format!("02:00:00:00:02:{i:02x}"));
        outcomes.push(fleet.record_discovery(m, None, None).await.unwrap());
    }
    assert_eq!(
        outcomes,
        [
            DiscoveryOutcome::Recorded,
            DiscoveryOutcome::Recorded,
            DiscoveryOutcome::Recorded,
            DiscoveryOutcome::Limited,
            DiscoveryOutcome::Limited,
            DiscoveryOutcome::Limited,
        ]
    );
    assert_eq!(store.list_machines().await.unwrap().len(), 3);
    assert_eq!(fleet.snapshot().machines.len(), 3);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let limited = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.data["limited"] == true)
        .count();
    assert_eq!(limited, 1);
    assert_eq!(count_of(&events, EventKind::MachineDiscovered), 4);
}

/// Pending installs follow their machine's writes: requesting one puts it
/// in the snapshot, a new intent takes it out, without a full reload.
#[tokio::test]
async fn pending_installs_follow_their_machine() {
    let store = rackboot_store::open_sqlite_in_memory().await.unwrap();
    let (hub, queue) = EventHub::new(64);
    let _events = collect_events(queue);
    let fleet = Fleet::load(store.clone(), None, hub).await.unwrap();
    let inventory = fleet.inventory().clone();
    let loads = inventory.loads();
    let machine = rackboot_core::Machine::discovered(mac("02:00:00:00:03:01"), None, None);
    store.create_machine(&machine).await.unwrap();
    inventory.reload_machine(machine.id).await.unwrap();
    let install = rackboot_core::InstallRequest {
        id: uuid::Uuid::new_v4(),
        machine: machine.id,
        os: "debian-12-amd64".into(),
        template: None,
        vars: serde_json::json!({}),
        token: "t".into(),
        state: rackboot_core::InstallState::Pending,
        requested_at: chrono::Utc::now(),
        completed_at: None,
    };
    store.create_install(&install).await.unwrap();
    inventory.reload_machine(machine.id).await.unwrap();
    assert!(inventory.snapshot().installs.contains_key(&install.id));
    fleet
        .set_intent(
            &store.get_machine(machine.id).await.unwrap(),
            rackboot_core::BootIntent::LocalDisk,
            &rackboot_fleet::Actor::api(None),
        )
        .await
        .unwrap();
    let snap = inventory.snapshot();
    assert!(!snap.installs.contains_key(&install.id), "withdrawn");
    assert_eq!(
        snap.machine_by_id(machine.id).unwrap().intent,
        rackboot_core::BootIntent::LocalDisk
    );
    assert_eq!(inventory.loads(), loads, "no full reload");
}
