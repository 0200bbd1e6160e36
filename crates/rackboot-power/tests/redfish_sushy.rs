//! The Redfish driver and the controller against sushy-tools' Redfish emulator (fake
//! system driver, no libvirt), started by each test on a free loopback port, over HTTP
//! and HTTPS (self-signed certificate made with the openssl CLI), with basic auth from
//! an htpasswd file.
//!
//! Needs sushy-tools from PyPI in a venv; the emulator is found through
//! `$RACKBOOT_SUSHY_EMULATOR`, then `/opt/sushy-tools/bin/sushy-emulator` (the venv the
//! lab uses), then `/opt/rackboot-venv/bin/sushy-emulator`:
//!   /usr/bin/python3 -m venv --system-site-packages /opt/sushy-tools &&
//!   /opt/sushy-tools/bin/pip install sushy-tools
//!
//! sushy's fake driver applies power changes 1-11 s after the request, like real
//! hardware, which exercises verification by polling.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, free_tcp_port, require_tool, wait_until};
use rackboot_power::{
    BmcTarget, BootDevice, BootMode, BootPersistence, DriverOptions, PowerAction, PowerConfig,
    PowerController, PowerErrorKind, PowerState, driver_for, driver_with_options,
};

const USER: &str = "admin";
const PASSWORD: &str = "p4ss:w@rd";
const SYSTEM_1: &str = "27946b59-9e44-4fa7-8e91-000000000001";
const SYSTEM_2: &str = "27946b59-9e44-4fa7-8e91-000000000002";

fn sushy_path() -> String {
    std::env::var("RACKBOOT_SUSHY_EMULATOR").unwrap_or_else(|_| {
        [
            "/opt/sushy-tools/bin/sushy-emulator",
            "/opt/rackboot-venv/bin/sushy-emulator",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .unwrap_or("/opt/sushy-tools/bin/sushy-emulator")
        .to_string()
    })
}

struct Sushy {
    _proc: KillOnDrop,
    _dir: tempfile::TempDir,
    port: u16,
    https: bool,
}

impl Sushy {
    async fn start(https: bool, systems: usize) -> Sushy {
        let exe = sushy_path();
        require_tool(
            &exe,
            "/usr/bin/python3 -m venv --system-site-packages /opt/sushy-tools && /opt/sushy-tools/bin/pip install sushy-tools (or set RACKBOOT_SUSHY_EMULATOR)",
        );
        let python = PathBuf::from(&exe).with_file_name("python3");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();

        // sushy only accepts bcrypt entries; the venv has bcrypt (a sushy-tools dependency).
        let hash = Command::new(&python)
            .args([
                "-c",
                "import bcrypt,sys; print(bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt(4)).decode())",
                PASSWORD,
            ])
            .output()
            .expect("run the venv's python for bcrypt");
        assert!(
            hash.status.success(),
            "bcrypt: {}",
            String::from_utf8_lossy(&hash.stderr)
        );
        std::fs::write(
            d.join("htpasswd"),
            format!("{USER}:{}", String::from_utf8_lossy(&hash.stdout).trim()),
        )
        .unwrap();

        let systems: Vec<String> = [SYSTEM_1, SYSTEM_2][..systems]
            .iter()
            .enumerate()
            .map(|(i, uuid)| {
                format!(
                    "{{'uuid': '{uuid}', 'name': 'node-{}', 'power_state': 'Off', 'nics': [{{'mac': '52:54:00:aa:00:0{}', 'ip': '10.0.0.{}'}}]}}",
                    i + 1,
                    i + 1,
                    i + 1
                )
            })
            .collect();
        std::fs::write(
            d.join("sushy.conf"),
            format!(
                "SUSHY_EMULATOR_FAKE_DRIVER = True\nSUSHY_EMULATOR_STATE_DIR = '{}'\nSUSHY_EMULATOR_AUTH_FILE = '{}'\nSUSHY_EMULATOR_FAKE_SYSTEMS = [{}]\n",
                d.join("state").display(),
                d.join("htpasswd").display(),
                systems.join(", ")
            ),
        )
        .unwrap();

        let port = free_tcp_port();
        let log = std::fs::File::create(d.join("sushy.log")).unwrap();
        let mut cmd = Command::new(&exe);
        cmd.arg("--config")
            .arg(d.join("sushy.conf"))
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if https {
            require_tool("openssl", "apt-get install -y openssl");
            let status = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .arg("-keyout")
                .arg(d.join("key.pem"))
                .arg("-out")
                .arg(d.join("cert.pem"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "openssl could not make a certificate");
            cmd.arg("--ssl-certificate")
                .arg(d.join("cert.pem"))
                .arg("--ssl-key")
                .arg(d.join("key.pem"));
        }
        let mut proc = KillOnDrop {
            child: cmd.spawn().expect("start sushy-emulator"),
            name: "sushy-emulator",
        };
        let client = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let scheme = if https { "https" } else { "http" };
        let root = format!("{scheme}://127.0.0.1:{port}/redfish/v1/");
        let log_path = d.join("sushy.log");
        wait_until("sushy-emulator", Duration::from_secs(30), || {
            proc.assert_running(&log_path);
            let client = client.clone();
            let root = root.clone();
            async move {
                client
                    .get(&root)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        Sushy {
            _proc: proc,
            _dir: dir,
            port,
            https,
        }
    }

    fn target(&self, password: &str) -> BmcTarget {
        let scheme = if self.https {
            "redfish+https"
        } else {
            "redfish"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
            .parse::<BmcTarget>()
            .unwrap()
            .with_username(USER)
            .with_password(password)
    }

    /// The system as sushy reports it, read without our driver.
    async fn system(&self, uuid: &str) -> serde_json::Value {
        let scheme = if self.https { "https" } else { "http" };
        reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .unwrap()
            .get(format!(
                "{scheme}://127.0.0.1:{}/redfish/v1/Systems/{uuid}",
                self.port
            ))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// sushy applies power changes up to 11 s late.
fn sushy_config() -> PowerConfig {
    PowerConfig {
        verify_timeout: Duration::from_secs(30),
        soft_off_timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(500),
        call_timeout: Duration::from_secs(5),
        ..PowerConfig::default()
    }
}

#[tokio::test]
async fn power_on_cycle_off_verified_over_http() {
    if !rackboot_testenv::programs(&[&sushy_path()]) {
        return;
    }
    let sushy = Sushy::start(false, 1).await;
    let target = sushy.target(PASSWORD);
    let driver = driver_for(&target).unwrap();
    let info = driver.ping().await.unwrap();
    assert_eq!(
        (info.protocol.as_str(), info.vendor.as_deref(), info.power),
        ("redfish", Some("Sushy Emulator"), Some(PowerState::Off))
    );
    assert_eq!(driver.power_state().await.unwrap(), PowerState::Off);
    driver.close().await;

    let controller = PowerController::new(sushy_config());
    let on = controller.power(&target, PowerAction::On).await.unwrap();
    assert_eq!(
        (on.sent, on.final_state),
        (Some(PowerAction::On), Some(PowerState::On))
    );
    assert_eq!(sushy.system(SYSTEM_1).await["PowerState"], "On");

    let cycle = controller.power(&target, PowerAction::Cycle).await.unwrap();
    assert_eq!(cycle.final_state, Some(PowerState::On));
    assert_eq!(sushy.system(SYSTEM_1).await["PowerState"], "On");

    let already = controller.power(&target, PowerAction::On).await.unwrap();
    assert_eq!((already.sent, already.attempts), (None, 0));

    let off = controller
        .power(&target, PowerAction::SoftOff)
        .await
        .unwrap();
    assert_eq!(off.final_state, Some(PowerState::Off));
    assert_eq!(sushy.system(SYSTEM_1).await["PowerState"], "Off");
    assert_eq!(
        controller.power_state(&target).await.unwrap(),
        PowerState::Off
    );
}

#[tokio::test]
async fn boot_override_set_and_read_back() {
    if !rackboot_testenv::programs(&[&sushy_path()]) {
        return;
    }
    let sushy = Sushy::start(false, 1).await;
    let target = sushy.target(PASSWORD);
    let controller = PowerController::new(sushy_config());
    controller
        .set_boot_device(
            &target,
            BootDevice::Pxe,
            BootPersistence::Once,
            Some(BootMode::Legacy),
        )
        .await
        .unwrap();
    let boot = &sushy.system(SYSTEM_1).await["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Pxe");
    assert_eq!(boot["BootSourceOverrideMode"], "Legacy");

    controller
        .set_boot_device(
            &target,
            BootDevice::Disk,
            BootPersistence::Persistent,
            Some(BootMode::Uefi),
        )
        .await
        .unwrap();
    let boot = &sushy.system(SYSTEM_1).await["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Hdd");
    assert_eq!(boot["BootSourceOverrideMode"], "UEFI");
    assert_eq!(boot["BootSourceOverrideEnabled"], "Continuous");
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error() {
    if !rackboot_testenv::programs(&[&sushy_path()]) {
        return;
    }
    let sushy = Sushy::start(false, 1).await;
    let target = sushy.target("not-the-password");
    let err = driver_for(&target)
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), PowerErrorKind::Authentication, "{err}");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains(&format!("redfish://admin:***@127.0.0.1:{}", sushy.port)),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");

    // The controller does not retry it.
    let start = Instant::now();
    let failure = PowerController::new(sushy_config())
        .power(&target, PowerAction::On)
        .await
        .unwrap_err();
    assert_eq!(failure.error.kind(), PowerErrorKind::Authentication);
    assert_eq!(failure.attempts, 0);
    // Seconds, not a hang (generous for a loaded machine).
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(sushy.system(SYSTEM_1).await["PowerState"], "Off");
}

#[tokio::test]
async fn https_self_signed_needs_insecure_tls() {
    if !rackboot_testenv::programs(&[&sushy_path()]) {
        return;
    }
    let sushy = Sushy::start(true, 1).await;
    let strict = sushy.target(PASSWORD);
    let err = driver_for(&strict).unwrap().ping().await.unwrap_err();
    assert_eq!(err.kind(), PowerErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("insecure_tls"), "{err}");
    assert!(!err.is_transient());

    let lax = strict.with_insecure_tls(true);
    let driver = driver_for(&lax).unwrap();
    assert_eq!(driver.power_state().await.unwrap(), PowerState::Off);
    let info = driver.ping().await.unwrap();
    assert_eq!(info.vendor.as_deref(), Some("Sushy Emulator"));
}

#[tokio::test]
async fn several_systems_need_a_path_in_the_url() {
    if !rackboot_testenv::programs(&[&sushy_path()]) {
        return;
    }
    let sushy = Sushy::start(false, 2).await;
    let err = driver_for(&sushy.target(PASSWORD))
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), PowerErrorKind::Unsupported);
    assert!(err.to_string().contains("2 systems"), "{err}");
    assert!(err.to_string().contains(SYSTEM_2), "{err}");

    let with_path: BmcTarget = format!(
        "redfish://{USER}:{}@127.0.0.1:{}/redfish/v1/Systems/{SYSTEM_2}",
        "p4ss%3Aw%40rd", sushy.port
    )
    .parse()
    .unwrap();
    assert_eq!(with_path.password, PASSWORD);
    let controller = PowerController::new(sushy_config());
    controller.power(&with_path, PowerAction::On).await.unwrap();
    assert_eq!(sushy.system(SYSTEM_2).await["PowerState"], "On");
    assert_eq!(sushy.system(SYSTEM_1).await["PowerState"], "Off");
}

#[tokio::test]
async fn dead_bmcs_fail_within_seconds() {
    // Nothing listens: refused at once; transient, so the controller retries, briefly.
    let closed = free_tcp_port();
    let target: BmcTarget = format!("redfish://a:b@127.0.0.1:{closed}").parse().unwrap();
    let start = Instant::now();
    let err = driver_for(&target)
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), PowerErrorKind::Unreachable, "{err}");
    assert!(err.is_transient());
    // Refused at once; the bounds tell "seconds" from "hangs" on a loaded machine.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let start = Instant::now();
    let failure = PowerController::new(PowerConfig::default())
        .power(&target, PowerAction::On)
        .await
        .unwrap_err();
    assert_eq!(failure.error.kind(), PowerErrorKind::Unreachable);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );

    // Accepts connections (kernel backlog) but never answers: the request timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let target: BmcTarget = format!("redfish://a:b@127.0.0.1:{port}").parse().unwrap();
    let options = DriverOptions {
        request_timeout: Duration::from_secs(1),
    };
    let start = Instant::now();
    let err = driver_with_options(&target, &options)
        .unwrap()
        .power_state()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), PowerErrorKind::Timeout, "{err}");
    // Seconds, not a hang (generous for a loaded machine).
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
