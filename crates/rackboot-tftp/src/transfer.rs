//! One read transfer: OACK handshake, then lock-step or windowed (RFC 7440) DATA
//! with retransmission on timeout. Duplicate ACKs never trigger a lock-step
//! resend (no Sorcerer's Apprentice); in windowed mode one duplicate ACK per
//! window position is taken as the client's retransmission request (RFC 7440).

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::time::Duration;

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;
use rackboot_wire::tftp::{DATA_HEADER_LEN, ErrorCode, Packet, data_header};
use tokio::net::UdpSocket;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::net;
use crate::stream::Stream;

/// Most segments the kernel accepts in one GSO send (UDP_MAX_SEGMENTS).
const MAX_GSO_SEGMENTS: usize = 64;
/// Keep one GSO send under the 64 KiB IP datagram limit.
const MAX_GSO_BYTES: usize = 65_000;

pub struct Params {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    pub max_timeout: Duration,
    pub retries: u32,
    /// Encoded OACK to send first, if any options were acknowledged.
    pub oack: Option<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The last block was acknowledged.
    Completed { bytes: u64 },
    /// The client answered the OACK with an ERROR, or closed its port: a tsize
    /// probe (PXE ROMs, UEFI) or refused options. Not a failure.
    LeftAfterOack { why: String },
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("no acknowledgement after {retries} retransmissions")]
    Timeout { retries: u32, bytes: u64 },
    #[error("client sent error {code}: {message}")]
    ClientError {
        code: u16,
        message: String,
        bytes: u64,
    },
    #[error("client unreachable: {source}")]
    Unreachable { source: io::Error, bytes: u64 },
    #[error("I/O error: {source}")]
    Io { source: io::Error, bytes: u64 },
    #[error("server shutting down")]
    Shutdown { bytes: u64 },
}

impl TransferError {
    pub fn reason(&self) -> &'static str {
        match self {
            TransferError::Timeout { .. } => "timeout",
            TransferError::ClientError { .. } => "client_error",
            TransferError::Unreachable { .. } => "unreachable",
            TransferError::Io { .. } => "io",
            TransferError::Shutdown { .. } => "shutdown",
        }
    }

    pub fn bytes(&self) -> u64 {
        match self {
            TransferError::Timeout { bytes, .. }
            | TransferError::ClientError { bytes, .. }
            | TransferError::Unreachable { bytes, .. }
            | TransferError::Io { bytes, .. }
            | TransferError::Shutdown { bytes } => *bytes,
        }
    }

    /// The ERROR we owe the client, if it is still listening.
    pub fn error_for_client(&self) -> Option<(ErrorCode, &'static str)> {
        match self {
            TransferError::Timeout { .. } => Some((ErrorCode::NotDefined, "timed out")),
            TransferError::Io { .. } => Some((ErrorCode::NotDefined, "read error")),
            TransferError::Shutdown { .. } => Some((ErrorCode::NotDefined, "server shutting down")),
            TransferError::ClientError { .. } | TransferError::Unreachable { .. } => None,
        }
    }
}

fn io_error(source: io::Error, bytes: u64) -> TransferError {
    if is_unreachable(&source) {
        TransferError::Unreachable { source, bytes }
    } else {
        TransferError::Io { source, bytes }
    }
}

enum Received {
    Ack(u16),
    Error(u16, String),
    TimedOut,
    Other,
}

thread_local! {
    /// Transfers running on this thread (each transfer thread has its own runtime).
    static TRANSFERS_HERE: Cell<usize> = const { Cell::new(0) };
}

/// How many received packets between two placement checks.
const PLACEMENT_EVERY: u32 = 16;

/// Keeps a transfer's thread on the CPU that receives the client's packets
/// (SO_INCOMING_CPU) while the transfer is alone on that thread.
///
/// TFTP is a ping-pong: each DATA (or window) waits for the client's ACK, so a
/// transfer is bound by wake-up latency, not CPU. A wake-up across CPUs costs an
/// inter-processor interrupt, and on a virtual machine waking a halted vCPU costs
/// far more: measured here (2 vCPUs, veth), lock-step ran at 6-8 MiB/s with client
/// and server on different CPUs and 36-53 MiB/s on the same one. Which one it gets
/// is otherwise up to the scheduler. The CPU that receives the client's packets is
/// where its network processing (and, on a veth, the client itself) runs, so
/// replying from there keeps the exchange local. The thread's own CPU mask is
/// restored when the transfer ends or another transfer joins the thread.
struct Placement {
    /// The thread's mask before pinning (`None` until the first pin).
    original: Option<CpuSet>,
    pinned_to: Option<usize>,
    received: u32,
}

impl Placement {
    fn new() -> Placement {
        TRANSFERS_HERE.with(|n| n.set(n.get() + 1));
        Placement {
            original: None,
            pinned_to: None,
            received: 0,
        }
    }

    /// Call after each packet received from the client.
    fn update(&mut self, socket: &UdpSocket) {
        self.received = self.received.wrapping_add(1);
        if self.received % PLACEMENT_EVERY != 1 {
            return;
        }
        if TRANSFERS_HERE.with(|n| n.get()) != 1 {
            self.restore();
            return;
        }
        let Some(cpu) = incoming_cpu(socket) else {
            return;
        };
        if self.pinned_to == Some(cpu) {
            return;
        }
        let this_thread = Pid::from_raw(0);
        if self.original.is_none() {
            self.original = sched_getaffinity(this_thread).ok();
        }
        // Only CPUs the process may use anyway (taskset, cgroups).
        let Some(original) = &self.original else {
            return;
        };
        if !original.is_set(cpu).unwrap_or(false) {
            return;
        }
        let mut one = CpuSet::new();
        if one.set(cpu).is_ok() && sched_setaffinity(this_thread, &one).is_ok() {
            self.pinned_to = Some(cpu);
        }
    }

    fn restore(&mut self) {
        if self.pinned_to.take().is_some()
            && let Some(original) = &self.original
        {
            let _ = sched_setaffinity(Pid::from_raw(0), original);
        }
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.restore();
        TRANSFERS_HERE.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// The CPU that processed the last packet received on `socket`, if the kernel knows.
fn incoming_cpu(socket: &UdpSocket) -> Option<usize> {
    let mut cpu: nix::libc::c_int = -1;
    let mut len = std::mem::size_of::<nix::libc::c_int>() as nix::libc::socklen_t;
    // SAFETY: a valid socket fd and an int-sized out buffer with its length.
    let rc = unsafe {
        nix::libc::getsockopt(
            socket.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_INCOMING_CPU,
            (&raw mut cpu).cast(),
            &mut len,
        )
    };
    (rc == 0 && cpu >= 0).then_some(cpu as usize)
}

/// Waits for the client's next packet. The timer and the cancellation future are
/// allocated once per transfer and reused for every packet (lock-step transfers
/// wait tens of thousands of times).
struct Waiter {
    sleep: Pin<Box<Sleep>>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    placement: Placement,
}

impl Waiter {
    fn new(shutdown: &CancellationToken) -> Waiter {
        Waiter {
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            cancelled: Box::pin(shutdown.clone().cancelled_owned()),
            placement: Placement::new(),
        }
    }

    fn set_deadline(&mut self, deadline: Instant) {
        self.sleep.as_mut().reset(deadline);
    }

    async fn receive(
        &mut self,
        socket: &UdpSocket,
        buf: &mut [u8],
        bytes: u64,
    ) -> Result<Received, TransferError> {
        tokio::select! {
            biased;
            _ = &mut self.cancelled => Err(TransferError::Shutdown { bytes }),
            r = socket.recv(buf) => match r {
                Ok(n) => {
                    self.placement.update(socket);
                    Ok(classify(&buf[..n]))
                }
                Err(e) if is_unreachable(&e) => {
                    // The kernel reports a pending ICMP error before queued datagrams: a
                    // client that sent its last ACK and exited (busybox does) must still
                    // have that ACK read.
                    match socket.try_recv(buf) {
                        Ok(n) => Ok(classify(&buf[..n])),
                        Err(_) => Err(io_error(e, bytes)),
                    }
                }
                Err(e) => Err(io_error(e, bytes)),
            },
            _ = &mut self.sleep => Ok(Received::TimedOut),
        }
    }
}

fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ECONNREFUSED | nix::libc::EHOSTUNREACH | nix::libc::ENETUNREACH)
    )
}

fn classify(packet: &[u8]) -> Received {
    match Packet::parse(packet) {
        Ok(Packet::Ack { block }) => Received::Ack(block),
        Ok(Packet::Error { code, message }) => Received::Error(code.as_u16(), message),
        Ok(_) => {
            metrics::counter!("rackboot_tftp_dropped_total", "reason" => "unexpected_opcode")
                .increment(1);
            Received::Other
        }
        Err(e) => {
            metrics::counter!("rackboot_tftp_dropped_total", "reason" => e.reason()).increment(1);
            Received::Other
        }
    }
}

/// Runs the transfer on `socket` (connected to the client) until the last block is
/// acknowledged, the client gives up, or retries run out.
pub async fn send(
    socket: &UdpSocket,
    stream: &mut Stream,
    p: &Params,
    shutdown: &CancellationToken,
) -> Result<Outcome, TransferError> {
    let mut rbuf = [0u8; 1024];
    let mut waiter = Waiter::new(shutdown);
    let mut timeout = p.timeout;
    let backoff = |t: Duration| (t * 2).min(p.max_timeout.max(p.timeout));

    if let Some(oack) = &p.oack {
        let mut retries = 0;
        'oack: loop {
            if let Err(e) = socket.send(oack).await
                && !is_unreachable(&e)
            {
                return Err(io_error(e, 0));
            }
            waiter.set_deadline(Instant::now() + timeout);
            loop {
                let received = match waiter.receive(socket, &mut rbuf, 0).await {
                    Ok(r) => r,
                    Err(TransferError::Unreachable { .. }) => {
                        return Ok(Outcome::LeftAfterOack {
                            why: "client closed its port".into(),
                        });
                    }
                    Err(e) => return Err(e),
                };
                match received {
                    Received::Ack(0) => break 'oack,
                    Received::Error(code, message) => {
                        return Ok(Outcome::LeftAfterOack {
                            why: format!("client error {code}: {message}"),
                        });
                    }
                    Received::TimedOut => {
                        retries += 1;
                        if retries > p.retries {
                            return Err(TransferError::Timeout {
                                retries: p.retries,
                                bytes: 0,
                            });
                        }
                        metrics::counter!("rackboot_tftp_retransmits_total").increment(1);
                        timeout = backoff(timeout);
                        continue 'oack;
                    }
                    Received::Ack(_) | Received::Other => {}
                }
            }
        }
        timeout = p.timeout;
    }

    let bs = p.blksize as u64;
    let window = p.windowsize.max(1) as u64;
    let segment = DATA_HEADER_LEN + p.blksize as usize;
    let segments_per_send = MAX_GSO_SEGMENTS.min(MAX_GSO_BYTES / segment);
    let mut gso = window > 1 && segments_per_send > 1;
    let mut packets: Vec<u8> = Vec::with_capacity(window as usize * segment);
    // First block not yet acknowledged; blocks count from 1 and the wire number is
    // the low 16 bits (so block 65536 goes out as 0: roll over to zero).
    let mut base: u64 = 1;
    let mut last: Option<u64> = None;
    let mut retries = 0;
    let mut fast_retransmit_used = false;
    let acked_bytes = |base: u64| (base - 1) * bs;

    loop {
        let from = (base - 1) * bs;
        stream
            .ensure(from, from + window * bs)
            .await
            .map_err(|e| io_error(e, acked_bytes(base)))?;
        packets.clear();
        let mut count: u64 = 0;
        while count < window {
            let block = base + count;
            let off = (block - 1) * bs;
            let data = stream.slice(off, off + bs);
            packets.extend_from_slice(&data_header(block as u16));
            packets.extend_from_slice(data);
            count += 1;
            if (data.len() as u64) < bs {
                last = Some(block);
                break;
            }
        }
        let sent_bytes = packets.len() - count as usize * DATA_HEADER_LEN;
        let mut sent_by_gso = false;
        if gso && count > 1 {
            sent_by_gso = true;
            for chunk in packets.chunks(segments_per_send * segment) {
                if let Err(e) = net::send_gso(socket, chunk, segment as u16).await {
                    if is_unreachable(&e) {
                        // An earlier packet bounced; the receive below sorts it out.
                        break;
                    }
                    // EMSGSIZE (segment larger than the MTU), EIO (no checksum
                    // offload) and the like: send packet by packet from now on.
                    tracing::debug!(error = %e, "UDP GSO unavailable, sending packets one by one");
                    gso = false;
                    sent_by_gso = false;
                    break;
                }
            }
        }
        if !sent_by_gso {
            for pkt in packets.chunks(segment) {
                match socket.send(pkt).await {
                    Ok(_) => {}
                    // An earlier packet bounced; the receive below sorts it out.
                    Err(e) if is_unreachable(&e) => break,
                    Err(e) => return Err(io_error(e, acked_bytes(base))),
                }
            }
        }
        metrics::counter!("rackboot_tftp_bytes_sent_total").increment(sent_bytes as u64);

        waiter.set_deadline(Instant::now() + timeout);
        loop {
            match waiter.receive(socket, &mut rbuf, acked_bytes(base)).await? {
                Received::Ack(n) => {
                    // Which block in [base - 1, window_end] has this wire number?
                    let offset = n.wrapping_sub((base - 1) as u16) as u64;
                    if offset > count {
                        continue; // stale ACK from an earlier window
                    }
                    let acked = base - 1 + offset;
                    if Some(acked) == last {
                        let total = match last {
                            Some(l) => {
                                (l - 1) * bs + stream.slice((l - 1) * bs, l * bs).len() as u64
                            }
                            None => 0,
                        };
                        return Ok(Outcome::Completed { bytes: total });
                    }
                    if acked >= base {
                        // Progress (the whole window, or up to a gap the client saw).
                        base = acked + 1;
                        retries = 0;
                        timeout = p.timeout;
                        fast_retransmit_used = false;
                        break;
                    }
                    // Duplicate ACK of the block before the window.
                    if window > 1 && !fast_retransmit_used {
                        fast_retransmit_used = true;
                        metrics::counter!("rackboot_tftp_retransmits_total").increment(1);
                        break;
                    }
                }
                Received::Error(code, message) => {
                    return Err(TransferError::ClientError {
                        code,
                        message,
                        bytes: acked_bytes(base),
                    });
                }
                Received::TimedOut => {
                    retries += 1;
                    if retries > p.retries {
                        return Err(TransferError::Timeout {
                            retries: p.retries,
                            bytes: acked_bytes(base),
                        });
                    }
                    metrics::counter!("rackboot_tftp_retransmits_total").increment(1);
                    timeout = backoff(timeout);
                    break;
                }
                Received::Other => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transfer's thread follows the CPU that receives its packets while it is
    /// alone there, and gets its own CPU mask back afterwards.
    #[test]
    fn placement_pins_to_incoming_cpu_and_restores() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let before = sched_getaffinity(Pid::from_raw(0)).unwrap();
            let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            server.connect(client.local_addr().unwrap()).await.unwrap();
            client
                .send_to(b"ack", server.local_addr().unwrap())
                .await
                .unwrap();
            let mut buf = [0u8; 16];
            server.recv(&mut buf).await.unwrap();
            let cpu = incoming_cpu(&server).expect("the kernel reports SO_INCOMING_CPU");
            {
                let mut placement = Placement::new();
                placement.update(&server);
                let pinned = sched_getaffinity(Pid::from_raw(0)).unwrap();
                if before.is_set(cpu).unwrap() {
                    assert_eq!(placement.pinned_to, Some(cpu));
                    assert!(pinned.is_set(cpu).unwrap());
                    let count = (0..CpuSet::count())
                        .filter(|&c| pinned.is_set(c).unwrap())
                        .count();
                    assert_eq!(count, 1, "pinned to exactly one CPU");
                }
                // A second transfer on this thread: the pin is given up.
                let other = Placement::new();
                placement.received = 0;
                placement.update(&server);
                assert_eq!(placement.pinned_to, None);
                assert_eq!(sched_getaffinity(Pid::from_raw(0)).unwrap(), before);
                drop(other);
            }
            assert_eq!(sched_getaffinity(Pid::from_raw(0)).unwrap(), before);
            assert_eq!(TRANSFERS_HERE.with(|n| n.get()), 0);
        });
    }
}
