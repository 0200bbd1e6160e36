//! The in-band deploy path without QEMU: a real `rackboot serve` on loopback,
//! the real `rackboot-agent` in simulation mode (its disks are files), the
//! real image catalog. The test plays the machine's firmware (fetches the boot
//! script, starts the agent with the token it carries) and its installed OS
//! (calls the first-boot URL cloud-init's seed gives it). Nothing on the
//! server side is simulated.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const MAC: &str = "52:54:00:aa:00:01";

struct Server {
    child: Child,
    url: String,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rackboot() -> &'static str {
    env!("CARGO_BIN_EXE_rackboot")
}

/// The agent binary of this workspace's target directory (built when missing).
fn agent_binary() -> PathBuf {
    let path = Path::new(rackboot()).with_file_name("rackboot-agent");
    if !path.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "rackboot-agent"])
            .status()
            .unwrap();
        assert!(status.success(), "building rackboot-agent");
    }
    path
}

impl Server {
    fn start(extra_config: &str) -> Server {
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
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(rackboot())
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            state,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.get_raw("/api/openapi.json").is_err() {
            assert!(
                Instant::now() < deadline,
                "server did not start:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.parent().unwrap().join("server.log")).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> (bool, String) {
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

    fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.cli(args);
        assert!(
            ok,
            "rackboot {args:?} failed:\n{text}\nserver log:\n{}",
            self.log()
        );
        text
    }

    fn get_raw(&self, path: &str) -> Result<String, String> {
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

    fn api(&self, path: &str) -> Value {
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
fn write_raw_image(path: &Path) -> Vec<u8> {
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
fn agent_token(server: &Server) -> String {
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

fn start_agent(server: &Server, token: &str, dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
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
        .unwrap()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_simulated_machine_is_deployed_and_undeployed() {
    let server = Server::start("");
    let work = server.state.parent().unwrap().to_path_buf();
    // A RAM-disk must exist for the boot script to offer it; its files are
    // only served, never run, here.
    let ramdisk = server.state.join("ramdisk");
    std::fs::create_dir_all(&ramdisk).unwrap();
    std::fs::write(ramdisk.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(ramdisk.join("initramfs.img"), b"initrd").unwrap();

    let raw = work.join("testos.raw");
    let data = write_raw_image(&raw);
    let out = server.ok(&[
        "image",
        "import",
        raw.to_str().unwrap(),
        "--name",
        "testos",
        "--os-family",
        "debian",
        "--cloud-init",
    ]);
    assert!(out.contains("image testos imported"), "{out}");

    server.ok(&["machine", "add", "sim1", "--mac", MAC]);
    let vars = work.join("sim1.json");
    std::fs::write(
        &vars,
        json!({
            "hostname": "sim1",
            "nics": [{"mac": MAC, "name": "eth0",
                "ipv4": {"mode": "static", "address": "192.0.2.50", "prefix": 24}}],
            "disk": {"rule": "smallest"},
        })
        .to_string(),
    )
    .unwrap();
    let key = work.join("key.pub");
    std::fs::write(&key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBkgzSpk7tYX8cR2r26NtsXwhWzA0MH0lqEr2lyQ9rB8 op@desk\n").unwrap();
    let out = server.ok(&[
        "deploy",
        "sim1",
        "--image",
        "testos",
        "--vars",
        vars.to_str().unwrap(),
        "--ssh-key",
        key.to_str().unwrap(),
        "--no-wait",
    ]);
    assert!(out.contains("queued"), "{out}");
    assert!(
        out.contains("disk"),
        "install-only keys are named as ignored: {out}"
    );

    // The machine powers on (by hand: no BMC), boots the RAM-disk, the agent runs.
    let agent_dir = work.join("agent");
    std::fs::create_dir_all(agent_dir.join("disks")).unwrap();
    let disk = agent_dir.join("disks/vda");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // Old contents the metadata erase must remove.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .write_all(b"\x55\xaa old partition table and file system")
        .unwrap();
    let token = agent_token(&server);
    let mut agent = start_agent(&server, &token, &agent_dir);

    // The agent reboots into the installed system (exit 10 in simulation).
    let status = wait_for("the agent's reboot", Duration::from_secs(120), || {
        agent.try_wait().unwrap()
    });
    assert_eq!(
        status.code(),
        Some(10),
        "agent log:\n{}\nserver log:\n{}",
        std::fs::read_to_string(agent_dir.join("agent.log")).unwrap_or_default(),
        server.log()
    );
    let written = std::fs::read(&disk).unwrap();
    assert_eq!(
        &written[..data.len()],
        &data[..],
        "the image is on the disk"
    );
    assert!(
        written[data.len()..].iter().all(|b| *b == 0),
        "the rest reads zero"
    );
    let interfaces =
        std::fs::read_to_string(agent_dir.join("root/etc/network/interfaces")).unwrap();
    assert!(interfaces.contains("192.0.2.50"), "{interfaces}");
    let user_data = std::fs::read_to_string(agent_dir.join("seed/user-data")).unwrap();
    assert!(user_data.contains("ssh-ed25519"), "{user_data}");

    // The installed system calls home (cloud-init's phone_home).
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

    let machine = wait_for("the machine to be active", Duration::from_secs(30), || {
        let m = server.api("/machines/sim1");
        (m["state"] == "active").then_some(m)
    });
    assert_eq!(machine["intent"]["kind"], "local_disk");
    assert_eq!(machine["facts"]["dmi"]["serial"], "SIM-0001");
    let wf = server.api("/workflows?machine=sim1&limit=1");
    let steps: Vec<(String, String)> = wf[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("boot-agent", "succeeded"),
        ("inspect", "succeeded"),
        ("erase", "succeeded"),
        ("build-raid", "skipped"),
        ("write-image", "succeeded"),
        ("configure", "succeeded"),
        ("boot-from-disk", "succeeded"),
        ("reboot", "succeeded"),
        ("verify-booted", "succeeded"),
    ];
    assert_eq!(
        steps,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "{wf:#}"
    );
    let timeline = server.ok(&["timeline", "sim1"]);
    for kind in [
        "workflow_queued",
        "step_started",
        "agent_token_issued",
        "agent_hello",
        "facts_updated",
        "step_succeeded",
        "machine_booted",
        "workflow_succeeded",
        "machine_state_changed",
    ] {
        assert!(
            timeline.contains(kind),
            "{kind} missing from the timeline:\n{timeline}"
        );
    }
    // The token stops working once the deploy is done.
    let status = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}/agent/v1/heartbeat", server.url))
        .args([
            "-d",
            "{\"instance\":\"00000000-0000-0000-0000-000000000000\"}",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "401");

    // A deployed image cannot be deleted while... it is not in use any more.
    let (ok, text) = server.cli(&["deploy", "sim1", "--image", "testos", "--no-wait"]);
    assert!(
        !ok && text.contains("active"),
        "an active machine is not deployed again: {text}"
    );

    // Undeploy: the agent boots again and erases the disk.
    server.ok(&["undeploy", "sim1", "--no-wait"]);
    let token = agent_token(&server);
    let mut agent = start_agent(&server, &token, &agent_dir);
    let status = wait_for("the agent's power-off", Duration::from_secs(120), || {
        agent.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(11), "{}", server.log());
    let machine = wait_for(
        "the machine to be available",
        Duration::from_secs(30),
        || {
            let m = server.api("/machines/sim1");
            (m["state"] == "available").then_some(m)
        },
    );
    assert_eq!(machine["state_reason"], Value::Null);
    let disk = std::fs::read(&disk).unwrap();
    assert!(
        disk[..1 << 20].iter().all(|b| *b == 0),
        "the first MiB is erased"
    );
    let transitions = server.api("/machines/sim1/transitions");
    let path: Vec<&str> = transitions
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to"].as_str().unwrap())
        .collect();
    assert_eq!(path, ["deploying", "active", "undeploying", "available"]);
}
