//! The engine's one task: owns every active workflow, applies each message
//! and tick to them, and writes every change through the fleet before acting
//! on it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rackboot_agent_proto::{
    Action, Command, Heartbeat, HeartbeatReply, Hello, HelloReply, PROTOCOL_VERSION, Progress,
    StepOutput, StepReport,
};
use rackboot_core::{
    AgentSession, BootIntent, EventKind, Lifecycle, Machine, MachineId, NewEvent, ProvisionState,
    StepState, Workflow, WorkflowId, WorkflowState,
};
use rackboot_fleet::{Actor as Who, Fleet, on_machine, transition};
use rackboot_seal::SecretKey;
use rackboot_steps::plan::{PlanContext, Planned, agent_action};
use rackboot_steps::request::{WorkflowRequest, with_image_defaults};
use rackboot_steps::{Runs, StepKind, StepParams, WorkflowDef};
use rackboot_store::{LifecycleChange, WorkflowFilter};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::definitions::Definitions;
use crate::queue::{Admission, Slot, admit};

mod ownership;
use crate::server_steps::{self, Done, Failure, Job, Outcome};
use crate::{
    AgentReject, EngineConfig, EngineError, LiveProgress, Msg, PowerDeps, QueueInfo, StartRequest,
    Started, WorkflowView, batch_for,
};

/// What a running step waits for besides its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Await {
    /// The agent's hello (boot_agent, after powering the machine).
    Hello,
    /// The installed system's first-boot callback (wait_booted with nothing to probe).
    Callback,
}

/// A step attempt handed to the agent.
struct AgentWork {
    step: String,
    command: Command,
    /// The agent process that took it, and when.
    taken: Option<(uuid::Uuid, Instant)>,
}

struct Active {
    wf: Workflow,
    request: WorkflowRequest,
    tasks: HashMap<String, tokio::task::JoinHandle<()>>,
    agent: Option<AgentWork>,
    awaiting: HashMap<String, Await>,
    progress: BTreeMap<String, LiveProgress>,
    progress_event_at: HashMap<String, Instant>,
    queue_reason: Option<String>,
    /// The first-boot callback came before its step started.
    booted_early: Option<serde_json::Value>,
}

pub(crate) struct Actor {
    fleet: Arc<Fleet>,
    power: Option<PowerDeps>,
    key: Arc<SecretKey>,
    config: EngineConfig,
    tx: mpsc::Sender<Msg>,
    /// Which workflows this server runs, in a cluster (see `ownership`).
    own: ownership::Ownership,
    defs: Definitions,
    active: HashMap<WorkflowId, Active>,
    by_machine: HashMap<MachineId, WorkflowId>,
    /// When each machine's agent was last heard from.
    seen: HashMap<MachineId, Instant>,
    /// When each machine's agent last said hello.
    hello_at: HashMap<MachineId, DateTime<Utc>>,
    /// Attempts an agent must stop, by machine (delivered with its next heartbeat).
    cancel: HashMap<MachineId, Vec<uuid::Uuid>>,
    /// Workflows changed (saved) since the last scheduling pass: a pass
    /// after a message advances only these; the tick's pass advances all.
    changed: HashSet<WorkflowId>,
}

/// Which running workflows a scheduling pass advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Every one: the tick (backoffs due, deadlines, maintenance, deleted
    /// machines) and the start.
    All,
    /// Those changed since the last pass: after a message.
    Changed,
}

fn engine() -> Who {
    Who::engine()
}

impl Actor {
    pub(crate) async fn load(
        fleet: Arc<Fleet>,
        power: Option<PowerDeps>,
        key: Arc<SecretKey>,
        config: EngineConfig,
        tx: mpsc::Sender<Msg>,
    ) -> Result<Actor, EngineError> {
        let (defs, problems) = Definitions::load(config.workflows_dir.as_deref());
        for p in problems {
            tracing::warn!(
                "workflow definition {} not loaded: {}",
                p.path.display(),
                p.error
            );
        }
        let mut actor = Actor {
            fleet,
            power,
            key,
            config,
            tx,
            own: ownership::Ownership::default(),
            defs,
            active: HashMap::new(),
            by_machine: HashMap::new(),
            seen: HashMap::new(),
            hello_at: HashMap::new(),
            cancel: HashMap::new(),
            changed: HashSet::new(),
        };
        let stored = actor
            .fleet
            .list_workflows(&WorkflowFilter {
                machine: None,
                states: vec![WorkflowState::Queued, WorkflowState::Running],
                limit: u32::MAX,
            })
            .await?;
        // In a cluster, only those of this server's machines (claimed).
        let stored = actor.owned(stored).await;
        let resumed = stored.len();
        for wf in stored {
            actor.resume(wf).await;
        }
        if resumed > 0 {
            tracing::info!(resumed, "workflow engine resumed active workflows");
        }
        Ok(actor)
    }

    /// Takes back a workflow that was active when the server stopped.
    async fn resume(&mut self, wf: Workflow) {
        let request: WorkflowRequest = match serde_json::from_value(wf.params.clone()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(workflow = %wf.id, "cannot resume: its parameters do not parse: {e}");
                return;
            }
        };
        let id = wf.id;
        let machine = wf.machine;
        // Agents get time to come back before they count as lost.
        self.seen.insert(machine, Instant::now());
        self.by_machine.insert(machine, id);
        self.active.insert(
            id,
            Active {
                wf,
                request,
                tasks: HashMap::new(),
                agent: None,
                awaiting: HashMap::new(),
                progress: BTreeMap::new(),
                progress_event_at: HashMap::new(),
                queue_reason: None,
                booted_early: None,
            },
        );
        let running: Vec<usize> = self.active[&id]
            .wf
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == StepState::Running)
            .map(|(i, _)| i)
            .collect();
        for idx in running {
            self.resume_step(id, idx).await;
        }
    }

    /// A step that was running when the server stopped: agent steps keep their
    /// attempt (the agent reports it), waits continue, the rest run again.
    async fn resume_step(&mut self, id: WorkflowId, idx: usize) {
        let Some(machine) = self.machine_of(id) else {
            return;
        };
        let a = &self.active[&id];
        let step = &a.wf.steps[idx];
        let Some(kind) = StepKind::parse(&step.uses) else {
            return;
        };
        let Some(attempt) = step.attempt else {
            return;
        };
        let params = match kind.parse_with(&step.with) {
            Ok(p) => p,
            Err(_) => return,
        };
        let name = step.name.clone();
        if kind == StepKind::BootAgent && step.output["phase"] == "waiting_hello" {
            self.active
                .get_mut(&id)
                .unwrap()
                .awaiting
                .insert(name, Await::Hello);
            return;
        }
        match self.route(kind, &machine) {
            Route::Server => self.spawn_job(id, idx, kind, params, attempt, machine),
            Route::Agent => match self.agent_command(id, idx, kind, &params, &machine, attempt) {
                Ok(Some(command)) => {
                    self.active.get_mut(&id).unwrap().agent = Some(AgentWork {
                        step: name,
                        command,
                        taken: None,
                    });
                }
                Ok(None) => {}
                Err(message) => self.fail_attempt(id, idx, message, false).await,
            },
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Msg>, shutdown: CancellationToken) {
        let mut ownership_events = self.ownership_events();
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.schedule(Pass::All).await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick().await,
                event = ownership::next_event(&mut ownership_events) => {
                    self.on_ownership(event).await
                }
            }
            // Workflows whose writes another server's claim refused.
            self.drop_fenced();
        }
        for a in self.active.values() {
            for t in a.tasks.values() {
                t.abort();
            }
        }
    }

    async fn handle(&mut self, msg: Msg) {
        // Only messages that can make a step ready or a workflow startable
        // are followed by a scheduling pass, and it looks only at the
        // workflows they changed (the tick's pass each second looks at all):
        // with a thousand agents heartbeating and operators polling, a pass
        // over every active workflow after every message made the actor the
        // bottleneck (1,000 simulated deploys: 153 s, agents waiting 9 s per
        // request).
        let reschedule = !matches!(
            msg,
            Msg::ViewsOf(..)
                | Msg::Views(..)
                | Msg::Heartbeat(..)
                | Msg::Progress(..)
                | Msg::Definitions(..)
                | Msg::PutDefinition(..)
                | Msg::DeleteDefinition(..)
        );
        match msg {
            Msg::Start(req, reply) => {
                let r = self.start(req).await;
                let _ = reply.send(r);
            }
            Msg::Retry(id, by, reply) => {
                let r = self.retry(id, by).await;
                let _ = reply.send(r);
            }
            Msg::Abort(id, by, reason, reply) => {
                let r = self.abort(id, by, reason).await;
                let _ = reply.send(r);
            }
            Msg::ViewsOf(ids, reply) => {
                let _ = reply.send(ids.into_iter().filter_map(|id| self.view(id)).collect());
            }
            Msg::Views(reply) => {
                let mut ids: Vec<WorkflowId> = self.active.keys().copied().collect();
                ids.sort_by_key(|id| self.active[id].wf.created_at);
                let _ = reply.send(ids.into_iter().filter_map(|id| self.view(id)).collect());
            }
            Msg::Hello(session, hello, reply) => {
                let r = self.hello(session, hello).await;
                let _ = reply.send(r);
            }
            Msg::Heartbeat(session, hb, reply) => {
                let r = self.heartbeat(session, hb).await;
                let _ = reply.send(r);
            }
            Msg::Progress(session, attempt, p, reply) => {
                let _ = reply.send(self.progress(session, attempt, p));
            }
            Msg::Report(session, attempt, report, reply) => {
                let r = self.report(session, attempt, report).await;
                let _ = reply.send(r);
            }
            Msg::Booted(id, token, peer, reply) => {
                let r = self.booted(id, &token, peer).await;
                let _ = reply.send(r);
            }
            Msg::ServerStepDone(done) => self.server_step_done(done).await,
            Msg::Definitions(reply) => {
                let _ = reply.send(self.defs.clone());
            }
            Msg::PutDefinition(text, reply) => {
                let _ = reply.send(self.put_definition(&text));
            }
            Msg::DeleteDefinition(name, reply) => {
                let _ = reply.send(self.delete_definition(&name));
            }
        }
        if reschedule {
            self.schedule(Pass::Changed).await;
        }
    }

    // ------------------------------------------------------------------
    // Requests

    async fn start(&mut self, req: StartRequest) -> Result<Vec<Started>, EngineError> {
        let def = self.defs.get(&req.workflow).cloned().ok_or_else(|| {
            EngineError::NotFound(format!(
                "no workflow definition {:?} (known: {})",
                req.workflow,
                self.defs.names().join(", ")
            ))
        })?;
        if req.machines.is_empty() {
            return Err(EngineError::Invalid("machines: none given".into()));
        }
        let request = self.resolve_request(&def, req.request.clone())?;
        let batch = batch_for(req.machines.len(), req.parallel);
        let mut out = Vec::with_capacity(req.machines.len());
        for reference in &req.machines {
            match self
                .start_one(&def, reference, &request, &req.by, batch)
                .await
            {
                Ok(wf) => out.push(Started {
                    machine: reference.clone(),
                    workflow: Some(wf),
                    error: None,
                }),
                Err(e) => out.push(Started {
                    machine: reference.clone(),
                    workflow: None,
                    error: Some(e.to_string()),
                }),
            }
        }
        Ok(out)
    }

    /// Checks the request against the definition and fills what the image
    /// catalog knows (size, checksum, OS family, cloud-init).
    fn resolve_request(
        &self,
        def: &WorkflowDef,
        request: WorkflowRequest,
    ) -> Result<WorkflowRequest, EngineError> {
        let mut request = request;
        if let Some(name) = request.image.clone() {
            let dir = self.config.images_dir.as_deref().ok_or_else(|| {
                EngineError::Invalid("image: this server has no image catalog".into())
            })?;
            let record = rackboot_images::get(dir, &name).map_err(|e| match e {
                rackboot_images::ImageError::NotFound { .. } => EngineError::Invalid(format!(
                    "image: {name:?} is not in the image catalog (rackboot image list)"
                )),
                other => EngineError::Invalid(format!("image: {other}")),
            })?;
            request.image_raw_size = Some(record.raw_size);
            request.image_sha256 = Some(record.sha256.clone());
            request.image_manifest_sha256 = record.manifest_sha256.clone();
            request = with_image_defaults(request, record.os_family.as_deref(), record.cloud_init);
        }
        request.check_for(def).map_err(EngineError::Invalid)?;
        Ok(request)
    }

    async fn start_one(
        &mut self,
        def: &WorkflowDef,
        reference: &str,
        request: &WorkflowRequest,
        by: &Who,
        batch: Option<rackboot_core::Batch>,
    ) -> Result<Workflow, EngineError> {
        let machine = self.fleet.find_machine(reference).await?;
        if let Some(m) = &machine.maintenance {
            return Err(EngineError::Conflict(format!(
                "{} is in maintenance ({}, by {}): clear it first",
                machine.name, m.reason, m.by
            )));
        }
        if let Some(other) = self.by_machine.get(&machine.id) {
            let a = &self.active[other];
            return Err(EngineError::Conflict(format!(
                "{} is already running workflow {} ({}, {})",
                machine.name,
                a.wf.id,
                a.wf.name,
                a.wf.state.as_str()
            )));
        }
        let during = def
            .lifecycle
            .begin(machine.state)
            .map_err(|e| EngineError::Conflict(format!("{}: {e}", machine.name)))?;
        let params = serde_json::to_value(request).expect("requests serialise");
        let wf =
            rackboot_steps::instantiate(def, machine.id, machine.state, params, by.as_str(), batch);
        let what = match &request.image {
            Some(image) => format!("{} of {image}", def.name),
            None => def.name.clone(),
        };
        self.fleet
            .apply_lifecycle(LifecycleChange {
                machine: machine.id,
                expect_state: Some(machine.state),
                state: during,
                state_reason: None,
                intent: None,
                transition: transition(
                    &machine,
                    during,
                    by,
                    format!("{what} requested by {by}"),
                    Some(wf.id),
                ),
                workflow: Some(wf.clone()),
            })
            .await?;
        self.emit(
            &wf,
            &machine,
            EventKind::WorkflowQueued,
            format!(
                "{}: workflow {} ({what}) queued by {by}",
                machine.name, wf.id
            ),
            json!({"workflow": wf.id, "name": wf.name, "who": by.as_str(), "image": request.image}),
        );
        // Stored: the server that owns the machine runs it.
        if self.hand_over(&wf, &machine).await {
            return Ok(wf);
        }
        self.by_machine.insert(machine.id, wf.id);
        self.active.insert(
            wf.id,
            Active {
                wf: wf.clone(),
                request: request.clone(),
                tasks: HashMap::new(),
                agent: None,
                awaiting: HashMap::new(),
                progress: BTreeMap::new(),
                progress_event_at: HashMap::new(),
                queue_reason: None,
                booted_early: None,
            },
        );
        Ok(wf)
    }

    async fn retry(&mut self, id: WorkflowId, by: Who) -> Result<Workflow, EngineError> {
        if self.active.contains_key(&id) {
            return Err(EngineError::Conflict(format!(
                "workflow {id} is still active; abort it first"
            )));
        }
        let mut wf = self.fleet.get_workflow(id).await?;
        if !matches!(wf.state, WorkflowState::Failed | WorkflowState::Aborted) {
            return Err(EngineError::Conflict(format!(
                "workflow {id} is {}: only failed or aborted workflows are retried",
                wf.state.as_str()
            )));
        }
        let machine = self
            .fleet
            .snapshot()
            .machine_by_id(wf.machine)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("workflow {id}: its machine is gone")))?;
        if let Some(other) = self.by_machine.get(&machine.id) {
            return Err(EngineError::Conflict(format!(
                "{} is running workflow {other}",
                machine.name
            )));
        }
        let during = wf
            .lifecycle
            .begin(machine.state)
            .map_err(|e| EngineError::Conflict(format!("{}: {e}", machine.name)))?;
        let request: WorkflowRequest = serde_json::from_value(wf.params.clone())
            .map_err(|e| EngineError::Invalid(format!("workflow {id}: parameters: {e}")))?;
        let mut from = Vec::new();
        for s in &mut wf.steps {
            if matches!(
                s.state,
                StepState::Failed | StepState::Running | StepState::Backoff
            ) {
                from.push(s.name.clone());
                s.state = StepState::Pending;
                s.attempts = 0;
                s.attempt = None;
                s.error = None;
                s.retry_at = None;
                s.deadline = None;
                s.waiting_for = None;
            }
        }
        // Steps that need the agent run again: when it is not there any more,
        // boot it again.
        let agent_alive = self.agent_alive(machine.id);
        let needs_agent = wf.steps.iter().any(|s| {
            s.state == StepState::Pending
                && StepKind::parse(&s.uses).is_some_and(|k| k.needs_agent())
        });
        if needs_agent && !agent_alive {
            for s in &mut wf.steps {
                if s.uses == StepKind::BootAgent.as_str() && s.state.is_done() {
                    s.state = StepState::Pending;
                    s.attempts = 0;
                    s.output = serde_json::Value::Null;
                    from.push(s.name.clone());
                }
            }
        }
        wf.state = WorkflowState::Queued;
        wf.error = None;
        wf.finished_at = None;
        wf.started_at = None;
        wf.updated_at = Utc::now();
        self.fleet
            .apply_lifecycle(LifecycleChange {
                machine: machine.id,
                expect_state: Some(machine.state),
                state: during,
                state_reason: None,
                intent: None,
                transition: transition(
                    &machine,
                    during,
                    &by,
                    format!(
                        "retry of {} from {} requested by {by}",
                        wf.name,
                        from.join(", ")
                    ),
                    Some(id),
                ),
                workflow: Some(wf.clone()),
            })
            .await?;
        self.emit(
            &wf,
            &machine,
            EventKind::WorkflowQueued,
            format!(
                "{}: workflow {id} ({}) queued again from {} by {by}",
                machine.name,
                wf.name,
                from.join(", ")
            ),
            json!({"workflow": id, "name": wf.name, "who": by.as_str(), "retry_from": from}),
        );
        self.by_machine.insert(machine.id, id);
        self.active.insert(
            id,
            Active {
                wf: wf.clone(),
                request,
                tasks: HashMap::new(),
                agent: None,
                awaiting: HashMap::new(),
                progress: BTreeMap::new(),
                progress_event_at: HashMap::new(),
                queue_reason: None,
                booted_early: None,
            },
        );
        Ok(wf)
    }

    async fn abort(
        &mut self,
        id: WorkflowId,
        by: Who,
        reason: String,
    ) -> Result<Workflow, EngineError> {
        if !self.active.contains_key(&id) {
            let wf = self.fleet.get_workflow(id).await?;
            return Err(EngineError::Conflict(format!(
                "workflow {id} is {}: nothing to abort",
                wf.state.as_str()
            )));
        }
        let why = if reason.is_empty() {
            format!("aborted by {by}")
        } else {
            format!("aborted by {by}: {reason}")
        };
        self.finish(id, Finish::Aborted(why)).await;
        Ok(self.fleet.get_workflow(id).await?)
    }

    fn view(&self, id: WorkflowId) -> Option<WorkflowView> {
        let a = self.active.get(&id)?;
        let queue = (a.wf.state == WorkflowState::Queued).then(|| {
            let position = self
                .active
                .values()
                .filter(|o| {
                    o.wf.state == WorkflowState::Queued && o.wf.created_at <= a.wf.created_at
                })
                .count();
            QueueInfo {
                position,
                waiting_for: a
                    .queue_reason
                    .clone()
                    .unwrap_or_else(|| "the scheduler".into()),
            }
        });
        Some(WorkflowView {
            workflow: a.wf.clone(),
            progress: a.progress.clone(),
            queue,
        })
    }

    fn put_definition(&mut self, text: &str) -> Result<WorkflowDef, EngineError> {
        let dir =
            self.config.workflows_dir.clone().ok_or_else(|| {
                EngineError::Invalid("this server has no workflows directory".into())
            })?;
        let mut defs = self.defs.clone();
        let def = defs
            .add(text)
            .map_err(|e| EngineError::Invalid(format!("definition: {e}")))?;
        std::fs::create_dir_all(&dir)
            .and_then(|()| {
                let path = crate::definitions::file_path(&dir, &def.name);
                let tmp = path.with_extension("toml.tmp");
                std::fs::write(&tmp, text)?;
                std::fs::rename(&tmp, &path)
            })
            .map_err(|e| EngineError::Invalid(format!("storing {}: {e}", def.name)))?;
        self.defs = defs;
        Ok(def)
    }

    fn delete_definition(&mut self, name: &str) -> Result<(), EngineError> {
        let dir =
            self.config.workflows_dir.clone().ok_or_else(|| {
                EngineError::Invalid("this server has no workflows directory".into())
            })?;
        if self.active.values().any(|a| a.wf.name == name) {
            return Err(EngineError::Conflict(format!(
                "workflow definition {name:?} is used by an active workflow"
            )));
        }
        let mut defs = self.defs.clone();
        defs.remove(name).map_err(EngineError::NotFound)?;
        match std::fs::remove_file(crate::definitions::file_path(&dir, name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::Invalid(format!("deleting {name}: {e}"))),
        }
        self.defs = defs;
        Ok(())
    }

    // ------------------------------------------------------------------
    // Scheduling

    async fn on_tick(&mut self) {
        let now = Utc::now();
        let mut expired = Vec::new();
        let mut lost = Vec::new();
        for (id, a) in &self.active {
            if a.wf.state != WorkflowState::Running {
                continue;
            }
            for (idx, s) in a.wf.steps.iter().enumerate() {
                if s.state == StepState::Running
                    && let Some(deadline) = s.deadline
                    && deadline <= now
                {
                    let what = s
                        .waiting_for
                        .clone()
                        .unwrap_or_else(|| "it to finish".into());
                    expired.push((
                        *id,
                        idx,
                        format!("timed out after {} s waiting for {what}", s.timeout_secs),
                    ));
                }
            }
            if let Some(work) = &a.agent
                && let Some(seen) = self.seen.get(&a.wf.machine)
                && seen.elapsed() > self.config.agent_lost_after
                && let Some(idx) = a.wf.steps.iter().position(|s| s.name == work.step)
            {
                lost.push((*id, idx, seen.elapsed().as_secs()));
            }
        }
        for (id, idx, message) in expired {
            self.fail_attempt(id, idx, message, true).await;
        }
        for (id, idx, secs) in lost {
            if let Some(machine) = self.machine_of(id) {
                let wf = self.active[&id].wf.clone();
                self.emit(
                    &wf,
                    &machine,
                    EventKind::AgentLost,
                    format!(
                        "{}: the agent stopped answering ({secs} s without a heartbeat)",
                        machine.name
                    ),
                    json!({"workflow": id, "silent_secs": secs}),
                );
            }
            self.fail_attempt(
                id,
                idx,
                format!("the agent stopped answering ({secs} s without a heartbeat)"),
                true,
            )
            .await;
        }
        self.schedule(Pass::All).await;
    }

    /// Starts what may start: queued workflows that have a slot, then the
    /// ready steps of running workflows (all of them, or those changed since
    /// the last pass).
    async fn schedule(&mut self, pass: Pass) {
        self.admit_queued().await;
        let running: Vec<WorkflowId> = match pass {
            Pass::All => {
                self.changed.clear();
                self.active
                    .iter()
                    .filter(|(_, a)| a.wf.state == WorkflowState::Running)
                    .map(|(id, _)| *id)
                    .collect()
            }
            Pass::Changed => std::mem::take(&mut self.changed)
                .into_iter()
                .filter(|id| {
                    self.active
                        .get(id)
                        .is_some_and(|a| a.wf.state == WorkflowState::Running)
                })
                .collect(),
        };
        for id in running {
            self.advance(id).await;
        }
    }

    /// Starts the queued workflows that have a slot; the others note why not.
    async fn admit_queued(&mut self) {
        let mut queued: Vec<&Active> = self
            .active
            .values()
            .filter(|a| a.wf.state == WorkflowState::Queued)
            .collect();
        if queued.is_empty() {
            return;
        }
        let snapshot = self.fleet.snapshot();
        let empty = BTreeMap::new();
        let labels_of = |m: MachineId| {
            snapshot
                .machine_by_id(m)
                .map(|m| &m.labels)
                .unwrap_or(&empty)
        };
        queued.sort_by_key(|a| a.wf.created_at);
        let running: Vec<Slot> = self
            .active
            .values()
            .filter(|a| a.wf.state == WorkflowState::Running)
            .map(|a| Slot {
                id: a.wf.id,
                labels: labels_of(a.wf.machine),
                batch: a.wf.batch,
            })
            .collect();
        let queued: Vec<Slot> = queued
            .iter()
            .map(|a| Slot {
                id: a.wf.id,
                labels: labels_of(a.wf.machine),
                batch: a.wf.batch,
            })
            .collect();
        let decisions = admit(
            &running,
            &queued,
            self.config.max_running,
            &self.config.label_limits,
        );
        drop(snapshot);
        for (id, decision) in decisions {
            match decision {
                Admission::Start => self.begin(id).await,
                Admission::Wait(reason) => {
                    if let Some(a) = self.active.get_mut(&id) {
                        a.queue_reason = Some(reason);
                    }
                }
            }
        }
    }

    async fn begin(&mut self, id: WorkflowId) {
        let Some(machine) = self.machine_of(id) else {
            return;
        };
        let a = self.active.get_mut(&id).unwrap();
        a.wf.state = WorkflowState::Running;
        a.wf.started_at = Some(Utc::now());
        a.queue_reason = None;
        let wf = a.wf.clone();
        self.save(id).await;
        self.emit(
            &wf,
            &machine,
            EventKind::WorkflowStarted,
            format!("{}: workflow {} ({}) started", machine.name, wf.id, wf.name),
            json!({"workflow": wf.id, "name": wf.name}),
        );
    }

    /// Moves a running workflow on: due retries, ready steps, completion.
    async fn advance(&mut self, id: WorkflowId) {
        if !self.may_advance(id) {
            return;
        }
        let Some(machine) = self.machine_of(id) else {
            self.finish(id, Finish::Failed("its machine was deleted".into()))
                .await;
            return;
        };
        let now = Utc::now();
        let a = self.active.get_mut(&id).unwrap();
        for s in &mut a.wf.steps {
            if s.state == StepState::Backoff && s.retry_at.is_none_or(|t| t <= now) {
                s.state = StepState::Pending;
                s.retry_at = None;
            }
        }
        if a.wf.steps.iter().any(|s| s.state == StepState::Failed) {
            let failed =
                a.wf.steps
                    .iter()
                    .find(|s| s.state == StepState::Failed)
                    .unwrap();
            let message = format!(
                "step {} failed: {}",
                failed.name,
                failed.error.clone().unwrap_or_default()
            );
            self.finish(id, Finish::Failed(message)).await;
            return;
        }
        if a.wf.all_done() {
            self.finish(id, Finish::Succeeded).await;
            return;
        }
        if let Some(m) = &machine.maintenance {
            // Nothing new starts; running attempts finish.
            let note = format!(
                "the machine to leave maintenance ({}, by {})",
                m.reason, m.by
            );
            let a = self.active.get_mut(&id).unwrap();
            let mut changed = false;
            for idx in a.wf.ready_steps() {
                let s = &mut a.wf.steps[idx];
                if s.waiting_for.as_deref() != Some(note.as_str()) {
                    s.waiting_for = Some(note.clone());
                    changed = true;
                }
            }
            if changed {
                self.save(id).await;
            }
            return;
        }
        for idx in self.active[&id].wf.ready_steps() {
            // A step started earlier in this loop may have ended the workflow.
            if !self.active.contains_key(&id) {
                return;
            }
            self.start_attempt(id, idx, &machine).await;
        }
    }

    /// Whether [`Actor::advance`] has anything to do for the workflow: a
    /// retry due, a failed step, every step done, a step ready, or its
    /// machine gone. Cheap (no clone of the machine), because `schedule`
    /// asks it for every running workflow.
    fn may_advance(&self, id: WorkflowId) -> bool {
        let Some(a) = self.active.get(&id) else {
            return false;
        };
        let now = Utc::now();
        a.wf.steps.iter().any(|s| {
            s.state == StepState::Failed
                || (s.state == StepState::Backoff && s.retry_at.is_none_or(|t| t <= now))
        }) || a.wf.all_done()
            || !a.wf.ready_steps().is_empty()
            || self.fleet.snapshot().machine_by_id(a.wf.machine).is_none()
    }

    fn route(&self, kind: StepKind, machine: &Machine) -> Route {
        match kind.runs() {
            Runs::Server => Route::Server,
            Runs::Agent => Route::Agent,
            Runs::BmcOrAgent => {
                if machine.bmc.is_some() && self.power.is_some() {
                    Route::Server
                } else {
                    Route::Agent
                }
            }
        }
    }

    fn agent_alive(&self, machine: MachineId) -> bool {
        self.fleet.agent_session(machine).is_some()
            && self
                .seen
                .get(&machine)
                .is_some_and(|t| t.elapsed() < self.config.agent_lost_after)
    }

    async fn start_attempt(&mut self, id: WorkflowId, idx: usize, machine: &Machine) {
        let (kind, params) = {
            let s = &self.active[&id].wf.steps[idx];
            let Some(kind) = StepKind::parse(&s.uses) else {
                let message = format!("unknown step {:?} (the step library changed?)", s.uses);
                self.fail_step_now(id, idx, message).await;
                return;
            };
            match kind.parse_with(&s.with) {
                Ok(p) => (kind, p),
                Err(e) => {
                    self.fail_step_now(id, idx, format!("with: {e}")).await;
                    return;
                }
            }
        };
        let route = self.route(kind, machine);
        if route == Route::Agent && self.active[&id].agent.is_some() {
            // One agent step at a time; this one waits its turn.
            return;
        }
        let attempt = uuid::Uuid::new_v4();
        let now = Utc::now();
        {
            let a = self.active.get_mut(&id).unwrap();
            let s = &mut a.wf.steps[idx];
            s.attempts += 1;
            s.attempt = Some(attempt);
            s.started_at.get_or_insert(now);
            s.attempt_started_at = Some(now);
            s.deadline = Some(now + chrono::Duration::seconds(s.timeout_secs as i64));
            s.state = StepState::Running;
            s.error = None;
            s.retry_at = None;
            s.finished_at = None;
        }
        let (wf_snapshot, step_name, attempts, max) = {
            let a = &self.active[&id];
            let s = &a.wf.steps[idx];
            (
                a.wf.clone(),
                s.name.clone(),
                s.attempts,
                s.retry.max_attempts,
            )
        };
        self.emit(
            &wf_snapshot,
            machine,
            EventKind::StepStarted,
            format!(
                "{}: step {step_name} ({kind}) started, attempt {attempts} of {max}",
                machine.name
            ),
            json!({"workflow": id, "step": step_name, "uses": kind.as_str(), "attempt": attempts, "attempt_id": attempt}),
        );
        match route {
            Route::Server => {
                let waiting = match (kind, machine.bmc.is_some()) {
                    (StepKind::BootAgent, true) => "the BMC to network-boot the machine".to_string(),
                    (StepKind::BootAgent, false) => "the boot intent to be set".to_string(),
                    (StepKind::PowerOn | StepKind::PowerOff | StepKind::Reboot | StepKind::SetBootDevice | StepKind::VerifyBmc, _) => {
                        "the BMC".to_string()
                    }
                    (StepKind::WaitBooted, _) => "the installed system to come up (first-boot callback or its address answering)".to_string(),
                    (StepKind::Wait, _) => "the wait to end".to_string(),
                    _ => format!("{kind}"),
                };
                self.active.get_mut(&id).unwrap().wf.steps[idx].waiting_for = Some(waiting);
                // The first-boot callback may have come before this step.
                if kind == StepKind::WaitBooted
                    && let Some(output) = self.active.get_mut(&id).unwrap().booted_early.take()
                {
                    self.succeed_step(id, idx, output).await;
                    return;
                }
                self.save(id).await;
                self.spawn_job(id, idx, kind, params, attempt, machine.clone());
            }
            Route::Agent => match self.agent_command(id, idx, kind, &params, machine, attempt) {
                Ok(Some(command)) => {
                    let a = self.active.get_mut(&id).unwrap();
                    a.wf.steps[idx].waiting_for = Some("the agent to take the step".into());
                    a.agent = Some(AgentWork {
                        step: step_name,
                        command,
                        taken: None,
                    });
                    self.save(id).await;
                }
                Ok(None) => {}
                Err(message) => self.fail_attempt(id, idx, message, false).await,
            },
        }
    }

    /// The agent command of an attempt; `Ok(None)` when the step was skipped.
    fn agent_command(
        &mut self,
        id: WorkflowId,
        idx: usize,
        kind: StepKind,
        params: &StepParams,
        machine: &Machine,
        attempt: uuid::Uuid,
    ) -> Result<Option<Command>, String> {
        let a = &self.active[&id];
        let step = &a.wf.steps[idx];
        let action = match kind {
            StepKind::Reboot | StepKind::PowerOff => {
                if self.fleet.agent_session(machine.id).is_none() {
                    if kind == StepKind::PowerOff {
                        let reason =
                            "no BMC and no agent: the machine is left as it is".to_string();
                        self.skip_now(id, idx, reason);
                        return Ok(None);
                    }
                    return Err(
                        "the machine has no BMC and no agent to reboot it: reboot it by hand"
                            .into(),
                    );
                }
                if kind == StepKind::Reboot {
                    Action::Reboot
                } else {
                    Action::PowerOff
                }
            }
            _ => {
                let booted_url = (a.wf.lifecycle == Lifecycle::Deploy)
                    .then(|| crate::booted::url(&self.key, &self.config.base_url, a.wf.id));
                let cx = PlanContext {
                    workflow: &a.wf,
                    request: &a.request,
                    facts: machine.facts.as_ref(),
                    base_url: &self.config.base_url,
                    booted_url: booted_url.as_deref(),
                };
                match agent_action(kind, params, &cx)? {
                    Planned::Run(action) => action,
                    Planned::Skip(reason) => {
                        self.skip_now(id, idx, reason);
                        return Ok(None);
                    }
                }
            }
        };
        Ok(Some(Command {
            attempt,
            step: step.name.clone(),
            timeout_secs: step.timeout_secs,
            action,
        }))
    }

    fn spawn_job(
        &mut self,
        id: WorkflowId,
        idx: usize,
        kind: StepKind,
        params: StepParams,
        attempt: uuid::Uuid,
        machine: Machine,
    ) {
        // Its last write was refused: another server runs it.
        if self.fenced(id) {
            return;
        }
        let a = self.active.get_mut(&id).unwrap();
        let step = a.wf.steps[idx].name.clone();
        let job = Job {
            workflow: id,
            step: step.clone(),
            attempt,
            kind,
            params,
            machine,
            request: a.request.clone(),
            fleet: self.fleet.clone(),
            power: self.power.clone(),
            probe_interval: self.config.probe_interval,
        };
        let handle = server_steps::spawn(job, self.tx.clone());
        if let Some(old) = a.tasks.insert(step, handle) {
            old.abort();
        }
    }

    async fn server_step_done(&mut self, done: Done) {
        let Some(idx) = self.current_step(done.workflow, &done.step, done.attempt) else {
            return;
        };
        let id = done.workflow;
        self.active.get_mut(&id).unwrap().tasks.remove(&done.step);
        match done.outcome {
            Ok(Outcome::Finished(output)) => self.succeed_step(id, idx, output).await,
            Ok(Outcome::Skipped(reason)) => {
                self.skip_now(id, idx, reason);
                self.save(id).await;
            }
            Ok(Outcome::AwaitHello(output)) => {
                let machine = self.active[&id].wf.machine;
                let started = self.active[&id].wf.steps[idx].attempt_started_at;
                let bmc = output["bmc"] == true;
                let a = self.active.get_mut(&id).unwrap();
                let s = &mut a.wf.steps[idx];
                s.output = output.clone();
                s.waiting_for = Some(if bmc {
                    "the agent's hello (the machine is network-booting the agent's RAM-disk)".into()
                } else {
                    "the agent's hello: the machine has no BMC, so power it on (network boot first) by hand".into()
                });
                a.awaiting.insert(done.step.clone(), Await::Hello);
                // It may have said hello already.
                if let (Some(hello), Some(started)) = (self.hello_at.get(&machine), started)
                    && *hello >= started
                {
                    self.active
                        .get_mut(&id)
                        .unwrap()
                        .awaiting
                        .remove(&done.step);
                    self.succeed_step(id, idx, json!({"phase": "hello", "seen_at": hello}))
                        .await;
                } else {
                    self.save(id).await;
                }
            }
            Ok(Outcome::AwaitCallback) => {
                let a = self.active.get_mut(&id).unwrap();
                a.wf.steps[idx].waiting_for = Some(
                    "the installed system's first-boot callback (no static address to probe)"
                        .into(),
                );
                a.awaiting.insert(done.step.clone(), Await::Callback);
                self.save(id).await;
            }
            Err(Failure { message, transient }) => {
                self.fail_attempt(id, idx, message, transient).await
            }
        }
    }

    /// The index of `step` if `attempt` is its current, running attempt.
    fn current_step(&self, id: WorkflowId, step: &str, attempt: uuid::Uuid) -> Option<usize> {
        let a = self.active.get(&id)?;
        let idx = a.wf.steps.iter().position(|s| s.name == step)?;
        let s = &a.wf.steps[idx];
        (s.state == StepState::Running && s.attempt == Some(attempt)).then_some(idx)
    }

    // ------------------------------------------------------------------
    // Step outcomes

    async fn succeed_step(&mut self, id: WorkflowId, idx: usize, output: serde_json::Value) {
        let Some(machine) = self.machine_of(id) else {
            return;
        };
        let now = Utc::now();
        let (wf, name, secs) = {
            let a = self.active.get_mut(&id).unwrap();
            let s = &mut a.wf.steps[idx];
            s.state = StepState::Succeeded;
            s.finished_at = Some(now);
            s.deadline = None;
            s.waiting_for = None;
            s.error = None;
            s.output = output.clone();
            let secs = s
                .started_at
                .map(|t| (now - t).num_milliseconds() as f64 / 1000.0)
                .unwrap_or(0.0);
            let name = s.name.clone();
            a.progress.remove(&name);
            a.awaiting.remove(&name);
            if let Some(t) = a.tasks.remove(&name) {
                t.abort();
            }
            if a.agent.as_ref().is_some_and(|w| w.step == name) {
                a.agent = None;
            }
            (a.wf.clone(), name, secs)
        };
        if let Ok(StepOutput::Facts(facts)) = serde_json::from_value::<StepOutput>(output.clone())
            && let Err(e) = self.fleet.set_facts(machine.id, &facts).await
        {
            tracing::error!(machine = %machine.name, "storing facts: {e}");
        }
        self.save(id).await;
        self.emit(
            &wf,
            &machine,
            EventKind::StepSucceeded,
            format!("{}: step {name} succeeded in {secs:.1} s", machine.name),
            json!({"workflow": id, "step": name, "secs": secs, "attempts": wf.steps[idx].attempts, "output": summarize(&output)}),
        );
    }

    /// Marks a step skipped (the caller saves).
    fn skip_now(&mut self, id: WorkflowId, idx: usize, reason: String) {
        // The next step may be ready now.
        self.changed.insert(id);
        let machine = self.machine_of(id);
        let a = self.active.get_mut(&id).unwrap();
        let s = &mut a.wf.steps[idx];
        s.state = StepState::Skipped;
        s.finished_at = Some(Utc::now());
        s.deadline = None;
        s.waiting_for = None;
        s.output = json!({"skipped": reason});
        let name = s.name.clone();
        let wf = a.wf.clone();
        if let Some(machine) = machine {
            self.emit(
                &wf,
                &machine,
                EventKind::StepSkipped,
                format!("{}: step {name} skipped: {reason}", machine.name),
                json!({"workflow": id, "step": name, "reason": reason}),
            );
        }
    }

    /// A step that cannot run at all (bad definition): failed without retry.
    async fn fail_step_now(&mut self, id: WorkflowId, idx: usize, message: String) {
        let s = &mut self.active.get_mut(&id).unwrap().wf.steps[idx];
        s.attempts = s.attempts.max(s.retry.max_attempts);
        self.fail_attempt(id, idx, message, false).await;
    }

    async fn fail_attempt(&mut self, id: WorkflowId, idx: usize, message: String, transient: bool) {
        let Some(machine) = self.machine_of(id) else {
            return;
        };
        let now = Utc::now();
        let (wf, name, retry_at) = {
            let a = self.active.get_mut(&id).unwrap();
            let name = a.wf.steps[idx].name.clone();
            if let Some(t) = a.tasks.remove(&name) {
                t.abort();
            }
            a.awaiting.remove(&name);
            a.progress.remove(&name);
            let mut cancelled = None;
            if a.agent.as_ref().is_some_and(|w| w.step == name) {
                let work = a.agent.take().unwrap();
                cancelled = Some(work.command.attempt);
            }
            let s = &mut a.wf.steps[idx];
            s.error = Some(message.clone());
            s.deadline = None;
            s.waiting_for = None;
            let retry_at = if s.retry.retries(s.attempts, transient) {
                let at = now
                    + chrono::Duration::from_std(s.retry.backoff(s.attempts)).unwrap_or_default();
                s.state = StepState::Backoff;
                s.retry_at = Some(at);
                Some(at)
            } else {
                s.state = StepState::Failed;
                s.finished_at = Some(now);
                None
            };
            if let Some(attempt) = cancelled {
                self.cancel.entry(machine.id).or_default().push(attempt);
            }
            (a.wf.clone(), name, retry_at)
        };
        self.save(id).await;
        let s = &wf.steps[idx];
        let then = match retry_at {
            Some(at) => format!(
                "; attempt {} of {} at {}",
                s.attempts + 1,
                s.retry.max_attempts,
                at.format("%H:%M:%S")
            ),
            None => " and will not be retried".to_string(),
        };
        self.emit(
            &wf,
            &machine,
            EventKind::StepFailed,
            format!(
                "{}: step {name} failed (attempt {}): {message}{then}",
                machine.name, s.attempts
            ),
            json!({
                "workflow": id, "step": name, "attempt": s.attempts, "error": message,
                "transient": transient, "retry_at": retry_at,
            }),
        );
    }

    async fn finish(&mut self, id: WorkflowId, how: Finish) {
        let Some(mut a) = self.active.remove(&id) else {
            return;
        };
        self.by_machine.remove(&a.wf.machine);
        for t in a.tasks.values() {
            t.abort();
        }
        if let Some(work) = a.agent.take() {
            self.cancel
                .entry(a.wf.machine)
                .or_default()
                .push(work.command.attempt);
        }
        let now = Utc::now();
        let (state, kind, error) = match &how {
            Finish::Succeeded => (WorkflowState::Succeeded, EventKind::WorkflowSucceeded, None),
            Finish::Failed(e) => (
                WorkflowState::Failed,
                EventKind::WorkflowFailed,
                Some(e.clone()),
            ),
            Finish::Aborted(e) => (
                WorkflowState::Aborted,
                EventKind::WorkflowAborted,
                Some(e.clone()),
            ),
        };
        a.wf.state = state;
        a.wf.finished_at = Some(now);
        a.wf.updated_at = now;
        a.wf.error = error.clone();
        // Steps still running or waiting to retry end with the workflow (a
        // failed workflow's parallel branch too: its task was aborted above),
        // so no record of an ended workflow shows a step still running.
        for s in &mut a.wf.steps {
            if matches!(s.state, StepState::Running | StepState::Backoff)
                && state != WorkflowState::Succeeded
            {
                s.state = StepState::Failed;
                s.error = match (&how, &error) {
                    (Finish::Failed(e), _) => Some(format!("stopped: {e}")),
                    (_, e) => e.clone(),
                };
                s.finished_at = Some(now);
                s.deadline = None;
                s.waiting_for = None;
            }
        }
        let machine = self.fleet.snapshot().machine_by_id(a.wf.machine).cloned();
        let Some(machine) = machine else {
            // The machine is gone, and its workflows with it (cascade).
            return;
        };
        let ok = state == WorkflowState::Succeeded;
        let return_to = if a.wf.lifecycle == Lifecycle::Unrescue {
            self.state_before_rescue(machine.id).await
        } else {
            None
        };
        let to = a.wf.lifecycle.end(a.wf.started_from, ok, return_to);
        let booted_agent =
            a.wf.steps
                .iter()
                .any(|s| s.uses == StepKind::BootAgent.as_str() && s.state == StepState::Succeeded);
        let keeps_agent = a.wf.lifecycle == Lifecycle::Rescue && ok;
        // A failed workflow keeps the agent (and its token) for a retry.
        let intent = (booted_agent
            && !keeps_agent
            && state != WorkflowState::Failed
            && !matches!(machine.intent, BootIntent::LocalDisk))
        .then_some(BootIntent::LocalDisk);
        let reason = match &how {
            Finish::Succeeded => format!("workflow {} ({}) succeeded", a.wf.id, a.wf.name),
            Finish::Failed(e) | Finish::Aborted(e) => {
                format!("workflow {} ({}): {e}", a.wf.id, a.wf.name)
            }
        };
        let change = LifecycleChange {
            machine: machine.id,
            expect_state: None,
            state: to,
            state_reason: error.clone(),
            intent,
            transition: transition(&machine, to, &engine(), reason, Some(a.wf.id)),
            workflow: Some(a.wf.clone()),
        };
        if let Err(e) = self.fleet.apply_lifecycle(change).await {
            tracing::error!(workflow = %a.wf.id, "storing the end of the workflow: {e}");
        }
        if !keeps_agent
            && state != WorkflowState::Failed
            && let Err(e) = self.fleet.revoke_agent_token(machine.id).await
        {
            tracing::warn!(machine = %machine.name, "revoking the agent token: {e}");
        }
        let secs =
            a.wf.started_at
                .map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
        let steps: Vec<serde_json::Value> =
            a.wf.steps
                .iter()
                .map(|s| {
                    json!({
                        "step": s.name, "state": s.state.as_str(), "attempts": s.attempts,
                        "secs": match (s.started_at, s.finished_at) {
                            (Some(a), Some(b)) => Some((b - a).num_milliseconds() as f64 / 1000.0),
                            _ => None,
                        },
                    })
                })
                .collect();
        let message = match &how {
            Finish::Succeeded => format!(
                "{}: workflow {} ({}) succeeded in {:.1} s; the machine is {to}",
                machine.name,
                a.wf.id,
                a.wf.name,
                secs.unwrap_or(0.0)
            ),
            Finish::Failed(e) | Finish::Aborted(e) => format!(
                "{}: workflow {} ({}) {}: {e}; the machine is {to}",
                machine.name,
                a.wf.id,
                a.wf.name,
                state.as_str()
            ),
        };
        self.emit(
            &a.wf,
            &machine,
            kind,
            message,
            json!({"workflow": a.wf.id, "name": a.wf.name, "secs": secs, "state": to, "error": error, "steps": steps}),
        );
    }

    /// The state a machine was in before its last rescue.
    async fn state_before_rescue(&self, machine: MachineId) -> Option<ProvisionState> {
        let transitions = self.fleet.transitions(machine, 200).await.ok()?;
        transitions
            .iter()
            .rev()
            .find(|t| t.to == ProvisionState::Rescuing)
            .map(|t| t.from)
    }

    // ------------------------------------------------------------------
    // Agents

    async fn hello(
        &mut self,
        session: AgentSession,
        hello: Hello,
    ) -> Result<HelloReply, EngineError> {
        if hello.protocol != PROTOCOL_VERSION {
            return Err(EngineError::Invalid(format!(
                "agent protocol {} is not this server's {PROTOCOL_VERSION}: rebuild the RAM-disk (rackboot ramdisk build)",
                hello.protocol
            )));
        }
        let machine_id = session.machine;
        let machine = self
            .fleet
            .snapshot()
            .machine_by_id(machine_id)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("machine {machine_id} is gone")))?;
        self.fleet
            .agent_hello(
                &session,
                hello.instance,
                &hello.boot_id,
                &hello.agent_version,
            )
            .await?;
        let now = Utc::now();
        self.seen.insert(machine_id, Instant::now());
        self.hello_at.insert(machine_id, now);
        if let Some(&id) = self.by_machine.get(&machine_id) {
            // A step the agent had taken is lost when a new agent process says hello.
            let lost = self.active[&id].agent.as_ref().and_then(|w| {
                w.taken
                    .filter(|(instance, _)| *instance != hello.instance)
                    .map(|(instance, _)| (w.step.clone(), instance))
            });
            if let Some((step, old)) = lost
                && let Some(idx) = self.active[&id]
                    .wf
                    .steps
                    .iter()
                    .position(|s| s.name == step)
            {
                self.fail_attempt(
                    id,
                    idx,
                    format!(
                        "the agent restarted (process {old} replaced by {}) while running {step}",
                        hello.instance
                    ),
                    true,
                )
                .await;
            }
            let waiting: Vec<String> = self.active[&id]
                .awaiting
                .iter()
                .filter(|(_, w)| **w == Await::Hello)
                .map(|(s, _)| s.clone())
                .collect();
            for step in waiting {
                if let Some(idx) = self.active[&id]
                    .wf
                    .steps
                    .iter()
                    .position(|s| s.name == step)
                {
                    let output = json!({
                        "phase": "hello", "instance": hello.instance, "boot_id": hello.boot_id,
                        "agent_version": hello.agent_version, "seen_at": now,
                    });
                    self.succeed_step(id, idx, output).await;
                }
            }
        }
        Ok(HelloReply {
            machine_id,
            machine_name: machine.name,
            heartbeat_secs: self.config.heartbeat_secs,
        })
    }

    async fn heartbeat(&mut self, session: AgentSession, hb: Heartbeat) -> HeartbeatReply {
        let machine = session.machine;
        self.seen.insert(machine, Instant::now());
        let mut reply = HeartbeatReply {
            command: None,
            cancel: self.cancel.remove(&machine).unwrap_or_default(),
        };
        let heartbeat =
            std::time::Duration::from_secs(u64::from(self.config.heartbeat_secs.max(1)));
        let id = self.by_machine.get(&machine).copied();
        let work = id
            .and_then(|id| self.active.get_mut(&id))
            .and_then(|a| a.agent.as_mut());
        match (work, &hb.running) {
            (Some(work), Some(running)) if running.attempt == work.command.attempt => {
                work.taken = Some((hb.instance, Instant::now()));
                if let Some(p) = running.progress.clone() {
                    let _ = self.progress(session, running.attempt, p);
                }
            }
            (Some(work), None) => {
                // Not taken yet, or taken by a process that then lost it
                // without a new hello, or a reply that never arrived.
                let resend = match work.taken {
                    None => true,
                    Some((instance, at)) => instance != hb.instance || at.elapsed() > heartbeat * 3,
                };
                if resend {
                    work.taken = Some((hb.instance, Instant::now()));
                    reply.command = Some(work.command.clone());
                    let step = work.step.clone();
                    if let Some(id) = id
                        && let Some(a) = self.active.get_mut(&id)
                        && let Some(s) = a.wf.steps.iter_mut().find(|s| s.name == step)
                    {
                        s.waiting_for = Some(format!("the agent to finish {step}"));
                    }
                }
            }
            (work, Some(running)) => {
                // The agent runs something that is not (or no longer) its work.
                if work.is_none_or(|w| w.command.attempt != running.attempt)
                    && !reply.cancel.contains(&running.attempt)
                {
                    reply.cancel.push(running.attempt);
                }
            }
            (None, None) => {}
        }
        reply
    }

    fn progress(
        &mut self,
        session: AgentSession,
        attempt: uuid::Uuid,
        p: Progress,
    ) -> Result<(), AgentReject> {
        let machine = session.machine;
        self.seen.insert(machine, Instant::now());
        let id = *self
            .by_machine
            .get(&machine)
            .ok_or(AgentReject::NotCurrent(attempt))?;
        let snapshot_machine = self.fleet.snapshot().machine_by_id(machine).cloned();
        let a = self
            .active
            .get_mut(&id)
            .ok_or(AgentReject::NotCurrent(attempt))?;
        let step = match &a.agent {
            Some(w) if w.command.attempt == attempt => w.step.clone(),
            _ => return Err(AgentReject::NotCurrent(attempt)),
        };
        let now = Utc::now();
        let rate = next_rate(a.progress.get(&step), p.done, now);
        let live = LiveProgress {
            done: p.done,
            total: p.total,
            message: p.message.clone(),
            rate,
            at: now,
        };
        a.progress.insert(step.clone(), live);
        let due = a
            .progress_event_at
            .get(&step)
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(5));
        if due && let Some(machine) = snapshot_machine {
            a.progress_event_at.insert(step.clone(), Instant::now());
            let wf = a.wf.clone();
            let pct = p
                .total
                .filter(|t| *t > 0)
                .map(|t| p.done as f64 * 100.0 / t as f64);
            self.emit(
                &wf,
                &machine,
                EventKind::StepProgress,
                format!(
                    "{}: {step} {}{}",
                    machine.name,
                    pct.map_or(format!("{} done", p.done), |x| format!("{x:.0}%")),
                    rate.map_or(String::new(), |r| format!(" at {:.1} MiB/s", r / 1048576.0))
                ),
                json!({"workflow": id, "step": step, "done": p.done, "total": p.total, "rate": rate, "message": p.message}),
            );
        }
        Ok(())
    }

    async fn report(
        &mut self,
        session: AgentSession,
        attempt: uuid::Uuid,
        report: StepReport,
    ) -> Result<(), AgentReject> {
        let machine = session.machine;
        self.seen.insert(machine, Instant::now());
        let id = *self
            .by_machine
            .get(&machine)
            .ok_or(AgentReject::NotCurrent(attempt))?;
        let a = self
            .active
            .get_mut(&id)
            .ok_or(AgentReject::NotCurrent(attempt))?;
        let step = match &a.agent {
            Some(w) if w.command.attempt == attempt => w.step.clone(),
            _ => return Err(AgentReject::NotCurrent(attempt)),
        };
        a.agent = None;
        let idx =
            a.wf.steps
                .iter()
                .position(|s| s.name == step)
                .ok_or(AgentReject::NotCurrent(attempt))?;
        match report {
            StepReport::Succeeded { output } => {
                let output = serde_json::to_value(&output).unwrap_or_default();
                self.succeed_step(id, idx, output).await;
            }
            StepReport::Failed {
                message,
                transient,
                code,
            } => {
                let message = match code {
                    Some(c) => format!("{message} [{c}]"),
                    None => message,
                };
                self.fail_attempt(id, idx, message, transient).await;
            }
        }
        Ok(())
    }

    async fn booted(
        &mut self,
        id: WorkflowId,
        token: &str,
        peer: IpAddr,
    ) -> Result<bool, EngineError> {
        if !crate::booted::verify(&self.key, id, token) {
            return Err(EngineError::NotFound(format!(
                "no deploy {id} with this token"
            )));
        }
        let Some(a) = self.active.get_mut(&id) else {
            return Ok(false);
        };
        let output = json!({"seen_by": "callback", "from": peer, "at": Utc::now()});
        let machine = self.fleet.snapshot().machine_by_id(a.wf.machine).cloned();
        let idx =
            a.wf.steps.iter().position(|s| {
                s.uses == StepKind::WaitBooted.as_str() && s.state == StepState::Running
            });
        let wf = a.wf.clone();
        match idx {
            Some(idx) => self.succeed_step(id, idx, output).await,
            None => self.active.get_mut(&id).unwrap().booted_early = Some(output),
        }
        if let Some(machine) = machine {
            self.emit(
                &wf,
                &machine,
                EventKind::MachineBooted,
                format!(
                    "{}: the installed system called back from {peer}",
                    machine.name
                ),
                json!({"workflow": id, "from": peer}),
            );
        }
        Ok(true)
    }

    // ------------------------------------------------------------------
    // Helpers

    fn machine_of(&self, id: WorkflowId) -> Option<Machine> {
        let m = self.active.get(&id)?.wf.machine;
        self.fleet.snapshot().machine_by_id(m).cloned()
    }

    async fn save(&mut self, id: WorkflowId) {
        let Some(a) = self.active.get_mut(&id) else {
            return;
        };
        a.wf.updated_at = Utc::now();
        self.changed.insert(id);
        if let Err(e) = self.fleet.put_workflow(&a.wf).await {
            if self.note_write_error(id, &e) {
                return;
            }
            // Kept in memory; the next change writes it again.
            tracing::error!(workflow = %id, "storing the workflow: {e}");
        }
    }

    fn emit(
        &self,
        wf: &Workflow,
        machine: &Machine,
        kind: EventKind,
        message: String,
        mut data: serde_json::Value,
    ) {
        if let Some(obj) = data.as_object_mut() {
            obj.entry("workflow").or_insert(json!(wf.id));
            obj.entry("workflow_name").or_insert(json!(wf.name));
        }
        self.fleet
            .emit(on_machine(NewEvent::new(kind, message).data(data), machine));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Server,
    Agent,
}

enum Finish {
    Succeeded,
    Failed(String),
    Aborted(String),
}

/// A step's output for an event: big arrays (facts) left out.
fn summarize(output: &serde_json::Value) -> serde_json::Value {
    match output.get("kind").and_then(|k| k.as_str()) {
        Some("facts") => json!({"kind": "facts"}),
        _ => output.clone(),
    }
}

/// The rate of a step's progress after a report of `done` at `now`, from the
/// previous report: smoothed, so a burst or a stall between two reports does
/// not swing it; a report too close to the previous one (or one that went
/// back, a restarted step) keeps the previous rate instead of clearing it.
fn next_rate(
    prev: Option<&crate::LiveProgress>,
    done: u64,
    now: chrono::DateTime<Utc>,
) -> Option<f64> {
    let prev = prev?;
    let secs = (now - prev.at).num_milliseconds() as f64 / 1000.0;
    let sample = (secs > 0.2 && done >= prev.done).then(|| (done - prev.done) as f64 / secs);
    match (sample, prev.rate) {
        (Some(r), Some(old)) => Some(0.7 * r + 0.3 * old),
        (Some(r), None) => Some(r),
        (None, old) => old,
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[test]
    fn progress_rate_is_smoothed_and_survives_close_reports() {
        let t0: chrono::DateTime<Utc> = "2026-12-07T10:00:00Z".parse().unwrap();
        let ms = |n: i64| t0 + chrono::Duration::milliseconds(n);
        let prev = |done: u64, at, rate: Option<f64>| crate::LiveProgress {
            done,
            total: None,
            message: String::new(),
            rate,
            at,
        };
        // (previous report, done now, now, expected rate)
        let cases = [
            // The first report has no rate.
            (None, 100, ms(0), None),
            // 1,000 units in 1 s.
            (Some(prev(0, ms(0), None)), 1000, ms(1000), Some(1000.0)),
            // Smoothed with the previous rate: 0.7 * 2000 + 0.3 * 1000.
            (
                Some(prev(0, ms(0), Some(1000.0))),
                2000,
                ms(1000),
                Some(1700.0),
            ),
            // A report 100 ms after the previous one keeps its rate.
            (
                Some(prev(500, ms(0), Some(1000.0))),
                600,
                ms(100),
                Some(1000.0),
            ),
            // Going back (the step restarted) keeps it too.
            (
                Some(prev(500, ms(0), Some(1000.0))),
                10,
                ms(1000),
                Some(1000.0),
            ),
        ];
        for (i, (before, done, now, want)) in cases.into_iter().enumerate() {
            assert_eq!(next_rate(before.as_ref(), done, now), want, "case {i}");
        }
    }
}
