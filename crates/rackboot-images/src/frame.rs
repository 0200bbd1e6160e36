//! Cutting a raw byte stream into independent zstd frames, and checking
//! frames against their manifest. Readers and writers in, values out: the
//! catalog decides which files they are.

use std::io::{self, Read, Write};

use rackboot_agent_proto::image::{FORMAT_ZSTD_FRAMES_V1, FRAME_RAW_SIZE, ImageManifest};
use sha2::{Digest, Sha256};
use zstd::bulk::{Compressor, Decompressor};
use zstd::zstd_safe::{self, CParameter};

use crate::{PROGRESS_EVERY, ZSTD_LEVEL, hex};

/// Which side of a copy failed.
#[derive(Debug)]
pub(crate) enum StreamError {
    Read(io::Error),
    Write(io::Error),
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
pub(crate) fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn zstd_err(e: zstd_safe::ErrorCode) -> io::Error {
    io::Error::other(zstd_safe::get_error_name(e))
}

/// Frames everything `source` yields into `out` and returns the manifest.
/// `progress` gets the raw byte count every [`PROGRESS_EVERY`] bytes.
pub(crate) fn frame_stream(
    source: &mut dyn Read,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<ImageManifest, StreamError> {
    let mut compressor = Compressor::new(ZSTD_LEVEL).map_err(StreamError::Write)?;
    compressor
        .set_parameter(CParameter::ChecksumFlag(true))
        .map_err(StreamError::Write)?;
    let mut raw = vec![0u8; FRAME_RAW_SIZE as usize];
    let mut frame = Vec::with_capacity(zstd_safe::compress_bound(raw.len()));
    let mut hasher = Sha256::new();
    let mut offsets = vec![0u64];
    let mut frame_sha256 = Vec::new();
    let mut raw_size = 0u64;
    let mut next_report = PROGRESS_EVERY;
    loop {
        let n = read_full(source, &mut raw).map_err(StreamError::Read)?;
        if n == 0 {
            break;
        }
        let chunk = &raw[..n];
        hasher.update(chunk);
        compressor
            .compress_to_buffer(chunk, &mut frame)
            .map_err(StreamError::Write)?;
        out.write_all(&frame).map_err(StreamError::Write)?;
        offsets.push(offsets.last().unwrap() + frame.len() as u64);
        frame_sha256.push(hex(&Sha256::digest(&frame)));
        raw_size += n as u64;
        if raw_size >= next_report {
            progress(raw_size);
            next_report = raw_size + PROGRESS_EVERY;
        }
        if n < raw.len() {
            break;
        }
    }
    out.flush().map_err(StreamError::Write)?;
    Ok(ImageManifest {
        format: FORMAT_ZSTD_FRAMES_V1.into(),
        raw_size,
        sha256: hex(&hasher.finalize()),
        frame_raw_size: FRAME_RAW_SIZE,
        frame_offsets: offsets,
        frame_sha256,
    })
}

/// Why frames do not match their manifest.
#[derive(Debug)]
pub(crate) enum CheckError {
    /// The frames file could not be read.
    Read(io::Error),
    /// The content is wrong; the text says where and how.
    Bad(String),
}

/// Decompresses every frame of `disk` (a file of `disk_len` bytes) and checks
/// each is exactly one zstd frame (checksum included) of the raw size the
/// manifest says, then the SHA-256 of all raw bytes. `manifest` must have
/// passed `validate()`.
pub(crate) fn check_frames(
    manifest: &ImageManifest,
    disk: &mut dyn Read,
    disk_len: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), CheckError> {
    let bad = |s: String| Err(CheckError::Bad(s));
    if disk_len != manifest.compressed_size() {
        return bad(format!(
            "{} is {disk_len} bytes, the manifest's frames end at {}",
            crate::DISK_FILE,
            manifest.compressed_size()
        ));
    }
    let frame_raw_size = usize::try_from(manifest.frame_raw_size)
        .map_err(|_| CheckError::Bad("frame_raw_size too large".into()))?;
    // No valid frame of frame_raw_size bytes is larger than this, so a
    // lying manifest cannot make us allocate without bound.
    let max_frame = zstd_safe::compress_bound(frame_raw_size) as u64;
    let mut decompressor = Decompressor::new().map_err(CheckError::Read)?;
    let mut frame = Vec::new();
    let mut raw = Vec::with_capacity(frame_raw_size);
    let mut hasher = Sha256::new();
    let mut next_report = PROGRESS_EVERY;
    for i in 0..manifest.frames() {
        let range = manifest.compressed_range(i);
        let len = range.end - range.start;
        if len > max_frame {
            return bad(format!(
                "frame {i} is {len} bytes, more than any frame can be"
            ));
        }
        frame.resize(len as usize, 0);
        disk.read_exact(&mut frame).map_err(CheckError::Read)?;
        if let Some(want) = manifest.frame_sha256.get(i) {
            let got = hex(&Sha256::digest(&frame));
            if !got.eq_ignore_ascii_case(want) {
                return bad(format!(
                    "frame {i} at offset {}: its SHA-256 is {got}, the manifest says {want}",
                    range.start
                ));
            }
        }
        match zstd_safe::find_frame_compressed_size(&frame) {
            Ok(n) if n == frame.len() => {}
            Ok(n) => {
                return bad(format!(
                    "frame {i} at offset {}: its zstd frame is {n} bytes, the manifest says {len}",
                    range.start
                ));
            }
            Err(e) => {
                return bad(format!(
                    "frame {i} at offset {}: {}",
                    range.start,
                    zstd_err(e)
                ));
            }
        }
        raw.clear();
        decompressor
            .decompress_to_buffer(&frame[..], &mut raw)
            .map_err(|e| CheckError::Bad(format!("frame {i} at offset {}: {e}", range.start)))?;
        let want = manifest.raw_range(i);
        if raw.len() as u64 != want.end - want.start {
            return bad(format!(
                "frame {i} decompresses to {} bytes, the manifest says {}",
                raw.len(),
                want.end - want.start
            ));
        }
        hasher.update(&raw);
        if want.end >= next_report {
            progress(want.end);
            next_report = want.end + PROGRESS_EVERY;
        }
    }
    let sha256 = hex(&hasher.finalize());
    if sha256 != manifest.sha256.to_ascii_lowercase() {
        return bad(format!(
            "raw SHA-256 is {sha256}, the manifest says {}",
            manifest.sha256
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes that compress a little, like real disks.
    fn pattern(len: usize) -> Vec<u8> {
        let mut x = 0x1234_5678u32;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 4096 < 1024 { 0 } else { x as u8 }
            })
            .collect()
    }

    fn frame_bytes(data: &[u8]) -> (ImageManifest, Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut reports = Vec::new();
        let manifest = frame_stream(&mut &data[..], &mut out, &mut |n| reports.push(n)).unwrap();
        (manifest, out, reports)
    }

    #[test]
    fn sizes_around_frame_boundaries() {
        let mib = FRAME_RAW_SIZE as usize;
        for (len, frames) in [
            (1, 1),
            (4095, 1),
            (mib - 1, 1),
            (mib, 1),
            (mib + 1, 2),
            (3 * mib + 12345, 4),
        ] {
            let data = pattern(len);
            let (m, out, _) = frame_bytes(&data);
            m.validate().unwrap();
            assert_eq!(m.frames(), frames, "len {len}");
            assert_eq!(m.raw_size, len as u64);
            assert_eq!(m.compressed_size(), out.len() as u64);
            assert_eq!(m.sha256, hex(&Sha256::digest(&data)));
            // Each frame alone decompresses to its raw range.
            for i in 0..m.frames() {
                let r = m.compressed_range(i);
                let raw =
                    zstd::bulk::decompress(&out[r.start as usize..r.end as usize], mib).unwrap();
                let want = m.raw_range(i);
                assert_eq!(raw, &data[want.start as usize..want.end as usize]);
            }
            // The whole file is one valid zstd stream.
            assert_eq!(zstd::decode_all(&out[..]).unwrap(), data);
            check_frames(&m, &mut &out[..], out.len() as u64, &mut |_| {}).unwrap();
        }
    }

    #[test]
    fn frames_carry_a_checksum() {
        let (m, out, _) = frame_bytes(&pattern(1000));
        // Frame header descriptor: bit 2 is Content_Checksum_flag.
        assert_eq!(&out[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        assert_ne!(out[4] & 0b100, 0);
        assert_eq!(m.frames(), 1);
    }

    #[test]
    fn empty_input_has_no_frames() {
        let (m, out, reports) = frame_bytes(&[]);
        assert_eq!(m.raw_size, 0);
        assert_eq!(m.frame_offsets, vec![0]);
        assert!(out.is_empty() && reports.is_empty());
    }

    #[test]
    fn progress_every_few_mib() {
        let data = vec![0u8; 20 << 20];
        let (_, _, reports) = frame_bytes(&data);
        assert_eq!(reports, vec![8 << 20, 16 << 20]);
    }

    /// A reader that hands out at most 1000 bytes per call.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(1000).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_still_make_full_frames() {
        let data = pattern(2 * FRAME_RAW_SIZE as usize + 7);
        let mut out = Vec::new();
        let m = frame_stream(&mut Trickle(&data), &mut out, &mut |_| {}).unwrap();
        assert_eq!(m.frames(), 3);
        assert_eq!(m, frame_bytes(&data).0);
    }

    #[test]
    fn read_errors_are_read_side() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("boom"))
            }
        }
        let err = frame_stream(&mut Failing, &mut Vec::new(), &mut |_| {}).unwrap_err();
        assert!(matches!(err, StreamError::Read(e) if e.to_string() == "boom"));
    }

    #[test]
    fn check_finds_each_kind_of_damage() {
        let data = pattern(2 * FRAME_RAW_SIZE as usize + 100);
        let (m, out, _) = frame_bytes(&data);
        let check = |m: &ImageManifest, out: &[u8]| match check_frames(
            m,
            &mut &out[..],
            out.len() as u64,
            &mut |_| {},
        ) {
            Err(CheckError::Bad(s)) => s,
            other => panic!("{other:?}"),
        };

        let mut flipped = out.clone();
        let mid = (m.frame_offsets[1] + m.frame_offsets[2]) as usize / 2;
        flipped[mid] ^= 0x01;
        assert!(
            check(&m, &flipped).contains("frame 1"),
            "{}",
            check(&m, &flipped)
        );

        // The frame digests catch the flip before decompression; without
        // them zstd's own checksum or the raw SHA-256 does.
        assert!(check(&m, &flipped).contains("its SHA-256 is"));
        let mut no_digests = m.clone();
        no_digests.frame_sha256.clear();
        assert!(check(&no_digests, &flipped).contains("frame 1"));
        let mut wrong_frame_sha = m.clone();
        wrong_frame_sha.frame_sha256[2] = "b".repeat(64);
        let s = check(&wrong_frame_sha, &out);
        assert!(s.contains("frame 2") && s.contains("its SHA-256 is"), "{s}");

        let mut wrong_sha = m.clone();
        wrong_sha.sha256 = "a".repeat(64);
        assert!(check(&wrong_sha, &out).contains("SHA-256"));

        assert!(check(&m, &out[..out.len() - 1]).contains("bytes, the manifest"));

        // Two frames listed as one: larger than one frame can be, or (small
        // frames of zeros) a boundary that is not where it should be.
        let merge_first_two = |m: &ImageManifest| ImageManifest {
            raw_size: FRAME_RAW_SIZE,
            frame_offsets: vec![0, m.frame_offsets[2]],
            frame_sha256: Vec::new(),
            ..m.clone()
        };
        let s = check(&merge_first_two(&m), &out[..m.frame_offsets[2] as usize]);
        assert!(s.contains("more than any frame can be"), "{s}");
        let (zeros, zeros_out, _) = frame_bytes(&vec![0u8; 2 * FRAME_RAW_SIZE as usize]);
        let s = check(
            &merge_first_two(&zeros),
            &zeros_out[..zeros.frame_offsets[2] as usize],
        );
        assert!(s.contains("frame 0") && s.contains("zstd frame is"), "{s}");

        let mut wrong_raw = m.clone();
        wrong_raw.raw_size -= 1;
        assert!(check(&wrong_raw, &out).contains("decompresses to 100 bytes"));
    }
}
