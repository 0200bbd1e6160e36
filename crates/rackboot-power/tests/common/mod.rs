//! Helpers shared by the tests that start real peers (sushy-tools, ipmi_sim).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Kills (by PID) and reaps the child when dropped, even when a test panics.
pub struct KillOnDrop {
    pub child: Child,
    pub name: &'static str,
}

impl KillOnDrop {
    /// Panics with the child's log if it already exited (e.g. bad config, port taken).
    pub fn assert_running(&mut self, log: &Path) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); log:\n{}",
                self.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fails with an install hint when a required tool is missing (never skips).
pub fn require_tool(path: &str, hint: &str) {
    let found = if path.contains('/') {
        Path::new(path).exists()
    } else {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {path}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    assert!(found, "required tool '{path}' is missing: {hint}");
}

pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !ready().await {
        assert!(start.elapsed() < limit, "{what} not ready within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
