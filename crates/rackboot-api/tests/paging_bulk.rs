//! Paged lists (machines, leases, events, workflows) followed to the end by
//! their `X-Next-Cursor`/`Link` headers, and bulk enrolment with an outcome
//! per row.

mod common;

use std::net::Ipv4Addr;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::Utc;
use common::{Harness, TOKEN};
use http_body_util::BodyExt;
use rackboot_core::{EventKind, Lease, LeaseState, NewEvent};
use serde_json::{Value, json};
use tower::ServiceExt;

/// GET `uri`: status, JSON body, and the next cursor and link when present.
async fn page(h: &Harness, uri: &str) -> (StatusCode, Value, Option<String>, Option<String>) {
    let req = Request::builder()
        .method(Method::GET)
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
    let (next, link) = (header("x-next-cursor"), header("link"));
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap(), next, link)
}

/// Follows `Link` from `first` to the end; every item, and the pages' sizes.
async fn follow(h: &Harness, first: &str) -> (Vec<Value>, Vec<usize>) {
    let mut items = Vec::new();
    let mut sizes = Vec::new();
    let mut uri = first.to_string();
    for _ in 0..100 {
        let (status, body, next, link) = page(h, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        let got = body.as_array().unwrap().clone();
        sizes.push(got.len());
        items.extend(got);
        match (next, link) {
            (Some(cursor), Some(link)) => {
                let url = link
                    .strip_prefix('<')
                    .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                    .unwrap_or_else(|| panic!("Link {link:?}"));
                assert!(
                    url.contains(&format!("cursor={cursor}")),
                    "{url} vs {cursor}"
                );
                uri = url.to_string();
            }
            (None, None) => return (items, sizes),
            other => panic!("cursor and link must come together: {other:?}"),
        }
    }
    panic!("more than 100 pages");
}

fn machine_body(i: usize) -> Value {
    json!({"name": format!("node-{i:03}"), "macs": [format!("52:54:00:00:{:02x}:{:02x}", i / 256, i % 256)]})
}

#[tokio::test]
async fn bulk_enrolment_then_machine_pages() {
    let h = Harness::new().await;
    let mut rows: Vec<Value> = (0..25).map(machine_body).collect();
    // Row 25: a name already in this request; row 26: a multicast MAC;
    // row 27: an unknown profile; row 28: a MAC of row 0.
    rows.push(json!({"name": "node-003", "macs": ["52:54:00:ff:00:01"]}));
    rows.push(json!({"name": "bad-mac", "macs": ["01:00:5e:00:00:01"]}));
    rows.push(json!({"name": "no-profile", "macs": ["52:54:00:ff:00:02"],
                     "intent": {"kind": "profile", "name": "nope"}}));
    rows.push(json!({"name": "dup-mac", "macs": ["52:54:00:00:00:00"]}));
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines:bulk",
            Some(json!({"machines": rows})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["created"].as_u64(), body["failed"].as_u64()),
        (Some(25), Some(4))
    );
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 29);
    assert!(
        results[..25]
            .iter()
            .all(|r| r["id"].is_string() && r["error"].is_null())
    );
    let error = |i: usize| results[i]["error"].as_str().unwrap().to_string();
    assert!(
        error(25).contains("\"node-003\" is listed twice"),
        "{}",
        error(25)
    );
    assert!(error(26).starts_with("macs[0]:"), "{}", error(26));
    assert!(
        error(27).contains("intent.name: no profile named \"nope\""),
        "{}",
        error(27)
    );
    assert!(error(28).contains("52:54:00:00:00:00"), "{}", error(28));
    assert_eq!(results[27]["index"], 27);

    // The snapshot the boot services answer from has them.
    let snap = h.state.fleet.snapshot();
    assert_eq!(snap.machines.len(), 25);
    assert!(
        snap.machine_by_mac("52:54:00:00:00:18".parse().unwrap())
            .is_some()
    );
    // One event for the batch.
    let events = h
        .stored_events_matching(1, |e| e.data["action"] == "imported")
        .await;
    let imported: Vec<&rackboot_core::Event> = events
        .iter()
        .filter(|e| e.data["action"] == "imported")
        .collect();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].data["count"], 25);

    // Pages of 10, in name order, to the end.
    let (items, sizes) = follow(&h, "/api/v1/machines?limit=10").await;
    assert_eq!(sizes, [10, 10, 5]);
    let names: Vec<&str> = items.iter().map(|m| m["name"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..25).map(|i| format!("node-{i:03}")).collect();
    assert_eq!(names, want);
    // A full last page is followed by an empty one.
    let (_, sizes) = follow(&h, "/api/v1/machines?limit=5").await;
    assert_eq!(sizes, [5, 5, 5, 5, 5, 0]);
    // The default page holds them all, with no cursor.
    let (_, body, next, _) = page(&h, "/api/v1/machines").await;
    assert_eq!((body.as_array().unwrap().len(), next), (25, None));

    for (uri, want) in [
        ("/api/v1/machines?limit=0", "limit: 0 is out of range"),
        (
            "/api/v1/machines?limit=10001",
            "limit: 10001 is out of range",
        ),
    ] {
        let (status, body) = h.get(uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            body["error"].as_str().unwrap().contains(want),
            "{uri}: {body}"
        );
    }
    let (status, body) = h
        .call(
            Method::POST,
            "/api/v1/machines:bulk",
            Some(json!({"machines": []})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("1 to 5000"),
        "{body}"
    );
}

#[tokio::test]
async fn lease_event_and_workflow_pages() {
    let h = Harness::new().await;
    let leases: Vec<Lease> = (1..=12u8)
        .map(|i| Lease {
            ip: Ipv4Addr::new(10, 0, 0, i * 10),
            mac: None,
            client_id: None,
            hostname: None,
            state: LeaseState::Bound,
            expires_at: Utc::now(),
            subnet: "lab".into(),
            updated_at: Utc::now(),
        })
        .collect();
    h.store.put_leases(&leases).await.unwrap();
    let (items, sizes) = follow(&h, "/api/v1/leases?limit=5").await;
    assert_eq!(sizes, [5, 5, 2]);
    let ips: Vec<&str> = items.iter().map(|l| l["ip"].as_str().unwrap()).collect();
    assert_eq!(ips[..3], ["10.0.0.10", "10.0.0.20", "10.0.0.30"]);
    assert_eq!(ips[11], "10.0.0.120");
    let (status, body) = h.get("/api/v1/leases?cursor=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Events: pages by id; a kind filter pages over what it scanned.
    let events: Vec<NewEvent> = (0..30)
        .map(|i| {
            let kind = if i % 3 == 0 {
                EventKind::PoolLow
            } else {
                EventKind::MachineChanged
            };
            NewEvent::new(kind, format!("e{i}"))
        })
        .collect();
    h.store.append_events(events).await.unwrap();
    let (items, sizes) = follow(&h, "/api/v1/events?limit=7").await;
    assert_eq!(sizes, [7, 7, 7, 7, 2]);
    assert_eq!(items.len(), 30);
    let (items, _) = follow(&h, "/api/v1/events?kind=pool_low&limit=4").await;
    let messages: Vec<&str> = items
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            "e0", "e3", "e6", "e9", "e12", "e15", "e18", "e21", "e24", "e27"
        ]
    );
    // `after` still works, and cannot be mixed with `cursor`.
    let (_, body, _, _) = page(&h, "/api/v1/events?after=28").await;
    assert_eq!(body.as_array().unwrap().len(), 2);
    let (status, _) = h.get("/api/v1/events?after=1&cursor=2").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Workflows: newest first, in pages (stored directly: no engine here).
    let (status, m) = h
        .call(Method::POST, "/api/v1/machines", Some(machine_body(1)))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let machine: uuid::Uuid = m["id"].as_str().unwrap().parse().unwrap();
    let t0 = Utc::now();
    for i in 0..7 {
        let wf = rackboot_core::Workflow {
            id: uuid::Uuid::new_v4(),
            machine,
            name: format!("wf{i}"),
            lifecycle: rackboot_core::Lifecycle::None,
            state: rackboot_core::WorkflowState::Succeeded,
            started_from: rackboot_core::ProvisionState::Enrolled,
            params: json!({}),
            steps: vec![],
            created_by: "test".into(),
            created_at: t0 + chrono::TimeDelta::seconds(i),
            started_at: None,
            finished_at: None,
            updated_at: t0,
            error: None,
            batch: None,
        };
        h.store.put_workflow(&wf).await.unwrap();
    }
    let (items, sizes) = follow(&h, "/api/v1/workflows?limit=3").await;
    assert_eq!(sizes, [3, 3, 1]);
    let names: Vec<&str> = items.iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["wf6", "wf5", "wf4", "wf3", "wf2", "wf1", "wf0"]);
    let (status, _) = h.get("/api/v1/workflows?cursor=12.not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
