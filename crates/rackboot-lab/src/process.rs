//! Processes the lab starts: each in its own process group, output to a log file, stopped by PID.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::state::{ProcessRecord, SharedState};
use crate::{LabError, Result, io_err};

/// How long a process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(100);

/// A process the lab started (QEMU, the server under test, dnsmasq, ...). It leads its own process
/// group; stopping it signals that group only. Dropping it stops it.
pub struct LabProcess {
    name: String,
    pid: u32,
    log: PathBuf,
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
    state: Option<SharedState>,
}

impl std::fmt::Debug for LabProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabProcess")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("log", &self.log)
            .finish()
    }
}

impl LabProcess {
    /// Spawns `cmd` with stdin from /dev/null and stdout+stderr appended to `log`, records it in the
    /// lab state file (if any) so `down` from another process can stop it.
    pub(crate) fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        state: Option<SharedState>,
    ) -> Result<LabProcess> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err(format!("open log {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("clone log {}", log.display())))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(io_err(format!("spawn {name}: {cmd:?}")))?;
        let pid = child.id();
        tracing::debug!(name, pid, log = %log.display(), "lab process started");
        let process = LabProcess {
            name: name.to_string(),
            pid,
            log: log.to_path_buf(),
            child: Mutex::new(child),
            exit: Mutex::new(None),
            state,
        };
        if let Some(state) = &process.state {
            let record = ProcessRecord {
                name: name.to_string(),
                pid,
                start_time: start_time(pid).unwrap_or(0),
            };
            lock(state).add(record)?;
        }
        Ok(process)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The file that receives the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process has written so far (lossy UTF-8).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The exit status if the process has exited (reaps it), without blocking.
    pub fn try_status(&self) -> Result<Option<ExitStatus>> {
        let mut exit = lock(&self.exit);
        if exit.is_none() {
            let status = lock(&self.child)
                .try_wait()
                .map_err(io_err(format!("wait for {}", self.name)))?;
            if let Some(status) = status {
                *exit = Some(status);
                self.forget_record();
            }
        }
        Ok(*exit)
    }

    pub fn is_running(&self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if started.elapsed() > timeout {
                return Err(LabError::Timeout {
                    pattern: format!("{} to exit", self.name),
                    log: self.log.clone(),
                    timeout,
                    tail: tail(&self.output(), 20),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the process's output contains `pattern`; returns the line holding it.
    pub async fn wait_for_output(&self, pattern: &str, timeout: Duration) -> Result<String> {
        wait_for_pattern(self, &self.log, 0, pattern, timeout).await
    }

    /// SIGTERM to the process group, SIGKILL after a grace period, then reaps the process.
    pub fn stop(&self) -> Result<()> {
        self.signal_until_exit(Some(Signal::SIGTERM))
    }

    /// SIGKILL to the process group at once (a power cut for a VM), then reaps the process.
    pub fn kill(&self) -> Result<()> {
        self.signal_until_exit(None)
    }

    fn signal_until_exit(&self, first: Option<Signal>) -> Result<()> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        let group = Pid::from_raw(self.pid as i32);
        if let Some(signal) = first {
            // ESRCH only means it is already gone; try_status below settles it.
            let _ = killpg(group, signal);
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if self.try_status()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = killpg(group, Signal::SIGKILL);
        let status = lock(&self.child)
            .wait()
            .map_err(io_err(format!("reap {}", self.name)))?;
        *lock(&self.exit) = Some(status);
        self.forget_record();
        Ok(())
    }

    fn forget_record(&self) {
        if let Some(state) = &self.state
            && let Err(err) = lock(state).remove(self.pid)
        {
            tracing::warn!(%err, "could not update lab state file");
        }
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            tracing::warn!(name = self.name, pid = self.pid, %err, "stopping lab process");
        }
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `log` (from byte `from`) until it contains `pattern`, the process exits, or `timeout`.
pub(crate) async fn wait_for_pattern(
    process: &LabProcess,
    log: &Path,
    from: u64,
    pattern: &str,
    timeout: Duration,
) -> Result<String> {
    let started = Instant::now();
    loop {
        // Read before checking the exit status so output written just before exiting is seen.
        let exited = process.try_status()?;
        let text = read_from(log, from);
        if let Some(line) = find_line(&text, pattern) {
            return Ok(line);
        }
        if let Some(status) = exited {
            return Err(LabError::Exited {
                name: process.name.clone(),
                status,
                pattern: pattern.to_string(),
                log: log.to_path_buf(),
                tail: tail(&text, 20),
            });
        }
        if started.elapsed() > timeout {
            return Err(LabError::Timeout {
                pattern: pattern.to_string(),
                log: log.to_path_buf(),
                timeout,
                tail: tail(&text, 20),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The contents of `path` after byte `from`, lossy UTF-8; empty if the file does not exist yet.
pub(crate) fn read_from(path: &Path, from: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = (from as usize).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The line (without ANSI escapes and line-end junk) that contains `pattern`, searched on the
/// escape-free text so firmware colour codes inside a phrase don't hide it.
pub(crate) fn find_line(text: &str, pattern: &str) -> Option<String> {
    let clean = strip_ansi(text);
    let at = clean.find(pattern)?;
    let start = clean[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = clean[at..].find('\n').map_or(clean.len(), |i| at + i);
    Some(
        clean[start..end]
            .trim_matches(|c: char| c == '\r' || c == ' ')
            .to_string(),
    )
}

/// Removes ANSI CSI/ESC sequences, backspaces and carriage returns (firmware consoles are full of them).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            // ESC [ ... final byte is a CSI sequence; ESC + one char (e.g. ESC c) is a short one.
            '\u{1b}' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            // Backspace moves the cursor left and the next character overwrites: approximating it
            // by deleting keeps erased prompts ("Press Ctrl-B ...") out of the text.
            '\u{8}' => {
                if out.chars().next_back().is_some_and(|c| c != '\n') {
                    out.pop();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// The last `lines` lines of `text`, escape-free, for error messages.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let clean = strip_ansi(text);
    let all: Vec<&str> = clean.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = all.len().saturating_sub(lines);
    all[from..]
        .iter()
        .map(|l| {
            let l = l.trim_end();
            if l.len() > 200 {
                let mut cut = 200;
                while !l.is_char_boundary(cut) {
                    cut -= 1;
                }
                &l[..cut]
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The start time (clock ticks since boot, /proc/PID/stat field 22) of a process, so a recorded PID
/// is only signalled while it still names the process we started.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state); field 22 is index 19.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Stops a process group that this process did not spawn (from a state file): SIGTERM, then
/// SIGKILL after the grace period. Only signals while the PID still has the recorded start time.
pub(crate) fn stop_recorded(pid: u32, recorded_start: u64) -> bool {
    let alive = || start_time(pid).is_some_and(|t| recorded_start == 0 || t == recorded_start);
    if !alive() {
        return false;
    }
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if !alive() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(group, Signal::SIGKILL);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_line_strips_escapes_and_returns_whole_line() {
        let text = "junk\r\n\u{1b}[0;1miPXE 1.0\u{1b}[0m -- x\r\n\u{1b}c\u{1b}[?7l\u{1b}[2JRACKBOOT-TEST-MARKER booted cmdline=a b\r\n[ 2.6] reboot\r\n";
        assert_eq!(
            find_line(text, "RACKBOOT-TEST-MARKER").as_deref(),
            Some("RACKBOOT-TEST-MARKER booted cmdline=a b")
        );
        assert_eq!(
            find_line(text, "iPXE 1.0 --").as_deref(),
            Some("iPXE 1.0 -- x")
        );
        assert_eq!(find_line(text, "No bootable device"), None);
    }

    #[test]
    fn strip_ansi_removes_backspaces_and_cursor_moves() {
        assert_eq!(strip_ansi("a\u{8} \u{8}b\u{1b}[01;01Hc\u{1b}[=3hd"), "bcd");
        assert_eq!(strip_ansi("x\n\u{8}y"), "x\ny");
        // pxelinux's SAY line as SeaBIOS's serial console printed it in a CI run.
        assert_eq!(
            strip_ansi("rackboot-t\u{1b}[25;10H\u{1b}[25;11Hftp-ok 10.77.0.111\r\n"),
            "rackboot-tftp-ok 10.77.0.111\n"
        );
        // iPXE erases its prompt with backspace-space-backspace.
        let prompt = format!("Press Ctrl-B{}BdsDxe", "\u{8} \u{8}".repeat(12));
        assert_eq!(strip_ansi(&prompt), "BdsDxe");
    }

    #[test]
    fn tail_keeps_last_nonempty_lines() {
        assert_eq!(tail("1\n\n2\n3\n", 2), "2\n3");
    }

    #[test]
    fn start_time_of_self_is_stable_and_of_nonexistent_is_none() {
        let me = std::process::id();
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
        // PIDs are capped well below this on Linux (pid_max <= 4194304).
        assert_eq!(start_time(999_999_999), None);
    }

    #[test]
    fn read_from_missing_file_is_empty() {
        assert_eq!(read_from(Path::new("/nonexistent/rackboot-lab.log"), 0), "");
    }
}
