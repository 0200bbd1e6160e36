//! One behaviour suite, run against every backend: SQLite on a temp file, SQLite
//! in memory, and PostgreSQL (a fresh database per test; see `common`).

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use rackboot_core::{
    AgentSession, Arch, Batch, Bmc, BootIntent, Delivery, DeliveryState, EventKind, Facts,
    InstallRequest, InstallState, InstallTemplate, Lease, LeaseState, Lifecycle, LoaderKind,
    MacAddr, Machine, Maintenance, Menu, MenuEntry, MenuInstall, NewEvent, OsFamily, Profile,
    ProvisionState, RetryPolicy, Selector, StepRun, StepState, Transition, Webhook, Workflow,
    WorkflowState,
};
use rackboot_store::{
    EventFilter, LifecycleChange, Store, StoreError, WorkflowFilter, open, truncate_ms,
};
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
        // Not the defaults, so a round trip shows they were written.
        state: ProvisionState::Manageable,
        state_reason: Some("verified by web-admin".into()),
        state_changed_at: Some(t(2)),
        maintenance: Some(Maintenance {
            reason: "PSU swap, ticket OPS-1234".into(),
            by: "api:ops".into(),
            since: t(3),
        }),
        facts: Some(facts()),
        facts_at: Some(t(4)),
        created_at: t(0),
        updated_at: t(1),
    }
}

/// Inspection facts with every kind of field set (built from JSON: the agent's
/// nested fact types are not re-exported by rackboot-core).
fn facts() -> Facts {
    serde_json::from_value(json!({
        "cpu": {"model": "AMD EPYC 7543", "arch": "x86_64", "sockets": 2, "cores": 64,
                "threads": 128, "flags": ["avx2", "svm"]},
        "memory_bytes": 549_755_813_888u64,
        "dmi": {"vendor": "Dell Inc.", "product": "PowerEdge R7525", "serial": "ABC1234",
                "uuid": "4c4c4544-0042-4310-8031-b4c04f333233"},
        "disks": [{"name": "nvme0n1", "path": "/dev/nvme0n1", "size_bytes": 3_840_755_982_336u64,
                   "model": "Dell Ent NVMe", "wwn": "eui.36434830529001210025384700000001",
                   "rotational": false, "removable": false, "transport": "nvme",
                   "logical_block_size": 512, "physical_block_size": 4096, "discard": true}],
        "nics": [{"name": "eno1", "mac": "52:54:00:00:00:01", "driver": "bnxt_en",
                  "link_up": true, "speed_mbps": 25000, "mtu": 9000, "pci": "0000:41:00.0",
                  "lldp": {"chassis_id": "00:11:22:33:44:55", "port_id": "Ethernet12",
                           "system_name": "leaf-r12-a", "vlan_id": 120}}],
        "boot": {"mode": "uefi", "secure_boot": true},
        "kernel": "6.12.0-rackboot"
    }))
    .unwrap()
}

/// What the store gives back for `m`: timestamps at millisecond precision,
/// the maintenance flag's inside its JSON too.
fn stored(mut m: Machine) -> Machine {
    m.created_at = truncate_ms(m.created_at);
    m.updated_at = truncate_ms(m.updated_at);
    m.state_changed_at = m.state_changed_at.map(truncate_ms);
    m.facts_at = m.facts_at.map(truncate_ms);
    if let Some(flag) = &mut m.maintenance {
        flag.since = truncate_ms(flag.since);
    }
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
    b.state = ProvisionState::Enrolled;
    b.state_reason = None;
    b.state_changed_at = None;
    b.maintenance = None;
    b.facts = None;
    b.facts_at = None;
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
    a.state = ProvisionState::DeployFailed;
    a.state_reason = Some("step write-image failed: checksum mismatch".into());
    a.state_changed_at = Some(t(98));
    a.maintenance = None;
    a.facts.as_mut().unwrap().memory_bytes = 1 << 30;
    a.facts_at = Some(t(97));
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
/// The two-step end: the installer's "installed" moves the machine to its
/// disk and leaves the install `installed` (not pending: its files are gone)
/// until the installed system's first-boot report completes it.
async fn install_installed_then_completed(store: Arc<dyn Store>) {
    let m = machine("inst-2", &["52:54:00:00:0c:02"]);
    store.create_machine(&m).await.unwrap();
    let i = install(&m, "debian-12-amd64", "tok-two", 30);
    // And a second pending install of the same machine (as a menu has).
    let other = install(&m, "debian-12-amd64", "tok-other", 31);
    store
        .replace_installs(
            m.id,
            &[i.clone(), other.clone()],
            &BootIntent::Install {
                id: i.id,
                os: i.os.clone(),
            },
            t(31),
        )
        .await
        .unwrap();
    for bad in [InstallState::Pending, InstallState::Cancelled] {
        assert!(matches!(
            store.advance_install(i.id, "tok-two", bad, t(32)).await,
            Err(StoreError::Conflict(_))
        ));
    }
    assert_not_found(
        store
            .advance_install(i.id, "tok-other", InstallState::Installed, t(32))
            .await,
        "install",
        &i.id.to_string(),
    );
    let (installed, changed) = store
        .advance_install(i.id, "tok-two", InstallState::Installed, t(33))
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(installed.state, InstallState::Installed);
    assert_eq!(installed.completed_at, None);
    assert_eq!(
        store.get_machine(m.id).await.unwrap().intent,
        BootIntent::LocalDisk
    );
    assert!(store.list_pending_installs().await.unwrap().is_empty());
    assert_eq!(
        store.get_install(other.id).await.unwrap().state,
        InstallState::Cancelled
    );
    // A repeated "installed" changes nothing.
    let (_, changed) = store
        .advance_install(i.id, "tok-two", InstallState::Installed, t(34))
        .await
        .unwrap();
    assert!(!changed);
    // The first boot completes it.
    let (done, changed) = store
        .complete_install(i.id, "tok-two", t(40))
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(done.state, InstallState::Completed);
    assert_eq!(done.completed_at, Some(truncate_ms(t(40))));
    let stored = store.get_install(i.id).await.unwrap();
    assert_eq!(stored.state, InstallState::Completed);
    assert_eq!(stored.completed_at, Some(truncate_ms(t(40))));
    // "installed" after completion and a repeated completion change nothing.
    for to in [InstallState::Installed, InstallState::Completed] {
        let (again, changed) = store
            .advance_install(i.id, "tok-two", to, t(50))
            .await
            .unwrap();
        assert!(!changed);
        assert_eq!(again.state, InstallState::Completed);
    }

    // A new intent drops an install still waiting for its first boot.
    let j = install(&m, "debian-12-amd64", "tok-three", 60);
    store.create_install(&j).await.unwrap();
    store
        .advance_install(j.id, "tok-three", InstallState::Installed, t(61))
        .await
        .unwrap();
    let k = install(&m, "debian-12-amd64", "tok-four", 62);
    store.create_install(&k).await.unwrap();
    assert_eq!(
        store.get_install(j.id).await.unwrap().state,
        InstallState::Cancelled
    );
}

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

// ---------- lifecycle, workflows, agent sessions, webhooks ----------

fn transition(m: &Machine, from: ProvisionState, to: ProvisionState, at: i64) -> Transition {
    Transition {
        machine: m.id,
        at: t(at),
        from,
        to,
        by: "engine".into(),
        reason: format!("{from} to {to}"),
        workflow: None,
    }
}

fn stored_transition(mut tr: Transition) -> Transition {
    tr.at = truncate_ms(tr.at);
    tr
}

fn step(name: &str, after: &[&str], state: StepState) -> StepRun {
    StepRun {
        name: name.into(),
        uses: "write_image".into(),
        with: json!({"image": "ubuntu-24.04", "disk": "/dev/nvme0n1"}),
        after: after.iter().map(|s| s.to_string()).collect(),
        timeout_secs: 1800,
        retry: RetryPolicy::default(),
        state,
        attempts: 1,
        attempt: Some(uuid::Uuid::new_v4()),
        started_at: Some(t(101)),
        attempt_started_at: Some(t(102)),
        finished_at: None,
        deadline: Some(t(1901)),
        retry_at: Some(t(103)),
        waiting_for: Some("the agent to boot".into()),
        // Agent output may hold anything; a NUL is what jsonb would refuse.
        error: Some("dd: short write\0 at byte 512 ✗".into()),
        output: json!({"written_bytes": u64::MAX, "ratio": 0.1}),
    }
}

fn workflow(m: &Machine, name: &str, state: WorkflowState, created: i64) -> Workflow {
    Workflow {
        id: uuid::Uuid::new_v4(),
        machine: m.id,
        name: name.into(),
        lifecycle: Lifecycle::Deploy,
        state,
        started_from: ProvisionState::Available,
        params: json!({"image": "ubuntu-24.04", "ssh_keys": ["ssh-ed25519 AAAA x@y"]}),
        steps: vec![
            step("power-on", &[], StepState::Succeeded),
            step("write-image", &["power-on"], StepState::Running),
        ],
        created_by: "api:ops".into(),
        created_at: t(created),
        started_at: Some(t(created + 1)),
        finished_at: Some(t(created + 2)),
        updated_at: t(created + 3),
        error: None,
        batch: Some(Batch {
            id: uuid::Uuid::new_v4(),
            limit: 4,
        }),
    }
}

/// What the store gives back: every timestamp, the steps' too, to the millisecond.
fn stored_wf(mut w: Workflow) -> Workflow {
    let ms = |o: &mut Option<DateTime<Utc>>| *o = o.map(truncate_ms);
    w.created_at = truncate_ms(w.created_at);
    w.updated_at = truncate_ms(w.updated_at);
    ms(&mut w.started_at);
    ms(&mut w.finished_at);
    for s in &mut w.steps {
        ms(&mut s.started_at);
        ms(&mut s.attempt_started_at);
        ms(&mut s.finished_at);
        ms(&mut s.deadline);
        ms(&mut s.retry_at);
    }
    w
}

fn change(
    m: &Machine,
    expect: Option<ProvisionState>,
    to: ProvisionState,
    at: i64,
) -> LifecycleChange {
    LifecycleChange {
        machine: m.id,
        expect_state: expect,
        state: to,
        state_reason: Some(format!("now {to}")),
        intent: None,
        transition: transition(m, expect.unwrap_or(m.state), to, at),
        workflow: None,
    }
}

async fn transitions_of(
    store: &Arc<dyn Store>,
    m: &Machine,
) -> Vec<(ProvisionState, ProvisionState)> {
    store
        .list_transitions(m.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.from, t.to))
        .collect()
}

async fn lifecycle_compare_and_set(store: Arc<dyn Store>) {
    let m = machine("cas-1", &["52:54:00:00:0d:01"]);
    store.create_machine(&m).await.unwrap();
    let wf = workflow(&m, "deploy", WorkflowState::Running, 200);

    let mut deploy = change(
        &m,
        Some(ProvisionState::Manageable),
        ProvisionState::Deploying,
        210,
    );
    deploy.transition.workflow = Some(wf.id);
    deploy.workflow = Some(wf.clone());
    store.apply_lifecycle(&deploy).await.unwrap();
    let got = store.get_machine(m.id).await.unwrap();
    assert_eq!(got.state, ProvisionState::Deploying);
    assert_eq!(got.state_reason.as_deref(), Some("now deploying"));
    assert_eq!(got.state_changed_at, Some(truncate_ms(t(210))));
    assert_eq!(got.updated_at, truncate_ms(t(210)));
    // Everything else is untouched.
    assert_eq!(
        got,
        stored(Machine {
            state: ProvisionState::Deploying,
            state_reason: Some("now deploying".into()),
            state_changed_at: Some(t(210)),
            updated_at: t(210),
            ..m.clone()
        })
    );
    assert_eq!(
        store.get_workflow(wf.id).await.unwrap(),
        stored_wf(wf.clone())
    );
    assert_eq!(
        store.list_transitions(m.id, 0).await.unwrap(),
        [stored_transition(deploy.transition.clone())]
    );

    // The same expectation again: refused, naming the machine and both states,
    // and nothing of it is written (its workflow included).
    let mut stale = change(
        &m,
        Some(ProvisionState::Manageable),
        ProvisionState::Cleaning,
        220,
    );
    let mut other_wf = wf.clone();
    other_wf.state = WorkflowState::Aborted;
    stale.workflow = Some(other_wf);
    let msg = conflict_message(store.apply_lifecycle(&stale).await);
    assert!(
        msg.contains("cas-1") && msg.contains("deploying") && msg.contains("manageable"),
        "{msg}"
    );
    assert_eq!(store.get_machine(m.id).await.unwrap(), got);
    assert_eq!(
        store.get_workflow(wf.id).await.unwrap().state,
        WorkflowState::Running
    );
    assert_eq!(store.list_transitions(m.id, 0).await.unwrap().len(), 1);

    // No expectation: applied whatever the state.
    let mut force = change(&m, None, ProvisionState::DeployFailed, 230);
    force.state_reason = None;
    store.apply_lifecycle(&force).await.unwrap();
    let got = store.get_machine(m.id).await.unwrap();
    assert_eq!(got.state, ProvisionState::DeployFailed);
    assert_eq!(got.state_reason, None, "a None reason clears the old one");

    // A gone machine, and a transition of another machine.
    let ghost = machine("ghost", &[]);
    assert_not_found(
        store
            .apply_lifecycle(&change(&ghost, None, ProvisionState::Active, 240))
            .await,
        "machine",
        &ghost.id.to_string(),
    );
    let mut mismatched = change(&m, None, ProvisionState::Active, 240);
    mismatched.transition.machine = ghost.id;
    assert!(matches!(
        store.apply_lifecycle(&mismatched).await,
        Err(StoreError::Conflict(msg)) if msg.contains(&ghost.id.to_string())
    ));
    assert_eq!(store.list_transitions(m.id, 0).await.unwrap().len(), 2);

    // Racing changes with one expectation: exactly one wins.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let c = change(
                &m,
                Some(ProvisionState::DeployFailed),
                ProvisionState::Deploying,
                300 + i,
            );
            tokio::spawn(async move { store.apply_lifecycle(&c).await })
        })
        .collect();
    let mut won = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::Conflict(msg)) => assert!(msg.contains("deploying"), "{msg}"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.list_transitions(m.id, 0).await.unwrap().len(), 3);
}

async fn lifecycle_intent_cancels_installs(store: Arc<dyn Store>) {
    let m = machine("agent-1", &["52:54:00:00:0d:02"]);
    store.create_machine(&m).await.unwrap();
    let inst = install(&m, "debian-12-amd64", "tok-agent-1", 30);
    store.create_install(&inst).await.unwrap();
    let wf = workflow(&m, "inspect", WorkflowState::Running, 40);
    let agent = BootIntent::Agent {
        workflow: Some(wf.id),
    };
    let pending = |store: Arc<dyn Store>| async move {
        store
            .list_pending_installs()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect::<Vec<_>>()
    };

    // A refused change (compare-and-set) touches neither intent nor installs.
    let mut refused = change(
        &m,
        Some(ProvisionState::Available),
        ProvisionState::Inspecting,
        41,
    );
    refused.intent = Some(agent.clone());
    conflict_message(store.apply_lifecycle(&refused).await);
    // A change whose last write fails (its workflow names a gone machine) is
    // rolled back whole: the intent it set and the installs it cancelled too.
    let ghost = machine("ghost", &[]);
    let mut failing = change(
        &m,
        Some(ProvisionState::Manageable),
        ProvisionState::Inspecting,
        41,
    );
    failing.intent = Some(agent.clone());
    failing.workflow = Some(workflow(&ghost, "inspect", WorkflowState::Running, 40));
    assert_not_found(
        store.apply_lifecycle(&failing).await,
        "machine",
        &ghost.id.to_string(),
    );
    let still = store.get_machine(m.id).await.unwrap();
    assert_eq!(still.state, ProvisionState::Manageable);
    assert_eq!(
        still.intent,
        BootIntent::Install {
            id: inst.id,
            os: inst.os.clone()
        }
    );
    assert_eq!(pending(store.clone()).await, [inst.id]);
    assert!(store.list_transitions(m.id, 0).await.unwrap().is_empty());

    let mut inspect = change(
        &m,
        Some(ProvisionState::Manageable),
        ProvisionState::Inspecting,
        42,
    );
    inspect.intent = Some(agent.clone());
    inspect.workflow = Some(wf.clone());
    store.apply_lifecycle(&inspect).await.unwrap();
    let got = store.get_machine(m.id).await.unwrap();
    assert_eq!(got.intent, agent);
    assert_eq!(got.state, ProvisionState::Inspecting);
    assert_eq!(pending(store.clone()).await, Vec::<uuid::Uuid>::new());
    assert_eq!(
        store.get_install(inst.id).await.unwrap().state,
        InstallState::Cancelled
    );
    // Without an intent the intent stays.
    store
        .apply_lifecycle(&change(&m, None, ProvisionState::Manageable, 43))
        .await
        .unwrap();
    assert_eq!(store.get_machine(m.id).await.unwrap().intent, agent);
}

async fn maintenance_and_facts(store: Arc<dyn Store>) {
    let mut m = machine("maint-1", &["52:54:00:00:0d:03"]);
    m.maintenance = None;
    m.facts = None;
    m.facts_at = None;
    store.create_machine(&m).await.unwrap();
    let flag = Maintenance {
        reason: "DIMM B2 errors".into(),
        by: "api:ops".into(),
        since: t(50),
    };
    // The caller's from/to are stale: the store records the current state.
    let mut tr = transition(&m, ProvisionState::Active, ProvisionState::Active, 50);
    tr.reason = "maintenance set: DIMM B2 errors".into();
    store.set_maintenance(m.id, Some(&flag), &tr).await.unwrap();
    let got = store.get_machine(m.id).await.unwrap();
    assert_eq!(
        got.maintenance,
        Some(Maintenance {
            since: truncate_ms(t(50)),
            ..flag.clone()
        })
    );
    assert_eq!(
        got.state,
        ProvisionState::Manageable,
        "the state does not move"
    );
    assert_eq!(got.updated_at, truncate_ms(t(50)));
    let mut clear = transition(
        &m,
        ProvisionState::Manageable,
        ProvisionState::Manageable,
        51,
    );
    clear.reason = "maintenance cleared".into();
    store.set_maintenance(m.id, None, &clear).await.unwrap();
    assert_eq!(store.get_machine(m.id).await.unwrap().maintenance, None);
    assert_eq!(
        store.list_transitions(m.id, 0).await.unwrap(),
        [
            Transition {
                from: ProvisionState::Manageable,
                to: ProvisionState::Manageable,
                ..stored_transition(tr)
            },
            stored_transition(clear)
        ]
    );
    let ghost = machine("ghost", &[]);
    assert_not_found(
        store
            .set_maintenance(
                ghost.id,
                Some(&flag),
                &transition(&ghost, m.state, m.state, 52),
            )
            .await,
        "machine",
        &ghost.id.to_string(),
    );

    store.set_facts(m.id, &facts(), t(60)).await.unwrap();
    let got = store.get_machine(m.id).await.unwrap();
    assert_eq!(got.facts, Some(facts()));
    assert_eq!(got.facts_at, Some(truncate_ms(t(60))));
    assert_eq!(got.facts.unwrap().memory_gib(), 512);
    let mut fewer = facts();
    fewer.disks.clear();
    store.set_facts(m.id, &fewer, t(61)).await.unwrap();
    assert_eq!(store.get_machine(m.id).await.unwrap().facts, Some(fewer));
    assert_not_found(
        store.set_facts(ghost.id, &facts(), t(62)).await,
        "machine",
        &ghost.id.to_string(),
    );
}

async fn transitions_order_and_limit(store: Arc<dyn Store>) {
    let a = machine("tr-a", &["52:54:00:00:0d:04"]);
    let b = machine("tr-b", &["52:54:00:00:0d:05"]);
    store.create_machine(&a).await.unwrap();
    store.create_machine(&b).await.unwrap();
    let path = [
        ProvisionState::Manageable,
        ProvisionState::Cleaning,
        ProvisionState::Available,
        ProvisionState::Deploying,
        ProvisionState::Active,
    ];
    for (i, pair) in path.windows(2).enumerate() {
        // Times go backwards: the log is ordered by when it was written.
        let c = change(&a, Some(pair[0]), pair[1], 100 - i as i64);
        store.apply_lifecycle(&c).await.unwrap();
        store
            .apply_lifecycle(&change(&b, None, pair[1], 200))
            .await
            .unwrap();
    }
    let all = store.list_transitions(a.id, 0).await.unwrap();
    assert_eq!(
        all.iter().map(|t| (t.from, t.to)).collect::<Vec<_>>(),
        path.windows(2).map(|p| (p[0], p[1])).collect::<Vec<_>>()
    );
    assert!(all.iter().all(|t| t.machine == a.id));
    assert_eq!(all[0].at, truncate_ms(t(100)));
    assert_eq!(all[0].by, "engine");
    // The newest two, still oldest first.
    let last2 = store.list_transitions(a.id, 2).await.unwrap();
    assert_eq!(last2, all[2..]);
    assert_eq!(store.list_transitions(b.id, 1).await.unwrap().len(), 1);
    assert_eq!(
        store
            .list_transitions(uuid::Uuid::new_v4(), 0)
            .await
            .unwrap(),
        []
    );
}

async fn workflows_put_get_list(store: Arc<dyn Store>) {
    let a = machine("wf-a", &["52:54:00:00:0e:01"]);
    let b = machine("wf-b", &["52:54:00:00:0e:02"]);
    store.create_machine(&a).await.unwrap();
    store.create_machine(&b).await.unwrap();
    let a1 = workflow(&a, "inspect", WorkflowState::Succeeded, 10);
    let a2 = workflow(&a, "deploy", WorkflowState::Running, 30);
    let b1 = workflow(&b, "clean", WorkflowState::Queued, 20);
    let mut b2 = workflow(&b, "deploy", WorkflowState::Failed, 40);
    b2.error = Some("step erase failed".into());
    b2.batch = None;
    b2.steps.clear();
    for w in [&a1, &a2, &b1, &b2] {
        store.put_workflow(w).await.unwrap();
    }
    // get == put, every timestamp at millisecond precision (the body's too).
    for w in [&a1, &a2, &b1, &b2] {
        assert_eq!(
            store.get_workflow(w.id).await.unwrap(),
            stored_wf(w.clone())
        );
    }
    let got = store.get_workflow(a1.id).await.unwrap();
    assert_eq!(
        got.steps[0].error.as_deref(),
        Some("dd: short write\0 at byte 512 ✗")
    );
    assert_eq!(got.steps[0].output["written_bytes"], json!(u64::MAX));

    let names = |filter: WorkflowFilter| {
        let store = store.clone();
        async move {
            store
                .list_workflows(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|w| format!("{}/{}", w.machine == a.id, w.name))
                .collect::<Vec<_>>()
        }
    };
    // Newest first.
    assert_eq!(
        names(WorkflowFilter::default()).await,
        ["false/deploy", "true/deploy", "false/clean", "true/inspect"]
    );
    assert_eq!(
        store
            .list_workflows(&WorkflowFilter::default())
            .await
            .unwrap()[0],
        stored_wf(b2.clone())
    );
    assert_eq!(
        names(WorkflowFilter {
            machine: Some(a.id),
            ..Default::default()
        })
        .await,
        ["true/deploy", "true/inspect"]
    );
    assert_eq!(
        names(WorkflowFilter {
            states: vec![WorkflowState::Queued, WorkflowState::Running],
            ..Default::default()
        })
        .await,
        ["true/deploy", "false/clean"]
    );
    assert_eq!(
        names(WorkflowFilter {
            machine: Some(b.id),
            states: vec![WorkflowState::Queued, WorkflowState::Running],
            limit: 0,
        })
        .await,
        ["false/clean"]
    );
    assert_eq!(
        names(WorkflowFilter {
            limit: 2,
            ..Default::default()
        })
        .await,
        ["false/deploy", "true/deploy"]
    );
    assert_eq!(
        names(WorkflowFilter {
            states: vec![WorkflowState::Aborted],
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );

    // Replacing: the whole workflow (state, steps) changes, listings follow.
    let mut a2_done = a2.clone();
    a2_done.state = WorkflowState::Succeeded;
    a2_done.steps[1].state = StepState::Succeeded;
    a2_done.steps[1].finished_at = Some(t(35));
    a2_done.updated_at = t(36);
    store.put_workflow(&a2_done).await.unwrap();
    assert_eq!(
        store.get_workflow(a2.id).await.unwrap(),
        stored_wf(a2_done.clone())
    );
    assert_eq!(
        names(WorkflowFilter {
            states: vec![WorkflowState::Running],
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );

    assert_not_found(
        store.get_workflow(uuid::Uuid::nil()).await,
        "workflow",
        &uuid::Uuid::nil().to_string(),
    );
    let ghost = machine("ghost", &[]);
    assert_not_found(
        store
            .put_workflow(&workflow(&ghost, "x", WorkflowState::Queued, 1))
            .await,
        "machine",
        &ghost.id.to_string(),
    );
}

/// A workflow row whose JSON body no longer decodes is Corrupt naming the table.
async fn workflow_corrupt_body(db: &TestDb) {
    let m = machine("corrupt-1", &["52:54:00:00:0e:03"]);
    db.store.create_machine(&m).await.unwrap();
    let w = workflow(&m, "deploy", WorkflowState::Running, 10);
    db.store.put_workflow(&w).await.unwrap();
    let sql = "UPDATE workflows SET body = '{\"id\": 42}'";
    if db.url.starts_with("postgres") {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db.url)
            .await
            .unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    for err in [
        db.store.get_workflow(w.id).await.err(),
        db.store
            .list_workflows(&WorkflowFilter::default())
            .await
            .err(),
    ] {
        match err {
            Some(StoreError::Corrupt { table, detail }) => {
                assert_eq!(table, "workflows");
                assert!(detail.contains(&w.id.to_string()), "{detail}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}

fn session(m: &Machine, hash: &str, ip: &str) -> AgentSession {
    AgentSession {
        machine: m.id,
        token_sha256: hash.into(),
        bound_ip: ip.parse().unwrap(),
        issued_at: t(70),
        workflow: Some(uuid::Uuid::new_v4()),
        instance: None,
        boot_id: None,
    }
}

fn stored_session(mut s: AgentSession) -> AgentSession {
    s.issued_at = truncate_ms(s.issued_at);
    s
}

async fn agent_sessions(store: Arc<dyn Store>) {
    let m1 = machine("ag-1", &["52:54:00:00:0f:01"]);
    let m2 = machine("ag-2", &["52:54:00:00:0f:02"]);
    let m3 = machine("ag-3", &["52:54:00:00:0f:03"]);
    for m in [&m1, &m2, &m3] {
        store.create_machine(m).await.unwrap();
    }
    let (h1, h2) = ("a".repeat(64), "b".repeat(64));
    let first = session(&m1, &h1, "10.0.0.21");
    store.put_agent_session(&first).await.unwrap();
    assert_eq!(
        store.list_agent_sessions().await.unwrap(),
        [stored_session(first.clone())]
    );

    // A new token for the machine replaces the session: the old hash is gone.
    let mut second = session(&m1, &h2, "fd00::21");
    second.instance = Some(uuid::Uuid::new_v4());
    second.boot_id = Some("5f1c3a7e-1111-4222-8333-944445555666".into());
    second.issued_at = t(80);
    store.put_agent_session(&second).await.unwrap();
    assert_eq!(
        store.list_agent_sessions().await.unwrap(),
        [stored_session(second.clone())]
    );
    // So another machine may hold it now; the current one stays unique.
    let other = session(&m2, &h1, "10.0.0.22");
    store.put_agent_session(&other).await.unwrap();
    let msg = conflict_message(
        store
            .put_agent_session(&session(&m3, &h2, "10.0.0.23"))
            .await,
    );
    assert!(msg.contains(&m3.id.to_string()), "{msg}");
    let mut want = vec![
        stored_session(second.clone()),
        stored_session(other.clone()),
    ];
    want.sort_by_key(|s| s.machine.to_string());
    assert_eq!(store.list_agent_sessions().await.unwrap(), want);

    let ghost = machine("ghost", &[]);
    assert_not_found(
        store
            .put_agent_session(&session(&ghost, &"c".repeat(64), "10.0.0.9"))
            .await,
        "machine",
        &ghost.id.to_string(),
    );
    store.delete_agent_session(m1.id).await.unwrap();
    assert_not_found(
        store.delete_agent_session(m1.id).await,
        "agent session",
        &m1.id.to_string(),
    );
    assert_eq!(
        store.list_agent_sessions().await.unwrap(),
        [stored_session(other)]
    );
}

fn webhook(name: &str, created: i64) -> Webhook {
    Webhook {
        name: name.into(),
        url: format!("https://hooks.example/{name}"),
        events: vec!["warnings".into(), "workflow_succeeded".into()],
        enabled: true,
        created_at: t(created),
        sealed_secret: format!("v1:sealed-{name}"),
    }
}

fn delivery(hook: &str, event_id: i64, next_attempt: i64) -> Delivery {
    Delivery {
        id: 0,
        webhook: hook.into(),
        event_id,
        event_kind: EventKind::WorkflowFailed,
        body: format!(
            r#"{{"id":{event_id},  "kind":"workflow_failed","note":"kept byte for byte"}}"#
        ),
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: t(next_attempt),
        last_status: None,
        last_error: None,
        created_at: t(1),
        delivered_at: None,
    }
}

async fn webhooks_crud(store: Arc<dyn Store>) {
    let a = webhook("alerts", 10);
    let b = webhook("audit", 11);
    store.put_webhook(&b).await.unwrap();
    store.put_webhook(&a).await.unwrap();
    let stored_hook = |mut w: Webhook| {
        w.created_at = truncate_ms(w.created_at);
        w
    };
    assert_eq!(
        store.list_webhooks().await.unwrap(),
        [stored_hook(a.clone()), stored_hook(b.clone())]
    );
    assert_eq!(
        store.list_webhooks().await.unwrap()[0].sealed_secret,
        "v1:sealed-alerts"
    );
    store
        .enqueue_deliveries(&[delivery("alerts", 1, 5), delivery("audit", 1, 5)])
        .await
        .unwrap();

    // Replacing keeps created_at (and the webhook's deliveries).
    let mut a2 = a.clone();
    a2.url = "http://127.0.0.1:9/new".into();
    a2.events = vec!["*".into()];
    a2.enabled = false;
    a2.sealed_secret = "v1:rotated".into();
    a2.created_at = t(99);
    store.put_webhook(&a2).await.unwrap();
    assert_eq!(
        store.list_webhooks().await.unwrap()[0],
        Webhook {
            created_at: truncate_ms(a.created_at),
            ..a2.clone()
        }
    );
    assert_eq!(
        store
            .list_deliveries(Some("alerts"), 0)
            .await
            .unwrap()
            .len(),
        1
    );

    // Deleting a webhook deletes its deliveries, and only its.
    store.delete_webhook("alerts").await.unwrap();
    assert_eq!(
        store.list_webhooks().await.unwrap(),
        [stored_hook(b.clone())]
    );
    assert!(
        store
            .list_deliveries(Some("alerts"), 0)
            .await
            .unwrap()
            .is_empty()
    );
    let left = store.list_deliveries(None, 0).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].webhook, "audit");
    assert_not_found(store.delete_webhook("alerts").await, "webhook", "alerts");
    // Re-creating the name does not bring old deliveries back.
    store.put_webhook(&a).await.unwrap();
    assert!(
        store
            .list_deliveries(Some("alerts"), 0)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn deliveries_outbox(store: Arc<dyn Store>) {
    store.put_webhook(&webhook("alerts", 1)).await.unwrap();
    store.put_webhook(&webhook("audit", 1)).await.unwrap();
    assert_eq!(store.enqueue_deliveries(&[]).await.unwrap(), []);
    let batch = [
        delivery("alerts", 1, 30),
        delivery("audit", 1, 10),
        delivery("alerts", 2, 20),
        delivery("audit", 2, 40),
    ];
    let queued = store.enqueue_deliveries(&batch).await.unwrap();
    assert!(queued.windows(2).all(|w| w[0].id < w[1].id), "{queued:?}");
    for (q, d) in queued.iter().zip(&batch) {
        assert_eq!(
            *q,
            Delivery {
                id: q.id,
                next_attempt_at: truncate_ms(d.next_attempt_at),
                created_at: truncate_ms(d.created_at),
                ..d.clone()
            }
        );
    }
    // Listing gives back exactly what enqueue returned, newest first.
    let mut newest_first = queued.clone();
    newest_first.reverse();
    assert_eq!(store.list_deliveries(None, 0).await.unwrap(), newest_first);
    assert_eq!(
        store.list_deliveries(Some("audit"), 1).await.unwrap(),
        [queued[3].clone()]
    );

    // Due: pending, next attempt at or before now, oldest first, at most limit.
    let ids = |ds: Vec<Delivery>| ds.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.due_deliveries(t(5), 10).await.unwrap()),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(store.due_deliveries(t(20), 10).await.unwrap()),
        [queued[1].id, queued[2].id],
        "at `now` exactly is due"
    );
    assert_eq!(
        ids(store.due_deliveries(t(100), 10).await.unwrap()),
        ids(queued.clone())
    );
    assert_eq!(
        ids(store.due_deliveries(t(100), 2).await.unwrap()),
        [queued[0].id, queued[1].id]
    );

    // Delivered and failed ones are never due again; a retry moves the time.
    let mut done = queued[0].clone();
    done.state = DeliveryState::Delivered;
    done.attempts = 1;
    done.last_status = Some(204);
    done.delivered_at = Some(t(31));
    store.update_delivery(&done).await.unwrap();
    let mut gave_up = queued[1].clone();
    gave_up.state = DeliveryState::Failed;
    gave_up.attempts = 8;
    gave_up.last_status = Some(503);
    gave_up.last_error = Some("HTTP 503 Service Unavailable".into());
    store.update_delivery(&gave_up).await.unwrap();
    let mut retry = queued[2].clone();
    retry.attempts = 1;
    retry.next_attempt_at = t(60);
    retry.last_error = Some("connection refused".into());
    store.update_delivery(&retry).await.unwrap();
    assert_eq!(
        ids(store.due_deliveries(t(50), 10).await.unwrap()),
        [queued[3].id]
    );
    assert_eq!(
        store.due_deliveries(t(60), 10).await.unwrap(),
        [
            Delivery {
                next_attempt_at: truncate_ms(t(60)),
                ..retry.clone()
            },
            queued[3].clone()
        ]
    );
    let listed = store.list_deliveries(None, 0).await.unwrap();
    assert_eq!(
        listed[3],
        Delivery {
            delivered_at: Some(truncate_ms(t(31))),
            ..done.clone()
        }
    );
    assert_eq!(listed[2], gave_up);

    let mut ghost = done.clone();
    ghost.id = queued[3].id + 1000;
    assert_not_found(
        store.update_delivery(&ghost).await,
        "delivery",
        &ghost.id.to_string(),
    );
    // A batch naming a missing webhook is refused whole.
    assert_not_found(
        store
            .enqueue_deliveries(&[delivery("alerts", 3, 1), delivery("gone", 3, 1)])
            .await,
        "webhook",
        "gone",
    );
    assert_eq!(store.list_deliveries(None, 0).await.unwrap().len(), 4);
}

async fn delete_machine_cascades_lifecycle(store: Arc<dyn Store>) {
    let m = machine("gone-1", &["52:54:00:00:10:01"]);
    let keep = machine("keep-1", &["52:54:00:00:10:02"]);
    store.create_machine(&m).await.unwrap();
    store.create_machine(&keep).await.unwrap();
    let hash = "d".repeat(64);
    for owner in [&m, &keep] {
        let w = workflow(owner, "deploy", WorkflowState::Running, 10);
        let mut c = change(owner, None, ProvisionState::Deploying, 11);
        c.workflow = Some(w);
        store.apply_lifecycle(&c).await.unwrap();
    }
    store
        .put_agent_session(&session(&m, &hash, "10.0.0.31"))
        .await
        .unwrap();
    let wf_of_m = store
        .list_workflows(&WorkflowFilter {
            machine: Some(m.id),
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .id;

    store.delete_machine(m.id).await.unwrap();
    assert_not_found(
        store.get_workflow(wf_of_m).await,
        "workflow",
        &wf_of_m.to_string(),
    );
    assert_eq!(store.list_transitions(m.id, 0).await.unwrap(), []);
    assert_eq!(store.list_agent_sessions().await.unwrap(), []);
    assert_eq!(
        store
            .list_workflows(&WorkflowFilter::default())
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(transitions_of(&store, &keep).await.len(), 1);
    // The deleted session's token hash is free again.
    store
        .put_agent_session(&session(&keep, &hash, "10.0.0.32"))
        .await
        .unwrap();
}

// ---------- every behaviour on every backend ----------

macro_rules! backend_suite {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;

            async fn db() -> TestDb {
                $open.await
            }

            fn available() -> bool {
                common::backend_available(stringify!($backend))
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
                install_installed_then_completed,
                install_menu_lifecycle,
                lifecycle_compare_and_set,
                lifecycle_intent_cancels_installs,
                maintenance_and_facts,
                transitions_order_and_limit,
                workflows_put_get_list,
                agent_sessions,
                webhooks_crud,
                deliveries_outbox,
                delete_machine_cascades_lifecycle,
            );
        }
    };
    (@tests $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                if !available() {
                    return;
                }
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
    if !common::backend_available("postgres") {
        return;
    }
    let db = TestDb::postgres().await;
    reopen_keeps_data(&db).await;
    db.finish().await;
}

#[tokio::test]
async fn sqlite_workflow_corrupt_body() {
    let db = TestDb::sqlite_file().await;
    workflow_corrupt_body(&db).await;
    db.finish().await;
}

#[tokio::test]
async fn postgres_workflow_corrupt_body() {
    if !common::backend_available("postgres") {
        return;
    }
    let db = TestDb::postgres().await;
    workflow_corrupt_body(&db).await;
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
