//! `write_image`: stream a framed zstd image (see
//! [`rackboot_agent_proto::image`]) onto a disk, frame by frame, in bounded
//! memory: one compressed frame buffer and [`HASH_DEPTH`] + 1 raw ones.

use std::io::Read;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rackboot_agent_proto::{ImageManifest, ImageWritten, WriteImageAction, error_codes};
use sha2::{Digest, Sha256};

use crate::alog;
use crate::blockdev::{Device, is_zero};
use crate::context::{StepContext, StepError};
use crate::disk;
use crate::http::{self, HttpError, Response, Url};

/// Granularity of zero detection.
pub const BLOCK: usize = 64 * 1024;

/// Raw frames queued for the hashing thread at most.
pub const HASH_DEPTH: usize = 2;

/// SHA-256 of the raw frames on a thread of its own, so hashing (the step's
/// heaviest CPU work: it sees every byte, zeros included) runs beside the
/// download, decompression and writes of the next frames instead of after
/// them. Frames go in by value and their buffers come back for reuse, so at
/// most [`HASH_DEPTH`] + 1 raw frames exist.
struct FrameHasher {
    frames: Option<mpsc::SyncSender<(Vec<u8>, usize)>>,
    spare: mpsc::Receiver<Vec<u8>>,
    /// A buffer handed back without hashing.
    unused: Option<Vec<u8>>,
    allocated: usize,
    frame_size: usize,
    thread: Option<std::thread::JoinHandle<Sha256>>,
}

impl FrameHasher {
    fn new(frame_size: usize) -> std::io::Result<FrameHasher> {
        let (frames, queued) = mpsc::sync_channel::<(Vec<u8>, usize)>(HASH_DEPTH);
        let (give_back, spare) = mpsc::channel::<Vec<u8>>();
        let thread = std::thread::Builder::new()
            .name("image-hash".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                for (buf, len) in queued {
                    hasher.update(&buf[..len]);
                    // The writer may be gone (an error ended the step).
                    let _ = give_back.send(buf);
                }
                hasher
            })?;
        Ok(FrameHasher {
            frames: Some(frames),
            spare,
            unused: None,
            allocated: 0,
            frame_size,
            thread: Some(thread),
        })
    }

    /// An empty frame buffer: a new one while fewer than the bound exist,
    /// else the next one the hashing thread is done with.
    fn buffer(&mut self) -> Vec<u8> {
        if let Some(buf) = self.unused.take() {
            return buf;
        }
        if let Ok(buf) = self.spare.try_recv() {
            return buf;
        }
        if self.allocated <= HASH_DEPTH {
            self.allocated += 1;
            return vec![0u8; self.frame_size];
        }
        // The thread holds every buffer and gives each back after hashing
        // it; it only stops when `frames` is dropped, which `finish` does.
        self.spare
            .recv()
            .unwrap_or_else(|_| vec![0u8; self.frame_size])
    }

    /// Returns an unhashed buffer for reuse (frames checked another way).
    fn give_back(&mut self, buf: Vec<u8>) {
        self.unused = Some(buf);
    }

    /// Queues `buf[..len]`, the next raw bytes in image order.
    fn hash(&mut self, buf: Vec<u8>, len: usize) {
        if let Some(frames) = &self.frames {
            // Fails only if the thread panicked; `finish` reports that.
            let _ = frames.send((buf, len));
        }
    }

    /// The lower-case hex digest of everything queued.
    fn finish(mut self) -> Result<String, StepError> {
        self.frames = None;
        let hasher = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .ok_or_else(|| StepError::new(error_codes::IO, "the hashing thread died", false))?;
        Ok(hex(&hasher.finalize()))
    }
}

impl Drop for FrameHasher {
    fn drop(&mut self) {
        self.frames = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn download_error(message: String, transient: bool) -> StepError {
    StepError::new(error_codes::DOWNLOAD, message, transient)
}

fn get(ctx: &StepContext, url: &Url, range_from: Option<u64>) -> Result<Response, HttpError> {
    let auth = ctx.auth.as_ref().and_then(|a| a.header_for(url));
    let range = range_from.map(|o| format!("bytes={o}-"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    if let Some(r) = &range {
        headers.push(("Range", r.as_str()));
    }
    http::send("GET", url, &headers, None, ctx.tuning.http)
}

/// Fetches and checks the manifest against what the action expects.
pub fn fetch_manifest(
    ctx: &StepContext,
    action: &WriteImageAction,
) -> Result<ImageManifest, StepError> {
    let url = Url::parse(&action.manifest_url).map_err(|e| download_error(e.to_string(), false))?;
    let mut last = String::new();
    for attempt in 0..5u32 {
        ctx.check_cancel()?;
        if attempt > 0 {
            std::thread::sleep(ctx.tuning.resume_backoff * attempt);
        }
        let resp = match get(ctx, &url, None) {
            Ok(r) => r,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        if resp.status >= 500 {
            last = format!("GET {url}: HTTP {}", resp.status);
            continue;
        }
        if !resp.is_success() {
            return Err(download_error(
                format!("GET {url}: HTTP {}", resp.status),
                false,
            ));
        }
        let body = match resp.read_body(64 << 20) {
            Ok(b) => b,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        if let Some(want) = &action.manifest_sha256 {
            let got = hex(&Sha256::digest(&body));
            if !got.eq_ignore_ascii_case(want) {
                // Damaged on the way, or replaced since the deploy began.
                last = format!("manifest {url}: its SHA-256 is {got}, the deploy expects {want}");
                continue;
            }
        }
        let manifest: ImageManifest = serde_json::from_slice(&body)
            .map_err(|e| download_error(format!("manifest {url}: {e}"), false))?;
        manifest
            .validate()
            .map_err(|e| download_error(format!("{url}: {e}"), false))?;
        if manifest.raw_size != action.raw_size
            || !manifest.sha256.eq_ignore_ascii_case(&action.sha256)
        {
            return Err(download_error(
                format!(
                    "manifest {url} describes {} bytes with sha256 {}, the action expects {} bytes with sha256 {}",
                    manifest.raw_size, manifest.sha256, action.raw_size, action.sha256
                ),
                false,
            ));
        }
        return Ok(manifest);
    }
    Err(download_error(format!("manifest: {last}"), true))
}

/// Parses the start of `Content-Range: bytes START-END/TOTAL`.
pub fn content_range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

/// Writes runs of blocks: non-zero bytes go out with pwrite; zero runs are
/// collected across frames and zeroed (or skipped) in one request.
struct BlockWriter<'a> {
    dev: &'a Device,
    skip_zeros: bool,
    pending_zero: Option<(u64, u64)>,
    zero_bytes: u64,
}

impl BlockWriter<'_> {
    fn write(&mut self, data: &[u8], offset: u64) -> std::io::Result<()> {
        let mut data_run: Option<(usize, usize)> = None;
        for (i, block) in data.chunks(BLOCK).enumerate() {
            let start = i * BLOCK;
            if is_zero(block) {
                if let Some((s, e)) = data_run.take() {
                    self.dev.write_at(&data[s..e], offset + s as u64)?;
                }
                let at = offset + start as u64;
                match &mut self.pending_zero {
                    Some((zs, zl)) if *zs + *zl == at => *zl += block.len() as u64,
                    _ => {
                        self.flush_zeros()?;
                        self.pending_zero = Some((at, block.len() as u64));
                    }
                }
            } else {
                self.flush_zeros()?;
                match &mut data_run {
                    Some((_, e)) => *e = start + block.len(),
                    None => data_run = Some((start, start + block.len())),
                }
            }
        }
        if let Some((s, e)) = data_run {
            self.dev.write_at(&data[s..e], offset + s as u64)?;
        }
        Ok(())
    }

    fn flush_zeros(&mut self) -> std::io::Result<()> {
        if let Some((offset, len)) = self.pending_zero.take() {
            self.zero_bytes += len;
            if !self.skip_zeros {
                self.dev.zero_range(offset, len)?;
            }
        }
        Ok(())
    }
}

/// The `write_image` step.
pub fn run(ctx: &StepContext, action: &WriteImageAction) -> Result<ImageWritten, StepError> {
    let started = Instant::now();
    let disk = disk::resolve(&ctx.env, &action.target)?;
    let manifest = fetch_manifest(ctx, action)?;
    if disk.size < manifest.raw_size {
        return Err(StepError::new(
            error_codes::TOO_SMALL,
            format!(
                "{} holds {} bytes, the image {} needs {}",
                action.target.path, disk.size, action.image, manifest.raw_size
            ),
            false,
        ));
    }
    let data_url =
        Url::parse(&action.data_url).map_err(|e| download_error(e.to_string(), false))?;
    let dev = Device::open(&disk.dev).map_err(|e| StepError::io(disk.dev.display(), e))?;
    alog!(
        "writing image {} ({} bytes, {} frames) to {}",
        action.image,
        manifest.raw_size,
        manifest.frames(),
        action.target.path
    );

    // A frame can be at most zstd's bound for its raw size: a manifest
    // claiming more would make the agent allocate without limit.
    let bound = zstd::zstd_safe::compress_bound(manifest.frame_raw_size as usize);
    let max_compressed = (0..manifest.frames())
        .map(|i| {
            let r = manifest.compressed_range(i);
            r.end - r.start
        })
        .max()
        .unwrap_or(0);
    if max_compressed > bound as u64 {
        return Err(download_error(
            format!("manifest lists a {max_compressed}-byte frame, more than zstd's bound {bound}"),
            false,
        ));
    }
    let mut compressed = vec![0u8; max_compressed as usize];
    let mut decompressor = zstd::bulk::Decompressor::new()
        .map_err(|e| StepError::new(error_codes::IO, format!("zstd: {e}"), false))?;
    // A manifest bound to the deploy by its own SHA-256 lists each frame's:
    // each frame is checked as it arrives (and fetched again if damaged), at
    // the cost of the bytes downloaded. Otherwise every raw byte is hashed.
    let per_frame = action.manifest_sha256.is_some() && !manifest.frame_sha256.is_empty();
    let mut hasher = FrameHasher::new(manifest.frame_raw_size as usize)
        .map_err(|e| StepError::new(error_codes::IO, format!("hashing thread: {e}"), false))?;
    let mut bad_frames = 0u32;
    let mut writer = BlockWriter {
        dev: &dev,
        skip_zeros: action.device_reads_zeros,
        pending_zero: None,
        zero_bytes: 0,
    };
    let mut stream: Option<Response> = None;
    let mut downloaded = 0u64;
    let mut resumes = 0u32;
    let mut failures = 0u32;
    let progress_message = format!("writing {} to {}", action.image, action.target.path);
    ctx.progress
        .set(0, Some(manifest.raw_size), progress_message.as_str());

    let mut frame = 0;
    while frame < manifest.frames() {
        ctx.check_cancel()?;
        let range = manifest.compressed_range(frame);
        let len = (range.end - range.start) as usize;
        let read = match stream.as_mut() {
            Some(s) => read_counted(s, &mut compressed[..len], &mut downloaded),
            None => Err(String::new()),
        };
        if let Err(why) = read {
            if stream.is_some() {
                // A broken connection: resume at this frame.
                if failures >= ctx.tuning.max_resumes {
                    return Err(download_error(
                        format!("{data_url}: {why} (gave up after {failures} reconnects)"),
                        true,
                    ));
                }
                failures += 1;
                resumes += 1;
                alog!(
                    "download of {} broke at frame {frame} ({why}); resuming at byte {}",
                    action.image,
                    range.start
                );
                std::thread::sleep(backoff(ctx, failures));
            }
            stream = None;
            match open_at(ctx, &data_url, range.start) {
                Ok(s) => stream = Some(s),
                Err((why, transient)) => {
                    if !transient || failures >= ctx.tuning.max_resumes {
                        return Err(download_error(why, transient));
                    }
                    failures += 1;
                    alog!("{why}; retrying");
                    std::thread::sleep(backoff(ctx, failures));
                }
            }
            continue;
        }
        if per_frame {
            let got = hex(&Sha256::digest(&compressed[..len]));
            if !got.eq_ignore_ascii_case(&manifest.frame_sha256[frame]) {
                if bad_frames >= ctx.tuning.max_resumes {
                    return Err(StepError::new(
                        error_codes::CHECKSUM_MISMATCH,
                        format!(
                            "{data_url}: frame {frame} hashes to {got}, the manifest says {} (after {bad_frames} downloads again)",
                            manifest.frame_sha256[frame]
                        ),
                        true,
                    ));
                }
                bad_frames += 1;
                failures += 1;
                alog!(
                    "frame {frame} of {} arrived damaged; fetching it again",
                    action.image
                );
                stream = None;
                continue;
            }
        }
        let want = manifest.raw_range(frame);
        let want_len = (want.end - want.start) as usize;
        let mut raw = hasher.buffer();
        let n = decompressor
            .decompress_to_buffer(&compressed[..len], &mut raw[..])
            .map_err(|e| {
                StepError::new(
                    error_codes::CHECKSUM_MISMATCH,
                    format!("{data_url}: frame {frame} is corrupt: {e}"),
                    true,
                )
            })?;
        if n != want_len {
            return Err(StepError::new(
                error_codes::CHECKSUM_MISMATCH,
                format!("{data_url}: frame {frame} holds {n} bytes, expected {want_len}"),
                true,
            ));
        }
        writer
            .write(&raw[..n], want.start)
            .map_err(|e| StepError::io(format!("writing {}", action.target.path), e))?;
        if per_frame {
            hasher.give_back(raw);
        } else {
            hasher.hash(raw, n);
        }
        ctx.progress.set_done(want.end);
        frame += 1;
    }
    writer
        .flush_zeros()
        .map_err(|e| StepError::io(format!("zeroing on {}", action.target.path), e))?;
    dev.sync()
        .map_err(|e| StepError::io(format!("fsync {}", action.target.path), e))?;
    // With per-frame checks every frame matched a manifest whose own digest
    // the deploy fixed, and that manifest names the raw SHA-256.
    let whole = hasher.finish()?;
    let sha256 = if per_frame {
        manifest.sha256.to_ascii_lowercase()
    } else {
        whole
    };
    if !sha256.eq_ignore_ascii_case(&manifest.sha256) {
        return Err(StepError::new(
            error_codes::CHECKSUM_MISMATCH,
            format!(
                "{}: the written bytes hash to {sha256}, the image's sha256 is {}",
                action.target.path, manifest.sha256
            ),
            true,
        ));
    }
    disk::settle_partitions(&ctx.env, &disk, &dev);
    let out = ImageWritten {
        target: action.target.path.clone(),
        raw_bytes: manifest.raw_size,
        zero_bytes: writer.zero_bytes,
        downloaded_bytes: downloaded,
        sha256,
        resumes,
        millis: started.elapsed().as_millis() as u64,
    };
    alog!(
        "image {} written to {}: {} bytes ({} zeros), {} downloaded, {} resumes, {} ms",
        action.image,
        out.target,
        out.raw_bytes,
        out.zero_bytes,
        out.downloaded_bytes,
        out.resumes,
        out.millis
    );
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn backoff(ctx: &StepContext, failures: u32) -> Duration {
    ctx.tuning.resume_backoff * (1u32 << failures.saturating_sub(1).min(3))
}

fn read_counted(s: &mut Response, buf: &mut [u8], counter: &mut u64) -> Result<(), String> {
    let mut filled = 0;
    while filled < buf.len() {
        match s.read(&mut buf[filled..]) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => {
                filled += n;
                *counter += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Opens the data URL at a byte offset. Errors say whether to retry.
fn open_at(ctx: &StepContext, url: &Url, offset: u64) -> Result<Response, (String, bool)> {
    let resp = get(ctx, url, (offset > 0).then_some(offset)).map_err(|e| (e.to_string(), true))?;
    let status = resp.status;
    if status >= 500 || status == 408 || status == 429 {
        return Err((format!("GET {url}: HTTP {status}"), true));
    }
    if offset == 0 && status == 200 {
        return Ok(resp);
    }
    if status != 206 {
        return Err((
            format!("GET {url} from byte {offset}: HTTP {status}, expected 206 Partial Content"),
            false,
        ));
    }
    let start = resp.header("content-range").and_then(content_range_start);
    if start != Some(offset) {
        return Err((
            format!(
                "GET {url} from byte {offset}: Content-Range {:?} starts elsewhere",
                resp.header("content-range")
            ),
            false,
        ));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        for (v, want) in [
            ("bytes 100-199/200", Some(100)),
            ("bytes 0-0/1", Some(0)),
            ("bytes */200", None),
            ("items 1-2/3", None),
        ] {
            assert_eq!(content_range_start(v), want, "{v}");
        }
    }
}
