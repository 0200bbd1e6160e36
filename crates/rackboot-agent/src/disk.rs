//! Finding the disk a [`DiskTarget`] names, and refusing one that is not
//! what the server expects.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use rackboot_agent_proto::{DiskTarget, error_codes};

use crate::alog;
use crate::blockdev::Device;
use crate::context::{Env, StepError};
use crate::sysfs;

/// A disk found and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// As the server named it (`/dev/vda`, `/dev/md/rackboot0`).
    pub target_path: String,
    /// What to open: the resolved device node, or the file in simulation.
    pub dev: PathBuf,
    /// Kernel name (`vda`, `md127`) or file name.
    pub name: String,
    pub size: u64,
    pub serial: Option<String>,
    pub is_file: bool,
}

/// Resolves and checks a target: it must exist, and its size and serial
/// must be those the server expects (code `disk_mismatch` otherwise).
pub fn resolve(env: &Env, target: &DiskTarget) -> Result<Disk, StepError> {
    let disk = find(env, target)?;
    check(&disk, target)?;
    Ok(disk)
}

fn find(env: &Env, target: &DiskTarget) -> Result<Disk, StepError> {
    let not_found = |why: String| {
        StepError::new(
            error_codes::DISK_NOT_FOUND,
            format!("{}: {why}", target.path),
            false,
        )
    };
    if let Some(sim) = &env.sim {
        let file_name = std::path::Path::new(&target.path)
            .file_name()
            .ok_or_else(|| not_found("no file name".into()))?
            .to_string_lossy()
            .into_owned();
        let dev = sim.dir.join("disks").join(&file_name);
        let meta = std::fs::metadata(&dev)
            .map_err(|e| not_found(format!("simulated disk {}: {e}", dev.display())))?;
        if !meta.is_file() {
            return Err(not_found(format!(
                "{} is not a regular file",
                dev.display()
            )));
        }
        return Ok(Disk {
            target_path: target.path.clone(),
            dev,
            name: file_name,
            size: meta.len(),
            serial: None,
            is_file: true,
        });
    }
    let dev = std::fs::canonicalize(&target.path).map_err(|e| not_found(e.to_string()))?;
    let meta = std::fs::metadata(&dev).map_err(|e| not_found(e.to_string()))?;
    if !meta.file_type().is_block_device() {
        return Err(not_found(format!(
            "{} is not a block device",
            dev.display()
        )));
    }
    let name = dev
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = Device::open_read_only(&dev)
        .map_err(|e| StepError::io(dev.display(), e))?
        .size();
    Ok(Disk {
        target_path: target.path.clone(),
        serial: sysfs::disk_serial(&env.sys_root, &name),
        dev,
        name,
        size,
        is_file: false,
    })
}

/// Re-reads the partition table, then adds with BLKPG any partition in the
/// table the kernel did not list (a kernel built without that table type,
/// or a re-read refused while something held the disk), so `/dev/vda2`
/// exists whenever the table has it.
pub fn settle_partitions(env: &Env, disk: &Disk, dev: &Device) {
    if disk.is_file {
        return;
    }
    if let Err(e) = dev.reread_partitions() {
        alog!(
            "re-reading the partition table of {}: {e}",
            disk.target_path
        );
    }
    let sector = u64::from(dev.logical_block_size().unwrap_or(512));
    let Ok(table) = crate::parttable::read_table(dev, sector) else {
        return;
    };
    let known: Vec<u32> = sysfs::partitions(&env.sys_root, &disk.name)
        .iter()
        .map(|p| p.number)
        .collect();
    for p in table
        .partitions
        .iter()
        .filter(|p| !known.contains(&p.number))
    {
        match dev.add_partition(p.number, p.start * sector, p.sectors * sector) {
            Ok(()) => alog!(
                "{}: the kernel did not list partition {}; added it (BLKPG)",
                disk.target_path,
                p.number
            ),
            Err(e) => alog!("{}: adding partition {}: {e}", disk.target_path, p.number),
        }
    }
}

fn check(disk: &Disk, target: &DiskTarget) -> Result<(), StepError> {
    let mismatch = |why: String| {
        StepError::new(
            error_codes::DISK_MISMATCH,
            format!("{}: {why}; refusing to touch it", target.path),
            false,
        )
    };
    if let Some(want) = target.size_bytes
        && want != disk.size
    {
        return Err(mismatch(format!(
            "size is {} bytes, expected {want}",
            disk.size
        )));
    }
    if let Some(want) = &target.serial
        && disk.serial.as_deref() != Some(want.as_str())
    {
        return Err(mismatch(format!(
            "serial is {:?}, expected {want:?}",
            disk.serial
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::SimConfig;

    #[test]
    fn simulated_disks_are_checked_against_the_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("disks")).unwrap();
        let f = std::fs::File::create(dir.path().join("disks/vda")).unwrap();
        f.set_len(1 << 30).unwrap();
        let env = Env::simulated(SimConfig {
            dir: dir.path().into(),
            mac: "52:54:00:00:00:01".into(),
            serial: None,
        });
        let target = |path: &str, size, serial: Option<&str>| DiskTarget {
            path: path.into(),
            size_bytes: size,
            serial: serial.map(str::to_string),
        };
        let disk = resolve(&env, &target("/dev/vda", Some(1 << 30), None)).unwrap();
        assert_eq!(disk.size, 1 << 30);
        assert_eq!(disk.name, "vda");
        for (t, code, want) in [
            (target("/dev/vdb", None, None), "disk_not_found", "/dev/vdb"),
            (
                target("/dev/vda", Some(2 << 30), None),
                "disk_mismatch",
                "size is 1073741824 bytes, expected 2147483648",
            ),
            (
                target("/dev/vda", None, Some("S1")),
                "disk_mismatch",
                "serial is None, expected \"S1\"",
            ),
        ] {
            let e = resolve(&env, &t).unwrap_err();
            assert_eq!(e.code, code);
            assert!(e.message.contains(want), "{e}");
        }
    }
}
