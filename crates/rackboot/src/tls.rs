//! TLS of the API's own listener (rustls), and the CLI's pinning of the
//! server's certificate on first use, like SSH's known_hosts.
//!
//! The server: a certificate and key from files, or a self-signed one made
//! on first start in STATE_DIR/api-tls and kept across restarts. Handshakes
//! run in their own tasks (bounded, with a timeout), so a slow or silent
//! client cannot hold up the others.
//!
//! The CLI: the SHA-256 fingerprint of the certificate an `https://` server
//! presents is pinned per server URL in the user's `known_servers` file the
//! first time; a different certificate under that URL later is refused with
//! what to do. `--tls-fingerprint` (RACKBOOT_TLS_FINGERPRINT) pins one
//! explicitly. The certificate's names and issuer are not checked: the pin
//! is the trust.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The self-signed certificate's directory under the state directory.
pub const TLS_DIR: &str = "api-tls";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more wait for their TCP accept.
const MAX_HANDSHAKES: usize = 256;

/// The SHA-256 of a DER certificate as `openssl x509 -fingerprint -sha256`
/// prints it: upper-case hex pairs separated by colons.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A fingerprint as a user may write one (`sha256:`, colons or not, any
/// case) in the form [`fingerprint`] makes.
pub fn normalize_fingerprint(text: &str) -> Result<String> {
    let t = text.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .or_else(|| t.strip_prefix("sha256 Fingerprint="))
        .or_else(|| t.strip_prefix("SHA256 Fingerprint="))
        .unwrap_or(t);
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("{text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)");
    }
    let upper = hex.to_ascii_uppercase();
    Ok(upper
        .as_bytes()
        .chunks(2)
        .map(|pair| String::from_utf8_lossy(pair).into_owned())
        .collect::<Vec<_>>()
        .join(":"))
}

/// A server certificate ready to serve, and where it came from.
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub fingerprint: String,
    /// The certificate file, for logs.
    pub cert_path: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate does not match its key, or is not usable")?;
    // The API speaks HTTP/1.1 (its clients, the CLI and curl, do too).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificate chain and key of PEM files (`tls = "files"`).
pub fn load_files(cert: &Path, key: &Path) -> Result<ServerTls> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading api.tls_cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("api.tls_cert {}: not PEM certificates", cert.display()))?;
    let Some(leaf) = certs.first() else {
        bail!("api.tls_cert {} holds no certificate", cert.display());
    };
    let fingerprint = fingerprint(leaf.as_ref());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("api.tls_key {}: no PEM private key", key.display()))?;
    Ok(ServerTls {
        config: server_config(certs, key)
            .with_context(|| format!("api.tls_cert {}", cert.display()))?,
        fingerprint,
        cert_path: cert.to_path_buf(),
    })
}

/// The self-signed certificate in `state_dir` (made on first start, with
/// `names` as its subject names, then kept: clients pinned it).
pub fn self_signed(state_dir: &Path, names: &[String]) -> Result<ServerTls> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = state_dir.join(TLS_DIR);
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let made = rcgen::generate_simple_self_signed(names.to_vec())
            .context("making a self-signed certificate")?;
        // The key first, private from its creation; a crash between the two
        // files leaves no certificate, so the next start makes both again.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key)
            .with_context(|| format!("creating {}", key.display()))?;
        f.write_all(made.signing_key.serialize_pem().as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", key.display()))?;
        std::fs::write(&cert, made.cert.pem())
            .with_context(|| format!("writing {}", cert.display()))?;
        tracing::info!(cert = %cert.display(), "made a self-signed API certificate");
    }
    load_files(&cert, &key)
}

/// Accepts TCP connections and hands axum finished TLS streams. Each
/// handshake runs in its own task with a timeout; at most
/// [`MAX_HANDSHAKES`] at once.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "API listener: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The accept task ended (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

// ---------- the CLI's side ----------

/// The user's pins: `$XDG_CONFIG_HOME/rackboot/known_servers`, else
/// `$HOME/.config/rackboot/known_servers`.
pub fn known_servers_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("rackboot").join("known_servers"))
}

/// The key a server is pinned under: `https://host:port`.
pub fn server_key(url: &str) -> Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("server URL {url:?}"))?;
    let host = parsed
        .host_str()
        .with_context(|| format!("server URL {url:?} has no host"))?;
    let port = parsed.port_or_known_default().unwrap_or(443);
    Ok(format!("{}://{host}:{port}", parsed.scheme()))
}

/// The fingerprint pinned for `key` in a known_servers text, if any.
/// Lines are `KEY FINGERPRINT`; `#` starts a comment.
pub fn pinned_in(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(k, _)| *k == key)
        .and_then(|(_, fp)| normalize_fingerprint(fp).ok())
}

/// What the verifier saw and expects, shared with the client that asks.
#[derive(Debug, Default)]
struct PinState {
    /// The fingerprint of the last certificate the server presented.
    seen: Option<String>,
}

/// Accepts exactly the pinned certificate (any, on first use), checking
/// the handshake's signatures with it as usual.
#[derive(Debug)]
struct PinVerifier {
    expected: Option<String>,
    state: Arc<Mutex<PinState>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let seen = fingerprint(end_entity.as_ref());
        self.state.lock().unwrap_or_else(|e| e.into_inner()).seen = Some(seen.clone());
        match &self.expected {
            Some(expected) if *expected != seen => Err(rustls::Error::General(format!(
                "certificate fingerprint {seen} is not the pinned {expected}"
            ))),
            _ => Ok(rustls::client::danger::ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How the CLI trusts one `https://` server.
#[derive(Debug)]
pub struct Pinning {
    key: String,
    /// The pin in force: explicit, from the file, or none yet (first use).
    expected: Option<String>,
    /// Given with --tls-fingerprint (nothing is written).
    explicit: bool,
    file: Option<PathBuf>,
    state: Arc<Mutex<PinState>>,
    recorded: std::sync::atomic::AtomicBool,
}

impl Pinning {
    /// The pin for `url`: `explicit` when given, else the known_servers file's.
    pub fn for_server(url: &str, explicit: Option<&str>) -> Result<Pinning> {
        let key = server_key(url)?;
        let file = known_servers_path();
        let (expected, is_explicit) = match explicit {
            Some(fp) => (
                Some(normalize_fingerprint(fp).context("--tls-fingerprint")?),
                true,
            ),
            None => {
                let text = match &file {
                    Some(f) => match std::fs::read_to_string(f) {
                        Ok(t) => t,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                        Err(e) => {
                            return Err(e).with_context(|| format!("reading {}", f.display()));
                        }
                    },
                    None => String::new(),
                };
                (pinned_in(&text, &key), false)
            }
        };
        Ok(Pinning {
            key,
            expected,
            explicit: is_explicit,
            file,
            state: Arc::default(),
            recorded: Default::default(),
        })
    }

    /// The rustls client config that enforces the pin.
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        let provider = provider();
        let verifier = PinVerifier {
            expected: self.expected.clone(),
            state: self.state.clone(),
            provider: provider.clone(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// After a request succeeded: on first use, pins what the server
    /// presented (once per process).
    pub fn record_first_use(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.expected.is_some() || self.recorded.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let Some(seen) = self.seen() else {
            return Ok(());
        };
        let Some(file) = &self.file else {
            eprintln!(
                "warning: no HOME or XDG_CONFIG_HOME: the certificate of {} ({seen}) is not pinned",
                self.key
            );
            return Ok(());
        };
        append_pin(file, &self.key, &seen)?;
        eprintln!(
            "pinned the TLS certificate of {} (SHA-256 {seen}) in {}",
            self.key,
            file.display()
        );
        Ok(())
    }

    fn seen(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .clone()
    }

    /// A failed request explained when the server presented another
    /// certificate than the pinned one; `None` when that is not why.
    pub fn mismatch(&self) -> Option<String> {
        let expected = self.expected.as_ref()?;
        let seen = self.seen()?;
        if seen == *expected {
            return None;
        }
        Some(if self.explicit {
            format!(
                "{} presents a TLS certificate with SHA-256 {seen}, not the {expected} given with \
                 --tls-fingerprint (RACKBOOT_TLS_FINGERPRINT)",
                self.key
            )
        } else {
            let file = self
                .file
                .as_ref()
                .map_or_else(|| "known_servers".into(), |f| f.display().to_string());
            format!(
                "the TLS certificate of {key} has changed: {file} pins SHA-256 {expected}, the \
                 server now presents {seen}. Someone may be intercepting the connection. If the \
                 server's certificate was replaced on purpose (check it on the server: `openssl \
                 x509 -noout -fingerprint -sha256 -in CERT`), remove the line for {key} from \
                 {file}, or pass --tls-fingerprint {seen}",
                key = self.key
            )
        })
    }
}

/// Appends `key fingerprint` to the known_servers file (created 0600 with
/// its directory).
fn append_pin(file: &Path, key: &str, fingerprint: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    writeln!(f, "{key} {fingerprint}").with_context(|| format!("writing {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";

    #[test]
    fn fingerprints_are_written_like_openssl() {
        let fp = fingerprint(b"hello");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("2C:F2:4D:BA:5F:B0:A3:0E"), "{fp}");
        for text in [
            FP.to_string(),
            FP.to_lowercase(),
            FP.replace(':', ""),
            format!("sha256:{}", FP.replace(':', "").to_lowercase()),
            format!("SHA256 Fingerprint={FP}"),
        ] {
            assert_eq!(normalize_fingerprint(&text).unwrap(), FP, "{text}");
        }
        for bad in ["", "AB:CD", &FP.replace('A', "G"), &format!("{FP}:00")] {
            assert!(normalize_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn servers_are_keyed_by_scheme_host_and_port() {
        for (url, key) in [
            ("https://10.0.0.1:8443", "https://10.0.0.1:8443"),
            ("https://10.0.0.1:8443/", "https://10.0.0.1:8443"),
            ("https://rb.example", "https://rb.example:443"),
            ("https://RB.example:8443/api", "https://rb.example:8443"),
            ("https://[::1]:8443", "https://[::1]:8443"),
        ] {
            assert_eq!(server_key(url).unwrap(), key, "{url}");
        }
    }

    #[test]
    fn pins_are_found_by_key() {
        let text = format!(
            "# rackboot known servers\n\nhttps://a:1 {FP}\nhttps://b:2 {}\nbroken line\n",
            FP.replace(':', "").to_lowercase()
        );
        assert_eq!(pinned_in(&text, "https://a:1").as_deref(), Some(FP));
        assert_eq!(pinned_in(&text, "https://b:2").as_deref(), Some(FP));
        assert_eq!(pinned_in(&text, "https://c:3"), None);
        assert_eq!(pinned_in(&text, "https://a:2"), None);
    }
}
