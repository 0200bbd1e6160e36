//! A bootable test OS disk image: what rackboot's deploy tests write to a lab machine's disk and
//! then boot from it.
//!
//! The image (raw, default 96 MiB) is built from files without mounts or loop devices:
//! - an MBR partition table (`sfdisk`) with syslinux's `mbr.bin` as boot code;
//! - partition 1, FAT16, active: `ldlinux.sys` (`syslinux --install`), `syslinux.cfg` (serial
//!   console, one entry), the host's kernel as `vmlinuz` and a busybox initramfs `initrd.img`
//!   (files copied in with mtools);
//! - partition 2, ext4 labelled [`ROOT_LABEL`] (`mke2fs -d`): `/etc/os-release`
//!   (`ID=rackboot-testos`, `ID_LIKE=debian`), `/etc/hostname` (`unconfigured`),
//!   `/etc/network/interfaces` (only `lo`) and whatever [`TestOsOptions::root_files`] adds or
//!   replaces. A deploy rewrites these files; the test OS reports what it finds there.
//!
//! The initramfs's /init loads the host's virtio and ext4 modules (those not built in), waits for
//! the partition labelled `rootfs`, mounts it read-only, sets the hostname from its
//! /etc/hostname, brings up the interfaces of its /etc/network/interfaces with busybox `ifup`,
//! prints one line on the serial console,
//! `RACKBOOT-TESTOS up host=<hostname> addr=<IPv4/prefix of each non-lo interface, space separated>`
//! ([`TESTOS_MARKER`], parsed by [`parse_marker`]), and stays up (answering ping) without printing
//! anything more. If a step fails it prints `RACKBOOT-TESTOS failed: <why>` ([`TESTOS_FAILED`])
//! and powers off, so a waiting test fails at once.
//!
//! Packages: syslinux, syslinux-common, mtools, dosfstools, e2fsprogs, fdisk (sfdisk),
//! busybox-static, linux-image-amd64.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::initramfs::{CpioEntry, host_kernel, write_newc};
use crate::{LabError, Result, io_err};

/// What every line the test OS prints about itself starts with.
pub const TESTOS_PREFIX: &str = "RACKBOOT-TESTOS";
/// The line printed once the test OS is up: `RACKBOOT-TESTOS up host=NAME addr=A/P ...`.
pub const TESTOS_MARKER: &str = "RACKBOOT-TESTOS up";
/// The line printed (before powering off) when booting failed: `RACKBOOT-TESTOS failed: WHY`.
pub const TESTOS_FAILED: &str = "RACKBOOT-TESTOS failed";
/// The kernel command line in syslinux.cfg: the console is the serial port QEMU logs; `panic=-1`
/// reboots at once on a panic instead of hanging until a test times out.
pub const TESTOS_KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 quiet";
/// The label of the root file system partition; /init finds its root by it.
pub const ROOT_LABEL: &str = "rootfs";
pub const DEFAULT_IMAGE_MIB: u64 = 96;
/// Room for the kernel (~8 MiB) and the initramfs (~3 MiB) with a margin.
pub const DEFAULT_BOOT_MIB: u64 = 32;
/// Kernel modules /init loads, with their dependencies, unless built into the kernel: the
/// virtio PCI transport, disk and NIC drivers, ext4 and the crc32c it checksums metadata with
/// (the generic one: TCG's default CPU has no SSE4.2 for crc32c-intel).
pub const TESTOS_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "crc32c_generic",
    "ext4",
];

const SYSLINUX_MBR: &str = "/usr/lib/syslinux/mbr/mbr.bin";
const DEFAULT_BUSYBOX: &str = "/bin/busybox";
const SECTOR: u64 = 512;
/// Partition 1 starts at 1 MiB, as partitioning tools align it.
const FIRST_SECTOR: u64 = 2048;
const MIB: u64 = 1024 * 1024;

/// A file placed in the root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFile {
    /// Relative to the root (`etc/hostname`; a leading `/` is accepted).
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

/// What image to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOsOptions {
    /// The raw image file to write (replaced if it exists).
    pub out: PathBuf,
    pub size_mib: u64,
    /// The FAT boot partition's size (16..=2047 MiB); the root partition takes the rest.
    pub boot_mib: u64,
    /// `None`: [`host_kernel`].
    pub kernel: Option<PathBuf>,
    /// Where the kernel's modules are; `None`: `/lib/modules/<release>` with the release taken
    /// from the kernel's file name (`vmlinuz-<release>`).
    pub modules_dir: Option<PathBuf>,
    /// A static busybox (Debian's busybox-static).
    pub busybox: PathBuf,
    /// Added to (or replacing) the default root files, in order.
    pub root_files: Vec<RootFile>,
}

impl TestOsOptions {
    /// A 96 MiB image at `out` with the host kernel, /bin/busybox and the default root files.
    pub fn new(out: impl Into<PathBuf>) -> TestOsOptions {
        TestOsOptions {
            out: out.into(),
            size_mib: DEFAULT_IMAGE_MIB,
            boot_mib: DEFAULT_BOOT_MIB,
            kernel: None,
            modules_dir: None,
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
            root_files: Vec::new(),
        }
    }

    /// Puts `contents` at `path` (e.g. `etc/hostname`) in the root file system, mode 0644.
    pub fn with_root_file(mut self, path: &str, contents: impl Into<Vec<u8>>) -> TestOsOptions {
        self.root_files.push(RootFile {
            path: path.to_string(),
            contents: contents.into(),
            mode: 0o644,
        });
        self
    }
}

/// One partition, in 512-byte sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub start_sector: u64,
    pub sectors: u64,
}

impl Partition {
    /// Byte offset in the image.
    pub fn offset(&self) -> u64 {
        self.start_sector * SECTOR
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.sectors * SECTOR
    }

    pub fn is_empty(&self) -> bool {
        self.sectors == 0
    }
}

/// A built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOsImage {
    pub path: PathBuf,
    pub size_bytes: u64,
    /// Partition 1 (FAT, syslinux, kernel, initramfs).
    pub boot: Partition,
    /// Partition 2 (ext4 labelled [`ROOT_LABEL`]).
    pub root: Partition,
    pub kernel: PathBuf,
    /// The modules in the initramfs, in load order (paths relative to the modules directory).
    pub modules: Vec<String>,
}

impl TestOsImage {
    /// Writes the image at the start of `disk` (a lab machine's raw disk file, at least as large
    /// as the image), leaving the rest of the disk as it is. Blocks the disk already holds are
    /// not rewritten, so a blank sparse disk stays sparse.
    pub fn write_to(&self, disk: &Path) -> Result<()> {
        copy_into(&self.path, disk, 0).map(drop)
    }
}

/// The root partition's files before [`TestOsOptions::root_files`]: an os-release naming the
/// test OS as Debian-like (so a deploy writes Debian-style network configuration), hostname
/// `unconfigured`, and interfaces with only `lo`.
pub fn default_root_files() -> Vec<RootFile> {
    let file = |path: &str, contents: &str| RootFile {
        path: path.to_string(),
        contents: contents.as_bytes().to_vec(),
        mode: 0o644,
    };
    vec![
        file(
            "etc/os-release",
            "PRETTY_NAME=\"rackboot test OS\"\n\
             NAME=\"rackboot test OS\"\n\
             ID=rackboot-testos\n\
             ID_LIKE=debian\n\
             VERSION_ID=1\n",
        ),
        file("etc/hostname", "unconfigured\n"),
        file(
            "etc/network/interfaces",
            "auto lo\niface lo inet loopback\n",
        ),
    ]
}

/// `path` relative to the root, without `.`/`..`/empty components.
fn root_relative(path: &str) -> Result<String> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(LabError::Config(format!(
            "root file path {path:?} must be a plain path like etc/hostname"
        )));
    }
    Ok(parts.join("/"))
}

/// The partitions of a `size_mib` image with a `boot_mib` FAT partition at 1 MiB and the root
/// partition filling the rest.
pub fn partition_layout(size_mib: u64, boot_mib: u64) -> Result<(Partition, Partition)> {
    if !(16..=2047).contains(&boot_mib) {
        return Err(LabError::Config(format!(
            "boot partition of {boot_mib} MiB: FAT16 wants 16..=2047 MiB"
        )));
    }
    // 1 MiB before the boot partition, at least 16 MiB of root file system.
    if size_mib < boot_mib + 17 {
        return Err(LabError::Config(format!(
            "a {size_mib} MiB image has no room for a {boot_mib} MiB boot partition and a 16 MiB \
             root partition"
        )));
    }
    let boot = Partition {
        start_sector: FIRST_SECTOR,
        sectors: boot_mib * MIB / SECTOR,
    };
    let root_start = boot.start_sector + boot.sectors;
    let root = Partition {
        start_sector: root_start,
        sectors: size_mib * MIB / SECTOR - root_start,
    };
    Ok((boot, root))
}

/// sfdisk's input for the layout: DOS label, partition 1 FAT16 (LBA) and active, partition 2
/// Linux.
pub fn sfdisk_script(boot: Partition, root: Partition) -> String {
    format!(
        "label: dos\nunit: sectors\n\n\
         start={}, size={}, type=e, bootable\n\
         start={}, size={}, type=83\n",
        boot.start_sector, boot.sectors, root.start_sector, root.sectors
    )
}

/// syslinux.cfg: serial console 0 at 115200 (SERIAL must come first), no prompt, one entry.
pub fn syslinux_cfg() -> String {
    format!(
        "SERIAL 0 115200\n\
         # rackboot test OS (rackboot_lab::test_os)\n\
         PROMPT 0\n\
         TIMEOUT 0\n\
         DEFAULT testos\n\
         LABEL testos\n  \
         LINUX vmlinuz\n  \
         INITRD initrd.img\n  \
         APPEND {TESTOS_KERNEL_CMDLINE}\n"
    )
}

/// The module name a modules.dep path stands for: `kernel/crypto/crc32c_generic.ko` →
/// `crc32c_generic` (`-` and `_` are the same to the kernel).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The module files to load, in order, so that `wanted` (module names) work: each one's
/// dependencies before it, modules built into the kernel (listed in `modules_builtin`) left out.
/// `modules_dep` is the kernel's modules.dep (`path: dependency paths...`). Paths are relative
/// to the modules directory; only uncompressed `.ko` files are accepted (busybox insmod).
pub fn resolve_modules(
    modules_dep: &str,
    modules_builtin: &str,
    wanted: &[&str],
) -> Result<Vec<String>> {
    let builtin: HashSet<String> = modules_builtin
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect();
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in modules_dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let path = path.trim();
        deps.insert(
            module_name(path),
            (
                path.to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            ),
        );
    }
    // Depth first, dependencies before dependents; `done` holds names already placed.
    struct Graph {
        builtin: HashSet<String>,
        deps: HashMap<String, (String, Vec<String>)>,
    }
    fn visit(
        name: &str,
        graph: &Graph,
        done: &mut HashSet<String>,
        order: &mut Vec<String>,
        depth: usize,
    ) -> Result<()> {
        if done.contains(name) || graph.builtin.contains(name) {
            return Ok(());
        }
        if depth > 64 {
            return Err(LabError::Config(format!(
                "modules.dep: dependency loop through {name}"
            )));
        }
        let (path, needs) = graph.deps.get(name).ok_or_else(|| {
            LabError::Config(format!(
                "kernel module {name} is neither built in nor in modules.dep"
            ))
        })?;
        for dep in needs {
            visit(&module_name(dep), graph, done, order, depth + 1)?;
        }
        if !path.ends_with(".ko") {
            return Err(LabError::Config(format!(
                "kernel module {path} is compressed; the test OS's busybox insmod needs a plain .ko"
            )));
        }
        done.insert(name.to_string());
        order.push(path.clone());
        Ok(())
    }
    let graph = Graph { builtin, deps };
    let mut done = HashSet::new();
    let mut order = Vec::new();
    for want in wanted {
        visit(&module_name(want), &graph, &mut done, &mut order, 0)?;
    }
    Ok(order)
}

/// busybox's ifup takes `address A` + `netmask M` only; Debian's ifupdown (what a deploy writes
/// for) also takes `address A/P`. This awk program rewrites the latter into the former.
const INTERFACES_AWK: &str = r#"$1 == "address" && index($2, "/") {
    split($2, a, "/"); bits = a[2] + 0; mask = ""
    split("0 128 192 224 240 248 252 254 255", byte, " ")
    for (i = 0; i < 4; i++) {
        b = bits >= 8 ? 8 : (bits > 0 ? bits : 0); bits -= b
        mask = mask (i ? "." : "") byte[b + 1]
    }
    print "    address " a[1]; print "    netmask " mask; next
}
{ print }"#;

/// The initramfs's /init: loads `modules` (paths under /lib/modules), mounts the root partition
/// read-only, takes hostname and network from it, prints [`TESTOS_MARKER`] and stays up.
pub fn testos_init_script(modules: &[String]) -> String {
    format!(
        r#"#!/bin/sh
# The rackboot test OS (rackboot_lab::test_os): mounts the partition labelled {ROOT_LABEL}
# read-only, takes its hostname and network configuration, says so once and stays up.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /mnt/root /run /tmp /var/run

say() {{ echo "$*" > /dev/console; }}
# A waiting test sees why at once, and QEMU exits.
fail() {{
    say "{TESTOS_FAILED}: $*"
    poweroff -f
    while :; do sleep 3600; done
}}

for module in {modules}; do
    insmod "/lib/modules/$module" 2>/tmp/insmod.log || fail "insmod $module: $(cat /tmp/insmod.log)"
done

# Disks and their partitions show up asynchronously: wait up to 30 s.
root=
for i in $(seq 300); do
    root=$(findfs LABEL={ROOT_LABEL} 2>/dev/null) && break
    sleep 0.1
done
[ -n "$root" ] || fail "no partition labelled {ROOT_LABEL}"
mount -t ext4 -o ro "$root" /mnt/root 2>/tmp/mount.log || fail "mount $root: $(cat /tmp/mount.log)"
[ -s /mnt/root/etc/hostname ] || fail "$root has no /etc/hostname"
hostname -F /mnt/root/etc/hostname || fail "hostname -F /etc/hostname of $root"

# NICs show up when virtio_net binds them: wait up to 10 s for one besides lo.
for i in $(seq 100); do
    [ -n "$(ls /sys/class/net | grep -vx lo)" ] && break
    sleep 0.1
done
awk '{INTERFACES_AWK}' /mnt/root/etc/network/interfaces >/run/interfaces \
    || fail "cannot read /etc/network/interfaces of $root"
ifup -a -i /run/interfaces >/tmp/ifup.log 2>&1 || fail "ifup: $(cat /tmp/ifup.log)"

addrs=$(ip -o -4 addr show | awk '$2 != "lo" {{ printf "%s%s", sep, $4; sep = " " }}')
say "{TESTOS_MARKER} host=$(hostname) addr=$addrs"
while :; do sleep 3600; done
"#,
        modules = modules.join(" "),
    )
}

/// What the test OS said when it came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOsMarker {
    pub host: String,
    /// `10.77.0.50/24` form, one per address of each interface but lo.
    pub addrs: Vec<String>,
}

/// Parses a [`TESTOS_MARKER`] line (anything before the marker is ignored).
pub fn parse_marker(line: &str) -> Option<TestOsMarker> {
    let rest = &line[line.find(TESTOS_MARKER)? + TESTOS_MARKER.len()..];
    let rest = rest.trim_end().strip_prefix(" host=")?;
    let (host, addrs) = match rest.split_once(" addr=") {
        Some(pair) => pair,
        None => (rest.strip_suffix(" addr")?, ""),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some(TestOsMarker {
        host: host.to_string(),
        addrs: addrs.split_whitespace().map(str::to_string).collect(),
    })
}

/// Writes all of `src` into `dst` (an existing file) at byte `offset`, 1 MiB at a time, skipping
/// blocks `dst` already holds (so zeros written onto a sparse file stay holes). `dst` must be
/// large enough: a disk image is never grown. Returns the bytes actually written.
pub fn copy_into(src: &Path, dst: &Path, offset: u64) -> Result<u64> {
    let input = std::fs::File::open(src).map_err(io_err(format!("open {}", src.display())))?;
    let output = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dst)
        .map_err(io_err(format!("open {}", dst.display())))?;
    let len = input
        .metadata()
        .map_err(io_err(format!("stat {}", src.display())))?
        .len();
    let room = output
        .metadata()
        .map_err(io_err(format!("stat {}", dst.display())))?
        .len();
    if offset + len > room {
        return Err(LabError::Config(format!(
            "{} ({len} bytes) does not fit in {} ({room} bytes) at offset {offset}",
            src.display(),
            dst.display()
        )));
    }
    let mut block = vec![0u8; MIB as usize];
    let mut there = vec![0u8; MIB as usize];
    let mut written = 0;
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(MIB) as usize;
        input
            .read_exact_at(&mut block[..n], pos)
            .map_err(io_err(format!("read {}", src.display())))?;
        output
            .read_exact_at(&mut there[..n], offset + pos)
            .map_err(io_err(format!("read {}", dst.display())))?;
        if block[..n] != there[..n] {
            output
                .write_all_at(&block[..n], offset + pos)
                .map_err(io_err(format!("write {}", dst.display())))?;
            written += n as u64;
        }
        pos += n as u64;
    }
    output
        .sync_all()
        .map_err(io_err(format!("sync {}", dst.display())))?;
    Ok(written)
}

/// Runs a build tool; `package` is named if it is missing.
fn run_tool(cmd: &mut Command, package: &str, stdin: Option<&str>) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    // mtools refuses images whose FAT geometry fields look odd to it; ours are fine.
    cmd.env("MTOOLS_SKIP_CHECK", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(io_err(format!("run {program} (apt-get install {package})")))?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes())
            .map_err(io_err(format!("write to {program}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(io_err(format!("wait for {program}")))?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: format!("{cmd:?}"),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A scratch directory next to the output, removed when dropped (also on errors).
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(format!("create {}", parent.display())))?;
    }
    std::fs::write(path, contents).map_err(io_err(format!("write {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", path.display())))
}

fn create_sized(path: &Path, len: u64) -> Result<()> {
    let file = std::fs::File::create(path).map_err(io_err(format!("create {}", path.display())))?;
    file.set_len(len)
        .map_err(io_err(format!("size {}", path.display())))
}

/// The kernel release in `vmlinuz-<release>`.
fn kernel_release(kernel: &Path) -> Option<String> {
    let name = kernel.file_name()?.to_str()?;
    let release = name.strip_prefix("vmlinuz-")?;
    (!release.is_empty()).then(|| release.to_string())
}

/// The initramfs members: busybox with a link per applet, the modules under lib/modules, /init.
fn initramfs_entries(
    busybox: Vec<u8>,
    applets: &[&str],
    modules: Vec<(String, Vec<u8>)>,
    init: String,
) -> Vec<CpioEntry> {
    let mut dirs: Vec<String> = [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "var",
        "var/run",
        "mnt",
        "mnt/root",
        "etc",
        "etc/network",
    ]
    .iter()
    .map(|d| d.to_string())
    .collect();
    // ifup runs run-parts on these; empty directories keep it quiet.
    for hook in ["if-pre-up.d", "if-up.d", "if-down.d", "if-post-down.d"] {
        dirs.push(format!("etc/network/{hook}"));
    }
    for (path, _) in &modules {
        let mut parent = Path::new("lib/modules").join(path);
        let mut chain = Vec::new();
        while let Some(p) = parent.parent().filter(|p| !p.as_os_str().is_empty()) {
            chain.push(p.display().to_string());
            parent = p.to_path_buf();
        }
        dirs.extend(chain.into_iter().rev());
    }
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));

    let mut entries: Vec<CpioEntry> = dirs
        .into_iter()
        .map(|path| CpioEntry::Dir { path, mode: 0o755 })
        .collect();
    entries.push(CpioEntry::CharDevice {
        path: "dev/console".into(),
        mode: 0o600,
        major: 5,
        minor: 1,
    });
    entries.push(CpioEntry::File {
        path: "bin/busybox".into(),
        mode: 0o755,
        data: busybox,
    });
    for applet in applets {
        if *applet != "busybox" {
            entries.push(CpioEntry::Symlink {
                path: format!("bin/{applet}"),
                target: "busybox".into(),
            });
        }
    }
    for (path, data) in modules {
        entries.push(CpioEntry::File {
            path: format!("lib/modules/{path}"),
            mode: 0o644,
            data,
        });
    }
    entries.push(CpioEntry::File {
        path: "init".into(),
        mode: 0o755,
        data: init.into_bytes(),
    });
    entries
}

/// Builds the test OS image (see the module documentation).
pub fn build_image(options: &TestOsOptions) -> Result<TestOsImage> {
    let (boot, root) = partition_layout(options.size_mib, options.boot_mib)?;
    let mut root_files: BTreeMap<String, RootFile> = BTreeMap::new();
    for file in default_root_files()
        .into_iter()
        .chain(options.root_files.clone())
    {
        root_files.insert(root_relative(&file.path)?, file);
    }
    let kernel = match &options.kernel {
        Some(kernel) => kernel.clone(),
        None => host_kernel()?,
    };
    let modules_dir = match &options.modules_dir {
        Some(dir) => dir.clone(),
        None => {
            let release = kernel_release(&kernel).ok_or_else(|| {
                LabError::Config(format!(
                    "cannot tell the release of {} (not vmlinuz-<release>): set modules_dir",
                    kernel.display()
                ))
            })?;
            Path::new("/lib/modules").join(release)
        }
    };
    let modules_dep_path = modules_dir.join("modules.dep");
    let modules_dep = std::fs::read_to_string(&modules_dep_path).map_err(io_err(format!(
        "read {} (the kernel's modules)",
        modules_dep_path.display()
    )))?;
    // No modules.builtin means nothing is known to be built in: everything gets loaded.
    let modules_builtin =
        std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let modules = resolve_modules(&modules_dep, &modules_builtin, TESTOS_MODULES)?;

    let out = &options.out;
    let work = WorkDir(PathBuf::from(format!("{}.work", out.display())));
    let _ = std::fs::remove_dir_all(&work.0);
    std::fs::create_dir_all(&work.0).map_err(io_err(format!("create {}", work.0.display())))?;

    // The initramfs.
    let busybox = std::fs::read(&options.busybox).map_err(io_err(format!(
        "read {} (apt-get install busybox-static)",
        options.busybox.display()
    )))?;
    let applet_list = run_tool(
        Command::new(&options.busybox).arg("--list"),
        "busybox-static",
        None,
    )?;
    let applets: Vec<&str> = applet_list.split_whitespace().collect();
    for needed in ["sh", "insmod", "findfs", "ifup", "ip", "awk", "hostname"] {
        if !applets.contains(&needed) {
            return Err(LabError::Config(format!(
                "{} has no {needed} applet",
                options.busybox.display()
            )));
        }
    }
    let module_files = modules
        .iter()
        .map(|m| {
            let path = modules_dir.join(m);
            std::fs::read(&path)
                .map(|data| (m.clone(), data))
                .map_err(io_err(format!("read {}", path.display())))
        })
        .collect::<Result<Vec<_>>>()?;
    let initrd = work.0.join("initrd.img");
    let file =
        std::fs::File::create(&initrd).map_err(io_err(format!("create {}", initrd.display())))?;
    let mut gz = GzEncoder::new(std::io::BufWriter::new(file), Compression::default());
    write_newc(
        &mut gz,
        &initramfs_entries(
            busybox,
            &applets,
            module_files,
            testos_init_script(&modules),
        ),
    )
    .and_then(|()| gz.finish()?.flush())
    .map_err(io_err(format!("write {}", initrd.display())))?;

    // Partition 1: FAT16 with syslinux, the kernel and the initramfs. Hidden sectors = where
    // the partition starts, which the boot sector uses to find ldlinux.sys.
    let fat = work.0.join("boot.fat");
    create_sized(&fat, boot.len())?;
    run_tool(
        Command::new("mkfs.vfat")
            .args(["-F", "16", "-n", "TESTOSBOOT", "-h"])
            .arg(boot.start_sector.to_string())
            .arg(&fat),
        "dosfstools",
        None,
    )?;
    let cfg = work.0.join("syslinux.cfg");
    write_file(&cfg, syslinux_cfg().as_bytes(), 0o644)?;
    for (file, name) in [
        (&kernel, "vmlinuz"),
        (&initrd, "initrd.img"),
        (&cfg, "syslinux.cfg"),
    ] {
        run_tool(
            Command::new("mcopy")
                .arg("-i")
                .arg(&fat)
                .arg(file)
                .arg(format!("::{name}")),
            "mtools",
            None,
        )?;
    }
    run_tool(
        Command::new("syslinux").arg("--install").arg(&fat),
        "syslinux",
        None,
    )?;

    // Partition 2: ext4 from a staging directory.
    let staging = work.0.join("root");
    std::fs::create_dir_all(&staging).map_err(io_err(format!("create {}", staging.display())))?;
    for (path, file) in &root_files {
        write_file(&staging.join(path), &file.contents, file.mode)?;
    }
    let ext4 = work.0.join("root.ext4");
    create_sized(&ext4, root.len())?;
    run_tool(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-m", "0"])
            .args(["-E", "root_owner=0:0", "-d"])
            .arg(&staging)
            .arg(&ext4),
        "e2fsprogs",
        None,
    )?;

    // The image: partition table, MBR boot code, both file systems at their offsets.
    create_sized(out, options.size_mib * MIB)?;
    run_tool(
        Command::new("sfdisk").arg("-q").arg(out),
        "fdisk",
        Some(&sfdisk_script(boot, root)),
    )?;
    let mbr = std::fs::read(SYSLINUX_MBR).map_err(io_err(format!(
        "read {SYSLINUX_MBR} (apt-get install syslinux-common)"
    )))?;
    if mbr.len() > 440 {
        return Err(LabError::Config(format!(
            "{SYSLINUX_MBR} is {} bytes; MBR boot code is at most 440",
            mbr.len()
        )));
    }
    let image = std::fs::OpenOptions::new()
        .write(true)
        .open(out)
        .map_err(io_err(format!("open {}", out.display())))?;
    // Only the boot code: bytes 440.. hold the disk signature and the partition table.
    image
        .write_all_at(&mbr, 0)
        .map_err(io_err(format!("write MBR to {}", out.display())))?;
    drop(image);
    copy_into(&fat, out, boot.offset())?;
    copy_into(&ext4, out, root.offset())?;

    Ok(TestOsImage {
        path: out.clone(),
        size_bytes: options.size_mib * MIB,
        boot,
        root,
        kernel,
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_puts_boot_at_1_mib_and_root_after_it() {
        let (boot, root) = partition_layout(96, 32).unwrap();
        assert_eq!(
            (boot, root),
            (
                Partition {
                    start_sector: 2048,
                    sectors: 65536
                },
                Partition {
                    start_sector: 67584,
                    sectors: 96 * 2048 - 67584
                }
            )
        );
        assert_eq!(root.offset() + root.len(), 96 * MIB);
        assert_eq!(
            sfdisk_script(boot, root),
            "label: dos\nunit: sectors\n\n\
             start=2048, size=65536, type=e, bootable\n\
             start=67584, size=129024, type=83\n"
        );
        for (size, boot) in [(48, 32), (96, 8), (4096, 2048)] {
            assert!(partition_layout(size, boot).is_err(), "{size} {boot}");
        }
        assert!(partition_layout(49, 32).is_ok());
    }

    const DEP: &str = "\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/fs/btrfs/btrfs.ko.xz: kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
kernel/drivers/net/cool-nic.ko: kernel/drivers/virtio/virtio.ko
";

    #[test]
    fn modules_come_after_their_dependencies_without_builtins_or_repeats() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "",
                &["virtio_pci", "virtio_blk"],
                &[
                    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
                    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                    "kernel/drivers/virtio/virtio_ring.ko",
                    "kernel/drivers/virtio/virtio.ko",
                    "kernel/drivers/virtio/virtio_pci.ko",
                    "kernel/drivers/block/virtio_blk.ko",
                ],
            ),
            (
                "kernel/fs/jbd2/jbd2.ko\nkernel/lib/crc16.ko\n",
                &["ext4"],
                &["kernel/fs/mbcache.ko", "kernel/fs/ext4/ext4.ko"],
            ),
            (
                "kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c_generic.ko\n",
                &["ext4", "crc32c_generic"],
                &[],
            ),
            // `-` and `_` name the same module.
            (
                "",
                &["cool_nic"],
                &[
                    "kernel/drivers/virtio/virtio_ring.ko",
                    "kernel/drivers/virtio/virtio.ko",
                    "kernel/drivers/net/cool-nic.ko",
                ],
            ),
        ];
        for (builtin, wanted, expected) in cases {
            assert_eq!(
                resolve_modules(DEP, builtin, wanted).unwrap(),
                expected.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{wanted:?} with builtin {builtin:?}"
            );
        }
    }

    #[test]
    fn missing_and_compressed_modules_are_errors() {
        let err = resolve_modules(DEP, "", &["virtio_net"]).unwrap_err();
        assert!(err.to_string().contains("virtio_net"), "{err}");
        let err = resolve_modules(DEP, "", &["btrfs"]).unwrap_err();
        assert!(err.to_string().contains("compressed"), "{err}");
        let looped = "a.ko: b.ko\nb.ko: a.ko\n";
        assert!(resolve_modules(looped, "", &["a"]).is_err());
    }

    #[test]
    fn marker_lines_parse() {
        type Expected = Option<(&'static str, &'static [&'static str])>;
        let cases: &[(&str, Expected)] = &[
            (
                "RACKBOOT-TESTOS up host=testos1 addr=10.77.0.50/24",
                Some(("testos1", &["10.77.0.50/24"])),
            ),
            (
                "[    3.1] junk RACKBOOT-TESTOS up host=a.example addr=10.0.0.2/8 192.168.1.5/24\r",
                Some(("a.example", &["10.0.0.2/8", "192.168.1.5/24"])),
            ),
            (
                "RACKBOOT-TESTOS up host=lonely addr=",
                Some(("lonely", &[])),
            ),
            ("RACKBOOT-TESTOS up host=lonely addr", Some(("lonely", &[]))),
            ("RACKBOOT-TESTOS up host= addr=10.0.0.2/8", None),
            ("RACKBOOT-TESTOS failed: no partition labelled rootfs", None),
            ("RACKBOOT-TEST-MARKER booted cmdline=x", None),
        ];
        for (line, expected) in cases {
            let expected = expected.map(|(host, addrs)| TestOsMarker {
                host: host.to_string(),
                addrs: addrs.iter().map(|a| a.to_string()).collect(),
            });
            assert_eq!(parse_marker(line), expected, "{line:?}");
        }
    }

    #[test]
    fn root_paths_are_plain_and_relative() {
        assert_eq!(root_relative("/etc/hostname").unwrap(), "etc/hostname");
        assert_eq!(
            root_relative("etc/network/interfaces").unwrap(),
            "etc/network/interfaces"
        );
        for bad in ["", "/", "etc/../x", "etc//x", "./etc", "etc/"] {
            assert!(root_relative(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn init_script_is_valid_sh_and_loads_modules_in_order() {
        let script = testos_init_script(&["a/x.ko".into(), "b/y.ko".into()]);
        assert!(script.contains("for module in a/x.ko b/y.ko; do"));
        assert!(script.contains("findfs LABEL=rootfs"));
        assert!(script.contains("say \"RACKBOOT-TESTOS up host=$(hostname) addr=$addrs\""));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init");
        std::fs::write(&path, &script).unwrap();
        let check = Command::new("/bin/busybox")
            .args(["sh", "-n"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(check.status.success(), "{check:?}");
    }

    /// The awk program busybox runs in /init, run here by the same busybox.
    #[test]
    fn cidr_addresses_become_address_and_netmask() {
        let input = "auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet static\n  \
                     address 10.77.0.50/24\n  gateway 10.77.0.1\n\
                     iface eth1 inet static\n  address 10.1.2.3\n  netmask 255.255.0.0\n";
        let mut child = Command::new("/bin/busybox")
            .args(["awk", INTERFACES_AWK])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet static\n    \
             address 10.77.0.50\n    netmask 255.255.255.0\n  gateway 10.77.0.1\n\
             iface eth1 inet static\n  address 10.1.2.3\n  netmask 255.255.0.0\n"
        );
        for (bits, mask) in [
            (0, "0.0.0.0"),
            (1, "128.0.0.0"),
            (9, "255.128.0.0"),
            (23, "255.255.254.0"),
            (31, "255.255.255.254"),
            (32, "255.255.255.255"),
        ] {
            let out = Command::new("/bin/busybox")
                .args(["sh", "-c"])
                .arg(format!(
                    "echo 'address 1.2.3.4/{bits}' | busybox awk '{INTERFACES_AWK}'"
                ))
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(
                text.ends_with(&format!("netmask {mask}\n")),
                "{bits}: {text}"
            );
        }
    }

    #[test]
    fn copy_into_writes_at_offset_keeps_the_rest_and_skips_equal_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        let mut data = vec![0u8; 3 * MIB as usize + 100];
        data[MIB as usize + 5] = 7;
        data[3 * MIB as usize + 99] = 9;
        std::fs::write(&src, &data).unwrap();
        let mut disk = vec![1u8; 8 * MIB as usize];
        disk[..MIB as usize].fill(0);
        std::fs::write(&dst, &disk).unwrap();
        // The first MiB of the destination is already zero: only the rest is written.
        let written = copy_into(&src, &dst, 0).unwrap();
        assert_eq!(written, 2 * MIB + 100);
        let after = std::fs::read(&dst).unwrap();
        assert_eq!(&after[..data.len()], &data[..]);
        assert!(after[data.len()..].iter().all(|b| *b == 1));
        assert_eq!(copy_into(&src, &dst, 0).unwrap(), 0);
        copy_into(&src, &dst, 4 * MIB).unwrap();
        assert_eq!(
            std::fs::read(&dst).unwrap()[4 * MIB as usize + MIB as usize + 5],
            7
        );
        assert!(copy_into(&src, &dst, 5 * MIB).is_err(), "does not fit");
    }

    #[test]
    fn syslinux_cfg_boots_the_kernel_on_the_serial_console() {
        let cfg = syslinux_cfg();
        assert!(cfg.starts_with("SERIAL 0 115200\n"));
        assert!(cfg.contains(
            "LINUX vmlinuz\n  INITRD initrd.img\n  APPEND console=ttyS0 panic=-1 quiet\n"
        ));
    }

    #[test]
    fn kernel_release_comes_from_the_file_name() {
        assert_eq!(
            kernel_release(Path::new("/boot/vmlinuz-6.1.0-57-amd64")).as_deref(),
            Some("6.1.0-57-amd64")
        );
        assert_eq!(kernel_release(Path::new("/tmp/bzImage")), None);
    }
}
