//! `/api/v1/profiles`: bootable things (kernel + initrds + cmdline, or an iPXE
//! script template). A profile is checked, templates included, before it is
//! stored, so a bad template fails here and not at a machine's boot.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use rackboot_core::{LoaderKind, Profile, machine::validate_name};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
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

/// All profiles, by name.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles",
    responses((status = 200, description = "Every profile, sorted by name", body = Vec<Profile>)))]
pub async fn list_profiles(State(state): State<ApiState>) -> ApiResult<Json<Vec<Profile>>> {
    let mut profiles = state.fleet.store().list_profiles().await?;
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
    Ok(Json(state.fleet.store().get_profile(&name).await?))
}

/// `PUT /api/v1/profiles/{name}` options.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PutProfileQuery {
    /// Store the profile even when its kernel or an initrd is not in the
    /// asset directory (yet).
    #[serde(default)]
    pub force: bool,
}

/// Relative kernel and initrd paths (not URLs, not templates) that are not
/// files under `asset_dir`, as `field: path` lines.
fn missing_assets(profile: &Profile, asset_dir: &std::path::Path) -> Vec<String> {
    let fields = profile
        .kernel
        .iter()
        .map(|k| ("kernel".to_string(), k))
        .chain(
            profile
                .initrds
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("initrds[{i}]"), p)),
        );
    fields
        .filter(|(_, p)| !p.contains("://") && !p.contains("{{") && !p.contains("{%"))
        .filter(|(_, p)| !asset_dir.join(p.trim_start_matches('/')).is_file())
        .map(|(field, p)| format!("{field}: {p:?}"))
        .collect()
}

/// For a Secure Boot profile (`loader = "shim"`): its kernel, when it is a
/// file in `asset_dir`, must carry an Authenticode signature, or shim refuses
/// it at boot. A URL or a kernel not there yet cannot be checked here.
async fn check_secure_boot_kernel(
    profile: &Profile,
    asset_dir: &std::path::Path,
) -> Result<(), ApiError> {
    let Some(kernel) = profile.kernel.as_deref() else {
        return Ok(());
    };
    if profile.loader != LoaderKind::Shim || kernel.contains("://") || kernel.contains("{{") {
        return Ok(());
    }
    let path = asset_dir.join(kernel.trim_start_matches('/'));
    let Ok(bytes) = tokio::fs::read(&path).await else {
        return Ok(());
    };
    rackboot_boot::pe::check_signed(&bytes).map_err(|why| {
        ApiError::BadRequest(format!(
            "kernel: {kernel:?} cannot boot under Secure Boot: {why}; a shim profile needs a kernel signed for Secure Boot (the distribution's signed kernel, or one signed with a key enrolled in shim)"
        ))
    })
}

/// Creates or replaces a profile.
///
/// A kernel or initrd given as a path must be a file in the server's asset
/// directory, unless `force` is set. A Secure Boot profile's kernel must be
/// signed.
#[utoipa::path(put, path = "/api/v1/profiles/{name}", tag = "profiles", request_body = ProfileInput,
    params(("name" = String, Path, description = "Profile name"), PutProfileQuery),
    responses(
        (status = 200, description = "Replaced", body = Profile),
        (status = 201, description = "Created", body = Profile),
        (status = 400, description = "Malformed JSON, an invalid field, a template that does not compile, a kernel or initrd not in the asset directory, or an unsigned kernel in a Secure Boot (shim) profile", body = ErrorBody),
    ))]
pub async fn put_profile(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    crate::extract::ApiQuery(query): crate::extract::ApiQuery<PutProfileQuery>,
    ApiJson(input): ApiJson<ProfileInput>,
) -> ApiResult<(StatusCode, Json<Profile>)> {
    validate_name("profile name", &name).map_err(|e| ApiError::BadRequest(format!("name: {e}")))?;
    if let Some(body_name) = &input.name
        && body_name != &name
    {
        return Err(ApiError::BadRequest(format!(
            "name: body says {body_name:?} but the path says {name:?}"
        )));
    }
    let now = Utc::now();
    let profile = Profile {
        name: name.clone(),
        description: input.description,
        kernel: input.kernel,
        initrds: input.initrds,
        cmdline: input.cmdline,
        ipxe_script: input.ipxe_script,
        loader: input.loader,
        created_at: now,
        updated_at: now,
    };
    profile.validate().map_err(ApiError::BadRequest)?;
    (state.validate_templates)(&profile).map_err(ApiError::BadRequest)?;
    if let Some(dir) = &state.asset_dir
        && !query.force
    {
        let missing = missing_assets(&profile, dir);
        if !missing.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "not in the asset directory {}: {} (copy them there first, or force: `?force=true`, `rackboot profile add --force`)",
                dir.display(),
                missing.join(", ")
            )));
        }
    }
    if let Some(dir) = &state.asset_dir {
        check_secure_boot_kernel(&profile, dir).await?;
    }
    let (profile, created) = state.fleet.put_profile(profile, &caller.actor()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
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
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.fleet.delete_profile(&name, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
