//! `/api/v1/selectors`: which profile a machine boots when its intent is
//! `{"kind": "profile"}` without a name. Most specific selector wins.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rackboot_core::Selector;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};

/// Body of `PUT /api/v1/selectors/{name}`; the name comes from the path.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectorInput {
    /// Optional; when given it must equal the name in the path.
    #[serde(default)]
    pub name: Option<String>,
    /// Profile booted by machines this selector matches; must exist.
    pub profile: String,
    /// Keys `mac`, `uuid`, `arch`, `name`, `label.KEY`, `fact.KEY` (inspected facts: `fact.memory_gib: ">=60"`, `fact.disks: "2"`); all must match. Empty matches every machine.
    #[serde(rename = "match", default)]
    pub matches: BTreeMap<String, String>,
}

async fn find_selector(state: &ApiState, name: &str) -> ApiResult<Option<Selector>> {
    Ok(state.fleet.find_selector(name).await?)
}

/// All selectors, by name.
#[utoipa::path(get, path = "/api/v1/selectors", tag = "selectors",
    responses((status = 200, description = "Every selector, sorted by name", body = Vec<Selector>)))]
pub async fn list_selectors(State(state): State<ApiState>) -> ApiResult<Json<Vec<Selector>>> {
    let mut selectors = state.fleet.store().list_selectors().await?;
    selectors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(selectors))
}

/// One selector.
#[utoipa::path(get, path = "/api/v1/selectors/{name}", tag = "selectors",
    params(("name" = String, Path, description = "Selector name")),
    responses(
        (status = 200, body = Selector),
        (status = 404, description = "No such selector", body = ErrorBody),
    ))]
pub async fn get_selector(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Selector>> {
    find_selector(&state, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("selector {name:?} not found")))
}

/// Creates or replaces a selector.
#[utoipa::path(put, path = "/api/v1/selectors/{name}", tag = "selectors", request_body = SelectorInput,
    params(("name" = String, Path, description = "Selector name")),
    responses(
        (status = 200, description = "Replaced", body = Selector),
        (status = 201, description = "Created", body = Selector),
        (status = 400, description = "Malformed JSON, an invalid key or value, or an unknown profile", body = ErrorBody),
    ))]
pub async fn put_selector(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<SelectorInput>,
) -> ApiResult<(StatusCode, Json<Selector>)> {
    if let Some(body_name) = &input.name
        && body_name != &name
    {
        return Err(ApiError::BadRequest(format!(
            "name: body says {body_name:?} but the path says {name:?}"
        )));
    }
    let selector = Selector {
        name: name.clone(),
        profile: input.profile,
        matches: input.matches,
    };
    let created = state
        .fleet
        .put_selector(selector.clone(), &caller.actor())
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(selector)))
}

/// Deletes a selector.
#[utoipa::path(delete, path = "/api/v1/selectors/{name}", tag = "selectors",
    params(("name" = String, Path, description = "Selector name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such selector", body = ErrorBody),
    ))]
pub async fn delete_selector(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.fleet.delete_selector(&name, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
