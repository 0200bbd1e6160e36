//! Two real `rackboot serve` processes handing out one pool, on one
//! PostgreSQL database, under real DHCP load: perfdhcp's simulated clients
//! broadcast on a bridge both servers listen on, both servers answer, and
//! no address is ever acknowledged to two clients. Root: network namespaces.
//!
//! The servers run in their own namespaces and reach PostgreSQL through its
//! unix socket (the test cluster's directory), so nothing leaves the test's
//! namespaces and loopback.

mod loopback;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use loopback::rackboot;

/// PostgreSQL reachable from other namespaces: (socket directory, port).
/// The test-all cluster when its directory is exported, else a new one.
fn pg_socket() -> (String, u16, Option<String>) {
    if let (Ok(dir), Ok(url)) = (
        std::env::var("RACKBOOT_TEST_PG_DIR"),
        std::env::var("RACKBOOT_TEST_PG_URL"),
    ) {
        let port = url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .expect("a port in RACKBOOT_TEST_PG_URL");
        return (dir, port, None);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-postgres");
    let out = Command::new("bash")
        .arg(&script)
        .args(["start", "--no-fsync", "--watch-pid"])
        .arg(std::process::id().to_string())
        .output()
        .expect("test-postgres");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "test-postgres: {stdout}");
    let get = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("export {key}=")))
            .unwrap()
            .to_string()
    };
    let url = get("RACKBOOT_TEST_PG_URL");
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    (get("RACKBOOT_TEST_PG_DIR"), port, Some(url))
}

fn run(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces `sw` (a bridge), `a` and `b` (the servers, 10.81.0.1 and .2)
/// and `c` (perfdhcp, 10.81.0.3); deleted on drop.
struct Net {
    tag: String,
}

impl Net {
    fn ns(&self, which: &str) -> String {
        format!("rbcl-{}-{which}", self.tag)
    }

    fn new() -> Net {
        let net = Net {
            tag: format!("{}", std::process::id() % 100_000),
        };
        for which in ["sw", "a", "b", "c"] {
            run(&["ip", "netns", "add", &net.ns(which)]);
        }
        let sw = net.ns("sw");
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for (which, addr) in [
            ("a", "10.81.0.1/16"),
            ("b", "10.81.0.2/16"),
            ("c", "10.81.0.3/16"),
        ] {
            let ns = net.ns(which);
            let port = format!("p{which}");
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
}

impl Drop for Net {
    fn drop(&mut self) {
        for which in ["a", "b", "c", "sw"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(which)])
                .status();
        }
    }
}

struct Server {
    child: Child,
    state: PathBuf,
    log: PathBuf,
    ip: &'static str,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(net: &Net, dir: &Path, name: &str, ip: &'static str, store: &str) -> Server {
        let state = dir.join(name);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "state_dir = {state:?}\nstore = {store:?}\ninterface = \"e0\"\nserver_ip = {ip:?}\n\
                 [listen]\nhttp = \"{ip}:8080\"\ntftp = \"off\"\n\
                 [dhcp]\ncommit_window_ms = 10\n[dhcp.probe]\nenabled = false\n\
                 [[dhcp.subnets]]\nname = \"lab\"\ncidr = \"10.81.0.0/16\"\n\
                 ranges = [\"10.81.1.0-10.81.1.79\"]\nlease_time_secs = 3600\n\
                 [cluster]\nname = {name:?}\nheartbeat_ms = 500\ndead_after_ms = 2500\n",
                state = state.display().to_string(),
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", &net.ns(name), rackboot(), "serve", "-c"])
            .arg(&config)
            .env(
                "RACKBOOT_SECRET_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            state,
            log,
            ip,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&server.log)
            .unwrap_or_default()
            .contains("DHCP server running")
        {
            assert!(
                Instant::now() < deadline,
                "{name} did not start:\n{}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// GET `path` on this server's API (from its namespace, with curl).
    fn get(&self, net: &Net, name: &str, path: &str) -> Value {
        let token = std::fs::read_to_string(self.state.join("admin-token")).unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", &net.ns(name), "curl", "-fsS", "-H"])
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("http://{}:8080{path}", self.ip))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out.stdout).to_string()))
    }

    fn metric(&self, net: &Net, name: &str, metric: &str) -> f64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &net.ns(name), "curl", "-fsS"])
            .arg(format!("http://{}:8080/metrics", self.ip))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(metric))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

#[test]
fn two_servers_on_one_pool_never_give_an_address_twice() {
    if !rackboot_testenv::privileged("root: network namespaces, PostgreSQL, Kea's perfdhcp") {
        return;
    }
    let (socket_dir, port, _own) = pg_socket();
    let db = format!("dhcp_{}", uuid::Uuid::new_v4().simple());
    run(&[
        "psql",
        &format!("postgres://postgres@localhost/postgres?host={socket_dir}&port={port}"),
        "-q",
        "-c",
        &format!("CREATE DATABASE {db}"),
    ]);
    let store = format!("postgres://postgres@localhost/{db}?host={socket_dir}&port={port}");
    let dir = tempfile::tempdir().unwrap();
    let net = Net::new();
    let a = Server::start(&net, dir.path(), "a", "10.81.0.1", &store);
    let b = Server::start(&net, dir.path(), "b", "10.81.0.2", &store);
    // 60 clients on an 80-address pool, both servers offering to each: the
    // fresh addresses of the two servers meet as the pool fills.
    const CLIENTS: u32 = 60;
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.ns("c"),
            "timeout",
            "60",
            "perfdhcp",
            "-4",
            "-l",
            "e0",
        ])
        .args([
            "-r",
            "40",
            "-R",
            &CLIENTS.to_string(),
            "-p",
            "8",
            "-W",
            "2000000",
        ])
        .output()
        .expect("perfdhcp (apt-get install kea-admin)");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{report}");

    // Every ACK either server sent, from the shared event log.
    std::thread::sleep(Duration::from_millis(500));
    let mut acked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut by_server = [0usize; 2];
    let mut cursor = 0i64;
    loop {
        let page = a.get(
            &net,
            "a",
            &format!("/api/v1/events?kind=lease_acked&after={cursor}&limit=1000"),
        );
        let events = page.as_array().unwrap().clone();
        for e in &events {
            let ip = e["data"]["ip"].as_str().unwrap().to_string();
            let mac = e["mac"].as_str().unwrap().to_string();
            acked.entry(ip).or_default().insert(mac);
            cursor = e["id"].as_i64().unwrap();
        }
        if events.len() < 1000 {
            break;
        }
    }
    for (i, s) in [(0, &a), (1, &b)] {
        by_server[i] = s.metric(
            &net,
            ["a", "b"][i],
            "rackboot_dhcp_replied_total{type=\"ack\"}",
        ) as usize;
    }
    let lost: f64 = [(&a, "a"), (&b, "b")]
        .iter()
        .map(|(s, n)| s.metric(&net, n, "rackboot_dhcp_claims_lost_total"))
        .sum();
    // Clients holding more than one address (not a fault: an address a
    // client stopped using is its until the lease ends), for the log.
    let mut per_client: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
    for (ip, macs) in &acked {
        for m in macs {
            per_client.entry(m).or_default().push(ip);
        }
    }
    let several: Vec<_> = per_client.iter().filter(|(_, ips)| ips.len() > 1).collect();
    eprintln!("clients acknowledged more than one address: {several:?}");
    let twice: Vec<(&String, &BTreeSet<String>)> =
        acked.iter().filter(|(_, macs)| macs.len() > 1).collect();
    eprintln!(
        "{} addresses acknowledged to {} clients; ACKs sent by a: {}, by b: {}; claims lost (re-offered or refused): {lost}",
        acked.len(),
        acked.values().flatten().collect::<BTreeSet<_>>().len(),
        by_server[0],
        by_server[1]
    );
    if let Some((ip, _)) = twice.first() {
        // What happened to that address, for whoever reads the failure.
        let events = a.get(&net, "a", "/api/v1/events?limit=1000&kind=lease_acked");
        for e in events.as_array().unwrap() {
            if e["data"]["ip"] == ip.as_str() {
                eprintln!(
                    "  {} {} (server {})",
                    e["at"], e["message"], e["data"]["server"]
                );
            }
        }
    }
    assert!(
        twice.is_empty(),
        "addresses acknowledged to two clients: {twice:?}"
    );
    let clients: BTreeSet<&String> = acked.values().flatten().collect();
    assert!(
        clients.len() as u32 >= CLIENTS * 9 / 10,
        "only {} of {CLIENTS} clients got an address:\n{report}",
        clients.len()
    );
    assert!(
        by_server[0] > 0 && by_server[1] > 0,
        "one server answered everything: {by_server:?}"
    );
    // The store agrees: each bound address has one client.
    let leases = a.get(&net, "a", "/api/v1/leases?limit=10000");
    let mut holders: BTreeMap<String, String> = BTreeMap::new();
    for l in leases.as_array().unwrap() {
        if l["state"] == "bound" {
            holders.insert(
                l["ip"].as_str().unwrap().into(),
                l["mac"].as_str().unwrap_or("").into(),
            );
        }
    }
    for (ip, macs) in &acked {
        if let Some(holder) = holders.get(ip) {
            assert!(
                macs.contains(holder),
                "{ip} is bound to {holder}, acknowledged to {macs:?}"
            );
        }
    }
    drop((a, b));
}
