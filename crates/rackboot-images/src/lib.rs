//! The OS image catalog: disk images an operator imports once and rackboot
//! streams to machines many times.
//!
//! An import converts a source file (qcow2, zstd, xz, gzip or raw, told apart
//! by magic bytes) into the streaming form of
//! [`rackboot_agent_proto::image`]: the raw disk cut into 1 MiB frames, each
//! an independent zstd frame, concatenated into `disk.zst`, with
//! `manifest.json` listing the frame offsets and the raw SHA-256.
//!
//! Layout of a catalog directory:
//!
//! ```text
//! <dir>/<name>/manifest.json   ImageManifest (what the agent downloads first)
//! <dir>/<name>/disk.zst        the frames
//! <dir>/<name>/image.json      ImageRecord (what operators see)
//! <dir>/.<name>.tmp-<random>/  an import in progress (never listed)
//! ```
//!
//! An import is built in a hidden temporary directory inside `<dir>` (same
//! filesystem) and renamed into place when complete, so the catalog never
//! holds half an image. Everything here is blocking I/O: the server runs it
//! in `spawn_blocking`.

mod catalog;
mod detect;
mod frame;
mod qcow2;

use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use rackboot_agent_proto::ManifestError;
use serde::{Deserialize, Serialize};

pub use catalog::{
    delete, disk_path, get, image_dir, import, list, manifest_path, read_manifest,
    remove_leftovers, verify, verify_with_progress,
};
pub use detect::{Detected, detect};

/// The frames file inside an image directory.
pub const DISK_FILE: &str = "disk.zst";
/// The [`rackboot_agent_proto::ImageManifest`] inside an image directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The [`ImageRecord`] inside an image directory.
pub const RECORD_FILE: &str = "image.json";

/// zstd level of every frame: fast to import, and the agent's decompression
/// speed barely depends on it.
pub const ZSTD_LEVEL: i32 = 3;

/// Format of the file an image was imported from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    Qcow2,
    Zstd,
    Xz,
    Gzip,
    Raw,
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceFormat::Qcow2 => "qcow2",
            SourceFormat::Zstd => "zstd",
            SourceFormat::Xz => "xz",
            SourceFormat::Gzip => "gzip",
            SourceFormat::Raw => "raw",
        })
    }
}

/// What `<dir>/<name>/image.json` records about an imported image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageRecord {
    /// Catalog name: `[a-z0-9][a-z0-9._-]{0,62}`.
    pub name: String,
    pub description: String,
    /// File name (no directory) of the imported source.
    pub source_file: String,
    pub source_format: SourceFormat,
    /// Operator-given OS family (debian, ubuntu, rhel, suse, generic...);
    /// decides which network configuration the agent writes.
    pub os_family: Option<String>,
    /// Operator-given: the image runs cloud-init, so a seed is worth writing.
    pub cloud_init: bool,
    /// Size of the raw disk in bytes: the smallest disk it fits on.
    pub raw_size: u64,
    /// Size of `disk.zst`.
    pub compressed_size: u64,
    /// Lower-case hex SHA-256 of the raw bytes.
    pub sha256: String,
    /// Lower-case hex SHA-256 of `manifest.json` as written (absent for
    /// images imported before it was recorded): deploys hand it to the agent,
    /// which then verifies the image frame by frame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    pub imported_at: DateTime<Utc>,
    /// How long the import took.
    pub import_millis: u64,
}

/// What the operator says about an image being imported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    pub name: String,
    pub description: String,
    pub os_family: Option<String>,
    pub cloud_init: bool,
    /// Replace an image of the same name instead of failing with
    /// [`ImageError::AlreadyExists`].
    pub replace: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportPhase {
    /// `qemu-img convert` is writing the raw temporary file (qcow2 only; no
    /// byte counts until it finishes).
    Converting,
    /// Raw bytes are being framed.
    Framing,
    /// The image is in the catalog.
    Done,
}

/// Progress of an import, reported every [`PROGRESS_EVERY`] raw bytes and at
/// each phase change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportProgress {
    pub phase: ImportPhase,
    /// Raw (decompressed) bytes framed so far.
    pub raw_bytes: u64,
    /// Raw size when known before the end: raw and qcow2 sources, not
    /// compressed streams.
    pub raw_total: Option<u64>,
}

/// Raw bytes between two progress reports.
pub const PROGRESS_EVERY: u64 = 8 << 20;

/// Result of [`verify`]: every frame decompressed, sizes, offsets and the
/// SHA-256 agree with the manifest and the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub name: String,
    pub frames: usize,
    pub raw_size: u64,
    pub compressed_size: u64,
    pub sha256: String,
    pub millis: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "invalid image name {0:?}: 1 to 63 characters from a-z 0-9 . _ -, starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("image {name} already exists at {path}; delete it first or import with replace")]
    AlreadyExists { name: String, path: PathBuf },
    #[error("image {name} is not in the catalog {catalog}")]
    NotFound { name: String, catalog: PathBuf },
    #[error("{path}: unreadable: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The source is something that cannot be imported as a disk image.
    #[error("{path} is {}: {}", .detected.describe(), .detected.advice())]
    Refused { path: PathBuf, detected: Detected },
    /// A compressed source whose content is not a raw disk (a qcow2.xz, a
    /// tar.gz...): framing it would write garbage to disks.
    #[error(
        "{path}: the {format} stream holds {}, not a raw disk: decompress it first and import the result",
        .inner.describe()
    )]
    NestedFormat {
        path: PathBuf,
        format: SourceFormat,
        inner: Detected,
    },
    #[error(
        "{path}: the qcow2 image depends on {what} {target:?}; import a self-contained image (`qemu-img convert -O qcow2` flattens it)"
    )]
    Qcow2External {
        path: PathBuf,
        what: &'static str,
        target: String,
    },
    /// qemu-img refused the file: corrupt or not really qcow2.
    #[error("{path}: qemu-img {action} failed: {stderr}")]
    Qcow2 {
        path: PathBuf,
        action: &'static str,
        stderr: String,
    },
    #[error("{path}: cannot run qemu-img (package qemu-utils): {source}")]
    QemuImg {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A zstd, xz or gzip source that does not decompress to its end.
    #[error("{path}: {format} data corrupt or truncated: {source}")]
    Decompress {
        path: PathBuf,
        format: SourceFormat,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unreadable JSON: {source}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
    #[error("image {name} failed verification: {reason}")]
    Verify { name: String, reason: String },
}

/// Whether `name` may name an image: `[a-z0-9][a-z0-9._-]{0,62}`. It is a
/// directory name and part of URLs, so nothing else is allowed.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && allowed(bytes[0])
        && bytes[1..]
            .iter()
            .all(|&b| allowed(b) || b == b'.' || b == b'_' || b == b'-')
}

/// Checks `name` with [`is_valid_name`].
pub fn validate_name(name: &str) -> Result<(), ImageError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(ImageError::InvalidName(name.to_string()))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for (name, ok) in [
            ("debian-12", true),
            ("a", true),
            ("0", true),
            ("ubuntu_24.04-cloud", true),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
            ("", false),
            (".hidden", false),
            ("..", false),
            ("-x", false),
            ("_x", false),
            ("Debian", false),
            ("a/b", false),
            ("a b", false),
            ("é", false),
            ("a\0", false),
        ] {
            assert_eq!(is_valid_name(name), ok, "{name:?}");
            assert_eq!(validate_name(name).is_ok(), ok, "{name:?}");
        }
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x5f]), "00ab5f");
    }

    #[test]
    fn record_json_round_trips_with_rfc3339_time() {
        let record = ImageRecord {
            name: "debian-12".into(),
            description: "Debian 12 generic cloud".into(),
            source_file: "debian-12-genericcloud-amd64.qcow2".into(),
            source_format: SourceFormat::Qcow2,
            os_family: Some("debian".into()),
            cloud_init: true,
            raw_size: 2 << 30,
            compressed_size: 123,
            sha256: "0".repeat(64),
            manifest_sha256: None,
            imported_at: DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
            import_millis: 42,
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["imported_at"], "2025-01-02T03:04:05Z");
        assert_eq!(json["source_format"], "qcow2");
        let back: ImageRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
    }
}
