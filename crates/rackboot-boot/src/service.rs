//! [`BootService`]: the boot decisions DHCP, TFTP and boot HTTP ask for, answered
//! from the inventory snapshot without waiting on the store. Unknown machines are
//! recorded by a background task so the DHCP reply never waits for a write.

use std::collections::HashSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::counter;
use rackboot_core::{
    Arch, BootIntent, BootResponder, BoundLeases, DhcpBoot, EventHub, EventKind, GeneratedFile,
    LoaderKind, MacAddr, Machine, NewEvent, PxeClient, TftpContent,
};
use rackboot_fleet::Fleet;
use rackboot_install::InstallerNetwork;
use rackboot_power::PowerController;
use rackboot_seal::SecretKey;
use serde_json::json;

use crate::config::{BootConfig, BootConfigError, SECURE_BOOT_LABEL, UnknownPolicy};
use crate::render::{
    AgentBoot, AgentPlan, BootPlan, ServerUrls, all_profiles_menu, menu_plan, plan_for,
    render_grub, render_grub_generic, render_pxelinux,
};
use crate::{Inventory, Snapshot};

/// File names of the agent's RAM-disk in `ramdisk_dir` (and under `/ramdisk/`).
pub const RAMDISK_KERNEL: &str = "vmlinuz";
pub const RAMDISK_INITRD: &str = "initramfs.img";
/// The TFTP directory under which the binary exposes `ramdisk_dir`: GRUB
/// loads the agent's RAM-disk from `(tftp)/ramdisk/...`.
pub const RAMDISK_TFTP_DIR: &str = "ramdisk";

fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    }
}

/// Menu timeout for unknown machines when no `unknown_menu` is configured.
const DEFAULT_MENU_TIMEOUT_SECS: u32 = 10;

/// The boot logic, shared by DHCP (as [`BootResponder`]), TFTP (as [`TftpContent`])
/// and the boot HTTP router.
pub struct BootService {
    fleet: Arc<Fleet>,
    config: BootConfig,
    /// MACs whose discovery task is running: one task per MAC however many
    /// DHCP retries and HTTP requests arrive meanwhile.
    discovering: Arc<Mutex<HashSet<MacAddr>>>,
    secret_key: Option<Arc<SecretKey>>,
    /// What rackboot's DHCP server leased to each MAC (agent tokens are bound to it).
    leases: BoundLeases,
    /// Sets a machine's BMC boot device to its disk when its installer
    /// finishes; given by the binary ([`BootService::set_power_controller`]).
    power: OnceLock<Arc<PowerController>>,
    /// The runtime the service was built on (the store's): agent tokens for
    /// GRUB configs, which TFTP generates synchronously, are minted there.
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    /// This service, for tasks spawned on `runtime`.
    pub(crate) me: std::sync::Weak<BootService>,
    /// Agent boots rendered into GRUB configs in the last few seconds, by
    /// MAC (see [`crate::agent_tftp`]).
    pub(crate) recent_agent_boots:
        Mutex<std::collections::HashMap<MacAddr, crate::agent_tftp::RecentAgentBoot>>,
}

/// A machine looked up for booting and what it should boot.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The inventory's machine, or a not-yet-recorded one for an unknown MAC.
    pub machine: Machine,
    pub known: bool,
    pub plan: BootPlan,
}

impl BootService {
    /// Checks `config` and builds the service.
    pub fn new(fleet: Arc<Fleet>, config: BootConfig) -> Result<Arc<BootService>, BootConfigError> {
        BootService::with_parts(fleet, config, None, BoundLeases::default())
    }

    /// With the server's secret key, which opens installs' sealed secrets
    /// (Windows passwords) when their files are rendered, and the DHCP
    /// server's bound leases, to which agent tokens are bound.
    pub fn with_parts(
        fleet: Arc<Fleet>,
        config: BootConfig,
        secret_key: Option<Arc<SecretKey>>,
        leases: BoundLeases,
    ) -> Result<Arc<BootService>, BootConfigError> {
        config.validate()?;
        Ok(Arc::new_cyclic(|me| BootService {
            fleet,
            config,
            discovering: Arc::new(Mutex::new(HashSet::new())),
            secret_key,
            leases,
            power: OnceLock::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            me: me.clone(),
            recent_agent_boots: Mutex::new(std::collections::HashMap::new()),
        }))
    }

    pub fn secret_key(&self) -> Option<&SecretKey> {
        self.secret_key.as_deref()
    }

    /// What rackboot's DHCP server leased to `mac`, if anything.
    pub(crate) fn lease_of(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.leases.get(mac)
    }

    /// The power controller through which a machine's BMC is switched to
    /// boot its disk when its installer finishes (the install callbacks
    /// work without one: the machine's intent alone makes its next network
    /// boot leave for the disk). Set once, at start; later calls are ignored.
    pub fn set_power_controller(&self, controller: Arc<PowerController>) {
        let _ = self.power.set(controller);
    }

    pub fn power_controller(&self) -> Option<&Arc<PowerController>> {
        self.power.get()
    }

    /// What the network of the machine with `mac` offers it by DHCP, when
    /// rackboot's DHCP serves it: the subnet holding the address rackboot
    /// leased to it, or the only subnet served. `None` when unknown
    /// (ProxyDHCP, no DHCP, several subnets and no lease).
    pub fn installer_network(&self, mac: MacAddr) -> Option<InstallerNetwork> {
        let subnets = &self.config.served_subnets;
        match self.leases.get(mac) {
            Some(ip) => subnets.iter().find(|s| s.contains(ip)),
            None if subnets.len() == 1 => subnets.first(),
            None => None,
        }
        .map(|s| s.offer.clone())
    }

    /// [`BootService::server_urls`] for a request about the machine with
    /// `mac`: with what its network offers it (see
    /// [`BootService::installer_network`]).
    pub fn server_urls_for(&self, base_url: &str, mac: MacAddr) -> ServerUrls {
        let mut urls = self.server_urls(base_url);
        urls.client_network = self.installer_network(mac);
        urls
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    pub fn inventory(&self) -> &Arc<Inventory> {
        self.fleet.inventory()
    }

    pub fn config(&self) -> &BootConfig {
        &self.config
    }

    pub fn events(&self) -> &EventHub {
        self.fleet.events()
    }

    /// Discovery tasks still running (tests wait for zero).
    pub fn discoveries_in_flight(&self) -> usize {
        lock(&self.discovering).len()
    }

    /// `public_url`, or `http://<server_ip>:<http_port>`.
    pub fn base_url(&self, server_ip: Ipv4Addr) -> String {
        match &self.config.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{server_ip}:{}", self.config.http_port),
        }
    }

    pub fn server_urls(&self, base_url: &str) -> ServerUrls {
        ServerUrls::new(base_url, &self.config.tftp_asset_prefix)
    }

    /// Looks `mac` up in `snapshot` and resolves what it boots. An unknown MAC gets the
    /// unknown-machine policy; with `record`, the discover policy also records it.
    pub fn resolve(
        &self,
        snapshot: &Snapshot,
        mac: MacAddr,
        uuid: Option<uuid::Uuid>,
        arch: Option<Arch>,
        record: bool,
    ) -> Resolved {
        let discovery = self.config.discovery_profile.as_deref();
        if let Some(m) = snapshot.machine_by_mac(mac) {
            return Resolved {
                plan: plan_for(m, snapshot, discovery),
                machine: m.clone(),
                known: true,
            };
        }
        let machine = Machine::discovered(mac, uuid, arch);
        let plan = match self.config.unknown_machines {
            UnknownPolicy::Discover => {
                if record {
                    self.spawn_discovery(mac, uuid, arch);
                }
                plan_for(&machine, snapshot, discovery)
            }
            UnknownPolicy::Menu => {
                let menu = self
                    .config
                    .unknown_menu
                    .clone()
                    .unwrap_or_else(|| all_profiles_menu(snapshot, DEFAULT_MENU_TIMEOUT_SECS));
                BootPlan::Menu(menu_plan(&machine.name, &menu, snapshot))
            }
        };
        Resolved {
            machine,
            known: false,
            plan,
        }
    }

    /// Whether `machine` boots through the Secure Boot chain (shim, the signed
    /// network GRUB, a signed kernel): its `secure_boot` label decides when
    /// it has one, else its plan's loader (a profile with `loader = "shim"`),
    /// else the site's `boot.secure_boot`.
    pub fn secure_boot(&self, machine: &Machine, plan: &BootPlan) -> bool {
        match machine.labels.get(SECURE_BOOT_LABEL).map(|v| v.trim()) {
            Some("true") => true,
            Some("false") => false,
            _ => plan.loader() == LoaderKind::Shim || self.config.secure_boot,
        }
    }

    /// Whether GRUB configs are generated over TFTP: when a GRUB loader is
    /// configured or Secure Boot is in use (site default, a shim profile, a
    /// machine labelled for it), so an operator's own grub.cfg in the TFTP
    /// root is not shadowed otherwise.
    fn serves_grub_configs(&self, snapshot: &Snapshot) -> bool {
        self.config.loaders.uefi_x64_grub.is_some()
            || self.config.secure_boot
            || snapshot
                .profiles
                .values()
                .any(|p| p.loader == LoaderKind::Shim)
            || snapshot.machines.iter().any(|m| {
                m.labels
                    .get(SECURE_BOOT_LABEL)
                    .is_some_and(|v| v.trim() == "true")
                    // arm64 machines boot GRUB unless an arm64 iPXE is configured.
                    || (m.arch == Some(Arch::UefiArm64) && self.config.loaders.uefi_arm64.is_none())
            })
    }

    /// Records an unknown MAC in the background, at most one task per MAC at a time.
    /// Needs a tokio runtime; without one the MAC is simply not recorded this time.
    pub fn spawn_discovery(&self, mac: MacAddr, uuid: Option<uuid::Uuid>, arch: Option<Arch>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%mac, "no tokio runtime: cannot record discovered machine");
            return;
        };
        if !lock(&self.discovering).insert(mac) {
            return;
        }
        let fleet = self.fleet.clone();
        let discovering = self.discovering.clone();
        runtime.spawn(async move {
            if let Err(e) = fleet.record_discovery(mac, uuid, arch).await {
                counter!("rackboot_boot_discovery_errors_total").increment(1);
                tracing::warn!(%mac, error = %e, "recording discovered machine failed");
            }
            lock(&discovering).remove(&mac);
        });
    }

    /// Completes an agent plan for a script fetched by `peer` over HTTP at
    /// `base_url`: issues the machine's per-boot token, bound to the address
    /// rackboot leased to `mac` (or to `peer` when rackboot leases none), and
    /// fills in the RAM-disk. A request from another address than the lease
    /// gets no token: the plan becomes an error, and the machine's current
    /// token stays valid.
    pub async fn prepare_agent_boot(
        &self,
        machine: &Machine,
        mac: MacAddr,
        plan: BootPlan,
        peer: Option<std::net::IpAddr>,
        base_url: &str,
    ) -> BootPlan {
        let BootPlan::Agent(AgentPlan { workflow, .. }) = plan else {
            return plan;
        };
        let error = |message: String| BootPlan::Error { message };
        let Some(dir) = &self.config.ramdisk_dir else {
            return error("this server has no agent RAM-disk directory".into());
        };
        for file in [RAMDISK_KERNEL, RAMDISK_INITRD] {
            if tokio::fs::metadata(dir.join(file)).await.is_err() {
                return error(format!(
                    "no agent RAM-disk: {} is missing (run `rackboot ramdisk build`)",
                    dir.join(file).display()
                ));
            }
        }
        let Some(peer) = peer else {
            return error("cannot tell which address asked for this script".into());
        };
        let bound = match self.agent_token_address(machine, mac, workflow, peer) {
            Ok(ip) => ip,
            Err(refusal) => {
                counter!("rackboot_agent_tokens_refused_total").increment(1);
                tracing::warn!(%mac, "{refusal}");
                self.fleet.record_refusal(
                    machine,
                    "agent_token",
                    refusal.reason,
                    Some(peer),
                    &refusal.message,
                );
                return error(refusal.message);
            }
        };
        let issued = match self.fleet.issue_agent_token(machine, bound, workflow).await {
            Ok(t) => t,
            Err(e) => return error(format!("cannot issue an agent token: {e}")),
        };
        let args = rackboot_agent_proto::BootArgs {
            url: base_url.to_string(),
            token: issued.token,
            debug: false,
        };
        let mut cmdline = self.config.agent_kernel_args.trim().to_string();
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(&format!("{} BOOTIF=01-{}", args.to_cmdline(), mac.dashed()));
        // IPv6: the RAM-disk has no DHCPv6 client, and a new client would
        // lease another address than the one the token is bound to; it
        // takes the address its loader leased (DHCPv6 pools are /64s).
        if let std::net::IpAddr::V6(v6) = bound {
            cmdline.push_str(&format!(
                " {}={v6}/64",
                rackboot_agent_proto::bootargs::IP6_KEY
            ));
        }
        BootPlan::Agent(AgentPlan {
            workflow,
            boot: Some(AgentBoot {
                kernel_url: format!("{base_url}/ramdisk/{RAMDISK_KERNEL}"),
                initrd_url: format!("{base_url}/ramdisk/{RAMDISK_INITRD}"),
                cmdline,
            }),
        })
    }

    /// The address `machine`'s agent token for this boot is bound to, for a
    /// script asked for by `peer` (see [`crate::access::agent_token_address`]).
    pub(crate) fn agent_token_address(
        &self,
        machine: &Machine,
        mac: MacAddr,
        workflow: Option<uuid::Uuid>,
        peer: std::net::IpAddr,
    ) -> Result<std::net::IpAddr, crate::access::AgentTokenRefusal> {
        let current = self
            .fleet
            .agent_session(machine.id)
            .filter(|s| s.workflow == workflow)
            .map(|s| s.bound_ip);
        crate::access::agent_token_address(
            mac,
            self.leases.get(mac),
            current,
            self.config
                .served_subnets
                .iter()
                .any(|s| matches!(canonical_ip(peer), std::net::IpAddr::V4(v4) if s.contains(v4))),
            peer,
        )
    }

    /// The server URLs for a file fetched over TFTP by `client`: `public_url`, or the
    /// local address the kernel routes to `client` (a UDP connect sends nothing);
    /// an IPv6 address is written `[addr]` in the URL.
    fn tftp_server_urls(&self, client: std::net::IpAddr) -> Option<ServerUrls> {
        if self.config.public_url.is_some() {
            return Some(self.server_urls(&self.base_url(Ipv4Addr::UNSPECIFIED)));
        }
        let unspecified: std::net::IpAddr = match client {
            std::net::IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let socket = UdpSocket::bind((unspecified, 0)).ok()?;
        socket.connect((client, 9)).ok()?;
        match socket.local_addr().ok()?.ip() {
            ip if ip.is_unspecified() => None,
            std::net::IpAddr::V4(ip) => Some(self.server_urls(&self.base_url(ip))),
            std::net::IpAddr::V6(ip) => {
                Some(self.server_urls(&format!("http://[{ip}]:{}", self.config.http_port)))
            }
        }
    }

    fn emit_script_served(&self, format: &str, via: &str, r: &Resolved) {
        counter!("rackboot_boot_scripts_served_total", "format" => format.to_string()).increment(1);
        let mac = r.machine.macs[0];
        let mut event = NewEvent::new(
            EventKind::ScriptServed,
            format!(
                "served {format} config to {} ({mac}) over {via}: {}",
                r.machine.name,
                r.plan.kind()
            ),
        )
        .mac(mac)
        .data(json!({
            "format": format,
            "via": via,
            "intent": intent_kind(&r.machine.intent),
            "plan": r.plan.kind(),
            "profile": match &r.plan { BootPlan::Profile(p) => Some(p.name.clone()), _ => None },
            "known": r.known,
        }));
        if r.known {
            event = event.machine(r.machine.id);
        }
        self.fleet.emit(event);
    }

    /// Renders a per-MAC TFTP file with `render`, or a clear error config when the
    /// server address cannot be told.
    fn tftp_render(
        &self,
        format: &str,
        r: Resolved,
        client: std::net::IpAddr,
        render: fn(&Machine, MacAddr, &BootPlan, &ServerUrls) -> String,
    ) -> GeneratedFile {
        let mac = r.machine.macs[0];
        // A config that carries install URLs goes only to the machine (see
        // crate::access); anyone else is told why, and nothing more.
        let installs = r.plan.installs();
        let gated = if installs.is_empty() {
            Ok(())
        } else {
            self.admit_install_fetch_now(&installs, &r.machine, mac, client)
        };
        let (plan, urls) = match (gated, self.tftp_server_urls(client)) {
            (Err(message), urls) => (
                BootPlan::Error { message },
                urls.unwrap_or_else(|| self.server_urls(&self.base_url(Ipv4Addr::UNSPECIFIED))),
            ),
            (Ok(()), Some(mut urls)) => {
                urls.client_network = self.installer_network(mac);
                (r.plan.clone(), urls)
            }
            (Ok(()), None) => (
                BootPlan::Error {
                    message: format!(
                        "rackboot cannot tell its own address towards {client}; set boot.public_url"
                    ),
                },
                self.server_urls(&self.base_url(Ipv4Addr::UNSPECIFIED)),
            ),
        };
        let text = render(&r.machine, mac, &plan, &urls);
        self.emit_script_served(format, "tftp", &r);
        GeneratedFile::Content(text.into_bytes())
    }

    fn pxelinux_file(&self, name: &str, client: std::net::IpAddr) -> GeneratedFile {
        let snapshot = self.fleet.snapshot();
        if let Some(mac) = name
            .strip_prefix("01-")
            .and_then(|m| m.parse::<MacAddr>().ok())
        {
            let r = self.resolve(&snapshot, mac, None, Some(Arch::Bios), true);
            return self.tftp_render("pxelinux", r, client, render_pxelinux);
        }
        if let Ok(uuid) = name.parse::<uuid::Uuid>() {
            let Some(m) = snapshot.machine_by_uuid(uuid) else {
                return GeneratedFile::NotFound;
            };
            let r = self.resolve(&snapshot, m.macs[0], None, None, false);
            return self.tftp_render("pxelinux", r, client, render_pxelinux);
        }
        if (1..=8).contains(&name.len()) && name.chars().all(|c| c.is_ascii_hexdigit()) {
            // Hex-IP names: without the lease table the IP does not say which machine
            // this is. Every pxelinux asks for 01-<mac> first, which is answered above.
            return GeneratedFile::NotFound;
        }
        // `default` and anything else: a static file in the TFTP root, if the operator put one.
        GeneratedFile::NotGenerated
    }

    /// `grub.cfg-<rest>`: GRUB asks for `01-<mac>` (or `<mac>`), `<uuid>`, hex IPs.
    fn grub_file(&self, rest: &str, client: std::net::IpAddr) -> GeneratedFile {
        let snapshot = self.fleet.snapshot();
        let mac = rest
            .strip_prefix("01-")
            .and_then(|m| m.parse::<MacAddr>().ok())
            .or_else(|| rest.parse::<MacAddr>().ok());
        let mac = match mac {
            Some(mac) => mac,
            None => match rest
                .parse::<uuid::Uuid>()
                .ok()
                .and_then(|u| snapshot.machine_by_uuid(u))
            {
                Some(m) => m.macs[0],
                None => return GeneratedFile::NotFound,
            },
        };
        // GRUB runs on x86-64 and arm64: a machine seen before says which.
        let arch = snapshot
            .machine_by_mac(mac)
            .and_then(|m| m.arch)
            .unwrap_or(Arch::UefiX64);
        let mut r = self.resolve(&snapshot, mac, None, Some(arch), true);
        // The agent boots through GRUB too (Secure Boot, arm64): its token is
        // minted here, as boot HTTP mints it for an iPXE script.
        if matches!(r.plan, BootPlan::Agent(_))
            && r.known
            && let Some(urls) = self.tftp_server_urls(client)
        {
            r.plan =
                self.prepare_agent_boot_blocking(&r.machine, mac, r.plan, client, &urls.base_url);
        }
        self.tftp_render("grub", r, client, render_grub)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `discover`, `local_disk`, `profile`, `menu` or `install`, as the API spells intents.
pub fn intent_kind(intent: &BootIntent) -> &'static str {
    match intent {
        BootIntent::Discover => "discover",
        BootIntent::LocalDisk => "local_disk",
        BootIntent::Profile { .. } => "profile",
        BootIntent::Menu(_) => "menu",
        BootIntent::Install { .. } => "install",
        BootIntent::Agent { .. } => "agent",
    }
}

impl BootResponder for BootService {
    fn dhcp_boot(&self, mac: MacAddr, client: &PxeClient, server_ip: Ipv4Addr) -> Option<DhcpBoot> {
        let snapshot = self.fleet.snapshot();
        let base = self.base_url(server_ip);
        let loaders = &self.config.loaders;
        if client.ipxe {
            // iPXE is running: hand it the script, never iPXE again (chainload loop).
            if snapshot.machine_by_mac(mac).is_none()
                && self.config.unknown_machines == UnknownPolicy::Discover
            {
                self.spawn_discovery(mac, client.uuid, Some(client.arch));
            }
            counter!("rackboot_boot_dhcp_answers_total", "file" => "ipxe_script").increment(1);
            return Some(DhcpBoot {
                filename: crate::http::ipxe_script_url(&base, mac),
                next_server: None,
                http_client: false,
            });
        }
        let resolved = self.resolve(&snapshot, mac, client.uuid, Some(client.arch), true);
        let loader = resolved.plan.loader();
        // Secure Boot firmware runs only signed loaders: shim, never iPXE.
        let secure_boot =
            client.arch == Arch::UefiX64 && self.secure_boot(&resolved.machine, &resolved.plan);
        if client.http_boot {
            // UEFI HTTP boot fetches a URL; iPXE then asks DHCP again as an iPXE client.
            let file = match client.arch {
                Arch::UefiX64 if secure_boot => Some(loaders.uefi_x64_shim.as_str()),
                Arch::UefiX64 => Some(loaders.uefi_x64_ipxe.as_str()),
                Arch::UefiArm64 => loaders.uefi_arm64.as_deref(),
                _ => None,
            }?;
            counter!("rackboot_boot_dhcp_answers_total", "file" => "http_loader").increment(1);
            return Some(DhcpBoot {
                filename: format!("{base}/boot/loader/{file}"),
                next_server: None,
                http_client: true,
            });
        }
        let file = match (client.arch, loader) {
            (Arch::UefiX64, _) if secure_boot => loaders.uefi_x64_shim.as_str(),
            (Arch::Bios, LoaderKind::Pxelinux) => loaders.pxelinux.as_str(),
            (Arch::Bios, _) => loaders.bios_ipxe.as_str(),
            (Arch::UefiX64, LoaderKind::Grub) => loaders
                .uefi_x64_grub
                .as_deref()
                .unwrap_or(loaders.uefi_x64_ipxe.as_str()),
            (Arch::UefiX64, _) => loaders.uefi_x64_ipxe.as_str(),
            (Arch::UefiArm64, _) => loaders
                .uefi_arm64
                .as_deref()
                .unwrap_or(loaders.uefi_arm64_grub.as_str()),
            (Arch::UefiIa32 | Arch::Other(_), _) => return None,
        };
        counter!("rackboot_boot_dhcp_answers_total", "file" => file.to_string()).increment(1);
        Some(DhcpBoot {
            filename: file.to_string(),
            next_server: None,
            http_client: false,
        })
    }
}

impl TftpContent for BootService {
    fn generate(&self, path: &str, client: Ipv4Addr) -> GeneratedFile {
        self.generate_for(path, client.into())
    }

    fn generate_for(&self, path: &str, client: std::net::IpAddr) -> GeneratedFile {
        if let Some(name) = path.strip_prefix("pxelinux.cfg/") {
            return self.pxelinux_file(name, client);
        }
        let file = path.rsplit('/').next().unwrap_or(path);
        if (file == "grub.cfg" || file.starts_with("grub.cfg-"))
            && self.serves_grub_configs(&self.fleet.snapshot())
        {
            if file == "grub.cfg" {
                return GeneratedFile::Content(render_grub_generic().into_bytes());
            }
            if let Some(rest) = file.strip_prefix("grub.cfg-") {
                return self.grub_file(rest, client);
            }
        }
        GeneratedFile::NotGenerated
    }
}
