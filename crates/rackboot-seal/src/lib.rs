//! Sealing of secrets at rest (BMC passwords, Windows install passwords):
//! XChaCha20-Poly1305 with the server's 32-byte key.
//!
//! Ciphertexts are `v1:` + base64(24-byte random nonce ‖ ciphertext ‖ 16-byte tag).
//! The key comes from a key file (base64, created with mode 0600 when absent) or from
//! bytes the caller has (the binary may read them from an environment variable; this
//! crate reads no environment).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret key must be 32 bytes, got {0}")]
    KeyLength(usize),
    #[error("secret key is not valid base64: {0}")]
    KeyEncoding(String),
    #[error("key file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not an encrypted secret (expected the 'v1:' prefix)")]
    UnknownFormat,
    #[error("encrypted secret is malformed: {0}")]
    Malformed(String),
    /// Wrong key, or the ciphertext was altered.
    #[error("cannot decrypt secret: wrong key or tampered ciphertext")]
    Decrypt,
}

/// A 32-byte key. `Debug` does not print it.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    /// A fresh random key.
    pub fn generate() -> SecretKey {
        SecretKey(XChaCha20Poly1305::generate_key(&mut OsRng).into())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SecretKey, SecretError> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SecretError::KeyLength(bytes.len()))?;
        Ok(SecretKey(key))
    }

    /// From the key file's text form (base64 of 32 bytes; surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<SecretKey, SecretError> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|e| SecretError::KeyEncoding(e.to_string()))?;
        SecretKey::from_bytes(&bytes)
    }

    /// HMAC-SHA256 of `data` under a key derived from this one for `purpose`
    /// (so that tokens minted for one use never verify for another): the
    /// server mints unforgeable, storage-free tokens with it (a deploy's
    /// first-boot callback).
    pub fn mac(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        type HmacSha256 = Hmac<sha2::Sha256>;
        let mut derive =
            <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        derive.update(purpose.as_bytes());
        let subkey = derive.finalize().into_bytes();
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&subkey).expect("HMAC takes a key of any length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Reads the key file, or creates it (mode 0600, new random key) when absent.
    /// A key file readable by group or others is used but warned about.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, SecretError> {
        let file_err = |source| SecretError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                if let Ok(meta) = std::fs::metadata(path)
                    && meta.permissions().mode() & 0o077 != 0
                {
                    tracing::warn!(
                        path = %path.display(),
                        "secret key file is readable by group or others; chmod 600 it"
                    );
                }
                SecretKey::from_base64(&text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SecretKey::generate();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(file_err)?;
                file.write_all(format!("{}\n", key.to_base64()).as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(file_err)?;
                Ok(key)
            }
            Err(e) => Err(file_err(e)),
        }
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    /// Encrypts with a fresh random nonce: the same text gives a different result each time.
    pub fn encrypt(&self, plaintext: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher()
            .encrypt(&nonce, plaintext.as_bytes())
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", B64.encode(out))
    }

    pub fn decrypt(&self, encrypted: &str) -> Result<String, SecretError> {
        let body = encrypted
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(SecretError::UnknownFormat)?;
        let raw = B64
            .decode(body)
            .map_err(|e| SecretError::Malformed(format!("bad base64: {e}")))?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretError::Malformed(format!(
                "{} bytes is shorter than nonce and tag",
                raw.len()
            )));
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let plain = self
            .cipher()
            .decrypt(&XNonce::from(nonce), sealed)
            .map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(plain)
            .map_err(|_| SecretError::Malformed("plaintext is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_depend_on_key_purpose_and_data() {
        let k = SecretKey::generate();
        assert_eq!(k.mac("a", b"x"), k.mac("a", b"x"));
        assert_ne!(k.mac("a", b"x"), k.mac("b", b"x"));
        assert_ne!(k.mac("a", b"x"), k.mac("a", b"y"));
        assert_ne!(k.mac("a", b"x"), SecretKey::generate().mac("a", b"x"));
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let key = SecretKey::generate();
        for text in ["", "calvin", "pässwörd with spaces and : @ /"] {
            let a = key.encrypt(text);
            let b = key.encrypt(text);
            assert!(a.starts_with("v1:"), "{a}");
            assert_ne!(a, b, "nonces must differ");
            assert!(!a.contains(text) || text.is_empty());
            assert_eq!(key.decrypt(&a).unwrap(), text);
            assert_eq!(key.decrypt(&b).unwrap(), text);
        }
    }

    #[test]
    fn wrong_key_fails() {
        let sealed = SecretKey::generate().encrypt("secret");
        let err = SecretKey::generate().decrypt(&sealed).unwrap_err();
        assert!(matches!(err, SecretError::Decrypt), "{err}");
    }

    #[test]
    fn tampering_fails() {
        let key = SecretKey::generate();
        let sealed = key.encrypt("secret");
        let mut raw = B64.decode(&sealed[3..]).unwrap();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 0x01;
            let forged = format!("v1:{}", B64.encode(&raw));
            assert!(
                matches!(key.decrypt(&forged), Err(SecretError::Decrypt)),
                "byte {i}"
            );
            raw[i] ^= 0x01;
        }
        let truncated = format!("v1:{}", B64.encode(&raw[..raw.len() - 1]));
        assert!(matches!(key.decrypt(&truncated), Err(SecretError::Decrypt)));
        assert!(matches!(
            key.decrypt("secret"),
            Err(SecretError::UnknownFormat)
        ));
        assert!(matches!(
            key.decrypt("v1:!!"),
            Err(SecretError::Malformed(_))
        ));
        assert!(matches!(
            key.decrypt("v1:AAAA"),
            Err(SecretError::Malformed(_))
        ));
    }

    #[test]
    fn key_file_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let key = SecretKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(again.decrypt(&key.encrypt("x")).unwrap(), "x");
        assert_eq!(format!("{key:?}"), "SecretKey(***)");
    }

    #[test]
    fn bad_keys_rejected() {
        assert!(matches!(
            SecretKey::from_bytes(&[0; 31]),
            Err(SecretError::KeyLength(31))
        ));
        assert!(matches!(
            SecretKey::from_base64("not base64!"),
            Err(SecretError::KeyEncoding(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.key");
        std::fs::write(&path, B64.encode([1u8; 16])).unwrap();
        assert!(matches!(
            SecretKey::load_or_create(&path),
            Err(SecretError::KeyLength(16))
        ));
        let k = SecretKey::from_bytes(&[7; 32]).unwrap();
        assert_eq!(SecretKey::from_base64(&k.to_base64()).unwrap().0, [7; 32]);
    }
}
