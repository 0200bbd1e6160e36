//! Request limits through the real router: body size per route (413 with a
//! message, a larger limit only for bulk enrolment, which takes a realistic
//! 5,000-row request), a body that does not arrive (408) and a handler that
//! does not answer in time (503, stopped).

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode};
use common::{Harness, TOKEN, error_of};
use futures::StreamExt;
use http_body_util::BodyExt;
use rackboot_api::limits::{ApiLimits, DEFAULT_BODY_LIMIT};
use rackboot_api::power::PowerApi;
use rackboot_power::fake::FakeBmc;
use rackboot_power::secrets::SecretKey;
use rackboot_power::{PowerConfig, PowerController, PowerStateMap};
use serde_json::{Value, json};
use tower::ServiceExt;

/// A harness whose BMCs are accepted (sealed with a fresh key).
async fn with_power() -> Harness {
    rackboot_power::fake::enable();
    let mut h = Harness::new().await;
    h.state.power = Some(PowerApi {
        controller: Arc::new(PowerController::new(PowerConfig::default())),
        key: Arc::new(SecretKey::generate()),
        states: PowerStateMap::new(),
    });
    h
}

async fn send(h: &Harness, req: Request<Body>) -> (StatusCode, Value) {
    let res = h.app().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A machine row as an operator's inventory export has it: labels, a BMC,
/// two MACs (about 500 bytes of JSON).
fn realistic_row(i: usize) -> Value {
    json!({
        "name": format!("r{:02}-node-{i:05}.dc1.example.net", i / 40),
        "macs": [
            format!("52:54:00:{:02x}:{:02x}:{:02x}", i >> 16, (i >> 8) & 0xff, i & 0xff),
            format!("52:55:00:{:02x}:{:02x}:{:02x}", i >> 16, (i >> 8) & 0xff, i & 0xff),
        ],
        "labels": {
            "rack": format!("r{:02}", i / 40),
            "row": "b",
            "site": "dc1",
            "role": "compute",
            "hw": "gen11-2u-2x32c-512g",
            "asset": format!("A-{:08}", 7_000_000 + i),
            "serial": format!("SN-{:010}-{:04x}", 3_100_000_000u64 + i as u64, i),
            "location": format!("dc1.hall-b.row-{:02}.rack-{:03}.u{:02}", i / 400, i / 40, i % 40),
            "switch-port": format!("tor-r{:03}.dc1.example.net:Ethernet{}/1", i / 40, i % 40 + 1),
            "pdu": format!("pdu-r{:03}-a.dc1.example.net:outlet-{:02}", i / 40, i % 40),
            "owner": "team-compute-platform",
        },
        "bmc": {
            "url": format!("ipmi://10.{}.{}.{}", 200 + i / 65536, (i / 256) % 256, i % 256),
            "username": "provisioning-admin",
        },
    })
}

#[tokio::test]
async fn bodies_over_the_default_limit_are_413_with_the_limit() {
    let h = Harness::new().await;
    let body = json!({"machines": (0..5000).map(realistic_row).collect::<Vec<_>>()}).to_string();
    assert!(body.len() > 2 * DEFAULT_BODY_LIMIT, "{} bytes", body.len());
    // Declared by Content-Length: refused before it is read.
    let req = Request::post("/api/v1/machines")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-length", body.len())
        .body(Body::from(body.clone()))
        .unwrap();
    let (status, got) = send(&h, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{got}");
    let message = error_of(&got);
    assert!(
        message.contains(&format!("at most {DEFAULT_BODY_LIMIT} bytes"))
            && message.contains("machines:bulk"),
        "{message}"
    );
    // Streamed without a length: cut off when the limit is passed.
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .as_bytes()
        .chunks(64 << 10)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let req = Request::put("/api/v1/templates/big")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let (status, got) = send(&h, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{got}");
    assert!(
        error_of(&got).contains("PUT /api/v1/templates/{name}"),
        "{got}"
    );
}

#[tokio::test]
async fn bulk_enrolment_takes_a_full_realistic_request() {
    let h = with_power().await;
    let body = json!({"machines": (0..5000).map(realistic_row).collect::<Vec<_>>()}).to_string();
    // Over axum's default limit (2 MiB), which refused it before.
    assert!(body.len() > 2 << 20, "{} bytes", body.len());
    let (status, got) = h
        .call_raw(
            Method::POST,
            "/api/v1/machines:bulk",
            Some(body),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", error_of(&got));
    assert_eq!(got["created"], 5000, "{}", &got.to_string()[..300]);
    let (status, m) = h
        .get("/api/v1/machines/r124-node-04999.dc1.example.net")
        .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["labels"]["asset"], "A-07004999");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_is_408() {
    let mut h = Harness::new().await;
    h.state.limits = ApiLimits {
        timeout: Duration::from_millis(300),
        ..ApiLimits::default()
    };
    // Half a JSON document, then nothing (a client that stalled).
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(
        b"{\"name\": \"n1\", ",
    ))])
    .chain(futures::stream::pending());
    let req = Request::post("/api/v1/machines")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from_stream(stream))
        .unwrap();
    let res = h.app().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(res.headers()["connection"], "close");
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let got: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        error_of(&got).contains("did not arrive within 0.3 s"),
        "{got}"
    );
    // Nothing was created from the half body.
    let (_, list) = h.get("/api/v1/machines").await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}

#[tokio::test]
async fn a_handler_that_does_not_answer_in_time_is_503_and_stopped() {
    let mut h = with_power().await;
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines",
            Some(json!({"name": "slow", "macs": ["52:54:00:00:0b:01"],
                "bmc": {"url": "fake://limits-slow-bmc", "username": "admin"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The BMC takes a minute per call; the power routes' limit is 0.5 s here.
    FakeBmc::get("limits-slow-bmc").set_latency(Duration::from_secs(60));
    h.state.limits = ApiLimits {
        long_timeout: Duration::from_millis(500),
        ..ApiLimits::default()
    };
    let (status, got) = h.get("/api/v1/machines/slow/power").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{got}");
    let message = error_of(&got);
    assert!(
        message.contains("GET /api/v1/machines/{ref}/power did not finish within 0.5 s")
            && message.contains("check its effect before retrying"),
        "{message}"
    );
    // Ordinary routes keep the ordinary limit and answer.
    let (status, _) = h.get("/api/v1/machines/slow").await;
    assert_eq!(status, StatusCode::OK);
}
