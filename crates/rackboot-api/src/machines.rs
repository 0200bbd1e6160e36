//! `/api/v1/machines`: enroll, inspect, change and remove machines, set what they
//! boot next, and read their timeline. A machine is addressed by its id, its name
//! or any of its MACs, so operators can paste whichever they have at hand.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use rackboot_core::{
    Arch, BootIntent, Event, EventKind, MacAddr, Machine, NewEvent, machine::validate_name,
};
use rackboot_store::{EventFilter, Store, StoreError};
use serde::{Deserialize, Deserializer};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Body of `POST /api/v1/machines`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMachine {
    /// Unique name: 1-63 letters, digits, '.', '_' or '-'.
    pub name: String,
    /// At least one NIC address; the first is the boot NIC.
    pub macs: Vec<MacAddr>,
    /// SMBIOS system UUID, when known.
    #[serde(default)]
    pub uuid: Option<uuid::Uuid>,
    #[serde(default)]
    pub arch: Option<Arch>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What to boot; defaults to the profile chosen by selectors.
    #[serde(default)]
    pub intent: Option<BootIntent>,
    /// Its BMC, for power control. The password is sealed and never returned.
    #[serde(default)]
    pub bmc: Option<crate::power::BmcInput>,
}

/// Body of `PATCH /api/v1/machines/{ref}`: absent fields stay as they are;
/// `labels` replaces the whole map; `uuid` and `arch` can be set to null.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MachinePatch {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub macs: Option<Vec<MacAddr>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub uuid: Option<Option<uuid::Uuid>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Arch>)]
    pub arch: Option<Option<Arch>>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub intent: Option<BootIntent>,
    /// Sets the BMC; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<crate::power::BmcInput>)]
    pub bmc: Option<Option<crate::power::BmcInput>>,
}

/// Distinguishes an absent field (`None`) from an explicit null (`Some(None)`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Paging through events, oldest first.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// Only events with an id greater than this.
    pub after: Option<i64>,
    /// At most this many events (default and maximum 1000).
    pub limit: Option<u32>,
}

/// Finds a machine by id, then name, then any of its MACs.
pub(crate) async fn find_machine(store: &dyn Store, reference: &str) -> ApiResult<Machine> {
    if let Ok(id) = reference.parse::<uuid::Uuid>() {
        match store.get_machine(id).await {
            Ok(m) => return Ok(m),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(m) = store.find_machine_by_name(reference).await? {
        return Ok(m);
    }
    if let Ok(mac) = reference.parse::<MacAddr>()
        && let Some(m) = store.find_machine_by_mac(mac).await?
    {
        return Ok(m);
    }
    Err(ApiError::NotFound(format!(
        "no machine with id, name or MAC {reference:?}"
    )))
}

/// Checks that every profile `intent` names exists; the message names the field.
pub(crate) async fn check_intent(
    store: &dyn Store,
    field: &str,
    intent: &BootIntent,
) -> ApiResult<()> {
    let mut wanted: Vec<(String, &str)> = Vec::new();
    match intent {
        BootIntent::Discover | BootIntent::LocalDisk | BootIntent::Profile { name: None } => {}
        // An install needs its request (variables, callback token): it is made
        // by POST /machines/{id}/install, never set as a bare intent.
        BootIntent::Install { .. } => {
            return Err(ApiError::BadRequest(format!(
                "{field}: an install intent is set by requesting an install (POST /api/v1/machines/{{id}}/install)"
            )));
        }
        BootIntent::Profile { name: Some(name) } => wanted.push((format!("{field}.name"), name)),
        BootIntent::Menu(menu) => {
            for (i, entry) in menu.entries.iter().enumerate() {
                // Install entries need their requests (variables, callback
                // tokens): they are made by POST /machines/{id}/install-menu.
                if entry.install.is_some() {
                    return Err(ApiError::BadRequest(format!(
                        "{field}.entries[{i}].install: installer entries are set by requesting an install menu (POST /api/v1/machines/{{id}}/install-menu)"
                    )));
                }
                wanted.push((format!("{field}.entries[{i}].profile"), &entry.profile));
            }
            if let Some(default) = &menu.default {
                wanted.push((format!("{field}.default"), default));
                if !menu.entries.iter().any(|e| &e.profile == default) {
                    return Err(ApiError::BadRequest(format!(
                        "{field}.default: profile {default:?} is not one of the menu entries"
                    )));
                }
            }
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let known: BTreeSet<String> = store
        .list_profiles()
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect();
    for (field, name) in wanted {
        if !known.contains(name) {
            return Err(ApiError::BadRequest(format!(
                "{field}: no profile named {name:?}"
            )));
        }
    }
    Ok(())
}

fn check_labels(labels: &BTreeMap<String, String>) -> ApiResult<()> {
    for (key, value) in labels {
        validate_name("label key", key)
            .map_err(|e| ApiError::BadRequest(format!("labels: {e}")))?;
        if value.len() > 255 || value.chars().any(char::is_control) {
            return Err(ApiError::BadRequest(format!(
                "labels.{key}: value must be at most 255 characters without control characters"
            )));
        }
    }
    Ok(())
}

fn check_macs(macs: &[MacAddr]) -> ApiResult<()> {
    if macs.is_empty() {
        return Err(ApiError::BadRequest(
            "macs: at least one MAC address is required".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for mac in macs {
        if !seen.insert(*mac) {
            return Err(ApiError::BadRequest(format!("macs: {mac} is listed twice")));
        }
    }
    Ok(())
}

/// Refuses a name or MAC already used by another machine (the store would too,
/// but without saying which machine).
async fn check_unique(store: &dyn Store, machine: &Machine) -> ApiResult<()> {
    if let Some(other) = store.find_machine_by_name(&machine.name).await?
        && other.id != machine.id
    {
        return Err(ApiError::Conflict(format!(
            "machine name {:?} is already taken (machine {})",
            machine.name, other.id
        )));
    }
    for mac in &machine.macs {
        if let Some(other) = store.find_machine_by_mac(*mac).await?
            && other.id != machine.id
        {
            return Err(ApiError::Conflict(format!(
                "MAC {mac} already belongs to machine {:?}",
                other.name
            )));
        }
    }
    Ok(())
}

/// Refreshes the machine in the boot inventory and records the change.
pub(crate) async fn machine_changed(
    state: &ApiState,
    machine: &Machine,
    action: &str,
) -> ApiResult<()> {
    state.inventory.reload_machine(machine.id).await?;
    let mut event = NewEvent::new(
        EventKind::MachineChanged,
        format!(
            "machine {:?} {} by api",
            machine.name,
            action.replace('_', " ")
        ),
    )
    .machine(machine.id)
    .data(serde_json::json!({
        "who": "api",
        "action": action,
        "name": machine.name,
        "intent": machine.intent,
    }));
    if let Some(mac) = machine.macs.first() {
        event = event.mac(*mac);
    }
    state.events.emit(event);
    Ok(())
}

/// All machines, by name.
#[utoipa::path(get, path = "/api/v1/machines", tag = "machines",
    responses((status = 200, description = "Every machine, sorted by name", body = Vec<Machine>)))]
pub async fn list_machines(State(state): State<ApiState>) -> ApiResult<Json<Vec<Machine>>> {
    let mut machines = state.inventory.store().list_machines().await?;
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(machines))
}

/// Enrolls a machine.
#[utoipa::path(post, path = "/api/v1/machines", tag = "machines", request_body = NewMachine,
    responses(
        (status = 201, description = "Enrolled", body = Machine),
        (status = 400, description = "Malformed JSON or an invalid field", body = ErrorBody),
        (status = 409, description = "Name or a MAC already in use", body = ErrorBody),
    ))]
pub async fn create_machine(
    State(state): State<ApiState>,
    ApiJson(new): ApiJson<NewMachine>,
) -> ApiResult<(StatusCode, Json<Machine>)> {
    let store = state.inventory.store().as_ref();
    validate_name("machine name", &new.name)
        .map_err(|e| ApiError::BadRequest(format!("name: {e}")))?;
    check_macs(&new.macs)?;
    check_labels(&new.labels)?;
    let intent = new.intent.unwrap_or(BootIntent::Profile { name: None });
    check_intent(store, "intent", &intent).await?;
    let bmc = match &new.bmc {
        Some(input) => Some(crate::power::seal(&state, "bmc", input)?),
        None => None,
    };
    let now = Utc::now();
    let machine = Machine {
        id: uuid::Uuid::new_v4(),
        name: new.name,
        macs: new.macs,
        uuid: new.uuid,
        arch: new.arch,
        labels: new.labels,
        intent,
        bmc,
        created_at: now,
        updated_at: now,
    };
    check_unique(store, &machine).await?;
    store.create_machine(&machine).await?;
    // Answer with what the store kept (it may round timestamps).
    let machine = store.get_machine(machine.id).await?;
    machine_changed(&state, &machine, "created").await?;
    Ok((StatusCode::CREATED, Json(machine)))
}

/// One machine.
#[utoipa::path(get, path = "/api/v1/machines/{ref}", tag = "machines",
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 200, body = Machine),
        (status = 404, description = "No such machine", body = ErrorBody),
    ))]
pub async fn get_machine(
    State(state): State<ApiState>,
    ApiPath(reference): ApiPath<String>,
) -> ApiResult<Json<Machine>> {
    Ok(Json(
        find_machine(state.inventory.store().as_ref(), &reference).await?,
    ))
}

/// Changes some fields of a machine.
#[utoipa::path(patch, path = "/api/v1/machines/{ref}", tag = "machines", request_body = MachinePatch,
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 200, description = "The machine as changed", body = Machine),
        (status = 400, description = "Malformed JSON or an invalid field", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 409, description = "Name or a MAC already in use", body = ErrorBody),
    ))]
pub async fn patch_machine(
    State(state): State<ApiState>,
    ApiPath(reference): ApiPath<String>,
    ApiJson(patch): ApiJson<MachinePatch>,
) -> ApiResult<Json<Machine>> {
    let store = state.inventory.store().as_ref();
    let mut machine = find_machine(store, &reference).await?;
    if let Some(name) = patch.name {
        validate_name("machine name", &name)
            .map_err(|e| ApiError::BadRequest(format!("name: {e}")))?;
        machine.name = name;
    }
    if let Some(macs) = patch.macs {
        check_macs(&macs)?;
        machine.macs = macs;
    }
    if let Some(uuid) = patch.uuid {
        machine.uuid = uuid;
    }
    if let Some(arch) = patch.arch {
        machine.arch = arch;
    }
    if let Some(labels) = patch.labels {
        check_labels(&labels)?;
        machine.labels = labels;
    }
    let intent_set = patch.intent.is_some();
    if let Some(intent) = patch.intent {
        check_intent(store, "intent", &intent).await?;
        machine.intent = intent;
    }
    if let Some(bmc) = patch.bmc {
        machine.bmc = match bmc {
            Some(input) => Some(crate::power::seal(&state, "bmc", &input)?),
            None => None,
        };
    }
    machine.updated_at = Utc::now();
    check_unique(store, &machine).await?;
    store.update_machine(&machine).await?;
    if intent_set {
        // As in `set_boot`: a new intent withdraws pending installs.
        store
            .replace_installs(machine.id, &[], &machine.intent, machine.updated_at)
            .await?;
    }
    let machine = store.get_machine(machine.id).await?;
    machine_changed(&state, &machine, "updated").await?;
    Ok(Json(machine))
}

/// Removes a machine.
///
/// Its events stay in the log.
#[utoipa::path(delete, path = "/api/v1/machines/{ref}", tag = "machines",
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such machine", body = ErrorBody),
    ))]
pub async fn delete_machine(
    State(state): State<ApiState>,
    ApiPath(reference): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let store = state.inventory.store().as_ref();
    let machine = find_machine(store, &reference).await?;
    store.delete_machine(machine.id).await?;
    machine_changed(&state, &machine, "deleted").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets what the machine boots next.
///
/// `{"kind": "local_disk"}`, `{"kind": "profile", "name": "debian-12"}` (or
/// without `name`: selectors decide), `{"kind": "menu", "entries": [...]}`, or
/// `{"kind": "discover"}`. Referenced profiles must exist. The machine's
/// pending installs are withdrawn (cancelled).
#[utoipa::path(put, path = "/api/v1/machines/{ref}/boot", tag = "machines", request_body = BootIntent,
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs")),
    responses(
        (status = 200, description = "The machine with its new intent", body = Machine),
        (status = 400, description = "Malformed intent or unknown profile", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
    ))]
pub async fn set_boot(
    State(state): State<ApiState>,
    ApiPath(reference): ApiPath<String>,
    ApiJson(intent): ApiJson<BootIntent>,
) -> ApiResult<Json<Machine>> {
    let store = state.inventory.store().as_ref();
    let machine = find_machine(store, &reference).await?;
    check_intent(store, "intent", &intent).await?;
    // A new intent withdraws the machine's pending installs (an install or an
    // install menu): their files stop being served and their callbacks refused.
    store
        .replace_installs(machine.id, &[], &intent, Utc::now())
        .await?;
    let machine = store.get_machine(machine.id).await?;
    machine_changed(&state, &machine, "boot_set").await?;
    Ok(Json(machine))
}

/// Events of one machine (by id or any of its MACs), in the order they were
/// recorded (by id; `at` may run a few milliseconds out of that order).
#[utoipa::path(get, path = "/api/v1/machines/{ref}/timeline", tag = "machines",
    params(("ref" = String, Path, description = "Machine id, name, or any of its MACs"), TimelineQuery),
    responses(
        (status = 200, body = Vec<Event>),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
    ))]
pub async fn machine_timeline(
    State(state): State<ApiState>,
    ApiPath(reference): ApiPath<String>,
    ApiQuery(query): ApiQuery<TimelineQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    let store = state.inventory.store().as_ref();
    let machine = find_machine(store, &reference).await?;
    let filter = EventFilter {
        machine: Some(machine.id),
        after_id: query.after,
        limit: crate::events::page_limit(query.limit)?,
        ..EventFilter::default()
    };
    Ok(Json(store.list_events(&filter).await?))
}
