//! `/api/v1/selectors`: which profile a machine boots when its intent is
//! `{"kind": "profile"}` without a name. Most specific selector wins.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rackboot_core::{EventKind, NewEvent, Selector};
use rackboot_store::StoreError;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::ApiState;
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
    /// Keys `mac`, `uuid`, `arch`, `name`, `label.KEY`; all must match. Empty matches every machine.
    #[serde(rename = "match", default)]
    pub matches: BTreeMap<String, String>,
}

// There is no selector event kind: a selector decides which profile machines
// boot, so its changes are reported as profile changes naming the selector.
fn selector_changed(state: &ApiState, selector: &str, profile: Option<&str>, action: &str) {
    state.events.emit(
        NewEvent::new(EventKind::ProfileChanged, format!("selector {selector:?} {action} by api")).data(
            serde_json::json!({ "who": "api", "action": action, "selector": selector, "name": profile }),
        ),
    );
}

async fn find_selector(state: &ApiState, name: &str) -> ApiResult<Option<Selector>> {
    Ok(state
        .inventory
        .store()
        .list_selectors()
        .await?
        .into_iter()
        .find(|s| s.name == name))
}

/// All selectors, by name.
#[utoipa::path(get, path = "/api/v1/selectors", tag = "selectors",
    responses((status = 200, description = "Every selector, sorted by name", body = Vec<Selector>)))]
pub async fn list_selectors(State(state): State<ApiState>) -> ApiResult<Json<Vec<Selector>>> {
    let mut selectors = state.inventory.store().list_selectors().await?;
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
    selector
        .validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let store = state.inventory.store();
    match store.get_profile(&selector.profile).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            return Err(ApiError::BadRequest(format!(
                "profile: no profile named {:?}",
                selector.profile
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let existed = find_selector(&state, &name).await?.is_some();
    store.put_selector(&selector).await?;
    state.inventory.reload().await?;
    let (status, action) = if existed {
        (StatusCode::OK, "replaced")
    } else {
        (StatusCode::CREATED, "created")
    };
    selector_changed(&state, &name, Some(&selector.profile), action);
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
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let Some(selector) = find_selector(&state, &name).await? else {
        return Err(ApiError::NotFound(format!("selector {name:?} not found")));
    };
    state.inventory.store().delete_selector(&name).await?;
    state.inventory.reload().await?;
    selector_changed(&state, &name, Some(&selector.profile), "deleted");
    Ok(StatusCode::NO_CONTENT)
}
