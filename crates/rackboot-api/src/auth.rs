//! Bearer-token check for `/api/v1`. Tokens are compared in constant time so a
//! client cannot learn a token byte by byte from response timing.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rackboot_core::secret::constant_time_eq;

use crate::ApiState;
use crate::error::ApiError;

/// Who may call `/api/v1`.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// Accepted bearer tokens. Empty means every `/api/v1` request is refused.
    pub tokens: Vec<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens themselves.
        f.debug_struct("AuthConfig")
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .finish()
    }
}

impl AuthConfig {
    pub fn new(tokens: impl IntoIterator<Item = impl Into<String>>) -> AuthConfig {
        AuthConfig {
            tokens: tokens.into_iter().map(Into::into).collect(),
        }
    }

    /// True when `presented` equals one of the tokens. Every token is compared,
    /// each over its full length, whatever matched earlier.
    pub fn accepts(&self, presented: &str) -> bool {
        let mut ok = false;
        for token in &self.tokens {
            ok |= constant_time_eq(token.as_bytes(), presented.as_bytes());
        }
        ok
    }
}

/// The token from `Authorization: Bearer <token>`, if the header has that form.
fn bearer(req: &Request) -> Option<&str> {
    let value = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(crate) async fn require_token(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    match bearer(&req) {
        Some(token) if state.auth.accepts(token) => next.run(req).await,
        _ => {
            metrics::counter!("rackboot_api_auth_failures_total").increment(1);
            ApiError::Unauthorized.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_tokens() {
        let auth = AuthConfig::new(["alpha-token", "beta"]);
        assert!(auth.accepts("alpha-token"));
        assert!(auth.accepts("beta"));
        assert!(!auth.accepts("alpha-tokeN"));
        assert!(!auth.accepts("alpha"));
        assert!(!auth.accepts(""));
        assert!(!AuthConfig::default().accepts(""));
    }

    #[test]
    fn debug_hides_tokens() {
        let shown = format!("{:?}", AuthConfig::new(["s3cret"]));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
