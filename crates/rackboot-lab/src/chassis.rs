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
//!   order, and the disks `DIR/NAME.attached-disks` lists (all if absent; see
//!   [`crate::Lab::set_attached_disks`]). The serial log is appended to, so it survives power
//!   cycles. A no-op if already on.
//! - `set power 0`: SIGKILL to that QEMU (a power cut). `set shutdown 1` (`power soft`): SIGTERM,
//!   which makes QEMU exit cleanly, then SIGKILL after 10 s. `set reset 1`: off and on again
//!   (nothing if off). `set identify ...`: accepted (there is no light to blink).
//! - `get power`: `power:1` while the PID in the pid file is a QEMU whose command line names that
//!   pid file (a reused PID or a zombie counts as off). `get boot`: the last boot device set.
//! - `qemu-command`: prints the QEMU command line the next power-on would run (starts nothing).
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

use crate::qemu::{BootOrder, MachineConfig, prepare_machine_files, qemu_arg_parts};
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
        let quoted = |args: &[String]| {
            args.iter()
                .map(|a| sh_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let parts = |order: BootOrder| {
            let mut config = m.clone();
            config.boot = order;
            let mut parts = qemu_arg_parts(&config);
            let mut head = vec![
                "ip".to_string(),
                "netns".to_string(),
                "exec".to_string(),
                self.netns.clone(),
                m.firmware.emulator().to_string(),
            ];
            head.append(&mut parts.head);
            parts.head = head;
            parts.tail.extend([
                "-pidfile".to_string(),
                self.pid_file().display().to_string(),
            ]);
            parts
        };
        let (network, disk) = (parts(BootOrder::NetworkFirst), parts(BootOrder::DiskFirst));
        // The tail does not depend on the boot order.
        debug_assert_eq!(network.tail, disk.tail);
        let mut disk_cases = String::new();
        for (order, parts) in [("network", &network), ("disk", &disk)] {
            for (i, args) in parts.disks.iter().enumerate() {
                disk_cases.push_str(&format!(
                    "            {order}:{i}) QEMU_ARGS+=({}) ;;\n",
                    quoted(args)
                ));
            }
        }
        let all_disks: Vec<String> = (0..m.disks_mib.len()).map(|i| i.to_string()).collect();
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
DISKSFILE={disksfile}
ALL_DISKS={all_disks}
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

# The boot order the next power-on uses: the last boot device set, else the machine's default.
boot_order() {{
    case "$(boot_device)" in pxe) echo network ;; default) echo disk ;; *) echo "$DEFAULT_ORDER" ;; esac
}}

# The disks the next power-on attaches: all, unless DISKSFILE lists some (0-based indices on one
# line; rackboot_lab::Lab::set_attached_disks writes it).
attached_disks() {{
    if [ -e "$DISKSFILE" ]; then cat "$DISKSFILE"; else echo "$ALL_DISKS"; fi
}}

# Sets QEMU_ARGS to the command that starts the machine with boot order $1 (network|disk) and the
# attached disks. A disk keeps its serial and boot priority whichever others are left out.
qemu_command() {{
    local disks i
    case "$1" in
        network) QEMU_ARGS=({network_head}) ;;
        disk) QEMU_ARGS=({disk_head}) ;;
    esac
    read -r -a disks < <(attached_disks)
    for i in "${{disks[@]}}"; do
        case "$1:$i" in
{disk_cases}            *) echo "machine {name} has no disk '$i' (see $DISKSFILE)" >&2; return 1 ;;
        esac
    done
    QEMU_ARGS+=({tail})
}}

launch() {{
    # Close every inherited descriptor (ipmi_sim's sockets, our flock) before QEMU starts: QEMU
    # outlives this call and must not hold them.
    local fd
    for fd in $(ls /proc/$BASHPID/fd); do
        [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done 2>/dev/null
    exec setsid "${{QEMU_ARGS[@]}}"
}}

start_vm() {{
    local dev order launcher i state
    dev=$(boot_device)
    order=$(boot_order)
    qemu_command "$order" || return 1
    rm -f "$PIDFILE"
    (launch) </dev/null >>"$QEMU_LOG" 2>&1 &
    launcher=$!
    for i in $(seq 150); do
        if pid=$(running_pid); then
            log "power on: qemu pid $pid, boot device $dev, $order first, disks $(attached_disks)"
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
qemu-command)
    # What `set power 1` would run now (for people and tests; starts nothing).
    qemu_command "$(boot_order)" || exit 1
    printf '%q ' "${{QEMU_ARGS[@]}}"
    echo
    ;;
*) echo "usage: $0 get PARAM... | set PARAM VALUE... | qemu-command" >&2; exit 2 ;;
esac
exit 0
"#,
            name = m.name,
            mac = crate::qemu::format_mac(&m.mac),
            pidfile = sh_quote(&self.pid_file().display().to_string()),
            bootfile = sh_quote(&self.boot_device_file().display().to_string()),
            disksfile = sh_quote(&m.attached_disks_file().display().to_string()),
            all_disks = sh_quote(&all_disks.join(" ")),
            network_head = quoted(&network.head),
            disk_head = quoted(&disk.head),
            tail = quoted(&network.tail),
            qemu_log = sh_quote(&m.qemu_log().display().to_string()),
            log = sh_quote(&self.log().display().to_string()),
            lock = sh_quote(&self.file("chassis.lock").display().to_string()),
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
    let started = crate::process::start_time(pid);
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    // An exiting process loses its command line before it becomes a zombie: wait for the latter
    // (start_time is None for a zombie or a gone process), so "off" means QEMU has exited.
    while started.is_some()
        && crate::process::start_time(pid) == started
        && Instant::now() < deadline
    {
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
                disks_mib: vec![8, 8],
                dmi_serial: None,
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
            "network) QEMU_ARGS=('ip' 'netns' 'exec' 'rbl-1-0' 'qemu-system-x86_64' '-name' 'm1'"
        ));
        assert!(script.contains("'virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bootindex=1'"));
        assert!(script.contains("'virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,bootindex=3'"));
        assert!(script.contains(
            "disk:1) QEMU_ARGS+=('-drive' 'file=/lab/m1.disk1.raw,if=none,id=disk1,format=raw' \
             '-device' 'virtio-blk-pci,drive=disk1,serial=rbm1d1,bootindex=2') ;;"
        ));
        assert!(script.contains("network:0) QEMU_ARGS+=("));
        assert!(script.contains("'-pidfile' '/lab/m1.qemu.pid'"));
        assert!(script.contains("ALL_DISKS='0 1'"));
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
        for disk in ["m1.disk0.raw", "m1.disk1.raw"] {
            assert_eq!(
                std::fs::metadata(dir.path().join(disk)).unwrap().len(),
                8 << 20
            );
        }
        let log = std::fs::read_to_string(c.log()).unwrap();
        assert!(log.contains("called: set boot pxe"), "{log}");
    }

    /// The command the next power-on runs follows the boot device and the attached-disks file,
    /// exactly as `qemu_args_with_disks` builds it for direct starts.
    #[test]
    fn power_on_command_follows_boot_device_and_attached_disks() {
        let dir = tempfile::tempdir().unwrap();
        let c = chassis(dir.path());
        c.install().unwrap();
        let expected = |boot: BootOrder, disks: &[usize]| {
            let mut config = c.machine().clone();
            config.boot = boot;
            let mut args = vec!["ip", "netns", "exec", "rbl-1-0", "qemu-system-x86_64"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>();
            args.extend(crate::qemu::qemu_args_with_disks(&config, disks).unwrap());
            args.extend(["-pidfile".to_string(), c.pid_file().display().to_string()]);
            args
        };
        // Parse bash's %q output back into words.
        let words = |line: String| -> Vec<String> {
            let out = Command::new("bash")
                .arg("-c")
                .arg(format!("for w in {line}; do printf '%s\\0' \"$w\"; done"))
                .output()
                .unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .split_terminator('\0')
                .map(String::from)
                .collect()
        };
        let command = || words(c.run(&["qemu-command"]).unwrap().trim_end().to_string());
        assert_eq!(command(), expected(BootOrder::DiskFirst, &[0, 1]));
        crate::qemu::write_attached_disks(c.machine(), Some(&[1])).unwrap();
        assert_eq!(command(), expected(BootOrder::DiskFirst, &[1]));
        c.run(&["set", "boot", "pxe"]).unwrap();
        assert_eq!(command(), expected(BootOrder::NetworkFirst, &[1]));
        crate::qemu::write_attached_disks(c.machine(), Some(&[])).unwrap();
        assert_eq!(command(), expected(BootOrder::NetworkFirst, &[]));
        // A disk the machine does not have: refused before anything starts.
        std::fs::write(c.machine().attached_disks_file(), "0 7\n").unwrap();
        let err = c.run(&["set", "power", "1"]).unwrap_err().to_string();
        assert!(err.contains("has no disk '7'"), "{err}");
        assert!(!c.is_powered_on());
        crate::qemu::write_attached_disks(c.machine(), None).unwrap();
        assert_eq!(command(), expected(BootOrder::NetworkFirst, &[0, 1]));
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
