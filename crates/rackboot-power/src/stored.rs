//! Between what an operator types (`ipmi://admin:secret@10.0.0.5?cipher=3`), what the
//! store keeps ([`rackboot_core::Bmc`]: address without credentials, user name, the
//! password sealed with the server's [`SecretKey`]), and what a driver needs
//! ([`BmcTarget`]).

use rackboot_core::Bmc;

use crate::secrets::{SecretError, SecretKey};
use crate::{BmcScheme, BmcTarget, BmcUrl, PowerError};

#[derive(Debug, thiserror::Error)]
pub enum StoredBmcError {
    #[error("stored BMC address: {0}")]
    Url(#[from] PowerError),
    #[error("stored BMC password for {address}: {source}")]
    Password {
        address: String,
        #[source]
        source: SecretError,
    },
}

/// Builds the record to store. `username` / `password`, when given, override the
/// URL's; the password is sealed with `key` and the address keeps no credentials.
pub fn seal_bmc(
    url: &str,
    username: Option<&str>,
    password: Option<&str>,
    insecure_tls: bool,
    key: &SecretKey,
) -> Result<Bmc, PowerError> {
    let parsed: BmcUrl = url.parse()?;
    if parsed.scheme() == BmcScheme::Fake && !crate::fake::enabled() {
        return Err(crate::fake::refused(parsed.redacted()));
    }
    let username = username.or(parsed.username()).unwrap_or_default();
    let password = password.or(parsed.password());
    Ok(Bmc {
        address: parsed.address(),
        username: username.to_string(),
        insecure_tls,
        sealed_password: password.map(|p| key.encrypt(p)),
    })
}

/// The driver target for a stored record (password unsealed with `key`).
pub fn target_from_bmc(bmc: &Bmc, key: &SecretKey) -> Result<BmcTarget, StoredBmcError> {
    let url: BmcUrl = bmc.address.parse()?;
    let password = match &bmc.sealed_password {
        Some(sealed) => key
            .decrypt(sealed)
            .map_err(|source| StoredBmcError::Password {
                address: bmc.address.clone(),
                source,
            })?,
        None => String::new(),
    };
    Ok(BmcTarget::new(url.without_credentials())
        .with_username(bmc.username.clone())
        .with_password(password)
        .with_insecure_tls(bmc.insecure_tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_unseal() {
        let key = SecretKey::generate();
        let bmc = seal_bmc(
            "ipmi://admin:s%40cret@10.0.0.5?cipher=3",
            None,
            None,
            false,
            &key,
        )
        .unwrap();
        assert_eq!(bmc.address, "ipmi://10.0.0.5?cipher=3");
        assert_eq!(bmc.username, "admin");
        let sealed = bmc.sealed_password.clone().unwrap();
        assert!(sealed.starts_with("v1:") && !sealed.contains("s@cret"));
        let target = target_from_bmc(&bmc, &key).unwrap();
        assert_eq!(
            (target.username.as_str(), target.password.as_str()),
            ("admin", "s@cret")
        );
        assert_eq!(target.url.cipher_suite(), Some(3));
        assert_eq!(target.redacted(), "ipmi://admin:***@10.0.0.5?cipher=3");

        let err = target_from_bmc(&bmc, &SecretKey::generate()).unwrap_err();
        assert!(matches!(err, StoredBmcError::Password { .. }), "{err}");
    }

    #[test]
    fn separate_credentials_override_the_url() {
        let key = SecretKey::generate();
        let bmc = seal_bmc(
            "redfish+https://bmc-7/redfish/v1/Systems/1",
            Some("root"),
            Some("calvin"),
            true,
            &key,
        )
        .unwrap();
        let target = target_from_bmc(&bmc, &key).unwrap();
        assert_eq!(
            target.redacted(),
            "redfish+https://root:***@bmc-7/redfish/v1/Systems/1"
        );
        assert!(target.insecure_tls);
        assert!(seal_bmc("ftp://x", None, None, false, &key).is_err());
    }
}
