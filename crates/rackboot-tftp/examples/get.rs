//! Minimal blocking RFC 7440 client for throughput checks (atftp, the only stock
//! client with windowsize, is slower than the server):
//! `cargo run --release -p rackboot-tftp --example get -- ADDR:PORT FILE [BLKSIZE] [WINDOWSIZE]`
//! Prints bytes, seconds and MiB/s; discards the data.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use rackboot_wire::tftp::{Mode, Packet, Request};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, file, rest @ ..] = args.as_slice() else {
        eprintln!("usage: get ADDR:PORT FILE [BLKSIZE] [WINDOWSIZE]");
        std::process::exit(2);
    };
    let blksize: usize = rest.first().map_or(512, |s| s.parse().expect("blksize"));
    let window: u64 = rest.get(1).map_or(1, |s| s.parse().expect("windowsize"));
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut options = vec![("blksize".to_string(), blksize.to_string())];
    if window > 1 {
        options.push(("windowsize".into(), window.to_string()));
    }
    let rrq = Packet::Rrq(Request {
        filename: file.clone(),
        mode: Mode::Octet,
        options,
    });
    let started = Instant::now();
    sock.send_to(&rrq.encode(), server.as_str()).expect("send");
    let mut buf = vec![0u8; blksize + 4];
    let mut expected: u16 = 1;
    let mut in_window = 0u64;
    let mut bytes = 0u64;
    loop {
        let (n, from) = sock.recv_from(&mut buf).expect("receive (timed out?)");
        match Packet::parse(&buf[..n]) {
            Ok(Packet::Oack { .. }) => {
                sock.connect(from).unwrap();
                sock.send(&Packet::Ack { block: 0 }.encode()).unwrap();
            }
            Ok(Packet::Data { block, data }) => {
                if block != expected {
                    // Lost or reordered: ACK what we have, the server resends after it.
                    sock.send(
                        &Packet::Ack {
                            block: expected.wrapping_sub(1),
                        }
                        .encode(),
                    )
                    .unwrap();
                    in_window = 0;
                    continue;
                }
                let last = data.len() < blksize;
                bytes += data.len() as u64;
                expected = expected.wrapping_add(1);
                in_window += 1;
                if last || in_window == window {
                    in_window = 0;
                    if sock.peer_addr().is_err() {
                        sock.connect(from).unwrap();
                    }
                    sock.send(&Packet::Ack { block }.encode()).unwrap();
                }
                if last {
                    break;
                }
            }
            Ok(Packet::Error { code, message }) => {
                eprintln!("error {}: {message}", code.as_u16());
                std::process::exit(1);
            }
            other => eprintln!("ignored {other:?}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{bytes} bytes in {secs:.3} s: {:.1} MiB/s",
        bytes as f64 / secs / (1 << 20) as f64
    );
}
