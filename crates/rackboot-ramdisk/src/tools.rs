//! Programs from the build host copied into the RAM-disk with the shared libraries they need
//! (found with `ldd`) and the dynamic loader.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::rootfs::RootFs;
use crate::{RamdiskError, Result, io_err};

/// Where host programs are looked up (Debian: sbin tools live in /usr/sbin).
pub const PROGRAM_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// A host program to ship in the RAM-disk's /bin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    /// Program name, looked up in [`PROGRAM_DIRS`]; installed as /bin/PROGRAM.
    pub program: String,
    /// Debian package that provides it (named in the error when it is missing).
    pub package: String,
    /// Other names for it in /bin (symlinks); they replace busybox applets of the same name.
    pub aliases: Vec<String>,
}

impl Tool {
    pub fn new(program: &str, package: &str, aliases: &[&str]) -> Tool {
        Tool {
            program: program.to_string(),
            package: package.to_string(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// The tools the agent drives besides busybox: software RAID, NVMe and ATA secure erase, FAT
/// filesystems (busybox's mkdosfs only makes FAT32), and kmod, whose modprobe honours soft
/// dependencies and reads depmod's binary indexes (busybox's modprobe does neither).
pub fn default_tools() -> Vec<Tool> {
    vec![
        Tool::new("mdadm", "mdadm", &[]),
        Tool::new("nvme", "nvme-cli", &[]),
        Tool::new("hdparm", "hdparm", &[]),
        Tool::new("mkfs.fat", "dosfstools", &["mkfs.vfat"]),
        Tool::new(
            "kmod",
            "kmod",
            &["modprobe", "insmod", "rmmod", "lsmod", "modinfo", "depmod"],
        ),
    ]
}

/// The first `PROGRAM_DIRS/name` that is a file.
pub fn find_program(name: &str) -> Option<PathBuf> {
    PROGRAM_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// What `ldd` says a program needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LddOutput {
    /// Statically linked (or not a dynamic ELF at all): nothing to add.
    Static,
    Dynamic {
        /// Resolved shared libraries, in ldd's order.
        libraries: Vec<PathBuf>,
        /// The dynamic loader (PT_INTERP), e.g. /lib64/ld-linux-x86-64.so.2.
        loader: Option<PathBuf>,
    },
}

/// Parses glibc `ldd` output. A library ldd could not find (`=> not found`) is an error naming
/// it; the vDSO (no file) is skipped.
pub fn parse_ldd(output: &str) -> std::result::Result<LddOutput, String> {
    let mut libraries = Vec::new();
    let mut loader = None;
    let mut missing = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "statically linked" || line == "not a dynamic executable" {
            return Ok(LddOutput::Static);
        }
        // Drop the load address: `... (0x00007f...)`.
        let line = match line.rfind(" (0x") {
            Some(at) if line.ends_with(')') => line[..at].trim_end(),
            _ => line,
        };
        match line.split_once("=>") {
            Some((name, path)) => {
                let (name, path) = (name.trim(), path.trim());
                if path == "not found" {
                    missing.push(name.to_string());
                } else if path.starts_with('/') {
                    libraries.push(PathBuf::from(path));
                } else if !path.is_empty() {
                    return Err(format!("unexpected ldd line {line:?}"));
                }
                // `linux-vdso.so.1 =>  (0x...)` (older glibc): the vDSO, no file.
            }
            None if line.starts_with('/') => loader = Some(PathBuf::from(line)),
            // `linux-vdso.so.1`: the vDSO.
            None if !line.contains(' ') => {}
            None => return Err(format!("unexpected ldd line {line:?}")),
        }
    }
    if !missing.is_empty() {
        return Err(format!("libraries not found: {}", missing.join(", ")));
    }
    Ok(LddOutput::Dynamic { libraries, loader })
}

/// Whether `path` starts with the ELF magic.
pub fn is_elf(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"\x7fELF"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(RamdiskError::Io {
            what: format!("read {}", path.display()),
            source: e,
        }),
    }
}

/// The shared libraries and loader `binary` needs, as host paths (empty for static programs
/// and scripts).
pub fn shared_objects(binary: &Path) -> Result<Vec<PathBuf>> {
    if !is_elf(binary)? {
        return Ok(Vec::new());
    }
    let output = Command::new("ldd")
        .arg(binary)
        .env("LC_ALL", "C")
        .output()
        .map_err(io_err(format!("run ldd {}", binary.display())))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed = parse_ldd(&text).map_err(|reason| RamdiskError::Ldd {
        binary: binary.to_path_buf(),
        reason,
    })?;
    match parsed {
        LddOutput::Static => Ok(Vec::new()),
        LddOutput::Dynamic { .. } if !output.status.success() => Err(RamdiskError::Ldd {
            binary: binary.to_path_buf(),
            reason: format!("ldd failed ({}): {}", output.status, text.trim()),
        }),
        LddOutput::Dynamic { libraries, loader } => {
            Ok(loader.into_iter().chain(libraries).collect())
        }
    }
}

/// Adds `source` to `fs` at `path` (mode 0755) and, for a dynamic ELF, its libraries and loader
/// at their host paths (which the loader searches without an ld.so.cache). Returns the library
/// paths inside the RAM-disk.
pub fn add_program(fs: &mut RootFs, path: &str, source: &Path) -> Result<Vec<String>> {
    fs.host_file(path, 0o755, source)?;
    let mut added = Vec::new();
    for object in shared_objects(source)? {
        let inside = object.to_string_lossy().to_string();
        if !fs.contains(&inside) {
            // The host path may be a symlink (/lib64/ld-linux-x86-64.so.2 → ...): store the
            // file's contents under the name programs ask for.
            let real = std::fs::canonicalize(&object)
                .map_err(io_err(format!("resolve {}", object.display())))?;
            fs.host_file(&inside, 0o755, &real)?;
        }
        added.push(crate::rootfs::normalize(&inside)?);
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(libs: &[&str], loader: Option<&str>) -> LddOutput {
        LddOutput::Dynamic {
            libraries: libs.iter().map(PathBuf::from).collect(),
            loader: loader.map(PathBuf::from),
        }
    }

    #[test]
    fn ldd_output_table() {
        let cases: &[(&str, &str, std::result::Result<LddOutput, &str>)] = &[
            (
                "mdadm on Debian 12",
                "\tlinux-vdso.so.1 (0x00007f9fac5f8000)\n\
                 \tlibudev.so.1 => /lib/x86_64-linux-gnu/libudev.so.1 (0x00007f9fac50b000)\n\
                 \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f9fac329000)\n\
                 \t/lib64/ld-linux-x86-64.so.2 (0x00007f9fac5fa000)\n",
                Ok(dynamic(
                    &[
                        "/lib/x86_64-linux-gnu/libudev.so.1",
                        "/lib/x86_64-linux-gnu/libc.so.6",
                    ],
                    Some("/lib64/ld-linux-x86-64.so.2"),
                )),
            ),
            (
                "busybox-static",
                "\tnot a dynamic executable\n",
                Ok(LddOutput::Static),
            ),
            ("static-pie", "\tstatically linked\n", Ok(LddOutput::Static)),
            (
                "older glibc prints the vDSO with an empty path",
                "\tlinux-vdso.so.1 =>  (0x00007ffc2b5fe000)\n\
                 \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1c5c1a4000)\n\
                 \t/lib64/ld-linux-x86-64.so.2 (0x00007f1c5c56e000)\n",
                Ok(dynamic(
                    &["/lib/x86_64-linux-gnu/libc.so.6"],
                    Some("/lib64/ld-linux-x86-64.so.2"),
                )),
            ),
            (
                "a missing library",
                "\tlinux-vdso.so.1 (0x00007ffe)\n\
                 \tlibnvme.so.1 => not found\n\
                 \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n",
                Err("libraries not found: libnvme.so.1"),
            ),
            (
                "something else entirely",
                "ldd: ./x: No such file or directory\n",
                Err("unexpected ldd line"),
            ),
        ];
        for (what, output, expected) in cases {
            match (parse_ldd(output), expected) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{what}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{what}: {got}"),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn ldd_on_this_hosts_sh_finds_libc_and_the_loader() {
        let objects = shared_objects(Path::new("/bin/sh")).unwrap();
        assert!(
            objects.iter().any(|p| p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libc.so")),
            "{objects:?}"
        );
        assert!(
            objects[0].to_string_lossy().contains("ld-linux"),
            "loader first: {objects:?}"
        );
    }

    #[test]
    fn scripts_need_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("agent");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        assert!(shared_objects(&script).unwrap().is_empty());
    }

    #[test]
    fn add_program_brings_libraries_once() {
        let mut fs = RootFs::new();
        let first = add_program(&mut fs, "bin/sh", Path::new("/bin/sh")).unwrap();
        let second = add_program(&mut fs, "bin/sh2", Path::new("/bin/sh")).unwrap();
        assert_eq!(first, second);
        for lib in &first {
            assert!(fs.contains(lib), "{lib}");
        }
    }
}
