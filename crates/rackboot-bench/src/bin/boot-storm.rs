//! `boot-storm`: N machines network-booting at once against one real
//! `rackboot serve` (DHCP, TFTP and boot HTTP), as firmware does it.
//!
//! ```text
//! boot-storm --rackboot PATH [--machines 1000] [--kernel-size 8M] [--initrd-size 50M]
//!            [--spread-ms 0] [--timeout-secs 600] [--work DIR] [--server-log warn]
//!            [--check] [--keep]
//! ```
//!
//! Run as root. It builds two network namespaces joined by a veth pair
//! (server 10.80.0.1/16, clients on the other end), starts `rackboot serve`
//! in the server's with full DHCP (pool 10.80.1.0-10.80.255.254), TFTP and
//! boot HTTP, puts a kernel and an initrd of the given sizes in its asset
//! directory, and enrols N machines (one bulk request) with a profile that
//! boots them. The process itself then joins the client namespace and plays
//! every machine at once, each from its own MAC and, once leased, its own
//! address:
//!
//! 1. the PXE ROM's DHCP: DISCOVER, OFFER, REQUEST, ACK, broadcast from
//!    0.0.0.0 through a packet socket (source MAC = the machine's), with
//!    the broadcast flag set, retransmitting after 4, 8, 16, 32 s; then the
//!    leased address is added to the client interface (netlink);
//! 2. the loader the ACK names (undionly.kpxe) over TFTP from that address,
//!    lock-step with blksize 1468 and tsize, as PXE ROMs ask; compared with
//!    /usr/lib/ipxe/undionly.kpxe when that file is here;
//! 3. iPXE's DHCP (user class iPXE, option 175): the same exchange again,
//!    which hands out the script URL;
//! 4. the iPXE script over HTTP from the machine's address, then the
//!    kernel and initrd it names (lengths and leading bytes checked).
//!
//! Replies reach every machine through one UDP socket on port 68 (the server
//! broadcasts them, as the broadcast flag asks) and are told apart by MAC
//! and transaction id. Prints `key=value` lines on stdout (per stage `count
//! errors p50 p99 max` in ms, the server's CPU seconds and peak RSS) and
//! progress on stderr. With `--check` it exits 1 unless every machine got
//! its initrd.

use rackboot_bench::procstat::{cpu_secs, self_cpu_secs, status_kb};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dhcproto::v4::MessageType;
use rackboot_bench::storm::{
    self, ClientMessage, Firmware, MachineRun, ServerReply, Stage, mac_text, machine_mac,
};
use rackboot_wire::tftp::{Mode, Packet, Request};
use serde_json::json;
use tokio::sync::mpsc;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 80, 0, 2);
const PREFIX: u8 = 16;
const POOL: &str = "10.80.1.0-10.80.255.254";
const HTTP_PORT: u16 = 8080;
const PROFILE: &str = "storm";
/// Where the server's loader comes from (the binary maps Debian's iPXE into TFTP).
const LOADER_ON_HOST: &str = "/usr/lib/ipxe/undionly.kpxe";

#[derive(Debug, Clone)]
struct Opts {
    rackboot: PathBuf,
    machines: usize,
    kernel_size: usize,
    initrd_size: usize,
    spread: Duration,
    timeout: Duration,
    work: PathBuf,
    server_log: String,
    check: bool,
    keep: bool,
}

const USAGE: &str = "usage: boot-storm --rackboot PATH [--machines N] [--kernel-size 8M] \
[--initrd-size 50M] [--spread-ms N] [--timeout-secs N] [--work DIR] [--server-log LEVEL] \
[--check] [--keep]";

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        rackboot: PathBuf::new(),
        machines: 1000,
        kernel_size: 8 << 20,
        initrd_size: 50 << 20,
        spread: Duration::ZERO,
        timeout: Duration::from_secs(600),
        work: std::env::temp_dir(),
        server_log: "warn".into(),
        check: false,
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        let num = |v: String, name: &str| -> Result<u64> {
            v.parse().with_context(|| format!("{name} {v:?}: a number"))
        };
        match arg.as_str() {
            "--rackboot" => o.rackboot = value()?.into(),
            "--machines" => o.machines = num(value()?, "--machines")? as usize,
            "--kernel-size" => o.kernel_size = storm::parse_size(&value()?)?,
            "--initrd-size" => o.initrd_size = storm::parse_size(&value()?)?,
            "--spread-ms" => o.spread = Duration::from_millis(num(value()?, "--spread-ms")?),
            "--timeout-secs" => o.timeout = Duration::from_secs(num(value()?, "--timeout-secs")?),
            "--work" => o.work = value()?.into(),
            "--server-log" => o.server_log = value()?,
            "--check" => o.check = true,
            "--keep" => o.keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if o.rackboot.as_os_str().is_empty() {
        bail!("--rackboot is required\n{USAGE}");
    }
    // The pool holds 65,000 addresses; the server's TFTP takes 1,024 transfers at once.
    if !(1..=5000).contains(&o.machines) {
        bail!("--machines must be 1-5000");
    }
    if o.kernel_size == 0 || o.initrd_size == 0 {
        bail!("--kernel-size and --initrd-size must be at least 1 byte");
    }
    Ok(o)
}

macro_rules! say {
    ($($arg:tt)*) => { eprintln!("[boot-storm {:>6.1}s] {}", elapsed_secs(), format!($($arg)*)) };
}

fn elapsed_secs() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn main() -> ExitCode {
    elapsed_secs();
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("boot-storm: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("boot-storm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// The host: namespaces, the server, limits

/// Runs `ip ARGS`, failing with its message.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The two namespaces and the veth between them; deleted when dropped.
struct Net {
    srv: String,
    cli: String,
    vc: String,
    vs: String,
}

impl Net {
    fn create() -> Result<Net> {
        let id = std::process::id();
        let net = Net {
            srv: format!("rbstorm-srv-{id}"),
            cli: format!("rbstorm-cli-{id}"),
            vs: format!("rbsts{id}"),
            vc: format!("rbstc{id}"),
        };
        ip(&["netns", "add", &net.srv])?;
        ip(&["netns", "add", &net.cli])?;
        ip(&[
            "link", "add", &net.vs, "type", "veth", "peer", "name", &net.vc,
        ])?;
        ip(&["link", "set", &net.vs, "netns", &net.srv])?;
        ip(&["link", "set", &net.vc, "netns", &net.cli])?;
        let srv_addr = format!("{SERVER_IP}/{PREFIX}");
        let cli_addr = format!("{CLIENT_IP}/{PREFIX}");
        ip(&["-n", &net.srv, "addr", "add", &srv_addr, "dev", &net.vs])?;
        ip(&["-n", &net.cli, "addr", "add", &cli_addr, "dev", &net.vc])?;
        for (ns, dev) in [(&net.srv, &net.vs), (&net.cli, &net.vc)] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(net)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and so the pair.
        let _ = ip(&["netns", "del", &self.srv]);
        let _ = ip(&["netns", "del", &self.cli]);
    }
}

/// The neighbour table's hard limit is one for all namespaces (1,024 by
/// default); the server's namespace needs an entry per machine. Raised for
/// the run when it is lower, and put back after. The files are opened here,
/// in the host's namespace: once this thread has joined the client namespace
/// the same paths name nothing (the limits exist only in the first one).
struct NeighLimit {
    saved: Vec<(std::fs::File, String)>,
}

impl NeighLimit {
    fn ensure(machines: usize) -> Result<NeighLimit> {
        let mut saved = Vec::new();
        if machines <= 256 {
            return Ok(NeighLimit { saved });
        }
        let want3 = machines * 2 + 1024;
        for (key, want) in [("gc_thresh2", want3 / 2), ("gc_thresh3", want3)] {
            let path = format!("/proc/sys/net/ipv4/neigh/default/{key}");
            let now = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            let current: usize = now.trim().parse().unwrap_or(0);
            if current < want {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .with_context(|| format!("opening {path}"))?;
                std::io::Write::write_all(&mut f, want.to_string().as_bytes())
                    .with_context(|| format!("writing {path}"))?;
                say!("raised net.ipv4.neigh.default.{key} from {current} to {want} for the run");
                saved.push((f, now.trim().to_string()));
            }
        }
        Ok(NeighLimit { saved })
    }
}

impl Drop for NeighLimit {
    fn drop(&mut self) {
        // In the reverse order of raising.
        for (f, value) in self.saved.iter_mut().rev() {
            use std::io::{Seek, Write};
            let _ = f.seek(std::io::SeekFrom::Start(0));
            let _ = f.write_all(value.as_bytes());
        }
    }
}

/// `rackboot serve` in the server namespace; stopped (TERM, then KILL) when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(o: &Opts, net: &Net, dir: &Path) -> Result<Server> {
    let state = dir.join("state");
    let assets = state.join("assets").join(PROFILE);
    std::fs::create_dir_all(&assets)?;
    std::fs::write(
        assets.join("vmlinuz"),
        storm::pattern_bytes(o.kernel_size, 1),
    )?;
    std::fs::write(
        assets.join("initrd"),
        storm::pattern_bytes(o.initrd_size, 2),
    )?;
    let config = dir.join("rackboot.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\ninterface = \"{vs}\"\nserver_ip = \"{SERVER_IP}\"\n\
             [listen]\nhttp = \"{SERVER_IP}:{HTTP_PORT}\"\ntftp = \"{SERVER_IP}:69\"\n\
             [dhcp]\nmode = \"full\"\n\
             [[dhcp.subnets]]\nname = \"storm\"\ncidr = \"10.80.0.0/{PREFIX}\"\nranges = [\"{POOL}\"]\n\
             [discovery]\nper_minute = {per_minute}\n",
            vs = net.vs,
            per_minute = o.machines.max(1000),
        ),
    )?;
    let log = dir.join("server.log");
    let out = std::fs::File::create(&log)?;
    // `ip netns exec` execs the program: the child's PID is the server's.
    let child = Command::new("ip")
        .args(["netns", "exec", &net.srv])
        .arg(&o.rackboot)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", &o.server_log)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", o.rackboot.display()))?;
    Ok(Server { child, log })
}

/// True once something in namespace `ns` listens on UDP `port`.
fn udp_listening(ns: &str, port: u16) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-Hluan"])
        .arg(format!("sport = :{port}"))
        .output()
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false)
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(n);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].to_string()
}

/// Raises the soft open-files limit to the hard one (the server inherits it).
fn raise_nofile(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    if lim.rlim_cur < want {
        bail!(
            "open files limit {} is below the {want} this run needs",
            lim.rlim_cur
        );
    }
    Ok(())
}

/// Moves this thread (the only one so far) into namespace `ns`; threads
/// started later inherit it, and so do the sockets they open.
fn enter_netns(ns: &str) -> Result<()> {
    let path = format!("/run/netns/{ns}");
    let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns on a namespace file we hold open.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {name}: {}", std::io::Error::last_os_error());
    }
    Ok(i)
}

// ---------------------------------------------------------------------------
// The run

fn run(o: Opts) -> Result<bool> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("must run as root (network namespaces, packet sockets)");
    }
    raise_nofile(o.machines as u64 * 4 + 1024)?;
    let _neigh = NeighLimit::ensure(o.machines)?;
    let dir = tempfile_dir(&o.work)?;
    let net = Net::create()?;
    let server = start_server(&o, &net, &dir)?;
    say!(
        "rackboot serve started (pid {}), {} machines, kernel {} bytes, initrd {} bytes",
        server.pid(),
        o.machines,
        o.kernel_size,
        o.initrd_size
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(udp_listening(&net.srv, 67) && udp_listening(&net.srv, 69)) {
        if Instant::now() > deadline {
            bail!(
                "rackboot serve did not listen on UDP 67 and 69 in 60 s:\n{}",
                tail(&server.log, 3000)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    enter_netns(&net.cli)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio")?;
    let result = runtime.block_on(storm_run(&o, &net, &server, &dir));
    drop(runtime);
    let log_tail = tail(&server.log, 3000);
    drop(server);
    drop(net);
    if o.keep {
        say!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(ok) => {
            if !ok {
                eprintln!("server log (end):\n{log_tail}");
            }
            Ok(ok)
        }
        Err(e) => Err(e.context(format!("server log (end):\n{log_tail}"))),
    }
}

fn tempfile_dir(base: &Path) -> Result<PathBuf> {
    let dir = base.join(format!("boot-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

async fn storm_run(o: &Opts, net: &Net, server: &Server, dir: &Path) -> Result<bool> {
    let base = format!("http://{SERVER_IP}:{HTTP_PORT}");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;
    let token_path = dir.join("state/admin-token");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = http
            .get(format!("{base}/api/openapi.json"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up && token_path.exists() {
            break;
        }
        if Instant::now() > deadline {
            bail!("boot HTTP did not answer in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = std::fs::read_to_string(&token_path)?.trim().to_string();
    enrol(&http, &base, &token, o.machines).await?;
    say!("{} machines enrolled with profile {PROFILE}", o.machines);

    let loader = std::fs::read(LOADER_ON_HOST).ok();
    let ctx = Arc::new(Ctx {
        dhcp: DhcpClients::open(&net.vc)?,
        netlink: Netlink::open()?,
        ifindex: ifindex(&net.vc)?,
        loader,
        kernel_size: o.kernel_size as u64,
        initrd_size: o.initrd_size as u64,
        kernel_head: storm::pattern_bytes(16.min(o.kernel_size), 1),
        initrd_head: storm::pattern_bytes(16.min(o.initrd_size), 2),
        deadline: Instant::now() + o.timeout,
        done: Stage::ALL.iter().map(|_| AtomicUsize::new(0)).collect(),
    });
    tokio::spawn(ctx.dhcp.clone().receive_loop());

    let pid = server.pid();
    let cpu0 = cpu_secs(pid).unwrap_or(0.0);
    let rss_before = status_kb(pid, "VmRSS:").unwrap_or(0);
    let client_cpu0 = self_cpu_secs();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..o.machines {
        let ctx = ctx.clone();
        let delay = o.spread.mul_f64(i as f64 / o.machines as f64);
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            (i, machine(ctx, i).await)
        });
    }
    say!("{} machines powered on", o.machines);
    let mut runs = vec![MachineRun::default(); o.machines];
    let mut report = tokio::time::interval(Duration::from_secs(5));
    report.tick().await;
    let mut finished = 0;
    while finished < o.machines {
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                let (i, r) = joined.context("a machine's task panicked")?;
                runs[i] = r;
                finished += 1;
            }
            _ = report.tick() => {
                let done: Vec<String> = Stage::ALL
                    .iter()
                    .zip(&ctx.done)
                    .map(|(s, n)| format!("{} {}", s.key(), n.load(Ordering::Relaxed)))
                    .collect();
                say!("finished {finished}; stages done: {}", done.join(", "));
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu1 = cpu_secs(pid).unwrap_or(0.0);
    let hwm = status_kb(pid, "VmHWM:").unwrap_or(0);
    let rss_after = status_kb(pid, "VmRSS:").unwrap_or(0);
    let client_cpu = self_cpu_secs() - client_cpu0;
    let dropped = events_dropped(&http, &base, &token).await;

    let summary = storm::summarize(&runs);
    print!("{}", storm::summary_lines(&summary));
    println!("kernel_bytes={}", o.kernel_size);
    println!("initrd_bytes={}", o.initrd_size);
    println!("wall_secs={wall:.2}");
    println!("server_cpu_secs={:.2}", cpu1 - cpu0);
    println!(
        "server_cpu_ms_per_machine={:.2}",
        (cpu1 - cpu0) * 1000.0 / o.machines as f64
    );
    println!("server_rss_before_mb={:.1}", rss_before as f64 / 1000.0);
    println!("server_rss_after_mb={:.1}", rss_after as f64 / 1000.0);
    println!("server_peak_rss_mb={:.1}", hwm as f64 / 1000.0);
    println!("client_cpu_secs={client_cpu:.2}");
    println!(
        "events_dropped={}",
        dropped.map_or("?".to_string(), |d| d.to_string())
    );
    Ok(summary.served == o.machines || !o.check)
}

/// The profile, and every machine in one bulk request per 1,000.
async fn enrol(http: &reqwest::Client, base: &str, token: &str, machines: usize) -> Result<()> {
    let resp = http
        .put(format!("{base}/api/v1/profiles/{PROFILE}"))
        .bearer_auth(token)
        .json(&json!({
            "kernel": format!("{PROFILE}/vmlinuz"),
            "initrds": [format!("{PROFILE}/initrd")],
            "cmdline": "console=ttyS0 boot-storm",
        }))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "PUT profile: {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let all: Vec<usize> = (0..machines).collect();
    for chunk in all.chunks(1000) {
        let rows: Vec<serde_json::Value> = chunk
            .iter()
            .map(|&i| {
                json!({
                    "name": format!("storm-{i:05}"),
                    "macs": [mac_text(machine_mac(i))],
                    "intent": {"kind": "profile", "name": PROFILE},
                })
            })
            .collect();
        let resp = http
            .post(format!("{base}/api/v1/machines:bulk"))
            .bearer_auth(token)
            .json(&json!({ "machines": rows }))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("POST machines:bulk: {status}: {body}");
        }
    }
    Ok(())
}

/// Events the server could not queue (`events_dropped` of `/api/v1/status`).
async fn events_dropped(http: &reqwest::Client, base: &str, token: &str) -> Option<u64> {
    let status: serde_json::Value = http
        .get(format!("{base}/api/v1/status"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    status["events_dropped"].as_u64()
}

// ---------------------------------------------------------------------------
// The machines

struct Ctx {
    dhcp: Arc<DhcpClients>,
    netlink: Netlink,
    ifindex: u32,
    /// The loader as the server should send it, when this host has the file.
    loader: Option<Vec<u8>>,
    kernel_size: u64,
    initrd_size: u64,
    kernel_head: Vec<u8>,
    initrd_head: Vec<u8>,
    deadline: Instant,
    /// Machines past each stage, for progress lines.
    done: Vec<AtomicUsize>,
}

impl Ctx {
    fn passed(&self, stage: Stage) {
        if let Some(n) = Stage::ALL
            .iter()
            .position(|s| *s == stage)
            .and_then(|i| self.done.get(i))
        {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One machine from power-on to its initrd.
async fn machine(ctx: Arc<Ctx>, i: usize) -> MachineRun {
    let mut run = MachineRun::default();
    let powered_on = Instant::now();
    let mac = machine_mac(i);
    let mut replies = ctx.dhcp.register(mac);
    let result = boot(&ctx, i, mac, &mut replies, &mut run).await;
    ctx.dhcp.unregister(mac);
    match result {
        Ok(()) => run.total_micros = Some(powered_on.elapsed().as_micros() as u64),
        Err(failure) => run.failure = Some(failure),
    }
    run
}

/// Runs `f` as `stage`, bounded by the storm's deadline, and records its time.
async fn stage<T>(
    ctx: &Ctx,
    run: &mut MachineRun,
    stage: Stage,
    f: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, (Stage, String)> {
    let t0 = Instant::now();
    let r = match tokio::time::timeout_at(ctx.deadline.into(), f).await {
        Ok(r) => r,
        Err(_) => Err("the storm's time limit ran out".into()),
    };
    match r {
        Ok(v) => {
            run.stages.push((stage, t0.elapsed().as_micros() as u64));
            ctx.passed(stage);
            Ok(v)
        }
        Err(why) => Err((stage, why)),
    }
}

async fn boot(
    ctx: &Ctx,
    i: usize,
    mac: [u8; 6],
    replies: &mut mpsc::UnboundedReceiver<ServerReply>,
    run: &mut MachineRun,
) -> Result<(), (Stage, String)> {
    let uuid = storm::machine_uuid_option(i);
    let mut retransmits = 0;
    let ack = stage(
        ctx,
        run,
        Stage::DhcpRom,
        dora(
            ctx,
            mac,
            &uuid,
            Firmware::PxeRom,
            xid(i, 1),
            replies,
            &mut retransmits,
        ),
    )
    .await;
    run.dhcp_retransmits += retransmits;
    let ack = ack?;
    let ip = ack.yiaddr;
    let loader_name = ack
        .boot_file
        .clone()
        .ok_or((Stage::Tftp, "the ACK names no boot file".to_string()))?;
    let tftp_server = SocketAddrV4::new(ack.next_server, 69);
    let mut tftp_retransmits = 0;
    let got = stage(
        ctx,
        run,
        Stage::Tftp,
        tftp_fetch(ip, tftp_server, &loader_name, &mut tftp_retransmits),
    )
    .await;
    run.tftp_retransmits += tftp_retransmits;
    let got = got?;
    if let Some(want) = &ctx.loader
        && loader_name == "undionly.kpxe"
        && got != *want
    {
        return Err((
            Stage::Tftp,
            format!(
                "{loader_name}: {} bytes that differ from {LOADER_ON_HOST} ({} bytes)",
                got.len(),
                want.len()
            ),
        ));
    }

    let mut retransmits = 0;
    let ack = stage(
        ctx,
        run,
        Stage::DhcpIpxe,
        dora(
            ctx,
            mac,
            &uuid,
            Firmware::Ipxe,
            xid(i, 2),
            replies,
            &mut retransmits,
        ),
    )
    .await;
    run.dhcp_retransmits += retransmits;
    let ack = ack?;
    if ack.yiaddr != ip {
        return Err((
            Stage::DhcpIpxe,
            format!("iPXE got {} after the PXE ROM got {ip}", ack.yiaddr),
        ));
    }
    let script_url = ack
        .boot_file
        .clone()
        .filter(|f| f.starts_with("http://"))
        .ok_or((
            Stage::DhcpIpxe,
            format!("iPXE's ACK names no script URL ({:?})", ack.boot_file),
        ))?;

    let http = reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(ip))
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| (Stage::Script, format!("HTTP client: {e}")))?;
    let script = stage(ctx, run, Stage::Script, async {
        let resp = http
            .get(&script_url)
            .send()
            .await
            .map_err(|e| format!("GET {script_url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {script_url}: {}", resp.status()));
        }
        resp.text()
            .await
            .map_err(|e| format!("GET {script_url}: {e}"))
    })
    .await?;
    let (kernel, initrds) = storm::boot_files_in_ipxe_script(&script).ok_or((
        Stage::Script,
        format!(
            "no kernel in the script: {:?}",
            script.chars().take(200).collect::<String>()
        ),
    ))?;
    let initrd = match initrds.as_slice() {
        [one] => one.clone(),
        other => {
            return Err((
                Stage::Script,
                format!("the script loads {} initrds, not 1", other.len()),
            ));
        }
    };
    let bytes = stage(
        ctx,
        run,
        Stage::Kernel,
        download(&http, &kernel, ctx.kernel_size, &ctx.kernel_head),
    )
    .await?;
    run.http_bytes += bytes;
    let bytes = stage(
        ctx,
        run,
        Stage::Initrd,
        download(&http, &initrd, ctx.initrd_size, &ctx.initrd_head),
    )
    .await?;
    run.http_bytes += bytes;
    Ok(())
}

/// A transaction id per machine and exchange, different from run to run.
fn xid(i: usize, exchange: u32) -> u32 {
    static SALT: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let salt = *SALT.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    });
    (i as u32).wrapping_mul(2654435761) ^ salt ^ (exchange << 28)
}

/// DISCOVER → OFFER → REQUEST → ACK, retransmitting on the firmware's
/// schedule; a NAK starts over. Then the leased address is configured.
async fn dora(
    ctx: &Ctx,
    mac: [u8; 6],
    uuid: &[u8],
    firmware: Firmware,
    xid: u32,
    replies: &mut mpsc::UnboundedReceiver<ServerReply>,
    retransmits: &mut u32,
) -> Result<ServerReply, String> {
    let started = Instant::now();
    let schedule = firmware.retransmit_secs();
    for _restart in 0..3 {
        let mut msg = ClientMessage {
            mac,
            xid,
            firmware,
            uuid: uuid.to_vec(),
            request: None,
            secs: 0,
        };
        let offer = exchange(
            ctx,
            &mut msg,
            started,
            schedule,
            replies,
            retransmits,
            |r| r.kind == MessageType::Offer,
        )
        .await
        .ok_or_else(|| format!("no OFFER after {} DISCOVERs", schedule.len()))?;
        let server = offer.server_id.unwrap_or(offer.next_server);
        msg.request = Some((offer.yiaddr, server));
        let answer = exchange(
            ctx,
            &mut msg,
            started,
            schedule,
            replies,
            retransmits,
            |r| matches!(r.kind, MessageType::Ack | MessageType::Nak),
        )
        .await
        .ok_or_else(|| format!("no ACK after {} REQUESTs", schedule.len()))?;
        if answer.kind == MessageType::Ack {
            let prefix = answer.prefix_len.unwrap_or(PREFIX);
            ctx.netlink
                .add_address(ctx.ifindex, answer.yiaddr, prefix)
                .map_err(|e| format!("adding {}/{prefix}: {e}", answer.yiaddr))?;
            return Ok(answer);
        }
        // NAK: start over with a DISCOVER, as RFC 2131 says.
    }
    Err("NAKed three times".into())
}

/// Sends `msg` and waits for a reply with its xid that `wanted` accepts,
/// sending again after each interval of `schedule`.
async fn exchange(
    ctx: &Ctx,
    msg: &mut ClientMessage,
    started: Instant,
    schedule: &[u64],
    replies: &mut mpsc::UnboundedReceiver<ServerReply>,
    retransmits: &mut u32,
    wanted: impl Fn(&ServerReply) -> bool,
) -> Option<ServerReply> {
    for (attempt, secs) in schedule.iter().enumerate() {
        if attempt > 0 {
            *retransmits += 1;
        }
        msg.secs = started.elapsed().as_secs().min(u64::from(u16::MAX)) as u16;
        let frame = storm::dhcp_broadcast_frame(msg.mac, &storm::encode_client_message(msg));
        if let Err(e) = ctx.dhcp.send(&frame) {
            say!("sending a DHCP frame: {e}");
        }
        let until = tokio::time::Instant::now() + Duration::from_secs(*secs);
        loop {
            match tokio::time::timeout_at(until, replies.recv()).await {
                Ok(Some(r)) if r.xid == msg.xid && wanted(&r) => return Some(r),
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(_) => break,
            }
        }
    }
    None
}

/// One TFTP read, lock-step with blksize 1468 and tsize as a PXE ROM asks,
/// from `ip`; retransmits the last ACK after 1, 2, 4, 8 s of silence.
async fn tftp_fetch(
    ip: Ipv4Addr,
    server: SocketAddrV4,
    file: &str,
    retransmits: &mut u32,
) -> Result<Vec<u8>, String> {
    const WAITS: [u64; 5] = [1, 2, 4, 8, 8];
    let sock = tokio::net::UdpSocket::bind(SocketAddrV4::new(ip, 0))
        .await
        .map_err(|e| format!("binding {ip}: {e}"))?;
    let rrq = Packet::Rrq(Request {
        filename: file.to_string(),
        mode: Mode::Octet,
        options: vec![
            ("tsize".into(), "0".into()),
            ("blksize".into(), "1468".into()),
        ],
    })
    .encode();
    let mut buf = vec![0u8; 65536];
    let mut data = Vec::new();
    let mut blksize = 512usize;
    let mut tsize: Option<usize> = None;
    let mut expected: u16 = 1;
    let mut peer: Option<SocketAddr> = None;
    // What to send again when the server goes quiet: the RRQ, then the last ACK.
    let mut last_sent = rrq.clone();
    sock.send_to(&rrq, server)
        .await
        .map_err(|e| format!("sending RRQ: {e}"))?;
    let mut quiet = 0usize;
    loop {
        let wait = Duration::from_secs(WAITS[quiet.min(WAITS.len() - 1)]);
        let (n, from) = match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(format!("receiving: {e}")),
            Err(_) => {
                quiet += 1;
                if quiet >= WAITS.len() {
                    return Err(format!(
                        "{file}: the server went quiet after {} bytes",
                        data.len()
                    ));
                }
                *retransmits += 1;
                let to = peer.unwrap_or(SocketAddr::V4(server));
                sock.send_to(&last_sent, to)
                    .await
                    .map_err(|e| format!("sending again: {e}"))?;
                continue;
            }
        };
        // Everything after the first answer comes from the transfer's own port.
        match peer {
            None => peer = Some(from),
            Some(p) if p != from => continue,
            Some(_) => {}
        }
        quiet = 0;
        let ack = |block: u16| Packet::Ack { block }.encode();
        match Packet::parse(&buf[..n]) {
            Ok(Packet::Oack { options }) if expected == 1 && data.is_empty() => {
                for (name, value) in options {
                    match name.to_ascii_lowercase().as_str() {
                        "blksize" => {
                            blksize = value
                                .parse()
                                .map_err(|_| format!("{file}: OACK blksize {value:?}"))?
                        }
                        "tsize" => tsize = value.parse().ok(),
                        _ => {}
                    }
                }
                last_sent = ack(0);
            }
            Ok(Packet::Data { block, data: chunk }) if block == expected => {
                data.extend_from_slice(chunk);
                expected = expected.wrapping_add(1);
                last_sent = ack(block);
                if chunk.len() < blksize {
                    sock.send_to(&last_sent, from)
                        .await
                        .map_err(|e| format!("sending the last ACK: {e}"))?;
                    if let Some(t) = tsize
                        && t != data.len()
                    {
                        return Err(format!("{file}: tsize {t} but {} bytes came", data.len()));
                    }
                    return Ok(data);
                }
            }
            // A block sent again: the ACK was lost; say it again.
            Ok(Packet::Data { .. }) => {}
            Ok(Packet::Error { code, message }) => {
                return Err(format!("{file}: TFTP error {}: {message}", code.as_u16()));
            }
            other => return Err(format!("{file}: unexpected {other:?}")),
        }
        sock.send_to(&last_sent, from)
            .await
            .map_err(|e| format!("sending ACK: {e}"))?;
    }
}

/// GETs `url`, counting bytes as they come; the length and the first bytes
/// must be those of the file served.
async fn download(
    http: &reqwest::Client,
    url: &str,
    want_len: u64,
    want_head: &[u8],
) -> Result<u64, String> {
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: {}", resp.status()));
    }
    let mut len = 0u64;
    let mut head = Vec::with_capacity(want_head.len());
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("GET {url} after {len} bytes: {e}"))?
    {
        if head.len() < want_head.len() {
            let take = (want_head.len() - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        len += chunk.len() as u64;
    }
    if len != want_len || head != want_head {
        return Err(format!(
            "GET {url}: {len} bytes (want {want_len}){}",
            if head != want_head {
                ", not the file's first bytes"
            } else {
                ""
            }
        ));
    }
    Ok(len)
}

// ---------------------------------------------------------------------------
// DHCP for every machine: one packet socket out, one UDP socket in

struct DhcpClients {
    /// AF_PACKET, SOCK_RAW, bound to the client interface; send only.
    packet: OwnedFd,
    ifindex: i32,
    /// Port 68 on every address: the server's broadcast replies.
    udp: tokio::net::UdpSocket,
    waiting: Mutex<HashMap<[u8; 6], mpsc::UnboundedSender<ServerReply>>>,
}

impl DhcpClients {
    fn open(iface: &str) -> Result<Arc<DhcpClients>> {
        let index = ifindex(iface)? as i32;
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("packet socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let packet = unsafe { OwnedFd::from_raw_fd(fd) };
        let udp = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        udp.set_reuse_address(true)?;
        udp.set_broadcast(true)?;
        udp.bind_device(Some(iface.as_bytes()))?;
        // A thousand OFFERs can arrive within a millisecond.
        udp.set_recv_buffer_size(8 << 20)?;
        udp.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())
            .context("binding UDP port 68")?;
        udp.set_nonblocking(true)?;
        let udp = tokio::net::UdpSocket::from_std(udp.into())?;
        Ok(Arc::new(DhcpClients {
            packet,
            ifindex: index,
            udp,
            waiting: Mutex::new(HashMap::new()),
        }))
    }

    fn register(&self, mac: [u8; 6]) -> mpsc::UnboundedReceiver<ServerReply> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mac, tx);
        rx
    }

    fn unregister(&self, mac: [u8; 6]) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&mac);
    }

    /// Sends one whole Ethernet frame out of the client interface.
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zeroed then filled.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the frame and the address outlive the call.
        let n = unsafe {
            libc::sendto(
                self.packet.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Hands every reply to the machine whose MAC it names.
    async fn receive_loop(self: Arc<Self>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let n = match self.udp.recv_from(&mut buf).await {
                Ok((n, _)) => n,
                Err(e) => {
                    say!("DHCP receive: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Some(reply) = storm::parse_server_reply(&buf[..n]) else {
                continue;
            };
            let waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = waiting.get(&reply.mac) {
                let _ = tx.send(reply);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Addresses: RTM_NEWADDR over rtnetlink

struct Netlink {
    fd: Mutex<(OwnedFd, u32)>,
}

impl Netlink {
    fn open() -> Result<Netlink> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE) };
        if fd < 0 {
            bail!("netlink socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Netlink {
            fd: Mutex::new((fd, 0)),
        })
    }

    /// Adds `ip/prefix_len` to the interface and waits for the kernel's answer
    /// (an address already there is fine: iPXE's ACK repeats the ROM's).
    fn add_address(&self, ifindex: u32, ip: Ipv4Addr, prefix_len: u8) -> std::io::Result<()> {
        let mut guard = self.fd.lock().unwrap_or_else(|e| e.into_inner());
        guard.1 = guard.1.wrapping_add(1);
        let seq = guard.1;
        let fd = guard.0.as_raw_fd();
        let msg = storm::netlink_new_address(seq, ifindex, ip, prefix_len);
        // SAFETY: sockaddr_nl zeroed is the kernel as destination.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: buffers outlive the calls.
        let n = unsafe {
            libc::sendto(
                fd,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut answer = [0u8; 1024];
        // Requests go one at a time under the lock, so the next answer is
        // this one's; a few reads allow for anything else queued.
        for _ in 0..8 {
            // SAFETY: answer is ours and large enough for an error message.
            let n = unsafe { libc::recv(fd, answer.as_mut_ptr().cast(), answer.len(), 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            match storm::netlink_ack(&answer[..n as usize], seq) {
                Ok(()) => return Ok(()),
                // An answer to an earlier request (not ours): keep reading.
                Err(-1) => continue,
                Err(errno) => return Err(std::io::Error::from_raw_os_error(errno)),
            }
        }
        Err(std::io::Error::other(
            "no answer from the kernel to RTM_NEWADDR",
        ))
    }
}
