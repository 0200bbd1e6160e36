//! An ipmi_sim (OpenIPMI's BMC simulator) on 127.0.0.1 with a free UDP port, a chassis
//! control script that keeps the "hardware" state in files, killed by PID on drop.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "s3cret-pw";
pub const OPERATOR_USER: &str = "oper";
pub const OPERATOR_PASSWORD: &str = "oper-pw";

/// The chassis control program ipmi_sim calls as `<script> 0x20 get|set <param> [value]`.
/// `get` prints `param:value` lines; `set` records the value in `<dir>/<param>`.
const CHASSIS_SCRIPT: &str = r#"#!/bin/sh
dir=$(dirname "$0")
shift
op=$1; shift
echo "$op $*" >> "$dir/chassis.log"
case $op in
get)
  for p in "$@"; do
    case $p in
      power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)";;
      boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)";;
      *) echo "Invalid parameter: $p"; exit 1;;
    esac
  done;;
set)
  while [ $# -gt 0 ]; do
    p=$1; v=$2; shift 2
    case $p in
      power) echo "$v" > "$dir/power";;
      reset) echo "$v" >> "$dir/resets";;
      boot) echo "$v" > "$dir/boot";;
      shutdown) echo "$v" >> "$dir/shutdowns"; echo 0 > "$dir/power";;
      identify) shift;;
      *) echo "Invalid parameter: $p"; exit 1;;
    esac
  done;;
*) echo "Unknown operation: $op"; exit 1;;
esac
"#;

pub struct SimBmc {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl SimBmc {
    pub fn start() -> SimBmc {
        SimBmc::start_with_bmc_key(None)
    }

    /// With `bmc_key`, ipmi_sim uses it as Kg (two-key login) instead of the password.
    pub fn start_with_bmc_key(bmc_key: Option<&str>) -> SimBmc {
        let bin = which("ipmi_sim").unwrap_or_else(|| {
            panic!(
                "ipmi_sim not found in PATH: these tests need it, run `apt-get install -y openipmi`"
            )
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("chassis.sh");
        std::fs::write(&script, CHASSIS_SCRIPT).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("power"), "0\n").unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();

        // Pick a free port and hand it to ipmi_sim (a tiny race with other binders).
        {
            let port = free_udp_port();
            let conf = format!(
                r#"name "rbtsim"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
{bmc_key_line}  endlan
  chassis_control "{script} 0x20"
  user 2 true "{ADMIN_USER}" "{ADMIN_PASSWORD}" admin 10 none md2 md5 straight
  user 3 true "{OPERATOR_USER}" "{OPERATOR_PASSWORD}" operator 10 none md2 md5 straight
"#,
                script = script.display(),
                bmc_key_line = bmc_key
                    .map(|k| format!("    bmc_key \"{k}\"\n"))
                    .unwrap_or_default(),
            );
            std::fs::write(dir.path().join("lan.conf"), conf).unwrap();
            std::fs::write(
                dir.path().join("emu.cmds"),
                "mc_setbmc 0x20\n\
                 mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
                 mc_enable 0x20\n",
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("ipmi_sim.log")).unwrap();
            let child = Command::new(&bin)
                .arg("-c")
                .arg(dir.path().join("lan.conf"))
                .arg("-f")
                .arg(dir.path().join("emu.cmds"))
                .arg("-s")
                .arg(&state)
                .arg("-n")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn ipmi_sim");
            let mut sim = SimBmc {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir,
                child,
            };
            // Generous: ipmi_sim starts slowly on a loaded machine.
            if !sim.wait_ready(Duration::from_secs(30)) {
                panic!("ipmi_sim did not answer an ASF presence ping on port {port}");
            }
            sim
        }
    }

    /// Poll with ASF presence pings until ipmi_sim answers.
    fn wait_ready(&mut self, limit: Duration) -> bool {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 512];
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "ipmi_sim exited early with {status}: {}",
                    std::fs::read_to_string(self.dir.path().join("ipmi_sim.log"))
                        .unwrap_or_default()
                );
            }
            let _ = sock.send_to(&rackboot_ipmi::rmcp::encode_presence_ping(7), self.addr);
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && let Ok(pong) = rackboot_ipmi::rmcp::decode_presence_pong(&buf[..n])
            {
                assert_eq!(pong.tag, 7);
                assert!(
                    pong.ipmi_supported(),
                    "pong says IPMI unsupported: {pong:?}"
                );
                return true;
            }
        }
        false
    }

    pub fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(name))
            .ok()
            .map(|s| s.trim().to_string())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SimBmc {
    fn drop(&mut self) {
        // Child::kill signals this PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}
