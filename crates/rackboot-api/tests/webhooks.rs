//! `/api/v1/webhooks`: create, replace, list, delete, deliveries and test
//! deliveries, over the real router and an in-memory SQLite store. A
//! webhook's secret is shown once (when generated) and never again.

mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use common::{Harness, error_of};
use rackboot_seal::SecretKey;
use serde_json::{Value, json};

async fn harness() -> (Harness, Arc<SecretKey>) {
    let mut h = Harness::new().await;
    let key = Arc::new(SecretKey::generate());
    h.state.secret_key = Some(key.clone());
    (h, key)
}

async fn put(h: &Harness, name: &str, body: Value) -> (StatusCode, Value) {
    h.call(Method::PUT, &format!("/api/v1/webhooks/{name}"), Some(body))
        .await
}

/// The stored secret, opened.
async fn stored_secret(h: &Harness, key: &SecretKey, name: &str) -> String {
    let hooks = h.store.list_webhooks().await.unwrap();
    let hook = hooks.iter().find(|w| w.name == name).unwrap();
    assert!(hook.sealed_secret.starts_with("v1:"), "stored sealed");
    key.decrypt(&hook.sealed_secret).unwrap()
}

#[tokio::test]
async fn create_replace_and_the_secret_shown_once() {
    let (h, key) = harness().await;
    let (status, created) = put(
        &h,
        "ops",
        json!({"url": "https://alerts.example.com/rackboot", "events": ["warnings", "machine_state_changed"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"]
        .as_str()
        .expect("a generated secret")
        .to_string();
    assert_eq!(secret.len(), 64);
    assert_eq!(created["name"], "ops");
    assert_eq!(created["url"], "https://alerts.example.com/rackboot");
    assert_eq!(
        created["events"],
        json!(["warnings", "machine_state_changed"])
    );
    assert_eq!(created["enabled"], true);
    assert!(created.get("sealed_secret").is_none());
    assert_eq!(stored_secret(&h, &key, "ops").await, secret);

    // Never shown again: not by GET, the list, or a replace.
    let (status, one) = h.get("/api/v1/webhooks/ops").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["created_at"], created["created_at"]);
    let (_, all) = h.get("/api/v1/webhooks").await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let (status, replaced) = put(
        &h,
        "ops",
        json!({"url": "http://10.0.0.5:9000/hook", "enabled": false}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["enabled"], false);
    assert_eq!(replaced["events"], json!([]));
    assert_eq!(
        replaced["created_at"], created["created_at"],
        "created_at kept"
    );
    for body in [&one, &all, &replaced] {
        let text = body.to_string();
        assert!(!text.contains(&secret), "secret leaked: {text}");
        assert!(!text.contains("sealed"), "sealed secret leaked: {text}");
    }
    // A replace without a secret keeps it; with one, sets it (not echoed).
    assert_eq!(stored_secret(&h, &key, "ops").await, secret);
    let (status, given) = put(
        &h,
        "ops",
        json!({"url": "http://10.0.0.5:9000/hook", "secret": "operator-chosen"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(given.get("secret").is_none(), "{given}");
    assert_eq!(stored_secret(&h, &key, "ops").await, "operator-chosen");

    // A new webhook with a given secret: created, nothing generated.
    let (status, body) = put(
        &h,
        "pager",
        json!({"url": "http://127.0.0.1:1/p", "events": ["*"], "secret": "abc"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(body.get("secret").is_none());
    let (_, all) = h.get("/api/v1/webhooks").await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ops", "pager"]);
}

#[tokio::test]
async fn input_errors_name_the_field() {
    let (h, _) = harness().await;
    let url = "http://127.0.0.1:9000/hook";
    let cases = [
        ("bad%20name", json!({"url": url}), "name: "),
        ("-dash", json!({"url": url}), "name: "),
        ("ok", json!({"url": "ftp://example.com/"}), "url: "),
        ("ok", json!({"url": "not a url"}), "url: "),
        ("ok", json!({"url": "https://u:p@example.com/"}), "url: "),
        (
            "ok",
            json!({"url": url, "events": ["lease_acked", "nope"]}),
            "events: ",
        ),
        ("ok", json!({"url": url, "secret": ""}), "secret: "),
        (
            "ok",
            json!({"url": url, "secret": "two\nlines"}),
            "secret: ",
        ),
        ("ok", json!({"events": ["*"]}), "url"),
        ("ok", json!({"url": url, "colour": "red"}), "colour"),
        ("ok", json!({"url": url, "enabled": "yes"}), "enabled"),
    ];
    for (name, body, want) in cases {
        let (status, got) = put(&h, name, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name} {body}: {got}");
        assert!(error_of(&got).contains(want), "{name} {body}: {got}");
    }
    let (_, all) = h.get("/api/v1/webhooks").await;
    assert_eq!(all, json!([]), "nothing stored");
}

#[tokio::test]
async fn unknown_webhooks_are_404() {
    let (h, _) = harness().await;
    for (method, uri) in [
        (Method::GET, "/api/v1/webhooks/nope"),
        (Method::DELETE, "/api/v1/webhooks/nope"),
        (Method::GET, "/api/v1/webhooks/nope/deliveries"),
        (Method::POST, "/api/v1/webhooks/nope/test"),
    ] {
        let (status, got) = h.call(method.clone(), uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {got}");
        assert!(error_of(&got).contains("nope"), "{got}");
    }
}

#[tokio::test]
async fn without_a_secret_key_webhooks_cannot_be_stored() {
    let h = Harness::new().await;
    let (status, got) = put(&h, "ops", json!({"url": "http://127.0.0.1:1/"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{got}");
    assert!(error_of(&got).contains("secret key"), "{got}");
}

#[tokio::test]
async fn test_deliveries_are_queued_and_listed() {
    let (h, _) = harness().await;
    let (_, created) = put(&h, "ops", json!({"url": "http://127.0.0.1:1/"})).await;
    let secret = created["secret"].as_str().unwrap().to_string();
    put(
        &h,
        "other",
        json!({"url": "http://127.0.0.1:2/", "events": ["*"]}),
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, d) = h
            .call(Method::POST, "/api/v1/webhooks/ops/test", None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{d}");
        assert_eq!(d["webhook"], "ops");
        assert_eq!(d["event_id"], 0);
        assert_eq!(d["state"], "pending");
        assert_eq!(d["attempts"], 0);
        let body: Value = serde_json::from_str(d["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["kind"], "webhook_test");
        ids.push(d["id"].as_i64().unwrap());
    }
    let (status, list) = h.get("/api/v1/webhooks/ops/deliveries").await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [ids[1], ids[0]], "newest first");
    assert!(!list.to_string().contains(&secret));
    let (_, one) = h.get("/api/v1/webhooks/ops/deliveries?limit=1").await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    let (_, other) = h.get("/api/v1/webhooks/other/deliveries").await;
    assert_eq!(other, json!([]), "a test goes to one webhook only");
    let (status, got) = h.get("/api/v1/webhooks/ops/deliveries?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&got).starts_with("limit:"), "{got}");

    // Deleting the webhook drops its queue.
    let (status, _) = h.call(Method::DELETE, "/api/v1/webhooks/ops", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h.get("/api/v1/webhooks/ops").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        h.store
            .list_deliveries(Some("ops"), 0)
            .await
            .unwrap()
            .is_empty()
    );
}
