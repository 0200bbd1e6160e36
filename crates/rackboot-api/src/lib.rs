//! REST API (/api/v1), OpenAPI document, server-sent events, Prometheus metrics,
//! token auth.
//!
//! [`router`] builds the whole HTTP surface from an [`ApiState`]; [`run`] serves
//! it on a listener until shutdown. `/api/v1/*` needs `Authorization: Bearer
//! <token>` of a token whose role allows the operation (see [`auth`]);
//! `/api/openapi.json` and `/metrics` are open.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use rackboot_core::Profile;
use rackboot_fleet::Fleet;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod agent_http;
pub mod auth;
pub mod cluster;
pub mod error;
pub mod events;
pub mod extract;
pub mod images;
pub mod install_menu;
pub mod installs;
pub mod lifecycle;
pub mod limits;
pub mod machine_query;
pub mod machines;
pub mod metrics_catalog;
pub mod openapi;
mod openapi_machine;
pub mod ops;
pub mod paging;
pub mod power;
pub mod profiles;
pub mod selectors;
pub mod tokens;
pub mod webhooks;
pub mod workflows;

pub use auth::{AuthConfig, Caller};
pub use error::{ApiError, ErrorBody};
pub use openapi::openapi;
pub use ops::{ServiceInfo, StatusInfo};
pub use rackboot_core::Role;

/// Checks a profile's templates before it is stored (after `Profile::validate`);
/// `Err` is shown to the operator as a 400, so it should name the field
/// (`cmdline: ...`). Defaults to [`rackboot_boot::validate_profile_templates`].
pub type TemplateValidator = Arc<dyn Fn(&Profile) -> Result<(), String> + Send + Sync>;

/// Everything the handlers need. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    /// Every write goes through it (store, snapshot, events); reads use its
    /// store and snapshot.
    pub fleet: Arc<Fleet>,
    pub auth: Arc<AuthConfig>,
    /// `/metrics` answers 404 when `None`. Calling `run_upkeep` is the owner's job.
    pub metrics: Option<PrometheusHandle>,
    pub status: Arc<StatusInfo>,
    pub validate_templates: TemplateValidator,
    /// Ends open event streams, so a graceful shutdown does not wait on them.
    pub shutdown: CancellationToken,
    /// Interval of SSE keep-alive comments.
    pub sse_keep_alive: Duration,
    /// Where machines reach boot HTTP (`http://10.77.0.1:8080`): install
    /// checks and previews render with it.
    pub boot_base_url: String,
    /// BMC power control; its endpoints answer 404 when `None`.
    pub power: Option<power::PowerApi>,
    /// The server's key: seals install secrets (Windows passwords) at request
    /// and opens them for checks and previews. Installs that carry secrets are
    /// refused without it.
    pub secret_key: Option<Arc<rackboot_seal::SecretKey>>,
    /// The workflow engine; its endpoints answer 404 when `None`.
    pub engine: Option<rackboot_engine::Engine>,
    /// The image catalog; its endpoints answer 404 when `None`.
    pub images_dir: Option<std::path::PathBuf>,
    /// Where profiles' relative kernels and initrds are served from: a
    /// profile naming a file that is not there is refused unless forced.
    /// Not checked when `None`.
    pub asset_dir: Option<std::path::PathBuf>,
    /// Request timeouts and body limits ([`limits::route_limits`]).
    pub limits: limits::ApiLimits,
}

impl ApiState {
    /// State with no metrics, default status, profile templates checked by
    /// [`rackboot_boot::validate_profile_templates`] and a 15 s SSE keep-alive.
    pub fn new(fleet: Arc<Fleet>, auth: AuthConfig) -> ApiState {
        ApiState {
            fleet,
            auth: Arc::new(auth),
            metrics: None,
            status: Arc::new(StatusInfo::default()),
            validate_templates: Arc::new(rackboot_boot::validate_profile_templates),
            shutdown: CancellationToken::new(),
            sse_keep_alive: events::DEFAULT_KEEP_ALIVE,
            boot_base_url: "http://127.0.0.1:8080".into(),
            power: None,
            secret_key: None,
            engine: None,
            images_dir: None,
            asset_dir: None,
            limits: limits::ApiLimits::default(),
        }
    }
}

/// The API's routes. Merge it with other routers or serve it with [`run`].
pub fn router(state: ApiState) -> Router {
    let (v1, _) = openapi::v1_routes().split_for_parts();
    let (open, _) = openapi::open_routes().split_for_parts();
    v1.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ))
    .merge(open)
    // Per-route limits replace axum's one 2 MB body limit for every route.
    .route_layer(middleware::from_fn_with_state(
        state.limits,
        limits::enforce,
    ))
    .layer(axum::extract::DefaultBodyLimit::disable())
    .fallback(not_found)
    .method_not_allowed_fallback(method_not_allowed)
    .layer(middleware::from_fn(count_requests))
    .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled; open event
/// streams end at shutdown.
pub async fn run(
    listener: TcpListener,
    mut state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    state.shutdown = shutdown.clone();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "api listening");
    }
    rackboot_boot::serve_http(
        listener,
        router(state),
        rackboot_boot::ConnLimits::API,
        "api",
        shutdown.cancelled_owned(),
    )
    .await
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(ErrorBody {
            error: format!("{method} is not allowed on {}", uri.path()),
        }),
    )
        .into_response()
}

async fn count_requests(req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let response = next.run(req).await;
    metrics::counter!(
        "rackboot_api_requests_total",
        "method" => method,
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    response
}

/// The method as a metric label: HTTP allows any token as a method, so
/// others are counted together rather than each making a series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
