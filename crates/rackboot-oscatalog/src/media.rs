//! A small read-only filesystem view of installation media, so detection and
//! import run unchanged on a directory tree and on an ISO image.
//!
//! Paths are relative to the media root, `/`-separated, without a leading `/`
//! (`""` is the root). Every name a backend returns has passed [`check_name`],
//! so joining names never leaves the root.

use std::fs;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::SourceKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
    },
    Dir,
    /// A symbolic link with its target as recorded on the media.
    Symlink {
        target: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
}

pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not found on the media")]
    NotFound { path: String },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{path}: not a regular file")]
    NotAFile { path: String },
    #[error(
        "unsafe file name {name:?} in directory {dir:?} (path traversal or invalid name refused)"
    )]
    UnsafeName { dir: String, name: String },
    #[error("file name in directory {dir:?} is not valid UTF-8")]
    NonUtf8Name { dir: String },
    #[error("corrupt ISO image: {0}")]
    CorruptIso(String),
    #[error("not an ISO 9660 image: {0}")]
    NotIso(String),
}

/// Read-only access to installation media.
pub trait MediaFs {
    fn source_kind(&self) -> SourceKind;
    /// Entries of the directory at `dir` (a path made of real directories,
    /// no symlinks: use [`lookup`] to resolve user paths).
    fn read_dir(&self, dir: &str) -> Result<Vec<Entry>, MediaError>;
    /// Opens the regular file at `path` (no symlinks in the path) for
    /// streaming reads.
    fn open(&self, path: &str) -> Result<Box<dyn ReadSeek + '_>, MediaError>;
    /// A hint shown when nothing recognisable is found (e.g. "UDF-only ISO").
    fn unknown_media_hint(&self) -> Option<String> {
        None
    }
}

/// Refuses names that could escape the root or break path joining.
pub fn check_name(dir: &str, name: &str) -> Result<(), MediaError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(MediaError::UnsafeName {
            dir: dir.to_string(),
            name: name.to_string(),
        });
    }
    Ok(())
}

pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Where a path leads inside the media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The canonical path (real names, no symlinks) and its entry.
    Found(String, Entry),
    Missing,
    /// Through `..` above the root, an absolute symlink, or a symlink loop.
    Escapes,
}

const MAX_SYMLINK_HOPS: usize = 40;

/// Resolves `path` component by component, following symlinks that stay
/// inside the media (absolute targets and `..` above the root count as
/// escaping). With `case_insensitive`, a component without an exact match
/// matches a unique entry differing only in ASCII case (media copied from
/// FAT or plain ISO 9660 names).
pub fn lookup(
    fs: &dyn MediaFs,
    path: &str,
    case_insensitive: bool,
) -> Result<Resolved, MediaError> {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut current: Vec<String> = Vec::new();
    let mut entry = Entry {
        name: String::new(),
        kind: EntryKind::Dir,
    };
    let mut hops = 0;
    while let Some(component) = pending.pop() {
        match component.as_str() {
            "." => continue,
            ".." => {
                if current.pop().is_none() {
                    return Ok(Resolved::Escapes);
                }
                entry = Entry {
                    name: current.last().cloned().unwrap_or_default(),
                    kind: EntryKind::Dir,
                };
                continue;
            }
            _ => {}
        }
        if entry.kind != EntryKind::Dir {
            return Ok(Resolved::Missing);
        }
        let dir = current.join("/");
        let entries = fs.read_dir(&dir)?;
        let found = entries.iter().find(|e| e.name == component).or_else(|| {
            if !case_insensitive {
                return None;
            }
            let mut matches = entries
                .iter()
                .filter(|e| e.name.eq_ignore_ascii_case(&component));
            let first = matches.next();
            if matches.next().is_some() {
                None
            } else {
                first
            }
        });
        let Some(found) = found else {
            return Ok(Resolved::Missing);
        };
        match &found.kind {
            EntryKind::Symlink { target } => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS || target.starts_with('/') {
                    return Ok(Resolved::Escapes);
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(str::to_string),
                );
                entry = Entry {
                    name: current.last().cloned().unwrap_or_default(),
                    kind: EntryKind::Dir,
                };
            }
            _ => {
                current.push(found.name.clone());
                entry = found.clone();
            }
        }
    }
    Ok(Resolved::Found(current.join("/"), entry))
}

/// Resolves `path` (case-insensitively) to a regular file; `None` when absent.
pub fn find_file(fs: &dyn MediaFs, path: &str) -> Result<Option<(String, u64)>, MediaError> {
    match lookup(fs, path, true)? {
        Resolved::Found(
            canonical,
            Entry {
                kind: EntryKind::File { size },
                ..
            },
        ) => Ok(Some((canonical, size))),
        _ => Ok(None),
    }
}

/// Reads a small file (at most `limit` bytes; longer files are an error).
pub fn read_small(fs: &dyn MediaFs, path: &str, limit: u64) -> Result<Option<Vec<u8>>, MediaError> {
    let Some((canonical, size)) = find_file(fs, path)? else {
        return Ok(None);
    };
    if size > limit {
        return Err(MediaError::Io {
            path: canonical,
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{size} bytes, more than the {limit} expected for a metadata file"),
            ),
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    fs.open(&canonical)?
        .take(limit)
        .read_to_end(&mut buf)
        .map_err(|source| MediaError::Io {
            path: canonical.clone(),
            source,
        })?;
    Ok(Some(buf))
}

/// A directory tree on the local filesystem.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirTree {
    root: PathBuf,
}

impl DirTree {
    pub fn new(root: &Path) -> Result<DirTree, MediaError> {
        let root = fs::canonicalize(root).map_err(|source| MediaError::Io {
            path: root.display().to_string(),
            source,
        })?;
        if !root.is_dir() {
            return Err(MediaError::NotADirectory {
                path: root.display().to_string(),
            });
        }
        Ok(DirTree { root })
    }

    fn local(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

impl MediaFs for DirTree {
    fn source_kind(&self) -> SourceKind {
        SourceKind::Tree
    }

    fn read_dir(&self, dir: &str) -> Result<Vec<Entry>, MediaError> {
        let io = |source| MediaError::Io {
            path: self.local(dir).display().to_string(),
            source,
        };
        let mut entries = Vec::new();
        for item in fs::read_dir(self.local(dir)).map_err(io)? {
            let item = item.map_err(io)?;
            let name = item
                .file_name()
                .into_string()
                .map_err(|_| MediaError::NonUtf8Name {
                    dir: dir.to_string(),
                })?;
            check_name(dir, &name)?;
            let meta = fs::symlink_metadata(item.path()).map_err(io)?;
            let kind = if meta.file_type().is_symlink() {
                let target = fs::read_link(item.path()).map_err(io)?;
                EntryKind::Symlink {
                    target: target.to_string_lossy().into_owned(),
                }
            } else if meta.is_dir() {
                EntryKind::Dir
            } else if meta.is_file() {
                EntryKind::File { size: meta.len() }
            } else {
                // Sockets, fifos and devices are not installation media content.
                continue;
            };
            entries.push(Entry { name, kind });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn open(&self, path: &str) -> Result<Box<dyn ReadSeek + '_>, MediaError> {
        let file = fs::File::open(self.local(path)).map_err(|source| MediaError::Io {
            path: path.to_string(),
            source,
        })?;
        Ok(Box::new(file))
    }
}
