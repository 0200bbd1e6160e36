//! A real RAM-disk built from this host's kernel, modules and tools, checked from the inside
//! (its archive, and its programs run in a chroot), then booted under QEMU (TCG) with
//! `-kernel/-initrd` on a tap in a private namespace where dnsmasq serves DHCP: once with two
//! virtio NICs (one without DHCP), once with an e1000 named by BOOTIF.
//!
//! Needs root and: linux-image-amd64, busybox-static, kmod, mdadm, nvme-cli, hdparm, dosfstools,
//! zstd, qemu-system-x86, dnsmasq-base. Run with `--nocapture` to see sizes and boot timings.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rackboot_lab::{LabProcess, Netns, NetnsConfig, unique_name};
use rackboot_ramdisk::rootfs::{CpioMember, read_newc};
use rackboot_ramdisk::{
    Compression, INITRAMFS_FILE, KERNEL_FILE, MANIFEST_FILE, RamdiskManifest, RamdiskOptions,
    build, init, sha256_file,
};

/// What the stand-in agent prints first, every run.
const AGENT_MARKER: &str = "RACKBOOT-STANDIN-AGENT up";

/// Stand-in for rackboot-agent: prints the marker, the command line and its addresses; the first
/// run exits 3 (so the respawn loop shows), the second stays up.
const STANDIN_AGENT: &str = "#!/bin/sh
echo \"RACKBOOT-STANDIN-AGENT up run=$(ls /run/standin-runs 2>/dev/null | wc -l)\"
cat /proc/cmdline
ip -4 addr
mkdir -p /run/standin-runs
if [ ! -e /run/standin-runs/first ]; then
	touch /run/standin-runs/first
	exit 3
fi
exec sleep 3600
";

const MIB: u64 = 1024 * 1024;

struct Built {
    _dir: tempfile::TempDir,
    out: PathBuf,
    manifest: RamdiskManifest,
    members: Vec<CpioMember>,
}

/// One build shared by the tests of this file (it takes a minute or two).
fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("standin-agent");
        std::fs::write(&agent, STANDIN_AGENT).unwrap();
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = dir.path().join("ramdisk");
        let started = Instant::now();
        let manifest = build(&RamdiskOptions::new(&agent, &out)).unwrap();
        eprintln!(
            "built in {:.0?}: kernel {} ({} bytes), initramfs {} bytes ({:.1} MiB, {}; {:.1} MiB \
             unpacked), {} modules ({:.1} MiB), {} busybox applets",
            started.elapsed(),
            manifest.kernel_version,
            manifest.kernel.size,
            manifest.initramfs.size,
            manifest.initramfs.size as f64 / MIB as f64,
            manifest.compression,
            manifest.initramfs_uncompressed_size as f64 / MIB as f64,
            manifest.modules.count,
            manifest.modules.size as f64 / MIB as f64,
            manifest.busybox_applets,
        );
        let cpio = decompress(&out.join(INITRAMFS_FILE), manifest.compression);
        let members = read_newc(&cpio).unwrap();
        Built {
            _dir: dir,
            out,
            manifest,
            members,
        }
    })
}

fn decompress(path: &Path, compression: Compression) -> Vec<u8> {
    let program = match compression {
        Compression::Zstd => "zstd",
        Compression::Xz => "xz",
    };
    let output = Command::new(program).arg("-dc").arg(path).output().unwrap();
    assert!(output.status.success(), "{program} -dc: {output:?}");
    output.stdout
}

fn member<'a>(members: &'a [CpioMember], path: &str) -> &'a CpioMember {
    members
        .iter()
        .find(|m| m.path == path)
        .unwrap_or_else(|| panic!("{path} is not in the initramfs"))
}

#[test]
fn real_build_on_this_host() {
    if !rackboot_testenv::privileged("root: the host's kernel and modules, QEMU") {
        return;
    }
    let b = built();
    let m = &b.manifest;

    // The newest kernel with both an image and modules (the running one may have neither).
    assert!(Path::new(&format!("/boot/vmlinuz-{}", m.kernel_version)).is_file());
    assert!(Path::new(&format!("/lib/modules/{}/modules.dep", m.kernel_version)).is_file());
    assert_eq!(m.compression, Compression::Zstd);
    for (file, described) in [(KERNEL_FILE, &m.kernel), (INITRAMFS_FILE, &m.initramfs)] {
        let path = b.out.join(file);
        assert_eq!(described.file, file);
        assert_eq!(described.size, std::fs::metadata(&path).unwrap().len());
        assert_eq!(described.sha256, sha256_file(&path).unwrap());
    }
    assert_eq!(&RamdiskManifest::read(&b.out).unwrap(), m);
    let mut files: Vec<String> = std::fs::read_dir(&b.out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, [INITRAMFS_FILE, MANIFEST_FILE, KERNEL_FILE]);
    // Nothing left beside the output but the test's own files.
    let leftovers: Vec<_> = std::fs::read_dir(b.out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".build-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        m.initramfs.size <= 64 * MIB,
        "initramfs is {} bytes",
        m.initramfs.size
    );
    assert!(m.modules.count > 300, "{} modules", m.modules.count);

    let paths: BTreeSet<&str> = m.binaries.iter().map(|b| b.path.as_str()).collect();
    for program in [
        "/bin/rackboot-agent",
        "/bin/busybox",
        "/bin/mdadm",
        "/bin/nvme",
        "/bin/hdparm",
        "/bin/mkfs.fat",
        "/bin/kmod",
    ] {
        assert!(paths.contains(program), "{program} not in {paths:?}");
    }

    // The archive: parents first, /init executable, every symlink lands, every library there.
    let members = &b.members;
    let mut dirs = BTreeSet::new();
    for entry in members {
        if let Some((parent, _)) = entry.path.rsplit_once('/') {
            assert!(
                dirs.contains(parent),
                "{} precedes its directory",
                entry.path
            );
        }
        if entry.is_dir() {
            dirs.insert(entry.path.as_str());
        }
    }
    let init = member(members, "init");
    assert!(init.is_file() && init.permissions() == 0o755);
    assert_eq!(init.data, init::INIT_SCRIPT.as_bytes());
    let by_path: BTreeMap<&str, &CpioMember> =
        members.iter().map(|m| (m.path.as_str(), m)).collect();
    for link in members.iter().filter(|m| m.is_symlink()) {
        let target = String::from_utf8(link.data.clone()).unwrap();
        let dir = link.path.rsplit_once('/').map_or("", |(d, _)| d);
        let resolved = if let Some(abs) = target.strip_prefix('/') {
            abs.to_string()
        } else {
            normalize_join(dir, &target)
        };
        assert!(
            by_path.contains_key(resolved.as_str()),
            "{} -> {target} leads nowhere",
            link.path
        );
    }
    for library in &m.libraries {
        assert!(member(members, library.trim_start_matches('/')).is_file());
    }
    assert!(member(members, "bin/modprobe").data == b"kmod");
    let modules = format!("lib/modules/{}", m.kernel_version);
    let dep = String::from_utf8(
        member(members, &format!("{modules}/modules.dep"))
            .data
            .clone(),
    )
    .unwrap();
    for module in [
        "drivers/net/ethernet/intel/e1000/e1000.ko",
        "drivers/net/ethernet/intel/e1000e/e1000e.ko",
        "drivers/net/virtio_net.ko",
        "drivers/virtio/virtio_pci.ko",
        "drivers/scsi/mpt3sas/mpt3sas.ko",
        "drivers/nvme/host/nvme.ko",
        "drivers/ata/ahci.ko",
        "drivers/md/raid456.ko",
        "fs/ext4/ext4.ko",
        "fs/xfs/xfs.ko",
        "drivers/net/phy/realtek.ko",
    ] {
        assert!(
            dep.contains(&format!("kernel/{module}:")),
            "{module} not in modules.dep"
        );
    }
    assert!(!dep.contains("drivers/net/wireless/"));
    for index in [
        "modules.alias.bin",
        "modules.dep.bin",
        "modules.builtin.bin",
        "modules.softdep",
    ] {
        assert!(
            member(members, &format!("{modules}/{index}")).is_file(),
            "{index}"
        );
    }
}

/// `a/b` + `../c` → `a/c`.
fn normalize_join(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Unpacks the archive into `root` (device nodes skipped: devtmpfs provides them).
fn unpack(members: &[CpioMember], root: &Path) {
    for m in members {
        let path = root.join(&m.path);
        if m.is_dir() {
            std::fs::create_dir_all(&path).unwrap();
        } else if m.is_file() {
            std::fs::write(&path, &m.data).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m.permissions()))
                .unwrap();
        } else if m.is_symlink() {
            std::os::unix::fs::symlink(String::from_utf8(m.data.clone()).unwrap(), &path).unwrap();
        }
    }
}

/// The shipped programs run inside the RAM-disk's own tree: their libraries and loader are all
/// there, and kmod resolves dependencies, soft dependencies and device aliases from the indexes.
#[test]
fn programs_run_inside_the_ramdisk_tree() {
    if !rackboot_testenv::privileged("root: the host's kernel and modules, chroot") {
        return;
    }
    let b = built();
    let root = tempfile::tempdir().unwrap();
    unpack(&b.members, root.path());
    let chroot = |args: &[&str]| -> String {
        let output = Command::new("/usr/sbin/chroot")
            .arg(root.path())
            .args(args)
            .env_clear()
            .env("PATH", "/bin")
            .output()
            .expect("run chroot");
        assert!(output.status.success(), "{args:?}: {output:?}");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    assert!(chroot(&["mdadm", "--version"]).contains("mdadm - v"));
    assert!(chroot(&["nvme", "version"]).contains("nvme version"));
    assert!(chroot(&["hdparm", "-V"]).contains("hdparm"));
    assert!(chroot(&["mkfs.vfat", "--help"]).contains("mkfs.fat"));
    assert!(chroot(&["sh", "-c", "echo ok from $0"]).contains("ok from sh"));
    let version = &b.manifest.kernel_version;
    let deps = |what: &str| chroot(&["modprobe", "-S", version, "--show-depends", what]);
    let e1000e = deps("e1000e");
    assert!(e1000e.contains("/e1000e.ko"), "{e1000e}");
    // The e1000 QEMU emulates, by its PCI modalias (as coldplug asks for it).
    let e1000 = deps("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00");
    assert!(e1000.contains("/e1000.ko"), "{e1000}");
    // r8169 wants the realtek PHY driver first (a soft dependency).
    let r8169 = deps("r8169");
    assert!(
        r8169.contains("/realtek.ko") && r8169.contains("/r8169.ko"),
        "{r8169}"
    );
    let ext4 = deps("ext4");
    assert!(
        ext4.contains("/jbd2.ko") && ext4.contains("crc32c"),
        "{ext4}"
    );
}

/// Runs dnsmasq as the DHCP server on the namespace's bridge (pool .100-.200).
async fn start_dnsmasq(netns: &Netns, dir: &Path) -> LabProcess {
    let mut cmd = netns.command("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--log-facility=-",
        "--conf-file=/dev/null",
        "--port=0",
        "--user=root",
        "--group=root",
        "--bind-interfaces",
        "--log-dhcp",
    ])
    .arg(format!("--interface={}", netns.bridge()))
    .arg("--dhcp-range=10.77.0.100,10.77.0.200,255.255.255.0,10m")
    .arg(format!(
        "--dhcp-leasefile={}",
        dir.join("dnsmasq.leases").display()
    ));
    let dnsmasq = netns
        .spawn("dnsmasq", cmd, &dir.join("dnsmasq.log"))
        .unwrap();
    dnsmasq
        .wait_for_output("sockets bound exclusively", Duration::from_secs(10))
        .await
        .unwrap();
    dnsmasq
}

struct Boot<'a> {
    name: &'a str,
    /// `-device` values; NIC i uses netdev `n{i}`.
    nics: Vec<String>,
    /// Tap of each netdev.
    taps: Vec<&'a str>,
    append: String,
}

struct BootTimes {
    network_up: Duration,
    agent: Duration,
    address: Ipv4Addr,
    serial: String,
}

const BOOT_TIMEOUT: Duration = Duration::from_secs(100);

/// Boots the built RAM-disk and waits for the network-up line, the agent marker and the agent's
/// restart; returns when each appeared (from QEMU's start) and the console.
async fn boot(netns: &Netns, dir: &Path, ramdisk: &Path, spec: Boot<'_>) -> BootTimes {
    let mut cmd = netns.command("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-m", "512", "-smp", "1"])
        .args([
            "-nographic",
            "-nodefaults",
            "-monitor",
            "none",
            "-serial",
            "stdio",
        ])
        .args(["-no-reboot", "-kernel"])
        .arg(ramdisk.join(KERNEL_FILE))
        .arg("-initrd")
        .arg(ramdisk.join(INITRAMFS_FILE))
        .arg("-append")
        .arg(&spec.append);
    for (i, (nic, tap)) in spec.nics.iter().zip(&spec.taps).enumerate() {
        cmd.arg("-netdev")
            .arg(format!("tap,id=n{i},ifname={tap},script=no,downscript=no"))
            .arg("-device")
            .arg(format!("{nic},netdev=n{i},romfile="));
    }
    let log = dir.join(format!("{}.console.log", spec.name));
    let started = Instant::now();
    let qemu = netns
        .spawn(&format!("qemu-{}", spec.name), cmd, &log)
        .unwrap();
    let wait = |pattern: &'static str| {
        let qemu = &qemu;
        async move {
            match qemu.wait_for_output(pattern, BOOT_TIMEOUT).await {
                Ok(line) => (line, started.elapsed()),
                Err(err) => panic!("{}: {err}", spec.name),
            }
        }
    };
    let (line, network_up) = wait(init::NETWORK_UP).await;
    let (_, agent) = wait(AGENT_MARKER).await;
    wait("rackboot-agent exited with status 3; restarting in 2 s").await;
    wait("starting rackboot-agent (run 2)").await;
    let address: Ipv4Addr = line
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    // The second run's `ip -4 addr` shows the address too.
    wait("run=1").await;
    let serial = qemu.output();
    qemu.kill().unwrap();
    BootTimes {
        network_up,
        agent,
        address,
        serial,
    }
}

fn in_pool(address: Ipv4Addr) -> bool {
    let o = address.octets();
    o[..3] == [10, 77, 0] && (100..=200).contains(&o[3])
}

#[tokio::test]
async fn boots_in_qemu_with_virtio_and_e1000_nics() {
    if !rackboot_testenv::privileged("root: the host's kernel and modules, QEMU") {
        return;
    }
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let netns = Netns::create(&NetnsConfig::new(
        &unique_name("rbrd"),
        "10.77.0.1".parse().unwrap(),
        24,
        1,
    ))
    .unwrap();
    // A second tap on no bridge: a NIC with carrier that never gets a lease.
    netns
        .exec("ip", ["tuntap", "add", "dev", "dark0", "mode", "tap"])
        .unwrap();
    netns.exec("ip", ["link", "set", "dark0", "up"]).unwrap();
    let dnsmasq = start_dnsmasq(&netns, dir.path()).await;
    let bridged = netns.taps()[0].as_str();

    // Two virtio NICs, no BOOTIF: DHCP on both, the bridged one wins.
    let virtio = boot(
        &netns,
        dir.path(),
        &b.out,
        Boot {
            name: "virtio",
            nics: vec![
                "virtio-net-pci,mac=52:54:00:00:00:11".into(),
                "virtio-net-pci,mac=52:54:00:00:00:12".into(),
            ],
            taps: vec![bridged, "dark0"],
            append: "console=ttyS0 quiet panic=-1".into(),
        },
    )
    .await;
    assert!(in_pool(virtio.address), "{}", virtio.address);
    assert!(
        virtio.serial.contains("(52:54:00:00:00:11)"),
        "{}",
        virtio.serial
    );
    assert!(
        virtio.serial.contains("(52:54:00:00:00:12)"),
        "{}",
        virtio.serial
    );
    assert!(
        virtio
            .serial
            .contains(&format!("inet {}/24", virtio.address)),
        "{}",
        virtio.serial
    );

    // An e1000 (its driver found by coldplug from the PCI modalias), chosen by BOOTIF.
    let e1000 = boot(
        &netns,
        dir.path(),
        &b.out,
        Boot {
            name: "e1000",
            nics: vec![
                "virtio-net-pci,mac=52:54:00:00:00:21".into(),
                "e1000,mac=52:54:00:00:00:22".into(),
            ],
            taps: vec!["dark0", bridged],
            append: "console=ttyS0 quiet panic=-1 BOOTIF=01-52-54-00-00-00-22".into(),
        },
    )
    .await;
    assert!(in_pool(e1000.address), "{}", e1000.address);
    assert!(
        e1000.serial.contains("(52:54:00:00:00:22)"),
        "{}",
        e1000.serial
    );
    assert!(
        !e1000.serial.contains("(52:54:00:00:00:21)"),
        "DHCP ran on the NIC BOOTIF did not name:\n{}",
        e1000.serial
    );
    assert!(
        !e1000.serial.contains("trying every NIC"),
        "{}",
        e1000.serial
    );

    // dnsmasq handed out exactly those addresses.
    let leases = dnsmasq.output();
    for (address, mac) in [
        (virtio.address, "52:54:00:00:00:11"),
        (e1000.address, "52:54:00:00:00:22"),
    ] {
        assert!(
            leases.contains(&format!("DHCPACK(br0) {address} {mac}")),
            "{address} {mac} not acknowledged:\n{leases}"
        );
    }
    eprintln!(
        "initramfs {:.1} MiB ({}); virtio: network up after {:.1?}, agent after {:.1?}; \
         e1000: network up after {:.1?}, agent after {:.1?}",
        b.manifest.initramfs.size as f64 / MIB as f64,
        b.manifest.compression,
        virtio.network_up,
        virtio.agent,
        e1000.network_up,
        e1000.agent
    );
    drop(dnsmasq);
    drop(netns);
}
