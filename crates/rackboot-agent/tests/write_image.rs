//! write_image against a real HTTP server (std TcpListener) serving a framed
//! image built here; the disk is a sparse file (simulation mode).

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Reply, TestServer, build_image, range_reply, sample_raw};
use rackboot_agent::context::{Env, SimConfig, StepContext, Tuning};
use rackboot_agent::steps::image;
use rackboot_agent_proto::{DiskTarget, ImageManifest, WriteImageAction};

const MIB: u64 = 1 << 20;

struct Setup {
    _dir: tempfile::TempDir,
    disk: std::path::PathBuf,
    ctx: StepContext,
}

fn setup(disk_size: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("disks")).unwrap();
    let disk = dir.path().join("disks/vda");
    // Old contents everywhere, so zero runs must really be zeroed.
    std::fs::write(&disk, vec![0x5au8; disk_size as usize]).unwrap();
    let env = Env::simulated(SimConfig {
        dir: dir.path().into(),
        mac: "52:54:00:00:00:01".into(),
        serial: None,
    });
    let mut ctx = StepContext::new(Arc::new(env));
    ctx.tuning = Tuning {
        max_resumes: 10,
        resume_backoff: Duration::from_millis(20),
        http: Default::default(),
    };
    Setup {
        _dir: dir,
        disk,
        ctx,
    }
}

fn action(server: &TestServer, m: &ImageManifest, disk_size: u64) -> WriteImageAction {
    WriteImageAction {
        image: "test".into(),
        manifest_url: server.url("/images/test/manifest.json"),
        data_url: server.url("/images/test/disk.zst"),
        raw_size: m.raw_size,
        sha256: m.sha256.clone(),
        manifest_sha256: None,
        target: DiskTarget {
            path: "/dev/vda".into(),
            size_bytes: Some(disk_size),
            serial: None,
        },
        device_reads_zeros: false,
    }
}

/// Serves the manifest and the data; `tamper` may change a data reply.
fn image_server(
    manifest: &ImageManifest,
    data: Vec<u8>,
    tamper: impl Fn(usize, Reply) -> Reply + Send + Sync + 'static,
) -> TestServer {
    let manifest_json = serde_json::to_value(manifest).unwrap();
    let data_requests = AtomicUsize::new(0);
    TestServer::start(move |req| {
        if req.path.ends_with("manifest.json") {
            Reply::json(200, &manifest_json)
        } else if req.path.ends_with("disk.zst") {
            let n = data_requests.fetch_add(1, Ordering::SeqCst);
            tamper(n, range_reply(req, &data))
        } else {
            Reply::bytes(404, vec![])
        }
    })
}

#[test]
fn writes_the_image_sparsely_and_verifies_it() {
    let raw = sample_raw();
    let (manifest, data) = build_image(&raw);
    let disk_size = 8 * MIB;
    let s = setup(disk_size);
    let server = image_server(&manifest, data.clone(), |_, r| r);
    let out = image::run(&s.ctx, &action(&server, &manifest, disk_size)).unwrap();
    assert_eq!(out.raw_bytes, raw.len() as u64);
    assert_eq!(out.zero_bytes, 5 * MIB / 2);
    assert_eq!(out.downloaded_bytes, data.len() as u64);
    assert_eq!(out.resumes, 0);
    assert_eq!(out.sha256, manifest.sha256);
    let written = std::fs::read(&s.disk).unwrap();
    assert_eq!(&written[..raw.len()], &raw[..]);
    // Past the image the disk is untouched.
    assert!(written[raw.len()..].iter().all(|&b| b == 0x5a));
    // Zero runs are holes now: allocated = data + the untouched tail.
    let allocated = std::fs::metadata(&s.disk).unwrap().blocks() * 512;
    let data_bytes = raw.len() as u64 - out.zero_bytes + (disk_size - raw.len() as u64);
    assert!(
        allocated <= data_bytes + 64 * 1024,
        "{allocated} bytes allocated for {data_bytes} of data"
    );
    let p = s.ctx.progress.snapshot().unwrap();
    assert_eq!(
        (p.done, p.total),
        (raw.len() as u64, Some(raw.len() as u64))
    );
    // The first request asked for everything; no Range.
    let reqs = server.requests_to("/images/test/disk.zst");
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].header("range").is_none());
}

#[test]
fn a_cut_connection_resumes_at_the_next_frame() {
    let raw = sample_raw();
    let (manifest, data) = build_image(&raw);
    // Cut the first two responses in the middle of a frame: frame 1, then
    // (the second response starting at frame 1) frame 3.
    let o = &manifest.frame_offsets;
    let cuts = [(o[1] + o[2]) / 2, (o[3] - o[1]) + (o[4] - o[3]) / 3];
    let s = setup(8 * MIB);
    let server = image_server(&manifest, data.clone(), move |n, mut r| {
        if let Some(cut) = cuts.get(n) {
            r.cut_after = Some(*cut as usize);
        }
        r
    });
    let out = image::run(&s.ctx, &action(&server, &manifest, 8 * MIB)).unwrap();
    assert_eq!(out.resumes, 2);
    assert!(out.downloaded_bytes > data.len() as u64);
    assert_eq!(out.sha256, manifest.sha256);
    assert_eq!(&std::fs::read(&s.disk).unwrap()[..raw.len()], &raw[..]);
    let ranges: Vec<Option<String>> = server
        .requests_to("/images/test/disk.zst")
        .iter()
        .map(|r| r.header("range").map(str::to_string))
        .collect();
    assert_eq!(
        ranges,
        [
            None,
            Some(format!("bytes={}-", manifest.frame_offsets[1])),
            Some(format!("bytes={}-", manifest.frame_offsets[3])),
        ]
    );
}

#[test]
fn a_corrupted_frame_is_a_transient_checksum_mismatch() {
    let raw = sample_raw();
    let (manifest, mut data) = build_image(&raw);
    // Flip bytes inside frame 0's data, and separately inside frame 5's.
    for (frame, delta) in [(0usize, 0x40u8), (5, 0x01)] {
        let mut bad = data.clone();
        let r = manifest.compressed_range(frame);
        let mid = ((r.start + r.end) / 2) as usize;
        bad[mid] ^= delta;
        let s = setup(8 * MIB);
        let server = image_server(&manifest, bad, |_, r| r);
        let e = image::run(&s.ctx, &action(&server, &manifest, 8 * MIB)).unwrap_err();
        assert_eq!(e.code, "checksum_mismatch", "frame {frame}: {e}");
        assert!(e.transient);
    }
    data.truncate(0);
}

#[test]
fn well_formed_frames_of_other_bytes_fail_the_whole_image_checksum() {
    // Every frame decompresses, but one holds other bytes than the image
    // the manifest hashes: only the SHA-256 over all frames (on the hashing
    // thread, in frame order, through recycled buffers) can tell.
    let raw = sample_raw();
    let (manifest, _) = build_image(&raw);
    let mut other = raw.clone();
    other[(5 * MIB + 17) as usize] ^= 0x80;
    let (other_manifest, other_data) = build_image(&other);
    assert_eq!(
        other_manifest.frame_offsets.len(),
        manifest.frame_offsets.len()
    );
    let mut served = manifest.clone();
    served.frame_offsets = other_manifest.frame_offsets.clone();
    let s = setup(8 * MIB);
    let server = image_server(&served, other_data, |_, r| r);
    let e = image::run(&s.ctx, &action(&server, &served, 8 * MIB)).unwrap_err();
    assert_eq!(e.code, "checksum_mismatch", "{e}");
    assert!(e.transient);
    assert!(e.message.contains(&manifest.sha256), "{e}");
}

/// The action of a deploy whose catalog recorded the manifest's digest:
/// frames are checked one by one.
fn per_frame_action(server: &TestServer, m: &ImageManifest, disk_size: u64) -> WriteImageAction {
    let json = serde_json::to_vec(&serde_json::to_value(m).unwrap()).unwrap();
    WriteImageAction {
        manifest_sha256: Some(common::sha256_hex(&json)),
        ..action(server, m, disk_size)
    }
}

#[test]
fn per_frame_checks_write_the_image_and_refetch_a_damaged_frame() {
    let raw = sample_raw();
    let (manifest, data) = build_image(&raw);
    // The first response has a flipped byte in frame 2: it decompresses or
    // not, but its SHA-256 is wrong, so it is fetched again from there.
    let r2 = manifest.compressed_range(2);
    let flip = ((r2.start + r2.end) / 2) as usize;
    let s = setup(8 * MIB);
    let server = image_server(&manifest, data.clone(), move |n, mut r| {
        if n == 0 {
            r.body[flip] ^= 0x10;
        }
        r
    });
    let out = image::run(&s.ctx, &per_frame_action(&server, &manifest, 8 * MIB)).unwrap();
    assert_eq!(out.sha256, manifest.sha256);
    assert_eq!(&std::fs::read(&s.disk).unwrap()[..raw.len()], &raw[..]);
    let ranges: Vec<Option<String>> = server
        .requests_to("/images/test/disk.zst")
        .iter()
        .map(|r| r.header("range").map(str::to_string))
        .collect();
    assert_eq!(ranges, vec![None, Some(format!("bytes={}-", r2.start))]);
}

#[test]
fn per_frame_checks_give_up_on_a_frame_that_stays_damaged() {
    let raw = sample_raw();
    let (manifest, mut data) = build_image(&raw);
    let r4 = manifest.compressed_range(4);
    data[((r4.start + r4.end) / 2) as usize] ^= 0x01;
    let s = setup(8 * MIB);
    let server = image_server(&manifest, data, |_, r| r);
    let e = image::run(&s.ctx, &per_frame_action(&server, &manifest, 8 * MIB)).unwrap_err();
    assert_eq!(e.code, "checksum_mismatch", "{e}");
    assert!(e.transient);
    assert!(e.message.contains("frame 4"), "{e}");
}

#[test]
fn a_manifest_that_is_not_the_deploys_is_refused() {
    let raw = sample_raw();
    let (manifest, data) = build_image(&raw);
    let s = setup(8 * MIB);
    let server = image_server(&manifest, data, |_, r| r);
    let mut a = per_frame_action(&server, &manifest, 8 * MIB);
    a.manifest_sha256 = Some("ab".repeat(32));
    let e = image::run(&s.ctx, &a).unwrap_err();
    assert!(e.message.contains("the deploy expects"), "{e}");
    // Nothing was written.
    assert!(std::fs::read(&s.disk).unwrap().iter().all(|&b| b == 0x5a));
}

#[test]
fn refusals_before_writing() {
    let raw = sample_raw();
    let (manifest, data) = build_image(&raw);
    let server = image_server(&manifest, data, |_, r| r);

    // A disk smaller than the image.
    let small = setup(4 * MIB);
    let e = image::run(&small.ctx, &action(&server, &manifest, 4 * MIB)).unwrap_err();
    assert_eq!((e.code, e.transient), ("too_small", false), "{e}");
    assert!(
        std::fs::read(&small.disk)
            .unwrap()
            .iter()
            .all(|&b| b == 0x5a)
    );

    // A manifest other than the one the server promised.
    let s = setup(8 * MIB);
    let mut a = action(&server, &manifest, 8 * MIB);
    a.sha256 = "ab".repeat(32);
    let e = image::run(&s.ctx, &a).unwrap_err();
    assert_eq!(e.code, "download");
    assert!(e.message.contains("the action expects"), "{e}");

    // A disk of another size than the server expects.
    let e = image::run(&s.ctx, &action(&server, &manifest, 16 * MIB)).unwrap_err();
    assert_eq!(e.code, "disk_mismatch");

    // Cancelled before starting.
    s.ctx.cancel.store(true, Ordering::Relaxed);
    let e = image::run(&s.ctx, &action(&server, &manifest, 8 * MIB)).unwrap_err();
    assert_eq!(e.code, "cancelled");
}

#[test]
fn skipping_zeros_on_a_device_that_reads_zeros() {
    let raw = sample_raw();
    let (manifest, data) = build_image(&raw);
    let s = setup(8 * MIB);
    // A freshly erased disk: all zeros, all holes.
    std::fs::write(&s.disk, b"").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&s.disk)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    let server = image_server(&manifest, data, |_, r| r);
    let mut a = action(&server, &manifest, 8 * MIB);
    a.device_reads_zeros = true;
    let out = image::run(&s.ctx, &a).unwrap();
    assert_eq!(out.zero_bytes, 5 * MIB / 2);
    assert_eq!(&std::fs::read(&s.disk).unwrap()[..raw.len()], &raw[..]);
    let allocated = std::fs::metadata(&s.disk).unwrap().blocks() * 512;
    assert!(allocated <= 3 * MIB + 64 * 1024, "{allocated}");
}
