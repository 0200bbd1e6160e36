//! What one machine write costs the fleet layer at a given fleet size.
//!
//! `cargo run --release -p rackboot-fleet --example scale_writes -- --machines 100000 [--ops 300] [--db PATH]`
//!
//! Seeds a SQLite file store with N machines (directly through the store, in
//! chunks), loads the fleet (the snapshot the boot services answer from), then
//! times `--ops` writes of each kind through `Fleet`: enrol a new machine,
//! change one (a label), set its boot intent, and record an unknown MAC
//! (discovery). Each write includes its store transaction, the snapshot update
//! and its event. Prints one line per kind: mean, p50, p99 in milliseconds.

use std::time::{Duration, Instant};

use rackboot_core::{BootIntent, EventHub, MacAddr, Machine};
use rackboot_fleet::{Actor, Fleet};

fn mac_of(i: u64) -> MacAddr {
    let b = i.to_be_bytes();
    format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[4], b[5], b[6], b[7])
        .parse()
        .expect("a valid MAC")
}

fn machine(i: u64) -> Machine {
    let mut m = Machine::discovered(mac_of(i), None, None);
    m.name = format!("node-{i:06}");
    m.intent = BootIntent::Profile { name: None };
    m.labels.insert("rack".into(), format!("r{:03}", i / 40));
    m
}

fn stats(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let n = samples.len().max(1);
    let mean = samples.iter().sum::<Duration>() / n as u32;
    let at = |q: f64| samples[((n as f64 * q) as usize).min(n - 1)];
    println!(
        "{name:<12} n={n:<5} mean={:>8.3} ms  p50={:>8.3} ms  p99={:>8.3} ms",
        mean.as_secs_f64() * 1e3,
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3
    );
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0 / 1e6)
}

#[tokio::main]
async fn main() {
    let mut machines: u64 = 10_000;
    let mut ops: u64 = 300;
    let mut db: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match a.as_str() {
            "--machines" => machines = value().parse().expect("--machines N"),
            "--ops" => ops = value().parse().expect("--ops N"),
            "--db" => db = Some(value().into()),
            other => panic!("unknown argument {other}"),
        }
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = db.unwrap_or_else(|| dir.path().join("scale.db"));
    let fresh = !path.exists();
    let store = rackboot_store::open(&path.display().to_string())
        .await
        .expect("the store opens");
    if fresh {
        let started = Instant::now();
        for i in 0..machines {
            store.create_machine(&machine(i)).await.expect("seed");
        }
        println!(
            "seeded {machines} machines one transaction each in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let (hub, mut queue) = EventHub::new(4096);
    tokio::spawn(async move { while queue.next_batch(1024).await.is_some() {} });
    let started = Instant::now();
    let fleet = Fleet::load(store.clone(), None, hub).await.expect("load");
    println!(
        "loaded {} machines in {:.3} s, RSS {:.1} MB",
        fleet.snapshot().machines.len(),
        started.elapsed().as_secs_f64(),
        rss_mb()
    );
    let by = Actor::api(None);
    let base = 10_000_000u64;

    let mut samples = Vec::new();
    for i in 0..ops {
        let m = machine(base + i);
        let t = Instant::now();
        fleet.create_machine(m, &by).await.expect("create");
        samples.push(t.elapsed());
    }
    stats("create", samples);

    let mut samples = Vec::new();
    for i in 0..ops {
        let mut m = fleet
            .find_machine(&format!("node-{:06}", (i * 7919) % machines))
            .await
            .expect("find");
        m.labels.insert("touched".into(), i.to_string());
        let t = Instant::now();
        fleet.update_machine(m, false, &by).await.expect("update");
        samples.push(t.elapsed());
    }
    stats("update", samples);

    let mut samples = Vec::new();
    for i in 0..ops {
        let m = fleet
            .find_machine(&format!("node-{:06}", (i * 104_729) % machines))
            .await
            .expect("find");
        let t = Instant::now();
        fleet
            .set_intent(&m, BootIntent::LocalDisk, &by)
            .await
            .expect("set intent");
        samples.push(t.elapsed());
    }
    stats("set_intent", samples);

    let mut samples = Vec::new();
    for i in 0..ops {
        let t = Instant::now();
        fleet
            .record_discovery(mac_of(base * 2 + i), None, None)
            .await
            .expect("discovery");
        samples.push(t.elapsed());
    }
    stats("discovery", samples);

    let t = Instant::now();
    let all = store.list_machines().await.expect("list");
    println!(
        "list_machines (whole table) {} rows in {:.1} ms; RSS {:.1} MB",
        all.len(),
        t.elapsed().as_secs_f64() * 1e3,
        rss_mb()
    );
}
