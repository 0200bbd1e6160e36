//! The HTTP connection loop of boot HTTP and the API (`serve_http`) on
//! loopback: a connection that sends half a request line and stalls is
//! closed after the header-read timeout while other connections are
//! served; a slowloris crowd does not stop a normal GET; at the connection
//! cap a new connection waits until one closes, then is served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use rackboot_boot::{ConnLimits, serve_http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A `serve_http` server on loopback, stopped by [`Running::shut_down`].
struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the server and waits for its loop to end.
    async fn shut_down(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server stops")
            .unwrap();
    }
}

/// A server of `/peer` (the caller's address, from `ConnectInfo`) with the
/// header-read `timeout` and at most `max_connections`.
async fn start(timeout: Duration, max_connections: usize) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    let limits = ConnLimits {
        header_read_timeout: timeout,
        max_connections,
    };
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        serve_http(listener, app, limits, "test", async move {
            token.cancelled().await
        })
        .await
        .unwrap();
    });
    Running { addr, stop, task }
}

/// A GET of `/peer` on a new connection: the body.
async fn get_peer(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("no answer within 30 s")
        .unwrap();
    let text = String::from_utf8(response).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap().to_string();
    assert_eq!(
        body,
        local.to_string(),
        "ConnectInfo is the caller's address"
    );
    body
}

/// Waits for the server to close `stream` (EOF or reset); how long it took.
async fn closed_after(mut stream: TcpStream, started: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // hyper may answer a timed-out head with an error status first.
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the stalled connection is still open after 30 s"
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_line_is_closed_after_the_timeout_while_others_are_served() {
    let timeout = Duration::from_millis(800);
    let server = start(timeout, 64).await;
    let addr = server.addr;

    let started = Instant::now();
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(b"GET /pe").await.unwrap();
    // Slowloris: 20 connections each sending a header line now and then,
    // never finishing their heads.
    let mut crowd = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET /peer HTTP/1.1\r\nHost: t{i}\r\n").as_bytes())
            .await
            .unwrap();
        crowd.push(s);
    }
    let dribble = tokio::spawn(async move {
        for round in 0..8 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            for s in &mut crowd {
                // A write fails once the server has closed it.
                let _ = s.write_all(format!("X-{round}: y\r\n").as_bytes()).await;
            }
        }
        crowd
    });
    // Normal GETs on other connections meanwhile.
    for _ in 0..5 {
        get_peer(addr).await;
    }
    let served_by = started.elapsed();
    let closed = closed_after(stalled, started).await;
    assert!(
        closed >= timeout - Duration::from_millis(50),
        "closed after {closed:?}, before the {timeout:?} timeout"
    );
    // Each slowloris connection is closed too, though it kept sending.
    for s in dribble.await.unwrap() {
        closed_after(s, started).await;
    }
    println!(
        "5 GETs served within {served_by:?} beside 21 stalled connections; the half request line closed after {closed:?} (timeout {timeout:?})"
    );
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_a_new_connection_waits_for_a_slot() {
    let timeout = Duration::from_millis(1000);
    let server = start(timeout, 4).await;
    let addr = server.addr;
    // Four silent connections fill the cap (accepted first: the kernel's
    // accept queue is in connection order).
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // A fifth waits in the accept queue until the silent ones time out.
    get_peer(addr).await;
    let waited = started.elapsed();
    assert!(
        waited >= timeout - Duration::from_millis(50),
        "served after {waited:?}: the cap of 4 did not hold"
    );
    for s in silent {
        closed_after(s, started).await;
    }
    // With slots free again, a GET is served at once (no timeout to wait out).
    let again = Instant::now();
    get_peer(addr).await;
    println!(
        "at the cap a GET waited {waited:?} (timeout {timeout:?}); then served in {:?}",
        again.elapsed()
    );
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_timeout() {
    let timeout = Duration::from_millis(800);
    let server = start(timeout, 64).await;
    let addr = server.addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle_from = Instant::now();
    let closed = closed_after(stream, idle_from).await;
    assert!(
        closed >= timeout - Duration::from_millis(50),
        "closed after {closed:?}"
    );
    server.shut_down().await;
}

/// Requests a second through `serve` on `listener` from 8 keep-alive
/// clients for `secs`, each GET of a 300-byte body.
async fn requests_per_second(addr: SocketAddr, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut n = 0u64;
            while Instant::now() < deadline {
                stream
                    .write_all(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\n")
                    .await
                    .unwrap();
                let mut have = 0;
                loop {
                    have += stream.read(&mut buf[have..]).await.unwrap();
                    let text = &buf[..have];
                    if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n")
                        && have >= end + 4 + 300
                    {
                        break;
                    }
                }
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    total as f64 / secs as f64
}

/// What the connection loop costs against `axum::serve` on the same router
/// (in one process on loopback; run by hand, the figures are printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn serve_http_against_axum_serve() {
    let app = Router::new().route("/small", get(|| async { "x".repeat(300) }));
    for round in 0..3 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let (a, token) = (app.clone(), stop.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, a)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .unwrap()
        });
        let axum_rate = requests_per_second(addr, 3).await;
        stop.cancel();
        server.await.unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let (a, token) = (app.clone(), stop.clone());
        let server = tokio::spawn(async move {
            serve_http(listener, a, ConnLimits::BOOT, "bench", async move {
                token.cancelled().await
            })
            .await
            .unwrap()
        });
        let ours = requests_per_second(addr, 3).await;
        stop.cancel();
        server.await.unwrap();
        println!(
            "round {round}: axum::serve {axum_rate:.0} req/s, serve_http {ours:.0} req/s ({:.2}x)",
            ours / axum_rate
        );
    }
}
