//! The virtual rack: one namespace, one bridge, N machines, and the server under test.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netns::{Netns, NetnsConfig, netns_exists, unique_name};
use crate::process::{LabProcess, lock};
use crate::qemu::{BootOrder, Firmware, MachineConfig, NicRom, QemuMachine};
use crate::state::{LabState, StateFile, down, read_state};
use crate::{LabError, Result, io_err};

pub const DEFAULT_BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const DEFAULT_PREFIX_LEN: u8 = 24;

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
    pub disk_mib: Option<u64>,
    pub boot: BootOrder,
    pub no_reboot: bool,
    pub extra_args: Vec<String>,
}

impl MachineSpec {
    /// SeaBIOS, 512 MiB, default iPXE NIC ROM, no disk, network first.
    pub fn bios() -> MachineSpec {
        MachineSpec {
            firmware: Firmware::Bios,
            memory_mib: 512,
            nic_rom: NicRom::Default,
            disk_mib: None,
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
        self.disk_mib = Some(mib);
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
    /// If set, the lab records its namespace and processes here (e.g. STATE_DIR/lab.json) so
    /// [`crate::down`] can remove it from another process.
    pub state_file: Option<PathBuf>,
    /// Machine `i` is named `m{i+1}`, has MAC [`lab_mac`]`(i)` and tap `tap{i+1}`.
    pub machines: Vec<MachineSpec>,
}

impl LabConfig {
    /// A lab in `dir` with a unique namespace name, bridge 10.77.0.1/24, no state file.
    pub fn new(dir: impl Into<PathBuf>, machines: Vec<MachineSpec>) -> LabConfig {
        LabConfig {
            dir: dir.into(),
            netns: unique_name("rbl"),
            bridge_addr: DEFAULT_BRIDGE_ADDR,
            prefix_len: DEFAULT_PREFIX_LEN,
            state_file: None,
            machines,
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
    machines: Vec<QemuMachine>,
    netns: Netns,
    dir: PathBuf,
}

impl Lab {
    /// Creates the namespace, bridge and one tap per machine; machines are not started.
    pub fn create(config: LabConfig) -> Result<Lab> {
        std::fs::create_dir_all(&config.dir)
            .map_err(io_err(format!("create {}", config.dir.display())))?;
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
                    },
                )?)
            }
            None => None,
        };
        let netns_config = NetnsConfig::new(
            &config.netns,
            config.bridge_addr,
            config.prefix_len,
            config.machines.len(),
        );
        let netns = match Netns::create_with_state(&netns_config, state.clone()) {
            Ok(netns) => netns,
            Err(err) => {
                if let Some(state) = &state {
                    let _ = lock(state).delete();
                }
                return Err(err);
            }
        };
        let machines = config
            .machines
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                QemuMachine::new(MachineConfig {
                    name: format!("m{}", i + 1),
                    mac: lab_mac(i),
                    tap: netns_config.taps[i].clone(),
                    firmware: spec.firmware.clone(),
                    memory_mib: spec.memory_mib,
                    nic_rom: spec.nic_rom.clone(),
                    disk_mib: spec.disk_mib,
                    boot: spec.boot,
                    no_reboot: spec.no_reboot,
                    dir: config.dir.clone(),
                    extra_args: spec.extra_args.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Lab {
            server: None,
            helpers: Vec::new(),
            machines,
            netns,
            dir: config.dir,
        })
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

    /// Powers machine `index` on.
    pub fn start_machine(&mut self, index: usize) -> Result<()> {
        let machine = self.machines.get_mut(index).ok_or_else(|| {
            LabError::Config(format!("the lab has no machine with index {index}"))
        })?;
        machine.start(&self.netns)
    }

    /// Cuts machine `index`'s power (SIGKILL to QEMU); [`Lab::start_machine`] powers it on again
    /// (with its disk and UEFI variables kept, like a real power cycle).
    pub fn stop_machine(&mut self, index: usize) -> Result<()> {
        let machine = self.machines.get_mut(index).ok_or_else(|| {
            LabError::Config(format!("the lab has no machine with index {index}"))
        })?;
        machine.kill()
    }

    /// Powers every machine on.
    pub fn start_all(&mut self) -> Result<()> {
        for machine in &mut self.machines {
            machine.start(&self.netns)?;
        }
        Ok(())
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
        self.machines.clear();
        self.netns.teardown()
    }

    /// Leaves the lab running (for `rackboot lab up`); [`crate::down`] with the state file removes
    /// it later. Returns what the state file records.
    pub fn detach(self) -> LabState {
        let Lab {
            server,
            helpers,
            machines,
            netns,
            dir,
        } = self;
        let mut state = LabState {
            netns: netns.name().to_string(),
            dir: Some(dir),
            processes: Vec::new(),
        };
        let processes = server
            .into_iter()
            .chain(helpers)
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
