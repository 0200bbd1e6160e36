//! The inventory snapshot against the real SQLite store: discovery storms share
//! their reloads, and a write to one machine re-reads that machine only.

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
/// discovery's reload returns with its machine in the snapshot, and concurrent
/// reloads share their reads instead of re-reading every machine once per
/// discovery (which grows with the square of the rack).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_discoveries_shares_inventory_reloads() {
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
    let loads = inventory.loads() - loads_before;
    assert!(
        loads < MACHINES as u64 / 2,
        "{loads} store reads for {MACHINES} discoveries: reloads are not shared"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let discovered = count_of(&events, EventKind::MachineDiscovered);
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
    let names: Vec<&str> = snap.machines.iter().map(|m| m.name.as_str()).collect();
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
            .iter()
            .map(|m| (m.name.clone(), m.macs.clone(), m.intent.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(as_listed(&snap), as_listed(&full));
}
