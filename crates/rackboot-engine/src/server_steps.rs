//! Steps that run in rackboot: BMC power and boot device, the machine's boot
//! intent, waiting. Each attempt runs as its own task and reports back to the
//! actor; every one is idempotent (a restarted server simply runs it again).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use rackboot_core::{BootIntent, MacAddr, Machine, WorkflowId};
use rackboot_fleet::{Actor, Fleet};
use rackboot_install::{Ipv4Config, NetworkVars};
use rackboot_power::{
    BmcTarget, BootDevice, BootPersistence, PowerAction, PowerErrorKind, PowerFailure,
    emit_request_event, target_from_bmc,
};
use rackboot_steps::StepKind;
use rackboot_steps::library::{BootTarget, StepParams};
use rackboot_steps::request::WorkflowRequest;
use serde_json::json;
use tokio::sync::mpsc;

use crate::{Msg, PowerDeps};

/// One attempt of a server step.
pub(crate) struct Job {
    pub workflow: WorkflowId,
    pub step: String,
    pub attempt: uuid::Uuid,
    pub kind: StepKind,
    pub params: StepParams,
    pub machine: Machine,
    pub request: WorkflowRequest,
    pub fleet: Arc<Fleet>,
    pub power: Option<PowerDeps>,
    pub probe_interval: Duration,
}

/// What an attempt did, sent back to the actor.
pub(crate) struct Done {
    pub workflow: WorkflowId,
    pub step: String,
    pub attempt: uuid::Uuid,
    pub outcome: Result<Outcome, Failure>,
}

pub(crate) enum Outcome {
    Finished(serde_json::Value),
    Skipped(String),
    /// The machine is network-booting the agent: the step ends when it says hello.
    AwaitHello(serde_json::Value),
    /// Nothing to probe: the step ends with the first-boot callback (or its timeout).
    AwaitCallback,
}

#[derive(Debug)]
pub(crate) struct Failure {
    pub message: String,
    pub transient: bool,
}

impl Failure {
    fn new(message: impl Into<String>, transient: bool) -> Failure {
        Failure {
            message: message.into(),
            transient,
        }
    }
}

impl From<PowerFailure> for Failure {
    fn from(f: PowerFailure) -> Failure {
        let transient = !matches!(
            f.error.kind(),
            PowerErrorKind::Authentication
                | PowerErrorKind::Unsupported
                | PowerErrorKind::InvalidUrl
        );
        Failure::new(format!("BMC: {f}"), transient)
    }
}

pub(crate) fn spawn(job: Job, tx: mpsc::Sender<Msg>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let outcome = run(&job).await;
        let _ = tx
            .send(Msg::ServerStepDone(Done {
                workflow: job.workflow,
                step: job.step,
                attempt: job.attempt,
                outcome,
            }))
            .await;
    })
}

fn target(job: &Job) -> Result<Option<(BmcTarget, &PowerDeps)>, Failure> {
    let (Some(bmc), Some(power)) = (&job.machine.bmc, &job.power) else {
        return Ok(None);
    };
    let t = target_from_bmc(bmc, &power.key)
        .map_err(|e| Failure::new(format!("BMC {}: {e}", bmc.address), false))?;
    Ok(Some((t, power)))
}

fn engine() -> Actor {
    Actor::engine()
}

async fn run(job: &Job) -> Result<Outcome, Failure> {
    let fleet = &job.fleet;
    let id = job.machine.id;
    let bmc = target(job)?;
    match job.kind {
        StepKind::VerifyBmc => {
            let Some((t, p)) = bmc else {
                return Ok(Outcome::Skipped("the machine has no BMC".into()));
            };
            let info = p.controller.ping(&t).await.map_err(|e| {
                Failure::new(
                    format!("BMC {}: {e}", t.redacted()),
                    !matches!(e.kind(), PowerErrorKind::Authentication),
                )
            })?;
            let state = p
                .controller
                .power_state(&t)
                .await
                .map_err(|e| Failure::new(format!("BMC {}: {e}", t.redacted()), true))?;
            Ok(Outcome::Finished(
                json!({"power": state, "bmc": format!("{info:?}")}),
            ))
        }
        StepKind::PowerOn | StepKind::PowerOff | StepKind::Reboot => {
            let Some((t, p)) = bmc else {
                return Ok(Outcome::Skipped(match job.kind {
                    StepKind::PowerOn => "the machine has no BMC: power it on by hand".into(),
                    _ => "the machine has no BMC".into(),
                }));
            };
            let action = match job.kind {
                StepKind::PowerOn => PowerAction::On,
                StepKind::PowerOff => PowerAction::Off,
                _ => PowerAction::Cycle,
            };
            let result = p.controller.power(&t, action).await;
            emit_request_event(fleet.events(), id, &result);
            let outcome = result?;
            Ok(Outcome::Finished(
                serde_json::to_value(&outcome).unwrap_or_default(),
            ))
        }
        StepKind::SetBootDevice => {
            let Some((t, p)) = bmc else {
                return Ok(Outcome::Skipped("the machine has no BMC".into()));
            };
            let StepParams::SetBootDevice(w) = &job.params else {
                return Err(Failure::new(
                    "set_boot_device without its parameters",
                    false,
                ));
            };
            let device = match w.device {
                BootTarget::Pxe => BootDevice::Pxe,
                BootTarget::Disk => BootDevice::Disk,
            };
            let persistence = if w.persistent {
                BootPersistence::Persistent
            } else {
                BootPersistence::Once
            };
            let result = p
                .controller
                .set_boot_device(&t, device, persistence, None)
                .await;
            emit_request_event(fleet.events(), id, &result);
            Ok(Outcome::Finished(
                serde_json::to_value(&result?).unwrap_or_default(),
            ))
        }
        StepKind::BootAgent => {
            fleet
                .set_workflow_intent(
                    id,
                    BootIntent::Agent {
                        workflow: Some(job.workflow),
                    },
                    &engine(),
                )
                .await
                .map_err(|e| Failure::new(format!("setting the agent boot: {e}"), true))?;
            let Some((t, p)) = bmc else {
                return Ok(Outcome::AwaitHello(
                    json!({"phase": "waiting_hello", "bmc": false}),
                ));
            };
            let set = p
                .controller
                .set_boot_device(&t, BootDevice::Pxe, BootPersistence::Once, None)
                .await;
            emit_request_event(fleet.events(), id, &set);
            set?;
            // A cycle of a machine that is off powers it on.
            let power = p.controller.power(&t, PowerAction::Cycle).await;
            emit_request_event(fleet.events(), id, &power);
            power?;
            Ok(Outcome::AwaitHello(
                json!({"phase": "waiting_hello", "bmc": true}),
            ))
        }
        StepKind::SetLocalBoot => {
            fleet
                .set_workflow_intent(id, BootIntent::LocalDisk, &engine())
                .await
                .map_err(|e| Failure::new(format!("setting the local boot: {e}"), true))?;
            let Some((t, p)) = bmc else {
                return Ok(Outcome::Finished(
                    json!({"intent": "local_disk", "bmc": false}),
                ));
            };
            let set = p
                .controller
                .set_boot_device(&t, BootDevice::Disk, BootPersistence::Persistent, None)
                .await;
            emit_request_event(fleet.events(), id, &set);
            set?;
            Ok(Outcome::Finished(
                json!({"intent": "local_disk", "bmc": true, "boot_device": "disk"}),
            ))
        }
        StepKind::WaitBooted => {
            let probe = match &job.params {
                StepParams::WaitBooted(w) => w.probe,
                _ => true,
            };
            let addresses = match (&job.request.network, probe) {
                (Some(net), true) => static_addresses(net),
                _ => Vec::new(),
            };
            if addresses.is_empty() {
                return Ok(Outcome::AwaitCallback);
            }
            let macs: BTreeSet<MacAddr> = job.machine.macs.iter().copied().collect();
            loop {
                for &ip in &addresses {
                    let seen = tokio::task::spawn_blocking(move || crate::probe::probe(ip))
                        .await
                        .ok()
                        .flatten();
                    if let Some(mac) = seen
                        && macs.contains(&mac)
                    {
                        return Ok(Outcome::Finished(json!({
                            "seen_by": "arp",
                            "address": ip,
                            "mac": mac,
                        })));
                    }
                }
                tokio::time::sleep(job.probe_interval).await;
            }
        }
        StepKind::Wait => {
            let secs = match &job.params {
                StepParams::Wait(w) => w.secs,
                _ => 0,
            };
            tokio::time::sleep(Duration::from_secs(secs)).await;
            Ok(Outcome::Finished(json!({"slept_secs": secs})))
        }
        other => Err(Failure::new(
            format!("{other} does not run in rackboot"),
            false,
        )),
    }
}

/// The static IPv4 addresses a deploy gives the installed system.
pub(crate) fn static_addresses(net: &NetworkVars) -> Vec<Ipv4Addr> {
    let configs = net
        .nics
        .iter()
        .map(|n| &n.ipv4)
        .chain(net.bonds.iter().map(|b| &b.ipv4))
        .chain(net.vlans.iter().map(|v| &v.ipv4));
    configs
        .filter_map(|c| match c {
            Ipv4Config::Static { address, .. } => Some(*address),
            _ => None,
        })
        .collect()
}
