//! Several real `rackboot serve` processes on one PostgreSQL database, each
//! in its own network namespace on one bridge, with one client namespace for
//! DHCP load (perfdhcp). Root: network namespaces.
//!
//! The servers reach PostgreSQL through its unix socket (the test cluster's
//! directory), so nothing leaves the test's namespaces and loopback.
//!
//! ```ignore
//! mod cluster_net;
//! use cluster_net::{Net, Server, fresh_database};
//!
//! let store = fresh_database("mytest");          // a new database's URL
//! let dir = tempfile::tempdir().unwrap();
//! let net = Net::new(&["a", "b"]);              // a: 10.81.0.1, b: 10.81.0.2
//! let a = Server::start(&net, dir.path(), "a", &store, "[cluster]\nname = \"a\"\n");
//! let status = a.get("/api/v1/status");         // admin token, from a's namespace
//! let report = net.perfdhcp(30, &["-r", "50", "-R", "40", "-p", "5"]).output().unwrap();
//! ```

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One key for every server: secrets sealed by one are opened by the others.
pub const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The client namespace's name (perfdhcp runs there) and its address.
pub const CLIENT: &str = "client";
pub const CLIENT_IP: &str = "10.81.0.250";
/// The bridge's subnet: servers get 10.81.0.1, .2, ... in the order given
/// to [`Net::new`]; DHCP pools can use 10.81.1.0 and up.
pub const CIDR: &str = "10.81.0.0/16";
/// The API and boot-file port of every server (on its namespace's address).
pub const HTTP_PORT: u16 = 8080;

pub fn rackboot() -> &'static str {
    env!("CARGO_BIN_EXE_rackboot")
}

/// A PostgreSQL server reachable from other namespaces through its unix
/// socket.
#[derive(Clone, Debug)]
pub struct PgSocket {
    /// The socket directory (also the cluster's directory, holding `data/`).
    pub dir: String,
    pub port: u16,
    /// Whether this test process started it (`scripts/test-postgres start
    /// --watch-pid`: stopped when the process exits).
    pub started_here: bool,
}

impl PgSocket {
    /// A new, empty database named `{prefix}_{uuid}`; its URL.
    pub fn create_database(&self, prefix: &str) -> String {
        let db = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        run(&[
            "psql",
            &self.url("postgres"),
            "-q",
            "-c",
            &format!("CREATE DATABASE {db}"),
        ]);
        self.url(&db)
    }

    /// A URL for database `db` through the socket.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost/{db}?host={}&port={}",
            self.dir, self.port
        )
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// The test-all cluster when its directory is exported
/// (`RACKBOOT_TEST_PG_DIR` and `RACKBOOT_TEST_PG_URL`), else one started
/// for this test process (once, shared by its tests).
pub fn pg_socket() -> PgSocket {
    static PG: OnceLock<PgSocket> = OnceLock::new();
    PG.get_or_init(|| {
        if let (Ok(dir), Ok(url)) = (
            std::env::var("RACKBOOT_TEST_PG_DIR"),
            std::env::var("RACKBOOT_TEST_PG_URL"),
        ) {
            return PgSocket {
                dir,
                port: port_of(&url),
                started_here: false,
            };
        }
        own_pg_socket()
    })
    .clone()
}

/// A PostgreSQL cluster of this test process's own, never the one test-all
/// shares (`scripts/test-postgres start --watch-pid`: stopped when the
/// process exits). For a test that stops or restarts it.
pub fn own_pg_socket() -> PgSocket {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-postgres");
    let out = Command::new("bash")
        .arg(&script)
        .args(["start", "--no-fsync", "--watch-pid"])
        .arg(std::process::id().to_string())
        .output()
        .expect("test-postgres");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "test-postgres: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {key}=")))
            .unwrap_or_else(|| panic!("no {key} in test-postgres's output: {stdout}"))
            .to_string()
    };
    PgSocket {
        dir: get("RACKBOOT_TEST_PG_DIR"),
        port: port_of(&get("RACKBOOT_TEST_PG_URL")),
        started_here: true,
    }
}

/// A new, empty database named `{prefix}_{uuid}` on [`pg_socket`]; its URL
/// (a `store =` value the servers in namespaces can use).
pub fn fresh_database(prefix: &str) -> String {
    pg_socket().create_database(prefix)
}

/// Runs a command to completion; panics with its stderr if it fails.
pub fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", cmd[0]));
    assert!(
        out.status.success(),
        "{}: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces: `sw` (holding the bridge `br0`), one per server (its `e0` at
/// 10.81.0.N/16) and [`CLIENT`] (its `e0` at [`CLIENT_IP`]); deleted on
/// drop.
pub struct Net {
    tag: String,
    servers: Vec<String>,
}

impl Net {
    /// `servers`: short names (letters, digits), at most 200.
    pub fn new(servers: &[&str]) -> Net {
        // Unique across the tests of one process and across processes.
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let net = Net {
            tag: format!(
                "{}{}",
                std::process::id() % 100_000,
                ["", "b", "c", "d", "e", "f", "g", "h"][COUNT.fetch_add(1, Ordering::SeqCst) % 8]
            ),
            servers: servers.iter().map(|s| s.to_string()).collect(),
        };
        assert!(servers.len() <= 200, "at most 200 servers");
        let sw = net.ns("sw");
        run(&["ip", "netns", "add", &sw]);
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        let mut hosts: Vec<(String, String)> = servers
            .iter()
            .map(|s| (s.to_string(), format!("{}/16", net.ip(s))))
            .collect();
        hosts.push((CLIENT.to_string(), format!("{CLIENT_IP}/16")));
        for (i, (which, addr)) in hosts.iter().enumerate() {
            let ns = net.ns(which);
            run(&["ip", "netns", "add", &ns]);
            // Port names in `sw` are numbered: interface names are short.
            let port = format!("p{i}");
            run(&[
                "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "e0",
                "netns", &ns,
            ]);
            run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
            run(&["ip", "-n", &ns, "addr", "add", addr, "dev", "e0"]);
            run(&["ip", "-n", &ns, "link", "set", "e0", "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// The namespace of `which` (a server's name, [`CLIENT`] or `sw`).
    pub fn ns(&self, which: &str) -> String {
        format!("rbcl-{}-{which}", self.tag)
    }

    /// A server's address on the bridge.
    pub fn ip(&self, server: &str) -> String {
        let i = self
            .servers
            .iter()
            .position(|s| s == server)
            .unwrap_or_else(|| panic!("no server {server} in {:?}", self.servers));
        format!("10.81.0.{}", i + 1)
    }

    /// `program` run in the namespace of `which` (`ip netns exec`, which
    /// execs: the child's PID is the program's).
    pub fn exec(&self, which: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(which), program]);
        c
    }

    /// perfdhcp (DHCPv4, on the client's `e0`) with `args`, stopped after
    /// `limit_secs` (`timeout`); `.output()` it, or `.spawn()` it to load
    /// the servers while the test does something else. Its report is on
    /// stdout. Needs Kea's perfdhcp (`apt-get install kea-admin`).
    pub fn perfdhcp(&self, limit_secs: u32, args: &[&str]) -> Command {
        let mut c = self.exec(CLIENT, "timeout");
        c.args([&limit_secs.to_string(), "perfdhcp", "-4", "-l", "e0"])
            .args(args);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let mut all = self.servers.clone();
        all.push(CLIENT.into());
        all.push("sw".into());
        for which in all {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(&which)])
                .status();
        }
    }
}

/// One `rackboot serve` in its namespace, listening on its address, port
/// [`HTTP_PORT`]; killed (-9) on drop.
pub struct Server {
    pub name: String,
    pub ip: String,
    pub ns: String,
    pub state: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Server {
    /// Starts server `name` of `net` with its state, config and log under
    /// `dir`, on `store`. The config is `state_dir`, `store`, `interface =
    /// "e0"`, `server_ip` and `[listen]` (HTTP on its address, TFTP off),
    /// then `sections` as given (e.g. `[dhcp]`, `[[dhcp.subnets]]`,
    /// `[cluster]`, `[power]`). Returns once the API answers and, when
    /// `sections` has a DHCP subnet, once the log says DHCP runs.
    pub fn start(net: &Net, dir: &Path, name: &str, store: &str, sections: &str) -> Server {
        let ip = net.ip(name);
        let state = dir.join(name);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "state_dir = {state:?}\nstore = {store:?}\ninterface = \"e0\"\nserver_ip = {ip:?}\n\
                 [listen]\nhttp = \"{ip}:{HTTP_PORT}\"\ntftp = \"off\"\n{sections}",
                state = state.display().to_string(),
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = net
            .exec(name, rackboot())
            .args(["serve", "-c"])
            .arg(&config)
            .env("RACKBOOT_SECRET_KEY", SECRET_KEY)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server {
            name: name.into(),
            ip,
            ns: net.ns(name),
            state,
            config,
            log,
            child: Some(child),
        };
        server.wait_up(sections.contains("[[dhcp.subnets]]"));
        server
    }

    fn wait_up(&mut self, dhcp: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("{} exited ({status}):\n{}", self.name, self.log_text());
            }
            let up = self.state.join("admin-token").exists()
                && (!dhcp || self.log_text().contains("DHCP server running"))
                && self.call("GET", "/api/v1/status", None).0 == 200;
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's process id (the rackboot process itself).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// kill -9 (SIGKILL) and reap; nothing if already killed.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state.join("admin-token"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// `method path` on this server's API with the admin token, from its
    /// namespace (curl, 30 s limit); (HTTP status, body as JSON or else as
    /// a JSON string). Status 0: no answer (curl's error in the body).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "curl", "-sS", "--max-time", "30"])
            .args(["-X", method, "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {}", self.token()));
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(b.to_string());
        }
        let out = c
            .arg(format!("http://{}:{HTTP_PORT}{path}", self.ip))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (text, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code = code.trim().parse().unwrap_or(0);
        if code == 0 {
            return (
                0,
                Value::String(String::from_utf8_lossy(&out.stderr).into()),
            );
        }
        (
            code,
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
        )
    }

    /// GET `path`; panics unless the answer is 2xx.
    pub fn get(&self, path: &str) -> Value {
        self.ok("GET", path, None)
    }

    /// POST `body` to `path`; panics unless the answer is 2xx.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        self.ok("POST", path, Some(body))
    }

    /// `method path`; panics unless the answer is 2xx.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, answer) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{} {method} {path}: {status} {answer}",
            self.name
        );
        answer
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "curl",
                "-fsS",
                "--max-time",
                "30",
            ])
            .arg(format!("http://{}:{HTTP_PORT}/metrics", self.ip))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The sum of the samples whose line starts with `metric` (a name, or
    /// a name with labels such as `x_total{type="ack"}`); 0 when none.
    pub fn metric(&self, metric: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(metric))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// [`Server::events`] once the log has stopped growing: the same count
    /// for a second (servers store their events in batches every 50 ms,
    /// after what they record; a read right after the load can miss the
    /// last ones). At most 30 s.
    pub fn settled_events(&self, kind: &str, after: i64) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = self.events(kind, after);
        let mut stable_since = Instant::now();
        while stable_since.elapsed() < Duration::from_secs(1) {
            assert!(
                Instant::now() < deadline,
                "{kind} events still growing after 30 s"
            );
            std::thread::sleep(Duration::from_millis(200));
            let now = self.events(kind, after);
            if now.len() != last.len() {
                stable_since = Instant::now();
            }
            last = now;
        }
        last
    }

    /// Every event of `kind` with an id above `after`, oldest first (paged).
    pub fn events(&self, kind: &str, after: i64) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor = after;
        loop {
            let page = self.get(&format!(
                "/api/v1/events?kind={kind}&after={cursor}&limit=1000"
            ));
            let events = page.as_array().cloned().unwrap_or_default();
            for e in &events {
                cursor = e["id"].as_i64().unwrap_or(cursor);
            }
            let n = events.len();
            all.extend(events);
            if n < 1000 {
                return all;
            }
        }
    }
}
