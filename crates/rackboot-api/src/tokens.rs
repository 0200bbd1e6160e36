//! `/api/v1/tokens` (admin): named API tokens with roles, and
//! `/api/v1/whoami`: the calling token's name and role. A token is shown
//! once, in the answer that created it; the server keeps its SHA-256.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use rackboot_core::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};

/// The calling token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// Recorded as `api:NAME` in what this token changes.
    pub name: String,
    pub role: Role,
}

/// An API token as listed: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    /// `store` (made with `rackboot token create`) or `config` (the
    /// server's own admin token, from its state directory; not revocable
    /// through the API).
    pub source: String,
    pub created_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    /// The last request made with it, to within a minute.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// 1-63 letters, digits, '.', '_' or '-'; unique.
    pub name: String,
    pub role: Role,
}

/// A new token: the only answer that holds it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// `rbt_` and 64 hex digits. Shown once: keep it.
    pub token: String,
}

/// The calling token's name and role.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "access",
    responses((status = 200, body = WhoAmI)))]
pub async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: caller.name,
        role: caller.role,
    })
}

/// Every API token, by name: the server's own, then the stored ones.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "access",
    responses((status = 200, body = Vec<TokenInfo>)))]
pub async fn list_tokens(State(state): State<ApiState>) -> ApiResult<Json<Vec<TokenInfo>>> {
    let mut out: Vec<TokenInfo> = state
        .auth
        .tokens
        .iter()
        .map(|t| TokenInfo {
            name: t.name.clone(),
            role: Role::Admin,
            source: "config".into(),
            created_at: None,
            created_by: None,
            last_used_at: None,
        })
        .collect();
    out.extend(
        state
            .fleet
            .list_tokens()
            .await?
            .into_iter()
            .map(|t| TokenInfo {
                name: t.name,
                role: t.role,
                source: "store".into(),
                created_at: Some(t.created_at),
                created_by: Some(t.created_by),
                last_used_at: t.last_used_at,
            }),
    );
    Ok(Json(out))
}

/// Creates a token; the answer holds it, once.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "access", request_body = TokenRequest,
    responses(
        (status = 201, description = "Created: keep `token`, it is not shown again", body = TokenCreated),
        (status = 400, description = "A bad name or role", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
    ))]
pub async fn create_token(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<TokenRequest>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    if state.auth.has_name(&body.name) {
        return Err(ApiError::Conflict(format!(
            "{:?} is the server's own token's name",
            body.name
        )));
    }
    let new = state
        .fleet
        .create_token(&body.name, body.role, &caller.actor())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            name: new.record.name,
            role: new.record.role,
            created_at: new.record.created_at,
            token: new.token,
        }),
    ))
}

/// Revokes a token: every request with it is refused from now on.
#[utoipa::path(delete, path = "/api/v1/tokens/{name}", tag = "access",
    params(("name" = String, Path, description = "Token name")),
    responses(
        (status = 200, description = "Revoked", body = TokenInfo),
        (status = 404, description = "No such token", body = ErrorBody),
        (status = 409, description = "The server's own token (replace its file and restart instead)", body = ErrorBody),
    ))]
pub async fn revoke_token(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<TokenInfo>> {
    if state.auth.has_name(&name) {
        return Err(ApiError::Conflict(format!(
            "{name:?} is the server's own admin token: it cannot be revoked through the API \
             (replace the file it comes from in the state directory and restart the server)"
        )));
    }
    let revoked = state.fleet.revoke_token(&name, &caller.actor()).await?;
    Ok(Json(TokenInfo {
        name: revoked.name,
        role: revoked.role,
        source: "store".into(),
        created_at: Some(revoked.created_at),
        created_by: Some(revoked.created_by),
        last_used_at: revoked.last_used_at,
    }))
}
