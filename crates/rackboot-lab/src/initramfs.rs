//! A tiny test initramfs: busybox-static and an /init that prints [`MARKER`] with the kernel
//! command line on the console and powers off (so QEMU exits). Also built by
//! scripts/build-test-initramfs.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::{LabError, Result, io_err};

/// The start of the line /init prints: `RACKBOOT-TEST-MARKER booted cmdline=<kernel cmdline>`.
pub const MARKER: &str = "RACKBOOT-TEST-MARKER booted";

/// Kernel command line for booting the marker initramfs: the console is the first serial port
/// (which QEMU logs); `quiet` keeps TCG boots short; `panic=-1` reboots on a panic instead of
/// hanging until a test times out.
pub const MARKER_KERNEL_CMDLINE: &str = "console=ttyS0 quiet panic=-1";

const BUSYBOX: &str = "/bin/busybox";

/// The /init script of the marker initramfs.
pub fn marker_init_script() -> String {
    format!(
        "#!/bin/sh\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         echo \"{MARKER} cmdline=$(cat /proc/cmdline)\" > /dev/console\n\
         poweroff -f\n"
    )
}

/// One member of a newc cpio archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpioEntry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
    CharDevice {
        path: String,
        mode: u32,
        major: u32,
        minor: u32,
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Writes `entries` as a "newc" (SVR4, no checksum) cpio archive, the format the kernel unpacks
/// as an initramfs. Paths are relative (`bin/sh`); owners are root; mtime 0 for reproducibility.
pub fn write_newc(out: &mut impl Write, entries: &[CpioEntry]) -> std::io::Result<()> {
    let mut written = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        let (path, mode, data, nlink, rdev): (&str, u32, &[u8], u32, (u32, u32)) = match entry {
            CpioEntry::Dir { path, mode } => (path, S_IFDIR | mode, &[], 2, (0, 0)),
            CpioEntry::File { path, mode, data } => (path, S_IFREG | mode, data, 1, (0, 0)),
            CpioEntry::Symlink { path, target } => {
                (path, S_IFLNK | 0o777, target.as_bytes(), 1, (0, 0))
            }
            CpioEntry::CharDevice {
                path,
                mode,
                major,
                minor,
            } => (path, S_IFCHR | mode, &[], 1, (*major, *minor)),
        };
        written += write_member(out, ino, mode, nlink, rdev, path, data)?;
    }
    written += write_member(out, 0, 0, 1, (0, 0), "TRAILER!!!", &[])?;
    // The kernel doesn't require it, but cpio tools expect 512-byte blocks.
    let pad = (512 - written % 512) % 512;
    out.write_all(&vec![0; pad])
}

fn write_member(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    (rdev_major, rdev_minor): (u32, u32),
    path: &str,
    data: &[u8],
) -> std::io::Result<usize> {
    let name_size = path.len() + 1;
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rdev_major,
        rdev_minor,
        name_size as u32,
        0, // check
    ];
    let mut header = String::from("070701");
    for field in fields {
        header.push_str(&format!("{field:08x}"));
    }
    out.write_all(header.as_bytes())?;
    out.write_all(path.as_bytes())?;
    out.write_all(&[0])?;
    // Header (110 bytes) + name is padded to 4 bytes, then the data is.
    let name_pad = (4 - (110 + name_size) % 4) % 4;
    out.write_all(&[0; 3][..name_pad])?;
    out.write_all(data)?;
    let data_pad = (4 - data.len() % 4) % 4;
    out.write_all(&[0; 3][..data_pad])?;
    Ok(110 + name_size + name_pad + data.len() + data_pad)
}

/// The members of the marker initramfs around the given busybox binary.
fn marker_entries(busybox: Vec<u8>) -> Vec<CpioEntry> {
    let dir = |path: &str| CpioEntry::Dir {
        path: path.into(),
        mode: 0o755,
    };
    let mut entries = vec![
        dir("bin"),
        dir("dev"),
        dir("proc"),
        dir("sys"),
        dir("tmp"),
        // The kernel opens /dev/console for init's stdio before anything is mounted.
        CpioEntry::CharDevice {
            path: "dev/console".into(),
            mode: 0o600,
            major: 5,
            minor: 1,
        },
        CpioEntry::File {
            path: "bin/busybox".into(),
            mode: 0o755,
            data: busybox,
        },
    ];
    for applet in ["sh", "mount", "cat", "echo", "poweroff", "sleep"] {
        entries.push(CpioEntry::Symlink {
            path: format!("bin/{applet}"),
            target: "busybox".into(),
        });
    }
    entries.push(CpioEntry::File {
        path: "init".into(),
        mode: 0o755,
        data: marker_init_script().into_bytes(),
    });
    entries
}

/// Builds the marker initramfs (gzip-compressed newc cpio) at `out` from /bin/busybox
/// (Debian's busybox-static).
pub fn build_marker_initramfs(out: &Path) -> Result<()> {
    build_marker_initramfs_with(out, Path::new(BUSYBOX))
}

/// As [`build_marker_initramfs`] around another busybox-static binary (another
/// architecture's, e.g. arm64's under [`crate::firmware::ARM64_ROOT`]).
pub fn build_marker_initramfs_with(out: &Path, busybox_path: &Path) -> Result<()> {
    let shown = busybox_path.display();
    let busybox = std::fs::read(busybox_path).map_err(io_err(format!(
        "read {shown} (busybox-static of the machine's architecture)"
    )))?;
    if !busybox.starts_with(b"\x7fELF") {
        return Err(LabError::Config(format!("{shown} is not an ELF binary")));
    }
    let file = std::fs::File::create(out).map_err(io_err(format!("create {}", out.display())))?;
    let mut gz = GzEncoder::new(std::io::BufWriter::new(file), Compression::default());
    write_newc(&mut gz, &marker_entries(busybox))
        .and_then(|()| gz.finish()?.flush())
        .map_err(io_err(format!("write {}", out.display())))
}

/// Debian's arm64 kernel (linux-image-*-arm64, an EFI-stub `Image`) unpacked under
/// [`crate::firmware::ARM64_ROOT`] by scripts/install-deps.
pub fn arm64_kernel() -> Result<PathBuf> {
    let boot = Path::new(crate::firmware::ARM64_ROOT).join("boot");
    let mut kernels: Vec<PathBuf> = std::fs::read_dir(&boot)
        .map_err(io_err(format!(
            "list {} (scripts/install-deps)",
            boot.display()
        )))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort_by_key(|k| version_key(k));
    kernels
        .pop()
        .ok_or_else(|| LabError::Config(format!("no vmlinuz-* in {}", boot.display())))
}

/// The host's newest stock kernel (/boot/vmlinuz-*, Debian's linux-image-amd64): it has the 8250
/// serial console built in, so `console=ttyS0` shows the marker.
pub fn host_kernel() -> Result<PathBuf> {
    let entries = std::fs::read_dir("/boot").map_err(io_err("list /boot"))?;
    let mut kernels: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort_by_key(|k| version_key(k));
    kernels.pop().ok_or_else(|| {
        LabError::Config("no /boot/vmlinuz-* (apt-get install linux-image-amd64)".into())
    })
}

/// `vmlinuz-6.1.0-56-amd64` → [6, 1, 0, 56] so 6.1.0-100 sorts after 6.1.0-56.
fn version_key(path: &Path) -> Vec<u64> {
    path.to_string_lossy()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout_matches_the_format() {
        let mut out = Vec::new();
        write_newc(
            &mut out,
            &[CpioEntry::File {
                path: "init".into(),
                mode: 0o755,
                data: b"hello".to_vec(),
            }],
        )
        .unwrap();
        let header = std::str::from_utf8(&out[..110]).unwrap();
        assert_eq!(
            header,
            "070701\
             00000001\
             000081ed\
             00000000\
             00000000\
             00000001\
             00000000\
             00000005\
             00000000\
             00000000\
             00000000\
             00000000\
             00000005\
             00000000"
        );
        // 110 + "init\0" = 115, padded to 116; data 5 padded to 8.
        assert_eq!(&out[110..116], b"init\0\0");
        assert_eq!(&out[116..124], b"hello\0\0\0");
        assert_eq!(&out[124..130], b"070701");
        assert!(std::str::from_utf8(&out[124 + 110..124 + 121]).unwrap() == "TRAILER!!!\0");
        assert_eq!(out.len() % 512, 0);
    }

    /// The archive must be readable by GNU cpio (the kernel's unpacker follows the same format).
    #[test]
    fn gnu_cpio_lists_and_reads_our_archive() {
        let entries = vec![
            CpioEntry::Dir {
                path: "bin".into(),
                mode: 0o755,
            },
            CpioEntry::File {
                path: "bin/tool".into(),
                mode: 0o755,
                data: b"#!/bin/sh\necho hi\n".to_vec(),
            },
            CpioEntry::Symlink {
                path: "bin/sh".into(),
                target: "tool".into(),
            },
            CpioEntry::CharDevice {
                path: "console".into(),
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.cpio");
        let mut out = Vec::new();
        write_newc(&mut out, &entries).unwrap();
        std::fs::write(&archive, out).unwrap();
        let listing = std::process::Command::new("cpio")
            .args(["-itv", "--quiet", "-F"])
            .arg(&archive)
            .output()
            .expect("cpio is installed");
        assert!(listing.status.success(), "{listing:?}");
        let text = String::from_utf8_lossy(&listing.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" bin"));
        assert!(lines[1].starts_with("-rwxr-xr-x") && lines[1].ends_with(" bin/tool"));
        assert!(lines[2].starts_with("lrwxrwxrwx") && lines[2].ends_with(" bin/sh -> tool"));
        assert!(lines[3].starts_with("crw-------") && lines[3].contains("5,"));
    }

    #[test]
    fn marker_initramfs_contains_init_and_busybox() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("marker.cpio.gz");
        build_marker_initramfs(&out).unwrap();
        let gz = std::fs::read(&out).unwrap();
        let mut cpio = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut cpio).unwrap();
        let script = marker_init_script();
        let at = cpio
            .windows(script.len())
            .position(|w| w == script.as_bytes())
            .expect("init script in archive");
        assert!(at > 0);
        let busybox = std::fs::read(BUSYBOX).unwrap();
        assert!(cpio.len() > busybox.len());
    }

    #[test]
    fn kernel_versions_sort_numerically() {
        let a = version_key(Path::new("/boot/vmlinuz-6.1.0-56-amd64"));
        let b = version_key(Path::new("/boot/vmlinuz-6.1.0-100-amd64"));
        assert!(a < b);
    }
}
