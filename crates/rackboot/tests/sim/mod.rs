//! Harness of the simulated deploy tests: a real `rackboot serve` on
//! loopback and the real `rackboot-agent` in simulation mode.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const MAC: &str = "52:54:00:aa:00:01";

pub struct Server {
    child: Child,
    pub url: String,
    pub state: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn rackboot() -> &'static str {
    env!("CARGO_BIN_EXE_rackboot")
}

/// The agent binary of this workspace's target directory, built (or brought
/// up to date) once per test process: `cargo test -p rackboot` alone would
/// run a stale one.
pub fn agent_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "rackboot-agent"])
                .status()
                .unwrap();
            assert!(status.success(), "building rackboot-agent");
            Path::new(rackboot()).with_file_name("rackboot-agent")
        })
        .clone()
}

impl Server {
    pub fn start(extra_config: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let port = free_port();
        let config = dir.path().join("rackboot.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {state:?}\nserver_ip = \"127.0.0.1\"\n[listen]\nhttp = \"127.0.0.1:{port}\"\ntftp = \"off\"\n[engine]\nheartbeat_secs = 1\n{extra_config}"
            ),
        )
        .unwrap();
        let child = spawn_server(&config, dir.path());
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            state,
            config,
            _dir: dir,
        };
        server.wait_up();
        server
    }

    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get_raw("/api/openapi.json").is_err() {
            assert!(
                Instant::now() < deadline,
                "server did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// kill -9, as a crash or an OOM kill would.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts the server again on the same config and state.
    pub fn restart(&mut self) {
        self.child = spawn_server(&self.config, self.config.parent().unwrap());
        self.wait_up();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.parent().unwrap().join("server.log")).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(rackboot())
            .args(args)
            .env("RACKBOOT_URL", &self.url)
            .env("RACKBOOT_STATE_DIR", &self.state)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.cli(args);
        assert!(
            ok,
            "rackboot {args:?} failed:\n{text}\nserver log:\n{}",
            self.log()
        );
        text
    }

    pub fn get_raw(&self, path: &str) -> Result<String, String> {
        let out = Command::new("curl")
            .args(["-sS", "-f", "--max-time", "5"])
            .arg(format!("{}{path}", self.url))
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn api(&self, path: &str) -> Value {
        let token = std::fs::read_to_string(self.state.join("admin-token")).unwrap();
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "-H"])
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg(format!("{}/api/v1{path}", self.url))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }
}

/// A raw disk image with recognisable content and runs of zeros.
pub fn write_raw_image(path: &Path) -> Vec<u8> {
    let mut data = vec![0u8; 24 << 20];
    for (i, chunk) in data.chunks_mut(1 << 20).enumerate() {
        if i % 3 != 1 {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = ((i * 7 + j * 13) % 251) as u8;
            }
        }
    }
    std::fs::write(path, &data).unwrap();
    data
}

/// Fetches the machine's boot script until it carries an agent token (the
/// deploy's boot_agent step sets the agent boot), as iPXE would on its boot.
pub fn agent_token(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let script = server
            .get_raw(&format!("/boot/ipxe/{}", MAC.replace(':', "-")))
            .unwrap_or_default();
        if let Some(word) = script
            .split_whitespace()
            .find(|w| w.starts_with("rackboot.token="))
        {
            assert!(script.contains("/ramdisk/vmlinuz"), "{script}");
            return word.trim_start_matches("rackboot.token=").to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no agent boot script:\n{script}\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A simulated agent's process, killed when dropped: a test that fails
/// half-way must not leave its agent retrying against a server that is gone.
pub struct AgentProcess(Child);

impl std::ops::Deref for AgentProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for AgentProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_agent(server: &Server, token: &str, dir: &Path) -> AgentProcess {
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    AgentProcess(
        Command::new(agent_binary())
            .args(["--simulate"])
            .arg(dir)
            .args([
                "--url",
                &server.url,
                "--token",
                token,
                "--mac",
                MAC,
                "--serial",
                "SIM-0001",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn spawn_server(config: &Path, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    Command::new(rackboot())
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// A stand-in RAM-disk: the boot script only needs its files to exist (they
/// are served, never run, in simulation).
pub fn fake_ramdisk(server: &Server) {
    let ramdisk = server.state.join("ramdisk");
    std::fs::create_dir_all(&ramdisk).unwrap();
    std::fs::write(ramdisk.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(ramdisk.join("initramfs.img"), b"initrd").unwrap();
}

/// `size_mib` of data that does not compress (so writing it takes the
/// simulated disk's time), imported as `name` (debian, with cloud-init).
pub fn import_incompressible(server: &Server, name: &str, size_mib: usize) -> Vec<u8> {
    let mut data = vec![0u8; size_mib << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let path = server.state.parent().unwrap().join(format!("{name}.raw"));
    std::fs::write(&path, &data).unwrap();
    server.ok(&[
        "image",
        "import",
        path.to_str().unwrap(),
        "--name",
        name,
        "--os-family",
        "debian",
        "--cloud-init",
    ]);
    data
}

/// The machine's files: `disks/vda` (blank, `disk_mib`), and where the agent
/// writes the installed system's root and seed.
pub struct SimMachine {
    pub name: String,
    pub dir: PathBuf,
    pub disk: PathBuf,
}

/// Enrolls `name` with [`MAC`] and makes its simulated disk.
pub fn sim_machine(server: &Server, name: &str, disk_mib: u64, bmc: Option<&str>) -> SimMachine {
    let dir = server.state.parent().unwrap().join(format!("{name}-agent"));
    std::fs::create_dir_all(dir.join("disks")).unwrap();
    let disk = dir.join("disks/vda");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(disk_mib << 20)
        .unwrap();
    let mut args = vec!["machine", "add", name, "--mac", MAC];
    if let Some(url) = bmc {
        args.extend(["--bmc", url]);
    }
    server.ok(&args);
    SimMachine {
        name: name.to_string(),
        dir,
        disk,
    }
}

/// A vars file: host name and one static NIC.
pub fn vars_file(server: &Server, host: &str) -> String {
    let path = server.state.parent().unwrap().join(format!("{host}.json"));
    std::fs::write(
        &path,
        serde_json::json!({
            "hostname": host,
            "nics": [{"mac": MAC, "name": "eth0",
                "ipv4": {"mode": "static", "address": "192.0.2.50", "prefix": 24}}],
        })
        .to_string(),
    )
    .unwrap();
    path.display().to_string()
}

/// Starts a simulated agent with a disk speed, as the RAM-disk's init would.
pub fn start_paced_agent(server: &Server, token: &str, m: &SimMachine, mibps: u64) -> AgentProcess {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.dir.join("agent.log"))
        .unwrap();
    AgentProcess(
        Command::new(agent_binary())
            .args(["--simulate"])
            .arg(&m.dir)
            .args([
                "--url",
                &server.url,
                "--token",
                token,
                "--mac",
                MAC,
                "--serial",
                "SIM-0001",
                "--disk-mibps",
                &mibps.to_string(),
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// The machine's newest workflow.
pub fn latest_workflow(server: &Server, machine: &str) -> Value {
    server.api(&format!("/workflows?machine={machine}&limit=1"))[0].clone()
}

/// A step of a workflow, by name.
pub fn step<'a>(wf: &'a Value, name: &str) -> &'a Value {
    wf["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

/// Waits until the step runs and has reported some progress.
pub fn wait_step_progress(server: &Server, machine: &str, name: &str) {
    wait_for(
        &format!("{name} to make progress"),
        Duration::from_secs(60),
        || {
            let wf = latest_workflow(server, machine);
            (step(&wf, name)["state"] == "running"
                && wf["progress"][name]["done"].as_u64() > Some(0))
            .then_some(())
        },
    );
}

/// The first-boot URL in the seed the agent wrote, called as cloud-init would.
pub fn call_booted(m: &SimMachine) {
    let user_data = std::fs::read_to_string(m.dir.join("seed/user-data")).unwrap();
    let url = user_data
        .split_whitespace()
        .find(|w| w.contains("/booted/"))
        .map(|w| w.trim_matches(|c| c == '"' || c == '\'' || c == ','))
        .expect("phone_home URL in user-data")
        .to_string();
    let out = Command::new("curl")
        .args(["-sS", "-f", "-X", "POST", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for the machine's newest workflow to end and returns it.
pub fn wait_workflow_end(server: &Server, machine: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let wf = latest_workflow(server, machine);
        if !matches!(wf["state"].as_str(), Some("queued" | "running") | None) {
            return wf;
        }
        if Instant::now() > deadline {
            let agent_log = std::fs::read_to_string(
                server
                    .state
                    .parent()
                    .unwrap()
                    .join(format!("{machine}-agent/agent.log")),
            )
            .unwrap_or_default();
            panic!(
                "{machine}'s workflow did not end in {timeout:?}:\n{wf:#}\nagent log:\n{agent_log}\nserver log:\n{}",
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The fleet simulator of crate rackboot-bench (`fleet-sim`), built (or
/// brought up to date) once per test process, like [`agent_binary`].
pub fn fleet_sim_binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "rackboot-bench", "--bin", "fleet-sim"])
                .status()
                .unwrap();
            assert!(status.success(), "building fleet-sim");
            Path::new(rackboot()).with_file_name("fleet-sim")
        })
        .clone()
}

/// The `key=value` lines a bench program printed.
pub fn key_values(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
