//! Which kernel to ship, and which initramfs compressions it can unpack.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{RamdiskError, Result, io_err};

/// `6.1.0-57-amd64` → [6, 1, 0, 57] so 6.1.0-100 sorts after 6.1.0-57.
pub fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The kernel image of `version`: BOOT/vmlinuz-VERSION.
pub fn kernel_image(boot_dir: &Path, version: &str) -> PathBuf {
    boot_dir.join(format!("vmlinuz-{version}"))
}

/// The newest version that has both BOOT/vmlinuz-VER and MODULES/VER (a running kernel with no
/// image, as in a container, has modules but no vmlinuz and is skipped).
pub fn newest_kernel(boot_dir: &Path, modules_root: &Path) -> Result<String> {
    let entries = std::fs::read_dir(modules_root)
        .map_err(io_err(format!("list {}", modules_root.display())))?;
    let mut versions: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|v| kernel_image(boot_dir, v).is_file())
        .collect();
    versions.sort_by_key(|v| version_key(v));
    versions.pop().ok_or_else(|| RamdiskError::NoKernel {
        boot_dir: boot_dir.to_path_buf(),
        modules_root: modules_root.to_path_buf(),
    })
}

/// An initramfs compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `zstd -19`.
    Zstd,
    /// `xz --check=crc32` (the kernel's XZ decoder checks CRC32, not the default CRC64).
    Xz,
}

impl Compression {
    pub const ALL: [Compression; 2] = [Compression::Zstd, Compression::Xz];

    /// Default order. zstd first: xz makes a 10% smaller initramfs (20.3 vs 22.5 MB for
    /// Debian 12's 6.1 kernel) but the kernel unpacks it about 7 s slower under QEMU TCG (and
    /// several times slower on hardware), which costs more than the extra transfer.
    pub const PREFERENCE: [Compression; 2] = [Compression::Zstd, Compression::Xz];

    /// The kernel option that lets it unpack this compression.
    pub fn config_option(self) -> &'static str {
        match self {
            Compression::Zstd => "CONFIG_RD_ZSTD",
            Compression::Xz => "CONFIG_RD_XZ",
        }
    }

    /// The program and arguments that compress stdin to stdout.
    pub fn command(self) -> (&'static str, &'static [&'static str]) {
        match self {
            // -T0: all cores; zstd's multi-threaded output is still one frame, and the same
            // whatever the thread count.
            Compression::Zstd => ("zstd", &["-19", "-T0", "-q", "-c"]),
            // One thread: multi-threaded xz writes several blocks, which only newer kernels'
            // decoders are known to take.
            Compression::Xz => ("xz", &["--check=crc32", "-T1", "-c"]),
        }
    }

    /// The Debian package with the compressor.
    pub fn package(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Xz => "xz-utils",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        })
    }
}

/// The compressions a kernel config (`/boot/config-VER`) enables, in [`Compression::ALL`] order.
pub fn supported_compressions(config: &str) -> Vec<Compression> {
    Compression::ALL
        .into_iter()
        .filter(|c| {
            let wanted = format!("{}=y", c.config_option());
            config.lines().any(|l| l.trim() == wanted)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        assert!(version_key("6.1.0-57-amd64") < version_key("6.1.0-100-amd64"));
        assert!(version_key("6.1.0-57-amd64") < version_key("6.12.9-amd64"));
    }

    #[test]
    fn compressions_come_from_the_kernel_config() {
        let cases = [
            (
                "CONFIG_RD_GZIP=y\nCONFIG_RD_XZ=y\nCONFIG_RD_ZSTD=y\n",
                vec![Compression::Zstd, Compression::Xz],
            ),
            (
                "CONFIG_RD_XZ=y\n# CONFIG_RD_ZSTD is not set\n",
                vec![Compression::Xz],
            ),
            ("CONFIG_RD_ZSTD=m\nCONFIG_RD_XZ_EXTRA=y\n", vec![]),
            ("", vec![]),
        ];
        for (config, expected) in cases {
            assert_eq!(supported_compressions(config), expected, "{config}");
        }
    }

    #[test]
    fn the_newest_kernel_needs_an_image_and_modules() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        let modules = dir.path().join("modules");
        for v in ["6.1.0-9-amd64", "6.1.0-10-amd64", "6.18.44-host"] {
            std::fs::create_dir_all(modules.join(v)).unwrap();
        }
        std::fs::create_dir_all(&boot).unwrap();
        for v in ["6.1.0-9-amd64", "6.1.0-10-amd64", "7.0.0-no-modules"] {
            std::fs::write(kernel_image(&boot, v), b"kernel").unwrap();
        }
        assert_eq!(newest_kernel(&boot, &modules).unwrap(), "6.1.0-10-amd64");
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = newest_kernel(&empty, &modules).unwrap_err().to_string();
        assert!(err.contains("vmlinuz"), "{err}");
    }
}
