//! A standalone rackboot DHCP server for manual tests and perfdhcp runs:
//!
//! `dhcp_server IFNAME SERVER_IP CONFIG.toml [STORE_URL]`
//!
//! CONFIG.toml is a `[dhcp]` section body (DhcpConfig). STORE_URL is what
//! `rackboot_store::open` takes (`sqlite:PATH`, `postgres://...`); default in-memory SQLite.
//! Runs until SIGINT/SIGTERM. Boot answers: BIOS undionly.kpxe, UEFI ipxe.efi,
//! iPXE/HTTP clients a script URL on SERVER_IP:8080.

use std::net::Ipv4Addr;
use std::sync::Arc;

use rackboot_core::{BootResponder, DhcpBoot, EventHub, MacAddr, PxeClient};
use rackboot_dhcp::{DhcpConfig, DhcpSockets};
use tokio_util::sync::CancellationToken;

struct FixedBoot;

impl BootResponder for FixedBoot {
    fn dhcp_boot(&self, mac: MacAddr, client: &PxeClient, server_ip: Ipv4Addr) -> Option<DhcpBoot> {
        let filename = if client.ipxe || client.http_boot {
            format!("http://{server_ip}:8080/boot/ipxe?mac={mac}")
        } else if client.arch.is_uefi() {
            "ipxe.efi".into()
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
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: dhcp_server IFNAME SERVER_IP CONFIG.toml [STORE_URL]".into());
    }
    let (ifname, server_ip): (&str, Ipv4Addr) = (&args[1], args[2].parse()?);
    let config: DhcpConfig = toml::from_str(&std::fs::read_to_string(&args[3])?)?;
    let store =
        rackboot_store::open(args.get(4).map(String::as_str).unwrap_or("sqlite::memory:")).await?;
    let sockets = DhcpSockets::bind(ifname, server_ip, &config)?;
    let (hub, queue) = EventHub::new(65536);
    tokio::spawn(queue.run_unpersisted(hub.clone()));
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
    rackboot_dhcp::run(
        sockets,
        config,
        store,
        hub,
        Arc::new(FixedBoot),
        rackboot_core::BoundLeases::default(),
        shutdown,
    )
    .await?;
    Ok(())
}
