//! Read-only TFTP server (RFC 1350/2347/2348/2349/7440) for rackboot.
//!
//! [`run`] reads requests from a socket the caller bound (port 69, or 0 in
//! tests). Each read request gets its own task and ephemeral socket, bound to the
//! local address the request arrived on (learned with IP_PKTINFO, so a listener
//! bound to 0.0.0.0 still answers from the right address) and connected to the
//! client. Files come from, in order: generated content ([`TftpContent`]), the
//! exact `files` map, `dirs` prefixes, then `root`. Writes are refused.
//!
//! Metrics: `rackboot_tftp_transfers_started_total`,
//! `rackboot_tftp_transfers_completed_total`,
//! `rackboot_tftp_transfers_failed_total{reason}`,
//! `rackboot_tftp_transfers_aborted_total` (client ERROR or closed port after the
//! OACK: a PXE/UEFI tsize probe; not a failure, no event), `rackboot_tftp_requests_rejected_total{reason}`
//! (`probe_miss`: a loader asked for an optional file that is absent, see
//! [`known_probe`]; not a failure, no event),
//! `rackboot_tftp_bytes_sent_total`, `rackboot_tftp_retransmits_total`,
//! `rackboot_tftp_dropped_total{reason}`, gauge `rackboot_tftp_active_transfers`,
//! histogram `rackboot_tftp_transfer_duration_seconds`.

mod config;
mod net;
mod path;
mod probe;
mod stream;
mod transfer;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rackboot_core::{EventHub, EventKind, GeneratedFile, NewEvent, TftpContent};
use rackboot_wire::tftp::{self, ErrorCode, Mode, Packet, Request};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::TftpConfig;
pub use path::{OpenError, normalize};
pub use probe::known_probe;

use path::Resolver;
use stream::{Source, Stream};
use transfer::Outcome;

#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    #[error("invalid TFTP config: {0}")]
    Config(String),
    #[error("TFTP {what} directory {path}: {source}")]
    Directory {
        what: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("TFTP socket: {0}")]
    Socket(#[source] io::Error),
    #[error("cannot start TFTP transfer threads: {0}")]
    Runtime(#[source] io::Error),
    #[error("cannot enter the listening socket's network namespace: {0}")]
    Netns(#[source] io::Error),
}

/// Everything a transfer task needs, shared by all of them.
struct Shared {
    config: TftpConfig,
    resolver: Resolver,
    content: Arc<dyn TftpContent>,
    events: EventHub,
    shutdown: CancellationToken,
    /// Local address of the listener, used when a datagram carries no pktinfo.
    listen_ip: IpAddr,
    active: Mutex<Active>,
}

#[derive(Default)]
struct Active {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Counts one running transfer; dropping it releases the slot.
struct Slot {
    shared: Arc<Shared>,
    client: IpAddr,
}

impl Shared {
    fn try_acquire(self: &Arc<Self>, client: IpAddr) -> Result<Slot, &'static str> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.total >= self.config.max_transfers {
            return Err("busy");
        }
        let per = active.per_client.entry(client).or_default();
        if *per >= self.config.max_transfers_per_client {
            return Err("client_busy");
        }
        *per += 1;
        active.total += 1;
        metrics::gauge!("rackboot_tftp_active_transfers").set(active.total as f64);
        Ok(Slot {
            shared: self.clone(),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut active = self.shared.active.lock().unwrap_or_else(|e| e.into_inner());
        active.total -= 1;
        if let Some(per) = active.per_client.get_mut(&self.client) {
            *per -= 1;
            if *per == 0 {
                active.per_client.remove(&self.client);
            }
        }
        metrics::gauge!("rackboot_tftp_active_transfers").set(active.total as f64);
    }
}

/// Serves TFTP read requests arriving on `socket` until `shutdown` is cancelled,
/// then stops running transfers (they send ERROR 0 to their clients) and returns.
///
/// `socket` may be IPv4 or IPv6 (bind an IPv6 one with IPV6_V6ONLY beside an
/// IPv4 one); bind it to the unspecified or a specific address (port 69 in
/// production). Each transfer replies from the address its request was sent to.
pub async fn run(
    socket: UdpSocket,
    config: TftpConfig,
    content: Arc<dyn TftpContent>,
    events: EventHub,
    shutdown: CancellationToken,
) -> Result<(), TftpError> {
    config.validate()?;
    let resolver = Resolver::new(config.root.as_deref(), &config.files, &config.dirs)?;
    let local = socket.local_addr().map_err(TftpError::Socket)?;
    net::enable_pktinfo(&socket).map_err(TftpError::Socket)?;
    let shared = Arc::new(Shared {
        config,
        resolver,
        content,
        events,
        shutdown: shutdown.clone(),
        listen_ip: local.ip(),
        active: Mutex::new(Active::default()),
    });
    tracing::info!(%local, "TFTP server listening");
    let netns = net::socket_netns(&socket);
    let workers = Workers::start(shared.config.worker_threads(), netns)?;
    let tracker = TaskTracker::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = net::recv_with_pktinfo(&socket, &mut buf) => r,
        };
        let received = match received {
            Ok(r) => r,
            Err(e) => {
                // Transient (e.g. ENOMEM, a stray ICMP error); never fatal for the listener.
                tracing::warn!(error = %e, "TFTP receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let local_ip = received
            .local_ip
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or(shared.listen_ip);
        let peer = received.peer;
        match Packet::parse(&buf[..received.len]) {
            Ok(Packet::Rrq(request)) => match shared.try_acquire(peer.ip()) {
                Ok(slot) => {
                    metrics::counter!("rackboot_tftp_transfers_started_total").increment(1);
                    tracker.spawn_on(serve_read(slot, local_ip, peer, request), workers.next());
                }
                Err(reason) => {
                    tracing::debug!(%peer, reason, "TFTP request dropped");
                    metrics::counter!("rackboot_tftp_dropped_total", "reason" => reason)
                        .increment(1);
                }
            },
            Ok(Packet::Wrq(request)) => {
                metrics::counter!("rackboot_tftp_requests_rejected_total", "reason" => "write_request")
                    .increment(1);
                tracing::debug!(%peer, file = %request.filename, "TFTP write refused");
                tracker.spawn_on(
                    refuse(
                        local_ip,
                        peer,
                        ErrorCode::AccessViolation,
                        "read-only server",
                    ),
                    workers.next(),
                );
            }
            Ok(_) => {
                metrics::counter!("rackboot_tftp_dropped_total", "reason" => "unexpected_opcode")
                    .increment(1);
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "malformed TFTP packet");
                metrics::counter!("rackboot_tftp_dropped_total", "reason" => e.reason())
                    .increment(1);
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    workers.stop().await;
    tracing::info!("TFTP server stopped");
    Ok(())
}

/// Transfer threads, each with a single-threaded runtime. Lock-step TFTP is bound
/// by wake-up latency (one round trip per block); on a work-stealing runtime the
/// ACK's wake-up often crosses threads, which halved lock-step throughput in
/// measurements. Transfers are spread over the threads round-robin.
struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    next: std::cell::Cell<usize>,
    stop: CancellationToken,
    done: Vec<tokio::sync::oneshot::Receiver<()>>,
}

impl Workers {
    /// `netns`: the listening socket's network namespace. Transfer sockets are
    /// created on the worker threads, so those threads join it (when it is not
    /// already theirs): a caller may bind the listener inside another namespace.
    fn start(count: usize, netns: Option<std::os::fd::OwnedFd>) -> Result<Workers, TftpError> {
        let netns = netns.map(Arc::new);
        let stop = CancellationToken::new();
        let mut handles = Vec::new();
        let mut done = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("rackboot-tftp-{i}"))
                .build()
                .map_err(TftpError::Runtime)?;
            handles.push(runtime.handle().clone());
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            done.push(done_rx);
            let stop = stop.clone();
            let netns = netns.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("rackboot-tftp-{i}"))
                .spawn(move || {
                    let joined = match &netns {
                        Some(ns) => net::enter_netns(ns),
                        None => Ok(()),
                    };
                    let ok = joined.is_ok();
                    let _ = ready_tx.send(joined);
                    if ok {
                        runtime.block_on(stop.cancelled());
                    }
                    drop(runtime);
                    let _ = done_tx.send(());
                })
                .map_err(TftpError::Runtime)?;
            ready_rx
                .recv()
                .map_err(|_| TftpError::Runtime(io::Error::other("transfer thread died")))?
                .map_err(TftpError::Netns)?;
        }
        Ok(Workers {
            handles,
            next: std::cell::Cell::new(0),
            stop,
            done,
        })
    }

    fn next(&self) -> &tokio::runtime::Handle {
        let i = self.next.get();
        self.next.set((i + 1) % self.handles.len());
        &self.handles[i]
    }

    /// Call once every transfer has finished.
    async fn stop(mut self) {
        self.stop.cancel();
        for d in std::mem::take(&mut self.done) {
            let _ = d.await;
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // If run() is dropped mid-way, let the threads end (their tasks are cancelled).
        self.stop.cancel();
    }
}

/// A socket for one transfer: same local address as the request, new port, connected.
async fn transfer_socket(local_ip: IpAddr, peer: SocketAddr) -> io::Result<UdpSocket> {
    let local = match (local_ip, peer) {
        // A link-local address is only meaningful with the peer's interface.
        (IpAddr::V6(ip), SocketAddr::V6(p)) if ip.is_unicast_link_local() => {
            SocketAddr::V6(std::net::SocketAddrV6::new(ip, 0, 0, p.scope_id()))
        }
        (ip, _) => SocketAddr::new(ip, 0),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(peer).await?;
    Ok(socket)
}

async fn send_error(socket: &UdpSocket, code: ErrorCode, message: &str) {
    let mut pkt = Vec::with_capacity(message.len() + 5);
    tftp::encode_error(code, message, &mut pkt);
    // Best effort: the client may be gone.
    let _ = socket.send(&pkt).await;
}

async fn refuse(local_ip: IpAddr, peer: SocketAddr, code: ErrorCode, message: &'static str) {
    match transfer_socket(local_ip, peer).await {
        Ok(socket) => send_error(&socket, code, message).await,
        Err(e) => tracing::warn!(%peer, error = %e, "cannot open TFTP reply socket"),
    }
}

fn failed_event(shared: &Shared, file: &str, client: IpAddr, reason: &str, bytes: u64) {
    shared.events.emit(
        NewEvent::new(
            EventKind::TftpFailed,
            format!("TFTP {file} to {client} failed: {reason}"),
        )
        .data(serde_json::json!({
            "file": file,
            "client_ip": client.to_string(),
            "error": reason,
            "bytes": bytes,
        })),
    );
}

fn reject(shared: &Shared, file: &str, client: IpAddr, metric_reason: &'static str, detail: &str) {
    metrics::counter!("rackboot_tftp_requests_rejected_total", "reason" => metric_reason)
        .increment(1);
    failed_event(shared, file, client, detail, 0);
}

/// Netascii size of `source`, `None` if it cannot be read (then tsize is not
/// offered). Gives the source back, or nothing if the blocking task died.
async fn netascii_tsize(source: Source) -> Option<(Source, Option<u64>)> {
    match source {
        Source::Memory(bytes) => {
            let n = tftp::netascii_encoded_len(&bytes);
            Some((Source::Memory(bytes), Some(n)))
        }
        Source::File(file) => {
            let mut source = Source::File(file);
            let join = tokio::task::spawn_blocking(move || {
                let n = stream::netascii_size(&mut source);
                (source, n)
            })
            .await;
            join.ok().map(|(source, n)| (source, n.ok()))
        }
    }
}

async fn serve_read(slot: Slot, local_ip: IpAddr, peer: SocketAddr, request: Request) {
    let shared = slot.shared.clone();
    let client = peer.ip();
    let started = Instant::now();
    let socket = match transfer_socket(local_ip, peer).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, %local_ip, error = %e, "cannot open TFTP transfer socket");
            metrics::counter!("rackboot_tftp_transfers_failed_total", "reason" => "socket")
                .increment(1);
            let reason = format!("cannot open a socket on {local_ip}: {e}");
            failed_event(&shared, &request.filename, client, &reason, 0);
            return;
        }
    };
    let file = request.filename.clone();

    // Where do the bytes come from?
    let path = match path::normalize(&request.filename) {
        Ok(p) => p,
        Err(e) => {
            let (code, reason) = match e {
                OpenError::NotFound => (ErrorCode::FileNotFound, "not_found"),
                _ => (ErrorCode::AccessViolation, "access_violation"),
            };
            tracing::info!(%peer, %file, error = %e, "TFTP request refused");
            reject(&shared, &file, client, reason, &e.to_string());
            send_error(&socket, code, &e.to_string()).await;
            return;
        }
    };
    let (mut source, size, generated) = match shared.content.generate_for(&path, client) {
        GeneratedFile::Content(bytes) => {
            let len = bytes.len() as u64;
            (Source::Memory(bytes), len, true)
        }
        GeneratedFile::NotFound => {
            // Expected (pxelinux probes many names): no event, just the metric.
            metrics::counter!("rackboot_tftp_requests_rejected_total", "reason" => "not_found")
                .increment(1);
            send_error(&socket, ErrorCode::FileNotFound, "file not found").await;
            return;
        }
        GeneratedFile::NotGenerated => {
            let opened = {
                let shared = shared.clone();
                let path = path.clone();
                tokio::task::spawn_blocking(move || shared.resolver.open(&path)).await
            };
            match opened {
                Ok(Ok((f, len))) => (Source::File(f), len, false),
                Ok(Err(OpenError::NotFound)) if probe::known_probe(&path).is_some() => {
                    // A loader looking for an optional file: counted apart, no event.
                    metrics::counter!("rackboot_tftp_requests_rejected_total", "reason" => "probe_miss")
                        .increment(1);
                    tracing::debug!(%peer, %file, loader = probe::known_probe(&path), "TFTP probe miss");
                    send_error(&socket, ErrorCode::FileNotFound, "file not found").await;
                    return;
                }
                Ok(Err(e)) => {
                    let (code, reason) = match &e {
                        OpenError::NotFound => (ErrorCode::FileNotFound, "not_found"),
                        OpenError::AccessViolation(_) => {
                            (ErrorCode::AccessViolation, "access_violation")
                        }
                        OpenError::NotRegular => (ErrorCode::AccessViolation, "not_regular"),
                        OpenError::Io { .. } => (ErrorCode::NotDefined, "io"),
                    };
                    if matches!(e, OpenError::NotRegular) {
                        // Someone put a FIFO, socket or device in a served tree.
                        tracing::warn!(%peer, %file, "TFTP request refused: not a regular file");
                    } else {
                        tracing::info!(%peer, %file, error = %e, "TFTP request refused");
                    }
                    reject(&shared, &file, client, reason, &e.to_string());
                    let message = match &e {
                        OpenError::Io { .. } => "cannot read file".to_string(),
                        other => other.to_string(),
                    };
                    send_error(&socket, code, &message).await;
                    return;
                }
                Err(join) => {
                    tracing::error!(error = %join, "TFTP open task failed");
                    send_error(&socket, ErrorCode::NotDefined, "internal error").await;
                    return;
                }
            }
        }
    };

    let netascii = request.mode == Mode::Netascii;
    let tsize = if !tftp::has_option(&request.options, "tsize") {
        None
    } else if netascii {
        // The encoded size: read the file once more (only when the client asks).
        let Some((s, counted)) = netascii_tsize(source).await else {
            send_error(&socket, ErrorCode::NotDefined, "internal error").await;
            return;
        };
        source = s;
        counted
    } else {
        Some(size)
    };
    let negotiated = tftp::negotiate_read(&request.options, &shared.config.option_limits(), tsize);
    let timeout = negotiated
        .timeout_secs
        .map(|s| Duration::from_secs(s as u64))
        .unwrap_or(shared.config.timeout());
    let params = transfer::Params {
        blksize: negotiated.blksize,
        windowsize: negotiated.windowsize,
        timeout,
        max_timeout: shared.config.max_timeout().max(timeout),
        retries: shared.config.retries,
        oack: negotiated.oack_packet().map(|p| p.encode()),
    };
    let window_bytes = negotiated.blksize as usize * negotiated.windowsize as usize;
    let mut stream = Stream::new(source, netascii, window_bytes, Some(size));
    tracing::debug!(%peer, %file, blksize = params.blksize, windowsize = params.windowsize, "TFTP transfer starting");

    let result = transfer::send(&socket, &mut stream, &params, &shared.shutdown).await;
    let elapsed = started.elapsed();
    metrics::histogram!("rackboot_tftp_transfer_duration_seconds").record(elapsed.as_secs_f64());
    match result {
        Ok(Outcome::Completed { bytes }) => {
            metrics::counter!("rackboot_tftp_transfers_completed_total").increment(1);
            tracing::info!(%peer, %file, bytes, ms = elapsed.as_millis() as u64, "TFTP sent");
            shared.events.emit(
                NewEvent::new(
                    EventKind::TftpSent,
                    format!(
                        "sent {file} ({bytes} bytes) to {client} in {} ms",
                        elapsed.as_millis()
                    ),
                )
                .data(serde_json::json!({
                    "file": file,
                    "path": path,
                    "bytes": bytes,
                    "client_ip": client.to_string(),
                    "server_ip": local_ip.to_string(),
                    "blksize": params.blksize,
                    "windowsize": params.windowsize,
                    "mode": request.mode.as_str(),
                    "generated": generated,
                    "duration_ms": elapsed.as_millis() as u64,
                })),
            );
        }
        Ok(Outcome::LeftAfterOack { why }) => {
            metrics::counter!("rackboot_tftp_transfers_aborted_total").increment(1);
            tracing::debug!(%peer, %file, %why, "TFTP client ended transfer after OACK");
        }
        Err(e) => {
            metrics::counter!("rackboot_tftp_transfers_failed_total", "reason" => e.reason())
                .increment(1);
            tracing::info!(%peer, %file, error = %e, "TFTP transfer failed");
            if let Some((code, message)) = e.error_for_client() {
                send_error(&socket, code, message).await;
            }
            failed_event(&shared, &file, client, &e.to_string(), e.bytes());
        }
    }
    drop(slot);
}
