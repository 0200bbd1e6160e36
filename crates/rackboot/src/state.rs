//! The state directory: created private (0700), its files 0600, and held by
//! one server at a time through a lock file that names the holder.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::Config;

/// The lock file in the state directory: held (flock) for the server's life,
/// and says who holds it.
pub const LOCK_FILE: &str = "rackboot.lock";

/// A held state directory. Dropping it (the process ending) releases it.
pub struct StateLock {
    file: File,
    path: PathBuf,
    /// This run's id, written in the lock file and shown by `/status`.
    pub instance: String,
}

impl StateLock {
    /// Takes the state directory's lock, or says which server holds it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock> {
        let path = state_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                bail!(
                    "state directory {} is in use by another rackboot ({}); stop it, or give this one another --state-dir",
                    state_dir.display(),
                    describe_holder(&holder)
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.flush().ok();
        let mut lock = StateLock {
            file,
            path,
            instance: uuid::Uuid::new_v4().to_string(),
        };
        lock.record(&[])?;
        Ok(lock)
    }

    /// Rewrites the lock file: this process's id and the addresses it serves on.
    pub fn record(&mut self, addresses: &[(&str, SocketAddr)]) -> Result<()> {
        let mut text = format!("pid={}\n", std::process::id());
        text.push_str(&format!("instance={}\n", self.instance));
        for (name, addr) in addresses {
            text.push_str(&format!("{name}={addr}\n"));
        }
        text.push_str(&format!("started={}\n", chrono::Utc::now().to_rfc3339()));
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file
            .write_all(text.as_bytes())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// The `instance=` of a lock file's text.
pub fn lock_instance(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("instance="))
}

/// "pid 1234, http 127.0.0.1:8080, tftp 127.0.0.1:69" from the lock file's lines.
pub fn describe_holder(text: &str) -> String {
    let parts: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !matches!(*k, "started" | "instance"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if parts.is_empty() {
        "a process that has not said which yet".into()
    } else {
        parts.join(", ")
    }
}

/// Creates the state directory private to its owner (0700, tightened when it
/// exists and is wider), takes its lock and makes the SQLite database 0600:
/// it holds install variables with password hashes. Called after every
/// config check, so a broken config creates nothing.
pub fn prepare(config: &Config) -> Result<StateLock> {
    let dir = &config.state_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating state dir {}", dir.display()))?;
    make_private(dir, 0o700)?;
    let lock = StateLock::acquire(dir)?;
    if let Some(db) = config.sqlite_path() {
        for path in [
            db.clone(),
            PathBuf::from(format!("{}-wal", db.display())),
            PathBuf::from(format!("{}-shm", db.display())),
        ] {
            if path.exists() {
                make_private(&path, 0o600)?;
            }
        }
        if !db.exists() {
            if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&db)
                .with_context(|| format!("creating {}", db.display()))?;
        }
    }
    Ok(lock)
}

/// Sets `mode` on `path` when it grants more than `mode`, saying so.
fn make_private(path: &Path, mode: u32) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let current = meta.permissions().mode() & 0o777;
    if current & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode {mode:o} on {}", path.display()))?;
        tracing::warn!(
            "{} was mode {current:o}; set to {mode:o} (it holds secrets)",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_is_described_from_the_lock_file() {
        assert_eq!(
            describe_holder(
                "pid=42\nhttp=127.0.0.1:8080\ntftp=off\nstarted=2026-01-01T00:00:00Z\n"
            ),
            "pid 42, http 127.0.0.1:8080, tftp off"
        );
        assert_eq!(describe_holder(""), "a process that has not said which yet");
    }

    #[test]
    fn a_second_lock_names_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = StateLock::acquire(dir.path()).unwrap();
        first
            .record(&[("http", "127.0.0.1:8080".parse().unwrap())])
            .unwrap();
        let err = StateLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("http 127.0.0.1:8080"), "{err}");
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }
}
