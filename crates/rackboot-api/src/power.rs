//! Out-of-band power through each machine's BMC: power actions (verified),
//! boot device, live power state. The BMC itself is part of the machine
//! (`bmc` in `POST`/`PATCH /api/v1/machines`); its password is sealed with the
//! server's key on the way in and never returned.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use rackboot_core::{Bmc, Machine};
use rackboot_power::secrets::SecretKey;
use rackboot_power::{
    BmcTarget, BootDevice, BootMode, BootPersistence, PowerAction, PowerController, PowerErrorKind,
    PowerFailure, PowerOutcome, PowerStateMap, PowerSyncSource, request_event, seal_bmc,
    target_from_bmc,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::machines::find_machine;

/// What the API needs to drive BMCs. Cheap to clone.
#[derive(Clone)]
pub struct PowerApi {
    pub controller: Arc<PowerController>,
    /// Seals BMC passwords in the store.
    pub key: Arc<SecretKey>,
    /// Last power state seen per machine (written by the sync task and by actions).
    pub states: PowerStateMap,
}

/// A machine's BMC as given by an operator.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BmcInput {
    /// `ipmi://[user[:password]@]host[:port]`, `ipmitool://...`,
    /// `redfish://...` or `redfish+https://host[/redfish/v1/Systems/ID]`.
    pub url: String,
    /// Overrides the URL's user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Overrides the URL's password. Sealed at rest, never returned.
    #[serde(default)]
    pub password: Option<String>,
    /// Accept a self-signed certificate (Redfish over HTTPS).
    #[serde(default)]
    pub insecure_tls: bool,
}

/// Seals an operator's BMC input for the store.
pub(crate) fn seal(state: &ApiState, field: &str, input: &BmcInput) -> ApiResult<Bmc> {
    let power = power_api(state)?;
    let bmc = seal_bmc(
        &input.url,
        input.username.as_deref(),
        input.password.as_deref(),
        input.insecure_tls,
        &power.key,
    )
    .map_err(|e| ApiError::BadRequest(format!("{field}.url: {e}")))?;
    if bmc.username.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "{field}: a user name is needed (in the URL or as username)"
        )));
    }
    Ok(bmc)
}

fn power_api(state: &ApiState) -> ApiResult<&PowerApi> {
    state
        .power
        .as_ref()
        .ok_or_else(|| ApiError::Disabled("power control is not enabled on this server".into()))
}

fn target(power: &PowerApi, machine: &Machine) -> ApiResult<BmcTarget> {
    let bmc = machine.bmc.as_ref().ok_or_else(|| {
        ApiError::BadRequest(format!(
            "machine {:?} has no BMC (set one with PATCH /api/v1/machines/{{ref}} {{\"bmc\": ...}})",
            machine.name
        ))
    })?;
    target_from_bmc(bmc, &power.key).map_err(|e| ApiError::Internal(e.to_string()))
}

/// A BMC that failed: the status says whose fault (502 for the BMC's, 400 when
/// the operation is not supported), the message says what went wrong.
fn failure(machine: &Machine, f: PowerFailure) -> ApiError {
    bmc_error(machine, f.error.kind(), &f)
}

fn bmc_error(machine: &Machine, kind: PowerErrorKind, what: &dyn std::fmt::Display) -> ApiError {
    let message = format!("{}: {what}", machine.name);
    match kind {
        PowerErrorKind::Unsupported | PowerErrorKind::InvalidUrl => ApiError::BadRequest(message),
        _ => ApiError::Bmc(message),
    }
}

/// Records a power or boot-device request's outcome with who asked.
fn emit_power_event(
    state: &ApiState,
    caller: &Caller,
    machine: rackboot_core::MachineId,
    result: &Result<PowerOutcome, PowerFailure>,
) {
    let mut event = request_event(machine, result);
    if let Some(data) = event.data.as_object_mut() {
        data.insert("who".into(), caller.actor().as_str().into());
    }
    state.fleet.emit(event);
}

/// Body of `POST /api/v1/machines/{ref}/power`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerBody {
    /// `on`, `off` (hard), `soft_off` (ACPI), `cycle` or `reset`.
    #[schema(value_type = String)]
    pub action: PowerAction,
}

/// Body of `PUT /api/v1/machines/{ref}/boot-device`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BootDeviceBody {
    /// `pxe` or `disk`.
    #[schema(value_type = String)]
    pub device: BootDevice,
    /// Only for the next boot (default), or from now on.
    #[serde(default = "default_once")]
    pub once: bool,
    /// `uefi` or `legacy`, where the BMC supports choosing.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub mode: Option<BootMode>,
}

fn default_once() -> bool {
    true
}

/// What a verified power or boot-device operation did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PowerResult {
    pub machine: String,
    /// One line for people.
    pub message: String,
    /// The power state verified at the end, when known (`on`/`off`).
    pub state: Option<String>,
    pub attempts: u32,
    pub elapsed_ms: u64,
}

impl PowerResult {
    fn new(machine: String, outcome: &PowerOutcome) -> PowerResult {
        PowerResult {
            machine,
            message: outcome.to_string(),
            state: outcome.final_state.map(|s| s.to_string()),
            attempts: outcome.attempts,
            elapsed_ms: outcome.elapsed.as_millis() as u64,
        }
    }
}

/// A machine's power state as its BMC reports it now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PowerStatus {
    pub machine: String,
    /// `on` or `off`.
    pub state: String,
    /// The BMC, without credentials.
    pub bmc: String,
}

/// Powers a machine on, off, soft off, cycles or resets it, and verifies it.
#[utoipa::path(post, path = "/api/v1/machines/{ref}/power", tag = "power", request_body = PowerBody,
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 200, body = PowerResult),
        (status = 400, description = "No BMC, bad action, or not supported by the BMC", body = ErrorBody),
        (status = 404, description = "No such machine, or power control disabled", body = ErrorBody),
        (status = 502, description = "The BMC failed: authentication, unreachable, timed out, or it did not reach the state", body = ErrorBody),
    ))]
pub async fn power_action(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(reference): ApiPath<String>,
    ApiJson(body): ApiJson<PowerBody>,
) -> ApiResult<Json<PowerResult>> {
    let power = power_api(&state)?.clone();
    let machine = find_machine(&state.fleet, &reference).await?;
    let target = target(&power, &machine)?;
    let result = power.controller.power(&target, body.action).await;
    emit_power_event(&state, &caller, machine.id, &result);
    let outcome = result.map_err(|f| failure(&machine, f))?;
    if let Some(s) = outcome.final_state {
        power.states.record_state(machine.id, s);
    }
    Ok(Json(PowerResult::new(machine.name, &outcome)))
}

/// Reads the power state from the machine's BMC now.
#[utoipa::path(get, path = "/api/v1/machines/{ref}/power", tag = "power",
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 200, body = PowerStatus),
        (status = 400, description = "No BMC", body = ErrorBody),
        (status = 404, description = "No such machine, or power control disabled", body = ErrorBody),
        (status = 502, description = "The BMC failed", body = ErrorBody),
    ))]
pub async fn power_status(
    State(state): State<ApiState>,
    ApiPath(reference): ApiPath<String>,
) -> ApiResult<Json<PowerStatus>> {
    let power = power_api(&state)?.clone();
    let machine = find_machine(&state.fleet, &reference).await?;
    let target = target(&power, &machine)?;
    let s = power
        .controller
        .power_state(&target)
        .await
        .map_err(|e| bmc_error(&machine, e.kind(), &e))?;
    power.states.record_state(machine.id, s);
    Ok(Json(PowerStatus {
        machine: machine.name,
        state: s.to_string(),
        bmc: target.redacted(),
    }))
}

/// Sets the device the machine boots from: next boot only, or persistently.
#[utoipa::path(put, path = "/api/v1/machines/{ref}/boot-device", tag = "power", request_body = BootDeviceBody,
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 200, body = PowerResult),
        (status = 400, description = "No BMC, or not supported by the BMC", body = ErrorBody),
        (status = 404, description = "No such machine, or power control disabled", body = ErrorBody),
        (status = 502, description = "The BMC failed", body = ErrorBody),
    ))]
pub async fn boot_device(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(reference): ApiPath<String>,
    ApiJson(body): ApiJson<BootDeviceBody>,
) -> ApiResult<Json<PowerResult>> {
    let power = power_api(&state)?.clone();
    let machine = find_machine(&state.fleet, &reference).await?;
    let target = target(&power, &machine)?;
    let persistence = if body.once {
        BootPersistence::Once
    } else {
        BootPersistence::Persistent
    };
    let result = power
        .controller
        .set_boot_device(&target, body.device, persistence, body.mode)
        .await;
    emit_power_event(&state, &caller, machine.id, &result);
    let outcome = result.map_err(|f| failure(&machine, f))?;
    Ok(Json(PowerResult::new(machine.name, &outcome)))
}

/// The machines the power-state sync polls: every machine with a BMC, from
/// the inventory snapshot, except those in maintenance and, in a cluster,
/// those another live server owns. A BMC whose password does not unseal is
/// skipped with a warning (it would fail every round).
pub struct InventoryPowerSource {
    pub inventory: Arc<rackboot_fleet::Inventory>,
    pub key: Arc<SecretKey>,
    /// The cluster this server belongs to: it polls only its own machines.
    pub cluster: Option<Arc<rackboot_fleet::Cluster>>,
    /// The membership generation the last listing was made for.
    served: std::sync::atomic::AtomicU64,
}

impl InventoryPowerSource {
    pub fn new(
        inventory: Arc<rackboot_fleet::Inventory>,
        key: Arc<SecretKey>,
        cluster: Option<Arc<rackboot_fleet::Cluster>>,
    ) -> InventoryPowerSource {
        InventoryPowerSource {
            inventory,
            key,
            cluster,
            served: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl PowerSyncSource for InventoryPowerSource {
    async fn machines(&self) -> Result<Vec<(rackboot_core::MachineId, BmcTarget)>, String> {
        let snapshot = self.inventory.snapshot();
        let view = self.cluster.as_ref().map(|c| c.view());
        if let Some(v) = &view {
            self.served
                .store(v.generation, std::sync::atomic::Ordering::Relaxed);
        }
        let mut out = Vec::new();
        // Machines in maintenance are left alone: operators may be working on the BMC.
        for m in snapshot
            .machines
            .iter()
            .filter(|m| m.maintenance.is_none())
            .filter(|m| view.as_ref().is_none_or(|v| v.owns(m.id)))
        {
            if let Some(bmc) = &m.bmc {
                match target_from_bmc(bmc, &self.key) {
                    Ok(t) => out.push((m.id, t)),
                    Err(e) => tracing::warn!(machine = %m.name, "power sync skips it: {e}"),
                }
            }
        }
        Ok(out)
    }

    async fn changed(&self) {
        match &self.cluster {
            // The membership changed: machines moved to or from this server.
            Some(c) => {
                let mut rx = c.subscribe();
                // Also a change during the last round, after its listing.
                let served = self.served.load(std::sync::atomic::Ordering::Relaxed);
                if rx.borrow().generation != served {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
}
