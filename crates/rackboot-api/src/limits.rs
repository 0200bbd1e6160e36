//! How long an API request may take and how large its body may be, per
//! route. A request over a limit gets a JSON error that says which limit and
//! what to do: 413 (body too large), 408 (the body did not arrive in time) or
//! 503 (the server did not answer in time; the work was stopped).
//!
//! The limits are looked up by the matched route, so a route that needs more
//! (bulk enrolment's body, a BMC power action's wait) gets it without raising
//! the limit for every route.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::error::ErrorBody;

/// Default time from a request's arrival to its response's head. A response
/// that streams (the event stream) is not cut: its head is sent at once.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for operations that wait on slow things: a BMC power action with its
/// verification (a soft off may wait 180 s), deleting an OS tree or an
/// image, a bulk enrolment of 5,000 machines.
pub const DEFAULT_LONG_TIMEOUT: Duration = Duration::from_secs(600);
/// Default largest request body: every API body is a small JSON document
/// (templates and workflow definitions included).
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;
/// Largest body of `POST /api/v1/machines:bulk`: 5,000 rows of up to about
/// 6 KiB each (labels, BMC URL, several MACs).
pub const DEFAULT_BULK_BODY_LIMIT: usize = 32 << 20;

/// The API's request limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    pub timeout: Duration,
    pub long_timeout: Duration,
    pub body_limit: usize,
    pub bulk_body_limit: usize,
}

impl Default for ApiLimits {
    fn default() -> ApiLimits {
        ApiLimits {
            timeout: DEFAULT_TIMEOUT,
            long_timeout: DEFAULT_LONG_TIMEOUT,
            body_limit: DEFAULT_BODY_LIMIT,
            bulk_body_limit: DEFAULT_BULK_BODY_LIMIT,
        }
    }
}

/// The limits of one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimits {
    /// Most time until the response's head; `None`: the operation runs to
    /// its end (an image import converts a file of any size).
    pub answer_within: Option<Duration>,
    /// Most time for the request body to arrive in full.
    pub body_within: Duration,
    /// Largest body in bytes.
    pub body_bytes: usize,
}

/// The limits of `method` on the route pattern `route` (as registered:
/// `/api/v1/machines/{ref}/power`).
pub fn route_limits(limits: &ApiLimits, method: &Method, route: &str) -> RouteLimits {
    let default = RouteLimits {
        answer_within: Some(limits.timeout),
        body_within: limits.timeout,
        body_bytes: limits.body_limit,
    };
    let long = RouteLimits {
        answer_within: Some(limits.long_timeout),
        ..default
    };
    match (method.as_str(), route) {
        ("POST", "/api/v1/machines:bulk") => RouteLimits {
            body_within: limits.long_timeout,
            body_bytes: limits.bulk_body_limit,
            ..long
        },
        // Downloads and converts an image of any size before it answers.
        ("POST", "/api/v1/images") => RouteLimits {
            answer_within: None,
            ..default
        },
        ("POST" | "GET", "/api/v1/machines/{ref}/power")
        | ("PUT", "/api/v1/machines/{ref}/boot-device")
        | ("DELETE", "/api/v1/os/{id}")
        | ("DELETE", "/api/v1/images/{name}") => long,
        _ => default,
    }
}

/// What the guarded body saw; read by [`enforce`] after the handler.
#[derive(Debug, Default)]
struct BodySeen {
    complete: AtomicBool,
    too_large: AtomicBool,
    too_slow: AtomicBool,
}

/// The request body, cut off when it exceeds its size or its time.
struct GuardedBody {
    inner: Body,
    limit: usize,
    received: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
    seen: Arc<BodySeen>,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len());
                    if this.received > this.limit {
                        this.seen.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(axum::Error::new(io::Error::other(
                            format!("request body over {} bytes", this.limit),
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.seen.complete.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.seen.too_slow.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(axum::Error::new(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request body not received in time",
                    )))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    metrics::counter!(
        "rackboot_api_requests_limited_total",
        "reason" => match status {
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::REQUEST_TIMEOUT => "body_timeout",
            _ => "timeout",
        }
    )
    .increment(1);
    let mut response = (status, Json(ErrorBody { error: message })).into_response();
    if status == StatusCode::REQUEST_TIMEOUT {
        // The request was not read to its end: the connection cannot be reused.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

fn too_large(method: &Method, route: &str, limit: usize) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "request body too large: {method} {route} accepts at most {limit} bytes{}",
            if route == "/api/v1/machines" {
                "; enrol many machines with POST /api/v1/machines:bulk (rackboot machine import)"
            } else if route == "/api/v1/machines:bulk" {
                "; send fewer machines per request (rackboot machine import --chunk)"
            } else {
                ""
            }
        ),
    )
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Middleware (a route layer: it needs the matched route) applying
/// [`route_limits`] to each request.
pub async fn enforce(State(limits): State<ApiLimits>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
    let rl = route_limits(&limits, &method, &route);
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > rl.body_bytes as u64) {
        return too_large(&method, &route, rl.body_bytes);
    }
    let seen = Arc::new(BodySeen::default());
    let req = req.map(|inner| {
        if inner.is_end_stream() {
            seen.complete.store(true, Ordering::Relaxed);
        }
        Body::new(GuardedBody {
            inner,
            limit: rl.body_bytes,
            received: 0,
            deadline: Box::pin(tokio::time::sleep(rl.body_within)),
            seen: seen.clone(),
        })
    });
    let response = match rl.answer_within {
        Some(limit) => match tokio::time::timeout(limit, next.run(req)).await {
            Ok(response) => response,
            Err(_) if !seen.complete.load(Ordering::Relaxed) => {
                return refuse(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {}; send it at once",
                        secs(rl.body_within.min(limit))
                    ),
                );
            }
            Err(_) => {
                tracing::warn!(%method, %route, limit = %secs(limit), "API request stopped: no answer in time");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "{method} {route} did not finish within {} and was stopped; it may \
                         have been partly done: check its effect before retrying",
                        secs(limit)
                    ),
                );
            }
        },
        None => next.run(req).await,
    };
    if seen.too_large.load(Ordering::Relaxed) {
        return too_large(&method, &route, rl.body_bytes);
    }
    if seen.too_slow.load(Ordering::Relaxed) {
        return refuse(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}; send it at once",
                secs(rl.body_within)
            ),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_limits_table() {
        let l = ApiLimits {
            timeout: Duration::from_secs(1),
            long_timeout: Duration::from_secs(10),
            body_limit: 100,
            bulk_body_limit: 1000,
        };
        let s = |n| Some(Duration::from_secs(n));
        let table: &[(Method, &str, Option<Duration>, u64, usize)] = &[
            (Method::GET, "/api/v1/machines", s(1), 1, 100),
            (Method::POST, "/api/v1/machines", s(1), 1, 100),
            (Method::POST, "/api/v1/machines:bulk", s(10), 10, 1000),
            (Method::GET, "/api/v1/machines:bulk", s(1), 1, 100),
            (Method::POST, "/api/v1/images", None, 1, 100),
            (Method::GET, "/api/v1/images", s(1), 1, 100),
            (Method::DELETE, "/api/v1/images/{name}", s(10), 1, 100),
            (Method::POST, "/api/v1/machines/{ref}/power", s(10), 1, 100),
            (Method::GET, "/api/v1/machines/{ref}/power", s(10), 1, 100),
            (
                Method::PUT,
                "/api/v1/machines/{ref}/boot-device",
                s(10),
                1,
                100,
            ),
            (Method::DELETE, "/api/v1/os/{id}", s(10), 1, 100),
            (Method::PUT, "/api/v1/templates/{name}", s(1), 1, 100),
            (Method::GET, "/api/v1/events/stream", s(1), 1, 100),
        ];
        for (method, route, answer, body_secs, bytes) in table {
            let got = route_limits(&l, method, route);
            assert_eq!(got.answer_within, *answer, "{method} {route}");
            assert_eq!(
                got.body_within,
                Duration::from_secs(*body_secs),
                "{method} {route}"
            );
            assert_eq!(got.body_bytes, *bytes, "{method} {route}");
        }
    }
}
