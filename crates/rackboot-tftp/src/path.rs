//! Request paths: normalisation and confinement to the served directories.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::TftpError;

/// Why a path was refused. Maps to TFTP ERROR 1 or 2.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("file not found")]
    NotFound,
    #[error("access violation: {0}")]
    AccessViolation(&'static str),
    /// A FIFO, socket or device in a served tree: never opened for reading,
    /// so it cannot hold a transfer (a FIFO's open blocks until a writer comes).
    #[error("access violation: not a regular file")]
    NotRegular,
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Normalises a requested filename: leading '/' and empty or `.` components are
/// dropped; any `..` component is refused (never resolved), so nothing in the
/// string can climb out of a served directory. Returns e.g. `pxelinux.cfg/default`.
pub fn normalize(raw: &str) -> Result<String, OpenError> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(OpenError::AccessViolation("'..' in path")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(OpenError::NotFound);
    }
    Ok(parts.join("/"))
}

/// Resolves normalised paths to open files: exact `files`, then `dirs` prefixes
/// (longest first), then `root`.
#[derive(Debug)]
pub struct Resolver {
    root: Option<PathBuf>,
    files: BTreeMap<String, PathBuf>,
    /// (normalised prefix, canonical directory), longest prefix first.
    dirs: Vec<(String, PathBuf)>,
}

fn canonical_dir(path: &Path, what: &str) -> Result<PathBuf, TftpError> {
    let canon = path.canonicalize().map_err(|source| TftpError::Directory {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    if !canon.is_dir() {
        return Err(TftpError::Directory {
            what: what.to_string(),
            path: path.to_path_buf(),
            source: io::Error::other("not a directory"),
        });
    }
    Ok(canon)
}

impl Resolver {
    pub fn new(
        root: Option<&Path>,
        files: &BTreeMap<String, PathBuf>,
        dirs: &BTreeMap<String, PathBuf>,
    ) -> Result<Resolver, TftpError> {
        let root = root.map(|r| canonical_dir(r, "root")).transpose()?;
        let files = files
            .iter()
            .map(|(name, path)| {
                let name = normalize(name)
                    .map_err(|_| TftpError::Config(format!("invalid file name {name:?}")))?;
                Ok((name, path.clone()))
            })
            .collect::<Result<_, TftpError>>()?;
        let mut mounted = Vec::new();
        for (prefix, dir) in dirs {
            let prefix = normalize(prefix)
                .map_err(|_| TftpError::Config(format!("invalid dir prefix {prefix:?}")))?;
            mounted.push((
                prefix.clone(),
                canonical_dir(dir, &format!("dirs.{prefix}"))?,
            ));
        }
        mounted.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(Resolver {
            root,
            files,
            dirs: mounted,
        })
    }

    /// Opens `path` (already normalised) for reading. Blocking: call from
    /// `spawn_blocking`. Returns the file and its size.
    pub fn open(&self, path: &str) -> Result<(File, u64), OpenError> {
        if let Some(target) = self.files.get(path) {
            return open_regular(target, None);
        }
        for (prefix, dir) in &self.dirs {
            if let Some(rest) = path.strip_prefix(prefix.as_str())
                && let Some(rest) = rest.strip_prefix('/')
            {
                return open_confined(dir, rest);
            }
        }
        match &self.root {
            Some(root) => open_confined(root, path),
            None => Err(OpenError::NotFound),
        }
    }
}

/// Opens `rel` under the canonical directory `dir`. Symlinks are followed but the
/// final target must lie inside `dir`; the check is repeated on the opened file
/// descriptor so a symlink swapped in between cannot escape.
fn open_confined(dir: &Path, rel: &str) -> Result<(File, u64), OpenError> {
    let joined = dir.join(rel);
    let canon = match joined.canonicalize() {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::NotFound),
        // ENOTDIR: a component is a file ("file.bin/x").
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => {
            return Err(OpenError::NotFound);
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(OpenError::AccessViolation("permission denied"));
        }
        Err(source) => {
            return Err(OpenError::Io {
                path: joined,
                source,
            });
        }
    };
    if !canon.starts_with(dir) {
        return Err(OpenError::AccessViolation(
            "path resolves outside the served directory",
        ));
    }
    open_regular(&canon, Some(dir))
}

fn check_regular(meta: &std::fs::Metadata) -> Result<(), OpenError> {
    if meta.is_dir() {
        Err(OpenError::AccessViolation("not a regular file"))
    } else if !meta.is_file() {
        Err(OpenError::NotRegular)
    } else {
        Ok(())
    }
}

fn open_regular(path: &Path, confine_to: Option<&Path>) -> Result<(File, u64), OpenError> {
    // A first look by path keeps devices from being opened at all (opening a
    // tape or a terminal has effects); the check that counts is on the
    // opened descriptor below, so a file swapped in between is caught too.
    if let Ok(meta) = std::fs::metadata(path) {
        check_regular(&meta)?;
    }
    // O_NONBLOCK: opening a FIFO for reading does not wait for a writer.
    // O_NOCTTY: a terminal never becomes the process's controlling terminal.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::NotFound),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(OpenError::AccessViolation("permission denied"));
        }
        Err(source) => {
            return Err(OpenError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if let Some(dir) = confine_to {
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(
            |source| OpenError::Io {
                path: path.to_path_buf(),
                source,
            },
        )?;
        if !opened.starts_with(dir) {
            return Err(OpenError::AccessViolation(
                "path resolves outside the served directory",
            ));
        }
    }
    let meta = file.metadata().map_err(|source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    check_regular(&meta)?;
    // Reads of a regular file never block on O_NONBLOCK; clear it anyway so
    // the descriptor behaves like any other file.
    let flags =
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| OpenError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| OpenError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_table() {
        let table: &[(&str, Option<&str>)] = &[
            ("pxelinux.0", Some("pxelinux.0")),
            ("/pxelinux.0", Some("pxelinux.0")),
            ("//a//b/./c", Some("a/b/c")),
            ("/etc/passwd", Some("etc/passwd")),
            ("../etc/passwd", None),
            ("a/../../x", None),
            ("a/..", None),
            ("..", None),
            ("/", None),
            ("", None),
            ("a\\..\\b", Some("a\\..\\b")),
        ];
        for (raw, expected) in table {
            assert_eq!(normalize(raw).ok().as_deref(), *expected, "{raw}");
        }
    }

    #[test]
    fn confinement() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let mount = tmp.path().join("mount");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::write(tmp.path().join("secret"), b"secret").unwrap();
        std::fs::write(root.join("sub/f"), b"ok").unwrap();
        std::fs::write(mount.join("m.c32"), b"m").unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("inside")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("outside")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join("updir")).unwrap();
        let files = [("/single.bin".to_string(), tmp.path().join("secret"))].into();
        let dirs = [("syslinux".to_string(), mount.clone())].into();
        let r = Resolver::new(Some(&root), &files, &dirs).unwrap();
        let ok = |p: &str| r.open(p).map(|(_, len)| len).ok();
        assert_eq!(ok("sub/f"), Some(2));
        assert_eq!(ok("inside"), Some(2));
        assert_eq!(ok("single.bin"), Some(6));
        assert_eq!(ok("syslinux/m.c32"), Some(1));
        assert!(matches!(
            r.open("outside"),
            Err(OpenError::AccessViolation(_))
        ));
        assert!(matches!(
            r.open("updir/secret"),
            Err(OpenError::AccessViolation(_))
        ));
        assert!(matches!(r.open("sub"), Err(OpenError::AccessViolation(_))));
        assert!(matches!(r.open("missing"), Err(OpenError::NotFound)));
        assert!(matches!(r.open("sub/f/x"), Err(OpenError::NotFound)));
        assert!(matches!(
            r.open("syslinux/../secret"),
            Err(OpenError::AccessViolation(_))
        ));
        assert!(matches!(r.open("syslinux"), Err(OpenError::NotFound)));
        // A FIFO (no writer: a blocking open would wait forever), a socket,
        // a symlink to a device: refused without blocking.
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRUSR).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
        std::os::unix::fs::symlink("/dev/null", mount.join("null")).unwrap();
        let fifo_files = [("/fifo.bin".to_string(), root.join("fifo"))].into();
        let r = Resolver::new(Some(&root), &fifo_files, &dirs).unwrap();
        assert!(matches!(r.open("fifo"), Err(OpenError::NotRegular)));
        assert!(matches!(r.open("fifo.bin"), Err(OpenError::NotRegular)));
        assert!(matches!(r.open("socket"), Err(OpenError::NotRegular)));
        // /dev/null is outside the mount: confinement says so first.
        assert!(r.open("syslinux/null").is_err());
    }

    #[test]
    fn open_regular_refuses_fifos_and_devices_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR).unwrap();
        assert!(matches!(
            open_regular(&fifo, None),
            Err(OpenError::NotRegular)
        ));
        assert!(matches!(
            open_regular(Path::new("/dev/null"), None),
            Err(OpenError::NotRegular)
        ));
    }
}
