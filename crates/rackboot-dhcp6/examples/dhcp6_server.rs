//! A standalone rackboot DHCPv6 server for the namespace tests, kill -9 tests
//! and `bench/dhcp6.sh`:
//!
//! `dhcp6_server IFNAME CONFIG.toml [STORE_URL]`
//!
//! CONFIG.toml is a `[dhcp6]` section body (Dhcp6Config). STORE_URL is what
//! `rackboot_store::open` takes; default in-memory SQLite. Prints `ready` once
//! bound; on SIGINT/SIGTERM prints `counters received=.. replied=.. dropped=..
//! lease_writes=..` and exits. Boot answers (through BootResponder's default
//! dhcp6_boot): UEFI snponly.efi over TFTP, iPXE and HTTP clients a script URL
//! on port 8080.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

use rackboot_core::{BootResponder, DhcpBoot, EventHub, MacAddr, PxeClient};
use rackboot_dhcp6::{Dhcp6Config, Dhcp6Counters, Dhcp6Sockets, Dhcp6State};
use tokio_util::sync::CancellationToken;

struct FixedBoot;

impl BootResponder for FixedBoot {
    fn dhcp_boot(&self, mac: MacAddr, client: &PxeClient, server_ip: Ipv4Addr) -> Option<DhcpBoot> {
        let filename = if client.ipxe || client.http_boot {
            format!("http://{server_ip}:8080/boot/ipxe/{mac}")
        } else if client.arch.is_uefi() {
            "snponly.efi".into()
        } else {
            "undionly.kpxe".into()
        };
        Some(DhcpBoot {
            filename,
            next_server: None,
            http_client: client.http_boot,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err("usage: dhcp6_server IFNAME CONFIG.toml [STORE_URL]".into());
    }
    let config: Dhcp6Config = toml::from_str(&std::fs::read_to_string(&args[2])?)?;
    let store =
        rackboot_store::open(args.get(3).map(String::as_str).unwrap_or("sqlite::memory:")).await?;
    let sockets = Dhcp6Sockets::bind(&args[1], config.router_advertisements.enabled)?;
    let (hub, queue) = EventHub::new(65536);
    tokio::spawn(queue.run_unpersisted(hub.clone()));
    let counters = Arc::new(Dhcp6Counters::default());
    let state = Dhcp6State {
        config,
        store,
        events: hub,
        boot: Arc::new(FixedBoot),
        counters: counters.clone(),
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    let server = tokio::spawn(rackboot_dhcp6::run(sockets, state, shutdown));
    println!("ready");
    std::io::stdout().flush()?;
    server.await??;
    let get = |c: &std::sync::atomic::AtomicU64| Dhcp6Counters::get(c);
    println!(
        "counters received={} replied={} dropped={} lease_writes={}",
        get(&counters.received),
        get(&counters.replied),
        get(&counters.dropped),
        get(&counters.lease_writes)
    );
    Ok(())
}
