//! Metric labels are bounded: a real `rackboot serve` on loopback gets two
//! rounds of junk from the network (HTTP with made-up methods, paths, MACs,
//! install ids, user agents and tokens on the boot and API routes; TFTP
//! requests for made-up file names), and /metrics must not grow with it: no
//! label carries a request's data, and the second round, all new junk, adds
//! no series.

mod loopback;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use loopback::Server;

/// One HTTP/1.1 request on its own connection; the status code (0 if none).
fn http(port: u16, method: &str, path: &str, user_agent: &str, token: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {user_agent}\r\n\
         Authorization: Bearer {token}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A TFTP read request; waits (bounded) for the server's answer.
fn tftp_rrq(socket: &UdpSocket, port: u16, file: &str) {
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(file.as_bytes());
    rrq.push(0);
    rrq.extend_from_slice(b"octet\0");
    socket.send_to(&rrq, ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 1024];
    let _ = socket.recv_from(&mut buf);
}

fn junk_round(server: &Server, tftp_port: u16, round: &str) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for i in 0..60u32 {
        let tag = format!("junk{round}x{i}");
        let mac = format!("02-{round}{round}-{:02x}-{:02x}-00-01", i / 256, i % 256);
        let paths = [
            format!("/{tag}"),
            format!("/assets/{tag}/vmlinuz"),
            format!("/os/{tag}/Release"),
            format!("/images/{tag}.json"),
            format!("/ramdisk/{tag}"),
            format!("/boot/loader/{tag}.efi"),
            format!("/boot/ipxe/{mac}"),
            format!("/boot/grub/{tag}"),
            format!("/install/{tag}/preseed.cfg"),
            format!("/install/00000000-0000-4000-8000-{:012}/ks.cfg", i),
            format!("/agent/v1/{tag}"),
            format!("/api/v1/machines/{tag}"),
            format!("/api/v1/{tag}?limit={tag}"),
            format!("/metrics/{tag}"),
        ];
        for (j, path) in paths.iter().enumerate() {
            let method = match j % 4 {
                0 => "GET".to_string(),
                1 => "POST".to_string(),
                2 => format!("JUNK{round}{i}"),
                _ => "DELETE".to_string(),
            };
            http(server.port, &method, path, &format!("agent-{tag}"), &tag);
        }
        tftp_rrq(&socket, tftp_port, &format!("{tag}/pxelinux.0"));
        tftp_rrq(&socket, tftp_port, &format!("../{tag}"));
    }
}

/// The series (name and labels, no value) of a /metrics scrape.
fn series(server: &Server) -> BTreeSet<String> {
    // The admin token, in case /metrics asks for one.
    let token = std::fs::read_to_string(server.state.join("admin-token")).unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        token.trim()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
        .collect()
}

#[test]
fn metric_series_stay_bounded_under_junk_requests() {
    let dir = tempfile::tempdir().unwrap();
    let tftp_port = {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let server = Server::start_with(dir.path(), &format!("tftp = \"127.0.0.1:{tftp_port}\"\n"));

    junk_round(&server, tftp_port, "a");
    let first = series(&server);
    assert!(!first.is_empty());
    assert!(
        first.iter().any(|s| s.contains("method=\"other\"")),
        "the junk methods were not counted: {first:?}"
    );
    junk_round(&server, tftp_port, "b");
    let second = series(&server);

    let leaked: Vec<_> = second
        .iter()
        .filter(|s| s.to_ascii_lowercase().contains("junk"))
        .collect();
    assert!(leaked.is_empty(), "request data in labels: {leaked:?}");
    let new: Vec<_> = second.difference(&first).collect();
    eprintln!(
        "{} series after the first round, {} after the second",
        first.len(),
        second.len()
    );
    // All-new junk adds no series (a couple of slack for a periodic task
    // that first reports between the two scrapes).
    assert!(new.len() <= 2, "series added by the second round: {new:?}");
    assert!(
        second.len() < 1000,
        "{} series after 2 x 900 junk requests",
        second.len()
    );
}
