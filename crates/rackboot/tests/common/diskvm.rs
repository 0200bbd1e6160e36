//! A throwaway VM for what the host's kernel cannot do (it has no md or
//! device-mapper): the host's Debian kernel and a RAM-disk built by
//! rackboot-ramdisk with mdadm, LVM and the file-system tools, which runs one
//! shell script against raw disk files and powers off. The script comes on
//! a small extra disk (serial `rbscript`); what it prints comes back from
//! the serial console. The VM's only network is QEMU's user-mode one with
//! `restrict=on` (the RAM-disk's init wants a DHCP lease; nothing leaves the
//! VM).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rackboot_ramdisk::tools::{Tool, default_tools};

/// Printed by the runner before and after the script.
pub const START: &str = "RBVM: script start";
pub const EXIT: &str = "RBVM: script exit ";

/// The runner, installed as the RAM-disk's "agent": it waits for the md/dm
/// and file-system modules, runs the script from the `rbscript` disk and
/// powers the VM off.
const RUNNER: &str = r#"#!/bin/sh
i=0
while [ ! -e /run/rackboot/modules-loaded ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /run/lvm /run/lock/lvm /etc/lvm
# No udev here: LVM makes its device nodes itself.
cat > /etc/lvm/lvm.conf <<'LVMEOF'
activation {
	udev_sync = 0
	udev_rules = 0
	verify_udev_operations = 1
}
devices {
	obtain_device_list_from_udev = 0
}
LVMEOF
script=
for d in /sys/block/vd*; do
	[ "$(cat $d/serial 2>/dev/null)" = rbscript ] && script=/dev/${d##*/}
done
if [ -z "$script" ]; then
	echo "RBVM: no script disk"
else
	tr -d '\000' < "$script" > /tmp/script.sh
	echo "RBVM: script start"
	sh /tmp/script.sh 2>&1
	echo "RBVM: script exit $?"
fi
sync
poweroff -f
sleep 3600
"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The VM's kernel and RAM-disk, built once into the target directory (a
/// new runner gets a new directory).
pub fn disk_vm_ramdisk() -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    RUNNER.hash(&mut hasher);
    let dir = workspace().join(format!("target/test-diskvm-{:016x}", hasher.finish()));
    let initrd = dir.join(rackboot_ramdisk::INITRAMFS_FILE);
    if initrd.is_file() {
        return dir;
    }
    let build = tempfile::tempdir_in(workspace().join("target")).unwrap();
    let runner = build.path().join("runner.sh");
    std::fs::write(&runner, RUNNER).unwrap();
    let mut options = rackboot_ramdisk::RamdiskOptions::new(&runner, &dir);
    let mut tools = default_tools();
    tools.extend([
        Tool::new(
            "lvm",
            "lvm2",
            &[
                "pvcreate", "vgcreate", "lvcreate", "vgchange", "pvs", "vgs", "lvs",
            ],
        ),
        Tool::new("dmsetup", "dmsetup", &[]),
        Tool::new("mke2fs", "e2fsprogs", &["mkfs.ext4"]),
        Tool::new("mkswap", "util-linux", &[]),
        Tool::new("wipefs", "util-linux", &[]),
        Tool::new("blkid", "util-linux", &[]),
        Tool::new("sfdisk", "fdisk", &[]),
        Tool::new("partx", "util-linux", &[]),
    ]);
    options.tools = tools;
    rackboot_ramdisk::build(&options).unwrap_or_else(|e| panic!("building the disk VM: {e}"));
    dir
}

/// Runs `script` (POSIX sh, the RAM-disk's busybox) in a VM with `disks`
/// attached in order (vda, vdb, ...), and returns what it printed between
/// [`START`] and its exit line (included). Panics on a timeout.
pub fn run_disk_script(work: &Path, disks: &[&Path], script: &str, timeout: Duration) -> String {
    let vm = disk_vm_ramdisk();
    let script_disk = work.join("rbscript.raw");
    let mut bytes = script.as_bytes().to_vec();
    bytes.resize(bytes.len().div_ceil(512).max(1) * 512 + 512, 0);
    std::fs::write(&script_disk, &bytes).unwrap();
    let serial = work.join("diskvm-serial.log");
    let _ = std::fs::remove_file(&serial);
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-m", "768", "-nographic", "-nodefaults"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(vm.join(rackboot_ramdisk::KERNEL_FILE))
        .arg("-initrd")
        .arg(vm.join(rackboot_ramdisk::INITRAMFS_FILE))
        .args(["-append", "console=ttyS0,115200n8 panic=-1"])
        .args(["-netdev", "user,id=n0,restrict=on"])
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .arg("-no-reboot");
    for (i, disk) in disks.iter().chain([&script_disk.as_path()]).enumerate() {
        let serial = if i == disks.len() {
            "rbscript".to_string()
        } else {
            format!("rbdisk{i}")
        };
        cmd.arg("-drive")
            .arg(format!(
                "file={},if=none,id=d{i},format=raw",
                disk.display()
            ))
            .arg("-device")
            .arg(format!("virtio-blk-pci,drive=d{i},serial={serial}"));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let log = String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    let out = match log.find(START) {
        Some(start) => {
            let rest = &log[start..];
            match rest.find(EXIT) {
                Some(end) => {
                    let line_end = rest[end..].find('\n').map_or(rest.len(), |n| end + n);
                    rest[..line_end].to_string()
                }
                None => rest.to_string(),
            }
        }
        None => String::new(),
    };
    assert!(
        status.is_some() && out.contains(EXIT),
        "the disk VM did not finish its script within {timeout:?}:\n{log}"
    );
    out
}
