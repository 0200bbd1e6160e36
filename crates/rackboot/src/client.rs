//! CLI commands that talk to a running server over the REST API.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use rackboot_core::{BootIntent, Event, Lease, Machine, Menu, MenuEntry, Profile, Selector};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::output::{Format, Table, print_json};

/// Where the server is and how to talk to it; shared by every client command.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// API base URL.
    #[arg(
        long,
        env = "RACKBOOT_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// Bearer token; defaults to STATE_DIR/admin-token.
    #[arg(long, env = "RACKBOOT_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// State directory to read the admin token from when --token is not given.
    #[arg(long, env = "RACKBOOT_STATE_DIR", default_value = crate::config::DEFAULT_STATE_DIR, global = true)]
    pub state_dir: PathBuf,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text, global = true)]
    pub output: Format,
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(args: &ClientArgs) -> Result<Api> {
        let token = match &args.token {
            Some(t) => t.clone(),
            None => {
                let path = args.state_dir.join(crate::config::ADMIN_TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!("no --token given and cannot read {} (set RACKBOOT_TOKEN or --state-dir)", path.display())
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Api {
            http: reqwest::Client::new(),
            base: args.server.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base, path)
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach rackboot at {}", self.base))?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading API response")?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("{status}: {msg}");
        }
        if body.is_empty() {
            return serde_json::from_value(Value::Null).context("empty API response");
        }
        serde_json::from_slice(&body).context("decoding API response")
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    pub async fn patch<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T> {
        self.send(self.http.patch(self.url(path)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        let _: Value = self.send(self.http.delete(self.url(path))).await?;
        Ok(())
    }

    pub fn raw(&self) -> (&reqwest::Client, &str, &str) {
        (&self.http, &self.base, &self.token)
    }
}

/// Path segment escaping for names and MACs (':' is fine in a path; '/' and '%' are not).
pub fn seg(s: &str) -> String {
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace('?', "%3F")
        .replace('#', "%23")
}

#[derive(Subcommand)]
pub enum MachineCmd {
    /// List machines.
    List(ClientArgs),
    /// Show one machine (by name, id or any MAC).
    Show {
        machine: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Enroll a machine.
    Add {
        name: String,
        /// Boot NIC first; repeat for more NICs.
        #[arg(long = "mac", required = true)]
        macs: Vec<String>,
        #[arg(long)]
        uuid: Option<String>,
        /// KEY=VALUE, repeatable.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Its BMC: ipmi://USER[:PASS]@HOST[:PORT], redfish[+https]://USER[:PASS]@HOST[/path].
        /// A password here is visible to other local users: prefer RACKBOOT_BMC_PASSWORD.
        #[arg(long)]
        bmc: Option<String>,
        /// Accept the BMC's self-signed TLS certificate.
        #[arg(long)]
        bmc_insecure: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set or remove (`none`) a machine's BMC.
    SetBmc {
        machine: String,
        /// BMC URL as for `add --bmc`, or `none`.
        url: String,
        #[arg(long)]
        insecure: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Power through the BMC: `power [MACHINE...] on|off|soft|cycle|reset|status`.
    Power(crate::power_cli::PowerArgs),
    /// Boot device through the BMC: `boot-device [MACHINE...] pxe|disk [--once]`.
    BootDevice(crate::power_cli::BootDeviceArgs),
    /// Set what the machine boots next.
    SetBoot {
        machine: String,
        /// local | discover | profile | menu
        #[arg(value_parser = ["local", "discover", "profile", "menu"])]
        intent: String,
        /// Profile for `profile` (omit to use selectors); menu entries for `menu` (repeatable).
        #[arg(long = "profile")]
        profiles: Vec<String>,
        /// Menu timeout in seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set labels (KEY=VALUE) on a machine; KEY= removes one.
    Label {
        machine: String,
        labels: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a machine.
    Delete {
        machine: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Put a machine in maintenance (`on --reason TEXT`) or take it out (`off`):
    /// in maintenance no workflow starts or advances on it and its power is not polled.
    Maintenance {
        machine: String,
        #[arg(value_parser = ["on", "off"])]
        switch: String,
        /// Why (required with `on`): shown wherever the machine is.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Every lifecycle transition of a machine: when, from, to, who asked and why.
    Transitions {
        machine: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("label {kv:?} is not KEY=VALUE"))
        })
        .collect()
}

/// The API's `bmc` object; RACKBOOT_BMC_PASSWORD, when set, is the password
/// (kept off the command line).
fn bmc_body(url: &str, insecure: bool) -> Value {
    let mut body = json!({"url": url, "insecure_tls": insecure});
    if let Ok(password) = std::env::var("RACKBOOT_BMC_PASSWORD") {
        body["password"] = json!(password);
    }
    body
}

fn intent_text(intent: &BootIntent) -> String {
    match intent {
        BootIntent::Discover => "discover".into(),
        BootIntent::LocalDisk => "local-disk".into(),
        BootIntent::Profile { name: Some(n) } => format!("profile {n}"),
        BootIntent::Profile { name: None } => "profile (by selector)".into(),
        BootIntent::Menu(m) => format!("menu ({} entries)", m.entries.len()),
        BootIntent::Install { os, .. } => format!("install {os}"),
        BootIntent::Agent { .. } => "agent".into(),
    }
}

fn machine_table(machines: &[Machine]) {
    let mut t = Table::new(["NAME", "MACS", "ARCH", "INTENT", "LABELS"]);
    for m in machines {
        t.row([
            m.name.clone(),
            m.macs
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(","),
            m.arch.map(|a| a.as_str()).unwrap_or_else(|| "-".into()),
            intent_text(&m.intent),
            m.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    t.print();
}

fn machine_detail(m: &Machine, status: &Value) {
    println!("name:     {}", m.name);
    println!("id:       {}", m.id);
    println!(
        "macs:     {}",
        m.macs
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "uuid:     {}",
        m.uuid.map(|u| u.to_string()).unwrap_or_else(|| "-".into())
    );
    println!(
        "arch:     {}",
        m.arch.map(|a| a.as_str()).unwrap_or_else(|| "-".into())
    );
    println!("intent:   {}", intent_text(&m.intent));
    if let Some(bmc) = &m.bmc {
        println!("bmc:      {} (user {})", bmc.address, bmc.username);
    }
    for (k, v) in &m.labels {
        println!("label:    {k}={v}");
    }
    let since = m
        .state_changed_at
        .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_default();
    match &m.state_reason {
        Some(reason) => println!("state:    {}{since} ({reason})", m.state),
        None => println!("state:    {}{since}", m.state),
    }
    if let Some(mt) = &m.maintenance {
        println!(
            "maintenance: {} (by {}, since {})",
            mt.reason,
            mt.by,
            mt.since.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    for line in waiting_lines(status) {
        println!("{line}");
    }
    if let Some(f) = &m.facts {
        println!(
            "cpu:      {} ({} cores, {} threads)",
            f.cpu.model, f.cpu.cores, f.cpu.threads
        );
        println!(
            "memory:   {:.1} GiB",
            f.memory_bytes as f64 / (1u64 << 30) as f64
        );
        if let Some(serial) = &f.dmi.serial {
            println!("serial:   {serial}");
        }
        for d in &f.disks {
            println!(
                "disk:     {} {:.1} GiB {}{}",
                d.name,
                d.size_bytes as f64 / (1u64 << 30) as f64,
                d.model.as_deref().unwrap_or("-"),
                d.serial
                    .as_deref()
                    .map(|s| format!(" serial {s}"))
                    .unwrap_or_default()
            );
        }
        for n in &f.nics {
            println!(
                "nic:      {} {} {}",
                n.name,
                n.mac,
                n.driver.as_deref().unwrap_or("-")
            );
        }
        if let Some(at) = m.facts_at {
            println!("facts:    from {}", at.format("%Y-%m-%d %H:%M:%S UTC"));
        }
    }
    println!("created:  {}", m.created_at.to_rfc3339());
    println!("updated:  {}", m.updated_at.to_rfc3339());
}

/// The workflow, the step and what the machine waits for, with since/until,
/// from `/machines/{ref}/status`.
fn waiting_lines(status: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let time = |v: &Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| {
                let t = t.with_timezone(&chrono::Utc);
                let secs = (t - chrono::Utc::now()).num_seconds();
                let rel = if secs >= 0 {
                    format!("in {}", human_secs(secs))
                } else {
                    format!("{} ago", human_secs(-secs))
                };
                format!("{} ({rel})", t.format("%Y-%m-%d %H:%M:%S UTC"))
            })
    };
    let wf = &status["workflow"];
    if let (Some(kind), Some(state)) = (wf["name"].as_str(), wf["state"].as_str()) {
        let id = wf["id"].as_str().unwrap_or("-");
        lines.push(format!("workflow: {kind} {state} ({id})"));
        if let Some(err) = wf["error"].as_str() {
            lines.push(format!("error:    {err}"));
        }
        if state == "running" {
            lines.push(format!("step:     {}", crate::deploy_cli::status_line(wf)));
        }
    }
    if let Some(w) = status["waiting_for"].as_str() {
        lines.push(format!("waits for: {w}"));
        if let Some(t) = time(&status["since"]) {
            lines.push(format!("  since:  {t}"));
        }
        if let Some(t) = time(&status["until"]) {
            lines.push(format!("  until:  {t}"));
        }
    }
    lines
}

fn human_secs(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

pub async fn machine(cmd: MachineCmd) -> Result<()> {
    match cmd {
        MachineCmd::List(client) => {
            let api = Api::new(&client)?;
            let machines: Vec<Machine> = api.get("/machines").await?;
            match client.output {
                Format::Json => print_json(&machines),
                Format::Text => machine_table(&machines),
            }
        }
        MachineCmd::Show { machine, client } => {
            let api = Api::new(&client)?;
            let m: Machine = api.get(&format!("/machines/{}", seg(&machine))).await?;
            match client.output {
                Format::Json => print_json(&m),
                Format::Text => {
                    let status: Value = api
                        .get(&format!("/machines/{}/status", seg(&m.id.to_string())))
                        .await?;
                    machine_detail(&m, &status)
                }
            }
        }
        MachineCmd::Maintenance {
            machine,
            switch,
            reason,
            client,
        } => {
            let api = Api::new(&client)?;
            let path = format!("/machines/{}/maintenance", seg(&machine));
            let m: Machine = if switch == "on" {
                let reason = reason.ok_or_else(|| {
                    anyhow!(
                        "maintenance on needs --reason TEXT (say why; it is shown with the machine)"
                    )
                })?;
                api.put(&path, &json!({ "reason": reason })).await?
            } else {
                api.send(api.raw().0.delete(api.url(&path))).await?
            };
            match client.output {
                Format::Json => print_json(&m),
                Format::Text => match &m.maintenance {
                    Some(mt) => println!("{} is in maintenance: {}", m.name, mt.reason),
                    None => println!("{} is out of maintenance", m.name),
                },
            }
        }
        MachineCmd::Transitions { machine, client } => {
            let api = Api::new(&client)?;
            let list: Vec<rackboot_core::Transition> = api
                .get(&format!("/machines/{}/transitions", seg(&machine)))
                .await?;
            match client.output {
                Format::Json => print_json(&list),
                Format::Text => {
                    let mut t = Table::new(["AT", "FROM", "TO", "BY", "REASON"]);
                    for tr in &list {
                        t.row([
                            tr.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            tr.from.to_string(),
                            tr.to.to_string(),
                            tr.by.clone(),
                            tr.reason.clone(),
                        ]);
                    }
                    t.print();
                }
            }
        }
        MachineCmd::Add {
            name,
            macs,
            uuid,
            labels,
            bmc,
            bmc_insecure,
            client,
        } => {
            let api = Api::new(&client)?;
            let mut body =
                json!({"name": name, "macs": macs, "uuid": uuid, "labels": parse_labels(&labels)?});
            if let Some(url) = bmc {
                body["bmc"] = bmc_body(&url, bmc_insecure);
            }
            let m: Machine = api.post("/machines", &body).await?;
            match client.output {
                Format::Json => print_json(&m),
                Format::Text => println!("added machine {} ({})", m.name, m.id),
            }
        }
        MachineCmd::SetBoot {
            machine,
            intent,
            profiles,
            timeout,
            client,
        } => {
            let api = Api::new(&client)?;
            let intent = match intent.as_str() {
                "local" => BootIntent::LocalDisk,
                "discover" => BootIntent::Discover,
                "profile" => match profiles.as_slice() {
                    [] => BootIntent::Profile { name: None },
                    [one] => BootIntent::Profile {
                        name: Some(one.clone()),
                    },
                    _ => bail!("`profile` takes at most one --profile"),
                },
                "menu" => BootIntent::Menu(Menu {
                    entries: profiles
                        .iter()
                        .map(|p| MenuEntry {
                            profile: p.clone(),
                            label: None,
                            install: None,
                        })
                        .collect(),
                    default: None,
                    timeout_secs: timeout,
                    loader: None,
                }),
                other => bail!("unknown intent {other}"),
            };
            let m: Machine = api
                .put(
                    &format!("/machines/{}/boot", seg(&machine)),
                    &serde_json::to_value(&intent)?,
                )
                .await?;
            match client.output {
                Format::Json => print_json(&m),
                Format::Text => println!("{} will boot: {}", m.name, intent_text(&m.intent)),
            }
        }
        MachineCmd::Label {
            machine,
            labels,
            client,
        } => {
            let api = Api::new(&client)?;
            let current: Machine = api.get(&format!("/machines/{}", seg(&machine))).await?;
            let mut merged = current.labels.clone();
            for (k, v) in parse_labels(&labels)? {
                if v.is_empty() {
                    merged.remove(&k);
                } else {
                    merged.insert(k, v);
                }
            }
            let m: Machine = api
                .patch(
                    &format!("/machines/{}", seg(&machine)),
                    &json!({"labels": merged}),
                )
                .await?;
            match client.output {
                Format::Json => print_json(&m),
                Format::Text => machine_detail(&m, &Value::Null),
            }
        }
        MachineCmd::SetBmc {
            machine,
            url,
            insecure,
            client,
        } => {
            let api = Api::new(&client)?;
            let bmc = if url == "none" {
                Value::Null
            } else {
                bmc_body(&url, insecure)
            };
            let m: Machine = api
                .patch(
                    &format!("/machines/{}", seg(&machine)),
                    &json!({"bmc": bmc}),
                )
                .await?;
            match client.output {
                Format::Json => print_json(&m),
                Format::Text => machine_detail(&m, &Value::Null),
            }
        }
        MachineCmd::Power(args) => crate::power_cli::power(args).await?,
        MachineCmd::BootDevice(args) => crate::power_cli::boot_device(args).await?,
        MachineCmd::Delete { machine, client } => {
            Api::new(&client)?
                .delete(&format!("/machines/{}", seg(&machine)))
                .await?;
            if client.output == Format::Text {
                println!("deleted {machine}");
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum ProfileCmd {
    List(ClientArgs),
    Show {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create or replace a profile from flags, or from a JSON/TOML file with --file.
    Add {
        name: String,
        #[arg(long)]
        kernel: Option<String>,
        #[arg(long = "initrd")]
        initrds: Vec<String>,
        #[arg(long, default_value = "")]
        cmdline: String,
        /// ipxe | pxelinux | grub
        #[arg(long, default_value = "ipxe")]
        loader: String,
        /// An iPXE script template instead of kernel/initrd.
        #[arg(long)]
        ipxe_script_file: Option<PathBuf>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn profile(cmd: ProfileCmd) -> Result<()> {
    match cmd {
        ProfileCmd::List(client) => {
            let profiles: Vec<Profile> = Api::new(&client)?.get("/profiles").await?;
            match client.output {
                Format::Json => print_json(&profiles),
                Format::Text => {
                    let mut t = Table::new(["NAME", "LOADER", "KERNEL", "INITRDS", "CMDLINE"]);
                    for p in &profiles {
                        t.row([
                            p.name.clone(),
                            serde_json::to_value(p.loader)?
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                            p.kernel.clone().unwrap_or_else(|| "(ipxe script)".into()),
                            p.initrds.join(","),
                            p.cmdline.clone(),
                        ]);
                    }
                    t.print();
                }
            }
        }
        ProfileCmd::Show { name, client } => {
            let p: Profile = Api::new(&client)?
                .get(&format!("/profiles/{}", seg(&name)))
                .await?;
            print_json(&p);
        }
        ProfileCmd::Add {
            name,
            kernel,
            initrds,
            cmdline,
            loader,
            ipxe_script_file,
            description,
            client,
        } => {
            let ipxe_script = match ipxe_script_file {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                ),
                None => None,
            };
            let body = json!({
                "name": name, "description": description, "kernel": kernel, "initrds": initrds,
                "cmdline": cmdline, "loader": loader, "ipxe_script": ipxe_script,
            });
            let p: Profile = Api::new(&client)?
                .put(&format!("/profiles/{}", seg(&name)), &body)
                .await?;
            match client.output {
                Format::Json => print_json(&p),
                Format::Text => println!("saved profile {}", p.name),
            }
        }
        ProfileCmd::Delete { name, client } => {
            Api::new(&client)?
                .delete(&format!("/profiles/{}", seg(&name)))
                .await?;
            if client.output == Format::Text {
                println!("deleted profile {name}");
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum SelectorCmd {
    List(ClientArgs),
    /// Create or replace: `rackboot selector add rack12 --profile debian --match label.rack=r12`.
    Add {
        name: String,
        #[arg(long)]
        profile: String,
        /// KEY=VALUE (mac, uuid, arch, name, label.KEY, fact.KEY such as fact.memory_gib=">=60"); none matches every machine.
        #[arg(long = "match")]
        matches: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn selector(cmd: SelectorCmd) -> Result<()> {
    match cmd {
        SelectorCmd::List(client) => {
            let selectors: Vec<Selector> = Api::new(&client)?.get("/selectors").await?;
            match client.output {
                Format::Json => print_json(&selectors),
                Format::Text => {
                    let mut t = Table::new(["NAME", "PROFILE", "MATCH"]);
                    for s in &selectors {
                        t.row([
                            s.name.clone(),
                            s.profile.clone(),
                            s.matches
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(","),
                        ]);
                    }
                    t.print();
                }
            }
        }
        SelectorCmd::Add {
            name,
            profile,
            matches,
            client,
        } => {
            let body = json!({"name": name, "profile": profile, "match": parse_labels(&matches)?});
            let s: Selector = Api::new(&client)?
                .put(&format!("/selectors/{}", seg(&name)), &body)
                .await?;
            match client.output {
                Format::Json => print_json(&s),
                Format::Text => println!("saved selector {}", s.name),
            }
        }
        SelectorCmd::Delete { name, client } => {
            Api::new(&client)?
                .delete(&format!("/selectors/{}", seg(&name)))
                .await?;
            if client.output == Format::Text {
                println!("deleted selector {name}");
            }
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum LeaseCmd {
    List(ClientArgs),
}

pub async fn lease(cmd: LeaseCmd) -> Result<()> {
    let LeaseCmd::List(client) = cmd;
    let leases: Vec<Lease> = Api::new(&client)?.get("/leases").await?;
    match client.output {
        Format::Json => print_json(&leases),
        Format::Text => {
            let mut t = Table::new(["IP", "MAC", "STATE", "EXPIRES", "HOSTNAME", "SUBNET"]);
            for l in &leases {
                t.row([
                    l.ip.to_string(),
                    l.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
                    l.state.as_str().to_string(),
                    l.expires_at.to_rfc3339(),
                    l.hostname.clone().unwrap_or_default(),
                    l.subnet.clone(),
                ]);
            }
            t.print();
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct EventsArgs {
    /// Keep streaming new events (server-sent events).
    #[arg(long, short)]
    pub follow: bool,
    /// Only events after this id.
    #[arg(long)]
    pub after: Option<i64>,
    /// Only this MAC's events.
    #[arg(long)]
    pub mac: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn print_event(e: &Event, format: Format) {
    match format {
        Format::Json => println!("{}", serde_json::to_string(e).unwrap_or_default()),
        Format::Text => println!(
            "{:>6}  {}  {:<18} {:<17}  {}",
            e.id,
            e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            e.kind.as_str(),
            e.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            e.message
        ),
    }
}

pub async fn events(args: EventsArgs) -> Result<()> {
    let api = Api::new(&args.client)?;
    let mut query = vec![format!("limit={}", args.limit)];
    if let Some(a) = args.after {
        query.push(format!("after={a}"));
    }
    if let Some(m) = &args.mac {
        query.push(format!("mac={m}"));
    }
    if !args.follow {
        let events: Vec<Event> = api.get(&format!("/events?{}", query.join("&"))).await?;
        for e in &events {
            print_event(e, args.client.output);
        }
        return Ok(());
    }
    follow(&api, &query, args.client.output).await
}

/// Reads the SSE stream line by line and prints each event as it arrives.
async fn follow(api: &Api, query: &[String], format: Format) -> Result<()> {
    use futures::StreamExt;
    let (http, base, token) = api.raw();
    let url = format!("{base}/api/v1/events/stream?{}", query.join("&"));
    let resp = http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach rackboot at {base}"))?;
    if !resp.status().is_success() {
        bail!(
            "{}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(
            &chunk.context("event stream broke")?,
        ));
        while let Some(pos) = buf.find("\n\n") {
            let block: String = buf.drain(..pos + 2).collect();
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n");
            if let Ok(e) = serde_json::from_str::<Event>(&data) {
                print_event(&e, format);
            }
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct TimelineArgs {
    /// Machine name, id or MAC.
    pub machine: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn timeline(args: TimelineArgs) -> Result<()> {
    let api = Api::new(&args.client)?;
    let events: Vec<Event> = api
        .get(&format!("/machines/{}/timeline", seg(&args.machine)))
        .await?;
    if args.client.output == Format::Json {
        print_json(&events);
        return Ok(());
    }
    // Events are numbered as they are recorded; services batch them separately
    // (DHCP holds its own up to 50 ms), so ids can run a few milliseconds out of
    // time order across services. People read a timeline by time.
    let mut events = events;
    events.sort_by_key(|e| (e.at, e.id));
    let start = events.first().map(|e| e.at);
    for e in &events {
        let offset = start
            .map(|s| (e.at - s).num_milliseconds() as f64 / 1000.0)
            .unwrap_or(0.0);
        println!("{:>8.3}s  {:<18} {}", offset, e.kind.as_str(), e.message);
    }
    if events.is_empty() {
        println!("no events for {}", args.machine);
    }
    Ok(())
}

pub async fn status(client: ClientArgs) -> Result<()> {
    let status: Value = Api::new(&client)?.get("/status").await?;
    match client.output {
        Format::Json => print_json(&status),
        Format::Text => {
            if let Some(obj) = status.as_object() {
                for (k, v) in obj {
                    println!(
                        "{k:<16} {}",
                        if v.is_string() {
                            v.as_str().unwrap_or("").to_string()
                        } else {
                            v.to_string()
                        }
                    );
                }
            }
        }
    }
    Ok(())
}
