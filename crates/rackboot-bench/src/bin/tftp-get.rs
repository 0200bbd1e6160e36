//! `tftp-get SERVER FILE [--blksize N] [--windowsize N] [--out PATH] [--timeout-ms N]`
//!
//! Downloads FILE from SERVER (host or host:port, port 69 by default) and prints
//! one line: `bytes=... secs=... mibs=... cpu=... retransmits=...`, where cpu is
//! this process's user + system seconds. The file is kept in memory and written
//! to PATH after the clock stops.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use rackboot_bench::tftp_get::{GetOptions, tftp_get};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tftp-get: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut blksize = None;
    let mut windowsize = None;
    let mut out = None;
    let mut timeout = Duration::from_secs(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--blksize" => blksize = Some(value("--blksize")?.parse().context("--blksize")?),
            "--windowsize" => {
                windowsize = Some(value("--windowsize")?.parse().context("--windowsize")?)
            }
            "--out" => out = Some(value("--out")?),
            "--timeout-ms" => {
                timeout =
                    Duration::from_millis(value("--timeout-ms")?.parse().context("--timeout-ms")?)
            }
            "-h" | "--help" => {
                println!(
                    "usage: tftp-get SERVER[:PORT] FILE [--blksize N] [--windowsize N] [--out PATH] [--timeout-ms N]"
                );
                return Ok(());
            }
            s if s.starts_with("--") => bail!("unknown option {s}"),
            _ => positional.push(arg),
        }
    }
    let [server, file] = positional.as_slice() else {
        bail!("usage: tftp-get SERVER[:PORT] FILE [options]");
    };
    let server = resolve(server)?;
    let fetched = tftp_get(&GetOptions {
        server,
        file: file.clone(),
        blksize,
        windowsize,
        timeout,
        retries: 5,
    })?;
    let secs = fetched.elapsed.as_secs_f64();
    let cpu = cpu_seconds();
    println!(
        "bytes={} secs={secs:.4} mibs={:.1} cpu={cpu:.3} blksize={} windowsize={} retransmits={}",
        fetched.data.len(),
        fetched.data.len() as f64 / 1_048_576.0 / secs,
        fetched.blksize,
        fetched.windowsize,
        fetched.retransmits
    );
    if let Some(path) = out {
        std::fs::write(&path, &fetched.data).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

fn resolve(server: &str) -> anyhow::Result<SocketAddr> {
    let with_port = if server.contains(':') {
        server.to_string()
    } else {
        format!("{server}:69")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .with_context(|| format!("{with_port} has no address"))
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    use nix::libc;
    // SAFETY: getrusage fills the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
