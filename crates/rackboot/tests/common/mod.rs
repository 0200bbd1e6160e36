//! The rack the end-to-end tests share: a lab namespace with QEMU machines
//! (optionally behind emulated BMCs) and `rackboot serve` on its bridge.

#![allow(dead_code)]

pub mod deploy;
pub mod diskvm;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rackboot_lab::{BmcKind, Lab, LabConfig, MachineSpec};
use tokio::sync::Mutex;

/// TCG machines are CPU-bound: one test's machines at a time on a 2-core box.
pub static VMS: Mutex<()> = Mutex::const_new(());
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
pub const API: &str = "http://10.77.0.1:8080";
pub const CMDLINE: &str = "console=ttyS0 quiet panic=-1 rackboot.machine={{ machine.name }}";

pub struct Rack {
    pub lab: Lab,
    pub state_dir: PathBuf,
    /// The API's base URL ([`API`], or the bridge's IPv6 address on an IPv6-only lab).
    pub api: String,
    _dir: tempfile::TempDir,
}

impl Rack {
    /// A namespace with `machines`, rackboot serving on its bridge with `serve_args`
    /// appended, and a `linux` profile (host kernel + marker initramfs) ready.
    pub async fn start(machines: Vec<MachineSpec>, serve_args: &[&str]) -> Rack {
        Rack::start_with_bmc(machines, None, serve_args).await
    }

    /// As [`Rack::start`], each machine behind its own emulated BMC when `bmc`
    /// is set (machines then start powered off).
    pub async fn start_with_bmc(
        machines: Vec<MachineSpec>,
        bmc: Option<BmcKind>,
        serve_args: &[&str],
    ) -> Rack {
        Rack::start_lab(machines, bmc, serve_args, |c| c).await
    }

    /// As [`Rack::start_with_bmc`], with the lab's network shaped by `network`
    /// (e.g. `LabConfig::ipv6_only`). On an IPv6-only network rackboot listens
    /// on the bridge's IPv6 address.
    pub async fn start_lab(
        machines: Vec<MachineSpec>,
        bmc: Option<BmcKind>,
        serve_args: &[&str],
        network: impl FnOnce(LabConfig) -> LabConfig,
    ) -> Rack {
        let dir = tempfile::tempdir_in(lab_parent()).unwrap();
        let assets = dir.path().join("assets");
        std::fs::create_dir_all(&assets).unwrap();
        std::fs::copy(rackboot_lab::host_kernel().unwrap(), assets.join("vmlinuz")).unwrap();
        rackboot_lab::build_marker_initramfs(&assets.join("marker.cpio.gz")).unwrap();
        let state_dir = dir.path().join("state");
        let mut config = network(LabConfig::new(dir.path(), machines));
        config.bmc = bmc;
        let (api_listen, api) = match (config.ipv4, config.bridge_addr6) {
            (false, Some((ip6, _))) => (format!("[{ip6}]:8080"), format!("http://[{ip6}]:8080")),
            _ => ("10.77.0.1:8080".to_string(), API.to_string()),
        };
        let mut lab = Lab::create(config).unwrap();
        let mut args: Vec<String> = [
            "serve",
            "--interface",
            "br0",
            "--state-dir",
            state_dir.to_str().unwrap(),
            "--asset-dir",
            assets.to_str().unwrap(),
            "--api-listen",
            api_listen.as_str(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(serve_args.iter().map(|s| s.to_string()));
        lab.spawn_server(env!("CARGO_BIN_EXE_rackboot"), &args)
            .unwrap();
        let rack = Rack {
            lab,
            state_dir,
            api,
            _dir: dir,
        };
        rack.wait_for_api().await;
        rack.cli(&[
            "profile",
            "add",
            "linux",
            "--kernel",
            "vmlinuz",
            "--initrd",
            "marker.cpio.gz",
            "--cmdline",
            CMDLINE,
        ]);
        rack
    }

    /// The rack's temporary directory (assets, state, serial logs).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub async fn wait_for_api(&self) {
        for _ in 0..150 {
            if self.try_cli(&["status"]).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "rackboot did not come up; server log:\n{}",
            self.server_log()
        );
    }

    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .lab
            .netns()
            .command(env!("CARGO_BIN_EXE_rackboot"))
            .args(args)
            .env("RACKBOOT_URL", &self.api)
            .env("RACKBOOT_STATE_DIR", &self.state_dir)
            .output()
            .expect("run rackboot CLI");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|e| {
            panic!(
                "rackboot {}: {e}\nserver log:\n{}",
                args.join(" "),
                self.server_log()
            )
        })
    }

    /// The value of a counter on the server's /metrics (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        let out = self
            .lab
            .netns()
            .command("curl")
            .args(["-sf", &format!("{}/metrics", self.api)])
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The sum of a metric's series whose labels contain `label` (e.g.
    /// `file="http_loader"`); 0 when absent.
    pub fn metric_labelled(&self, name: &str, label: &str) -> f64 {
        let out = self
            .lab
            .netns()
            .command("curl")
            .args(["-sf", &format!("{}/metrics", self.api)])
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn server_log(&self) -> String {
        self.lab.server().map(|s| s.output()).unwrap_or_default()
    }

    pub fn enroll(&self, index: usize, intent: &[&str]) {
        let m = self.lab.machine(index);
        self.cli(&["machine", "add", m.name(), "--mac", &m.mac()]);
        let mut args = vec!["machine", "set-boot", m.name()];
        args.extend_from_slice(intent);
        self.cli(&args);
    }

    pub async fn boot_and_wait(&mut self, index: usize, pattern: &str) -> String {
        self.lab.start_machine(index).unwrap();
        let m = self.lab.machine(index);
        match m.wait_for_serial(pattern, BOOT_TIMEOUT).await {
            Ok(line) => line,
            Err(e) => panic!("{e}\nserver log:\n{}", self.server_log()),
        }
    }

    pub fn timeline(&self, index: usize) -> String {
        self.cli(&["timeline", self.lab.machine(index).name()])
    }
}

pub fn assert_timeline_has(timeline: &str, kinds: &[&str]) {
    for kind in kinds {
        assert!(
            timeline.contains(kind),
            "timeline lacks {kind}:\n{timeline}"
        );
    }
}

/// Redfish labs run QEMU as `nobody` under a session libvirtd, so the lab
/// directory's parents must be world-traversable; /tmp is, and so is the
/// target directory's parent on CI checkouts. Plain labs do not care.
fn lab_parent() -> PathBuf {
    std::env::temp_dir()
}
