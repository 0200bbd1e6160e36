//! Test helpers: a tiny threaded HTTP/1.1 server on 127.0.0.1, and framed
//! zstd images built the way the server's catalog builds them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackboot_agent_proto::{FRAME_RAW_SIZE, ImageManifest, image::FORMAT_ZSTD_FRAMES_V1};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send only this many body bytes (after announcing all), then close.
    pub cut_after: Option<usize>,
    /// Send the body in pieces of this size with this pause between them.
    pub trickle: Option<(usize, Duration)>,
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(value).unwrap(),
            cut_after: None,
            trickle: None,
        }
    }

    pub fn bytes(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: vec![],
            body,
            cut_after: None,
            trickle: None,
        }
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// Serves every connection on its own thread until dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub requests: Arc<Mutex<Vec<Request>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let thread = {
            let stop = stop.clone();
            let requests = requests.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let handler = handler.clone();
                    let requests = requests.clone();
                    std::thread::spawn(move || serve(conn, &*handler, &requests));
                }
            })
        };
        TestServer {
            addr,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests_to(&self, prefix: &str) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, handler: &Handler, requests: &Mutex<Vec<Request>>) {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let path = words.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request = Request {
        method,
        path,
        headers,
        body,
    };
    requests.lock().unwrap().push(request.clone());
    let reply = handler(&request);
    let mut out = conn;
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", reply.body.len()));
    let _ = out.write_all(head.as_bytes());
    let n = reply
        .cut_after
        .unwrap_or(reply.body.len())
        .min(reply.body.len());
    match reply.trickle {
        Some((piece, pause)) => {
            for chunk in reply.body[..n].chunks(piece) {
                if out.write_all(chunk).is_err() {
                    return;
                }
                std::thread::sleep(pause);
            }
        }
        None => {
            let _ = out.write_all(&reply.body[..n]);
        }
    }
    let _ = out.flush();
}

/// Serves `data` with Range support (`bytes=N-`).
pub fn range_reply(req: &Request, data: &[u8]) -> Reply {
    match req.header("range").and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let start: usize = r.trim_end_matches('-').parse().unwrap();
            Reply {
                status: 206,
                headers: vec![(
                    "Content-Range".into(),
                    format!("bytes {start}-{}/{}", data.len() - 1, data.len()),
                )],
                body: data[start..].to_vec(),
                cut_after: None,
                trickle: None,
            }
        }
        None => Reply::bytes(200, data.to_vec()),
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Frames `raw` as the catalog does: 1 MiB frames, each compressed alone.
pub fn build_image(raw: &[u8]) -> (ImageManifest, Vec<u8>) {
    let mut data = Vec::new();
    let mut offsets = vec![0u64];
    let mut frame_sha256 = Vec::new();
    for frame in raw.chunks(FRAME_RAW_SIZE as usize) {
        let compressed = zstd::bulk::compress(frame, 3).unwrap();
        frame_sha256.push(sha256_hex(&compressed));
        data.extend(compressed);
        offsets.push(data.len() as u64);
    }
    let manifest = ImageManifest {
        format: FORMAT_ZSTD_FRAMES_V1.into(),
        raw_size: raw.len() as u64,
        sha256: sha256_hex(raw),
        frame_raw_size: FRAME_RAW_SIZE,
        frame_offsets: offsets,
        frame_sha256,
    };
    manifest.validate().unwrap();
    (manifest, data)
}

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// 5.5 MiB: data, a zero frame, half data, zeros, data, a short data tail.
pub fn sample_raw() -> Vec<u8> {
    const MIB: usize = 1 << 20;
    let mut raw = Vec::new();
    raw.extend(noise(MIB, 1));
    raw.extend(vec![0u8; MIB]);
    raw.extend(noise(MIB / 2, 2));
    raw.extend(vec![0u8; MIB / 2]);
    raw.extend(vec![0u8; MIB]);
    raw.extend(noise(MIB, 3));
    raw.extend(noise(MIB / 2, 4));
    raw
}
