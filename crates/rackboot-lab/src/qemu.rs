//! One QEMU virtual machine network-booting from a tap device in the lab namespace.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use crate::firmware::{AAVMF_CODE, AAVMF_VARS, OVMF_CODE, OVMF_VARS};
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
    /// An arm64 machine: AAVMF (UEFI for QEMU's `virt` board) from pflash, with a
    /// private copy of the variable store, under qemu-system-aarch64 (TCG, Cortex-A57).
    /// Its serial console is the board's PL011 (`console=ttyAMA0`).
    UefiArm64(UefiFirmware),
}

impl Firmware {
    /// OVMF from Debian's `ovmf` package.
    pub fn uefi() -> Firmware {
        Firmware::Uefi(UefiFirmware::default())
    }

    /// AAVMF from Debian's `qemu-efi-aarch64` package.
    pub fn uefi_arm64() -> Firmware {
        Firmware::UefiArm64(UefiFirmware {
            code: PathBuf::from(AAVMF_CODE),
            vars_template: PathBuf::from(AAVMF_VARS),
        })
    }

    /// The UEFI firmware files, for either architecture.
    pub fn uefi_files(&self) -> Option<&UefiFirmware> {
        match self {
            Firmware::Bios => None,
            Firmware::Uefi(u) | Firmware::UefiArm64(u) => Some(u),
        }
    }

    /// The QEMU program that runs this machine.
    pub fn emulator(&self) -> &'static str {
        match self {
            Firmware::UefiArm64(_) => "qemu-system-aarch64",
            Firmware::Bios | Firmware::Uefi(_) => "qemu-system-x86_64",
        }
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
    /// Blank sparse raw disks of these sizes in MiB (created on first start, kept across
    /// restarts), attached as virtio-blk with serial [`MachineConfig::disk_serial`]; disk 0 comes
    /// first in the boot order. [`MachineConfig::attached_disks_file`] may leave some out.
    pub disks_mib: Vec<u64>,
    /// The SMBIOS system serial number; `None`: `RBLAB-<name>`.
    pub dmi_serial: Option<String>,
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

    /// Disk `index` (0-based): `DIR/NAME.disk<index>.raw`.
    pub fn disk_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("{}.disk{index}.raw", self.name))
    }

    /// Disk `index`'s virtio serial number, `rb<name>d<index>` (what the guest reads in
    /// /sys/block/vdX/serial and /dev/disk/by-id; stable whichever disks are attached).
    pub fn disk_serial(&self, index: usize) -> String {
        format!("rb{}d{index}", self.name)
    }

    /// The SMBIOS system serial number the guest sees (/sys/class/dmi/id/product_serial).
    pub fn dmi_serial(&self) -> String {
        self.dmi_serial
            .clone()
            .unwrap_or_else(|| format!("RBLAB-{}", self.name))
    }

    /// Which disks the next power-on attaches: absent means all, else one line of 0-based disk
    /// indices separated by spaces (written by [`write_attached_disks`]). Read at every start,
    /// by [`QemuMachine::start`] and by the BMC chassis program alike.
    pub fn attached_disks_file(&self) -> PathBuf {
        self.dir.join(format!("{}.attached-disks", self.name))
    }

    /// The disks the next power-on attaches (see [`MachineConfig::attached_disks_file`]).
    pub fn attached_disks(&self) -> Result<Vec<usize>> {
        let file = self.attached_disks_file();
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok((0..self.disks_mib.len()).collect());
            }
            Err(err) => {
                return Err(LabError::Io {
                    what: format!("read {}", file.display()),
                    source: err,
                });
            }
        };
        let disks = text
            .split_whitespace()
            .map(|word| {
                word.parse::<usize>().map_err(|_| {
                    LabError::Config(format!("{}: {word:?} is not a disk index", file.display()))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        check_attached_disks(self, &disks)?;
        Ok(disks)
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

/// `disks` must name distinct disks of `config` (0-based indices).
pub(crate) fn check_attached_disks(config: &MachineConfig, disks: &[usize]) -> Result<()> {
    for (i, disk) in disks.iter().enumerate() {
        if *disk >= config.disks_mib.len() {
            return Err(LabError::Config(format!(
                "machine {} has {} disks: there is no disk {disk}",
                config.name,
                config.disks_mib.len()
            )));
        }
        if disks[..i].contains(disk) {
            return Err(LabError::Config(format!(
                "disk {disk} of machine {} is listed twice",
                config.name
            )));
        }
    }
    Ok(())
}

/// Records which disks `config`'s machine attaches at its next power-on (`None`: all of them), in
/// [`MachineConfig::attached_disks_file`].
pub fn write_attached_disks(config: &MachineConfig, disks: Option<&[usize]>) -> Result<()> {
    let file = config.attached_disks_file();
    match disks {
        Some(disks) => {
            check_attached_disks(config, disks)?;
            let line: Vec<String> = disks.iter().map(usize::to_string).collect();
            std::fs::create_dir_all(&config.dir)
                .map_err(io_err(format!("create {}", config.dir.display())))?;
            std::fs::write(&file, format!("{}\n", line.join(" ")))
                .map_err(io_err(format!("write {}", file.display())))
        }
        None => match std::fs::remove_file(&file) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(LabError::Io {
                what: format!("remove {}", file.display()),
                source: err,
            }),
            _ => Ok(()),
        },
    }
}

/// A machine's QEMU command line in three parts, so a subset of its disks can be attached:
/// `head`, then the arguments of each attached disk, then `tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuArgParts {
    /// Machine, console, DMI and NIC.
    pub head: Vec<String>,
    /// Per disk (index = disk index): its `-drive` and `-device` arguments.
    pub disks: Vec<Vec<String>>,
    /// Firmware flash, `-no-reboot`, the extra arguments.
    pub tail: Vec<String>,
}

/// Boot priorities (`bootindex`): with the network first the NIC is 1 and disk i is 2+i; with the
/// disks first disk i is 1+i and the NIC follows them. They do not depend on which disks are
/// attached (gaps are fine), so a disk keeps its place when another is left out.
fn boot_indexes(config: &MachineConfig) -> (usize, impl Fn(usize) -> usize) {
    let disks = config.disks_mib.len();
    let network_first = config.boot == BootOrder::NetworkFirst;
    let nic = if network_first { 1 } else { disks + 1 };
    (
        nic,
        move |disk: usize| {
            if network_first { disk + 2 } else { disk + 1 }
        },
    )
}

/// The qemu-system-x86_64 arguments (without the program) for `config` with every disk attached.
pub fn qemu_args(config: &MachineConfig) -> Vec<String> {
    let all: Vec<usize> = (0..config.disks_mib.len()).collect();
    qemu_args_with_disks(config, &all).expect("every disk exists")
}

/// The qemu-system-x86_64 arguments for `config` with only `disks` (0-based, distinct) attached.
pub fn qemu_args_with_disks(config: &MachineConfig, disks: &[usize]) -> Result<Vec<String>> {
    check_attached_disks(config, disks)?;
    let mut parts = qemu_arg_parts(config);
    let mut args = std::mem::take(&mut parts.head);
    for disk in disks {
        args.append(&mut parts.disks[*disk]);
    }
    args.append(&mut parts.tail);
    Ok(args)
}

/// The parts of `config`'s QEMU command line (see [`QemuArgParts`]).
pub fn qemu_arg_parts(config: &MachineConfig) -> QemuArgParts {
    let (net_index, disk_index) = boot_indexes(config);
    let board: &[&str] = match config.firmware {
        Firmware::UefiArm64(_) => &["-machine", "virt", "-cpu", "cortex-a57"],
        Firmware::Bios | Firmware::Uefi(_) => &[],
    };
    let mut args: Vec<String> = ["-name", &config.name]
        .iter()
        .chain(board)
        .chain(&[
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
            "-smbios",
            &format!(
                "type=1,manufacturer=rackboot-lab,product=lab-vm,serial={}",
                config.dmi_serial().replace(',', ",,")
            ),
            "-netdev",
            &format!("tap,id=net0,ifname={},script=no,downscript=no", config.tap),
        ])
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

    let disks = (0..config.disks_mib.len())
        .map(|i| {
            vec![
                "-drive".to_string(),
                format!(
                    "file={},if=none,id=disk{i},format=raw",
                    qemu_escape(&config.disk_path(i))
                ),
                "-device".to_string(),
                format!(
                    "virtio-blk-pci,drive=disk{i},serial={},bootindex={}",
                    config.disk_serial(i),
                    disk_index(i)
                ),
            ]
        })
        .collect();
    let mut tail = Vec::new();
    if let Some(uefi) = config.firmware.uefi_files() {
        tail.extend([
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
        tail.push("-no-reboot".to_string());
    }
    tail.extend(config.extra_args.iter().cloned());
    QemuArgParts {
        head: args,
        disks,
        tail,
    }
}

/// Creates the machine's directory, its blank disk and its UEFI variable store unless they exist
/// (they are kept across power cycles, like a real machine's disk and NVRAM).
pub(crate) fn prepare_machine_files(config: &MachineConfig) -> Result<()> {
    let dir = &config.dir;
    std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    for (i, mib) in config.disks_mib.iter().enumerate() {
        let disk = config.disk_path(i);
        if !disk.exists() {
            let file = std::fs::File::create(&disk)
                .map_err(io_err(format!("create {}", disk.display())))?;
            file.set_len(mib * 1024 * 1024)
                .map_err(io_err(format!("size {}", disk.display())))?;
        }
    }
    if let Some(uefi) = config.firmware.uefi_files() {
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
        if let Some(i) = config.disks_mib.iter().position(|mib| *mib == 0) {
            return Err(LabError::Config(format!(
                "disk {i} of machine {} has size 0",
                config.name
            )));
        }
        // virtio-blk serials hold at most 20 bytes (VIRTIO_BLK_ID_BYTES); longer ones are cut.
        if let Some(i) = config.disks_mib.len().checked_sub(1) {
            let serial = config.disk_serial(i);
            if serial.len() > 20 {
                return Err(LabError::Config(format!(
                    "disk serial {serial:?} is longer than 20 characters: shorten the machine name"
                )));
            }
        }
        let dmi = config.dmi_serial();
        if dmi.is_empty() || dmi.chars().any(|c| c.is_control()) {
            return Err(LabError::Config(format!(
                "DMI serial {dmi:?} of machine {} must be non-empty printable text",
                config.name
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

    /// Creates the machine's blank disks and UEFI variable store unless they exist (a start does
    /// it too); e.g. to write an image onto a disk before the first power-on.
    pub fn prepare_files(&self) -> Result<()> {
        prepare_machine_files(&self.config)
    }

    /// Attaches only `disks` (0-based indices; `None`: all) from the next start on, like pulling
    /// drives out of a server. Also read by the machine's BMC chassis program.
    pub fn set_attached_disks(&self, disks: Option<&[usize]>) -> Result<()> {
        write_attached_disks(&self.config, disks)
    }

    /// Powers the machine on inside `netns`: creates the disks and UEFI variable store on first
    /// start, then spawns QEMU with the disks [`MachineConfig::attached_disks`] names. Fails if it
    /// is already running.
    pub fn start(&mut self, netns: &Netns) -> Result<()> {
        if self.is_running() {
            return Err(LabError::Config(format!(
                "machine {} is already running",
                self.config.name
            )));
        }
        prepare_machine_files(&self.config)?;
        let disks = self.config.attached_disks()?;
        let args = qemu_args_with_disks(&self.config, &disks)?;
        let serial = self.config.serial_log();
        self.boot_offset = std::fs::metadata(&serial).map_or(0, |m| m.len());
        let mut cmd = netns.command(self.config.firmware.emulator());
        cmd.args(args);
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
            disks_mib: vec![],
            dmi_serial: None,
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
             -smbios type=1,manufacturer=rackboot-lab,product=lab-vm,serial=RBLAB-m1 \
             -netdev tap,id=net0,ifname=tap1,script=no,downscript=no \
             -device virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bootindex=1"
        );
    }

    #[test]
    fn uefi_machine_with_disk_first_and_no_rom() {
        let mut c = config();
        c.firmware = Firmware::uefi();
        c.nic_rom = NicRom::None;
        c.disks_mib = vec![64];
        c.boot = BootOrder::DiskFirst;
        c.no_reboot = true;
        let args = joined(&c);
        assert!(args.contains("mac=52:54:00:00:00:01,bootindex=2,romfile= "));
        assert!(args.contains(
            "-drive file=/lab/m1.disk0.raw,if=none,id=disk0,format=raw \
             -device virtio-blk-pci,drive=disk0,serial=rbm1d0,bootindex=1"
        ));
        assert!(args.contains(
            "-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
        ));
        assert!(args.contains("-drive if=pflash,format=raw,unit=1,file=/lab/m1.vars.fd"));
        assert!(args.ends_with("-no-reboot"));
    }

    #[test]
    fn arm64_machine_runs_aavmf_on_the_virt_board() {
        let mut c = config();
        c.firmware = Firmware::uefi_arm64();
        c.nic_rom = NicRom::None;
        assert_eq!(c.firmware.emulator(), "qemu-system-aarch64");
        assert_eq!(Firmware::uefi().emulator(), "qemu-system-x86_64");
        let args = joined(&c);
        assert!(
            args.starts_with("-name m1 -machine virt -cpu cortex-a57 -accel tcg "),
            "{args}"
        );
        assert!(args.contains(
            "-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd"
        ));
        assert!(args.contains("-drive if=pflash,format=raw,unit=1,file=/lab/m1.vars.fd"));
    }

    /// (boot order, disks attached) → (NIC bootindex, [(disk, bootindex)]) in command-line order.
    #[test]
    fn disks_keep_their_serial_and_boot_place_whichever_are_attached() {
        let disk = |i: usize, boot: usize| {
            format!(
                "-drive file=/lab/m1.disk{i}.raw,if=none,id=disk{i},format=raw \
                 -device virtio-blk-pci,drive=disk{i},serial=rbm1d{i},bootindex={boot}"
            )
        };
        // (disk, its bootindex)
        type Disks = &'static [(usize, usize)];
        let cases: &[(BootOrder, &[usize], usize, Disks)] = &[
            (
                BootOrder::DiskFirst,
                &[0, 1, 2],
                4,
                &[(0, 1), (1, 2), (2, 3)],
            ),
            (BootOrder::DiskFirst, &[1], 4, &[(1, 2)]),
            (BootOrder::DiskFirst, &[2, 0], 4, &[(2, 3), (0, 1)]),
            (BootOrder::DiskFirst, &[], 4, &[]),
            (
                BootOrder::NetworkFirst,
                &[0, 1, 2],
                1,
                &[(0, 2), (1, 3), (2, 4)],
            ),
            (BootOrder::NetworkFirst, &[1], 1, &[(1, 3)]),
        ];
        for (boot, attached, nic, disks) in cases {
            let mut c = config();
            c.disks_mib = vec![64, 64, 128];
            c.boot = *boot;
            c.extra_args = vec!["-extra".into()];
            let args = qemu_args_with_disks(&c, attached).unwrap().join(" ");
            let expected_disks: Vec<String> = disks.iter().map(|(i, b)| disk(*i, *b)).collect();
            let nic_arg = format!("mac=52:54:00:00:00:01,bootindex={nic}");
            let (head, rest) = args
                .split_once(&nic_arg)
                .unwrap_or_else(|| panic!("{args}"));
            assert!(head.starts_with("-name m1 "), "{args}");
            let expected_rest = if expected_disks.is_empty() {
                " -extra".to_string()
            } else {
                format!(" {} -extra", expected_disks.join(" "))
            };
            assert_eq!(rest, expected_rest, "{boot:?} {attached:?}");
        }
    }

    #[test]
    fn unknown_or_repeated_disks_are_refused() {
        let mut c = config();
        c.disks_mib = vec![64, 64];
        assert!(qemu_args_with_disks(&c, &[2]).is_err());
        assert!(qemu_args_with_disks(&c, &[1, 1]).is_err());
        assert_eq!(qemu_args(&c), qemu_args_with_disks(&c, &[0, 1]).unwrap());
    }

    #[test]
    fn attached_disks_file_round_trips_and_defaults_to_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        c.dir = dir.path().to_path_buf();
        c.disks_mib = vec![8, 8, 8];
        assert_eq!(c.attached_disks().unwrap(), vec![0, 1, 2]);
        write_attached_disks(&c, Some(&[2, 0])).unwrap();
        assert_eq!(
            std::fs::read_to_string(c.attached_disks_file()).unwrap(),
            "2 0\n"
        );
        assert_eq!(c.attached_disks().unwrap(), vec![2, 0]);
        write_attached_disks(&c, Some(&[])).unwrap();
        assert_eq!(c.attached_disks().unwrap(), Vec::<usize>::new());
        assert!(write_attached_disks(&c, Some(&[3])).is_err());
        write_attached_disks(&c, None).unwrap();
        assert!(!c.attached_disks_file().exists());
        assert_eq!(c.attached_disks().unwrap(), vec![0, 1, 2]);
        // Idempotent.
        write_attached_disks(&c, None).unwrap();
        for bad in ["x\n", "5\n", "1 1\n"] {
            std::fs::write(c.attached_disks_file(), bad).unwrap();
            assert!(c.attached_disks().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dmi_serial_defaults_and_override_with_commas_escaped() {
        let mut c = config();
        assert_eq!(c.dmi_serial(), "RBLAB-m1");
        c.dmi_serial = Some("SN,42".into());
        assert!(joined(&c).contains("serial=SN,,42 "));
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
    fn bad_configs_are_rejected() {
        let mut c = config();
        c.name = "m 1".into();
        assert!(QemuMachine::new(c).is_err());
        let mut c = config();
        c.memory_mib = 64;
        assert!(QemuMachine::new(c).is_err());
        let mut c = config();
        c.disks_mib = vec![64, 0];
        assert!(QemuMachine::new(c).is_err());
        // rb + 16 + d0 = 20 characters is the most a virtio serial holds.
        let mut c = config();
        c.disks_mib = vec![64];
        c.name = "m".repeat(16);
        assert!(QemuMachine::new(c.clone()).is_ok());
        c.name = "m".repeat(17);
        assert!(QemuMachine::new(c).is_err());
        let mut c = config();
        c.dmi_serial = Some(String::new());
        assert!(QemuMachine::new(c).is_err());
    }
}
