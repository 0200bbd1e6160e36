//! Installer-based installs: request one for a machine, list requests, manage
//! the user templates unattended files are rendered from, and see the OS
//! catalog. The install file itself is served by boot HTTP
//! (`/install/{id}/{secret}/{file}`, to the machine only), rendered on request.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use rackboot_boot::install::{InstallInput, InstallUrls, SealedSecrets};
use rackboot_boot::render::{
    BootPlan, InstallPlan, ServerUrls, plan_for, render_grub, render_ipxe, render_pxelinux,
};
use rackboot_core::{
    BootIntent, EventKind, InstallRequest, InstallState, InstallTemplate, LoaderKind, Machine,
    NewEvent, OsFamily, machine::validate_name,
};
use rackboot_install::RenderSecrets;
use rackboot_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::machines::find_machine;

/// Body of `POST /api/v1/machines/{ref}/install`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallBody {
    /// Catalog id of the OS (see `GET /api/v1/os`).
    pub os: String,
    /// A stored template of the OS's family; the built-in one when absent.
    #[serde(default)]
    pub template: Option<String>,
    /// Install variables (hostname, domain, nics, bonds, vlans, disk, layout,
    /// packages, repositories, timezone, locale, keyboard, root_password_hash,
    /// ssh_authorized_keys, post_script, install_source_url). The server fills
    /// hostname (the machine's name), nics (DHCP on the boot NIC), disk (the
    /// smallest) and install_source_url (the imported tree) when absent.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub vars: Map<String, Value>,
    /// A root password in clear: hashed (SHA-512 crypt) here, only the hash is
    /// stored. Use this or `vars.root_password_hash`.
    #[serde(default)]
    pub root_password: Option<String>,
    /// Extra installer kernel arguments, e.g. `console=ttyS0,115200`.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Windows: the local Administrator password. unattend.xml needs it in a
    /// recoverable form, so it is stored sealed with the server's key.
    #[serde(default)]
    pub windows_admin_password: Option<String>,
    /// Windows: the password of `vars.windows.share_user` on the SMB share
    /// holding the installation files; stored sealed.
    #[serde(default)]
    pub windows_share_password: Option<String>,
}

/// An imported OS, as the boot side serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OsInfo {
    pub id: String,
    pub family: OsFamily,
    pub distro: String,
    pub version: String,
    pub arch: String,
    pub name: String,
    /// Installer kernel and initrd, relative to the tree (served at `/os/<id>/`).
    pub kernel: String,
    pub initrd: String,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstallListQuery {
    /// Only this machine's installs (id, name or MAC).
    pub machine: Option<String>,
}

/// Body of `PUT /api/v1/templates/{name}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    pub family: OsFamily,
    #[serde(default)]
    pub description: String,
    /// minijinja source; checked (parsed and rendered for a sample machine) before it is stored.
    pub source: String,
}

/// What a machine would get on its next network boot.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RenderPreview {
    pub machine: String,
    /// The plan its intent resolves to: `profile`, `local_disk`, `menu`, `install`...
    pub plan: String,
    /// Its iPXE script.
    pub ipxe: String,
    /// When the plan wants pxelinux or GRUB (a profile's loader, or a menu
    /// shown in that loader): the loader's name and the config it reads.
    pub loader: Option<String>,
    pub loader_config: Option<String>,
    /// For an install: the unattended file's name and text.
    pub install_file: Option<String>,
    pub install_file_body: Option<String>,
    /// Why the machine cannot boot, when `plan` is `error` (its script only
    /// prints this and stops).
    #[serde(default)]
    pub error: Option<String>,
}

/// An unguessable single-use token for an install's completion callback.
fn new_token() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

/// The base URL machines reach boot HTTP at; previews and checks render with it.
fn boot_urls(state: &ApiState) -> ServerUrls {
    ServerUrls::new(&state.boot_base_url, "assets")
}

/// Requests an install: checks everything a render needs now (so the machine
/// is never served a half file later), stores the request with a fresh
/// callback token and points the machine's intent at it, replacing any
/// pending install.
#[utoipa::path(post, path = "/api/v1/machines/{ref}/install", tag = "installs", request_body = InstallBody,
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 201, description = "The install request (its intent is set)", body = InstallRequest),
        (status = 400, description = "Unknown OS or template, or an install value that does not render; the message names it", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
    ))]
pub async fn request_install(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(reference): ApiPath<String>,
    ApiJson(body): ApiJson<InstallBody>,
) -> ApiResult<(StatusCode, Json<InstallRequest>)> {
    let machine = find_machine(&state.fleet, &reference).await?;
    let spec = InstallSpec {
        os: body.os,
        template: body.template,
        vars: body.vars,
        root_password: body.root_password,
        kernel_args: body.kernel_args,
        secrets: RenderSecrets {
            windows_admin_password: body.windows_admin_password,
            windows_share_password: body.windows_share_password,
        },
    };
    let (install, release) = prepare_install(&state, &machine, spec).await?;
    let intent = BootIntent::Install {
        id: install.id,
        os: install.os.clone(),
    };
    let machine = state
        .fleet
        .replace_installs(
            &machine,
            std::slice::from_ref(&install),
            &intent,
            "install_requested",
            &caller.actor(),
        )
        .await?;
    emit_install_requested(&state, &machine, &install, &release, None, &caller);
    let stored = state.fleet.store().get_install(install.id).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// What one install is made from (the request body of an install, or one
/// entry of an install menu with the menu's shared values).
pub(crate) struct InstallSpec {
    pub os: String,
    pub template: Option<String>,
    pub vars: Map<String, Value>,
    pub root_password: Option<String>,
    pub kernel_args: Vec<String>,
    /// In clear here; sealed before anything is stored.
    pub secrets: RenderSecrets,
}

/// Builds an install request for `machine` and checks everything a render
/// needs now (OS, template, variables, boot entry), so the machine is never
/// served a half file later. Errors are the operator's 400s naming the value.
pub(crate) async fn prepare_install(
    state: &ApiState,
    machine: &Machine,
    spec: InstallSpec,
) -> ApiResult<(InstallRequest, rackboot_oscatalog::OsRelease)> {
    let store = state.fleet.store();
    let snapshot = state.fleet.snapshot();
    let release = snapshot.os.get(&spec.os).cloned().ok_or_else(|| {
        let mut known: Vec<&String> = snapshot.os.keys().collect();
        known.sort();
        ApiError::BadRequest(format!(
            "os: {:?} is not in the OS catalog (imported: {})",
            spec.os,
            if known.is_empty() {
                "none; use rackboot os import".to_string()
            } else {
                known
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))
    })?;
    let template_source = match &spec.template {
        Some(name) => {
            let t = store.get_template(name).await.map_err(|e| match e {
                StoreError::NotFound { .. } => {
                    ApiError::BadRequest(format!("template: no stored template {name:?}"))
                }
                other => other.into(),
            })?;
            if t.family != release.family {
                return Err(ApiError::BadRequest(format!(
                    "template: {name:?} is a {} template but {} is {}",
                    t.family, release.id, release.family
                )));
            }
            Some(t.source)
        }
        None => None,
    };
    let mut vars = spec.vars;
    if let Some(plain) = &spec.root_password {
        if vars.contains_key("root_password_hash") {
            return Err(ApiError::BadRequest(
                "root_password: give either root_password or vars.root_password_hash".into(),
            ));
        }
        let hash = rackboot_install::hash_root_password(plain)
            .map_err(|e| ApiError::BadRequest(format!("root_password: {e}")))?;
        vars.insert("root_password_hash".into(), json!(hash));
    }
    let has_secrets = spec.secrets.windows_admin_password.is_some()
        || spec.secrets.windows_share_password.is_some();
    if has_secrets && release.family != OsFamily::Windows {
        return Err(ApiError::BadRequest(format!(
            "windows_admin_password: only Windows installs take Windows passwords ({} is {})",
            release.id, release.family
        )));
    }
    let sealed = match (&state.secret_key, has_secrets) {
        (_, false) => SealedSecrets::default(),
        (Some(key), true) => SealedSecrets::seal(&spec.secrets, key),
        (None, true) => {
            return Err(ApiError::BadRequest(
                "windows_admin_password: this server has no secret key to store passwords sealed"
                    .into(),
            ));
        }
    };
    let input = InstallInput {
        vars,
        kernel_args: spec.kernel_args,
        sealed,
    };
    let install = InstallRequest {
        id: uuid::Uuid::new_v4(),
        machine: machine.id,
        os: release.id.clone(),
        template: spec.template,
        vars: serde_json::to_value(&input).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        token: new_token(),
        state: InstallState::Pending,
        requested_at: Utc::now(),
        completed_at: None,
    };
    // Render once now: a value or template problem is the operator's 400, not
    // a broken install later.
    let urls = boot_urls(state);
    rackboot_boot::install::render_file(
        machine,
        &install,
        &release,
        template_source.as_deref(),
        &urls,
        state.secret_key.as_deref(),
    )
    .map_err(|e| ApiError::BadRequest(format!("vars: {e}")))?;
    rackboot_boot::install::boot_entry(machine, &install, &release, &urls)
        .map_err(ApiError::BadRequest)?;
    Ok((install, release))
}

/// The `install_requested` event on the machine's timeline; `menu` is the
/// menu entry's label when the install is offered by an install menu.
pub(crate) fn emit_install_requested(
    state: &ApiState,
    machine: &Machine,
    install: &InstallRequest,
    release: &rackboot_oscatalog::OsRelease,
    menu: Option<&str>,
    by: &Caller,
) {
    let urls = boot_urls(state);
    let message = match menu {
        None => format!(
            "install of {} requested for {} (install {})",
            install.os, machine.name, install.id
        ),
        Some(label) => format!(
            "install of {} offered to {} in its boot menu as {label:?} (install {})",
            install.os, machine.name, install.id
        ),
    };
    let mut event = NewEvent::new(EventKind::InstallRequested, message)
        .machine(machine.id)
        .data(json!({
            "install": install.id,
            "os": install.os,
            "template": install.template,
            "file": InstallUrls::new(&urls, install, release.family).file,
            "menu": menu,
            "who": by.actor().as_str(),
        }));
    if let Some(mac) = machine.macs.first() {
        event = event.mac(*mac);
    }
    state.fleet.emit(event);
}

/// Install requests, oldest first.
#[utoipa::path(get, path = "/api/v1/installs", tag = "installs", params(InstallListQuery),
    responses(
        (status = 200, body = Vec<InstallRequest>),
        (status = 404, description = "No such machine", body = ErrorBody),
    ))]
pub async fn list_installs(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<InstallListQuery>,
) -> ApiResult<Json<Vec<InstallRequest>>> {
    let store = state.fleet.store();
    let machine = match &query.machine {
        Some(r) => Some(find_machine(&state.fleet, r).await?.id),
        None => None,
    };
    Ok(Json(store.list_installs(machine).await?))
}

/// One install request.
#[utoipa::path(get, path = "/api/v1/installs/{id}", tag = "installs",
    params(("id" = String, Path, description = "Install id")),
    responses(
        (status = 200, body = InstallRequest),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such install", body = ErrorBody),
    ))]
pub async fn get_install(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<InstallRequest>> {
    let id: uuid::Uuid = id
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("id: {e}")))?;
    Ok(Json(state.fleet.store().get_install(id).await?))
}

/// What a machine would get on its next network boot: its iPXE script and,
/// for an install, the rendered unattended file.
#[utoipa::path(get, path = "/api/v1/machines/{ref}/render", tag = "installs",
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 200, description = "What the machine gets; `error` says why when it cannot boot", body = RenderPreview),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 422, description = "The install file does not render; the message says why", body = ErrorBody),
    ))]
pub async fn render_machine(
    State(state): State<ApiState>,
    ApiPath(reference): ApiPath<String>,
) -> ApiResult<Json<RenderPreview>> {
    let store = state.fleet.store().clone();
    let machine: Machine = find_machine(&state.fleet, &reference).await?;
    let snapshot = state.fleet.snapshot();
    let plan = plan_for(&machine, &snapshot, None);
    let urls = boot_urls(&state);
    let mac = machine
        .macs
        .first()
        .copied()
        .ok_or_else(|| ApiError::BadRequest("machine has no MAC to render for".into()))?;
    let ipxe = render_ipxe(&machine, mac, &plan, &urls);
    let (install_file, install_file_body) = match &plan {
        BootPlan::Install(p) => {
            let InstallPlan { install, release } = p.as_ref();
            let source = match &install.template {
                Some(name) => Some(store.get_template(name).await?.source),
                None => None,
            };
            let rendered = rackboot_boot::install::render_file(
                &machine,
                install,
                release,
                source.as_deref(),
                &urls,
                state.secret_key.as_deref(),
            )
            .map_err(|e| ApiError::Unprocessable(format!("install {}: {e}", install.id)))?;
            (Some(rendered.file_name.to_string()), Some(rendered.body))
        }
        _ => (None, None),
    };
    let (loader, loader_config) = match plan.loader() {
        LoaderKind::Ipxe => (None, None),
        LoaderKind::Pxelinux => (
            Some("pxelinux"),
            Some(render_pxelinux(&machine, mac, &plan, &urls)),
        ),
        // Under shim the signed GRUB reads the same generated config.
        LoaderKind::Grub | LoaderKind::Shim => {
            (Some("grub"), Some(render_grub(&machine, mac, &plan, &urls)))
        }
    };
    let error = match &plan {
        BootPlan::Error { message } => Some(message.clone()),
        _ => None,
    };
    Ok(Json(RenderPreview {
        error,
        machine: machine.name,
        plan: plan.kind().to_string(),
        ipxe,
        loader: loader.map(str::to_string),
        loader_config,
        install_file,
        install_file_body,
    }))
}

/// Stored user templates, by name.
#[utoipa::path(get, path = "/api/v1/templates", tag = "installs",
    responses((status = 200, body = Vec<InstallTemplate>)))]
pub async fn list_templates(
    State(state): State<ApiState>,
) -> ApiResult<Json<Vec<InstallTemplate>>> {
    Ok(Json(state.fleet.store().list_templates().await?))
}

/// One stored template.
#[utoipa::path(get, path = "/api/v1/templates/{name}", tag = "installs",
    params(("name" = String, Path)),
    responses(
        (status = 200, body = InstallTemplate),
        (status = 404, description = "No such template", body = ErrorBody),
    ))]
pub async fn get_template(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<InstallTemplate>> {
    Ok(Json(state.fleet.store().get_template(&name).await?))
}

/// Stores a template after checking it parses and renders for a sample
/// machine of its family; a refusal names the line and the reason.
#[utoipa::path(put, path = "/api/v1/templates/{name}", tag = "installs", request_body = TemplateBody,
    params(("name" = String, Path)),
    responses(
        (status = 200, description = "Stored", body = InstallTemplate),
        (status = 400, description = "Does not parse or render; names the line", body = ErrorBody),
    ))]
pub async fn put_template(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<TemplateBody>,
) -> ApiResult<Json<InstallTemplate>> {
    validate_name("template name", &name)
        .map_err(|e| ApiError::BadRequest(format!("name: {e}")))?;
    rackboot_install::validate_template(body.family, &body.source)
        .map_err(|e| ApiError::BadRequest(format!("source: {e}")))?;
    let store = state.fleet.store();
    let now = Utc::now();
    let template = InstallTemplate {
        name: name.clone(),
        family: body.family,
        description: body.description,
        source: body.source,
        created_at: now,
        updated_at: now,
    };
    store.put_template(&template).await?;
    Ok(Json(store.get_template(&name).await?))
}

/// Deletes a template. Pending installs that use it fail to render until
/// re-requested, so deleting one in use is refused.
#[utoipa::path(delete, path = "/api/v1/templates/{name}", tag = "installs",
    params(("name" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 409, description = "A pending install uses it", body = ErrorBody),
    ))]
pub async fn delete_template(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let snapshot = state.fleet.snapshot();
    if let Some(i) = snapshot
        .installs
        .values()
        .find(|i| i.template.as_deref() == Some(name.as_str()))
    {
        return Err(ApiError::Conflict(format!(
            "template {name:?} is used by pending install {}",
            i.id
        )));
    }
    state.fleet.store().delete_template(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn os_info(r: &rackboot_oscatalog::OsRelease) -> OsInfo {
    OsInfo {
        id: r.id.clone(),
        family: r.family,
        distro: r.distro.clone(),
        version: r.version.clone(),
        arch: r.arch.clone(),
        name: r.name.clone(),
        kernel: r.kernel.display().to_string(),
        initrd: r.initrd.display().to_string(),
    }
}

/// The OS catalog, by id (re-read from disk first, so a fresh `rackboot os import` shows).
#[utoipa::path(get, path = "/api/v1/os", tag = "installs",
    responses((status = 200, body = Vec<OsInfo>)))]
pub async fn list_os(State(state): State<ApiState>) -> ApiResult<Json<Vec<OsInfo>>> {
    state.fleet.reload_os_catalog().await?;
    let snapshot = state.fleet.snapshot();
    let mut all: Vec<OsInfo> = snapshot.os.values().map(os_info).collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(all))
}

/// Removes an imported OS and its files. Refused while a pending install uses it.
#[utoipa::path(delete, path = "/api/v1/os/{id}", tag = "installs",
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Not in the catalog", body = ErrorBody),
        (status = 409, description = "A pending install uses it", body = ErrorBody),
    ))]
pub async fn delete_os(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let snapshot = state.fleet.snapshot();
    if !snapshot.os.contains_key(&id) {
        return Err(ApiError::NotFound(format!(
            "OS {id:?} is not in the catalog"
        )));
    }
    if let Some(i) = snapshot.installs.values().find(|i| i.os == id) {
        return Err(ApiError::Conflict(format!(
            "OS {id:?} is used by pending install {}",
            i.id
        )));
    }
    let dir = state
        .fleet
        .inventory()
        .os_dir()
        .ok_or_else(|| ApiError::NotFound("this server has no OS catalog".into()))?
        .to_path_buf();
    let target = id.clone();
    tokio::task::spawn_blocking(move || rackboot_oscatalog::delete(&dir, &target))
        .await
        .map_err(|e| ApiError::Internal(format!("deleting OS {id}: {e}")))?
        .map_err(|e| ApiError::Internal(format!("deleting OS {id}: {e}")))?;
    state.fleet.reload_os_catalog().await?;
    Ok(StatusCode::NO_CONTENT)
}
