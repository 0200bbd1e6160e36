//! Lease upsert throughput: single-row `put_leases` calls (one DHCP ACK per
//! commit) and 256-lease batches (group commit), first inserting, then updating
//! the same addresses. Prints figures; asserts nothing.
//!
//!   cargo run --release -p rackboot-store --example lease_bench [-- URL]
//!
//! Without a URL it uses a SQLite file in a temp dir. For PostgreSQL:
//!   scripts/test-postgres run sh -c 'cargo run --release -p rackboot-store \
//!       --example lease_bench -- "$RACKBOOT_TEST_PG_URL"'

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use chrono::Utc;
use rackboot_core::{Lease, LeaseState, MacAddr};

const SINGLE_ROWS: u32 = 2000;
const BATCH: u32 = 256;
const BATCHES: u32 = 40;

fn lease(n: u32, state: LeaseState) -> Lease {
    Lease {
        ip: Ipv4Addr::from_bits(Ipv4Addr::new(10, 64, 0, 0).to_bits() + n),
        mac: Some(MacAddr([
            0x52,
            0x54,
            0,
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
        ])),
        client_id: Some(format!("01525400{n:06x}")),
        hostname: Some(format!("node-{n}")),
        state,
        expires_at: Utc::now() + chrono::TimeDelta::hours(1),
        subnet: "bench".into(),
        updated_at: Utc::now(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(what: &str, rows_per_call: u32, mut calls: Vec<Duration>) {
    let total: Duration = calls.iter().sum();
    calls.sort();
    let rows = rows_per_call as f64 * calls.len() as f64;
    println!(
        "{what:<32} {:>6} calls  {:>9.0} leases/s  per call: p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
        calls.len(),
        rows / total.as_secs_f64(),
        percentile(&calls, 0.5).as_secs_f64() * 1e3,
        percentile(&calls, 0.99).as_secs_f64() * 1e3,
        calls.last().unwrap().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("sqlite:{}", dir.path().join("bench.db").display()));
    let store = rackboot_store::open(&url).await?;
    println!(
        "backend {} ({})",
        store.backend(),
        rackboot_store::redact_url(&url)
    );

    for (what, state) in [
        ("single-row insert", LeaseState::Offered),
        ("single-row update", LeaseState::Bound),
    ] {
        let mut calls = Vec::with_capacity(SINGLE_ROWS as usize);
        for n in 0..SINGLE_ROWS {
            let l = lease(n, state);
            let t = Instant::now();
            store.put_leases(std::slice::from_ref(&l)).await?;
            calls.push(t.elapsed());
        }
        report(what, 1, calls);
    }

    for (what, state) in [
        ("256-lease batch insert", LeaseState::Offered),
        ("256-lease batch update", LeaseState::Bound),
    ] {
        let mut calls = Vec::with_capacity(BATCHES as usize);
        for b in 0..BATCHES {
            // Past the single-row range, so the insert pass really inserts.
            let base = SINGLE_ROWS + b * BATCH;
            let batch: Vec<Lease> = (base..base + BATCH).map(|n| lease(n, state)).collect();
            let t = Instant::now();
            store.put_leases(&batch).await?;
            calls.push(t.elapsed());
        }
        report(what, BATCH, calls);
    }
    Ok(())
}
