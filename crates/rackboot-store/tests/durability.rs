//! A lease batch is durable against kill -9 as soon as `put_leases` returns.
//!
//! The test re-executes its own binary as a writer child (selected by an
//! environment variable): the child writes batches of leases to a SQLite file
//! and prints `committed N` right after each `put_leases` returns, then starts
//! the next batch at once. The parent SIGKILLs the child as soon as it reads
//! `committed 20` (so the kill usually lands inside batch 21's transaction),
//! reopens the file, and checks that every lease of batches 0..=20 is there.
//!
//! `harness = false`: this is a plain `main`, so the child mode is not a test.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rackboot_core::{Lease, LeaseState, MacAddr};
use rackboot_store::truncate_ms;

const CHILD_ENV: &str = "RACKBOOT_STORE_DURABILITY_CHILD";
const BATCH: u32 = 64;
const KILL_AFTER: u32 = 20;
/// The child stops on its own after this many batches, should the parent be gone.
const CHILD_MAX_BATCHES: u32 = 10_000;

fn lease(batch: u32, i: u32) -> Lease {
    let n = batch * BATCH + i;
    let at = DateTime::<Utc>::from_timestamp(1_790_000_000 + i64::from(n), 0).unwrap();
    Lease {
        ip: Ipv4Addr::from_bits(Ipv4Addr::new(10, 128, 0, 0).to_bits() + n),
        mac: Some(MacAddr([
            0x52,
            0x54,
            0,
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
        ])),
        client_id: None,
        hostname: Some(format!("h{n}")),
        state: LeaseState::Bound,
        expires_at: truncate_ms(at + chrono::TimeDelta::hours(1)),
        subnet: "lab".into(),
        updated_at: truncate_ms(at),
    }
}

fn batch(b: u32) -> Vec<Lease> {
    (0..BATCH).map(|i| lease(b, i)).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime")
}

fn child(url: &str) {
    runtime().block_on(async {
        let store = rackboot_store::open(url)
            .await
            .expect("child: opening store");
        let mut out = std::io::stdout().lock();
        for b in 0..CHILD_MAX_BATCHES {
            store
                .put_leases(&batch(b))
                .await
                .expect("child: put_leases");
            writeln!(out, "committed {b}")
                .and_then(|_| out.flush())
                .ok();
        }
    });
}

fn parent() {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let url = format!("sqlite:{}", dir.path().join("leases.db").display());
    let mut child = Command::new(std::env::current_exe().expect("finding the test binary"))
        .env(CHILD_ENV, &url)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the writer child");
    let stdout = child.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reading the child's output");
        let n: u32 = line
            .strip_prefix("committed ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected child output {line:?}"));
        last = Some(n);
        if n >= KILL_AFTER || Instant::now() > deadline {
            child.kill().expect("SIGKILL to the child"); // Child::kill sends SIGKILL.
            break;
        }
    }
    let status = child.wait().expect("waiting for the child");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child must die by SIGKILL, not exit ({status})"
    );
    let last = last.expect("the child committed nothing");
    assert!(last >= KILL_AFTER, "child stopped early at batch {last}");

    let leases = runtime().block_on(async {
        let store = rackboot_store::open(&url)
            .await
            .expect("reopening the store");
        store.list_leases().await.expect("listing leases")
    });
    let want: Vec<Lease> = (0..=last).flat_map(batch).collect();
    // Batches after `last` may or may not have committed before the kill; a
    // half-written batch must not show up at all.
    assert!(
        leases.len() >= want.len() && leases.len().is_multiple_of(BATCH as usize),
        "{} leases after the kill, want at least {} in whole batches",
        leases.len(),
        want.len()
    );
    assert_eq!(leases[..want.len()], want[..]);
    println!(
        "durability: killed the writer after batch {last}; all {} acknowledged leases survived ({} present)",
        want.len(),
        leases.len()
    );
}

fn main() {
    match std::env::var(CHILD_ENV) {
        Ok(url) => child(&url),
        Err(_) => parent(),
    }
}
