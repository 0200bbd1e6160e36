//! The fast path of boot HTTP's file trees (/assets, /os, /images, /ramdisk,
//! /boot/loader): a plain `GET` of a whole file, which is what firmware,
//! iPXE and installers send.
//!
//! `ServeDir` answered each such request with four or five trips through
//! tokio's blocking pool (metadata of the path, open, metadata of the file,
//! a read, a read at the end), each a thread wake-up each way: a 300-byte
//! file cost about 380 µs of server time. Here a request is one trip: the
//! file is looked at, opened (never a FIFO, socket or device: those are
//! refused), and, when small, read whole in the same blocking call. A large
//! file streams in [`CHUNK`]-byte reads, each one trip, the next read under
//! way while the previous chunk is being sent.
//!
//! Requests with `Range` or conditional headers, and `HEAD`, go to
//! `ServeDir` as before (see [`plain_get`]).

use std::fs::File;
use std::future::Future as _;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::task::JoinHandle;

/// Files up to this size are read whole in the call that opens them.
pub(crate) const SMALL: u64 = 256 * 1024;
/// Bytes per read of a larger file. Two are in memory per download at most
/// (the one being sent, the next one read ahead).
pub(crate) const CHUNK: usize = 128 * 1024;

/// What the fast path made of a request.
#[derive(Debug)]
pub(crate) enum Served {
    Response(Response),
    NotFound,
    /// A FIFO, socket or device: never opened for reading.
    NotRegular,
}

/// True when the fast path takes the request: `GET` without `Range` or
/// any conditional header.
pub(crate) fn plain_get(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::GET
        && ![
            header::RANGE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
        ]
        .iter()
        .any(|h| headers.contains_key(h))
}

/// `rel` under `root`, when every segment is a plain name (the router has
/// already percent-decoded it; an empty segment would make `rel` absolute).
pub(crate) fn path_under(root: &Path, rel: &str) -> Option<PathBuf> {
    let clean = !rel.is_empty()
        && !rel.contains('\0')
        && !rel.contains('\\')
        && rel
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    clean.then(|| root.join(rel))
}

/// An opened regular file and what it says about itself.
struct Opened {
    file: File,
    len: u64,
    modified: Option<SystemTime>,
    /// The whole file, when it is small.
    whole: Option<Bytes>,
}

enum Looked {
    Opened(Opened),
    NotFound,
    NotRegular,
}

/// Looks at `path`, opens it if it is a regular file, reads it if it is
/// small. Blocking.
fn look_and_open(path: &Path) -> io::Result<Looked> {
    // A look by path first keeps devices from being opened at all; the
    // check that counts is on the opened descriptor (no race).
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Ok(Looked::NotFound),
        Ok(m) if !m.is_file() => return Ok(Looked::NotRegular),
        Ok(_) => {}
        Err(e) if is_missing(&e) => return Ok(Looked::NotFound),
        Err(e) => return Err(e),
    }
    // O_NONBLOCK: should the path have become a FIFO since, open does not
    // wait for a writer (reads of a regular file are unaffected).
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if is_missing(&e) => return Ok(Looked::NotFound),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Ok(Looked::NotFound);
    }
    if !meta.is_file() {
        return Ok(Looked::NotRegular);
    }
    let len = meta.len();
    let whole = if len <= SMALL {
        Some(Bytes::from(read_at_most(&file, 0, len as usize)?))
    } else {
        None
    };
    Ok(Looked::Opened(Opened {
        file,
        len: whole.as_ref().map_or(len, |w| w.len() as u64),
        modified: meta.modified().ok(),
        whole,
    }))
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidInput
    ) || e.raw_os_error() == Some(libc::ENAMETOOLONG)
}

/// Up to `len` bytes from `offset`; fewer only at the end of the file (a
/// file that shrank while being served).
fn read_at_most(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Serves `rel` under `root` for a plain `GET` (see [`plain_get`]): the
/// whole file with the headers `ServeDir` sends (type, length, ranges
/// accepted, last modified, ETag).
pub(crate) async fn serve(root: &Path, rel: &str) -> Served {
    let Some(path) = path_under(root, rel) else {
        return Served::NotFound;
    };
    let looked = match tokio::task::spawn_blocking({
        let path = path.clone();
        move || look_and_open(&path)
    })
    .await
    {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return Served::Response(io_error(&path, &e)),
        Err(e) => return Served::Response(io_error(&path, &io::Error::other(e))),
    };
    let opened = match looked {
        Looked::Opened(o) => o,
        Looked::NotFound => return Served::NotFound,
        Looked::NotRegular => return Served::NotRegular,
    };
    let mut builder = axum::http::Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type(&path))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, opened.len);
    if let Some(modified) = opened.modified {
        builder = builder.header(header::LAST_MODIFIED, httpdate::fmt_http_date(modified));
        if let Some(etag) = etag(opened.len, modified) {
            builder = builder.header(header::ETAG, etag);
        }
    }
    let body = match opened.whole {
        Some(bytes) => Body::from(bytes),
        None => Body::new(FileBody::new(opened.file, opened.len)),
    };
    Served::Response(
        builder
            .body(body)
            .unwrap_or_else(|e| io_error(&path, &io::Error::other(e))),
    )
}

fn io_error(path: &Path, e: &io::Error) -> Response {
    tracing::warn!(path = %path.display(), error = %e, "cannot serve file");
    let mut resp = Response::new(Body::from(format!("cannot read {}\n", path.display())));
    *resp.status_mut() = if e.kind() == io::ErrorKind::PermissionDenied {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    resp
}

/// The type `ServeDir` would send: by extension, else octet-stream.
pub(crate) fn content_type(path: &Path) -> HeaderValue {
    HeaderValue::from_static(
        mime_guess::from_path(path)
            .first_raw()
            .unwrap_or("application/octet-stream"),
    )
}

/// The ETag `ServeDir` sends (modification time and length), so a client
/// sees the same tag whichever path answered.
pub(crate) fn etag(len: u64, modified: SystemTime) -> Option<HeaderValue> {
    let d = modified.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    HeaderValue::from_str(&format!(
        "\"{:x}.{:08x}-{:x}\"",
        d.as_secs(),
        d.subsec_nanos(),
        len
    ))
    .ok()
}

/// A large file's body: [`CHUNK`]-byte reads through the blocking pool, the
/// next one started as soon as one is handed to hyper.
struct FileBody {
    file: std::sync::Arc<File>,
    len: u64,
    /// Bytes handed to hyper; the read under way starts here.
    sent: u64,
    pending: Option<JoinHandle<io::Result<Vec<u8>>>>,
}

impl FileBody {
    fn new(file: File, len: u64) -> FileBody {
        let mut body = FileBody {
            file: std::sync::Arc::new(file),
            len,
            sent: 0,
            pending: None,
        };
        body.start_next();
        body
    }

    fn start_next(&mut self) {
        if self.sent >= self.len {
            return;
        }
        let want = (self.len - self.sent).min(CHUNK as u64) as usize;
        let (file, offset) = (self.file.clone(), self.sent);
        self.pending = Some(tokio::task::spawn_blocking(move || {
            read_at_most(&file, offset, want)
        }));
    }
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let Some(pending) = self.pending.as_mut() else {
            return Poll::Ready(None);
        };
        let read = match Pin::new(pending).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        self.pending = None;
        let chunk = match read {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
            Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
        };
        if chunk.is_empty() {
            // The file shrank while being served: the promised length cannot be met.
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ended after {} of {} bytes", self.sent, self.len),
            ))));
        }
        self.sent += chunk.len() as u64;
        self.start_next();
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn which_requests_take_the_fast_path() {
        let none = HeaderMap::new();
        assert!(plain_get(&Method::GET, &none));
        assert!(!plain_get(&Method::HEAD, &none));
        assert!(!plain_get(&Method::POST, &none));
        for h in [
            header::RANGE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(h.clone(), HeaderValue::from_static("x"));
            assert!(!plain_get(&Method::GET, &headers), "{h}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(plain_get(&Method::GET, &headers));
    }

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/srv/assets");
        let table = [
            ("debian/linux", Some("/srv/assets/debian/linux")),
            ("a", Some("/srv/assets/a")),
            ("", None),
            ("/etc/passwd", None),
            ("debian//linux", None),
            ("debian/", None),
            ("../etc/passwd", None),
            ("debian/../../x", None),
            ("./debian", None),
            ("a\\..\\b", None),
            ("a\0b", None),
            ("..hidden/ok", Some("/srv/assets/..hidden/ok")),
        ];
        for (rel, want) in table {
            assert_eq!(
                path_under(root, rel).as_deref(),
                want.map(Path::new),
                "{rel:?}"
            );
        }
    }

    #[test]
    fn types_and_etags_as_serve_dir_sends_them() {
        assert_eq!(
            content_type(Path::new("a/linux")),
            "application/octet-stream"
        );
        assert_eq!(content_type(Path::new("a/b.txt")), "text/plain");
        assert_eq!(content_type(Path::new("a/b.xml")), "text/xml");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(0x1234, 5);
        assert_eq!(etag(255, t).unwrap(), "\"1234.00000005-ff\"");
    }

    async fn body_of(resp: Response) -> Vec<u8> {
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_large_missing_and_special_files() {
        let tmp = tempfile::tempdir().unwrap();
        let small: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        // Not a multiple of the chunk, so the last read is short.
        let large: Vec<u8> = (0..(3 * CHUNK + 1234) as u32)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let exact = vec![9u8; SMALL as usize + CHUNK];
        std::fs::write(tmp.path().join("small.bin"), &small).unwrap();
        std::fs::write(tmp.path().join("large.bin"), &large).unwrap();
        std::fs::write(tmp.path().join("exact.bin"), &exact).unwrap();
        std::fs::write(tmp.path().join("empty"), b"").unwrap();
        std::fs::create_dir(tmp.path().join("dir")).unwrap();
        let fifo = tmp.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        std::os::unix::fs::symlink("/dev/zero", tmp.path().join("zero")).unwrap();

        for (name, want) in [
            ("small.bin", &small),
            ("large.bin", &large),
            ("exact.bin", &exact),
            ("empty", &Vec::new()),
        ] {
            let Served::Response(resp) = serve(tmp.path(), name).await else {
                panic!("{name}: not served");
            };
            assert_eq!(resp.status(), StatusCode::OK, "{name}");
            let h = resp.headers().clone();
            assert_eq!(h[header::CONTENT_LENGTH], want.len().to_string(), "{name}");
            assert_eq!(h[header::ACCEPT_RANGES], "bytes");
            assert!(h.contains_key(header::LAST_MODIFIED));
            assert!(h.contains_key(header::ETAG));
            assert_eq!(body_of(resp).await, *want, "{name}");
        }
        for name in ["missing", "dir", "dir/x", "small.bin/x", "a//b"] {
            assert!(
                matches!(serve(tmp.path(), name).await, Served::NotFound),
                "{name}"
            );
        }
        // Refused at once, not opened (a FIFO's open would wait for a writer).
        for name in ["fifo", "zero"] {
            let served =
                tokio::time::timeout(std::time::Duration::from_secs(5), serve(tmp.path(), name))
                    .await
                    .unwrap();
            assert!(matches!(served, Served::NotRegular), "{name}");
        }
    }
}
