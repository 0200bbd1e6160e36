//! Access through the router: every documented `/api/v1` operation with no
//! token, a viewer, an operator and an admin token (401, 403 naming the role
//! needed, neither); token create, list, revoke and whoami; who is recorded.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use rackboot_api::Role;
use rackboot_api::auth::{ROLES, required_role};
use rackboot_core::EventKind;
use serde_json::{Value, json};
use tower::ServiceExt;

use common::{Harness, TOKEN, error_of};

/// Status, and the body when it is an error (a 2xx body may be an endless
/// event stream).
async fn request(
    h: &Harness,
    method: &Method,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = h
        .app()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    if status.is_success() {
        return (status, Value::Null);
    }
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn create_token(h: &Harness, name: &str, role: &str) -> String {
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": name, "role": role})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("rbt_"), "{token}");
    token
}

/// Every bearer operation of the document, with its `x-rackboot-role`.
fn documented_operations() -> Vec<(Method, String, Role)> {
    let doc = serde_json::to_value(rackboot_api::openapi()).unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("security").is_none() {
                assert!(op.get("x-rackboot-role").is_none(), "{method} {path}");
                continue;
            }
            let role = op["x-rackboot-role"]
                .as_str()
                .and_then(Role::parse)
                .unwrap_or_else(|| panic!("{method} {path}: no x-rackboot-role"));
            let method: Method = method.to_uppercase().parse().unwrap();
            ops.push((method, path.clone(), role));
        }
    }
    ops
}

#[test]
fn the_document_and_the_router_use_one_role_table() {
    let ops = documented_operations();
    assert!(ops.len() > 60, "{} operations", ops.len());
    for (method, path, role) in &ops {
        assert_eq!(required_role(method, path), *role, "{method} {path}");
        assert!(
            ROLES
                .iter()
                .any(|(m, p, _)| *m == method.as_str() && p == path),
            "{method} {path} is not in the role table (it needs admin by default)"
        );
    }
    // And the table lists nothing that is not served.
    for (m, p, _) in ROLES {
        assert!(
            ops.iter()
                .any(|(method, path, _)| method.as_str() == *m && path == p),
            "{m} {p} is in the role table but not documented"
        );
    }
}

#[tokio::test]
async fn every_operation_by_role() {
    let h = Harness::new().await;
    let viewer = create_token(&h, "walk-viewer", "viewer").await;
    let operator = create_token(&h, "walk-operator", "operator").await;
    let mut failures = Vec::new();
    for (method, template, role) in documented_operations() {
        let uri = template
            .replace("{ref}", "no-such-machine")
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{name}", "no-such-name");
        // Admin last: its requests reach handlers (nothing by these names exists).
        for (who, token, caller_role) in [
            ("no token", None, None),
            ("viewer", Some(viewer.as_str()), Some(Role::Viewer)),
            ("operator", Some(operator.as_str()), Some(Role::Operator)),
            ("admin", Some(TOKEN), Some(Role::Admin)),
        ] {
            let (status, body) = request(&h, &method, &uri, token).await;
            let want = match caller_role {
                None => Some(StatusCode::UNAUTHORIZED),
                Some(r) if !r.allows(role) => Some(StatusCode::FORBIDDEN),
                Some(_) => None,
            };
            let ok = match want {
                Some(w) => status == w,
                None => status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
            };
            if !ok {
                failures.push(format!("{method} {template} as {who}: {status} {body}"));
            }
            if status == StatusCode::FORBIDDEN
                && !error_of(&body).contains(&format!("needs the {role} role"))
            {
                failures.push(format!("{method} {template} as {who}: 403 says {body}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn tokens_are_created_listed_used_and_revoked() {
    let h = Harness::new().await;
    let ci = create_token(&h, "ci", "operator").await;

    // Its name and role; the list never shows a token.
    let (status, me) = h
        .call_raw(Method::GET, "/api/v1/whoami", None, Some(ci.as_str()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me, json!({"name": "ci", "role": "operator"}));
    let (_, me) = h.get("/api/v1/whoami").await;
    assert_eq!(me, json!({"name": "config:1", "role": "admin"}));
    let (status, list) = h.get("/api/v1/tokens").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<(&str, &str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap(),
                t["role"].as_str().unwrap(),
                t["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("config:1", "admin", "config"),
            ("config:2", "admin", "config"),
            ("ci", "operator", "store"),
        ]
    );
    assert_eq!(list[2]["created_by"], "api:config:1");
    assert!(!list.to_string().contains(&ci[4..]), "{list}");

    // What it changes is recorded under its name.
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines",
            Some(json!({"name": "m1", "macs": ["52:54:00:aa:00:01"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = h
        .call_raw(
            Method::PUT,
            "/api/v1/machines/m1/maintenance",
            Some(json!({"reason": "disk swap"}).to_string()),
            Some(ci.as_str()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, transitions) = h.get("/api/v1/machines/m1/transitions").await;
    assert_eq!(
        transitions.as_array().unwrap().last().unwrap()["by"],
        "api:ci"
    );

    // Names are unique, roles known, the server's own tokens not revocable.
    for (body, status, says) in [
        (
            json!({"name": "ci", "role": "viewer"}),
            StatusCode::CONFLICT,
            "\"ci\"",
        ),
        (
            json!({"name": "x", "role": "root"}),
            StatusCode::BAD_REQUEST,
            "role",
        ),
        (
            json!({"name": "a:b", "role": "viewer"}),
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            json!({"name": "config:1", "role": "viewer"}),
            StatusCode::CONFLICT,
            "config:1",
        ),
    ] {
        let (got, answer) = h
            .call(Method::POST, "/api/v1/tokens", Some(body.clone()))
            .await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(error_of(&answer).contains(says), "{body}: {answer}");
    }
    let (status, body) = h
        .call(Method::DELETE, "/api/v1/tokens/config:1", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // An operator cannot make tokens; revoked, a token is refused at once.
    let (status, body) = h
        .call_raw(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "mine", "role": "admin"}).to_string()),
            Some(ci.as_str()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        error_of(&body),
        "token \"ci\" has the operator role; POST /api/v1/tokens needs the admin role"
    );
    let (status, body) = h.call(Method::DELETE, "/api/v1/tokens/ci", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "ci");
    let (status, _) = h
        .call_raw(Method::GET, "/api/v1/whoami", None, Some(ci.as_str()))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = h.call(Method::DELETE, "/api/v1/tokens/ci", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Creation and revocation are events, with who did them.
    let mut token_events: Vec<(String, String)> = Vec::new();
    for _ in 0..500 {
        token_events = h
            .stored_events(1)
            .await
            .iter()
            .filter(|e| e.kind == EventKind::TokenChanged && e.data["token"] == "ci")
            .map(|e| {
                (
                    e.data["action"].as_str().unwrap().to_string(),
                    e.data["who"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        if token_events.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        token_events,
        [
            ("created".to_string(), "api:config:1".to_string()),
            ("revoked".to_string(), "api:config:1".to_string()),
        ]
    );
}
