//! The agent endpoints (`/agent/v1/...`) and the installed system's
//! first-boot callback (`/deploy/{workflow}/booted/{token}`), served on the
//! boot HTTP listener that machines reach.
//!
//! An agent proves who it is with its per-boot token (`Authorization: Bearer`),
//! which is accepted only from the address it is bound to: a missing or
//! unknown token is 401, the right token from another address is 403. A
//! report for an attempt that is no longer current is 409 (the agent drops it).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rackboot_agent_proto::{
    Heartbeat, HeartbeatReply, Hello, HelloReply, MAX_LOG_BYTES, Progress, StepReport, paths,
};
use rackboot_core::{AgentSession, EventKind, NewEvent};
use rackboot_engine::{AgentReject, Engine};
use rackboot_fleet::{AgentAuthError, Fleet, on_machine};
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiError, ErrorBody};
use crate::extract::parse_json;

/// What the agent endpoints need.
#[derive(Clone)]
pub struct AgentHttp {
    pub fleet: Arc<Fleet>,
    pub engine: Engine,
    /// Where uploaded agent logs are kept (`<dir>/<machine>/<time>-<attempt>.log`).
    pub logs_dir: Option<PathBuf>,
}

/// The agent routes and the first-boot callback. Serve with connect info
/// (`into_make_service_with_connect_info::<SocketAddr>`): tokens are bound to
/// the peer address.
pub fn router(state: AgentHttp) -> Router {
    Router::new()
        .route(paths::HELLO, post(hello))
        .route(paths::HEARTBEAT, post(heartbeat))
        .route("/agent/v1/attempts/{attempt}/progress", post(progress))
        .route("/agent/v1/attempts/{attempt}/result", post(result))
        .route(paths::LOG, post(log))
        .route(
            "/deploy/{workflow}/booted/{token}",
            get(booted).post(booted),
        )
        .with_state(state)
}

fn peer(req_parts: &axum::http::Extensions) -> Option<IpAddr> {
    req_parts.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The session a request's token opens, or the refusal to send.
fn authenticate(state: &AgentHttp, req: &Request) -> Result<AgentSession, Refusal> {
    let Some(peer) = peer(req.extensions()) else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "cannot tell the caller's address".into(),
        ));
    };
    state
        .fleet
        .authenticate_agent(bearer(req.headers()), peer)
        .map_err(|e| {
            metrics::counter!("rackboot_agent_auth_refused_total").increment(1);
            let status = match e {
                AgentAuthError::WrongAddress { machine, .. } => {
                    // A valid token from another host: someone has a machine's
                    // token, which its owner should see on the timeline.
                    if let Some(machine) = state.fleet.snapshot().machine_by_id(machine) {
                        state.fleet.record_refusal(
                            machine,
                            "agent_request",
                            "wrong_address",
                            Some(peer),
                            &e.to_string(),
                        );
                    }
                    StatusCode::FORBIDDEN
                }
                AgentAuthError::Missing | AgentAuthError::Unknown => StatusCode::UNAUTHORIZED,
            };
            error(status, e.to_string())
        })
}

/// A refused agent request: status and message, sent as the API's error JSON.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, axum::Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal(e.status(), e.to_string())
    }
}

fn error(status: StatusCode, message: String) -> Refusal {
    Refusal(status, message)
}

/// Reads the authenticated request's JSON body.
async fn body_of<T: serde::de::DeserializeOwned>(
    state: &AgentHttp,
    req: Request,
) -> Result<(AgentSession, T), Refusal> {
    let session = authenticate(state, &req)?;
    let bytes = axum::body::to_bytes(req.into_body(), 4 << 20)
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )
        })?;
    let value = parse_json(&bytes).map_err(Refusal::from)?;
    Ok((session, value))
}

fn rejected(e: AgentReject) -> Response {
    match e {
        AgentReject::NotCurrent(_) => error(StatusCode::CONFLICT, e.to_string()),
        AgentReject::Stopped => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
    .into_response()
}

async fn hello(State(state): State<AgentHttp>, req: Request) -> Response {
    let (session, hello): (AgentSession, Hello) = match body_of(&state, req).await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    match state.engine.agent_hello(session, hello).await {
        Ok(reply) => axum::Json::<HelloReply>(reply).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn heartbeat(State(state): State<AgentHttp>, req: Request) -> Response {
    let (session, hb): (AgentSession, Heartbeat) = match body_of(&state, req).await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let reply = state.engine.agent_heartbeat(session, hb).await;
    axum::Json::<HeartbeatReply>(reply).into_response()
}

fn attempt_id(s: &str) -> Result<uuid::Uuid, Refusal> {
    s.parse()
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("attempt id {s:?}: {e}")))
}

async fn progress(
    State(state): State<AgentHttp>,
    Path(attempt): Path<String>,
    req: Request,
) -> Response {
    let attempt = match attempt_id(&attempt) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let (session, p): (AgentSession, Progress) = match body_of(&state, req).await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    match state.engine.agent_progress(session, attempt, p).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => rejected(e),
    }
}

async fn result(
    State(state): State<AgentHttp>,
    Path(attempt): Path<String>,
    req: Request,
) -> Response {
    let attempt = match attempt_id(&attempt) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let (session, report): (AgentSession, StepReport) = match body_of(&state, req).await {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    match state.engine.agent_report(session, attempt, report).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => rejected(e),
    }
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    attempt: Option<uuid::Uuid>,
}

/// Bytes of an uploaded log carried in its event (the whole log is in the file).
const LOG_TAIL_IN_EVENT: usize = 16 << 10;

async fn log(State(state): State<AgentHttp>, Query(q): Query<LogQuery>, req: Request) -> Response {
    let session = match authenticate(&state, &req) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let bytes: Bytes = match axum::body::to_bytes(req.into_body(), MAX_LOG_BYTES + 4096).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, format!("log: {e}")).into_response(),
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let Some(machine) = state
        .fleet
        .snapshot()
        .machine_by_id(session.machine)
        .cloned()
    else {
        return error(StatusCode::NOT_FOUND, "machine gone".into()).into_response();
    };
    let mut file = None;
    if let Some(dir) = &state.logs_dir {
        let dir = dir.join(&machine.name);
        let name = format!(
            "{}-{}.log",
            chrono::Utc::now().format("%Y%m%dT%H%M%S"),
            q.attempt.map_or("agent".to_string(), |a| a.to_string())
        );
        let path = dir.join(name);
        let written = tokio::fs::create_dir_all(&dir)
            .await
            .and(tokio::fs::write(&path, text.as_bytes()).await);
        match written {
            Ok(()) => file = Some(path.display().to_string()),
            Err(e) => tracing::warn!("keeping {}'s agent log: {e}", machine.name),
        }
    }
    let tail_start = text.len().saturating_sub(LOG_TAIL_IN_EVENT);
    let tail_start = (tail_start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    state.fleet.emit(on_machine(
        NewEvent::new(
            EventKind::AgentLog,
            format!(
                "{}: agent log uploaded ({} bytes){}",
                machine.name,
                text.len(),
                q.attempt.map_or(String::new(), |a| format!(" for attempt {a}"))
            ),
        )
        .data(json!({"attempt": q.attempt, "bytes": text.len(), "file": file, "tail": &text[tail_start..]})),
        &machine,
    ));
    StatusCode::NO_CONTENT.into_response()
}

/// `GET|POST /deploy/{workflow}/booted/{token}`: the installed system is up.
async fn booted(
    State(state): State<AgentHttp>,
    Path((workflow, token)): Path<(String, String)>,
    req: Request,
) -> Response {
    let Ok(workflow) = workflow.parse::<uuid::Uuid>() else {
        return error(StatusCode::BAD_REQUEST, format!("workflow id {workflow:?}")).into_response();
    };
    let peer = peer(req.extensions()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    match state.engine.booted(workflow, token, peer).await {
        Ok(true) => (StatusCode::OK, "booted: seen\n").into_response(),
        Ok(false) => (StatusCode::OK, "booted: already seen\n").into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
