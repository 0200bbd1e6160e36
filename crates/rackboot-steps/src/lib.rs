//! The step library and workflow definitions. Pure: no I/O, no clocks.
//!
//! - [`library`]: every step a workflow can use ([`StepKind`]), where it runs,
//!   its parameters (`with`), default timeout and retry policy;
//! - [`file`]: workflow definition files (TOML), checked when loaded, with the
//!   line of every problem;
//! - [`builtin`]: the inspect, clean, deploy, undeploy, rescue and unrescue
//!   workflows, written in the same format;
//! - [`request`]: what a deploy or a cleaning is asked to do;
//! - [`plan`]: the agent actions for a step, from the request, the machine's
//!   facts and earlier steps' outputs.

pub mod builtin;
pub mod file;
pub mod library;
pub mod plan;
pub mod request;

pub use file::{FileError, StepDef, WorkflowDef};
pub use library::{ErasePolicy, Runs, StepKind, StepParams};

use chrono::Utc;
use rackboot_core::{
    Batch, MachineId, ProvisionState, StepRun, StepState, Workflow, WorkflowState,
};

/// A new, queued workflow of `def` for `machine`.
pub fn instantiate(
    def: &WorkflowDef,
    machine: MachineId,
    started_from: ProvisionState,
    params: serde_json::Value,
    by: &str,
    batch: Option<Batch>,
) -> Workflow {
    let now = Utc::now();
    Workflow {
        id: uuid::Uuid::new_v4(),
        machine,
        name: def.name.clone(),
        lifecycle: def.lifecycle,
        state: WorkflowState::Queued,
        started_from,
        params,
        steps: def
            .steps
            .iter()
            .map(|s| StepRun {
                name: s.name.clone(),
                uses: s.kind.as_str().to_string(),
                with: s.with.clone(),
                after: s.after.clone(),
                timeout_secs: s.timeout_secs,
                retry: s.retry,
                state: StepState::Pending,
                attempts: 0,
                attempt: None,
                started_at: None,
                attempt_started_at: None,
                finished_at: None,
                deadline: None,
                retry_at: None,
                waiting_for: None,
                error: None,
                output: serde_json::Value::Null,
            })
            .collect(),
        created_by: by.to_string(),
        created_at: now,
        started_at: None,
        finished_at: None,
        updated_at: now,
        error: None,
        batch,
    }
}
