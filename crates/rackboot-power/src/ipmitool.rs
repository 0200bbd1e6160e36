//! IPMI through the `ipmitool` command (lanplus, i.e. IPMI v2.0 / RMCP+).
//!
//! The password goes in the child's environment (`-E` reads `IPMI_PASSWORD`), never on
//! its command line where `ps` would show it. Each run is bounded by the request
//! timeout; on expiry the child is killed. Output parsing and error classification are
//! pure functions, tested against ipmitool's real texts.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    BmcInfo, BmcTarget, BootDevice, BootDeviceReading, BootMode, BootPersistence, DriverOptions,
    PowerAction, PowerDriver, PowerError, PowerErrorKind, PowerState,
};

/// Cipher suite 3 (HMAC-SHA1, AES-128) is what nearly every BMC speaks; 17 (SHA-256)
/// is chosen with `?cipher=17`.
pub const DEFAULT_CIPHER_SUITE: u8 = 3;

pub struct IpmitoolDriver {
    program: String,
    bmc: String,
    host: String,
    port: u16,
    username: String,
    password: String,
    cipher_suite: u8,
    timeout: Duration,
}

impl IpmitoolDriver {
    pub fn new(target: &BmcTarget, options: &DriverOptions) -> IpmitoolDriver {
        IpmitoolDriver {
            program: "ipmitool".into(),
            bmc: target.redacted(),
            host: target.url.host().to_string(),
            port: target.url.port(),
            username: target.username.clone(),
            password: target.password.clone(),
            cipher_suite: target.url.cipher_suite().unwrap_or(DEFAULT_CIPHER_SUITE),
            timeout: options.request_timeout,
        }
    }

    pub(crate) fn boxed(
        target: &BmcTarget,
        options: &DriverOptions,
    ) -> Result<Box<dyn PowerDriver>, PowerError> {
        Ok(Box::new(IpmitoolDriver::new(target, options)))
    }

    /// The argument list before the command (no password in it).
    fn base_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-I".into(),
            "lanplus".into(),
            "-H".into(),
            self.host.clone(),
            "-p".into(),
            self.port.to_string(),
        ];
        if !self.username.is_empty() {
            args.extend(["-U".into(), self.username.clone()]);
        }
        args.extend([
            "-E".into(),
            "-C".into(),
            self.cipher_suite.to_string(),
            // One retry after 1 s: a dead BMC fails in about 2 s; the controller retries.
            "-N".into(),
            "1".into(),
            "-R".into(),
            "1".into(),
            // -v makes ipmitool say why a session failed (bad password vs no answer).
            "-v".into(),
        ]);
        args
    }

    async fn run(&self, command: &[&str]) -> Result<String, PowerError> {
        let what = format!("running ipmitool {}", command.join(" "));
        let child = tokio::process::Command::new(&self.program)
            .args(self.base_args())
            .args(command)
            .env("IPMI_PASSWORD", &self.password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => PowerError::Unsupported {
                    bmc: self.bmc.clone(),
                    detail: format!(
                        "'{}' not found: install ipmitool (apt-get install ipmitool)",
                        self.program
                    ),
                },
                _ => PowerError::Unsupported {
                    bmc: self.bmc.clone(),
                    detail: format!("cannot start '{}': {e}", self.program),
                },
            })?;
        // Dropping the wait future on timeout drops the child, which kills it.
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                return Err(PowerError::Protocol {
                    bmc: self.bmc.clone(),
                    message: format!("reading ipmitool output: {e}"),
                });
            }
            Err(_) => return Err(PowerError::timeout(&self.bmc, what, self.timeout)),
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let (kind, detail) = classify_failure(&stderr, &stdout, self.cipher_suite);
        Err(error_of(kind, &self.bmc, detail))
    }
}

fn error_of(kind: PowerErrorKind, bmc: &str, detail: String) -> PowerError {
    let bmc = bmc.to_string();
    match kind {
        PowerErrorKind::Authentication => PowerError::Authentication { bmc, detail },
        PowerErrorKind::Unreachable => PowerError::Unreachable { bmc, detail },
        PowerErrorKind::Unsupported => PowerError::Unsupported { bmc, detail },
        PowerErrorKind::Protocol => PowerError::Protocol {
            bmc,
            message: detail,
        },
        PowerErrorKind::Bmc if detail.to_ascii_lowercase().contains("busy") => PowerError::Bmc {
            bmc,
            message: detail,
            transient: true,
        },
        _ => PowerError::Bmc {
            bmc,
            message: detail,
            transient: false,
        },
    }
}

/// Lines ipmitool -v prints on every run, which say nothing about a failure.
fn is_noise(line: &str) -> bool {
    let l = line.trim();
    l.is_empty()
        || l.starts_with("Loading IANA PEN Registry")
        || l.starts_with("Running Get VSO Capabilities")
        || l.starts_with("Discovered IPMB address")
        || l == "Invalid completion code received: Invalid command"
}

/// Maps a failed run's output to an error kind and a one-line detail.
pub fn classify_failure(stderr: &str, stdout: &str, cipher_suite: u8) -> (PowerErrorKind, String) {
    let text = format!("{stderr}\n{stdout}");
    let lower = text.to_ascii_lowercase();
    let has = |needle: &str| lower.contains(needle);
    let meaningful: Vec<&str> = text
        .lines()
        .filter(|l| !is_noise(l))
        .map(str::trim)
        .collect();
    let detail = if meaningful.is_empty() {
        "ipmitool failed without a message".to_string()
    } else {
        meaningful.join("; ")
    };
    let kind = if has("rakp 2 hmac is invalid")
        || has("unauthorized name")
        || has("invalid user name")
        || has("invalid password")
        || has("rakp 2 message indicates an error")
        || has("insufficient privilege")
        || has("requested privilege level exceeds")
    {
        PowerErrorKind::Authentication
    } else if has("invalid authentication algorithm")
        || has("invalid integrity algorithm")
        || has("invalid confidentiality algorithm")
        || has("no matching cipher suite")
    {
        return (
            PowerErrorKind::Unsupported,
            format!(
                "the BMC refuses cipher suite {cipher_suite} (choose another with ?cipher=3 or ?cipher=17): {detail}"
            ),
        );
    } else if has("get auth capabilities error")
        || has("no response from remote controller")
        || has("connection refused")
        || has("address lookup for")
        || has("no route to host")
        || has("network is unreachable")
        || has("insufficient resources for session")
        || has("unable to establish ipmi v2")
    {
        PowerErrorKind::Unreachable
    } else if has("node busy") {
        PowerErrorKind::Bmc
    } else if has("invalid command") && !has("command not supported in present state") {
        PowerErrorKind::Unsupported
    } else {
        PowerErrorKind::Bmc
    };
    (kind, detail)
}

/// "Chassis Power is on" → On.
pub fn parse_power_status(stdout: &str) -> Option<PowerState> {
    stdout.lines().find_map(|l| {
        let l = l.trim().to_ascii_lowercase();
        match l.strip_prefix("chassis power is ")? {
            "on" => Some(PowerState::On),
            "off" => Some(PowerState::Off),
            _ => None,
        }
    })
}

/// Vendor, product and firmware from `mc info`.
pub fn parse_mc_info(stdout: &str) -> BmcInfo {
    let field = |name: &str| {
        stdout.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name && !v.trim().is_empty()).then(|| v.trim().to_string())
        })
    };
    BmcInfo {
        protocol: "ipmi".into(),
        vendor: field("Manufacturer Name").or_else(|| field("Manufacturer ID")),
        model: field("Product Name").or_else(|| field("Product ID")),
        firmware: field("Firmware Revision"),
        power: None,
    }
}

/// The boot device in `chassis bootparam get 5` output, decoded from its
/// "Boot parameter data:" line (the five parameter-5 bytes, read the way the native
/// client reads them). `None` when the output has no such line.
pub fn parse_boot_param_5(stdout: &str) -> Option<BootDeviceReading> {
    let hex = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Boot parameter data:"))?;
    let hex: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if hex.len() < 10 {
        return None;
    }
    let mut data = [0u8; 5];
    for (byte, pair) in data.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    let flags = rackboot_ipmi::BootFlags::decode(&data).ok()?;
    Some(crate::native_ipmi::boot_device_reading(&flags))
}

/// The `chassis bootdev` arguments for a boot request.
pub fn bootdev_args(
    device: BootDevice,
    persistence: BootPersistence,
    mode: Option<BootMode>,
) -> Vec<String> {
    let mut args = vec![
        "chassis".to_string(),
        "bootdev".to_string(),
        match device {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
        }
        .to_string(),
    ];
    let mut options = Vec::new();
    if persistence == BootPersistence::Persistent {
        options.push("persistent");
    }
    if mode == Some(BootMode::Uefi) {
        options.push("efiboot");
    }
    if !options.is_empty() {
        args.push(format!("options={}", options.join(",")));
    }
    args
}

#[async_trait]
impl PowerDriver for IpmitoolDriver {
    async fn power_state(&self) -> Result<PowerState, PowerError> {
        let out = self.run(&["chassis", "power", "status"]).await?;
        parse_power_status(&out).ok_or_else(|| PowerError::Protocol {
            bmc: self.bmc.clone(),
            message: format!("unexpected power status output: {:?}", out.trim()),
        })
    }

    async fn power(&self, action: PowerAction) -> Result<(), PowerError> {
        let verb = match action {
            PowerAction::On => "on",
            PowerAction::Off => "off",
            PowerAction::SoftOff => "soft",
            PowerAction::Cycle => "cycle",
            PowerAction::Reset => "reset",
        };
        self.run(&["chassis", "power", verb]).await.map(drop)
    }

    async fn set_boot_device(
        &self,
        device: BootDevice,
        persistence: BootPersistence,
        mode: Option<BootMode>,
    ) -> Result<(), PowerError> {
        let args = bootdev_args(device, persistence, mode);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run(&args).await?;
        if out.contains("Set Boot Device to") {
            Ok(())
        } else {
            Err(PowerError::Protocol {
                bmc: self.bmc.clone(),
                message: format!("unexpected bootdev output: {:?}", out.trim()),
            })
        }
    }

    async fn boot_device(&self) -> Result<BootDeviceReading, PowerError> {
        let out = self.run(&["chassis", "bootparam", "get", "5"]).await?;
        parse_boot_param_5(&out).ok_or_else(|| PowerError::Protocol {
            bmc: self.bmc.clone(),
            message: format!("unexpected bootparam output: {:?}", out.trim()),
        })
    }

    async fn ping(&self) -> Result<BmcInfo, PowerError> {
        let out = self.run(&["mc", "info"]).await?;
        Ok(parse_mc_info(&out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real ipmitool 1.8.19 output against OpenIPMI's ipmi_sim.
    const VERBOSE_NOISE: &str = "Loading IANA PEN Registry...\nRunning Get VSO Capabilities my_addr 0x20, transit 0, target 0x20\nInvalid completion code received: Invalid command\nDiscovered IPMB address 0x0\n";

    #[test]
    fn classifies_real_failures() {
        let cases = [
            (
                "Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n",
                PowerErrorKind::Authentication,
            ),
            (
                "Loading IANA PEN Registry...\nRAKP 2 message indicates an error : unauthorized name\nError: Unable to establish IPMI v2 / RMCP+ session\n",
                PowerErrorKind::Authentication,
            ),
            (
                "Loading IANA PEN Registry...\nGet Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\nError: Unable to establish IPMI v2 / RMCP+ session\n",
                PowerErrorKind::Unreachable,
            ),
            (
                "Loading IANA PEN Registry...\nError in open session response message : invalid authentication algorithm\n\nError: Unable to establish IPMI v2 / RMCP+ session\n",
                PowerErrorKind::Unsupported,
            ),
            (
                "Address lookup for nosuch.invalid failed\n",
                PowerErrorKind::Unreachable,
            ),
            (
                "Chassis Power Control: Cycle failed: Command not supported in present state\n",
                PowerErrorKind::Bmc,
            ),
            (
                "Set Chassis Power Control to Cycle failed: Node busy\n",
                PowerErrorKind::Bmc,
            ),
        ];
        for (stderr, kind) in cases {
            let (got, detail) = classify_failure(stderr, "", 3);
            assert_eq!(got, kind, "{stderr}");
            assert!(!detail.contains("IANA"), "noise kept: {detail}");
        }
        let (_, detail) = classify_failure(
            "Error in open session response message : invalid authentication algorithm\n",
            "",
            17,
        );
        assert!(detail.contains("cipher suite 17"), "{detail}");
        assert_eq!(
            classify_failure(VERBOSE_NOISE, "", 3).1,
            "ipmitool failed without a message"
        );
        let busy = error_of(PowerErrorKind::Bmc, "ipmi://x", "Node busy".into());
        assert!(busy.is_transient());
        let state = error_of(
            PowerErrorKind::Bmc,
            "ipmi://x",
            "Command not supported in present state".into(),
        );
        assert!(!state.is_transient());
    }

    #[test]
    fn parses_status_and_mc_info() {
        assert_eq!(
            parse_power_status("Chassis Power is on\n"),
            Some(PowerState::On)
        );
        assert_eq!(
            parse_power_status("Chassis Power is off\n"),
            Some(PowerState::Off)
        );
        assert_eq!(parse_power_status("Chassis Power Control: Up/On\n"), None);
        assert_eq!(parse_power_status(""), None);
        let info = parse_mc_info(
            "Device ID                 : 0\nDevice Revision           : 3\nFirmware Revision         : 9.08\nIPMI Version              : 2.0\nManufacturer ID           : 4753\nManufacturer Name         : MontaVista Software, Inc.\nProduct ID                : 3842 (0x0f02)\nProduct Name              : Unknown (0xF02)\n",
        );
        assert_eq!(info.vendor.as_deref(), Some("MontaVista Software, Inc."));
        assert_eq!(info.model.as_deref(), Some("Unknown (0xF02)"));
        assert_eq!(info.firmware.as_deref(), Some("9.08"));
    }

    #[test]
    fn reads_boot_param_5() {
        // ipmitool 1.8.x output (virtualbmc and OpenBMC captures, the last with
        // the boot flag invalid as ipmi_sim answers).
        let output = |data: &str, selector: &str, valid: &str| {
            format!(
                "Boot parameter version: 1\nBoot parameter 5 is valid/unlocked\n\
                 Boot parameter data: {data}\n Boot Flags :\n   - Boot Flag {valid}\n\
                 \x20  - Options apply to only next boot\n\
                 \x20  - BIOS PC Compatible (legacy) boot\n\
                 \x20  - Boot Device Selector : {selector}\n"
            )
        };
        let cases = [
            (
                "8004000000",
                "Force PXE",
                "Valid",
                Some(BootDeviceReading::Device(BootDevice::Pxe)),
            ),
            (
                "e008000000",
                "Force Boot from default Hard-Drive",
                "Valid",
                Some(BootDeviceReading::Device(BootDevice::Disk)),
            ),
            (
                "0004000000",
                "Force PXE",
                "Invalid",
                Some(BootDeviceReading::Device(BootDevice::Pxe)),
            ),
            (
                "8014000000",
                "Force Boot from CD/DVD",
                "Valid",
                Some(BootDeviceReading::Other),
            ),
            (
                "8000000000",
                "No override",
                "Valid",
                Some(BootDeviceReading::Other),
            ),
            ("80040000", "Force PXE", "Valid", None),
            ("80zz000000", "Force PXE", "Valid", None),
        ];
        for (data, selector, valid, want) in cases {
            assert_eq!(
                parse_boot_param_5(&output(data, selector, valid)),
                want,
                "{data}"
            );
        }
        assert_eq!(
            parse_boot_param_5("Error: Unable to establish IPMI v2 / RMCP+ session"),
            None
        );
    }

    #[test]
    fn bootdev_arguments() {
        assert_eq!(
            bootdev_args(BootDevice::Pxe, BootPersistence::Once, None),
            ["chassis", "bootdev", "pxe"]
        );
        assert_eq!(
            bootdev_args(
                BootDevice::Disk,
                BootPersistence::Persistent,
                Some(BootMode::Uefi)
            ),
            ["chassis", "bootdev", "disk", "options=persistent,efiboot"]
        );
        assert_eq!(
            bootdev_args(
                BootDevice::Pxe,
                BootPersistence::Once,
                Some(BootMode::Legacy)
            ),
            ["chassis", "bootdev", "pxe"]
        );
    }

    #[test]
    fn password_not_in_arguments() {
        let target: BmcTarget = "ipmitool://admin:hunter2@10.0.0.9:6230?cipher=17"
            .parse()
            .unwrap();
        let d = IpmitoolDriver::new(&target, &DriverOptions::default());
        let args = d.base_args().join(" ");
        assert!(!args.contains("hunter2"), "{args}");
        assert!(
            args.contains("-H 10.0.0.9 -p 6230 -U admin -E -C 17"),
            "{args}"
        );
    }

    #[tokio::test]
    async fn missing_program_is_unsupported() {
        let target: BmcTarget = "ipmitool://a:b@127.0.0.1".parse().unwrap();
        let mut d = IpmitoolDriver::new(&target, &DriverOptions::default());
        d.program = "/nonexistent/ipmitool".into();
        let err = d.power_state().await.unwrap_err();
        assert_eq!(err.kind(), PowerErrorKind::Unsupported);
        assert!(err.to_string().contains("install ipmitool"), "{err}");
    }
}
