//! PostgreSQL restarted under load (issue 15 item 7): two real `rackboot
//! serve` on one database, perfdhcp's clients and API writers (enrolments,
//! label changes) on both, while PostgreSQL is restarted twice (`pg_ctl
//! restart -m fast`, then `-m immediate`: a crash and its recovery). The
//! database is this test's own (scripts/test-postgres), never the one
//! test-all shares.
//!
//! Checked: both servers live through it and reconnect by themselves; a
//! write through A once the database is back is in B's snapshot within a
//! second; no write acknowledged with a 2xx is missing; a write the outage
//! stops gets a 503 with a message (no 500, no answer past the API's
//! timeout); DHCP resumes, and no address is acknowledged to two clients
//! (the ACKs as captured on the clients' wire). Root: network namespaces.

mod cluster_net;
mod wire_acks;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use cluster_net::{Net, PgSocket, Server};
use wire_acks::{Capture, acked_to_two};

/// Seconds since the Unix epoch (the capture's clock).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One API write as the client saw it.
#[derive(Debug, Clone)]
struct Write {
    server: &'static str,
    machine: String,
    /// 0 for an enrolment, else the label value set.
    seq: u64,
    status: u16,
    error: String,
    start: f64,
    took: f64,
}

impl Write {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// PostgreSQL's programs (the newest installed major version).
fn pg_bin() -> String {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL under /usr/lib/postgresql")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.last()
        .expect("pg_ctl under /usr/lib/postgresql/*/bin")
        .display()
        .to_string()
}

/// Restarts the test's own cluster, as its owner: `pg_ctl restart -m
/// MODE` for `fast` and `immediate`; for `stopped`, `pg_ctl stop -m fast`,
/// 2.5 s without a database, then `pg_ctl start`. Returns once it accepts
/// connections again.
fn restart_postgres(pg: &PgSocket, mode: &str) {
    let data = format!("{}/data", pg.dir);
    let log = format!("{}/postgres.log", pg.dir);
    let pg_ctl = format!("{}/pg_ctl", pg_bin());
    let ctl = |args: &[&str]| {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--", &pg_ctl, "-D", &data, "-l", &log])
            .args(["-w", "-t", "30"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if mode == "stopped" {
        ctl(&["-m", "fast", "stop"]);
        std::thread::sleep(Duration::from_millis(2500));
        // `start` does not reuse the last options as `restart` does: the
        // ones scripts/test-postgres started it with.
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200",
            pg.port, pg.dir
        );
        ctl(&["-o", &options, "start"]);
    } else {
        ctl(&["-m", mode, "restart"]);
    }
}

/// What [`restart_postgres`] did in `mode`, for people.
fn scenario(mode: &str) -> String {
    match mode {
        "stopped" => "stop -m fast, 2.5 s down, start".to_string(),
        _ => format!("restart -m {mode}"),
    }
}

/// Writes through `server` until `stop`: enrols a machine every few
/// writes, else sets label `seq` of one of its machines to the next value.
fn writer(server: &Server, name: &'static str, id: u8, stop: &AtomicBool, log: &Mutex<Vec<Write>>) {
    let mut machines: Vec<String> = Vec::new();
    let mut seq = 0u64;
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let start = now();
        let clock = Instant::now();
        let (machine, value, (status, body)) = if machines.is_empty() || n.is_multiple_of(4) {
            let machine = format!("{name}-{n}");
            let mac = format!("02:{id:02x}:00:00:{:02x}:{:02x}", n >> 8, n & 0xff);
            let answer = server.call(
                "POST",
                "/api/v1/machines",
                Some(&json!({"name": machine, "macs": [mac]})),
            );
            (machine, 0, answer)
        } else {
            seq += 1;
            let machine = machines[n as usize % machines.len()].clone();
            let answer = server.call(
                "PATCH",
                &format!("/api/v1/machines/{machine}"),
                Some(&json!({"labels": {"seq": seq.to_string()}})),
            );
            (machine, seq, answer)
        };
        let write = Write {
            server: name,
            machine: machine.clone(),
            seq: value,
            status,
            error: body["error"].as_str().unwrap_or_default().to_string(),
            start,
            took: clock.elapsed().as_secs_f64(),
        };
        if value == 0 && write.ok() {
            machines.push(machine);
        }
        log.lock().unwrap().push(write);
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// Sets a label through `a` (retrying while the database is away) and
/// returns how long after `a` acknowledged it `b`'s snapshot had it
/// (a filtered list is answered from the snapshot).
fn propagation(a: &Server, b: &Server, machine: &str, value: &str) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = a.call(
            "PATCH",
            &format!("/api/v1/machines/{machine}"),
            Some(&json!({"labels": {"probe": value}})),
        );
        if (200..300).contains(&status) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A refuses writes 30 s after PostgreSQL is back: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let acked = Instant::now();
    loop {
        let seen = b.get(&format!(
            "/api/v1/machines?name={machine}&label=probe={value}"
        ));
        if seen.as_array().is_some_and(|l| !l.is_empty()) {
            return acked.elapsed();
        }
        assert!(
            acked.elapsed() < Duration::from_secs(20),
            "A's write is not in B's snapshot 20 s later:\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first and last start of a refused write in `[from, to]`, and the
/// time from the first refusal to the first success after the last.
fn refused_window(writes: &[Write], from: f64, to: f64) -> Option<(f64, f64)> {
    let refused: Vec<&Write> = writes
        .iter()
        .filter(|w| !w.ok() && w.start >= from && w.start <= to)
        .collect();
    let first = refused
        .iter()
        .map(|w| w.start)
        .fold(f64::INFINITY, f64::min);
    let last = refused.iter().map(|w| w.start).fold(0.0, f64::max);
    if refused.is_empty() {
        return None;
    }
    let back = writes
        .iter()
        .filter(|w| w.ok() && w.start > last)
        .map(|w| w.start + w.took)
        .fold(f64::INFINITY, f64::min);
    Some((first, back - first))
}

/// The longest time between two ACKs in `[from, to]`.
fn longest_ack_gap(times: &[f64], from: f64, to: f64) -> f64 {
    let mut inside: Vec<f64> = times
        .iter()
        .copied()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    inside.sort_by(f64::total_cmp);
    inside.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

#[test]
fn postgres_restarted_under_load_servers_reconnect_and_lose_nothing() {
    if !rackboot_testenv::privileged("root: network namespaces, PostgreSQL, perfdhcp, tcpdump") {
        return;
    }
    let test_started = Instant::now();
    // Its own cluster: this test restarts it.
    let pg = cluster_net::own_pg_socket();
    let store = pg.create_database("pgrestart");
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new(&["a", "b"]);
    let sections = |name: &str| {
        format!(
            "[dhcp]\ncommit_window_ms = 10\n[dhcp.probe]\nenabled = false\n\
             [[dhcp.subnets]]\nname = \"lab\"\ncidr = \"10.81.0.0/16\"\n\
             ranges = [\"10.81.4.0-10.81.7.255\"]\nlease_time_secs = 3600\n\
             [cluster]\nname = {name:?}\nheartbeat_ms = 500\ndead_after_ms = 2500\n\
             [power]\nsync_interval_secs = 0\n"
        )
    };
    let a = Server::start(&net, dir.path(), "a", &store, &sections("a"));
    let b = Server::start(&net, dir.path(), "b", &store, &sections("b"));
    let (pid_a, pid_b) = (a.pid(), b.pid());
    a.post(
        "/api/v1/machines",
        &json!({"name": "probe", "macs": ["02:ff:00:00:00:01"]}),
    );

    let capture = Capture::start(&net.ns(cluster_net::CLIENT), &dir.path().join("acks.pcap"));
    let load = net
        // Longer than the restarts take on a loaded machine: interrupted
        // (SIGINT) once they are done, so ACKs after the last one are there.
        .perfdhcp(120, &["-r", "100", "-R", "600", "-p", "100"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("perfdhcp (apt-get install kea-admin)");
    let stop = AtomicBool::new(false);
    let writes = Mutex::new(Vec::new());
    // (mode, when pg_ctl began, when it returned, propagation after)
    let mut restarts: Vec<(&str, f64, f64, Duration)> = Vec::new();
    std::thread::scope(|s| {
        s.spawn(|| writer(&a, "a", 1, &stop, &writes));
        s.spawn(|| writer(&b, "b", 2, &stop, &writes));
        std::thread::sleep(Duration::from_secs(3));
        for (i, mode) in ["fast", "immediate", "stopped"].into_iter().enumerate() {
            let began = now();
            restart_postgres(&pg, mode);
            let back = now();
            let took = propagation(&a, &b, "probe", &format!("{mode}{i}"));
            restarts.push((mode, began, back, took));
            std::thread::sleep(Duration::from_secs(4));
        }
        stop.store(true, Ordering::Relaxed);
    });
    // SAFETY: kill(2) on the `timeout` process this test started (it passes
    // SIGINT on to perfdhcp); no memory is touched.
    unsafe { libc::kill(load.id() as libc::pid_t, libc::SIGINT) };
    let report = String::from_utf8_lossy(&load.wait_with_output().unwrap().stdout).to_string();
    let acks = capture.stop().acks;
    let writes = writes.into_inner().unwrap();

    // Both servers are the processes started above, and answer.
    assert_eq!((a.pid(), b.pid()), (pid_a, pid_b));
    for s in [&a, &b] {
        assert_eq!(s.call("GET", "/api/v1/status", None).0, 200);
        assert!(
            !s.log_text().contains("panicked"),
            "{} panicked:\n{}",
            s.name,
            s.log_text()
        );
    }

    // Every refused write got a 503 that says why, in time.
    let api_timeout = 30.0;
    let bad: Vec<&Write> = writes
        .iter()
        .filter(|w| !w.ok() && (w.status != 503 || w.error.is_empty()))
        .collect();
    let slow = writes.iter().map(|w| w.took).fold(0.0, f64::max);
    let ok = writes.iter().filter(|w| w.ok()).count();
    assert!(
        bad.is_empty(),
        "writes refused otherwise than with a 503 and a message: {bad:#?}"
    );
    assert!(
        slow < api_timeout,
        "a write took {slow:.1} s (the API's limit is {api_timeout} s)"
    );
    let refusals: Vec<String> = writes
        .iter()
        .filter(|w| !w.ok())
        .map(|w| w.error.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();

    // No acknowledged write is missing, in the store or in either snapshot.
    // Label values only grow: one a refused write may have stored (cut off
    // after its commit) is a later one.
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for w in writes.iter().filter(|w| w.ok()) {
        let e = expected.entry(w.machine.as_str()).or_default();
        *e = (*e).max(w.seq);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let mut missing = Vec::new();
        for (server, from) in [
            (&a, "store"),
            (&b, "store"),
            (&a, "snapshot"),
            (&b, "snapshot"),
        ] {
            let path = if from == "store" {
                "/api/v1/machines?limit=10000".to_string()
            } else {
                // Any filter or sort but by name: answered from the snapshot.
                "/api/v1/machines?limit=10000&sort=created".to_string()
            };
            let listed = server.get(&path);
            let have: BTreeMap<String, u64> = listed
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap().to_string(),
                        m["labels"]["seq"]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                    )
                })
                .collect();
            for (machine, seq) in &expected {
                match have.get(*machine) {
                    Some(v) if v >= seq => {}
                    other => missing.push(format!(
                        "{machine} (seq {seq}) in {}'s {from}: {other:?}",
                        server.name
                    )),
                }
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    // DHCP: no address to two clients; ACKs again after each restart.
    let twice = acked_to_two(&acks);
    let times: Vec<f64> = acks.iter().map(|a| a.at).collect();
    let mut figures = Vec::new();
    for (i, (mode, began, back, took)) in restarts.iter().enumerate() {
        // Up to the next restart, less the time a write takes: a write
        // begun just before it and cut off by it is the next one's.
        let until = restarts
            .get(i + 1)
            .map_or(f64::INFINITY, |next| next.1 - 1.0);
        let after = times.iter().filter(|t| **t > *back).count();
        let gap = longest_ack_gap(&times, began - 2.0, (back + 3.0).min(until));
        let window = refused_window(&writes, began - 0.5, (back + 5.0).min(until));
        figures.push(format!(
            "{}: PostgreSQL down/restarting {:.2} s; DHCP ACKs paused {gap:.2} s \
             at most, {after} ACKs after it came back; API writes refused {}; A's write in B's \
             snapshot {:.0} ms after A acknowledged it",
            scenario(mode),
            back - began,
            match window {
                Some((first, length)) => {
                    format!(
                        "{length:.2} s from its first refusal ({:.2} s after pg_ctl began)",
                        first - began
                    )
                }
                None => "never".to_string(),
            },
            took.as_secs_f64() * 1000.0
        ));
        assert!(
            after > 0,
            "no DHCP ACK after PostgreSQL came back from {}:\n{report}",
            scenario(mode)
        );
        // The goal is a second (issue 15 item 5; measured 35-180 ms, printed
        // above): B's change feed listens again within 200 ms of the
        // database's return, then re-reads. The bound is wider so a loaded
        // machine does not fail it; a missed write waited for the 300 s
        // resync.
        assert!(
            *took < Duration::from_secs(5),
            "after {}, A's write reached B's snapshot only after {took:?}",
            scenario(mode)
        );
    }
    let refused_by = |server: &str| {
        writes
            .iter()
            .filter(|w| !w.ok() && w.server == server)
            .count()
    };
    eprintln!(
        "{} writes ({ok} acknowledged, {} refused by A, {} by B; slowest {slow:.2} s); \
         refusals said: {refusals:?}\n{} ACKs on the wire, {} addresses to two clients\n{}\n\
         test ran {:.1} s",
        writes.len(),
        refused_by("a"),
        refused_by("b"),
        acks.len(),
        twice.len(),
        figures.join("\n"),
        test_started.elapsed().as_secs_f64()
    );
    // They reconnect by themselves: nothing refused once the database has
    // been back a while.
    let late: Vec<String> = writes
        .iter()
        .filter(|w| !w.ok())
        .filter_map(|w| {
            let r = restarts.iter().rev().find(|r| r.1 <= w.start + 0.5)?;
            (w.start > r.2 + 10.0).then(|| {
                format!(
                    "{} {:.2} s after PostgreSQL was back from {}: {} {}",
                    w.server,
                    w.start - r.2,
                    scenario(r.0),
                    w.status,
                    w.error
                )
            })
        })
        .collect();
    assert!(
        late.is_empty(),
        "writes refused long after the database was back: {late:#?}"
    );
    assert!(
        missing.is_empty(),
        "acknowledged writes missing: {missing:#?}"
    );
    assert!(
        twice.is_empty(),
        "addresses acknowledged to two clients: {twice:#?}"
    );
}
