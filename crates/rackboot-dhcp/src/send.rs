//! Sending replies: every reply a wake-up produced leaves in one `sendmmsg` call,
//! and per-type counters are registered once instead of looked up per packet.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use metrics::{Counter, counter};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One encoded reply and where it goes.
pub(crate) struct Reply {
    pub bytes: Vec<u8>,
    pub to: SocketAddr,
    /// Metric label: "offer", "ack", "nak", "proxy_offer", "proxy_ack".
    pub kind: &'static str,
}

/// Most datagrams handed to one `sendmmsg` call (the kernel's UIO_MAXIOV is 1024).
const MAX_PER_CALL: usize = 256;

/// `{name}{type=...}` counters by label, registered on first use. The metrics
/// macros hash the whole key and search the registry on every call, which was a
/// visible share of the per-packet CPU.
pub(crate) struct TypeCounters {
    name: &'static str,
    by_type: HashMap<&'static str, Counter>,
}

impl TypeCounters {
    pub(crate) fn new(name: &'static str) -> TypeCounters {
        TypeCounters {
            name,
            by_type: HashMap::new(),
        }
    }

    pub(crate) fn increment(&mut self, kind: &'static str, n: u64) {
        let name = self.name;
        self.by_type
            .entry(kind)
            .or_insert_with(|| counter!(name, "type" => kind))
            .increment(n);
    }
}

/// Sends `replies` in order, as many per system call as the socket takes. A reply
/// the kernel refuses (say, no route to a relay) is counted, logged and skipped;
/// the rest still go.
pub(crate) async fn send_all(sock: &UdpSocket, replies: &[Reply], sent: &mut TypeCounters) {
    send_in_calls_of(sock, replies, sent, MAX_PER_CALL).await;
}

async fn send_in_calls_of(
    sock: &UdpSocket,
    replies: &[Reply],
    sent: &mut TypeCounters,
    per_call: usize,
) {
    let mut rest = replies;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(per_call)];
        match sock
            .async_io(Interest::WRITABLE, || send_batch(sock, chunk))
            .await
        {
            Ok(n) => {
                for r in &chunk[..n] {
                    sent.increment(r.kind, 1);
                }
                rest = &rest[n..];
            }
            Err(e) => {
                // sendmmsg reports an error only for the first datagram of a call.
                counter!("rackboot_dhcp_send_errors_total").increment(1);
                tracing::warn!(to = %chunk[0].to, error = %e, "DHCP send failed");
                rest = &rest[1..];
            }
        }
    }
}

/// One `sendmmsg` call: how many datagrams of `chunk` (from the first) were sent.
fn send_batch(sock: &UdpSocket, chunk: &[Reply]) -> std::io::Result<usize> {
    let iovs: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|r| [IoSlice::new(&r.bytes)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = chunk
        .iter()
        .map(|r| Some(SockaddrStorage::from(r.to)))
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), None);
    let results = sendmmsg(
        sock.as_raw_fd(),
        &mut headers,
        &iovs,
        &addrs,
        [],
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    Ok(results.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real sockets on loopback: every datagram arrives, in order, across several
    /// calls, and one that cannot be sent (a broadcast without SO_BROADCAST) does
    /// not stop the rest. (100 datagrams: more would overflow the receiver's
    /// default buffer before it reads.)
    #[tokio::test]
    async fn sends_all_in_order_and_skips_a_refused_one() {
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = receiver.local_addr().unwrap();
        let mut replies: Vec<Reply> = (0..100u16)
            .map(|i| Reply {
                bytes: i.to_be_bytes().to_vec(),
                to,
                kind: "offer",
            })
            .collect();
        replies[1].to = "255.255.255.255:9".parse().unwrap();
        let mut sent = TypeCounters::new("test_sent_total");
        send_in_calls_of(&sender, &replies, &mut sent, 16).await;
        let mut buf = [0u8; 8];
        for i in (0..100u16).filter(|&i| i != 1) {
            let recv = receiver.recv_from(&mut buf);
            let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(5), recv)
                .await
                .unwrap_or_else(|_| panic!("datagram {i} never came"))
                .unwrap();
            assert_eq!(&buf[..n], i.to_be_bytes(), "datagram {i}");
        }
    }
}
