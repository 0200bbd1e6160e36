//! `rackboot boot KERNEL [INITRD...]`: boot every PXE machine on a network into
//! one kernel, with no config file (in the spirit of pixiecore). Also the quick
//! `--dhcp-range` / `--proxy-dhcp` flags of `serve`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::Args;
use rackboot_core::{LoaderKind, Profile, Selector};
use rackboot_dhcp::{DhcpConfig, DhcpMode, SubnetConfig};
use tokio_util::sync::CancellationToken;

use crate::serve::{ServeArgs, Server, effective_config};

#[derive(Args)]
pub struct BootArgs {
    /// Kernel to boot.
    pub kernel: PathBuf,
    /// Initrds, loaded in order.
    pub initrds: Vec<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Provisioning interface.
    #[arg(long, required = true)]
    pub interface: String,
    /// Full DHCP with this pool, e.g. 10.77.0.100-10.77.0.200.
    #[arg(
        long,
        conflicts_with = "proxy_dhcp",
        required_unless_present = "proxy_dhcp"
    )]
    pub dhcp_range: Option<String>,
    /// ProxyDHCP beside an existing DHCP server.
    #[arg(long)]
    pub proxy_dhcp: bool,
    /// HTTP listen address. [default: 0.0.0.0:8080]
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub api_listen: Option<std::net::SocketAddr>,
    /// TFTP listen address, or "off". [default: port 69 on the --api-listen address]
    #[arg(long, value_name = "ADDRESS:PORT|off")]
    pub tftp_listen: Option<String>,
    /// Keep state here instead of a temporary directory. [default: a temporary directory]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// A `[dhcp]` section for one interface: its subnet, with `range` as the pool
/// (full mode) or no pool at all (proxy mode).
pub fn quick_dhcp(
    iface: &str,
    server_ip: Ipv4Addr,
    range: Option<&str>,
    proxy: bool,
) -> Result<DhcpConfig> {
    if proxy {
        return Ok(DhcpConfig {
            mode: DhcpMode::Proxy,
            ..DhcpConfig::default()
        });
    }
    let range = range.context("full DHCP needs --dhcp-range START-END")?;
    let prefix = netdev::get_interfaces()
        .into_iter()
        .find(|i| i.name == iface)
        .and_then(|i| {
            i.ipv4
                .iter()
                .find(|n| n.addr() == server_ip)
                .map(|n| n.prefix_len())
        })
        .with_context(|| format!("{server_ip} is not an address of interface {iface}"))?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    let network = Ipv4Addr::from(u32::from(server_ip) & mask);
    let subnet = SubnetConfig {
        name: Some(iface.to_string()),
        cidr: format!("{network}/{prefix}"),
        ranges: vec![range.to_string()],
        router: None,
        dns: Vec::new(),
        domain: None,
        ntp: Vec::new(),
        lease_time_secs: 3600,
        reservations: Vec::new(),
        options: Vec::new(),
    };
    let config = DhcpConfig {
        mode: DhcpMode::Full,
        subnets: vec![subnet],
        ..DhcpConfig::default()
    };
    config
        .compile()
        .with_context(|| format!("--dhcp-range {range:?}"))?;
    Ok(config)
}

/// A `[dhcp6]` section for one interface: the prefix holding `server_ip6`
/// (as the interface has it), with `range` (`FIRST-LAST`) as the pool, and
/// router advertisements on (so clients learn to ask DHCPv6).
pub fn quick_dhcp6(
    iface: &str,
    server_ip6: std::net::Ipv6Addr,
    range: &str,
) -> Result<rackboot_dhcp6::Dhcp6Config> {
    let prefix = netdev::get_interfaces()
        .into_iter()
        .find(|i| i.name == iface)
        .and_then(|i| {
            i.ipv6
                .iter()
                .find(|n| n.addr() == server_ip6)
                .map(|n| n.prefix_len())
        })
        .with_context(|| format!("{server_ip6} is not an address of interface {iface}"))?;
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    let network = std::net::Ipv6Addr::from(u128::from(server_ip6) & mask);
    let config = rackboot_dhcp6::Dhcp6Config {
        subnets: vec![rackboot_dhcp6::Subnet6Config {
            name: Some(iface.to_string()),
            prefix: format!("{network}/{prefix}"),
            ranges: vec![range.to_string()],
            dns: Vec::new(),
            preferred_lifetime_secs: 3600,
            valid_lifetime_secs: 7200,
            reservations: Vec::new(),
        }],
        ..rackboot_dhcp6::Dhcp6Config::default()
    };
    config
        .compile()
        .with_context(|| format!("--dhcp6-range {range:?}"))?;
    Ok(config)
}

pub async fn run(args: BootArgs) -> Result<()> {
    for f in std::iter::once(&args.kernel).chain(&args.initrds) {
        if !f.is_file() {
            bail!("{} is not a readable file", f.display());
        }
    }
    // Assets are served from a private directory of links to the given files.
    let temp = tempdir()?;
    let state_dir = args.state_dir.clone().unwrap_or_else(|| temp.join("state"));
    let asset_dir = temp.join("assets");
    std::fs::create_dir_all(&asset_dir)?;
    let link = |src: &PathBuf, name: &str| -> Result<String> {
        let abs =
            std::fs::canonicalize(src).with_context(|| format!("resolving {}", src.display()))?;
        std::os::unix::fs::symlink(&abs, asset_dir.join(name))
            .with_context(|| format!("linking {}", abs.display()))?;
        Ok(name.to_string())
    };
    let kernel = link(&args.kernel, "kernel")?;
    let initrds = args
        .initrds
        .iter()
        .enumerate()
        .map(|(i, f)| link(f, &format!("initrd{i}")))
        .collect::<Result<Vec<_>>>()?;

    let serve = ServeArgs {
        interface: Some(args.interface.clone()),
        dhcp_range: args.dhcp_range.clone(),
        proxy_dhcp: args.proxy_dhcp,
        state_dir: Some(state_dir),
        api_listen: args.api_listen,
        tftp_listen: args.tftp_listen.clone(),
        asset_dir: Some(asset_dir),
        ..ServeArgs::default()
    };
    let mut config = effective_config(&serve)?;
    config.boot.discovery_profile = Some("adhoc".into());
    let checked = crate::config::preflight(config)?;
    crate::serve::init_logging(&checked.config);
    // Held before the store is written: another server may own this state dir.
    let lock = crate::state::prepare(&checked.config)?;
    let config = &checked.config;

    // Every machine boots the ad-hoc profile: new ones through discovery, known
    // ones (a reused --state-dir) through the catch-all selector.
    let store = rackboot_store::open(&config.store_url()).await?;
    let now = Utc::now();
    store
        .put_profile(&Profile {
            name: "adhoc".into(),
            description: format!("rackboot boot {}", args.kernel.display()),
            kernel: Some(kernel),
            initrds,
            cmdline: args.cmdline.clone(),
            ipxe_script: None,
            loader: LoaderKind::Ipxe,
            created_at: now,
            updated_at: now,
        })
        .await?;
    store
        .put_selector(&Selector {
            name: "adhoc".into(),
            profile: "adhoc".into(),
            matches: Default::default(),
        })
        .await?;
    drop(store);

    let shutdown = CancellationToken::new();
    crate::serve::spawn_signal_handler(shutdown.clone());
    let server = Server::start_locked(checked, lock, shutdown).await?;
    eprintln!(
        "booting every PXE machine on {} into {} (Ctrl-C to stop)",
        args.interface,
        args.kernel.display()
    );
    let result = server.wait().await;
    let _ = std::fs::remove_dir_all(&temp);
    result
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("rackboot-boot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
