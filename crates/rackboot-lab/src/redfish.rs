//! Redfish BMCs for a lab: sushy-tools' emulator (`sushy-emulator`, PyPI `sushy-tools`) in front
//! of a private libvirt daemon that runs the machines' QEMU, both inside the lab namespace.
//!
//! sushy-emulator only powers real VMs through libvirt (its "fake" driver starts nothing), so the
//! lab runs its own `libvirtd` in *session* mode as user `nobody`, with HOME/XDG directories in
//! `DIR/redfish/`: nothing global (no system libvirtd, no virbr0, no iptables), one daemon per lab,
//! gone with the lab. Root's libvirtd would need the `libvirt-qemu` user and system directories
//! (what libvirt-daemon-system sets up, with a default NAT network on the host), which a shared
//! test machine should not get. Consequences of session mode as `nobody`:
//! - the lab's taps are created owned by `nobody` and attached with
//!   `<interface type='ethernet'><target dev='tapN' managed='no'/>` (libvirt opens them; no
//!   privileges needed);
//! - the machine files (serial log, disk, UEFI variables) are chowned to `nobody`, and the lab
//!   directory must be reachable by it (every parent directory `o+x`);
//! - QEMU runs as `nobody` under TCG (`<domain type='qemu'>`), like the other lab machines.
//!
//! Each machine is a libvirt domain named like the machine (`m1`) with a UUID derived from the
//! namespace and machine names; its BMC URL is
//! `redfish://admin:password@10.77.0.1:8000/redfish/v1/Systems/UUID`. Boot devices are per-device
//! `<boot order>`, which is what sushy rewrites for `BootSourceOverrideTarget` Pxe/Hdd.
//!
//! Packages: libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients (virsh), python3-libvirt,
//! python3-venv; sushy-tools from PyPI in a venv that sees python3-libvirt:
//! `/usr/bin/python3 -m venv --system-site-packages /opt/sushy-tools &&
//! /opt/sushy-tools/bin/pip install sushy-tools`. The emulator is found through
//! `$RACKBOOT_SUSHY_EMULATOR`, then `PATH`, then `/opt/sushy-tools/bin/sushy-emulator`.

use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bmc::{BMC_PASSWORD, BMC_USER, require_program, udp_bound};
use crate::netns::{Netns, run};
use crate::process::{LabProcess, tail};
use crate::qemu::{BootOrder, Firmware, MachineConfig, NicRom, format_mac, prepare_machine_files};
use crate::{LabError, Result, io_err};

/// TCP port of the lab's Redfish service (on the bridge address).
pub const REDFISH_PORT: u16 = 8000;
/// `nobody`: runs the lab's libvirtd, sushy-emulator and (through libvirt) QEMU.
pub const REDFISH_UID: u32 = 65534;
pub const REDFISH_GID: u32 = 65534;
/// Where the sushy-tools venv is looked for last.
pub const DEFAULT_SUSHY_EMULATOR: &str = "/opt/sushy-tools/bin/sushy-emulator";
/// bcrypt of [`BMC_PASSWORD`] (sushy's htpasswd file accepts bcrypt only).
const BMC_PASSWORD_BCRYPT: &str = "$2b$05$qb8LFnr8.ejoKD4LtAT9i.rra51vQEGpsTXi/DSuWaRIyU1.4gwRe";

/// The sushy-emulator program: `$RACKBOOT_SUSHY_EMULATOR`, `sushy-emulator` on PATH, or
/// [`DEFAULT_SUSHY_EMULATOR`].
pub fn sushy_emulator() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("RACKBOOT_SUSHY_EMULATOR") {
        return Ok(PathBuf::from(path));
    }
    if let Ok(path) = require_program("sushy-emulator", "") {
        return Ok(path);
    }
    let default = PathBuf::from(DEFAULT_SUSHY_EMULATOR);
    if default.is_file() {
        return Ok(default);
    }
    Err(LabError::Config(format!(
        "sushy-emulator not found ($RACKBOOT_SUSHY_EMULATOR, PATH, {DEFAULT_SUSHY_EMULATOR}): \
         apt-get install -y python3-venv python3-libvirt && \
         /usr/bin/python3 -m venv --system-site-packages /opt/sushy-tools && \
         /opt/sushy-tools/bin/pip install sushy-tools"
    )))
}

/// Fails with a message naming the packages unless a Redfish lab can run here.
pub(crate) fn check_prerequisites(lab_dir: &Path) -> Result<PathBuf> {
    require_program("libvirtd", "libvirt-daemon libvirt-daemon-driver-qemu")?;
    require_program("virsh", "libvirt-clients")?;
    require_program("setpriv", "util-linux")?;
    let sushy = sushy_emulator()?;
    // nobody must reach the machine files: every existing ancestor needs o+x.
    let mut dir = Some(lab_dir);
    while let Some(d) = dir {
        if let Ok(meta) = std::fs::metadata(d)
            && meta.uid() != REDFISH_UID
            && meta.permissions().mode() & 0o001 == 0
        {
            return Err(LabError::Config(format!(
                "a Redfish lab runs QEMU as user nobody, which cannot enter {} (mode {:o}); \
                 use a lab directory whose parents are all o+x",
                d.display(),
                meta.permissions().mode() & 0o7777
            )));
        }
        dir = d.parent();
    }
    Ok(sushy)
}

/// A stable UUID for machine `name` of the lab in namespace `netns`.
pub fn domain_uuid(netns: &str, name: &str) -> String {
    let hash = |seed: u64| {
        let mut h = seed;
        for b in netns.bytes().chain([0]).chain(name.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        h
    };
    let (a, b) = (hash(0xcbf29ce484222325), hash(0x84222325cbf29ce4));
    // Version 4 / variant 1 bits, so libvirt and Redfish clients see a well-formed UUID.
    let hex = format!(
        "{:016x}{:016x}",
        (a & !0xf000) | 0x4000,
        (b & !(0xc000 << 48)) | (0x8000 << 48)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `redfish://USER:PASSWORD@ADDR:PORT/redfish/v1/Systems/UUID`.
pub fn redfish_url(addr: Ipv4Addr, port: u16, uuid: &str) -> String {
    format!("redfish://{BMC_USER}:{BMC_PASSWORD}@{addr}:{port}/redfish/v1/Systems/{uuid}")
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// The libvirt domain for a lab machine with `disks` attached (0-based, checked by the caller):
/// same firmware, memory, NIC (MAC, ROM, tap), disks (serials, boot order) and DMI system
/// identity as [`crate::qemu_args_with_disks`], serial console appended to the machine's serial
/// log, TCG.
pub fn domain_xml(m: &MachineConfig, uuid: &str, disks: &[usize]) -> String {
    let network_first = m.boot == BootOrder::NetworkFirst;
    let net_order = if network_first {
        1
    } else {
        m.disks_mib.len() + 1
    };
    let disk_order = |i: usize| if network_first { i + 2 } else { i + 1 };
    let path = |p: PathBuf| xml_escape(&p.display().to_string());
    let os = match &m.firmware {
        Firmware::Bios => "    <type arch='x86_64' machine='pc'>hvm</type>\n    \
                           <bios useserial='yes'/>\n"
            .to_string(),
        Firmware::Uefi(uefi) => format!(
            "    <type arch='x86_64' machine='pc'>hvm</type>\n    \
             <loader readonly='yes' type='pflash'>{}</loader>\n    <nvram>{}</nvram>\n",
            path(uefi.code.clone()),
            path(m.vars_path())
        ),
        Firmware::UefiArm64(uefi) => format!(
            "    <type arch='aarch64' machine='virt'>hvm</type>\n    \
             <loader readonly='yes' type='pflash'>{}</loader>\n    <nvram>{}</nvram>\n",
            path(uefi.code.clone()),
            path(m.vars_path())
        ),
    };
    let rom = match &m.nic_rom {
        NicRom::Default => String::new(),
        NicRom::None => "      <rom enabled='no'/>\n".to_string(),
        NicRom::File(file) => format!("      <rom file='{}'/>\n", path(file.clone())),
    };
    let disk: String = disks
        .iter()
        .map(|&i| {
            format!(
                "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      \
                 <source file='{}'/>\n      <target dev='vd{}' bus='virtio'/>\n      \
                 <serial>{}</serial>\n      <boot order='{}'/>\n    </disk>\n",
                path(m.disk_path(i)),
                // vda, vdb, ... by disk index: only a hint, libvirt orders devices itself.
                char::from(b'a' + (i % 26) as u8),
                xml_escape(&m.disk_serial(i)),
                disk_order(i)
            )
        })
        .collect();
    let sysinfo = format!(
        "  <sysinfo type='smbios'>\n    <system>\n      \
         <entry name='manufacturer'>rackboot-lab</entry>\n      \
         <entry name='product'>lab-vm</entry>\n      \
         <entry name='serial'>{}</entry>\n    </system>\n  </sysinfo>\n",
        xml_escape(&m.dmi_serial())
    );
    let (xmlns, extra) = if m.extra_args.is_empty() {
        (String::new(), String::new())
    } else {
        let args: String = m
            .extra_args
            .iter()
            .map(|a| format!("    <qemu:arg value='{}'/>\n", xml_escape(a)))
            .collect();
        (
            " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'".to_string(),
            format!("  <qemu:commandline>\n{args}  </qemu:commandline>\n"),
        )
    };
    format!(
        "<domain type='qemu'{xmlns}>\n  <name>{name}</name>\n  <uuid>{uuid}</uuid>\n  \
         <memory unit='MiB'>{memory}</memory>\n  <vcpu>1</vcpu>\n{sysinfo}  <os>\n{os}    \
         <smbios mode='sysinfo'/>\n  </os>\n  \
         <features><acpi/></features>\n  <on_poweroff>destroy</on_poweroff>\n  \
         <on_reboot>{on_reboot}</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n    \
         <emulator>/usr/bin/qemu-system-x86_64</emulator>\n    <interface type='ethernet'>\n      \
         <mac address='{mac}'/>\n      <target dev='{tap}' managed='no'/>\n      \
         <model type='virtio'/>\n{rom}      <boot order='{net_order}'/>\n    </interface>\n\
         {disk}    <serial type='file'>\n      <source path='{serial}' append='on'/>\n      \
         <target port='0'/>\n    </serial>\n  </devices>\n{extra}</domain>\n",
        name = xml_escape(&m.name),
        memory = m.memory_mib,
        on_reboot = if m.no_reboot { "destroy" } else { "restart" },
        mac = format_mac(&m.mac),
        tap = xml_escape(&m.tap),
        serial = path(m.serial_log()),
    )
}

/// Which device comes first in a domain's XML (as libvirt prints it, `<boot order='N'/>` per
/// device): the NIC if its order is below every disk's, the disks if one of theirs is lower.
/// `None` unless both the NIC and some disk have an order (nothing to compare).
pub fn domain_boot_order(xml: &str) -> Option<BootOrder> {
    const BOOT: &str = "<boot order='";
    let nics: Vec<(usize, usize)> = xml
        .match_indices("<interface")
        .map(|(start, _)| {
            let end = xml[start..]
                .find("</interface>")
                .map_or(xml.len(), |e| start + e);
            (start, end)
        })
        .collect();
    let (mut nic, mut disk): (Option<u32>, Option<u32>) = (None, None);
    for (at, _) in xml.match_indices(BOOT) {
        let digits: String = xml[at + BOOT.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let Ok(order) = digits.parse::<u32>() else {
            continue;
        };
        let slot = if nics.iter().any(|(s, e)| *s < at && at < *e) {
            &mut nic
        } else {
            &mut disk
        };
        *slot = Some(slot.map_or(order, |o| o.min(order)));
    }
    match (nic?, disk?) {
        (n, d) if n < d => Some(BootOrder::NetworkFirst),
        _ => Some(BootOrder::DiskFirst),
    }
}

/// Runs programs as `nobody` in the lab namespace with the lab's private libvirt environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedfishEnv {
    netns: String,
    /// `LABDIR/redfish`: HOME and XDG directories, domain XML, sushy's configuration.
    dir: PathBuf,
}

impl RedfishEnv {
    pub fn new(netns: &str, lab_dir: &Path) -> RedfishEnv {
        RedfishEnv {
            netns: netns.to_string(),
            dir: lab_dir.join("redfish"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn runtime_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The session daemon's socket.
    pub fn libvirt_socket(&self) -> PathBuf {
        self.runtime_dir().join("libvirt/libvirt-sock")
    }

    /// Where libvirt records the PID of domain `name`'s QEMU.
    pub fn qemu_pid_file(&self, name: &str) -> PathBuf {
        self.runtime_dir()
            .join(format!("libvirt/qemu/run/{name}.pid"))
    }

    /// `ip netns exec NS setpriv --reuid nobody ... PROGRAM` with only the libvirt session
    /// environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let home = self.dir.join("home");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "setpriv"])
            .arg(format!("--reuid={REDFISH_UID}"))
            .arg(format!("--regid={REDFISH_GID}"))
            .arg("--clear-groups")
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("XDG_RUNTIME_DIR", self.runtime_dir())
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("HOME", home)
            .env("LANG", "C.UTF-8");
        cmd
    }

    /// Writes machine `m`'s domain XML (with the disks [`MachineConfig::attached_disks`] names)
    /// and defines it; a defined domain takes the new definition at its next start.
    pub fn define_domain(&self, m: &MachineConfig) -> Result<()> {
        let uuid = domain_uuid(&self.netns, &m.name);
        let xml = self.dir.join(format!("{}.domain.xml", m.name));
        std::fs::write(&xml, domain_xml(m, &uuid, &m.attached_disks()?))
            .map_err(io_err(format!("write {}", xml.display())))?;
        std::os::unix::fs::chown(&xml, Some(REDFISH_UID), Some(REDFISH_GID))
            .map_err(io_err(format!("chown {} to nobody", xml.display())))?;
        self.virsh(&["define", &xml.display().to_string()])
            .map(drop)
    }

    /// `virsh -c qemu:///session ARGS` against the lab's daemon; returns stdout.
    pub fn virsh(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.command("virsh");
        cmd.args(["-c", "qemu:///session"]).args(args);
        run(&mut cmd)
    }
}

/// The lab's libvirtd and sushy-emulator; dropping it stops both (their VMs die with the
/// namespace or through [`crate::LabBmc`]).
#[derive(Debug)]
pub struct RedfishService {
    // Drop order: the Redfish front end first.
    sushy: LabProcess,
    libvirtd: LabProcess,
    env: RedfishEnv,
}

impl RedfishService {
    /// Prepares files, starts libvirtd, defines one domain per machine (powered off), starts
    /// sushy-emulator on the bridge address, port [`REDFISH_PORT`], with basic auth.
    pub(crate) fn start(
        netns: &Netns,
        sushy: &Path,
        lab_dir: &Path,
        machines: &[MachineConfig],
    ) -> Result<RedfishService> {
        let env = RedfishEnv::new(netns.name(), lab_dir);
        let owned = |path: &Path| -> Result<()> {
            std::os::unix::fs::chown(path, Some(REDFISH_UID), Some(REDFISH_GID))
                .map_err(io_err(format!("chown {} to nobody", path.display())))
        };
        for sub in ["home", "run"] {
            let d = env.dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io_err(format!("create {}", d.display())))?;
            owned(&d)?;
        }
        owned(&env.dir)?;
        std::fs::set_permissions(env.runtime_dir(), std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod runtime dir"))?;
        for m in machines {
            prepare_machine_files(m)?;
            let serial = m.serial_log();
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&serial)
                .map_err(io_err(format!("create {}", serial.display())))?;
            owned(&serial)?;
            for i in 0..m.disks_mib.len() {
                owned(&m.disk_path(i))?;
            }
            if m.firmware.uefi_files().is_some() {
                owned(&m.vars_path())?;
            }
        }

        let mut daemon = env.command("libvirtd");
        daemon.args(["--timeout", "0"]);
        let libvirtd = netns.spawn("libvirtd", daemon, &env.dir.join("libvirtd.log"))?;
        wait_for(
            &libvirtd,
            "libvirtd's socket",
            Duration::from_secs(20),
            || env.libvirt_socket().exists(),
        )?;

        for m in machines {
            env.define_domain(m)?;
        }

        let config = env.dir.join("sushy.conf");
        let auth = env.dir.join("htpasswd");
        std::fs::write(&auth, format!("{BMC_USER}:{BMC_PASSWORD_BCRYPT}\n"))
            .map_err(io_err(format!("write {}", auth.display())))?;
        std::fs::write(
            &config,
            format!(
                "SUSHY_EMULATOR_LISTEN_IP = '{addr}'\n\
                 SUSHY_EMULATOR_LISTEN_PORT = {REDFISH_PORT}\n\
                 SUSHY_EMULATOR_LIBVIRT_URI = 'qemu:///session'\n\
                 SUSHY_EMULATOR_AUTH_FILE = '{auth}'\n\
                 SUSHY_EMULATOR_IGNORE_BOOT_DEVICE = False\n",
                addr = netns.bridge_addr(),
                auth = auth.display(),
            ),
        )
        .map_err(io_err(format!("write {}", config.display())))?;
        owned(&auth)?;
        owned(&config)?;
        let mut cmd = env.command(sushy);
        cmd.arg("--config").arg(&config);
        let sushy = netns.spawn("sushy-emulator", cmd, &env.dir.join("sushy.log"))?;
        let addr = netns.bridge_addr();
        wait_for(
            &sushy,
            "sushy-emulator to listen",
            Duration::from_secs(30),
            || {
                let table = std::fs::read_to_string(format!("/proc/{}/net/tcp", sushy.pid()))
                    .unwrap_or_default();
                udp_bound(&table, addr, REDFISH_PORT)
            },
        )?;
        tracing::info!(
            netns = netns.name(),
            port = REDFISH_PORT,
            "sushy-emulator started"
        );
        Ok(RedfishService {
            sushy,
            libvirtd,
            env,
        })
    }

    pub fn env(&self) -> &RedfishEnv {
        &self.env
    }

    /// Redefines machine `m`'s domain from its current configuration (e.g. after its attached
    /// disks changed), keeping the boot order sushy last wrote into the domain (the Redfish boot
    /// override lives there): effective at its next power-on.
    pub fn redefine(&self, m: &MachineConfig) -> Result<()> {
        let current = self.env.virsh(&["dumpxml", &m.name])?;
        let mut config = m.clone();
        if let Some(boot) = domain_boot_order(&current) {
            config.boot = boot;
        }
        self.env.define_domain(&config)
    }

    pub fn sushy(&self) -> &LabProcess {
        &self.sushy
    }

    pub fn libvirtd(&self) -> &LabProcess {
        &self.libvirtd
    }

    pub(crate) fn into_processes(self) -> [LabProcess; 2] {
        [self.sushy, self.libvirtd]
    }
}

/// Polls `ready` every 50 ms until it holds; fails if `process` exits or `timeout` passes.
fn wait_for(
    process: &LabProcess,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let started = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(status) = process.try_status()? {
            return Err(LabError::Exited {
                name: process.name().to_string(),
                status,
                pattern: what.to_string(),
                log: process.log_path().to_path_buf(),
                tail: tail(&process.output(), 20),
            });
        }
        if started.elapsed() > timeout {
            return Err(LabError::Timeout {
                pattern: what.to_string(),
                log: process.log_path().to_path_buf(),
                timeout,
                tail: tail(&process.output(), 20),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> MachineConfig {
        MachineConfig {
            name: "m1".into(),
            mac: [0x52, 0x54, 0, 0, 0, 1],
            tap: "tap1".into(),
            firmware: Firmware::Bios,
            memory_mib: 512,
            nic_rom: NicRom::Default,
            disks_mib: vec![64],
            dmi_serial: None,
            boot: BootOrder::NetworkFirst,
            no_reboot: false,
            dir: PathBuf::from("/lab"),
            extra_args: vec![],
        }
    }

    #[test]
    fn bios_domain_uses_the_lab_tap_serial_log_and_boot_order() {
        let xml = domain_xml(&machine(), "u-1", &[0]);
        for part in [
            "<domain type='qemu'>",
            "<name>m1</name>",
            "<uuid>u-1</uuid>",
            "<memory unit='MiB'>512</memory>",
            "<bios useserial='yes'/>",
            "<mac address='52:54:00:00:00:01'/>\n      <target dev='tap1' managed='no'/>",
            "<boot order='1'/>\n    </interface>",
            "<source file='/lab/m1.disk0.raw'/>",
            "<serial>rbm1d0</serial>\n      <boot order='2'/>\n    </disk>",
            "<entry name='manufacturer'>rackboot-lab</entry>",
            "<entry name='product'>lab-vm</entry>",
            "<entry name='serial'>RBLAB-m1</entry>",
            "<smbios mode='sysinfo'/>\n  </os>",
            "<source path='/lab/m1.serial.log' append='on'/>",
            "<on_reboot>restart</on_reboot>",
        ] {
            assert!(xml.contains(part), "{part} missing from\n{xml}");
        }
        assert!(!xml.contains("qemu:commandline"));
    }

    #[test]
    fn uefi_domain_with_disk_first_no_rom_and_extra_args() {
        let mut m = machine();
        m.firmware = Firmware::uefi();
        m.nic_rom = NicRom::None;
        m.boot = BootOrder::DiskFirst;
        m.no_reboot = true;
        m.extra_args = vec!["-smbios".into(), "type=1,serial=<x>".into()];
        let xml = domain_xml(&m, "u-1", &[0]);
        assert!(xml.contains(
            "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>"
        ));
        assert!(xml.contains("<nvram>/lab/m1.vars.fd</nvram>"));
        assert!(xml.contains("<rom enabled='no'/>\n      <boot order='2'/>"));
        assert!(xml.contains("<boot order='1'/>\n    </disk>"));
        assert!(xml.contains("<on_reboot>destroy</on_reboot>"));
        assert!(xml.contains("xmlns:qemu="));
        assert!(xml.contains("<qemu:arg value='type=1,serial=&lt;x&gt;'/>"));
        assert!(!xml.contains("useserial"));
    }

    #[test]
    fn only_attached_disks_appear_with_their_own_serial_and_boot_order() {
        let mut m = machine();
        m.disks_mib = vec![64, 64];
        m.boot = BootOrder::DiskFirst;
        m.dmi_serial = Some("S<1>".into());
        let xml = domain_xml(&m, "u-1", &[1]);
        assert!(!xml.contains("m1.disk0.raw"), "{xml}");
        assert!(xml.contains(
            "<source file='/lab/m1.disk1.raw'/>\n      <target dev='vdb' bus='virtio'/>\n      \
             <serial>rbm1d1</serial>\n      <boot order='2'/>"
        ));
        assert!(xml.contains("<boot order='3'/>\n    </interface>"), "{xml}");
        assert!(xml.contains("<entry name='serial'>S&lt;1&gt;</entry>"));
        assert_eq!(domain_xml(&m, "u-1", &[]).matches("<disk ").count(), 0);
        assert_eq!(domain_xml(&m, "u-1", &[0, 1]).matches("<disk ").count(), 2);
    }

    #[test]
    fn boot_order_is_read_back_from_domain_xml() {
        let mut m = machine();
        m.disks_mib = vec![64, 64];
        for boot in [BootOrder::NetworkFirst, BootOrder::DiskFirst] {
            m.boot = boot;
            for disks in [&[0, 1][..], &[1], &[0]] {
                let xml = domain_xml(&m, "u-1", disks);
                assert_eq!(domain_boot_order(&xml), Some(boot), "{disks:?}\n{xml}");
            }
            // No disk: nothing to tell.
            assert_eq!(domain_boot_order(&domain_xml(&m, "u-1", &[])), None);
        }
        // What sushy leaves after a Pxe override: the NIC first, the disk renumbered after it.
        let sushy = "<disk type='file'><boot order='2'/></disk>\n\
                     <interface type='ethernet'><boot order='1'/></interface>";
        assert_eq!(domain_boot_order(sushy), Some(BootOrder::NetworkFirst));
        let sushy = "<disk type='file'><boot order='1'/></disk>\n\
                     <interface type='ethernet'><boot order='2'/></interface>";
        assert_eq!(domain_boot_order(sushy), Some(BootOrder::DiskFirst));
    }

    #[test]
    fn uuids_are_stable_well_formed_and_distinct() {
        let a = domain_uuid("rbl-1-0", "m1");
        assert_eq!(a, domain_uuid("rbl-1-0", "m1"));
        assert_ne!(a, domain_uuid("rbl-1-0", "m2"));
        assert_ne!(a, domain_uuid("rbl-2-0", "m1"));
        let groups: Vec<&str> = a.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'), "{a}");
        assert!(
            matches!(groups[3].chars().next(), Some('8' | '9' | 'a' | 'b')),
            "{a}"
        );
        assert_eq!(
            redfish_url(Ipv4Addr::new(10, 77, 0, 1), 8000, &a),
            format!("redfish://admin:password@10.77.0.1:8000/redfish/v1/Systems/{a}")
        );
    }
}
