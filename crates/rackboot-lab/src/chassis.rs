//! The "chassis" of a lab machine behind an emulated BMC: a generated bash program that powers the
//! machine's QEMU on and off. OpenIPMI's ipmi_sim runs it for every chassis command
//! (`chassis_control` in lan.conf): `PROGRAM get power boot`, `PROGRAM set power "1"`,
//! `PROGRAM set boot "pxe"`, ... and reads `power:1` / `boot:pxe` lines back.
//!
//! Why a generated script and not a Rust subcommand: it needs nothing but bash, util-linux and
//! iproute2, so any process (ipmi_sim, `rackboot lab`, another crate's test, a human) can run it
//! without knowing where a rackboot binary lives; and everything it does is readable in one file
//! next to the machine's serial log.
//!
//! What the script does:
//! - `set power 1`: starts QEMU (same arguments as [`crate::QemuMachine`], plus
//!   `-pidfile DIR/NAME.qemu.pid`) in the lab namespace through `ip netns exec`, detached in its own
//!   session, with the boot order the last `set boot` asked for: `pxe` → network first, `default`
//!   (ipmitool's `bootdev disk`) → disk first, `none`/`cdrom`/`bios` → the machine's configured
//!   order. The serial log is appended to, so it survives power cycles. A no-op if already on.
//! - `set power 0`: SIGKILL to that QEMU (a power cut). `set shutdown 1` (`power soft`): SIGTERM,
//!   which makes QEMU exit cleanly, then SIGKILL after 10 s. `set reset 1`: off and on again
//!   (nothing if off). `set identify ...`: accepted (there is no light to blink).
//! - `get power`: `power:1` while the PID in the pid file is a QEMU whose command line names that
//!   pid file (a reused PID or a zombie counts as off). `get boot`: the last boot device set.
//! - The boot device is kept until changed: ipmi_sim does not pass ipmitool's "next boot only"
//!   flag to the program, so "once" and "persistent" behave alike.
//!
//! Calls are serialised with `flock` on `DIR/NAME.chassis.lock` and logged to
//! `DIR/NAME.chassis.log`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::qemu::{BootOrder, MachineConfig, prepare_machine_files, qemu_args};
use crate::{LabError, Result, io_err};

/// One machine's chassis program and the files it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmChassis {
    netns: String,
    machine: MachineConfig,
}

impl VmChassis {
    /// The chassis of `machine`, whose tap lives in namespace `netns`. `machine.boot` is the order
    /// used until a boot device is set.
    pub fn new(netns: &str, machine: MachineConfig) -> VmChassis {
        VmChassis {
            netns: netns.to_string(),
            machine,
        }
    }

    pub fn machine(&self) -> &MachineConfig {
        &self.machine
    }

    /// The generated program: `DIR/NAME.chassis`.
    pub fn program(&self) -> PathBuf {
        self.file("chassis")
    }

    /// Where QEMU writes its PID while it runs (`-pidfile`).
    pub fn pid_file(&self) -> PathBuf {
        self.file("qemu.pid")
    }

    /// The last boot device set through the BMC (`pxe`, `default`, `none`, `cdrom`, `bios`).
    pub fn boot_device_file(&self) -> PathBuf {
        self.file("bootdev")
    }

    /// One line per call of the program (what ipmi_sim asked for and what happened).
    pub fn log(&self) -> PathBuf {
        self.file("chassis.log")
    }

    fn file(&self, suffix: &str) -> PathBuf {
        self.machine
            .dir
            .join(format!("{}.{suffix}", self.machine.name))
    }

    /// Writes the program (mode 0755) and the machine's disk/UEFI variable files.
    pub fn install(&self) -> Result<PathBuf> {
        prepare_machine_files(&self.machine)?;
        let program = self.program();
        check_shell_safe_path(&program)?;
        std::fs::write(&program, self.script())
            .map_err(io_err(format!("write {}", program.display())))?;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("chmod {}", program.display())))?;
        Ok(program)
    }

    /// The bash program's text.
    pub fn script(&self) -> String {
        let m = &self.machine;
        let qemu = |order: BootOrder| {
            let mut config = m.clone();
            config.boot = order;
            let mut args = vec![
                "ip".to_string(),
                "netns".to_string(),
                "exec".to_string(),
                self.netns.clone(),
                "qemu-system-x86_64".to_string(),
            ];
            args.extend(qemu_args(&config));
            args.extend([
                "-pidfile".to_string(),
                self.pid_file().display().to_string(),
            ]);
            args.iter()
                .map(|a| sh_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let default_order = match m.boot {
            BootOrder::NetworkFirst => "network",
            BootOrder::DiskFirst => "disk",
        };
        format!(
            r#"#!/bin/bash
# Chassis of lab machine {name} (MAC {mac}), generated by rackboot-lab.
# ipmi_sim's chassis_control runs: {{get PARAM...|set PARAM VALUE...}}; see rackboot_lab::chassis.
set -u
PIDFILE={pidfile}
BOOTFILE={bootfile}
QEMU_LOG={qemu_log}
LOG={log}
DEFAULT_ORDER={default_order}

log() {{ echo "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ) $*" >>"$LOG"; }}

# The PID of this machine's QEMU, if it runs: the PID file names a live process whose command line
# holds the PID file path (so a reused PID or a zombie reads as "off").
running_pid() {{
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
    case "$pid" in ''|*[!0-9]*) return 1 ;; esac
    grep -qaF -- "$PIDFILE" "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}}

boot_device() {{
    local dev
    dev=$(cat "$BOOTFILE" 2>/dev/null)
    case "$dev" in pxe|default|cdrom|bios) echo "$dev" ;; *) echo none ;; esac
}}

launch() {{
    # Close every inherited descriptor (ipmi_sim's sockets, our flock) before QEMU starts: QEMU
    # outlives this call and must not hold them.
    local fd
    for fd in $(ls /proc/$BASHPID/fd); do
        [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done 2>/dev/null
    case "$1" in
        network) exec setsid {qemu_network} ;;
        disk) exec setsid {qemu_disk} ;;
    esac
}}

start_vm() {{
    local dev order launcher i state
    dev=$(boot_device)
    case "$dev" in pxe) order=network ;; default) order=disk ;; *) order=$DEFAULT_ORDER ;; esac
    rm -f "$PIDFILE"
    (launch "$order") </dev/null >>"$QEMU_LOG" 2>&1 &
    launcher=$!
    for i in $(seq 150); do
        if pid=$(running_pid); then
            log "power on: qemu pid $pid, boot device $dev, $order first"
            return 0
        fi
        state=$(cut -d' ' -f3 "/proc/$launcher/stat" 2>/dev/null)
        if [ -z "$state" ] || [ "$state" = Z ]; then break; fi
        sleep 0.1
    done
    log "power on failed (boot device $dev); see $QEMU_LOG"
    echo "qemu did not start; last lines of $QEMU_LOG:" >&2
    tail -n 5 "$QEMU_LOG" >&2
    return 1
}}

# Signals QEMU and waits (at most $2 tenths of a second) until it is gone.
stop_vm() {{
    local pid i
    pid=$(running_pid) || {{ rm -f "$PIDFILE"; return 0; }}
    kill "-$1" "$pid" 2>/dev/null
    for i in $(seq "$2"); do
        running_pid >/dev/null || break
        sleep 0.1
    done
    if running_pid >/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        for i in $(seq 50); do running_pid >/dev/null || break; sleep 0.1; done
    fi
    if running_pid >/dev/null; then
        log "power off failed: qemu pid $pid still runs"
        return 1
    fi
    rm -f "$PIDFILE"
    log "power off ($1): qemu pid $pid stopped"
}}

exec 9>>{lock}
flock -w 60 9 || {{ echo "chassis of {name} is busy" >&2; exit 1; }}
log "called: $*"
op=${{1:-}}
shift || true
case "$op" in
get)
    for param in "$@"; do
        case "$param" in
            power) if running_pid >/dev/null; then echo power:1; else echo power:0; fi ;;
            boot) echo "boot:$(boot_device)" ;;
            *) echo "unknown parameter $param" >&2; exit 1 ;;
        esac
    done
    ;;
set)
    while [ $# -ge 2 ]; do
        param=$1 value=$2
        shift 2
        case "$param" in
            power)
                if [ "$value" = 0 ]; then
                    stop_vm KILL 50 || exit 1
                elif ! running_pid >/dev/null; then
                    start_vm || exit 1
                fi
                ;;
            reset)
                if running_pid >/dev/null; then
                    stop_vm KILL 50 || exit 1
                    start_vm || exit 1
                fi
                ;;
            shutdown) stop_vm TERM 100 || exit 1 ;;
            boot)
                case "$value" in
                    none|pxe|default|cdrom|bios) echo "$value" >"$BOOTFILE"; log "boot device $value" ;;
                    *) echo "unknown boot device $value" >&2; exit 1 ;;
                esac
                ;;
            identify) ;;
            *) echo "unknown parameter $param" >&2; exit 1 ;;
        esac
    done
    if [ $# -ne 0 ]; then echo "set $1: missing value" >&2; exit 1; fi
    ;;
check) ;;
*) echo "usage: $0 get PARAM... | set PARAM VALUE..." >&2; exit 2 ;;
esac
exit 0
"#,
            name = m.name,
            mac = crate::qemu::format_mac(&m.mac),
            pidfile = sh_quote(&self.pid_file().display().to_string()),
            bootfile = sh_quote(&self.boot_device_file().display().to_string()),
            qemu_log = sh_quote(&m.qemu_log().display().to_string()),
            log = sh_quote(&self.log().display().to_string()),
            lock = sh_quote(&self.file("chassis.lock").display().to_string()),
            qemu_network = qemu(BootOrder::NetworkFirst),
            qemu_disk = qemu(BootOrder::DiskFirst),
        )
    }

    /// Runs the program with `args` (e.g. `["set", "power", "1"]`) and returns its stdout; a
    /// non-zero exit is an error carrying its stderr. Bounded: the program waits at most ~60 s
    /// for its lock and ~15 s for QEMU.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        crate::netns::run(Command::new(self.program()).args(args))
    }

    /// Powers on (like the BMC's `chassis power on`); a no-op if on.
    pub fn power_on(&self) -> Result<()> {
        self.run(&["set", "power", "1"]).map(drop)
    }

    /// Cuts the power (like `chassis power off`); a no-op if off.
    pub fn power_off(&self) -> Result<()> {
        self.run(&["set", "power", "0"]).map(drop)
    }

    /// The PID of the running QEMU, checked the way the program checks it (without running it).
    pub fn qemu_pid(&self) -> Option<u32> {
        let pid_file = self.pid_file();
        running_qemu_pid(&pid_file, &pid_file.display().to_string())
    }

    pub fn is_powered_on(&self) -> bool {
        self.qemu_pid().is_some()
    }
}

/// The PID recorded in a QEMU pid file, if that process runs and one of its command-line arguments
/// is `tag` (the pid file path for chassis-started QEMU, the domain UUID for libvirt's), so a
/// reused PID or a zombie is not mistaken for the machine's QEMU.
pub(crate) fn running_qemu_pid(pid_file: &Path, tag: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let mut cmdline = Vec::new();
    std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .ok()?
        .read_to_end(&mut cmdline)
        .ok()?;
    let needle = tag.as_bytes();
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == needle)
        .then_some(pid)
}

/// Kills (SIGKILL) the QEMU recorded in a pid file (checked as in [`running_qemu_pid`]) and waits
/// up to 5 s for it to go. Returns its PID if it was running.
pub(crate) fn kill_recorded_qemu(pid_file: &Path, tag: &str) -> Option<u32> {
    let pid = running_qemu_pid(pid_file, tag)?;
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while running_qemu_pid(pid_file, tag).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(pid_file);
    Some(pid)
}

/// `'text'` for bash, with embedded single quotes escaped.
pub(crate) fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// ipmi_sim passes chassis_control to `sh -c` inside a double-quoted config value: keep the path
/// to characters that need no quoting in either.
pub(crate) fn check_shell_safe_path(path: &Path) -> Result<()> {
    let text = path.display().to_string();
    if text.is_empty()
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ','))
    {
        return Err(LabError::Config(format!(
            "{text:?}: a BMC lab directory path may only contain [A-Za-z0-9/._+,-] \
             (ipmi_sim runs the chassis program through sh)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::{Firmware, NicRom};

    fn chassis(dir: &Path) -> VmChassis {
        VmChassis::new(
            "rbl-1-0",
            MachineConfig {
                name: "m1".into(),
                mac: [0x52, 0x54, 0, 0, 0, 1],
                tap: "tap1".into(),
                firmware: Firmware::Bios,
                memory_mib: 512,
                nic_rom: NicRom::Default,
                disk_mib: Some(8),
                boot: BootOrder::DiskFirst,
                no_reboot: false,
                dir: dir.to_path_buf(),
                extra_args: vec!["-smbios".into(), "type=1,serial=it's".into()],
            },
        )
    }

    #[test]
    fn script_starts_qemu_in_the_namespace_with_both_boot_orders() {
        let c = chassis(Path::new("/lab"));
        let script = c.script();
        assert!(script.contains(
            "network) exec setsid 'ip' 'netns' 'exec' 'rbl-1-0' 'qemu-system-x86_64' '-name' 'm1'"
        ));
        assert!(script.contains("'virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bootindex=1'"));
        assert!(script.contains("'virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bootindex=2'"));
        assert!(script.contains("'-pidfile' '/lab/m1.qemu.pid'"));
        assert!(script.contains("DEFAULT_ORDER=disk"));
        // Quotes inside arguments survive bash.
        assert!(script.contains(r"'type=1,serial=it'\''s'"));
    }

    #[test]
    fn script_is_valid_bash_and_answers_get_without_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let c = chassis(dir.path());
        let program = c.install().unwrap();
        let syntax = Command::new("bash")
            .arg("-n")
            .arg(&program)
            .output()
            .unwrap();
        assert!(syntax.status.success(), "{syntax:?}");
        assert_eq!(
            c.run(&["get", "power", "boot"]).unwrap(),
            "power:0\nboot:none\n"
        );
        c.run(&["set", "boot", "pxe"]).unwrap();
        assert_eq!(c.run(&["get", "boot"]).unwrap(), "boot:pxe\n");
        // Powering off what is off is fine; nonsense is refused.
        c.power_off().unwrap();
        assert!(c.run(&["set", "boot", "floppy"]).is_err());
        assert!(c.run(&["set", "power"]).is_err());
        assert!(c.run(&["frobnicate"]).is_err());
        assert_eq!(c.run(&["get", "boot"]).unwrap(), "boot:pxe\n");
        // The disk was created for the first power-on.
        assert_eq!(
            std::fs::metadata(dir.path().join("m1.disk.raw"))
                .unwrap()
                .len(),
            8 << 20
        );
        let log = std::fs::read_to_string(c.log()).unwrap();
        assert!(log.contains("called: set boot pxe"), "{log}");
    }

    #[test]
    fn a_pid_file_naming_another_process_reads_as_off() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("m1.qemu.pid");
        // Our own PID: alive, but our command line does not name the pid file.
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        let tag = pid_file.display().to_string();
        assert_eq!(running_qemu_pid(&pid_file, &tag), None);
        assert_eq!(kill_recorded_qemu(&pid_file, &tag), None);
        // Our own command line's first argument: found.
        let me = std::env::args().next().unwrap();
        assert_eq!(running_qemu_pid(&pid_file, &me), Some(std::process::id()));
        std::fs::write(&pid_file, "garbage").unwrap();
        assert_eq!(running_qemu_pid(&pid_file, &me), None);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(check_shell_safe_path(Path::new("/tmp/.tmpAb1/lab/m1.chassis")).is_ok());
        for bad in ["/tmp/a b/m1", "/tmp/\"x", "/tmp/$(x)", "/tmp/a'b", ""] {
            assert!(check_shell_safe_path(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
