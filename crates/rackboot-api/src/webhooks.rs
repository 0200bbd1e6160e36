//! `/api/v1/webhooks`: where alerts go (events POSTed as signed JSON; see
//! the rackboot-alerts crate for the headers and how to verify them), each
//! webhook's outbox of deliveries, and test deliveries. A webhook's secret is
//! stored sealed and never returned, except a generated one, once, in the
//! answer that created it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use rackboot_core::{Delivery, Webhook};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Body of `PUT /api/v1/webhooks/{name}`; the name comes from the path.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// `http://` or `https://` URL the events are POSTed to (no credentials in it).
    pub url: String,
    /// Event kinds (`workflow_failed`), `warnings` (every warning kind) or
    /// `*`. Empty or absent means `warnings`.
    #[serde(default)]
    pub events: Vec<String>,
    /// Default true. A disabled webhook gets no new events; deliveries
    /// already queued are still sent.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The HMAC-SHA256 key receivers verify `X-Rackboot-Signature` with.
    /// Absent: a new webhook gets a generated one (in the answer, once); an
    /// existing one keeps its own.
    #[serde(default)]
    pub secret: Option<String>,
}

fn yes() -> bool {
    true
}

/// A stored webhook, and the secret the server generated for it when it
/// generated one (shown in this answer only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookSaved {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// Only in the answer that generated it: keep it, it is not shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// At most this many, newest first (default and maximum 1000).
    pub limit: Option<u32>,
}

fn key(state: &ApiState) -> ApiResult<&rackboot_seal::SecretKey> {
    state.secret_key.as_deref().ok_or_else(|| {
        ApiError::Disabled(
            "webhooks need the server's secret key, which this server has not".into(),
        )
    })
}

/// Every webhook, by name.
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "Every webhook, sorted by name; secrets are never shown", body = Vec<Webhook>)))]
pub async fn list_webhooks(State(state): State<ApiState>) -> ApiResult<Json<Vec<Webhook>>> {
    Ok(Json(state.fleet.list_webhooks().await?))
}

/// One webhook.
#[utoipa::path(get, path = "/api/v1/webhooks/{name}", tag = "webhooks",
    params(("name" = String, Path, description = "Webhook name")),
    responses(
        (status = 200, body = Webhook),
        (status = 404, description = "No such webhook", body = ErrorBody),
    ))]
pub async fn get_webhook(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Webhook>> {
    Ok(Json(state.fleet.get_webhook(&name).await?))
}

/// Creates or replaces a webhook.
#[utoipa::path(put, path = "/api/v1/webhooks/{name}", tag = "webhooks", request_body = WebhookInput,
    params(("name" = String, Path, description = "Webhook name")),
    responses(
        (status = 200, description = "Replaced", body = WebhookSaved),
        (status = 201, description = "Created; `secret` is present when the server generated it", body = WebhookSaved),
        (status = 400, description = "Malformed JSON or an invalid field (named in the message)", body = ErrorBody),
        (status = 404, description = "This server has no secret key to seal webhook secrets with", body = ErrorBody),
    ))]
pub async fn put_webhook(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(input): ApiJson<WebhookInput>,
) -> ApiResult<(StatusCode, Json<WebhookSaved>)> {
    let key = key(&state)?;
    let saved = state
        .fleet
        .put_webhook(
            &name,
            &input.url,
            input.events,
            input.enabled,
            input.secret,
            key,
            &caller.actor(),
        )
        .await?;
    let status = if saved.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(WebhookSaved {
            webhook: saved.webhook,
            secret: saved.generated_secret,
        }),
    ))
}

/// Deletes a webhook and its queued deliveries.
#[utoipa::path(delete, path = "/api/v1/webhooks/{name}", tag = "webhooks",
    params(("name" = String, Path, description = "Webhook name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such webhook", body = ErrorBody),
    ))]
pub async fn delete_webhook(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.fleet.delete_webhook(&name, &caller.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A webhook's deliveries, newest first: state (`pending`, `delivered`,
/// `failed`), attempts, the last answer's status or the last error, and the
/// exact body sent. `event_id` 0 marks a test delivery.
#[utoipa::path(get, path = "/api/v1/webhooks/{name}/deliveries", tag = "webhooks",
    params(("name" = String, Path, description = "Webhook name"), DeliveriesQuery),
    responses(
        (status = 200, body = Vec<Delivery>),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
    ))]
pub async fn list_deliveries(
    State(state): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> ApiResult<Json<Vec<Delivery>>> {
    let limit = crate::events::page_limit(query.limit)?;
    Ok(Json(state.fleet.list_deliveries(&name, limit).await?))
}

/// Queues a test delivery (`kind` `webhook_test`, event id 0) to this
/// webhook only, enabled or not; follow it with `GET .../deliveries`.
#[utoipa::path(post, path = "/api/v1/webhooks/{name}/test", tag = "webhooks",
    params(("name" = String, Path, description = "Webhook name")),
    responses(
        (status = 202, description = "Queued; sent within a second by the alerts task", body = Delivery),
        (status = 404, description = "No such webhook", body = ErrorBody),
    ))]
pub async fn test_webhook(
    State(state): State<ApiState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<Delivery>)> {
    let delivery = state.fleet.test_webhook(&name, &caller.actor()).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)))
}
