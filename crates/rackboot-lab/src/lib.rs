//! The virtual rack: network namespace, bridge, QEMU machines with logged serial consoles.
//!
//! Everything here runs real processes (`ip`, `qemu-system-x86_64`, the server under test) and
//! needs root. The pieces:
//! - [`Netns`]: a private network namespace with a bridge and tap devices; spawns processes in it.
//! - [`QemuMachine`]: one TCG virtual machine (SeaBIOS or OVMF) booting from a tap in the namespace,
//!   its serial console logged to a file that [`QemuMachine::wait_for_serial`] polls.
//! - [`Lab`]: a namespace plus N machines with deterministic MACs, plus the server process.
//! - [`down`]: removes a lab recorded in a state file, from any process (`rackboot lab down`).
//! - [`build_marker_initramfs`]: a busybox initramfs that prints [`MARKER`] and powers off.
//! - Machines have any number of blank virtio disks ([`MachineSpec::with_disks`], serials
//!   `rb<name>d<i>`, DMI serial `RBLAB-<name>`); [`Lab::set_attached_disks`] leaves some out at
//!   the next power-on (direct or through the BMC), like pulling drives.
//! - [`test_os`]: a bootable disk image (syslinux, host kernel, busybox initramfs, ext4 root
//!   labelled `rootfs`) that prints its hostname and addresses from its root file system and
//!   answers ping: what deploy tests write to a machine's disk.
//! - BMCs ([`LabConfig::bmc`]): with [`BmcKind::Ipmi`] every machine gets an OpenIPMI `ipmi_sim`
//!   ([`IpmiSim`], reusable alone) on the bridge address, UDP port 6231, 6232, ..., whose
//!   chassis program ([`VmChassis`]) starts/stops the machine's QEMU; with [`BmcKind::Redfish`]
//!   one sushy-tools emulator on port 8000 drives a private libvirt session daemon
//!   ([`redfish`]). Machines then start powered off; [`Lab::bmc`] gives each one's URL (also in
//!   the state file's [`MachineRecord`]s), PID and serial log.
//!
//! Firmware facts this crate relies on (Debian 12, QEMU 7.2) are in [`firmware`].
//!
//! Typical use in an end-to-end test (see tests/firmware_boot.rs, where dnsmasq stands in for
//! `rackboot serve` through [`Lab::start_dnsmasq`]):
//! ```no_run
//! # async fn demo() -> rackboot_lab::Result<()> {
//! use rackboot_lab::{Lab, LabConfig, MachineSpec, MARKER};
//! use std::time::Duration;
//! let mut lab = Lab::create(LabConfig::new("/tmp/lab", vec![MachineSpec::bios(), MachineSpec::uefi()]))?;
//! lab.spawn_server("/path/to/rackboot", ["serve", "--config", "/tmp/lab/rackboot.toml"])?;
//! lab.server().unwrap().wait_for_output("listening", Duration::from_secs(10)).await?;
//! lab.start_all()?;
//! let line = lab.machine(0).wait_for_serial(MARKER, Duration::from_secs(240)).await?;
//! lab.teardown()?;
//! # Ok(()) }
//! ```
//!
//! Tests: `cargo test -p rackboot-lab` as root (namespaces, taps). Packages: qemu-system-x86,
//! ipxe-qemu, ipxe, ovmf, busybox-static, dnsmasq-base, cpio, linux-image-amd64; for the test OS
//! image syslinux, syslinux-common, mtools, dosfstools, e2fsprogs, fdisk; for BMCs
//! openipmi, ipmitool, libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients,
//! python3-libvirt, python3-venv, curl, and sushy-tools from PyPI in
//! `/opt/sushy-tools` (see [`redfish`]).

pub mod bmc;
pub mod chassis;
pub mod firmware;
mod initramfs;
mod lab;
mod netns;
mod process;
mod qemu;
pub mod redfish;
mod standin;
mod state;
pub mod test_os;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

pub use bmc::{BMC_PASSWORD, BMC_USER, BmcKind, IPMI_BASE_PORT, IpmiSim, IpmiSimConfig, ipmi_url};
pub use chassis::VmChassis;
pub use initramfs::{
    CpioEntry, MARKER, MARKER_KERNEL_CMDLINE, arm64_kernel, build_marker_initramfs,
    build_marker_initramfs_with, host_kernel, marker_init_script, write_newc,
};
pub use lab::{
    DEFAULT_BRIDGE_ADDR, DEFAULT_BRIDGE_ADDR6, DEFAULT_PREFIX_LEN, DEFAULT_PREFIX_LEN6, Lab,
    LabBmc, LabConfig, MachineSpec, lab_mac,
};
pub use netns::{Netns, NetnsConfig, unique_name};
pub use process::LabProcess;
/// Serial-console text without terminal escapes, for tests that read firmware output.
pub use process::strip_ansi;
pub use qemu::{
    BootOrder, Firmware, MachineConfig, NicRom, QemuArgParts, QemuMachine, UefiFirmware,
    format_mac, qemu_arg_parts, qemu_args, qemu_args_with_disks, write_attached_disks,
};
pub use redfish::{REDFISH_PORT, RedfishEnv, RedfishService, domain_uuid, redfish_url};
pub use standin::{
    DnsmasqRole, LOCAL_BOOT_IPXE_SCRIPT, MARKER_INITRD_NAME, MARKER_KERNEL_NAME,
    marker_ipxe_script, stage_marker_boot_files, stage_tftp_root,
};
pub use state::{DownReport, LabState, MachineRecord, ProcessRecord, down, read_state};

/// Everything that can go wrong while building or running the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("timed out after {timeout:?} waiting for {pattern:?} in {log}; last output:\n{tail}")]
    Timeout {
        pattern: String,
        log: PathBuf,
        timeout: Duration,
        tail: String,
    },
    #[error("{name} exited ({status}) before {pattern:?} appeared in {log}; last output:\n{tail}")]
    Exited {
        name: String,
        status: ExitStatus,
        pattern: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{name} is not running")]
    NotRunning { name: String },
    #[error("state file {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("invalid lab configuration: {0}")]
    Config(String),
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// Wraps an io::Error with what we were doing.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}
