//! Passwords. Linux and ESXi installers take a SHA-512 crypt hash, so the
//! API hashes the operator's password once, at input time
//! ([`hash_root_password`]), stores only the hash, and templates only ever
//! see the hash.
//!
//! Windows is different: unattend.xml has no way to take a one-way hash. It
//! takes the password either as plain text or "encoded"
//! (`<PlainText>false</PlainText>`, value = base64(UTF-16LE(password +
//! "AdministratorPassword"))), which is obfuscation, not protection. So for
//! Windows the plain password is needed at render time. What we do:
//! - It never sits in [`crate::InstallVars`] (which is stored, logged, shown
//!   in the API). It is passed separately in [`crate::RenderSecrets`], which
//!   the API should keep encrypted at rest like BMC credentials and decrypt
//!   only to render.
//! - Templates see only the encoded form (`windows.admin_password_encoded`),
//!   and the built-in unattend.xml sets `<PlainText>false</PlainText>`, so the
//!   file never contains the password in clear text; Windows Setup itself
//!   masks it in the copy it keeps under `C:\Windows\Panther`.
//! - The rendered unattend.xml is a secret: the HTTP side should serve it
//!   only to the machine being installed (same authenticated, per-install
//!   URL as every rendered file) and never log its body.
//! - Operators should change the password after install (or set a random one
//!   per machine and retrieve it from the secret store).

use base64::Engine as _;
use sha_crypt::{PasswordHasher, ShaCrypt};

use crate::PasswordError;

/// Hashes a root password as SHA-512 crypt
/// (`$6$rounds=5000$<16 salt chars>$<86 chars>`, random salt): the form kickstart `rootpw --iscrypted`,
/// preseed `passwd/root-password-crypted`, AutoYaST `encrypted=true`,
/// autoinstall and ESXi accept.
pub fn hash_root_password(plain: &str) -> Result<String, PasswordError> {
    if plain.is_empty() {
        return Err(PasswordError::Empty);
    }
    if plain.contains(['\0', '\n', '\r']) {
        return Err(PasswordError::BadCharacter);
    }
    // 12 random bytes are 16 salt characters: the most crypt(3) uses (a
    // longer salt would be silently truncated by glibc but refused by
    // stricter parsers).
    let mut salt = [0u8; 12];
    rand::Rng::fill(&mut rand::rng(), &mut salt);
    let hash = ShaCrypt::default()
        .hash_password_with_salt(plain.as_bytes(), &salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    let hash = hash.as_str().to_string();
    debug_assert!(check_sha512_crypt(&hash).is_ok(), "{hash}");
    Ok(hash)
}

/// Checks the shape of a SHA-512 crypt string: `$6$[rounds=N$]SALT$HASH`,
/// salt 1..=16 and hash exactly 86 characters of `[./0-9A-Za-z]`.
pub fn check_sha512_crypt(hash: &str) -> Result<(), String> {
    let crypt64 = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    };
    let rest = hash
        .strip_prefix("$6$")
        .ok_or("not a SHA-512 crypt hash (must start with $6$; use hash_root_password)")?;
    let mut parts: Vec<&str> = rest.split('$').collect();
    if parts.first().is_some_and(|p| p.starts_with("rounds=")) {
        let rounds = parts.remove(0)["rounds=".len()..]
            .parse::<u32>()
            .map_err(|_| "bad rounds= value")?;
        if !(1000..=999_999_999).contains(&rounds) {
            return Err("rounds out of range 1000..=999999999".into());
        }
    }
    match parts.as_slice() {
        [salt, digest]
            if (1..=16).contains(&salt.len())
                && crypt64(salt)
                && digest.len() == 86
                && crypt64(digest) =>
        {
            Ok(())
        }
        _ => Err("malformed $6$ hash (salt 1-16 and digest 86 characters of [./0-9A-Za-z])".into()),
    }
}

/// unattend.xml's encoded password form for `<PlainText>false</PlainText>`:
/// base64(UTF-16LE(password + field)), where `field` is the element name the
/// value goes in (`AdministratorPassword`, `Password` for accounts and
/// AutoLogon).
pub fn encode_windows_password(plain: &str, field: &str) -> String {
    let utf16: Vec<u8> = format!("{plain}{field}")
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(utf16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha_crypt::PasswordVerifier;

    #[test]
    fn hashes_verify_and_have_the_crypt_shape() {
        let h = hash_root_password("s3cret pass").unwrap();
        assert!(h.starts_with("$6$"), "{h}");
        check_sha512_crypt(&h).unwrap();
        ShaCrypt::default()
            .verify_password(b"s3cret pass", h.as_str())
            .unwrap();
        assert!(
            ShaCrypt::default()
                .verify_password(b"other", h.as_str())
                .is_err()
        );
        // Random salt: two hashes of one password differ.
        assert_ne!(h, hash_root_password("s3cret pass").unwrap());
        assert_eq!(hash_root_password(""), Err(PasswordError::Empty));
        assert_eq!(hash_root_password("a\nb"), Err(PasswordError::BadCharacter));
    }

    #[test]
    fn matches_glibc_crypt_output() {
        // `openssl passwd -6 -salt saltsalt password`, same as glibc crypt(3).
        let known = "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/";
        check_sha512_crypt(known).unwrap();
        ShaCrypt::default()
            .verify_password(b"password", known)
            .unwrap();
    }

    #[test]
    fn rejects_other_hash_shapes() {
        for bad in [
            "password",
            "$1$abc$def",
            "$5$saltsalt$abc",
            "$6$saltsalt$short",
            "$6$rounds=10$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/",
            "$6$salt'salt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/",
        ] {
            assert!(check_sha512_crypt(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_encoding_matches_setup() {
        // "Passw0rd!" + "AdministratorPassword" as UTF-16LE, base64: the value
        // Windows System Image Manager writes for this password.
        assert_eq!(
            encode_windows_password("Passw0rd!", "AdministratorPassword"),
            "UABhAHMAcwB3ADAAcgBkACEAQQBkAG0AaQBuAGkAcwB0AHIAYQB0AG8AcgBQAGEAcwBzAHcAbwByAGQA"
        );
    }
}
