//! How boot HTTP opens files in its served trees (/assets, /os, /images,
//! /ramdisk, /boot/loader): only regular files (and directories, to say they
//! are not files). A FIFO in a tree would hold the worker that opens it until
//! a writer came (a plain `open` blocks), and a device may have effects when
//! opened; both are refused, the refusal is reported to the caller.

use std::future::Future;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, ReadBuf};
use tower_http::services::fs::{Backend, File};

/// A `ServeDir` backend that refuses non-regular files; [`refused`](Self::refused)
/// tells whether it did (one backend per request).
#[derive(Debug, Clone, Default)]
pub(crate) struct RegularFiles {
    refused: Arc<AtomicBool>,
}

impl RegularFiles {
    pub(crate) fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }
}

fn not_regular(path: &Path) -> io::Error {
    io::Error::other(format!("{} is not a regular file", path.display()))
}

fn is_special(meta: &std::fs::Metadata) -> bool {
    !meta.is_file() && !meta.is_dir()
}

/// Opens `path` for reading if it is a regular file; `Ok(None)` if it is
/// anything else. Blocking.
fn open_regular(path: &Path) -> io::Result<Option<std::fs::File>> {
    // A first look by path keeps devices from being opened at all; the check
    // that counts is on the opened descriptor (race-free).
    if std::fs::metadata(path).is_ok_and(|m| is_special(&m)) {
        return Ok(None);
    }
    // O_NONBLOCK: opening a FIFO does not wait for a writer (reads of a
    // regular file are unaffected). O_NOCTTY: no controlling terminal.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    Ok(file.metadata()?.is_file().then_some(file))
}

impl Backend for RegularFiles {
    type File = RegularFile;
    type Metadata = std::fs::Metadata;
    type OpenFuture = Pin<Box<dyn Future<Output = io::Result<RegularFile>> + Send>>;
    type MetadataFuture = Pin<Box<dyn Future<Output = io::Result<std::fs::Metadata>> + Send>>;

    fn open(&self, path: PathBuf) -> Self::OpenFuture {
        let refused = self.refused.clone();
        Box::pin(async move {
            let opened = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || open_regular(&path))
                    .await
                    .map_err(io::Error::other)??
            };
            match opened {
                Some(file) => Ok(RegularFile(tokio::fs::File::from_std(file))),
                None => {
                    refused.store(true, Ordering::Relaxed);
                    Err(not_regular(&path))
                }
            }
        })
    }

    fn metadata(&self, path: PathBuf) -> Self::MetadataFuture {
        let refused = self.refused.clone();
        Box::pin(async move {
            let meta = tokio::fs::metadata(&path).await?;
            if is_special(&meta) {
                refused.store(true, Ordering::Relaxed);
                return Err(not_regular(&path));
            }
            Ok(meta)
        })
    }
}

/// An opened regular file.
#[derive(Debug)]
pub(crate) struct RegularFile(tokio::fs::File);

impl AsyncRead for RegularFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncSeek for RegularFile {
    fn start_seek(mut self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        Pin::new(&mut self.0).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.0).poll_complete(cx)
    }
}

impl File for RegularFile {
    type Metadata = std::fs::Metadata;
    type MetadataFuture<'a> =
        Pin<Box<dyn Future<Output = io::Result<std::fs::Metadata>> + Send + 'a>>;

    fn metadata(&self) -> Self::MetadataFuture<'_> {
        Box::pin(self.0.metadata())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fifos_sockets_and_devices_are_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let _socket = std::os::unix::net::UnixListener::bind(tmp.path().join("socket")).unwrap();
        std::fs::write(tmp.path().join("file"), b"kernel").unwrap();
        for name in ["fifo", "socket"] {
            let backend = RegularFiles::default();
            let path = tmp.path().join(name);
            assert!(backend.open(path.clone()).await.is_err(), "{name}");
            assert!(backend.refused(), "{name}");
            let backend = RegularFiles::default();
            assert!(backend.metadata(path).await.is_err(), "{name}");
            assert!(backend.refused(), "{name}");
        }
        assert!(open_regular(Path::new("/dev/null")).unwrap().is_none());
        assert!(open_regular(&fifo).unwrap().is_none());
        let backend = RegularFiles::default();
        let file = backend.open(tmp.path().join("file")).await.unwrap();
        assert_eq!(File::metadata(&file).await.unwrap().len(), 6);
        assert!(!backend.refused());
        assert!(backend.metadata(tmp.path().to_path_buf()).await.is_ok());
        let missing = backend.open(tmp.path().join("missing")).await.unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(!backend.refused());
    }
}
