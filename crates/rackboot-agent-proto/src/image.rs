//! The streaming form of an OS image, as the server's image catalog stores it
//! and the agent writes it.
//!
//! An image is its raw disk bytes cut into frames of [`FRAME_RAW_SIZE`] (the
//! last one shorter), each compressed as one independent zstd frame, the
//! frames concatenated into one file (`disk.zst`, itself a valid zstd stream).
//! The manifest (`manifest.json`) lists where each frame starts, so that:
//! - a download broken off (a server restart, a flaky link) resumes with an
//!   HTTP Range request at the next frame instead of starting over;
//! - memory stays bounded: the agent holds one compressed and one raw frame.
//!
//! `sha256` is of the raw bytes, the disk as written. `frame_sha256` (images
//! imported since it was added) lists the SHA-256 of each compressed frame, so
//! the agent verifies what it downloads frame by frame, at the cost of the
//! bytes it downloads (a run of zeros is a few bytes) instead of hashing every
//! raw byte; the manifest itself is then bound to the deploy by its own
//! SHA-256 ([`crate::WriteImageAction::manifest_sha256`]).

use serde::{Deserialize, Serialize};

/// Raw bytes per frame: 1 MiB.
pub const FRAME_RAW_SIZE: u64 = 1 << 20;

/// Value of [`ImageManifest::format`].
pub const FORMAT_ZSTD_FRAMES_V1: &str = "zstd-frames-v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageManifest {
    /// [`FORMAT_ZSTD_FRAMES_V1`].
    pub format: String,
    /// Size of the raw disk image in bytes: the smallest disk it fits on.
    pub raw_size: u64,
    /// Lower-case hex SHA-256 of the raw bytes.
    pub sha256: String,
    /// Raw bytes per frame ([`FRAME_RAW_SIZE`]).
    pub frame_raw_size: u64,
    /// Byte offset of each frame in the compressed file, then the file's size:
    /// frame `i` is `frame_offsets[i]..frame_offsets[i + 1]`.
    pub frame_offsets: Vec<u64>,
    /// Lower-case hex SHA-256 of each compressed frame, in order; empty for
    /// images imported before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frame_sha256: Vec<String>,
}

/// True for 64 hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError(pub String);

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid image manifest: {}", self.0)
    }
}

impl std::error::Error for ManifestError {}

impl ImageManifest {
    /// Number of frames.
    pub fn frames(&self) -> usize {
        self.frame_offsets.len().saturating_sub(1)
    }

    /// Size of the compressed file.
    pub fn compressed_size(&self) -> u64 {
        self.frame_offsets.last().copied().unwrap_or(0)
    }

    /// Compressed byte range of frame `i` (end exclusive).
    pub fn compressed_range(&self, i: usize) -> std::ops::Range<u64> {
        self.frame_offsets[i]..self.frame_offsets[i + 1]
    }

    /// Raw byte range of frame `i` (end exclusive).
    pub fn raw_range(&self, i: usize) -> std::ops::Range<u64> {
        let start = i as u64 * self.frame_raw_size;
        start..(start + self.frame_raw_size).min(self.raw_size)
    }

    /// Checks the manifest is self-consistent before anything is written to a disk.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let err = |s: String| Err(ManifestError(s));
        if self.format != FORMAT_ZSTD_FRAMES_V1 {
            return err(format!("unknown format {:?}", self.format));
        }
        if self.frame_raw_size == 0 || self.frame_raw_size > 64 << 20 {
            return err(format!(
                "frame_raw_size {} out of range",
                self.frame_raw_size
            ));
        }
        if !is_sha256_hex(&self.sha256) {
            return err("sha256 is not 64 hex digits".into());
        }
        let want_frames = self.raw_size.div_ceil(self.frame_raw_size);
        if self.frames() as u64 != want_frames {
            return err(format!(
                "{} frames listed, {} needed for {} bytes",
                self.frames(),
                want_frames,
                self.raw_size
            ));
        }
        if self.frame_offsets.first() != Some(&0) {
            return err("the first frame must start at offset 0".into());
        }
        if self.frame_offsets.windows(2).any(|w| w[1] <= w[0]) {
            return err("frame offsets must increase".into());
        }
        if !self.frame_sha256.is_empty() {
            if self.frame_sha256.len() != self.frames() {
                return err(format!(
                    "{} frame checksums listed for {} frames",
                    self.frame_sha256.len(),
                    self.frames()
                ));
            }
            if let Some(i) = self.frame_sha256.iter().position(|h| !is_sha256_hex(h)) {
                return err(format!("frame_sha256[{i}] is not 64 hex digits"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(raw_size: u64, offsets: Vec<u64>) -> ImageManifest {
        ImageManifest {
            format: FORMAT_ZSTD_FRAMES_V1.into(),
            raw_size,
            sha256: "0".repeat(64),
            frame_raw_size: FRAME_RAW_SIZE,
            frame_offsets: offsets,
            frame_sha256: Vec::new(),
        }
    }

    #[test]
    fn ranges_of_a_short_last_frame() {
        let m = manifest(FRAME_RAW_SIZE + 10, vec![0, 100, 130]);
        m.validate().unwrap();
        assert_eq!(m.frames(), 2);
        assert_eq!(m.compressed_range(1), 100..130);
        assert_eq!(m.raw_range(1), FRAME_RAW_SIZE..FRAME_RAW_SIZE + 10);
        assert_eq!(m.compressed_size(), 130);
    }

    #[test]
    fn inconsistent_manifests_are_refused() {
        for (m, want) in [
            (
                manifest(FRAME_RAW_SIZE + 1, vec![0, 100]),
                "1 frames listed, 2 needed",
            ),
            (manifest(10, vec![5, 100]), "start at offset 0"),
            (
                manifest(FRAME_RAW_SIZE * 2, vec![0, 100, 100]),
                "must increase",
            ),
            (
                ImageManifest {
                    frame_sha256: vec!["a".repeat(64)],
                    ..manifest(FRAME_RAW_SIZE * 2, vec![0, 100, 130])
                },
                "1 frame checksums listed for 2 frames",
            ),
            (
                ImageManifest {
                    frame_sha256: vec!["a".repeat(64), "g".repeat(64)],
                    ..manifest(FRAME_RAW_SIZE * 2, vec![0, 100, 130])
                },
                "frame_sha256[1] is not 64 hex",
            ),
            (
                ImageManifest {
                    sha256: "xyz".into(),
                    ..manifest(10, vec![0, 1])
                },
                "64 hex",
            ),
        ] {
            let e = m.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
