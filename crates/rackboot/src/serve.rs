//! `rackboot serve`: wires the store, event log, inventory and every service
//! into one process, and shuts them down together.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use rackboot_core::{ClientAttribution, EventHub, EventKind, EventPersistQueue, NewEvent};
use rackboot_store::Store;
use tokio_util::sync::CancellationToken;

use crate::config::{ADMIN_TOKEN_FILE, Checked, Config, Toggle};
use crate::state::StateLock;

/// An optional address for logs: the address, or "off" (not `Some(...)`).
fn shown(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_string(), |a| a.to_string())
}

#[derive(Args, Clone, Default)]
pub struct ServeArgs {
    /// Config file (TOML; see examples/). The flags below override it.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Provisioning interface: DHCP binds to it, and its first IPv4 is the
    /// address machines fetch files from. [default: none]
    #[arg(long, value_name = "NAME")]
    pub interface: Option<String>,
    /// Full DHCP handing out this pool on the interface's subnet, e.g.
    /// 10.77.0.100-10.77.0.200. [default: no DHCP]
    #[arg(long, conflicts_with = "proxy_dhcp", value_name = "FIRST-LAST")]
    pub dhcp_range: Option<String>,
    /// ProxyDHCP beside an existing DHCP server: boot information only, no addresses.
    #[arg(long)]
    pub proxy_dhcp: bool,
    /// State directory: database, admin token, secret key, OS and image
    /// catalogs, assets. [default: /var/lib/rackboot]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Store URL: sqlite:PATH or postgres://USER@HOST/DB. [default: sqlite:STATE_DIR/rackboot.db]
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Listen address of the API (REST, event stream, /metrics). Alone, boot
    /// HTTP shares it (it sets [listen] http); with --http-listen or `[api]
    /// listen` in the config, the API listens there by itself.
    /// [default: 0.0.0.0:8080, shared with boot HTTP]
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub api_listen: Option<SocketAddr>,
    /// Listen address of boot HTTP (scripts, kernels, install files, the
    /// agent's endpoints): where machines fetch from. [default: 0.0.0.0:8080]
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub http_listen: Option<SocketAddr>,
    /// TFTP listen address, or "off". [default: port 69 on the boot HTTP address]
    #[arg(long, value_name = "ADDRESS:PORT|off")]
    pub tftp_listen: Option<String>,
    /// Directory served over TFTP besides the loader files. [default: none]
    #[arg(long, value_name = "DIR")]
    pub tftp_root: Option<PathBuf>,
    /// Directory of kernels, initrds and images served under /assets/. [default: STATE_DIR/assets]
    #[arg(long, value_name = "DIR")]
    pub asset_dir: Option<PathBuf>,
    /// Server address on the provisioning network. [default: the interface's first IPv4]
    #[arg(long, value_name = "IPV4")]
    pub server_ip: Option<Ipv4Addr>,
    /// Server IPv6 address on the provisioning network. [default: the interface's
    /// first global IPv6]
    #[arg(long, value_name = "IPV6")]
    pub server_ip6: Option<Ipv6Addr>,
    /// DHCPv6 (with router advertisements) handing out this pool on the
    /// interface's IPv6 prefix, e.g. 2001:db8:77::100-2001:db8:77::1ff.
    /// [default: no DHCPv6]
    #[arg(long, value_name = "FIRST-LAST")]
    pub dhcp6_range: Option<String>,
}

/// Builds the effective config: file (or defaults), then flags.
pub fn effective_config(args: &ServeArgs) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(i) = &args.interface {
        config.interface = Some(i.clone());
    }
    if let Some(d) = &args.state_dir {
        config.state_dir = d.clone();
    }
    if let Some(s) = &args.store {
        config.store = Some(s.clone());
    }
    if let Some(h) = args.http_listen {
        config.listen.http = Toggle::On(h);
    }
    if let Some(a) = args.api_listen {
        // The API's own listener when boot HTTP has its own address;
        // otherwise the one listener both share.
        if args.http_listen.is_some() || config.api.listen.is_some() {
            config.api.listen = Some(a);
        } else {
            config.listen.http = Toggle::On(a);
        }
    }
    if let Some(t) = &args.tftp_listen {
        config.explicit.tftp_listen = true;
        config.listen.tftp =
            if t == "off" {
                Toggle::Off
            } else {
                Toggle::On(t.parse().with_context(|| {
                    format!("--tftp-listen {t:?}: expected ADDRESS:PORT or off")
                })?)
            };
    }
    if let Some(ip) = args.server_ip {
        config.server_ip = Some(ip);
    }
    if let Some(ip) = args.server_ip6 {
        config.server_ip6 = Some(ip);
    }
    if let Some(root) = &args.tftp_root {
        config.tftp.root = Some(root.clone());
    }
    if let Some(dir) = &args.asset_dir {
        config.boot.asset_dir = dir.clone();
        config.explicit.asset_dir = true;
    }
    if args.proxy_dhcp || args.dhcp_range.is_some() {
        let iface = config.interface.clone().context(
            "--dhcp-range and --proxy-dhcp need --interface (or `interface` in the config)",
        )?;
        let server_ip = config.resolve_server_ip()?.context("no server address")?;
        config.dhcp = Some(crate::adhoc::quick_dhcp(
            &iface,
            server_ip,
            args.dhcp_range.as_deref(),
            args.proxy_dhcp,
        )?);
    }
    if let Some(range) = &args.dhcp6_range {
        let iface = config
            .interface
            .clone()
            .context("--dhcp6-range needs --interface (or `interface` in the config)")?;
        let server_ip6 = config.resolve_server_ip6()?.with_context(|| {
            format!("--dhcp6-range: {iface} has no global IPv6 address (or pass --server-ip6)")
        })?;
        config.dhcp6 = Some(crate::adhoc::quick_dhcp6(&iface, server_ip6, range)?);
    }
    Ok(config)
}

/// A UDP or TCP socket bound to an IPv6 address with IPV6_V6ONLY, so it sits
/// beside an IPv4 listener on the same port.
fn bind_v6only(addr: SocketAddr, kind: socket2::Type) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV6, kind, None)?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if kind == socket2::Type::STREAM {
        socket.listen(1024)?;
    }
    Ok(socket)
}

pub async fn run(args: ServeArgs) -> Result<()> {
    // Every check before anything is created or bound: a broken config
    // leaves no state directory, token or half-started server behind.
    let checked = crate::config::preflight(effective_config(&args)?)?;
    init_logging(&checked.config);
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    let server = Server::start(checked, shutdown.clone()).await?;
    server.wait().await
}

pub fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    // Colour only for people: a log file or journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second init (tests start several servers) is harmless.
    let _ = if config.log.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot watch SIGTERM: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        shutdown.cancel();
    });
}

/// The API listener's TLS: none, the configured files, or the state
/// directory's self-signed certificate (made on first start).
fn load_api_tls(
    config: &Config,
    server_ip: Option<Ipv4Addr>,
    server_ip6: Option<Ipv6Addr>,
) -> Result<Option<crate::tls::ServerTls>> {
    use crate::config::TlsMode;
    let api = &config.api;
    Ok(match (api.tls, &api.tls_cert, &api.tls_key) {
        (TlsMode::Off, _, _) => None,
        (TlsMode::Files, Some(cert), Some(key)) => Some(crate::tls::load_files(cert, key)?),
        (TlsMode::Files, _, _) => bail!("api.tls = \"files\" needs api.tls_cert and api.tls_key"),
        (TlsMode::SelfSigned, _, _) => {
            // The names it may be reached by (the CLI pins the certificate;
            // other clients may check a name).
            let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
            if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                names.push(host.trim().to_string());
            }
            names.extend(server_ip.map(|ip| ip.to_string()));
            names.extend(server_ip6.map(|ip| ip.to_string()));
            names.extend(
                api.listen
                    .map(|a| a.ip())
                    .filter(|ip| !ip.is_unspecified())
                    .map(|ip| ip.to_string()),
            );
            names.retain(|n| !n.is_empty());
            names.dedup();
            Some(crate::tls::self_signed(&config.state_dir, &names)?)
        }
    })
}

/// Reads the admin token, creating it (mode 0600) on first start.
pub fn ensure_admin_token(state_dir: &Path) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = state_dir.join(ADMIN_TOKEN_FILE);
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if t.is_empty() {
            bail!("{} is empty; delete it to get a new token", path.display());
        }
        return Ok(t);
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
    tracing::info!("created admin token in {}", path.display());
    Ok(token)
}

/// Most events stored in one write.
const EVENT_BATCH_MAX: usize = 4096;
/// Writes of the event log are at least this far apart: under load (a DHCP
/// storm is two events per exchange) a write takes everything queued since the
/// last one. One write per 50 ms instead of one per handful of events cut the
/// server's CPU per DHCP exchange by about 14% at 8,000/s. An event arriving
/// after a quiet spell is written at once.
const EVENT_WRITE_INTERVAL: Duration = Duration::from_millis(50);

/// Stores events in batches, then hands them, with ids, to live subscribers.
async fn persist_events(mut queue: EventPersistQueue, hub: EventHub, store: Arc<dyn Store>) {
    let mut attribution = ClientAttribution::default();
    let mut last_write: Option<tokio::time::Instant> = None;
    while let Some(mut batch) = queue.next_batch(EVENT_BATCH_MAX).await {
        if let Some(last) = last_write
            && batch.len() < EVENT_BATCH_MAX
        {
            let next = last + EVENT_WRITE_INTERVAL;
            if next > tokio::time::Instant::now() {
                tokio::time::sleep_until(next).await;
                queue.take_ready(&mut batch, EVENT_BATCH_MAX);
            }
        }
        last_write = Some(tokio::time::Instant::now());
        for event in &mut batch {
            attribution.observe(event);
        }
        match store.append_events(batch).await {
            Ok(events) => hub.publish(events),
            Err(e) => {
                metrics::counter!("rackboot_events_lost_total").increment(1);
                tracing::error!("cannot store events: {e}");
            }
        }
    }
}

/// A running server: its tasks and the token that stops them.
pub struct Server {
    tasks: tokio::task::JoinSet<Result<()>>,
    shutdown: CancellationToken,
    /// Held for the server's life: one server per state directory.
    _lock: StateLock,
}

impl Server {
    /// Prepares the state directory (private, locked) and starts every service.
    pub async fn start(checked: Checked, shutdown: CancellationToken) -> Result<Server> {
        let lock = crate::state::prepare(&checked.config)?;
        Server::start_locked(checked, lock, shutdown).await
    }

    /// As [`Server::start`], with the state directory already prepared.
    pub async fn start_locked(
        checked: Checked,
        mut lock: StateLock,
        shutdown: CancellationToken,
    ) -> Result<Server> {
        let Checked {
            config,
            server_ip,
            server_ip6,
        } = checked;
        let admin_token = ensure_admin_token(&config.state_dir)?;
        let api_tls = load_api_tls(&config, server_ip, server_ip6)?;
        if let Some(tls) = &api_tls {
            tracing::info!(
                cert = %tls.cert_path.display(),
                fingerprint = %tls.fingerprint,
                "API TLS certificate (SHA-256); clients pin it on first use"
            );
        }
        let store = rackboot_store::open(&config.store_url()).await?;

        let (events, queue) = EventHub::new(65_536);
        let mut tasks = tokio::task::JoinSet::new();
        {
            let (hub, store) = (events.clone(), store.clone());
            tasks.spawn(async move {
                persist_events(queue, hub, store).await;
                Ok(())
            });
        }

        let metrics = rackboot_api::metrics_catalog::install_recorder();
        if let Some(handle) = metrics.clone() {
            let stop = shutdown.clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    handle.run_upkeep();
                    tokio::select! { _ = stop.cancelled() => {}, _ = tokio::time::sleep(Duration::from_secs(5)) => {} }
                }
            });
        }

        let os_dir = config.state_dir.join(crate::config::OS_DIR);
        std::fs::create_dir_all(&os_dir)
            .with_context(|| format!("creating the OS catalog {}", os_dir.display()))?;
        let fleet =
            rackboot_fleet::Fleet::load(store.clone(), Some(os_dir.clone()), events.clone())
                .await?;
        let inventory = fleet.inventory().clone();
        fleet.set_discovery_limit(rackboot_fleet::DiscoveryLimit {
            per_minute: config.discovery.per_minute,
        });
        {
            // Outside `tasks`: no sockets, ends with the shutdown token.
            let (store, stop) = (store.clone(), shutdown.clone());
            tokio::spawn(rackboot_fleet::retention::run_event_pruning(
                store,
                config.events.to_retention(),
                async move { stop.cancelled().await },
            ));
        }

        // Bind everything before starting anything, so a port in use fails the
        // start instead of leaving half a server running.
        let http_listener = match config.listen.http {
            Toggle::On(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding HTTP on {addr}"))?,
            ),
            Toggle::Off => None,
        };
        let http_addr = http_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        // The API's own listener, when it has one.
        let api_listener = match config.api.listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the API on {addr}"))?,
            ),
            None => None,
        };
        let api_addr = api_listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let tftp_socket = match config.listen.tftp {
            Toggle::On(addr) => Some(
                tokio::net::UdpSocket::bind(addr)
                    .await
                    .with_context(|| format!("binding TFTP on {addr}"))?,
            ),
            Toggle::Off => None,
        };
        let tftp_addr = tftp_socket.as_ref().map(|s| s.local_addr()).transpose()?;
        // IPv6 companions of the HTTP and TFTP listeners (see `Listen::http6`).
        let http6_listener = match config.listen.http6 {
            Some(Toggle::On(addr)) => Some(
                bind_v6only(addr, socket2::Type::STREAM)
                    .and_then(|s| tokio::net::TcpListener::from_std(s.into()))
                    .with_context(|| format!("binding HTTP on {addr}"))?,
            ),
            _ => None,
        };
        let http6_addr = http6_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        let tftp6_socket = match config.listen.tftp6 {
            Some(Toggle::On(addr)) => Some(
                bind_v6only(addr, socket2::Type::DGRAM)
                    .and_then(|s| tokio::net::UdpSocket::from_std(s.into()))
                    .with_context(|| format!("binding TFTP on {addr}"))?,
            ),
            _ => None,
        };
        let tftp6_addr = tftp6_socket.as_ref().map(|s| s.local_addr()).transpose()?;
        let dhcp6_sockets = match &config.dhcp6 {
            Some(dhcp6) => {
                let iface = config
                    .interface
                    .clone()
                    .context("the [dhcp6] section needs `interface`")?;
                Some(
                    rackboot_dhcp6::Dhcp6Sockets::bind(&iface, dhcp6.router_advertisements.enabled)
                        .with_context(|| format!("binding DHCPv6 on {iface}"))?,
                )
            }
            None => None,
        };
        let dhcp_sockets = match &config.dhcp {
            Some(dhcp) => {
                let iface = config
                    .interface
                    .clone()
                    .context("the [dhcp] section needs `interface` (the provisioning interface)")?;
                let ip = server_ip.context(
                    "DHCP needs the server address: set server_ip or an interface with IPv4",
                )?;
                Some(
                    rackboot_dhcp::DhcpSockets::bind(&iface, ip, dhcp)
                        .with_context(|| format!("binding DHCP on {iface}"))?,
                )
            }
            None => None,
        };

        let mut addresses = Vec::new();
        addresses.extend(http_addr.map(|a| ("http", a)));
        addresses.extend(api_addr.map(|a| ("api", a)));
        addresses.extend(tftp_addr.map(|a| ("tftp", a)));
        addresses.extend(http6_addr.map(|a| ("http6", a)));
        addresses.extend(tftp6_addr.map(|a| ("tftp6", a)));
        lock.record(&addresses)?;

        // Directories, ports and loader paths were resolved by the preflight.
        let mut boot_config = config.boot.clone();
        if let Some(addr) = http_addr {
            // Port 0 in tests: the port actually bound.
            boot_config.http_port = addr.port();
        }
        boot_config.served_subnets = crate::install_wiring::served_subnets(config.dhcp.as_ref());
        // One key seals BMC passwords and install secrets (Windows passwords).
        let secret_key = Arc::new(crate::config::secret_key(&config.state_dir)?);
        // Filled by the DHCP server; agent tokens are bound to these addresses.
        let bound_leases = rackboot_core::BoundLeases::default();
        let boot = rackboot_boot::BootService::with_parts(
            fleet.clone(),
            boot_config.clone(),
            Some(secret_key.clone()),
            bound_leases.clone(),
        )
        .context("in [boot]")?;

        if config.power.allow_fake_bmc {
            tracing::warn!("fake:// BMCs allowed: their power actions touch no hardware");
            rackboot_power::fake::enable();
        }
        let power_api = rackboot_api::power::PowerApi {
            controller: Arc::new(rackboot_power::PowerController::new(
                rackboot_power::PowerConfig {
                    max_concurrent: config.power.max_concurrent.max(1),
                    ..rackboot_power::PowerConfig::default()
                },
            )),
            key: secret_key.clone(),
            states: rackboot_power::PowerStateMap::new(),
        };
        boot.set_power_controller(power_api.controller.clone());
        // The base URL machines (and their agents) reach boot HTTP at.
        let boot_base_url = match (&boot_config.public_url, server_ip, server_ip6) {
            (Some(url), _, _) => url.trim_end_matches('/').to_string(),
            (None, Some(ip), _) => format!("http://{ip}:{}", boot_config.http_port),
            // An IPv6-only network.
            (None, None, Some(ip6)) => format!("http://[{ip6}]:{}", boot_config.http_port),
            (None, None, None) => format!("http://127.0.0.1:{}", boot_config.http_port),
        };

        // Several servers on one PostgreSQL store: follow the others' writes,
        // and join the cluster that splits machines between the live servers.
        let shared_store = store.backend() == "postgres";
        if shared_store {
            let (fleet, stop) = (fleet.clone(), shutdown.clone());
            tokio::spawn(fleet.follow_changes(
                Duration::from_secs(config.cluster.resync_secs.max(1)),
                async move { stop.cancelled().await },
            ));
        }
        if shared_store && config.cluster.enabled {
            let cluster = rackboot_fleet::Cluster::new(
                store.clone(),
                config.cluster.to_config(&boot_base_url),
            );
            // The first heartbeat before the services start, so this server
            // owns its machines from its first request.
            if let Err(e) = cluster.heartbeat().await {
                tracing::warn!(error = %e, "first cluster heartbeat failed; retrying in the background");
            }
            fleet.set_cluster(cluster.clone());
            let stop = shutdown.clone();
            tokio::spawn(cluster.run(async move { stop.cancelled().await }));
        }
        if config.power.sync_interval_secs > 0 {
            // Outside `tasks`: it has no sockets and ends with the shutdown token.
            let source = Arc::new(rackboot_api::power::InventoryPowerSource::new(
                inventory.clone(),
                power_api.key.clone(),
                fleet.cluster().cloned(),
            ));
            tokio::spawn(rackboot_power::run_power_sync(
                power_api.controller.clone(),
                source,
                power_api.states.clone(),
                events.clone(),
                Duration::from_secs(config.power.sync_interval_secs),
                shutdown.clone(),
            ));
        }

        let images_dir = boot_config.images_dir.clone();
        let engine_config = rackboot_engine::EngineConfig {
            max_running: config.engine.max_running.max(1),
            label_limits: config.engine.label_limits.clone(),
            heartbeat_secs: config.engine.heartbeat_secs.max(1),
            agent_lost_after: Duration::from_secs(config.engine.agent_lost_secs.max(10)),
            base_url: boot_base_url.clone(),
            images_dir: images_dir.clone(),
            workflows_dir: config.engine.workflows_dir.clone(),
            ..rackboot_engine::EngineConfig::default()
        };
        let (engine, engine_task) = rackboot_engine::Engine::start(
            fleet.clone(),
            Some(rackboot_engine::PowerDeps {
                controller: power_api.controller.clone(),
                key: secret_key.clone(),
            }),
            secret_key.clone(),
            engine_config,
            shutdown.clone(),
        )
        .await
        .context("starting the workflow engine")?;
        tasks.spawn(async move {
            engine_task.await.context("workflow engine")?;
            Ok(())
        });

        if config.alerts.enabled {
            // Outside `tasks`, like the power sync: no sockets, ends with the
            // shutdown token. Subscribed to events from this call on.
            let alerts = rackboot_alerts::run(
                fleet.clone(),
                secret_key.clone(),
                config.alerts.to_config(),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = alerts.await {
                    tracing::error!("{e}");
                }
            });
        }

        let mut services = Vec::new();
        let mut api_state = rackboot_api::ApiState::new(
            fleet.clone(),
            rackboot_api::AuthConfig::named([(ADMIN_TOKEN_FILE, admin_token.clone())]),
        );
        api_state.metrics = metrics.clone();
        api_state.power = Some(power_api.clone());
        api_state.secret_key = Some(secret_key.clone());
        api_state.boot_base_url = boot_base_url.clone();
        api_state.engine = Some(engine.clone());
        api_state.images_dir = images_dir.clone();
        api_state.asset_dir = Some(boot_config.asset_dir.clone());
        api_state.shutdown = shutdown.clone();
        api_state.validate_templates = Arc::new(rackboot_boot::validate_profile_templates);
        let mut service_list =
            service_infos(&config, [http_addr, http6_addr], [tftp_addr, tftp6_addr]);
        if let Some(addr) = api_addr {
            service_list.push(rackboot_api::ServiceInfo {
                name: "api".into(),
                enabled: true,
                detail: Some(match &api_tls {
                    Some(tls) => format!("listening on {addr}, TLS (SHA-256 {})", tls.fingerprint),
                    None => format!("listening on {addr}"),
                }),
            });
        }
        api_state.status = Arc::new(rackboot_api::StatusInfo {
            services: service_list,
            state_dir: Some(
                std::fs::canonicalize(&config.state_dir)
                    .unwrap_or_else(|_| config.state_dir.clone())
                    .display()
                    .to_string(),
            ),
            instance: Some(lock.instance.clone()),
            ..rackboot_api::StatusInfo::default()
        });
        let agent = rackboot_api::agent_http::router(rackboot_api::agent_http::AgentHttp {
            fleet: fleet.clone(),
            engine: engine.clone(),
            logs_dir: Some(config.state_dir.join(crate::config::AGENT_LOGS_DIR)),
        });
        // What machines fetch (and their agents call), on the provisioning network.
        let boot_app = rackboot_boot::router(boot.clone()).merge(agent);
        // What operators use: the API and, at / and /ui/*, the dashboard
        // (embedded files; the API does the rest).
        let api_app = rackboot_api::router(api_state).merge(rackboot_ui::router());
        // With its own listener the API is not on the boot listener at all.
        let http_app = if api_listener.is_some() {
            boot_app
        } else {
            boot_app.merge(api_app.clone())
        };
        // Header-read timeout and connection cap per listener (see
        // rackboot_boot::conn): a client that sends nothing holds no
        // connection for long, and a flood of them cannot open without end.
        let http_limits = config.listen.http_conn_limits();
        let api_limits = config.api.conn_limits();
        if let Some(listener) = http_listener {
            if let Some(listener6) = http6_listener {
                let app = http_app.clone();
                spawn_http(
                    &mut tasks,
                    listener6,
                    app,
                    http_limits,
                    "http6",
                    &shutdown,
                    "HTTP server (IPv6)",
                );
            }
            spawn_http(
                &mut tasks,
                listener,
                http_app,
                http_limits,
                "http",
                &shutdown,
                "HTTP server",
            );
            services.push("http");
        }
        if let Some(listener) = api_listener {
            match &api_tls {
                Some(tls) => {
                    let listener = crate::tls::TlsListener::new(
                        listener,
                        tls.config.clone(),
                        shutdown.clone(),
                    )
                    .context("the API's TLS listener")?;
                    spawn_http(
                        &mut tasks,
                        listener,
                        api_app,
                        api_limits,
                        "api",
                        &shutdown,
                        "API server (TLS)",
                    );
                }
                None => spawn_http(
                    &mut tasks,
                    listener,
                    api_app,
                    api_limits,
                    "api",
                    &shutdown,
                    "API server",
                ),
            }
            services.push("api");
        }
        if let Some(warning) = crate::config::api_exposure_warning(&config, server_ip, server_ip6) {
            tracing::warn!("{warning}");
        }

        let tftp_config = tftp_config_with_loaders(&config.tftp, &boot_config, &os_dir);
        for (socket, what) in [
            (tftp_socket, "TFTP server"),
            (tftp6_socket, "TFTP server (IPv6)"),
        ] {
            let Some(socket) = socket else { continue };
            let (content, hub, stop) = (boot.clone(), events.clone(), shutdown.clone());
            let tftp_config = tftp_config.clone();
            tasks.spawn(async move {
                rackboot_tftp::run(socket, tftp_config, content, hub, stop)
                    .await
                    .context(what)
            });
            if !services.contains(&"tftp") {
                services.push("tftp");
            }
        }

        if let (Some(sockets), Some(dhcp6)) = (dhcp6_sockets, config.dhcp6.clone()) {
            let state = rackboot_dhcp6::Dhcp6State {
                config: dhcp6,
                store: store.clone(),
                events: events.clone(),
                boot: boot.clone(),
                counters: Arc::new(rackboot_dhcp6::Dhcp6Counters::default()),
            };
            let stop = shutdown.clone();
            tasks.spawn(async move {
                rackboot_dhcp6::run(sockets, state, stop)
                    .await
                    .context("DHCPv6 server")
            });
            services.push("dhcp6");
        }

        if let (Some(sockets), Some(mut dhcp)) = (dhcp_sockets, config.dhcp.clone()) {
            // Servers sharing pools claim each address in the store.
            dhcp.shared_store = shared_store;
            let (store, hub, responder, bound, stop) = (
                store.clone(),
                events.clone(),
                boot.clone(),
                bound_leases.clone(),
                shutdown.clone(),
            );
            // In a cluster the live servers split the clients between them.
            let peers = fleet.cluster().map(|c| dhcp_peers(c, shutdown.clone()));
            tasks.spawn(async move {
                rackboot_dhcp::run_in_cluster(
                    sockets, dhcp, store, hub, responder, bound, peers, stop,
                )
                .await
                .context("DHCP server")
            });
            services.push("dhcp");
        }

        events.emit(
            NewEvent::new(
                EventKind::ServiceStarted,
                format!(
                    "rackboot {} started: {} (store {})",
                    env!("CARGO_PKG_VERSION"),
                    services.join(", "),
                    store.backend()
                ),
            )
            .data(serde_json::json!({
                "services": services,
                "http": http_addr.map(|a| a.to_string()),
                "api": api_addr.map(|a| a.to_string()),
                "tftp": tftp_addr.map(|a| a.to_string()),
                "http6": http6_addr.map(|a| a.to_string()),
                "tftp6": tftp6_addr.map(|a| a.to_string()),
            })),
        );
        tracing::info!(
            http = %shown(http_addr),
            api = %api_addr.map_or_else(|| "with http".to_string(), |a| a.to_string()),
            tftp = %shown(tftp_addr),
            http6 = %shown(http6_addr),
            tftp6 = %shown(tftp6_addr),
            services = %services.join(","),
            state_dir = %config.state_dir.display(),
            "rackboot serving"
        );
        Ok(Server {
            tasks,
            shutdown,
            _lock: lock,
        })
    }

    /// Runs until shutdown or until a service fails (which stops the others).
    pub async fn wait(mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = result {
                tracing::error!("{e:#}");
                first_error.get_or_insert(e);
                self.shutdown.cancel();
            } else if !self.shutdown.is_cancelled() && self.tasks.len() <= 1 {
                // Everything but the event log stopped on its own.
                self.shutdown.cancel();
            }
            if self.shutdown.is_cancelled() {
                // Give services a moment to finish, then leave.
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while self.tasks.join_next().await.is_some() {}
                })
                .await;
                break;
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Debian's loader files, served over TFTP under their usual names unless the
/// config maps those names itself.
pub const DEBIAN_LOADERS: &[(&str, &str)] = &[
    ("undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe"),
    ("ipxe.efi", "/usr/lib/ipxe/ipxe.efi"),
    ("snponly.efi", "/usr/lib/ipxe/snponly.efi"),
    ("pxelinux.0", "/usr/lib/PXELINUX/pxelinux.0"),
    ("ldlinux.c32", "/usr/lib/syslinux/modules/bios/ldlinux.c32"),
    ("menu.c32", "/usr/lib/syslinux/modules/bios/menu.c32"),
    ("libutil.c32", "/usr/lib/syslinux/modules/bios/libutil.c32"),
    // Secure Boot: Microsoft-signed shim (shim-signed), which loads the
    // Debian-signed network GRUB above from beside itself.
    (
        "grubx64.efi",
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
    ),
    ("shimx64.efi", "/usr/lib/shim/shimx64.efi.signed"),
    // arm64 machines (grub-efi-arm64-signed on an arm64 host).
    (
        "grubaa64.efi",
        "/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed",
    ),
];

/// Serves `app` on `listener` (with its header-read timeout and connection
/// cap) until `shutdown`, as one of the server's tasks; `what` names it in
/// the error that ends the server.
fn spawn_http<L>(
    tasks: &mut tokio::task::JoinSet<Result<()>>,
    listener: L,
    app: axum::Router,
    limits: rackboot_boot::ConnLimits,
    name: &'static str,
    shutdown: &CancellationToken,
    what: &'static str,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let stop = shutdown.clone();
    tasks.spawn(async move {
        rackboot_boot::serve_http(listener, app, limits, name, async move {
            stop.cancelled().await
        })
        .await
        .context(what)
    });
}

/// The TFTP config the server runs with: the operator's, plus Debian's loaders
/// under their usual names, the asset directory under its TFTP prefix, the
/// OS catalog under `os/` (pxelinux and GRUB fetch kernels and installers over
/// TFTP) and the agent's RAM-disk under `ramdisk/`.
fn tftp_config_with_loaders(
    tftp: &rackboot_tftp::TftpConfig,
    boot: &rackboot_boot::BootConfig,
    os_dir: &Path,
) -> rackboot_tftp::TftpConfig {
    let mut tftp = tftp.clone();
    for (name, path) in DEBIAN_LOADERS {
        let path = Path::new(path);
        if path.is_file() {
            tftp.files
                .entry(name.to_string())
                .or_insert_with(|| path.to_path_buf());
        }
    }
    if !boot.tftp_asset_prefix.is_empty() && boot.asset_dir.is_dir() {
        tftp.dirs
            .entry(boot.tftp_asset_prefix.clone())
            .or_insert_with(|| boot.asset_dir.clone());
    }
    tftp.dirs
        .entry(OS_TFTP_DIR.to_string())
        .or_insert_with(|| os_dir.to_path_buf());
    // GRUB loads the agent's RAM-disk over TFTP (Secure Boot, arm64). The
    // directory may be filled after the server starts (`rackboot ramdisk
    // build`); TFTP needs it to exist now.
    if let Some(ramdisk) = &boot.ramdisk_dir
        && std::fs::create_dir_all(ramdisk).is_ok()
    {
        tftp.dirs
            .entry(rackboot_boot::RAMDISK_TFTP_DIR.to_string())
            .or_insert_with(|| ramdisk.clone());
    }
    tftp
}

/// Where pxelinux and GRUB find the OS catalog over TFTP; the boot renderer
/// writes installer paths as `/os/<id>/...`.
const OS_TFTP_DIR: &str = "os";

fn service_infos(
    config: &Config,
    http: [Option<SocketAddr>; 2],
    tftp: [Option<SocketAddr>; 2],
) -> Vec<rackboot_api::ServiceInfo> {
    let info = |name: &str, detail: Option<String>| rackboot_api::ServiceInfo {
        name: name.into(),
        enabled: detail.is_some(),
        detail,
    };
    let listening = |addrs: [Option<SocketAddr>; 2]| {
        let shown: Vec<String> = addrs.iter().flatten().map(|a| a.to_string()).collect();
        (!shown.is_empty()).then(|| format!("listening on {}", shown.join(" and ")))
    };
    vec![
        info("http", listening(http)),
        info("tftp", listening(tftp)),
        info(
            "dhcp6",
            config.dhcp6.as_ref().map(|d| {
                format!(
                    "on {}{}",
                    config.interface.as_deref().unwrap_or("?"),
                    if d.router_advertisements.enabled {
                        ", with router advertisements"
                    } else {
                        ""
                    }
                )
            }),
        ),
        info(
            "dhcp",
            config.dhcp.as_ref().map(|d| {
                format!(
                    "{} on {}",
                    match d.mode {
                        rackboot_dhcp::DhcpMode::Full => "full",
                        rackboot_dhcp::DhcpMode::Proxy => "proxy",
                    },
                    config.interface.as_deref().unwrap_or("?")
                )
            }),
        ),
    ]
}

/// The cluster's live members as the DHCP load split needs them, kept up to
/// date until `stop`. A server that is not healthy lists no one: it then
/// answers every client (see `rackboot_dhcp::Peers::answers`).
fn dhcp_peers(
    cluster: &Arc<rackboot_fleet::Cluster>,
    stop: CancellationToken,
) -> tokio::sync::watch::Receiver<rackboot_dhcp::Peers> {
    let peers_of = |view: &rackboot_fleet::cluster::View| rackboot_dhcp::Peers {
        me: view.me,
        live: if view.healthy { view.ids() } else { Vec::new() },
    };
    let mut views = cluster.subscribe();
    let (tx, rx) = tokio::sync::watch::channel(peers_of(&views.borrow_and_update()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = views.changed() => if changed.is_err() { return },
            }
            let peers = peers_of(&views.borrow_and_update());
            tx.send_if_modified(|current| {
                let changed = *current != peers;
                *current = peers;
                changed
            });
        }
    });
    rx
}
