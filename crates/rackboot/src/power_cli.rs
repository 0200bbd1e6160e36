//! `rackboot machine power` and `rackboot machine boot-device`: one machine, or
//! many chosen by label (or all with a BMC), in parallel with progress shown.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use clap::Args;
use futures::StreamExt as _;
use rackboot_api::power::{PowerResult, PowerStatus};
use rackboot_core::Machine;
use serde_json::{Value, json};

use crate::client::{Api, ClientArgs, parse_labels, seg};
use crate::output::{Format, print_json};

/// Which machines a bulk command acts on.
#[derive(Args, Clone)]
pub struct Targets {
    /// Every machine with these labels (KEY=VALUE, repeatable) instead of names.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Every machine that has a BMC.
    #[arg(long)]
    pub all: bool,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 16)]
    pub parallel: usize,
}

#[derive(Args)]
pub struct PowerArgs {
    /// `[MACHINE...] ACTION`: machines by name, id or MAC (or use --label/--all),
    /// then on | off | soft | cycle | reset | status.
    #[arg(required = true, num_args = 1..)]
    pub words: Vec<String>,
    #[command(flatten)]
    pub targets: Targets,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Args)]
pub struct BootDeviceArgs {
    /// `[MACHINE...] DEVICE`: machines (or --label/--all), then pxe | disk.
    #[arg(required = true, num_args = 1..)]
    pub words: Vec<String>,
    /// Next boot only (otherwise from now on).
    #[arg(long)]
    pub once: bool,
    /// uefi | legacy, where the BMC can choose.
    #[arg(long, value_parser = ["uefi", "legacy"])]
    pub mode: Option<String>,
    #[command(flatten)]
    pub targets: Targets,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The machine references to act on: the given names, or those chosen by label / --all.
async fn resolve(api: &Api, names: &[String], targets: &Targets) -> Result<Vec<String>> {
    let by_filter = targets.all || !targets.labels.is_empty();
    if by_filter != names.is_empty() {
        bail!("name machines, or choose them with --label/--all (not both)");
    }
    if !by_filter {
        return Ok(names.to_vec());
    }
    let wanted: BTreeMap<String, String> = parse_labels(&targets.labels)?;
    let machines: Vec<Machine> = api.get_all("/machines", usize::MAX).await?;
    let chosen: Vec<String> = machines
        .into_iter()
        .filter(|m| m.bmc.is_some())
        .filter(|m| wanted.iter().all(|(k, v)| m.labels.get(k) == Some(v)))
        .map(|m| m.name)
        .collect();
    if chosen.is_empty() {
        bail!("no machine with a BMC matches");
    }
    Ok(chosen)
}

/// Runs `op` on every machine, `parallel` at a time, printing each result as it
/// lands (`[3/40] r12-04: ...`). Fails when any machine failed.
async fn run_all<F, Fut>(
    machines: Vec<String>,
    parallel: usize,
    output: Format,
    op: F,
) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = (String, Result<Value>)>,
{
    let total = machines.len();
    let mut done = 0;
    let mut failed = 0;
    let mut results = Vec::new();
    let mut stream =
        futures::stream::iter(machines.into_iter().map(op)).buffer_unordered(parallel.max(1));
    while let Some((name, result)) = stream.next().await {
        done += 1;
        match &result {
            Ok(v) => {
                if output == Format::Text {
                    let line = v
                        .get("message")
                        .or_else(|| v.get("state"))
                        .and_then(|m| m.as_str())
                        .unwrap_or_default();
                    outln!("[{done}/{total}] {name}: {line}");
                }
            }
            Err(e) => {
                failed += 1;
                if output == Format::Text {
                    eprintln!("[{done}/{total}] {name}: FAILED: {e:#}");
                }
            }
        }
        results.push(match result {
            Ok(v) => json!({"machine": name, "ok": true, "result": v}),
            Err(e) => json!({"machine": name, "ok": false, "error": format!("{e:#}")}),
        });
    }
    if output == Format::Json {
        print_json(&results);
    } else if total > 1 {
        outln!("{} of {total} succeeded", total - failed);
    }
    if failed > 0 {
        bail!("{failed} of {total} failed");
    }
    Ok(())
}

pub async fn power(args: PowerArgs) -> Result<()> {
    let (action, names) = args.words.split_last().expect("clap requires one word");
    let action = match action.as_str() {
        "on" | "off" | "cycle" | "reset" | "status" => action.clone(),
        "soft" | "soft_off" | "soft-off" => "soft_off".to_string(),
        other => bail!("unknown power action {other:?}: on, off, soft, cycle, reset or status"),
    };
    let api = Api::new(&args.client)?;
    let machines = resolve(&api, names, &args.targets).await?;
    let api = &api;
    let action = &action;
    run_all(
        machines,
        args.targets.parallel,
        args.client.output,
        |name| async move {
            let path = format!("/machines/{}/power", seg(&name));
            let result = if action == "status" {
                api.get::<PowerStatus>(&path)
                    .await
                    .and_then(|s| Ok(serde_json::to_value(s)?))
            } else {
                api.post::<PowerResult>(&path, &json!({"action": action}))
                    .await
                    .and_then(|r| Ok(serde_json::to_value(r)?))
            };
            (name, result)
        },
    )
    .await
}

pub async fn boot_device(args: BootDeviceArgs) -> Result<()> {
    let (device, names) = args.words.split_last().expect("clap requires one word");
    if !matches!(device.as_str(), "pxe" | "disk") {
        bail!("unknown boot device {device:?}: pxe or disk");
    }
    let api = Api::new(&args.client)?;
    let machines = resolve(&api, names, &args.targets).await?;
    let body = json!({"device": device, "once": args.once, "mode": args.mode});
    let (api, body) = (&api, &body);
    run_all(
        machines,
        args.targets.parallel,
        args.client.output,
        |name| async move {
            let path = format!("/machines/{}/boot-device", seg(&name));
            let result = api
                .put::<PowerResult>(&path, body)
                .await
                .and_then(|r| Ok(serde_json::to_value(r)?));
            (name, result)
        },
    )
    .await
}
