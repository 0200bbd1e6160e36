//! Two real `rackboot serve` processes handing out one pool, on one
//! PostgreSQL database, under real DHCP load: perfdhcp's simulated clients
//! broadcast on a bridge both servers listen on; the two servers split the
//! clients between them (each client's exchanges go to one server), no
//! address is ever acknowledged to two clients, every client gets one, and
//! no client ends up holding two. Root: network namespaces.
//!
//! The servers run in their own namespaces and reach PostgreSQL through its
//! unix socket (the test cluster's directory), so nothing leaves the test's
//! namespaces and loopback.

mod cluster_net;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cluster_net::{Net, Server, fresh_database};

/// The pool and cluster settings of both servers.
fn sections(name: &str) -> String {
    format!(
        "[dhcp]\ncommit_window_ms = 10\n[dhcp.probe]\nenabled = false\n\
         [[dhcp.subnets]]\nname = \"lab\"\ncidr = \"10.81.0.0/16\"\n\
         ranges = [\"10.81.1.0-10.81.1.79\"]\nlease_time_secs = 3600\n\
         [cluster]\nname = {name:?}\nheartbeat_ms = 500\ndead_after_ms = 2500\n"
    )
}

#[test]
fn two_servers_on_one_pool_never_give_an_address_twice() {
    if !rackboot_testenv::privileged("root: network namespaces, PostgreSQL, Kea's perfdhcp") {
        return;
    }
    let store = fresh_database("dhcp");
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new(&["a", "b"]);
    let a = Server::start(&net, dir.path(), "a", &store, &sections("a"));
    let mut b = Server::start(&net, dir.path(), "b", &store, &sections("b"));
    // 60 clients on an 80-address pool, 40 exchanges/s for 8 s (re-DORAs of
    // the same clients): with both servers offering every client fresh
    // addresses, clients ended with two and the pool ran dry.
    const CLIENTS: u32 = 60;
    let report = re_doras(&net, CLIENTS, 8);
    eprintln!("{report}");

    // Every ACK either server sent, from the shared event log.
    let mut acked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_server = [0usize; 2];
    let mut cursor = 0i64;
    for e in a.settled_events("lease_acked", 0) {
        let ip = e["data"]["ip"].as_str().unwrap().to_string();
        let mac = e["mac"].as_str().unwrap().to_string();
        acked.entry(ip).or_default().insert(mac);
        cursor = e["id"].as_i64().unwrap();
    }
    for (i, s) in [(0, &a), (1, &b)] {
        by_server[i] = s.metric("rackboot_dhcp_replied_total{type=\"ack\"}") as usize;
    }
    let lost: f64 = [&a, &b]
        .iter()
        .map(|s| s.metric("rackboot_dhcp_claims_lost_total"))
        .sum();
    let left_to_peer: Vec<f64> = [&a, &b]
        .iter()
        .map(|s| s.metric("rackboot_dhcp_peer_owned_total"))
        .collect();
    // Clients holding more than one address (not a fault: an address a
    // client stopped using is its until the lease ends), for the log.
    let mut per_client: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
    for (ip, macs) in &acked {
        for m in macs {
            per_client.entry(m).or_default().push(ip);
        }
    }
    let several: Vec<_> = per_client.iter().filter(|(_, ips)| ips.len() > 1).collect();
    eprintln!("clients acknowledged more than one address: {several:?}");
    let twice: Vec<(&String, &BTreeSet<String>)> =
        acked.iter().filter(|(_, macs)| macs.len() > 1).collect();
    eprintln!(
        "{} addresses acknowledged to {} clients; ACKs sent by a: {}, by b: {}; \
         left to the peer by a: {}, by b: {}; claims lost (re-offered or refused): {lost}",
        acked.len(),
        acked.values().flatten().collect::<BTreeSet<_>>().len(),
        by_server[0],
        by_server[1],
        left_to_peer[0],
        left_to_peer[1],
    );
    if let Some((ip, _)) = twice.first() {
        // What happened to that address, for whoever reads the failure.
        let events = a.get("/api/v1/events?limit=1000&kind=lease_acked");
        for e in events.as_array().unwrap() {
            if e["data"]["ip"] == ip.as_str() {
                eprintln!(
                    "  {} {} (server {})",
                    e["at"], e["message"], e["data"]["server"]
                );
            }
        }
    }
    assert!(
        twice.is_empty(),
        "addresses acknowledged to two clients: {twice:?}"
    );
    let clients: BTreeSet<&String> = acked.values().flatten().collect();
    assert_eq!(
        clients.len() as u32,
        CLIENTS,
        "not every client got an address:\n{report}"
    );
    assert!(
        by_server[0] > 0 && by_server[1] > 0,
        "one server answered everything: {by_server:?}"
    );
    assert!(
        left_to_peer[0] > 0.0 && left_to_peer[1] > 0.0,
        "each server leaves the other's clients to it: {left_to_peer:?}"
    );
    // The store agrees: each bound address has one client, and no client
    // (MAC and client id) is bound to two addresses (the leases last an
    // hour: every binding of the run is still live).
    let leases = a.get("/api/v1/leases?limit=10000");
    let mut holders: BTreeMap<String, String> = BTreeMap::new();
    let mut bound_to: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for l in leases.as_array().unwrap() {
        if l["state"] == "bound" {
            let ip: String = l["ip"].as_str().unwrap().into();
            let mac: String = l["mac"].as_str().unwrap_or("").into();
            let client_id: String = l["client_id"].as_str().unwrap_or("").into();
            holders.insert(ip.clone(), mac.clone());
            bound_to.entry((mac, client_id)).or_default().push(ip);
        }
    }
    let doubly: Vec<_> = bound_to.iter().filter(|(_, ips)| ips.len() > 1).collect();
    eprintln!(
        "store: {} bound addresses, {} clients bound, {} bound to two or more",
        holders.len(),
        bound_to.len(),
        doubly.len()
    );
    assert!(
        doubly.is_empty(),
        "clients bound to two addresses: {doubly:?}"
    );
    assert_eq!(bound_to.len() as u32, CLIENTS, "every client is bound");
    for (ip, macs) in &acked {
        if let Some(holder) = holders.get(ip) {
            assert!(
                macs.contains(holder),
                "{ip} is bound to {holder}, acknowledged to {macs:?}"
            );
        }
    }

    // b dies (kill -9). Once a's membership drops it (dead_after_ms), a
    // answers every client, and a client b served gets the address it holds.
    b.kill9();
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.get("/api/v1/cluster")["members"]
        .as_array()
        .map_or(0, |m| m.len())
        != 1
    {
        assert!(Instant::now() < deadline, "a still counts b as live");
        std::thread::sleep(Duration::from_millis(200));
    }
    let left_before = a.metric("rackboot_dhcp_peer_owned_total");
    let report = re_doras(&net, CLIENTS, 3);
    let mut again: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in a.settled_events("lease_acked", cursor) {
        assert_eq!(e["data"]["server"], a.ip.as_str(), "only a is left: {e}");
        again
            .entry(e["mac"].as_str().unwrap().to_string())
            .or_default()
            .insert(e["data"]["ip"].as_str().unwrap().to_string());
    }
    let known = again.keys().filter(|m| per_client.contains_key(m)).count();
    eprintln!(
        "after b died: a acknowledged {} clients ({known} seen before), left none to a peer ({} more)",
        again.len(),
        a.metric("rackboot_dhcp_peer_owned_total") - left_before
    );
    assert!(
        !again.is_empty(),
        "a answered nobody after b died:\n{report}"
    );
    assert_eq!(
        a.metric("rackboot_dhcp_peer_owned_total"),
        left_before,
        "a left clients to a dead server"
    );
    for (mac, ips) in &again {
        if let Some(before) = per_client.get(mac) {
            let before: BTreeSet<String> = before.iter().map(|s| s.to_string()).collect();
            assert_eq!(ips, &before, "{mac} kept its address when b died");
        }
    }
    drop((a, b));
}

/// perfdhcp's report of `clients` clients doing DORA again and again, 40
/// exchanges/s for `secs` seconds (waiting up to 2 s for late replies).
fn re_doras(net: &Net, clients: u32, secs: u32) -> String {
    let out = net
        .perfdhcp(
            60,
            &[
                "-r",
                "40",
                "-R",
                &clients.to_string(),
                "-p",
                &secs.to_string(),
                "-W",
                "2000000",
            ],
        )
        .output()
        .expect("perfdhcp (apt-get install kea-admin)");
    String::from_utf8_lossy(&out.stdout).to_string()
}
