//! The RAM-disk's file tree in memory and its serialisation as a "newc" cpio archive (the format
//! the kernel unpacks as an initramfs).
//!
//! Paths are relative (`bin/sh`). Adding an entry creates its missing parent directories, and the
//! archive lists entries in path order, so every parent precedes its children (the kernel's
//! unpacker does not create directories by itself). Owners are root and mtimes 0, so the same
//! inputs give the same archive byte for byte.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::{RamdiskError, Result, io_err};

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileData {
    /// Generated content (scripts, configuration).
    Inline(Vec<u8>),
    /// A file on the build host, read when the archive is written (modules and binaries would
    /// otherwise sit in memory twice). `size` is its length when it was added; a file that
    /// changes size in between is an error.
    Host { path: PathBuf, size: u64 },
}

impl FileData {
    pub fn size(&self) -> u64 {
        match self {
            FileData::Inline(data) => data.len() as u64,
            FileData::Host { size, .. } => *size,
        }
    }
}

/// One member of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: FileData },
    Symlink { target: String },
    CharDevice { mode: u32, major: u32, minor: u32 },
}

/// The initramfs contents: relative path → node, kept sorted.
#[derive(Debug, Default, Clone)]
pub struct RootFs {
    entries: BTreeMap<String, Node>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFMT: u32 = 0o170000;

/// `/usr/bin/x`, `usr/bin/x/` → `usr/bin/x`; rejects empty paths and `.`/`..` components, which
/// would let an entry land outside the tree or twice under different names.
pub fn normalize(path: &str) -> Result<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(RamdiskError::Layout {
            path: path.to_string(),
            reason: "not a plain absolute or relative path".into(),
        });
    }
    Ok(parts.join("/"))
}

fn parent_of(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

impl RootFs {
    pub fn new() -> RootFs {
        RootFs::default()
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        normalize(path).ok().and_then(|p| self.entries.get(&p))
    }

    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// Every entry in archive order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(p, n)| (p.as_str(), n))
    }

    /// Adds a directory (and its parents); an existing directory keeps its mode.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let path = normalize(path)?;
        self.make_parents(&path)?;
        match self.entries.get(&path) {
            Some(Node::Dir { .. }) => Ok(()),
            Some(_) => Err(conflict(&path, "a directory")),
            None => {
                self.entries.insert(path, Node::Dir { mode });
                Ok(())
            }
        }
    }

    /// Adds a regular file; an existing entry at `path` is an error (two sources for one file).
    pub fn file(&mut self, path: &str, mode: u32, data: FileData) -> Result<()> {
        self.insert_new(path, Node::File { mode, data })
    }

    /// Adds a file copied from the build host (its length is taken now).
    pub fn host_file(&mut self, path: &str, mode: u32, source: &Path) -> Result<()> {
        let size = std::fs::metadata(source)
            .map_err(io_err(format!("stat {}", source.display())))?
            .len();
        self.file(
            path,
            mode,
            FileData::Host {
                path: source.to_path_buf(),
                size,
            },
        )
    }

    /// Adds a symbolic link; `target` is stored as given (relative targets resolve from the
    /// link's directory).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.insert_new(
            path,
            Node::Symlink {
                target: target.to_string(),
            },
        )
    }

    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.insert_new(path, Node::CharDevice { mode, major, minor })
    }

    fn insert_new(&mut self, path: &str, node: Node) -> Result<()> {
        let path = normalize(path)?;
        self.make_parents(&path)?;
        if self.entries.contains_key(&path) {
            return Err(conflict(&path, "a new entry"));
        }
        self.entries.insert(path, node);
        Ok(())
    }

    fn make_parents(&mut self, path: &str) -> Result<()> {
        let mut ancestors = Vec::new();
        let mut at = parent_of(path);
        while let Some(dir) = at {
            match self.entries.get(dir) {
                Some(Node::Dir { .. }) => break,
                // A parent that is a symlink (e.g. `sbin -> bin`) would make the kernel's unpacker
                // write through it; every path must name its real location.
                Some(_) => return Err(conflict(dir, "a parent directory")),
                None => ancestors.push(dir.to_string()),
            }
            at = parent_of(dir);
        }
        for dir in ancestors {
            self.entries.insert(dir, Node::Dir { mode: 0o755 });
        }
        Ok(())
    }

    /// Resolves `path` inside the tree, following symlinks (at most 40, like the kernel);
    /// returns the final path if it exists.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut pending: Vec<String> = normalize(path)
            .ok()?
            .split('/')
            .rev()
            .map(str::to_string)
            .collect();
        let mut current: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            match part.as_str() {
                "." | "" => continue,
                ".." => {
                    current.pop();
                    continue;
                }
                _ => {}
            }
            current.push(part);
            let joined = current.join("/");
            // A missing component ends the walk (`?`); a symlink is replaced by its target.
            if let Node::Symlink { target } = self.entries.get(&joined)? {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                current.pop();
                if target.starts_with('/') {
                    current.clear();
                }
                pending.extend(target.split('/').rev().map(str::to_string));
            }
        }
        Some(current.join("/"))
    }

    /// Checks what the kernel and the programs inside will rely on: every symlink resolves to
    /// an entry of the tree. Returns the first problem.
    pub fn check_links(&self) -> Result<()> {
        for (path, node) in &self.entries {
            if let Node::Symlink { target } = node
                && self.resolve(path).is_none()
            {
                return Err(RamdiskError::Layout {
                    path: path.clone(),
                    reason: format!("symlink to {target} leads nowhere in the RAM-disk"),
                });
            }
        }
        Ok(())
    }

    /// Total bytes of regular files (what the unpacked RAM-disk occupies, roughly).
    pub fn content_size(&self) -> u64 {
        self.entries
            .values()
            .map(|n| match n {
                Node::File { data, .. } => data.size(),
                _ => 0,
            })
            .sum()
    }

    /// Writes the tree as a newc cpio archive; returns the bytes written.
    pub fn write_newc(&self, out: &mut impl Write) -> Result<u64> {
        let mut written = 0u64;
        let archive_err = |what: &str| io_err(format!("write cpio member {what}"));
        for (i, (path, node)) in self.entries.iter().enumerate() {
            let ino = i as u32 + 1;
            let (mode, nlink, rdev) = match node {
                Node::Dir { mode } => (S_IFDIR | mode, 2, (0, 0)),
                Node::File { mode, .. } => (S_IFREG | mode, 1, (0, 0)),
                Node::Symlink { .. } => (S_IFLNK | 0o777, 1, (0, 0)),
                Node::CharDevice { mode, major, minor } => (S_IFCHR | mode, 1, (*major, *minor)),
            };
            let size = match node {
                Node::File { data, .. } => data.size(),
                Node::Symlink { target } => target.len() as u64,
                _ => 0,
            };
            let size32 = u32::try_from(size).map_err(|_| RamdiskError::Layout {
                path: path.clone(),
                reason: format!("{size} bytes is too large for a newc archive (4 GiB)"),
            })?;
            let header = newc_header(ino, mode, nlink, size32, rdev, path.len() + 1);
            out.write_all(&header).map_err(archive_err(path))?;
            out.write_all(path.as_bytes()).map_err(archive_err(path))?;
            let name_pad = pad4(header.len() + path.len() + 1);
            out.write_all(&[0; 4][..1 + name_pad])
                .map_err(archive_err(path))?;
            written += (header.len() + path.len() + 1 + name_pad) as u64;
            match node {
                Node::File {
                    data: FileData::Inline(data),
                    ..
                } => out.write_all(data).map_err(archive_err(path))?,
                Node::File {
                    data: FileData::Host { path: source, size },
                    ..
                } => copy_host_file(source, *size, out)?,
                Node::Symlink { target } => out
                    .write_all(target.as_bytes())
                    .map_err(archive_err(path))?,
                _ => {}
            }
            let data_pad = pad4(size as usize);
            out.write_all(&[0; 3][..data_pad])
                .map_err(archive_err(path))?;
            written += size + data_pad as u64;
        }
        let trailer = "TRAILER!!!";
        let header = newc_header(0, 0, 1, 0, (0, 0), trailer.len() + 1);
        let name_pad = pad4(header.len() + trailer.len() + 1);
        out.write_all(&header)
            .and_then(|()| out.write_all(trailer.as_bytes()))
            .and_then(|()| out.write_all(&[0; 4][..1 + name_pad]))
            .map_err(archive_err(trailer))?;
        written += (header.len() + trailer.len() + 1 + name_pad) as u64;
        // Not needed by the kernel; cpio tools expect whole 512-byte blocks.
        let block_pad = (512 - written % 512) % 512;
        out.write_all(&vec![0; block_pad as usize])
            .map_err(archive_err(trailer))?;
        Ok(written + block_pad)
    }
}

fn conflict(path: &str, wanted: &str) -> RamdiskError {
    RamdiskError::Layout {
        path: path.to_string(),
        reason: format!("already holds another entry; wanted {wanted}"),
    }
}

/// Bytes needed to bring `len` to a multiple of 4.
fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn newc_header(
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    (rdev_major, rdev_minor): (u32, u32),
    name_size: usize,
) -> Vec<u8> {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        size,
        0, // devmajor
        0, // devminor
        rdev_major,
        rdev_minor,
        name_size as u32,
        0, // check
    ];
    let mut header = String::with_capacity(110);
    header.push_str("070701");
    for field in fields {
        header.push_str(&format!("{field:08x}"));
    }
    header.into_bytes()
}

fn copy_host_file(source: &Path, size: u64, out: &mut impl Write) -> Result<()> {
    let file = std::fs::File::open(source).map_err(io_err(format!("open {}", source.display())))?;
    let copied = std::io::copy(&mut file.take(size + 1), out).map_err(io_err(format!(
        "copy {} into the archive",
        source.display()
    )))?;
    if copied != size {
        return Err(RamdiskError::Layout {
            path: source.display().to_string(),
            reason: format!("changed size while building ({size} bytes, now {copied})"),
        });
    }
    Ok(())
}

/// One member read back from a newc archive (for tests and inspection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioMember {
    pub path: String,
    /// File type and permission bits (`st_mode`).
    pub mode: u32,
    pub data: Vec<u8>,
    pub rdev: (u32, u32),
}

impl CpioMember {
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
    pub fn is_char_device(&self) -> bool {
        self.mode & S_IFMT == S_IFCHR
    }
    /// Permission bits only.
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// Parses an uncompressed newc archive up to its trailer.
pub fn read_newc(archive: &[u8]) -> Result<Vec<CpioMember>> {
    let bad = |at: usize, reason: &str| RamdiskError::Layout {
        path: format!("cpio archive offset {at}"),
        reason: reason.to_string(),
    };
    let mut members = Vec::new();
    let mut at = 0usize;
    loop {
        let header = archive
            .get(at..at + 110)
            .ok_or_else(|| bad(at, "truncated header"))?;
        if &header[..6] != b"070701" {
            return Err(bad(at, "not a newc header"));
        }
        let field = |i: usize| -> Result<u32> {
            let hex = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .map_err(|_| bad(at, "header is not ASCII"))?;
            u32::from_str_radix(hex, 16).map_err(|_| bad(at, "header field is not hex"))
        };
        let mode = field(1)?;
        let size = field(6)? as usize;
        let rdev = (field(9)?, field(10)?);
        let name_size = field(11)? as usize;
        let name_end = at + 110 + name_size;
        let name = archive
            .get(at + 110..name_end - 1)
            .ok_or_else(|| bad(at, "truncated name"))?;
        let path = String::from_utf8(name.to_vec()).map_err(|_| bad(at, "name is not UTF-8"))?;
        let data_start = name_end + pad4(110 + name_size);
        let data = archive
            .get(data_start..data_start + size)
            .ok_or_else(|| bad(at, "truncated data"))?
            .to_vec();
        at = data_start + size + pad4(size);
        if path == "TRAILER!!!" {
            return Ok(members);
        }
        members.push(CpioMember {
            path,
            mode,
            data,
            rdev,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_escapes_rejected() {
        assert_eq!(normalize("/usr/bin/x").unwrap(), "usr/bin/x");
        assert_eq!(normalize("bin//sh/").unwrap(), "bin/sh");
        for bad in ["", "/", "../etc", "bin/../../x", "./init"] {
            assert!(normalize(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn adding_a_file_creates_its_parents_in_archive_order() {
        let mut fs = RootFs::new();
        fs.file(
            "lib/modules/6.1/kernel/a.ko",
            0o644,
            FileData::Inline(b"x".to_vec()),
        )
        .unwrap();
        let paths: Vec<&str> = fs.entries().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "lib",
                "lib/modules",
                "lib/modules/6.1",
                "lib/modules/6.1/kernel",
                "lib/modules/6.1/kernel/a.ko"
            ]
        );
    }

    #[test]
    fn conflicting_entries_are_errors() {
        let mut fs = RootFs::new();
        fs.symlink("sbin", "bin").unwrap();
        assert!(fs.file("sbin/x", 0o755, FileData::Inline(vec![])).is_err());
        fs.file("bin/x", 0o755, FileData::Inline(vec![])).unwrap();
        assert!(fs.symlink("bin/x", "busybox").is_err());
        assert!(fs.dir("bin/x", 0o755).is_err());
        fs.dir("bin", 0o700).unwrap();
        assert_eq!(fs.get("bin"), Some(&Node::Dir { mode: 0o755 }));
    }

    #[test]
    fn symlinks_resolve_inside_the_tree() {
        let mut fs = RootFs::new();
        fs.file("bin/busybox", 0o755, FileData::Inline(vec![]))
            .unwrap();
        fs.symlink("bin/sh", "busybox").unwrap();
        fs.symlink("sbin", "bin").unwrap();
        fs.symlink("usr/bin", "../bin").unwrap();
        fs.symlink("lib64/ld.so", "/bin/busybox").unwrap();
        fs.symlink("bin/dangling", "nothing").unwrap();
        fs.symlink("loop", "loop").unwrap();
        assert_eq!(fs.resolve("/sbin/sh").as_deref(), Some("bin/busybox"));
        assert_eq!(fs.resolve("usr/bin/sh").as_deref(), Some("bin/busybox"));
        assert_eq!(fs.resolve("lib64/ld.so").as_deref(), Some("bin/busybox"));
        assert_eq!(fs.resolve("bin/dangling"), None);
        assert_eq!(fs.resolve("loop"), None);
        let err = fs.check_links().unwrap_err().to_string();
        assert!(err.contains("bin/dangling"), "{err}");
    }

    #[test]
    fn newc_header_layout_matches_the_format() {
        let mut fs = RootFs::new();
        fs.file("init", 0o755, FileData::Inline(b"hello".to_vec()))
            .unwrap();
        let mut out = Vec::new();
        let written = fs.write_newc(&mut out).unwrap();
        assert_eq!(written as usize, out.len());
        assert_eq!(
            std::str::from_utf8(&out[..110]).unwrap(),
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
        assert_eq!(&out[124 + 110..124 + 121], b"TRAILER!!!\0");
        assert_eq!(out.len() % 512, 0);
    }

    #[test]
    fn archive_reads_back_and_gnu_cpio_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("module.ko");
        std::fs::write(&host, b"\x7fELF module bytes").unwrap();
        let mut fs = RootFs::new();
        fs.host_file("lib/modules/v/m.ko", 0o644, &host).unwrap();
        fs.file("init", 0o755, FileData::Inline(b"#!/bin/sh\n".to_vec()))
            .unwrap();
        fs.symlink("bin/sh", "busybox").unwrap();
        fs.char_device("dev/console", 0o600, 5, 1).unwrap();
        let mut out = Vec::new();
        fs.write_newc(&mut out).unwrap();

        let members = read_newc(&out).unwrap();
        let names: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/v",
                "lib/modules/v/m.ko"
            ]
        );
        let module = members.last().unwrap();
        assert!(module.is_file());
        assert_eq!(module.data, b"\x7fELF module bytes");
        assert!(members[1].is_symlink() && members[1].data == b"busybox");
        assert!(members[3].is_char_device() && members[3].rdev == (5, 1));
        assert_eq!(members[4].permissions(), 0o755);

        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, &out).unwrap();
        let listing = std::process::Command::new("cpio")
            .args(["-itv", "--quiet", "-F"])
            .arg(&archive)
            .output()
            .expect("cpio is installed (apt-get install cpio)");
        assert!(listing.status.success(), "{listing:?}");
        let text = String::from_utf8_lossy(&listing.stdout);
        assert_eq!(text.lines().count(), members.len(), "{text}");
        assert!(text.contains("bin/sh -> busybox"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")),
            "{text}"
        );
    }

    #[test]
    fn a_host_file_that_changed_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("f");
        std::fs::write(&host, b"short").unwrap();
        let mut fs = RootFs::new();
        fs.host_file("f", 0o644, &host).unwrap();
        std::fs::write(&host, b"much longer now").unwrap();
        let err = fs.write_newc(&mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("changed size"), "{err}");
    }
}
