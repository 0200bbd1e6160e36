//! Real DHCPv6 clients (dhclient -6 from isc-dhcp-client, dhcpcd) against the
//! rackboot DHCPv6 server (examples/dhcp6_server, a separate process so it can be
//! killed with SIGKILL) in two network namespaces joined by a veth pair that each
//! test creates and deletes. Needs root, iproute2, isc-dhcp-client and
//! dhcpcd-base. Every client run is bounded by `timeout` and dhclient runs are
//! stopped as soon as their log shows what the test waits for.

use std::io::{BufRead, BufReader};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rackboot_core::LeaseState;
use rackboot_store::Lease6;

static COUNTER: AtomicU32 = AtomicU32::new(0);
const SERVER_ADDR: &str = "2001:db8:77::1";
const CLIENT_MAC: &str = "52:54:00:66:00:01";

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Server and client namespaces, a veth pair, a temp dir; deleted on drop.
struct Lab {
    server_ns: String,
    client_ns: String,
    server_if: String,
    client_if: String,
    dir: tempfile::TempDir,
    server: Option<Child>,
}

impl Lab {
    fn new() -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{}{n}", pid % 100000);
        let lab = Lab {
            server_ns: format!("rbt-dhcp6-{pid}-{n}-s"),
            client_ns: format!("rbt-dhcp6-{pid}-{n}-c"),
            server_if: format!("r6s{tag}"),
            client_if: format!("r6c{tag}"),
            dir: tempfile::tempdir().unwrap(),
            server: None,
        };
        for ns in [&lab.server_ns, &lab.client_ns] {
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
            // No duplicate address detection: addresses are usable at once.
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.accept_dad=0",
                ],
            );
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.default.accept_dad=0",
                ],
            );
        }
        run(
            "ip",
            &[
                "-n",
                &lab.server_ns,
                "link",
                "add",
                &lab.server_if,
                "type",
                "veth",
                "peer",
                "name",
                &lab.client_if,
                "netns",
                &lab.client_ns,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &lab.client_ns,
                "link",
                "set",
                &lab.client_if,
                "address",
                CLIENT_MAC,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &lab.server_ns,
                "addr",
                "add",
                &format!("{SERVER_ADDR}/64"),
                "dev",
                &lab.server_if,
            ],
        );
        run(
            "ip",
            &["-n", &lab.server_ns, "link", "set", &lab.server_if, "up"],
        );
        run(
            "ip",
            &["-n", &lab.client_ns, "link", "set", &lab.client_if, "up"],
        );
        // Wait for both link-local addresses.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let s = run(
                "ip",
                &[
                    "-n",
                    &lab.server_ns,
                    "-6",
                    "addr",
                    "show",
                    "dev",
                    &lab.server_if,
                    "scope",
                    "link",
                ],
            );
            let c = run(
                "ip",
                &[
                    "-n",
                    &lab.client_ns,
                    "-6",
                    "addr",
                    "show",
                    "dev",
                    &lab.client_if,
                    "scope",
                    "link",
                ],
            );
            if s.contains("fe80")
                && c.contains("fe80")
                && !s.contains("tentative")
                && !c.contains("tentative")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store_url(&self) -> String {
        format!("sqlite:{}", self.path("state.db").display())
    }

    /// Starts the server with `config` (a `[dhcp6]` body) and waits for `ready`.
    fn start_server(&mut self, config: &str) {
        std::fs::write(self.path("dhcp6.toml"), config).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.server_ns])
            .arg(example("dhcp6_server"))
            .arg(&self.server_if)
            .arg(self.path("dhcp6.toml"))
            .arg(self.store_url())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the server did not start");
        self.server = Some(child);
    }

    /// SIGTERM, then the counters line the server prints.
    fn stop_server(&mut self) -> String {
        let mut child = self.server.take().expect("a running server");
        run("kill", &["-TERM", &child.id().to_string()]);
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        child.wait().unwrap();
        out.lines()
            .find(|l| l.starts_with("counters"))
            .unwrap_or_default()
            .to_string()
    }

    fn kill9_server(&mut self) {
        let mut child = self.server.take().expect("a running server");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    /// `dhclient -6` in the client namespace, with a script that logs
    /// `REASON ADDRESS` lines, until those lines satisfy `done` (or it exits,
    /// or 40 s); returns the lines. A long bound, stopped as soon as `done`:
    /// a loaded machine must not turn a slow exchange into a missing line.
    fn dhclient(
        &self,
        lease_file: &str,
        extra: &[&str],
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let log = self.path(&format!("{lease_file}.log"));
        let script = self.path("dhclient-script");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$reason $new_ip6_address\" >> {}\n",
                log.display()
            ),
        )
        .unwrap();
        run("chmod", &["+x", script.to_str().unwrap()]);
        let lf = self.path(lease_file);
        let pf = self.path(&format!("{lease_file}.pid"));
        let mut args = vec![
            "netns",
            "exec",
            &self.client_ns,
            "timeout",
            "40",
            "dhclient",
            "-6",
            "-d",
            "-v",
        ];
        args.extend_from_slice(extra);
        let (lf, pf, script) = (
            lf.to_str().unwrap(),
            pf.to_str().unwrap(),
            script.to_str().unwrap(),
        );
        args.extend_from_slice(&["-lf", lf, "-pf", pf, "-sf", script, &self.client_if]);
        // `ip netns exec` execs `timeout`, which passes SIGTERM on to dhclient.
        let mut child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let read = || -> Vec<String> {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(40);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            if done(&read()) {
                // A short settle, so a line that should not come has a chance to.
                std::thread::sleep(Duration::from_millis(300));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if child.try_wait().unwrap().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        child.wait().unwrap();
        read()
    }

    async fn leases(&self) -> Vec<Lease6> {
        let store = rackboot_store::open(&self.store_url()).await.unwrap();
        store.list_leases6().await.unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn example(name: &str) -> PathBuf {
    // target/debug/deps/netns-HASH -> target/debug/examples/NAME
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        Path::new(&path).exists(),
        "{} missing: cargo test builds examples",
        path.display()
    );
    path
}

fn config(extra: &str) -> String {
    format!(
        r#"
commit_window_ms = 5
{extra}
[[subnets]]
name = "prov6"
prefix = "2001:db8:77::/64"
ranges = ["2001:db8:77::100-2001:db8:77::1ff"]
dns = ["2001:db8:77::53"]
preferred_lifetime_secs = 10
valid_lifetime_secs = 20
"#
    )
}

fn bound6(log: &[String]) -> bool {
    log.iter().any(|l| l.starts_with("BOUND6"))
}

fn in_pool(ip: &str) -> bool {
    let ip: Ipv6Addr = ip.parse().unwrap();
    let (a, b): (Ipv6Addr, Ipv6Addr) = (
        "2001:db8:77::100".parse().unwrap(),
        "2001:db8:77::1ff".parse().unwrap(),
    );
    a <= ip && ip <= b
}

/// dhclient -6: Solicit/Advertise/Request/Reply, Renew at T1 (5 s) with the
/// same address, then Release; the lease is in the store at each step.
#[tokio::test]
async fn dhclient_binds_renews_and_releases() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_server(&config(""));
    // Until the renewal at T1 (5 s).
    let log = lab.dhclient("a.leases", &[], |l| {
        l.iter().any(|l| l.starts_with("RENEW6"))
    });
    let bound: Vec<&String> = log.iter().filter(|l| l.starts_with("BOUND6")).collect();
    assert_eq!(bound.len(), 1, "{log:?}");
    let addr = bound[0].split_whitespace().nth(1).unwrap().to_string();
    assert!(in_pool(&addr), "{addr}");
    assert!(
        log.iter().any(|l| *l == format!("RENEW6 {addr}")),
        "renewed the same address: {log:?}"
    );
    let leases = lab.leases().await;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].ip.to_string(), addr);
    assert_eq!(leases[0].state, LeaseState::Bound);
    assert_eq!(
        leases[0].mac,
        Some(CLIENT_MAC.parse().unwrap()),
        "MAC from dhclient's DUID-LLT"
    );
    // Release (dhclient -r reads the lease file).
    // dhclient -r exits by itself once the Release is sent.
    let release = lab.dhclient("a.leases", &["-r"], |_| false);
    // dhclient may exit before the server's Reply arrives: wait for the write.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut leases = lab.leases().await;
    while leases[0].state != LeaseState::Released && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        leases = lab.leases().await;
    }
    assert_eq!(
        leases[0].state,
        LeaseState::Released,
        "{release:?} {leases:?}"
    );
    // Information-request (stateless): answered, no lease.
    let log = lab.dhclient("s.leases", &["-S", "-1"], |l| !l.is_empty());
    // dhclient 4.4 runs its script with RENEW6 (no address) for the Reply.
    assert_eq!(log, ["RENEW6 "], "answered");
    let counters = lab.stop_server();
    assert!(counters.contains("dropped=0"), "{counters}");
}

/// dhcpcd waits for a router advertisement: rackboot's (M set) sends it to
/// DHCPv6, and the client's kernel learns the prefix as on-link without
/// forming a SLAAC address (A clear).
#[tokio::test]
async fn dhcpcd_follows_the_router_advertisement() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_server(&config("router_advertisements = { interval_secs = 4 }"));
    let conf = lab.path("dhcpcd.conf");
    std::fs::write(&conf, "ipv6only\nia_na 1\nnohook resolv.conf\n").unwrap();
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns,
            "timeout",
            "20",
            "dhcpcd",
            "-6",
            "-1",
            "-B",
            "-t",
            "15",
            "-f",
        ])
        .arg(&conf)
        .arg(&lab.client_if)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let addrs = run(
        "ip",
        &[
            "-n",
            &lab.client_ns,
            "-6",
            "addr",
            "show",
            "dev",
            &lab.client_if,
            "scope",
            "global",
        ],
    );
    let globals: Vec<&str> = addrs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("inet6 "))
        .map(|l| l.split('/').next().unwrap())
        .collect();
    assert_eq!(
        globals.len(),
        1,
        "only the DHCPv6 address, no SLAAC one: {addrs}"
    );
    assert!(in_pool(globals[0]), "{addrs}");
    let routes = run(
        "ip",
        &[
            "-n",
            &lab.client_ns,
            "-6",
            "route",
            "show",
            "dev",
            &lab.client_if,
        ],
    );
    // The DHCPv6 address is a /128: the /64 (expiring with the prefix's valid
    // lifetime) can only come from the advertisement's on-link prefix.
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("2001:db8:77::/64") && l.contains("expires")),
        "on-link prefix from the RA: {routes}"
    );
    assert!(
        !routes.contains("default"),
        "rackboot is nobody's default router: {routes}"
    );
    let leases = lab.leases().await;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].ip.to_string(), globals[0]);
    lab.stop_server();
}

/// A lease handed out survives kill -9: after a restart the same client gets
/// the same address, and 40 other clients (perfdhcp) get others.
#[tokio::test]
async fn kill9_never_forgets_a_lease() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_server(&config(""));
    // DUID-LL: the same DUID from the MAC whatever the lease file says.
    let log = lab.dhclient("a.leases", &["-D", "LL", "-1"], bound6);
    let first = log
        .iter()
        .find_map(|l| l.strip_prefix("BOUND6 "))
        .unwrap_or_else(|| panic!("{log:?}"))
        .to_string();
    // The Reply was sent, so the lease is durable: kill at once.
    lab.kill9_server();
    let leases = lab.leases().await;
    assert!(
        leases
            .iter()
            .any(|l| l.ip.to_string() == first && l.state == LeaseState::Bound),
        "{leases:?}"
    );
    lab.start_server(&config(""));
    // Other clients first: none may get the address.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns,
            "timeout",
            "20",
            "perfdhcp",
            "-6",
            "-l",
            &lab.client_if,
            "-r",
            "20",
            "-n",
            "40",
            "-R",
            "40",
        ])
        .output()
        .unwrap();
    let perf = String::from_utf8_lossy(&out.stdout).into_owned();
    // The same client with no lease file: a fresh Solicit, the same address.
    let log = lab.dhclient("b.leases", &["-D", "LL", "-1"], bound6);
    let again = log
        .iter()
        .find_map(|l| l.strip_prefix("BOUND6 "))
        .unwrap_or_else(|| panic!("{log:?}"));
    assert_eq!(again, first);
    lab.stop_server();
    let leases = lab.leases().await;
    let bound: Vec<&Lease6> = leases
        .iter()
        .filter(|l| l.state == LeaseState::Bound)
        .collect();
    // Most of perfdhcp's 40 clients completed (it stops at -n 40 sent, not answered).
    assert!(bound.len() >= 31, "{perf}\n{leases:?}");
    let holders: Vec<&Lease6> = leases
        .iter()
        .filter(|l| l.ip.to_string() == first)
        .collect();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].mac, Some(CLIENT_MAC.parse().unwrap()));
}

/// Malformed packets are dropped and counted; the server goes on answering.
#[tokio::test]
async fn malformed_packets_are_dropped_and_counted() {
    if !rackboot_testenv::privileged("root: network namespaces") {
        return;
    }
    let mut lab = Lab::new();
    lab.start_server(&config(""));
    let garbage = "import socket\ns=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex('IFNAME'))\n\
        for p in [b'', b'\\x01\\x00', b'\\x01\\x02\\x03\\x04\\x00\\x01\\x00\\xff', b'\\x07abc', b'\\x0c' + b'\\x00'*10]:\n\
        \x20   s.sendto(p, ('ff02::1:2', 547, 0, socket.if_nametoindex('IFNAME')))\n"
        .replace("IFNAME", &lab.client_if);
    run(
        "ip",
        &["netns", "exec", &lab.client_ns, "python3", "-c", &garbage],
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = lab.dhclient("a.leases", &["-1"], bound6);
    assert!(
        log.iter().any(|l| l.starts_with("BOUND6")),
        "still answering: {log:?}"
    );
    let counters = lab.stop_server();
    assert!(counters.contains("dropped=5"), "{counters}");
}
