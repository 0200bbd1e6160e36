//! Emulated BMCs for lab machines. [`IpmiSim`] runs one OpenIPMI `ipmi_sim` (IPMI v2.0 over LAN,
//! RMCP+) with a generated lan.conf and command file; its `chassis_control` program (usually a
//! [`crate::VmChassis`]) powers the machine's QEMU. Reusable outside a [`crate::Lab`]: give it any
//! address (127.0.0.1 with no namespace works) and any chassis program.
//!
//! ipmi_sim facts (OpenIPMI 2.0.33, Debian 12):
//! - It needs no BMC device: the command file only declares the BMC (`mc_setbmc 0x20`,
//!   `mc_add 0x20 ...`, `mc_enable 0x20`); no sensors or SDRs are needed for chassis commands.
//! - RMCP+ cipher suite 3 only (HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128), and it does not answer "Get
//!   Channel Cipher Suites": `ipmitool -I lanplus -C 3`, or ipmitool waits ~10 s before falling
//!   back.
//! - One `addr` per LAN channel; it runs the chassis program synchronously (popen) for every
//!   chassis command, so the program must return quickly (the VM is started detached).
//! - Power cycle is `set power 0`, then `get power` once a second until off, then `set power 1`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::chassis::check_shell_safe_path;
use crate::netns::Netns;
use crate::process::{LabProcess, tail};
use crate::{LabError, Result, io_err};

/// Which BMC emulator a lab gives its machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BmcKind {
    /// One OpenIPMI `ipmi_sim` per machine (packages openipmi, and ipmitool to talk to it).
    Ipmi,
    /// sushy-tools' Redfish emulator (see [`crate::bmc`]'s report in the crate docs): not
    /// available yet, [`crate::Lab::create`] refuses it with an explanation.
    Redfish,
}

/// Why [`BmcKind::Redfish`] labs are refused (see the crate report).
pub const REDFISH_UNAVAILABLE: &str = "Redfish BMCs are not available in the lab yet: \
     sushy-tools' emulator powers VMs only through libvirt, which the lab does not run";

/// First UDP port of lab BMCs: machine `m{i}` (1-based) listens on `IPMI_BASE_PORT + i`.
pub const IPMI_BASE_PORT: u16 = 6230;
/// Credentials of every lab BMC.
pub const BMC_USER: &str = "admin";
pub const BMC_PASSWORD: &str = "password";

/// The command file: a BMC at IPMB address 0x20 and nothing else. `mc_add` arguments: IPMB address,
/// device ID 0, no device SDRs, device revision 0x23, firmware 9.8, device-support bitmask 0x9f,
/// manufacturer 0x1291, product 0xf02 (the values of OpenIPMI's example ipmisim1.emu).
pub const IPMI_SIM_EMU: &str = "\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02
mc_enable 0x20
";

/// One ipmi_sim instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiSimConfig {
    /// Instance name (`m1`): files in `dir` are named after it.
    pub name: String,
    /// Where lan.conf (`NAME.lan.conf`), the command file (`NAME.emu`), ipmi_sim's state directory
    /// (`NAME.ipmi_sim/`) and its log (`NAME.ipmi_sim.log`) go.
    pub dir: PathBuf,
    /// UDP address and port of LAN channel 1.
    pub addr: Ipv4Addr,
    pub port: u16,
    /// User 2 (admin privilege). 1-16 characters, no `"`.
    pub user: String,
    /// 1-20 characters, no `"`.
    pub password: String,
    /// Program ipmi_sim runs for chassis power/boot commands (see [`crate::chassis`]). Without
    /// one, ipmi_sim refuses power control and `chassis bootdev`.
    pub chassis_control: Option<PathBuf>,
}

impl IpmiSimConfig {
    /// `admin`/`password` on `addr:port`, no chassis program.
    pub fn new(name: &str, dir: impl Into<PathBuf>, addr: Ipv4Addr, port: u16) -> IpmiSimConfig {
        IpmiSimConfig {
            name: name.to_string(),
            dir: dir.into(),
            addr,
            port,
            user: BMC_USER.to_string(),
            password: BMC_PASSWORD.to_string(),
            chassis_control: None,
        }
    }

    pub fn lan_conf_path(&self) -> PathBuf {
        self.dir.join(format!("{}.lan.conf", self.name))
    }

    pub fn emu_path(&self) -> PathBuf {
        self.dir.join(format!("{}.emu", self.name))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(format!("{}.ipmi_sim", self.name))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.ipmi_sim.log", self.name))
    }

    /// `ipmi://USER:PASSWORD@ADDR:PORT`: what `rackboot machine add --bmc` takes.
    pub fn url(&self) -> String {
        ipmi_url(&self.user, &self.password, self.addr, self.port)
    }

    /// The lan.conf text. Every IPMI 1.5 auth type is allowed so any client can log in; IPMI 2.0
    /// sessions use cipher suite 3 (the only one ipmi_sim implements).
    pub fn lan_conf(&self) -> Result<String> {
        self.validate()?;
        let chassis = match &self.chassis_control {
            Some(program) => format!("  chassis_control \"{}\"\n", program.display()),
            None => String::new(),
        };
        Ok(format!(
            "# ipmi_sim configuration for lab machine {name}, generated by rackboot-lab.\n\
             name \"{name}\"\n\
             set_working_mc 0x20\n\
             \x20 startlan 1\n\
             \x20   addr {addr} {port}\n\
             \x20   priv_limit admin\n\
             \x20   allowed_auths_callback none md2 md5 straight\n\
             \x20   allowed_auths_user none md2 md5 straight\n\
             \x20   allowed_auths_operator none md2 md5 straight\n\
             \x20   allowed_auths_admin none md2 md5 straight\n\
             \x20   guid {guid}\n\
             \x20 endlan\n\
             {chassis}\
             \x20 user 2 true \"{user}\" \"{password}\" admin 10 none md2 md5 straight\n",
            name = self.name,
            addr = self.addr,
            port = self.port,
            guid = guid(&self.name, self.port),
            user = self.user,
            password = self.password,
        ))
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(LabError::Config(format!("ipmi_sim {}: {what}", self.name)));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad("name must be [A-Za-z0-9_-]+");
        }
        if self.user.is_empty() || self.user.len() > 16 || self.user.contains(['"', '\n']) {
            return bad("user must be 1-16 characters without '\"'");
        }
        if self.password.is_empty()
            || self.password.len() > 20
            || self.password.contains(['"', '\n'])
        {
            return bad("password must be 1-20 characters without '\"'");
        }
        if self.port == 0 {
            return bad("port must not be 0");
        }
        if let Some(program) = &self.chassis_control {
            check_shell_safe_path(program)?;
        }
        Ok(())
    }
}

/// `ipmi://USER:PASSWORD@ADDR:PORT`.
pub fn ipmi_url(user: &str, password: &str, addr: Ipv4Addr, port: u16) -> String {
    format!("ipmi://{user}:{password}@{addr}:{port}")
}

/// A stable per-instance GUID (32 hex digits) for RMCP+ session setup.
fn guid(name: &str, port: u16) -> String {
    // FNV-1a over name and port, twice with different seeds: unique enough for a lab.
    let hash = |seed: u64| {
        let mut h = seed;
        for b in name.bytes().chain(port.to_be_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        h
    };
    format!(
        "{:016x}{:016x}",
        hash(0xcbf29ce484222325),
        hash(0x84222325cbf29ce4)
    )
}

/// A running ipmi_sim; dropping it stops it (it does not stop a VM its chassis program started:
/// a BMC restart leaves the host running, as on real hardware).
#[derive(Debug)]
pub struct IpmiSim {
    config: IpmiSimConfig,
    process: LabProcess,
}

impl IpmiSim {
    /// Writes lan.conf and the command file, starts ipmi_sim (inside `netns` if given, else in
    /// this process's namespace) and waits up to 10 s until its UDP port is bound. Fails with a
    /// clear message if ipmi_sim is not installed.
    pub fn start(config: IpmiSimConfig, netns: Option<&Netns>) -> Result<IpmiSim> {
        let lan_conf = config.lan_conf()?;
        require_program("ipmi_sim", "openipmi")?;
        let dir = &config.dir;
        std::fs::create_dir_all(config.state_dir())
            .map_err(io_err(format!("create {}", config.state_dir().display())))?;
        let write = |path: PathBuf, text: &str| {
            std::fs::write(&path, text).map_err(io_err(format!("write {}", path.display())))
        };
        write(config.lan_conf_path(), &lan_conf)?;
        write(config.emu_path(), IPMI_SIM_EMU)?;
        let mut cmd = match netns {
            Some(netns) => netns.command("ipmi_sim"),
            None => Command::new("ipmi_sim"),
        };
        cmd.current_dir(dir)
            .arg("-c")
            .arg(config.lan_conf_path())
            .arg("-f")
            .arg(config.emu_path())
            .arg("-s")
            .arg(config.state_dir())
            // No console on stdin (it is /dev/null), no persisted users/SDRs between runs.
            .args(["-n", "-p"]);
        let name = format!("ipmi_sim-{}", config.name);
        let process = match netns {
            Some(netns) => netns.spawn(&name, cmd, &config.log_path())?,
            None => LabProcess::spawn(&name, cmd, &config.log_path(), None)?,
        };
        let sim = IpmiSim { config, process };
        sim.wait_until_bound(Duration::from_secs(10))?;
        tracing::info!(
            name = sim.config.name,
            url = sim.config.url(),
            pid = sim.process.pid(),
            "ipmi_sim started"
        );
        Ok(sim)
    }

    pub fn config(&self) -> &IpmiSimConfig {
        &self.config
    }

    pub fn url(&self) -> String {
        self.config.url()
    }

    pub fn process(&self) -> &LabProcess {
        &self.process
    }

    /// ipmi_sim's process, for [`crate::Lab::detach`].
    pub(crate) fn into_process(self) -> LabProcess {
        self.process
    }

    /// Polls /proc/PID/net/udp (the process's own namespace) until the LAN port is bound.
    fn wait_until_bound(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.process.try_status()? {
                return Err(LabError::Exited {
                    name: self.process.name().to_string(),
                    status,
                    pattern: format!("UDP port {} bound", self.config.port),
                    log: self.config.log_path(),
                    tail: tail(&self.process.output(), 20),
                });
            }
            let table = std::fs::read_to_string(format!("/proc/{}/net/udp", self.process.pid()))
                .unwrap_or_default();
            if udp_bound(&table, self.config.addr, self.config.port) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(LabError::Timeout {
                    pattern: format!("UDP port {}:{} bound", self.config.addr, self.config.port),
                    log: self.config.log_path(),
                    timeout,
                    tail: tail(&self.process.output(), 20),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a /proc/net/udp table has a socket bound to `addr:port` (or the wildcard address).
pub(crate) fn udp_bound(table: &str, addr: Ipv4Addr, port: u16) -> bool {
    table.lines().skip(1).any(|line| {
        let Some(local) = line.split_whitespace().nth(1) else {
            return false;
        };
        let Some((ip_hex, port_hex)) = local.split_once(':') else {
            return false;
        };
        // The kernel prints the network-order address as a native-endian integer.
        let ip = u32::from_str_radix(ip_hex, 16).map(|n| Ipv4Addr::from(n.to_ne_bytes()));
        let p = u16::from_str_radix(port_hex, 16);
        matches!((ip, p), (Ok(ip), Ok(p)) if p == port && (ip == addr || ip.is_unspecified()))
    })
}

/// Fails with "PROGRAM not found (apt-get install -y PACKAGE)" unless `program` is on PATH.
pub fn require_program(program: &str, package: &str) -> Result<PathBuf> {
    find_program(program).ok_or_else(|| {
        LabError::Config(format!(
            "{program} not found on PATH: apt-get install -y {package}"
        ))
    })
}

fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_conf_has_channel_user_and_chassis_program() {
        let mut config = IpmiSimConfig::new("m1", "/lab", Ipv4Addr::new(10, 77, 0, 1), 6231);
        config.chassis_control = Some(PathBuf::from("/lab/m1.chassis"));
        let text = config.lan_conf().unwrap();
        assert!(
            text.contains(
                "name \"m1\"\nset_working_mc 0x20\n  startlan 1\n    addr 10.77.0.1 6231\n"
            )
        );
        assert!(text.contains("  endlan\n  chassis_control \"/lab/m1.chassis\"\n"));
        assert!(
            text.ends_with("  user 2 true \"admin\" \"password\" admin 10 none md2 md5 straight\n")
        );
        let guid_line = text.lines().find(|l| l.contains("guid")).unwrap();
        assert_eq!(guid_line.trim().len(), "guid ".len() + 32);
        assert_eq!(config.url(), "ipmi://admin:password@10.77.0.1:6231");
    }

    #[test]
    fn bad_configs_are_refused() {
        let good = IpmiSimConfig::new("m1", "/lab", Ipv4Addr::LOCALHOST, 6231);
        let cases: [fn(&mut IpmiSimConfig); 6] = [
            |c| c.name = "m 1".into(),
            |c| c.user = "a\"b".into(),
            |c| c.user = "x".repeat(17),
            |c| c.password = String::new(),
            |c| c.port = 0,
            |c| c.chassis_control = Some("/tmp/a b".into()),
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut c = good.clone();
            mutate(&mut c);
            assert!(c.lan_conf().is_err(), "case {i} accepted");
        }
    }

    #[test]
    fn guids_differ_per_instance() {
        assert_ne!(guid("m1", 6231), guid("m2", 6232));
        assert_eq!(guid("m1", 6231), guid("m1", 6231));
    }

    #[test]
    fn udp_table_parsing() {
        // Real /proc/net/udp lines (x86-64): 10.77.0.1:6231 and 0.0.0.0:68.
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  120: 01004D0A:1857 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41234 2 0000000000000000 0\n\
  200: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41235 2 0000000000000000 0\n";
        let lab = Ipv4Addr::new(10, 77, 0, 1);
        if cfg!(target_endian = "little") {
            assert!(udp_bound(table, lab, 6231));
            assert!(!udp_bound(table, Ipv4Addr::new(10, 77, 0, 2), 6231));
        }
        assert!(udp_bound(table, lab, 68), "wildcard bind");
        assert!(!udp_bound(table, lab, 6232));
        assert!(!udp_bound("garbage\nmore garbage here\n", lab, 6231));
    }

    #[test]
    fn missing_programs_are_named_with_their_package() {
        let err = require_program("rackboot-no-such-program", "some-package").unwrap_err();
        assert!(
            err.to_string().contains("apt-get install -y some-package"),
            "{err}"
        );
    }
}
