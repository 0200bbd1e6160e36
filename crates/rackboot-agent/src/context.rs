//! What every step runs with: the environment (a real machine or a
//! simulated one), the cancel flag, the progress cell, and the error type.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rackboot_agent_proto::{Progress, StepReport, error_codes};

/// Why a step failed: the `code`, `message` and `transient` of a
/// [`StepReport::Failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub code: &'static str,
    pub message: String,
    pub transient: bool,
}

impl StepError {
    pub fn new(code: &'static str, message: impl Into<String>, transient: bool) -> StepError {
        StepError {
            code,
            message: message.into(),
            transient,
        }
    }

    /// An I/O error on `what` (a device, a file). Disk errors do not go away
    /// by retrying, except the ones the kernel calls temporary.
    pub fn io(what: impl fmt::Display, e: io::Error) -> StepError {
        let transient = matches!(
            e.kind(),
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) || e.raw_os_error() == Some(libc::EBUSY);
        StepError::new(error_codes::IO, format!("{what}: {e}"), transient)
    }

    pub fn cancelled() -> StepError {
        StepError::new(error_codes::CANCELLED, "cancelled by the server", false)
    }

    pub fn report(&self) -> StepReport {
        StepReport::Failed {
            message: self.message.clone(),
            transient: self.transient,
            code: Some(self.code.to_string()),
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for StepError {}

/// Simulation mode: disks are files, configuration lands in directories.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Holds `disks/` (one regular file per disk), `root/` and `seed/`.
    pub dir: PathBuf,
    /// The one NIC's MAC address.
    pub mac: String,
    /// DMI system serial.
    pub serial: Option<String>,
}

/// Where the agent finds the machine.
#[derive(Debug, Clone)]
pub struct Env {
    /// Prefix of `/proc` and `/sys` (`/` on a machine; a fake tree in tests).
    pub sys_root: PathBuf,
    /// `Some` in simulation mode.
    pub sim: Option<SimConfig>,
}

impl Env {
    pub fn real() -> Env {
        Env {
            sys_root: PathBuf::from("/"),
            sim: None,
        }
    }

    pub fn simulated(sim: SimConfig) -> Env {
        Env {
            sys_root: PathBuf::from("/"),
            sim: Some(sim),
        }
    }

    /// `sys_root` joined with an absolute path such as `/sys/block`.
    pub fn sys(&self, path: &str) -> PathBuf {
        self.sys_root.join(path.trim_start_matches('/'))
    }

    pub fn sim_dir(&self, sub: &str) -> Option<PathBuf> {
        self.sim.as_ref().map(|s| s.dir.join(sub))
    }
}

/// Progress of the running step, read by the main thread for heartbeats and
/// progress posts while the worker updates it.
#[derive(Debug, Default)]
pub struct ProgressCell {
    done: AtomicU64,
    /// 0: unknown.
    total: AtomicU64,
    message: Mutex<String>,
    /// Bumped on every change, so the poster knows whether there is news.
    version: AtomicU64,
}

impl ProgressCell {
    pub fn set(&self, done: u64, total: Option<u64>, message: impl Into<String>) {
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
        *self.message.lock().unwrap_or_else(|e| e.into_inner()) = message.into();
        self.version.fetch_add(1, Ordering::Release);
    }

    pub fn set_done(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Adds to `done` (parallel workers of one step each add their share).
    pub fn add(&self, delta: u64) {
        self.done.fetch_add(delta, Ordering::Relaxed);
        self.version.fetch_add(1, Ordering::Release);
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Option<Progress> {
        if self.version() == 0 {
            return None;
        }
        let total = self.total.load(Ordering::Relaxed);
        Some(Progress {
            done: self.done.load(Ordering::Relaxed),
            total: (total != 0).then_some(total),
            message: self
                .message
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        })
    }
}

/// The server's address and the agent's token: the token is sent only to
/// that server (image URLs may point elsewhere).
#[derive(Clone)]
pub struct ServerAuth {
    pub addr: std::net::SocketAddr,
    pub token: String,
}

impl fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerAuth({}, <token>)", self.addr)
    }
}

impl ServerAuth {
    /// `Authorization` header value for `url`, when it is on this server.
    pub fn header_for(&self, url: &crate::http::Url) -> Option<String> {
        (url.addr == self.addr).then(|| format!("Bearer {}", self.token))
    }
}

/// Knobs tests turn down (the defaults are for machines).
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Image downloads: reconnects after a broken connection.
    pub max_resumes: u32,
    /// First wait before a reconnect; doubles up to 8 times this.
    pub resume_backoff: std::time::Duration,
    pub http: crate::http::Timeouts,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            max_resumes: 10,
            resume_backoff: std::time::Duration::from_secs(1),
            http: crate::http::Timeouts::default(),
        }
    }
}

/// Handed to a step.
#[derive(Clone)]
pub struct StepContext {
    pub env: Arc<Env>,
    pub cancel: Arc<AtomicBool>,
    pub progress: Arc<ProgressCell>,
    pub auth: Option<ServerAuth>,
    pub tuning: Tuning,
}

impl StepContext {
    pub fn new(env: Arc<Env>) -> StepContext {
        StepContext {
            env,
            cancel: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(ProgressCell::default()),
            auth: None,
            tuning: Tuning::default(),
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// `Err(cancelled)` once the server asked to stop: long loops call this.
    pub fn check_cancel(&self) -> Result<(), StepError> {
        if self.is_cancelled() {
            Err(StepError::cancelled())
        } else {
            Ok(())
        }
    }
}

/// Reads a small text file, trimmed; `None` when missing or unreadable.
pub fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}
