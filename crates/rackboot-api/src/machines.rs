//! `/api/v1/machines`: enroll, inspect, change and remove machines, set what they
//! boot next, and read their timeline. A machine is addressed by its id, its name
//! or any of its MACs, so operators can paste whichever they have at hand.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, StatusCode, Uri};
use chrono::Utc;
use rackboot_core::{Arch, BootIntent, Event, MacAddr, Machine, ProvisionState};
use rackboot_fleet::Fleet;
use rackboot_store::EventFilter;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::machine_query::{MachineFilter, MachineListQuery, MachineSort, TOTAL_COUNT};
use crate::paging::Page;

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

/// Refuses MACs no NIC has (all-zero, broadcast, multicast), naming the field.
fn check_macs(macs: &[MacAddr]) -> ApiResult<()> {
    for (i, mac) in macs.iter().enumerate() {
        mac.check_assignable()
            .map_err(|e| ApiError::BadRequest(format!("macs[{i}]: {e}")))?;
    }
    Ok(())
}

/// Refuses a menu without entries or with an unbounded timeout.
pub(crate) fn check_intent_shape(field: &str, intent: &BootIntent) -> ApiResult<()> {
    if let BootIntent::Menu(menu) = intent {
        menu.validate()
            .map_err(|e| ApiError::BadRequest(format!("{field}.{e}")))?;
    }
    Ok(())
}

/// Finds a machine by id, then name, then any of its MACs.
pub(crate) async fn find_machine(fleet: &Fleet, reference: &str) -> ApiResult<Machine> {
    Ok(fleet.find_machine(reference).await?)
}

/// Machines, a page at a time (see [`crate::paging`]): by name, or filtered
/// and sorted (see [`crate::machine_query`]).
#[utoipa::path(get, path = "/api/v1/machines", tag = "machines", params(MachineListQuery),
    responses(
        (status = 200, description = "A page of machines, sorted by name (byte order) unless \
            `sort` says otherwise. When more follow, `X-Next-Cursor` holds the cursor of the \
            next page and `Link` its URL. `X-Total-Count` counts the machines the filters \
            keep, on every page.",
            body = Vec<Machine>,
            headers(
                ("X-Next-Cursor" = String, description = "Pass as `cursor` for the next page"),
                ("Link" = String, description = "The next page: `<URL>; rel=\"next\"`"),
                ("X-Total-Count" = u64, description = "Machines the filters keep, on all pages"),
            )),
        (status = 400, description = "Bad `limit`, `cursor`, filter or `sort`; the message names it", body = ErrorBody),
    ))]
pub async fn list_machines(
    State(state): State<ApiState>,
    uri: Uri,
    ApiQuery(query): ApiQuery<MachineListQuery>,
) -> ApiResult<([(HeaderName, String); 1], Page<Machine>)> {
    let limit = crate::paging::page_size(
        query.limit,
        crate::paging::DEFAULT_PAGE,
        crate::paging::MAX_PAGE,
    )?;
    let total_header = HeaderName::from_static(TOTAL_COUNT);
    if query.is_plain() {
        let machines = state
            .fleet
            .store()
            .list_machines_page(query.cursor.as_deref(), limit)
            .await?;
        let total = state.fleet.snapshot().machines.len();
        return Ok((
            [(total_header, total.to_string())],
            Page::new(machines, limit, uri, |m| m.name.clone()),
        ));
    }
    let filter = MachineFilter::parse(&query)?;
    let sort = MachineSort::parse(query.sort.as_deref())?;
    let snapshot = state.fleet.snapshot();
    let page = crate::machine_query::select(
        snapshot.machines.iter().map(|m| m.as_ref()),
        &filter,
        sort,
        query.cursor.as_deref(),
        limit as usize,
    )?;
    Ok((
        [(total_header, page.total.to_string())],
        Page {
            items: page.machines,
            next: page.next,
            uri,
        },
    ))
}

/// A machine from its enrolment request: checked, BMC password sealed.
fn machine_from_request(state: &ApiState, new: NewMachine) -> ApiResult<Machine> {
    check_macs(&new.macs)?;
    let intent = new.intent.unwrap_or(BootIntent::Profile { name: None });
    check_intent_shape("intent", &intent)?;
    let bmc = match &new.bmc {
        Some(input) => Some(crate::power::seal(state, "bmc", input)?),
        None => None,
    };
    let now = Utc::now();
    Ok(Machine {
        id: uuid::Uuid::new_v4(),
        name: new.name,
        macs: new.macs,
        uuid: new.uuid,
        arch: new.arch,
        labels: new.labels,
        intent,
        bmc,
        state: ProvisionState::Enrolled,
        state_reason: None,
        state_changed_at: None,
        maintenance: None,
        facts: None,
        facts_at: None,
        created_at: now,
        updated_at: now,
    })
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
    caller: Caller,
    ApiJson(new): ApiJson<NewMachine>,
) -> ApiResult<(StatusCode, Json<Machine>)> {
    let machine = machine_from_request(&state, new)?;
    let machine = state.fleet.create_machine(machine, &caller.actor()).await?;
    Ok((StatusCode::CREATED, Json(machine)))
}

/// Most machines in one bulk enrolment request.
pub const MAX_BULK: usize = 5000;

/// Body of `POST /api/v1/machines:bulk`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkMachines {
    /// 1 to 5,000 machines, each as for `POST /api/v1/machines`.
    pub machines: Vec<NewMachine>,
}

/// One row's outcome in a bulk enrolment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkRow {
    /// Position of the row in the request, from 0.
    pub index: usize,
    pub name: String,
    /// The new machine's id, when it was enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Option<uuid::Uuid>,
    /// Why it was not, naming the field or what it collided with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Response of `POST /api/v1/machines:bulk`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkResult {
    pub created: usize,
    pub failed: usize,
    /// Every row, in request order.
    pub results: Vec<BulkRow>,
}

/// Enrolls many machines in one transaction (bulk import).
///
/// Each row is checked and stored on its own: a bad field or a taken name
/// or MAC fails that row (its `error` says why), the others are enrolled.
/// One `machine_changed` event (action `imported`) names the machines.
#[utoipa::path(post, path = "/api/v1/machines:bulk", tag = "machines", request_body = BulkMachines,
    responses(
        (status = 200, description = "Every row's outcome", body = BulkResult),
        (status = 400, description = "Malformed JSON, or no or too many rows", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB", body = ErrorBody),
    ))]
pub async fn bulk_create_machines(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(bulk): ApiJson<BulkMachines>,
) -> ApiResult<Json<BulkResult>> {
    let n = bulk.machines.len();
    if n == 0 || n > MAX_BULK {
        return Err(ApiError::BadRequest(format!(
            "machines: {n} rows; send 1 to {MAX_BULK} per request"
        )));
    }
    let mut rows: Vec<BulkRow> = Vec::with_capacity(n);
    let mut checked = Vec::with_capacity(n);
    for (index, new) in bulk.machines.into_iter().enumerate() {
        let name = new.name.clone();
        let error = match machine_from_request(&state, new) {
            Ok(m) => {
                checked.push(m);
                None
            }
            Err(e) => Some(e.to_string()),
        };
        rows.push(BulkRow {
            index,
            name,
            id: None,
            error,
        });
    }
    let mut outcomes = state
        .fleet
        .create_machines(checked, &caller.actor())
        .await?
        .into_iter();
    for row in rows.iter_mut().filter(|r| r.error.is_none()) {
        match outcomes.next() {
            Some(Ok(m)) => row.id = Some(m.id),
            Some(Err(e)) => row.error = Some(e.to_string()),
            None => row.error = Some("not stored".into()),
        }
    }
    let created = rows.iter().filter(|r| r.id.is_some()).count();
    Ok(Json(BulkResult {
        created,
        failed: n - created,
        results: rows,
    }))
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
    Ok(Json(find_machine(&state.fleet, &reference).await?))
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
    caller: Caller,
    ApiPath(reference): ApiPath<String>,
    ApiJson(patch): ApiJson<MachinePatch>,
) -> ApiResult<Json<Machine>> {
    let mut machine = find_machine(&state.fleet, &reference).await?;
    if let Some(name) = patch.name {
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
        machine.labels = labels;
    }
    let intent_set = patch.intent.is_some();
    if let Some(intent) = patch.intent {
        check_intent_shape("intent", &intent)?;
        machine.intent = intent;
    }
    if let Some(bmc) = patch.bmc {
        machine.bmc = match bmc {
            Some(input) => Some(crate::power::seal(&state, "bmc", &input)?),
            None => None,
        };
    }
    // As in `set_boot`: a new intent withdraws pending installs.
    let machine = state
        .fleet
        .update_machine(machine, intent_set, &caller.actor())
        .await?;
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
    caller: Caller,
    ApiPath(reference): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let machine = find_machine(&state.fleet, &reference).await?;
    state
        .fleet
        .delete_machine(&machine, &caller.actor())
        .await?;
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
    caller: Caller,
    ApiPath(reference): ApiPath<String>,
    ApiJson(intent): ApiJson<BootIntent>,
) -> ApiResult<Json<Machine>> {
    check_intent_shape("intent", &intent)?;
    let machine = find_machine(&state.fleet, &reference).await?;
    // A new intent withdraws the machine's pending installs (an install or an
    // install menu): their files stop being served and their callbacks refused.
    let machine = state
        .fleet
        .set_intent(&machine, intent, &caller.actor())
        .await?;
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
    let machine = find_machine(&state.fleet, &reference).await?;
    let filter = EventFilter {
        machine: Some(machine.id),
        after_id: query.after,
        limit: crate::events::page_limit(query.limit)?,
        ..EventFilter::default()
    };
    Ok(Json(state.fleet.store().list_events(&filter).await?))
}
