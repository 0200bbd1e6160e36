//! The live event stream: replay after Last-Event-ID, then live events with no
//! gap and no duplicate, lag recovery, keep-alives, filters and shutdown.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Harness, SseFrame, SseParser, TOKEN};
use http_body_util::BodyExt;
use rackboot_core::{Event, EventKind, NewEvent};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Reads frames from an axum response body.
struct BodyFrames {
    body: Body,
    parser: SseParser,
}

impl BodyFrames {
    async fn next(&mut self) -> SseFrame {
        loop {
            if let Some(f) = self.parser.next_frame() {
                return f;
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("no SSE frame within 10 s")
                .expect("stream ended")
                .unwrap();
            if let Ok(bytes) = frame.into_data() {
                self.parser.push(&bytes);
            }
        }
    }

    /// Next frame that is not a keep-alive.
    async fn next_event(&mut self) -> SseFrame {
        loop {
            let f = self.next().await;
            if !f.comment_only {
                return f;
            }
        }
    }
}

async fn open_stream(h: &Harness, uri: &str, last_event_id: Option<i64>) -> BodyFrames {
    let mut req = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let res = h
        .app()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    BodyFrames {
        body: res.into_body(),
        parser: SseParser::default(),
    }
}

fn event_of(frame: &SseFrame) -> Event {
    let e: Event =
        serde_json::from_str(&frame.data).unwrap_or_else(|err| panic!("{err}: {frame:?}"));
    assert_eq!(
        frame.id.as_deref(),
        Some(e.id.to_string().as_str()),
        "{frame:?}"
    );
    assert_eq!(frame.event.as_deref(), Some(e.kind.as_str()), "{frame:?}");
    e
}

fn tftp(i: usize) -> NewEvent {
    NewEvent::new(EventKind::TftpSent, format!("sent file {i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_over_tcp_without_gaps_or_duplicates() {
    let h = Harness::new().await;
    for i in 0..20 {
        h.emit(tftp(i));
    }
    let before = h.stored_events(20).await;
    let resume_from = before[4].id;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(rackboot_api::run(
        listener,
        h.state.clone(),
        shutdown.clone(),
    ));

    // Events keep arriving while the client connects and replays, so the
    // replay/live hand-over happens under load.
    let emitter = {
        let hub = h.hub.clone();
        tokio::spawn(async move {
            for i in 20..320 {
                hub.emit(tftp(i));
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    let client = reqwest::Client::new();
    let mut res = client
        .get(format!("http://{addr}/api/v1/events/stream"))
        .bearer_auth(TOKEN)
        .header("Last-Event-ID", resume_from.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);

    emitter.await.unwrap();
    let all = h.stored_events(320).await;
    assert_eq!(all.len(), 320, "nothing dropped by the persist queue");
    let want: Vec<i64> = all
        .iter()
        .map(|e| e.id)
        .filter(|&id| id > resume_from)
        .collect();

    let mut parser = SseParser::default();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < want.len() {
        while let Some(frame) = parser.next_frame() {
            if frame.comment_only {
                continue;
            }
            let e = event_of(&frame);
            assert_eq!(e.kind, EventKind::TftpSent);
            got.push(e.id);
        }
        if got.len() >= want.len() {
            break;
        }
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .unwrap_or_else(|_| panic!("timed out with {} of {} events", got.len(), want.len()))
            .unwrap()
            .expect("stream ended early");
        parser.push(&chunk);
    }
    assert_eq!(got, want);

    // One more live event arrives, exactly once.
    h.emit(tftp(999));
    let last = loop {
        if let Some(frame) = parser.next_frame() {
            if !frame.comment_only {
                break event_of(&frame);
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), res.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        parser.push(&chunk);
    };
    assert_eq!(last.message, "sent file 999");
    assert!(last.id > *want.last().unwrap());

    // Shutdown ends the open stream and the server.
    shutdown.cancel();
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(_chunk) = res.chunk().await.unwrap_or(None) {}
    })
    .await;
    assert!(rest.is_ok(), "stream did not end at shutdown");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn stream_requires_a_token_and_a_valid_last_event_id() {
    let h = Harness::new().await;
    let req = Request::builder()
        .uri("/api/v1/events/stream")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        h.app().oneshot(req).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = {
        let req = Request::builder()
            .uri("/api/v1/events/stream")
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("last-event-id", "yesterday")
            .body(Body::empty())
            .unwrap();
        let res = h.app().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        )
    };
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "Last-Event-ID: expected a numeric event id");
}

#[tokio::test]
async fn without_last_event_id_only_live_events_come() {
    let h = Harness::new().await;
    h.emit(tftp(0));
    h.stored_events(1).await;
    let mut stream = open_stream(&h, "/api/v1/events/stream", None).await;
    h.emit(tftp(1));
    let e = event_of(&stream.next_event().await);
    assert_eq!(e.message, "sent file 1");
}

#[tokio::test]
async fn after_query_and_header_precedence() {
    let h = Harness::new().await;
    for i in 0..4 {
        h.emit(tftp(i));
    }
    let stored = h.stored_events(4).await;
    // ?after= alone replays.
    let mut stream = open_stream(
        &h,
        &format!("/api/v1/events/stream?after={}", stored[1].id),
        None,
    )
    .await;
    assert_eq!(event_of(&stream.next_event().await).id, stored[2].id);
    // The header (a browser's reconnect) wins over the URL's ?after=.
    let mut stream = open_stream(
        &h,
        &format!("/api/v1/events/stream?after={}", stored[0].id),
        Some(stored[2].id),
    )
    .await;
    assert_eq!(event_of(&stream.next_event().await).id, stored[3].id);
}

#[tokio::test]
async fn events_both_replayed_and_live_come_once() {
    let h = Harness::new().await;
    h.emit(tftp(0));
    let first = h.stored_events(1).await[0].id;
    // The handler subscribes at once; the replay query runs at the first poll,
    // after these are both stored and queued for this live subscriber.
    let mut stream = open_stream(&h, "/api/v1/events/stream", Some(first)).await;
    for i in 1..=5 {
        h.emit(tftp(i));
    }
    let stored = h.stored_events(6).await;
    h.emit(tftp(6));
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(event_of(&stream.next_event().await).message);
    }
    let want: Vec<String> = (1..=6).map(|i| format!("sent file {i}")).collect();
    assert_eq!(got, want);
    assert_eq!(stored.len(), 6);
}

#[tokio::test]
async fn lagging_subscriber_is_told_and_backfilled_from_the_store() {
    // Capacity 8: a subscriber more than 8 events behind lags.
    let h = Harness::with_capacity(8).await;
    for i in 0..3 {
        h.emit(tftp(i));
    }
    h.stored_events(3).await;
    let mut stream = open_stream(&h, "/api/v1/events/stream", Some(0)).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(event_of(&stream.next_event().await).id);
    }
    // 30 more while the client reads nothing; emitted in small steps so the
    // persist queue (also 8) never overflows.
    for chunk in 0..6 {
        for i in 0..5 {
            h.emit(tftp(10 + chunk * 5 + i));
        }
        h.stored_events(3 + (chunk + 1) * 5).await;
    }
    let all = h.stored_events(33).await;
    let notice = stream.next_event().await;
    assert_eq!(notice.event.as_deref(), Some("lagged"));
    assert_eq!(notice.id, None);
    let data: serde_json::Value = serde_json::from_str(&notice.data).unwrap();
    assert!(data["missed"].as_u64().unwrap() > 0, "{data}");
    assert_eq!(data["replaying_after"], all[2].id);
    while got.len() < all.len() {
        got.push(event_of(&stream.next_event().await).id);
    }
    assert_eq!(got, all.iter().map(|e| e.id).collect::<Vec<_>>());
    // The live buffer's copies of replayed events are skipped; new ones come once.
    h.emit(tftp(99));
    let e = event_of(&stream.next_event().await);
    assert_eq!(e.message, "sent file 99");
    assert_eq!(h.hub.dropped(), 0);
}

#[tokio::test]
async fn filters_by_mac_machine_and_kind() {
    let h = Harness::new().await;
    let (status, node) = h
        .call(
            axum::http::Method::POST,
            "/api/v1/machines",
            Some(serde_json::json!({ "name": "node-1", "macs": ["52:54:00:00:00:01", "52:54:00:00:00:02"] })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    h.stored_events(1).await;
    let other: rackboot_core::MacAddr = "52:54:00:00:00:09".parse().unwrap();
    let second_nic: rackboot_core::MacAddr = "52:54:00:00:00:02".parse().unwrap();

    let mut by_machine =
        open_stream(&h, "/api/v1/events/stream?machine=node-1&after=0", None).await;
    let mut by_mac = open_stream(&h, "/api/v1/events/stream?mac=52:54:00:00:00:09", None).await;
    let mut by_kind = open_stream(&h, "/api/v1/events/stream?kind=lease_acked", None).await;

    h.emit(NewEvent::new(EventKind::TftpSent, "other machine").mac(other));
    h.emit(NewEvent::new(EventKind::LeaseAcked, "second nic").mac(second_nic));

    let created = event_of(&by_machine.next_event().await);
    assert_eq!(created.kind, EventKind::MachineChanged);
    assert_eq!(
        created.machine.map(|id| id.to_string()),
        node["id"].as_str().map(String::from)
    );
    assert_eq!(
        event_of(&by_machine.next_event().await).message,
        "second nic"
    );
    assert_eq!(
        event_of(&by_mac.next_event().await).message,
        "other machine"
    );
    assert_eq!(event_of(&by_kind.next_event().await).message, "second nic");

    // Everyone gets the next matching event, proving the others were skipped.
    h.emit(NewEvent::new(EventKind::LeaseAcked, "both").mac(other));
    assert_eq!(event_of(&by_mac.next_event().await).message, "both");
    assert_eq!(event_of(&by_kind.next_event().await).message, "both");
    h.emit(NewEvent::new(EventKind::TftpSent, "node again").mac(second_nic));
    assert_eq!(
        event_of(&by_machine.next_event().await).message,
        "node again"
    );
}

#[tokio::test]
async fn keep_alive_comments_are_sent() {
    let mut h = Harness::new().await;
    h.state.sse_keep_alive = Duration::from_millis(50);
    let mut stream = open_stream(&h, "/api/v1/events/stream", None).await;
    let frame = stream.next().await;
    assert!(frame.comment_only, "{frame:?}");
}
