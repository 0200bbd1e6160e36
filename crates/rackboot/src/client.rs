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
    /// An https:// server's certificate SHA-256 fingerprint (as `openssl x509
    /// -fingerprint -sha256` prints it), instead of the one pinned on first
    /// use in ~/.config/rackboot/known_servers.
    #[arg(
        long,
        env = "RACKBOOT_TLS_FINGERPRINT",
        global = true,
        value_name = "SHA256"
    )]
    pub tls_fingerprint: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text, global = true)]
    pub output: Format,
}

pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    /// The certificate pin of an https:// server.
    pin: Option<std::sync::Arc<crate::tls::Pinning>>,
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
        let base = args.server.trim_end_matches('/').to_string();
        let (http, pin) = if base.starts_with("https://") {
            let pin = crate::tls::Pinning::for_server(&base, args.tls_fingerprint.as_deref())?;
            let http = reqwest::Client::builder()
                .tls_backend_preconfigured(pin.client_config()?)
                .build()
                .context("building the HTTPS client")?;
            (http, Some(std::sync::Arc::new(pin)))
        } else {
            (reqwest::Client::new(), None)
        };
        Ok(Api {
            http,
            base,
            token,
            pin,
        })
    }

    /// Why a request could not be sent: a certificate other than the
    /// pinned one says so and what to do; anything else, that the server
    /// could not be reached.
    pub fn connect_error(&self, e: reqwest::Error) -> anyhow::Error {
        match self.pin.as_ref().and_then(|p| p.mismatch()) {
            Some(why) => anyhow!(why),
            None => {
                anyhow::Error::new(e).context(format!("cannot reach rackboot at {}", self.base))
            }
        }
    }

    /// After a request got an answer: pins an https:// server's certificate
    /// on first use.
    pub fn answered(&self) -> Result<()> {
        match &self.pin {
            Some(pin) => pin.record_first_use(),
            None => Ok(()),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base, path)
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        Ok(self.send_with_headers(req).await?.0)
    }

    /// [`Api::send`], with the response's headers.
    async fn send_with_headers<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(T, reqwest::header::HeaderMap)> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.connect_error(e))?;
        self.answered()?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.context("reading API response")?;
        if !status.is_success() {
            bail!("{status}: {}", api_message(&String::from_utf8_lossy(&body)));
        }
        if body.is_empty() {
            let value = serde_json::from_value(Value::Null).context("empty API response")?;
            return Ok((value, headers));
        }
        let value = serde_json::from_slice(&body).context("decoding API response")?;
        Ok((value, headers))
    }

    /// One page of a paged list and the cursor of the next (`None`: the last).
    pub async fn get_page<T: DeserializeOwned>(
        &self,
        path: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<T>, Option<String>)> {
        let path = match cursor {
            Some(c) => with_query(path, &format!("cursor={}", query_value(c))),
            None => path.to_string(),
        };
        let (items, headers) = self
            .send_with_headers(self.http.get(self.url(&path)))
            .await?;
        let next = headers
            .get("x-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((items, next))
    }

    /// Every item of a paged list (following `X-Next-Cursor`), at most `max`.
    pub async fn get_all<T: DeserializeOwned>(&self, path: &str, max: usize) -> Result<Vec<T>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) = self.get_page::<T>(path, cursor.as_deref()).await?;
            all.extend(page);
            match next {
                Some(c) if all.len() < max && Some(&c) != cursor.as_ref() => cursor = Some(c),
                _ => break,
            }
        }
        all.truncate(max);
        Ok(all)
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

    /// DELETE, and what the server says it deleted.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.delete(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        let _: Value = self.send(self.http.delete(self.url(path))).await?;
        Ok(())
    }

    pub fn raw(&self) -> (&reqwest::Client, &str, &str) {
        (&self.http, &self.base, &self.token)
    }
}

/// API hints that name HTTP requests, and what a CLI user types instead.
const CLI_HINTS: &[(&str, &str)] = &[
    (
        "set one with PATCH /api/v1/machines/{ref} {\"bmc\": ...}",
        "set one with `rackboot machine set-bmc MACHINE URL`",
    ),
    (
        "POST /api/v1/machines/{id}/install-menu",
        "`rackboot install MACHINE --menu --os ID...`",
    ),
    (
        "POST /api/v1/machines/{id}/install",
        "`rackboot install MACHINE --os ID`",
    ),
];

/// An API error body as a CLI user should read it: the message without the
/// JSON parser's position in a body the CLI wrote, and CLI commands where the
/// API names its requests.
pub fn api_message(body: &str) -> String {
    let mut msg = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    if let Some(rest) = msg.strip_prefix("invalid JSON body: ") {
        msg = rest.to_string();
        if let Some(at) = msg.rfind(" at line ")
            && msg[at + 9..]
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            msg.truncate(at);
        }
    }
    for (api, cli) in CLI_HINTS {
        msg = msg.replace(api, cli);
    }
    msg
}

/// `path` with `param` (`key=value`) added to its query.
pub fn with_query(path: &str, param: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{param}")
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
        /// Machine id, name or any of its MACs.
        machine: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Enroll a machine.
    Add {
        /// Unique name: 1-63 letters, digits, '.', '_' or '-'.
        name: String,
        /// Boot NIC first; repeat for more NICs.
        #[arg(long = "mac", required = true)]
        macs: Vec<String>,
        /// SMBIOS system UUID, when known.
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
    /// Enroll many machines from a CSV or JSON file (`-`: standard input),
    /// one request and one store transaction per chunk; rows that fail are
    /// listed (and the command exits 1). CSV: a header row, then `name`,
    /// `macs` (`;`-separated) and optionally `uuid`, `arch`, `labels`
    /// (`k=v;k=v`), `profile`, `bmc`, `bmc_insecure`. JSON: an array of
    /// objects as for `POST /api/v1/machines`. BMC passwords: in the URL or
    /// RACKBOOT_BMC_PASSWORD.
    Import {
        /// The file, or `-` for standard input.
        file: PathBuf,
        /// csv or json. [default: by the file's extension]
        #[arg(long, value_parser = ["csv", "json"])]
        format: Option<String>,
        /// Machines per request (1-5000).
        #[arg(long, default_value_t = 1000)]
        chunk: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set or remove (`none`) a machine's BMC.
    SetBmc {
        /// Machine id, name or any of its MACs.
        machine: String,
        /// BMC URL as for `add --bmc`, or `none`.
        url: String,
        /// Accept the BMC's self-signed TLS certificate.
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
        /// Machine id, name or any of its MACs.
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
        /// Machine id, name or any of its MACs.
        machine: String,
        /// KEY=VALUE to set, KEY= to remove; repeatable.
        labels: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a machine.
    Delete {
        /// Machine id, name or any of its MACs.
        machine: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Put a machine in maintenance (`on --reason TEXT`) or take it out (`off`):
    /// in maintenance no workflow starts or advances on it and its power is not polled.
    Maintenance {
        /// Machine id, name or any of its MACs.
        machine: String,
        /// on or off.
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
        /// Machine id, name or any of its MACs.
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
    outln!("name:     {}", m.name);
    outln!("id:       {}", m.id);
    outln!(
        "macs:     {}",
        m.macs
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!(
        "uuid:     {}",
        m.uuid.map(|u| u.to_string()).unwrap_or_else(|| "-".into())
    );
    outln!(
        "arch:     {}",
        m.arch.map(|a| a.as_str()).unwrap_or_else(|| "-".into())
    );
    outln!("intent:   {}", intent_text(&m.intent));
    if let Some(bmc) = &m.bmc {
        outln!("bmc:      {} (user {})", bmc.address, bmc.username);
    }
    for (k, v) in &m.labels {
        outln!("label:    {k}={v}");
    }
    let since = m
        .state_changed_at
        .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
        .unwrap_or_default();
    match &m.state_reason {
        Some(reason) => outln!("state:    {}{since} ({reason})", m.state),
        None => outln!("state:    {}{since}", m.state),
    }
    if let Some(mt) = &m.maintenance {
        outln!(
            "maintenance: {} (by {}, since {})",
            mt.reason,
            mt.by,
            mt.since.format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
    for line in waiting_lines(status) {
        outln!("{line}");
    }
    if let Some(f) = &m.facts {
        outln!(
            "cpu:      {} ({} cores, {} threads)",
            f.cpu.model,
            f.cpu.cores,
            f.cpu.threads
        );
        outln!(
            "memory:   {:.1} GiB",
            f.memory_bytes as f64 / (1u64 << 30) as f64
        );
        if let Some(serial) = &f.dmi.serial {
            outln!("serial:   {serial}");
        }
        outln!("firmware: {}", f.boot.summary());
        for d in &f.disks {
            outln!(
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
            outln!(
                "nic:      {} {} {}",
                n.name,
                n.mac,
                n.driver.as_deref().unwrap_or("-")
            );
        }
        if let Some(at) = m.facts_at {
            outln!("facts:    from {}", at.format("%Y-%m-%d %H:%M:%S UTC"));
        }
    }
    outln!("created:  {}", m.created_at.to_rfc3339());
    outln!("updated:  {}", m.updated_at.to_rfc3339());
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
            let machines: Vec<Machine> = api.get_all("/machines", usize::MAX).await?;
            match client.output {
                Format::Json => print_json(&machines),
                Format::Text => machine_table(&machines),
            }
        }
        MachineCmd::Import {
            file,
            format,
            chunk,
            client,
        } => crate::import_cli::run(file, format, chunk, client).await?,
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
                    Some(mt) => outln!("{} is in maintenance: {}", m.name, mt.reason),
                    None => outln!("{} is out of maintenance", m.name),
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
                Format::Text => outln!("added machine {} ({})", m.name, m.id),
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
                Format::Text => outln!("{} will boot: {}", m.name, intent_text(&m.intent)),
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
            print_deleted(client.output, "machine", &machine);
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum ProfileCmd {
    /// List profiles.
    List(ClientArgs),
    /// Show one profile.
    Show {
        /// Profile name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create or replace a profile from flags, or from a JSON or TOML file with --file.
    Add {
        /// Profile name: 1-63 letters, digits, '.', '_' or '-'.
        name: String,
        /// A JSON or TOML file with the profile's fields (kernel, initrds,
        /// cmdline, loader, ipxe_script, description); flags given beside it win.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Kernel: a path under the server's asset directory, or an http:// URL.
        #[arg(long)]
        kernel: Option<String>,
        /// Initrd, same forms as --kernel; repeatable, loaded in order.
        #[arg(long = "initrd")]
        initrds: Vec<String>,
        /// Kernel command line; may use {{ machine.name }}, {{ mac }}, {{ server }}.
        #[arg(long)]
        cmdline: Option<String>,
        /// First-stage loader the profile needs; shim boots it under Secure Boot
        /// (shim, the signed network GRUB, a signed kernel). [default: ipxe]
        #[arg(long, value_parser = ["ipxe", "pxelinux", "grub", "shim"])]
        loader: Option<String>,
        /// An iPXE script template instead of kernel/initrd.
        #[arg(long, value_name = "FILE")]
        ipxe_script_file: Option<PathBuf>,
        /// Free text shown with the profile.
        #[arg(long)]
        description: Option<String>,
        /// Store it even when its kernel or an initrd is not in the asset directory yet.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a profile (refused while a machine or selector uses it).
    Delete {
        /// Profile name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The profile fields of `profile add --file`: JSON, or TOML when the file
/// ends in `.toml`.
fn read_profile_file(path: &std::path::Path) -> Result<serde_json::Map<String, Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
    } else {
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => bail!("{}: a profile is an object of fields", path.display()),
    }
}

fn profile_text(p: &Profile) {
    let loader = serde_json::to_value(p.loader)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    outln!("name:        {}", p.name);
    if !p.description.is_empty() {
        outln!("description: {}", p.description);
    }
    outln!("loader:      {loader}");
    if let Some(k) = &p.kernel {
        outln!("kernel:      {k}");
    }
    for i in &p.initrds {
        outln!("initrd:      {i}");
    }
    if !p.cmdline.is_empty() {
        outln!("cmdline:     {}", p.cmdline);
    }
    if let Some(script) = &p.ipxe_script {
        outln!("ipxe script:");
        for line in script.lines() {
            outln!("  {line}");
        }
    }
    outln!("updated:     {}", p.updated_at.to_rfc3339());
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
            match client.output {
                Format::Json => print_json(&p),
                Format::Text => profile_text(&p),
            }
        }
        ProfileCmd::Add {
            name,
            file,
            kernel,
            initrds,
            cmdline,
            loader,
            ipxe_script_file,
            description,
            force,
            client,
        } => {
            let mut body = match &file {
                Some(path) => read_profile_file(path)?,
                None => serde_json::Map::new(),
            };
            body.insert("name".into(), json!(name));
            if let Some(k) = kernel {
                body.insert("kernel".into(), json!(k));
            }
            if !initrds.is_empty() {
                body.insert("initrds".into(), json!(initrds));
            }
            if let Some(c) = cmdline {
                body.insert("cmdline".into(), json!(c));
            }
            if let Some(l) = loader {
                body.insert("loader".into(), json!(l));
            }
            if let Some(d) = description {
                body.insert("description".into(), json!(d));
            }
            if let Some(path) = ipxe_script_file {
                let script = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                body.insert("ipxe_script".into(), json!(script));
            }
            let query = if force { "?force=true" } else { "" };
            let p: Profile = Api::new(&client)?
                .put(
                    &format!("/profiles/{}{query}", seg(&name)),
                    &Value::Object(body),
                )
                .await?;
            match client.output {
                Format::Json => print_json(&p),
                Format::Text => outln!("saved profile {}", p.name),
            }
        }
        ProfileCmd::Delete { name, client } => {
            Api::new(&client)?
                .delete(&format!("/profiles/{}", seg(&name)))
                .await?;
            print_deleted(client.output, "profile", &name);
        }
    }
    Ok(())
}

/// What a delete prints: a line for people, `{"deleted": ...}` for scripts.
pub fn print_deleted(format: Format, what: &str, name: &str) {
    match format {
        Format::Json => print_json(&json!({ "deleted": what, "name": name })),
        Format::Text => outln!("deleted {what} {name}"),
    }
}

#[derive(Subcommand)]
pub enum SelectorCmd {
    /// List selectors.
    List(ClientArgs),
    /// Create or replace: `rackboot selector add rack12 --profile debian --match label.rack=r12`.
    Add {
        /// Selector name.
        name: String,
        /// The profile machines it matches boot.
        #[arg(long)]
        profile: String,
        /// KEY=VALUE (mac, uuid, arch, name, label.KEY, fact.KEY such as fact.memory_gib=">=60"); none matches every machine.
        #[arg(long = "match")]
        matches: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a selector.
    Delete {
        /// Selector name.
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
                Format::Text => outln!("saved selector {}", s.name),
            }
        }
        SelectorCmd::Delete { name, client } => {
            Api::new(&client)?
                .delete(&format!("/selectors/{}", seg(&name)))
                .await?;
            print_deleted(client.output, "selector", &name);
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum LeaseCmd {
    /// List DHCP leases by address.
    List(ClientArgs),
}

pub async fn lease(cmd: LeaseCmd) -> Result<()> {
    let LeaseCmd::List(client) = cmd;
    let leases: Vec<Lease> = Api::new(&client)?.get_all("/leases", usize::MAX).await?;
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
    /// After the newest events, keep streaming new ones (server-sent events).
    /// A broken stream is resumed where it stopped (Last-Event-ID); when the
    /// server does not come back within --reconnect-secs the command fails.
    /// With -o json, one event per line (NDJSON).
    #[arg(long, short)]
    pub follow: bool,
    /// The newest N events (1-1000), oldest first. [default: 20; with --follow: 10]
    #[arg(long, short = 'n', value_name = "N", conflicts_with = "after")]
    pub tail: Option<u32>,
    /// Instead of the newest: events after this id, oldest first (page with --limit).
    #[arg(long, value_name = "ID")]
    pub after: Option<i64>,
    /// With --after: at most this many events (pages of up to 1000 are followed).
    #[arg(long, default_value_t = 100, requires = "after")]
    pub limit: u32,
    /// Only this MAC's events.
    #[arg(long)]
    pub mac: Option<String>,
    /// Only this machine's events (id, name or MAC).
    #[arg(long)]
    pub machine: Option<String>,
    /// Only events of this kind, e.g. lease_acked.
    #[arg(long)]
    pub kind: Option<String>,
    /// With --follow: how long to keep trying to reconnect to a server that went away.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub reconnect_secs: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn print_event(e: &Event, format: Format) {
    match format {
        Format::Json => crate::output::print_json_line(e),
        Format::Text => outln!(
            "{:>6}  {}  {:<18} {:<17}  {}",
            e.id,
            e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            e.kind.as_str(),
            e.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            e.message
        ),
    }
}

/// Query text escaping for values (MACs, names, kinds).
pub(crate) fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn events(args: EventsArgs) -> Result<()> {
    let api = Api::new(&args.client)?;
    let mut filters = Vec::new();
    if let Some(m) = &args.mac {
        filters.push(format!("mac={}", query_value(m)));
    }
    if let Some(m) = &args.machine {
        filters.push(format!("machine={}", query_value(m)));
    }
    if let Some(k) = &args.kind {
        filters.push(format!("kind={}", query_value(k)));
    }
    let mut query = filters.clone();
    let backlog: Vec<Event> = match args.after {
        Some(after) => {
            if args.limit == 0 {
                bail!("--limit must be at least 1");
            }
            query.push(format!("after={after}"));
            query.push(format!("limit={}", args.limit.min(1000)));
            api.get_all(&format!("/events?{}", query.join("&")), args.limit as usize)
                .await?
        }
        None => {
            let tail = args.tail.unwrap_or(if args.follow { 10 } else { 20 });
            query.push(format!("tail={tail}"));
            api.get(&format!("/events?{}", query.join("&"))).await?
        }
    };
    if !args.follow {
        match args.client.output {
            Format::Json => print_json(&backlog),
            Format::Text => {
                for e in &backlog {
                    print_event(e, Format::Text);
                }
            }
        }
        return Ok(());
    }
    for e in &backlog {
        print_event(e, args.client.output);
    }
    let last = backlog.last().map(|e| e.id).or(args.after);
    follow(
        &api,
        &filters,
        last,
        args.client.output,
        std::time::Duration::from_secs(args.reconnect_secs),
    )
    .await
}

/// How one connection to the event stream ended.
enum StreamEnd {
    /// The server closed it (shutdown, restart).
    Closed,
    /// It broke or could not be opened; the error says why.
    Failed(anyhow::Error),
}

/// Streams events, resuming after the last one printed whenever the stream
/// ends; fails when the server stays away longer than `reconnect_for`.
async fn follow(
    api: &Api,
    filters: &[String],
    mut last: Option<i64>,
    format: Format,
    reconnect_for: std::time::Duration,
) -> Result<()> {
    let mut down_since: Option<std::time::Instant> = None;
    loop {
        let end = stream_once(api, filters, &mut last, format, &mut down_since).await;
        let why = match end {
            StreamEnd::Closed => "the server closed the event stream".to_string(),
            StreamEnd::Failed(e) => format!("{e:#}"),
        };
        let since = *down_since.get_or_insert_with(|| {
            eprintln!(
                "{why}; reconnecting (resuming after event {})",
                last.map_or_else(|| "-".into(), |id| id.to_string())
            );
            std::time::Instant::now()
        });
        if since.elapsed() >= reconnect_for {
            bail!(
                "event stream lost and the server did not come back within {} s ({why}); last event {}",
                reconnect_for.as_secs(),
                last.map_or_else(|| "-".into(), |id| id.to_string())
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// One connection: replays after `last` (Last-Event-ID), prints events as they
/// arrive and advances `last`. Clears `down_since` once connected.
async fn stream_once(
    api: &Api,
    filters: &[String],
    last: &mut Option<i64>,
    format: Format,
    down_since: &mut Option<std::time::Instant>,
) -> StreamEnd {
    use futures::StreamExt;
    let (http, base, token) = api.raw();
    let url = format!("{base}/api/v1/events/stream?{}", filters.join("&"));
    let mut req = http.get(&url).bearer_auth(token);
    if let Some(id) = *last {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return StreamEnd::Failed(api.connect_error(e)),
    };
    if let Err(e) = api.answered() {
        return StreamEnd::Failed(e);
    }
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return StreamEnd::Failed(anyhow!("{status}: {}", api_message(&body)));
    }
    if down_since.take().is_some() {
        eprintln!("event stream resumed");
    }
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                return StreamEnd::Failed(anyhow::Error::new(e).context("event stream broke"));
            }
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(pos) = buf.find("\n\n") {
            let block: String = buf.drain(..pos + 2).collect();
            let mut kind = "message";
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event:") {
                    kind = k.trim();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.trim_start());
                }
            }
            let data = data.join("\n");
            match kind {
                "lagged" | "error" => eprintln!("event stream: {kind}: {data}"),
                _ => {
                    if let Ok(e) = serde_json::from_str::<Event>(&data) {
                        *last = Some(e.id);
                        print_event(&e, format);
                    }
                }
            }
        }
    }
    StreamEnd::Closed
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
        outln!("{:>8.3}s  {:<18} {}", offset, e.kind.as_str(), e.message);
    }
    if events.is_empty() {
        outln!("no events for {}", args.machine);
    }
    Ok(())
}

#[derive(Args)]
pub struct ClusterArgs {
    /// Also show which server owns this machine (id, name or MAC).
    #[arg(long)]
    pub machine: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn cluster(args: ClusterArgs) -> Result<()> {
    let api = Api::new(&args.client)?;
    let path = match &args.machine {
        Some(m) => format!("/cluster?machine={}", query_value(m)),
        None => "/cluster".to_string(),
    };
    let status: Value = api.get(&path).await?;
    if args.client.output == Format::Json {
        print_json(&status);
        return Ok(());
    }
    if status["clustered"] != true {
        outln!("this server is alone on its store (SQLite, or [cluster] enabled = false)");
        return Ok(());
    }
    if status["healthy"] != true {
        outln!("this server cannot record its heartbeat: it owns no machine now");
    }
    let owner = status["owner"].as_str();
    let mut t = Table::new(["", "NAME", "ID", "API", "LAST HEARTBEAT"]);
    for m in status["members"].as_array().into_iter().flatten() {
        let mark = match (m["this_server"] == true, owner == m["id"].as_str()) {
            (true, true) => "*+",
            (true, false) => "*",
            (false, true) => "+",
            (false, false) => "",
        };
        t.row([
            mark.to_string(),
            m["name"].as_str().unwrap_or("?").to_string(),
            m["id"].as_str().unwrap_or("?").to_string(),
            m["api_url"].as_str().unwrap_or("").to_string(),
            m["heartbeat_at"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(23)
                .collect(),
        ]);
    }
    t.print();
    outln!("* this server");
    if let Some(machine) = &args.machine {
        match owner {
            Some(_) => outln!("+ owns {machine}"),
            None => outln!("no live server owns {machine}"),
        }
    }
    Ok(())
}

pub async fn status(client: ClientArgs) -> Result<()> {
    let status: Value = Api::new(&client)?.get("/status").await?;
    match client.output {
        Format::Json => print_json(&status),
        Format::Text => {
            for line in status_lines(&status) {
                outln!("{line}");
            }
        }
    }
    Ok(())
}

/// `/status` for people: one fact per line.
fn status_lines(status: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut lines = vec![
        format!("version:    {}", text(&status["version"])),
        format!("store:      {}", text(&status["backend"])),
    ];
    if let Some(dir) = status["state_dir"].as_str() {
        lines.push(format!("state dir:  {dir}"));
    }
    lines.push(format!("started:    {}", text(&status["started_at"])));
    for s in status["services"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("?");
        let detail = if s["enabled"].as_bool() == Some(true) {
            s["detail"].as_str().unwrap_or("on").to_string()
        } else {
            "off".to_string()
        };
        lines.push(format!("{:<11} {detail}", format!("{name}:")));
    }
    let c = &status["counts"];
    lines.push(format!(
        "machines:   {}   profiles: {}   selectors: {}",
        text(&c["machines"]),
        text(&c["profiles"]),
        text(&c["selectors"])
    ));
    lines.push(format!(
        "leases:     {} ({} bound)",
        text(&c["leases"]),
        text(&c["leases_bound"])
    ));
    if status["events_dropped"].as_u64().is_some_and(|n| n > 0) {
        lines.push(format!(
            "events dropped: {} (the persist queue was full)",
            text(&status["events_dropped"])
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_read_as_cli_errors() {
        let cases = [
            (
                r#"{"error":"invalid JSON body: loader: unknown variant `foo`, expected one of `ipxe`, `pxelinux`, `grub` at line 1 column 90"}"#,
                "loader: unknown variant `foo`, expected one of `ipxe`, `pxelinux`, `grub`",
            ),
            (
                r#"{"error":"machine \"n1\" has no BMC (set one with PATCH /api/v1/machines/{ref} {\"bmc\": ...})"}"#,
                "machine \"n1\" has no BMC (set one with `rackboot machine set-bmc MACHINE URL`)",
            ),
            (
                r#"{"error":"intent: an install intent is set by requesting an install (POST /api/v1/machines/{id}/install)"}"#,
                "intent: an install intent is set by requesting an install (`rackboot install MACHINE --os ID`)",
            ),
            ("plain text\n", "plain text"),
            (
                r#"{"error":"name: \"a at line 2\" is taken"}"#,
                "name: \"a at line 2\" is taken",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(api_message(body), want, "{body}");
        }
    }

    #[test]
    fn status_reads_as_lines() {
        let status = json!({
            "version": "0.1.0", "backend": "sqlite", "started_at": "2026-01-01T00:00:00Z",
            "services": [
                {"name": "http", "enabled": true, "detail": "listening on 127.0.0.1:8080"},
                {"name": "tftp", "enabled": false},
            ],
            "counts": {"machines": 3, "profiles": 1, "selectors": 0, "leases": 5, "leases_bound": 2},
            "events_dropped": 0,
        });
        let lines = status_lines(&status);
        assert!(
            lines.contains(&"http:       listening on 127.0.0.1:8080".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"tftp:       off".to_string()), "{lines:?}");
        assert!(
            lines.contains(&"leases:     5 (2 bound)".to_string()),
            "{lines:?}"
        );
        assert!(lines.iter().all(|l| !l.contains('{')), "{lines:?}");
    }
}
