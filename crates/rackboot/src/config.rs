//! The config file: typed, unknown keys rejected with their name. Only this
//! binary reads config files and the environment.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/rackboot";
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The OS catalog (imported installation trees), under the state directory.
pub const OS_DIR: &str = "os";
/// The agent's RAM-disk (`rackboot ramdisk build`), in the state directory.
pub const RAMDISK_DIR: &str = "ramdisk";
/// The image catalog (`rackboot image import`), in the state directory.
pub const IMAGES_DIR: &str = "images";
/// Operators' workflow definitions, in the state directory.
pub const WORKFLOWS_DIR: &str = "workflows";
/// Logs agents upload when a step fails, in the state directory.
pub const AGENT_LOGS_DIR: &str = "agent-logs";

/// `rackboot serve --config FILE`. Every section is optional; see docs/config.md
/// and the examples in examples/ (each is parsed by a test).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Database, admin token and other state. Default /var/lib/rackboot.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Store URL: `sqlite:PATH` or `postgres://...`. Default: SQLite in state_dir.
    #[serde(default)]
    pub store: Option<String>,
    /// Provisioning interface: DHCP binds to it and its IPv4 address is the
    /// address machines are told to fetch files from.
    #[serde(default)]
    pub interface: Option<String>,
    /// The server's address on the provisioning network, when it cannot be read
    /// from `interface` (or to pick one of several).
    #[serde(default)]
    pub server_ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub listen: Listen,
    /// DHCP service; absent means off.
    #[serde(default)]
    pub dhcp: Option<rackboot_dhcp::DhcpConfig>,
    /// TFTP service settings.
    #[serde(default)]
    pub tftp: rackboot_tftp::TftpConfig,
    /// Boot decisions: loader files, asset directory, discovery.
    #[serde(default)]
    pub boot: rackboot_boot::BootConfig,
    /// BMC power control.
    #[serde(default)]
    pub power: PowerSettings,
    /// The workflow engine: concurrency limits, agent timing.
    #[serde(default)]
    pub engine: EngineSettings,
    /// Alerts: how events reach webhooks.
    #[serde(default)]
    pub alerts: AlertSettings,
    #[serde(default)]
    pub log: Log,
}

/// `[power]`: how rackboot drives BMCs. The key sealing BMC passwords is
/// RACKBOOT_SECRET_KEY (base64 of 32 bytes) or STATE_DIR/secret.key, created
/// on first start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerSettings {
    /// Seconds between reads of every BMC's power state (changes become
    /// power_changed events); 0 turns the sync off.
    #[serde(default = "default_power_sync")]
    pub sync_interval_secs: u64,
    /// BMC operations in flight at once, across all BMCs.
    #[serde(default = "default_power_concurrency")]
    pub max_concurrent: usize,
    /// Accept `fake://NAME` BMC URLs (an in-memory BMC, for demos and tests).
    #[serde(default)]
    pub allow_fake_bmc: bool,
}

impl Default for PowerSettings {
    fn default() -> Self {
        PowerSettings {
            sync_interval_secs: default_power_sync(),
            max_concurrent: default_power_concurrency(),
            allow_fake_bmc: false,
        }
    }
}

/// `[engine]`: how workflows (inspect, clean, deploy...) run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// Workflows running at once; the rest wait in the queue.
    #[serde(default = "default_max_running")]
    pub max_running: usize,
    /// Per label key: workflows running at once on machines that share a
    /// value of it, e.g. `{ rack = 10 }` (a rack's power and uplink).
    #[serde(default)]
    pub label_limits: std::collections::BTreeMap<String, usize>,
    /// Seconds between agent heartbeats.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u32,
    /// An agent step fails (and is retried) when its agent has not been heard
    /// from for this long.
    #[serde(default = "default_agent_lost")]
    pub agent_lost_secs: u64,
    /// Operators' workflow definitions (`*.toml`). Default: STATE_DIR/workflows.
    #[serde(default)]
    pub workflows_dir: Option<PathBuf>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            max_running: default_max_running(),
            label_limits: Default::default(),
            heartbeat_secs: default_heartbeat(),
            agent_lost_secs: default_agent_lost(),
            workflows_dir: None,
        }
    }
}

fn default_max_running() -> usize {
    64
}

fn default_heartbeat() -> u32 {
    5
}

fn default_agent_lost() -> u64 {
    90
}

fn default_power_sync() -> u64 {
    60
}

fn default_power_concurrency() -> usize {
    32
}

/// `[alerts]`: delivery of events to webhooks (`rackboot webhook add`). A
/// delivery is retried with a doubling wait until it succeeds or
/// `max_attempts` failed; then a `webhook_failed` warning is recorded.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// Run the alerts task; when false, webhooks get nothing (deliveries
    /// wait in the outbox).
    #[serde(default = "default_alerts_enabled")]
    pub enabled: bool,
    /// Attempts before a delivery is given up.
    #[serde(default = "default_alert_attempts")]
    pub max_attempts: u32,
    /// Wait after the first failed attempt, in milliseconds; doubles after each.
    #[serde(default = "default_alert_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest wait between two attempts, in seconds.
    #[serde(default = "default_alert_backoff_max_secs")]
    pub backoff_max_secs: u64,
    /// Seconds one POST may take before it counts as failed.
    #[serde(default = "default_alert_timeout_secs")]
    pub timeout_secs: u64,
    /// Webhooks delivered to at once (each gets one request at a time).
    #[serde(default = "default_alert_concurrency")]
    pub max_concurrent: usize,
}

impl Default for AlertSettings {
    fn default() -> Self {
        toml::from_str("").expect("empty [alerts] is valid")
    }
}

impl AlertSettings {
    /// The alerts task's settings (zeros raised to the smallest sane value).
    pub fn to_config(&self) -> rackboot_alerts::AlertConfig {
        let backoff_initial = Duration::from_millis(self.backoff_initial_ms.max(10));
        rackboot_alerts::AlertConfig {
            max_attempts: self.max_attempts.max(1),
            backoff_initial,
            backoff_max: Duration::from_secs(self.backoff_max_secs).max(backoff_initial),
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            max_concurrent: self.max_concurrent.max(1),
            ..rackboot_alerts::AlertConfig::default()
        }
    }
}

fn default_alerts_enabled() -> bool {
    true
}

fn default_alert_attempts() -> u32 {
    12
}

fn default_alert_backoff_initial_ms() -> u64 {
    1000
}

fn default_alert_backoff_max_secs() -> u64 {
    600
}

fn default_alert_timeout_secs() -> u64 {
    10
}

fn default_alert_concurrency() -> usize {
    8
}

/// The key file under the state directory.
pub const SECRET_KEY_FILE: &str = "secret.key";

/// The key that seals BMC passwords: RACKBOOT_SECRET_KEY, else the state
/// directory's key file (created with mode 0600 when absent).
pub fn secret_key(state_dir: &Path) -> Result<rackboot_power::secrets::SecretKey> {
    use rackboot_power::secrets::SecretKey;
    if let Ok(text) = std::env::var("RACKBOOT_SECRET_KEY") {
        return SecretKey::from_base64(text.trim())
            .context("RACKBOOT_SECRET_KEY must be the base64 of 32 bytes");
    }
    let path = state_dir.join(SECRET_KEY_FILE);
    SecretKey::load_or_create(&path).with_context(|| format!("secret key {}", path.display()))
}

/// Where each service listens. A service set to "off" is not started.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Boot HTTP, REST API, event stream and /metrics share this listener.
    #[serde(default = "default_http")]
    pub http: Toggle<SocketAddr>,
    #[serde(default = "default_tftp")]
    pub tftp: Toggle<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            http: default_http(),
            tftp: default_tftp(),
        }
    }
}

/// An address, or the string "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toggle<T> {
    On(T),
    Off,
}

impl<'de> Deserialize<'de> for Toggle<SocketAddr> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "off" {
            return Ok(Toggle::Off);
        }
        s.parse().map(Toggle::On).map_err(|_| {
            serde::de::Error::custom(format!("expected ADDRESS:PORT or \"off\", got {s:?}"))
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// tracing filter, e.g. "info" or "rackboot_dhcp=debug,info". RUST_LOG overrides.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// Log lines as JSON objects.
    #[serde(default)]
    pub json: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: default_log_level(),
            json: false,
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

fn default_http() -> Toggle<SocketAddr> {
    Toggle::On(SocketAddr::from(([0, 0, 0, 0], 8080)))
}

fn default_tftp() -> Toggle<SocketAddr> {
    Toggle::On(SocketAddr::from(([0, 0, 0, 0], 69)))
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("empty config is valid")
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Config> {
        // toml's error names the unknown key and its line.
        Ok(toml::from_str(text)?)
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Config::from_toml(&text).with_context(|| format!("in config {}", path.display()))
    }

    pub fn store_url(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.state_dir.join("rackboot.db").display()))
    }

    /// The server's provisioning address: `server_ip`, else the first IPv4 of `interface`.
    pub fn resolve_server_ip(&self) -> Result<Option<Ipv4Addr>> {
        if let Some(ip) = self.server_ip {
            return Ok(Some(ip));
        }
        let Some(name) = &self.interface else {
            return Ok(None);
        };
        let iface = netdev::get_interfaces()
            .into_iter()
            .find(|i| &i.name == name)
            .with_context(|| format!("interface {name:?} not found"))?;
        match iface.ipv4.first() {
            Some(net) => Ok(Some(net.addr())),
            None => bail!("interface {name:?} has no IPv4 address; set server_ip"),
        }
    }
}

/// `rackboot check-config`: parse, report, print what was understood.
pub fn check(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    println!("{config:#?}");
    println!("config OK: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::from_toml("state_dirr = \"/x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("state_dirr"), "{err:#}");
        let err = Config::from_toml("[listen]\nhttps = \"0.0.0.0:1\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("https"), "{err:#}");
    }

    #[test]
    fn listen_off() {
        let c = Config::from_toml("[listen]\ntftp = \"off\"\n").unwrap();
        assert_eq!(c.listen.tftp, Toggle::Off);
        assert!(Config::from_toml("[listen]\ntftp = \"nope\"\n").is_err());
    }

    #[test]
    fn alerts_section() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(
            c.alerts.to_config(),
            rackboot_alerts::AlertConfig::default()
        );
        let c = Config::from_toml(
            "[alerts]\nmax_attempts = 5\nbackoff_initial_ms = 250\nbackoff_max_secs = 60\ntimeout_secs = 3\n",
        )
        .unwrap();
        let a = c.alerts.to_config();
        assert_eq!(a.max_attempts, 5);
        assert_eq!(a.backoff_initial, Duration::from_millis(250));
        assert_eq!(a.backoff_max, Duration::from_secs(60));
        assert_eq!(a.timeout, Duration::from_secs(3));
        assert!(c.alerts.enabled);
        let err = Config::from_toml("[alerts]\nretries = 3\n").unwrap_err();
        assert!(format!("{err:#}").contains("retries"), "{err:#}");
    }

    #[test]
    fn every_example_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
        assert!(n > 0, "no example configs in {}", dir.display());
    }
}
