//! `http-load`: a lean HTTP/1.1 load generator for the boot HTTP benchmarks.
//!
//! ```text
//! http-load URL [--connections 50] [--threads 2] [--secs 10 | --requests N] [--rate R]
//! ```
//!
//! Each connection sends `GET` requests one after another over keep-alive
//! (reconnecting if the server closes) and reads each response's body to
//! its Content-Length without keeping it. Without `--rate` the connections
//! go as fast as the server answers (closed loop, as wrk does); with it they
//! send `R` requests per second between them on a fixed schedule, and a
//! request's latency counts from when it was due (so a slow answer cannot
//! hide the requests it delayed). `--requests N` stops after N responses
//! in all (e.g. 8 connections, 8 requests: 8 parallel downloads).
//!
//! Prints `key=value` lines: responses, errors (non-2xx or broken
//! connections), seconds, requests per second, body bytes, MiB/s and latency
//! `p50 p99 max` in ms.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rackboot_bench::fleet::Latencies;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
struct Opts {
    addr: SocketAddr,
    host: String,
    path: String,
    connections: usize,
    threads: usize,
    secs: Option<f64>,
    requests: Option<usize>,
    rate: Option<f64>,
}

const USAGE: &str =
    "usage: http-load URL [--connections N] [--threads N] [--secs S | --requests N] [--rate R]";

fn parse_opts() -> Result<Opts> {
    let mut url = None;
    let mut o = Opts {
        addr: "127.0.0.1:80".parse()?,
        host: String::new(),
        path: String::new(),
        connections: 50,
        threads: 2,
        secs: None,
        requests: None,
        rate: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--connections" => o.connections = value()?.parse().context("--connections")?,
            "--threads" => o.threads = value()?.parse().context("--threads")?,
            "--secs" => o.secs = Some(value()?.parse().context("--secs")?),
            "--requests" => o.requests = Some(value()?.parse().context("--requests")?),
            "--rate" => o.rate = Some(value()?.parse().context("--rate")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            u if url.is_none() && !u.starts_with("--") => url = Some(u.to_string()),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let url = url.with_context(|| format!("a URL is required\n{USAGE}"))?;
    let (host, path) = split_url(&url)?;
    o.addr = host
        .parse()
        .or_else(|_| format!("{host}:80").parse())
        .with_context(|| format!("{url}: the host must be IP[:PORT]"))?;
    o.host = host.to_string();
    o.path = path.to_string();
    if o.connections == 0 || o.threads == 0 {
        bail!("--connections and --threads must be at least 1");
    }
    if o.secs.is_none() && o.requests.is_none() {
        o.secs = Some(10.0);
    }
    if o.rate.is_some_and(|r| r <= 0.0) {
        bail!("--rate must be above 0");
    }
    Ok(o)
}

/// `http://HOST[:PORT]/PATH` into host and path.
fn split_url(url: &str) -> Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs"))?;
    let slash = rest.find('/').unwrap_or(rest.len());
    let path = if slash == rest.len() {
        "/"
    } else {
        &rest[slash..]
    };
    Ok((&rest[..slash], path))
}

fn main() -> ExitCode {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("http-load: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = if opts.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("http-load: tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Shared {
    opts: Opts,
    request: Vec<u8>,
    started: Instant,
    stop: AtomicBool,
    /// Requests handed out (for `--requests` and the rate schedule).
    issued: AtomicUsize,
    responses: AtomicUsize,
    errors: AtomicUsize,
    bytes: AtomicU64,
}

async fn run(o: Opts) -> Result<()> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: http-load\r\nAccept: */*\r\n\r\n",
        o.path, o.host
    )
    .into_bytes();
    let shared = Arc::new(Shared {
        opts: o.clone(),
        request,
        started: Instant::now(),
        stop: AtomicBool::new(false),
        issued: AtomicUsize::new(0),
        responses: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
        bytes: AtomicU64::new(0),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..o.connections {
        tasks.spawn(connection(shared.clone()));
    }
    if let Some(secs) = o.secs {
        let stop = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            stop.stop.store(true, Ordering::Relaxed);
        });
    }
    let mut latencies = Latencies::default();
    while let Some(joined) = tasks.join_next().await {
        latencies.merge(joined.context("a connection task panicked")?);
    }
    let elapsed = shared.started.elapsed().as_secs_f64();
    let responses = shared.responses.load(Ordering::Relaxed);
    let bytes = shared.bytes.load(Ordering::Relaxed);
    println!("responses={responses}");
    println!("errors={}", shared.errors.load(Ordering::Relaxed));
    println!("secs={elapsed:.3}");
    println!("req_per_sec={:.1}", responses as f64 / elapsed);
    println!("body_bytes={bytes}");
    println!(
        "mib_per_sec={:.1}",
        bytes as f64 / (1024.0 * 1024.0) / elapsed
    );
    match latencies.summary() {
        Some(l) => println!("latency_ms={:.2} {:.2} {:.2}", l.p50_ms, l.p99_ms, l.max_ms),
        None => println!("latency_ms=- - -"),
    }
    Ok(())
}

/// Takes the next request number, or `None` once the run is over.
fn next_request(s: &Shared) -> Option<usize> {
    if s.stop.load(Ordering::Relaxed) {
        return None;
    }
    let n = s.issued.fetch_add(1, Ordering::Relaxed);
    if s.opts.requests.is_some_and(|max| n >= max) {
        return None;
    }
    Some(n)
}

/// One connection's requests, one at a time; its latencies.
async fn connection(s: Arc<Shared>) -> Latencies {
    let mut lat = Latencies::default();
    let mut conn: Option<Conn> = None;
    while let Some(n) = next_request(&s) {
        // With a rate, request n is due at n / rate seconds into the run.
        let due = match s.opts.rate {
            Some(rate) => {
                let due = s.started + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                if s.stop.load(Ordering::Relaxed) {
                    break;
                }
                due
            }
            None => Instant::now(),
        };
        if conn.is_none() {
            match TcpStream::connect(s.opts.addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    conn = Some(Conn::new(stream));
                }
                Err(_) => {
                    s.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        match c.get(&s.request).await {
            Ok((status, body, keep_alive)) => {
                s.bytes.fetch_add(body, Ordering::Relaxed);
                if (200..300).contains(&status) {
                    s.responses.fetch_add(1, Ordering::Relaxed);
                    lat.add(due.elapsed());
                } else {
                    s.errors.fetch_add(1, Ordering::Relaxed);
                }
                if !keep_alive {
                    conn = None;
                }
            }
            Err(_) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
    lat
}

/// A keep-alive connection and the bytes read past the last response.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes in `buf` not yet consumed.
    filled: usize,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: vec![0u8; 256 * 1024],
            filled: 0,
        }
    }

    /// Sends the request and reads the whole response: status, body length,
    /// whether the connection stays open.
    async fn get(&mut self, request: &[u8]) -> std::io::Result<(u16, u64, bool)> {
        self.stream.write_all(request).await?;
        // The header.
        let header_end = loop {
            if let Some(end) = find_header_end(&self.buf[..self.filled]) {
                break end;
            }
            if self.filled == self.buf.len() {
                return Err(std::io::Error::other("response header too long"));
            }
            let n = self.stream.read(&mut self.buf[self.filled..]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.filled += n;
        };
        let head = parse_head(&self.buf[..header_end])
            .ok_or_else(|| std::io::Error::other("malformed response header"))?;
        // The body: what came with the header, then reads until its length.
        let mut left = head.content_length;
        let in_buf = (self.filled - header_end) as u64;
        let take = in_buf.min(left);
        left -= take;
        let consumed = header_end + take as usize;
        self.buf.copy_within(consumed..self.filled, 0);
        self.filled -= consumed;
        while left > 0 {
            let want = (left as usize).min(self.buf.len());
            let n = self.stream.read(&mut self.buf[..want]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            left -= n as u64;
        }
        Ok((head.status, head.content_length, head.keep_alive))
    }
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

struct Head {
    status: u16,
    content_length: u64,
    keep_alive: bool,
}

/// Status, Content-Length (required: no chunked bodies here) and keep-alive.
fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next()?;
    let status: u16 = parts.next()?.parse().ok()?;
    let mut content_length = None;
    let mut keep_alive = version == "HTTP/1.1";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    Some(Head {
        status,
        content_length: content_length?,
        keep_alive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_heads() {
        assert_eq!(
            split_url("http://10.0.0.1:8080/assets/a.bin").unwrap(),
            ("10.0.0.1:8080", "/assets/a.bin")
        );
        assert_eq!(split_url("http://10.0.0.1").unwrap(), ("10.0.0.1", "/"));
        assert!(split_url("https://x/").is_err());

        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\nServer: x\r\n\r\n").unwrap();
        assert_eq!((h.status, h.content_length, h.keep_alive), (200, 300, true));
        let h =
            parse_head(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
        assert_eq!((h.status, h.content_length, h.keep_alive), (404, 0, false));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_none());
        assert_eq!(find_header_end(b"HTTP/1.1 200 OK\r\n\r\nbody"), Some(19));
        assert_eq!(find_header_end(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
