//! `erase`: metadata (the ends of every partition and of the disk) or full
//! (NVMe format, ATA secure erase, discard, overwrite), several disks in
//! parallel with their progress added up.

use std::time::Instant;

use rackboot_agent_proto::{EraseAction, EraseMode, ErasedDisk, error_codes};

use crate::alog;
use crate::blockdev::{Device, is_unsupported, is_zero};
use crate::context::{StepContext, StepError};
use crate::disk::{self, Disk};
use crate::{parttable, sysfs, tools};

const MIB: u64 = 1 << 20;
/// Chunk of a discard or an overwrite between cancel checks and progress.
const CHUNK: u64 = 256 * MIB;

/// Byte ranges a metadata erase zeroes: the first and last MiB of every
/// partition (`(start, len)` in bytes), then of the disk, merged where they
/// overlap.
pub fn metadata_ranges(disk_size: u64, partitions: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let mut ends = |start: u64, len: u64| {
        let n = len.min(MIB);
        ranges.push((start, n));
        ranges.push((start + len - n, n));
    };
    for &(start, len) in partitions {
        if len > 0 && start + len <= disk_size {
            ends(start, len);
        }
    }
    if disk_size > 0 {
        ends(0, disk_size);
    }
    ranges.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, l) in ranges {
        match merged.last_mut() {
            Some((ms, ml)) if s <= *ms + *ml => *ml = (*ml).max(s + l - *ms),
            _ => merged.push((s, l)),
        }
    }
    merged
}

/// ATA security state from `hdparm -I`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AtaSecurity {
    pub supported: bool,
    pub enabled: bool,
    pub locked: bool,
    pub frozen: bool,
    pub enhanced_erase: bool,
    /// The drive's estimate for SECURITY ERASE UNIT.
    pub erase_minutes: Option<u32>,
}

/// Parses the `Security:` section of `hdparm -I`; `None` when absent.
pub fn parse_hdparm_security(text: &str) -> Option<AtaSecurity> {
    let mut lines = text.lines().skip_while(|l| !l.starts_with("Security:"));
    lines.next()?;
    let mut s = AtaSecurity::default();
    for line in lines.take_while(|l| l.starts_with('\t') || l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (not, rest) = match words.first() {
            Some(&"not") => (true, &words[1..]),
            _ => (false, &words[..]),
        };
        match rest {
            ["supported"] => s.supported = !not,
            ["enabled"] => s.enabled = !not,
            ["locked"] => s.locked = !not,
            ["frozen"] => s.frozen = !not,
            ["supported:", "enhanced", "erase"] => s.enhanced_erase = !not,
            _ => {
                if let Some(i) = line.find("min for SECURITY ERASE UNIT") {
                    let digits: String = line[..i]
                        .chars()
                        .rev()
                        .take_while(|c| c.is_ascii_digit())
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    s.erase_minutes = digits.parse().ok();
                }
            }
        }
    }
    Some(s)
}

struct Plan {
    disk: Disk,
    /// Metadata: ranges to zero. Full: empty.
    ranges: Vec<(u64, u64)>,
}

/// Partitions of a disk in bytes: those the kernel knows (sysfs) and those
/// in the table on the disk itself (a loop device without partscan, a
/// simulated disk, a table the kernel has not read yet).
fn partition_ranges(ctx: &StepContext, disk: &Disk, dev: &Device) -> Vec<(u64, u64)> {
    let mut parts: Vec<(u64, u64)> = Vec::new();
    if !disk.is_file {
        parts.extend(
            sysfs::partitions(&ctx.env.sys_root, &disk.name)
                .iter()
                .map(|p| (p.start_sector * 512, p.size_sectors * 512)),
        );
    }
    let sector = dev.logical_block_size().unwrap_or(512) as u64;
    if let Ok(table) = parttable::read_table(dev, sector) {
        parts.extend(
            table
                .partitions
                .iter()
                .map(|p| (p.start * sector, p.sectors * sector)),
        );
    }
    parts.sort();
    parts.dedup();
    parts
}

fn stop_md_holders(ctx: &StepContext, disk: &Disk) -> Result<(), StepError> {
    if disk.is_file {
        return Ok(());
    }
    for md in sysfs::md_holders(&ctx.env.sys_root, &disk.name) {
        alog!("{} is held by {md}: stopping it", disk.target_path);
        tools::run("mdadm", &["--stop", &format!("/dev/{md}")])?;
    }
    Ok(())
}

/// The `erase` step.
pub fn run(ctx: &StepContext, action: &EraseAction) -> Result<Vec<ErasedDisk>, StepError> {
    let mut disks = Vec::new();
    for target in &action.disks {
        let d = disk::resolve(&ctx.env, target)?;
        if disks.iter().any(|o: &Disk| o.dev == d.dev) {
            return Err(StepError::new(
                error_codes::DISK_MISMATCH,
                format!("{} is named twice", target.path),
                false,
            ));
        }
        disks.push(d);
    }
    let mut plans = Vec::new();
    for disk in disks {
        stop_md_holders(ctx, &disk)?;
        let ranges = match action.mode {
            EraseMode::Metadata => {
                let dev = Device::open_read_only(&disk.dev)
                    .map_err(|e| StepError::io(disk.dev.display(), e))?;
                metadata_ranges(disk.size, &partition_ranges(ctx, &disk, &dev))
            }
            EraseMode::Full => Vec::new(),
        };
        plans.push(Plan { disk, ranges });
    }
    let total: u64 = plans
        .iter()
        .map(|p| match action.mode {
            EraseMode::Metadata => p.ranges.iter().map(|r| r.1).sum::<u64>(),
            EraseMode::Full => p.disk.size,
        })
        .sum();
    let mode = match action.mode {
        EraseMode::Metadata => "metadata",
        EraseMode::Full => "full",
    };
    ctx.progress.set(
        0,
        Some(total),
        format!("erasing {} disk(s), {mode}", plans.len()),
    );
    let results: Vec<Result<ErasedDisk, StepError>> = std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .map(|plan| {
                s.spawn(move || match action.mode {
                    EraseMode::Metadata => erase_metadata(ctx, plan),
                    EraseMode::Full => erase_full(ctx, &plan.disk),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StepError::new(
                        error_codes::IO,
                        "erase thread panicked",
                        false,
                    ))
                })
            })
            .collect()
    });
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(d) => {
                alog!(
                    "erased {} ({}, {} bytes, {} ms)",
                    d.path,
                    d.method,
                    d.bytes,
                    d.millis
                );
                out.push(d);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn open(disk: &Disk) -> Result<Device, StepError> {
    Device::open(&disk.dev).map_err(|e| StepError::io(disk.dev.display(), e))
}

fn erase_metadata(ctx: &StepContext, plan: &Plan) -> Result<ErasedDisk, StepError> {
    let started = Instant::now();
    let disk = &plan.disk;
    let dev = open(disk)?;
    let io = |what: &str, e| StepError::io(format!("{what} {}", disk.target_path), e);
    for &(start, len) in &plan.ranges {
        ctx.check_cancel()?;
        dev.write_zeros(start, len).map_err(|e| io("zeroing", e))?;
        ctx.progress.add(len);
    }
    dev.sync().map_err(|e| io("fsync", e))?;
    dev.reread_partitions()
        .map_err(|e| io("re-reading the partition table of", e))?;
    dev.drop_cache()
        .map_err(|e| io("dropping the cache of", e))?;
    let mut buf = vec![0u8; MIB as usize];
    for &(start, len) in &plan.ranges {
        let mut at = start;
        while at < start + len {
            let n = (start + len - at).min(MIB) as usize;
            dev.read_at(&mut buf[..n], at)
                .map_err(|e| io("reading back", e))?;
            if !is_zero(&buf[..n]) {
                return Err(StepError::new(
                    error_codes::IO,
                    format!(
                        "{}: bytes {at}..{} still hold data after zeroing",
                        disk.target_path,
                        at + n as u64
                    ),
                    false,
                ));
            }
            at += n as u64;
        }
    }
    Ok(ErasedDisk {
        path: disk.target_path.clone(),
        method: "zero_ends".into(),
        bytes: plan.ranges.iter().map(|r| r.1).sum(),
        millis: started.elapsed().as_millis() as u64,
    })
}

fn erase_full(ctx: &StepContext, disk: &Disk) -> Result<ErasedDisk, StepError> {
    let started = Instant::now();
    let done = |method: &str| ErasedDisk {
        path: disk.target_path.clone(),
        method: method.into(),
        bytes: disk.size,
        millis: started.elapsed().as_millis() as u64,
    };
    if !disk.is_file && disk.name.starts_with("nvme") {
        let dev = disk.dev.to_string_lossy();
        tools::run("nvme", &["format", &dev, "--ses=1", "--force"])?;
        ctx.progress.add(disk.size);
        reread(disk);
        return Ok(done("nvme_format"));
    }
    if !disk.is_file && ata_secure_erase(ctx, disk)? {
        reread(disk);
        return Ok(done("ata_secure_erase"));
    }
    let dev = open(disk)?;
    let io = |what: &str, e| StepError::io(format!("{what} {}", disk.target_path), e);
    if discard_all(ctx, disk, &dev)? {
        dev.sync().map_err(|e| io("fsync", e))?;
        dev.drop_cache()
            .map_err(|e| io("dropping the cache of", e))?;
        if sampled_zero(&dev).map_err(|e| io("reading back", e))? {
            dev.reread_partitions()
                .map_err(|e| io("re-reading the partition table of", e))?;
            return Ok(done("discard"));
        }
        alog!(
            "{}: discarded blocks do not read as zeros; overwriting",
            disk.target_path
        );
    }
    // Overwrite: progress restarts from what this disk had added.
    let mut at = 0;
    while at < disk.size {
        ctx.check_cancel()?;
        let n = (disk.size - at).min(CHUNK);
        dev.zero_range(at, n).map_err(|e| io("zeroing", e))?;
        ctx.progress.add(n);
        at += n;
    }
    dev.sync().map_err(|e| io("fsync", e))?;
    dev.reread_partitions()
        .map_err(|e| io("re-reading the partition table of", e))?;
    Ok(done("overwrite"))
}

fn reread(disk: &Disk) {
    if let Ok(dev) = Device::open(&disk.dev)
        && let Err(e) = dev.reread_partitions()
    {
        alog!(
            "re-reading the partition table of {}: {e}",
            disk.target_path
        );
    }
}

/// Discards the whole device in chunks. `Ok(false)` when the device cannot
/// discard (nothing was done).
fn discard_all(ctx: &StepContext, disk: &Disk, dev: &Device) -> Result<bool, StepError> {
    let mut at = 0;
    while at < disk.size {
        ctx.check_cancel()?;
        let n = (disk.size - at).min(4 * CHUNK);
        match dev.discard(at, n) {
            Ok(()) => {}
            Err(e) if at == 0 && is_unsupported(&e) => {
                alog!("{}: no discard ({e})", disk.target_path);
                return Ok(false);
            }
            Err(e) => return Err(StepError::io(format!("discarding {}", disk.target_path), e)),
        }
        ctx.progress.add(n);
        at += n;
    }
    Ok(true)
}

/// Reads 4 KiB at 64 places spread over the device, the first and last
/// included: all zeros?
fn sampled_zero(dev: &Device) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 4096];
    let size = dev.size();
    if size < 4096 {
        let mut small = vec![0u8; size as usize];
        dev.read_at(&mut small, 0)?;
        return Ok(is_zero(&small));
    }
    let last = size - 4096;
    for i in 0..64u64 {
        let at = (last / 63 * i) & !511;
        let at = if i == 63 { last } else { at };
        dev.read_at(&mut buf, at)?;
        if !is_zero(&buf) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// ATA secure erase when the drive supports it and is not frozen. Returns
/// `Ok(false)` when it does not apply (not ATA, unsupported, frozen).
fn ata_secure_erase(ctx: &StepContext, disk: &Disk) -> Result<bool, StepError> {
    let dev = disk.dev.to_string_lossy().into_owned();
    let transport = sysfs::transport(
        &sysfs::device_path(&ctx.env.sys_root, &format!("sys/block/{}", disk.name))
            .unwrap_or_default(),
    );
    if !matches!(transport.as_deref(), Some("ata" | "scsi")) {
        return Ok(false);
    }
    let Ok(identify) = tools::run("hdparm", &["-I", &dev]) else {
        return Ok(false);
    };
    let Some(sec) = parse_hdparm_security(&identify) else {
        return Ok(false);
    };
    if !sec.supported || sec.frozen || sec.locked {
        alog!(
            "{}: ATA secure erase not possible ({sec:?})",
            disk.target_path
        );
        return Ok(false);
    }
    ctx.check_cancel()?;
    alog!(
        "{}: ATA secure erase, the drive estimates {} min",
        disk.target_path,
        sec.erase_minutes.map_or("?".to_string(), |m| m.to_string())
    );
    // A temporary user password; a successful erase clears it.
    const PASSWORD: &str = "rackboot";
    tools::run(
        "hdparm",
        &["--user-master", "u", "--security-set-pass", PASSWORD, &dev],
    )?;
    if let Err(e) = tools::run(
        "hdparm",
        &["--user-master", "u", "--security-erase", PASSWORD, &dev],
    ) {
        // Leave no password behind on a drive that did not erase.
        let _ = tools::run(
            "hdparm",
            &["--user-master", "u", "--security-disable", PASSWORD, &dev],
        );
        return Err(e);
    }
    ctx.progress.add(disk.size);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_ranges_cover_both_ends() {
        let gib = 1 << 30;
        for (size, parts, want) in [
            (gib, vec![], vec![(0, MIB), (gib - MIB, MIB)]),
            (
                // A partition from 1 MiB to the end: its ends merge with the disk's.
                gib,
                vec![(MIB, gib - 2 * MIB)],
                vec![(0, 2 * MIB), (gib - 2 * MIB, 2 * MIB)],
            ),
            (
                // A partition smaller than 2 MiB is zeroed whole; one past the end is ignored.
                gib,
                vec![(10 * MIB, MIB / 2), (gib - MIB, 2 * MIB)],
                vec![(0, MIB), (10 * MIB, MIB / 2), (gib - MIB, MIB)],
            ),
            (MIB / 2, vec![], vec![(0, MIB / 2)]),
        ] {
            assert_eq!(metadata_ranges(size, &parts), want, "{size} {parts:?}");
        }
    }

    // `hdparm -I` (hdparm 9.65) security sections as drives report them.
    const HDPARM_NOT_FROZEN: &str = "\
/dev/sda:

ATA device, with non-removable media
\tModel Number:       Samsung SSD 860 EVO 500GB
Commands/features:
\tEnabled\tSupported:
\t   *\tSMART feature set
Security: 
\tMaster password revision code = 65534
\t\tsupported
\tnot\tenabled
\tnot\tlocked
\tnot\tfrozen
\tnot\texpired: security count
\t\tsupported: enhanced erase
\t2min for SECURITY ERASE UNIT. 8min for ENHANCED SECURITY ERASE UNIT.
Logical Unit WWN Device Identifier: 5002538e40a1b2c3
\tNAA\t\t: 5
Checksum: correct
";

    const HDPARM_FROZEN: &str = "\
Security: 
\tMaster password revision code = 65534
\t\tsupported
\tnot\tenabled
\tnot\tlocked
\t\tfrozen
\tnot\texpired: security count
\tnot\tsupported: enhanced erase
\tmore than 508min for SECURITY ERASE UNIT.
Checksum: correct
";

    #[test]
    fn hdparm_security_sections() {
        assert_eq!(
            parse_hdparm_security(HDPARM_NOT_FROZEN),
            Some(AtaSecurity {
                supported: true,
                enabled: false,
                locked: false,
                frozen: false,
                enhanced_erase: true,
                erase_minutes: Some(2),
            })
        );
        assert_eq!(
            parse_hdparm_security(HDPARM_FROZEN),
            Some(AtaSecurity {
                supported: true,
                frozen: true,
                erase_minutes: Some(508),
                ..AtaSecurity::default()
            })
        );
        assert_eq!(
            parse_hdparm_security("/dev/vda:\n HDIO_DRIVE_CMD(identify) failed"),
            None
        );
    }
}
