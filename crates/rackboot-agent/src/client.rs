//! The agent endpoints of the server ([`rackboot_agent_proto::paths`]), typed.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rackboot_agent_proto::{
    ErrorBody, Heartbeat, HeartbeatReply, Hello, HelloReply, Progress, StepReport, paths,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::ServerAuth;
use crate::http::{self, HttpError, Timeouts, Url};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("POST {path}: HTTP {status}: {message}")]
    Status {
        path: String,
        status: u16,
        message: String,
    },
    #[error("POST {path}: unreadable reply: {why}")]
    BadReply { path: String, why: String },
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// 401/403: the token is not (or no longer) valid for this machine.
    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// 409: the attempt is no longer current.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }
}

#[derive(Clone)]
pub struct Client {
    base: Url,
    token: String,
    pub timeouts: Timeouts,
    /// When set (simulation: `--request-log FILE`), one line per request:
    /// `PATH STATUS MICROSECONDS` (status 0: no answer). Fleet benchmarks
    /// read the agents' view of the server's latency from it.
    pub request_log: Option<Arc<Mutex<std::fs::File>>>,
}

impl Client {
    pub fn new(base_url: &str, token: &str) -> Result<Client, HttpError> {
        Ok(Client {
            base: Url::parse(base_url)?,
            token: token.to_string(),
            timeouts: Timeouts {
                connect: std::time::Duration::from_secs(10),
                io: std::time::Duration::from_secs(30),
            },
            request_log: None,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub fn auth(&self) -> ServerAuth {
        ServerAuth {
            addr: self.base.addr,
            token: self.token.clone(),
        }
    }

    fn post_bytes(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        let started = Instant::now();
        let result = self.post_bytes_untimed(path, content_type, body);
        if let Some(log) = &self.request_log {
            let status = match &result {
                Ok((status, _)) => *status,
                Err(_) => 0,
            };
            let line = format!("{path} {status} {}\n", started.elapsed().as_micros());
            let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
            let _ = file.write_all(line.as_bytes());
        }
        let (status, body) = result?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| {
                    let text = String::from_utf8_lossy(&body);
                    text.chars().take(200).collect()
                });
            return Err(ApiError::Status {
                path: path.to_string(),
                status,
                message,
            });
        }
        Ok(body)
    }

    /// One POST: the status and body, whatever the status.
    fn post_bytes_untimed(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), HttpError> {
        let url = self.base.with_path(path);
        let auth = format!("Bearer {}", self.token);
        let resp = http::send(
            "POST",
            &url,
            &[("Authorization", &auth), ("Accept", "application/json")],
            Some((content_type, body)),
            self.timeouts,
        )?;
        let status = resp.status;
        let body = resp.read_body(1 << 20)?;
        Ok((status, body))
    }

    fn post<T: Serialize, R: DeserializeOwned>(&self, path: &str, body: &T) -> Result<R, ApiError> {
        let json = serde_json::to_vec(body).map_err(|e| ApiError::BadReply {
            path: path.to_string(),
            why: format!("encoding the request: {e}"),
        })?;
        let reply = self.post_bytes(path, "application/json", &json)?;
        serde_json::from_slice(&reply).map_err(|e| ApiError::BadReply {
            path: path.to_string(),
            why: e.to_string(),
        })
    }

    /// Posts a body whose reply does not matter (any 2xx).
    fn post_ignoring_reply<T: Serialize>(&self, path: &str, body: &T) -> Result<(), ApiError> {
        let json = serde_json::to_vec(body).map_err(|e| ApiError::BadReply {
            path: path.to_string(),
            why: format!("encoding the request: {e}"),
        })?;
        self.post_bytes(path, "application/json", &json).map(|_| ())
    }

    pub fn hello(&self, hello: &Hello) -> Result<HelloReply, ApiError> {
        self.post(paths::HELLO, hello)
    }

    pub fn heartbeat(&self, hb: &Heartbeat) -> Result<HeartbeatReply, ApiError> {
        self.post(paths::HEARTBEAT, hb)
    }

    pub fn progress(&self, attempt: uuid::Uuid, p: &Progress) -> Result<(), ApiError> {
        self.post_ignoring_reply(&paths::progress(attempt), p)
    }

    pub fn result(&self, attempt: uuid::Uuid, report: &StepReport) -> Result<(), ApiError> {
        self.post_ignoring_reply(&paths::result(attempt), report)
    }

    /// Uploads the log tail (at most `MAX_LOG_BYTES`, the newest part kept).
    pub fn upload_log(&self, attempt: Option<uuid::Uuid>, log: &[u8]) -> Result<(), ApiError> {
        let path = match attempt {
            Some(a) => format!("{}?attempt={a}", paths::LOG),
            None => paths::LOG.to_string(),
        };
        let tail = &log[log
            .len()
            .saturating_sub(rackboot_agent_proto::MAX_LOG_BYTES)..];
        self.post_bytes(&path, "text/plain; charset=utf-8", tail)
            .map(|_| ())
    }
}
