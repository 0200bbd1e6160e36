//! The config file: typed, unknown keys rejected with their name. Only this
//! binary reads config files and the environment.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

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
#[derive(Debug, Deserialize, Serialize)]
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
    /// The server's IPv6 address on the provisioning network: where IPv6
    /// clients are told to fetch files from. Default: the first global IPv6
    /// address of `interface`.
    #[serde(default)]
    pub server_ip6: Option<Ipv6Addr>,
    #[serde(default)]
    pub listen: Listen,
    /// The API's own listener and its TLS; absent, the API shares
    /// `[listen] http` with the boot files.
    #[serde(default)]
    pub api: ApiSettings,
    /// DHCP service; absent means off.
    #[serde(default)]
    pub dhcp: Option<rackboot_dhcp::DhcpConfig>,
    /// DHCPv6 service (RFC 8415, boot file URLs of RFC 5970) and router
    /// advertisements; absent means off. Binds to `interface`.
    #[serde(default)]
    pub dhcp6: Option<rackboot_dhcp6::Dhcp6Config>,
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
    /// The bound on recording unknown machines that network-boot.
    #[serde(default)]
    pub discovery: DiscoverySettings,
    /// How long the event log keeps events.
    #[serde(default)]
    pub events: EventSettings,
    /// Several servers on one PostgreSQL store.
    #[serde(default)]
    pub cluster: ClusterSettings,
    #[serde(default)]
    pub log: Log,
    /// Which defaults the operator overrode (from the file or flags): those
    /// that follow other settings (`asset_dir` follows `state_dir`) only do
    /// when not given.
    #[serde(skip)]
    pub explicit: Explicit,
}

/// Settings whose default depends on another setting, and whether each was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Explicit {
    /// `boot.asset_dir` (default STATE_DIR/assets).
    pub asset_dir: bool,
    /// `boot.loader_dir` (default STATE_DIR/tftp, else Debian's /usr/lib/ipxe).
    pub loader_dir: bool,
    /// `listen.tftp` (default: port 69 on the HTTP listener's address).
    pub tftp_listen: bool,
}

/// `[power]`: how rackboot drives BMCs. The key sealing BMC passwords is
/// RACKBOOT_SECRET_KEY (base64 of 32 bytes) or STATE_DIR/secret.key, created
/// on first start.
#[derive(Debug, Deserialize, Serialize)]
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
#[derive(Debug, Deserialize, Serialize)]
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
#[derive(Debug, Deserialize, Serialize)]
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

/// `[discovery]`: a network-booting host needs no credentials, so the
/// machines discovery records are bounded. Over the bound an unknown MAC is
/// not recorded (it still gets the discovery boot), is counted in
/// `rackboot_discovery_dropped_total`, and the first refusal of an overload
/// records one event.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySettings {
    /// Unknown machines recorded per minute at most (a burst of this many,
    /// then refilled evenly); 0: no bound.
    #[serde(default = "default_discovery_per_minute")]
    pub per_minute: u32,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        DiscoverySettings {
            per_minute: default_discovery_per_minute(),
        }
    }
}

fn default_discovery_per_minute() -> u32 {
    rackboot_fleet::DiscoveryLimit::default().per_minute
}

/// `[events]`: the event log's retention. A background task deletes events
/// older than `retention_days` and beyond the newest `max_events`, every
/// `prune_interval_secs` (`rackboot_events_pruned_total` counts them).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Days an event is kept; 0 keeps events however old.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Events kept at most (the newest); 0: no bound.
    #[serde(default = "default_max_events")]
    pub max_events: u64,
    /// Seconds between two pruning passes.
    #[serde(default = "default_prune_interval")]
    pub prune_interval_secs: u64,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            retention_days: default_retention_days(),
            max_events: default_max_events(),
            prune_interval_secs: default_prune_interval(),
        }
    }
}

impl EventSettings {
    pub fn to_retention(&self) -> rackboot_fleet::retention::EventRetention {
        rackboot_fleet::retention::EventRetention {
            max_age: (self.retention_days > 0)
                .then(|| Duration::from_secs(u64::from(self.retention_days) * 86_400)),
            max_events: (self.max_events > 0).then_some(self.max_events),
            interval: Duration::from_secs(self.prune_interval_secs.max(1)),
        }
    }
}

fn default_retention_days() -> u32 {
    90
}

fn default_max_events() -> u64 {
    10_000_000
}

fn default_prune_interval() -> u64 {
    300
}

/// `[cluster]`: several servers on one PostgreSQL store (`store =
/// "postgres://..."`; SQLite has one server per file). Each server sees the
/// others' writes within a second (the database's change notifications),
/// and each machine's BMC polling and workflows belong to one live server,
/// chosen by hashing the machine's id over the live servers; a server whose
/// heartbeat stops for `dead_after_ms` loses its machines to the others.
/// DHCP servers sharing pools claim every address in the database before
/// offering it. Every server needs the same secret key (RACKBOOT_SECRET_KEY
/// or the same STATE_DIR/secret.key): BMC passwords are sealed with it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Join the cluster when the store is PostgreSQL.
    #[serde(default = "default_cluster_enabled")]
    pub enabled: bool,
    /// This server's name in `rackboot cluster` and the logs. Default: the
    /// host name.
    #[serde(default)]
    pub name: Option<String>,
    /// Where the other servers reach this one's API. Default: the boot URL.
    #[serde(default)]
    pub api_url: Option<String>,
    /// Milliseconds between two heartbeats.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// A server whose last heartbeat is older than this many milliseconds
    /// is dead; the others take its machines over.
    #[serde(default = "default_dead_after_ms")]
    pub dead_after_ms: u64,
    /// Seconds between two full re-reads of the inventory (a safety net
    /// behind the change notifications).
    #[serde(default = "default_resync_secs")]
    pub resync_secs: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        toml::from_str("").expect("empty [cluster] is valid")
    }
}

impl ClusterSettings {
    /// The fleet's cluster config; the name defaults to the host name.
    pub fn to_config(&self, default_api_url: &str) -> rackboot_fleet::ClusterConfig {
        let heartbeat = Duration::from_millis(self.heartbeat_ms.max(100));
        rackboot_fleet::ClusterConfig {
            name: self.name.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "rackboot".into())
            }),
            api_url: self
                .api_url
                .clone()
                .unwrap_or_else(|| default_api_url.to_string()),
            heartbeat,
            // At least two heartbeats, so one slow beat is not a death.
            dead_after: Duration::from_millis(self.dead_after_ms).max(heartbeat * 2),
        }
    }
}

fn default_cluster_enabled() -> bool {
    true
}

fn default_heartbeat_ms() -> u64 {
    1000
}

fn default_dead_after_ms() -> u64 {
    5000
}

fn default_resync_secs() -> u64 {
    300
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

/// `[api]`: where the REST API, its event stream, `/metrics` and the OpenAPI
/// document listen, and with what TLS. Boot files and the agent's
/// endpoints stay on `[listen] http`, plain HTTP, where machines reach them.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// The API's own listener: `127.0.0.1:8443`, or an address on the
    /// management network. Absent: the API shares `[listen] http` with the
    /// boot files, on the provisioning network, without TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `off`, `self-signed` (a certificate made on first start in
    /// STATE_DIR/api-tls and kept; clients pin its fingerprint on first use)
    /// or `files` (`tls_cert` and `tls_key`). Needs `listen`.
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM certificate chain (`tls = "files"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (`tls = "files"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Seconds a request's head (request line and headers) may take to
    /// arrive on the API's own listener; an idle kept-alive connection is
    /// closed after the same time. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_read_timeout_secs: Option<u64>,
    /// Connections open at once on the API's own listener; at the cap new
    /// ones wait in the kernel's accept queue until one closes. Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
}

/// TLS of the API's own listener.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    #[default]
    Off,
    SelfSigned,
    Files,
}

impl ApiSettings {
    /// The bounds of the API's own listener's connections.
    pub fn conn_limits(&self) -> rackboot_boot::ConnLimits {
        conn_limits(
            rackboot_boot::ConnLimits::API,
            self.header_read_timeout_secs,
            self.max_connections,
        )
    }

    /// Refuses TLS settings that cannot work: TLS without its own listener
    /// (boot files stay on plain HTTP), certificate files missing or given
    /// without `tls = "files"`; connection bounds out of range.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_conn_limits(
            "api.header_read_timeout_secs",
            self.header_read_timeout_secs,
            "api.max_connections",
            self.max_connections,
        )?;
        let files = self.tls_cert.is_some() || self.tls_key.is_some();
        match self.tls {
            TlsMode::Off | TlsMode::SelfSigned if files => {
                return Err(
                    "api.tls_cert and api.tls_key are used only with tls = \"files\"".into(),
                );
            }
            TlsMode::Files => {
                for (key, path) in [("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key)] {
                    let Some(path) = path else {
                        return Err(format!("api.tls = \"files\" needs api.{key}"));
                    };
                    if !path.is_file() {
                        return Err(format!("api.{key} {} is not a file", path.display()));
                    }
                }
            }
            _ => {}
        }
        if self.tls != TlsMode::Off && self.listen.is_none() {
            return Err(
                "api.tls needs the API on its own listener (api.listen, or --api-listen with \
                 --http-listen): boot files stay on plain HTTP, which iPXE and firmware need"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Why machines could not reach the boot files DHCP points them at, if they
/// could not: boot HTTP (or TFTP) listening on an address other than the one
/// DHCP hands out (`server_ip`), e.g. on loopback. `public_url` (a proxy in
/// front) is the operator's to get right.
pub fn boot_unreachable(
    http: Toggle<SocketAddr>,
    tftp: Toggle<SocketAddr>,
    server_ip: Ipv4Addr,
    public_url: Option<&str>,
) -> Option<String> {
    let reaches = |addr: SocketAddr| addr.ip().is_unspecified() || addr.ip() == server_ip;
    let fix = "let it listen where machines reach it (0.0.0.0 or the server address), and give \
               the API its own address with [api] listen (--api-listen with --http-listen)";
    if public_url.is_none() {
        match http {
            Toggle::Off => {
                return Some(format!(
                    "DHCP sends machines to boot HTTP at {server_ip}, but boot HTTP is off \
                     ([listen] http = \"off\"): they would stop after their lease. Turn it on; \
                     to keep the API apart, give it its own address with [api] listen"
                ));
            }
            Toggle::On(addr) if !reaches(addr) => {
                return Some(format!(
                    "DHCP tells machines to fetch their boot files from http://{server_ip}:{}, \
                     but boot HTTP listens on {addr} only: every machine would stop after its \
                     lease. Boot HTTP is [listen] http (--http-listen; --api-listen alone sets \
                     it too): {fix}",
                    addr.port()
                ));
            }
            Toggle::On(_) => {}
        }
    }
    if let Toggle::On(addr) = tftp
        && !reaches(addr)
    {
        return Some(format!(
            "DHCP sends machines to TFTP at {server_ip} for their loader, but TFTP listens on \
             {addr} only: every machine would stop after its lease. Set [listen] tftp \
             (--tftp-listen) to 0.0.0.0:69 or {server_ip}:69, or leave it to follow boot HTTP \
             and {fix}"
        ));
    }
    None
}

/// A warning when the API is reachable from the provisioning network
/// without TLS: any machine that network-boots there can reach it.
pub fn api_exposure_warning(
    config: &Config,
    server_ip: Option<Ipv4Addr>,
    server_ip6: Option<Ipv6Addr>,
) -> Option<String> {
    if config.api.tls != TlsMode::Off {
        return None;
    }
    // No provisioning network known: nothing to warn about.
    if config.interface.is_none() && config.dhcp.is_none() {
        return None;
    }
    let addr = match (config.api.listen, config.listen.http) {
        (Some(addr), _) | (None, Toggle::On(addr)) => addr,
        (None, Toggle::Off) => return None,
    };
    let exposed = addr.ip().is_unspecified()
        || server_ip.is_some_and(|ip| addr.ip() == std::net::IpAddr::V4(ip))
        || server_ip6.is_some_and(|ip| addr.ip() == std::net::IpAddr::V6(ip));
    exposed.then(|| {
        format!(
            "the API ({addr}) is reachable from the provisioning network without TLS: machines \
             that network-boot there can reach it and see its traffic in clear. Give it its own \
             listener with TLS: [api] listen = \"ADDRESS:PORT\" (loopback or a management \
             address) and tls = \"self-signed\""
        )
    })
}

/// Where each service listens. A service set to "off" is not started.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Boot HTTP: scripts, kernels, install files, the agent's endpoints.
    /// The REST API, event stream and /metrics share it unless `[api]
    /// listen` gives them their own.
    #[serde(default = "default_http")]
    pub http: Toggle<SocketAddr>,
    #[serde(default = "default_tftp")]
    pub tftp: Toggle<SocketAddr>,
    /// A second, IPv6 listener of boot HTTP and the API (IPv6 clients). Default:
    /// `[::]:PORT` when `http` is `0.0.0.0:PORT`; `[server_ip6]:PORT` when
    /// `http` is another IPv4 address and the server has an IPv6 address;
    /// otherwise off (an IPv6 `http` serves IPv6 clients itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http6: Option<Toggle<SocketAddr>>,
    /// A second, IPv6 TFTP listener (UEFI PXE over IPv6). Default as `http6`,
    /// with `tftp`'s port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tftp6: Option<Toggle<SocketAddr>>,
    /// Seconds a request's head (request line and headers) may take to
    /// arrive on boot HTTP (`http`, `http6`, and the API when it shares
    /// them); an idle kept-alive connection is closed after the same time.
    /// Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_read_timeout_secs: Option<u64>,
    /// Connections open at once on each boot HTTP listener; at the cap new
    /// ones wait in the kernel's accept queue until one closes. Default 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_max_connections: Option<usize>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            http: default_http(),
            tftp: default_tftp(),
            http6: None,
            tftp6: None,
            http_header_read_timeout_secs: None,
            http_max_connections: None,
        }
    }
}

impl Listen {
    /// The bounds of each boot HTTP listener's connections.
    pub fn http_conn_limits(&self) -> rackboot_boot::ConnLimits {
        conn_limits(
            rackboot_boot::ConnLimits::BOOT,
            self.http_header_read_timeout_secs,
            self.http_max_connections,
        )
    }

    /// Refuses connection bounds out of range.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_conn_limits(
            "listen.http_header_read_timeout_secs",
            self.http_header_read_timeout_secs,
            "listen.http_max_connections",
            self.http_max_connections,
        )
    }
}

/// `defaults` with what the operator set.
fn conn_limits(
    defaults: rackboot_boot::ConnLimits,
    header_read_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
) -> rackboot_boot::ConnLimits {
    rackboot_boot::ConnLimits {
        header_read_timeout: header_read_timeout_secs
            .map_or(defaults.header_read_timeout, Duration::from_secs),
        max_connections: max_connections.unwrap_or(defaults.max_connections),
    }
}

/// The longest header-read timeout accepted: beyond it the timeout no
/// longer protects anything.
const MAX_HEADER_READ_TIMEOUT_SECS: u64 = 3600;

fn check_conn_limits(
    timeout_key: &str,
    timeout: Option<u64>,
    max_key: &str,
    max: Option<usize>,
) -> std::result::Result<(), String> {
    if let Some(t) = timeout
        && !(1..=MAX_HEADER_READ_TIMEOUT_SECS).contains(&t)
    {
        return Err(format!(
            "{timeout_key} = {t}: must be 1 to {MAX_HEADER_READ_TIMEOUT_SECS} seconds"
        ));
    }
    let limit = rackboot_boot::conn::MAX_CONNECTIONS_LIMIT;
    if let Some(m) = max
        && !(1..=limit).contains(&m)
    {
        return Err(format!("{max_key} = {m}: must be 1 to {limit}"));
    }
    Ok(())
}

/// The IPv6 companion of an IPv4 listener (see [`Listen::http6`]): the
/// wildcard for the wildcard, the server's IPv6 address for a specific IPv4
/// address, nothing when the listener is IPv6 already, off or has no peer.
pub fn ipv6_companion(v4: Toggle<SocketAddr>, server_ip6: Option<Ipv6Addr>) -> Toggle<SocketAddr> {
    match v4 {
        Toggle::On(SocketAddr::V4(a)) if a.ip().is_unspecified() => {
            Toggle::On(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), a.port()))
        }
        Toggle::On(SocketAddr::V4(a)) => match server_ip6 {
            Some(ip6) => Toggle::On(SocketAddr::new(ip6.into(), a.port())),
            None => Toggle::Off,
        },
        Toggle::On(SocketAddr::V6(_)) | Toggle::Off => Toggle::Off,
    }
}

/// An address, or the string "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toggle<T> {
    On(T),
    Off,
}

impl Serialize for Toggle<SocketAddr> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Toggle::On(addr) => s.collect_str(addr),
            Toggle::Off => s.serialize_str("off"),
        }
    }
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

#[derive(Debug, Deserialize, Serialize)]
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
        let mut config: Config = toml::from_str(text)?;
        let table: toml::Table = toml::from_str(text)?;
        let has = |section: &str, key: &str| {
            table
                .get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|s| s.contains_key(key))
        };
        config.explicit = Explicit {
            asset_dir: has("boot", "asset_dir"),
            loader_dir: has("boot", "loader_dir"),
            tftp_listen: has("listen", "tftp"),
        };
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Config::from_toml(&text).with_context(|| format!("in config {}", path.display()))
    }

    pub fn store_url(&self) -> String {
        self.store
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", self.state_dir.join(DB_FILE).display()))
    }

    /// The SQLite database file of the store, when the store is one.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let url = self.store_url();
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .or_else(|| (!url.contains("://")).then_some(url.as_str()))?;
        (path != ":memory:").then(|| PathBuf::from(path))
    }

    /// The server's provisioning address: `server_ip`, else the first IPv4 of
    /// `interface`. An interface with only IPv6 (an IPv6-only network) has none.
    pub fn resolve_server_ip(&self) -> Result<Option<Ipv4Addr>> {
        if let Some(ip) = self.server_ip {
            return Ok(Some(ip));
        }
        let Some(name) = &self.interface else {
            return Ok(None);
        };
        let iface = find_interface(name)?;
        match iface.ipv4.first() {
            Some(net) => Ok(Some(net.addr())),
            None if global_ipv6(&iface).is_some() => Ok(None),
            None => bail!("interface {name:?} has no IPv4 address; set server_ip"),
        }
    }

    /// The server's IPv6 provisioning address: `server_ip6`, else the first
    /// global IPv6 address of `interface`, else none.
    pub fn resolve_server_ip6(&self) -> Result<Option<Ipv6Addr>> {
        if let Some(ip) = self.server_ip6 {
            return Ok(Some(ip));
        }
        match &self.interface {
            Some(name) => Ok(global_ipv6(&find_interface(name)?)),
            None => Ok(None),
        }
    }

    /// Fills `listen.http6` and `listen.tftp6` when not given (see [`Listen::http6`]).
    pub fn resolve_ipv6_listeners(&mut self, server_ip6: Option<Ipv6Addr>) {
        if self.listen.http6.is_none() {
            self.listen.http6 = Some(ipv6_companion(self.listen.http, server_ip6));
        }
        if self.listen.tftp6.is_none() {
            self.listen.tftp6 = Some(ipv6_companion(self.listen.tftp, server_ip6));
        }
    }

    /// Fills the settings that follow others, as `serve` runs with them: the
    /// directories under `state_dir` unless given, TFTP on the HTTP
    /// listener's address unless given, the boot URLs' port from the HTTP
    /// listener. Idempotent.
    pub fn resolve(&mut self) {
        let state = self.state_dir.clone();
        if !self.explicit.asset_dir {
            self.boot.asset_dir = state.join(ASSETS_DIR);
        }
        if !self.explicit.loader_dir {
            self.boot.loader_dir = state.join(TFTP_DIR);
            // UEFI HTTP-boot clients fetch iPXE over HTTP: default to Debian's copies.
            if !self.boot.loader_dir.is_dir() && Path::new(DEBIAN_IPXE_DIR).is_dir() {
                self.boot.loader_dir = PathBuf::from(DEBIAN_IPXE_DIR);
            }
        }
        if !self.explicit.tftp_listen {
            self.listen.tftp = Toggle::On(default_tftp_for(self.listen.http));
        }
        if let Toggle::On(addr) = self.listen.http {
            self.boot.http_port = addr.port();
        }
        if self.boot.ramdisk_dir.is_none() {
            self.boot.ramdisk_dir = Some(state.join(RAMDISK_DIR));
        }
        if self.boot.images_dir.is_none() {
            self.boot.images_dir = Some(state.join(IMAGES_DIR));
        }
        if self.engine.workflows_dir.is_none() {
            self.engine.workflows_dir = Some(state.join(WORKFLOWS_DIR));
        }
    }
}

/// Where TFTP listens unless told: port 69 on the HTTP listener's address,
/// so `--api-listen 127.0.0.1:8080` does not open TFTP to every network.
pub fn default_tftp_for(http: Toggle<SocketAddr>) -> SocketAddr {
    match http {
        Toggle::On(addr) => SocketAddr::new(addr.ip(), 69),
        Toggle::Off => SocketAddr::from(([0, 0, 0, 0], 69)),
    }
}

/// The SQLite database in the state directory (the default store).
pub const DB_FILE: &str = "rackboot.db";
/// Kernels, initrds and images served under /assets/, in the state directory
/// unless `boot.asset_dir` says otherwise.
pub const ASSETS_DIR: &str = "assets";
/// Loader files, in the state directory unless `boot.loader_dir` says otherwise.
pub const TFTP_DIR: &str = "tftp";
/// Debian's iPXE builds (package ipxe).
pub const DEBIAN_IPXE_DIR: &str = "/usr/lib/ipxe";

/// An interface's first global (not link-local) IPv6 address.
fn global_ipv6(iface: &netdev::Interface) -> Option<Ipv6Addr> {
    iface
        .ipv6
        .iter()
        .map(|n| n.addr())
        .find(|a| !a.is_unicast_link_local() && !a.is_loopback())
}

fn find_interface(name: &str) -> Result<netdev::Interface> {
    let all = netdev::get_interfaces();
    let names: Vec<String> = all.iter().map(|i| i.name.clone()).collect();
    all.into_iter().find(|i| i.name == name).with_context(|| {
        format!(
            "interface {name:?} does not exist (this host has: {})",
            names.join(", ")
        )
    })
}

/// Checks a tracing filter as operators write it: levels (`info`) and
/// `target=level` directives, comma-separated. tracing would take a bare word
/// such as `verbose` as a target name and log nothing useful, so a directive
/// without `=` must be a level.
pub fn validate_log_level(filter: &str) -> std::result::Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let is_level = |s: &str| LEVELS.contains(&s.trim().to_ascii_lowercase().as_str());
    if filter.trim().is_empty() {
        return Err("is empty: use one of trace, debug, info, warn, error, off".into());
    }
    for directive in filter.split(',') {
        let directive = directive.trim();
        let ok = match directive.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(directive),
        };
        if !ok {
            return Err(format!(
                "{directive:?} is not a level or TARGET=LEVEL (levels: {})",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter)
        .map(|_| ())
        .map_err(|e| format!("{filter:?}: {e}"))
}

/// A config that passed every check `serve` makes before it binds anything
/// (no file or directory is created by checking).
pub struct Checked {
    pub config: Config,
    /// The server's provisioning address, when it has one.
    pub server_ip: Option<Ipv4Addr>,
    /// The server's IPv6 provisioning address, when it has one.
    pub server_ip6: Option<Ipv6Addr>,
}

/// Everything `serve` checks before it creates or binds anything; shared by
/// `serve` and `check-config`, so a config that passes here fails later only
/// for reasons of the moment (a port in use, a database unreachable).
pub fn preflight(mut config: Config) -> Result<Checked> {
    config.resolve();
    validate_log_level(&config.log.level).map_err(|e| anyhow::anyhow!("log.level {e}"))?;
    let url = config.store_url();
    let scheme_ok = url.starts_with("postgres://")
        || url.starts_with("postgresql://")
        || url.starts_with("sqlite:")
        || !url.contains("://");
    if !scheme_ok {
        bail!(
            "store {:?}: use sqlite:PATH or postgres://...",
            rackboot_store::redact_url(&url)
        );
    }
    if let Some(dhcp) = &config.dhcp {
        dhcp.compile().context("in [dhcp]")?;
        if config.interface.is_none() {
            bail!("[dhcp] needs `interface` (the provisioning interface DHCP binds to)");
        }
    }
    config.boot.validate().context("in [boot]")?;
    if let Some(menu) = &config.boot.unknown_menu {
        menu.validate()
            .map_err(|e| anyhow::anyhow!("boot.unknown_menu.{e}"))?;
    }
    config.tftp.validate().context("in [tftp]")?;
    if let Some(root) = &config.tftp.root
        && !root.is_dir()
    {
        bail!("tftp.root {} is not a directory", root.display());
    }
    if let Some(name) = &config.interface {
        find_interface(name)?;
    }
    let server_ip = config.resolve_server_ip()?;
    if config.dhcp.is_some() && server_ip.is_none() {
        bail!("DHCP needs the server address: set server_ip or an interface with IPv4");
    }
    let server_ip6 = config.resolve_server_ip6()?;
    if let Some(dhcp6) = &config.dhcp6 {
        dhcp6.compile().context("in [dhcp6]")?;
        if config.interface.is_none() {
            bail!("[dhcp6] needs `interface` (the provisioning interface DHCPv6 binds to)");
        }
        if server_ip6.is_none() {
            bail!("DHCPv6 needs a global IPv6 address on the interface (or server_ip6)");
        }
    }
    config.api.validate().map_err(anyhow::Error::msg)?;
    config.listen.validate().map_err(anyhow::Error::msg)?;
    if let (Some(api), Toggle::On(http)) = (config.api.listen, config.listen.http)
        && api.port() == http.port()
        && (api.ip() == http.ip() || api.ip().is_unspecified() || http.ip().is_unspecified())
    {
        bail!(
            "api.listen {api} overlaps [listen] http {http}: give the API another port, or \
             leave api.listen out to share the boot listener"
        );
    }
    if let (Some(_), Some(ip)) = (&config.dhcp, server_ip)
        && let Some(why) = boot_unreachable(
            config.listen.http,
            config.listen.tftp,
            ip,
            config.boot.public_url.as_deref(),
        )
    {
        bail!("{why}");
    }
    config.resolve_ipv6_listeners(server_ip6);
    Ok(Checked {
        config,
        server_ip,
        server_ip6,
    })
}

/// `rackboot check-config`: the config file and flags `serve` would get.
#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub serve: crate::serve::ServeArgs,
    /// How to print the effective config: text is TOML, as in a config file.
    #[arg(long, short = 'o', value_enum, default_value_t = crate::output::Format::Text)]
    pub output: crate::output::Format,
}

/// `rackboot check-config`: every check `serve` makes before it starts, then
/// the effective config (defaults filled, flags applied) on standard output.
pub fn check(args: &CheckArgs) -> Result<()> {
    let checked = preflight(crate::serve::effective_config(&args.serve)?)?;
    if let Some(warning) =
        api_exposure_warning(&checked.config, checked.server_ip, checked.server_ip6)
    {
        eprintln!("warning: {warning}");
    }
    match args.output {
        crate::output::Format::Text => out!("{}", to_toml(&checked.config)?),
        crate::output::Format::Json => crate::output::print_json(&checked.config),
    }
    let source = args.serve.config.as_ref().map_or_else(
        || "defaults and flags".to_string(),
        |p| p.display().to_string(),
    );
    eprintln!("config OK: {source}");
    Ok(())
}

/// The effective config as TOML, the form operators write.
pub fn to_toml(config: &Config) -> Result<String> {
    toml::to_string(config).context("printing the config as TOML")
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
    fn log_levels_are_levels() {
        for ok in [
            "info",
            "DEBUG",
            "rackboot_dhcp=debug,info",
            "warn,tower_http=off",
        ] {
            assert_eq!(validate_log_level(ok), Ok(()), "{ok}");
        }
        for bad in ["verbose", "", "info,chatty", "rackboot=loud", "=info"] {
            assert!(validate_log_level(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn effective_config_round_trips_as_toml() {
        let mut c = Config::from_toml(
            "state_dir = \"/srv/rb\"\n[listen]\nhttp = \"10.0.0.1:8081\"\n[boot]\nloader_dir = \"/srv/tftp\"\n",
        )
        .unwrap();
        c.resolve();
        assert_eq!(c.listen.tftp, Toggle::On("10.0.0.1:69".parse().unwrap()));
        assert_eq!(c.boot.http_port, 8081);
        assert_eq!(c.boot.loader_dir, Path::new("/srv/tftp"));
        let text = to_toml(&c).unwrap();
        let mut again = Config::from_toml(&text).unwrap();
        again.resolve();
        assert_eq!(to_toml(&again).unwrap(), text);
    }

    #[test]
    fn ipv6_listeners_follow_the_ipv4_ones() {
        let ip6: Ipv6Addr = "2001:db8:77::1".parse().unwrap();
        let on = |s: &str| Toggle::On(s.parse::<SocketAddr>().unwrap());
        for (v4, server6, want) in [
            ("0.0.0.0:8080", None, on("[::]:8080")),
            ("0.0.0.0:69", Some(ip6), on("[::]:69")),
            ("10.77.0.1:8080", Some(ip6), on("[2001:db8:77::1]:8080")),
            ("10.77.0.1:8080", None, Toggle::Off),
            ("[2001:db8:77::1]:8080", Some(ip6), Toggle::Off),
        ] {
            assert_eq!(ipv6_companion(on(v4), server6), want, "{v4} {server6:?}");
        }
        assert_eq!(ipv6_companion(Toggle::Off, Some(ip6)), Toggle::Off);
        // Given ones are kept; the others are filled.
        let mut c = Config::from_toml(
            "[listen]\nhttp = \"10.0.0.1:8080\"\nhttp6 = \"off\"\n[dhcp6]\n[[dhcp6.subnets]]\nprefix = \"2001:db8:77::/64\"\nranges = [\"2001:db8:77::100-2001:db8:77::1ff\"]\n",
        )
        .unwrap();
        c.resolve();
        c.resolve_ipv6_listeners(Some(ip6));
        assert_eq!(c.listen.http6, Some(Toggle::Off));
        assert_eq!(c.listen.tftp6, Some(on("[2001:db8:77::1]:69")));
        assert_eq!(c.dhcp6.unwrap().subnets.len(), 1);
        let err = Config::from_toml("[dhcp6]\nrapid = true\n").unwrap_err();
        assert!(format!("{err:#}").contains("rapid"), "{err:#}");
    }

    #[test]
    fn boot_files_must_be_reachable_where_dhcp_points() {
        let on = |s: &str| Toggle::On(s.parse::<SocketAddr>().unwrap());
        let ip: Ipv4Addr = "10.77.0.1".parse().unwrap();
        for (http, tftp, public_url, refused) in [
            (on("0.0.0.0:8080"), on("0.0.0.0:69"), None, None),
            (on("10.77.0.1:8080"), on("10.77.0.1:69"), None, None),
            (on("[::]:8080"), Toggle::Off, None, None),
            // The API's loopback address given as the only listener.
            (
                on("127.0.0.1:8080"),
                on("0.0.0.0:69"),
                None,
                Some("boot HTTP listens on 127.0.0.1:8080 only"),
            ),
            (
                on("10.9.9.9:8080"),
                on("0.0.0.0:69"),
                None,
                Some("http://10.77.0.1:8080"),
            ),
            (Toggle::Off, Toggle::Off, None, Some("boot HTTP is off")),
            // A proxy in front: the operator's to get right.
            (
                on("127.0.0.1:8080"),
                Toggle::Off,
                Some("http://boot.example"),
                None,
            ),
            (
                on("0.0.0.0:8080"),
                on("127.0.0.1:69"),
                None,
                Some("TFTP listens on 127.0.0.1:69 only"),
            ),
        ] {
            let got = boot_unreachable(http, tftp, ip, public_url);
            match (refused, &got) {
                (None, None) => {}
                (Some(want), Some(why)) => assert!(why.contains(want), "{http:?}: {why}"),
                _ => panic!("{http:?} {tftp:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn api_tls_settings() {
        let parse = |text: &str| Config::from_toml(text).map(|c| c.api.validate());
        assert_eq!(parse("").unwrap(), Ok(()));
        assert_eq!(
            parse("[api]\nlisten = \"127.0.0.1:8443\"\ntls = \"self-signed\"\n").unwrap(),
            Ok(())
        );
        for (text, says) in [
            ("[api]\ntls = \"self-signed\"\n", "own listener"),
            (
                "[api]\nlisten = \"127.0.0.1:8443\"\ntls = \"files\"\n",
                "needs api.tls_cert",
            ),
            (
                "[api]\nlisten = \"127.0.0.1:8443\"\ntls = \"files\"\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\n",
                "api.tls_cert /nonexistent/c.pem is not a file",
            ),
            (
                "[api]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"/etc/hostname\"\n",
                "only with tls = \"files\"",
            ),
        ] {
            let err = parse(text).unwrap().unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        assert!(Config::from_toml("[api]\ntls = \"on\"\n").is_err());
    }

    #[test]
    fn http_connection_limits() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(
            config.listen.http_conn_limits(),
            rackboot_boot::ConnLimits::BOOT
        );
        assert_eq!(config.api.conn_limits(), rackboot_boot::ConnLimits::API);
        let config = Config::from_toml(
            "[listen]\nhttp_header_read_timeout_secs = 5\nhttp_max_connections = 100\n\
             [api]\nheader_read_timeout_secs = 7\nmax_connections = 9\n",
        )
        .unwrap();
        assert_eq!(
            config.listen.http_conn_limits(),
            rackboot_boot::ConnLimits {
                header_read_timeout: Duration::from_secs(5),
                max_connections: 100,
            }
        );
        assert_eq!(
            config.api.conn_limits(),
            rackboot_boot::ConnLimits {
                header_read_timeout: Duration::from_secs(7),
                max_connections: 9,
            }
        );
        assert_eq!(config.listen.validate(), Ok(()));
        assert_eq!(config.api.validate(), Ok(()));
        for (text, says) in [
            (
                "[listen]\nhttp_header_read_timeout_secs = 0\n",
                "listen.http_header_read_timeout_secs = 0",
            ),
            (
                "[listen]\nhttp_max_connections = 0\n",
                "listen.http_max_connections = 0",
            ),
            (
                "[api]\nheader_read_timeout_secs = 86400\n",
                "api.header_read_timeout_secs = 86400",
            ),
            (
                "[api]\nmax_connections = 100000000\n",
                "api.max_connections = 100000000",
            ),
        ] {
            let config = Config::from_toml(text).unwrap();
            let err = config
                .listen
                .validate()
                .and_then(|()| config.api.validate())
                .unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
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
