//! `/api/v1/workflows`: run inspect, clean, deploy, undeploy, rescue and
//! operators' own workflows on machines; list them with live progress and
//! queue places; retry failed ones from their failed step; abort.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use rackboot_core::{Workflow, WorkflowId, WorkflowState};
use rackboot_engine::definitions::DefinitionInfo;
use rackboot_engine::{Engine, EngineError, StartRequest, Started, WorkflowView};
use rackboot_steps::request::WorkflowRequest;
use rackboot_store::WorkflowFilter;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::machines::find_machine;
use crate::paging::Page;

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Invalid(m) => ApiError::BadRequest(m),
            EngineError::NotFound(m) => ApiError::NotFound(m),
            EngineError::Conflict(m) => ApiError::Conflict(m),
            EngineError::Fleet(f) => f.into(),
            EngineError::Stopped => ApiError::Internal("the workflow engine has stopped".into()),
        }
    }
}

pub(crate) fn engine(state: &ApiState) -> ApiResult<&Engine> {
    state.engine.as_ref().ok_or_else(|| {
        ApiError::Disabled("the workflow engine is not running on this server".into())
    })
}

/// Body of `POST /api/v1/workflows`. Name the machines, or select them by
/// labels, or take `all`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowsBody {
    /// `deploy`, `inspect`, `clean`, `undeploy`, `rescue`, `unrescue`,
    /// `verify`, or an operator's own definition.
    pub workflow: String,
    /// Machines by id, name or MAC.
    #[serde(default)]
    pub machines: Vec<String>,
    /// Every machine whose labels include all of these.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Every machine.
    #[serde(default)]
    pub all: bool,
    /// What to do: image, erase policy, RAID, network...
    #[serde(default)]
    pub request: WorkflowRequest,
    /// Run at most this many of these machines at once.
    #[serde(default)]
    pub parallel: Option<u32>,
}

/// Starts a workflow on each machine. Machines that cannot start (in
/// maintenance, in the wrong state, already busy) say why in their entry;
/// a single machine's refusal is the response's error.
#[utoipa::path(post, path = "/api/v1/workflows", tag = "workflows", request_body = WorkflowsBody,
    responses(
        (status = 201, description = "One entry per machine: its workflow, or why not", body = Vec<Started>),
        (status = 400, description = "Unknown image, bad request values; the message names the field", body = ErrorBody),
        (status = 404, description = "No such machine or workflow definition", body = ErrorBody),
        (status = 409, description = "The machine cannot start this workflow now (state, maintenance, busy)", body = ErrorBody),
    ))]
pub async fn start_workflows(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<WorkflowsBody>,
) -> ApiResult<(StatusCode, Json<Vec<Started>>)> {
    let engine = engine(&state)?;
    let selectors = [!body.machines.is_empty(), !body.labels.is_empty(), body.all];
    if selectors.iter().filter(|s| **s).count() != 1 {
        return Err(ApiError::BadRequest(
            "machines: name machines, or give labels, or all (one of them)".into(),
        ));
    }
    let machines = if body.machines.is_empty() {
        let snapshot = state.fleet.snapshot();
        // By name, so a batch starts in a predictable order.
        let chosen: Vec<String> = snapshot
            .machines
            .by_name()
            .into_iter()
            .filter(|m| body.all || body.labels.iter().all(|(k, v)| m.labels.get(k) == Some(v)))
            .map(|m| m.name.clone())
            .collect();
        if chosen.is_empty() {
            return Err(ApiError::NotFound(
                "labels: no machine has these labels".into(),
            ));
        }
        chosen
    } else {
        body.machines
    };
    let single = machines.len() == 1;
    let started = engine
        .start_workflows(StartRequest {
            machines,
            workflow: body.workflow,
            request: body.request,
            parallel: body.parallel,
            by: caller.actor(),
        })
        .await?;
    if single && let Some(error) = &started[0].error {
        return Err(if error.starts_with("no machine") {
            ApiError::NotFound(error.clone())
        } else {
            ApiError::Conflict(error.clone())
        });
    }
    Ok((StatusCode::CREATED, Json(started)))
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkflowQuery {
    /// Only this machine's (id, name or MAC).
    pub machine: Option<String>,
    /// Only workflows in this state: queued, running, succeeded, failed, aborted.
    pub state: Option<String>,
    /// At most this many (1 to 10,000; default 100), newest first.
    pub limit: Option<u32>,
    /// Where to continue: the `X-Next-Cursor` header of the previous page.
    pub cursor: Option<String>,
}

/// A workflow page cursor: the last workflow's creation time (Unix
/// milliseconds) and id, as `MILLIS.UUID`.
fn workflow_cursor(wf: &WorkflowView) -> String {
    format!(
        "{}.{}",
        wf.workflow.created_at.timestamp_millis(),
        wf.workflow.id
    )
}

fn parse_workflow_cursor(c: &str) -> ApiResult<(chrono::DateTime<chrono::Utc>, uuid::Uuid)> {
    let bad = || ApiError::BadRequest(format!("cursor: {c:?} is not a workflow cursor"));
    let (ms, id) = c.split_once('.').ok_or_else(bad)?;
    let ms: i64 = ms.parse().map_err(|_| bad())?;
    let at = chrono::DateTime::from_timestamp_millis(ms).ok_or_else(bad)?;
    Ok((at, id.parse().map_err(|_| bad())?))
}

/// Workflows, newest first, a page at a time; active ones with their live
/// progress and queue place.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", params(WorkflowQuery),
    responses(
        (status = 200, description = "A page of workflows, newest first. When more follow, \
            `X-Next-Cursor` holds the cursor of the next page and `Link` its URL.",
            body = Vec<WorkflowView>,
            headers(
                ("X-Next-Cursor" = String, description = "Pass as `cursor` for the next page"),
                ("Link" = String, description = "The next page: `<URL>; rel=\"next\"`"),
            )),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    ))]
pub async fn list_workflows(
    State(state): State<ApiState>,
    uri: Uri,
    ApiQuery(query): ApiQuery<WorkflowQuery>,
) -> ApiResult<Page<WorkflowView>> {
    let machine = match &query.machine {
        Some(r) => Some(find_machine(&state.fleet, r).await?.id),
        None => None,
    };
    let states = match &query.state {
        Some(s) => vec![WorkflowState::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state: {s:?}; use queued, running, succeeded, failed or aborted"
            ))
        })?],
        None => Vec::new(),
    };
    let limit = crate::paging::page_size(query.limit, 100, crate::paging::MAX_PAGE)?;
    let before = query
        .cursor
        .as_deref()
        .map(parse_workflow_cursor)
        .transpose()?;
    let stored = state
        .fleet
        .store()
        .list_workflows_before(
            &WorkflowFilter {
                machine,
                states,
                limit,
            },
            before,
        )
        .await?;
    Ok(Page::new(
        views_of(&state, stored).await,
        limit,
        uri,
        workflow_cursor,
    ))
}

/// The engine's live views of the active ones (one engine round trip for
/// the page), the stored workflow for the others; in the given order.
async fn views_of(state: &ApiState, stored: Vec<Workflow>) -> Vec<WorkflowView> {
    let active: Vec<WorkflowId> = stored
        .iter()
        .filter(|wf| wf.state.is_active())
        .map(|wf| wf.id)
        .collect();
    let mut live: HashMap<WorkflowId, WorkflowView> = match &state.engine {
        Some(engine) => engine
            .views_of(active)
            .await
            .into_iter()
            .map(|v| (v.workflow.id, v))
            .collect(),
        None => HashMap::new(),
    };
    stored
        .into_iter()
        .map(|wf| live.remove(&wf.id).unwrap_or_else(|| stored_view(wf)))
        .collect()
}

/// A workflow without live progress or queue place.
fn stored_view(workflow: Workflow) -> WorkflowView {
    WorkflowView {
        workflow,
        progress: BTreeMap::new(),
        queue: None,
    }
}

fn parse_id(id: &str) -> ApiResult<uuid::Uuid> {
    id.parse()
        .map_err(|e| ApiError::BadRequest(format!("id: {e}")))
}

/// One workflow: its steps with attempts, durations, errors and what each waits for.
#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, body = WorkflowView),
        (status = 404, description = "No such workflow", body = ErrorBody),
    ))]
pub async fn get_workflow(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WorkflowView>> {
    let id = parse_id(&id)?;
    if let Some(engine) = &state.engine
        && let Some(view) = engine.view(id).await
    {
        return Ok(Json(view));
    }
    // Not active here (finished, or run by another server): as stored.
    let wf = state.fleet.get_workflow(id).await?;
    Ok(Json(stored_view(wf)))
}

/// Resumes a failed (or aborted) workflow from its failed step; steps that
/// succeeded are not run again (the agent is booted again if it is gone).
#[utoipa::path(post, path = "/api/v1/workflows/{id}/retry", tag = "workflows",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "Queued again", body = Workflow),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "Not failed, or the machine is busy or in the wrong state", body = ErrorBody),
    ))]
pub async fn retry_workflow(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Workflow>> {
    let id = parse_id(&id)?;
    Ok(Json(engine(&state)?.retry(id, caller.actor()).await?))
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbortBody {
    /// Why, recorded on the machine.
    #[serde(default)]
    pub reason: String,
}

/// Stops an active workflow: its agent step is cancelled and the machine
/// goes to the workflow's failed state with the reason.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/abort", tag = "workflows", request_body = AbortBody,
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "Aborted", body = Workflow),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "Not active", body = ErrorBody),
    ))]
pub async fn abort_workflow(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AbortBody>,
) -> ApiResult<Json<Workflow>> {
    let id = parse_id(&id)?;
    Ok(Json(
        engine(&state)?
            .abort(id, caller.actor(), body.reason)
            .await?,
    ))
}

/// Workflow definitions: the built-in ones and operators' own.
#[utoipa::path(get, path = "/api/v1/workflow-definitions", tag = "workflows",
    responses((status = 200, body = Vec<DefinitionInfo>)))]
pub async fn list_definitions(
    State(state): State<ApiState>,
) -> ApiResult<Json<Vec<DefinitionInfo>>> {
    Ok(Json(engine(&state)?.definitions().await.infos()))
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefinitionBody {
    /// The definition as TOML (see `rackboot workflow show-definition deploy`).
    pub source: String,
}

/// Adds or replaces an operator's workflow definition after checking it; a
/// refusal names the line and the reason.
#[utoipa::path(put, path = "/api/v1/workflow-definitions", tag = "workflows", request_body = DefinitionBody,
    responses(
        (status = 200, description = "Stored", body = DefinitionInfo),
        (status = 400, description = "Does not check; the message names the line", body = ErrorBody),
    ))]
pub async fn put_definition(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<DefinitionBody>,
) -> ApiResult<Json<DefinitionInfo>> {
    let engine = engine(&state)?;
    let def = engine.put_definition(body.source).await?;
    let info = engine
        .definitions()
        .await
        .infos()
        .into_iter()
        .find(|i| i.name == def.name)
        .ok_or_else(|| ApiError::Internal("definition stored but not listed".into()))?;
    Ok(Json(info))
}

/// Deletes an operator's workflow definition (built-ins cannot be deleted).
#[utoipa::path(delete, path = "/api/v1/workflow-definitions/{name}", tag = "workflows",
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such definition, or a built-in", body = ErrorBody),
        (status = 409, description = "An active workflow uses it", body = ErrorBody),
    ))]
pub async fn delete_definition(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    engine(&state)?.delete_definition(name).await?;
    Ok(StatusCode::NO_CONTENT)
}
