//! `/api/v1/cluster`: the servers sharing this one's store, and which of
//! them owns a machine (its BMC polling and workflows).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use crate::machines::find_machine;

/// One live server.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterMember {
    /// Its current incarnation (a new one after its heartbeat lapsed).
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    pub name: String,
    /// Where its API and agent endpoints are.
    pub api_url: String,
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat, by the database's clock.
    pub heartbeat_at: DateTime<Utc>,
    /// The server that answered.
    pub this_server: bool,
}

/// The cluster as the answering server sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// False for a server alone on its store (SQLite, or clustering off).
    pub clustered: bool,
    /// False while the answering server cannot record its heartbeat: it owns
    /// nothing then.
    pub healthy: bool,
    pub members: Vec<ClusterMember>,
    /// With `?machine=`: the member that owns it (its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub owner: Option<uuid::Uuid>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClusterQuery {
    /// Also say which member owns this machine (id, name or MAC).
    pub machine: Option<String>,
}

/// Live servers sharing this store, and a machine's owner.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "ops", params(ClusterQuery),
    responses(
        (status = 200, body = ClusterStatus),
        (status = 404, description = "`machine` names no machine", body = ErrorBody),
    ))]
pub async fn cluster_status(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ClusterQuery>,
) -> ApiResult<Json<ClusterStatus>> {
    let machine = match &query.machine {
        Some(r) => Some(find_machine(&state.fleet, r).await?.id),
        None => None,
    };
    let Some(cluster) = state.fleet.cluster() else {
        return Ok(Json(ClusterStatus {
            clustered: false,
            healthy: true,
            members: Vec::new(),
            owner: None,
        }));
    };
    let view = cluster.view();
    Ok(Json(ClusterStatus {
        clustered: true,
        healthy: view.healthy,
        members: view
            .members
            .iter()
            .map(|m| ClusterMember {
                id: m.id,
                name: m.name.clone(),
                api_url: m.api_url.clone(),
                started_at: m.started_at,
                heartbeat_at: m.heartbeat_at,
                this_server: m.id == view.me,
            })
            .collect(),
        owner: machine.and_then(|m| view.owner_of(m)),
    }))
}
