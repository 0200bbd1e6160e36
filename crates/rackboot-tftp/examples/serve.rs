//! Standalone server for manual tests and benchmarks:
//! `cargo run --release -p rackboot-tftp --example serve -- ROOT [ADDR:PORT]`
//! (default 127.0.0.1:6969). Stops on Ctrl-C.

use std::net::Ipv4Addr;
use std::sync::Arc;

use rackboot_core::{EventHub, GeneratedFile, TftpContent};
use rackboot_tftp::TftpConfig;

struct NothingGenerated;

impl TftpContent for NothingGenerated {
    fn generate(&self, _path: &str, _client: Ipv4Addr) -> GeneratedFile {
        GeneratedFile::NotGenerated
    }
}

fn main() {
    // RACKBOOT_TFTP_RUNTIME=current: single-threaded runtime (for comparisons).
    let mut rt = if std::env::var("RACKBOOT_TFTP_RUNTIME").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    rt.enable_all().build().expect("runtime").block_on(serve());
}

async fn serve() {
    let mut args = std::env::args().skip(1);
    let root = args.next().expect("usage: serve ROOT [ADDR:PORT]");
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:6969".into());
    let socket = tokio::net::UdpSocket::bind(&addr).await.expect("bind");
    let (hub, queue) = EventHub::new(1024);
    tokio::spawn(queue.run_unpersisted(hub.clone()));
    // Print events (TftpSent / TftpFailed) as they happen.
    let mut live = hub.subscribe();
    tokio::spawn(async move {
        while let Ok(e) = live.recv().await {
            eprintln!("{} {}", e.kind.as_str(), e.message);
        }
    });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    let config = TftpConfig {
        root: Some(root.into()),
        ..TftpConfig::default()
    };
    eprintln!("serving on {addr}");
    rackboot_tftp::run(socket, config, Arc::new(NothingGenerated), hub, shutdown)
        .await
        .expect("tftp server");
}
