//! ICMP echo probe before offering a new address (RFC 2131 3.1 step 2 "SHOULD").
//! Runs on its own thread with a blocking raw socket so the DHCP receive loop never
//! waits: jobs go in over a channel, verdicts come back over another.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::Socket;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy)]
pub struct ProbeJob {
    pub id: u64,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeVerdict {
    pub id: u64,
    pub ip: Ipv4Addr,
    /// Something answered the echo: the address is in use.
    pub in_use: bool,
}

/// Starts the prober thread. It ends when `jobs` is closed.
pub fn spawn(
    socket: Socket,
    timeout: Duration,
    mut jobs: mpsc::UnboundedReceiver<ProbeJob>,
    verdicts: mpsc::UnboundedSender<ProbeVerdict>,
) -> io::Result<std::thread::JoinHandle<()>> {
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    let ident: u16 = rand::random();
    std::thread::Builder::new()
        .name("dhcp-probe".into())
        .spawn(move || {
            let mut socket = socket;
            let mut pending: HashMap<u64, (ProbeJob, Instant)> = HashMap::new();
            let mut buf = [0u8; 1500];
            loop {
                let mut new_jobs = Vec::new();
                if pending.is_empty() {
                    // Idle: sleep until the next job instead of spinning on the socket.
                    match jobs.blocking_recv() {
                        Some(job) => new_jobs.push(job),
                        None => return,
                    }
                }
                loop {
                    match jobs.try_recv() {
                        Ok(job) => new_jobs.push(job),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                for job in new_jobs {
                    let packet = echo_request(ident, job.id as u16);
                    let to = SocketAddr::V4(SocketAddrV4::new(job.ip, 0));
                    match socket.send_to(&packet, &to.into()) {
                        Ok(_) => {
                            pending.insert(job.id, (job, Instant::now() + timeout));
                        }
                        Err(e) => {
                            // Cannot probe (no route): treat as free, like a timeout.
                            tracing::debug!(ip = %job.ip, error = %e, "ICMP probe send failed");
                            let _ = verdicts.send(ProbeVerdict {
                                id: job.id,
                                ip: job.ip,
                                in_use: false,
                            });
                        }
                    }
                }
                if let Ok(n) = socket.read(&mut buf)
                    && let Some(from) = echo_reply_from(&buf[..n], ident)
                {
                    pending.retain(|_, (job, _)| {
                        if job.ip == from {
                            let _ = verdicts.send(ProbeVerdict {
                                id: job.id,
                                ip: job.ip,
                                in_use: true,
                            });
                            false
                        } else {
                            true
                        }
                    });
                }
                let now = Instant::now();
                pending.retain(|_, (job, deadline)| {
                    if *deadline <= now {
                        let _ = verdicts.send(ProbeVerdict {
                            id: job.id,
                            ip: job.ip,
                            in_use: false,
                        });
                        false
                    } else {
                        true
                    }
                });
            }
        })
}

/// ICMP echo request with our identifier, sequence and a short payload.
pub fn echo_request(ident: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"rackboot-dhcp-probe");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Source of an echo reply to one of our requests (raw sockets deliver the IP header).
pub fn echo_reply_from(packet: &[u8], ident: u16) -> Option<Ipv4Addr> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
    let icmp = packet.get(ihl..)?;
    let (&ty, rest) = icmp.split_first()?;
    let id = u16::from_be_bytes(rest.get(3..5)?.try_into().ok()?);
    (ty == 0 && id == ident).then_some(Ipv4Addr::from(src))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
    }

    #[test]
    fn reply_parsing() {
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 9, 10, 0, 0, 1,
        ];
        let mut icmp = echo_request(0x1234, 7);
        icmp[0] = 0;
        ip.extend_from_slice(&icmp);
        assert_eq!(
            echo_reply_from(&ip, 0x1234),
            Some(Ipv4Addr::new(10, 0, 0, 9))
        );
        assert_eq!(echo_reply_from(&ip, 0x9999), None);
        assert_eq!(echo_reply_from(&ip[..22], 0x1234), None);
        assert_eq!(echo_reply_from(&[], 0x1234), None);
    }
}
