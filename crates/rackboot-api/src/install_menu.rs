//! Install menus: the seeds' "PXE menu of installable OSes, local disk by
//! default", made safe. Every OS entry is a pending install stored when the
//! menu is set (variables checked and rendered then, with its own callback
//! token), so choosing an entry at the console needs no write on the boot path,
//! and the first completed install moves the machine to local disk and cancels
//! the others: a machine left at the menu never reinstalls by accident.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rackboot_core::{
    BootIntent, InstallRequest, LoaderKind, Machine, Menu, MenuEntry, MenuInstall,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::installs::{InstallSpec, emit_install_requested, prepare_install};
use crate::machines::find_machine;

/// The longest a menu may wait before booting its default.
const MAX_MENU_TIMEOUT_SECS: u32 = rackboot_core::Menu::MAX_TIMEOUT_SECS;

/// Body of `POST /api/v1/machines/{ref}/install-menu`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallMenuBody {
    /// The OSes offered, in menu order (at least one, each OS once).
    pub entries: Vec<InstallMenuEntry>,
    /// Profiles offered after the installers (a rescue system, an inspector).
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Entry booted when the timeout expires: an OS id of `entries` or a name
    /// of `profiles`. Local disk when absent, as operators expect.
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u32,
    /// Show the menu in pxelinux or GRUB instead of iPXE. Only Linux installers
    /// (not ESXi, not Windows) can be offered there.
    #[serde(default)]
    pub loader: Option<LoaderKind>,
    /// Install variables shared by every entry (see `POST .../install`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub vars: Map<String, Value>,
    /// A root password in clear, hashed here (SHA-512 crypt); only the hash is stored.
    #[serde(default)]
    pub root_password: Option<String>,
    /// Extra installer kernel arguments for every entry.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Windows entries: the local Administrator password (stored sealed).
    #[serde(default)]
    pub windows_admin_password: Option<String>,
    /// Windows entries: the SMB share user's password (stored sealed).
    #[serde(default)]
    pub windows_share_password: Option<String>,
}

fn default_timeout() -> u32 {
    30
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallMenuEntry {
    /// Catalog id of the OS (see `GET /api/v1/os`).
    pub os: String,
    /// A stored template of the OS's family; the built-in one when absent.
    #[serde(default)]
    pub template: Option<String>,
    /// Text shown; `Install <OS name>` when absent.
    #[serde(default)]
    pub label: Option<String>,
}

/// The machine with its menu intent, and the installs its entries boot.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstallMenuCreated {
    pub machine: Machine,
    pub installs: Vec<InstallRequest>,
}

/// Sets a boot menu listing installable OSes (and optionally profiles) with
/// local disk as the default. Each OS entry is stored as a pending install,
/// replacing the machine's earlier pending installs; the first one to call
/// back completes, cancels the others and sets the machine to local disk.
#[utoipa::path(post, path = "/api/v1/machines/{ref}/install-menu", tag = "installs",
    request_body = InstallMenuBody,
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 201, description = "The menu is the machine's intent; its installs are pending", body = InstallMenuCreated),
        (status = 400, description = "No entries, a repeated or unknown OS, an unknown profile or template, a default that is not an entry, an installer the chosen loader cannot boot, or an install value that does not render; the message names it", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
    ))]
pub async fn request_install_menu(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(reference): ApiPath<String>,
    ApiJson(body): ApiJson<InstallMenuBody>,
) -> ApiResult<(StatusCode, Json<InstallMenuCreated>)> {
    let store = state.fleet.store().clone();
    let machine = find_machine(&state.fleet, &reference).await?;
    check_shape(&body)?;

    let mut installs = Vec::with_capacity(body.entries.len());
    let mut entries = Vec::with_capacity(body.entries.len() + body.profiles.len());
    let mut offered = Vec::with_capacity(body.entries.len());
    for (i, e) in body.entries.iter().enumerate() {
        let spec = InstallSpec {
            os: e.os.clone(),
            template: e.template.clone(),
            vars: body.vars.clone(),
            root_password: body.root_password.clone(),
            kernel_args: body.kernel_args.clone(),
            secrets: rackboot_install::RenderSecrets {
                windows_admin_password: body.windows_admin_password.clone(),
                windows_share_password: body.windows_share_password.clone(),
            },
        };
        let (install, release) = prepare_install(&state, &machine, spec)
            .await
            .map_err(|err| match err {
                ApiError::BadRequest(m) => ApiError::BadRequest(format!("entries[{i}]: {m}")),
                other => other,
            })?;
        if let Some(loader @ (LoaderKind::Pxelinux | LoaderKind::Grub | LoaderKind::Shim)) =
            body.loader
            && !release.family.installer_is_linux()
        {
            return Err(ApiError::BadRequest(format!(
                "entries[{i}]: {} ({}) boots only through iPXE, not in a {} menu",
                release.id,
                release.family,
                loader_name(loader)
            )));
        }
        let label = e
            .label
            .clone()
            .unwrap_or_else(|| format!("Install {}", release.name));
        entries.push(MenuEntry {
            profile: String::new(),
            install: Some(MenuInstall {
                id: install.id,
                os: install.os.clone(),
            }),
            label: Some(label.clone()),
        });
        offered.push((install.clone(), release, label));
        installs.push(install);
    }
    entries.extend(body.profiles.iter().map(|p| MenuEntry {
        profile: p.clone(),
        ..Default::default()
    }));
    let menu = Menu {
        entries,
        default: body.default.clone(),
        timeout_secs: body.timeout_secs,
        loader: body.loader,
    };
    // The profiles (and a profile default) exist; install entries are checked above.
    let profiles_only = BootIntent::Menu(Menu {
        entries: menu
            .entries
            .iter()
            .filter(|e| e.install.is_none())
            .cloned()
            .collect(),
        default: menu.default.clone().filter(|d| body.profiles.contains(d)),
        ..menu.clone()
    });
    rackboot_fleet::check_intent(store.as_ref(), "profiles", &profiles_only).await?;

    let intent = BootIntent::Menu(menu);
    let machine = state
        .fleet
        .replace_installs(
            &machine,
            &installs,
            &intent,
            "install_menu_set",
            &caller.actor(),
        )
        .await?;
    for (install, release, label) in &offered {
        emit_install_requested(&state, &machine, install, release, Some(label), &caller);
    }
    let mut stored = Vec::with_capacity(installs.len());
    for i in &installs {
        stored.push(store.get_install(i.id).await?);
    }
    Ok((
        StatusCode::CREATED,
        Json(InstallMenuCreated {
            machine,
            installs: stored,
        }),
    ))
}

/// The body's own consistency, before anything is looked up.
fn check_shape(body: &InstallMenuBody) -> ApiResult<()> {
    if body.entries.is_empty() {
        return Err(ApiError::BadRequest(
            "entries: an install menu needs at least one OS".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, e) in body.entries.iter().enumerate() {
        if !seen.insert(e.os.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "entries[{i}].os: {:?} is offered twice",
                e.os
            )));
        }
    }
    for (i, p) in body.profiles.iter().enumerate() {
        if !seen.insert(p.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "profiles[{i}]: {p:?} is already an entry"
            )));
        }
    }
    if let Some(d) = &body.default
        && !seen.contains(d.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "default: {d:?} is not one of the entries' OS ids or profiles"
        )));
    }
    if body.timeout_secs > MAX_MENU_TIMEOUT_SECS {
        return Err(ApiError::BadRequest(format!(
            "timeout_secs: {} is more than {MAX_MENU_TIMEOUT_SECS}",
            body.timeout_secs
        )));
    }
    Ok(())
}

fn loader_name(loader: LoaderKind) -> &'static str {
    match loader {
        LoaderKind::Ipxe => "iPXE",
        LoaderKind::Pxelinux => "pxelinux",
        LoaderKind::Grub => "GRUB",
        LoaderKind::Shim => "Secure Boot (shim and GRUB)",
    }
}
