//! The socket loop: receive, decide (the lease engine), reply. Replies that bind
//! or change a lease wait for it to be durable: they queue to the commit task,
//! which writes every lease queued since its last write in one `put_leases6`
//! call (group commit) and only then sends those replies, so a kill -9 never
//! forgets an address a client was told it has.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use metrics::{counter, histogram};
use rackboot_core::{BootResponder, EventHub, EventKind, LeaseState, NewEvent, PxeClient};
use rackboot_store::{Lease6, Store};
use rackboot_wire::dhcp6::{self as wire, MessageBuilder, MessageType, Request, code};
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Dhcp6Error;
use crate::config::Dhcp6Config;
use crate::engine::{Answer, Client, Engine, Outcome, Timings, duid_hex};
use crate::socket::Dhcp6Sockets;

/// Most leases written in one transaction.
const MAX_BATCH: usize = 4096;
const COMMIT_QUEUE: usize = 65536;

/// Counts readable by the caller (tests, status pages); the same numbers go to
/// the metrics registry.
#[derive(Debug, Default)]
pub struct Dhcp6Counters {
    pub received: AtomicU64,
    /// Malformed or misdirected packets, and valid ones not answered.
    pub dropped: AtomicU64,
    pub replied: AtomicU64,
    pub lease_writes: AtomicU64,
}

impl Dhcp6Counters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What the service works with besides its sockets.
#[derive(Clone)]
pub struct Dhcp6State {
    pub config: Dhcp6Config,
    pub store: Arc<dyn Store>,
    pub events: EventHub,
    pub boot: Arc<dyn BootResponder>,
    pub counters: Arc<Dhcp6Counters>,
}

/// Runs the DHCPv6 service (and its router advertisements) until `shutdown`.
/// Leases are loaded from the store first. Like the DHCPv4 service it runs on
/// its own thread with a single-threaded runtime; the future waits for it.
pub async fn run(
    sockets: Dhcp6Sockets,
    state: Dhcp6State,
    shutdown: CancellationToken,
) -> Result<(), Dhcp6Error> {
    let io = |context: &'static str| move |source| Dhcp6Error::Io { context, source };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting the DHCPv6 runtime"))?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rackboot-dhcp6".into())
        .spawn(move || {
            let _ = done_tx.send(runtime.block_on(serve(sockets, state, shutdown)));
        })
        .map_err(io("starting the DHCPv6 thread"))?;
    done_rx.await.unwrap_or_else(|_| {
        Err(Dhcp6Error::Io {
            context: "DHCPv6 thread",
            source: std::io::Error::other("the DHCPv6 thread panicked"),
        })
    })
}

/// A reply waiting for its leases to be written.
struct Pending {
    leases: Vec<Lease6>,
    reply: Vec<u8>,
    to: SocketAddr,
    events: Vec<NewEvent>,
}

async fn serve(
    sockets: Dhcp6Sockets,
    state: Dhcp6State,
    shutdown: CancellationToken,
) -> Result<(), Dhcp6Error> {
    let subnets = state.config.compile()?;
    let io = |context: &'static str| move |source| Dhcp6Error::Io { context, source };
    let sock =
        Arc::new(UdpSocket::from_std(sockets.dhcp).map_err(io("registering the port 547 socket"))?);
    let mut engine = Engine::new(
        subnets,
        Timings {
            offer_hold_secs: state.config.offer_hold_secs,
            decline_hold_secs: state.config.decline_hold_secs,
        },
        sockets.server_duid.clone(),
        state.config.rapid_commit,
        &sockets.server_addrs,
    );
    let leases = state
        .store
        .list_leases6()
        .await
        .map_err(Dhcp6Error::LoadLeases)?;
    let total = leases.len();
    let skipped = engine.load(leases);
    tracing::info!(loaded = total - skipped, skipped, server = %sockets.server_addr, "DHCPv6 leases loaded");

    let ra_config = &state.config.router_advertisements;
    if let Some(ra_socket) = sockets.ra
        && ra_config.enabled
    {
        match engine.select_subnet_local() {
            Some(local) => {
                let ra = crate::ra::advertisement(
                    engine.subnet(local),
                    ra_config.autonomous,
                    ra_config.router_lifetime_secs,
                    sockets.mac,
                );
                let interval = Duration::from_secs(u64::from(ra_config.interval_secs));
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = crate::ra::run(ra_socket, ra, interval, stop).await {
                        tracing::warn!(error = %e, "router advertisements stopped");
                    }
                });
            }
            None => tracing::warn!(
                "no configured prefix contains the interface's addresses; not advertising"
            ),
        }
    }

    let (commit_tx, commit_rx) = mpsc::channel(COMMIT_QUEUE);
    let commit = tokio::spawn(commit_loop(
        commit_rx,
        state.store.clone(),
        sock.clone(),
        state.events.clone(),
        state.counters.clone(),
        Duration::from_millis(u64::from(state.config.commit_window_ms)),
    ));
    let mut server = Server {
        engine,
        preference: state.config.preference,
        server_addr: sockets.server_addr,
        sock: sock.clone(),
        events: state.events.clone(),
        boot: state.boot.clone(),
        counters: state.counters.clone(),
        commit_tx,
    };
    tracing::info!(server = %sockets.server_addr, "DHCPv6 server running");
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = sock.readable() => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "DHCPv6 socket failed");
                    continue;
                }
                // Drain what is queued, bounded so the other tasks get their turn.
                for _ in 0..256 {
                    match sock.try_recv_from(&mut buf) {
                        Ok((n, from)) => server.on_packet(&buf[..n], from),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            counter!("rackboot_dhcp6_recv_errors_total").increment(1);
                            tracing::warn!(error = %e, "DHCPv6 receive failed");
                            break;
                        }
                    }
                }
            }
        }
    }
    drop(server);
    let _ = commit.await;
    Ok(())
}

struct Server {
    engine: Engine,
    preference: u8,
    server_addr: Ipv6Addr,
    sock: Arc<UdpSocket>,
    events: EventHub,
    boot: Arc<dyn BootResponder>,
    counters: Arc<Dhcp6Counters>,
    commit_tx: mpsc::Sender<Pending>,
}

fn drop_packet(counters: &Dhcp6Counters, reason: &'static str) {
    counters.dropped.fetch_add(1, Ordering::Relaxed);
    counter!("rackboot_dhcp6_dropped_total", "reason" => reason).increment(1);
}

fn client_ip(from: SocketAddr) -> Ipv6Addr {
    match from {
        SocketAddr::V6(a) => a.ip().to_owned(),
        SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
    }
}

impl Server {
    fn on_packet(&mut self, bytes: &[u8], from: SocketAddr) {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let req = match wire::parse_request(bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropping malformed DHCPv6 packet");
                drop_packet(&self.counters, e.reason());
                return;
            }
        };
        counter!("rackboot_dhcp6_received_total", "type" => req.kind.as_str()).increment(1);
        let Some(duid) = req.client_id.as_deref() else {
            // Information-request may come without one; nothing to key a lease on.
            if req.kind == MessageType::InformationRequest {
                self.answer_info(&req, None, from);
            } else {
                drop_packet(&self.counters, "missing_client_id");
            }
            return;
        };
        let client = Client {
            duid: duid_hex(duid),
            mac: req.mac(client_ip(from)),
        };
        match self.engine.handle(&req, &client, Utc::now()) {
            Outcome::Ignore(reason) => drop_packet(&self.counters, reason),
            Outcome::Answer(answer) => self.reply(&req, &client, answer, from),
        }
    }

    fn answer_info(&mut self, req: &Request, client: Option<&Client>, from: SocketAddr) {
        let answer = Answer {
            kind: MessageType::Reply,
            subnet: self.engine.select_subnet(req),
            ias: Vec::new(),
            status: None,
            rapid_commit: false,
            persist: Vec::new(),
            hostname: None,
        };
        let pxe = wire::classify(req);
        let bytes = self.build(req, client, &answer, pxe.as_ref());
        self.send_now(req, bytes, from, "reply");
    }

    fn build(
        &self,
        req: &Request,
        client: Option<&Client>,
        answer: &Answer,
        pxe: Option<&PxeClient>,
    ) -> Vec<u8> {
        let mut m = MessageBuilder::new(answer.kind, req.xid);
        m.option(code::SERVERID, self.engine.server_duid());
        if let Some(id) = &req.client_id {
            m.option(code::CLIENTID, id);
        }
        if answer.kind == MessageType::Advertise {
            m.option(code::PREFERENCE, &[self.preference]);
        }
        if answer.rapid_commit {
            m.option(code::RAPID_COMMIT, &[]);
        }
        for (ia, status) in &answer.ias {
            m.ia_na(ia, *status);
        }
        if let Some((status, message)) = answer.status {
            m.status(status, message);
        }
        if let Some(s) = answer.subnet.map(|i| self.engine.subnet(i))
            && !s.dns.is_empty()
        {
            m.addresses(code::DNS_SERVERS, &s.dns);
        }
        if let Some(pxe) = pxe
            && let Some(boot) =
                self.boot
                    .dhcp6_boot(client.and_then(|c| c.mac), pxe, self.server_addr)
        {
            m.bootfile_url(&boot.url);
            if !boot.params.is_empty() {
                m.bootfile_params(&boot.params);
            }
            if pxe.http_boot {
                // UEFI HTTP boot takes an offer as an HTTP one only when it carries
                // the vendor class "HTTPClient" (the DHCPv4 option 60 echo's twin).
                let enterprise = req.vendor_class.as_ref().map_or(0, |v| v.enterprise);
                m.option(code::VENDOR_CLASS, &http_client_vendor_class(enterprise));
            }
        }
        wire::wrap_relay_reply(&req.relays, m.finish())
    }

    fn reply(&mut self, req: &Request, client: &Client, answer: Answer, from: SocketAddr) {
        let pxe = wire::classify(req);
        let bytes = self.build(req, Some(client), &answer, pxe.as_ref());
        let events = self.events_for(req, client, &answer, pxe.as_ref());
        if answer.persist.is_empty() {
            self.send_now(req, bytes, from, answer.kind.as_str());
            for e in events {
                self.events.emit(e);
            }
            return;
        }
        let pending = Pending {
            leases: answer.persist,
            reply: bytes,
            to: from,
            events,
        };
        if self.commit_tx.try_send(pending).is_err() {
            // The store is far behind; the client retransmits.
            drop_packet(&self.counters, "commit_queue_full");
        }
    }

    fn send_now(&self, _req: &Request, bytes: Vec<u8>, to: SocketAddr, kind: &'static str) {
        match self.sock.try_send_to(&bytes, to) {
            Ok(_) => {
                self.counters.replied.fetch_add(1, Ordering::Relaxed);
                counter!("rackboot_dhcp6_replied_total", "type" => kind).increment(1);
            }
            Err(e) => {
                counter!("rackboot_dhcp6_send_errors_total").increment(1);
                tracing::warn!(%to, error = %e, "DHCPv6 send failed");
            }
        }
    }

    fn events_for(
        &self,
        req: &Request,
        client: &Client,
        answer: &Answer,
        pxe: Option<&PxeClient>,
    ) -> Vec<NewEvent> {
        let addrs: Vec<String> = answer
            .ias
            .iter()
            .flat_map(|(ia, _)| {
                ia.addrs
                    .iter()
                    .filter(|a| a.valid > 0)
                    .map(|a| a.addr.to_string())
            })
            .collect();
        let who = client
            .mac
            .map_or_else(|| format!("DUID {}", client.duid), |m| m.to_string());
        let (kind, text) = match (req.kind, answer.kind) {
            (MessageType::Solicit, MessageType::Advertise) if !addrs.is_empty() => (
                EventKind::LeaseOffered,
                format!("advertised {} to {who}", addrs.join(", ")),
            ),
            (MessageType::Release, _) => (
                EventKind::LeaseReleased,
                format!("{who} released its IPv6 addresses"),
            ),
            (MessageType::Decline, _) => (
                EventKind::LeaseDeclined,
                format!("{who} declined its IPv6 addresses"),
            ),
            (_, MessageType::Reply)
                if answer.persist.iter().any(|l| l.state == LeaseState::Bound) =>
            {
                (
                    EventKind::LeaseAcked,
                    format!("acknowledged {} to {who}", addrs.join(", ")),
                )
            }
            _ => return Vec::new(),
        };
        let mut event = NewEvent::new(kind, text).data(json!({
            "ipv6": addrs,
            "duid": client.duid,
            "message": req.kind.as_str(),
            "rapid_commit": answer.rapid_commit,
            "relay": req.first_relay().map(|r| r.link_addr.to_string()),
            "pxe": pxe.map(|c| json!({ "arch": c.arch.as_str(), "ipxe": c.ipxe, "http_boot": c.http_boot })),
        }));
        if let Some(mac) = client.mac {
            event = event.mac(mac);
        }
        vec![event]
    }
}

/// Option 16 data naming the class "HTTPClient" under `enterprise` (RFC 8415
/// 21.16: enterprise number, then length-prefixed class data).
pub fn http_client_vendor_class(enterprise: u32) -> Vec<u8> {
    let class = b"HTTPClient";
    let mut data = Vec::with_capacity(6 + class.len());
    data.extend_from_slice(&enterprise.to_be_bytes());
    data.extend_from_slice(&(class.len() as u16).to_be_bytes());
    data.extend_from_slice(class);
    data
}

/// Group commit: take everything queued, write it in one transaction, then send
/// that batch's replies. While a write is in flight the next batch accumulates.
async fn commit_loop(
    mut rx: mpsc::Receiver<Pending>,
    store: Arc<dyn Store>,
    sock: Arc<UdpSocket>,
    events: EventHub,
    counters: Arc<Dhcp6Counters>,
    window: Duration,
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
        let leases: Vec<Lease6> = batch
            .iter()
            .flat_map(|p| p.leases.iter().cloned())
            .collect();
        let started = std::time::Instant::now();
        let result = store.put_leases6(&leases).await;
        histogram!("rackboot_dhcp6_lease_write_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                counters
                    .lease_writes
                    .fetch_add(leases.len() as u64, Ordering::Relaxed);
                for p in batch.drain(..) {
                    match sock.send_to(&p.reply, p.to).await {
                        Ok(_) => {
                            counters.replied.fetch_add(1, Ordering::Relaxed);
                            counter!("rackboot_dhcp6_replied_total", "type" => "reply")
                                .increment(1);
                        }
                        Err(e) => {
                            counter!("rackboot_dhcp6_send_errors_total").increment(1);
                            tracing::warn!(to = %p.to, error = %e, "DHCPv6 send failed");
                        }
                    }
                    for e in p.events {
                        events.emit(e);
                    }
                }
            }
            Err(e) => {
                // No reply for a lease that is not durable; clients retransmit.
                for _ in batch.drain(..) {
                    drop_packet(&counters, "lease_write_failed");
                }
                tracing::error!(error = %e, leases = leases.len(), "writing IPv6 leases failed; replies withheld");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_client_vendor_class_is_enterprise_length_and_class() {
        assert_eq!(
            http_client_vendor_class(343),
            [&[0, 0, 1, 0x57, 0, 10][..], b"HTTPClient"].concat()
        );
        // Parsed back by the wire codec as a client would send it.
        let data = http_client_vendor_class(0);
        assert_eq!(u32::from_be_bytes(data[..4].try_into().unwrap()), 0);
        assert_eq!(&data[6..], b"HTTPClient");
    }
}
