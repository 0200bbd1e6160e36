//! API errors and their JSON form: `{"error": "message"}` with a status that says
//! whose fault it is. Bad input is always a 4xx whose message names the field.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rackboot_store::StoreError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people; names the offending field when there is one.
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, a bad query parameter, or a field that fails validation.
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A known token whose role does not allow the operation; the message
    /// names the token and the role needed.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A name or MAC already taken, or a profile still in use.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Disabled(String),
    /// The request body is over axum's limit (2 MiB by default).
    #[error("{0}")]
    TooLarge(String),
    /// The request is well-formed but what it names cannot be rendered or done.
    #[error("{0}")]
    Unprocessable(String),
    /// A BMC failed (authentication, unreachable, timed out, did not obey).
    #[error("{0}")]
    Bmc(String),
    /// The server failed (an I/O error, a task that died); logged.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rackboot_fleet::FleetError> for ApiError {
    fn from(e: rackboot_fleet::FleetError) -> ApiError {
        use rackboot_fleet::FleetError;
        match e {
            FleetError::Invalid(m) => ApiError::BadRequest(m),
            FleetError::NotFound(m) => ApiError::NotFound(m),
            FleetError::Conflict(m) => ApiError::Conflict(m),
            FleetError::Store(e) => ApiError::Store(e),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::Disabled(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Bmc(_) => StatusCode::BAD_GATEWAY,
            ApiError::Store(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND,
            ApiError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            // The database is away (restarting, down): try again later.
            ApiError::Store(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "api request failed");
        }
        let error = match &self {
            ApiError::Store(e) if e.is_unavailable() => format!(
                "the database is unavailable ({e}); retry once it is back (a write cut off \
                 by the outage may or may not have been stored)"
            ),
            _ => self.to_string(),
        };
        let mut response = (status, Json(ErrorBody { error })).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"rackboot\""),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
