//! The virtual rack: one namespace, one bridge, N machines, and the server under test.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bmc::{BmcKind, IPMI_BASE_PORT, IpmiSim, IpmiSimConfig};
use crate::chassis::{VmChassis, running_qemu_pid};
use crate::netns::{Netns, NetnsConfig, netns_exists, unique_name};
use crate::process::{LabProcess, find_line, lock, read_from, tail};
use crate::qemu::{BootOrder, Firmware, MachineConfig, NicRom, QemuMachine, format_mac};
use crate::redfish::{
    REDFISH_PORT, REDFISH_UID, RedfishEnv, RedfishService, domain_uuid, redfish_url,
};
use crate::state::{LabState, MachineRecord, StateFile, down, read_state};
use crate::{LabError, Result, io_err};

pub const DEFAULT_BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const DEFAULT_PREFIX_LEN: u8 = 24;
/// The bridge's IPv6 address in labs with IPv6 (a documentation prefix: it
/// exists only inside the lab's namespace).
pub const DEFAULT_BRIDGE_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 1);
pub const DEFAULT_PREFIX_LEN6: u8 = 64;

/// The MAC of lab machine `index` (0-based): 52:54:00:00:00:01, :02, ...
pub fn lab_mac(index: usize) -> [u8; 6] {
    let n = index as u32 + 1;
    [0x52, 0x54, 0, (n >> 16) as u8, (n >> 8) as u8, n as u8]
}

/// One machine of the lab; name, MAC, tap and files are assigned by the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    pub firmware: Firmware,
    pub memory_mib: u32,
    pub nic_rom: NicRom,
    /// Blank disks, sizes in MiB; see [`MachineConfig::disks_mib`].
    pub disks_mib: Vec<u64>,
    /// SMBIOS system serial; `None`: `RBLAB-<name>` (`RBLAB-m1`, ...).
    pub dmi_serial: Option<String>,
    pub boot: BootOrder,
    pub no_reboot: bool,
    pub extra_args: Vec<String>,
}

impl MachineSpec {
    /// SeaBIOS, 512 MiB, default iPXE NIC ROM, no disk, network first, DMI serial `RBLAB-<name>`.
    pub fn bios() -> MachineSpec {
        MachineSpec {
            firmware: Firmware::Bios,
            memory_mib: 512,
            nic_rom: NicRom::Default,
            disks_mib: Vec::new(),
            dmi_serial: None,
            boot: BootOrder::NetworkFirst,
            no_reboot: false,
            extra_args: Vec::new(),
        }
    }

    /// OVMF, 512 MiB, no NIC ROM (OVMF's own PXE client chainloads iPXE), no disk, network first.
    pub fn uefi() -> MachineSpec {
        MachineSpec {
            firmware: Firmware::uefi(),
            nic_rom: NicRom::None,
            ..MachineSpec::bios()
        }
    }

    /// Adds a blank disk of `mib` MiB.
    pub fn with_disk(mut self, mib: u64) -> MachineSpec {
        self.disks_mib.push(mib);
        self
    }

    /// Adds `count` blank disks of `mib` MiB each.
    pub fn with_disks(mut self, count: usize, mib: u64) -> MachineSpec {
        self.disks_mib.extend(std::iter::repeat_n(mib, count));
        self
    }

    /// Sets the SMBIOS system serial number (default `RBLAB-<name>`).
    pub fn with_dmi_serial(mut self, serial: impl Into<String>) -> MachineSpec {
        self.dmi_serial = Some(serial.into());
        self
    }

    /// Sets which device the firmware tries first (a BMC lab's boot device overrides it).
    pub fn with_boot(mut self, boot: BootOrder) -> MachineSpec {
        self.boot = boot;
        self
    }

    pub fn with_memory(mut self, mib: u32) -> MachineSpec {
        self.memory_mib = mib;
        self
    }

    pub fn with_nic_rom(mut self, rom: NicRom) -> MachineSpec {
        self.nic_rom = rom;
        self
    }

    /// QEMU exits when the guest reboots.
    pub fn with_no_reboot(mut self) -> MachineSpec {
        self.no_reboot = true;
        self
    }

    /// Passes a firmware setting through QEMU's fw_cfg (`-fw_cfg name=NAME,string=VALUE`),
    /// e.g. OVMF's network boot knobs in [`crate::firmware`].
    pub fn with_fw_cfg(mut self, name: &str, value: &str) -> MachineSpec {
        self.extra_args.push("-fw_cfg".into());
        self.extra_args
            .push(format!("name={name},string={}", value.replace(',', ",,")));
        self
    }

    /// OVMF with Secure Boot enforced and Microsoft's keys enrolled
    /// ([`crate::firmware::OVMF_CODE_SECURE_BOOT`], [`crate::firmware::OVMF_VARS_MS_KEYS`]),
    /// its own PXE client (no NIC ROM: iPXE is unsigned): only signed loaders run.
    /// The Secure Boot build needs SMM, so the machine is a q35 with SMM on.
    pub fn uefi_secure_boot() -> MachineSpec {
        let mut spec = MachineSpec {
            firmware: Firmware::Uefi(crate::qemu::UefiFirmware {
                code: crate::firmware::OVMF_CODE_SECURE_BOOT.into(),
                vars_template: crate::firmware::OVMF_VARS_MS_KEYS.into(),
            }),
            nic_rom: NicRom::None,
            ..MachineSpec::bios()
        };
        spec.extra_args.extend(
            [
                "-machine",
                "q35,smm=on",
                "-global",
                "driver=cfi.pflash01,property=secure,value=on",
            ]
            .map(String::from),
        );
        spec
    }

    /// An arm64 machine: AAVMF on qemu-system-aarch64's `virt` board (TCG), its
    /// own PXE client (no NIC ROM), 512 MiB.
    pub fn uefi_arm64() -> MachineSpec {
        MachineSpec {
            firmware: Firmware::uefi_arm64(),
            nic_rom: NicRom::None,
            ..MachineSpec::bios()
        }
    }

    /// OVMF whose first network boot option is PXE over IPv6: IPv4 PXE is
    /// switched off in the firmware (as a server's setup screen can), so it
    /// does not wait out DHCPv4 on an IPv6-only network.
    pub fn uefi_ipv6_pxe() -> MachineSpec {
        MachineSpec::uefi().with_fw_cfg(crate::firmware::OVMF_IPV4_PXE_KNOB, "n")
    }

    /// OVMF that network-boots by UEFI HTTP boot only: both PXE knobs off,
    /// so its first network boot option is "UEFI HTTPv4".
    pub fn uefi_http_boot() -> MachineSpec {
        MachineSpec::uefi()
            .with_fw_cfg(crate::firmware::OVMF_IPV4_PXE_KNOB, "n")
            .with_fw_cfg(crate::firmware::OVMF_IPV6_PXE_KNOB, "n")
    }
}

/// What lab to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabConfig {
    /// Serial logs, disks, UEFI variables and process logs go here.
    pub dir: PathBuf,
    /// Network namespace name (unique per lab).
    pub netns: String,
    /// Address of the bridge `br0`, where the server under test listens.
    pub bridge_addr: Ipv4Addr,
    pub prefix_len: u8,
    /// The bridge has `bridge_addr` (false: an IPv6-only network).
    pub ipv4: bool,
    /// The bridge's IPv6 address and prefix length, when the network has IPv6
    /// (see [`LabConfig::with_ipv6`]).
    pub bridge_addr6: Option<(Ipv6Addr, u8)>,
    /// If set, the lab records its namespace and processes here (e.g. STATE_DIR/lab.json) so
    /// [`crate::down`] can remove it from another process.
    pub state_file: Option<PathBuf>,
    /// Machine `i` is named `m{i+1}`, has MAC [`lab_mac`]`(i)` and tap `tap{i+1}`.
    pub machines: Vec<MachineSpec>,
    /// Give every machine an emulated BMC: machines then start powered off and are powered
    /// through their BMC (see [`Lab::bmc`]). `None`: plain VMs started by [`Lab::start_all`].
    pub bmc: Option<BmcKind>,
}

impl LabConfig {
    /// A lab in `dir` with a unique namespace name, bridge 10.77.0.1/24, no state file.
    pub fn new(dir: impl Into<PathBuf>, machines: Vec<MachineSpec>) -> LabConfig {
        LabConfig {
            dir: dir.into(),
            netns: unique_name("rbl"),
            bridge_addr: DEFAULT_BRIDGE_ADDR,
            prefix_len: DEFAULT_PREFIX_LEN,
            ipv4: true,
            bridge_addr6: None,
            state_file: None,
            machines,
            bmc: None,
        }
    }
}

impl LabConfig {
    /// The bridge also gets [`DEFAULT_BRIDGE_ADDR6`]/64 (dual stack).
    pub fn with_ipv6(mut self) -> LabConfig {
        self.bridge_addr6 = Some((DEFAULT_BRIDGE_ADDR6, DEFAULT_PREFIX_LEN6));
        self
    }

    /// An IPv6-only network: the bridge has [`DEFAULT_BRIDGE_ADDR6`]/64 and no IPv4.
    pub fn ipv6_only(mut self) -> LabConfig {
        self.ipv4 = false;
        self.with_ipv6()
    }
}

/// A lab machine's emulated BMC and what it powers the machine's QEMU with. Dropping it stops the
/// BMC (IPMI) and powers the machine off.
#[derive(Debug)]
pub struct LabBmc {
    // Field order is drop order: the BMC first, so it cannot start the VM again.
    sim: Option<IpmiSim>,
    power: BmcPower,
    machine: MachineRecord,
    serial_log: PathBuf,
    detached: bool,
}

/// How the lab itself presses a machine's power button.
#[derive(Debug)]
enum BmcPower {
    /// The chassis program ipmi_sim runs.
    Chassis(Box<VmChassis>),
    /// The lab's libvirt session daemon (domain named like the machine).
    Libvirt(RedfishEnv),
}

impl LabBmc {
    /// What `rackboot machine add --bmc` takes, e.g.
    /// `ipmi://admin:password@10.77.0.1:6231?cipher=3` or
    /// `redfish://admin:password@10.77.0.1:8000/redfish/v1/Systems/UUID`.
    pub fn url(&self) -> &str {
        self.machine.bmc_url.as_deref().unwrap_or_default()
    }

    pub fn kind(&self) -> BmcKind {
        match self.power {
            BmcPower::Chassis(_) => BmcKind::Ipmi,
            BmcPower::Libvirt(_) => BmcKind::Redfish,
        }
    }

    /// The machine's chassis program, pid file and boot device file (IPMI labs).
    pub fn chassis(&self) -> Option<&VmChassis> {
        match &self.power {
            BmcPower::Chassis(chassis) => Some(chassis.as_ref()),
            BmcPower::Libvirt(_) => None,
        }
    }

    /// The running ipmi_sim (IPMI labs).
    pub fn ipmi_sim(&self) -> Option<&IpmiSim> {
        self.sim.as_ref()
    }

    /// The PID of the machine's QEMU while it is powered on.
    pub fn qemu_pid(&self) -> Option<u32> {
        let pid_file = self.machine.qemu_pid_file.as_deref()?;
        let tag = self
            .machine
            .qemu_tag
            .clone()
            .unwrap_or_else(|| pid_file.display().to_string());
        running_qemu_pid(pid_file, &tag)
    }

    pub fn is_powered_on(&self) -> bool {
        self.qemu_pid().is_some()
    }

    /// Powers the machine on the way its BMC does (chassis program / libvirt); a no-op if on.
    pub fn power_on(&self) -> Result<()> {
        match &self.power {
            BmcPower::Chassis(chassis) => chassis.power_on(),
            BmcPower::Libvirt(env) => {
                if !self.is_powered_on() {
                    env.virsh(&["start", &self.machine.name])?;
                }
                Ok(())
            }
        }
    }

    /// Cuts the power; a no-op if off.
    pub fn power_off(&self) -> Result<()> {
        match &self.power {
            BmcPower::Chassis(chassis) => chassis.power_off(),
            BmcPower::Libvirt(env) => {
                if self.is_powered_on() {
                    env.virsh(&["destroy", &self.machine.name])?;
                }
                Ok(())
            }
        }
    }

    /// The serial console log (appended to across power cycles).
    pub fn serial_log(&self) -> PathBuf {
        self.serial_log.clone()
    }

    /// The serial log's current length: pass it to [`LabBmc::wait_for_serial`] to look only at
    /// what a later power-on prints.
    pub fn serial_len(&self) -> u64 {
        std::fs::metadata(&self.serial_log).map_or(0, |m| m.len())
    }

    /// Waits until the serial log, from byte `from`, contains `pattern`; returns the line holding
    /// it (ANSI escapes removed).
    pub async fn wait_for_serial(
        &self,
        pattern: &str,
        from: u64,
        timeout: std::time::Duration,
    ) -> Result<String> {
        let log = self.serial_log();
        let started = std::time::Instant::now();
        loop {
            let text = read_from(&log, from);
            if let Some(line) = find_line(&text, pattern) {
                return Ok(line);
            }
            if started.elapsed() > timeout {
                return Err(LabError::Timeout {
                    pattern: pattern.to_string(),
                    log,
                    timeout,
                    tail: tail(&text, 20),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

impl Drop for LabBmc {
    fn drop(&mut self) {
        self.sim = None;
        if !self.detached {
            self.machine.kill_qemu();
        }
    }
}

/// A running lab. Dropping it (or [`Lab::teardown`]) stops the machines and the server and
/// deletes the namespace; [`Lab::detach`] leaves it running for [`crate::down`].
#[derive(Debug)]
pub struct Lab {
    // Field order is drop order: processes before the namespace they run in.
    server: Option<LabProcess>,
    helpers: Vec<LabProcess>,
    bmcs: Vec<LabBmc>,
    redfish: Option<RedfishService>,
    machines: Vec<QemuMachine>,
    netns: Netns,
    dir: PathBuf,
}

impl Lab {
    /// Creates the namespace, bridge and one tap per machine; machines are not started.
    pub fn create(config: LabConfig) -> Result<Lab> {
        let sushy = match config.bmc {
            Some(BmcKind::Redfish) => Some(crate::redfish::check_prerequisites(&config.dir)?),
            _ => None,
        };
        if config.bmc.is_some() && config.machines.len() > usize::from(u16::MAX - IPMI_BASE_PORT) {
            return Err(LabError::Config(
                "too many machines for one BMC port each".into(),
            ));
        }
        std::fs::create_dir_all(&config.dir)
            .map_err(io_err(format!("create {}", config.dir.display())))?;
        let mut netns_config = NetnsConfig::new(
            &config.netns,
            config.bridge_addr,
            config.prefix_len,
            config.machines.len(),
        );
        netns_config.ipv4 = config.ipv4;
        netns_config.bridge_addr6 = config.bridge_addr6;
        if config.bmc == Some(BmcKind::Redfish) {
            // libvirt's session daemon runs QEMU as nobody; it opens the taps unprivileged.
            netns_config.tap_owner = Some(REDFISH_UID);
        }
        let machine_configs: Vec<MachineConfig> = config
            .machines
            .iter()
            .enumerate()
            .map(|(i, spec)| MachineConfig {
                name: format!("m{}", i + 1),
                mac: lab_mac(i),
                tap: netns_config.taps[i].clone(),
                firmware: spec.firmware.clone(),
                memory_mib: spec.memory_mib,
                nic_rom: spec.nic_rom.clone(),
                disks_mib: spec.disks_mib.clone(),
                dmi_serial: spec.dmi_serial.clone(),
                boot: spec.boot,
                no_reboot: spec.no_reboot,
                dir: config.dir.clone(),
                extra_args: spec.extra_args.clone(),
            })
            .collect();
        let machines = machine_configs
            .iter()
            .cloned()
            .map(QemuMachine::new)
            .collect::<Result<Vec<_>>>()?;
        // IPMI: BMC i listens on the bridge address, UDP port 6231, 6232, ...: one address the
        // server in the namespace reaches, no extra addresses in the machines' DHCP subnet.
        // Redfish: one sushy-emulator on the bridge address, port 8000, one system per machine.
        let mut ipmi_configs: Vec<(VmChassis, IpmiSimConfig)> = Vec::new();
        let records: Vec<MachineRecord> = machine_configs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let mut record = MachineRecord {
                    name: m.name.clone(),
                    mac: format_mac(&m.mac),
                    bmc_url: None,
                    qemu_pid_file: None,
                    qemu_tag: None,
                };
                match config.bmc {
                    Some(BmcKind::Ipmi) => {
                        let chassis = VmChassis::new(&config.netns, m.clone());
                        let mut sim = IpmiSimConfig::new(
                            &m.name,
                            &config.dir,
                            config.bridge_addr,
                            IPMI_BASE_PORT + i as u16 + 1,
                        );
                        sim.chassis_control = Some(chassis.program());
                        record.bmc_url = Some(sim.url());
                        record.qemu_pid_file = Some(chassis.pid_file());
                        ipmi_configs.push((chassis, sim));
                    }
                    Some(BmcKind::Redfish) => {
                        let uuid = domain_uuid(&config.netns, &m.name);
                        let env = RedfishEnv::new(&config.netns, &config.dir);
                        record.bmc_url = Some(redfish_url(config.bridge_addr, REDFISH_PORT, &uuid));
                        record.qemu_pid_file = Some(env.qemu_pid_file(&m.name));
                        record.qemu_tag = Some(uuid);
                    }
                    None => {}
                }
                record
            })
            .collect();
        let state = match &config.state_file {
            Some(path) => {
                if path.exists() {
                    let old = read_state(path)?;
                    if !old.netns.is_empty() && netns_exists(&old.netns) {
                        return Err(LabError::Config(format!(
                            "a lab ({}) is already up according to {}; take it down first",
                            old.netns,
                            path.display()
                        )));
                    }
                    // Leftovers of a lab whose namespace is gone: stop its processes.
                    down(path)?;
                }
                Some(StateFile::create(
                    path,
                    LabState {
                        netns: config.netns.clone(),
                        dir: Some(config.dir.clone()),
                        processes: Vec::new(),
                        machines: records.clone(),
                    },
                )?)
            }
            None => None,
        };
        let prepared = machines.iter().try_for_each(|machine| {
            // A previous lab in the same directory may have left a disk selection behind; the
            // disks themselves exist from here on, so a test can write an image onto one.
            machine.set_attached_disks(None)?;
            machine.prepare_files()
        });
        if let Err(err) = prepared {
            if let Some(state) = &state {
                let _ = lock(state).delete();
            }
            return Err(err);
        }
        let netns = match Netns::create_with_state(&netns_config, state.clone()) {
            Ok(netns) => netns,
            Err(err) => {
                if let Some(state) = &state {
                    let _ = lock(state).delete();
                }
                return Err(err);
            }
        };
        // From here on, dropping `lab` removes whatever was built if a BMC fails to start.
        let mut lab = Lab {
            server: None,
            helpers: Vec::new(),
            bmcs: Vec::new(),
            redfish: None,
            machines,
            netns,
            dir: config.dir,
        };
        for ((chassis, sim_config), record) in ipmi_configs.into_iter().zip(&records) {
            // A previous lab in the same directory may have left a boot device behind.
            let _ = std::fs::remove_file(chassis.boot_device_file());
            chassis.install()?;
            let sim = IpmiSim::start(sim_config, Some(&lab.netns))?;
            lab.bmcs.push(LabBmc {
                sim: Some(sim),
                serial_log: chassis.machine().serial_log(),
                power: BmcPower::Chassis(Box::new(chassis)),
                machine: record.clone(),
                detached: false,
            });
        }
        if let Some(sushy) = sushy {
            let service = RedfishService::start(&lab.netns, &sushy, &lab.dir, &machine_configs)?;
            for (m, record) in machine_configs.iter().zip(&records) {
                lab.bmcs.push(LabBmc {
                    sim: None,
                    serial_log: m.serial_log(),
                    power: BmcPower::Libvirt(service.env().clone()),
                    machine: record.clone(),
                    detached: false,
                });
            }
            lab.redfish = Some(service);
        }
        Ok(lab)
    }

    /// Machine `index`'s BMC, in a lab created with [`LabConfig::bmc`].
    pub fn bmc(&self, index: usize) -> Option<&LabBmc> {
        self.bmcs.get(index)
    }

    /// Every machine's BMC, in machine order (empty without [`LabConfig::bmc`]).
    pub fn bmcs(&self) -> &[LabBmc] {
        &self.bmcs
    }

    /// The lab's libvirtd + sushy-emulator (Redfish labs).
    pub fn redfish(&self) -> Option<&RedfishService> {
        self.redfish.as_ref()
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bridge address: where the server under test serves DHCP/TFTP/HTTP.
    pub fn bridge_addr(&self) -> Ipv4Addr {
        self.netns.bridge_addr()
    }

    /// The bridge's IPv6 address, in a lab with IPv6.
    pub fn bridge_addr6(&self) -> Option<Ipv6Addr> {
        self.netns.bridge_addr6()
    }

    pub fn machines(&self) -> &[QemuMachine] {
        &self.machines
    }

    pub fn machines_mut(&mut self) -> &mut [QemuMachine] {
        &mut self.machines
    }

    /// Machine `index` (0-based; named `m{index+1}`). Panics if out of range, like slice indexing.
    pub fn machine(&self, index: usize) -> &QemuMachine {
        &self.machines[index]
    }

    pub fn machine_mut(&mut self, index: usize) -> &mut QemuMachine {
        &mut self.machines[index]
    }

    /// Powers machine `index` on (in a BMC lab: through its chassis program, as the BMC would).
    pub fn start_machine(&mut self, index: usize) -> Result<()> {
        if !self.bmcs.is_empty() {
            return self.bmc_of(index)?.power_on();
        }
        let machine = self.machines.get_mut(index).ok_or_else(|| {
            LabError::Config(format!("the lab has no machine with index {index}"))
        })?;
        machine.start(&self.netns)
    }

    /// Cuts machine `index`'s power (SIGKILL to QEMU); [`Lab::start_machine`] powers it on again
    /// (with its disk and UEFI variables kept, like a real power cycle).
    pub fn stop_machine(&mut self, index: usize) -> Result<()> {
        if !self.bmcs.is_empty() {
            return self.bmc_of(index)?.power_off();
        }
        let machine = self.machines.get_mut(index).ok_or_else(|| {
            LabError::Config(format!("the lab has no machine with index {index}"))
        })?;
        machine.kill()
    }

    /// Powers every machine on (in a BMC lab: through their chassis programs; a BMC lab whose
    /// machines should be powered by the server under test does not call this).
    pub fn start_all(&mut self) -> Result<()> {
        for bmc in &self.bmcs {
            bmc.power_on()?;
        }
        if !self.bmcs.is_empty() {
            return Ok(());
        }
        for machine in &mut self.machines {
            machine.start(&self.netns)?;
        }
        Ok(())
    }

    /// Attaches only `disks` (0-based; `None`: all) of machine `index` from its next power-on
    /// on, whether the lab starts it or its BMC does (the chassis program reads the same
    /// [`MachineConfig::attached_disks_file`]; a Redfish lab redefines the libvirt domain). A
    /// running machine keeps its disks until it is powered off.
    pub fn set_attached_disks(&self, index: usize, disks: Option<Vec<usize>>) -> Result<()> {
        let machine = self.machines.get(index).ok_or_else(|| {
            LabError::Config(format!("the lab has no machine with index {index}"))
        })?;
        machine.set_attached_disks(disks.as_deref())?;
        if let Some(redfish) = &self.redfish {
            redfish.redefine(machine.config())?;
        }
        Ok(())
    }

    fn bmc_of(&self, index: usize) -> Result<&LabBmc> {
        self.bmcs
            .get(index)
            .ok_or_else(|| LabError::Config(format!("the lab has no machine with index {index}")))
    }

    /// Starts the server under test inside the namespace: `program args...`, output to
    /// `DIR/server.log`. The caller passes whatever makes it listen on [`Lab::bridge_addr`] /
    /// [`Netns::bridge`].
    pub fn spawn_server<I, S>(&mut self, program: impl AsRef<OsStr>, args: I) -> Result<&LabProcess>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.netns.command(program);
        cmd.args(args);
        self.spawn_server_command(cmd)
    }

    /// Like [`Lab::spawn_server`] for a prepared command (from `lab.netns().command(..)`, e.g.
    /// with environment variables set).
    pub fn spawn_server_command(&mut self, cmd: Command) -> Result<&LabProcess> {
        if self.server.as_ref().is_some_and(LabProcess::is_running) {
            return Err(LabError::Config(
                "the lab's server is already running".into(),
            ));
        }
        self.server = None;
        let log = self.dir.join("server.log");
        Ok(self.server.insert(self.netns.spawn("server", cmd, &log)?))
    }

    pub fn server(&self) -> Option<&LabProcess> {
        self.server.as_ref()
    }

    /// Stops the server (SIGTERM, then SIGKILL after a grace period).
    pub fn stop_server(&mut self) -> Result<()> {
        if let Some(server) = self.server.take() {
            server.stop()?;
        }
        Ok(())
    }

    /// Starts another process in the namespace (a stand-in server, a packet capture, a BMC
    /// emulator), output to `DIR/NAME.log`; it lives as long as the lab.
    pub fn spawn_helper(&mut self, name: &str, cmd: Command) -> Result<&LabProcess> {
        let log = self.dir.join(format!("{name}.log"));
        let process = self.netns.spawn(name, cmd, &log)?;
        self.helpers.push(process);
        Ok(self.helpers.last().expect("just pushed"))
    }

    /// Stops everything and deletes the namespace (and the state file, if any).
    pub fn teardown(mut self) -> Result<()> {
        self.server = None;
        self.helpers.clear();
        self.bmcs.clear();
        self.redfish = None;
        self.machines.clear();
        self.netns.teardown()
    }

    /// Leaves the lab running (for `rackboot lab up`); [`crate::down`] with the state file removes
    /// it later. Returns what the state file records.
    pub fn detach(self) -> LabState {
        let Lab {
            server,
            helpers,
            bmcs,
            redfish,
            machines,
            netns,
            dir,
        } = self;
        let mut state = LabState {
            netns: netns.name().to_string(),
            dir: Some(dir),
            processes: Vec::new(),
            machines: Vec::new(),
        };
        for (i, machine) in machines.iter().enumerate() {
            state.machines.push(match bmcs.get(i) {
                Some(bmc) => bmc.machine.clone(),
                None => MachineRecord {
                    name: machine.name().to_string(),
                    mac: machine.mac(),
                    bmc_url: None,
                    qemu_pid_file: None,
                    qemu_tag: None,
                },
            });
        }
        let bmc_processes: Vec<LabProcess> = bmcs
            .into_iter()
            .filter_map(|mut bmc| {
                // The VM keeps running; `down` finds it through its pid file.
                bmc.detached = true;
                bmc.sim.take().map(IpmiSim::into_process)
            })
            .chain(redfish.into_iter().flat_map(RedfishService::into_processes))
            .collect();
        let processes = server
            .into_iter()
            .chain(helpers)
            .chain(bmc_processes)
            .chain(machines.into_iter().filter_map(QemuMachine::into_process));
        for process in processes {
            state.processes.push(crate::ProcessRecord {
                name: process.name().to_string(),
                pid: process.pid(),
                start_time: crate::process::start_time(process.pid()).unwrap_or(0),
            });
            // Not stopped: the process outlives this handle on purpose.
            std::mem::forget(process);
        }
        netns.detach();
        state
    }
}
