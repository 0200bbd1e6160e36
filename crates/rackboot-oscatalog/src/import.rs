//! The on-disk catalog: `catalog_dir/<id>/` holds one imported tree and its
//! `.rackboot-os.json`. Imports extract into a temporary directory inside
//! `catalog_dir` and rename it into place, so a tree is either complete or
//! absent.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::detect::{DetectError, detect, open_media};
use crate::media::{DirTree, EntryKind, MediaError, MediaFs, Resolved, join, lookup};
use crate::{OsRelease, SourceKind};

/// The metadata file inside each imported tree.
pub const METADATA_FILE: &str = ".rackboot-os.json";
const TEMP_PREFIX: &str = ".importing-";
const DELETE_PREFIX: &str = ".deleting-";
const COPY_CHUNK: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportPhase {
    /// Reading the media's metadata.
    Detecting,
    Copying,
    /// Re-checking the copy and renaming it into place.
    Finishing,
    Done,
}

/// Progress of an import, reported per file and about every MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportProgress {
    pub phase: ImportPhase,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u64,
    pub files_total: u64,
    /// The file being copied, relative to the tree root.
    pub current: Option<PathBuf>,
}

/// What `catalog_dir/<id>/.rackboot-os.json` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub release: OsRelease,
    /// Absolute path of the imported tree.
    #[serde(skip)]
    pub path: PathBuf,
    pub source: PathBuf,
    pub imported_at_unix: u64,
    pub files: u64,
    pub bytes: u64,
    /// Symlinks not copied because they point outside the tree (or nowhere).
    pub skipped_symlinks: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("{id} is already imported at {path}; delete it first")]
    AlreadyImported { id: String, path: PathBuf },
    #[error("{id} is not in the catalog at {catalog}")]
    NotFound { id: String, catalog: PathBuf },
    #[error("invalid OS id {0:?}")]
    InvalidId(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: metadata unreadable: {source}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the catalog {catalog} lies inside the source tree {tree}: the copy would include itself"
    )]
    CatalogInsideSource { tree: PathBuf, catalog: PathBuf },
    #[error("the copy at {path} does not detect as the source did: {reason}")]
    Verify { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes the temporary directory unless the import completed.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

struct Copy<'a> {
    media: &'a dyn MediaFs,
    dest: &'a Path,
    progress: &'a dyn Fn(ImportProgress),
    bytes_total: u64,
    files_total: u64,
    bytes_done: u64,
    files_done: u64,
    skipped_symlinks: Vec<String>,
    buf: Vec<u8>,
}

/// Sums the regular files under `dir`.
fn totals(media: &dyn MediaFs, dir: &str) -> Result<(u64, u64), MediaError> {
    let (mut bytes, mut files) = (0, 0);
    for entry in media.read_dir(dir)? {
        match entry.kind {
            EntryKind::File { size } => {
                bytes += size;
                files += 1;
            }
            EntryKind::Dir => {
                let (b, f) = totals(media, &join(dir, &entry.name))?;
                bytes += b;
                files += f;
            }
            EntryKind::Symlink { .. } => {}
        }
    }
    Ok((bytes, files))
}

impl Copy<'_> {
    fn report(&self, phase: ImportPhase, current: Option<&str>) {
        (self.progress)(ImportProgress {
            phase,
            bytes_done: self.bytes_done,
            bytes_total: self.bytes_total,
            files_done: self.files_done,
            files_total: self.files_total,
            current: current.map(PathBuf::from),
        });
    }

    fn dir(&mut self, dir: &str) -> Result<(), ImportError> {
        let target = self.dest.join(dir);
        fs::create_dir_all(&target).map_err(io_err(&target))?;
        for entry in self.media.read_dir(dir)? {
            let path = join(dir, &entry.name);
            match entry.kind {
                EntryKind::Dir => self.dir(&path)?,
                EntryKind::File { size } => self.file(&path, size)?,
                EntryKind::Symlink { target } => self.symlink(dir, &path, &target)?,
            }
        }
        Ok(())
    }

    fn file(&mut self, path: &str, size: u64) -> Result<(), ImportError> {
        self.report(ImportPhase::Copying, Some(path));
        let mut input = self.media.open(path)?;
        let out_path = self.dest.join(path);
        let mut out = fs::File::create(&out_path).map_err(io_err(&out_path))?;
        let mut copied = 0u64;
        let mut since_report = 0usize;
        loop {
            let n = input.read(&mut self.buf).map_err(|source| MediaError::Io {
                path: path.to_string(),
                source,
            })?;
            if n == 0 {
                break;
            }
            out.write_all(&self.buf[..n]).map_err(io_err(&out_path))?;
            copied += n as u64;
            self.bytes_done += n as u64;
            since_report += n;
            if since_report >= COPY_CHUNK {
                since_report = 0;
                self.report(ImportPhase::Copying, Some(path));
            }
        }
        if copied != size {
            return Err(MediaError::Io {
                path: path.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("read {copied} of {size} bytes"),
                ),
            }
            .into());
        }
        out.sync_all().map_err(io_err(&out_path))?;
        self.files_done += 1;
        Ok(())
    }

    /// Recreates a symlink whose target resolves inside the tree, pointing
    /// at the target's canonical (symlink-free) path, so following it can
    /// never leave the copy. Others are skipped and counted.
    fn symlink(&mut self, dir: &str, path: &str, target: &str) -> Result<(), ImportError> {
        let resolved = if target.starts_with('/') {
            Resolved::Escapes
        } else {
            lookup(self.media, &join(dir, target), false)?
        };
        let Resolved::Found(canonical, _) = resolved else {
            tracing::warn!(
                link = path,
                target,
                "symlink points outside the tree or nowhere; not copied"
            );
            self.skipped_symlinks.push(path.to_string());
            return Ok(());
        };
        let depth = dir.split('/').filter(|c| !c.is_empty()).count();
        let relative = format!("{}{}", "../".repeat(depth), canonical);
        let relative = if relative.is_empty() {
            ".".to_string()
        } else {
            relative
        };
        let link = self.dest.join(path);
        std::os::unix::fs::symlink(&relative, &link).map_err(io_err(&link))?;
        Ok(())
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Imports the tree or ISO at `source` into `catalog_dir/<id>/`.
pub fn import(
    source: &Path,
    catalog_dir: &Path,
    progress: &dyn Fn(ImportProgress),
) -> Result<OsRelease, ImportError> {
    progress(ImportProgress {
        phase: ImportPhase::Detecting,
        bytes_done: 0,
        bytes_total: 0,
        files_done: 0,
        files_total: 0,
        current: None,
    });
    let media = open_media(source)?;
    let release = detect(media.as_ref())?;
    let final_path = catalog_dir.join(&release.id);
    if final_path.exists() {
        return Err(ImportError::AlreadyImported {
            id: release.id,
            path: final_path,
        });
    }
    fs::create_dir_all(catalog_dir).map_err(io_err(catalog_dir))?;
    if media.source_kind() == SourceKind::Tree {
        let source = fs::canonicalize(source).map_err(io_err(source))?;
        let catalog = fs::canonicalize(catalog_dir).map_err(io_err(catalog_dir))?;
        if catalog.starts_with(&source) {
            return Err(ImportError::CatalogInsideSource {
                tree: source,
                catalog,
            });
        }
    }
    let mut temp = TempDir {
        path: catalog_dir.join(format!(
            "{TEMP_PREFIX}{}-{}-{}",
            release.id,
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        )),
        keep: false,
    };
    fs::create_dir(&temp.path).map_err(io_err(&temp.path))?;

    let (bytes_total, files_total) = totals(media.as_ref(), "")?;
    let mut copy = Copy {
        media: media.as_ref(),
        dest: &temp.path,
        progress,
        bytes_total,
        files_total,
        bytes_done: 0,
        files_done: 0,
        skipped_symlinks: Vec::new(),
        buf: vec![0u8; COPY_CHUNK],
    };
    copy.dir("")?;
    copy.report(ImportPhase::Finishing, None);

    // The served copy must say the same thing as the source.
    let copied = detect(&DirTree::new(&temp.path)?)?;
    let expected = OsRelease {
        source_kind: SourceKind::Tree,
        ..release.clone()
    };
    if copied != expected {
        return Err(ImportError::Verify {
            path: temp.path.clone(),
            reason: format!("source {expected:?}, copy {copied:?}"),
        });
    }

    let entry = CatalogEntry {
        release: release.clone(),
        path: final_path.clone(),
        source: fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf()),
        imported_at_unix: now_unix(),
        files: copy.files_done,
        bytes: copy.bytes_done,
        skipped_symlinks: copy.skipped_symlinks.clone(),
    };
    let meta_path = temp.path.join(METADATA_FILE);
    let json = serde_json::to_vec_pretty(&entry).map_err(|source| ImportError::Metadata {
        path: meta_path.clone(),
        source,
    })?;
    fs::write(&meta_path, json).map_err(io_err(&meta_path))?;

    // rename(2) refuses a non-empty target, so a concurrent import of the
    // same id loses cleanly instead of mixing trees.
    match fs::rename(&temp.path, &final_path) {
        Ok(()) => temp.keep = true,
        Err(_) if final_path.exists() => {
            return Err(ImportError::AlreadyImported {
                id: release.id,
                path: final_path,
            });
        }
        Err(e) => return Err(io_err(&final_path)(e)),
    }
    if let Ok(dir) = fs::File::open(catalog_dir) {
        let _ = dir.sync_all();
    }
    progress(ImportProgress {
        phase: ImportPhase::Done,
        bytes_done: copy.bytes_done,
        bytes_total,
        files_done: copy.files_done,
        files_total,
        current: None,
    });
    Ok(release)
}

fn read_entry(dir: &Path) -> Result<Option<CatalogEntry>, ImportError> {
    let meta_path = dir.join(METADATA_FILE);
    let bytes = match fs::read(&meta_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&meta_path)(e)),
    };
    let mut entry: CatalogEntry =
        serde_json::from_slice(&bytes).map_err(|source| ImportError::Metadata {
            path: meta_path,
            source,
        })?;
    entry.path = dir.to_path_buf();
    Ok(Some(entry))
}

/// Imported OSes, sorted by id. Directories without metadata (and imports
/// in progress) are not catalog entries and are left out.
pub fn list(catalog_dir: &Path) -> Result<Vec<CatalogEntry>, ImportError> {
    let items = match fs::read_dir(catalog_dir) {
        Ok(items) => items,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(catalog_dir)(e)),
    };
    let mut entries = Vec::new();
    for item in items {
        let item = item.map_err(io_err(catalog_dir))?;
        let name = item.file_name();
        if name.to_string_lossy().starts_with('.') || !item.path().is_dir() {
            continue;
        }
        if let Some(entry) = read_entry(&item.path())? {
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| a.release.id.cmp(&b.release.id));
    Ok(entries)
}

/// Removes an imported OS. The tree is first renamed aside so it disappears
/// from the catalog at once, then deleted.
pub fn delete(catalog_dir: &Path, id: &str) -> Result<(), ImportError> {
    if id.is_empty() || id.starts_with('.') || id.contains('/') || id.contains('\0') {
        return Err(ImportError::InvalidId(id.to_string()));
    }
    let path = catalog_dir.join(id);
    if read_entry(&path)?.is_none() {
        return Err(ImportError::NotFound {
            id: id.to_string(),
            catalog: catalog_dir.to_path_buf(),
        });
    }
    let aside = catalog_dir.join(format!("{DELETE_PREFIX}{id}-{}", std::process::id()));
    fs::rename(&path, &aside).map_err(io_err(&path))?;
    fs::remove_dir_all(&aside).map_err(io_err(&aside))?;
    Ok(())
}
