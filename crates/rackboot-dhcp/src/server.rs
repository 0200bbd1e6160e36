//! The socket loop: receive, decide (lease engine or ProxyDHCP), reply. ACKs wait
//! for their lease to be durable: they queue to the commit task, which writes
//! every lease queued since its last write in one `put_leases` call (group commit)
//! and only then hands the replies to a sender that sends them in short bursts.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dhcproto::v4::{DhcpOption, Message, MessageType};
use metrics::{counter, gauge, histogram};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, setsockopt, sockopt};
use rackboot_core::{
    BootResponder, BoundLeases, EventHub, EventKind, Lease, LeaseState, NewEvent, PxeClient,
};
use rackboot_store::Store;
use rackboot_wire::dhcp::{self as wire, ReplyTo, Request};
use rackboot_wire::pxe;
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{DhcpConfig, DhcpMode};
use crate::engine::{ClientKey, Ignore, LeaseEngine, Outcome, Timings};
use crate::peers::Peers;
use crate::probe::{self, ProbeJob, ProbeVerdict};
use crate::send::{Reply, TypeCounters, send_all};
use crate::{DhcpError, DhcpSockets};

/// Queue between the receive loop and the commit task.
const COMMIT_QUEUE: usize = 65536;
/// Most leases written in one transaction.
const MAX_BATCH: usize = 4096;
/// Probe attempts before giving up on a DISCOVER.
const MAX_PROBE_ATTEMPTS: u32 = 4;
/// Longest an event waits in the server before it goes to the hub.
const EVENT_FLUSH: Duration = Duration::from_millis(50);

/// Events the DHCP loop has not yet handed to the hub. They go in bursts (every
/// [`EVENT_FLUSH`]) because each hand-over to an idle persist task wakes another
/// thread. The ACK sender empties it before emitting its own events, so a
/// client's OFFER event is always recorded before its ACK event.
#[derive(Clone, Default)]
struct DeferredEvents(Arc<std::sync::Mutex<Vec<NewEvent>>>);

impl DeferredEvents {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<NewEvent>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one; true when it is the first waiting.
    fn push(&self, event: NewEvent) -> bool {
        let mut waiting = self.lock();
        waiting.push(event);
        waiting.len() == 1
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Hands everything waiting to the hub, in order.
    fn emit_all(&self, events: &EventHub) {
        let waiting = std::mem::take(&mut *self.lock());
        for event in waiting {
            events.emit(event);
        }
    }
}

/// A lease to write and, for ACKs, the reply to send once it is written.
struct Pending {
    lease: Lease,
    reply: Option<Outgoing>,
    /// With a shared store: the request to answer again when another server's
    /// client holds the address (the claim was lost).
    retry: Option<Retry>,
}

/// A request whose lease is claimed in a shared store.
struct Retry {
    req: Request,
    client: Option<PxeClient>,
    /// Offers made for this request so far.
    attempts: u32,
}

/// A claim the store refused: the lease, the request, and what holds the
/// address now.
struct Lost {
    lease: Lease,
    winner: Option<Lease>,
    retry: Retry,
}

/// Offers made for one DISCOVER before giving up when other servers keep
/// winning the addresses (the client retransmits).
const MAX_CLAIM_ATTEMPTS: u32 = 4;

struct Outgoing {
    reply: Reply,
    event: NewEvent,
}

/// Runs the DHCP service until `shutdown`. Leases are loaded from `store` first.
/// `bound` is kept up to date with every committed lease (boot HTTP binds
/// agent tokens to a machine's lease).
///
/// The service runs on its own thread with a single-threaded runtime: every
/// request is a short burst of work, and on the shared work-stealing runtime each
/// one also woke a second worker thread (measured: about a fifth of the CPU time per
/// exchange went to those wake-ups). The returned future only waits for that thread.
pub async fn run(
    sockets: DhcpSockets,
    config: DhcpConfig,
    store: Arc<dyn Store>,
    events: EventHub,
    boot: Arc<dyn BootResponder>,
    bound: BoundLeases,
    shutdown: CancellationToken,
) -> Result<(), DhcpError> {
    run_in_cluster(sockets, config, store, events, boot, bound, None, shutdown).await
}

/// [`run`] for a member of a cluster of servers sharing the pools: `peers`
/// follows the live members, and this server answers the DISCOVERs and
/// broadcast REQUESTs only of the clients it owns ([`Peers::answers`]);
/// the others' are counted in `rackboot_dhcp_peer_owned_total`.
#[allow(clippy::too_many_arguments)]
pub async fn run_in_cluster(
    sockets: DhcpSockets,
    config: DhcpConfig,
    store: Arc<dyn Store>,
    events: EventHub,
    boot: Arc<dyn BootResponder>,
    bound: BoundLeases,
    peers: Option<watch::Receiver<Peers>>,
    shutdown: CancellationToken,
) -> Result<(), DhcpError> {
    let io = |context: &'static str| move |source| DhcpError::Io { context, source };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting the DHCP runtime"))?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rackboot-dhcp".into())
        .spawn(move || {
            let result = runtime.block_on(serve(
                sockets, config, store, events, boot, bound, peers, shutdown,
            ));
            let _ = done_tx.send(result);
        })
        .map_err(io("starting the DHCP thread"))?;
    done_rx.await.unwrap_or_else(|_| {
        Err(DhcpError::Io {
            context: "DHCP thread",
            source: std::io::Error::other("the DHCP thread panicked"),
        })
    })
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    sockets: DhcpSockets,
    config: DhcpConfig,
    store: Arc<dyn Store>,
    events: EventHub,
    boot: Arc<dyn BootResponder>,
    bound: BoundLeases,
    peers: Option<watch::Receiver<Peers>>,
    shutdown: CancellationToken,
) -> Result<(), DhcpError> {
    let subnets = config.compile()?;
    let io = |context: &'static str| move |source| DhcpError::Io { context, source };
    let sock =
        Arc::new(UdpSocket::from_std(sockets.dhcp).map_err(io("registering port 67 socket"))?);
    let pxe_sock = match sockets.pxe {
        Some(s) => Some(Arc::new(
            UdpSocket::from_std(s).map_err(io("registering port 4011 socket"))?,
        )),
        None => None,
    };
    let server_ip = sockets.server_ip;
    // Kernel receive timestamps, so requests that waited too long can be shed.
    let stamped = setsockopt(&sock.as_fd(), sockopt::ReceiveTimestampns, &true).is_ok();

    let engine = match config.mode {
        DhcpMode::Full => {
            let mut engine = LeaseEngine::new(
                subnets,
                Timings {
                    offer_hold_secs: config.offer_hold_secs,
                    decline_hold_secs: config.decline_hold_secs,
                },
                server_ip,
            );
            let leases = store.list_leases().await.map_err(DhcpError::LoadLeases)?;
            let now = Utc::now();
            for l in &leases {
                if let (LeaseState::Bound, Some(mac)) = (l.state, l.mac)
                    && l.expires_at > now
                {
                    bound.set(mac, l.ip);
                }
            }
            let total = leases.len();
            let skipped = engine.load(leases);
            tracing::info!(loaded = total - skipped, skipped, "DHCP leases loaded");
            if config.shared_store {
                // Servers sharing the pools start their fresh addresses apart.
                engine.spread_fresh_addresses(rand::random());
            }
            Some(engine)
        }
        DhcpMode::Proxy => None,
    };

    let shared = config.shared_store && config.mode == DhcpMode::Full;
    // Other servers' leases, as they write them: this server then neither
    // offers their clients' addresses nor gives their clients a second one.
    let (foreign_tx, mut foreign_rx) = mpsc::unbounded_channel();
    if shared {
        match store.lease_feed().await {
            Ok(Some(feed)) => {
                tracing::info!("following the leases of the other servers sharing the store");
                tokio::spawn(follow_leases(
                    feed,
                    store.clone(),
                    bound.clone(),
                    foreign_tx,
                ));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot follow the other servers' leases"),
        }
    } else {
        drop(foreign_tx);
    }
    let (commit_tx, commit_rx) = mpsc::channel(COMMIT_QUEUE);
    let (lost_tx, mut lost_rx) = mpsc::unbounded_channel();
    let deferred = DeferredEvents::default();
    let commit = tokio::spawn(commit_loop(
        commit_rx,
        store,
        bound,
        sock.clone(),
        events.clone(),
        deferred.clone(),
        Duration::from_millis(u64::from(config.commit_window_ms)),
        shared.then_some(lost_tx),
    ));

    let (verdict_tx, mut verdict_rx) = mpsc::unbounded_channel();
    let mut probe_tx = None;
    if config.mode == DhcpMode::Full && config.probe.enabled {
        let socket = sockets.icmp.ok_or(DhcpError::NoIcmpSocket)?;
        let (tx, rx) = mpsc::unbounded_channel();
        probe::spawn(
            socket,
            Duration::from_millis(u64::from(config.probe.timeout_ms)),
            rx,
            verdict_tx,
        )
        .map_err(io("starting the probe thread"))?;
        probe_tx = Some(tx);
    } else {
        drop(verdict_tx);
    }

    let ipxe_sightings = sockets.router_solicit.map(|socket| {
        let sightings = crate::ipxe_ra::IpxeSightings::default();
        let (sightings2, shutdown2) = (sightings.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::ipxe_ra::run(socket, sightings2, shutdown2).await {
                tracing::warn!(error = %e, "router solicitation responder stopped");
            }
        });
        sightings
    });

    let mut server = Server {
        shared,
        peers: peers.filter(|_| config.mode == DhcpMode::Full),
        engine,
        ipxe_sightings,
        pool_low_percent: config.pool_low_percent,
        server_ip,
        client_port: sockets.client_port,
        relay_port: sockets.relay_port,
        sock: sock.clone(),
        events,
        boot,
        commit_tx,
        probe_tx,
        probing: HashMap::new(),
        next_probe_id: 0,
        pool_low: HashMap::new(),
        deferred,
        flush_due: None,
        outbox: Vec::new(),
        received: TypeCounters::new("rackboot_dhcp_received_total"),
        replied: TypeCounters::new("rackboot_dhcp_replied_total"),
    };
    tracing::info!(%server_ip, mode = ?config.mode, "DHCP server running");

    let mut buf = vec![0u8; 4096];
    let mut pxe_buf = vec![0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut flush = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    let mut last_batch: Option<std::time::Instant> = None;
    loop {
        if let Some(due) = server.flush_due.take() {
            flush.as_mut().reset(due);
        }
        tokio::select! {
            () = &mut flush, if !server.deferred.is_empty() => server.flush_events(),
            _ = shutdown.cancelled() => break,
            r = sock.readable() => {
                if let Err(e) = r {
                    counter!("rackboot_dhcp_recv_errors_total").increment(1);
                    tracing::warn!(error = %e, "DHCP socket failed");
                    continue;
                }
                let (taken, emptied) = server.receive_batch(&sock, &mut buf, stamped);
                server.send_outbox().await;
                let now = std::time::Instant::now();
                let busy = taken > 1 || last_batch.is_some_and(|t| now - t < MODERATION);
                last_batch = Some(now);
                if busy && emptied {
                    std::thread::sleep(MODERATION);
                }
            },
            r = recv_opt(pxe_sock.as_deref(), &mut pxe_buf) => match r {
                Ok((n, from)) => {
                    server.on_packet(&pxe_buf[..n], from, true);
                    server.send_outbox().await;
                }
                Err(e) => {
                    counter!("rackboot_dhcp_recv_errors_total").increment(1);
                    tracing::warn!(error = %e, "PXE port receive failed");
                }
            },
            Some(v) = verdict_rx.recv() => {
                server.on_probe(v);
                server.send_outbox().await;
            },
            Some(lost) = lost_rx.recv() => {
                server.on_lost(lost);
                server.send_outbox().await;
            },
            Some(leases) = foreign_rx.recv() => {
                if let Some(engine) = server.engine.as_mut() {
                    let now = Utc::now();
                    for lease in leases {
                        engine.learn(lease, now);
                    }
                }
            },
            _ = tick.tick() => server.pool_check(),
        }
    }
    // Let the commit task write and answer what is queued, then stop.
    server.send_outbox().await;
    server.flush_events();
    drop(server);
    let _ = commit.await;
    Ok(())
}

/// A request that sat in the socket queue longer than this is dropped unread.
/// The queue only gets that long when requests arrive faster than the server
/// answers them (the socket buffer holds thousands); answering the oldest first
/// then makes every reply late, and the backlog outlives the burst. Clients
/// retransmit (after about 4 s, RFC 2131 4.1), so shedding what is a second old
/// keeps the server answering at its capacity instead of collapsing.
const MAX_QUEUE_AGE: Duration = Duration::from_secs(1);

fn waited_too_long(received_at: Option<std::time::SystemTime>) -> bool {
    received_at
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > MAX_QUEUE_AGE)
}

/// Under load the loop pauses this long after emptying the socket, so the next
/// wake-up finds many requests and their replies leave in one system call: the
/// same trade as a NIC's interrupt moderation. Each wake-up and each send cost
/// more CPU than answering a request; a DHCP client waits seconds before it
/// retransmits, so a millisecond is nothing to it. A loop that finds the socket
/// still full after [`RECV_BATCH`] never pauses, and a quiet server (requests
/// further apart than this) answers each one at once.
///
/// The pause blocks the thread (`std::thread::sleep`), on purpose: a tokio sleep
/// leaves the socket in epoll, and every datagram that arrives would wake the
/// thread anyway (measured at 8,000 exchanges/s: 0.76 context switches per
/// exchange with tokio's sleep, 0.17 with the thread's; 39 -> 31 us of CPU). The
/// thread and its runtime are the DHCP service's alone; its other tasks (group
/// commit, the ACK sender) wait out the same millisecond.
const MODERATION: Duration = Duration::from_millis(1);
/// Most requests handled between two sends of the outbox.
const RECV_BATCH: usize = 256;

/// Non-blocking `recv_from` plus the kernel's receive timestamp (SO_TIMESTAMPNS)
/// when `stamped`; `WouldBlock` once the socket is empty.
fn try_recv_stamped(
    sock: &UdpSocket,
    buf: &mut [u8],
    stamped: bool,
) -> std::io::Result<(usize, SocketAddr, Option<std::time::SystemTime>)> {
    if !stamped {
        let (n, from) = sock.try_recv_from(buf)?;
        return Ok((n, from, None));
    }
    sock.try_io(tokio::io::Interest::READABLE, || {
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let mut iov = [std::io::IoSliceMut::new(buf)];
        let msg = recvmsg::<SockaddrIn>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .map_err(std::io::Error::from)?;
        let from = msg
            .address
            .map(|a| SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())))
            .ok_or_else(|| std::io::Error::other("datagram without a source address"))?;
        let mut at = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmTimestampns(ts) = c {
                    at = std::time::UNIX_EPOCH.checked_add(Duration::new(
                        ts.tv_sec().max(0) as u64,
                        ts.tv_nsec().clamp(0, 999_999_999) as u32,
                    ));
                }
            }
        }
        Ok((msg.bytes, from, at))
    })
}

async fn recv_opt(
    sock: Option<&UdpSocket>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

struct ProbeState {
    req: Request,
    attempts: u32,
}

struct Server {
    /// Leases are claimed in a store other servers share (see [`Retry`]).
    shared: bool,
    /// In a cluster: the live servers, which split the clients.
    peers: Option<watch::Receiver<Peers>>,
    engine: Option<LeaseEngine>,
    /// iPXE clients seen, for the router solicitation responder (when it runs).
    ipxe_sightings: Option<crate::ipxe_ra::IpxeSightings>,
    pool_low_percent: u8,
    server_ip: Ipv4Addr,
    client_port: u16,
    relay_port: u16,
    sock: Arc<UdpSocket>,
    events: EventHub,
    boot: Arc<dyn BootResponder>,
    commit_tx: mpsc::Sender<Pending>,
    probe_tx: Option<mpsc::UnboundedSender<ProbeJob>>,
    probing: HashMap<u64, ProbeState>,
    next_probe_id: u64,
    /// Subnets currently below the pool-low threshold (event sent once per crossing).
    pool_low: HashMap<String, bool>,
    /// Events not yet handed to the hub (shared with the ACK sender).
    deferred: DeferredEvents,
    /// Set when `deferred` gets its first event: the loop arms its flush timer.
    flush_due: Option<tokio::time::Instant>,
    /// Replies not yet sent: the loop sends them together after each batch.
    outbox: Vec<Reply>,
    received: TypeCounters,
    replied: TypeCounters,
}

fn type_label(kind: MessageType) -> &'static str {
    match kind {
        MessageType::Discover => "discover",
        MessageType::Offer => "offer",
        MessageType::Request => "request",
        MessageType::Decline => "decline",
        MessageType::Ack => "ack",
        MessageType::Nak => "nak",
        MessageType::Release => "release",
        MessageType::Inform => "inform",
        _ => "other",
    }
}

/// DISCOVERs and broadcast REQUESTs of a client without a server to talk
/// to (INIT-REBOOT: a requested address, no server id, no ciaddr): in a
/// cluster, the client's owner answers them. A REQUEST naming a server
/// (SELECTING) goes to that server, and one from a bound client (ciaddr:
/// RENEWING to the server that bound it, or REBINDING, which every server
/// answers with the same binding) is answered as by a single server.
fn starts_or_restarts_an_exchange(req: &Request) -> bool {
    match req.kind {
        MessageType::Discover => true,
        MessageType::Request => req.server_id.is_none() && req.ciaddr().is_unspecified(),
        _ => false,
    }
}

fn drop_packet(reason: &'static str) {
    counter!("rackboot_dhcp_dropped_total", "reason" => reason).increment(1);
}

impl Server {
    fn emit(&mut self, event: NewEvent) {
        if self.deferred.push(event) {
            self.flush_due = Some(tokio::time::Instant::now() + EVENT_FLUSH);
        }
    }

    /// Handles what is queued on port 67, up to [`RECV_BATCH`] requests: how many
    /// datagrams were taken, and whether the socket was left empty.
    fn receive_batch(&mut self, sock: &UdpSocket, buf: &mut [u8], stamped: bool) -> (usize, bool) {
        for taken in 0..RECV_BATCH {
            match try_recv_stamped(sock, buf, stamped) {
                Ok((n, from, received_at)) => {
                    if waited_too_long(received_at) {
                        drop_packet("stale");
                    } else {
                        self.on_packet(&buf[..n], from, false);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return (taken, true),
                Err(e) => {
                    counter!("rackboot_dhcp_recv_errors_total").increment(1);
                    tracing::warn!(error = %e, "DHCP receive failed");
                    return (taken, false);
                }
            }
        }
        (RECV_BATCH, false)
    }

    /// Sends every queued reply (one `sendmmsg` for up to 256).
    async fn send_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        send_all(&self.sock, &self.outbox, &mut self.replied).await;
        self.outbox.clear();
    }

    fn flush_events(&mut self) {
        self.deferred.emit_all(&self.events);
    }

    fn on_packet(&mut self, bytes: &[u8], from: SocketAddr, pxe_port: bool) {
        let req = match wire::parse_request(bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropping malformed DHCP packet");
                drop_packet(e.reason());
                return;
            }
        };
        self.received.increment(type_label(req.kind), 1);
        let client = pxe::classify(&req.msg);
        if let (Some(sightings), Some(c)) = (&self.ipxe_sightings, &client)
            && c.ipxe
        {
            sightings.note(req.mac, std::time::Instant::now());
        }
        if pxe_port {
            self.pxe_port_request(&req, client.as_ref(), from);
            return;
        }
        if self.engine.is_none() {
            self.proxy_offer(&req, client.as_ref());
            return;
        }
        self.full(req, client);
    }

    fn full(&mut self, req: Request, client: Option<PxeClient>) {
        if let Some(peers) = &self.peers
            && starts_or_restarts_an_exchange(&req)
            && !peers.borrow().answers(&ClientKey::of(&req))
        {
            // Another live server owns this client: it answers.
            counter!("rackboot_dhcp_peer_owned_total", "type" => type_label(req.kind)).increment(1);
            return;
        }
        let now = Utc::now();
        let engine = self.engine.as_mut().expect("full mode");
        match engine.handle(&req, now) {
            Outcome::Offer {
                ip,
                subnet,
                lease_secs,
                probe,
            } => {
                if probe && let Some(tx) = &self.probe_tx {
                    let id = self.next_probe_id;
                    self.next_probe_id += 1;
                    if tx.send(ProbeJob { id, ip }).is_ok() {
                        self.probing.insert(id, ProbeState { req, attempts: 1 });
                        return;
                    }
                }
                self.send_offer(&req, client.as_ref(), ip, subnet, lease_secs, 1);
            }
            Outcome::Ack {
                lease,
                subnet,
                lease_secs,
            } => {
                let msg = self.build(
                    &req,
                    client.as_ref(),
                    MessageType::Ack,
                    lease.ip,
                    subnet,
                    Some(lease_secs),
                );
                let event = NewEvent::new(
                    EventKind::LeaseAcked,
                    format!("acknowledged {} to {}", lease.ip, req.mac),
                )
                .mac(req.mac)
                .data(json!({
                    "ip": lease.ip.to_string(),
                    "server": self.server_ip.to_string(),
                    "subnet": lease.subnet,
                    "lease_secs": lease_secs,
                    "hostname": lease.hostname,
                    "relay": req.is_relayed().then(|| req.giaddr().to_string()),
                    "pxe": client.as_ref().map(pxe_json),
                }));
                let to = self.destination(&req, MessageType::Ack, lease.ip);
                let retry = self.shared.then(|| Retry {
                    req: req.clone(),
                    client: client.clone(),
                    attempts: 1,
                });
                match wire::encode(&msg) {
                    Ok(bytes) => self.queue_commit(Pending {
                        lease,
                        reply: Some(Outgoing {
                            reply: Reply {
                                bytes,
                                to,
                                kind: "ack",
                            },
                            event,
                        }),
                        retry,
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot encode ACK");
                        drop_packet("encode_error");
                    }
                }
            }
            Outcome::Nak { why } => {
                let msg = wire::nak(&req, self.server_ip, why);
                let to = self.destination(&req, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
                self.send(&msg, to, "nak");
                self.emit(
                    NewEvent::new(EventKind::LeaseNak, format!("refused {}: {why}", req.mac))
                        .mac(req.mac)
                        .data(json!({
                            "requested_ip": req.requested_ip.map(|i| i.to_string()),
                            "ciaddr": req.ciaddr().to_string(),
                            "reason": why,
                        })),
                );
            }
            Outcome::Inform { subnet } => {
                let msg = self.build(
                    &req,
                    client.as_ref(),
                    MessageType::Ack,
                    Ipv4Addr::UNSPECIFIED,
                    subnet,
                    None,
                );
                let to = self.destination(&req, MessageType::Ack, Ipv4Addr::UNSPECIFIED);
                self.send(&msg, to, "ack");
                self.emit(
                    NewEvent::new(
                        EventKind::DhcpInform,
                        format!("answered INFORM from {} ({})", req.ciaddr(), req.mac),
                    )
                    .mac(req.mac)
                    .data(json!({ "ciaddr": req.ciaddr().to_string() })),
                );
            }
            Outcome::Persist { lease, kind } => {
                let (event_kind, verb) = if kind == MessageType::Decline {
                    (EventKind::LeaseDeclined, "declined")
                } else {
                    (EventKind::LeaseReleased, "released")
                };
                self.emit(
                    NewEvent::new(event_kind, format!("{} {verb} {}", req.mac, lease.ip))
                        .mac(req.mac)
                        .data(json!({ "ip": lease.ip.to_string(), "subnet": lease.subnet })),
                );
                self.queue_commit(Pending {
                    lease,
                    reply: None,
                    retry: None,
                });
            }
            Outcome::Withdraw { lease } => {
                // Counted as before (the REQUEST was for another server);
                // the offer's end is written so the address is free at once.
                drop_packet(Ignore::OtherServer.reason());
                self.queue_commit(Pending {
                    lease,
                    reply: None,
                    retry: None,
                });
            }
            Outcome::Ignore(why) => {
                if why == Ignore::PoolExhausted {
                    tracing::warn!(mac = %req.mac, "no free address to offer");
                }
                drop_packet(why.reason());
            }
        }
    }

    /// Sends an OFFER of `ip`; with a shared store, once the store granted
    /// the address (`attempts`: offers made for this request so far).
    fn send_offer(
        &mut self,
        req: &Request,
        client: Option<&PxeClient>,
        ip: Ipv4Addr,
        subnet: usize,
        lease_secs: u32,
        attempts: u32,
    ) {
        let msg = self.build(
            req,
            client,
            MessageType::Offer,
            ip,
            subnet,
            Some(lease_secs),
        );
        let to = self.destination(req, MessageType::Offer, ip);
        let subnet_name = self.engine.as_ref().map(|e| e.subnet(subnet).name.clone());
        let event = NewEvent::new(
            EventKind::LeaseOffered,
            format!("offered {ip} to {}", req.mac),
        )
        .mac(req.mac)
        .data(json!({
            "ip": ip.to_string(),
            "server": self.server_ip.to_string(),
            "subnet": subnet_name,
            "relay": req.is_relayed().then(|| req.giaddr().to_string()),
            "pxe": client.map(pxe_json),
        }));
        let held = self.engine.as_ref().and_then(|e| e.lease(ip)).cloned();
        if self.shared
            && let Some(lease) = held
        {
            // Claimed first: another server may be offering the same address.
            match wire::encode(&msg) {
                Ok(bytes) => self.queue_commit(Pending {
                    lease,
                    reply: Some(Outgoing {
                        reply: Reply {
                            bytes,
                            to,
                            kind: "offer",
                        },
                        event,
                    }),
                    retry: Some(Retry {
                        req: req.clone(),
                        client: client.cloned(),
                        attempts,
                    }),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode OFFER");
                    drop_packet("encode_error");
                }
            }
            return;
        }
        self.send(&msg, to, "offer");
        self.emit(event);
    }

    /// The store refused a claim: another client holds the address, or this
    /// client holds another one. Learn what holds it, then offer again
    /// (DISCOVER: another address, or the one the client already holds) or
    /// refuse (REQUEST).
    fn on_lost(&mut self, lost: Lost) {
        counter!("rackboot_dhcp_claims_lost_total").increment(1);
        let Lost {
            lease,
            winner,
            retry,
        } = lost;
        let now = Utc::now();
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        engine.drop_refused(&lease, now);
        // The client's own lease of another address (not another client's).
        let elsewhere = winner
            .as_ref()
            .filter(|w| w.ip != lease.ip && w.mac == lease.mac && w.client_id == lease.client_id)
            .map(|w| w.ip);
        if let Some(w) = winner {
            engine.load(vec![w]);
        }
        let req = retry.req;
        match req.kind {
            MessageType::Discover => {
                if retry.attempts >= MAX_CLAIM_ATTEMPTS {
                    drop_packet("claims_lost");
                    return;
                }
                match engine.handle(&req, now) {
                    Outcome::Offer {
                        ip,
                        subnet,
                        lease_secs,
                        ..
                    } => {
                        // Knowing the client's other address, the engine
                        // still moves it here (its reservation, or that
                        // address left the pool): the other lease ends, in
                        // the same batch as the new claim or before it.
                        if ip == lease.ip
                            && let Some(old) = elsewhere
                            && let Some(engine) = self.engine.as_mut()
                            && let Some(ended) = engine.end_moved(old, &req, now)
                        {
                            self.queue_commit(Pending {
                                lease: ended,
                                reply: None,
                                retry: None,
                            });
                        }
                        self.send_offer(
                            &req,
                            retry.client.as_ref(),
                            ip,
                            subnet,
                            lease_secs,
                            retry.attempts + 1,
                        )
                    }
                    Outcome::Ignore(why) => drop_packet(why.reason()),
                    other => tracing::debug!(?other, "unexpected outcome re-offering"),
                }
            }
            _ => {
                let why = "address is held by another client";
                let msg = wire::nak(&req, self.server_ip, why);
                let to = self.destination(&req, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
                self.send(&msg, to, "nak");
                self.emit(
                    NewEvent::new(
                        EventKind::LeaseNak,
                        format!("refused {} to {}: {why}", lease.ip, req.mac),
                    )
                    .mac(req.mac)
                    .data(json!({
                        "requested_ip": lease.ip.to_string(),
                        "ciaddr": req.ciaddr().to_string(),
                        "reason": why,
                    })),
                );
            }
        }
    }

    fn on_probe(&mut self, v: ProbeVerdict) {
        let Some(state) = self.probing.remove(&v.id) else {
            return;
        };
        let now = Utc::now();
        let client = pxe::classify(&state.req.msg);
        let engine = self.engine.as_mut().expect("probing only in full mode");
        if !v.in_use {
            if engine.still_offered(&state.req, v.ip, now) {
                let subnet = engine.select_subnet(&state.req).unwrap_or(0);
                let lease_secs = engine.lease_secs(&state.req, subnet);
                self.send_offer(&state.req, client.as_ref(), v.ip, subnet, lease_secs, 1);
            }
            return;
        }
        counter!("rackboot_dhcp_probe_conflicts_total").increment(1);
        tracing::warn!(ip = %v.ip, "address answered ICMP echo: in use, not offering it");
        if let Some(lease) = engine.mark_conflict(v.ip, now) {
            self.emit(
                NewEvent::new(
                    EventKind::LeaseDeclined,
                    format!("{} is in use (answered ping); kept out of the pool", v.ip),
                )
                .data(json!({ "ip": v.ip.to_string(), "subnet": lease.subnet, "conflict": true })),
            );
            self.queue_commit(Pending {
                lease,
                reply: None,
                retry: None,
            });
        }
        if state.attempts >= MAX_PROBE_ATTEMPTS {
            drop_packet("probe_conflicts");
            return;
        }
        // Pick another address for the same DISCOVER.
        let engine = self.engine.as_mut().expect("full mode");
        match engine.handle(&state.req, now) {
            Outcome::Offer {
                ip,
                subnet,
                lease_secs,
                probe,
            } => {
                if probe && let Some(tx) = &self.probe_tx {
                    let id = self.next_probe_id;
                    self.next_probe_id += 1;
                    if tx.send(ProbeJob { id, ip }).is_ok() {
                        self.probing.insert(
                            id,
                            ProbeState {
                                req: state.req,
                                attempts: state.attempts + 1,
                            },
                        );
                        return;
                    }
                }
                self.send_offer(&state.req, client.as_ref(), ip, subnet, lease_secs, 1);
            }
            Outcome::Ignore(why) => drop_packet(why.reason()),
            other => tracing::debug!(?other, "unexpected outcome re-handling a DISCOVER"),
        }
    }

    /// OFFER/ACK body: address, subnet options, host options, boot information.
    fn build(
        &self,
        req: &Request,
        client: Option<&PxeClient>,
        kind: MessageType,
        yiaddr: Ipv4Addr,
        subnet: usize,
        lease_secs: Option<u32>,
    ) -> Message {
        let engine = self.engine.as_ref().expect("full mode");
        let s = engine.subnet(subnet);
        let mut m = wire::reply(req, kind, self.server_ip);
        m.set_yiaddr(yiaddr);
        let opts = m.opts_mut();
        opts.insert(DhcpOption::SubnetMask(s.mask()));
        opts.insert(DhcpOption::BroadcastAddr(s.broadcast()));
        if let Some(r) = s.router {
            opts.insert(DhcpOption::Router(vec![r]));
        }
        if !s.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(s.dns.clone()));
        }
        if let Some(d) = &s.domain {
            opts.insert(DhcpOption::DomainName(d.clone()));
        }
        if !s.ntp.is_empty() {
            opts.insert(DhcpOption::NtpServers(s.ntp.clone()));
        }
        if let Some(secs) = lease_secs {
            wire::set_lease_times(&mut m, secs);
        }
        for (code, value) in &s.options {
            wire::set_raw_option(&mut m, *code, value.clone());
        }
        if let Some(r) = engine.reservation(req.mac).filter(|r| s.contains(r.ip)) {
            if let Some(h) = &r.hostname {
                m.opts_mut().insert(DhcpOption::Hostname(h.clone()));
            }
            for (code, value) in &r.options {
                wire::set_raw_option(&mut m, *code, value.clone());
            }
        }
        if let Some(c) = client
            && let Some(b) = self.boot.dhcp_boot(req.mac, c, self.server_ip)
        {
            wire::set_boot(
                &mut m,
                &b.filename,
                b.next_server.unwrap_or(self.server_ip),
                b.http_client,
            );
            if c.ipxe {
                wire::set_ipxe_no_pxedhcp(&mut m);
            }
        }
        m
    }

    fn destination(&self, req: &Request, kind: MessageType, yiaddr: Ipv4Addr) -> SocketAddr {
        let v4 = |ip, port| SocketAddr::V4(SocketAddrV4::new(ip, port));
        match wire::reply_destination(req, kind, yiaddr) {
            ReplyTo::Relay(g) => v4(g, self.relay_port),
            ReplyTo::Unicast(c) => v4(c, self.client_port),
            // No ARP entry can be added for a client without an address from a plain
            // UDP socket, so those replies are broadcast (RFC 2131 4.1 allows it).
            ReplyTo::Broadcast | ReplyTo::Hardware { .. } => {
                v4(Ipv4Addr::BROADCAST, self.client_port)
            }
        }
    }

    /// Queues a reply; the loop sends the outbox after each batch of requests.
    fn send(&mut self, msg: &Message, to: SocketAddr, kind: &'static str) {
        match wire::encode(msg) {
            Ok(bytes) => self.outbox.push(Reply { bytes, to, kind }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode DHCP reply");
                drop_packet("encode_error");
            }
        }
    }

    fn queue_commit(&self, p: Pending) {
        if self.commit_tx.try_send(p).is_err() {
            // The store is far behind; the client will retry.
            drop_packet("commit_queue_full");
        }
    }

    /// ProxyDHCP on port 67: answer PXE DISCOVERs with boot information only.
    fn proxy_offer(&mut self, req: &Request, client: Option<&PxeClient>) {
        let Some(client) = client else {
            drop_packet("not_pxe");
            return;
        };
        if req.kind != MessageType::Discover {
            // REQUESTs on 67 belong to the real DHCP server.
            drop_packet("proxy_not_discover");
            return;
        }
        let Some(boot) = self.boot.dhcp_boot(req.mac, client, self.server_ip) else {
            drop_packet("no_boot_answer");
            return;
        };
        let next = boot.next_server.unwrap_or(self.server_ip);
        let msg = wire::proxy_reply(
            req,
            MessageType::Offer,
            self.server_ip,
            &boot.filename,
            next,
            boot.http_client,
        );
        let to = self.destination(req, MessageType::Offer, Ipv4Addr::UNSPECIFIED);
        self.send(&msg, to, "proxy_offer");
        self.emit_proxy(req, client, &boot.filename, 67);
    }

    /// Port 4011: REQUEST (or INFORM) from a PXE client that saw our ProxyDHCP offer;
    /// the ACK goes straight back to the sender.
    fn pxe_port_request(&mut self, req: &Request, client: Option<&PxeClient>, from: SocketAddr) {
        let Some(client) = client else {
            drop_packet("not_pxe");
            return;
        };
        if !matches!(req.kind, MessageType::Request | MessageType::Inform) {
            drop_packet("pxe_port_not_request");
            return;
        }
        let Some(boot) = self.boot.dhcp_boot(req.mac, client, self.server_ip) else {
            drop_packet("no_boot_answer");
            return;
        };
        let next = boot.next_server.unwrap_or(self.server_ip);
        let mut msg = wire::proxy_reply(
            req,
            MessageType::Ack,
            self.server_ip,
            &boot.filename,
            next,
            boot.http_client,
        );
        // PXE spec: the boot server ACK echoes the PXE_BOOT_ITEM (43/71) the client asked for.
        if let Some(DhcpOption::VendorExtensions(v)) = req
            .msg
            .opts()
            .get(dhcproto::v4::OptionCode::VendorExtensions)
            && let Some(item) = find_suboption(v, 71)
        {
            let mut vendor = vec![71, item.len() as u8];
            vendor.extend_from_slice(item);
            vendor.push(255);
            msg.opts_mut().insert(DhcpOption::VendorExtensions(vendor));
        }
        self.send(&msg, from, "proxy_ack");
        self.emit_proxy(req, client, &boot.filename, 4011);
    }

    fn emit_proxy(&mut self, req: &Request, client: &PxeClient, filename: &str, port: u16) {
        self.emit(
            NewEvent::new(
                EventKind::ProxyDhcpReply,
                format!("ProxyDHCP on port {port}: {filename} to {}", req.mac),
            )
            .mac(req.mac)
            .data(json!({ "filename": filename, "port": port, "pxe": pxe_json(client) })),
        );
    }

    /// Gauge of free addresses per subnet; a PoolLow event when one crosses below the threshold.
    fn pool_check(&mut self) {
        let Some(engine) = &self.engine else { return };
        for s in engine.pool_stats(Utc::now()) {
            gauge!("rackboot_dhcp_pool_free", "subnet" => s.subnet.clone()).set(s.free as f64);
            gauge!("rackboot_dhcp_pool_size", "subnet" => s.subnet.clone()).set(s.size as f64);
            let low = self.pool_low_percent > 0
                && s.free * 100 < s.size * u64::from(self.pool_low_percent);
            let was_low = self.pool_low.insert(s.subnet.clone(), low).unwrap_or(false);
            if low && !was_low {
                tracing::warn!(subnet = %s.subnet, free = s.free, size = s.size, "DHCP pool low");
                self.emit(
                    NewEvent::new(
                        EventKind::PoolLow,
                        format!(
                            "subnet {}: {} of {} addresses free",
                            s.subnet, s.free, s.size
                        ),
                    )
                    .data(json!({ "subnet": s.subnet, "free": s.free, "size": s.size,
                                  "threshold_percent": self.pool_low_percent })),
                );
            }
        }
    }
}

fn find_suboption(encapsulated: &[u8], code: u8) -> Option<&[u8]> {
    let mut i = 0;
    while i + 1 < encapsulated.len() {
        let (c, len) = (encapsulated[i], usize::from(encapsulated[i + 1]));
        match c {
            0 => i += 1,
            255 => return None,
            _ => {
                let v = encapsulated.get(i + 2..i + 2 + len)?;
                if c == code {
                    return Some(v);
                }
                i += 2 + len;
            }
        }
    }
    None
}

fn pxe_json(c: &PxeClient) -> serde_json::Value {
    json!({
        "arch": c.arch.as_str(),
        "ipxe": c.ipxe,
        "http_boot": c.http_boot,
        "uuid": c.uuid.map(|u| u.to_string()),
    })
}

/// Most ACKs sent back to back; more wait [`ACK_PACE`] per burst.
const ACK_BURST: usize = 32;
/// The pause between two bursts of ACKs (tokio timers tick in milliseconds).
const ACK_PACE: Duration = Duration::from_millis(1);
/// With more ACKs than this waiting, the server is behind: bursts follow each
/// other without the pause (the socket loop still runs in between), because a
/// paced backlog only grows and makes every ACK late.
const ACK_BACKLOG: usize = 8 * ACK_BURST;

/// Sends the replies of committed leases in bursts of at most [`ACK_BURST`].
///
/// One group commit can release hundreds of ACKs at once (measured: up to 447 at
/// 4000 exchanges/s, after an 88 ms write). Sent back to back they arrive faster
/// than a client or relay drains its socket, and the receiver's buffer (about 200
/// KiB by default, ~150 datagrams) overflows: perfdhcp counted those as lost
/// exchanges, and a relay would drop them the same way. Bursts of 32 a
/// millisecond apart add a few milliseconds; a backlog beyond [`ACK_BACKLOG`]
/// (overload, or a slow timer on a busy machine) goes out unpaced.
async fn send_acks(
    mut rx: mpsc::UnboundedReceiver<Vec<Outgoing>>,
    sock: Arc<UdpSocket>,
    events: EventHub,
    deferred: DeferredEvents,
) {
    let mut queue: std::collections::VecDeque<Outgoing> = std::collections::VecDeque::new();
    let mut burst = Vec::with_capacity(ACK_BURST);
    let mut acked = Vec::with_capacity(ACK_BURST);
    let mut sent = TypeCounters::new("rackboot_dhcp_replied_total");
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(batch) => queue.extend(batch),
                None => return,
            }
        }
        while let Ok(batch) = rx.try_recv() {
            queue.extend(batch);
        }
        for out in queue.drain(..queue.len().min(ACK_BURST)) {
            burst.push(out.reply);
            acked.push(out.event);
        }
        send_all(&sock, &burst, &mut sent).await;
        burst.clear();
        // The OFFERs (and anything else) the loop still holds go first.
        deferred.emit_all(&events);
        for event in acked.drain(..) {
            events.emit(event);
        }
        if queue.len() > ACK_BACKLOG {
            tokio::task::yield_now().await;
        } else if !queue.is_empty() {
            tokio::time::sleep(ACK_PACE).await;
        }
    }
}

/// Follows the leases other servers write (their offers too) and hands them
/// to the loop in batches; after a gap in the feed, every stored lease.
async fn follow_leases(
    mut feed: rackboot_store::ChangeFeed,
    store: Arc<dyn Store>,
    bound: BoundLeases,
    to_loop: mpsc::UnboundedSender<Vec<Lease>>,
) {
    while let Some(first) = feed.next().await {
        let mut batch = Vec::new();
        let mut resync = false;
        let mut next = Some(first);
        while let Some(change) = next.take() {
            match change {
                rackboot_store::Change::Lease(l) => batch.push(l),
                rackboot_store::Change::Resync => resync = true,
                _ => {}
            }
            if batch.len() < MAX_BATCH {
                next = feed.try_next();
            }
        }
        if resync {
            match store.list_leases().await {
                Ok(all) => batch = all,
                Err(e) => tracing::warn!(error = %e, "re-reading the leases"),
            }
        }
        for l in &batch {
            match (l.state, l.mac) {
                (LeaseState::Bound, Some(mac)) => bound.set(mac, l.ip),
                (LeaseState::Released | LeaseState::Expired | LeaseState::Declined, Some(mac)) => {
                    bound.remove(mac, l.ip)
                }
                _ => {}
            }
        }
        tracing::debug!(leases = batch.len(), resync, "leases from other servers");
        if to_loop.send(batch).is_err() {
            return;
        }
    }
}

/// Group commit: take everything queued, write it in one transaction, then hand the
/// ACKs of that batch to [`send_acks`]. While a write is in flight the next batch
/// accumulates.
#[allow(clippy::too_many_arguments)]
async fn commit_loop(
    mut rx: mpsc::Receiver<Pending>,
    store: Arc<dyn Store>,
    bound: BoundLeases,
    sock: Arc<UdpSocket>,
    events: EventHub,
    deferred: DeferredEvents,
    window: Duration,
    lost: Option<mpsc::UnboundedSender<Lost>>,
) {
    let (acks, acks_rx) = mpsc::unbounded_channel();
    let sender = tokio::spawn(send_acks(acks_rx, sock, events, deferred));
    commit_batches(&mut rx, store, &bound, acks, window, lost).await;
    // The channel to the sender is closed: it sends what is left, then ends.
    let _ = sender.await;
}

/// Writes batches. With `lost` (a shared store), leases are claimed: those
/// another client holds are not written, their replies not sent, and their
/// requests go back to the loop through `lost`.
async fn commit_batches(
    rx: &mut mpsc::Receiver<Pending>,
    store: Arc<dyn Store>,
    bound: &BoundLeases,
    acks: mpsc::UnboundedSender<Vec<Outgoing>>,
    window: Duration,
    lost: Option<mpsc::UnboundedSender<Lost>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        batch.clear();
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        if !window.is_zero() && batch.len() < MAX_BATCH {
            tokio::time::sleep(window).await;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        // One row per address: the last write of an address in the batch wins.
        let mut leases: Vec<Lease> = Vec::with_capacity(batch.len());
        let mut replies: Vec<Outgoing> = Vec::with_capacity(batch.len());
        let mut claims: Vec<(Lease, Option<Outgoing>, Retry)> = Vec::new();
        let mut index: HashMap<Ipv4Addr, usize> = HashMap::with_capacity(batch.len());
        for p in batch.drain(..) {
            match p.retry {
                // Answered only once the claim is known to have held.
                Some(retry) if lost.is_some() => claims.push((p.lease.clone(), p.reply, retry)),
                _ => replies.extend(p.reply),
            }
            match index.get(&p.lease.ip) {
                Some(&i) => leases[i] = p.lease,
                None => {
                    index.insert(p.lease.ip, leases.len());
                    leases.push(p.lease);
                }
            }
        }
        let started = std::time::Instant::now();
        let result = match &lost {
            None => store.put_leases(&leases).await,
            Some(lost_tx) => match store.claim_leases(&leases).await {
                Ok(refused) => {
                    let held: HashMap<Ipv4Addr, Option<Lease>> =
                        refused.into_iter().map(|r| (r.ip, r.holder)).collect();
                    // The bound map learns only what was written.
                    leases.retain(|l| !held.contains_key(&l.ip));
                    for (lease, reply, retry) in claims.drain(..) {
                        if held.contains_key(&lease.ip) {
                            let winner = held.get(&lease.ip).cloned().flatten();
                            let _ = lost_tx.send(Lost {
                                lease,
                                winner,
                                retry,
                            });
                        } else {
                            replies.extend(reply);
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        histogram!("rackboot_dhcp_lease_write_seconds").record(started.elapsed().as_secs_f64());
        histogram!("rackboot_dhcp_lease_batch_size").record(leases.len() as f64);
        match result {
            Ok(()) => {
                counter!("rackboot_dhcp_lease_writes_total").increment(leases.len() as u64);
                for l in &leases {
                    match (l.state, l.mac) {
                        (LeaseState::Bound, Some(mac)) => bound.set(mac, l.ip),
                        (
                            LeaseState::Released | LeaseState::Expired | LeaseState::Declined,
                            Some(mac),
                        ) => bound.remove(mac, l.ip),
                        _ => {}
                    }
                }
                if !replies.is_empty() && acks.send(replies).is_err() {
                    return;
                }
            }
            Err(e) => {
                // No ACK for a lease that is not durable; clients retry.
                counter!("rackboot_dhcp_lease_write_errors_total").increment(1);
                drop_packet_n("lease_write_failed", replies.len() + claims.len());
                tracing::error!(error = %e, leases = leases.len(), "writing leases failed; ACKs withheld");
            }
        }
    }
}

fn drop_packet_n(reason: &'static str, n: usize) {
    counter!("rackboot_dhcp_dropped_total", "reason" => reason).increment(n as u64);
}
