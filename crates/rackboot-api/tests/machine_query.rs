//! `GET /api/v1/machines` with filters and sort, and `GET
//! /api/v1/machines:summary`, through the real router.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Harness, TOKEN};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Status, `X-Total-Count`, `X-Next-Cursor` and the body.
async fn list(h: &Harness, uri: &str) -> (StatusCode, Option<String>, Option<String>, Value) {
    let req = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let res = h.app().oneshot(req).await.unwrap();
    let status = res.status();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (total, next) = (header("x-total-count"), header("x-next-cursor"));
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, total, next, serde_json::from_slice(&bytes).unwrap())
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect()
}

async fn fleet() -> Harness {
    let h = Harness::new().await;
    let machines: Vec<Value> = (1..=12)
        .map(|i| {
            json!({
                "name": format!("node{i:02}"),
                "macs": [format!("52:54:00:00:10:{i:02x}")],
                "labels": {"rack": if i <= 4 { "r1" } else { "r2" }},
            })
        })
        .collect();
    let (status, body) = h
        .call(
            axum::http::Method::POST,
            "/api/v1/machines:bulk",
            Some(json!({ "machines": machines })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["created"], 12);
    h
}

#[tokio::test]
async fn filtered_lists_count_everything_and_page_by_cursor() {
    let h = fleet().await;
    // The plain list counts the fleet too.
    let (status, total, next, body) = list(&h, "/api/v1/machines?limit=5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(total.as_deref(), Some("12"));
    assert_eq!(next.as_deref(), Some("node05"));
    assert_eq!(names(&body).len(), 5);

    let (_, total, next, body) = list(&h, "/api/v1/machines?label=rack%3Dr1").await;
    assert_eq!(total.as_deref(), Some("4"));
    assert_eq!(next, None);
    assert_eq!(names(&body), ["node01", "node02", "node03", "node04"]);

    // Descending by name, two pages of 5 then the rest, filtered by name.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let uri = match &cursor {
            Some(c) => format!("/api/v1/machines?name=NODE&sort=-name&limit=5&cursor={c}"),
            None => "/api/v1/machines?name=NODE&sort=-name&limit=5".to_string(),
        };
        let (status, total, next, body) = list(&h, &uri).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(total.as_deref(), Some("12"));
        seen.extend(names(&body).iter().map(|s| s.to_string()));
        cursor = next;
        if cursor.is_none() {
            break;
        }
    }
    let want: Vec<String> = (1..=12).rev().map(|i| format!("node{i:02}")).collect();
    assert_eq!(seen, want);

    let (_, total, _, _) = list(&h, "/api/v1/machines?state=enrolled").await;
    assert_eq!(total.as_deref(), Some("12"));
    let (_, total, _, body) = list(&h, "/api/v1/machines?state=failed").await;
    assert_eq!((total.as_deref(), names(&body).len()), (Some("0"), 0));
    // No machine is inspected: a fact filter keeps none.
    let (_, total, _, _) = list(&h, "/api/v1/machines?fact=memory_gib%3D%3E%3D1").await;
    assert_eq!(total.as_deref(), Some("0"));
}

#[tokio::test]
async fn bad_filters_are_400s_naming_the_parameter() {
    let h = fleet().await;
    for (uri, start) in [
        ("/api/v1/machines?state=asleep", "state: "),
        ("/api/v1/machines?fact=colour%3Dblue", "fact: "),
        ("/api/v1/machines?sort=size", "sort: "),
        ("/api/v1/machines?sort=state&cursor=nonsense", "cursor: "),
        ("/api/v1/machines?name=x&limit=0", "limit: "),
    ] {
        let (status, _, _, body) = list(&h, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.starts_with(start), "{uri}: {error}");
    }
}

#[tokio::test]
async fn summary_counts_states_and_maintenance() {
    let h = fleet().await;
    let (status, body) = h
        .call(
            axum::http::Method::PUT,
            "/api/v1/machines/node03/maintenance",
            Some(json!({"reason": "fan"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, s) = h.get("/api/v1/machines:summary").await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["total"], 12);
    assert_eq!(s["states"], json!([{"state": "enrolled", "count": 12}]));
    assert_eq!(
        (s["failed"].as_u64(), s["busy"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(s["maintenance"], 1);
    assert_eq!(s["waiting_too_long_count"], 0);
    assert_eq!(s["stuck_after_secs"], 1800);
    let (status, _) = h
        .get("/api/v1/machines:summary?stuck_after_secs=soon")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
