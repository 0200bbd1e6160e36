//! The byte stream a transfer sends, read ahead in large chunks so the send loop
//! only copies from memory. File reads run on the blocking pool, one per chunk
//! (hundreds of KiB), not one per packet.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};

use rackboot_wire::tftp::NetasciiEncoder;

/// Where the bytes come from.
pub enum Source {
    /// Generated content: already in memory.
    Memory(Vec<u8>),
    File(std::fs::File),
}

type BoxRead = Box<dyn Read + Send>;

/// Smallest read-ahead buffer for large files.
const READ_CHUNK: usize = 256 * 1024;

/// A forward-only window onto the stream: bytes `[start, start + len)` are in `buf`.
pub struct Stream {
    reader: Option<BoxRead>,
    /// Reading is cheap (memory): do it inline instead of on the blocking pool.
    inline: bool,
    /// A plain file read as is: its descriptor, for inline reads of what the page
    /// cache already holds (see [`fill_cached`]).
    cached_fd: Option<RawFd>,
    buf: Vec<u8>,
    start: u64,
    len: usize,
    eof: bool,
}

impl Stream {
    /// `window_bytes` is the most `ensure` is asked for at once (blksize * windowsize).
    /// The buffer holds several windows (so files are read in large chunks), but
    /// small files only get what they need.
    pub fn new(
        source: Source,
        netascii: bool,
        window_bytes: usize,
        size_hint: Option<u64>,
    ) -> Stream {
        let mut cached_fd = None;
        let (reader, inline): (BoxRead, bool) = match source {
            Source::Memory(bytes) => (Box::new(io::Cursor::new(bytes)), true),
            Source::File(file) => {
                if !netascii {
                    cached_fd = Some(file.as_raw_fd());
                }
                (Box::new(file), false)
            }
        };
        let reader: BoxRead = if netascii {
            Box::new(NetasciiReader::new(reader))
        } else {
            reader
        };
        let mut capacity = (2 * window_bytes).max(READ_CHUNK);
        if let Some(size) = size_hint {
            // Netascii can double the size; +1 so the end is seen in the same read.
            let factor = if netascii { 2 } else { 1 };
            let needed = size.saturating_mul(factor).saturating_add(1);
            capacity = capacity.min(needed.max(window_bytes as u64) as usize);
        }
        Stream {
            reader: Some(reader),
            inline,
            cached_fd,
            buf: vec![0; capacity.max(1)],
            start: 0,
            len: 0,
            eof: false,
        }
    }

    /// Makes stream bytes `[from, to)` available (or as many as exist before the end).
    /// `from` never goes backwards; `to - from` must fit the capacity.
    pub async fn ensure(&mut self, from: u64, to: u64) -> io::Result<()> {
        debug_assert!(from >= self.start);
        let end = self.start + self.len as u64;
        if from >= self.start && (to <= end || self.eof) {
            return Ok(());
        }
        // Keep what is still needed, drop the rest, then fill the buffer up.
        let keep_from = (from.min(end) - self.start) as usize;
        self.buf.copy_within(keep_from..self.len, 0);
        self.len -= keep_from;
        self.start += keep_from as u64;
        let Some(mut reader) = self.reader.take() else {
            return Err(io::Error::other(
                "stream reader lost after an earlier failure",
            ));
        };
        let mut buf = std::mem::take(&mut self.buf);
        let mut len = self.len;
        if let Some(fd) = self.cached_fd {
            // The reader (which owns `fd`) is in hand, so the descriptor is open.
            match fill_cached(fd, &mut buf, len) {
                Cached::Filled { len, eof } => {
                    self.reader = Some(reader);
                    self.buf = buf;
                    self.len = len;
                    self.eof = eof;
                    return Ok(());
                }
                Cached::Partial(n) => len = n,
                Cached::Unsupported(n) => {
                    len = n;
                    self.cached_fd = None;
                }
            }
        }
        let (reader, buf, result) = if self.inline {
            let r = fill(&mut reader, &mut buf, len);
            (reader, buf, r)
        } else {
            tokio::task::spawn_blocking(move || {
                let r = fill(&mut reader, &mut buf, len);
                (reader, buf, r)
            })
            .await
            .map_err(io::Error::other)?
        };
        self.reader = Some(reader);
        self.buf = buf;
        let (len, eof) = result?;
        self.len = len;
        self.eof = eof;
        Ok(())
    }

    /// Bytes `[from, to)` clipped to what exists; call `ensure` first.
    pub fn slice(&self, from: u64, to: u64) -> &[u8] {
        let end = self.start + self.len as u64;
        let a = from.clamp(self.start, end);
        let b = to.clamp(a, end);
        &self.buf[(a - self.start) as usize..(b - self.start) as usize]
    }
}

enum Cached {
    /// `buf` is full, or the file ended.
    Filled { len: usize, eof: bool },
    /// The page cache had only this much; the rest needs a blocking read.
    Partial(usize),
    /// The file system cannot say (no RWF_NOWAIT): never try again.
    Unsupported(usize),
}

/// Fills `buf[len..]` from `fd`'s current position with what the page cache
/// holds, without blocking (preadv2 with RWF_NOWAIT). A transfer's thread then
/// reads a cached file itself instead of handing each chunk to the blocking pool,
/// a round trip through another thread that cost more than the copy (and, across
/// CPUs on a virtual machine, a wake-up of a halted vCPU each way).
fn fill_cached(fd: RawFd, buf: &mut [u8], mut len: usize) -> Cached {
    use nix::libc;
    while len < buf.len() {
        let rest = &mut buf[len..];
        let iov = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        // SAFETY: one iovec over memory we own; offset -1 reads at (and advances)
        // the file position, like read(2).
        let n = unsafe { libc::preadv2(fd, &iov, 1, -1, libc::RWF_NOWAIT) };
        match n {
            0 => return Cached::Filled { len, eof: true },
            n if n > 0 => len += n as usize,
            _ => {
                let err = io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(libc::EAGAIN) => Cached::Partial(len),
                    Some(libc::EINTR) => continue,
                    Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => {
                        Cached::Unsupported(len)
                    }
                    // Real read errors surface from the blocking read that follows.
                    _ => Cached::Partial(len),
                };
            }
        }
    }
    Cached::Filled { len, eof: false }
}

/// Reads until `buf` is full or the reader ends. Returns (filled length, eof).
fn fill(reader: &mut BoxRead, buf: &mut [u8], mut len: usize) -> io::Result<(usize, bool)> {
    while len < buf.len() {
        match reader.read(&mut buf[len..]) {
            Ok(0) => return Ok((len, true)),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((len, false))
}

/// Adapts a reader to netascii on the fly.
pub struct NetasciiReader<R> {
    inner: R,
    raw: Vec<u8>,
    pos: usize,
    len: usize,
    inner_eof: bool,
    encoder: NetasciiEncoder,
}

impl<R: Read> NetasciiReader<R> {
    pub fn new(inner: R) -> Self {
        NetasciiReader {
            inner,
            raw: vec![0; 64 * 1024],
            pos: 0,
            len: 0,
            inner_eof: false,
            encoder: NetasciiEncoder::new(),
        }
    }
}

impl<R: Read> Read for NetasciiReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos == self.len && !self.inner_eof {
                self.len = self.inner.read(&mut self.raw)?;
                self.pos = 0;
                self.inner_eof = self.len == 0;
            }
            let (read, written) = self.encoder.encode(&self.raw[self.pos..self.len], out);
            self.pos += read;
            if written > 0 || (self.inner_eof && !self.encoder.has_pending()) {
                return Ok(written);
            }
        }
    }
}

/// Size of the whole stream in netascii, read from the start of a fresh source.
pub fn netascii_size(source: &mut Source) -> io::Result<u64> {
    match source {
        Source::Memory(bytes) => Ok(rackboot_wire::tftp::netascii_encoded_len(bytes)),
        Source::File(file) => {
            use std::io::{Seek, SeekFrom};
            let mut total = 0;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += rackboot_wire::tftp::netascii_encoded_len(&buf[..n]);
            }
            file.seek(SeekFrom::Start(0))?;
            Ok(total)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stream_windows_over_file_and_memory() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), &data).unwrap();
        for source in [
            Source::Memory(data.clone()),
            Source::File(std::fs::File::open(tmp.path()).unwrap()),
        ] {
            let mut s = Stream::new(source, false, 1500, Some(data.len() as u64));
            let mut got = Vec::new();
            let mut at = 0u64;
            loop {
                s.ensure(at, at + 1500).await.unwrap();
                let chunk = s.slice(at, at + 1500).to_vec();
                got.extend_from_slice(&chunk);
                at += chunk.len() as u64;
                if chunk.len() < 1500 {
                    break;
                }
            }
            assert_eq!(got, data);
        }
    }

    #[tokio::test]
    async fn netascii_stream_matches_encoder() {
        let data = b"a\nb\r\nc\r".repeat(1000);
        let expected_len = rackboot_wire::tftp::netascii_encoded_len(&data);
        let mut src = Source::Memory(data.clone());
        assert_eq!(netascii_size(&mut src).unwrap(), expected_len);
        let mut s = Stream::new(src, true, 512, Some(data.len() as u64));
        let mut got = Vec::new();
        let mut at = 0u64;
        loop {
            s.ensure(at, at + 512).await.unwrap();
            let chunk = s.slice(at, at + 512).to_vec();
            got.extend_from_slice(&chunk);
            at += chunk.len() as u64;
            if chunk.len() < 512 {
                break;
            }
        }
        assert_eq!(got.len() as u64, expected_len);
        assert_eq!(rackboot_wire::tftp::netascii_decode(&got), data);
    }
}
