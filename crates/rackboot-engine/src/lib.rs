//! The workflow engine: runs every machine's inspection, cleaning, deploy,
//! rescue and operators' own workflows.
//!
//! One task (the actor in [`actor`]) owns every active workflow: requests
//! from the API, reports from agents and the results of server-side steps
//! reach it as messages, so a workflow is changed by one writer at a time
//! and each change is written to the store (through the fleet) before it is
//! acted on. A restarted server loads the active workflows and resumes them:
//! agent steps keep their attempt (the agent reports it when it comes back),
//! server steps are restarted (they are idempotent), waits continue.
//!
//! [`Engine`] is the cheap, cloneable handle adapters use.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rackboot_agent_proto::{Heartbeat, HeartbeatReply, Hello, HelloReply, Progress, StepReport};
use rackboot_core::{AgentSession, Batch, Workflow, WorkflowId};
use rackboot_fleet::{Actor, Fleet, FleetError};
use rackboot_power::PowerController;
use rackboot_seal::SecretKey;
use rackboot_steps::request::WorkflowRequest;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

mod actor;
pub mod booted;
pub mod definitions;
pub mod probe;
pub mod queue;
mod server_steps;

pub use definitions::Definitions;

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Workflows running at once (the rest wait in the queue).
    pub max_running: usize,
    /// Per label key, workflows running at once on machines that share a
    /// value of it (`rack = 10`: at most ten per rack).
    pub label_limits: BTreeMap<String, usize>,
    /// Told to agents: seconds between heartbeats.
    pub heartbeat_secs: u32,
    /// An agent step whose agent has not been heard from this long fails
    /// (transient: it is retried).
    pub agent_lost_after: Duration,
    /// How often deadlines, backoffs and the queue are looked at.
    pub tick: Duration,
    /// Boot HTTP as machines reach it (`http://10.77.0.1:8080`).
    pub base_url: String,
    /// The image catalog (deploys resolve their image here).
    pub images_dir: Option<PathBuf>,
    /// Operators' workflow definitions (`*.toml`).
    pub workflows_dir: Option<PathBuf>,
    /// Interval of the address probe of `wait_booted`.
    pub probe_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_running: 64,
            label_limits: BTreeMap::new(),
            heartbeat_secs: 5,
            // Longer than an agent's longest backoff (30 s) while it retries
            // a report to a restarting server.
            agent_lost_after: Duration::from_secs(90),
            tick: Duration::from_secs(1),
            base_url: "http://127.0.0.1:8080".into(),
            images_dir: None,
            workflows_dir: None,
            probe_interval: Duration::from_secs(3),
        }
    }
}

/// What the engine needs to drive BMCs.
#[derive(Clone)]
pub struct PowerDeps {
    pub controller: Arc<PowerController>,
    /// Opens the sealed BMC passwords; also mints first-boot tokens.
    pub key: Arc<SecretKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A value the caller gave is wrong; the message names it.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with the machine's state or its running workflow.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("the workflow engine has stopped")]
    Stopped,
}

/// Why an agent's report was refused (the agent endpoints map these to HTTP).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentReject {
    /// The attempt is no longer current (aborted, timed out, superseded): 409.
    #[error("attempt {0} is not current")]
    NotCurrent(uuid::Uuid),
    #[error("the workflow engine has stopped")]
    Stopped,
}

/// A request to run a workflow on machines.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// Machine references (id, name or MAC).
    pub machines: Vec<String>,
    /// Definition name (`deploy`, `inspect`, an operator's own).
    pub workflow: String,
    pub request: WorkflowRequest,
    /// At most this many of these machines run at once (a batch).
    pub parallel: Option<u32>,
    pub by: Actor,
}

/// One machine's outcome of a [`StartRequest`]: its workflow, or why not.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Started {
    pub machine: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Workflow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A workflow with what only the running engine knows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkflowView {
    #[serde(flatten)]
    pub workflow: Workflow,
    /// Live progress of running steps, by step name.
    pub progress: BTreeMap<String, LiveProgress>,
    /// For a queued workflow: its place and what it waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LiveProgress {
    pub done: u64,
    pub total: Option<u64>,
    pub message: String,
    /// Units per second over the last reports (bytes/s for writes).
    pub rate: Option<f64>,
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct QueueInfo {
    /// 1 = next.
    pub position: usize,
    pub waiting_for: String,
}

/// Messages to the actor.
pub(crate) enum Msg {
    Start(
        StartRequest,
        oneshot::Sender<Result<Vec<Started>, EngineError>>,
    ),
    Retry(
        WorkflowId,
        Actor,
        oneshot::Sender<Result<Workflow, EngineError>>,
    ),
    Abort(
        WorkflowId,
        Actor,
        String,
        oneshot::Sender<Result<Workflow, EngineError>>,
    ),
    /// The views of those of these workflows that are active, in one
    /// round trip (a page of 100 asked one by one waited behind the
    /// mailbox 100 times).
    ViewsOf(Vec<WorkflowId>, oneshot::Sender<Vec<WorkflowView>>),
    Views(oneshot::Sender<Vec<WorkflowView>>),
    Hello(
        AgentSession,
        Hello,
        oneshot::Sender<Result<HelloReply, EngineError>>,
    ),
    Heartbeat(AgentSession, Heartbeat, oneshot::Sender<HeartbeatReply>),
    Progress(
        AgentSession,
        uuid::Uuid,
        Progress,
        oneshot::Sender<Result<(), AgentReject>>,
    ),
    Report(
        AgentSession,
        uuid::Uuid,
        StepReport,
        oneshot::Sender<Result<(), AgentReject>>,
    ),
    Booted(
        WorkflowId,
        String,
        IpAddr,
        oneshot::Sender<Result<bool, EngineError>>,
    ),
    ServerStepDone(server_steps::Done),
    Definitions(oneshot::Sender<Definitions>),
    PutDefinition(
        String,
        oneshot::Sender<Result<rackboot_steps::WorkflowDef, EngineError>>,
    ),
    DeleteDefinition(String, oneshot::Sender<Result<(), EngineError>>),
}

/// The handle adapters use. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Msg>,
}

impl Engine {
    /// Loads active workflows and definitions and starts the actor; it stops
    /// with `shutdown`.
    pub async fn start(
        fleet: Arc<Fleet>,
        power: Option<PowerDeps>,
        key: Arc<SecretKey>,
        config: EngineConfig,
        shutdown: CancellationToken,
    ) -> Result<(Engine, tokio::task::JoinHandle<()>), EngineError> {
        let (tx, rx) = mpsc::channel(4096);
        let engine = Engine { tx: tx.clone() };
        let actor = actor::Actor::load(fleet, power, key, config, tx).await?;
        let task = tokio::spawn(actor.run(rx, shutdown));
        Ok((engine, task))
    }

    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(msg(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Requests a workflow on each of the machines (a batch when several).
    pub async fn start_workflows(&self, req: StartRequest) -> Result<Vec<Started>, EngineError> {
        self.ask(|tx| Msg::Start(req, tx))
            .await
            .ok_or(EngineError::Stopped)?
    }

    /// Resumes a failed workflow from its failed step.
    pub async fn retry(&self, id: WorkflowId, by: Actor) -> Result<Workflow, EngineError> {
        self.ask(|tx| Msg::Retry(id, by, tx))
            .await
            .ok_or(EngineError::Stopped)?
    }

    pub async fn abort(
        &self,
        id: WorkflowId,
        by: Actor,
        reason: String,
    ) -> Result<Workflow, EngineError> {
        self.ask(|tx| Msg::Abort(id, by, reason, tx))
            .await
            .ok_or(EngineError::Stopped)?
    }

    /// An active workflow with its live progress and queue place (None when
    /// not active: read it from the store).
    pub async fn view(&self, id: WorkflowId) -> Option<WorkflowView> {
        self.views_of(vec![id]).await.pop()
    }

    /// The live views of those of `ids` that are active (the others are
    /// left out: read them from the store).
    pub async fn views_of(&self, ids: Vec<WorkflowId>) -> Vec<WorkflowView> {
        if ids.is_empty() {
            return Vec::new();
        }
        self.ask(|tx| Msg::ViewsOf(ids, tx))
            .await
            .unwrap_or_default()
    }

    /// Every active workflow.
    pub async fn views(&self) -> Vec<WorkflowView> {
        self.ask(Msg::Views).await.unwrap_or_default()
    }

    pub async fn agent_hello(
        &self,
        session: AgentSession,
        hello: Hello,
    ) -> Result<HelloReply, EngineError> {
        self.ask(|tx| Msg::Hello(session, hello, tx))
            .await
            .ok_or(EngineError::Stopped)?
    }

    pub async fn agent_heartbeat(&self, session: AgentSession, hb: Heartbeat) -> HeartbeatReply {
        self.ask(|tx| Msg::Heartbeat(session, hb, tx))
            .await
            .unwrap_or_default()
    }

    pub async fn agent_progress(
        &self,
        session: AgentSession,
        attempt: uuid::Uuid,
        progress: Progress,
    ) -> Result<(), AgentReject> {
        self.ask(|tx| Msg::Progress(session, attempt, progress, tx))
            .await
            .unwrap_or(Err(AgentReject::Stopped))
    }

    pub async fn agent_report(
        &self,
        session: AgentSession,
        attempt: uuid::Uuid,
        report: StepReport,
    ) -> Result<(), AgentReject> {
        self.ask(|tx| Msg::Report(session, attempt, report, tx))
            .await
            .unwrap_or(Err(AgentReject::Stopped))
    }

    /// The installed system's first-boot callback; `Ok(false)` when it had
    /// already been seen.
    pub async fn booted(
        &self,
        workflow: WorkflowId,
        token: String,
        peer: IpAddr,
    ) -> Result<bool, EngineError> {
        self.ask(|tx| Msg::Booted(workflow, token, peer, tx))
            .await
            .ok_or(EngineError::Stopped)?
    }

    pub async fn definitions(&self) -> Definitions {
        self.ask(Msg::Definitions).await.unwrap_or_default()
    }

    /// Checks and stores an operator's workflow definition (TOML text).
    pub async fn put_definition(
        &self,
        text: String,
    ) -> Result<rackboot_steps::WorkflowDef, EngineError> {
        self.ask(|tx| Msg::PutDefinition(text, tx))
            .await
            .ok_or(EngineError::Stopped)?
    }

    pub async fn delete_definition(&self, name: String) -> Result<(), EngineError> {
        self.ask(|tx| Msg::DeleteDefinition(name, tx))
            .await
            .ok_or(EngineError::Stopped)?
    }
}

/// A batch for `n` machines asked to run at most `parallel` at once.
pub(crate) fn batch_for(n: usize, parallel: Option<u32>) -> Option<Batch> {
    match parallel {
        Some(p) if (p as usize) < n => Some(Batch {
            id: uuid::Uuid::new_v4(),
            limit: p.max(1),
        }),
        _ => None,
    }
}
