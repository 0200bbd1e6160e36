//! Reads the power state of many BMCs at once through [`PowerController::power_state`]
//! (the path the API takes), and optionally times the phases of one native RMCP+
//! exchange per BMC. Used by `bench/power.sh`; runs against any `ipmi://` (or other)
//! BMC URLs.
//!
//! ```text
//! cargo run --release -p rackboot-power --example power_status_many -- \
//!     [--concurrency N] [--phases] URL_FILE
//! ```
//!
//! URL_FILE holds one BMC URL a line (`ipmi://admin:password@127.0.0.1:6231?cipher=3`).
//! Prints one line of `key=value` pairs:
//! - controller: `wall_ms` (all reads, `--concurrency` at a time; default all at once),
//!   `ok`, `failed`, per-read latency `min_ms`/`median_ms`/`max_ms`;
//! - with `--phases`: the same BMCs again, one at a time with the bare client, and the
//!   mean milliseconds of session setup (`connect_ms`: channel auth capabilities, open
//!   session, RAKP 1-4, set privilege), the status command (`status_ms`) and the session
//!   close (`close_ms`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rackboot_ipmi::{CipherSuiteChoice, IpmiClient, IpmiOptions};
use rackboot_power::{BmcTarget, PowerConfig, PowerController};

struct Args {
    concurrency: Option<usize>,
    phases: bool,
    targets: Vec<BmcTarget>,
}

fn parse_args() -> Result<Args, String> {
    let mut concurrency = None;
    let mut phases = false;
    let mut file = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--concurrency" => {
                let n = args.next().ok_or("--concurrency needs a number")?;
                concurrency = Some(
                    n.parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or(format!("--concurrency: not a positive number: {n}"))?,
                );
            }
            "--phases" => phases = true,
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ if file.is_none() => file = Some(arg),
            _ => return Err(format!("one URL file only (extra argument {arg})")),
        }
    }
    let file = file.ok_or("usage: power_status_many [--concurrency N] [--phases] URL_FILE")?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("read {file}: {e}"))?;
    let targets = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.parse::<BmcTarget>()
                .map_err(|e| format!("{file}: bad BMC URL: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() {
        return Err(format!("{file}: no BMC URLs"));
    }
    Ok(Args {
        concurrency,
        phases,
        targets,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The controller path: every read gets its own driver and session, as in the API.
async fn controller_round(targets: &[BmcTarget], concurrency: usize) -> String {
    let controller = Arc::new(PowerController::new(PowerConfig {
        max_concurrent: concurrency,
        ..PowerConfig::default()
    }));
    let start = Instant::now();
    let results: Vec<(Duration, bool)> = futures::stream::iter(targets.iter().map(|target| {
        let controller = controller.clone();
        async move {
            let t0 = Instant::now();
            let result = controller.power_state(target).await;
            if let Err(e) = &result {
                eprintln!("{}: {e}", target.redacted());
            }
            (t0.elapsed(), result.is_ok())
        }
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await;
    let wall = start.elapsed();
    let mut latencies: Vec<Duration> = results.iter().map(|(d, _)| *d).collect();
    latencies.sort();
    let ok = results.iter().filter(|(_, ok)| *ok).count();
    format!(
        "wall_ms={:.1} ok={ok} failed={} min_ms={:.1} median_ms={:.1} max_ms={:.1}",
        ms(wall),
        results.len() - ok,
        ms(latencies[0]),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1]),
    )
}

/// One BMC at a time with the bare client: where one status read spends its time.
async fn phases_round(targets: &[BmcTarget]) -> Result<String, String> {
    let (mut connect, mut status, mut close) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut n = 0u32;
    for target in targets {
        let addr: SocketAddr = tokio::net::lookup_host((target.url.host(), target.url.port()))
            .await
            .map_err(|e| format!("{}: {e}", target.redacted()))?
            .next()
            .ok_or_else(|| format!("{}: no address", target.redacted()))?;
        let options = IpmiOptions {
            cipher_suite: match target.url.cipher_suite() {
                Some(3) => CipherSuiteChoice::Suite3,
                Some(17) => CipherSuiteChoice::Suite17,
                _ => CipherSuiteChoice::Auto,
            },
            ..IpmiOptions::default()
        };
        let t0 = Instant::now();
        let mut client = IpmiClient::connect(addr, &target.username, &target.password, options)
            .await
            .map_err(|e| format!("{}: {e}", target.redacted()))?;
        let t1 = Instant::now();
        client
            .chassis_status()
            .await
            .map_err(|e| format!("{}: {e}", target.redacted()))?;
        let t2 = Instant::now();
        client
            .close()
            .await
            .map_err(|e| format!("{}: {e}", target.redacted()))?;
        connect += t1 - t0;
        status += t2 - t1;
        close += t2.elapsed();
        n += 1;
    }
    Ok(format!(
        "connect_ms={:.2} status_ms={:.2} close_ms={:.2} sequential_total_ms={:.1}",
        ms(connect) / f64::from(n),
        ms(status) / f64::from(n),
        ms(close) / f64::from(n),
        ms(connect + status + close),
    ))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("power_status_many: {e}");
            return ExitCode::from(2);
        }
    };
    let concurrency = args.concurrency.unwrap_or(args.targets.len());
    let mut line = format!(
        "bmcs={} concurrency={concurrency} {}",
        args.targets.len(),
        controller_round(&args.targets, concurrency).await
    );
    let failed = !line.contains(" failed=0 ");
    if args.phases {
        match phases_round(&args.targets).await {
            Ok(p) => line = format!("{line} {p}"),
            Err(e) => {
                eprintln!("power_status_many: phases: {e}");
                println!("{line}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{line}");
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
