//! A real `rackboot serve` on loopback with `[listen]
//! http_header_read_timeout_secs = 3` and `http_max_connections = 8`: a
//! connection that sends half a request line is closed after the timeout
//! while a normal GET beside a slowloris crowd is served; at the cap a GET
//! waits for a slot, then is served; /metrics counts both.

mod loopback;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use loopback::Server;

// Long enough that a GET on a loaded machine is served well within it.
const TIMEOUT: Duration = Duration::from_secs(3);
const CAP: usize = 8;

fn start(dir: &std::path::Path) -> Server {
    Server::start_with(
        dir,
        &format!(
            "tftp = \"off\"\nhttp_header_read_timeout_secs = {}\nhttp_max_connections = {CAP}\n",
            TIMEOUT.as_secs()
        ),
    )
}

/// A GET on a new connection: the status line and body.
fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

/// Waits (at most 30 s) for the server to close `stream`.
fn wait_closed(mut stream: TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the stalled connection is still open after 30 s")
            }
            Err(_) => return,
        }
    }
}

/// The sum of a metric's series with `listener="http"`.
fn metric(port: u16, name: &str) -> f64 {
    get(port, "/metrics")
        .lines()
        .filter(|l| l.starts_with(name) && l.contains("listener=\"http\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn stalled_connections_are_closed_and_the_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let port = server.port;

    // Five slowloris connections (half a request line, or headers never
    // finished): a GET beside them is served.
    let started = Instant::now();
    let mut stalled = Vec::new();
    for i in 0..5 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let part = if i == 0 {
            "GET /api/v1/sta".to_string()
        } else {
            format!("GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-{i}: y\r\n")
        };
        s.write_all(part.as_bytes()).unwrap();
        stalled.push(s);
    }
    let asked = Instant::now();
    let reply = get(port, "/api/openapi.json");
    let served_in = asked.elapsed();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:.200}");
    assert!(
        served_in < TIMEOUT,
        "a GET beside 5 stalled connections waited {served_in:?}"
    );
    for s in stalled {
        wait_closed(s);
    }
    let closed_in = started.elapsed();
    assert!(closed_in >= TIMEOUT, "closed after {closed_in:?}");

    // Eight silent connections fill the cap; a ninth waits for a slot.
    let started = Instant::now();
    let silent: Vec<TcpStream> = (0..CAP)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let reply = get(port, "/api/openapi.json");
    let waited = started.elapsed();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:.200}");
    assert!(
        waited >= TIMEOUT - Duration::from_millis(50),
        "served after {waited:?}: the cap of {CAP} did not hold"
    );
    // Each silent connection is closed by the server at its timeout (not by
    // us: a connection we close first ends without a timeout and is not
    // counted), and its timeout is counted before its socket closes.
    for s in silent {
        wait_closed(s);
    }
    println!(
        "beside 5 stalled connections a GET took {served_in:?}; they closed after {closed_in:?}; at the cap a GET waited {waited:?}"
    );
    assert!(metric(port, "rackboot_http_header_timeouts_total") >= 5.0 + CAP as f64);
    assert!(metric(port, "rackboot_http_connections_capped_total") >= 1.0);
}
