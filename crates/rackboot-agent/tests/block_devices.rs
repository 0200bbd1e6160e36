//! Steps on real block devices: loop devices over sparse files in a tempdir
//! (always detached in Drop). Needs root; parts that need kernel support the
//! machine lacks (md, vfat) are skipped with a message saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use rackboot_agent::context::{Env, StepContext};
use rackboot_agent::steps::{configure, erase, raid};
use rackboot_agent_proto::{
    ConfigureAction, DiskTarget, EraseAction, EraseMode, FileSpec, RaidAction, RaidLevel,
    RootSelector, SeedSpec, StepOutput,
};

const MIB: u64 = 1 << 20;

fn is_root() -> bool {
    rackboot_testenv::privileged("root (loop devices, md arrays, mounts)")
}

/// Loads the module if needed; true when the kernel then has the feature.
fn kernel_has(module: &str, check: impl Fn() -> bool) -> bool {
    if check() {
        return true;
    }
    let _ = Command::new("modprobe")
        .arg(module)
        .stderr(Stdio::null())
        .status();
    check()
}

fn has_md() -> bool {
    kernel_has("md_mod", || Path::new("/proc/mdstat").exists())
        && kernel_has("raid1", || {
            std::fs::read_to_string("/proc/mdstat").is_ok_and(|s| s.contains("raid1"))
        })
}

fn has_vfat() -> bool {
    kernel_has("vfat", || {
        std::fs::read_to_string("/proc/filesystems").is_ok_and(|s| s.contains("vfat"))
    })
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_stdin(program: &str, args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{program} {args:?}");
}

/// A loop device with partition scanning over a sparse file.
struct Loop {
    dev: PathBuf,
    _file: tempfile::NamedTempFile,
}

impl Loop {
    fn new(size: u64) -> Loop {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(size).unwrap();
        let dev = run(
            "losetup",
            &["-f", "--show", "-P", file.path().to_str().unwrap()],
        );
        Loop {
            dev: PathBuf::from(dev.trim()),
            _file: file,
        }
    }

    fn path(&self) -> &str {
        self.dev.to_str().unwrap()
    }

    fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.path())
    }

    fn target(&self, size: u64) -> DiskTarget {
        DiskTarget {
            path: self.path().into(),
            size_bytes: Some(size),
            serial: None,
        }
    }

    /// Waits for the kernel to show partition `n` (sysfs and /dev). Kernels
    /// without the table's parser (this lab's) get it through `partx -u`.
    fn wait_part(&self, n: u32) {
        // Up to 20 s: udev/partx can be slow on a loaded machine.
        for i in 0..200 {
            if i == 5 {
                let _ = Command::new("partx").args(["-u", self.path()]).status();
            }
            if Path::new(&self.part(n)).exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("{} did not appear", self.part(n));
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Mounts on a tempdir; unmounts on drop.
struct Mount(tempfile::TempDir);

impl Mount {
    fn new(dev: &str, args: &[&str]) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let mut all = args.to_vec();
        all.extend([dev, dir.path().to_str().unwrap()]);
        run("mount", &all);
        Mount(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn ctx() -> StepContext {
    StepContext::new(Arc::new(Env::real()))
}

/// An md v1.0 superblock (struct mdp_superblock_1) for a RAID-1 member of
/// `sectors`, at its place 8-12 KiB before the end, with a valid checksum:
/// what `mdadm --create --metadata=1.0` writes, for kernels without md.
fn md_v1_0_superblock(sectors: u64) -> (u64, Vec<u8>) {
    let offset = (sectors - 16) & !7;
    let mut sb = vec![0u8; 512];
    let put32 =
        |sb: &mut Vec<u8>, at: usize, v: u32| sb[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |sb: &mut Vec<u8>, at: usize, v: u64| sb[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put32(&mut sb, 0, 0xa92b_4efc); // magic
    put32(&mut sb, 4, 1); // major_version
    sb[16..32].copy_from_slice(uuid::Uuid::new_v4().as_bytes()); // set_uuid
    sb[32..41].copy_from_slice(b"rbtest:r0"); // set_name
    put64(&mut sb, 64, 1_700_000_000); // ctime
    put32(&mut sb, 72, 1); // level
    put64(&mut sb, 80, offset - 8); // size
    put32(&mut sb, 92, 2); // raid_disks
    put64(&mut sb, 128, 0); // data_offset
    put64(&mut sb, 136, offset - 8); // data_size
    put64(&mut sb, 144, offset); // super_offset
    sb[168..184].copy_from_slice(uuid::Uuid::new_v4().as_bytes()); // device_uuid
    put64(&mut sb, 192, 1_700_000_000); // utime
    put64(&mut sb, 200, 1); // events
    put64(&mut sb, 208, u64::MAX); // resync_offset: clean
    put32(&mut sb, 220, 2); // max_dev
    sb[256..258].copy_from_slice(&0u16.to_le_bytes()); // dev_roles[0]
    sb[258..260].copy_from_slice(&1u16.to_le_bytes()); // dev_roles[1]
    let sum: u64 = sb[..256 + 2 * 2]
        .chunks(4)
        .map(|w| u64::from(u32::from_le_bytes(w.try_into().unwrap())))
        .sum();
    let csum = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
    put32(&mut sb, 216, csum);
    (offset * 512, sb)
}

fn signatures(dev: &str) -> String {
    run("wipefs", &["--no-act", dev])
}

/// A file system, RAID member or partition table that `blkid -p` sees
/// (not the PART_ENTRY_* lines it prints about the table a partition is in).
fn blkid_finds_something(dev: &str) -> bool {
    let out = Command::new("blkid").args(["-p", dev]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains(" TYPE=\"") || text.contains(" PTTYPE=\"")
}

#[test]
fn metadata_erase_leaves_no_signature() {
    if !is_root() {
        return;
    }
    let size = 64 * MIB;
    let disk = Loop::new(size);
    run_stdin(
        "sfdisk",
        &["-q", disk.path()],
        "label: gpt\n,20MiB\n,20MiB\n",
    );
    disk.wait_part(2);
    run("mkfs.ext4", &["-q", "-F", &disk.part(1)]);
    let other = Loop::new(32 * MIB);
    let array = format!("/dev/md/rbtest{}", std::process::id());
    let live_md = has_md();
    if live_md {
        run(
            "mdadm",
            &[
                "--create",
                &array,
                "--run",
                "--metadata=1.0",
                "--level=1",
                "--raid-devices=2",
                "--assume-clean",
                &disk.part(2),
                other.path(),
            ],
        );
    } else {
        eprintln!(
            "NOTE: this kernel has no md: a RAID-1 member superblock is written by hand \
             (checked with mdadm --examine) instead of a running array"
        );
        let (offset, sb) = md_v1_0_superblock(20 * MIB / 512);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(disk.part(2))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &sb, offset).unwrap();
        f.sync_all().unwrap();
        run("mdadm", &["--examine", &disk.part(2)]);
    }
    assert!(signatures(disk.path()).contains("gpt"));
    assert!(blkid_finds_something(&disk.part(1)));
    assert!(blkid_finds_something(&disk.part(2)));

    let out = erase::run(
        &ctx(),
        &EraseAction {
            mode: EraseMode::Metadata,
            disks: vec![disk.target(size)],
        },
    )
    .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].method, "zero_ends");
    assert_eq!(out[0].path, disk.path());

    assert_eq!(
        signatures(disk.path()).trim(),
        "",
        "wipefs still finds signatures"
    );
    assert!(!blkid_finds_something(disk.path()));
    assert!(!Path::new(&disk.part(1)).exists(), "partitions gone");
    if live_md {
        assert!(!Path::new(&array).exists(), "the array was stopped");
    }
    // Put the same table back: the file systems and RAID member are gone.
    run_stdin(
        "sfdisk",
        &["-q", disk.path()],
        "label: gpt\n,20MiB\n,20MiB\n",
    );
    disk.wait_part(2);
    for p in [disk.part(1), disk.part(2)] {
        assert!(
            !blkid_finds_something(&p),
            "{p} still holds a signature: {:?}",
            Command::new("blkid").args(["-p", &p]).output().unwrap()
        );
        assert!(
            !Command::new("mdadm")
                .args(["--examine", &p])
                .stderr(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success()
        );
    }
}

#[test]
fn full_erase_of_a_loop_device_discards() {
    if !is_root() {
        return;
    }
    let size = 16 * MIB;
    let disk = Loop::new(size);
    run(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", disk.path()),
            "bs=1M",
            "count=16",
            "status=none",
        ],
    );
    let out = erase::run(
        &ctx(),
        &EraseAction {
            mode: EraseMode::Full,
            disks: vec![disk.target(size)],
        },
    )
    .unwrap();
    // Loop devices discard by punching holes in their file: they read zeros after.
    assert_eq!(out[0].method, "discard");
    assert_eq!(out[0].bytes, size);
    let bytes = std::fs::read(disk.path()).unwrap();
    assert!(bytes.iter().all(|&b| b == 0));
    // The wrong size is refused before anything is touched.
    let e = erase::run(
        &ctx(),
        &EraseAction {
            mode: EraseMode::Full,
            disks: vec![disk.target(size + 512)],
        },
    )
    .unwrap_err();
    assert_eq!(e.code, "disk_mismatch");
}

#[test]
fn build_raid_level_1_metadata_1_0() {
    if !is_root() {
        return;
    }
    if !has_md() {
        eprintln!("SKIPPED: this kernel has no md (no /proc/mdstat after modprobe md_mod raid1)");
        return;
    }
    let a = Loop::new(64 * MIB);
    let b = Loop::new(64 * MIB);
    let device = format!("/dev/md/rbraid{}", std::process::id());
    let out = raid::run(
        &ctx(),
        &RaidAction {
            device: device.clone(),
            name: format!("rbraid{}", std::process::id()),
            level: RaidLevel::Raid1,
            members: vec![a.target(64 * MIB), b.target(64 * MIB)],
            metadata: "1.0".into(),
            assume_clean: true,
        },
    );
    let detail = Command::new("mdadm")
        .args(["--detail", "--export", &device])
        .output()
        .unwrap();
    let _ = Command::new("mdadm").args(["--stop", &device]).status();
    let out = out.unwrap();
    let detail = String::from_utf8_lossy(&detail.stdout);
    assert!(
        detail.contains(&format!("MD_UUID={}", out.uuid)),
        "{detail}"
    );
    assert!(
        detail.contains("MD_LEVEL=raid1") && detail.contains("MD_METADATA=1.0"),
        "{detail}"
    );
    assert_eq!(out.members, [a.path(), b.path()]);
    assert!(
        out.size_bytes > 60 * MIB && out.size_bytes < 64 * MIB,
        "{}",
        out.size_bytes
    );
}

#[test]
fn configure_an_mbr_disk_with_an_ext4_root() {
    if !is_root() {
        return;
    }
    let size = 256 * MIB;
    let disk = Loop::new(size);
    run_stdin("sfdisk", &["-q", disk.path()], "label: dos\n,100MiB,L\n");
    disk.wait_part(1);
    run("mkfs.ext4", &["-q", "-F", "-L", "rootfs", &disk.part(1)]);
    {
        let m = Mount::new(&disk.part(1), &[]);
        std::fs::create_dir_all(m.path().join("etc/netplan")).unwrap();
        std::fs::write(m.path().join("etc/os-release"), "ID=debian\n").unwrap();
        std::fs::write(
            m.path().join("etc/netplan/50-cloud-init.yaml"),
            "network: {}\n",
        )
        .unwrap();
    }
    let seed = if has_vfat() {
        Some(SeedSpec {
            label: "cidata".into(),
            size_mib: 16,
            files: vec![
                ("meta-data".into(), "instance-id: m1\n".into()),
                ("user-data".into(), "#cloud-config\nhostname: m1\n".into()),
            ],
        })
    } else {
        eprintln!(
            "SKIPPED (seed part): this kernel has no vfat; the root file system part still runs"
        );
        None
    };
    let action = ConfigureAction {
        target: disk.target(size),
        root: RootSelector::Auto,
        remove: vec!["/etc/netplan/50-cloud-init.yaml".into()],
        files: vec![
            FileSpec {
                path: "/etc/hostname".into(),
                content: "m1\n".into(),
                mode: 0o644,
            },
            FileSpec {
                path: "/etc/netplan/60-rackboot.yaml".into(),
                content: "network: {version: 2}\n".into(),
                mode: 0o600,
            },
        ],
        seed: seed.clone(),
    };
    let out = configure::run(&ctx(), &action).unwrap();
    let StepOutput::Configured {
        root_device,
        files_written,
        seed_device,
    } = out
    else {
        panic!("{out:?}");
    };
    assert_eq!(root_device.as_deref(), Some(disk.part(1).as_str()));
    assert_eq!(files_written, 2);
    {
        let m = Mount::new(&disk.part(1), &["-o", "ro"]);
        assert_eq!(
            std::fs::read_to_string(m.path().join("etc/hostname")).unwrap(),
            "m1\n"
        );
        let netplan = m.path().join("etc/netplan/60-rackboot.yaml");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&netplan).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!m.path().join("etc/netplan/50-cloud-init.yaml").exists());
    }
    if let Some(seed) = seed {
        assert_eq!(seed_device.as_deref(), Some(disk.part(2).as_str()));
        let label = run(
            "blkid",
            &["-p", "-s", "LABEL", "-o", "value", &disk.part(2)],
        );
        assert_eq!(label.trim(), "cidata");
        let m = Mount::new(&disk.part(2), &["-o", "ro"]);
        for (name, content) in &seed.files {
            assert_eq!(
                &std::fs::read_to_string(m.path().join(name)).unwrap(),
                content
            );
        }
        drop(m);
        // The table: partition 2 starts after partition 1, on a MiB boundary.
        let dump = run("sfdisk", &["--dump", disk.path()]);
        assert!(dump.contains("type=c"), "{dump}");
    } else {
        assert_eq!(seed_device, None);
    }

    // Again, choosing the root by label, writing one more file.
    let again = ConfigureAction {
        root: RootSelector::Label("rootfs".into()),
        remove: vec![],
        files: vec![FileSpec {
            path: "/etc/motd".into(),
            content: "hi\n".into(),
            mode: 0o644,
        }],
        seed: None,
        ..action
    };
    configure::run(&ctx(), &again).unwrap();
    let m = Mount::new(&disk.part(1), &["-o", "ro"]);
    assert_eq!(
        std::fs::read_to_string(m.path().join("etc/motd")).unwrap(),
        "hi\n"
    );
    drop(m);
    let missing = ConfigureAction {
        root: RootSelector::Label("nope".into()),
        ..again
    };
    assert_eq!(
        configure::run(&ctx(), &missing).unwrap_err().code,
        "no_root_fs"
    );
    let _ = disk.name();
}
