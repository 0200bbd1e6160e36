//! A blocking TFTP read client for benchmarks.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rackboot_wire::tftp::{Mode, Packet, Request};

/// What to fetch and how.
#[derive(Debug, Clone)]
pub struct GetOptions {
    pub server: SocketAddr,
    pub file: String,
    /// Ask for this block size (RFC 2348); `None` keeps 512 and sends no option.
    pub blksize: Option<u16>,
    /// Ask for this window size (RFC 7440); `None` is lock-step.
    pub windowsize: Option<u16>,
    /// How long to wait for the server before acknowledging again.
    pub timeout: Duration,
    /// Retransmissions of one request or ACK before giving up.
    pub retries: u32,
}

/// A finished download.
#[derive(Debug)]
pub struct Fetched {
    pub data: Vec<u8>,
    /// From the request sent to the last ACK sent.
    pub elapsed: Duration,
    /// The block size and window size the transfer ran with.
    pub blksize: u16,
    pub windowsize: u16,
    /// ACKs sent again because the server went quiet or a block was missing.
    pub retransmits: u32,
}

/// Most datagrams one `recvmmsg` call takes (a whole window of 64 fits).
const BATCH: usize = 64;

/// Downloads `opts.file`. Blocks; returns the file's bytes.
pub fn tftp_get(opts: &GetOptions) -> anyhow::Result<Fetched> {
    let bind: SocketAddr = if opts.server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(bind).context("binding the client socket")?;
    socket.set_read_timeout(Some(opts.timeout))?;

    let mut options = Vec::new();
    if let Some(b) = opts.blksize {
        options.push(("blksize".to_string(), b.to_string()));
    }
    if let Some(w) = opts.windowsize {
        options.push(("windowsize".to_string(), w.to_string()));
    }
    let rrq = Packet::Rrq(Request {
        filename: opts.file.clone(),
        mode: Mode::Octet,
        options,
    })
    .encode();

    let started = Instant::now();
    let mut batch = Batch::new(usize::from(u16::MAX) + 4);
    let mut download = Download {
        data: Vec::new(),
        expected: 1,
        unacked_in_window: 0,
        blksize: 512,
        windowsize: 1,
    };
    let mut retransmits = 0;
    let finish = |download: Download, retransmits| Fetched {
        elapsed: started.elapsed(),
        blksize: download.blksize,
        windowsize: download.windowsize,
        data: download.data,
        retransmits,
    };

    // The first answer comes from the transfer's own port (its TID).
    let mut tries = 0;
    let (first, peer) = loop {
        socket
            .send_to(&rrq, opts.server)
            .context("sending the request")?;
        let mut buf = vec![0u8; usize::from(u16::MAX) + 4];
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                buf.truncate(n);
                break (buf, peer);
            }
            Err(e) if is_timeout(&e) && tries < opts.retries => tries += 1,
            Err(e) => return Err(e).context("waiting for the server's first answer"),
        }
    };
    socket
        .connect(peer)
        .context("connecting to the transfer port")?;

    match Packet::parse(&first).context("server's first answer")? {
        Packet::Oack { options } => {
            for (name, value) in options {
                let value: u16 = value
                    .parse()
                    .with_context(|| format!("OACK option {name}={value}"))?;
                match name.to_ascii_lowercase().as_str() {
                    "blksize" => download.blksize = value,
                    "windowsize" => download.windowsize = value.max(1),
                    _ => {}
                }
            }
            socket.send(&ack(0))?;
        }
        // The server refused every option: lock-step with 512-byte blocks.
        Packet::Data { block: 1, data } => {
            let last = download.take(&socket, 1, data)?;
            if last {
                return Ok(finish(download, retransmits));
            }
        }
        Packet::Error { code, message } => {
            bail!("server error {}: {message}", code.as_u16())
        }
        other => bail!("unexpected first answer {other:?}"),
    }

    let mut quiet = 0;
    loop {
        let received = match batch.recv(&socket) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => {
                quiet += 1;
                if quiet > opts.retries {
                    bail!("server silent after {} retransmissions", opts.retries);
                }
                // Acknowledge what arrived in order; the server resends the rest.
                retransmits += 1;
                socket.send(&ack(download.expected.wrapping_sub(1)))?;
                download.unacked_in_window = 0;
                continue;
            }
            Err(e) => return Err(e).context("receiving DATA"),
        };
        quiet = 0;
        for i in 0..received {
            match Packet::parse(batch.packet(i)) {
                Ok(Packet::Data { block, data }) if block == download.expected => {
                    let last = download.take(&socket, block, data)?;
                    if last {
                        return Ok(finish(download, retransmits));
                    }
                }
                // A duplicate or a block after a gap: the timeout above asks again.
                Ok(Packet::Data { .. }) => {}
                Ok(Packet::Error { code, message }) => {
                    bail!(
                        "server error {} after {} bytes: {message}",
                        code.as_u16(),
                        download.data.len()
                    )
                }
                _ => {}
            }
        }
    }
}

/// What has arrived in order, and where the window stands.
struct Download {
    data: Vec<u8>,
    /// Next block wanted (wire number; wraps after 65535 like the server's).
    expected: u16,
    /// Blocks taken since the last ACK.
    unacked_in_window: u16,
    blksize: u16,
    windowsize: u16,
}

impl Download {
    /// Takes the expected block, acknowledging it when it ends the window or the
    /// file. True when it was the last block.
    fn take(&mut self, socket: &UdpSocket, block: u16, data: &[u8]) -> io::Result<bool> {
        self.data.extend_from_slice(data);
        self.expected = block.wrapping_add(1);
        self.unacked_in_window += 1;
        let last = data.len() < usize::from(self.blksize);
        if last || self.unacked_in_window >= self.windowsize {
            socket.send(&ack(block))?;
            self.unacked_in_window = 0;
        }
        Ok(last)
    }
}

fn ack(block: u16) -> Vec<u8> {
    Packet::Ack { block }.encode()
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Buffers for one `recvmmsg` call.
struct Batch {
    buffers: Vec<Vec<u8>>,
    lengths: [usize; BATCH],
}

impl Batch {
    fn new(size: usize) -> Batch {
        Batch {
            buffers: (0..BATCH).map(|_| vec![0u8; size]).collect(),
            lengths: [0; BATCH],
        }
    }

    /// Waits (up to the socket's read timeout) for at least one datagram, then
    /// takes every one already queued, up to `BATCH`.
    fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use nix::libc;
        let mut iovecs: Vec<libc::iovec> = self
            .buffers
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iov| {
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: headers point at iovecs that point at our buffers, all alive for
        // the call; the count matches the array.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                headers.len() as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (len, h) in self.lengths.iter_mut().zip(&headers).take(n) {
            *len = h.msg_len as usize;
        }
        Ok(n)
    }

    fn packet(&self, i: usize) -> &[u8] {
        &self.buffers[i][..self.lengths[i]]
    }
}
