//! Boot HTTP for installer-based installs: the OS trees, each pending install's
//! rendered unattended file (rendered on request, never stored), the
//! installer's "installed" callback, which moves the machine to local disk
//! (and its BMC to disk boot), and the completion callback.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics::counter;
use rackboot_core::{EventKind, NewEvent, OsFamily};
use rackboot_fleet::FleetError;
use rackboot_store::StoreError;
use serde_json::json;

use crate::access::Callback;
use crate::http::{Refusal, base_url, serve_tree, text};
use crate::service::BootService;

/// `GET /os/{*path}`: a file of an imported OS tree, with Range requests.
pub(crate) async fn os_file(
    State(service): State<Arc<BootService>>,
    Path(path): Path<String>,
    req: Request,
) -> Response {
    let Some(dir) = service.inventory().os_dir().map(|d| d.to_path_buf()) else {
        return text(
            StatusCode::NOT_FOUND,
            "this server has no OS catalog\n".into(),
        );
    };
    serve_tree(&service, &dir, "/os", path, req).await
}

fn parse_id(id: &str) -> Result<uuid::Uuid, Refusal> {
    id.parse()
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, format!("install id {id:?}: {e}\n")))
}

/// `GET /install/{id}/{secret}/{file}`: the rendered file or one of its
/// companions, to the machine's address only (see [`crate::access`]).
pub(crate) async fn install_file(
    State(service): State<Arc<BootService>>,
    Path((id, secret, file)): Path<(String, String, String)>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    // Refusals of the secret or the address are reported by the gate;
    // what follows reports render errors.
    if let Err(r) = admit_file(&service, &id, &secret, crate::http::peer(&req)).await {
        return r.into_response();
    }
    match render_install_file(&service, &id, &file, &headers).await {
        Ok(resp) => resp,
        Err(Refusal(status, message)) => {
            tracing::warn!("install file {id}/{file}: {}", message.trim_end());
            counter!("rackboot_install_file_errors_total").increment(1);
            text(status, message)
        }
    }
}

/// `GET /install/{id}/{file}`: a file URL without the install's secret
/// (guessed, or from before secrets): refused, logged and counted.
pub(crate) async fn install_file_without_secret(
    State(service): State<Arc<BootService>>,
    Path((id, _file)): Path<(String, String)>,
    req: Request,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    service
        .refused(
            crate::install_gate::Asked::File,
            &crate::access::AccessRefusal::BadSecret { install: id },
            None,
            crate::http::peer(&req),
        )
        .into_response()
}

/// The secret and the address of a request for a pending install's file
/// (an install that is not pending is left to the render, which says 410).
async fn admit_file(
    service: &BootService,
    id: &str,
    secret: &str,
    peer: Option<std::net::IpAddr>,
) -> Result<(), Refusal> {
    let id = parse_id(id)?;
    let snapshot = service.inventory().snapshot();
    let Some(install) = snapshot.installs.get(&id) else {
        return Ok(());
    };
    if !crate::access::files_secret_matches(install, secret) {
        return Err(service.refused(
            crate::install_gate::Asked::File,
            &crate::access::AccessRefusal::BadSecret { install: id },
            Some(install.machine),
            peer,
        ));
    }
    let machine = snapshot
        .machines
        .iter()
        .find(|m| m.id == install.machine)
        .map(|m| m.as_ref());
    service
        .admit_install_fetch(
            crate::install_gate::Asked::File,
            &[install],
            machine,
            None,
            peer,
        )
        .await
}

async fn render_install_file(
    service: &BootService,
    id: &str,
    file: &str,
    headers: &HeaderMap,
) -> Result<Response, Refusal> {
    let id = parse_id(id)?;
    let base = base_url(service, headers)?;
    let snapshot = service.inventory().snapshot();
    let install = snapshot.installs.get(&id).ok_or_else(|| {
        // Once completed (or replaced) the file is gone: a machine that boots
        // the installer again by accident cannot reinstall itself.
        Refusal(
            StatusCode::GONE,
            format!("install {id} is not pending (completed, cancelled or unknown)\n"),
        )
    })?;
    let machine = snapshot
        .machines
        .iter()
        .find(|m| m.id == install.machine)
        .ok_or_else(|| {
            Refusal(
                StatusCode::NOT_FOUND,
                format!("install {id}: its machine no longer exists\n"),
            )
        })?;
    let urls = match machine.macs.first() {
        Some(mac) => service.server_urls_for(&base, *mac),
        None => service.server_urls(&base),
    };
    let release = snapshot.os.get(&install.os).ok_or_else(|| {
        Refusal(
            StatusCode::NOT_FOUND,
            format!("install {id}: OS {} is not in the OS catalog\n", install.os),
        )
    })?;
    let template = match &install.template {
        Some(name) => Some(
            service
                .inventory()
                .store()
                .get_template(name)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound { .. } => Refusal(
                        StatusCode::NOT_FOUND,
                        format!("install {id}: template {name:?} no longer exists\n"),
                    ),
                    other => Refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("install {id}: reading template {name:?}: {other}\n"),
                    ),
                })?
                .source,
        ),
        None => None,
    };
    let rendered = crate::install::render_file(
        machine,
        install,
        release,
        template.as_deref(),
        &urls,
        service.secret_key(),
    )
    .map_err(|e| {
        Refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("install {id} for {}: {e}\n", machine.name),
        )
    })?;
    let (body, content_type) = if file == rendered.file_name {
        (rendered.body, rendered.content_type)
    } else if let Some(c) = rendered.companions.iter().find(|c| c.file_name == file) {
        (c.body.clone(), c.content_type)
    } else if file == "boot.cfg" && release.family == OsFamily::Esxi {
        (
            esxi_boot_cfg(service, install, release, &urls).await?,
            "text/plain; charset=utf-8",
        )
    } else {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            format!(
                "install {id} has no file {file:?} (its file is {:?})\n",
                rendered.file_name
            ),
        ));
    };
    counter!("rackboot_install_files_served_total", "format" => rendered.format).increment(1);
    service.events().emit(install_event(
        EventKind::InstallFileServed,
        format!(
            "served {} {file} of install {} ({}) to {}",
            rendered.format, install.id, install.os, machine.name
        ),
        install,
        Some(machine),
        json!({
            "install": install.id,
            "os": install.os,
            "file": file,
            "format": rendered.format,
            "bytes": body.len(),
        }),
    ));
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// ESXi's boot.cfg from the tree, rewritten to load modules from the tree and
/// pass `ks=` pointing at the rendered kickstart.
async fn esxi_boot_cfg(
    service: &BootService,
    install: &rackboot_core::InstallRequest,
    release: &rackboot_oscatalog::OsRelease,
    urls: &crate::render::ServerUrls,
) -> Result<String, Refusal> {
    let missing = || {
        Refusal(
            StatusCode::NOT_FOUND,
            format!("OS {} has no boot.cfg in the catalog\n", release.id),
        )
    };
    let dir = service.inventory().os_dir().ok_or_else(missing)?;
    let rel = release.boot_config.as_ref().ok_or_else(missing)?;
    let original = tokio::fs::read_to_string(dir.join(&release.id).join(rel))
        .await
        .map_err(|e| {
            Refusal(
                StatusCode::NOT_FOUND,
                format!("OS {}: reading {}: {e}\n", release.id, rel.display()),
            )
        })?;
    let u = crate::install::InstallUrls::new(urls, install, release.family);
    Ok(rackboot_install::esxi_boot_cfg(&original, &u.tree, &u.file))
}

/// `GET|POST /install/{id}/started/{token}`: the installer read its file and
/// runs it (its first command calls this). From the machine's address only;
/// records an event, and the install's files are no longer served.
pub(crate) async fn started(
    State(service): State<Arc<BootService>>,
    Path((id, token)): Path<(String, String)>,
    req: Request,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let snapshot = service.inventory().snapshot();
    let Some(install) = snapshot
        .installs
        .get(&id)
        .filter(|i| i.token_matches(&token))
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no pending install {id} with this token\n"),
        );
    };
    // From the machine only; its files close now (it has read them).
    let peer = crate::http::peer(&req);
    if let Err(r) = service
        .admit_install_callback(Callback::Started, install, peer)
        .await
    {
        return r.into_response();
    }
    let machine = snapshot
        .machines
        .iter()
        .find(|m| m.id == install.machine)
        .map(|m| m.as_ref());
    let name = machine.map(|m| m.name.as_str()).unwrap_or_default();
    service.events().emit(install_event(
        EventKind::InstallStarted,
        format!(
            "installer of {} on {name} read its file and started (install {id})",
            install.os
        ),
        install,
        machine,
        json!({"install": id, "os": install.os}),
    ));
    text(StatusCode::OK, format!("install {id} started\n"))
}

/// `GET|POST /install/{id}/installed/{token}`: the installer's last step
/// before it reboots. The install becomes `installed` and the machine's
/// intent local disk in one store transaction; a machine with a BMC is then
/// switched to boot its disk (in the background: the installer's request
/// does not wait for the BMC, and the intent alone already sends the
/// machine's next network boot to its disk). Idempotent.
pub(crate) async fn installed(
    State(service): State<Arc<BootService>>,
    Path((id, token)): Path<(String, String)>,
    req: Request,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let peer = crate::http::peer(&req);
    if let Err(r) = admit_callback(&service, Callback::Installed, id, &token, peer).await {
        return r.into_response();
    }
    match service.fleet().finish_install(id, &token).await {
        Ok(done) => {
            if done.changed {
                disk_boot_through_bmc(&service, done.install.machine);
            }
            let state = done.install.state.as_str();
            text(
                StatusCode::OK,
                if done.changed {
                    format!("install {id} installed; the machine boots its disk now\n")
                } else {
                    format!("install {id} was already {state}\n")
                },
            )
        }
        Err(e) => callback_error(id, e),
    }
}

/// Switches `machine`'s BMC (if it has one, and the server has a power
/// controller and the key that opens BMC passwords) to boot the disk,
/// persistently, in a background task; the result is an event on the
/// machine's timeline (`boot_device_set`, or `power_action_failed`).
fn disk_boot_through_bmc(service: &Arc<BootService>, machine: rackboot_core::MachineId) {
    let snapshot = service.inventory().snapshot();
    let Some(m) = snapshot.machines.iter().find(|m| m.id == machine) else {
        return;
    };
    let (Some(bmc), Some(power), Some(key)) = (
        m.bmc.clone(),
        service.power_controller().cloned(),
        service.secret_key(),
    ) else {
        return;
    };
    let target = match rackboot_power::target_from_bmc(&bmc, key) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(machine = %m.name, error = %e, "cannot reach the BMC to set disk boot");
            return;
        }
    };
    let events = service.events().clone();
    let name = m.name.clone();
    tokio::spawn(async move {
        let result = power
            .set_boot_device(
                &target,
                rackboot_power::BootDevice::Disk,
                rackboot_power::BootPersistence::Persistent,
                None,
            )
            .await;
        if let Err(e) = &result {
            tracing::warn!(machine = %name, error = %e, "setting the BMC boot device to disk failed");
        }
        rackboot_power::emit_request_event(&events, machine, &result);
    });
}

/// Checks a callback's token (a wrong one is 404, as the store would say,
/// so tokens cannot be probed) and then its caller's address (403).
async fn admit_callback(
    service: &BootService,
    kind: Callback,
    id: uuid::Uuid,
    token: &str,
    peer: Option<std::net::IpAddr>,
) -> Result<(), Response> {
    let install = match service.inventory().store().get_install(id).await {
        Ok(install) if install.token_matches(token) => install,
        Ok(_) | Err(StoreError::NotFound { .. }) => {
            return Err(text(
                StatusCode::NOT_FOUND,
                format!("no install {id} with this token\n"),
            ));
        }
        Err(e) => {
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("install {id}: {e}\n"),
            ));
        }
    };
    service
        .admit_install_callback(kind, &install, peer)
        .await
        .map_err(IntoResponse::into_response)
}

fn callback_error(id: uuid::Uuid, e: FleetError) -> Response {
    match e {
        FleetError::NotFound(_) => text(
            StatusCode::NOT_FOUND,
            format!("no install {id} with this token\n"),
        ),
        FleetError::Conflict(message) => text(StatusCode::CONFLICT, format!("{message}\n")),
        e => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("install {id}: {e}\n"),
        ),
    }
}

/// `GET|POST /install/{id}/done/{token}`: the completion callback: the
/// installed system's first-boot report, or the installer's last step (for
/// a template without one). Idempotent; leaving the installer, the
/// machine's intent becomes local disk in the same store transaction.
pub(crate) async fn done(
    State(service): State<Arc<BootService>>,
    Path((id, token)): Path<(String, String)>,
    req: Request,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let peer = crate::http::peer(&req);
    if let Err(r) = admit_callback(&service, Callback::Done, id, &token, peer).await {
        return r.into_response();
    }
    match service.fleet().complete_install(id, &token).await {
        Ok(done) => text(
            StatusCode::OK,
            format!(
                "install {id} {}\n",
                if done.changed {
                    "completed"
                } else {
                    "was already completed"
                }
            ),
        ),
        Err(e) => callback_error(id, e),
    }
}

/// An event on the installing machine's timeline, with its boot MAC when known.
fn install_event(
    kind: EventKind,
    message: String,
    install: &rackboot_core::InstallRequest,
    machine: Option<&rackboot_core::Machine>,
    data: serde_json::Value,
) -> NewEvent {
    let event = NewEvent::new(kind, message)
        .machine(install.machine)
        .data(data);
    match machine.and_then(|m| m.macs.first()) {
        Some(mac) => event.mac(*mac),
        None => event,
    }
}
