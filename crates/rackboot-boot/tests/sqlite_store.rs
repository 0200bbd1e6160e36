//! The same discovery guarantees against the real SQLite store (its unique MAC
//! and name constraints are what turn a lost race into Conflict).

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{collect_events, count_of, kernel_profile, mac};
use rackboot_boot::{BootConfig, BootService, Fleet};
use rackboot_core::{Arch, BootResponder, EventHub, EventKind, LoaderKind, PxeClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_fifty_calls_one_machine() {
    let store = rackboot_store::open_sqlite_in_memory().await.unwrap();
    store
        .put_profile(&kernel_profile("inspect", LoaderKind::Ipxe))
        .await
        .unwrap();
    let (hub, queue) = EventHub::new(1024);
    let events = collect_events(queue);
    let config = BootConfig {
        discovery_profile: Some("inspect".into()),
        ..BootConfig::default()
    };
    let mut servers = Vec::new();
    for _ in 0..2 {
        let fleet = Fleet::load(store.clone(), None, hub.clone()).await.unwrap();
        servers.push(BootService::new(fleet, config.clone()).unwrap());
    }
    let client = PxeClient {
        arch: Arch::Bios,
        http_boot: false,
        ipxe: false,
        uuid: Some(uuid::Uuid::from_u128(7)),
        undi: None,
    };
    let mut tasks = Vec::new();
    for i in 0..50 {
        let server = servers[i % 2].clone();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis((i % 5) as u64 * 3)).await;
            server.dhcp_boot(
                mac("52:54:00:aa:00:01"),
                &client,
                Ipv4Addr::new(10, 77, 0, 1),
            )
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().filename, "undionly.kpxe");
    }
    for _ in 0..300 {
        if servers.iter().all(|s| s.discoveries_in_flight() == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let machines = store.list_machines().await.unwrap();
    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0].uuid, Some(uuid::Uuid::from_u128(7)));
    assert_eq!(machines[0].arch, Some(Arch::Bios));
    // Events reach the list through a task: wait for them (bounded), then
    // check there is exactly one.
    let mut discovered = 0;
    for _ in 0..500 {
        discovered = count_of(&events, EventKind::MachineDiscovered);
        if discovered >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(discovered, 1);
    for s in &servers {
        let snap = s.inventory().snapshot();
        assert!(snap.machine_by_mac(mac("52:54:00:aa:00:01")).is_some());
    }
}
