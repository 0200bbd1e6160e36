//! The HTTP/1.1 connection loop of boot HTTP and the API (plain and TLS),
//! in place of `axum::serve`, which has no header-read timeout and no bound
//! on open connections: a client that opened a connection and sent its
//! headers slowly, or nothing, held it for ever.
//!
//! - Every request's head must arrive within
//!   [`ConnLimits::header_read_timeout`] of the moment the server starts
//!   waiting for it: a new connection's first request, and every later
//!   request on a kept-alive connection (an idle connection is closed after
//!   the same time). hyper's own timer does this; a closed connection is
//!   counted (`rackboot_http_header_timeouts_total`).
//! - At most [`ConnLimits::max_connections`] connections are open per
//!   listener. At the cap the listener stops accepting: new connections
//!   wait in the kernel's accept queue (its backlog; beyond it the kernel
//!   drops their SYNs and clients retransmit) and are taken as open ones
//!   close. Each time the cap is reached it is counted
//!   (`rackboot_http_connections_capped_total`) and logged, at most once a
//!   minute per listener.
//!
//! HTTP/1.1 only: boot firmware, iPXE, installers, agents and the CLI
//! speak it (the API's TLS offers only `http/1.1` by ALPN). Each request
//! carries the peer's address as `ConnectInfo<SocketAddr>`, as
//! `into_make_service_with_connect_info` gives it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

/// Bounds of one HTTP listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// How long a request's head (request line and headers) may take to
    /// arrive, from the moment the server waits for it.
    pub header_read_timeout: Duration,
    /// Open connections at once; at the cap new ones wait to be accepted.
    pub max_connections: usize,
}

impl ConnLimits {
    /// Boot HTTP: a boot storm of a thousand machines keeps a few thousand
    /// connections (script, kernel, initrd, agents) open at once.
    pub const BOOT: ConnLimits = ConnLimits {
        header_read_timeout: Duration::from_secs(30),
        max_connections: 4096,
    };
    /// The API's own listener: operators, the CLI, dashboards and their
    /// event streams.
    pub const API: ConnLimits = ConnLimits {
        header_read_timeout: Duration::from_secs(30),
        max_connections: 1024,
    };
}

/// The largest cap accepted (a semaphore's permits, taken all at once at
/// shutdown, are counted in `u32`).
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

/// How often the cap being reached is logged, per listener.
const CAP_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Serves `app` on `listener` (`name` labels its metrics and logs: `http`,
/// `http6`, `api`) within `limits`, until `shutdown` completes; then stops
/// accepting, lets each open connection finish its request in flight (as
/// `axum::serve`'s graceful shutdown does) and returns when all are closed.
pub async fn serve_http<L>(
    mut listener: L,
    app: Router,
    limits: ConnLimits,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let max = limits.max_connections.clamp(1, MAX_CONNECTIONS_LIMIT);
    let slots = Arc::new(Semaphore::new(max));
    // Closed (its sender dropped) when the server stops.
    let (closing_tx, closing_rx) = watch::channel(());
    let mut last_cap_log: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                metrics::counter!("rackboot_http_connections_capped_total", "listener" => name)
                    .increment(1);
                if last_cap_log.is_none_or(|at| at.elapsed() >= CAP_LOG_INTERVAL) {
                    last_cap_log = Some(Instant::now());
                    tracing::warn!(
                        listener = name,
                        max_connections = max,
                        "HTTP listener at its connection cap: new connections wait to be accepted"
                    );
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let (io, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let app = app.clone();
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = OpenConnection::new(name);
            let service = app.map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(Body::new)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn =
                builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
            tokio::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            if e.is_timeout() {
                                metrics::counter!("rackboot_http_header_timeouts_total", "listener" => name)
                                    .increment(1);
                                tracing::debug!(listener = name, %peer, "request head not received in time: connection closed");
                            } else {
                                tracing::trace!(listener = name, %peer, error = %e, "HTTP connection ended");
                            }
                        }
                        break;
                    }
                    _ = closing.changed(), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    drop(closing_tx);
    // Every connection holds a slot until it ends.
    let _all = slots.acquire_many(max as u32).await;
    Ok(())
}

/// The open-connections gauge, held by each connection's task.
struct OpenConnection(&'static str);

impl OpenConnection {
    fn new(name: &'static str) -> OpenConnection {
        metrics::gauge!("rackboot_http_connections_open", "listener" => name).increment(1.0);
        OpenConnection(name)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("rackboot_http_connections_open", "listener" => self.0).decrement(1.0);
    }
}
