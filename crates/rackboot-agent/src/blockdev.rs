//! A disk the agent writes to: a block device on a machine, or a regular
//! file in simulation mode and in tests. The same step code runs on both;
//! only the few operations below differ.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

// <linux/fs.h>: _IO(0x12, n) and _IOR(0x12, 114, size_t).
const BLKRRPART: libc::c_ulong = 0x125f;
const BLKFLSBUF: libc::c_ulong = 0x1261;
const BLKSSZGET: libc::c_ulong = 0x1268;
const BLKDISCARD: libc::c_ulong = 0x1277;
const BLKZEROOUT: libc::c_ulong = 0x127f;
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKPG: libc::c_ulong = 0x1269;
const BLKPG_ADD_PARTITION: libc::c_int = 1;

/// `struct blkpg_partition` of <linux/blkpg.h>.
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: libc::c_int,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// Simulation mode's disk speed in MiB/s (0: as fast as the file system).
/// Files stand in for disks there; pacing their writes makes a simulated
/// deploy take the time a real disk would (the fleet benchmark), and gives
/// tests a window to interrupt a write in.
static SIMULATED_MIBPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static PACE: std::sync::Mutex<Option<(std::time::Instant, u64)>> = std::sync::Mutex::new(None);

/// Sets the simulated disk speed (simulation mode only).
pub fn set_simulated_speed(mib_per_sec: u64) {
    SIMULATED_MIBPS.store(mib_per_sec, std::sync::atomic::Ordering::Relaxed);
}

/// Sleeps so that writes to files average the simulated speed.
fn pace(bytes: usize) {
    let mibps = SIMULATED_MIBPS.load(std::sync::atomic::Ordering::Relaxed);
    if mibps == 0 {
        return;
    }
    let due = {
        let mut state = PACE.lock().unwrap_or_else(|e| e.into_inner());
        let (start, total) = state.get_or_insert((std::time::Instant::now(), 0));
        *total += bytes as u64;
        *start + std::time::Duration::from_secs_f64(*total as f64 / (mibps << 20) as f64)
    };
    let now = std::time::Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// Zeros for writes; shared so no caller allocates its own.
pub static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

pub struct Device {
    file: File,
    path: PathBuf,
    is_block: bool,
    size: u64,
}

impl Device {
    /// Opens for reading and writing. A block device is opened `O_EXCL`, so a
    /// device that is mounted or part of a running md array is refused
    /// (EBUSY) instead of being written under the kernel's feet.
    pub fn open(path: &Path) -> io::Result<Device> {
        Device::open_with(path, true)
    }

    pub fn open_read_only(path: &Path) -> io::Result<Device> {
        Device::open_with(path, false)
    }

    fn open_with(path: &Path, write: bool) -> io::Result<Device> {
        let is_block = std::fs::metadata(path)?.file_type().is_block_device();
        let mut options = OpenOptions::new();
        options.read(true).write(write);
        if is_block && write {
            options.custom_flags(libc::O_EXCL | libc::O_CLOEXEC);
        }
        let file = options.open(path)?;
        let size = if is_block {
            let mut size: u64 = 0;
            ioctl(&file, BLKGETSIZE64, &mut size as *mut u64 as libc::c_ulong)?;
            size
        } else {
            file.metadata()?.len()
        };
        Ok(Device {
            file,
            path: path.to_path_buf(),
            is_block,
            size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_block(&self) -> bool {
        self.is_block
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Logical sector size (512 for files).
    pub fn logical_block_size(&self) -> io::Result<u32> {
        if !self.is_block {
            return Ok(512);
        }
        let mut size: libc::c_int = 0;
        ioctl(
            &self.file,
            BLKSSZGET,
            &mut size as *mut libc::c_int as libc::c_ulong,
        )?;
        Ok(size as u32)
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.is_block {
            pace(buf.len());
        }
        self.file.write_all_at(buf, offset)
    }

    /// Writes zeros with plain writes.
    pub fn write_zeros(&self, mut offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        while offset < end {
            let n = (end - offset).min(ZEROS.len() as u64) as usize;
            if !self.is_block {
                pace(n);
            }
            self.file.write_all_at(&ZEROS[..n], offset)?;
            offset += n as u64;
        }
        Ok(())
    }

    /// Makes `offset..offset+len` read as zeros the cheapest way the device
    /// offers: a write-zeroes request (BLKZEROOUT; the device may unmap) or a
    /// hole punched in a file, else plain writes.
    pub fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let fast = if self.is_block {
            let range = [offset, len];
            ioctl(&self.file, BLKZEROOUT, range.as_ptr() as libc::c_ulong)
        } else {
            self.punch_hole(offset, len)
        };
        match fast {
            Ok(()) => Ok(()),
            Err(e) if is_unsupported(&e) => self.write_zeros(offset, len),
            Err(e) => Err(e),
        }
    }

    /// Discards (TRIM/UNMAP) a range; a hole punched in a file. Errors with
    /// an "unsupported" kind when the device cannot.
    pub fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.is_block {
            let range = [offset, len];
            ioctl(&self.file, BLKDISCARD, range.as_ptr() as libc::c_ulong)
        } else {
            self.punch_hole(offset, len)
        }
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Drops the kernel's cached pages of the device so the next reads come
    /// from the medium (read-back checks).
    pub fn drop_cache(&self) -> io::Result<()> {
        if self.is_block {
            ioctl(&self.file, BLKFLSBUF, 0)
        } else {
            let rc = unsafe {
                libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(rc))
            }
        }
    }

    /// Asks the kernel to re-read the partition table (no-op for files).
    /// Retries a few times on EBUSY (udev or mdev may briefly hold a
    /// partition open after a change); EINVAL means the device cannot hold
    /// partitions (a loop device without partscan), which is not an error.
    pub fn reread_partitions(&self) -> io::Result<()> {
        if !self.is_block {
            return Ok(());
        }
        let mut last = None;
        for attempt in 0..10 {
            match ioctl(&self.file, BLKRRPART, 0) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("BLKRRPART failed")))
    }
}

impl Device {
    /// Tells the kernel about one partition (BLKPG, as `partx -a` does), for
    /// kernels that did not find it when re-reading the table.
    pub fn add_partition(&self, number: u32, start: u64, len: u64) -> io::Result<()> {
        let mut part = BlkpgPartition {
            start: start as i64,
            length: len as i64,
            pno: number as libc::c_int,
            devname: [0; 64],
            volname: [0; 64],
        };
        let arg = BlkpgIoctlArg {
            op: BLKPG_ADD_PARTITION,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
            data: &mut part as *mut BlkpgPartition as *mut libc::c_void,
        };
        ioctl(
            &self.file,
            BLKPG,
            &arg as *const BlkpgIoctlArg as libc::c_ulong,
        )
    }
}

/// The device (or file system) does not offer the operation.
pub fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL | libc::ENOSYS)
    )
}

fn ioctl(file: &File, request: libc::c_ulong, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: every request above takes either no argument or a pointer to a
    // value of the size the kernel expects, which the callers pass.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// True when every byte is zero (fast: compares 16 bytes at a time).
pub fn is_zero(buf: &[u8]) -> bool {
    let (head, body, tail) = unsafe { buf.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && body.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_detection() {
        let mut buf = vec![0u8; 4099];
        assert!(is_zero(&buf));
        for i in [0, 1, 17, 4096, 4098] {
            buf[i] = 1;
            assert!(!is_zero(&buf), "{i}");
            assert!(!is_zero(&buf[1..]) || i == 0);
            buf[i] = 0;
        }
        assert!(is_zero(&[]));
    }

    #[test]
    fn a_file_device_zeroes_by_punching_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![0xaau8; 4 << 20]).unwrap();
        let dev = Device::open(&path).unwrap();
        assert!(!dev.is_block());
        assert_eq!(dev.size(), 4 << 20);
        let before = std::fs::metadata(&path).unwrap().blocks();
        dev.zero_range(1 << 20, 2 << 20).unwrap();
        dev.sync().unwrap();
        let after = std::fs::metadata(&path).unwrap().blocks();
        assert!(after < before, "{after} blocks, was {before}");
        let mut buf = vec![1u8; 2 << 20];
        dev.read_at(&mut buf, 1 << 20).unwrap();
        assert!(is_zero(&buf));
        let mut edge = [0u8; 2];
        dev.read_at(&mut edge, (1 << 20) - 1).unwrap();
        assert_eq!(edge, [0xaa, 0]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4 << 20);
    }
}
