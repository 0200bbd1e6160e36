//! Three real `rackboot serve` processes on one PostgreSQL database, each in
//! its own network namespace on one bridge, serving one DHCP pool to
//! perfdhcp's clients while a workflow runs for a machine of server B; then
//! kill -9 of B in the middle of both. No address is ever acknowledged to two
//! clients, DHCP keeps being answered by the survivors (B's clients too),
//! and B's workflow completes on a survivor within 30 s of the kill.
//! Root: network namespaces, PostgreSQL, Kea's perfdhcp.
//!
//! The workflow is made of the server side of a deploy (BMC check, power,
//! a wait standing in for the image write, boot from disk, reboot) on a fake
//! BMC, as in tests/cluster.rs: what moves between servers is the
//! workflow's record and the BMC work, which this exercises; an agent's
//! steps would add the agent's own reconnection, which is not tested here.

mod cluster_net;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use cluster_net::{Net, Server, fresh_database};

const SERVERS: [&str; 3] = ["a", "b", "c"];
/// The server killed; its machine's workflow must move.
const VICTIM: &str = "b";
/// perfdhcp's clients, on a 200-address pool: the pool never runs out, so
/// every exchange can be answered.
const CLIENTS: u32 = 120;
/// Exchanges per second (DORA) perfdhcp starts.
const RATE: u32 = 60;
/// How long perfdhcp runs (seconds); B is killed about a third in.
const LOAD_SECS: u64 = 15;
const KILL_AFTER: Duration = Duration::from_secs(5);

const WORKFLOW: &str = r#"
name = "deploy-like"
description = "the server side of a deploy: BMC, power, image write (a wait), local boot, reboot"
lifecycle = "none"

[[step]]
name = "bmc"
uses = "verify_bmc"

[[step]]
name = "on"
uses = "power_on"

[[step]]
name = "write-image"
uses = "wait"
with = { secs = 8 }

[[step]]
name = "boot-from-disk"
uses = "set_local_boot"

[[step]]
name = "reboot"
uses = "reboot"

[[step]]
name = "settle"
uses = "wait"
with = { secs = 1 }
"#;

fn sections(name: &str) -> String {
    format!(
        "[dhcp]\ncommit_window_ms = 10\n[dhcp.probe]\nenabled = false\n\
         [[dhcp.subnets]]\nname = \"lab\"\ncidr = \"10.81.0.0/16\"\n\
         ranges = [\"10.81.1.0-10.81.1.199\"]\nlease_time_secs = 3600\n\
         [power]\nsync_interval_secs = 1\nallow_fake_bmc = true\n\
         [cluster]\nname = {name:?}\nheartbeat_ms = 500\ndead_after_ms = 2500\nresync_secs = 30\n"
    )
}

/// Polls `check` every 50 ms until it holds; how long that took. Panics
/// after `limit`.
fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn member_names(server: &Server) -> BTreeSet<String> {
    server.get("/api/v1/cluster")["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

/// The name of the server that owns `machine`, as `server` sees it.
fn owner_of(server: &Server, machine: &str) -> String {
    let view = server.get(&format!("/api/v1/cluster?machine={machine}"));
    let owner = view["owner"].as_str().unwrap_or_default().to_string();
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == owner.as_str())
        .and_then(|m| m["name"].as_str())
        .unwrap_or_else(|| panic!("{machine}: owner {owner} is not a member: {view}"))
        .to_string()
}

/// One acknowledgement, from a `lease_acked` event.
#[derive(Debug, Clone)]
struct Ack {
    id: i64,
    at: DateTime<Utc>,
    ip: String,
    mac: String,
    /// The answering server's address.
    server: String,
}

fn acks(server: &Server) -> Vec<Ack> {
    server
        .settled_events("lease_acked", 0)
        .iter()
        .map(|e| Ack {
            id: e["id"].as_i64().unwrap(),
            at: e["at"].as_str().unwrap().parse().unwrap(),
            ip: e["data"]["ip"].as_str().unwrap().to_string(),
            mac: e["mac"].as_str().unwrap().to_string(),
            server: e["data"]["server"].as_str().unwrap().to_string(),
        })
        .collect()
}

/// A figure of perfdhcp's report: `field` ("sent packets") under
/// "Statistics for: `exchange`"; None when absent.
fn perfdhcp_figure(report: &str, exchange: &str, field: &str) -> Option<u64> {
    let section = report
        .split("***Statistics for: ")
        .find(|s| s.starts_with(exchange))?;
    section.lines().find_map(|l| {
        l.strip_prefix(field)?
            .trim_start_matches(':')
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn perfdhcp_figures_are_read_from_its_report() {
    let report = "***Statistics for: DISCOVER-OFFER***\nsent packets: 899\nreceived packets: 846\n\
                  ***Statistics for: REQUEST-ACK***\nsent packets: 846\nreceived packets: 845\n";
    assert_eq!(
        perfdhcp_figure(report, "DISCOVER-OFFER", "sent packets"),
        Some(899)
    );
    assert_eq!(
        perfdhcp_figure(report, "REQUEST-ACK", "received packets"),
        Some(845)
    );
    assert_eq!(perfdhcp_figure(report, "REQUEST-ACK", "drops"), None);
    assert_eq!(perfdhcp_figure("", "REQUEST-ACK", "sent packets"), None);
}

#[test]
fn kill_9_of_one_of_three_servers_under_dhcp_load_and_a_workflow() {
    if !rackboot_testenv::privileged("root: network namespaces, PostgreSQL, Kea's perfdhcp") {
        return;
    }
    let started = Instant::now();
    let store = fresh_database("faults");
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new(&SERVERS);
    let mut servers: Vec<Server> = SERVERS
        .iter()
        .map(|n| Server::start(&net, dir.path(), n, &store, &sections(n)))
        .collect();
    let all: BTreeSet<String> = SERVERS.iter().map(|s| s.to_string()).collect();
    for s in &servers {
        within(Duration::from_secs(30), "every server sees three", || {
            member_names(s) == all
        });
    }
    let victim_ip = net.ip(VICTIM);
    let (a, victim_index) = (0, SERVERS.iter().position(|s| *s == VICTIM).unwrap());

    // Definitions are files of each server.
    for s in &servers {
        s.ok(
            "PUT",
            "/api/v1/workflow-definitions",
            Some(&json!({"source": WORKFLOW})),
        );
    }
    // Machines with fake BMCs; about one in three is B's (by hash).
    const MACHINES: usize = 40;
    let rows: Vec<Value> = (0..MACHINES)
        .map(|i| {
            json!({"name": format!("m{i:02}"), "macs": [format!("52:54:00:bb:00:{i:02x}")],
                   "bmc": {"url": format!("fake://admin:pw@bmc{i}")}})
        })
        .collect();
    let body = servers[a].post("/api/v1/machines:bulk", &json!({"machines": rows}));
    assert_eq!(body["created"], MACHINES, "{body}");
    let target = (0..MACHINES)
        .map(|i| format!("m{i:02}"))
        .find(|m| owner_of(&servers[a], m) == VICTIM)
        .unwrap_or_else(|| panic!("{VICTIM} owns none of {MACHINES} machines"));
    for s in &servers {
        assert_eq!(
            owner_of(s, &target),
            VICTIM,
            "{}: owner of {target}",
            s.name
        );
    }

    // DHCP load on the bridge for LOAD_SECS (all three servers serve the
    // pool; perfdhcp's timeout bounds it whatever happens).
    let load = net
        .perfdhcp(
            LOAD_SECS as u32 + 20,
            &[
                "-r",
                &RATE.to_string(),
                "-R",
                &CLIENTS.to_string(),
                "-p",
                &LOAD_SECS.to_string(),
                "-W",
                "1000000",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("perfdhcp (apt-get install kea-admin)");
    let load_started = Instant::now();

    // The workflow, started through A, is handed to B, which runs it
    // within seconds (not at its next full scan of the workflows).
    let body = servers[a].post(
        "/api/v1/workflows",
        &json!({"workflow": "deploy-like", "machines": [target]}),
    );
    let wf = body[0]["workflow"]["id"].as_str().unwrap().to_string();
    let step_state = |s: &Server, step: &str| -> String {
        let w = s.get(&format!("/api/v1/workflows/{wf}"));
        w["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == step)
            .map(|x| x["state"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    let began = Instant::now();
    while step_state(&servers[a], "write-image") != "running" {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "the image-write step does not run after 30 s: {}\n{VICTIM}'s log:\n{}",
            servers[a].get(&format!("/api/v1/workflows/{wf}")),
            servers[victim_index].log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let handed_over = began.elapsed();
    assert!(
        servers[victim_index].log_text().contains(&wf),
        "{VICTIM}'s log does not mention the workflow it runs"
    );

    // kill -9 of B under load, in the middle of the workflow.
    if let Some(rest) = KILL_AFTER.checked_sub(load_started.elapsed()) {
        std::thread::sleep(rest);
    }
    let last_before = servers[a].get("/api/v1/events?tail=1")[0]["id"]
        .as_i64()
        .unwrap_or(0);
    assert_eq!(
        step_state(&servers[a], "write-image"),
        "running",
        "the image-write step ended before the kill: make it longer"
    );
    let killed_at = Utc::now();
    servers[victim_index].kill9();
    let killed = Instant::now();
    eprintln!(
        "killed {VICTIM} (-9) {:?} into the load",
        load_started.elapsed()
    );

    let survivors: Vec<&Server> = servers.iter().filter(|s| s.name != VICTIM).collect();
    let expected: BTreeSet<String> = all.iter().filter(|s| *s != VICTIM).cloned().collect();
    // One poll, every 50 ms, of what the takeover is made of: the
    // survivors drop B, one of them takes the workflow over (its log), the
    // workflow completes. Each is timed from the kill.
    let (mut membership, mut takeover, mut workflow_done) = (None, None, None);
    while workflow_done.is_none() {
        // Completion includes the 8 s image write run again (normally
        // 11.5-11.8 s after the kill); the takeover's 30 s is checked below.
        assert!(
            killed.elapsed() < Duration::from_secs(90),
            "90 s after the kill: survivors dropped {VICTIM} after {membership:?}, \
             took the workflow over after {takeover:?}, the workflow is {}",
            survivors[0].get(&format!("/api/v1/workflows/{wf}"))
        );
        if membership.is_none() && survivors.iter().all(|s| member_names(s) == expected) {
            membership = Some(killed.elapsed());
        }
        if takeover.is_none()
            && survivors
                .iter()
                .any(|s| s.log_text().contains("taking over a workflow"))
        {
            takeover = Some(killed.elapsed());
        }
        let w = survivors[0].get(&format!("/api/v1/workflows/{wf}"));
        assert_ne!(w["state"], "failed", "the workflow failed: {w}");
        if w["state"] == "succeeded" {
            workflow_done = Some(killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let workflow_done = workflow_done.unwrap();
    // The goal (issue 15 item 5): survivors take a dead server's
    // machines over within 30 s.
    assert!(
        takeover.is_some_and(|t| t < Duration::from_secs(30)),
        "the workflow was taken over {takeover:?} after the kill (goal: 30 s)"
    );
    let taken_by: Vec<&str> = survivors
        .iter()
        .filter(|s| s.log_text().contains("taking over a workflow"))
        .map(|s| s.name.as_str())
        .collect();
    assert!(
        !taken_by.is_empty(),
        "no survivor logged the workflow takeover"
    );
    within(Duration::from_secs(30), "the survivors drop B", || {
        survivors.iter().all(|s| member_names(s) == expected)
    });

    // The load ends by itself (perfdhcp -p, bounded by timeout).
    let out = load.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{report}");
    let now = killed.elapsed();

    // Every acknowledgement of the run, from the shared event log.
    let acked = acks(survivors[0]);
    let mut holders: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for ack in &acked {
        holders.entry(&ack.ip).or_default().insert(&ack.mac);
    }
    let twice: Vec<_> = holders.iter().filter(|(_, m)| m.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "addresses acknowledged to two clients: {twice:?}"
    );
    let before: Vec<&Ack> = acked.iter().filter(|k| k.id <= last_before).collect();
    let after: Vec<&Ack> = acked.iter().filter(|k| k.at > killed_at).collect();
    let count_by = |list: &[&Ack]| -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for k in list {
            *by.entry(k.server.clone()).or_insert(0) += 1;
        }
        by
    };
    let from_victim_after: Vec<&&Ack> = after.iter().filter(|k| k.server == victim_ip).collect();
    assert!(
        from_victim_after.is_empty(),
        "ACKs from {VICTIM} after its kill: {from_victim_after:?}"
    );
    // DHCP keeps being answered after the kill, also near the end of the
    // load (not only a burst of replies already under way).
    assert!(
        after.len() >= 50,
        "only {} ACKs after the kill:\n{report}",
        after.len()
    );
    let late = killed_at + chrono::Duration::seconds(5);
    assert!(
        after.iter().any(|k| k.at > late),
        "no ACK later than 5 s after the kill"
    );
    // B's clients get addresses from the survivors: the first such ACK
    // tells how long B's share of DHCP was unanswered.
    let victims_clients: BTreeSet<&str> = before
        .iter()
        .filter(|k| k.server == victim_ip)
        .map(|k| k.mac.as_str())
        .collect();
    let dhcp_takeover = after
        .iter()
        .filter(|k| victims_clients.contains(k.mac.as_str()))
        .map(|k| (k.at - killed_at).to_std().unwrap_or_default())
        .min();
    if !victims_clients.is_empty() {
        assert!(
            dhcp_takeover.is_some(),
            "none of {VICTIM}'s {} clients got an ACK after its kill",
            victims_clients.len()
        );
    }
    let clients: BTreeSet<&str> = acked.iter().map(|k| k.mac.as_str()).collect();
    assert!(
        clients.len() as u32 >= CLIENTS * 8 / 10,
        "only {} of {CLIENTS} clients got an address:\n{report}",
        clients.len()
    );

    // The store agrees: each bound address has one client, one that it
    // was acknowledged to.
    let leases = survivors[0].get("/api/v1/leases?limit=10000");
    let mut bound: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in leases.as_array().unwrap() {
        if l["state"] == "bound" {
            bound
                .entry(l["ip"].as_str().unwrap().into())
                .or_default()
                .insert(l["mac"].as_str().unwrap_or("").into());
        }
    }
    for (ip, macs) in &bound {
        assert_eq!(macs.len(), 1, "{ip} is bound to {macs:?}");
        if let Some(acked_to) = holders.get(ip.as_str()) {
            let holder = macs.iter().next().unwrap();
            assert!(
                acked_to.contains(holder.as_str()),
                "{ip} is bound to {holder}, acknowledged to {acked_to:?}"
            );
        }
    }
    // Acknowledged leases the table does not hold for their client (an ACK
    // whose address is no longer bound to that client): for the log.
    let missing: Vec<(&str, &str)> = holders
        .iter()
        .flat_map(|(ip, macs)| macs.iter().map(move |m| (*ip, *m)))
        .filter(|(ip, m)| !bound.get(*ip).is_some_and(|b| b.contains(*m)))
        .collect();

    eprintln!(
        "three servers, {CLIENTS} clients at {RATE}/s for {LOAD_SECS} s, kill -9 of {VICTIM} after {KILL_AFTER:?}:\n  \
         ACKs before the kill by server {:?}, after {:?} (checked {now:?} after the kill)\n  \
         perfdhcp: {:?} exchanges started, {:?} ACKs received; ACK events stored: {}\n  \
         {} addresses acknowledged to {} clients, none twice; {} bound in the store\n  \
         acknowledged but not bound to that client now: {missing:?}\n  \
         survivors dropped {VICTIM} from the cluster {membership:?} after the kill, \
         took its workflow over after {takeover:?}\n  \
         {VICTIM}'s {} DHCP clients: first ACK by a survivor {dhcp_takeover:?} after the kill\n  \
         workflow started through a ran on {VICTIM} after {handed_over:?}; completed on a survivor ({taken_by:?} took it over) {workflow_done:?} after the kill\n  \
         whole test {:?}",
        count_by(&before),
        count_by(&after),
        perfdhcp_figure(&report, "DISCOVER-OFFER", "sent packets"),
        perfdhcp_figure(&report, "REQUEST-ACK", "received packets"),
        acked.len(),
        holders.len(),
        clients.len(),
        bound.len(),
        victims_clients.len(),
        started.elapsed(),
    );
    drop(servers.drain(..));
}
