//! kill -9 of a DHCP server under load (issue 15 item 7): one real
//! `rackboot serve` in a namespace, perfdhcp's clients in another, the ACKs
//! captured on the clients' wire (tcpdump, decoded with rackboot-wire). The
//! server is killed mid-load and started again on the same state:
//!
//! - every (address, client) acknowledged on the wire before the kill is a
//!   bound lease of that client in the store after the restart (0
//!   acknowledged leases lost);
//! - no address is acknowledged to two clients, before or after the kill,
//!   and the new clients served after the restart get addresses no other
//!   client held (0 duplicate addresses).
//!
//! On SQLite (the default store, in the state directory) and on
//! PostgreSQL. Root: network namespaces, perfdhcp, tcpdump.

mod cluster_net;
mod wire_acks;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cluster_net::{Net, Server};
use wire_acks::{Ack, Capture, acked_to_two};

/// The pool: 2,048 addresses, more than the clients of both phases.
const SECTIONS: &str = "[dhcp]\ncommit_window_ms = 10\n[dhcp.probe]\nenabled = false\n\
    [[dhcp.subnets]]\nname = \"lab\"\ncidr = \"10.81.0.0/16\"\n\
    ranges = [\"10.81.8.0-10.81.15.255\"]\nlease_time_secs = 3600\n";

/// Loads, kills, restarts and checks a server on `store`
/// (`None`: SQLite in its state directory).
fn kill_under_load(store: Option<String>, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new(&["a"]);
    let store =
        store.unwrap_or_else(|| format!("sqlite:{}", dir.path().join("a/rackboot.db").display()));
    let server_ip: Ipv4Addr = net.ip("a").parse().unwrap();
    let mut server = Server::start(&net, dir.path(), "a", &store, SECTIONS);

    // Phase 1: ~300 exchanges a second from up to 3,000 clients for 6 s;
    // the server is killed 2.5 s in.
    let capture = Capture::start(
        &net.ns(cluster_net::CLIENT),
        &dir.path().join("before.pcap"),
    );
    let load = net
        .perfdhcp(30, &["-r", "300", "-R", "3000", "-p", "6"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("perfdhcp (apt-get install kea-admin)");
    let load_started = Instant::now();
    // Killed 2.5 s in, once it has acknowledged at least 100 (perfdhcp's
    // start in the namespace can take a while on a loaded machine).
    std::thread::sleep(Duration::from_millis(2500));
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("rackboot_dhcp_replied_total{type=\"ack\"}") < 100.0 {
        assert!(
            Instant::now() < deadline,
            "{what}: fewer than 100 ACKs 30 s into the load: {}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.kill9();
    let killed_after = load_started.elapsed().as_secs_f64();
    let report1 = String::from_utf8_lossy(&load.wait_with_output().unwrap().stdout).to_string();
    let before = capture.stop().acks_from(server_ip);
    assert!(
        before.len() >= 100,
        "{what}: only {} ACKs before the kill: the load did not run:\n{report1}\n{}",
        before.len(),
        server.log_text()
    );

    // The same state directory (and database), a new process.
    drop(server);
    let restarting = Instant::now();
    let server = Server::start(&net, dir.path(), "a", &store, SECTIONS);
    let restart_secs = restarting.elapsed().as_secs_f64();

    // Every acknowledged (address, client) is that client's bound lease.
    let stored = leases(&server);
    let mut lost = Vec::new();
    for a in &before {
        match stored.get(&a.ip) {
            Some((mac, state)) if *mac == a.mac && state == "bound" => {}
            other => lost.push(format!(
                "{} acknowledged to {}, stored: {other:?}",
                a.ip, a.mac
            )),
        }
    }

    // Phase 2: 300 other clients (another MAC base) on the restarted server.
    let capture = Capture::start(&net.ns(cluster_net::CLIENT), &dir.path().join("after.pcap"));
    let report2 = net
        .perfdhcp(
            30,
            &[
                "-r",
                "200",
                "-R",
                "300",
                "-p",
                "3",
                "-b",
                "mac=00:0c:02:00:00:00",
            ],
        )
        .output()
        .unwrap();
    let report2 = String::from_utf8_lossy(&report2.stdout).to_string();
    let after = capture.stop().acks_from(server_ip);

    let held_before = holders(&before);
    let reused: Vec<String> = after
        .iter()
        .filter(|a| held_before.get(&a.ip).is_some_and(|m| !m.contains(&a.mac)))
        .map(|a| format!("{} to {}, held by {:?}", a.ip, a.mac, held_before[&a.ip]))
        .collect();
    let all: Vec<Ack> = before.iter().chain(&after).cloned().collect();
    let twice = acked_to_two(&all);
    let new_clients: BTreeSet<&String> = after.iter().map(|a| &a.mac).collect();
    eprintln!(
        "{what}: {} ACKs on the wire for {} addresses before the kill; killed {:.1} s in, \
         serving again {restart_secs:.1} s after the restart began; {} leases stored, \
         {} acknowledged leases lost; after the restart {} ACKs to {} new clients, \
         {} addresses given while another client held them; {} addresses acknowledged to \
         two clients",
        before.len(),
        held_before.len(),
        killed_after,
        stored.len(),
        lost.len(),
        after.len(),
        new_clients.len(),
        reused.len(),
        twice.len()
    );
    assert!(
        lost.is_empty(),
        "{what}: acknowledged leases lost: {lost:#?}"
    );
    assert!(
        reused.is_empty(),
        "{what}: addresses given twice: {reused:#?}"
    );
    assert!(
        twice.is_empty(),
        "{what}: acknowledged to two clients: {twice:#?}"
    );
    assert!(
        new_clients.len() >= 100,
        "{what}: only {} new clients served after the restart:\n{report2}",
        new_clients.len()
    );
}

/// The store's leases through the API: address -> (client MAC, state).
fn leases(server: &Server) -> BTreeMap<Ipv4Addr, (String, String)> {
    let mut out = BTreeMap::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/api/v1/leases?limit=1000{cursor}");
        let page = server.get(&path);
        let page = page.as_array().unwrap();
        for l in page {
            out.insert(
                l["ip"].as_str().unwrap().parse().unwrap(),
                (
                    l["mac"].as_str().unwrap_or_default().to_string(),
                    l["state"].as_str().unwrap_or_default().to_string(),
                ),
            );
        }
        match page.last() {
            Some(l) if page.len() == 1000 => {
                cursor = format!("&cursor={}", l["ip"].as_str().unwrap());
            }
            _ => return out,
        }
    }
}

/// Address -> the clients it was acknowledged to.
fn holders(acks: &[Ack]) -> BTreeMap<Ipv4Addr, BTreeSet<String>> {
    let mut out: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
    for a in acks {
        out.entry(a.ip).or_default().insert(a.mac.clone());
    }
    out
}

#[test]
fn kill_9_under_dhcp_load_sqlite_loses_no_acknowledged_lease() {
    if !rackboot_testenv::privileged("root: network namespaces, Kea's perfdhcp, tcpdump") {
        return;
    }
    kill_under_load(None, "SQLite");
}

#[test]
fn kill_9_under_dhcp_load_postgres_loses_no_acknowledged_lease() {
    if !rackboot_testenv::privileged("root: network namespaces, PostgreSQL, perfdhcp, tcpdump") {
        return;
    }
    kill_under_load(Some(cluster_net::fresh_database("kill")), "PostgreSQL");
}
