//! Who may call `/api/v1`: a bearer token, named, with a role (viewer,
//! operator, admin; see [`Role`]). Tokens come from two places: the
//! server's own files ([`AuthConfig`]: the admin token in the state
//! directory; admin, compared in constant time) and the store (`rackboot
//! token create`; looked up by SHA-256 on every request, so a revoked token
//! is refused at once).
//!
//! Which role an operation needs is [`ROLES`], one table: the middleware
//! enforces it by the matched route and the OpenAPI document shows it as
//! `x-rackboot-role`, so the two cannot drift.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rackboot_core::Role;
use rackboot_core::Role::{Admin, Operator, Viewer};
use rackboot_core::secret::constant_time_eq;
use rackboot_fleet::Actor;

use crate::ApiState;
use crate::error::ApiError;

/// A token from the server's own configuration: always admin.
#[derive(Clone)]
pub struct ConfigToken {
    /// Recorded as `api:NAME`; has a ':' or is reserved, so no stored token
    /// can take it.
    pub name: String,
    pub token: String,
}

/// The tokens of the server's own configuration (admin). Stored tokens are
/// the fleet's.
#[derive(Clone, Default)]
pub struct AuthConfig {
    pub tokens: Vec<ConfigToken>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the tokens themselves.
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("AuthConfig")
            .field("tokens", &names)
            .finish()
    }
}

impl AuthConfig {
    /// Admin tokens named `config:1`, `config:2`... in order.
    pub fn new(tokens: impl IntoIterator<Item = impl Into<String>>) -> AuthConfig {
        AuthConfig::named(
            tokens
                .into_iter()
                .enumerate()
                .map(|(i, t)| (format!("config:{}", i + 1), t)),
        )
    }

    /// Admin tokens with the given names.
    pub fn named(
        tokens: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> AuthConfig {
        AuthConfig {
            tokens: tokens
                .into_iter()
                .map(|(name, token)| ConfigToken {
                    name: name.into(),
                    token: token.into(),
                })
                .collect(),
        }
    }

    /// The name of the configured token `presented` is, if any. Every token
    /// is compared, each over its full length, whatever matched earlier.
    pub fn find(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(t.token.as_bytes(), presented.as_bytes()) {
                found = Some(t.name.as_str());
            }
        }
        found
    }

    /// True when `presented` is one of the configured tokens.
    pub fn accepts(&self, presented: &str) -> bool {
        self.find(presented).is_some()
    }

    /// True when `name` is a configured token's name.
    pub fn has_name(&self, name: &str) -> bool {
        self.tokens.iter().any(|t| t.name == name)
    }
}

/// Who made a request: the token's name and role. Handlers take it to
/// record who asked (`api:NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::api(Some(&self.name))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        // Set by `require_token` on every `/api/v1` route.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

/// The role each `/api/v1` operation needs: (method, path as routed and
/// documented, role). Operators act on the fleet as it is defined (power,
/// boot, installs, workflows, maintenance); admins define it (machines'
/// enrolment and edits, profiles, selectors, templates, catalogs, workflow
/// definitions, webhooks, tokens). A read that shows a secret (webhook URLs,
/// a rendered install file) needs the role that could use it. An operation
/// missing here needs admin; a test checks every documented operation is
/// listed.
pub const ROLES: &[(&str, &str, Role)] = &[
    // Machines: reading is viewing; enrolment and edits define the fleet.
    ("GET", "/api/v1/machines", Viewer),
    ("POST", "/api/v1/machines", Admin),
    ("POST", "/api/v1/machines:bulk", Admin),
    ("GET", "/api/v1/machines:summary", Viewer),
    ("GET", "/api/v1/machines/{ref}", Viewer),
    ("PATCH", "/api/v1/machines/{ref}", Admin),
    ("DELETE", "/api/v1/machines/{ref}", Admin),
    ("PUT", "/api/v1/machines/{ref}/boot", Operator),
    ("GET", "/api/v1/machines/{ref}/timeline", Viewer),
    // Profiles and selectors: what machines boot.
    ("GET", "/api/v1/profiles", Viewer),
    ("GET", "/api/v1/profiles/{name}", Viewer),
    ("PUT", "/api/v1/profiles/{name}", Admin),
    ("DELETE", "/api/v1/profiles/{name}", Admin),
    ("GET", "/api/v1/selectors", Viewer),
    ("GET", "/api/v1/selectors/{name}", Viewer),
    ("PUT", "/api/v1/selectors/{name}", Admin),
    ("DELETE", "/api/v1/selectors/{name}", Admin),
    // Power.
    ("POST", "/api/v1/machines/{ref}/power", Operator),
    ("GET", "/api/v1/machines/{ref}/power", Viewer),
    ("PUT", "/api/v1/machines/{ref}/boot-device", Operator),
    // Installs. A render shows the install file, secrets included.
    ("POST", "/api/v1/machines/{ref}/install", Operator),
    ("POST", "/api/v1/machines/{ref}/install-menu", Operator),
    ("GET", "/api/v1/machines/{ref}/render", Operator),
    ("GET", "/api/v1/installs", Viewer),
    ("GET", "/api/v1/installs/{id}", Viewer),
    ("GET", "/api/v1/templates", Viewer),
    ("GET", "/api/v1/templates/{name}", Viewer),
    ("PUT", "/api/v1/templates/{name}", Admin),
    ("DELETE", "/api/v1/templates/{name}", Admin),
    ("GET", "/api/v1/os", Viewer),
    ("DELETE", "/api/v1/os/{id}", Admin),
    // Workflows.
    ("POST", "/api/v1/workflows", Operator),
    ("GET", "/api/v1/workflows", Viewer),
    ("GET", "/api/v1/workflows/{id}", Viewer),
    ("POST", "/api/v1/workflows/{id}/retry", Operator),
    ("POST", "/api/v1/workflows/{id}/abort", Operator),
    ("GET", "/api/v1/workflow-definitions", Viewer),
    ("PUT", "/api/v1/workflow-definitions", Admin),
    ("DELETE", "/api/v1/workflow-definitions/{name}", Admin),
    // Lifecycle.
    ("PUT", "/api/v1/machines/{ref}/maintenance", Operator),
    ("DELETE", "/api/v1/machines/{ref}/maintenance", Operator),
    ("GET", "/api/v1/machines/{ref}/transitions", Viewer),
    ("GET", "/api/v1/machines/{ref}/status", Viewer),
    // Images: an import reads a file on the server.
    ("GET", "/api/v1/images", Viewer),
    ("POST", "/api/v1/images", Admin),
    ("GET", "/api/v1/images/{name}", Viewer),
    ("DELETE", "/api/v1/images/{name}", Admin),
    // Events.
    ("GET", "/api/v1/events", Viewer),
    ("GET", "/api/v1/events/stream", Viewer),
    // Webhooks: a webhook's URL is often its secret (Slack, Teams).
    ("GET", "/api/v1/webhooks", Admin),
    ("GET", "/api/v1/webhooks/{name}", Admin),
    ("PUT", "/api/v1/webhooks/{name}", Admin),
    ("DELETE", "/api/v1/webhooks/{name}", Admin),
    ("GET", "/api/v1/webhooks/{name}/deliveries", Admin),
    ("POST", "/api/v1/webhooks/{name}/test", Admin),
    // Ops.
    ("GET", "/api/v1/status", Viewer),
    ("GET", "/api/v1/leases", Viewer),
    ("GET", "/api/v1/cluster", Viewer),
    // Access.
    ("GET", "/api/v1/whoami", Viewer),
    ("GET", "/api/v1/tokens", Admin),
    ("POST", "/api/v1/tokens", Admin),
    ("DELETE", "/api/v1/tokens/{name}", Admin),
];

/// The role `method` on the route `path` needs ([`ROLES`]; admin when not
/// listed). HEAD is GET.
pub fn required_role(method: &Method, path: &str) -> Role {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROLES
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map_or(Admin, |(_, _, role)| *role)
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

/// Who `presented` is: a configured token (admin), else a stored one.
async fn identify(state: &ApiState, presented: &str) -> Result<Option<Caller>, ApiError> {
    if let Some(name) = state.auth.find(presented) {
        return Ok(Some(Caller {
            name: name.to_string(),
            role: Admin,
        }));
    }
    Ok(state
        .fleet
        .authenticate_token(presented)
        .await?
        .map(|t| Caller {
            name: t.name,
            role: t.role,
        }))
}

/// The 403 message: who the caller is and what the operation needs.
pub fn forbidden_message(caller: &Caller, method: &Method, path: &str, needed: Role) -> String {
    format!(
        "token {:?} has the {} role; {method} {path} needs the {needed} role{}",
        caller.name,
        caller.role,
        if needed == Admin { "" } else { " or admin" }
    )
}

pub(crate) async fn require_token(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Response {
    // Owned: the request (its body is not Sync) is not held across the lookup.
    let presented = bearer(&req).map(str::to_string);
    let caller = match presented {
        Some(token) => match identify(&state, &token).await {
            Ok(caller) => caller,
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let Some(caller) = caller else {
        metrics::counter!("rackboot_api_auth_failures_total").increment(1);
        return ApiError::Unauthorized.into_response();
    };
    // Set by the router before route layers run; a request without one
    // never reaches a handler, but needs admin all the same.
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let needed = required_role(req.method(), &path);
    if !caller.role.allows(needed) {
        metrics::counter!("rackboot_api_forbidden_total").increment(1);
        let message = forbidden_message(&caller, req.method(), &path, needed);
        return ApiError::Forbidden(message).into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_configured_tokens_by_name() {
        let auth = AuthConfig::new(["alpha-token", "beta"]);
        assert_eq!(auth.find("alpha-token"), Some("config:1"));
        assert_eq!(auth.find("beta"), Some("config:2"));
        assert!(!auth.accepts("alpha-tokeN"));
        assert!(!auth.accepts("alpha"));
        assert!(!auth.accepts(""));
        assert!(!AuthConfig::default().accepts(""));
        let named = AuthConfig::named([("admin-token", "s3cret")]);
        assert_eq!(named.find("s3cret"), Some("admin-token"));
        assert!(named.has_name("admin-token"));
        assert!(!named.has_name("config:1"));
    }

    #[test]
    fn debug_hides_tokens() {
        let shown = format!("{:?}", AuthConfig::new(["s3cret"]));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("config:1"), "{shown}");
    }

    #[test]
    fn roles_by_route() {
        for (method, path, want) in [
            (Method::GET, "/api/v1/machines", Viewer),
            (Method::HEAD, "/api/v1/machines", Viewer),
            (Method::POST, "/api/v1/machines", Admin),
            (Method::POST, "/api/v1/machines/{ref}/power", Operator),
            (Method::GET, "/api/v1/webhooks", Admin),
            (Method::POST, "/api/v1/workflows", Operator),
            // Not listed: admin.
            (Method::POST, "/api/v1/nothing", Admin),
            (Method::GET, "", Admin),
        ] {
            assert_eq!(required_role(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn the_role_table_lists_each_operation_once() {
        let mut seen = std::collections::HashSet::new();
        for (method, path, _) in ROLES {
            assert!(seen.insert((method, path)), "{method} {path} twice");
            assert!(path.starts_with("/api/v1/"), "{path}");
        }
    }

    #[test]
    fn forbidden_names_the_token_and_the_role_needed() {
        let viewer = Caller {
            name: "alice".into(),
            role: Viewer,
        };
        assert_eq!(
            forbidden_message(&viewer, &Method::POST, "/api/v1/workflows", Operator),
            "token \"alice\" has the viewer role; POST /api/v1/workflows needs the operator role or admin"
        );
        assert_eq!(
            forbidden_message(&viewer, &Method::DELETE, "/api/v1/tokens/{name}", Admin),
            "token \"alice\" has the viewer role; DELETE /api/v1/tokens/{name} needs the admin role"
        );
    }
}
