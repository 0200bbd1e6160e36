//! A machine's agent token used from another address is refused (403) and
//! shows on that machine's timeline as an `access_refused` event, at most one
//! a minute however many requests; a missing or unknown token (401) names no
//! machine and records nothing.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use common::Harness;
use rackboot_api::agent_http::{AgentHttp, router};
use rackboot_core::EventKind;
use rackboot_engine::{Engine, EngineConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const BOUND: &str = "10.9.0.5";
const OTHER: &str = "10.9.0.77";

/// POSTs a log line to the agent endpoints as `peer`, with `token`.
async fn post_log(app: &axum::Router, peer: &str, token: Option<&str>) -> StatusCode {
    let mut req = Request::builder().method(Method::POST).uri("/agent/v1/log");
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let mut req = req.body(Body::from("a log line")).unwrap();
    let peer: IpAddr = peer.parse().unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(peer, 40000)));
    app.clone().oneshot(req).await.unwrap().status()
}

#[tokio::test]
async fn a_token_from_another_address_is_refused_on_the_machines_timeline() {
    let h = Harness::new().await;
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines",
            Some(json!({ "name": "node-a", "macs": ["52:54:00:aa:00:01"] })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let fleet = h.state.fleet.clone();
    let machine = fleet
        .snapshot()
        .machine_by_mac("52:54:00:aa:00:01".parse().unwrap())
        .cloned()
        .expect("machine in the snapshot");
    let issued = fleet
        .issue_agent_token(&machine, BOUND.parse().unwrap(), None)
        .await
        .unwrap();

    let shutdown = CancellationToken::new();
    let (engine, _task) = Engine::start(
        fleet.clone(),
        None,
        Arc::new(rackboot_seal::SecretKey::generate()),
        EngineConfig::default(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let app = router(AgentHttp {
        fleet: fleet.clone(),
        engine,
        logs_dir: None,
    });

    // The token from its own address opens the session.
    assert_eq!(
        post_log(&app, BOUND, Some(&issued.token)).await,
        StatusCode::NO_CONTENT
    );
    // From another address: refused, three times.
    for _ in 0..3 {
        assert_eq!(
            post_log(&app, OTHER, Some(&issued.token)).await,
            StatusCode::FORBIDDEN
        );
    }
    // No token or an unknown one: 401, no machine to charge it to.
    assert_eq!(post_log(&app, OTHER, None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        post_log(&app, OTHER, Some("not-a-token")).await,
        StatusCode::UNAUTHORIZED
    );

    // The token event and the log event come first; wait for the refusal.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refusals = loop {
        let events = h.stored_events(1).await;
        let refusals: Vec<_> = events
            .into_iter()
            .filter(|e| e.kind == EventKind::AccessRefused)
            .collect();
        if !refusals.is_empty() || std::time::Instant::now() > deadline {
            break refusals;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // One event for the three refusals (the minute's bound), on node-a.
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let event = &refusals[0];
    assert_eq!(event.machine, Some(machine.id));
    assert_eq!(event.data["asked"], "agent_request");
    assert_eq!(event.data["reason"], "wrong_address");
    assert_eq!(event.data["peer"], OTHER);
    assert!(event.message.contains(OTHER), "{}", event.message);
    assert!(
        !event.message.contains(&issued.token),
        "the event must not carry the token: {}",
        event.message
    );
    shutdown.cancel();
}
