//! Imports of files made by the real tools (qemu-img, qemu-io, zstd, xz,
//! gzip, genisoimage), checked against the real tools' own output.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rackboot_agent_proto::ImageManifest;
use rackboot_images::{
    Detected, ImageError, ImportOptions, ImportPhase, ImportProgress, SourceFormat,
};

const MIB: u64 = 1 << 20;

fn run(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn sha256sum(path: &Path) -> String {
    let out = String::from_utf8(run("sha256sum", &[p(path)])).unwrap();
    out.split_whitespace().next().unwrap().to_string()
}

/// Bytes that look like a disk: random-ish blocks, zero blocks, text.
fn disk_like(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32;
    (0..len)
        .map(|i| match (i / 65536) % 3 {
            0 => {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            }
            1 => 0,
            _ => b"rackboot "[i % 9],
        })
        .collect()
}

fn options(name: &str) -> ImportOptions {
    ImportOptions {
        name: name.into(),
        description: format!("test image {name}"),
        os_family: Some("debian".into()),
        cloud_init: true,
        replace: false,
    }
}

struct Imported {
    record: rackboot_images::ImageRecord,
    progress: Vec<ImportProgress>,
}

fn import(catalog: &Path, source: &Path, opts: &ImportOptions) -> Result<Imported, ImageError> {
    let mut progress = Vec::new();
    let record = rackboot_images::import(catalog, source, opts, &mut |p| progress.push(p))?;
    Ok(Imported { record, progress })
}

/// Decompresses every frame on its own, as the agent does, checking the
/// manifest on the way; returns the raw disk.
fn unframe(catalog: &Path, name: &str) -> Vec<u8> {
    let manifest_json = fs::read(catalog.join(name).join("manifest.json")).unwrap();
    let manifest: ImageManifest = serde_json::from_slice(&manifest_json).unwrap();
    manifest.validate().unwrap();
    assert_eq!(
        manifest,
        rackboot_images::read_manifest(catalog, name).unwrap()
    );
    let disk = fs::read(catalog.join(name).join("disk.zst")).unwrap();
    assert_eq!(disk.len() as u64, manifest.compressed_size());
    let mut raw = Vec::new();
    for i in 0..manifest.frames() {
        let range = manifest.compressed_range(i);
        let frame = &disk[range.start as usize..range.end as usize];
        let bytes = zstd::bulk::decompress(frame, MIB as usize).unwrap();
        let want = manifest.raw_range(i);
        assert_eq!(bytes.len() as u64, want.end - want.start, "frame {i}");
        raw.extend_from_slice(&bytes);
    }
    assert_eq!(raw.len() as u64, manifest.raw_size);
    // disk.zst is also one valid zstd stream as a whole.
    assert_eq!(zstd::decode_all(&disk[..]).unwrap(), raw);
    raw
}

/// Every name in the catalog directory, hidden ones included.
fn entries(catalog: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(catalog) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Checks an import against the raw file the tools say it should be.
fn assert_imported_as(catalog: &Path, imported: &Imported, raw_file: &Path, format: SourceFormat) {
    let record = &imported.record;
    let raw = fs::read(raw_file).unwrap();
    assert!(
        unframe(catalog, &record.name) == raw,
        "frames differ from {raw_file:?}"
    );
    assert_eq!(record.sha256, sha256sum(raw_file));
    assert_eq!(record.raw_size, raw.len() as u64);
    assert_eq!(record.source_format, format);
    assert_eq!(
        record.compressed_size,
        fs::metadata(catalog.join(&record.name).join("disk.zst"))
            .unwrap()
            .len()
    );
    assert_eq!(
        &rackboot_images::get(catalog, &record.name).unwrap(),
        record
    );
    let verified = rackboot_images::verify(catalog, &record.name).unwrap();
    assert_eq!(verified.sha256, record.sha256);
    assert_eq!(verified.frames as u64, record.raw_size.div_ceil(MIB));
    let last = imported.progress.last().unwrap();
    assert_eq!(last.phase, ImportPhase::Done);
    assert_eq!(last.raw_bytes, record.raw_size);
    // Nothing but the image itself is left in the catalog.
    assert_eq!(entries(catalog), vec![record.name.clone()]);
}

#[test]
fn qcow2_written_by_qemu_io_matches_qemu_img_convert() {
    if !rackboot_testenv::programs(&["qemu-img", "qemu-io", "genisoimage"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");
    let qcow2 = tmp.path().join("disk.img"); // the extension says nothing
    // 24 MiB + 3 sectors: not a multiple of the frame size.
    let size = 24 * MIB + 3 * 512;
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(&qcow2), &size.to_string()],
    );
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x5a 1M 64k", p(&qcow2)],
    );
    let near_end = format!("write -P 0xa5 {} 65536", size - 64 * 1024 - 512);
    run("qemu-io", &["-f", "qcow2", "-c", &near_end, p(&qcow2)]);
    let raw = tmp.path().join("expected.raw");
    run(
        "qemu-img",
        &["convert", "-f", "qcow2", "-O", "raw", p(&qcow2), p(&raw)],
    );

    let imported = import(&catalog, &qcow2, &options("qcow2-test")).unwrap();
    assert_imported_as(&catalog, &imported, &raw, SourceFormat::Qcow2);
    let record = &imported.record;
    assert_eq!(record.raw_size, size);
    assert_eq!(record.source_file, "disk.img");
    let bytes = unframe(&catalog, "qcow2-test");
    assert!(bytes[MIB as usize..][..65536].iter().all(|&b| b == 0x5a));
    assert!(
        bytes[(size - 64 * 1024 - 512) as usize..][..65536]
            .iter()
            .all(|&b| b == 0xa5)
    );
    // The same disk with compressed clusters (as cloud images ship).
    let compressed = tmp.path().join("compressed.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-c",
            "-f",
            "qcow2",
            "-O",
            "qcow2",
            p(&qcow2),
            p(&compressed),
        ],
    );
    let again = import(
        &tmp.path().join("catalog2"),
        &compressed,
        &options("qcow2-c"),
    )
    .unwrap();
    assert_eq!(again.record.sha256, record.sha256);
    // Conversion, then framing with the virtual size known up front.
    assert_eq!(imported.progress[0].phase, ImportPhase::Converting);
    assert_eq!(imported.progress[0].raw_total, Some(size));
    assert!(
        imported
            .progress
            .iter()
            .any(|p| p.phase == ImportPhase::Framing
                && p.raw_bytes >= 8 * MIB
                && p.raw_total == Some(size))
    );
}

#[test]
fn zstd_xz_gzip_made_by_their_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("disk.raw");
    // 5 MiB + 777 bytes: the last frame is short.
    fs::write(&raw, disk_like(5 * MIB as usize + 777)).unwrap();
    for (format, program, args, ext) in [
        (SourceFormat::Zstd, "zstd", &["-q", "-k", "-f"][..], "zst"),
        (SourceFormat::Xz, "xz", &["-k", "-f"][..], "xz"),
        (SourceFormat::Gzip, "gzip", &["-k", "-f"][..], "gz"),
    ] {
        let catalog = tmp.path().join(format!("catalog-{ext}"));
        let mut cmd_args = args.to_vec();
        cmd_args.push(p(&raw));
        run(program, &cmd_args);
        let compressed = tmp.path().join(format!("disk.raw.{ext}"));
        // A misleading name: detection reads the magic bytes.
        let renamed = tmp.path().join(format!("image-{ext}.qcow2"));
        fs::rename(&compressed, &renamed).unwrap();
        let name = format!("from-{ext}");
        let imported = import(&catalog, &renamed, &options(&name)).unwrap();
        assert_imported_as(&catalog, &imported, &raw, format);
        // Stream sizes are not known before the end.
        assert!(
            imported.progress[..imported.progress.len() - 1]
                .iter()
                .all(|p| p.raw_total.is_none()),
            "{format}"
        );
    }
}

#[test]
fn concatenated_streams_are_read_to_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let first = disk_like(MIB as usize + 5);
    let second: Vec<u8> = disk_like(2 * MIB as usize).into_iter().rev().collect();
    let joined = tmp.path().join("joined.raw");
    fs::write(&joined, [first.clone(), second.clone()].concat()).unwrap();
    for (program, ext) in [("zstd", "zst"), ("xz", "xz"), ("gzip", "gz")] {
        let mut parts = Vec::new();
        for (i, bytes) in [&first, &second].iter().enumerate() {
            let part = tmp.path().join(format!("part{i}"));
            fs::write(&part, bytes).unwrap();
            run(program, &["-q", "-f", p(&part)]);
            parts.extend(fs::read(tmp.path().join(format!("part{i}.{ext}"))).unwrap());
        }
        let source = tmp.path().join(format!("joined.{ext}"));
        fs::write(&source, parts).unwrap();
        let catalog = tmp.path().join(format!("catalog-{ext}"));
        let imported = import(&catalog, &source, &options("joined")).unwrap();
        assert_eq!(imported.record.sha256, sha256sum(&joined), "{ext}");
    }
}

#[test]
fn sparse_zero_image_of_256_mib_is_small_and_quick() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");
    let raw = tmp.path().join("zero.raw");
    run("truncate", &["-s", "256M", p(&raw)]);
    let started = Instant::now();
    let imported = import(&catalog, &raw, &options("zeros")).unwrap();
    let took = started.elapsed();
    let record = &imported.record;
    assert_eq!(record.raw_size, 256 * MIB);
    assert_eq!(record.source_format, SourceFormat::Raw);
    assert_eq!(record.sha256, sha256sum(&raw));
    // 256 frames of a few dozen bytes each.
    assert!(
        record.compressed_size < 32 * 1024,
        "{}",
        record.compressed_size
    );
    // Unoptimised zstd-sys and sha2 (a plain `cargo test`) take ~25 s here
    // on a busy machine; optimised, well under 1 s. The bound only catches a
    // zero image being read and compressed as data (minutes), not load.
    let limit = if cfg!(debug_assertions) { 600 } else { 120 };
    assert!(took.as_secs() < limit, "{took:?}");
    eprintln!(
        "256 MiB of zeros: {took:?}, {} bytes compressed",
        record.compressed_size
    );
    assert!(
        imported
            .progress
            .iter()
            .any(|p| p.phase == ImportPhase::Framing
                && p.raw_total == Some(256 * MIB)
                && p.raw_bytes == 128 * MIB)
    );
    rackboot_images::verify(&catalog, "zeros").unwrap();
}

/// Cuts `file` to `len` bytes.
fn truncate_to(file: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(file)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn truncated_and_corrupt_streams_fail_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");
    let raw = tmp.path().join("disk.raw");
    fs::write(&raw, disk_like(3 * MIB as usize)).unwrap();
    for (program, ext, format) in [
        ("zstd", "zst", SourceFormat::Zstd),
        ("xz", "xz", SourceFormat::Xz),
        ("gzip", "gz", SourceFormat::Gzip),
    ] {
        run(program, &["-q", "-k", "-f", p(&raw)]);
        let compressed = tmp.path().join(format!("disk.raw.{ext}"));
        let full = fs::read(&compressed).unwrap();

        // Cut in the middle, and cut just before the stream's end marker or trailer.
        for cut in [full.len() / 2, full.len() - 4] {
            fs::write(&compressed, &full).unwrap();
            truncate_to(&compressed, cut as u64);
            let err = import(&catalog, &compressed, &options("broken"))
                .err()
                .unwrap();
            match &err {
                ImageError::Decompress {
                    path, format: f, ..
                } => {
                    assert_eq!(path, &compressed);
                    assert_eq!(*f, format);
                }
                other => panic!("{ext} cut at {cut}: {other:?}"),
            }
            assert!(err.to_string().contains("corrupt or truncated"), "{err}");
            assert_eq!(
                entries(&catalog),
                Vec::<String>::new(),
                "{ext} cut at {cut}"
            );
        }

        // A flipped byte in the middle of the data.
        let mut flipped = full.clone();
        flipped[full.len() / 2] ^= 0x40;
        fs::write(&compressed, &flipped).unwrap();
        let err = import(&catalog, &compressed, &options("broken"))
            .err()
            .unwrap();
        assert!(
            matches!(err, ImageError::Decompress { format: f, .. } if f == format),
            "{ext}: {err:?}"
        );
        assert_eq!(entries(&catalog), Vec::<String>::new());
    }
}

#[test]
fn corrupt_qcow2_reports_qemu_img_stderr() {
    if !rackboot_testenv::programs(&["qemu-img", "qemu-io", "genisoimage"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");
    let qcow2 = tmp.path().join("disk.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(&qcow2), "8M"],
    );
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x11 0 1M", p(&qcow2)],
    );
    // Cut into the L1/refcount tables and the data: header intact, rest gone.
    truncate_to(&qcow2, 4096);
    let err = import(&catalog, &qcow2, &options("broken")).err().unwrap();
    match &err {
        ImageError::Qcow2 { path, stderr, .. } => {
            assert!(path.ends_with("disk.qcow2"));
            assert!(!stderr.is_empty());
        }
        other => panic!("{other:?}"),
    }
    eprintln!("{err}");
    assert_eq!(entries(&catalog), Vec::<String>::new());

    // The last 4 KiB of data cut off: qemu-img would read them as zeros.
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(&qcow2), "8M"],
    );
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x11 0 1M", p(&qcow2)],
    );
    truncate_to(&qcow2, fs::metadata(&qcow2).unwrap().len() - 4096);
    let err = import(&catalog, &qcow2, &options("broken")).err().unwrap();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_eq!(entries(&catalog), Vec::<String>::new());

    // Only the magic: not a qcow2 header at all.
    fs::write(&qcow2, b"QFI\xfb\0\0\0\x09garbage").unwrap();
    let err = import(&catalog, &qcow2, &options("broken")).err().unwrap();
    assert!(matches!(err, ImageError::Qcow2 { .. }), "{err:?}");
    assert_eq!(entries(&catalog), Vec::<String>::new());
}

#[test]
fn qcow2_with_a_backing_file_is_refused() {
    if !rackboot_testenv::programs(&["qemu-img", "qemu-io", "genisoimage"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");
    let base = tmp.path().join("base.raw");
    fs::write(&base, vec![0x77u8; MIB as usize]).unwrap();
    let overlay = tmp.path().join("overlay.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            p(&base),
            p(&overlay),
        ],
    );
    let err = import(&catalog, &overlay, &options("overlay"))
        .err()
        .unwrap();
    match &err {
        ImageError::Qcow2External { target, .. } => assert_eq!(target, p(&base)),
        other => panic!("{other:?}"),
    }
    assert_eq!(entries(&catalog), Vec::<String>::new());
}

#[test]
fn sources_that_are_not_disks_are_refused() {
    if !rackboot_testenv::programs(&["qemu-img", "qemu-io", "genisoimage"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");

    let empty = tmp.path().join("empty.raw");
    fs::write(&empty, b"").unwrap();
    let err = import(&catalog, &empty, &options("x")).err().unwrap();
    assert!(matches!(
        err,
        ImageError::Refused {
            detected: Detected::Empty,
            ..
        }
    ));

    // A real ISO 9660 from genisoimage.
    let tree = tmp.path().join("tree");
    fs::create_dir(&tree).unwrap();
    fs::write(tree.join("README"), b"hello").unwrap();
    let iso = tmp.path().join("media.img");
    run("genisoimage", &["-quiet", "-o", p(&iso), p(&tree)]);
    let err = import(&catalog, &iso, &options("x")).err().unwrap();
    assert!(matches!(
        err,
        ImageError::Refused {
            detected: Detected::Iso9660,
            ..
        }
    ));
    assert!(err.to_string().contains("rackboot os import"), "{err}");

    // An xz that decompresses to nothing.
    fs::write(tmp.path().join("nothing"), b"").unwrap();
    run("xz", &["-f", p(&tmp.path().join("nothing"))]);
    let err = import(&catalog, &tmp.path().join("nothing.xz"), &options("x"))
        .err()
        .unwrap();
    assert!(matches!(
        err,
        ImageError::Refused {
            detected: Detected::Empty,
            ..
        }
    ));

    // A qcow2 inside xz, and an ISO inside gzip.
    let qcow2 = tmp.path().join("inner.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p(&qcow2), "4M"],
    );
    run("xz", &["-f", p(&qcow2)]);
    let err = import(&catalog, &tmp.path().join("inner.qcow2.xz"), &options("x"))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ImageError::NestedFormat {
                format: SourceFormat::Xz,
                inner: Detected::Format(SourceFormat::Qcow2),
                ..
            }
        ),
        "{err:?}"
    );
    run("gzip", &["-f", p(&iso)]);
    let err = import(&catalog, &tmp.path().join("media.img.gz"), &options("x"))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ImageError::NestedFormat {
                inner: Detected::Iso9660,
                ..
            }
        ),
        "{err:?}"
    );

    let missing = tmp.path().join("missing.raw");
    let err = import(&catalog, &missing, &options("x")).err().unwrap();
    assert!(matches!(err, ImageError::Unreadable { ref path, .. } if path == &missing));

    assert_eq!(entries(&catalog), Vec::<String>::new());
}

#[test]
fn verify_detects_a_flipped_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");
    let raw = tmp.path().join("disk.raw");
    fs::write(&raw, disk_like(4 * MIB as usize + 100)).unwrap();
    import(&catalog, &raw, &options("flip")).unwrap();
    rackboot_images::verify(&catalog, "flip").unwrap();

    let manifest = rackboot_images::read_manifest(&catalog, "flip").unwrap();
    let disk_path = rackboot_images::disk_path(&catalog, "flip").unwrap();
    let good = fs::read(&disk_path).unwrap();
    // One byte in the middle of each frame in turn, and in a frame header.
    let mut spots: Vec<(usize, usize)> = (0..manifest.frames())
        .map(|i| {
            let r = manifest.compressed_range(i);
            (i, ((r.start + r.end) / 2) as usize)
        })
        .collect();
    spots.push((2, manifest.frame_offsets[2] as usize + 5));
    for (frame, offset) in spots {
        let mut bad = good.clone();
        bad[offset] ^= 0x01;
        fs::write(&disk_path, &bad).unwrap();
        let err = rackboot_images::verify(&catalog, "flip").err().unwrap();
        match &err {
            ImageError::Verify { name, reason } => {
                assert_eq!(name, "flip");
                assert!(
                    reason.contains(&format!("frame {frame}")) || reason.contains("SHA-256"),
                    "{reason}"
                );
            }
            other => panic!("offset {offset}: {other:?}"),
        }
    }
    fs::write(&disk_path, &good).unwrap();
    rackboot_images::verify(&catalog, "flip").unwrap();

    // A disk.zst cut short.
    fs::write(&disk_path, &good[..good.len() - 10]).unwrap();
    let err = rackboot_images::verify(&catalog, "flip").err().unwrap();
    assert!(matches!(err, ImageError::Verify { .. }), "{err:?}");
}

#[test]
fn catalog_operations() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");
    assert_eq!(rackboot_images::list(&catalog).unwrap(), vec![]);
    let raw_a = tmp.path().join("a.raw");
    let raw_b = tmp.path().join("b.raw");
    fs::write(&raw_a, disk_like(MIB as usize)).unwrap();
    fs::write(&raw_b, disk_like(2 * MIB as usize + 1)).unwrap();

    let err = import(&catalog, &raw_a, &options("Bad/Name"))
        .err()
        .unwrap();
    assert!(matches!(err, ImageError::InvalidName(_)));

    let b = import(&catalog, &raw_b, &options("zeta")).unwrap().record;
    let a = import(&catalog, &raw_a, &options("alpha")).unwrap().record;
    assert_eq!(a.os_family.as_deref(), Some("debian"));
    assert!(a.cloud_init);
    assert_eq!(a.description, "test image alpha");
    assert_eq!(
        rackboot_images::list(&catalog).unwrap(),
        vec![a.clone(), b.clone()]
    );

    // A name in use is refused unless replacing.
    let err = import(&catalog, &raw_a, &options("zeta")).err().unwrap();
    assert!(matches!(err, ImageError::AlreadyExists { ref name, .. } if name == "zeta"));
    assert_eq!(rackboot_images::get(&catalog, "zeta").unwrap(), b);
    let replaced = import(
        &catalog,
        &raw_a,
        &ImportOptions {
            replace: true,
            ..options("zeta")
        },
    )
    .unwrap()
    .record;
    assert_eq!(replaced.sha256, a.sha256);
    assert_eq!(rackboot_images::get(&catalog, "zeta").unwrap(), replaced);
    assert_eq!(unframe(&catalog, "zeta"), fs::read(&raw_a).unwrap());
    assert_eq!(entries(&catalog), vec!["alpha", "zeta"]);

    // Stray files and work directories are not images.
    fs::write(catalog.join("notes.txt"), b"x").unwrap();
    fs::create_dir(catalog.join("empty-dir")).unwrap();
    fs::create_dir(catalog.join(".alpha.tmp-0123456789abcdef")).unwrap();
    fs::create_dir(catalog.join(".zeta.deleting-0123")).unwrap();
    assert_eq!(rackboot_images::list(&catalog).unwrap().len(), 2);
    let removed = rackboot_images::remove_leftovers(&catalog).unwrap();
    assert_eq!(
        removed,
        vec![
            catalog.join(".alpha.tmp-0123456789abcdef"),
            catalog.join(".zeta.deleting-0123")
        ]
    );
    assert_eq!(
        entries(&catalog),
        vec!["alpha", "empty-dir", "notes.txt", "zeta"]
    );

    rackboot_images::delete(&catalog, "alpha").unwrap();
    assert!(matches!(
        rackboot_images::get(&catalog, "alpha"),
        Err(ImageError::NotFound { .. })
    ));
    assert!(matches!(
        rackboot_images::delete(&catalog, "alpha"),
        Err(ImageError::NotFound { .. })
    ));
    assert!(matches!(
        rackboot_images::delete(&catalog, "empty-dir"),
        Err(ImageError::NotFound { .. })
    ));
    assert!(matches!(
        rackboot_images::verify(&catalog, "../etc"),
        Err(ImageError::InvalidName(_))
    ));
    assert_eq!(entries(&catalog), vec!["empty-dir", "notes.txt", "zeta"]);
}

#[test]
fn record_file_is_pretty_json_with_rfc3339_time() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog");
    let raw = tmp.path().join("disk.raw");
    fs::write(&raw, disk_like(1000)).unwrap();
    let before = chrono::Utc::now();
    let record = import(&catalog, &raw, &options("small")).unwrap().record;
    let text = fs::read_to_string(catalog.join("small/image.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(json["imported_at"].as_str().unwrap()).unwrap();
    assert!(at >= before && at <= chrono::Utc::now());
    assert_eq!(json["source_format"], "raw");
    assert_eq!(json["raw_size"], 1000);
    assert_eq!(record.raw_size, 1000);
}
