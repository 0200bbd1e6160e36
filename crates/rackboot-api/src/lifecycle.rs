//! A machine's lifecycle through the API: the maintenance flag, the record of
//! every transition, and what the machine waits for now and until when.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use rackboot_core::{Maintenance, ProvisionState, StepState, Transition};
use rackboot_engine::WorkflowView;
use rackboot_store::WorkflowFilter;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::machines::find_machine;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceBody {
    /// Why: shown wherever the machine is.
    pub reason: String,
}

/// Puts a machine in maintenance: no workflow starts or advances on it and
/// its power is not polled until it is cleared.
#[utoipa::path(put, path = "/api/v1/machines/{ref}/maintenance", tag = "lifecycle", request_body = MaintenanceBody,
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 200, body = rackboot_core::Machine),
        (status = 400, description = "No reason given", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
    ))]
pub async fn set_maintenance(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(reference): ApiPath<String>,
    ApiJson(body): ApiJson<MaintenanceBody>,
) -> ApiResult<Json<rackboot_core::Machine>> {
    if body.reason.trim().is_empty() || body.reason.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("reason: say why, in one line".into()));
    }
    let machine = find_machine(&state.fleet, &reference).await?;
    Ok(Json(
        state
            .fleet
            .set_maintenance(&machine, Some(body.reason), &caller.actor())
            .await?,
    ))
}

/// Clears the maintenance flag.
#[utoipa::path(delete, path = "/api/v1/machines/{ref}/maintenance", tag = "lifecycle",
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 200, body = rackboot_core::Machine),
        (status = 404, description = "No such machine", body = ErrorBody),
    ))]
pub async fn clear_maintenance(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(reference): ApiPath<String>,
) -> ApiResult<Json<rackboot_core::Machine>> {
    let machine = find_machine(&state.fleet, &reference).await?;
    Ok(Json(
        state
            .fleet
            .set_maintenance(&machine, None, &caller.actor())
            .await?,
    ))
}

/// Every lifecycle transition of a machine, oldest first: from, to, who, why.
#[utoipa::path(get, path = "/api/v1/machines/{ref}/transitions", tag = "lifecycle",
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 200, body = Vec<Transition>),
        (status = 404, description = "No such machine", body = ErrorBody),
    ))]
pub async fn transitions(
    State(state): State<ApiState>,
    ApiPath(reference): ApiPath<String>,
) -> ApiResult<Json<Vec<Transition>>> {
    let machine = find_machine(&state.fleet, &reference).await?;
    Ok(Json(state.fleet.transitions(machine.id, 1000).await?))
}

/// Where a machine stands and what it waits for.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MachineStatus {
    pub machine: String,
    pub state: ProvisionState,
    pub state_reason: Option<String>,
    pub state_changed_at: Option<DateTime<Utc>>,
    pub maintenance: Option<Maintenance>,
    /// Its active workflow, or the last one.
    pub workflow: Option<WorkflowView>,
    /// What it waits for now, in words (a step's wait, the queue, maintenance).
    pub waiting_for: Option<String>,
    /// Since when.
    pub since: Option<DateTime<Utc>>,
    /// Until when: the running step's deadline (then it fails or is retried),
    /// or the next retry.
    pub until: Option<DateTime<Utc>>,
}

/// A machine's lifecycle state and, when a workflow runs, which step, what it
/// waits for, since when and until when.
#[utoipa::path(get, path = "/api/v1/machines/{ref}/status", tag = "lifecycle",
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 200, body = MachineStatus),
        (status = 404, description = "No such machine", body = ErrorBody),
    ))]
pub async fn machine_status(
    State(state): State<ApiState>,
    ApiPath(reference): ApiPath<String>,
) -> ApiResult<Json<MachineStatus>> {
    let machine = find_machine(&state.fleet, &reference).await?;
    let last = state
        .fleet
        .list_workflows(&WorkflowFilter {
            machine: Some(machine.id),
            states: Vec::new(),
            limit: 1,
        })
        .await?
        .into_iter()
        .next();
    let view = match (last, &state.engine) {
        (Some(wf), Some(engine)) if wf.state.is_active() => match engine.view(wf.id).await {
            Some(v) => Some(v),
            None => Some(WorkflowView {
                workflow: wf,
                progress: Default::default(),
                queue: None,
            }),
        },
        (Some(wf), _) => Some(WorkflowView {
            workflow: wf,
            progress: Default::default(),
            queue: None,
        }),
        (None, _) => None,
    };
    let (mut waiting_for, mut since, mut until) = (None, None, None);
    if let Some(v) = view.as_ref().filter(|v| v.workflow.state.is_active()) {
        if let Some(q) = &v.queue {
            waiting_for = Some(format!(
                "place {} in the queue, waiting for {}",
                q.position, q.waiting_for
            ));
            since = Some(v.workflow.created_at);
        } else if let Some(s) = v
            .workflow
            .steps
            .iter()
            .find(|s| matches!(s.state, StepState::Running | StepState::Backoff))
        {
            match s.state {
                StepState::Running => {
                    waiting_for = Some(format!(
                        "step {}: {}",
                        s.name,
                        s.waiting_for.clone().unwrap_or_else(|| "running".into())
                    ));
                    since = s.attempt_started_at;
                    until = s.deadline;
                }
                _ => {
                    waiting_for = Some(format!(
                        "step {} to be tried again (attempt {} failed: {})",
                        s.name,
                        s.attempts,
                        s.error.clone().unwrap_or_default()
                    ));
                    since = s.finished_at.or(s.attempt_started_at);
                    until = s.retry_at;
                }
            }
        } else if let Some(s) = v
            .workflow
            .steps
            .iter()
            .find(|s| s.state == StepState::Pending && s.waiting_for.is_some())
        {
            waiting_for = Some(format!(
                "step {}: {}",
                s.name,
                s.waiting_for.clone().unwrap_or_default()
            ));
        }
    }
    if let Some(m) = &machine.maintenance
        && waiting_for.is_none()
    {
        waiting_for = Some(format!(
            "maintenance to be cleared ({}, by {})",
            m.reason, m.by
        ));
        since = Some(m.since);
    }
    Ok(Json(MachineStatus {
        machine: machine.name,
        state: machine.state,
        state_reason: machine.state_reason,
        state_changed_at: machine.state_changed_at,
        maintenance: machine.maintenance,
        workflow: view,
        waiting_for,
        since,
        until,
    }))
}
