//! CLI for installer-based installs: `rackboot os`, `rackboot install`,
//! `rackboot installs`, `rackboot render`, `rackboot template`.
//!
//! `os import` runs here, next to the server's state directory (it reads an
//! ISO or a tree and copies it into STATE_DIR/os), then checks that the
//! server lists it; it refuses when the server it talks to does not hold
//! that state directory. Everything else goes through the API.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use rackboot_api::install_menu::InstallMenuCreated;
use rackboot_api::installs::{OsInfo, RenderPreview};
use rackboot_core::{InstallRequest, InstallTemplate, OsFamily};
use serde_json::{Map, Value, json};

use crate::client::{Api, ClientArgs, seg};
use crate::output::{Format, Table, print_json};

#[derive(Subcommand)]
pub enum OsCmd {
    /// Import an ISO image or an unpacked installation tree into the catalog.
    Import {
        /// ISO file or directory.
        path: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List imported OSes.
    List(ClientArgs),
    /// Remove an imported OS and its files.
    Delete {
        /// OS catalog id (see `rackboot os list`).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
pub struct InstallArgs {
    /// Machine id, name or MAC.
    pub machine: String,
    /// OS catalog id (see `rackboot os list`); with --menu, repeatable: the
    /// OSes the menu offers, in order.
    #[arg(long, required = true)]
    pub os: Vec<String>,
    /// Do not install now: give the machine a boot menu of these OSes (each
    /// armed as a pending install) with local disk as the default, as
    /// operators' pxelinux menus do. The first install that completes sets
    /// the machine to local disk and cancels the others.
    #[arg(long)]
    pub menu: bool,
    /// With --menu: a profile offered after the installers (repeatable).
    #[arg(long = "profile", requires = "menu")]
    pub profiles: Vec<String>,
    /// With --menu: the entry booted on timeout (an OS id or profile); local disk otherwise.
    #[arg(long, requires = "menu")]
    pub default: Option<String>,
    /// With --menu: seconds before the default boots.
    #[arg(long, requires = "menu", default_value_t = 30)]
    pub timeout: u32,
    /// With --menu: show it in this loader (ipxe, pxelinux or grub) instead of the default iPXE.
    #[arg(long, requires = "menu", value_parser = ["ipxe", "pxelinux", "grub", "shim"])]
    pub loader: Option<String>,
    /// A stored template (see `rackboot template list`); the built-in one otherwise.
    #[arg(long)]
    pub template: Option<String>,
    /// Install variables from a JSON or TOML file (hostname, nics, disk, packages, ...).
    #[arg(long)]
    pub vars: Option<PathBuf>,
    /// One variable as KEY=VALUE (VALUE is JSON when it parses as JSON, else a string).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Read a root password from standard input (hashed by the server; only the hash is kept).
    /// Windows passwords are read from RACKBOOT_WINDOWS_ADMIN_PASSWORD and
    /// RACKBOOT_WINDOWS_SHARE_PASSWORD (stored sealed).
    #[arg(long)]
    pub root_password_stdin: bool,
    /// Extra installer kernel argument (repeatable), e.g. console=ttyS0,115200.
    #[arg(long = "kernel-arg")]
    pub kernel_args: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Windows passwords come from the environment, never the command line (other
/// local users can read a command line); the server stores them sealed.
const WINDOWS_SECRETS: [(&str, &str); 2] = [
    ("windows_admin_password", "RACKBOOT_WINDOWS_ADMIN_PASSWORD"),
    ("windows_share_password", "RACKBOOT_WINDOWS_SHARE_PASSWORD"),
];

#[derive(Args)]
pub struct InstallsArgs {
    /// Only this machine's installs.
    #[arg(long)]
    pub machine: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct RenderArgs {
    /// Machine id, name or MAC.
    pub machine: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Subcommand)]
pub enum TemplateCmd {
    /// List stored templates.
    List(ClientArgs),
    /// Print a stored template.
    Show {
        /// Template name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Store a template from a file (checked by the server first).
    Put {
        /// Template name.
        name: String,
        /// rhel, esxi, debian, ubuntu, suse or windows.
        #[arg(long)]
        family: String,
        /// Free text shown with the template.
        #[arg(long, default_value = "")]
        description: String,
        /// minijinja source file.
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a stored template.
    Delete {
        /// Template name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn os(cmd: OsCmd) -> Result<()> {
    match cmd {
        OsCmd::Import { path, client } => {
            let server = check_import_target(&client).await?;
            let catalog = client.state_dir.join(crate::config::OS_DIR);
            std::fs::create_dir_all(&catalog)
                .with_context(|| format!("creating {}", catalog.display()))?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({eta})",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            let shown = bar.clone();
            let (src, dst) = (path.clone(), catalog.clone());
            let entry = tokio::task::spawn_blocking(move || {
                rackboot_oscatalog::import(&src, &dst, &|p: rackboot_oscatalog::ImportProgress| {
                    shown.set_length(p.bytes_total);
                    shown.set_position(p.bytes_done);
                    if let Some(f) = &p.current {
                        shown.set_message(f.display().to_string());
                    }
                })
            })
            .await
            .context("import task")?
            .with_context(|| format!("importing {}", path.display()))?;
            bar.finish_and_clear();
            let r = &entry;
            match client.output {
                Format::Json => print_json(r),
                Format::Text => outln!(
                    "imported {} ({} {} {}, {} family) into {}",
                    r.id,
                    r.name,
                    r.version,
                    r.arch,
                    r.family,
                    catalog.join(&r.id).display()
                ),
            }
            // The server must list it (listing re-reads the catalog).
            match server {
                Some(api) => {
                    let listed: Vec<OsInfo> = api.get("/os").await?;
                    if !listed.iter().any(|o| o.id == r.id) {
                        bail!(
                            "imported {} into {}, but the server at {} does not list it",
                            r.id,
                            catalog.display(),
                            client.server
                        );
                    }
                }
                None => eprintln!(
                    "note: no server answered at {}; a server on {} sees it when it starts",
                    client.server,
                    client.state_dir.display()
                ),
            }
        }
        OsCmd::List(client) => {
            let api = Api::new(&client)?;
            let all: Vec<OsInfo> = api.get("/os").await?;
            match client.output {
                Format::Json => print_json(&all),
                Format::Text => {
                    let mut t = Table::new(["ID", "FAMILY", "NAME", "VERSION", "ARCH", "KERNEL"]);
                    for o in all {
                        t.row([
                            o.id,
                            o.family.to_string(),
                            o.name,
                            o.version,
                            o.arch,
                            o.kernel,
                        ]);
                    }
                    t.print();
                }
            }
        }
        OsCmd::Delete { id, client } => {
            Api::new(&client)?
                .delete(&format!("/os/{}", seg(&id)))
                .await?;
            crate::client::print_deleted(client.output, "OS", &id);
        }
    }
    Ok(())
}

/// Refuses an import the server would never see: the server at
/// `client.server` must hold `client.state_dir` (the instance id in the
/// directory's lock file is the one the server reports). With no server
/// answering, the directory must at least be a state directory. Returns the
/// API when a server answered.
async fn check_import_target(client: &ClientArgs) -> Result<Option<Api>> {
    let dir = &client.state_dir;
    let lock_text = std::fs::read_to_string(dir.join(crate::state::LOCK_FILE)).unwrap_or_default();
    let ours = crate::state::lock_instance(&lock_text);
    let status = match Api::new(client) {
        Ok(api) => match api.get::<Value>("/status").await {
            Ok(status) => Some((api, status)),
            Err(e) if format!("{e:#}").contains("cannot reach") => None,
            Err(e) => bail!(
                "cannot ask the server at {} which state directory it holds: {e:#}",
                client.server
            ),
        },
        // No token here: this is not the server's state directory, or no
        // server ever ran on it.
        Err(_) => None,
    };
    match status {
        Some((api, status)) => {
            let theirs = status["instance"].as_str();
            if theirs.is_none() || theirs != ours {
                bail!(
                    "the server at {} holds state directory {}, not {}: it would never see this import; run it with RACKBOOT_STATE_DIR set to the server's state directory, on the server's host",
                    client.server,
                    status["state_dir"].as_str().unwrap_or("(unknown)"),
                    dir.display()
                );
            }
            Ok(Some(api))
        }
        None => {
            let is_state_dir = dir.join(crate::state::LOCK_FILE).is_file()
                || dir.join(crate::config::DB_FILE).is_file();
            if !is_state_dir {
                bail!(
                    "{} is not a rackboot state directory and no server answered at {}: set RACKBOOT_STATE_DIR (or --state-dir) to the server's state directory",
                    dir.display(),
                    client.server
                );
            }
            Ok(None)
        }
    }
}

/// `KEY=VALUE` into `vars`; dotted keys are not nested (the API names fields flat).
fn set_var(vars: &mut Map<String, Value>, kv: &str) -> Result<()> {
    let (k, v) = kv
        .split_once('=')
        .with_context(|| format!("--set {kv:?} is not KEY=VALUE"))?;
    let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
    vars.insert(k.to_string(), value);
    Ok(())
}

fn read_vars(path: &PathBuf) -> Result<Map<String, Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
    } else {
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => bail!("{}: install variables must be an object", path.display()),
    }
}

pub async fn install(args: InstallArgs) -> Result<()> {
    let mut vars = match &args.vars {
        Some(p) => read_vars(p)?,
        None => Map::new(),
    };
    for kv in &args.set {
        set_var(&mut vars, kv)?;
    }
    if !args.menu && args.os.len() > 1 {
        bail!(
            "--os is given {} times: one install at a time, or --menu to offer several",
            args.os.len()
        );
    }
    let mut body = if args.menu {
        json!({
            "entries": args.os.iter().map(|os| json!({"os": os, "template": args.template})).collect::<Vec<_>>(),
            "profiles": args.profiles,
            "default": args.default,
            "timeout_secs": args.timeout,
            "loader": args.loader,
            "vars": vars,
            "kernel_args": args.kernel_args,
        })
    } else {
        json!({
            "os": args.os[0],
            "template": args.template,
            "vars": vars,
            "kernel_args": args.kernel_args,
        })
    };
    for (field, var) in WINDOWS_SECRETS {
        if let Ok(password) = std::env::var(var) {
            body[field] = json!(password);
        }
    }
    if args.root_password_stdin {
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .context("reading the root password from stdin")?;
        body["root_password"] = json!(password.trim_end_matches(['\r', '\n']));
    }
    let api = Api::new(&args.client)?;
    if args.menu {
        let created: InstallMenuCreated = api
            .post(
                &format!("/machines/{}/install-menu", seg(&args.machine)),
                &body,
            )
            .await?;
        match args.client.output {
            Format::Json => print_json(&created),
            Format::Text => {
                outln!(
                    "{} gets a boot menu on its next network boot (default {}, after {} s):",
                    args.machine,
                    args.default.as_deref().unwrap_or("local disk"),
                    args.timeout
                );
                for i in &created.installs {
                    outln!("  install {} of {} (pending)", i.id, i.os);
                }
                for p in &args.profiles {
                    outln!("  profile {p}");
                }
            }
        }
        return Ok(());
    }
    let install: InstallRequest = api
        .post(&format!("/machines/{}/install", seg(&args.machine)), &body)
        .await?;
    match args.client.output {
        Format::Json => print_json(&install),
        Format::Text => outln!(
            "install {} of {} requested for {}: it installs on its next network boot",
            install.id,
            install.os,
            args.machine
        ),
    }
    Ok(())
}

pub async fn installs(args: InstallsArgs) -> Result<()> {
    let api = Api::new(&args.client)?;
    let path = match &args.machine {
        Some(m) => format!("/installs?machine={}", seg(m)),
        None => "/installs".to_string(),
    };
    let all: Vec<InstallRequest> = api.get(&path).await?;
    match args.client.output {
        Format::Json => print_json(&all),
        Format::Text => {
            // People know machines by name; a deleted one keeps its id.
            let names: std::collections::HashMap<uuid::Uuid, String> = api
                .get::<Vec<rackboot_core::Machine>>("/machines")
                .await?
                .into_iter()
                .map(|m| (m.id, m.name))
                .collect();
            let mut t = Table::new(["ID", "MACHINE", "OS", "STATE", "REQUESTED", "COMPLETED"]);
            for i in all {
                t.row([
                    i.id.to_string(),
                    names
                        .get(&i.machine)
                        .cloned()
                        .unwrap_or_else(|| i.machine.to_string()),
                    i.os,
                    i.state.as_str().to_string(),
                    i.requested_at.format("%F %T").to_string(),
                    i.completed_at
                        .map(|t| t.format("%F %T").to_string())
                        .unwrap_or_default(),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}

pub async fn render(args: RenderArgs) -> Result<()> {
    let api = Api::new(&args.client)?;
    let preview: RenderPreview = api
        .get(&format!("/machines/{}/render", seg(&args.machine)))
        .await?;
    match args.client.output {
        Format::Json => print_json(&preview),
        Format::Text => {
            match &preview.error {
                Some(why) => outln!("# {why}\n"),
                None => outln!("# {} boots: {}\n", preview.machine, preview.plan),
            }
            out!("{}", preview.ipxe);
            if let (Some(loader), Some(config)) = (&preview.loader, &preview.loader_config) {
                outln!("\n# ---- {loader} config ----");
                out!("{config}");
            }
            if let (Some(name), Some(body)) = (&preview.install_file, &preview.install_file_body) {
                outln!("\n# ---- {name} ----");
                out!("{body}");
            }
        }
    }
    // Scripts check the exit status: a machine that would only be told
    // "cannot boot" is a failure, whatever was printed.
    if let Some(why) = preview.error {
        bail!("{why}");
    }
    Ok(())
}

pub async fn template(cmd: TemplateCmd) -> Result<()> {
    match cmd {
        TemplateCmd::List(client) => {
            let api = Api::new(&client)?;
            let all: Vec<InstallTemplate> = api.get("/templates").await?;
            match client.output {
                Format::Json => print_json(&all),
                Format::Text => {
                    let mut t = Table::new(["NAME", "FAMILY", "UPDATED", "DESCRIPTION"]);
                    for tpl in all {
                        t.row([
                            tpl.name,
                            tpl.family.to_string(),
                            tpl.updated_at.format("%F %T").to_string(),
                            tpl.description,
                        ]);
                    }
                    t.print();
                }
            }
        }
        TemplateCmd::Show { name, client } => {
            let api = Api::new(&client)?;
            let t: InstallTemplate = api.get(&format!("/templates/{}", seg(&name))).await?;
            match client.output {
                Format::Json => print_json(&t),
                Format::Text => out!("{}", t.source),
            }
        }
        TemplateCmd::Put {
            name,
            family,
            description,
            file,
            client,
        } => {
            let family = OsFamily::parse(&family).with_context(|| {
                format!("--family {family:?}: one of rhel, esxi, debian, ubuntu, suse, windows")
            })?;
            let source = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let api = Api::new(&client)?;
            let body = json!({"family": family, "description": description, "source": source});
            let t: InstallTemplate = api
                .put(&format!("/templates/{}", seg(&name)), &body)
                .await?;
            match client.output {
                Format::Json => print_json(&t),
                Format::Text => outln!("stored template {} ({})", t.name, t.family),
            }
        }
        TemplateCmd::Delete { name, client } => {
            Api::new(&client)?
                .delete(&format!("/templates/{}", seg(&name)))
                .await?;
            crate::client::print_deleted(client.output, "template", &name);
        }
    }
    Ok(())
}
