//! One QEMU virtual machine network-booting from a tap device in the lab namespace.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::firmware::{OVMF_CODE, OVMF_VARS};
use crate::netns::Netns;
use crate::process::{LabProcess, read_from, strip_ansi, wait_for_pattern};
use crate::{LabError, Result, io_err};

/// The machine's firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS (QEMU's default); network boot comes from the NIC's iPXE option ROM.
    Bios,
    /// OVMF from pflash, with a private copy of the variable store.
    Uefi(UefiFirmware),
}

impl Firmware {
    /// OVMF from Debian's `ovmf` package.
    pub fn uefi() -> Firmware {
        Firmware::Uefi(UefiFirmware::default())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiFirmware {
    /// Read-only code image (e.g. OVMF_CODE_4M.fd).
    pub code: PathBuf,
    /// Variable store template, copied once per machine (e.g. OVMF_VARS_4M.fd).
    pub vars_template: PathBuf,
}

impl Default for UefiFirmware {
    fn default() -> Self {
        UefiFirmware {
            code: PathBuf::from(OVMF_CODE),
            vars_template: PathBuf::from(OVMF_VARS),
        }
    }
}

/// The virtio NIC's option ROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicRom {
    /// QEMU's default for virtio-net-pci: efi-virtio.rom (iPXE, legacy + EFI).
    Default,
    /// No ROM: SeaBIOS cannot network-boot; OVMF uses its own PXE client (the realistic UEFI path).
    None,
    /// A specific ROM file.
    File(PathBuf),
}

/// Which device the firmware tries first; the other follows (as on a real server whose BMC boot
/// device was set to PXE or disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootOrder {
    NetworkFirst,
    DiskFirst,
}

/// Everything needed to start one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// Short name (`m1`); files in `dir` are named after it.
    pub name: String,
    pub mac: [u8; 6],
    /// Tap device in the lab namespace.
    pub tap: String,
    pub firmware: Firmware,
    pub memory_mib: u32,
    pub nic_rom: NicRom,
    /// A blank sparse raw disk of this size (created on first start, kept across restarts).
    pub disk_mib: Option<u64>,
    pub boot: BootOrder,
    /// Exit QEMU when the guest reboots instead of rebooting.
    pub no_reboot: bool,
    /// Directory for the serial log, disk image, UEFI variables and QEMU's own output.
    pub dir: PathBuf,
    /// Appended to the QEMU command line as is.
    pub extra_args: Vec<String>,
}

impl MachineConfig {
    /// The guest's serial console (ttyS0). Appended to across restarts.
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join(format!("{}.serial.log", self.name))
    }

    /// QEMU's own stdout/stderr.
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join(format!("{}.qemu.log", self.name))
    }

    pub fn disk_path(&self) -> PathBuf {
        self.dir.join(format!("{}.disk.raw", self.name))
    }

    pub fn vars_path(&self) -> PathBuf {
        self.dir.join(format!("{}.vars.fd", self.name))
    }
}

/// `52:54:00:00:00:01` form.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// QEMU option values separate sub-options with ',': a literal comma is written twice.
fn qemu_escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The qemu-system-x86_64 arguments (without the program) for `config`.
pub fn qemu_args(config: &MachineConfig) -> Vec<String> {
    let (net_index, disk_index) = match config.boot {
        BootOrder::NetworkFirst => (1, 2),
        BootOrder::DiskFirst => (2, 1),
    };
    let mut args: Vec<String> = [
        "-name",
        &config.name,
        "-accel",
        "tcg",
        "-m",
        &config.memory_mib.to_string(),
        "-smp",
        "1",
        "-nographic",
        "-nodefaults",
        "-monitor",
        "none",
        "-chardev",
        &format!(
            "file,id=serial0,path={},append=on",
            qemu_escape(&config.serial_log())
        ),
        "-serial",
        "chardev:serial0",
        "-netdev",
        &format!("tap,id=net0,ifname={},script=no,downscript=no", config.tap),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let mut nic = format!(
        "virtio-net-pci,netdev=net0,mac={},bootindex={net_index}",
        format_mac(&config.mac)
    );
    match &config.nic_rom {
        NicRom::Default => {}
        NicRom::None => nic.push_str(",romfile="),
        NicRom::File(path) => nic.push_str(&format!(",romfile={}", qemu_escape(path))),
    }
    args.extend(["-device".to_string(), nic]);

    if config.disk_mib.is_some() {
        args.extend([
            "-drive".to_string(),
            format!(
                "file={},if=none,id=disk0,format=raw",
                qemu_escape(&config.disk_path())
            ),
            "-device".to_string(),
            format!("virtio-blk-pci,drive=disk0,bootindex={disk_index}"),
        ]);
    }
    if let Firmware::Uefi(uefi) = &config.firmware {
        args.extend([
            "-drive".to_string(),
            format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                qemu_escape(&uefi.code)
            ),
            "-drive".to_string(),
            format!(
                "if=pflash,format=raw,unit=1,file={}",
                qemu_escape(&config.vars_path())
            ),
        ]);
    }
    if config.no_reboot {
        args.push("-no-reboot".to_string());
    }
    args.extend(config.extra_args.iter().cloned());
    args
}

/// Creates the machine's directory, its blank disk and its UEFI variable store unless they exist
/// (they are kept across power cycles, like a real machine's disk and NVRAM).
pub(crate) fn prepare_machine_files(config: &MachineConfig) -> Result<()> {
    let dir = &config.dir;
    std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    if let Some(mib) = config.disk_mib {
        let disk = config.disk_path();
        if !disk.exists() {
            let file = std::fs::File::create(&disk)
                .map_err(io_err(format!("create {}", disk.display())))?;
            file.set_len(mib * 1024 * 1024)
                .map_err(io_err(format!("size {}", disk.display())))?;
        }
    }
    if let Firmware::Uefi(uefi) = &config.firmware {
        let vars = config.vars_path();
        if !vars.exists() {
            std::fs::copy(&uefi.vars_template, &vars).map_err(io_err(format!(
                "copy {} to {}",
                uefi.vars_template.display(),
                vars.display()
            )))?;
        }
    }
    Ok(())
}

/// A QEMU machine: configured once, started (and restarted) in a namespace.
#[derive(Debug)]
pub struct QemuMachine {
    config: MachineConfig,
    process: Option<LabProcess>,
    /// Serial log length when the current run started: waits only look at this run's output.
    boot_offset: u64,
}

impl QemuMachine {
    pub fn new(config: MachineConfig) -> Result<QemuMachine> {
        if config.name.is_empty()
            || !config
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(LabError::Config(format!(
                "machine name {:?} must be [A-Za-z0-9_-]+",
                config.name
            )));
        }
        if config.memory_mib < 128 {
            return Err(LabError::Config(format!(
                "machine {} needs at least 128 MiB, got {}",
                config.name, config.memory_mib
            )));
        }
        Ok(QemuMachine {
            config,
            process: None,
            boot_offset: 0,
        })
    }

    pub fn config(&self) -> &MachineConfig {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn mac(&self) -> String {
        format_mac(&self.config.mac)
    }

    /// Changes the boot order for the next start (like setting the boot device on a BMC).
    pub fn set_boot_order(&mut self, boot: BootOrder) {
        self.config.boot = boot;
    }

    /// Powers the machine on inside `netns`: creates the disk and UEFI variable store on first
    /// start, then spawns QEMU. Fails if it is already running.
    pub fn start(&mut self, netns: &Netns) -> Result<()> {
        if self.is_running() {
            return Err(LabError::Config(format!(
                "machine {} is already running",
                self.config.name
            )));
        }
        prepare_machine_files(&self.config)?;
        let serial = self.config.serial_log();
        self.boot_offset = std::fs::metadata(&serial).map_or(0, |m| m.len());
        let mut cmd = netns.command("qemu-system-x86_64");
        cmd.args(qemu_args(&self.config));
        self.process = None; // reap the previous run, if any
        let process = netns.spawn(
            &format!("qemu-{}", self.config.name),
            cmd,
            &self.config.qemu_log(),
        )?;
        tracing::info!(machine = self.config.name, mac = %self.mac(), pid = process.pid(), "machine started");
        self.process = Some(process);
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(LabProcess::is_running)
    }

    /// The QEMU process of the current (or last) run.
    pub fn process(&self) -> Option<&LabProcess> {
        self.process.as_ref()
    }

    /// Waits until this run's serial output contains `pattern`; returns the line holding it
    /// (ANSI escapes removed). Fails early if QEMU exits first.
    pub async fn wait_for_serial(&self, pattern: &str, timeout: Duration) -> Result<String> {
        let process = self.process.as_ref().ok_or_else(|| LabError::NotRunning {
            name: self.config.name.clone(),
        })?;
        wait_for_pattern(
            process,
            &self.config.serial_log(),
            self.boot_offset,
            pattern,
            timeout,
        )
        .await
    }

    /// This run's serial output so far, ANSI escapes removed.
    pub fn serial_text(&self) -> String {
        strip_ansi(&read_from(&self.config.serial_log(), self.boot_offset))
    }

    /// Waits for QEMU to exit by itself (the marker initramfs powers off).
    pub async fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        match &self.process {
            Some(process) => process.wait_exit(timeout).await,
            None => Err(LabError::NotRunning {
                name: self.config.name.clone(),
            }),
        }
    }

    /// The QEMU process, leaving the machine unstarted (for `Lab::detach`).
    pub(crate) fn into_process(mut self) -> Option<LabProcess> {
        self.process.take()
    }

    /// Cuts the power (SIGKILL to QEMU). No-op if not running.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(process) = &self.process {
            process.kill()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MachineConfig {
        MachineConfig {
            name: "m1".into(),
            mac: [0x52, 0x54, 0, 0, 0, 1],
            tap: "tap1".into(),
            firmware: Firmware::Bios,
            memory_mib: 512,
            nic_rom: NicRom::Default,
            disk_mib: None,
            boot: BootOrder::NetworkFirst,
            no_reboot: false,
            dir: PathBuf::from("/lab"),
            extra_args: vec![],
        }
    }

    fn joined(config: &MachineConfig) -> String {
        qemu_args(config).join(" ")
    }

    #[test]
    fn bios_machine_args() {
        assert_eq!(
            joined(&config()),
            "-name m1 -accel tcg -m 512 -smp 1 -nographic -nodefaults -monitor none \
             -chardev file,id=serial0,path=/lab/m1.serial.log,append=on -serial chardev:serial0 \
             -netdev tap,id=net0,ifname=tap1,script=no,downscript=no \
             -device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bootindex=1"
        );
    }

    #[test]
    fn uefi_machine_with_disk_first_and_no_rom() {
        let mut c = config();
        c.firmware = Firmware::uefi();
        c.nic_rom = NicRom::None;
        c.disk_mib = Some(64);
        c.boot = BootOrder::DiskFirst;
        c.no_reboot = true;
        let args = joined(&c);
        assert!(args.contains("mac=52:54:00:00:00:01,bootindex=2,romfile= "));
        assert!(args.contains(
            "-drive file=/lab/m1.disk.raw,if=none,id=disk0,format=raw -device virtio-blk-pci,drive=disk0,bootindex=1"
        ));
        assert!(args.contains(
            "-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
        ));
        assert!(args.contains("-drive if=pflash,format=raw,unit=1,file=/lab/m1.vars.fd"));
        assert!(args.ends_with("-no-reboot"));
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let mut c = config();
        c.dir = PathBuf::from("/a,b");
        c.nic_rom = NicRom::File(PathBuf::from("/roms/x,y.rom"));
        let args = joined(&c);
        assert!(args.contains("path=/a,,b/m1.serial.log,append=on"));
        assert!(args.contains("romfile=/roms/x,,y.rom"));
    }

    #[test]
    fn bad_names_and_tiny_memory_are_rejected() {
        let mut c = config();
        c.name = "m 1".into();
        assert!(QemuMachine::new(c).is_err());
        let mut c = config();
        c.memory_mib = 64;
        assert!(QemuMachine::new(c).is_err());
    }
}
