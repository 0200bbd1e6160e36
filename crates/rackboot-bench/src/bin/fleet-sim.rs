//! `fleet-sim`: N simulated machines deploying at once against one real
//! `rackboot serve`.
//!
//! ```text
//! fleet-sim --rackboot PATH --agent PATH [--machines 1000] [--max-running N]
//!           [--heartbeat-secs 5] [--image-mib 8] [--disk-mib 64] [--work DIR]
//!           [--timeout-secs 1800] [--samplers 4] [--agent-priority idle|NICE]
//!           [--check] [--keep]
//! ```
//!
//! It starts `rackboot serve` (SQLite, loopback, no DHCP or TFTP; the engine's
//! `[engine] max_running` = `--max-running`, by default N so that every
//! machine runs at once), imports an image with cloud-init, enrolls N
//! machines without BMCs, and asks for a deploy of each through the API
//! (`POST /api/v1/workflows`, one request per machine: its host name and its
//! NIC's MAC are its own; see `deploy_request`). For each machine it plays
//! the firmware (fetches `/boot/ipxe/MAC` until the script carries an agent
//! token, starts the real `rackboot-agent --simulate` on that machine's files,
//! and after the agent's reboot fetches the script again), the installed OS
//! (POSTs the first-boot URL cloud-init finds in the seed the agent wrote) and
//! an operator following the deploy (`GET /api/v1/workflows/ID` every 2 s
//! until it ends). Meanwhile `--samplers` clients time other API requests.
//! Nothing on the server side is simulated. The agents run under SCHED_IDLE
//! (`--agent-priority`; they stand in for machines of their own, so they
//! should not take the server's CPU), the server's
//! state stays in the temporary directory (disk) while the machines' files go
//! to `--work` (e.g. /dev/shm).
//!
//! Prints `key=value` lines on stdout (figures, latencies as `count errors p50
//! p99 max` in ms, lost steps) and its progress on stderr. With `--check` it
//! exits 1 unless every workflow succeeded, no step was lost, every agent
//! rebooted into an intact image and no more than `--max-running` workflows
//! ever ran at once.

use rackboot_bench::procstat::{children_cpu_secs, cpu_secs, self_cpu_secs, status_kb};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rackboot_bench::fleet::{self, Latencies};
use serde_json::{Value, json};

const IMAGE_NAME: &str = "fleet";
/// Exit status of a simulated agent after an accepted reboot.
const AGENT_REBOOTED: i32 = 10;

#[derive(Debug, Clone)]
struct Opts {
    rackboot: PathBuf,
    agent: PathBuf,
    machines: usize,
    max_running: Option<usize>,
    heartbeat_secs: u32,
    image_mib: usize,
    disk_mib: u64,
    work: PathBuf,
    timeout: Duration,
    samplers: usize,
    firmware_poll: Duration,
    check: bool,
    keep: bool,
    server_log: String,
    agent_priority: AgentPriority,
}

/// How the agent processes are scheduled beside the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentPriority {
    /// SCHED_IDLE (`chrt --idle 0`): they run when the server does not.
    Idle,
    /// `nice -n N`.
    Nice(i32),
}

impl std::fmt::Display for AgentPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentPriority::Idle => write!(f, "idle"),
            AgentPriority::Nice(n) => write!(f, "nice {n}"),
        }
    }
}

const USAGE: &str = "usage: fleet-sim --rackboot PATH --agent PATH [--machines N] \
[--max-running N] [--heartbeat-secs N] [--image-mib N] [--disk-mib N] [--work DIR] \
[--timeout-secs N] [--samplers N] [--firmware-poll-ms N] [--server-log LEVEL] [--agent-priority idle|NICE] \
[--check] [--keep]";

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        rackboot: PathBuf::new(),
        agent: PathBuf::new(),
        machines: 1000,
        max_running: None,
        heartbeat_secs: 5,
        image_mib: 8,
        disk_mib: 64,
        work: std::env::temp_dir(),
        timeout: Duration::from_secs(1800),
        samplers: 4,
        firmware_poll: Duration::from_millis(1000),
        check: false,
        keep: false,
        server_log: "warn".into(),
        agent_priority: AgentPriority::Idle,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        let num = |v: String, name: &str| -> Result<u64> {
            v.parse().with_context(|| format!("{name} {v:?}: a number"))
        };
        match arg.as_str() {
            "--rackboot" => o.rackboot = value()?.into(),
            "--agent" => o.agent = value()?.into(),
            "--machines" => o.machines = num(value()?, "--machines")? as usize,
            "--max-running" => o.max_running = Some(num(value()?, "--max-running")? as usize),
            "--heartbeat-secs" => o.heartbeat_secs = num(value()?, "--heartbeat-secs")? as u32,
            "--image-mib" => o.image_mib = num(value()?, "--image-mib")? as usize,
            "--disk-mib" => o.disk_mib = num(value()?, "--disk-mib")?,
            "--work" => o.work = value()?.into(),
            "--timeout-secs" => o.timeout = Duration::from_secs(num(value()?, "--timeout-secs")?),
            "--samplers" => o.samplers = num(value()?, "--samplers")? as usize,
            "--firmware-poll-ms" => {
                o.firmware_poll = Duration::from_millis(num(value()?, "--firmware-poll-ms")?)
            }
            "--server-log" => o.server_log = value()?,
            "--agent-priority" => {
                let v = value()?;
                o.agent_priority = match v.as_str() {
                    "idle" => AgentPriority::Idle,
                    n => AgentPriority::Nice(n.parse().with_context(|| {
                        format!("--agent-priority {v:?}: idle or a nice value")
                    })?),
                };
            }
            "--check" => o.check = true,
            "--keep" => o.keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if o.rackboot.as_os_str().is_empty() || o.agent.as_os_str().is_empty() {
        bail!("--rackboot and --agent are required\n{USAGE}");
    }
    if !(1..=10_000).contains(&o.machines) {
        bail!("--machines must be 1-10000");
    }
    // The deploy puts an OS only on disks of 64 MiB or more, and the image
    // and the 16 MiB cloud-init seed partition must fit.
    if o.image_mib == 0 || o.disk_mib < (o.image_mib as u64 + 32).max(64) {
        bail!("--disk-mib must be at least 64 and --image-mib + 32 (image and seed partition)");
    }
    if o.heartbeat_secs == 0 {
        bail!("--heartbeat-secs must be at least 1");
    }
    Ok(o)
}

macro_rules! say {
    ($($arg:tt)*) => { eprintln!("[fleet-sim {:>7.1}s] {}", elapsed_secs(), format!($($arg)*)) };
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
            eprintln!("fleet-sim: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleet-sim: tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        // Dropping `run` stops the server and the agents and removes the files.
        tokio::select! {
            r = run(opts) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fleet-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// The machine this runs on

/// Raises the soft open-files limit to the hard one (children inherit it):
/// the server holds a socket per agent request in flight.
fn raise_nofile(want: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
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
            "open files limit {} is below the {want} this run needs (raise the hard limit: ulimit -Hn)",
            lim.rlim_cur
        );
    }
    Ok(lim.rlim_cur)
}

fn free_bytes(dir: &Path) -> Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: statvfs fills the zeroed struct we own.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        bail!(
            "statvfs {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

// ---------------------------------------------------------------------------
// The server

/// `rackboot serve`, stopped (TERM, then KILL) when dropped.
struct Server {
    child: std::process::Child,
    url: String,
    state: PathBuf,
    log: PathBuf,
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

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_server(o: &Opts, dir: &Path, http: &reqwest::Client) -> Result<Server> {
    let state = dir.join("state");
    std::fs::create_dir_all(state.join("ramdisk"))?;
    // The boot script offers the agent's RAM-disk only when one is installed;
    // simulated machines never download it, so two placeholder files do.
    std::fs::write(state.join("ramdisk/vmlinuz"), b"kernel")?;
    std::fs::write(state.join("ramdisk/initramfs.img"), b"initrd")?;
    let port = free_port()?;
    let config = dir.join("rackboot.toml");
    let max_running = o.max_running.unwrap_or(o.machines);
    std::fs::write(
        &config,
        format!(
            "state_dir = {state:?}\nserver_ip = \"127.0.0.1\"\n[listen]\nhttp = \"127.0.0.1:{port}\"\ntftp = \"off\"\n\
             [engine]\nmax_running = {max_running}\nheartbeat_secs = {}\n",
            o.heartbeat_secs
        ),
    )?;
    let log = dir.join("server.log");
    let out = std::fs::File::create(&log)?;
    let child = std::process::Command::new(&o.rackboot)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", &o.server_log)
        .env("NO_COLOR", "1")
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", o.rackboot.display()))?;
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        state,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http
            .get(format!("{}/api/openapi.json", server.url))
            .send()
            .await
            .is_ok()
            && server.state.join("admin-token").exists()
        {
            return Ok(server);
        }
        if Instant::now() > deadline {
            bail!(
                "rackboot serve did not come up in 60 s:\n{}",
                tail(&server.log, 2000)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(n);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].to_string()
}

/// The REST API with the admin token.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn get(&self, path: &str) -> Result<Value> {
        let resp = self
            .http
            .get(format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let body = resp.bytes().await.with_context(|| format!("GET {path}"))?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: bad JSON"))
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let resp = self
            .http
            .post(format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            bail!("POST {path}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

fn cli(o: &Opts, server: &Server) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(&o.rackboot);
    c.env("RACKBOOT_URL", &server.url)
        .env("RACKBOOT_STATE_DIR", &server.state)
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    c
}

// ---------------------------------------------------------------------------
// The image and the machines

/// `mib` MiB, a third each of noise, text-like runs and zeros (what real
/// images mostly are), so it compresses and sparse-writes like one.
fn image_bytes(mib: usize) -> Vec<u8> {
    let mut data = vec![0u8; mib << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for (i, chunk) in data.chunks_mut(1 << 20).enumerate() {
        match i % 3 {
            0 => {
                for w in chunk.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    w.copy_from_slice(&x.to_le_bytes()[..w.len()]);
                }
            }
            2 => {
                let text = b"rackboot fleet image, a block of text-like content\n";
                for (j, b) in chunk.iter_mut().enumerate() {
                    *b = text[(i + j) % text.len()];
                }
            }
            _ => {}
        }
    }
    data
}

fn mac_of(i: usize) -> String {
    format!(
        "02:fe:00:{:02x}:{:02x}:{:02x}",
        i >> 16,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

fn name_of(i: usize) -> String {
    format!("fleet-{i:05}")
}

/// What each simulated machine went through.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Rebooted into the image, called home, and its workflow succeeded.
    Done,
    /// Its workflow ended in another state.
    WorkflowEnded(String),
    NoToken,
    AgentExit(Option<i32>),
    AgentTimeout,
    /// The boot script after the deploy still offered the agent.
    AgentOfferedAgain,
    NoBootedUrl(String),
    BootedRefused(String),
    /// Still waiting when `rackboot deploy` had ended (its workflow failed).
    GaveUp,
}

/// The server's figures when `rackboot deploy` exited.
struct EndFigures {
    wall: f64,
    server_cpu: f64,
    hwm_kb: u64,
    rss_kb: u64,
}

/// Shared by the machines' tasks and the samplers.
struct Ctx {
    opts: Opts,
    url: String,
    http: reqwest::Client,
    api: Api,
    dirs: PathBuf,
    deadline: Instant,
    stop: AtomicBool,
    /// Set a grace period after `rackboot deploy` exits, or at the deadline:
    /// machines still waiting then stop (their agents are killed).
    give_up: tokio::sync::watch::Receiver<bool>,
    /// Set once every deploy has been requested: the operator powers the
    /// rack on (these machines have no BMC for rackboot to do it).
    powered_on: tokio::sync::watch::Receiver<bool>,
    latencies: Mutex<BTreeMap<&'static str, Latencies>>,
    tokens_seen: AtomicUsize,
    agents_done: AtomicUsize,
    /// Each machine's workflow id, once its deploy was requested.
    workflow_ids: Mutex<std::collections::HashMap<usize, String>>,
}

impl Ctx {
    fn record(&self, kind: &'static str, d: Option<Duration>) {
        let mut l = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        let e = l.entry(kind).or_default();
        match d {
            Some(d) => e.add(d),
            None => e.errors += 1,
        }
    }

    /// A GET that records its latency under `kind`; the body on 2xx.
    async fn timed_get(&self, kind: &'static str, url: &str, auth: bool) -> Option<String> {
        let t0 = Instant::now();
        let mut req = self.http.get(url);
        if auth {
            req = req.bearer_auth(&self.api.token);
        }
        let body = match req.send().await {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            _ => None,
        };
        self.record(kind, body.as_ref().map(|_| t0.elapsed()));
        body
    }
}

/// Returns once the flag is set (or its sender is gone).
async fn until_set(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await.map(|_| ());
}

/// One machine: firmware, agent, reboot, installed OS.
async fn machine(ctx: Arc<Ctx>, i: usize) -> Outcome {
    let mac = mac_of(i);
    let dir = ctx.dirs.join(name_of(i));
    let script_url = format!("{}/boot/ipxe/{}", ctx.url, mac.replace(':', "-"));
    until_set(&mut ctx.powered_on.clone()).await;
    // Spread the machines' polls over the interval, as power-on times would be.
    let poll = ctx.opts.firmware_poll;
    tokio::time::sleep(poll.mul_f64((i % 97) as f64 / 97.0)).await;
    let token = loop {
        let gave_up = *ctx.give_up.borrow();
        if Instant::now() > ctx.deadline || gave_up {
            return Outcome::NoToken;
        }
        if let Some(script) = ctx.timed_get("boot script", &script_url, false).await
            && let Some(t) = fleet::token_in_script(&script)
        {
            break t.to_string();
        }
        tokio::time::sleep(poll).await;
    };
    ctx.tokens_seen.fetch_add(1, Ordering::Relaxed);
    let log = match std::fs::File::create(dir.join("agent.log")) {
        Ok(f) => f,
        Err(_) => return Outcome::AgentExit(None),
    };
    // The agents stand in for machines of their own: below the server's
    // CPU priority, so that a thousand of them on two CPUs do not starve it.
    let mut command = match ctx.opts.agent_priority {
        AgentPriority::Idle => {
            let mut c = tokio::process::Command::new("chrt");
            c.args(["--idle", "0"]);
            c
        }
        AgentPriority::Nice(n) => {
            let mut c = tokio::process::Command::new("nice");
            c.args(["-n", &n.to_string()]);
            c
        }
    };
    let spawned = command
        .arg(&ctx.opts.agent)
        .arg("--simulate")
        .arg(&dir)
        .args(["--url", &ctx.url, "--token", &token, "--mac", &mac])
        .args(["--serial", &format!("FLEET-{i:05}")])
        .arg("--request-log")
        .arg(dir.join("requests.log"))
        .stdout(
            log.try_clone()
                .map(Into::into)
                .unwrap_or_else(|_| std::process::Stdio::null()),
        )
        .stderr(log)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            say!("{}: cannot start the agent: {e}", name_of(i));
            return Outcome::AgentExit(None);
        }
    };
    let left = ctx.deadline.saturating_duration_since(Instant::now());
    let mut give_up = ctx.give_up.clone();
    let status = tokio::select! {
        r = tokio::time::timeout(left, child.wait()) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => return Outcome::AgentExit(None),
            Err(_) => {
                let _ = child.kill().await;
                return Outcome::AgentTimeout;
            }
        },
        () = until_set(&mut give_up) => {
            let _ = child.kill().await;
            return Outcome::GaveUp;
        }
    };
    ctx.agents_done.fetch_add(1, Ordering::Relaxed);
    if status.code() != Some(AGENT_REBOOTED) {
        return Outcome::AgentExit(status.code());
    }
    // The machine reboots: its firmware asks for a boot script again, which
    // must now boot the disk (no agent, no token).
    if let Some(script) = ctx.timed_get("boot script", &script_url, false).await
        && fleet::token_in_script(&script).is_some()
    {
        return Outcome::AgentOfferedAgain;
    }
    // The installed system comes up and cloud-init calls home.
    let user_data = std::fs::read_to_string(dir.join("seed/user-data")).unwrap_or_default();
    let Some(url) = fleet::booted_url_in_user_data(&user_data) else {
        return Outcome::NoBootedUrl(user_data.chars().take(200).collect());
    };
    let t0 = Instant::now();
    match ctx.http.post(url).send().await {
        Ok(r) if r.status().is_success() => {
            ctx.record("first-boot callback", Some(t0.elapsed()));
        }
        Ok(r) => {
            ctx.record("first-boot callback", None);
            return Outcome::BootedRefused(r.status().to_string());
        }
        Err(e) => {
            ctx.record("first-boot callback", None);
            return Outcome::BootedRefused(e.to_string());
        }
    }
    // The operator's view: the workflow until it ends, as `rackboot deploy` follows it.
    let Some(id) = ctx
        .workflow_ids
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&i)
        .cloned()
    else {
        return Outcome::WorkflowEnded("never requested".into());
    };
    let url = format!("{}/api/v1/workflows/{id}", ctx.url);
    loop {
        let gave_up = *ctx.give_up.borrow();
        if Instant::now() > ctx.deadline || gave_up {
            return Outcome::GaveUp;
        }
        if let Some(body) = ctx
            .timed_get("GET /api/v1/workflows/{id}", &url, true)
            .await
        {
            let wf: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            match wf["state"].as_str() {
                Some("succeeded") => return Outcome::Done,
                Some("queued" | "running") | None => {}
                Some(other) => return Outcome::WorkflowEnded(other.to_string()),
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// A deploy of machine `i` as one API request: the fleet image, and the
/// machine's own host name and DHCP on its NIC (named by its MAC). The
/// cloud-init seed needs a host name, and a host name is given only with a
/// network section whose NICs are named by MAC: so one request for every
/// machine (`rackboot deploy --all`) cannot carry it.
fn deploy_request(i: usize) -> Value {
    json!({
        "workflow": "deploy",
        "machines": [name_of(i)],
        "request": {
            "image": IMAGE_NAME,
            "network": {
                "hostname": name_of(i),
                "nics": [{"mac": mac_of(i), "name": "eth0", "ipv4": {"mode": "dhcp"}}],
            },
        },
    })
}

/// What an operator's tools ask while the deploy runs: one machine's status
/// (`rackboot machine show`) and the newest workflows (`rackboot workflow list`).
async fn sampler(ctx: Arc<Ctx>, seed: u64) {
    let mut x = seed | 1;
    while !ctx.stop.load(Ordering::Relaxed) && Instant::now() < ctx.deadline {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let name = name_of((x % ctx.opts.machines as u64) as usize + 1);
        let base = format!("{}/api/v1", ctx.url);
        ctx.timed_get(
            "GET /api/v1/machines/{name}/status",
            &format!("{base}/machines/{name}/status"),
            true,
        )
        .await;
        ctx.timed_get(
            "GET /api/v1/workflows?limit=20",
            &format!("{base}/workflows?limit=20"),
            true,
        )
        .await;
        ctx.timed_get(
            "GET /api/v1/machines/{name}",
            &format!("{base}/machines/{name}"),
            true,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn out(key: &str, value: impl std::fmt::Display) {
    println!("{key}={value}");
}

async fn run(o: Opts) -> Result<bool> {
    let n = o.machines;
    // The server: a socket per agent request in flight, plus the store and
    // samplers; the agents themselves are other processes.
    let nofile = raise_nofile(n as u64 * 2 + 1024)?;
    // The agents write sparsely: each disk file holds the image's non-zero
    // MiB (two thirds of it), plus a little for the seed and the store.
    let image_data = image_bytes(o.image_mib)
        .chunks(1 << 20)
        .filter(|c| c.iter().any(|b| *b != 0))
        .count() as u64;
    let need = n as u64 * ((image_data << 20) + (1 << 20)) + (512 << 20);
    let free = free_bytes(&o.work)?;
    if free < need {
        bail!(
            "{} has {} MiB free; {n} machines with a {} MiB image ({image_data} MiB of data) need about {} MiB (use --work)",
            o.work.display(),
            free >> 20,
            o.image_mib,
            need >> 20
        );
    }
    let dir = WorkDir {
        path: o.work.join(format!("fleet-sim.{}", std::process::id())),
        keep: o.keep,
    };
    // The server's state (SQLite, images) on the temporary directory's disk
    // as on a real server, whatever --work is (/dev/shm for the machines).
    let server_dir = WorkDir {
        path: std::env::temp_dir().join(format!("fleet-sim-server.{}", std::process::id())),
        keep: o.keep,
    };
    for d in [&dir.path, &server_dir.path] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    run_in(&o, &dir.path, &server_dir.path, nofile).await
}

/// The run's files, removed when dropped unless `--keep`.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            say!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

async fn run_in(o: &Opts, dir: &Path, server_dir: &Path, nofile: u64) -> Result<bool> {
    let n = o.machines;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build()?;
    say!("starting rackboot serve ({n} machines, open files limit {nofile})");
    let server = start_server(o, server_dir, &http).await?;
    let server_pid = server.child.id();
    let token = std::fs::read_to_string(server.state.join("admin-token"))?
        .trim()
        .to_string();
    let api = Api {
        http: http.clone(),
        base: server.url.clone(),
        token,
    };

    // The image, imported as an operator would.
    let image = image_bytes(o.image_mib);
    let raw = dir.join("fleet.raw");
    std::fs::write(&raw, &image)?;
    let import = cli(o, &server)
        .args(["image", "import"])
        .arg(&raw)
        .args([
            "--name",
            IMAGE_NAME,
            "--os-family",
            "debian",
            "--cloud-init",
        ])
        .output()
        .await?;
    if !import.status.success() {
        bail!(
            "rackboot image import: {}{}",
            String::from_utf8_lossy(&import.stdout),
            String::from_utf8_lossy(&import.stderr)
        );
    }

    // The machines: enrolled through the API, eight requests at a time; each
    // gets a blank sparse disk.
    let dirs = dir.join("machines");
    let t_enroll = Instant::now();
    let next = Arc::new(AtomicUsize::new(1));
    let mut enrollers = Vec::new();
    for _ in 0..8 {
        let (api, next, dirs, disk_mib) = (api.clone(), next.clone(), dirs.clone(), o.disk_mib);
        enrollers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i > n {
                    return Ok::<(), anyhow::Error>(());
                }
                let disks = dirs.join(name_of(i)).join("disks");
                std::fs::create_dir_all(&disks)?;
                std::fs::File::create(disks.join("vda"))?.set_len(disk_mib << 20)?;
                api.post(
                    "/machines",
                    &json!({"name": name_of(i), "macs": [mac_of(i)]}),
                )
                .await?;
            }
        }));
    }
    for e in enrollers {
        e.await??;
    }
    let enroll_secs = t_enroll.elapsed().as_secs_f64();
    say!("enrolled {n} machines in {enroll_secs:.1} s");

    let deadline = Instant::now() + o.timeout;
    let (give_up_tx, give_up) = tokio::sync::watch::channel(false);
    let (power_on_tx, powered_on) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(Ctx {
        opts: o.clone(),
        url: server.url.clone(),
        http: http.clone(),
        api: api.clone(),
        dirs: dirs.clone(),
        deadline,
        stop: AtomicBool::new(false),
        give_up,
        powered_on,
        latencies: Mutex::new(BTreeMap::new()),
        tokens_seen: AtomicUsize::new(0),
        agents_done: AtomicUsize::new(0),
        workflow_ids: Mutex::new(std::collections::HashMap::new()),
    });

    // The deploys: one API request per machine, eight in flight at a time.
    let cpu0 = cpu_secs(server_pid).unwrap_or(0.0);
    let children_cpu0 = children_cpu_secs();
    let self_cpu0 = self_cpu_secs();
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(1));
    let requesters: Vec<_> = (0..8)
        .map(|_| {
            let (ctx, next) = (ctx.clone(), next.clone());
            tokio::spawn(async move {
                let mut refused = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i > n {
                        return refused;
                    }
                    let t = Instant::now();
                    match ctx.api.post("/workflows", &deploy_request(i)).await {
                        Ok(started) => {
                            ctx.record("POST /api/v1/workflows", Some(t.elapsed()));
                            match started[0]["workflow"]["id"].as_str() {
                                Some(id) => {
                                    ctx.workflow_ids
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .insert(i, id.to_string());
                                }
                                None => refused.push(format!("{}: {started}", name_of(i))),
                            }
                        }
                        Err(e) => {
                            ctx.record("POST /api/v1/workflows", None);
                            refused.push(format!("{}: {e:#}", name_of(i)));
                        }
                    }
                }
            })
        })
        .collect();

    // Until no workflow is queued or running: then the server's figures are
    // read, and machines still waiting a grace period later give up.
    let (figures_tx, figures_rx) = tokio::sync::oneshot::channel();
    let watcher = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let base = format!("{}/api/v1", ctx.url);
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if Instant::now() > deadline {
                    break;
                }
                let requested = ctx
                    .workflow_ids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .len();
                if requested < n && next.load(Ordering::Relaxed) <= n {
                    continue;
                }
                let mut active = false;
                for state in ["queued", "running"] {
                    let list = ctx
                        .timed_get(
                            "GET /api/v1/workflows?state=...&limit=1",
                            &format!("{base}/workflows?state={state}&limit=1"),
                            true,
                        )
                        .await;
                    // An unanswered request counts as "still active".
                    active |= list.is_none_or(|l| l.trim() != "[]");
                }
                if !active {
                    break;
                }
            }
            let figures = EndFigures {
                wall: t0.elapsed().as_secs_f64(),
                server_cpu: cpu_secs(server_pid).unwrap_or(0.0) - cpu0,
                hwm_kb: status_kb(server_pid, "VmHWM:").unwrap_or(0),
                rss_kb: status_kb(server_pid, "VmRSS:").unwrap_or(0),
            };
            let _ = figures_tx.send(figures);
            let grace = Duration::from_secs(30);
            tokio::time::sleep(grace.min(deadline.saturating_duration_since(Instant::now()))).await;
            let _ = give_up_tx.send(true);
        })
    };
    let samplers: Vec<_> = (0..o.samplers)
        .map(|k| tokio::spawn(sampler(ctx.clone(), 0x5eed + k as u64 * 7919)))
        .collect();
    let machines: Vec<_> = (1..=n)
        .map(|i| tokio::spawn(machine(ctx.clone(), i)))
        .collect();

    // Progress while the machines run.
    let progress = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut last = (usize::MAX, usize::MAX);
            while !ctx.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let now = (
                    ctx.tokens_seen.load(Ordering::Relaxed),
                    ctx.agents_done.load(Ordering::Relaxed),
                );
                if now != last {
                    say!("agents started {}, rebooted {} of {n}", now.0, now.1);
                    last = now;
                }
            }
        })
    };
    let mut refused = Vec::new();
    for r in requesters {
        refused.extend(r.await?);
    }
    let requests_secs = t0.elapsed().as_secs_f64();
    say!("{n} deploys requested in {requests_secs:.1} s; powering the machines on");
    let _ = power_on_tx.send(true);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    for (k, m) in machines.into_iter().enumerate() {
        let outcome = m.await.unwrap_or(Outcome::AgentExit(None));
        let key = match &outcome {
            Outcome::Done => "done".to_string(),
            Outcome::WorkflowEnded(state) => format!("workflow_{state}"),
            Outcome::NoToken => "no_token".to_string(),
            Outcome::AgentExit(c) => {
                format!("agent_exit_{}", c.map_or("none".into(), |c| c.to_string()))
            }
            Outcome::AgentTimeout => "agent_timeout".to_string(),
            Outcome::AgentOfferedAgain => "agent_offered_again".to_string(),
            Outcome::NoBootedUrl(_) => "no_booted_url".to_string(),
            Outcome::BootedRefused(_) => "booted_refused".to_string(),
            Outcome::GaveUp => "gave_up".to_string(),
        };
        if outcome != Outcome::Done && failures.len() < 20 {
            failures.push(format!("{}: {outcome:?}", name_of(k + 1)));
        }
        *outcomes.entry(key).or_default() += 1;
    }
    let agents_cpu = children_cpu_secs() - children_cpu0;
    let machines_secs = t0.elapsed().as_secs_f64();
    say!("every machine's firmware, agent and first boot done in {machines_secs:.1} s");
    let EndFigures {
        wall,
        server_cpu,
        hwm_kb,
        rss_kb,
    } = figures_rx.await?;
    // Every machine is done: no need to wait out the grace period.
    watcher.abort();
    let driver_cpu = self_cpu_secs() - self_cpu0;
    ctx.stop.store(true, Ordering::Relaxed);
    for s in samplers {
        let _ = s.await;
    }
    let _ = progress.await;
    say!("no workflow active after {wall:.1} s; reading back the workflows and events");

    // What the server recorded.
    let workflows = api.get("/workflows?limit=10000").await?;
    let workflows = workflows.as_array().cloned().unwrap_or_default();
    let mut events = Vec::new();
    let mut after = 0i64;
    for _ in 0..10_000 {
        let page = api
            .get(&format!("/events?after={after}&limit=1000"))
            .await?;
        let page = page.as_array().cloned().unwrap_or_default();
        let Some(last) = page.last().and_then(|e| e["id"].as_i64()) else {
            break;
        };
        after = last;
        events.extend(page);
    }
    let status = api.get("/status").await?;
    let machines = api.get("/machines?limit=10000").await?;
    let audit = fleet::audit(&workflows, &events);
    let active = machines
        .as_array()
        .map(|ms| ms.iter().filter(|m| m["state"] == "active").count())
        .unwrap_or(0);

    // Each workflow's time from request to end, by the server's clock.
    let mut per_wf = Latencies::default();
    let mut first_created: Option<chrono::DateTime<chrono::FixedOffset>> = None;
    let mut last_finished: Option<chrono::DateTime<chrono::FixedOffset>> = None;
    for wf in &workflows {
        let t = |k: &str| {
            wf[k]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        };
        if let (Some(c), Some(f)) = (t("created_at"), t("finished_at")) {
            per_wf.add_micros((f - c).num_microseconds().unwrap_or(0).max(0) as u64);
            first_created = Some(first_created.map_or(c, |x| x.min(c)));
            last_finished = Some(last_finished.map_or(f, |x| x.max(f)));
        }
    }
    let span = match (first_created, last_finished) {
        (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    };

    // The disks: every one holds the image.
    let disks_ok = {
        let dirs = dirs.clone();
        let image = image.clone();
        tokio::task::spawn_blocking(move || {
            (1..=n)
                .filter(|i| {
                    let disk = dirs.join(name_of(*i)).join("disks/vda");
                    let mut buf = vec![0u8; image.len()];
                    std::fs::File::open(&disk)
                        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
                        .is_ok()
                        && buf == image
                })
                .count()
        })
        .await?
    };

    // The agents' own view of the server.
    let mut agent_latency: BTreeMap<&'static str, Latencies> = BTreeMap::new();
    let mut unreadable = 0;
    for i in 1..=n {
        let text =
            std::fs::read_to_string(dirs.join(name_of(i)).join("requests.log")).unwrap_or_default();
        unreadable += fleet::add_request_log(&text, &mut agent_latency);
    }

    // Report.
    out("machines", n);
    out("max_running", o.max_running.unwrap_or(n));
    out("heartbeat_secs", o.heartbeat_secs);
    out("agent_priority", o.agent_priority);
    out("image_mib", o.image_mib);
    out("disk_mib", o.disk_mib);
    out("enroll_secs", format!("{enroll_secs:.1}"));
    out("deploy_wall_secs", format!("{wall:.1}"));
    out("workflow_span_secs", format!("{span:.1}"));
    if let Some(s) = per_wf.summary() {
        out(
            "workflow_secs",
            format!(
                "{:.1} {:.1} {:.1}",
                s.p50_ms / 1000.0,
                s.p99_ms / 1000.0,
                s.max_ms / 1000.0
            ),
        );
    }
    out("deploy_requests_secs", format!("{requests_secs:.1}"));
    out("deploys_refused", refused.len());
    for (k, r) in refused.iter().take(20).enumerate() {
        out(&format!("refused.{k}"), r);
    }
    out("workflows", audit.workflows);
    for (state, count) in &audit.by_state {
        out(&format!("workflows_{state}"), count);
    }
    out("steps", audit.steps);
    out("attempts", audit.attempts);
    out("retried_attempts", audit.retried_attempts);
    out("lost_steps", audit.lost.len());
    for (k, l) in audit.lost.iter().take(20).enumerate() {
        out(&format!("lost.{k}"), l);
    }
    out("peak_running", audit.peak_running);
    out("events", events.len());
    out(
        "events_dropped",
        status["events_dropped"].as_u64().unwrap_or(0),
    );
    out("machines_active", active);
    for (k, v) in &outcomes {
        out(&format!("machine_{k}"), v);
    }
    for (k, f) in failures.iter().enumerate() {
        out(&format!("failure.{k}"), f);
    }
    out("disks_ok", disks_ok);
    out("server_cpu_secs", format!("{server_cpu:.1}"));
    out(
        "server_peak_rss_mib",
        format!("{:.1}", hwm_kb as f64 / 1024.0),
    );
    out(
        "server_rss_end_mib",
        format!("{:.1}", rss_kb as f64 / 1024.0),
    );
    out("agents_cpu_secs", format!("{agents_cpu:.1}"));
    out("driver_cpu_secs", format!("{driver_cpu:.1}"));
    let fmt = |s: fleet::LatencySummary| {
        format!(
            "{} {} {:.1} {:.1} {:.1}",
            s.count, s.errors, s.p50_ms, s.p99_ms, s.max_ms
        )
    };
    let latencies = std::mem::take(&mut *ctx.latencies.lock().unwrap_or_else(|e| e.into_inner()));
    let mut api_all = Latencies::default();
    for (kind, l) in &latencies {
        if let Some(s) = l.summary() {
            out(&format!("latency.{kind}"), fmt(s));
        }
        if kind.starts_with("GET /api/") {
            api_all.merge(l.clone());
        }
    }
    if let Some(s) = api_all.summary() {
        out("latency.api_all", fmt(s));
    }
    let mut agents_all = Latencies::default();
    for (kind, l) in &agent_latency {
        if let Some(s) = l.summary() {
            out(&format!("agent_latency.{kind}"), fmt(s));
        }
        agents_all.merge(l.clone());
    }
    if let Some(s) = agents_all.summary() {
        out("agent_latency.all", fmt(s));
    }
    out("agent_log_unreadable_lines", unreadable);
    let log_text = std::fs::read_to_string(&server.log).unwrap_or_default();
    out(
        "server_log_errors",
        log_text.lines().filter(|l| l.contains("ERROR")).count(),
    );

    // The verdict.
    let mut problems = Vec::new();
    let succeeded = audit.by_state.get("succeeded").copied().unwrap_or(0);
    if audit.workflows != n || succeeded != n {
        problems.push(format!(
            "{succeeded} of {n} workflows succeeded ({:?})",
            audit.by_state
        ));
    }
    if !audit.lost.is_empty() {
        problems.push(format!("{} lost step(s)", audit.lost.len()));
    }
    if outcomes.get("done").copied().unwrap_or(0) != n {
        problems.push(format!("machines: {outcomes:?}"));
    }
    if disks_ok != n {
        problems.push(format!("{disks_ok} of {n} disks hold the image"));
    }
    if active != n {
        problems.push(format!("{active} of {n} machines are active"));
    }
    let limit = o.max_running.unwrap_or(n);
    if audit.peak_running > limit {
        problems.push(format!(
            "{} workflows ran at once, above the limit of {limit}",
            audit.peak_running
        ));
    }
    if !refused.is_empty() {
        problems.push(format!("{} deploy request(s) refused", refused.len()));
    }
    out("problems", problems.len());
    for p in &problems {
        say!("problem: {p}");
    }
    if !problems.is_empty() {
        say!("server log tail:\n{}", tail(&server.log, 3000));
    }
    drop(server);
    Ok(!o.check || problems.is_empty())
}
