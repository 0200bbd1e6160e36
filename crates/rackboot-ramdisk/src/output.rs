//! The build's private work directory next to the output, and the atomic switch to the new
//! output: readers (the boot HTTP server) see the old RAM-disk or the new one, never a mix.

use std::path::{Path, PathBuf};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use crate::{INITRAMFS_FILE, KERNEL_FILE, MANIFEST_FILE, RamdiskError, Result, io_err};

/// A directory beside the output (same filesystem, so a rename moves it), removed on drop.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates `PARENT/.NAME.build-PID-NANOS` for output `PARENT/NAME`.
    pub fn create(out_dir: &Path) -> Result<WorkDir> {
        let (parent, name) = split_output(out_dir)?;
        std::fs::create_dir_all(&parent).map_err(io_err(format!("create {}", parent.display())))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!(".{name}.build-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).map_err(io_err(format!("create {}", path.display())))?;
        Ok(WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %err, "removing RAM-disk work directory");
        }
    }
}

fn split_output(out_dir: &Path) -> Result<(PathBuf, String)> {
    let name = out_dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| RamdiskError::Output {
            path: out_dir.to_path_buf(),
            reason: "needs a final path component to build beside".into(),
        })?;
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_string()))
}

/// Checks that `out_dir` is absent, or a directory that holds nothing but a RAM-disk (so
/// replacing it cannot delete anything else).
pub fn check_replaceable(out_dir: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(out_dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(RamdiskError::Io {
                what: format!("stat {}", out_dir.display()),
                source: e,
            });
        }
    };
    if !meta.is_dir() {
        return Err(RamdiskError::Output {
            path: out_dir.to_path_buf(),
            reason: "exists and is not a directory".into(),
        });
    }
    let entries =
        std::fs::read_dir(out_dir).map_err(io_err(format!("list {}", out_dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("list {}", out_dir.display())))?;
        let name = entry.file_name();
        if ![KERNEL_FILE, INITRAMFS_FILE, MANIFEST_FILE]
            .iter()
            .any(|ours| name == *ours)
        {
            return Err(RamdiskError::Output {
                path: out_dir.to_path_buf(),
                reason: format!(
                    "holds {:?}, which is not part of a RAM-disk: refusing to replace it",
                    name
                ),
            });
        }
    }
    Ok(())
}

/// Puts directory `built` at `out_dir` in one step: a rename if `out_dir` does not exist, else
/// an exchange (renameat2 RENAME_EXCHANGE), after which the old output sits at `built` for the
/// caller's work directory to remove.
pub fn install(built: &Path, out_dir: &Path) -> Result<()> {
    check_replaceable(out_dir)?;
    let exists = std::fs::symlink_metadata(out_dir).is_ok();
    let flags = if exists {
        RenameFlags::RENAME_EXCHANGE
    } else {
        RenameFlags::RENAME_NOREPLACE
    };
    renameat2(AT_FDCWD, built, AT_FDCWD, out_dir, flags).map_err(|errno| RamdiskError::Io {
        what: format!("move {} to {}", built.display(), out_dir.display()),
        source: std::io::Error::from(errno),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramdisk_dir(dir: &Path, marker: &str) {
        std::fs::create_dir_all(dir).unwrap();
        for name in [KERNEL_FILE, INITRAMFS_FILE, MANIFEST_FILE] {
            std::fs::write(dir.join(name), marker).unwrap();
        }
    }

    #[test]
    fn install_creates_then_swaps_the_output() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("ramdisk");
        let work = WorkDir::create(&out).unwrap();
        assert_eq!(work.path().parent().unwrap(), root.path());

        let first = work.path().join("first");
        ramdisk_dir(&first, "one");
        install(&first, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join(KERNEL_FILE)).unwrap(),
            "one"
        );
        assert!(!first.exists());

        let second = work.path().join("second");
        ramdisk_dir(&second, "two");
        install(&second, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join(INITRAMFS_FILE)).unwrap(),
            "two"
        );
        // The old output is now in the work directory, which goes away with it.
        assert_eq!(
            std::fs::read_to_string(second.join(KERNEL_FILE)).unwrap(),
            "one"
        );
        let work_path = work.path().to_path_buf();
        drop(work);
        assert!(!work_path.exists());
    }

    #[test]
    fn a_directory_with_other_files_is_not_replaced() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("assets");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("undionly.kpxe"), b"x").unwrap();
        let built = root.path().join("built");
        ramdisk_dir(&built, "new");
        let err = install(&built, &out).unwrap_err().to_string();
        assert!(err.contains("undionly.kpxe"), "{err}");
        assert!(out.join("undionly.kpxe").exists());

        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(check_replaceable(&file).is_err());
        assert!(check_replaceable(&root.path().join("absent")).is_ok());
    }
}
