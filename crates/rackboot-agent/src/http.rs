//! A minimal blocking HTTP/1.1 client over `std::net::TcpStream`: one
//! connection per request (`Connection: close`), bodies by Content-Length or
//! chunked, streaming response bodies for image downloads.
//!
//! Hosts must be IP literals: the RAM-disk has no resolver and a statically
//! linked glibc cannot load NSS modules, so the agent never does DNS.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("bad URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("{method} {url}: {source}")]
    Io {
        method: String,
        url: String,
        source: io::Error,
    },
    #[error("{method} {url}: malformed response: {why}")]
    Malformed {
        method: String,
        url: String,
        why: String,
    },
}

/// `http://IP[:PORT]/path?query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub addr: SocketAddr,
    /// `Host:` header value, as written in the URL.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, HttpError> {
        let bad = |why: &str| HttpError::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// is supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("junk after ']'")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let ip: IpAddr = host
            .parse()
            .map_err(|_| bad("the host must be an IP address (the agent does no DNS)"))?;
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("bad port"))?,
            None => 80,
        };
        Ok(Url {
            addr: SocketAddr::new(ip, port),
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }

    /// The same server with another path (`/agent/v1/hello`).
    pub fn with_path(&self, path: &str) -> Url {
        Url {
            path: path.to_string(),
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// Time limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest wait for any read or write on the socket.
    pub io: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            io: Duration::from_secs(60),
        }
    }
}

pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    body: Body,
    method: String,
    url: String,
}

enum Body {
    Length(BufReader<TcpStream>, u64),
    Chunked {
        inner: BufReader<TcpStream>,
        left_in_chunk: u64,
        done: bool,
    },
    UntilClose(BufReader<TcpStream>),
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Reads the whole body, refusing more than `limit` bytes.
    pub fn read_body(mut self, limit: usize) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        let n = (&mut self)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| self.io_error(e))?;
        if n > limit {
            return Err(HttpError::Malformed {
                method: self.method.clone(),
                url: self.url.clone(),
                why: format!("body larger than {limit} bytes"),
            });
        }
        Ok(out)
    }

    pub fn io_error(&self, source: io::Error) -> HttpError {
        HttpError::Io {
            method: self.method.clone(),
            url: self.url.clone(),
            source,
        }
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.body {
            Body::Length(inner, left) => {
                if *left == 0 || buf.is_empty() {
                    return Ok(0);
                }
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("connection closed with {left} body bytes still to come"),
                    ));
                }
                *left -= n as u64;
                Ok(n)
            }
            Body::Chunked {
                inner,
                left_in_chunk,
                done,
            } => {
                if *done || buf.is_empty() {
                    return Ok(0);
                }
                if *left_in_chunk == 0 {
                    let size = read_chunk_size(inner)?;
                    if size == 0 {
                        // Trailers, then the blank line.
                        loop {
                            let line = read_line(inner)?;
                            if line.is_empty() {
                                break;
                            }
                        }
                        *done = true;
                        return Ok(0);
                    }
                    *left_in_chunk = size;
                }
                let want = buf
                    .len()
                    .min(usize::try_from(*left_in_chunk).unwrap_or(usize::MAX));
                let n = inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a chunk",
                    ));
                }
                *left_in_chunk -= n as u64;
                if *left_in_chunk == 0 {
                    let crlf = read_line(inner)?;
                    if !crlf.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "chunk not followed by CRLF",
                        ));
                    }
                }
                Ok(n)
            }
            Body::UntilClose(inner) => inner.read(buf),
        }
    }
}

fn read_line(r: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = Vec::new();
    // Header lines are short; a server sending megabytes without a newline is broken.
    let n = r.by_ref().take(16 * 1024).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the response was complete",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "response line too long",
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "response line is not UTF-8"))
}

fn read_chunk_size(r: &mut BufReader<TcpStream>) -> io::Result<u64> {
    let line = read_line(r)?;
    let hex = line.split(';').next().unwrap_or("").trim();
    u64::from_str_radix(hex, 16).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad chunk size {line:?}"),
        )
    })
}

/// Parses `HTTP/1.1 200 OK` into the status code.
pub fn parse_status_line(line: &str) -> Option<u16> {
    let mut words = line.split_ascii_whitespace();
    let version = words.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// Sends one request and reads the response head; the body is read from the
/// returned [`Response`].
pub fn send(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
    timeouts: Timeouts,
) -> Result<Response, HttpError> {
    let io_err = |source: io::Error| HttpError::Io {
        method: method.to_string(),
        url: url.to_string(),
        source,
    };
    let stream = TcpStream::connect_timeout(&url.addr, timeouts.connect).map_err(|source| {
        HttpError::Connect {
            addr: url.addr,
            source,
        }
    })?;
    stream.set_read_timeout(Some(timeouts.io)).map_err(io_err)?;
    stream
        .set_write_timeout(Some(timeouts.io))
        .map_err(io_err)?;
    // Small requests go out at once rather than waiting for an ACK (Nagle).
    let _ = stream.set_nodelay(true);

    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: rackboot-agent/{}\r\n",
        url.path,
        url.authority,
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some((content_type, bytes)) = body {
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        ));
    } else if method == "POST" || method == "PUT" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    // Head and body in one write: one segment for the small JSON requests.
    let mut request = head.into_bytes();
    if let Some((_, bytes)) = body {
        request.extend_from_slice(bytes);
    }
    let mut writer = &stream;
    writer.write_all(&request).map_err(io_err)?;

    let malformed = |why: String| HttpError::Malformed {
        method: method.to_string(),
        url: url.to_string(),
        why,
    };
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let (status, headers) = loop {
        let status_line = read_line(&mut reader).map_err(io_err)?;
        let status = parse_status_line(&status_line)
            .ok_or_else(|| malformed(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(&mut reader).map_err(io_err)?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| malformed(format!("bad header line {line:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            if headers.len() > 100 {
                return Err(malformed("more than 100 headers".into()));
            }
        }
        // 1xx responses (100 Continue) precede the real one.
        if !(100..200).contains(&status) {
            break (status, headers);
        }
    };
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let no_body = method == "HEAD" || status == 204 || status == 304;
    let body = if no_body {
        Body::Length(reader, 0)
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        Body::Chunked {
            inner: reader,
            left_in_chunk: 0,
            done: false,
        }
    } else if let Some(len) = find("content-length") {
        let len = len
            .parse::<u64>()
            .map_err(|_| malformed(format!("bad Content-Length {len:?}")))?;
        Body::Length(reader, len)
    } else {
        Body::UntilClose(reader)
    };
    Ok(Response {
        status,
        headers,
        body,
        method: method.to_string(),
        url: url.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls_take_ip_literals_only() {
        let u = Url::parse("http://10.77.0.1:8080/agent/v1/hello?x=1").unwrap();
        assert_eq!(u.addr, "10.77.0.1:8080".parse().unwrap());
        assert_eq!(u.authority, "10.77.0.1:8080");
        assert_eq!(u.path, "/agent/v1/hello?x=1");
        let u = Url::parse("http://[fd00::1]:81").unwrap();
        assert_eq!(u.addr, "[fd00::1]:81".parse().unwrap());
        assert_eq!(u.path, "/");
        assert_eq!(Url::parse("http://127.0.0.1/x").unwrap().addr.port(), 80);
        for (bad, why) in [
            ("https://10.0.0.1/", "only http://"),
            ("http://rackboot.example:8080/", "IP address"),
            ("http://10.0.0.1:99999/", "bad port"),
            ("http://[fd00::1/", "unclosed"),
        ] {
            let e = Url::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn status_lines() {
        for (line, want) in [
            ("HTTP/1.1 200 OK", Some(200)),
            ("HTTP/1.0 404 Not Found", Some(404)),
            ("HTTP/1.1 409", Some(409)),
            ("HTTP/2 200", None),
            ("garbage", None),
            ("HTTP/1.1 20 OK", None),
        ] {
            assert_eq!(parse_status_line(line), want, "{line}");
        }
    }

    /// Serves one canned response to one connection and returns the request it read.
    fn serve_once(response: &'static [u8]) -> (Url, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/p", listener.local_addr().unwrap())).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // Read the whole request: the head, then its 2-byte body.
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            let complete = |r: &[u8]| {
                let text = String::from_utf8_lossy(r);
                match text.split_once("\r\n\r\n") {
                    Some((head, body)) => !head.contains("Content-Length: 2") || body == "{}",
                    None => false,
                }
            };
            while !complete(&request) {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(response).unwrap();
            request
        });
        (url, handle)
    }

    #[test]
    fn bodies_by_length_chunked_and_close() {
        for (response, want) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..],
                &b"hello"[..],
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n",
                b"hello",
            ),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 201 Created\r\n\r\nhello", b"hello"),
        ] {
            let (url, server) = serve_once(response);
            let resp = send(
                "POST",
                &url,
                &[("Authorization", "Bearer t")],
                Some(("application/json", b"{}")),
                Timeouts::default(),
            )
            .unwrap();
            assert!(resp.is_success());
            assert_eq!(resp.read_body(100).unwrap(), want);
            let request = String::from_utf8(server.join().unwrap()).unwrap();
            assert!(request.starts_with("POST /p HTTP/1.1\r\n"), "{request}");
            assert!(request.contains("Authorization: Bearer t\r\n"));
            assert!(request.ends_with("Content-Length: 2\r\n\r\n{}"), "{request}");
        }
    }

    #[test]
    fn a_body_cut_short_is_an_error() {
        let (url, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
        let resp = send("GET", &url, &[], None, Timeouts::default()).unwrap();
        let e = resp.read_body(100).unwrap_err().to_string();
        assert!(e.contains("5 body bytes still to come"), "{e}");
        server.join().unwrap();
    }
}
