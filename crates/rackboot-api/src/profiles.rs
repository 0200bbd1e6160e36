//! `/api/v1/profiles`: bootable things (kernel + initrds + cmdline, or an iPXE
//! script template). A profile is checked, templates included, before it is
//! stored, so a bad template fails here and not at a machine's boot.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use rackboot_core::{
    BootIntent, EventKind, LoaderKind, Machine, NewEvent, Profile, machine::validate_name,
};
use rackboot_store::StoreError;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::ApiState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};

/// Body of `PUT /api/v1/profiles/{name}`; the name comes from the path.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileInput {
    /// Optional; when given it must equal the name in the path.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Kernel: an absolute URL, or a path relative to the asset directory.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Initrds, same forms as `kernel`, loaded in order.
    #[serde(default)]
    pub initrds: Vec<String>,
    /// Kernel command line; may use `{{ machine.name }}`, `{{ mac }}`, `{{ server }}`.
    #[serde(default)]
    pub cmdline: String,
    /// A whole iPXE script template instead of kernel/initrds.
    #[serde(default)]
    pub ipxe_script: Option<String>,
    #[serde(default)]
    pub loader: LoaderKind,
}

/// True when `intent` boots or offers profile `name`.
pub(crate) fn intent_uses(intent: &BootIntent, name: &str) -> bool {
    match intent {
        BootIntent::Profile { name: Some(n) } => n == name,
        BootIntent::Menu(menu) => {
            menu.default.as_deref() == Some(name) || menu.entries.iter().any(|e| e.profile == name)
        }
        BootIntent::Discover
        | BootIntent::LocalDisk
        | BootIntent::Profile { name: None }
        | BootIntent::Install { .. } => false,
    }
}

fn profile_changed(state: &ApiState, name: &str, action: &str) {
    state.events.emit(
        NewEvent::new(
            EventKind::ProfileChanged,
            format!("profile {name:?} {action} by api"),
        )
        .data(serde_json::json!({ "who": "api", "action": action, "name": name })),
    );
}

/// All profiles, by name.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles",
    responses((status = 200, description = "Every profile, sorted by name", body = Vec<Profile>)))]
pub async fn list_profiles(State(state): State<ApiState>) -> ApiResult<Json<Vec<Profile>>> {
    let mut profiles = state.inventory.store().list_profiles().await?;
    profiles.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(profiles))
}

/// One profile.
#[utoipa::path(get, path = "/api/v1/profiles/{name}", tag = "profiles",
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 200, body = Profile),
        (status = 404, description = "No such profile", body = ErrorBody),
    ))]
pub async fn get_profile(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Profile>> {
    Ok(Json(state.inventory.store().get_profile(&name).await?))
}

/// Creates or replaces a profile.
#[utoipa::path(put, path = "/api/v1/profiles/{name}", tag = "profiles", request_body = ProfileInput,
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 200, description = "Replaced", body = Profile),
        (status = 201, description = "Created", body = Profile),
        (status = 400, description = "Malformed JSON, an invalid field or a template that does not compile", body = ErrorBody),
    ))]
pub async fn put_profile(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<ProfileInput>,
) -> ApiResult<(StatusCode, Json<Profile>)> {
    let store = state.inventory.store();
    validate_name("profile name", &name).map_err(|e| ApiError::BadRequest(format!("name: {e}")))?;
    if let Some(body_name) = &input.name
        && body_name != &name
    {
        return Err(ApiError::BadRequest(format!(
            "name: body says {body_name:?} but the path says {name:?}"
        )));
    }
    let existing = match store.get_profile(&name).await {
        Ok(p) => Some(p),
        Err(StoreError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let now = Utc::now();
    let profile = Profile {
        name: name.clone(),
        description: input.description,
        kernel: input.kernel,
        initrds: input.initrds,
        cmdline: input.cmdline,
        ipxe_script: input.ipxe_script,
        loader: input.loader,
        created_at: existing.as_ref().map_or(now, |p| p.created_at),
        updated_at: now,
    };
    profile.validate().map_err(ApiError::BadRequest)?;
    (state.validate_templates)(&profile).map_err(ApiError::BadRequest)?;
    store.put_profile(&profile).await?;
    // Answer with what the store kept (it may round timestamps).
    let profile = store.get_profile(&name).await?;
    state.inventory.reload().await?;
    let (status, action) = match existing {
        Some(_) => (StatusCode::OK, "replaced"),
        None => (StatusCode::CREATED, "created"),
    };
    profile_changed(&state, &name, action);
    Ok((status, Json(profile)))
}

/// Deletes a profile that no selector and no machine uses.
#[utoipa::path(delete, path = "/api/v1/profiles/{name}", tag = "profiles",
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such profile", body = ErrorBody),
        (status = 409, description = "Still used by selectors or machines (named in the message)", body = ErrorBody),
    ))]
pub async fn delete_profile(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let store = state.inventory.store();
    store.get_profile(&name).await?;
    let selectors: Vec<String> = store
        .list_selectors()
        .await?
        .into_iter()
        .filter(|s| s.profile == name)
        .map(|s| s.name)
        .collect();
    let machines: Vec<String> = store
        .list_machines()
        .await?
        .into_iter()
        .filter(|m: &Machine| intent_uses(&m.intent, &name))
        .map(|m| m.name)
        .collect();
    if !selectors.is_empty() || !machines.is_empty() {
        let mut users = Vec::new();
        if !selectors.is_empty() {
            users.push(format!("selectors {}", selectors.join(", ")));
        }
        if !machines.is_empty() {
            users.push(format!("machines {}", machines.join(", ")));
        }
        return Err(ApiError::Conflict(format!(
            "profile {name:?} is still used by {}",
            users.join(" and ")
        )));
    }
    store.delete_profile(&name).await?;
    state.inventory.reload().await?;
    profile_changed(&state, &name, "deleted");
    Ok(StatusCode::NO_CONTENT)
}
