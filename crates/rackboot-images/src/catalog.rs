//! The catalog directory: import, list, get, delete, verify.

use std::collections::hash_map::RandomState;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufReader, BufWriter, Cursor, Read};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::Utc;
use rackboot_agent_proto::ImageManifest;
use sha2::{Digest, Sha256};

use crate::detect::{Detected, HEAD_LEN, detect};
use crate::frame::{CheckError, StreamError, check_frames, frame_stream, read_full};
use crate::{
    DISK_FILE, ImageError, ImageRecord, ImportOptions, ImportPhase, ImportProgress, MANIFEST_FILE,
    RECORD_FILE, SourceFormat, Verified, hex, qcow2, validate_name,
};

/// Markers of hidden work directories: `.<name><marker><random>`.
const TEMP_MARKER: &str = ".tmp-";
const DELETING_MARKER: &str = ".deleting-";
const OLD_MARKER: &str = ".old-";
/// The qcow2 conversion's raw output, inside the temporary directory.
const CONVERTED_FILE: &str = "converted.raw";
const IO_BUFFER: usize = 1 << 20;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn unreadable(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Unreadable {
        path: path.to_path_buf(),
        source,
    }
}

/// A hard-to-guess suffix for work directories, without a dependency:
/// std's `RandomState` is seeded from the OS and differs per instance.
fn random_suffix() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// `<dir>/<name>`.
pub fn image_dir(dir: &Path, name: &str) -> Result<PathBuf, ImageError> {
    validate_name(name)?;
    Ok(dir.join(name))
}

/// `<dir>/<name>/disk.zst`, what the boot HTTP server serves (with Range).
pub fn disk_path(dir: &Path, name: &str) -> Result<PathBuf, ImageError> {
    Ok(image_dir(dir, name)?.join(DISK_FILE))
}

/// `<dir>/<name>/manifest.json`.
pub fn manifest_path(dir: &Path, name: &str) -> Result<PathBuf, ImageError> {
    Ok(image_dir(dir, name)?.join(MANIFEST_FILE))
}

/// Removes the work directory unless the import completed.
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

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut file = File::create(path).map_err(io_err(path))?;
    io::Write::write_all(&mut file, bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable; a failure only weakens crash safety.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Imports the disk image at `source` as `options.name`, converting it to
/// the streaming form. On any error nothing is left in `dir`.
pub fn import(
    dir: &Path,
    source: &Path,
    options: &ImportOptions,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<ImageRecord, ImageError> {
    let started = Instant::now();
    let name = options.name.as_str();
    let final_path = image_dir(dir, name)?;
    if !options.replace && final_path.exists() {
        return Err(ImageError::AlreadyExists {
            name: name.to_string(),
            path: final_path,
        });
    }

    let mut file = File::open(source).map_err(unreadable(source))?;
    let mut head = vec![0u8; HEAD_LEN];
    let n = read_full(&mut file, &mut head).map_err(unreadable(source))?;
    head.truncate(n);
    let detected = detect(&head);
    let Some(format) = detected.source_format() else {
        return Err(ImageError::Refused {
            path: source.to_path_buf(),
            detected,
        });
    };

    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let temp_path =
        std::path::absolute(dir.join(format!(".{name}{TEMP_MARKER}{}", random_suffix())))
            .map_err(io_err(dir))?;
    fs::create_dir(&temp_path).map_err(io_err(&temp_path))?;
    let mut temp = TempDir {
        path: temp_path,
        keep: false,
    };

    let disk_file_path = temp.path.join(DISK_FILE);
    let disk_file = File::create(&disk_file_path).map_err(io_err(&disk_file_path))?;
    let mut disk = BufWriter::with_capacity(IO_BUFFER, disk_file);
    let framing = Framing {
        disk_path: &disk_file_path,
        disk: &mut disk,
        progress,
    };
    let manifest = match format {
        SourceFormat::Qcow2 => {
            drop(file);
            let source_abs = fs::canonicalize(source).map_err(unreadable(source))?;
            let info = qcow2::info(&source_abs)?;
            qcow2::check(&source_abs)?;
            (framing.progress)(ImportProgress {
                phase: ImportPhase::Converting,
                raw_bytes: 0,
                raw_total: Some(info.virtual_size),
            });
            let converted = temp.path.join(CONVERTED_FILE);
            qcow2::convert_to_raw(&source_abs, &converted)?;
            let mut raw = File::open(&converted).map_err(io_err(&converted))?;
            let total = raw.metadata().map_err(io_err(&converted))?.len();
            let manifest = framing.run(&mut raw, Some(total), |e| io_err(&converted)(e))?;
            // Free the (possibly large) raw copy before the rename.
            drop(raw);
            fs::remove_file(&converted).map_err(io_err(&converted))?;
            manifest
        }
        SourceFormat::Raw => {
            let meta = file.metadata().map_err(unreadable(source))?;
            let total = meta.is_file().then_some(meta.len());
            let mut reader = Cursor::new(head).chain(file);
            framing.run(&mut reader, total, |e| unreadable(source)(e))?
        }
        SourceFormat::Zstd | SourceFormat::Xz | SourceFormat::Gzip => {
            let compressed = Cursor::new(head).chain(file);
            let corrupt = |e| ImageError::Decompress {
                path: source.to_path_buf(),
                format,
                source: e,
            };
            let mut decoder: Box<dyn Read> = match format {
                SourceFormat::Zstd => {
                    let mut d =
                        zstd::stream::read::Decoder::new(compressed).map_err(io_err(source))?;
                    // Images compressed with `zstd --long` need a larger
                    // window than the default limit (128 MiB).
                    d.window_log_max(31).map_err(corrupt)?;
                    Box::new(d)
                }
                SourceFormat::Xz => {
                    Box::new(liblzma::read::XzDecoder::new_multi_decoder(compressed))
                }
                _ => Box::new(flate2::read::MultiGzDecoder::new(compressed)),
            };
            let mut inner_head = vec![0u8; HEAD_LEN];
            let n = read_full(&mut decoder, &mut inner_head).map_err(corrupt)?;
            inner_head.truncate(n);
            match detect(&inner_head) {
                Detected::Format(SourceFormat::Raw) => {}
                Detected::Empty => {
                    return Err(ImageError::Refused {
                        path: source.to_path_buf(),
                        detected: Detected::Empty,
                    });
                }
                inner => {
                    return Err(ImageError::NestedFormat {
                        path: source.to_path_buf(),
                        format,
                        inner,
                    });
                }
            }
            let mut reader = Cursor::new(inner_head).chain(decoder);
            framing.run(&mut reader, None, corrupt)?
        }
    };
    let disk_file = disk
        .into_inner()
        .map_err(|e| io_err(&disk_file_path)(e.into_error()))?;
    disk_file.sync_all().map_err(io_err(&disk_file_path))?;
    drop(disk_file);
    if manifest.raw_size == 0 {
        return Err(ImageError::Refused {
            path: source.to_path_buf(),
            detected: Detected::Empty,
        });
    }
    manifest.validate().map_err(|e| ImageError::Manifest {
        path: disk_file_path.clone(),
        source: e,
    })?;

    let manifest_file = temp.path.join(MANIFEST_FILE);
    let manifest_json = serde_json::to_vec(&manifest).map_err(|e| ImageError::Metadata {
        path: manifest_file.clone(),
        source: e,
    })?;
    write_synced(&manifest_file, &manifest_json)?;

    let record = ImageRecord {
        name: name.to_string(),
        description: options.description.clone(),
        source_file: source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        source_format: format,
        os_family: options.os_family.clone(),
        cloud_init: options.cloud_init,
        raw_size: manifest.raw_size,
        compressed_size: manifest.compressed_size(),
        sha256: manifest.sha256.clone(),
        manifest_sha256: Some(hex(&Sha256::digest(&manifest_json))),
        imported_at: Utc::now(),
        import_millis: started.elapsed().as_millis() as u64,
    };
    let record_file = temp.path.join(RECORD_FILE);
    let record_json = serde_json::to_vec_pretty(&record).map_err(|e| ImageError::Metadata {
        path: record_file.clone(),
        source: e,
    })?;
    write_synced(&record_file, &record_json)?;
    sync_dir(&temp.path);

    put_in_place(dir, &mut temp, &final_path, name, options.replace)?;
    progress(ImportProgress {
        phase: ImportPhase::Done,
        raw_bytes: record.raw_size,
        raw_total: Some(record.raw_size),
    });
    Ok(record)
}

/// The framing step of an import: one raw reader into `disk.zst`.
struct Framing<'a> {
    disk_path: &'a Path,
    disk: &'a mut BufWriter<File>,
    progress: &'a mut dyn FnMut(ImportProgress),
}

impl Framing<'_> {
    fn run(
        self,
        raw: &mut dyn Read,
        raw_total: Option<u64>,
        read_error: impl FnOnce(io::Error) -> ImageError,
    ) -> Result<ImageManifest, ImageError> {
        let progress = self.progress;
        progress(ImportProgress {
            phase: ImportPhase::Framing,
            raw_bytes: 0,
            raw_total,
        });
        frame_stream(raw, self.disk, &mut |raw_bytes| {
            progress(ImportProgress {
                phase: ImportPhase::Framing,
                raw_bytes,
                raw_total,
            })
        })
        .map_err(|e| match e {
            StreamError::Read(e) => read_error(e),
            StreamError::Write(e) => io_err(self.disk_path)(e),
        })
    }
}

/// Renames the finished temporary directory to `final_path`. rename(2)
/// refuses a non-empty target, so of two concurrent imports of one name the
/// second fails cleanly instead of mixing files. A replaced image is moved
/// aside first and deleted once the new one is in place.
fn put_in_place(
    dir: &Path,
    temp: &mut TempDir,
    final_path: &Path,
    name: &str,
    replace: bool,
) -> Result<(), ImageError> {
    let already_exists = || ImageError::AlreadyExists {
        name: name.to_string(),
        path: final_path.to_path_buf(),
    };
    let mut old = None;
    if replace {
        let aside = dir.join(format!(".{name}{OLD_MARKER}{}", random_suffix()));
        match fs::rename(final_path, &aside) {
            Ok(()) => old = Some(aside),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(final_path)(e)),
        }
    }
    match fs::rename(&temp.path, final_path) {
        Ok(()) => temp.keep = true,
        Err(e) => {
            if let Some(old) = &old {
                let _ = fs::rename(old, final_path);
            }
            if final_path.exists() {
                return Err(already_exists());
            }
            return Err(io_err(final_path)(e));
        }
    }
    sync_dir(dir);
    if let Some(old) = old {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, ImageError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| ImageError::Metadata {
            path: path.to_path_buf(),
            source,
        })
}

fn not_found(dir: &Path, name: &str) -> ImageError {
    ImageError::NotFound {
        name: name.to_string(),
        catalog: dir.to_path_buf(),
    }
}

/// The record of image `name`.
pub fn get(dir: &Path, name: &str) -> Result<ImageRecord, ImageError> {
    let path = image_dir(dir, name)?.join(RECORD_FILE);
    read_json(&path)?.ok_or_else(|| not_found(dir, name))
}

/// The manifest of image `name`, checked with `ImageManifest::validate`.
pub fn read_manifest(dir: &Path, name: &str) -> Result<ImageManifest, ImageError> {
    let path = manifest_path(dir, name)?;
    let manifest: ImageManifest = read_json(&path)?.ok_or_else(|| not_found(dir, name))?;
    manifest
        .validate()
        .map_err(|source| ImageError::Manifest { path, source })?;
    Ok(manifest)
}

/// Every image in the catalog, sorted by name. Hidden work directories and
/// directories without an `image.json` are not images and are left out.
pub fn list(dir: &Path) -> Result<Vec<ImageRecord>, ImageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut records = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !crate::is_valid_name(&name) || !entry.path().is_dir() {
            continue;
        }
        if let Some(record) = read_json(&entry.path().join(RECORD_FILE))? {
            records.push(record);
        }
    }
    records.sort_by(|a: &ImageRecord, b| a.name.cmp(&b.name));
    Ok(records)
}

/// Removes image `name`. It is renamed aside first, so it leaves the
/// catalog at once even if deleting a large file takes a while.
pub fn delete(dir: &Path, name: &str) -> Result<(), ImageError> {
    let path = image_dir(dir, name)?;
    if !path.join(RECORD_FILE).exists() {
        return Err(not_found(dir, name));
    }
    let aside = dir.join(format!(".{name}{DELETING_MARKER}{}", random_suffix()));
    match fs::rename(&path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found(dir, name)),
        Err(e) => return Err(io_err(&path)(e)),
    }
    sync_dir(dir);
    fs::remove_dir_all(&aside).map_err(io_err(&aside))
}

/// Removes work directories left by imports or deletes that a crash
/// interrupted. Call it when no import can be running (server start-up).
/// Returns what it removed.
pub fn remove_leftovers(dir: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let Some(rest) = file_name.strip_prefix('.') else {
            continue;
        };
        let is_work_dir = [TEMP_MARKER, DELETING_MARKER, OLD_MARKER]
            .iter()
            .any(|marker| {
                rest.split_once(marker)
                    .is_some_and(|(name, _)| crate::is_valid_name(name))
            });
        if is_work_dir && entry.path().is_dir() {
            fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
            removed.push(entry.path());
        }
    }
    removed.sort();
    Ok(removed)
}

/// Decompresses every frame of image `name` and checks it against the
/// manifest (sizes, offsets, frame checksums, SHA-256) and the record.
pub fn verify(dir: &Path, name: &str) -> Result<Verified, ImageError> {
    verify_with_progress(dir, name, &mut |_| {})
}

/// [`verify`], reporting the raw bytes checked so far every few MiB.
pub fn verify_with_progress(
    dir: &Path,
    name: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<Verified, ImageError> {
    let started = Instant::now();
    let record = get(dir, name)?;
    let manifest = read_manifest(dir, name)?;
    let failed = |reason: String| ImageError::Verify {
        name: name.to_string(),
        reason,
    };
    if (record.raw_size, record.compressed_size, &record.sha256)
        != (
            manifest.raw_size,
            manifest.compressed_size(),
            &manifest.sha256,
        )
    {
        return Err(failed(format!(
            "{RECORD_FILE} and {MANIFEST_FILE} disagree on sizes or SHA-256"
        )));
    }
    if let Some(want) = &record.manifest_sha256 {
        let path = manifest_path(dir, name)?;
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let got = hex(&Sha256::digest(&bytes));
        if !got.eq_ignore_ascii_case(want) {
            return Err(failed(format!(
                "{MANIFEST_FILE}'s SHA-256 is {got}, {RECORD_FILE} says {want}"
            )));
        }
    }
    let path = disk_path(dir, name)?;
    let disk = File::open(&path).map_err(io_err(&path))?;
    let disk_len = disk.metadata().map_err(io_err(&path))?.len();
    let mut reader = BufReader::with_capacity(IO_BUFFER, disk);
    check_frames(&manifest, &mut reader, disk_len, progress).map_err(|e| match e {
        CheckError::Read(e) => io_err(&path)(e),
        CheckError::Bad(reason) => failed(reason),
    })?;
    Ok(Verified {
        name: name.to_string(),
        frames: manifest.frames(),
        raw_size: manifest.raw_size,
        compressed_size: manifest.compressed_size(),
        sha256: manifest.sha256,
        millis: started.elapsed().as_millis() as u64,
    })
}
