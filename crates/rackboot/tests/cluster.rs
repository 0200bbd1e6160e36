//! Three real `rackboot serve` processes on one PostgreSQL database (loopback,
//! no root): a write through one is served by the others within a second or
//! two; each machine's BMC is polled by one server; a workflow runs on the
//! server that owns its machine; kill -9 of a server moves its machines' BMC
//! polling and its workflows to the survivors within seconds.
//!
//! PostgreSQL: `RACKBOOT_TEST_PG_URL`, or a throwaway cluster started with
//! `scripts/test-postgres` (stopped when the test process exits).

mod loopback;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use loopback::{free_port, rackboot};

/// Heartbeat and dead-after of the test clusters (milliseconds): a member
/// stalled 2.5 s by a loaded machine (six servers and PostgreSQL on two
/// CPUs) must not be declared dead, or its BMCs are polled twice.
const HEARTBEAT_MS: u64 = 500;
const DEAD_AFTER_MS: u64 = 3000;
/// One key for every server: BMC passwords are sealed with it.
const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn pg_base_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("RACKBOOT_TEST_PG_URL") {
            return url;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-postgres");
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", "--no-fsync", "--watch-pid"])
            .arg(std::process::id().to_string())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "these tests need PostgreSQL: {} failed; set RACKBOOT_TEST_PG_URL.\n{stdout}{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("export RACKBOOT_TEST_PG_URL="))
            .expect("the URL in test-postgres's output")
            .to_string()
    })
}

/// A fresh database on the test server; its URL.
fn fresh_database() -> String {
    let base = pg_base_url();
    let name = format!("cluster_{}", uuid::Uuid::new_v4().simple());
    let out = Command::new("psql")
        .args([base, "-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "CREATE DATABASE: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (head, _) = base.rsplit_once('/').expect("a database in the URL");
    format!("{head}/{name}")
}

/// One server of the cluster; killed (-9) on drop.
struct Node {
    name: String,
    child: Option<Child>,
    port: u16,
    state: PathBuf,
    log: PathBuf,
    token: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Node {
    fn start(dir: &Path, name: &str, store: &str) -> Node {
        let state = dir.join(name);
        let port = free_port();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "state_dir = {state:?}\nstore = {store:?}\nserver_ip = \"127.0.0.1\"\n\
                 [listen]\nhttp = \"127.0.0.1:{port}\"\ntftp = \"off\"\n\
                 [power]\nsync_interval_secs = 1\nallow_fake_bmc = true\n\
                 [cluster]\nname = {name:?}\nheartbeat_ms = {HEARTBEAT_MS}\n\
                 dead_after_ms = {DEAD_AFTER_MS}\nresync_secs = 30\n",
                state = state.display().to_string(),
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(rackboot())
            .args(["serve", "-c", config.to_str().unwrap()])
            .env("RACKBOOT_SECRET_KEY", SECRET_KEY)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut node = Node {
            name: name.into(),
            child: Some(child),
            port,
            state,
            log,
            token: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(t) = std::fs::read_to_string(node.state.join("admin-token")) {
                node.token = t.trim().to_string();
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return node;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not start: {}",
                node.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut req = client
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {path}: {e}", self.name));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{} GET {path}: {body}", self.name);
        body
    }

    /// The iPXE script this server renders for `mac` (from its snapshot).
    async fn render(&self, mac: &str) -> String {
        reqwest::get(format!("{}/boot/ipxe/{mac}", self.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Waits until `check` holds (polled every 20 ms) and returns how long that
/// took; fails after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn members(node: &Node) -> BTreeSet<String> {
    node.get("/api/v1/cluster").await["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

/// Three servers that all see each other.
async fn three(dir: &Path) -> Vec<Node> {
    let store = fresh_database();
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::start(dir, n, &store))
        .collect();
    let all: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    for n in &nodes {
        within(
            Duration::from_secs(30),
            "every server sees three",
            || async { members(n).await == all },
        )
        .await;
    }
    nodes
}

fn mac(i: usize) -> String {
    format!("52:54:00:aa:{:02x}:{:02x}", i / 256, i % 256)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_server_is_served_by_the_others() {
    if !rackboot_testenv::privileged("root: network namespaces and a PostgreSQL server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = three(dir.path()).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let (status, body) = a
        .call(
            reqwest::Method::PUT,
            "/api/v1/profiles/linux",
            Some(json!({"kernel": "https://example.invalid/vmlinuz",
                        "cmdline": "console=ttyS0 host={{ machine.name }}"})),
        )
        .await;
    assert!(status < 300, "{body}");
    let (status, body) = a
        .call(
            reqwest::Method::POST,
            "/api/v1/machines",
            Some(json!({"name": "n1", "macs": [mac(1)], "intent": {"kind": "profile", "name": "linux"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut seen = Vec::new();
    for n in [b, c] {
        // The goal is a second (printed; the bound leaves room for a
        // loaded machine).
        let took = within(
            Duration::from_secs(5),
            "B and C serve A's machine",
            || async { n.render(&mac(1)).await.contains("host=n1") },
        )
        .await;
        seen.push(took);
    }
    eprintln!(
        "a machine enrolled through A was served by B after {:?}, by C after {:?}",
        seen[0], seen[1]
    );

    // A change of intent through C reaches A: the machine boots its disk
    // (the installer is not served again by another server).
    let (status, body) = c
        .call(
            reqwest::Method::PUT,
            "/api/v1/machines/n1/boot",
            Some(json!({"kind": "local_disk"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let took = within(Duration::from_secs(5), "A serves C's change", || async {
        !a.render(&mac(1)).await.contains("host=n1")
    })
    .await;
    eprintln!("C's change of intent reached A after {took:?}");

    // A bulk import through B: 2,000 machines, served by A and C.
    let rows: Vec<Value> = (100..2100)
        .map(|i| json!({"name": format!("bulk-{i}"), "macs": [mac(i)], "intent": {"kind": "profile", "name": "linux"}}))
        .collect();
    for chunk in rows.chunks(1000) {
        let (status, body) = b
            .call(
                reqwest::Method::POST,
                "/api/v1/machines:bulk",
                Some(json!({"machines": chunk})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["created"], 1000, "{body}");
    }
    let imported = Instant::now();
    for n in [a, c] {
        within(
            Duration::from_secs(30),
            "A and C serve B's import",
            || async {
                n.render(&mac(2099)).await.contains("host=bulk-2099")
                    && n.get("/api/v1/status").await["counts"]["machines"] == 2001
            },
        )
        .await;
    }
    eprintln!(
        "2,000 machines imported through B were all in A's and C's snapshots {:?} after the import returned",
        imported.elapsed()
    );
}

/// The first-observation events (`power is ...`) each machine got.
async fn first_observations(node: &Node, after: i64) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut cursor = after;
    loop {
        let page = node
            .get(&format!(
                "/api/v1/events?kind=power_changed&after={cursor}&limit=1000"
            ))
            .await;
        let events = page.as_array().unwrap();
        for e in events {
            if e["message"].as_str().unwrap_or("").starts_with("power is ") {
                *out.entry(e["machine"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
            }
            cursor = e["id"].as_i64().unwrap();
        }
        if events.len() < 1000 {
            return out;
        }
    }
}

async fn last_event_id(node: &Node) -> i64 {
    node.get("/api/v1/events?tail=1").await[0]["id"]
        .as_i64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_servers_bmcs_and_workflows_move_to_the_survivors() {
    if !rackboot_testenv::privileged("root: network namespaces and a PostgreSQL server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = three(dir.path()).await;
    let soak = r#"
name = "soak"
description = "wait, power on, wait"
lifecycle = "none"

[[step]]
name = "settle"
uses = "wait"
with = { secs = 4 }

[[step]]
name = "on"
uses = "power_on"

[[step]]
name = "cool"
uses = "wait"
with = { secs = 1 }
"#;
    // Definitions are files of each server.
    for n in &nodes {
        let (status, body) = n
            .call(
                reqwest::Method::PUT,
                "/api/v1/workflow-definitions",
                Some(json!({"source": soak})),
            )
            .await;
        assert!(status < 300, "{body}");
    }
    const MACHINES: usize = 30;
    let rows: Vec<Value> = (0..MACHINES)
        .map(|i| json!({"name": format!("m{i:02}"), "macs": [mac(i)], "bmc": {"url": format!("fake://admin:pw@bmc{i}")}}))
        .collect();
    let (status, body) = nodes[0]
        .call(
            reqwest::Method::POST,
            "/api/v1/machines:bulk",
            Some(json!({"machines": rows})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], MACHINES, "{body}");
    // Which server owns which machine (every server agrees).
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..MACHINES {
        let name = format!("m{i:02}");
        let mut seen = BTreeSet::new();
        for n in &nodes {
            let view = n.get(&format!("/api/v1/cluster?machine={name}")).await;
            let owner_id = view["owner"].as_str().unwrap().to_string();
            let member = view["members"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["id"] == owner_id.as_str())
                .unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string();
            seen.insert(member);
        }
        assert_eq!(
            seen.len(),
            1,
            "{name}: servers disagree on its owner: {seen:?}"
        );
        owner.insert(name.clone(), seen.into_iter().next().unwrap());
        ids.insert(
            nodes[0].get(&format!("/api/v1/machines/{name}")).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
            name,
        );
    }
    for n in ["a", "b", "c"] {
        let share = owner.values().filter(|o| *o == n).count();
        assert!(share > 0, "{n} owns no machine of {MACHINES}: {owner:?}");
    }
    // Every machine is polled by one server: one first observation each.
    within(Duration::from_secs(30), "every BMC polled", || async {
        first_observations(&nodes[0], 0).await.len() == MACHINES
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = first_observations(&nodes[0], 0).await;
    assert!(
        seen.values().all(|&n| n == 1),
        "a BMC was polled by more than one server: {seen:?}"
    );

    // A workflow for a machine B owns, started through A: B runs it.
    let target = owner
        .iter()
        .find(|(_, o)| *o == "b")
        .map(|(m, _)| m.clone())
        .unwrap();
    let (status, body) = nodes[0]
        .call(
            reqwest::Method::POST,
            "/api/v1/workflows",
            Some(json!({"workflow": "soak", "machines": [target]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let wf = body[0]["workflow"]["id"].as_str().unwrap().to_string();
    within(Duration::from_secs(30), "B runs the workflow", || async {
        nodes[0].get(&format!("/api/v1/workflows/{wf}")).await["steps"][0]["state"] == "running"
    })
    .await;
    assert!(
        nodes[1].log_text().contains(&format!("workflow={wf}"))
            || nodes[1].log_text().contains(&wf),
        "B's log does not mention the workflow it took"
    );

    // kill -9 B in the middle of the settle step.
    let before = last_event_id(&nodes[0]).await;
    nodes[1].kill9();
    let killed = Instant::now();
    let b_machines: BTreeSet<&String> = owner
        .iter()
        .filter(|(_, o)| *o == "b")
        .map(|(m, _)| m)
        .collect();
    // Its BMCs are polled by the survivors: a first observation each, and
    // none for the others' machines.
    // The goal is 30 s (issue 15 item 5).
    let took = within(
        Duration::from_secs(30),
        "B's BMCs polled by A or C",
        || async {
            let again = first_observations(&nodes[0], before).await;
            b_machines.iter().all(|m| {
                ids.iter()
                    .find(|(_, n)| n == m)
                    .is_some_and(|(id, _)| again.contains_key(id))
            })
        },
    )
    .await;
    let again = first_observations(&nodes[0], before).await;
    for (id, count) in &again {
        let name = &ids[id];
        assert_eq!(
            *count, 1,
            "{name} observed {count} times after the takeover"
        );
        assert!(
            b_machines.contains(name),
            "{name} was not B's, yet was re-polled"
        );
    }
    eprintln!(
        "kill -9 of B: its {} BMCs polled by the survivors after {took:?}",
        b_machines.len()
    );
    // The workflow is resumed by a survivor and completes.
    let took = within(
        Duration::from_secs(90),
        "the workflow completes on a survivor",
        || async { nodes[0].get(&format!("/api/v1/workflows/{wf}")).await["state"] == "succeeded" },
    )
    .await;
    eprintln!(
        "kill -9 of B: its workflow completed on a survivor {:?} after the kill",
        killed.elapsed().max(took)
    );
    let takeover = [&nodes[0], &nodes[2]]
        .iter()
        .any(|n| n.log_text().contains("taking over a workflow"));
    assert!(takeover, "no survivor logged the takeover");
    let members_now = members(&nodes[0]).await;
    assert_eq!(
        members_now,
        ["a", "c"].iter().map(|s| s.to_string()).collect()
    );
}
