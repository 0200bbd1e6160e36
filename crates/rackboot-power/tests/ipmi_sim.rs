//! Both IPMI backends (`ipmitool://`, and `ipmi://` = the native rackboot-ipmi client)
//! and the controller against OpenIPMI's `ipmi_sim`, started by each test on a free loopback UDP port with a chassis-control script that keeps the
//! power state in a file.
//!
//! Needs: apt-get install -y openipmi ipmitool

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, free_udp_port, require_tool, wait_until};
use rackboot_power::{
    BmcTarget, BootDevice, BootDeviceReading, BootMode, BootPersistence, PowerAction, PowerConfig,
    PowerController, PowerErrorKind, PowerState, driver_for,
};

const USER: &str = "admin";
/// Every test runs against both backends.
const SCHEMES: [&str; 2] = ["ipmitool", "ipmi"];
const PASSWORD: &str = "s3cr3t-pw!";

/// Power is a file holding 0 or 1; "shutdown" (soft off) powers off; reset changes
/// nothing; the boot device ipmi_sim hands over is kept in a second file.
const CHASSIS_SCRIPT: &str = r#"#!/bin/sh
dir=$(dirname "$0")
state="$dir/power"
shift
op=$1
shift
case $op in
get)
  for p in "$@"; do
    case $p in
      power) echo "power:$(cat "$state" 2>/dev/null || echo 0)" ;;
      boot) echo "boot:$(cat "$state.boot" 2>/dev/null || echo default)" ;;
    esac
  done ;;
set)
  while [ $# -ge 2 ]; do
    case $1 in
      power) echo "$2" > "$state" ;;
      shutdown) echo 0 > "$state" ;;
      reset) ;;
      boot) echo "$2" > "$state.boot" ;;
    esac
    shift 2
  done ;;
esac
"#;

struct IpmiSim {
    _proc: KillOnDrop,
    dir: tempfile::TempDir,
    port: u16,
}

impl IpmiSim {
    async fn start() -> IpmiSim {
        require_tool("ipmi_sim", "apt-get install -y openipmi");
        require_tool("ipmitool", "apt-get install -y ipmitool");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_udp_port();
        let script = d.join("chassis.sh");
        std::fs::write(&script, CHASSIS_SCRIPT).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("power"), "0\n").unwrap();
        std::fs::write(
            d.join("lan.conf"),
            format!(
                r#"name "rbpower{port}"
set_working_mc 0x20
startlan 1
  addr 127.0.0.1 {port}
  priv_limit admin
  allowed_auths_callback none md2 md5 straight
  allowed_auths_user none md2 md5 straight
  allowed_auths_operator none md2 md5 straight
  allowed_auths_admin none md2 md5 straight
  guid a123456789abcdefa123456789abcdef
endlan
chassis_control "{} 0x20"
user 2 true "{USER}" "{PASSWORD}" admin 10 none md2 md5 straight
"#,
                script.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("sim.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nsel_enable 0x20 1000 0x0a\nmc_enable 0x20\n",
        )
        .unwrap();
        std::fs::create_dir(d.join("state")).unwrap();
        let log_path = d.join("ipmi_sim.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut proc = KillOnDrop {
            child: Command::new("ipmi_sim")
                .arg("-c")
                .arg(d.join("lan.conf"))
                .arg("-f")
                .arg(d.join("sim.emu"))
                .arg("-s")
                .arg(d.join("state"))
                .arg("-n")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start ipmi_sim"),
            name: "ipmi_sim",
        };
        let target = target_for("ipmitool", port, PASSWORD);
        wait_until("ipmi_sim", Duration::from_secs(20), || {
            proc.assert_running(&log_path);
            let target = target.clone();
            async move { driver_for(&target).unwrap().power_state().await.is_ok() }
        })
        .await;
        IpmiSim {
            _proc: proc,
            dir,
            port,
        }
    }

    fn target(&self, scheme: &str, password: &str) -> BmcTarget {
        target_for(scheme, self.port, password)
    }

    fn power_file(&self) -> PathBuf {
        self.dir.path().join("power")
    }

    fn power(&self) -> String {
        std::fs::read_to_string(self.power_file())
            .unwrap()
            .trim()
            .to_string()
    }

    /// Boot flags as ipmitool reads them back (parameter 5), independent of our driver.
    fn boot_flags(&self) -> String {
        let out = Command::new("ipmitool")
            .args([
                "-I",
                "lanplus",
                "-H",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
            ])
            .args([
                "-U",
                USER,
                "-E",
                "-C",
                "3",
                "chassis",
                "bootparam",
                "get",
                "5",
            ])
            .env("IPMI_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn sim_config() -> PowerConfig {
    PowerConfig {
        verify_timeout: Duration::from_secs(15),
        soft_off_timeout: Duration::from_secs(15),
        poll_interval: Duration::from_millis(300),
        call_timeout: Duration::from_secs(8),
        ..PowerConfig::default()
    }
}

fn target_for(scheme: &str, port: u16, password: &str) -> BmcTarget {
    format!("{scheme}://127.0.0.1:{port}")
        .parse::<BmcTarget>()
        .unwrap()
        .with_username(USER)
        .with_password(password)
}

#[tokio::test]
async fn power_actions_verified_against_ipmi_sim() {
    if !rackboot_testenv::programs(&["ipmi_sim", "ipmitool"]) {
        return;
    }
    let sim = IpmiSim::start().await;
    for scheme in SCHEMES {
        std::fs::write(sim.power_file(), "0\n").unwrap();
        let target = sim.target(scheme, PASSWORD);
        let driver = driver_for(&target).unwrap();
        assert_eq!(
            driver.power_state().await.unwrap(),
            PowerState::Off,
            "{scheme}"
        );
        let info = driver.ping().await.unwrap();
        assert_eq!(info.protocol, "ipmi");
        assert_eq!(
            info.vendor.as_deref(),
            Some("MontaVista Software, Inc."),
            "{scheme}"
        );
        assert_eq!(info.firmware.as_deref(), Some("9.08"), "{scheme}");
        driver.close().await;

        let controller = PowerController::new(sim_config());
        let on = controller.power(&target, PowerAction::On).await.unwrap();
        assert_eq!(
            (on.sent, on.final_state),
            (Some(PowerAction::On), Some(PowerState::On))
        );
        assert_eq!(sim.power(), "1", "{scheme}");

        // ipmi_sim powers off at once and back on about a second later.
        let cycle = controller.power(&target, PowerAction::Cycle).await.unwrap();
        assert_eq!(cycle.final_state, Some(PowerState::On), "{scheme}");
        assert_eq!(sim.power(), "1", "{scheme}");

        let reset = controller.power(&target, PowerAction::Reset).await.unwrap();
        assert_eq!(reset.sent, Some(PowerAction::Reset), "{scheme}");

        let soft = controller
            .power(&target, PowerAction::SoftOff)
            .await
            .unwrap();
        assert_eq!(soft.final_state, Some(PowerState::Off), "{scheme}");
        assert_eq!(sim.power(), "0", "{scheme}");

        std::fs::write(sim.power_file(), "1\n").unwrap();
        let off = controller.power(&target, PowerAction::Off).await.unwrap();
        assert_eq!(
            (off.initial_state, off.final_state),
            (Some(PowerState::On), Some(PowerState::Off)),
            "{scheme}"
        );
        assert_eq!(sim.power(), "0", "{scheme}");
    }
}

#[tokio::test]
async fn boot_device_set_and_read_back() {
    if !rackboot_testenv::programs(&["ipmi_sim", "ipmitool"]) {
        return;
    }
    let sim = IpmiSim::start().await;
    let controller = PowerController::new(sim_config());
    for scheme in SCHEMES {
        let target = sim.target(scheme, PASSWORD);
        controller
            .set_boot_device(
                &target,
                BootDevice::Pxe,
                BootPersistence::Once,
                Some(BootMode::Uefi),
            )
            .await
            .unwrap();
        let flags = sim.boot_flags();
        assert!(flags.contains("Force PXE"), "{scheme}: {flags}");
        // Both backends read the override back themselves.
        let reading = driver_for(&target).unwrap().boot_device().await.unwrap();
        assert_eq!(
            reading,
            BootDeviceReading::Device(BootDevice::Pxe),
            "{scheme}"
        );
        controller
            .set_boot_device(&target, BootDevice::Disk, BootPersistence::Persistent, None)
            .await
            .unwrap();
        let flags = sim.boot_flags();
        assert!(
            flags.contains("Force Boot from default Hard-Drive"),
            "{scheme}: {flags}"
        );
    }
}

#[tokio::test]
async fn wrong_password_and_dead_port() {
    if !rackboot_testenv::programs(&["ipmi_sim", "ipmitool"]) {
        return;
    }
    let sim = IpmiSim::start().await;
    for scheme in SCHEMES {
        let err = driver_for(&sim.target(scheme, "wrong-password"))
            .unwrap()
            .power_state()
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            PowerErrorKind::Authentication,
            "{scheme}: {err}"
        );
        assert!(!err.to_string().contains("wrong-password"), "{err}");

        let bad_user = sim.target(scheme, PASSWORD).with_username("nobody");
        let err = driver_for(&bad_user).unwrap().ping().await.unwrap_err();
        assert_eq!(
            err.kind(),
            PowerErrorKind::Authentication,
            "{scheme}: {err}"
        );

        // ipmi_sim has no cipher suite 17.
        let cs17: BmcTarget = format!(
            "{scheme}://{USER}:{PASSWORD}@127.0.0.1:{}?cipher=17",
            sim.port
        )
        .parse()
        .unwrap();
        let err = driver_for(&cs17).unwrap().power_state().await.unwrap_err();
        assert_eq!(err.kind(), PowerErrorKind::Unsupported, "{scheme}: {err}");

        let dead: BmcTarget = format!("{scheme}://{USER}:x@127.0.0.1:{}", free_udp_port())
            .parse()
            .unwrap();
        let start = Instant::now();
        let err = driver_for(&dead).unwrap().power_state().await.unwrap_err();
        assert_eq!(err.kind(), PowerErrorKind::Unreachable, "{scheme}: {err}");
        // 4 x 1 s attempts normally; the bound only catches a hang.
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{scheme}: {:?}",
            start.elapsed()
        );
    }
}
