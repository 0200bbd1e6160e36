//! Operational endpoints: server status, DHCP leases, Prometheus metrics and the
//! OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::{Uri, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use rackboot_core::{Lease, LeaseState};
use serde::Serialize;
use utoipa::ToSchema;

use crate::ApiState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use crate::paging::{Page, PageQuery};

/// One service of the rackboot process and whether it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ServiceInfo {
    /// `dhcp`, `tftp`, `boot_http`, `api`...
    pub name: String,
    pub enabled: bool,
    /// Mode or listen address, for people: "proxy on 10.77.0.1:67".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the binary knows about itself, shown by `/api/v1/status`.
#[derive(Debug, Clone)]
pub struct StatusInfo {
    pub version: String,
    pub services: Vec<ServiceInfo>,
    pub started_at: DateTime<Utc>,
    /// The state directory this server holds.
    pub state_dir: Option<String>,
    /// This run's id, also in the state directory's lock file: a client
    /// beside a state directory can tell whether this server holds it.
    pub instance: Option<String>,
}

impl Default for StatusInfo {
    fn default() -> Self {
        StatusInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            services: Vec::new(),
            started_at: Utc::now(),
            state_dir: None,
            instance: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Counts {
    pub machines: usize,
    pub profiles: usize,
    pub selectors: usize,
    /// Every lease row, whatever its state.
    pub leases: usize,
    pub leases_bound: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Status {
    pub version: String,
    /// Store backend: `sqlite` or `postgres`.
    pub backend: String,
    pub services: Vec<ServiceInfo>,
    pub started_at: DateTime<Utc>,
    pub counts: Counts,
    /// Events lost because the persist queue was full since start.
    pub events_dropped: u64,
    /// The state directory this server holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    /// This run's id, also written in the state directory's lock file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// Version, store backend, services and inventory counts.
#[utoipa::path(get, path = "/api/v1/status", tag = "ops",
    responses((status = 200, description = "The server's status", body = Status)))]
pub async fn status(State(state): State<ApiState>) -> ApiResult<Json<Status>> {
    let store = state.fleet.store();
    let snapshot = state.fleet.snapshot();
    let leases = store.list_leases().await?;
    Ok(Json(Status {
        version: state.status.version.clone(),
        backend: store.backend().to_string(),
        services: state.status.services.clone(),
        started_at: state.status.started_at,
        counts: Counts {
            machines: snapshot.machines.len(),
            profiles: snapshot.profiles.len(),
            selectors: snapshot.selectors.len(),
            leases: leases.len(),
            leases_bound: leases
                .iter()
                .filter(|l| l.state == LeaseState::Bound)
                .count(),
        },
        events_dropped: state.fleet.events().dropped(),
        state_dir: state.status.state_dir.clone(),
        instance: state.status.instance.clone(),
    }))
}

/// DHCP leases by address, a page at a time (see `GET /api/v1/machines`).
#[utoipa::path(get, path = "/api/v1/leases", tag = "ops", params(PageQuery),
    responses(
        (status = 200, description = "A page of leases in address order. When more follow, \
            `X-Next-Cursor` holds the cursor of the next page and `Link` its URL.",
            body = Vec<Lease>,
            headers(
                ("X-Next-Cursor" = String, description = "Pass as `cursor` for the next page"),
                ("Link" = String, description = "The next page: `<URL>; rel=\"next\"`"),
            )),
        (status = 400, description = "Bad `limit` or `cursor`", body = ErrorBody),
    ))]
pub async fn list_leases(
    State(state): State<ApiState>,
    uri: Uri,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Page<Lease>> {
    let limit = query.limit()?;
    let after =
        match &query.cursor {
            Some(c) => Some(c.parse::<std::net::Ipv4Addr>().map_err(|_| {
                ApiError::BadRequest(format!("cursor: {c:?} is not an IPv4 address"))
            })?),
            None => None,
        };
    let leases = state.fleet.store().list_leases_page(after, limit).await?;
    Ok(Page::new(leases, limit, uri, |l| l.ip.to_string()))
}

/// Prometheus metrics in the text exposition format.
///
/// Not authenticated, like most exporters: put it behind a firewall if counters are sensitive.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 404, description = "Metrics are not enabled", body = ErrorBody),
    ))]
pub async fn metrics(State(state): State<ApiState>) -> ApiResult<impl IntoResponse> {
    let handle = state
        .metrics
        .as_ref()
        .ok_or_else(|| ApiError::Disabled("metrics are not enabled".into()))?;
    // Inventory gauges are read at scrape time: always current, no task.
    let leases = state.fleet.store().list_leases().await?;
    crate::metrics_catalog::set_inventory_gauges(
        state.fleet.snapshot().machines.iter().map(|m| m.state),
        leases.iter().map(|l| l.state),
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    ))
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "ops",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::OPENAPI_JSON.as_str(),
    )
}
