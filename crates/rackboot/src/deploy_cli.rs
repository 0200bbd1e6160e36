//! `rackboot deploy|undeploy|inspect|clean|rescue|unrescue`, `rackboot
//! workflow ...`, `rackboot image ...` and `rackboot ramdisk build`: the
//! in-band half of rackboot from the command line.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use crate::client::{Api, ClientArgs, parse_labels, seg};
use crate::output::{Format, Table, print_json};

/// Which machines: names, `--label k=v`, or `--all`.
#[derive(Args, Clone)]
pub struct Targets {
    /// Machines by name, id or MAC.
    pub machines: Vec<String>,
    /// Every machine with this label (KEY=VALUE, repeatable: all must match).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Every machine.
    #[arg(long)]
    pub all: bool,
}

impl Targets {
    fn body(&self) -> Result<Map<String, Value>> {
        let chosen = [!self.machines.is_empty(), !self.labels.is_empty(), self.all];
        if chosen.iter().filter(|c| **c).count() != 1 {
            bail!("name machines, or give --label KEY=VALUE, or --all (one of them)");
        }
        let mut m = Map::new();
        if !self.machines.is_empty() {
            m.insert("machines".into(), json!(self.machines));
        }
        if !self.labels.is_empty() {
            m.insert("labels".into(), json!(parse_labels(&self.labels)?));
        }
        if self.all {
            m.insert("all".into(), json!(true));
        }
        Ok(m)
    }
}

/// How to follow what was started.
#[derive(Args, Clone)]
pub struct Follow {
    /// Run at most this many machines at once.
    #[arg(long)]
    pub parallel: Option<u32>,
    /// Return once the workflows are queued instead of following them.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// Image from the catalog (rackboot image list).
    #[arg(long)]
    pub image: String,
    /// OpenSSH public key file for root (repeatable).
    #[arg(long = "ssh-key")]
    pub ssh_keys: Vec<PathBuf>,
    /// Network and host name of the installed system: the same file as
    /// `rackboot install --vars` (JSON or TOML: hostname, domain, nics, bonds,
    /// vlans; ssh_authorized_keys too). Install-only keys are ignored.
    #[arg(long)]
    pub vars: Option<PathBuf>,
    /// Software RAID level over the machine's disks (0, 1, 5, 6, 10).
    #[arg(long)]
    pub raid: Option<String>,
    /// How many disks the array takes (default all).
    #[arg(long)]
    pub raid_disks: Option<u32>,
    /// Erase before writing: none, metadata (default) or full.
    #[arg(long, value_parser = ["none", "metadata", "full"])]
    pub erase: Option<String>,
    /// Disk for the image: smallest (default), largest, name:sda, serial:XYZ, wwn:...
    #[arg(long)]
    pub root_disk: Option<String>,
    /// The installed system's network format (debian, ubuntu, rhel,
    /// rhel-ifcfg, suse); the image's own by default.
    #[arg(long)]
    pub target_family: Option<String>,
    /// Add a cloud-init NoCloud seed (or `--cloud-init false` to not).
    #[arg(long)]
    pub cloud_init: Option<bool>,
    /// Another workflow definition than `deploy` (an operator's own).
    #[arg(long, default_value = "deploy")]
    pub workflow: String,
    #[command(flatten)]
    pub follow: Follow,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct SimpleWorkflowArgs {
    #[command(flatten)]
    pub targets: Targets,
    /// Erase policy for clean/undeploy: none, metadata (default) or full.
    #[arg(long, value_parser = ["none", "metadata", "full"])]
    pub erase: Option<String>,
    #[command(flatten)]
    pub follow: Follow,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Keys of an install vars file that an image deploy uses.
const NETWORK_KEYS: [&str; 5] = ["hostname", "domain", "nics", "bonds", "vlans"];

fn read_vars(path: &PathBuf) -> Result<Map<String, Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
    } else {
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
    };
    match value {
        Value::Object(m) => Ok(m),
        _ => bail!("{}: the variables must be an object", path.display()),
    }
}

fn root_disk(spec: &str) -> Result<Value> {
    Ok(match spec.split_once(':') {
        None if spec == "smallest" || spec == "largest" => json!({"rule": spec}),
        Some((rule @ ("name" | "serial" | "wwn"), value)) => json!({"rule": rule, "value": value}),
        _ => bail!("--root-disk {spec:?}: use smallest, largest, name:X, serial:X or wwn:X"),
    })
}

pub async fn deploy(args: DeployArgs) -> Result<()> {
    let mut request = Map::new();
    request.insert("image".into(), json!(args.image));
    let mut keys: Vec<String> = Vec::new();
    if let Some(path) = &args.vars {
        let vars = read_vars(path)?;
        let mut network = Map::new();
        let mut ignored = Vec::new();
        for (k, v) in vars {
            if NETWORK_KEYS.contains(&k.as_str()) {
                network.insert(k, v);
            } else if k == "ssh_authorized_keys" {
                keys.extend(
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|k| k.as_str().map(str::to_string)),
                );
            } else {
                ignored.push(k);
            }
        }
        if !ignored.is_empty() {
            eprintln!(
                "note: {} ignored for an image deploy: {}",
                path.display(),
                ignored.join(", ")
            );
        }
        if !network.is_empty() {
            request.insert("network".into(), Value::Object(network));
        }
    }
    for path in &args.ssh_keys {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    if !keys.is_empty() {
        request.insert("ssh_authorized_keys".into(), json!(keys));
    }
    if let Some(level) = &args.raid {
        request.insert(
            "raid".into(),
            json!({"level": level.trim_start_matches("raid"), "disks": args.raid_disks}),
        );
    }
    if let Some(e) = &args.erase {
        request.insert("erase".into(), json!(e));
    }
    if let Some(r) = &args.root_disk {
        request.insert("root_disk".into(), root_disk(r)?);
    }
    if let Some(f) = &args.target_family {
        request.insert("target_family".into(), json!(f));
    }
    if let Some(c) = args.cloud_init {
        request.insert("cloud_init".into(), json!(c));
    }
    run(
        &args.workflow,
        &args.targets,
        request,
        &args.follow,
        &args.client,
    )
    .await
}

pub async fn simple(workflow: &str, args: SimpleWorkflowArgs) -> Result<()> {
    let mut request = Map::new();
    if let Some(e) = &args.erase {
        request.insert("erase".into(), json!(e));
    }
    run(workflow, &args.targets, request, &args.follow, &args.client).await
}

/// Starts `workflow` on the targets and follows it to the end.
async fn run(
    workflow: &str,
    targets: &Targets,
    request: Map<String, Value>,
    follow: &Follow,
    client: &ClientArgs,
) -> Result<()> {
    let api = Api::new(client)?;
    let mut body = targets.body()?;
    body.insert("workflow".into(), json!(workflow));
    body.insert("request".into(), Value::Object(request));
    if let Some(p) = follow.parallel {
        body.insert("parallel".into(), json!(p));
    }
    let started: Vec<Value> = api.post("/workflows", &Value::Object(body)).await?;
    let mut ids = Vec::new();
    let mut refused = 0;
    for s in &started {
        match (&s["workflow"]["id"], &s["error"]) {
            (Value::String(id), _) => {
                ids.push((s["machine"].as_str().unwrap_or("?").to_string(), id.clone()))
            }
            (_, Value::String(e)) => {
                refused += 1;
                eprintln!("{}: {e}", s["machine"].as_str().unwrap_or("?"));
            }
            _ => {}
        }
    }
    if follow.no_wait || ids.is_empty() {
        if client.output == Format::Json {
            print_json(&started);
        } else {
            for (m, id) in &ids {
                outln!("{m}: workflow {id} queued");
            }
        }
        if refused > 0 {
            bail!("{refused} machine(s) could not start {workflow}");
        }
        return Ok(());
    }
    let finals = watch(&api, &ids, client.output).await?;
    summary(&finals, &ids, client.output);
    let failed = finals.iter().filter(|w| w["state"] != "succeeded").count();
    if failed + refused > 0 {
        bail!(
            "{workflow}: {} of {} machine(s) did not succeed",
            failed + refused,
            ids.len() + refused
        );
    }
    Ok(())
}

/// One line of where a workflow is: its running step, progress and rate.
pub(crate) fn status_line(wf: &Value) -> String {
    let state = wf["state"].as_str().unwrap_or("?");
    if state == "queued" {
        let why = wf["queue"]["waiting_for"]
            .as_str()
            .unwrap_or("the scheduler");
        return format!("queued ({why})");
    }
    if state != "running" {
        return state.to_string();
    }
    let steps = wf["steps"].as_array().cloned().unwrap_or_default();
    let running: Vec<&Value> = steps
        .iter()
        .filter(|s| matches!(s["state"].as_str(), Some("running" | "backoff")))
        .collect();
    if running.is_empty() {
        return "running".into();
    }
    running
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap_or("?");
            let p = &wf["progress"][name];
            let mut line = name.to_string();
            if s["state"] == "backoff" {
                line.push_str(&format!(
                    " (retrying after: {})",
                    s["error"].as_str().unwrap_or("?")
                ));
            } else if let Some(done) = p["done"].as_u64() {
                let mib = |b: u64| b as f64 / 1048576.0;
                match p["total"].as_u64() {
                    Some(t) if t > 0 => line.push_str(&format!(
                        " {:.0}/{:.0} MiB ({:.0}%)",
                        mib(done),
                        mib(t),
                        done as f64 * 100.0 / t as f64
                    )),
                    _ => line.push_str(&format!(" {:.0} MiB", mib(done))),
                }
                if let Some(r) = p["rate"].as_f64() {
                    line.push_str(&format!(" at {:.1} MiB/s", r / 1048576.0));
                }
            } else if let Some(w) = s["waiting_for"].as_str() {
                line.push_str(&format!(": waiting for {w}"));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Polls the workflows until every one has ended; returns their last state.
async fn watch(api: &Api, ids: &[(String, String)], format: Format) -> Result<Vec<Value>> {
    let tty = std::io::stdout().is_terminal() && format == Format::Text;
    let multi = indicatif::MultiProgress::new();
    let bars: Vec<indicatif::ProgressBar> = ids
        .iter()
        .map(|(m, _)| {
            let bar = multi.add(indicatif::ProgressBar::new_spinner());
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {prefix:12} [{elapsed_precise}] {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.set_prefix(m.clone());
            if !tty {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            bar
        })
        .collect();
    let mut last: Vec<Option<Value>> = vec![None; ids.len()];
    let mut printed: Vec<String> = vec![String::new(); ids.len()];
    let mut printed_at: Vec<Instant> = vec![Instant::now(); ids.len()];
    let mut failures = 0;
    loop {
        let mut done = 0;
        for (i, (machine, id)) in ids.iter().enumerate() {
            if last[i]
                .as_ref()
                .is_some_and(|w| !matches!(w["state"].as_str(), Some("queued" | "running")))
            {
                done += 1;
                continue;
            }
            let wf: Value = match api.get(&format!("/workflows/{id}")).await {
                Ok(v) => {
                    failures = 0;
                    v
                }
                Err(e) => {
                    failures += 1;
                    if failures > 30 {
                        return Err(e.context("following the workflows"));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let line = status_line(&wf);
            if tty {
                bars[i].set_message(line.clone());
                bars[i].tick();
            } else if format == Format::Text && line != printed[i] && {
                // A new step at once; progress within a step every 15 s.
                let step = |l: &str| l.split(' ').next().unwrap_or("").to_string();
                step(&line) != step(&printed[i])
                    || printed_at[i].elapsed() > Duration::from_secs(15)
            } {
                outln!("{machine}: {line}");
                printed[i] = line.clone();
                printed_at[i] = Instant::now();
            }
            if !matches!(wf["state"].as_str(), Some("queued" | "running")) {
                bars[i].finish_with_message(line);
                done += 1;
            }
            last[i] = Some(wf);
        }
        if done == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    Ok(last.into_iter().flatten().collect())
}

fn secs_between(a: &Value, b: &Value) -> Option<f64> {
    let a = chrono::DateTime::parse_from_rfc3339(a.as_str()?).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(b.as_str()?).ok()?;
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

/// The end of every followed workflow; `ids` pairs the machine as the
/// operator named it with its workflow id.
fn summary(workflows: &[Value], ids: &[(String, String)], format: Format) {
    if format == Format::Json {
        print_json(workflows);
        return;
    }
    let names: BTreeMap<&str, &str> = ids
        .iter()
        .map(|(m, id)| (id.as_str(), m.as_str()))
        .collect();
    let mut t = Table::new(["MACHINE", "WORKFLOW", "STATE", "TIME", "ERROR"]);
    for w in workflows {
        let id = w["id"].as_str().unwrap_or("?");
        t.row([
            names.get(id).copied().unwrap_or("?").to_string(),
            format!(
                "{} {}",
                w["name"].as_str().unwrap_or("?"),
                &w["id"].as_str().unwrap_or("?")[..8]
            ),
            w["state"].as_str().unwrap_or("?").to_string(),
            secs_between(&w["created_at"], &w["finished_at"])
                .map(|s| format!("{s:.0} s"))
                .unwrap_or_default(),
            w["error"].as_str().unwrap_or("").to_string(),
        ]);
    }
    t.print();
}

// ---------------------------------------------------------------------------
// rackboot workflow ...

#[derive(Subcommand)]
pub enum WorkflowCmd {
    /// Workflows, newest first (active ones with progress).
    List {
        /// Only this machine's.
        #[arg(long)]
        machine: Option<String>,
        /// queued, running, succeeded, failed or aborted.
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One workflow's steps: state, attempts, duration, what each waits for, errors.
    Show {
        /// Workflow id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resume a failed workflow from its failed step, and follow it.
    Retry {
        /// Workflow id.
        id: String,
        /// Return once resumed instead of following it.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop an active workflow.
    Abort {
        /// Workflow id.
        id: String,
        /// Why, recorded with the abort.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run any workflow definition (built-in or your own) on machines.
    Run {
        /// Definition name.
        workflow: String,
        #[command(flatten)]
        targets: Targets,
        /// The request as JSON (image, erase, raid, network...).
        #[arg(long, default_value = "{}")]
        request: String,
        #[command(flatten)]
        follow: Follow,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Workflow definitions (built-in and your own).
    Definitions(ClientArgs),
    /// Print a definition's TOML (a starting point for your own).
    ShowDefinition {
        /// Definition name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add or replace your own definition from a TOML file (checked; errors name the line).
    Define {
        /// The definition, a TOML file.
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete one of your definitions.
    DeleteDefinition {
        /// Definition name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn workflow(cmd: WorkflowCmd) -> Result<()> {
    match cmd {
        WorkflowCmd::List {
            machine,
            state,
            limit,
            client,
        } => {
            let api = Api::new(&client)?;
            let mut q = vec![format!("limit={}", limit.clamp(1, 1000))];
            if let Some(m) = machine {
                q.push(format!("machine={}", seg(&m)));
            }
            if let Some(s) = state {
                q.push(format!("state={s}"));
            }
            let list: Vec<Value> = api
                .get_all(&format!("/workflows?{}", q.join("&")), limit as usize)
                .await?;
            if client.output == Format::Json {
                print_json(&list);
                return Ok(());
            }
            // Names of the machines listed (not of the whole fleet).
            let mut names: std::collections::BTreeMap<String, String> = Default::default();
            for w in &list {
                let Some(id) = w["machine"].as_str() else {
                    continue;
                };
                if !names.contains_key(id) {
                    let m: Option<Value> = api.get(&format!("/machines/{}", seg(id))).await.ok();
                    let name = m
                        .as_ref()
                        .and_then(|m| m["name"].as_str())
                        .unwrap_or(id)
                        .to_string();
                    names.insert(id.to_string(), name);
                }
            }
            let name_of = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
            let mut t = Table::new(["ID", "MACHINE", "WORKFLOW", "STATE", "CREATED", "NOW"]);
            for w in &list {
                t.row([
                    w["id"].as_str().unwrap_or("?").to_string(),
                    name_of(w["machine"].as_str().unwrap_or("")),
                    w["name"].as_str().unwrap_or("?").to_string(),
                    w["state"].as_str().unwrap_or("?").to_string(),
                    w["created_at"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(19)
                        .collect(),
                    if matches!(w["state"].as_str(), Some("queued" | "running")) {
                        status_line(w)
                    } else {
                        w["error"].as_str().unwrap_or("").to_string()
                    },
                ]);
            }
            t.print();
        }
        WorkflowCmd::Show { id, client } => {
            let api = Api::new(&client)?;
            let w: Value = api.get(&format!("/workflows/{}", seg(&id))).await?;
            if client.output == Format::Json {
                print_json(&w);
                return Ok(());
            }
            print_workflow(&w);
        }
        WorkflowCmd::Retry {
            id,
            no_wait,
            client,
        } => {
            let api = Api::new(&client)?;
            let w: Value = api
                .post(&format!("/workflows/{}/retry", seg(&id)), &json!({}))
                .await?;
            let machine = w["machine"].as_str().unwrap_or("?").to_string();
            outln!("workflow {id} queued again");
            if !no_wait {
                let ids = [(machine, id.clone())];
                let finals = watch(&api, &ids, client.output).await?;
                summary(&finals, &ids, client.output);
                if finals.iter().any(|w| w["state"] != "succeeded") {
                    bail!("workflow {id} did not succeed");
                }
            }
        }
        WorkflowCmd::Abort { id, reason, client } => {
            let api = Api::new(&client)?;
            let w: Value = api
                .post(
                    &format!("/workflows/{}/abort", seg(&id)),
                    &json!({"reason": reason}),
                )
                .await?;
            match client.output {
                Format::Json => print_json(&w),
                Format::Text => outln!("workflow {id} aborted"),
            }
        }
        WorkflowCmd::Run {
            workflow,
            targets,
            request,
            follow,
            client,
        } => {
            let request: Value = serde_json::from_str(&request).context("--request is not JSON")?;
            let Value::Object(request) = request else {
                bail!("--request must be a JSON object");
            };
            run(&workflow, &targets, request, &follow, &client).await?;
        }
        WorkflowCmd::Definitions(client) => {
            let api = Api::new(&client)?;
            let defs: Vec<Value> = api.get("/workflow-definitions").await?;
            if client.output == Format::Json {
                print_json(&defs);
                return Ok(());
            }
            let mut t = Table::new(["NAME", "LIFECYCLE", "BUILT-IN", "STEPS"]);
            for d in &defs {
                t.row([
                    d["name"].as_str().unwrap_or("?").to_string(),
                    d["lifecycle"].as_str().unwrap_or("?").to_string(),
                    if d["builtin"] == true { "yes" } else { "no" }.to_string(),
                    d["steps"]
                        .as_array()
                        .map(|s| {
                            s.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(" → ")
                        })
                        .unwrap_or_default(),
                ]);
            }
            t.print();
        }
        WorkflowCmd::ShowDefinition { name, client } => {
            let api = Api::new(&client)?;
            let defs: Vec<Value> = api.get("/workflow-definitions").await?;
            let d = defs
                .iter()
                .find(|d| d["name"] == name.as_str())
                .with_context(|| format!("no workflow definition {name:?}"))?;
            out!("{}", d["source"].as_str().unwrap_or(""));
        }
        WorkflowCmd::Define { file, client } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let api = Api::new(&client)?;
            let d: Value = api
                .put("/workflow-definitions", &json!({"source": text}))
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            outln!(
                "workflow {} stored ({} steps)",
                d["name"].as_str().unwrap_or("?"),
                d["steps"].as_array().map_or(0, |s| s.len())
            );
        }
        WorkflowCmd::DeleteDefinition { name, client } => {
            let api = Api::new(&client)?;
            api.delete(&format!("/workflow-definitions/{}", seg(&name)))
                .await?;
            crate::client::print_deleted(client.output, "workflow definition", &name);
        }
    }
    Ok(())
}

pub fn print_workflow(w: &Value) {
    outln!(
        "workflow {} ({}) on machine {}: {}",
        w["id"].as_str().unwrap_or("?"),
        w["name"].as_str().unwrap_or("?"),
        w["machine"].as_str().unwrap_or("?"),
        w["state"].as_str().unwrap_or("?")
    );
    if let Some(e) = w["error"].as_str() {
        outln!("error: {e}");
    }
    if let Some(q) = w["queue"].as_object() {
        outln!(
            "queued: place {}, waiting for {}",
            q["position"],
            q["waiting_for"].as_str().unwrap_or("?")
        );
    }
    let mut t = Table::new(["STEP", "USES", "STATE", "ATTEMPTS", "TIME", "DETAIL"]);
    for s in w["steps"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or("?");
        let detail = match s["state"].as_str() {
            Some("running") => {
                let mut d = s["waiting_for"].as_str().unwrap_or("").to_string();
                if let Some(deadline) = s["deadline"].as_str() {
                    d.push_str(&format!(" (until {})", &deadline[..deadline.len().min(19)]));
                }
                let p = &w["progress"][name];
                if let (Some(done), Some(total)) = (p["done"].as_u64(), p["total"].as_u64()) {
                    d = format!("{} of {} MiB; {d}", done >> 20, total >> 20);
                }
                d
            }
            Some("backoff") => format!(
                "retry at {}: {}",
                s["retry_at"].as_str().unwrap_or("?"),
                s["error"].as_str().unwrap_or("")
            ),
            Some("skipped") => s["output"]["skipped"].as_str().unwrap_or("").to_string(),
            Some("failed") => s["error"].as_str().unwrap_or("").to_string(),
            _ => String::new(),
        };
        t.row([
            name.to_string(),
            s["uses"].as_str().unwrap_or("?").to_string(),
            s["state"].as_str().unwrap_or("?").to_string(),
            s["attempts"].to_string(),
            secs_between(&s["started_at"], &s["finished_at"])
                .map(|x| format!("{x:.1} s"))
                .unwrap_or_default(),
            detail,
        ]);
    }
    t.print();
}

// ---------------------------------------------------------------------------
// rackboot image ...

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Import a qcow2, raw, raw.zst, raw.xz or raw.gz image (a file on the
    /// server host, or an http:// URL the server can reach).
    Import {
        /// An image file on the server host, or an http:// URL.
        source: String,
        /// Catalog name (default: the file name without extensions).
        #[arg(long)]
        name: Option<String>,
        /// The image's OS family for network files: debian, ubuntu, rhel, rhel-ifcfg, suse.
        #[arg(long)]
        os_family: Option<String>,
        /// The image runs cloud-init.
        #[arg(long)]
        cloud_init: bool,
        /// Free text shown with the image.
        #[arg(long, default_value = "")]
        description: String,
        /// Replace an image of the same name.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The image catalog.
    List(ClientArgs),
    /// One image: format, sizes, checksum, OS family.
    Show {
        /// Image name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete an image (refused while a deploy uses it).
    Delete {
        /// Image name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn default_image_name(source: &str) -> String {
    let file = source.rsplit('/').next().unwrap_or(source);
    let mut name = file.to_ascii_lowercase();
    for ext in [".gz", ".xz", ".zst", ".qcow2", ".img", ".raw"] {
        if let Some(stem) = name.strip_suffix(ext) {
            name = stem.to_string();
        }
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

pub async fn image(cmd: ImageCmd) -> Result<()> {
    match cmd {
        ImageCmd::Import {
            source,
            name,
            os_family,
            cloud_init,
            description,
            replace,
            client,
        } => {
            let source = if source.starts_with("http://") {
                source
            } else {
                std::fs::canonicalize(&source)
                    .with_context(|| format!("{source}: not found"))?
                    .display()
                    .to_string()
            };
            let name = name.unwrap_or_else(|| default_image_name(&source));
            let api = Api::new(&client)?;
            let started = Instant::now();
            let r: Value = api
                .post(
                    "/images",
                    &json!({
                        "name": name, "source": source, "os_family": os_family,
                        "cloud_init": cloud_init, "description": description, "replace": replace,
                    }),
                )
                .await?;
            match client.output {
                Format::Json => print_json(&r),
                Format::Text => outln!(
                    "image {} imported in {:.1} s: {} MiB raw, {} MiB stored, sha256 {}",
                    r["name"].as_str().unwrap_or("?"),
                    started.elapsed().as_secs_f64(),
                    r["raw_size"].as_u64().unwrap_or(0) >> 20,
                    r["compressed_size"].as_u64().unwrap_or(0) >> 20,
                    r["sha256"].as_str().unwrap_or("?")
                ),
            }
        }
        ImageCmd::List(client) => {
            let api = Api::new(&client)?;
            let list: Vec<Value> = api.get("/images").await?;
            if client.output == Format::Json {
                print_json(&list);
                return Ok(());
            }
            let mut t = Table::new([
                "NAME",
                "FORMAT",
                "OS",
                "CLOUD-INIT",
                "RAW MiB",
                "STORED MiB",
                "IMPORTED",
            ]);
            for i in &list {
                t.row([
                    i["name"].as_str().unwrap_or("?").to_string(),
                    i["source_format"].as_str().unwrap_or("?").to_string(),
                    i["os_family"].as_str().unwrap_or("-").to_string(),
                    if i["cloud_init"] == true { "yes" } else { "no" }.to_string(),
                    (i["raw_size"].as_u64().unwrap_or(0) >> 20).to_string(),
                    (i["compressed_size"].as_u64().unwrap_or(0) >> 20).to_string(),
                    i["imported_at"]
                        .as_str()
                        .unwrap_or("")
                        .chars()
                        .take(19)
                        .collect(),
                ]);
            }
            t.print();
        }
        ImageCmd::Show { name, client } => {
            let api = Api::new(&client)?;
            let i: Value = api.get(&format!("/images/{}", seg(&name))).await?;
            print_json(&i);
        }
        ImageCmd::Delete { name, client } => {
            let api = Api::new(&client)?;
            api.delete(&format!("/images/{}", seg(&name))).await?;
            crate::client::print_deleted(client.output, "image", &name);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// rackboot ramdisk build

#[derive(Subcommand)]
pub enum RamdiskCmd {
    /// Build the agent's RAM-disk from this host's Debian kernel and modules;
    /// a running server serves it at once (no restart).
    Build {
        /// The rackboot-agent binary (static); default: rackboot-agent beside
        /// this rackboot binary.
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Output directory; default STATE_DIR/ramdisk, where the server looks.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Kernel version under /lib/modules (default: the newest with a /boot/vmlinuz).
        #[arg(long)]
        kernel: Option<String>,
        /// State directory (for the default output).
        #[arg(long, env = "RACKBOOT_STATE_DIR", default_value = crate::config::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}

pub async fn ramdisk(cmd: RamdiskCmd) -> Result<()> {
    let RamdiskCmd::Build {
        agent,
        out,
        kernel,
        state_dir,
    } = cmd;
    let agent = match agent {
        Some(a) => a,
        None => std::env::current_exe()
            .context("finding this binary")?
            .with_file_name("rackboot-agent"),
    };
    if !agent.is_file() {
        bail!(
            "{}: no agent binary (build it with scripts/build-agent and pass --agent)",
            agent.display()
        );
    }
    let out = out.unwrap_or_else(|| state_dir.join(crate::config::RAMDISK_DIR));
    let mut options = rackboot_ramdisk::RamdiskOptions::new(agent, out.clone());
    options.kernel_version = kernel;
    let started = Instant::now();
    let manifest = tokio::task::spawn_blocking(move || rackboot_ramdisk::build(&options))
        .await
        .context("building the RAM-disk")??;
    outln!(
        "RAM-disk built in {:.0} s in {}: kernel {}, initramfs {:.1} MiB ({} modules, {:?})",
        started.elapsed().as_secs_f64(),
        out.display(),
        manifest.kernel_version,
        manifest.initramfs.size as f64 / 1048576.0,
        manifest.modules.count,
        manifest.compression,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_from_files() {
        assert_eq!(
            default_image_name("/srv/Debian-12-GenericCloud.qcow2"),
            "debian-12-genericcloud"
        );
        assert_eq!(default_image_name("http://h/x/testos.raw.zst"), "testos");
    }

    #[test]
    fn root_disk_specs() {
        assert_eq!(root_disk("largest").unwrap(), json!({"rule": "largest"}));
        assert_eq!(
            root_disk("serial:S1").unwrap(),
            json!({"rule": "serial", "value": "S1"})
        );
        assert!(root_disk("biggest").is_err());
    }
}
