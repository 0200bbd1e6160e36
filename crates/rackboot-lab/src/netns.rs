//! A private network namespace with a bridge and tap devices, and processes spawned inside it.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::process::{LabProcess, lock, start_time};
use crate::state::SharedState;
use crate::{LabError, Result, io_err};

/// What namespace to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsConfig {
    /// Namespace name: letters, digits, `-`, `_`, `.`; see [`unique_name`].
    pub name: String,
    /// Bridge device inside the namespace that every tap is attached to.
    pub bridge: String,
    /// The bridge's address: the server under test binds here.
    pub bridge_addr: Ipv4Addr,
    pub prefix_len: u8,
    /// Give the bridge `bridge_addr` (false: an IPv6-only network, no IPv4 at all).
    pub ipv4: bool,
    /// The bridge's IPv6 address and prefix length (added without duplicate
    /// address detection, so it is usable at once), when the network has IPv6.
    pub bridge_addr6: Option<(Ipv6Addr, u8)>,
    /// Tap devices to create and attach to the bridge (QEMU opens them by name).
    pub taps: Vec<String>,
    /// User ID that may open the taps without privileges (`ip tuntap add ... user UID`), for
    /// QEMU running unprivileged; `None`: root only.
    pub tap_owner: Option<u32>,
}

impl NetnsConfig {
    /// A namespace with bridge `br0` at `bridge_addr/prefix_len` and taps `tap1`..`tapN`.
    pub fn new(name: &str, bridge_addr: Ipv4Addr, prefix_len: u8, taps: usize) -> NetnsConfig {
        NetnsConfig {
            name: name.to_string(),
            bridge: "br0".to_string(),
            bridge_addr,
            prefix_len,
            ipv4: true,
            bridge_addr6: None,
            taps: (1..=taps).map(|i| format!("tap{i}")).collect(),
            tap_owner: None,
        }
    }
}

/// A unique namespace name for this process: `PREFIX-PID-N`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A network namespace this process created. Dropping it (or [`Netns::teardown`]) stops every
/// process still running inside it and deletes it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    bridge: String,
    bridge_addr: Ipv4Addr,
    prefix_len: u8,
    ipv4: bool,
    bridge_addr6: Option<(Ipv6Addr, u8)>,
    taps: Vec<String>,
    tap_owner: Option<u32>,
    state: Option<SharedState>,
    torn_down: bool,
}

impl Netns {
    /// Creates the namespace: `lo` up, the bridge with its address, the taps attached and up.
    pub fn create(config: &NetnsConfig) -> Result<Netns> {
        Netns::create_with_state(config, None)
    }

    pub(crate) fn create_with_state(
        config: &NetnsConfig,
        state: Option<SharedState>,
    ) -> Result<Netns> {
        validate_name(&config.name)?;
        if config.prefix_len > 32 {
            return Err(LabError::Config(format!(
                "prefix length {} is not 0..=32",
                config.prefix_len
            )));
        }
        for dev in std::iter::once(&config.bridge).chain(&config.taps) {
            if dev.is_empty() || dev.len() > 15 || dev.contains(['/', ' ']) {
                return Err(LabError::Config(format!(
                    "interface name {dev:?} must be 1-15 characters without '/' or spaces"
                )));
            }
        }
        if netns_exists(&config.name) {
            return Err(LabError::Config(format!(
                "network namespace {} already exists",
                config.name
            )));
        }
        run(Command::new("ip").args(["netns", "add", &config.name]))?;
        // From here on, Drop deletes the namespace even if a later step fails.
        let mut netns = Netns {
            name: config.name.clone(),
            bridge: config.bridge.clone(),
            bridge_addr: config.bridge_addr,
            prefix_len: config.prefix_len,
            ipv4: config.ipv4,
            bridge_addr6: config.bridge_addr6,
            taps: Vec::new(),
            tap_owner: config.tap_owner,
            state,
            torn_down: false,
        };
        netns.ip(&["link", "set", "lo", "up"])?;
        netns.ip(&["link", "add", &config.bridge, "type", "bridge"])?;
        // No STP delay: a tap's port must forward as soon as QEMU's firmware sends DHCP.
        netns.ip(&[
            "link",
            "set",
            &config.bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
        ])?;
        let cidr = format!("{}/{}", config.bridge_addr, config.prefix_len);
        if config.ipv4 {
            netns.ip(&["addr", "add", &cidr, "dev", &config.bridge])?;
        }
        if let Some((addr6, len6)) = config.bridge_addr6 {
            // Multicast snooping would keep DHCPv6 and RA multicast from ports
            // until they report membership; a lab link floods, like a dumb switch.
            netns.ip(&[
                "link",
                "set",
                &config.bridge,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ])?;
            let cidr6 = format!("{addr6}/{len6}");
            netns.ip(&["-6", "addr", "add", &cidr6, "dev", &config.bridge, "nodad"])?;
        }
        netns.ip(&["link", "set", &config.bridge, "up"])?;
        for tap in &config.taps {
            netns.add_tap(tap)?;
        }
        tracing::debug!(name = netns.name, %cidr, taps = ?netns.taps, "lab namespace created");
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn bridge_addr(&self) -> Ipv4Addr {
        self.bridge_addr
    }

    /// Whether the bridge has its IPv4 address (false on an IPv6-only lab network).
    pub fn has_ipv4(&self) -> bool {
        self.ipv4
    }

    /// The bridge's IPv6 address, when the lab network has IPv6.
    pub fn bridge_addr6(&self) -> Option<Ipv6Addr> {
        self.bridge_addr6.map(|(a, _)| a)
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn taps(&self) -> &[String] {
        &self.taps
    }

    /// Adds a tap device attached to the bridge.
    pub fn add_tap(&mut self, tap: &str) -> Result<()> {
        match self.tap_owner {
            Some(uid) => self.ip(&[
                "tuntap",
                "add",
                "dev",
                tap,
                "mode",
                "tap",
                "user",
                &uid.to_string(),
            ])?,
            None => self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"])?,
        };
        self.ip(&["link", "set", tap, "master", &self.bridge])?;
        self.ip(&["link", "set", tap, "up"])?;
        self.taps.push(tap.to_string());
        Ok(())
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`); add
    /// arguments and environment, then run it or pass it to [`Netns::spawn`]. `ip netns exec`
    /// execs the program, so the spawned PID is the program's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args` inside the namespace to completion; returns its stdout.
    pub fn exec<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        run(&mut cmd)
    }

    /// Starts `cmd` (usually from [`Netns::command`]) in the background, output appended to `log`.
    /// The process is stopped when the returned handle is dropped, and recorded in the lab state
    /// file (if this namespace belongs to a [`crate::Lab`] with one).
    pub fn spawn(&self, name: &str, cmd: Command, log: &Path) -> Result<LabProcess> {
        LabProcess::spawn(name, cmd, log, self.state.clone())
    }

    /// Stops every process still inside the namespace, deletes it and the lab state file (if
    /// any). Idempotent.
    pub fn teardown(&mut self) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        // Processes recorded in the state file but whose handles were leaked run inside the
        // namespace too, so destroy_netns stops them.
        destroy_netns(&self.name)?;
        if let Some(state) = &self.state {
            lock(state).delete()?;
        }
        self.torn_down = true;
        tracing::debug!(name = self.name, "lab namespace deleted");
        Ok(())
    }

    /// Forgets the namespace without deleting it (for `rackboot lab up`, which leaves the lab
    /// running for `rackboot lab down`).
    pub(crate) fn detach(mut self) {
        self.torn_down = true;
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = self.teardown() {
            tracing::warn!(name = self.name, %err, "deleting lab namespace");
        }
    }
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(LabError::Config(format!(
            "namespace name {name:?} must be 1-64 of [A-Za-z0-9_.-] not starting with '.'"
        )))
    }
}

pub(crate) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Stops every process inside namespace `name` (all of them were started by the lab: nobody else
/// knows the namespace) and deletes it. Returns whether it existed and which PIDs were stopped.
pub(crate) fn destroy_netns(name: &str) -> Result<(bool, Vec<u32>)> {
    validate_name(name)?;
    if !netns_exists(name) {
        return Ok((false, Vec::new()));
    }
    let pids: Vec<u32> = run(Command::new("ip").args(["netns", "pids", name]))?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let mut stopped = Vec::new();
    for &pid in &pids {
        if start_time(pid).is_some() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            stopped.push(pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && stopped.iter().any(|&p| start_time(p).is_some()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in &stopped {
        if start_time(pid).is_some() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
    run(Command::new("ip").args(["netns", "del", name]))?;
    Ok((true, stopped))
}

/// Runs a command to completion; non-zero exit is an error carrying stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let output = cmd.output().map_err(io_err(format!("run {cmd:?}")))?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: format!("{cmd:?}"),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("rbl-123-0").is_ok());
        for bad in ["", "../etc", "a b", ".hidden", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("rbl"), unique_name("rbl"));
    }
}
