//! Alerts end to end: a real HTTP receiver on 127.0.0.1 (axum) that records
//! every request, a real SQLite store, a real EventHub with a persist task
//! like the binary's, and `rackboot_alerts::run`. Signatures are checked with
//! `openssl dgst -hmac` (an HMAC that shares no code with ours).

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use rackboot_alerts::AlertConfig;
use rackboot_core::{Delivery, DeliveryState, Event, EventHub, EventKind, NewEvent};
use rackboot_fleet::{Actor, Fleet};
use rackboot_seal::SecretKey;
use rackboot_store::{EventFilter, Store};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// One request as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    at: Instant,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

/// Answers by the first path segment: `ok` 200; `flaky` 500 twice, then
/// 200; `hang` never answers; `switch` whatever `switch_status` says.
struct Receiver {
    requests: Mutex<Vec<Received>>,
    flaky_failures_left: AtomicU32,
    switch_status: AtomicU16,
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    r.requests.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
        at: Instant::now(),
    });
    let segment = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    match segment {
        "ok" => (StatusCode::OK, "thanks"),
        "flaky" => {
            let left = r.flaky_failures_left.load(Ordering::SeqCst);
            if left > 0 {
                r.flaky_failures_left.store(left - 1, Ordering::SeqCst);
                (StatusCode::INTERNAL_SERVER_ERROR, "boom\nnot now")
            } else {
                (StatusCode::OK, "")
            }
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (StatusCode::OK, "")
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            (StatusCode::OK, "")
        }
        "switch" => (
            StatusCode::from_u16(r.switch_status.load(Ordering::SeqCst)).unwrap(),
            "switch",
        ),
        _ => (StatusCode::NOT_FOUND, "no such path"),
    }
}

/// Everything alerts runs against, like the binary wires it.
struct Rig {
    fleet: Arc<Fleet>,
    store: Arc<dyn Store>,
    key: Arc<SecretKey>,
    receiver: Arc<Receiver>,
    base: String,
    running: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

fn fast_config() -> AlertConfig {
    AlertConfig {
        max_attempts: 3,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        // Generous: a slow local POST under load must not become a retry
        // (tests assert exact attempt counts). /hang tests set their own.
        timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(50),
        ..AlertConfig::default()
    }
}

impl Rig {
    async fn new() -> Rig {
        Rig::with_store(rackboot_store::open_sqlite_in_memory().await.unwrap()).await
    }

    async fn with_store(store: Arc<dyn Store>) -> Rig {
        let receiver = Arc::new(Receiver {
            requests: Mutex::new(Vec::new()),
            flaky_failures_left: AtomicU32::new(2),
            switch_status: AtomicU16::new(503),
        });
        let app = Router::new()
            .route("/{*rest}", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Rig::attach(store, receiver, base, Arc::new(SecretKey::generate())).await
    }

    /// A fresh hub, persist task and fleet over `store` (a server start).
    async fn attach(
        store: Arc<dyn Store>,
        receiver: Arc<Receiver>,
        base: String,
        key: Arc<SecretKey>,
    ) -> Rig {
        let (hub, mut queue) = EventHub::new(1024);
        let (persist_store, persist_hub) = (store.clone(), hub.clone());
        tokio::spawn(async move {
            while let Some(batch) = queue.next_batch(256).await {
                let stored = persist_store.append_events(batch).await.unwrap();
                persist_hub.publish(stored);
            }
        });
        let fleet = Fleet::load(store.clone(), None, hub).await.unwrap();
        Rig {
            fleet,
            store,
            key,
            receiver,
            base,
            running: None,
        }
    }

    fn start(&mut self, config: AlertConfig) {
        assert!(self.running.is_none());
        let token = CancellationToken::new();
        let task = tokio::spawn(rackboot_alerts::run(
            self.fleet.clone(),
            self.key.clone(),
            config,
            token.clone(),
        ));
        let task = tokio::spawn(async move { task.await.unwrap().unwrap() });
        self.running = Some((token, task));
    }

    async fn stop(&mut self) {
        let (token, task) = self.running.take().expect("alerts running");
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("alerts stops promptly")
            .unwrap();
    }

    /// Creates a webhook POSTing to `path` on the receiver; returns its secret.
    async fn hook(&self, name: &str, path: &str, events: &[&str]) -> String {
        let saved = self
            .fleet
            .put_webhook(
                name,
                &format!("{}{path}", self.base),
                events.iter().map(|s| s.to_string()).collect(),
                true,
                None,
                &self.key,
                &Actor::api(None),
            )
            .await
            .unwrap();
        saved.generated_secret.expect("a generated secret")
    }

    fn emit(&self, kind: EventKind, message: &str) {
        self.fleet.emit(NewEvent::new(kind, message));
    }

    /// Waits until an event with `message` is stored; returns it.
    async fn stored(&self, message: &str) -> Event {
        wait_for(&format!("event {message:?} stored"), || async {
            self.store
                .list_events(&EventFilter::default())
                .await
                .unwrap()
                .into_iter()
                .find(|e| e.message == message)
        })
        .await
    }

    /// The `message` of each request received on `path`, in arrival order.
    fn messages(&self, path: &str) -> Vec<String> {
        self.requests(path)
            .iter()
            .map(|r| r.json()["message"].as_str().unwrap().to_string())
            .collect()
    }

    fn requests(&self, path: &str) -> Vec<Received> {
        self.receiver
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` got at least `n` requests.
    async fn wait_requests(&self, path: &str, n: usize) -> Vec<Received> {
        wait_for(&format!("{n} requests to {path}"), || async {
            let got = self.requests(path);
            (got.len() >= n).then_some(got)
        })
        .await
    }

    async fn deliveries(&self, hook: &str) -> Vec<Delivery> {
        let mut d = self.store.list_deliveries(Some(hook), 0).await.unwrap();
        d.reverse(); // oldest first
        d
    }

    /// Waits until every delivery of `hook` is no longer pending, and there are `n`.
    async fn settled(&self, hook: &str, n: usize) -> Vec<Delivery> {
        wait_for(&format!("{n} settled deliveries to {hook}"), || async {
            let d = self.deliveries(hook).await;
            (d.len() == n && d.iter().all(|d| d.state != DeliveryState::Pending)).then_some(d)
        })
        .await
    }
}

async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// HMAC-SHA256 by `openssl dgst`, as lower-case hex.
fn openssl_hmac(key: &str, data: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.rsplit("= ").next().unwrap().trim().to_string()
}

/// The request's signature is the HMAC of "<timestamp>.<body>" under `secret`.
fn assert_signed(r: &Received, secret: &str) {
    let ts = r.header("x-rackboot-timestamp");
    let now = chrono::Utc::now().timestamp();
    let ts_value: i64 = ts.parse().unwrap();
    assert!(
        (now - ts_value).abs() < 60,
        "timestamp {ts} is not now ({now})"
    );
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let want = format!("sha256={}", openssl_hmac(secret, &signed));
    assert_eq!(r.header("x-rackboot-signature"), want, "signature of {r:?}");
    // And not under another key.
    assert_ne!(
        r.header("x-rackboot-signature"),
        format!("sha256={}", openssl_hmac("wrong", &signed))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_event_in_order_signed() {
    let mut rig = Rig::new().await;
    let secret = rig.hook("all", "/ok/all", &["*"]).await;
    rig.start(fast_config());
    let mac = "52:54:00:aa:00:01".parse().unwrap();
    rig.fleet.record_discovery(mac, None, None).await.unwrap();
    let machine = rig.fleet.snapshot().machine_by_mac(mac).unwrap().clone();
    for i in 0..20 {
        let kind = [
            EventKind::LeaseAcked,
            EventKind::StepFailed,
            EventKind::TftpSent,
        ][i % 3];
        rig.fleet.emit(
            NewEvent::new(kind, format!("event {i}"))
                .machine(machine.id)
                .mac(mac)
                .data(serde_json::json!({"i": i})),
        );
    }
    // machine_changed-style discovery event + 20.
    let got = rig.wait_requests("/ok/all", 21).await;
    let ours: Vec<&Received> = got
        .iter()
        .filter(|r| r.json()["message"].as_str().unwrap().starts_with("event "))
        .collect();
    assert_eq!(ours.len(), 20);
    let ids: Vec<i64> = got
        .iter()
        .map(|r| r.json()["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order: {ids:?}");
    for (i, r) in ours.iter().enumerate() {
        let body = r.json();
        assert_eq!(body["message"], format!("event {i}"));
        assert_eq!(body["data"]["i"], i);
        assert_eq!(body["machine"], machine.id.to_string());
        assert_eq!(body["machine_name"], machine.name);
        assert_eq!(body["mac"], "52:54:00:aa:00:01");
        assert!(body["at"].as_str().is_some());
        assert_eq!(r.header("x-rackboot-event"), body["kind"].as_str().unwrap());
        assert_eq!(r.header("content-type"), "application/json");
        assert_signed(r, &secret);
    }
    let deliveries = rig.settled("all", 21).await;
    for (d, r) in deliveries.iter().zip(&got) {
        assert_eq!(d.state, DeliveryState::Delivered);
        assert_eq!((d.attempts, d.last_status), (1, Some(200)));
        assert_eq!(r.header("x-rackboot-delivery"), d.id.to_string());
        assert_eq!(
            r.body,
            d.body.as_bytes(),
            "the stored body is what was sent"
        );
    }
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_backoff_until_accepted() {
    let mut rig = Rig::new().await;
    let secret = rig.hook("flaky", "/flaky", &["warnings"]).await;
    rig.start(fast_config());
    rig.emit(EventKind::AgentLost, "agent went quiet");
    let tries = rig.wait_requests("/flaky", 3).await;
    let d = &rig.settled("flaky", 1).await[0];
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!(
        (d.attempts, d.last_status, d.last_error.as_deref()),
        (3, Some(200), None)
    );
    // Same delivery each time, each attempt signed afresh; waits of 50 then 100 ms.
    for r in &tries {
        assert_eq!(r.header("x-rackboot-delivery"), d.id.to_string());
        assert_signed(r, &secret);
    }
    let gap1 = tries[1].at - tries[0].at;
    let gap2 = tries[2].at - tries[1].at;
    assert!(gap1 >= Duration::from_millis(45), "first wait {gap1:?}");
    assert!(gap2 >= Duration::from_millis(95), "second wait {gap2:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.requests("/flaky").len(),
        3,
        "nothing sent after delivery"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_a_request_under_way_finish_and_a_restart_does_not_repeat_it() {
    let mut rig = Rig::new().await;
    rig.hook("slow", "/slow/a", &["warnings"]).await;
    rig.start(fast_config());
    rig.emit(EventKind::WorkflowFailed, "before the stop");
    // The receiver has the request; its answer comes 500 ms later.
    rig.wait_requests("/slow/a", 1).await;
    rig.stop().await;
    // Marked before the stop returned.
    let done = rig.deliveries("slow").await;
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].state, done[0].attempts, done[0].last_status),
        (DeliveryState::Delivered, 1, Some(200))
    );
    rig.start(fast_config());
    rig.emit(EventKind::WorkflowFailed, "after the restart");
    rig.wait_requests("/slow/a", 2).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        rig.messages("/slow/a"),
        ["before the stop", "after the restart"]
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_after_max_attempts_and_warns_other_hooks() {
    let mut rig = Rig::new().await;
    rig.hook("dead", "/hang", &["warnings"]).await;
    rig.hook("ops", "/ok/ops", &["warnings"]).await;
    let started = Instant::now();
    // Short enough for /hang to fail soon, long enough for /ok under load.
    rig.start(AlertConfig {
        timeout: Duration::from_secs(1),
        ..fast_config()
    });
    rig.emit(EventKind::WorkflowFailed, "deploy of r1-01 failed");
    let event = rig.stored("deploy of r1-01 failed").await;
    let dead = rig.settled("dead", 1).await;
    let d = &dead[0];
    assert_eq!(
        (d.state, d.attempts, d.last_status),
        (DeliveryState::Failed, 3, None)
    );
    assert!(
        d.last_error
            .as_deref()
            .unwrap()
            .contains("no answer within"),
        "{:?}",
        d.last_error
    );
    assert_eq!(rig.requests("/hang").len(), 3);
    // 3 timeouts of 1 s and waits of 50 and 100 ms.
    assert!(started.elapsed() >= Duration::from_millis(3000));
    // The warning names the webhook, the event and the error...
    let warning = wait_for("a webhook_failed event", || async {
        rig.store
            .list_events(&EventFilter::default())
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.kind == EventKind::WebhookFailed)
    })
    .await;
    assert_eq!(warning.data["webhook"], "dead");
    assert_eq!(warning.data["event_id"], event.id);
    assert_eq!(warning.data["event_kind"], "workflow_failed");
    assert_eq!(warning.data["attempts"], 3);
    assert!(warning.message.contains("\"dead\"") && warning.message.contains("no answer"));
    // ...and reaches the other hook, never the one it is about.
    let ops = rig.wait_requests("/ok/ops", 2).await;
    let kinds: Vec<String> = ops
        .iter()
        .map(|r| r.header("x-rackboot-event").to_string())
        .collect();
    assert_eq!(kinds, ["workflow_failed", "webhook_failed"]);
    assert_eq!(ops[1].json()["data"]["webhook"], "dead");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.deliveries("dead").await.len(),
        1,
        "no webhook_failed to the dead hook"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_choose_what_each_hook_gets() {
    let mut rig = Rig::new().await;
    rig.hook("warn", "/ok/warn", &[]).await;
    rig.hook("leases", "/ok/leases", &["lease_acked", "lease_nak"])
        .await;
    let off = rig
        .fleet
        .put_webhook(
            "off",
            &format!("{}/ok/off", rig.base),
            vec!["*".into()],
            false,
            Some("given-secret".into()),
            &rig.key,
            &Actor::api(None),
        )
        .await
        .unwrap();
    assert_eq!(off.generated_secret, None, "a given secret is not echoed");
    rig.start(fast_config());
    rig.emit(EventKind::LeaseAcked, "ack");
    rig.emit(EventKind::TftpSent, "sent");
    rig.emit(EventKind::PowerActionFailed, "bmc said no");
    rig.emit(EventKind::LeaseNak, "nak");
    rig.emit(EventKind::MachineStateChanged, "marker");
    // Everything before the marker is enqueued once the marker's batch is.
    rig.stored("marker").await;
    let warn = rig.wait_requests("/ok/warn", 2).await;
    let leases = rig.wait_requests("/ok/leases", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kinds = |rs: &[Received]| -> Vec<String> {
        rs.iter()
            .map(|r| r.json()["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        kinds(&rig.requests("/ok/warn")),
        ["power_action_failed", "lease_nak"]
    );
    assert_eq!(
        kinds(&rig.requests("/ok/leases")),
        ["lease_acked", "lease_nak"]
    );
    assert_eq!((warn.len(), leases.len()), (2, 2));
    assert!(
        rig.requests("/ok/off").is_empty(),
        "a disabled hook gets nothing"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_a_restart_in_order() {
    let dir = std::env::temp_dir().join(format!("rackboot-alerts-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("rackboot.db").display());
    let mut rig = Rig::with_store(rackboot_store::open(&url).await.unwrap()).await;
    let secret = rig.hook("ops", "/switch", &["warnings"]).await;
    // A long first backoff, so the failed delivery is still waiting at restart.
    let config = AlertConfig {
        backoff_initial: Duration::from_millis(1500),
        backoff_max: Duration::from_secs(2),
        max_attempts: 5,
        ..fast_config()
    };
    rig.start(config.clone());
    rig.emit(EventKind::StepFailed, "first");
    rig.wait_requests("/switch", 1).await;
    wait_for("the first attempt recorded", || async {
        let d = rig.deliveries("ops").await;
        (d.len() == 1 && d[0].attempts == 1).then_some(())
    })
    .await;
    rig.stop().await;

    // While alerts is down, two more warnings are stored.
    rig.emit(EventKind::StepFailed, "second");
    rig.emit(EventKind::AgentLost, "third");
    rig.stored("third").await;
    assert_eq!(
        rig.deliveries("ops").await.len(),
        1,
        "nothing enqueued while stopped"
    );
    rig.receiver.switch_status.store(200, Ordering::SeqCst);

    // A new server on the same database file.
    let store = rackboot_store::open(&url).await.unwrap();
    let mut rig = Rig::attach(
        store,
        rig.receiver.clone(),
        rig.base.clone(),
        rig.key.clone(),
    )
    .await;
    rig.start(config);
    let delivered = rig.settled("ops", 3).await;
    assert!(
        delivered
            .iter()
            .all(|d| d.state == DeliveryState::Delivered)
    );
    assert_eq!(
        delivered[0].attempts, 2,
        "the first was tried before the restart"
    );
    let got = rig.requests("/switch");
    assert_eq!(
        rig.messages("/switch"),
        ["first", "first", "second", "third"],
        "in order, the held one first"
    );
    for r in &got {
        assert_signed(r, &secret);
    }
    rig.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_not_replayed_to_new_hooks() {
    let mut rig = Rig::new().await;
    // Before any webhook, and before alerts ever ran.
    rig.emit(EventKind::WorkflowFailed, "old failure");
    rig.stored("old failure").await;
    rig.start(fast_config());
    rig.hook("first", "/ok/first", &["warnings"]).await;
    rig.emit(EventKind::WorkflowFailed, "new failure");
    let got = rig.wait_requests("/ok/first", 1).await;
    assert_eq!(got[0].json()["message"], "new failure");

    // Alerts is down while a second hook is added between two warnings; on
    // restart it catches up from the outbox, and the second hook gets only
    // what came after it.
    rig.stop().await;
    rig.emit(EventKind::AgentLost, "while down, before second");
    rig.stored("while down, before second").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    rig.hook("second", "/ok/second", &["warnings"]).await;
    rig.emit(EventKind::AgentLost, "while down, after second");
    rig.stored("while down, after second").await;
    rig.start(fast_config());
    rig.emit(EventKind::PoolLow, "live again");
    let first = rig.wait_requests("/ok/first", 4).await;
    let second = rig.wait_requests("/ok/second", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.messages("/ok/first"),
        [
            "new failure",
            "while down, before second",
            "while down, after second",
            "live again"
        ]
    );
    assert_eq!(
        rig.messages("/ok/second"),
        ["while down, after second", "live again"]
    );
    assert_eq!((first.len(), second.len()), (4, 2));
    assert!(
        rig.requests("/ok/first")
            .iter()
            .all(|r| r.json()["message"] != "old failure")
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_delivery_reaches_one_hook_and_does_not_move_the_resume_point() {
    let mut rig = Rig::new().await;
    let secret = rig.hook("ops", "/ok/ops", &["warnings"]).await;
    rig.hook("other", "/ok/other", &["*"]).await;
    rig.start(fast_config());
    rig.emit(EventKind::StepFailed, "real");
    rig.wait_requests("/ok/ops", 1).await;
    let test = rig
        .fleet
        .test_webhook("ops", &Actor::api(None))
        .await
        .unwrap();
    assert_eq!(test.event_id, 0);
    let got = rig.wait_requests("/ok/ops", 2).await;
    let body = got[1].json();
    assert_eq!(body["kind"], "webhook_test");
    assert_eq!(body["id"], 0);
    assert_eq!(body["data"]["webhook"], "ops");
    assert_eq!(got[1].header("x-rackboot-event"), "webhook_test");
    assert_eq!(got[1].header("x-rackboot-delivery"), test.id.to_string());
    assert_signed(&got[1], &secret);
    assert!(matches!(
        rig.fleet.test_webhook("nope", &Actor::api(None)).await,
        Err(rackboot_fleet::FleetError::NotFound(_))
    ));

    // The newest outbox row is now the test (event 0): a restart still
    // continues after the real event, neither replaying it nor skipping ahead.
    rig.stop().await;
    rig.emit(EventKind::StepFailed, "while down");
    rig.stored("while down").await;
    rig.start(fast_config());
    let got = rig.wait_requests("/ok/ops", 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages = rig.messages("/ok/ops");
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[0], "real");
    assert_eq!(messages[2], "while down");
    assert_eq!(got[2].json()["kind"], "step_failed");
    let other: Vec<String> = rig
        .requests("/ok/other")
        .iter()
        .map(|r| r.json()["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(!other.contains(&"webhook_test".to_string()), "{other:?}");
    rig.stop().await;
}
