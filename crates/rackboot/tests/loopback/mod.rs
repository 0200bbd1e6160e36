//! A real `rackboot serve` on loopback for CLI and API surface tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn rackboot() -> &'static str {
    env!("CARGO_BIN_EXE_rackboot")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server on loopback; killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub state: PathBuf,
    pub config: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write_config(dir: &Path, state: &Path, port: u16) -> PathBuf {
    write_config_with(dir, state, port, "tftp = \"off\"\n")
}

/// [`write_config`] with `listen` (TOML lines) in `[listen]` after the HTTP
/// address instead of `tftp = "off"`.
pub fn write_config_with(dir: &Path, state: &Path, port: u16, listen: &str) -> PathBuf {
    let config = dir.join(format!("rackboot-{port}.toml"));
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nserver_ip = \"127.0.0.1\"\n[listen]\nhttp = \"127.0.0.1:{port}\"\n{listen}[power]\nsync_interval_secs = 0\n",
            state.display().to_string()
        ),
    )
    .unwrap();
    config
}

pub fn spawn(config: &Path) -> Child {
    Command::new(rackboot())
        .args(["serve", "-c", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        Server::start_with(dir, "tftp = \"off\"\n")
    }

    /// A server whose `[listen]` has `listen` (TOML lines) after its HTTP
    /// address (see [`write_config_with`]).
    pub fn start_with(dir: &Path, listen: &str) -> Server {
        let state = dir.join("state");
        let port = free_port();
        let config = write_config_with(dir, &state, port, listen);
        let server = Server {
            child: spawn(&config),
            port,
            state,
            config,
        };
        server.wait_up();
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.cli(&["status"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("rackboot serve did not come up on {}", self.url());
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(rackboot());
        c.args(args)
            .env("RACKBOOT_URL", self.url())
            .env("RACKBOOT_STATE_DIR", &self.state)
            .env_remove("RACKBOOT_TOKEN");
        c
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "rackboot {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn stop(&mut self) {
        // SIGTERM: the graceful path, which ends open event streams.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

pub fn add_machines(server: &Server, n: usize, prefix: &str, byte: u8) {
    for i in 0..n {
        server.ok(&[
            "machine",
            "add",
            &format!("{prefix}{i}"),
            "--mac",
            &format!("52:54:00:{byte:02x}:00:{i:02x}"),
        ]);
    }
}
