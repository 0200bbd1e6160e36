//! Rendering a machine's boot intent into iPXE scripts, pxelinux configs and
//! GRUB configs. Everything here is pure: (machine, plan, server URLs) in, text
//! out. A rendering problem never yields half a script: the whole output is
//! replaced by one that prints the problem and hands over to the next boot device.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use minijinja::value::{Object, Value};
use minijinja::{Environment, UndefinedBehavior};
use rackboot_core::selector::select;
use rackboot_core::{BootIntent, LoaderKind, MacAddr, Machine, Menu, Profile};

use crate::Snapshot;

/// Where the client reaches rackboot, as seen from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrls {
    /// `10.77.0.1:8080`: the `server` template variable.
    pub server: String,
    /// `http://10.77.0.1:8080`, no trailing '/': the `base_url` template variable.
    /// iPXE fetches relative assets from `<base_url>/assets/<path>`.
    pub base_url: String,
    /// Absolute TFTP directory where the asset dir is exposed (`/assets`, or `` for
    /// the root); pxelinux and GRUB fetch relative assets from `<tftp_assets>/<path>`.
    pub tftp_assets: String,
    /// What the requesting machine's network offers it by DHCP (router,
    /// DNS, NTP), when rackboot's DHCP serves that network
    /// ([`crate::BootService::server_urls_for`]); installers are told what
    /// is missing. `None`: unknown, a full network is assumed.
    pub client_network: Option<rackboot_install::InstallerNetwork>,
}

impl ServerUrls {
    /// From a base URL (`http://host:port`) and the configured TFTP asset prefix.
    pub fn new(base_url: &str, tftp_asset_prefix: &str) -> ServerUrls {
        let base_url = base_url.trim_end_matches('/').to_string();
        let server = base_url
            .strip_prefix("http://")
            .unwrap_or(&base_url)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let prefix = tftp_asset_prefix.trim_matches('/');
        let tftp_assets = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        ServerUrls {
            server,
            base_url,
            tftp_assets,
            client_network: None,
        }
    }
}

/// What a machine boots, resolved from its intent against the inventory.
#[derive(Debug, Clone, PartialEq)]
pub enum BootPlan {
    /// Boot this profile.
    Profile(Profile),
    /// Leave network boot; the firmware boots the next device (the local disk).
    LocalDisk,
    /// Nothing to boot from the network (discovery without a discovery profile):
    /// say why and leave network boot.
    NextDevice { reason: String },
    /// A menu of profiles with local disk.
    Menu(MenuPlan),
    /// Cannot boot as asked: print the message, pause, leave network boot.
    Error { message: String },
    /// Boot an OS installer pointed at the machine's rendered unattended file.
    Install(Box<InstallPlan>),
    /// Boot the deploy agent's RAM-disk (a workflow needs the agent).
    Agent(AgentPlan),
}

/// The agent's RAM-disk for a machine whose workflow needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentPlan {
    pub workflow: Option<uuid::Uuid>,
    /// Filled in once the per-boot token is issued: by boot HTTP for an
    /// iPXE script, by TFTP for a GRUB config. Resolved without one (a
    /// pxelinux config, a preview), the plan renders as an error.
    pub boot: Option<AgentBoot>,
}

/// What iPXE (or GRUB) loads for the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentBoot {
    pub kernel_url: String,
    pub initrd_url: String,
    /// The whole kernel command line, token included.
    pub cmdline: String,
}

/// A pending install resolved against the OS catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallPlan {
    pub install: rackboot_core::InstallRequest,
    pub release: rackboot_oscatalog::OsRelease,
}

impl InstallPlan {
    /// Linux installers are a kernel and initrd, which pxelinux and GRUB load
    /// over TFTP (`/os/<id>/...`) as well as iPXE does over HTTP.
    pub fn boots_under_any_loader(&self) -> bool {
        self.release.family.installer_is_linux()
    }
}

/// A menu whose entries are resolved to profiles and pending installs.
#[derive(Debug, Clone, PartialEq)]
pub struct MenuPlan {
    pub title: String,
    /// (label, what the entry boots)
    pub entries: Vec<(String, MenuTarget)>,
    /// Entries left out (a missing profile, an install no longer pending), as
    /// notes for the rendered file.
    pub skipped: Vec<String>,
    /// Index into `entries` booted on timeout; `None` is local disk.
    pub default: Option<usize>,
    pub timeout_secs: u32,
    /// The loader the operator asked the menu to be shown in.
    pub loader: Option<LoaderKind>,
}

/// What one menu entry boots.
#[derive(Debug, Clone, PartialEq)]
pub enum MenuTarget {
    Profile(Profile),
    Install(Box<InstallPlan>),
}

impl BootPlan {
    /// Short name for events and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            BootPlan::Profile(_) => "profile",
            BootPlan::LocalDisk => "local_disk",
            BootPlan::NextDevice { .. } => "next_device",
            BootPlan::Menu(_) => "menu",
            BootPlan::Error { .. } => "error",
            BootPlan::Install(_) => "install",
            BootPlan::Agent(_) => "agent",
        }
    }

    /// The pending installs whose file URLs (with their secrets) this plan
    /// renders: its install, or a menu's install entries.
    pub fn installs(&self) -> Vec<&rackboot_core::InstallRequest> {
        match self {
            BootPlan::Install(plan) => vec![&plan.install],
            BootPlan::Menu(menu) => menu
                .entries
                .iter()
                .filter_map(|(_, target)| match target {
                    MenuTarget::Install(plan) => Some(&plan.install),
                    MenuTarget::Profile(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The first-stage loader this plan needs: the profile's, a menu's when all its
    /// entries agree, iPXE otherwise (iPXE can render every plan).
    pub fn loader(&self) -> LoaderKind {
        match self {
            BootPlan::Profile(p) => p.loader,
            BootPlan::Menu(m) => {
                if let Some(loader) = m.loader {
                    return loader;
                }
                // Installs of Linux families boot under any loader; the others
                // (ESXi's mboot, Windows' wimboot) need iPXE.
                let mut loaders = m.entries.iter().filter_map(|(_, t)| match t {
                    MenuTarget::Profile(p) => Some(p.loader),
                    MenuTarget::Install(i) if i.boots_under_any_loader() => None,
                    MenuTarget::Install(_) => Some(LoaderKind::Ipxe),
                });
                match loaders.next() {
                    Some(first) if loaders.all(|l| l == first) => first,
                    _ => LoaderKind::Ipxe,
                }
            }
            _ => LoaderKind::Ipxe,
        }
    }
}

/// Resolves `machine.intent` against the inventory.
pub fn plan_for(
    machine: &Machine,
    snapshot: &Snapshot,
    discovery_profile: Option<&str>,
) -> BootPlan {
    let profile = |name: &str, why: &str| match snapshot.profiles.get(name) {
        Some(p) => BootPlan::Profile(p.clone()),
        None => BootPlan::Error {
            message: format!(
                "cannot boot {}: {why} profile \"{name}\" does not exist",
                machine.name
            ),
        },
    };
    match &machine.intent {
        BootIntent::LocalDisk => BootPlan::LocalDisk,
        BootIntent::Discover => match discovery_profile {
            Some(name) => profile(name, "discovery"),
            None => BootPlan::NextDevice {
                reason: format!(
                    "{} is recorded; no discovery profile is configured, booting the next device",
                    machine.name
                ),
            },
        },
        BootIntent::Profile { name: Some(name) } => profile(name, "its"),
        BootIntent::Profile { name: None } => match select(&snapshot.selectors, machine) {
            Some(sel) => profile(&sel.profile, &format!("selector \"{}\" names", sel.name)),
            None => BootPlan::Error {
                message: format!(
                    "cannot boot {}: no selector matches it and its intent names no profile",
                    machine.name
                ),
            },
        },
        BootIntent::Menu(menu) => BootPlan::Menu(menu_plan(&machine.name, menu, snapshot)),
        BootIntent::Agent { workflow } => BootPlan::Agent(AgentPlan {
            workflow: *workflow,
            boot: None,
        }),
        BootIntent::Install { id, os } => match install_plan(*id, os, snapshot) {
            Ok(plan) => BootPlan::Install(Box::new(plan)),
            Err(why) => BootPlan::Error {
                message: format!("cannot boot {}: {why}", machine.name),
            },
        },
    }
}

/// A pending install and its OS, or why it cannot be booted.
fn install_plan(id: uuid::Uuid, os: &str, snapshot: &Snapshot) -> Result<InstallPlan, String> {
    match (snapshot.installs.get(&id), snapshot.os.get(os)) {
        (Some(install), Some(release)) => Ok(InstallPlan {
            install: install.clone(),
            release: release.clone(),
        }),
        (None, _) => Err(format!(
            "install {id} is no longer pending (completed or cancelled)"
        )),
        (_, None) => Err(format!(
            "OS {os} is not in the OS catalog (see rackboot os list)"
        )),
    }
}

/// ESXi's mboot and Windows' wimboot installs boot only through iPXE; the first
/// stage is chosen by the plan's loader, so this only shows for a machine that
/// asked for a pxelinux/GRUB config directly.
fn install_needs_ipxe(plan: &InstallPlan) -> String {
    format!(
        "install {} of {} ({}) boots through iPXE (/boot/ipxe/<mac>), not this loader",
        plan.install.id, plan.release.id, plan.release.family
    )
}

/// Resolves a menu's entries; an entry naming a missing profile or an install
/// that is no longer pending is skipped with a note.
pub fn menu_plan(for_whom: &str, menu: &Menu, snapshot: &Snapshot) -> MenuPlan {
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for e in &menu.entries {
        let target = match &e.install {
            Some(i) => install_plan(i.id, &i.os, snapshot)
                .map(|plan| MenuTarget::Install(Box::new(plan)))
                .map_err(|why| format!("menu entry \"{}\": {why}", i.os)),
            None => snapshot
                .profiles
                .get(&e.profile)
                .map(|p| MenuTarget::Profile(p.clone()))
                .ok_or_else(|| format!("menu entry \"{}\": profile does not exist", e.profile)),
        };
        match target {
            Ok(target) => {
                let label = e.label.clone().unwrap_or_else(|| match &target {
                    MenuTarget::Profile(p) => p.name.clone(),
                    MenuTarget::Install(plan) => format!("Install {}", plan.release.name),
                });
                entries.push((e.key().to_string(), label, target));
            }
            Err(note) => skipped.push(note),
        }
    }
    let default = menu
        .default
        .as_ref()
        .and_then(|d| entries.iter().position(|(key, _, _)| key == d));
    MenuPlan {
        title: format!("rackboot: {for_whom}"),
        entries: entries
            .into_iter()
            .map(|(_, label, target)| (label, target))
            .collect(),
        skipped,
        default,
        timeout_secs: menu.timeout_secs,
        loader: menu.loader,
    }
}

/// A menu of every profile, by name, local disk default: for unknown machines when
/// no menu is configured.
pub fn all_profiles_menu(snapshot: &Snapshot, timeout_secs: u32) -> Menu {
    let mut names: Vec<&String> = snapshot.profiles.keys().collect();
    names.sort();
    Menu {
        entries: names
            .into_iter()
            .map(|n| rackboot_core::MenuEntry {
                profile: n.clone(),
                ..Default::default()
            })
            .collect(),
        default: None,
        timeout_secs,
        loader: None,
    }
}

// ---------------------------------------------------------------------------
// Templates

/// Strict: a typo in a variable name is an error, not an empty string. Fuel bounds
/// loops so a template cannot stall a boot-storm request.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(100_000));
    env
});

fn template_vars(machine: &Machine, mac: MacAddr, urls: &ServerUrls) -> Value {
    template_vars_with_labels(machine, mac, urls, Value::from(machine.labels.clone()))
}

fn template_vars_with_labels(
    machine: &Machine,
    mac: MacAddr,
    urls: &ServerUrls,
    labels: Value,
) -> Value {
    let mut m = BTreeMap::new();
    m.insert("name", Value::from(machine.name.clone()));
    m.insert("id", Value::from(machine.id.to_string()));
    m.insert(
        "macs",
        Value::from(
            machine
                .macs
                .iter()
                .map(|m| Value::from(m.to_string()))
                .collect::<Vec<_>>(),
        ),
    );
    m.insert("labels", labels);
    m.insert("uuid", Value::from(machine.uuid.map(|u| u.to_string())));
    m.insert("arch", Value::from(machine.arch.map(|a| a.as_str())));
    let mut vars = BTreeMap::new();
    vars.insert("machine", Value::from(m));
    // The machine's CPU as distributions name it, for per-architecture kernels
    // (`kernel = "debian/{{ arch }}/linux"`); a machine whose firmware was never
    // seen is taken for amd64.
    vars.insert("arch", Value::from(cpu_arch(machine.arch)));
    vars.insert("mac", Value::from(mac.to_string()));
    vars.insert("server", Value::from(urls.server.clone()));
    vars.insert("base_url", Value::from(urls.base_url.clone()));
    Value::from(vars)
}

fn render_template(
    profile: &Profile,
    field: &str,
    source: &str,
    vars: &Value,
) -> Result<String, String> {
    TEMPLATES
        .render_str(source, vars.clone())
        .map_err(|e| format!("profile \"{}\": {field} template: {e}", profile.name))
}

/// The kernel command line, one line.
fn cmdline(profile: &Profile, vars: &Value) -> Result<String, String> {
    let text = render_template(profile, "cmdline", &profile.cmdline, vars)?;
    Ok(one_line(&text))
}

/// Newlines would start a new script line: a command line is one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Kernel and initrd references may not contain whitespace or control characters:
/// they are single words in every format we render.
fn check_ref(profile: &Profile, field: &str, r: &str) -> Result<(), String> {
    if r.is_empty() || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "profile \"{}\": {field} {r:?} must be a URL or a path without spaces",
            profile.name
        ));
    }
    Ok(())
}

fn is_url(r: &str) -> bool {
    r.contains("://")
}

/// Debian's name for the CPU of firmware `arch` (`amd64`, `arm64`, `i386`);
/// amd64 when unknown.
pub fn cpu_arch(arch: Option<rackboot_core::Arch>) -> &'static str {
    use rackboot_core::Arch;
    match arch {
        Some(Arch::UefiArm64) => "arm64",
        Some(Arch::UefiIa32) => "i386",
        Some(Arch::Bios | Arch::UefiX64 | Arch::Other(_)) | None => "amd64",
    }
}

/// Kernel and initrds of a kernel profile, checked. Templates in them are
/// rendered like the command line, so one profile names per-architecture
/// kernels and initrds (`{{ arch }}/vmlinuz`).
fn kernel_refs(profile: &Profile, vars: &Value) -> Result<(String, Vec<String>), String> {
    let kernel = profile.kernel.as_deref().ok_or_else(|| {
        format!(
            "profile \"{}\" has no kernel (it is an iPXE script profile)",
            profile.name
        )
    })?;
    let rendered = |field: &str, r: &str| -> Result<String, String> {
        let r = if r.contains("{{") || r.contains("{%") {
            render_template(profile, field, r, vars)?.trim().to_string()
        } else {
            r.to_string()
        };
        check_ref(profile, field, &r)?;
        Ok(r)
    };
    let kernel = rendered("kernel", kernel)?;
    let initrds = profile
        .initrds
        .iter()
        .map(|i| rendered("initrd", i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((kernel, initrds))
}

/// Labels that answer every key, so validation accepts `machine.labels.rack`
/// (a real machine without that label fails at render time, with a clear message).
#[derive(Debug)]
struct SampleLabels;

impl Object for SampleLabels {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        key.as_str().map(|k| Value::from(format!("sample-{k}")))
    }
}

/// Checks a profile's templates at upload time: syntax, variable names, and a
/// render against a sample machine. The error names the field and the problem.
pub fn validate_profile_templates(p: &Profile) -> Result<(), String> {
    let mac: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, 0x01]);
    let mut machine = Machine::discovered(mac, None, Some(rackboot_core::Arch::Bios));
    machine.name = "sample".into();
    let urls = ServerUrls::new("http://192.0.2.1:8080", "assets");
    let vars = template_vars_with_labels(&machine, mac, &urls, Value::from_object(SampleLabels));
    cmdline(p, &vars)?;
    if let Some(script) = &p.ipxe_script {
        render_template(p, "ipxe_script", script, &vars)?;
    }
    if p.kernel.is_some() {
        kernel_refs(p, &vars)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// iPXE

/// Text for an iPXE `echo`/`item`: one line, no `${` settings expansion.
fn ipxe_text(s: &str) -> String {
    one_line(s).replace("${", "$ {")
}

fn ipxe_asset(r: &str, urls: &ServerUrls) -> String {
    if is_url(r) {
        r.to_string()
    } else {
        format!("{}/assets/{}", urls.base_url, r.trim_start_matches('/'))
    }
}

fn ipxe_header(machine: &Machine, mac: MacAddr, what: &str) -> String {
    format!("#!ipxe\n# rackboot: {} ({mac}) {what}\n", machine.name)
}

fn ipxe_error(machine: &Machine, mac: MacAddr, message: &str) -> String {
    format!(
        "{}echo rackboot: {}\necho rackboot: booting the next device in 10 seconds\nsleep 10\nexit 1\n",
        ipxe_header(machine, mac, "cannot boot"),
        ipxe_text(message)
    )
}

/// Commands booting `profile` (no shebang): kernel with `initrd=` names, initrds, boot;
/// or the rendered script of an iPXE-script profile.
fn ipxe_profile_body(profile: &Profile, vars: &Value, urls: &ServerUrls) -> Result<String, String> {
    if let Some(script) = &profile.ipxe_script {
        let text = render_template(profile, "ipxe_script", script, vars)?;
        let body = text
            .strip_prefix("#!ipxe")
            .map(|rest| rest.trim_start_matches(['\r', '\n']))
            .unwrap_or(&text);
        let mut body = body.to_string();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        return Ok(body);
    }
    let (kernel, initrds) = kernel_refs(profile, vars)?;
    let args = cmdline(profile, vars)?;
    let mut line = format!("kernel {}", ipxe_asset(&kernel, urls));
    for i in 0..initrds.len() {
        write!(line, " initrd=initrd{i}").unwrap();
    }
    if !args.is_empty() {
        write!(line, " {args}").unwrap();
    }
    let mut out = format!("{}\n", line.replace("${", "$ {"));
    for (i, initrd) in initrds.iter().enumerate() {
        writeln!(out, "initrd --name initrd{i} {}", ipxe_asset(initrd, urls)).unwrap();
    }
    out.push_str("boot\n");
    Ok(out)
}

/// The iPXE script for `plan`.
pub fn render_ipxe(machine: &Machine, mac: MacAddr, plan: &BootPlan, urls: &ServerUrls) -> String {
    let vars = template_vars(machine, mac, urls);
    let result = match plan {
        BootPlan::Profile(p) => ipxe_profile_body(p, &vars, urls).map(|body| {
            format!(
                "{}{body}",
                ipxe_header(machine, mac, &format!("boots profile {}", p.name))
            )
        }),
        BootPlan::LocalDisk => Ok(format!(
            "{}echo rackboot: booting the local disk\nexit\n",
            ipxe_header(machine, mac, "boots the local disk")
        )),
        BootPlan::NextDevice { reason } => Ok(format!(
            "{}echo rackboot: {}\nexit\n",
            ipxe_header(machine, mac, "has nothing to boot from the network"),
            ipxe_text(reason)
        )),
        BootPlan::Error { message } => Ok(ipxe_error(machine, mac, message)),
        BootPlan::Menu(menu)
            if menu.loader == Some(LoaderKind::Pxelinux)
                && matches!(machine.arch, Some(rackboot_core::Arch::Bios) | None) =>
        {
            Ok(ipxe_chain_pxelinux(machine, mac, urls))
        }
        BootPlan::Menu(menu) => ipxe_menu(machine, mac, menu, &vars, urls),
        BootPlan::Install(plan) => ipxe_install(machine, mac, plan, urls),
        BootPlan::Agent(plan) => ipxe_agent(machine, mac, plan),
    };
    result.unwrap_or_else(|message| ipxe_error(machine, mac, &message))
}

/// The agent's RAM-disk, with its per-boot token on the kernel command line.
fn ipxe_agent(machine: &Machine, mac: MacAddr, plan: &AgentPlan) -> Result<String, String> {
    let boot = plan.boot.as_ref().ok_or_else(agent_needs_token)?;
    let what = match plan.workflow {
        Some(id) => format!("boots the deploy agent (workflow {id})"),
        None => "boots the deploy agent".to_string(),
    };
    Ok(format!(
        "{}echo rackboot: booting the deploy agent\nkernel {} initrd=initramfs.img {}\ninitrd --name initramfs.img {}\nboot\n",
        ipxe_header(machine, mac, &what),
        boot.kernel_url,
        boot.cmdline.replace("${", "$ {"),
        boot.initrd_url,
    ))
}

fn agent_needs_token() -> String {
    "the deploy agent boots through iPXE (http://<server>/boot/ipxe/<mac>) or GRUB (grub.cfg-01-<mac>), which issue its per-boot token; not through this loader".to_string()
}

/// A menu the operator wants shown by pxelinux, asked for by a BIOS machine
/// already running iPXE (its NIC's ROM, or a DHCP server that is not ours
/// chose undionly.kpxe): chain pxelinux.0 over TFTP, which then reads its
/// generated `pxelinux.cfg/01-<mac>`. pxelinux would derive its path prefix
/// from the boot file name iPXE hands on (this script's URL), so option 210
/// sets it to the TFTP root.
fn ipxe_chain_pxelinux(machine: &Machine, mac: MacAddr, urls: &ServerUrls) -> String {
    let host = urls
        .base_url
        .split_once("://")
        .map_or(urls.base_url.as_str(), |(_, rest)| rest);
    let host = host.split(['/', ':']).next().unwrap_or(host);
    format!(
        "{}set 210:string /\nchain tftp://{host}/pxelinux.0 || goto failed\n:failed\n\
         echo rackboot: cannot load pxelinux.0 from {host}; booting the local disk\nsleep 10\nexit\n",
        ipxe_header(machine, mac, "gets a pxelinux menu")
    )
}

/// The installer boot: kernel + initrds (Linux families), VMware's mboot with
/// its boot.cfg (ESXi) or wimboot with named files (Windows).
fn ipxe_install(
    machine: &Machine,
    mac: MacAddr,
    plan: &InstallPlan,
    urls: &ServerUrls,
) -> Result<String, String> {
    let body = ipxe_install_body(machine, plan, urls)?;
    Ok(format!(
        "{}{body}",
        ipxe_header(
            machine,
            mac,
            &format!("installs {} (install {})", plan.release.id, plan.install.id),
        )
    ))
}

/// The lines that load and boot the installer.
fn ipxe_install_body(
    machine: &Machine,
    plan: &InstallPlan,
    urls: &ServerUrls,
) -> Result<String, String> {
    use rackboot_install::BootMethod;
    let entry = crate::install::boot_entry(machine, &plan.install, &plan.release, urls)?;
    let mut out = String::new();
    let words = |args: &[String]| {
        args.iter()
            .map(|a| a.replace("${", "$ {"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match entry.method {
        BootMethod::Linux => {
            let mut line = format!("kernel {}", entry.kernel_url);
            for i in 0..entry.initrds.len() {
                write!(line, " initrd=initrd{i}").unwrap();
            }
            if !entry.args.is_empty() {
                write!(line, " {}", words(&entry.args)).unwrap();
            }
            writeln!(out, "{line}").unwrap();
            for (i, initrd) in entry.initrds.iter().enumerate() {
                writeln!(out, "initrd --name initrd{i} {}", initrd.url).unwrap();
            }
        }
        BootMethod::EsxiMboot => {
            // BIOS: mboot.c32 is a COMBOOT image iPXE loads with `kernel`;
            // UEFI: mboot.efi is chained.
            let verb = match machine.arch {
                Some(rackboot_core::Arch::Bios) | None => "kernel",
                Some(_) => "chain",
            };
            writeln!(out, "{verb} {} {}", entry.kernel_url, words(&entry.args)).unwrap();
        }
        BootMethod::Wimboot => {
            writeln!(out, "kernel {}", entry.kernel_url).unwrap();
            for f in &entry.initrds {
                match &f.name {
                    Some(name) => writeln!(out, "initrd {} {name}", f.url).unwrap(),
                    None => writeln!(out, "initrd {}", f.url).unwrap(),
                }
            }
        }
    }
    out.push_str("boot\n");
    Ok(out)
}

/// An installer as pxelinux and GRUB load it: kernel and initrds as TFTP paths
/// into the OS tree (`/os/<id>/...`, which the TFTP server maps to the
/// catalog), and the kernel arguments. Only Linux families boot this way.
struct TftpInstaller {
    kernel: String,
    initrds: Vec<String>,
    args: String,
}

fn tftp_installer(
    machine: &Machine,
    plan: &InstallPlan,
    urls: &ServerUrls,
) -> Result<TftpInstaller, String> {
    let entry = crate::install::boot_entry(machine, &plan.install, &plan.release, urls)?;
    if entry.method != rackboot_install::BootMethod::Linux {
        return Err(install_needs_ipxe(plan));
    }
    let tree = format!("{}/os/", urls.base_url);
    let tftp_path = |url: &str| match url.strip_prefix(&tree) {
        Some(rest) => Ok(format!("/os/{rest}")),
        None => Err(format!(
            "install {}: {url} is not in the OS tree, so pxelinux and GRUB cannot fetch it over TFTP",
            plan.install.id
        )),
    };
    Ok(TftpInstaller {
        kernel: tftp_path(&entry.kernel_url)?,
        initrds: entry
            .initrds
            .iter()
            .map(|i| tftp_path(&i.url))
            .collect::<Result<_, _>>()?,
        args: one_line(&entry.args.join(" ")),
    })
}

fn ipxe_menu(
    machine: &Machine,
    mac: MacAddr,
    menu: &MenuPlan,
    vars: &Value,
    urls: &ServerUrls,
) -> Result<String, String> {
    let mut out = ipxe_header(machine, mac, "gets a menu");
    for note in &menu.skipped {
        writeln!(out, "# skipped {}", one_line(note)).unwrap();
    }
    writeln!(out, "menu {}", ipxe_text(&menu.title)).unwrap();
    out.push_str("item rackboot-local Boot the local disk\n");
    for (i, (label, _)) in menu.entries.iter().enumerate() {
        writeln!(out, "item rackboot-{i} {}", ipxe_text(label)).unwrap();
    }
    let default = menu
        .default
        .map(|i| format!("rackboot-{i}"))
        .unwrap_or_else(|| "rackboot-local".into());
    // iPXE reads --timeout 0 as "wait forever"; our 0 means "boot the default now".
    let timeout_ms = (u64::from(menu.timeout_secs) * 1000).max(1);
    writeln!(
        out,
        "choose --timeout {timeout_ms} --default {default} rackboot_choice || goto rackboot-local"
    )
    .unwrap();
    out.push_str(
        "goto ${rackboot_choice}\n\n:rackboot-local\necho rackboot: booting the local disk\nexit\n",
    );
    for (i, (_, target)) in menu.entries.iter().enumerate() {
        let body = match target {
            MenuTarget::Profile(profile) => ipxe_profile_body(profile, vars, urls)?,
            MenuTarget::Install(plan) => ipxe_install_body(machine, plan, urls)?,
        };
        write!(out, "\n:rackboot-{i}\n{body}exit\n").unwrap();
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// pxelinux

fn pxelinux_asset(r: &str, urls: &ServerUrls) -> String {
    if is_url(r) {
        r.to_string()
    } else {
        format!("{}/{}", urls.tftp_assets, r.trim_start_matches('/'))
    }
}

fn pxelinux_header(machine: &Machine, mac: MacAddr, what: &str) -> String {
    format!("# rackboot: {} ({mac}) {what}\n", machine.name)
}

fn pxelinux_error(machine: &Machine, mac: MacAddr, message: &str) -> String {
    // PROMPT 1 + TIMEOUT: pxelinux shows the message and waits 10 s before the default.
    format!(
        "{}SAY rackboot: {}\nSAY rackboot: booting the local disk in 10 seconds\nPROMPT 1\nTIMEOUT 100\nDEFAULT local\n\nLABEL local\n  LOCALBOOT 0\n",
        pxelinux_header(machine, mac, "cannot boot"),
        one_line(message)
    )
}

/// `KERNEL`/`INITRD`/`APPEND` lines of a kernel profile.
fn pxelinux_profile_body(
    profile: &Profile,
    vars: &Value,
    urls: &ServerUrls,
) -> Result<String, String> {
    if profile.ipxe_script.is_some() {
        return Err(format!(
            "profile \"{}\" is an iPXE script; pxelinux cannot boot it",
            profile.name
        ));
    }
    let (kernel, initrds) = kernel_refs(profile, vars)?;
    let args = cmdline(profile, vars)?;
    let mut out = format!("  KERNEL {}\n", pxelinux_asset(&kernel, urls));
    if !initrds.is_empty() {
        let list: Vec<String> = initrds.iter().map(|i| pxelinux_asset(i, urls)).collect();
        writeln!(out, "  INITRD {}", list.join(",")).unwrap();
    }
    if !args.is_empty() {
        writeln!(out, "  APPEND {args}").unwrap();
    }
    Ok(out)
}

/// The pxelinux config (`pxelinux.cfg/01-<mac>`) for `plan`. Relative kernels and
/// initrds are TFTP paths under `urls.tftp_assets`.
pub fn render_pxelinux(
    machine: &Machine,
    mac: MacAddr,
    plan: &BootPlan,
    urls: &ServerUrls,
) -> String {
    let vars = template_vars(machine, mac, urls);
    let local = |what: &str, say: Option<&str>| {
        let mut out = pxelinux_header(machine, mac, what);
        if let Some(s) = say {
            writeln!(out, "SAY rackboot: {}", one_line(s)).unwrap();
        }
        out.push_str("PROMPT 0\nDEFAULT local\n\nLABEL local\n  LOCALBOOT 0\n");
        out
    };
    let result = match plan {
        BootPlan::Profile(p) => pxelinux_profile_body(p, &vars, urls).map(|body| {
            format!(
                "{}PROMPT 0\nDEFAULT {name}\n\nLABEL {name}\n{body}",
                pxelinux_header(machine, mac, &format!("boots profile {}", p.name)),
                name = p.name
            )
        }),
        BootPlan::LocalDisk => Ok(local("boots the local disk", None)),
        BootPlan::NextDevice { reason } => {
            Ok(local("has nothing to boot from the network", Some(reason)))
        }
        BootPlan::Error { message } => Ok(pxelinux_error(machine, mac, message)),
        BootPlan::Menu(menu) => pxelinux_menu(machine, mac, menu, &vars, urls),
        BootPlan::Agent(_) => Err(agent_needs_token()),
        BootPlan::Install(plan) => pxelinux_install_body(machine, plan, urls).map(|body| {
            format!(
                "{}PROMPT 0\nDEFAULT install\n\nLABEL install\n{body}",
                pxelinux_header(
                    machine,
                    mac,
                    &format!("installs {} (install {})", plan.release.id, plan.install.id)
                ),
            )
        }),
    };
    result.unwrap_or_else(|message| pxelinux_error(machine, mac, &message))
}

/// `KERNEL`/`INITRD`/`APPEND` lines of an installer.
fn pxelinux_install_body(
    machine: &Machine,
    plan: &InstallPlan,
    urls: &ServerUrls,
) -> Result<String, String> {
    let i = tftp_installer(machine, plan, urls)?;
    let mut out = format!("  KERNEL {}\n", i.kernel);
    if !i.initrds.is_empty() {
        writeln!(out, "  INITRD {}", i.initrds.join(",")).unwrap();
    }
    if !i.args.is_empty() {
        writeln!(out, "  APPEND {}", i.args).unwrap();
    }
    Ok(out)
}

fn pxelinux_menu(
    machine: &Machine,
    mac: MacAddr,
    menu: &MenuPlan,
    vars: &Value,
    urls: &ServerUrls,
) -> Result<String, String> {
    let mut out = pxelinux_header(machine, mac, "gets a menu");
    for note in &menu.skipped {
        writeln!(out, "# skipped {}", one_line(note)).unwrap();
    }
    // pxelinux TIMEOUT is in tenths of a second and 0 means "wait forever".
    let tenths = (u64::from(menu.timeout_secs) * 10).max(1);
    writeln!(
        out,
        "UI menu.c32\nPROMPT 0\nMENU TITLE {}\nTIMEOUT {tenths}\n\nLABEL local\n  MENU LABEL Boot the local disk",
        one_line(&menu.title)
    )
    .unwrap();
    if menu.default.is_none() {
        out.push_str("  MENU DEFAULT\n");
    }
    out.push_str("  LOCALBOOT 0\n");
    for (i, (label, target)) in menu.entries.iter().enumerate() {
        let body = match target {
            MenuTarget::Profile(profile) => pxelinux_profile_body(profile, vars, urls)?,
            MenuTarget::Install(plan) => pxelinux_install_body(machine, plan, urls)?,
        };
        write!(out, "\nLABEL entry{i}\n  MENU LABEL {}\n", one_line(label)).unwrap();
        if menu.default == Some(i) {
            out.push_str("  MENU DEFAULT\n");
        }
        out.push_str(&body);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// GRUB

/// A GRUB single-quoted word.
fn grub_quote(s: &str) -> String {
    format!("'{}'", one_line(s).replace('\'', r"'\''"))
}

/// Kernel arguments as GRUB words. GRUB's parser strips quotes (`a="b c"` becomes the
/// word `a=b c`) and its `linux` command re-quotes words with spaces (`"a=b c"`, which
/// Linux accepts), so quotes pass through; `$` (expansion), backslashes and the characters
/// GRUB's shell treats specially are backslash-escaped to stay literal.
/// Checked with Debian 12's GRUB 2.06 under OVMF.
fn grub_args(args: &str) -> String {
    let mut out = String::with_capacity(args.len());
    for c in args.chars() {
        if matches!(
            c,
            '\\' | '$' | ';' | '|' | '&' | '<' | '>' | '{' | '}' | '#'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// GRUB 2.06 (Debian 12) cannot name an HTTP port, so relative assets go over
/// TFTP from the server GRUB booted from, and URLs must use the default port.
fn grub_asset(profile: &Profile, r: &str, urls: &ServerUrls) -> Result<String, String> {
    if !is_url(r) {
        return Ok(format!(
            "(tftp){}/{}",
            urls.tftp_assets,
            r.trim_start_matches('/')
        ));
    }
    let (proto, rest) = r.split_once("://").unwrap_or_default();
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let ok_host =
        !host.is_empty() && !host.contains(':') || host.ends_with(":80") && proto == "http";
    if !matches!(proto, "http" | "tftp") || !ok_host {
        return Err(format!(
            "profile \"{}\": GRUB cannot fetch {r} (only http:// on port 80 and tftp://)",
            profile.name
        ));
    }
    let host = host.trim_end_matches(":80");
    Ok(format!("({proto},{host})/{path}"))
}

fn grub_header(machine: &Machine, mac: MacAddr, what: &str) -> String {
    format!("# rackboot: {} ({mac}) {what}\n", machine.name)
}

fn grub_error(machine: &Machine, mac: MacAddr, message: &str) -> String {
    format!(
        "{}echo {}\necho 'rackboot: booting the next device in 10 seconds'\nsleep 10\nexit\n",
        grub_header(machine, mac, "cannot boot"),
        grub_quote(&format!("rackboot: {message}"))
    )
}

/// `linux`/`initrd` lines of a kernel profile, indented by `indent`.
fn grub_profile_body(
    profile: &Profile,
    vars: &Value,
    urls: &ServerUrls,
    indent: &str,
) -> Result<String, String> {
    if profile.ipxe_script.is_some() {
        return Err(format!(
            "profile \"{}\" is an iPXE script; GRUB cannot boot it",
            profile.name
        ));
    }
    let (kernel, initrds) = kernel_refs(profile, vars)?;
    let args = cmdline(profile, vars)?;
    let mut out = format!("{indent}linux {}", grub_asset(profile, &kernel, urls)?);
    if !args.is_empty() {
        write!(out, " {}", grub_args(&args)).unwrap();
    }
    out.push('\n');
    if !initrds.is_empty() {
        let list = initrds
            .iter()
            .map(|i| grub_asset(profile, i, urls))
            .collect::<Result<Vec<_>, _>>()?;
        writeln!(out, "{indent}initrd {}", list.join(" ")).unwrap();
    }
    Ok(out)
}

/// `linux`/`initrd` lines of an installer, indented by `indent`.
fn grub_install_body(
    machine: &Machine,
    plan: &InstallPlan,
    urls: &ServerUrls,
    indent: &str,
) -> Result<String, String> {
    let i = tftp_installer(machine, plan, urls)?;
    let mut out = format!("{indent}linux (tftp){}", i.kernel);
    if !i.args.is_empty() {
        write!(out, " {}", grub_args(&i.args)).unwrap();
    }
    out.push('\n');
    if !i.initrds.is_empty() {
        let list: Vec<String> = i.initrds.iter().map(|p| format!("(tftp){p}")).collect();
        writeln!(out, "{indent}initrd {}", list.join(" ")).unwrap();
    }
    Ok(out)
}

/// The GRUB config (`grub.cfg-01-<mac>`) for `plan`.
pub fn render_grub(machine: &Machine, mac: MacAddr, plan: &BootPlan, urls: &ServerUrls) -> String {
    let vars = template_vars(machine, mac, urls);
    let result = match plan {
        BootPlan::Profile(p) => grub_profile_body(p, &vars, urls, "").map(|body| {
            format!(
                "{}echo {}\n{body}boot\n",
                grub_header(machine, mac, &format!("boots profile {}", p.name)),
                grub_quote(&format!("rackboot: booting profile {}", p.name))
            )
        }),
        BootPlan::LocalDisk => Ok(format!(
            "{}echo 'rackboot: booting the local disk'\nexit\n",
            grub_header(machine, mac, "boots the local disk")
        )),
        BootPlan::NextDevice { reason } => Ok(format!(
            "{}echo {}\nexit\n",
            grub_header(machine, mac, "has nothing to boot from the network"),
            grub_quote(&format!("rackboot: {reason}"))
        )),
        BootPlan::Error { message } => Ok(grub_error(machine, mac, message)),
        BootPlan::Menu(menu) => grub_menu(machine, mac, menu, &vars, urls),
        BootPlan::Agent(plan) => grub_agent(machine, mac, plan, urls),
        BootPlan::Install(plan) => grub_install_body(machine, plan, urls, "").map(|body| {
            format!(
                "{}echo {}\n{body}boot\n",
                grub_header(
                    machine,
                    mac,
                    &format!("installs {} (install {})", plan.release.id, plan.install.id)
                ),
                grub_quote(&format!("rackboot: installing {}", plan.release.id))
            )
        }),
    };
    result.unwrap_or_else(|message| grub_error(machine, mac, &message))
}

/// The agent's RAM-disk, with its per-boot token on the kernel command
/// line. GRUB loads it over TFTP (it cannot name the boot HTTP port), from
/// the TFTP directory where the binary exposes `ramdisk_dir`.
fn grub_agent(
    machine: &Machine,
    mac: MacAddr,
    plan: &AgentPlan,
    urls: &ServerUrls,
) -> Result<String, String> {
    let boot = plan.boot.as_ref().ok_or_else(agent_needs_token)?;
    let what = match plan.workflow {
        Some(id) => format!("boots the deploy agent (workflow {id})"),
        None => "boots the deploy agent".to_string(),
    };
    Ok(format!(
        "{}echo 'rackboot: booting the deploy agent'\nlinux {} {}\ninitrd {}\nboot\n",
        grub_header(machine, mac, &what),
        grub_ramdisk_path(&boot.kernel_url, urls)?,
        grub_args(&boot.cmdline),
        grub_ramdisk_path(&boot.initrd_url, urls)?,
    ))
}

/// `(tftp)/ramdisk/<file>` for the RAM-disk URL `<base_url>/ramdisk/<file>`.
fn grub_ramdisk_path(url: &str, urls: &ServerUrls) -> Result<String, String> {
    let dir = crate::service::RAMDISK_TFTP_DIR;
    url.strip_prefix(&format!("{}/ramdisk/", urls.base_url))
        .map(|file| format!("(tftp)/{dir}/{file}"))
        .ok_or_else(|| {
            format!("the agent RAM-disk {url} is not under this server's /ramdisk/, so GRUB cannot fetch it over TFTP")
        })
}

fn grub_menu(
    machine: &Machine,
    mac: MacAddr,
    menu: &MenuPlan,
    vars: &Value,
    urls: &ServerUrls,
) -> Result<String, String> {
    let mut out = grub_header(machine, mac, "gets a menu");
    for note in &menu.skipped {
        writeln!(out, "# skipped {}", one_line(note)).unwrap();
    }
    let default = menu
        .default
        .map(|i| format!("entry{i}"))
        .unwrap_or_else(|| "local".into());
    writeln!(
        out,
        "set timeout={}\nset default={default}\n\nmenuentry 'Boot the local disk' --id local {{\n  exit\n}}",
        menu.timeout_secs
    )
    .unwrap();
    for (i, (label, target)) in menu.entries.iter().enumerate() {
        let body = match target {
            MenuTarget::Profile(profile) => grub_profile_body(profile, vars, urls, "  ")?,
            MenuTarget::Install(plan) => grub_install_body(machine, plan, urls, "  ")?,
        };
        write!(
            out,
            "\nmenuentry {} --id entry{i} {{\n{body}}}\n",
            grub_quote(label)
        )
        .unwrap();
    }
    Ok(out)
}

/// The generic `grub.cfg`. Debian 12's network GRUB (grubnetx64.efi, 2.06) reads only
/// `$prefix/grub.cfg` (prefix `(tftp,SERVER)/grub`), so this file loads the
/// per-machine one by the MAC GRUB booted from: `net_default_mac` is
/// `52:54:00:12:34:56`, a file name the TFTP side answers. Newer GRUBs that look
/// for `grub.cfg-01-<mac>` themselves get the same file directly. Checked under
/// OVMF with Debian's grubnetx64.efi.signed.
pub fn render_grub_generic() -> String {
    "# rackboot: per-machine GRUB configs are rendered on request\n\
     configfile \"${prefix}/grub.cfg-01-${net_default_mac}\"\n\
     echo \"rackboot: no config for ${net_default_mac}\"\n\
     sleep 10\n\
     exit\n"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str) -> Profile {
        let now = chrono::Utc::now();
        Profile {
            name: name.into(),
            description: String::new(),
            kernel: Some("debian/linux".into()),
            initrds: vec!["debian/initrd.gz".into()],
            cmdline: "console=ttyS0 hostname={{ machine.name }}".into(),
            ipxe_script: None,
            loader: LoaderKind::Ipxe,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn server_urls_split_host_and_port() {
        let u = ServerUrls::new("http://10.0.0.1:8080/", "/assets/");
        assert_eq!(u.server, "10.0.0.1:8080");
        assert_eq!(u.base_url, "http://10.0.0.1:8080");
        assert_eq!(u.tftp_assets, "/assets");
        assert_eq!(ServerUrls::new("http://h", "").tftp_assets, "");
    }

    #[test]
    fn validation_catches_bad_templates() {
        let mut p = profile("p");
        validate_profile_templates(&p).unwrap();
        p.cmdline = "x={{ machine.labels.rack }} y={{ mac }} {{ server }} {{ base_url }}".into();
        validate_profile_templates(&p).unwrap();
        p.cmdline = "x={{ machine.nmae }}".into();
        let err = validate_profile_templates(&p).unwrap_err();
        assert!(err.contains("cmdline"), "{err}");
        p.cmdline = "x={{ mac".into();
        let err = validate_profile_templates(&p).unwrap_err();
        assert!(err.contains("syntax"), "{err}");
        p.cmdline = String::new();
        p.kernel = None;
        p.initrds.clear();
        p.ipxe_script = Some("#!ipxe\n{% for x in range(100000) %}{% for y in range(100000) %}{% endfor %}{% endfor %}".into());
        let err = validate_profile_templates(&p).unwrap_err();
        assert!(err.contains("ipxe_script"), "{err}");
        let mut p = profile("p");
        p.kernel = Some("a b".into());
        assert!(
            validate_profile_templates(&p)
                .unwrap_err()
                .contains("kernel")
        );
    }

    #[test]
    fn grub_assets() {
        let p = profile("p");
        let u = ServerUrls::new("http://10.0.0.1:8080", "assets");
        assert_eq!(
            grub_asset(&p, "d/linux", &u).unwrap(),
            "(tftp)/assets/d/linux"
        );
        assert_eq!(
            grub_asset(&p, "http://mirror/d/linux", &u).unwrap(),
            "(http,mirror)/d/linux"
        );
        assert_eq!(
            grub_asset(&p, "http://mirror:80/d/linux", &u).unwrap(),
            "(http,mirror)/d/linux"
        );
        assert!(grub_asset(&p, "http://mirror:8080/d/linux", &u).is_err());
        assert!(grub_asset(&p, "https://mirror/d/linux", &u).is_err());
        assert_eq!(grub_args(r#"a="b c" $x;y"#), r#"a="b c" \$x\;y"#);
    }

    #[test]
    fn ipxe_text_never_expands_settings() {
        assert_eq!(ipxe_text("a\n${x}"), "a $ {x}");
    }
}
