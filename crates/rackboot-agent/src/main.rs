//! `rackboot-agent`: reads `rackboot.url=` and `rackboot.token=` from
//! /proc/cmdline (or `--url`/`--token`), then serves the server until a
//! reboot or power-off. The RAM-disk's init restarts it if it exits.
//!
//! ```text
//! rackboot-agent                                   # on a machine
//! rackboot-agent --url U --token T                 # tests
//! rackboot-agent --simulate DIR --url U --token T --mac M [--serial S]
//!                [--disk-mibps N] [--request-log FILE]
//! ```
//! `--request-log` appends one line per request to the server (`PATH STATUS
//! MICROSECONDS`): how fleet benchmarks see the server's latency from the agents.
//! A simulated agent exits with status 10 after an accepted reboot and 11
//! after an accepted power-off.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackboot_agent::agent::{Agent, Exit};
use rackboot_agent::alog;
use rackboot_agent::client::Client;
use rackboot_agent::context::{Env, SimConfig};
use rackboot_agent::steps::power;
use rackboot_agent_proto::BootArgs;

const USAGE: &str = "usage: rackboot-agent [--url URL --token TOKEN] \
                     [--simulate DIR --mac MAC [--serial SERIAL] [--disk-mibps N] [--request-log FILE]]";

#[derive(Debug, Default, PartialEq, Eq)]
struct Flags {
    url: Option<String>,
    token: Option<String>,
    simulate: Option<PathBuf>,
    mac: Option<String>,
    serial: Option<String>,
    /// Simulated disk speed, MiB/s.
    disk_mibps: Option<u64>,
    /// Simulation: where to log each request's latency.
    request_log: Option<PathBuf>,
}

fn parse_flags(args: &[String]) -> Result<Flags, String> {
    let mut f = Flags::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name {
            "--url" => f.url = Some(value()?),
            "--token" => f.token = Some(value()?),
            "--simulate" => f.simulate = Some(PathBuf::from(value()?)),
            "--mac" => f.mac = Some(value()?.to_ascii_lowercase()),
            "--serial" => f.serial = Some(value()?),
            "--disk-mibps" => {
                let v = value()?;
                f.disk_mibps = Some(
                    v.parse()
                        .map_err(|_| format!("--disk-mibps {v:?}: a number"))?,
                )
            }
            "--request-log" => f.request_log = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if f.simulate.is_some() && f.mac.is_none() {
        return Err("--simulate needs --mac".into());
    }
    if f.simulate.is_some() && f.url.is_none() {
        return Err("--simulate needs --url and --token".into());
    }
    if f.disk_mibps.is_some() && f.simulate.is_none() {
        return Err("--disk-mibps is for --simulate".into());
    }
    if f.request_log.is_some() && f.simulate.is_none() {
        return Err("--request-log is for --simulate".into());
    }
    if f.url.is_some() != f.token.is_some() {
        return Err("--url and --token go together".into());
    }
    Ok(f)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    if args.iter().any(|a| a == "--version") {
        println!("rackboot-agent {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let flags = match parse_flags(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("rackboot-agent: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let from_flags = flags.url.is_some();
    let cmdline = match (&flags.url, &flags.token) {
        (Some(url), Some(token)) => format!("rackboot.url={url} rackboot.token={token}"),
        _ => std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
    };
    let boot_args = match BootArgs::from_cmdline(&cmdline) {
        Ok(a) => a,
        Err(e) => {
            alog!("{e}");
            if !from_flags {
                // init restarts the agent; do not spin on the console.
                std::thread::sleep(Duration::from_secs(60));
            }
            std::process::exit(2);
        }
    };
    let mut client = match Client::new(&boot_args.url, &boot_args.token) {
        Ok(c) => c,
        Err(e) => {
            alog!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(path) = &flags.request_log {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => client.request_log = Some(Arc::new(Mutex::new(file))),
            Err(e) => {
                alog!("--request-log {}: {e}", path.display());
                std::process::exit(2);
            }
        }
    }
    let env = match flags.simulate {
        Some(dir) => Env::simulated(SimConfig {
            dir,
            mac: flags.mac.unwrap_or_default(),
            serial: flags.serial,
        }),
        None => Env::real(),
    };
    let simulated = env.sim.is_some();
    if let Some(mibps) = flags.disk_mibps {
        rackboot_agent::blockdev::set_simulated_speed(mibps);
    }
    let agent = Agent::new(client, env);
    match agent.run() {
        Exit::Power(action) if simulated => {
            alog!(
                "simulated {action:?}: exiting with {}",
                action.sim_exit_code()
            );
            std::process::exit(action.sim_exit_code());
        }
        Exit::Power(action) => {
            power::perform(action);
            std::process::exit(1);
        }
        Exit::Stopped => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn flags() {
        let f = parse_flags(&args(
            "--simulate /tmp/m1 --url http://127.0.0.1:8080 --token=abc --mac 52:54:00:AA:00:01 --serial S1",
        ))
        .unwrap();
        assert_eq!(f.simulate, Some(PathBuf::from("/tmp/m1")));
        assert_eq!(f.token.as_deref(), Some("abc"));
        assert_eq!(f.mac.as_deref(), Some("52:54:00:aa:00:01"));
        assert_eq!(parse_flags(&[]).unwrap(), Flags::default());
        for (bad, want) in [
            ("--url", "needs a value"),
            ("--simulate /x --url u --token t", "needs --mac"),
            ("--url http://a", "go together"),
            ("--url u --token t --request-log /tmp/r", "for --simulate"),
            ("--frobnicate", "unknown argument"),
        ] {
            assert!(parse_flags(&args(bad)).unwrap_err().contains(want), "{bad}");
        }
    }
}
