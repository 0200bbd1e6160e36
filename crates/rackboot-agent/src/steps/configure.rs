//! `configure`: write files into the installed system's root file system,
//! and add a cloud-init NoCloud seed partition (vfat, labelled) after the
//! image's last partition.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rackboot_agent_proto::{
    ConfigureAction, FileSpec, RootSelector, SeedSpec, StepOutput, error_codes,
};

use crate::alog;
use crate::blockdev::Device;
use crate::context::{StepContext, StepError};
use crate::disk::{self, Disk};
use crate::fsprobe::{self, FsInfo};
use crate::parttable::{self, TableError};
use crate::{sysfs, tools};

// ---------------------------------------------------------------------------
// Writing inside a root directory without ever leaving it.

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` relative to `root` as if `root` were `/`: absolute symlinks
/// and `..` in the installed system resolve inside it (RESOLVE_IN_ROOT), so
/// a link such as `/etc/resolv.conf -> /run/...` never reaches the
/// RAM-disk's own files.
fn open_in_root(root: RawFd, path: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::other("NUL in path"))?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve: libc::RESOLVE_IN_ROOT,
    };
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The relative form of an absolute path inside the installed system;
/// refuses `..` and empty paths.
pub fn relative_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not absolute"));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() {
        return Err(format!("{path:?} names the root itself"));
    }
    if parts.contains(&"..") {
        return Err(format!("{path:?} contains '..'"));
    }
    Ok(parts.join("/"))
}

fn split_parent(rel: &str) -> (&str, &str) {
    match rel.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", rel),
    }
}

/// `mkdir -p` of `rel` inside `root`; returns the directory.
fn make_dirs(root: &OwnedFd, rel: &str) -> io::Result<OwnedFd> {
    let mut dir = open_in_root(root.as_raw_fd(), ".", libc::O_PATH | libc::O_DIRECTORY, 0)?;
    let mut so_far = String::new();
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(comp);
        match open_in_root(
            root.as_raw_fd(),
            &so_far,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        ) {
            Ok(fd) => dir = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let c = CString::new(comp).map_err(|_| io::Error::other("NUL in path"))?;
                if unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) } < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(e);
                    }
                }
                dir = open_in_root(
                    root.as_raw_fd(),
                    &so_far,
                    libc::O_PATH | libc::O_DIRECTORY,
                    0,
                )?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(dir)
}

/// Writes one file. Parent directories are created (symlinked ones are
/// followed, inside the root); a symlink at the file's own path is replaced
/// by the file, since following it would write wherever it points (often
/// /run, empty in an image).
fn write_one(root: &OwnedFd, spec: &FileSpec) -> io::Result<()> {
    let rel = relative_path(&spec.path).map_err(io::Error::other)?;
    let (parent, name) = split_parent(&rel);
    let dir = make_dirs(root, parent)?;
    let c = CString::new(name).map_err(|_| io::Error::other("NUL in path"))?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } == 0
        && st.st_mode & libc::S_IFMT == libc::S_IFLNK
        && unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    // O_PATH directories cannot be written through: reopen the parent.
    let dir = open_in_root(
        root.as_raw_fd(),
        if parent.is_empty() { "." } else { parent },
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    )?;
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            (spec.mode & 0o7777) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The umask trimmed the mode at creation; an existing file kept its own.
    if unsafe { libc::fchmod(fd.as_raw_fd(), spec.mode & 0o7777) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut file = std::fs::File::from(fd);
    file.write_all(spec.content.as_bytes())?;
    file.sync_all()
}

fn remove_one(root: &OwnedFd, path: &str) -> io::Result<()> {
    let rel = relative_path(path).map_err(io::Error::other)?;
    let (parent, name) = split_parent(&rel);
    let dir = match open_in_root(
        root.as_raw_fd(),
        if parent.is_empty() { "." } else { parent },
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    ) {
        Ok(d) => d,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let c = CString::new(name).map_err(|_| io::Error::other("NUL in path"))?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } < 0
    {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) {
            Ok(())
        } else {
            Err(e)
        };
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        // std's remove_dir_all never follows symlinks inside the tree; the
        // /proc fd link pins the directory found inside the root.
        std::fs::remove_dir_all(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
    } else if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Removes `remove` then writes `files` under `root` (treated as `/`).
/// Returns the number of files written.
pub fn apply_files(root: &Path, remove: &[String], files: &[FileSpec]) -> Result<u32, StepError> {
    let fd = std::fs::File::open(root).map_err(|e| StepError::io(root.display(), e))?;
    let fd = OwnedFd::from(fd);
    for path in remove {
        remove_one(&fd, path).map_err(|e| StepError::io(format!("removing {path}"), e))?;
        alog!("removed {path}");
    }
    for spec in files {
        write_one(&fd, spec).map_err(|e| StepError::io(format!("writing {}", spec.path), e))?;
        alog!(
            "wrote {} ({} bytes, mode {:o})",
            spec.path,
            spec.content.len(),
            spec.mode
        );
    }
    if unsafe { libc::syncfs(fd.as_raw_fd()) } < 0 {
        return Err(StepError::io(
            format!("syncfs {}", root.display()),
            io::Error::last_os_error(),
        ));
    }
    Ok(files.len() as u32)
}

// ---------------------------------------------------------------------------
// Mounting.

/// A file system mounted on a fresh directory; unmounted on drop.
pub struct Mounted {
    pub dir: PathBuf,
    active: bool,
}

impl Mounted {
    pub fn mount(dev: &Path, fstype: &str, read_only: bool) -> io::Result<Mounted> {
        let dir =
            std::env::temp_dir().join(format!("rackboot-mnt-{}", crate::random::uuid().simple()));
        std::fs::create_dir(&dir)?;
        let c_dev = CString::new(dev.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        let c_dir = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        let c_type = CString::new(fstype).map_err(io::Error::other)?;
        let flags = if read_only { libc::MS_RDONLY } else { 0 } | libc::MS_NOSUID | libc::MS_NODEV;
        let rc = unsafe {
            libc::mount(
                c_dev.as_ptr(),
                c_dir.as_ptr(),
                c_type.as_ptr(),
                flags,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            let _ = std::fs::remove_dir(&dir);
            return Err(io::Error::new(
                e.kind(),
                format!("mounting {} ({fstype}): {e}", dev.display()),
            ));
        }
        Ok(Mounted { dir, active: true })
    }

    /// Unmounts, retrying while busy, and removes the directory.
    pub fn unmount(mut self) -> io::Result<()> {
        self.active = false;
        unmount_dir(&self.dir)
    }
}

fn unmount_dir(dir: &Path) -> io::Result<()> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let mut result = Ok(());
    for attempt in 0..20 {
        if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
            result = Ok(());
            break;
        }
        let e = io::Error::last_os_error();
        result = Err(io::Error::new(
            e.kind(),
            format!("unmounting {}: {e}", dir.display()),
        ));
        if e.raw_os_error() != Some(libc::EBUSY) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50 * (attempt + 1)));
    }
    if result.is_ok() {
        let _ = std::fs::remove_dir(dir);
    }
    result
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.active
            && let Err(e) = unmount_dir(&self.dir)
        {
            alog!("{e}");
        }
    }
}

// ---------------------------------------------------------------------------
// Partitions of the target.

/// `vda` + 2 = `vda2`; `nvme0n1` + 2 = `nvme0n1p2`; `md127` + 1 = `md127p1`.
pub fn partition_name(disk: &str, number: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

/// `/dev/NAME`, waiting for the kernel to announce it in sysfs and making
/// the node from its `dev` numbers when nothing (devtmpfs, mdev) did.
fn device_node(ctx: &StepContext, name: &str, wait: Duration) -> Result<PathBuf, StepError> {
    let node = PathBuf::from("/dev").join(name);
    let sys = ctx.env.sys(&format!("/sys/class/block/{name}/dev"));
    let deadline = Instant::now() + wait;
    loop {
        if node.exists() {
            return Ok(node);
        }
        if let Ok(dev) = std::fs::read_to_string(&sys)
            && Instant::now() + Duration::from_millis(500) > deadline
        {
            let (major, minor) = dev.trim().split_once(':').unwrap_or(("0", "0"));
            let (major, minor): (u32, u32) =
                (major.parse().unwrap_or(0), minor.parse().unwrap_or(0));
            let c = CString::new(node.as_os_str().as_encoded_bytes())
                .map_err(|e| StepError::io(name, io::Error::other(e)))?;
            if unsafe {
                libc::mknod(
                    c.as_ptr(),
                    libc::S_IFBLK | 0o600,
                    libc::makedev(major, minor),
                )
            } < 0
            {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(StepError::io(format!("mknod {}", node.display()), e));
                }
            }
            return Ok(node);
        }
        if Instant::now() > deadline {
            return Err(StepError::new(
                error_codes::IO,
                format!("{} did not appear", node.display()),
                true,
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn probe_device(path: &Path) -> Option<FsInfo> {
    let dev = Device::open_read_only(path).ok()?;
    let n = (fsprobe::PROBE_BYTES as u64).min(dev.size()) as usize;
    let mut head = vec![0u8; n];
    dev.read_at(&mut head, 0).ok()?;
    fsprobe::probe(&head)
}

struct Part {
    number: u32,
    node: PathBuf,
    fs: Option<FsInfo>,
}

fn target_partitions(ctx: &StepContext, disk: &Disk) -> Result<Vec<Part>, StepError> {
    // The image's table was re-read after writing; again here in case this
    // step runs in a later boot or after another tool touched the disk.
    if let Ok(dev) = Device::open(&disk.dev) {
        disk::settle_partitions(&ctx.env, disk, &dev);
    }
    let mut parts = Vec::new();
    for p in sysfs::partitions(&ctx.env.sys_root, &disk.name) {
        let node = device_node(ctx, &p.name, Duration::from_secs(5))?;
        parts.push(Part {
            number: p.number,
            fs: probe_device(&node),
            node,
        });
    }
    Ok(parts)
}

const ROOT_TYPES: [&str; 3] = ["ext4", "xfs", "btrfs"];

fn has_os_release(dir: &Path) -> bool {
    ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .any(|p| dir.join(p).symlink_metadata().is_ok())
}

fn choose_root<'a>(
    selector: &RootSelector,
    parts: &'a [Part],
    disk: &Disk,
) -> Result<&'a Part, StepError> {
    let no_root = |why: String| {
        StepError::new(
            error_codes::NO_ROOT_FS,
            format!("{}: {why}", disk.target_path),
            false,
        )
    };
    let mountable = |p: &&Part| p.fs.as_ref().is_some_and(|f| ROOT_TYPES.contains(&f.kind));
    match selector {
        RootSelector::Partition(n) => parts
            .iter()
            .find(|p| p.number == *n)
            .filter(mountable)
            .ok_or_else(|| {
                no_root(format!(
                    "partition {n} is missing or holds no ext4, xfs or btrfs"
                ))
            }),
        RootSelector::Label(label) => parts
            .iter()
            .filter(mountable)
            .find(|p| p.fs.as_ref().and_then(|f| f.label.as_deref()) == Some(label.as_str()))
            .ok_or_else(|| {
                no_root(format!(
                    "no ext4, xfs or btrfs file system labelled {label:?}"
                ))
            }),
        RootSelector::Auto => {
            for p in parts.iter().filter(mountable) {
                let kind = p.fs.as_ref().map(|f| f.kind).unwrap_or("ext4");
                match Mounted::mount(&p.node, kind, true) {
                    Ok(m) => {
                        let found = has_os_release(&m.dir);
                        m.unmount()
                            .map_err(|e| StepError::io(p.node.display(), e))?;
                        if found {
                            return Ok(p);
                        }
                    }
                    Err(e) => alog!("{e}"),
                }
            }
            Err(no_root(format!(
                "none of its {} partitions holds an ext4, xfs or btrfs file system with etc/os-release",
                parts.len()
            )))
        }
    }
}

fn table_error(disk: &Disk, e: TableError) -> StepError {
    let code = match e {
        TableError::NoRoom { .. } => error_codes::TOO_SMALL,
        TableError::Io(_) => error_codes::IO,
        _ => error_codes::UNSUPPORTED,
    };
    StepError::new(
        code,
        format!("{}: seed partition: {e}", disk.target_path),
        false,
    )
}

/// Adds the seed partition (or finds the one a previous attempt added) and
/// returns its node.
fn seed_partition(
    ctx: &StepContext,
    disk: &Disk,
    seed: &SeedSpec,
    parts: &[Part],
) -> Result<PathBuf, StepError> {
    if let Some(p) = parts.iter().find(|p| {
        p.fs.as_ref().is_some_and(|f| {
            f.kind == "vfat"
                && f.label
                    .as_deref()
                    .is_some_and(|l| l.eq_ignore_ascii_case(&seed.label))
        })
    }) {
        alog!(
            "{} already holds a {} partition: reusing it",
            disk.target_path,
            seed.label
        );
        return Ok(p.node.clone());
    }
    let io = |what: &str, e| StepError::io(format!("{what} {}", disk.target_path), e);
    let dev = Device::open(&disk.dev).map_err(|e| io("opening", e))?;
    let sector = u64::from(
        dev.logical_block_size()
            .map_err(|e| io("sector size of", e))?,
    );
    let size = u64::from(seed.size_mib) * (1 << 20) / sector;
    let table = parttable::read_table(&dev, sector).map_err(|e| table_error(disk, e))?;
    let disk_sectors = dev.size() / sector;
    let added = if table.gpt {
        let new = parttable::GptNew {
            size,
            type_guid: uuid::Uuid::parse_str(parttable::GPT_BASIC_DATA)
                .expect("constant GUID")
                .to_bytes_le(),
            unique_guid: crate::random::uuid().to_bytes_le(),
            name: &seed.label,
        };
        parttable::add_gpt_partition(
            &table.lba0,
            &table.lba1,
            &table.entries,
            sector,
            disk_sectors,
            &new,
        )
    } else {
        parttable::add_mbr_partition(
            &table.lba0,
            disk_sectors,
            size,
            parttable::MBR_FAT32_LBA,
            sector,
        )
    }
    .map_err(|e| table_error(disk, e))?;
    for (offset, bytes) in &added.writes {
        dev.write_at(bytes, *offset)
            .map_err(|e| io("writing the partition table of", e))?;
    }
    dev.sync().map_err(|e| io("fsync", e))?;
    // The old file system signature may linger where the new partition starts.
    let start = added.partition.start * sector;
    dev.write_zeros(start, (1u64 << 20).min(added.partition.sectors * sector))
        .map_err(|e| io("zeroing the seed partition of", e))?;
    dev.sync().map_err(|e| io("fsync", e))?;
    disk::settle_partitions(&ctx.env, disk, &dev);
    drop(dev);
    let name = partition_name(&disk.name, added.partition.number);
    alog!(
        "added partition {name} ({} MiB at sector {}) for the {} seed",
        seed.size_mib,
        added.partition.start,
        seed.label
    );
    device_node(ctx, &name, Duration::from_secs(10))
}

fn mkfs_vfat(node: &Path, label: &str) -> Result<(), StepError> {
    let node = node.to_string_lossy();
    match tools::find_program(&["mkfs.vfat", "mkfs.fat", "mkdosfs"]) {
        Some(p) => tools::run(&p.to_string_lossy(), &["-n", label, &node]).map(|_| ()),
        None => tools::run("busybox", &["mkdosfs", "-n", label, &node]).map(|_| ()),
    }
}

fn write_seed_files(dir: &Path, seed: &SeedSpec) -> Result<(), StepError> {
    for (name, content) in &seed.files {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(StepError::new(
                error_codes::UNSUPPORTED,
                format!("seed file name {name:?} is not a plain file name"),
                false,
            ));
        }
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).map_err(|e| StepError::io(path.display(), e))?;
        f.write_all(content.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| StepError::io(path.display(), e))?;
    }
    Ok(())
}

/// The `configure` step.
pub fn run(ctx: &StepContext, action: &ConfigureAction) -> Result<StepOutput, StepError> {
    if let Some(sim) = &ctx.env.sim {
        let root = sim.dir.join("root");
        std::fs::create_dir_all(&root).map_err(|e| StepError::io(root.display(), e))?;
        let files_written = apply_files(&root, &action.remove, &action.files)?;
        let seed_device = match &action.seed {
            Some(seed) => {
                let dir = sim.dir.join("seed");
                std::fs::create_dir_all(&dir).map_err(|e| StepError::io(dir.display(), e))?;
                write_seed_files(&dir, seed)?;
                Some(dir.display().to_string())
            }
            None => None,
        };
        return Ok(StepOutput::Configured {
            root_device: Some(root.display().to_string()),
            files_written,
            seed_device,
        });
    }

    let disk = disk::resolve(&ctx.env, &action.target)?;
    ctx.progress.set(
        0,
        None,
        format!("configuring the system on {}", action.target.path),
    );
    let parts = target_partitions(ctx, &disk)?;
    let mut root_device = None;
    let mut files_written = 0;
    if !action.files.is_empty() || !action.remove.is_empty() {
        let root = choose_root(&action.root, &parts, &disk)?;
        let kind = root.fs.as_ref().map(|f| f.kind).unwrap_or("ext4");
        ctx.check_cancel()?;
        let m = Mounted::mount(&root.node, kind, false)
            .map_err(|e| StepError::io(root.node.display(), e))?;
        alog!(
            "mounted {} ({kind}) as the installed system's root",
            root.node.display()
        );
        files_written = apply_files(&m.dir, &action.remove, &action.files)?;
        m.unmount()
            .map_err(|e| StepError::io(root.node.display(), e))?;
        root_device = Some(root.node.display().to_string());
    }
    let mut seed_device = None;
    if let Some(seed) = &action.seed {
        ctx.check_cancel()?;
        let node = seed_partition(ctx, &disk, seed, &parts)?;
        mkfs_vfat(&node, &seed.label)?;
        let m =
            Mounted::mount(&node, "vfat", false).map_err(|e| StepError::io(node.display(), e))?;
        write_seed_files(&m.dir, seed)?;
        m.unmount().map_err(|e| StepError::io(node.display(), e))?;
        alog!(
            "wrote {} seed files to {}",
            seed.files.len(),
            node.display()
        );
        seed_device = Some(node.display().to_string());
    }
    Ok(StepOutput::Configured {
        root_device,
        files_written,
        seed_device,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn partition_names() {
        for (disk, n, want) in [
            ("vda", 2, "vda2"),
            ("sdb", 1, "sdb1"),
            ("nvme0n1", 3, "nvme0n1p3"),
            ("md127", 1, "md127p1"),
            ("loop4", 1, "loop4p1"),
            ("mmcblk0", 2, "mmcblk0p2"),
        ] {
            assert_eq!(partition_name(disk, n), want);
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path("/etc/netplan/50-rackboot.yaml").unwrap(),
            "etc/netplan/50-rackboot.yaml"
        );
        assert_eq!(relative_path("//etc/./hostname").unwrap(), "etc/hostname");
        for bad in ["etc/hostname", "/", "/etc/../../x"] {
            assert!(relative_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_land_inside_the_root_even_through_absolute_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc/netplan")).unwrap();
        std::fs::write(r.join("etc/netplan/50-cloud-init.yaml"), "old").unwrap();
        std::fs::create_dir_all(r.join("etc/network/interfaces.d/sub")).unwrap();
        std::fs::write(r.join("etc/network/interfaces.d/sub/x"), "x").unwrap();
        // An absolute link pointing outside if followed naively, and a
        // directory link to an outside directory.
        let escape = outside.path().join("resolv.conf");
        std::os::unix::fs::symlink(&escape, r.join("etc/resolv.conf")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("etc/linked")).unwrap();
        std::fs::write(outside.path().join("keep"), "keep").unwrap();

        let files = vec![
            FileSpec {
                path: "/etc/hostname".into(),
                content: "node-1\n".into(),
                mode: 0o644,
            },
            FileSpec {
                path: "/etc/ssh/sshd_config.d/10-rackboot.conf".into(),
                content: "PermitRootLogin no\n".into(),
                mode: 0o600,
            },
            FileSpec {
                path: "/etc/resolv.conf".into(),
                content: "nameserver 192.0.2.53\n".into(),
                mode: 0o644,
            },
            FileSpec {
                path: "/etc/linked/keep".into(),
                content: "inside".into(),
                mode: 0o644,
            },
        ];
        let remove = vec![
            "/etc/netplan/50-cloud-init.yaml".to_string(),
            "/etc/network/interfaces.d".to_string(),
            "/etc/does-not-exist".to_string(),
            "/etc/linked".to_string(),
        ];
        let n = apply_files(r, &remove, &files).unwrap();
        assert_eq!(n, 4);
        assert_eq!(
            std::fs::read_to_string(r.join("etc/hostname")).unwrap(),
            "node-1\n"
        );
        let sshd = r.join("etc/ssh/sshd_config.d/10-rackboot.conf");
        assert_eq!(
            std::fs::metadata(&sshd).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!r.join("etc/netplan/50-cloud-init.yaml").exists());
        assert!(!r.join("etc/network/interfaces.d").exists());
        // The symlinked resolv.conf was replaced by the file; its target untouched.
        assert!(!escape.exists());
        let resolv = r.join("etc/resolv.conf");
        assert!(resolv.symlink_metadata().unwrap().is_file());
        assert_eq!(
            std::fs::read_to_string(resolv).unwrap(),
            "nameserver 192.0.2.53\n"
        );
        // The directory link was removed as a link; the outside is untouched.
        assert_eq!(
            std::fs::read_to_string(outside.path().join("keep")).unwrap(),
            "keep"
        );
        assert!(
            r.join("etc/linked").is_dir(),
            "recreated as a real directory"
        );
        assert_eq!(
            std::fs::read_to_string(r.join("etc/linked/keep")).unwrap(),
            "inside"
        );

        let e = apply_files(
            r,
            &[],
            &[FileSpec {
                path: "/../x".into(),
                content: String::new(),
                mode: 0o644,
            }],
        )
        .unwrap_err();
        assert!(e.message.contains("'..'"), "{e}");
    }
}
