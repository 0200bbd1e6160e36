//! One behaviour suite, run against every backend: SQLite on a temp file, SQLite
//! in memory, and PostgreSQL (a fresh database per test; see `common`).

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use rackboot_core::{
    Arch, Bmc, BootIntent, EventKind, InstallRequest, InstallState, InstallTemplate, Lease,
    LeaseState, LoaderKind, MacAddr, Machine, Menu, MenuEntry, MenuInstall, NewEvent, OsFamily,
    Profile, Selector,
};
use rackboot_store::{EventFilter, Store, StoreError, open, truncate_ms};
use serde_json::json;

use common::TestDb;

// ---------- fixtures ----------

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

/// A time with sub-millisecond digits, so truncation is exercised.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000 + secs, 123_456_789).unwrap()
}

fn machine(name: &str, macs: &[&str]) -> Machine {
    Machine {
        id: uuid::Uuid::new_v4(),
        name: name.into(),
        macs: macs.iter().map(|m| mac(m)).collect(),
        uuid: Some(uuid::Uuid::new_v4()),
        arch: Some(Arch::UefiX64),
        labels: BTreeMap::from([
            ("rack".into(), "r12".into()),
            ("role".into(), "storage".into()),
        ]),
        intent: BootIntent::Profile {
            name: Some("debian".into()),
        },
        bmc: None,
        created_at: t(0),
        updated_at: t(1),
    }
}

/// What the store gives back for `m`: timestamps at millisecond precision.
fn stored(mut m: Machine) -> Machine {
    m.created_at = truncate_ms(m.created_at);
    m.updated_at = truncate_ms(m.updated_at);
    m
}

fn profile(name: &str) -> Profile {
    Profile {
        name: name.into(),
        description: "Debian installer".into(),
        kernel: Some("debian/linux".into()),
        initrds: vec![
            "debian/initrd.gz".into(),
            "https://x.example/fw.cpio".into(),
        ],
        cmdline: "console=ttyS0 hostname={{ machine.name }}".into(),
        ipxe_script: None,
        loader: LoaderKind::Grub,
        created_at: t(10),
        updated_at: t(11),
    }
}

fn stored_profile(mut p: Profile) -> Profile {
    p.created_at = truncate_ms(p.created_at);
    p.updated_at = truncate_ms(p.updated_at);
    p
}

fn lease(ip: [u8; 4], mac_s: Option<&str>, state: LeaseState) -> Lease {
    Lease {
        ip: Ipv4Addr::from(ip),
        mac: mac_s.map(mac),
        client_id: mac_s.map(|_| "01525400123456".into()),
        hostname: mac_s.map(|_| "node".into()),
        state,
        expires_at: t(3600),
        subnet: "lab".into(),
        updated_at: t(5),
    }
}

fn stored_lease(mut l: Lease) -> Lease {
    l.expires_at = truncate_ms(l.expires_at);
    l.updated_at = truncate_ms(l.updated_at);
    l
}

fn conflict_message(r: Result<(), StoreError>) -> String {
    match r {
        Err(StoreError::Conflict(msg)) => msg,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str, key: &str) {
    match r {
        Err(StoreError::NotFound { what: w, key: k }) if w == what && k == key => {}
        other => panic!("expected NotFound {what} {key}, got {other:?}"),
    }
}

// ---------- behaviours ----------

async fn machine_crud(store: Arc<dyn Store>) {
    let mut a = machine("web-1", &["52:54:00:00:00:01", "52:54:00:00:00:02"]);
    let mut b = machine("db-1", &["52:54:00:00:00:03"]);
    b.uuid = None;
    b.arch = None;
    b.labels.clear();
    b.intent = BootIntent::Discover;
    let c = Machine {
        macs: vec![],
        ..machine("bare-0", &[])
    };
    for m in [&a, &b, &c] {
        store.create_machine(m).await.unwrap();
    }

    assert_eq!(store.get_machine(a.id).await.unwrap(), stored(a.clone()));
    assert_eq!(store.get_machine(b.id).await.unwrap(), stored(b.clone()));
    assert_eq!(store.get_machine(c.id).await.unwrap(), stored(c.clone()));
    assert_eq!(
        store.find_machine_by_name("web-1").await.unwrap(),
        Some(stored(a.clone()))
    );
    assert_eq!(store.find_machine_by_name("web-2").await.unwrap(), None);
    for m in &a.macs {
        assert_eq!(
            store.find_machine_by_mac(*m).await.unwrap().map(|m| m.id),
            Some(a.id)
        );
    }
    assert_eq!(
        store
            .find_machine_by_mac(mac("52:54:00:00:00:03"))
            .await
            .unwrap(),
        Some(stored(b.clone()))
    );
    assert_eq!(
        store
            .find_machine_by_mac(mac("52:54:00:00:00:99"))
            .await
            .unwrap(),
        None
    );
    // Listed by name.
    let names: Vec<String> = store
        .list_machines()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["bare-0", "db-1", "web-1"]);

    // Update replaces everything but id and created_at.
    let created = a.created_at;
    a.name = "web-1-renamed".into();
    a.uuid = None;
    a.arch = Some(Arch::Other(42));
    a.labels = BTreeMap::from([("rack".into(), "r13".into())]);
    a.intent = BootIntent::Menu(Menu {
        entries: vec![MenuEntry {
            profile: "debian".into(),
            label: Some("Debian 13".into()),
            install: None,
        }],
        default: None,
        timeout_secs: 5,
        loader: None,
    });
    a.created_at = t(99);
    a.updated_at = t(100);
    store.update_machine(&a).await.unwrap();
    let got = store.get_machine(a.id).await.unwrap();
    a.created_at = created;
    assert_eq!(got, stored(a.clone()));
    assert_eq!(store.find_machine_by_name("web-1").await.unwrap(), None);

    store.delete_machine(b.id).await.unwrap();
    assert_not_found(store.get_machine(b.id).await, "machine", &b.id.to_string());
    assert_not_found(
        store.delete_machine(b.id).await,
        "machine",
        &b.id.to_string(),
    );
    assert_not_found(store.update_machine(&b).await, "machine", &b.id.to_string());
    assert_eq!(store.list_machines().await.unwrap().len(), 2);
}

async fn machine_name_conflict(store: Arc<dyn Store>) {
    let a = machine("web-1", &["52:54:00:00:00:01"]);
    store.create_machine(&a).await.unwrap();

    let b = machine("web-1", &["52:54:00:00:00:02"]);
    let msg = conflict_message(store.create_machine(&b).await);
    assert_eq!(
        msg,
        format!("machine name \"web-1\" already belongs to machine {}", a.id)
    );
    // Nothing of the failed machine was kept.
    assert_eq!(store.find_machine_by_mac(b.macs[0]).await.unwrap(), None);
    assert_not_found(store.get_machine(b.id).await, "machine", &b.id.to_string());

    // Renaming onto a taken name is a conflict too, and changes nothing.
    let mut c = machine("web-2", &["52:54:00:00:00:02"]);
    store.create_machine(&c).await.unwrap();
    c.name = "web-1".into();
    c.macs = vec![mac("52:54:00:00:00:09")];
    let msg = conflict_message(store.update_machine(&c).await);
    assert!(
        msg.contains("\"web-1\"") && msg.contains(&a.id.to_string()),
        "{msg}"
    );
    let c_now = store.get_machine(c.id).await.unwrap();
    assert_eq!(c_now.name, "web-2");
    assert_eq!(c_now.macs, [mac("52:54:00:00:00:02")]);

    // Same id twice.
    let mut again = a.clone();
    again.name = "other".into();
    again.macs = vec![];
    let msg = conflict_message(store.create_machine(&again).await);
    assert_eq!(
        msg,
        format!("machine id {} already exists (machine web-1)", a.id)
    );
}

async fn machine_mac_conflict(store: Arc<dyn Store>) {
    let a = machine("m-1", &["52:54:00:12:34:56"]);
    store.create_machine(&a).await.unwrap();

    // The MAC is the second NIC of the new machine: still found and named.
    let b = machine("m-2", &["52:54:00:00:00:02", "52:54:00:12:34:56"]);
    assert_eq!(
        conflict_message(store.create_machine(&b).await),
        "MAC 52:54:00:12:34:56 already belongs to machine m-1"
    );
    assert_eq!(store.find_machine_by_name("m-2").await.unwrap(), None);
    assert_eq!(
        store
            .find_machine_by_mac(mac("52:54:00:00:00:02"))
            .await
            .unwrap(),
        None
    );

    // Taking another machine's MAC on update fails and keeps the old MACs.
    let mut c = machine("m-3", &["52:54:00:00:00:03"]);
    store.create_machine(&c).await.unwrap();
    c.macs.push(mac("52:54:00:12:34:56"));
    assert_eq!(
        conflict_message(store.update_machine(&c).await),
        "MAC 52:54:00:12:34:56 already belongs to machine m-1"
    );
    assert_eq!(
        store.get_machine(c.id).await.unwrap().macs,
        [mac("52:54:00:00:00:03")]
    );
    assert_eq!(
        store
            .find_machine_by_mac(mac("52:54:00:12:34:56"))
            .await
            .unwrap()
            .unwrap()
            .id,
        a.id
    );

    // One MAC twice in a machine's own list.
    let d = machine("m-4", &["52:54:00:00:00:04", "52:54:00:00:00:04"]);
    assert_eq!(
        conflict_message(store.create_machine(&d).await),
        "MAC 52:54:00:00:00:04 is listed twice for machine m-4"
    );
}

async fn update_replaces_macs(store: Arc<dyn Store>) {
    let mut a = machine("m-1", &["52:54:00:00:00:0a", "52:54:00:00:00:0b"]);
    store.create_machine(&a).await.unwrap();
    a.macs = vec![mac("52:54:00:00:00:0c"), mac("52:54:00:00:00:0a")];
    store.update_machine(&a).await.unwrap();

    // Order is kept (the first MAC is the boot NIC).
    assert_eq!(store.get_machine(a.id).await.unwrap().macs, a.macs);
    assert_eq!(
        store
            .find_machine_by_mac(mac("52:54:00:00:00:0b"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .find_machine_by_mac(mac("52:54:00:00:00:0c"))
            .await
            .unwrap()
            .unwrap()
            .id,
        a.id
    );
    // The dropped MAC is free for another machine.
    let b = machine("m-2", &["52:54:00:00:00:0b"]);
    store.create_machine(&b).await.unwrap();

    // Reordering a machine's own MACs is not a conflict.
    a.macs.reverse();
    store.update_machine(&a).await.unwrap();
    assert_eq!(store.get_machine(a.id).await.unwrap().macs, a.macs);
}

async fn delete_cascades_macs(store: Arc<dyn Store>) {
    let a = machine("m-1", &["52:54:00:00:00:01", "52:54:00:00:00:02"]);
    store.create_machine(&a).await.unwrap();
    store.delete_machine(a.id).await.unwrap();
    for m in &a.macs {
        assert_eq!(store.find_machine_by_mac(*m).await.unwrap(), None);
    }
    // Had the MAC rows survived, this would be a conflict.
    let b = machine("m-1", &["52:54:00:00:00:02", "52:54:00:00:00:01"]);
    store.create_machine(&b).await.unwrap();
    assert_eq!(
        store
            .find_machine_by_mac(mac("52:54:00:00:00:01"))
            .await
            .unwrap()
            .unwrap()
            .id,
        b.id
    );
}

async fn profiles_crud(store: Arc<dyn Store>) {
    let debian = profile("debian");
    let mut alpine = profile("alpine");
    alpine.kernel = None;
    alpine.initrds = vec![];
    alpine.cmdline = String::new();
    alpine.ipxe_script = Some("#!ipxe\nchain http://{{ server }}/alpine\n".into());
    alpine.loader = LoaderKind::Ipxe;
    store.put_profile(&debian).await.unwrap();
    store.put_profile(&alpine).await.unwrap();

    assert_eq!(
        store.get_profile("debian").await.unwrap(),
        stored_profile(debian.clone())
    );
    assert_eq!(
        store.list_profiles().await.unwrap(),
        [
            stored_profile(alpine.clone()),
            stored_profile(debian.clone())
        ]
    );

    // Overwrite: every field changes but created_at.
    let mut changed = debian.clone();
    changed.description = "Debian 13".into();
    changed.initrds = vec!["one".into()];
    changed.loader = LoaderKind::Pxelinux;
    changed.created_at = t(500);
    changed.updated_at = t(501);
    store.put_profile(&changed).await.unwrap();
    let got = store.get_profile("debian").await.unwrap();
    changed.created_at = debian.created_at;
    assert_eq!(got, stored_profile(changed));

    store.delete_profile("debian").await.unwrap();
    assert_not_found(store.get_profile("debian").await, "profile", "debian");
    assert_not_found(store.delete_profile("debian").await, "profile", "debian");
    assert_eq!(store.list_profiles().await.unwrap().len(), 1);
}

async fn selectors_crud(store: Arc<dyn Store>) {
    let s1 = Selector {
        name: "rack12".into(),
        profile: "debian".into(),
        matches: BTreeMap::from([
            ("label.rack".into(), "r12".into()),
            ("arch".into(), "uefi_x64".into()),
        ]),
    };
    let s0 = Selector {
        name: "default".into(),
        profile: "discovery".into(),
        matches: BTreeMap::new(),
    };
    store.put_selector(&s1).await.unwrap();
    store.put_selector(&s0).await.unwrap();
    assert_eq!(
        store.list_selectors().await.unwrap(),
        [s0.clone(), s1.clone()]
    );

    let mut s1b = s1.clone();
    s1b.profile = "alpine".into();
    s1b.matches.remove("arch");
    store.put_selector(&s1b).await.unwrap();
    assert_eq!(store.list_selectors().await.unwrap(), [s0.clone(), s1b]);

    store.delete_selector("rack12").await.unwrap();
    assert_eq!(store.list_selectors().await.unwrap(), [s0]);
    assert_not_found(store.delete_selector("rack12").await, "selector", "rack12");
}

async fn leases_upsert_list_delete(store: Arc<dyn Store>) {
    store.put_leases(&[]).await.unwrap();
    assert_eq!(store.list_leases().await.unwrap(), []);

    let a = lease([10, 0, 0, 10], Some("52:54:00:00:00:01"), LeaseState::Bound);
    let b = lease(
        [10, 0, 0, 2],
        Some("52:54:00:00:00:02"),
        LeaseState::Offered,
    );
    let c = lease([10, 0, 0, 3], None, LeaseState::Declined);
    store
        .put_leases(&[a.clone(), b.clone(), c.clone()])
        .await
        .unwrap();
    // Address order, not text order.
    assert_eq!(
        store.list_leases().await.unwrap(),
        [
            stored_lease(b.clone()),
            stored_lease(c.clone()),
            stored_lease(a.clone())
        ]
    );

    // Upsert: the offered lease is acked; within one batch the last write of an address wins.
    let mut b2 = b.clone();
    b2.state = LeaseState::Bound;
    b2.expires_at = t(7200);
    b2.hostname = None;
    let mut b3 = b2.clone();
    b3.hostname = Some("final".into());
    let mut a2 = a.clone();
    a2.state = LeaseState::Released;
    a2.mac = None;
    store
        .put_leases(&[b2, a2.clone(), b3.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.list_leases().await.unwrap(),
        [
            stored_lease(b3),
            stored_lease(c.clone()),
            stored_lease(a2.clone())
        ]
    );

    store.delete_lease(c.ip).await.unwrap();
    assert_not_found(store.delete_lease(c.ip).await, "lease", "10.0.0.3");
    assert_eq!(store.list_leases().await.unwrap().len(), 2);
}

async fn leases_batch_of_1000(store: Arc<dyn Store>) {
    let batch: Vec<Lease> = (0..1000u32)
        .map(|i| {
            let mut l = lease(
                (Ipv4Addr::new(10, 1, 0, 0).to_bits() + i).to_be_bytes(),
                None,
                LeaseState::Bound,
            );
            l.mac = Some(MacAddr([0x52, 0x54, 0, 0, (i >> 8) as u8, i as u8]));
            l.hostname = Some(format!("node-{i}"));
            l
        })
        .collect();
    let start = Instant::now();
    store.put_leases(&batch).await.unwrap();
    let insert = start.elapsed();
    let mut updated = batch.clone();
    for l in &mut updated {
        l.state = LeaseState::Expired;
        l.updated_at += TimeDelta::seconds(60);
    }
    let start = Instant::now();
    store.put_leases(&updated).await.unwrap();
    let update = start.elapsed();
    println!(
        "{}: 1000-lease batch insert {insert:?}, update {update:?} (debug build)",
        store.backend()
    );
    let want: Vec<Lease> = updated.into_iter().map(stored_lease).collect();
    assert_eq!(store.list_leases().await.unwrap(), want);
}

async fn concurrent_lease_writers(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8u8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..20u8 {
                    let l = lease([10, 2, w, i], Some("52:54:00:00:00:01"), LeaseState::Bound);
                    store.put_leases(&[l]).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.list_leases().await.unwrap().len(), 160);
}

async fn events_append_and_filter(store: Arc<dyn Store>) {
    let nic0 = mac("52:54:00:00:00:01");
    let nic1 = mac("52:54:00:00:00:02");
    let stranger = mac("52:54:00:00:00:99");
    let m = machine("m-1", &["52:54:00:00:00:01", "52:54:00:00:00:02"]);
    store.create_machine(&m).await.unwrap();

    let e = |kind, msg: &str| NewEvent {
        at: t(20),
        ..NewEvent::new(kind, msg)
    };
    let first = store
        .append_events(vec![
            e(EventKind::ServiceStarted, "dhcp up"),
            e(EventKind::LeaseOffered, "offer nic0").mac(nic0),
            e(EventKind::LeaseAcked, "ack nic1").mac(nic1).data(json!({
                "ip": "10.0.0.2", "nested": {"bytes": 12345, "list": [1, null, "x"]}
            })),
        ])
        .await
        .unwrap();
    let second = store
        .append_events(vec![
            e(EventKind::ScriptServed, "script by id").machine(m.id),
            e(EventKind::TftpSent, "stranger").mac(stranger),
            e(EventKind::MachineChanged, "id and mac")
                .machine(m.id)
                .mac(nic0),
        ])
        .await
        .unwrap();
    assert_eq!(store.append_events(vec![]).await.unwrap(), []);

    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    // Ids strictly increase in the order given, across batches.
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "{all:?}");
    for (got, msg) in all.iter().zip([
        "dhcp up",
        "offer nic0",
        "ack nic1",
        "script by id",
        "stranger",
        "id and mac",
    ]) {
        assert_eq!(got.message, msg);
        assert_eq!(got.at, truncate_ms(t(20)));
    }
    assert_eq!(all[2].data["nested"]["list"], json!([1, null, "x"]));

    let list = |f: EventFilter| {
        let store = store.clone();
        async move {
            store
                .list_events(&f)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>()
        }
    };
    // Listing returns exactly what append returned.
    assert_eq!(
        store.list_events(&EventFilter::default()).await.unwrap(),
        all
    );
    assert_eq!(
        list(EventFilter {
            machine: Some(m.id),
            ..Default::default()
        })
        .await,
        ["offer nic0", "ack nic1", "script by id", "id and mac"]
    );
    assert_eq!(
        list(EventFilter {
            mac: Some(nic0),
            ..Default::default()
        })
        .await,
        ["offer nic0", "id and mac"]
    );
    assert_eq!(
        list(EventFilter {
            machine: Some(m.id),
            mac: Some(nic1),
            ..Default::default()
        })
        .await,
        ["ack nic1"]
    );
    assert_eq!(
        list(EventFilter {
            machine: Some(uuid::Uuid::new_v4()),
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        list(EventFilter {
            after_id: Some(all[2].id),
            ..Default::default()
        })
        .await,
        ["script by id", "stranger", "id and mac"]
    );
    assert_eq!(
        list(EventFilter {
            machine: Some(m.id),
            after_id: Some(all[1].id),
            limit: 2,
            ..Default::default()
        })
        .await,
        ["ack nic1", "script by id"]
    );
    assert_eq!(
        list(EventFilter {
            limit: 1,
            ..Default::default()
        })
        .await,
        ["dhcp up"]
    );
    // A MAC moved to another machine takes its history along.
    let mut m2 = machine("m-2", &["52:54:00:00:00:99"]);
    store.create_machine(&m2).await.unwrap();
    m2.macs.clear();
    store.update_machine(&m2).await.unwrap();
    let mut m1 = m.clone();
    m1.macs.push(stranger);
    store.update_machine(&m1).await.unwrap();
    assert_eq!(
        list(EventFilter {
            machine: Some(m.id),
            ..Default::default()
        })
        .await,
        [
            "offer nic0",
            "ack nic1",
            "script by id",
            "stranger",
            "id and mac"
        ]
    );

    // Data of every JSON type and awkward text come back as given; a large
    // batch gets its ids in order.
    let odd: Vec<NewEvent> = [
        json!(null),
        json!("text \"quoted\" \\ back"),
        json!(42),
        json!(-1.5),
        json!(true),
        json!(false),
        json!([1, "two"]),
        json!({}),
    ]
    .into_iter()
    .map(|data| {
        e(
            EventKind::PowerChanged,
            "line one\nline \"two\" \u{1F5A5} é",
        )
        .data(data)
    })
    .chain((0..700).map(|i| e(EventKind::TftpSent, &format!("bulk {i}"))))
    .collect();
    let stored = store.append_events(odd.clone()).await.unwrap();
    assert_eq!(stored.len(), odd.len());
    assert!(stored.windows(2).all(|w| w[1].id == w[0].id + 1));
    assert!(stored[0].id > all[5].id);
    for (got, sent) in stored.iter().zip(&odd) {
        assert_eq!((&got.message, &got.data), (&sent.message, &sent.data));
    }
    let listed = store
        .list_events(&EventFilter {
            after_id: Some(all[5].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed, stored);
}

async fn events_default_limit_and_paging(store: Arc<dyn Store>) {
    let batch: Vec<NewEvent> = (0..1005)
        .map(|i| NewEvent::new(EventKind::AssetServed, format!("e{i}")))
        .collect();
    let appended = store.append_events(batch).await.unwrap();
    assert_eq!(appended.len(), 1005);
    let page1 = store.list_events(&EventFilter::default()).await.unwrap();
    assert_eq!(page1.len(), 1000);
    assert_eq!(page1[..], appended[..1000]);
    let page2 = store
        .list_events(&EventFilter {
            after_id: Some(page1.last().unwrap().id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page2[..], appended[1000..]);
}

/// A reader paging with `after_id` while several writers append must see every
/// event: ids have to become visible in id order.
async fn events_paging_sees_concurrent_appends(store: Arc<dyn Store>) {
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for b in 0..25 {
                    let batch = (0..4)
                        .map(|i| NewEvent::new(EventKind::TftpSent, format!("w{w} b{b} e{i}")))
                        .collect();
                    ids.extend(
                        store
                            .append_events(batch)
                            .await
                            .unwrap()
                            .iter()
                            .map(|e| e.id),
                    );
                }
                ids
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut last = 0;
    let mut done = false;
    loop {
        // Read once more after every writer finished, then stop.
        let finished = writers.iter().all(|w| w.is_finished());
        let page = store
            .list_events(&EventFilter {
                after_id: Some(last),
                limit: 7,
                ..Default::default()
            })
            .await
            .unwrap();
        if let Some(e) = page.last() {
            last = e.id;
        }
        let empty = page.is_empty();
        seen.extend(page.into_iter().map(|e| e.id));
        if done && empty {
            break;
        }
        done = finished;
        tokio::task::yield_now().await;
    }
    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    written.sort_unstable();
    assert_eq!(written.len(), 400);
    assert_eq!(seen, written, "the paging reader missed or repeated events");
}

/// Opening an existing database again re-runs migrations (a no-op) and keeps the data.
async fn reopen_keeps_data(db: &TestDb) {
    let a = machine("m-1", &["52:54:00:00:00:01"]);
    db.store.create_machine(&a).await.unwrap();
    for _ in 0..2 {
        let again = open(&db.url).await.unwrap();
        assert_eq!(again.get_machine(a.id).await.unwrap(), stored(a.clone()));
        again
            .put_leases(&[lease([10, 9, 9, 9], None, LeaseState::Declined)])
            .await
            .unwrap();
    }
    assert_eq!(db.store.list_leases().await.unwrap().len(), 1);
}

async fn machine_bmc_keeps_sealed_password(store: Arc<dyn Store>) {
    let mut m = machine("bmc-1", &["52:54:00:00:0b:01"]);
    m.bmc = Some(Bmc {
        address: "ipmi://10.0.0.5:623".into(),
        username: "admin".into(),
        insecure_tls: false,
        sealed_password: Some("v1:sealed-bytes".into()),
    });
    store.create_machine(&m).await.unwrap();
    let got = store.get_machine(m.id).await.unwrap();
    assert_eq!(got, stored(m.clone()));
    assert_eq!(
        got.bmc.as_ref().unwrap().sealed_password.as_deref(),
        Some("v1:sealed-bytes")
    );
    // The public JSON of a machine never carries the password.
    let json = serde_json::to_string(&got).unwrap();
    assert!(!json.contains("sealed"), "{json}");

    m.bmc = Some(Bmc {
        address: "redfish+https://bmc-1/redfish/v1/Systems/1".into(),
        username: "root".into(),
        insecure_tls: true,
        sealed_password: None,
    });
    store.update_machine(&m).await.unwrap();
    assert_eq!(store.get_machine(m.id).await.unwrap(), stored(m.clone()));
    m.bmc = None;
    store.update_machine(&m).await.unwrap();
    assert_eq!(store.get_machine(m.id).await.unwrap().bmc, None);
}

fn template(name: &str, family: OsFamily) -> InstallTemplate {
    InstallTemplate {
        name: name.into(),
        family,
        description: "site kickstart".into(),
        source: "text\nrootpw --iscrypted {{ root_password_hash }}\n".into(),
        created_at: t(20),
        updated_at: t(21),
    }
}

async fn templates_crud(store: Arc<dyn Store>) {
    let a = template("site-rhel", OsFamily::Rhel);
    let b = template("site-debian", OsFamily::Debian);
    store.put_template(&a).await.unwrap();
    store.put_template(&b).await.unwrap();
    let names: Vec<_> = store
        .list_templates()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["site-debian", "site-rhel"]);
    let mut a2 = a.clone();
    a2.source = "changed".into();
    a2.created_at = t(99);
    a2.updated_at = t(100);
    store.put_template(&a2).await.unwrap();
    let got = store.get_template("site-rhel").await.unwrap();
    assert_eq!(got.source, "changed");
    assert_eq!(
        got.created_at,
        truncate_ms(a.created_at),
        "created_at is kept"
    );
    assert_eq!(got.updated_at, truncate_ms(a2.updated_at));
    store.delete_template("site-rhel").await.unwrap();
    assert_not_found(
        store.get_template("site-rhel").await,
        "template",
        "site-rhel",
    );
    assert_not_found(
        store.delete_template("site-rhel").await,
        "template",
        "site-rhel",
    );
}

fn install(machine: &Machine, os: &str, token: &str, at: i64) -> InstallRequest {
    InstallRequest {
        id: uuid::Uuid::new_v4(),
        machine: machine.id,
        os: os.into(),
        template: None,
        vars: json!({"hostname": machine.name, "packages": ["vim"]}),
        token: token.into(),
        state: InstallState::Pending,
        requested_at: t(at),
        completed_at: None,
    }
}

async fn install_lifecycle(store: Arc<dyn Store>) {
    let m = machine("inst-1", &["52:54:00:00:0c:01"]);
    store.create_machine(&m).await.unwrap();

    // Requesting sets the intent in the same transaction.
    let first = install(&m, "debian-12-amd64", "tok-first", 30);
    store.create_install(&first).await.unwrap();
    assert_eq!(
        store.get_machine(m.id).await.unwrap().intent,
        BootIntent::Install {
            id: first.id,
            os: "debian-12-amd64".into()
        }
    );
    let got = store.get_install(first.id).await.unwrap();
    assert_eq!(got.token, "tok-first");
    assert_eq!(got.vars, first.vars);
    assert_eq!(got.state, InstallState::Pending);

    // A second request cancels the first and takes over the intent.
    let second = install(&m, "rocky-9-x86_64", "tok-second", 31);
    store.create_install(&second).await.unwrap();
    let states: Vec<_> = store
        .list_installs(Some(m.id))
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.id, i.state))
        .collect();
    assert_eq!(
        states,
        [
            (first.id, InstallState::Cancelled),
            (second.id, InstallState::Pending)
        ]
    );
    let pending: Vec<_> = store
        .list_pending_installs()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(pending, [second.id]);
    assert!(matches!(
        store.complete_install(first.id, "tok-first", t(32)).await,
        Err(StoreError::Conflict(msg)) if msg.contains("cancelled")
    ));
    // A wrong token looks like a missing install.
    assert_not_found(
        store.complete_install(second.id, "tok-first", t(32)).await,
        "install",
        &second.id.to_string(),
    );

    let (done, changed) = store
        .complete_install(second.id, "tok-second", t(33))
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(done.state, InstallState::Completed);
    assert_eq!(done.completed_at, Some(truncate_ms(t(33))));
    assert_eq!(
        store.get_machine(m.id).await.unwrap().intent,
        BootIntent::LocalDisk
    );
    // Idempotent: the second callback changes nothing.
    let (again, changed) = store
        .complete_install(second.id, "tok-second", t(40))
        .await
        .unwrap();
    assert!(!changed);
    assert_eq!(again.completed_at, Some(truncate_ms(t(33))));

    // A callback never overrides an intent an operator set meanwhile.
    let third = install(&m, "debian-12-amd64", "tok-third", 50);
    store.create_install(&third).await.unwrap();
    let mut changed_by_operator = store.get_machine(m.id).await.unwrap();
    changed_by_operator.intent = BootIntent::Profile {
        name: Some("rescue".into()),
    };
    store.update_machine(&changed_by_operator).await.unwrap();
    store
        .complete_install(third.id, "tok-third", t(51))
        .await
        .unwrap();
    assert_eq!(
        store.get_machine(m.id).await.unwrap().intent,
        BootIntent::Profile {
            name: Some("rescue".into())
        }
    );

    let ghost = machine("ghost", &[]);
    assert_not_found(
        store
            .create_install(&install(&ghost, "x", "tok-ghost", 60))
            .await,
        "machine",
        &ghost.id.to_string(),
    );
    assert_eq!(store.list_installs(None).await.unwrap().len(), 3);
    // Deleting the machine removes its installs.
    store.delete_machine(m.id).await.unwrap();
    assert!(store.list_installs(None).await.unwrap().is_empty());
}

/// An install menu: several pending installs behind one menu intent; the
/// first callback completes its install, cancels the others and sets local disk.
async fn install_menu_lifecycle(store: Arc<dyn Store>) {
    let m = machine("menu-1", &["52:54:00:00:0c:02"]);
    store.create_machine(&m).await.unwrap();
    let earlier = install(&m, "debian-12-amd64", "tok-earlier", 10);
    store.create_install(&earlier).await.unwrap();

    let debian = install(&m, "debian-12-amd64", "tok-debian", 20);
    let rocky = install(&m, "rocky-9-x86_64", "tok-rocky", 21);
    let entry = |i: &InstallRequest| MenuEntry {
        install: Some(MenuInstall {
            id: i.id,
            os: i.os.clone(),
        }),
        label: Some(format!("Install {}", i.os)),
        ..Default::default()
    };
    let menu = BootIntent::Menu(Menu {
        entries: vec![entry(&debian), entry(&rocky)],
        default: None,
        timeout_secs: 30,
        loader: Some(LoaderKind::Pxelinux),
    });
    store
        .replace_installs(m.id, &[debian.clone(), rocky.clone()], &menu, t(20))
        .await
        .unwrap();
    assert_eq!(store.get_machine(m.id).await.unwrap().intent, menu);
    assert_eq!(menu.install_ids(), [debian.id, rocky.id]);
    let states = |store: Arc<dyn Store>| async move {
        store
            .list_installs(Some(m.id))
            .await
            .unwrap()
            .into_iter()
            .map(|i| (i.id, i.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        states(store.clone()).await,
        [
            (earlier.id, InstallState::Cancelled),
            (debian.id, InstallState::Pending),
            (rocky.id, InstallState::Pending),
        ]
    );

    // The operator picked Rocky at the console; its installer calls back.
    store
        .complete_install(rocky.id, "tok-rocky", t(25))
        .await
        .unwrap();
    assert_eq!(
        states(store.clone()).await,
        [
            (earlier.id, InstallState::Cancelled),
            (debian.id, InstallState::Cancelled),
            (rocky.id, InstallState::Completed),
        ]
    );
    assert_eq!(
        store.get_machine(m.id).await.unwrap().intent,
        BootIntent::LocalDisk
    );
    assert!(matches!(
        store.complete_install(debian.id, "tok-debian", t(26)).await,
        Err(StoreError::Conflict(_))
    ));
}

// ---------- every behaviour on every backend ----------

macro_rules! backend_suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;

            async fn db() -> TestDb {
                $open.await
            }

            backend_suite!(@tests
                machine_crud,
                machine_name_conflict,
                machine_mac_conflict,
                update_replaces_macs,
                delete_cascades_macs,
                profiles_crud,
                selectors_crud,
                leases_upsert_list_delete,
                leases_batch_of_1000,
                concurrent_lease_writers,
                events_append_and_filter,
                events_default_limit_and_paging,
                events_paging_sees_concurrent_appends,
                machine_bmc_keeps_sealed_password,
                templates_crud,
                install_lifecycle,
                install_menu_lifecycle,
            );
        }
    };
    (@tests $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let db = db().await;
                super::$name(db.store.clone()).await;
                db.finish().await;
            }
        )*
    };
}

backend_suite!(sqlite, TestDb::sqlite_file());
backend_suite!(sqlite_memory, TestDb::sqlite_memory());
backend_suite!(postgres, TestDb::postgres());

#[tokio::test]
async fn sqlite_reopen_keeps_data() {
    let db = TestDb::sqlite_file().await;
    reopen_keeps_data(&db).await;
    db.finish().await;
}

#[tokio::test]
async fn postgres_reopen_keeps_data() {
    let db = TestDb::postgres().await;
    reopen_keeps_data(&db).await;
    db.finish().await;
}

#[tokio::test]
async fn open_accepts_every_sqlite_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/state.db");
    for url in [
        path.display().to_string(),
        format!("sqlite:{}", path.display()),
        format!("sqlite://{}", path.display()),
    ] {
        let store = open(&url).await.unwrap();
        assert_eq!(store.backend(), "sqlite", "{url}");
        store.put_profile(&profile("p")).await.unwrap();
    }
    assert!(path.is_file());
    let store = open("sqlite::memory:").await.unwrap();
    assert_eq!(store.list_profiles().await.unwrap(), []);
}

#[tokio::test]
async fn open_errors_name_the_url_and_step() {
    // A directory where the database file should be.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().display());
    let err = open(&url).await.err().expect("open must fail").to_string();
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("opening database file"), "{err}");

    // A regular file where a parent directory should be.
    let file = tempfile::NamedTempFile::new().unwrap();
    let url = format!("sqlite:{}/state.db", file.path().display());
    let err = open(&url).await.err().unwrap().to_string();
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("creating parent directory"), "{err}");

    // Nothing listens on port 1; the password must not leak.
    let err = open("postgres://rackboot:hunter2@127.0.0.1:1/rackboot")
        .await
        .err()
        .expect("connecting to a closed port must fail")
        .to_string();
    assert!(
        err.contains("postgres://rackboot:***@127.0.0.1:1/rackboot"),
        "{err}"
    );
    assert!(
        err.contains("connecting") && !err.contains("hunter2"),
        "{err}"
    );
}
