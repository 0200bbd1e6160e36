//! A deploy's first-boot callback: `/deploy/<workflow>/booted/<token>`,
//! called once by the installed system (cloud-init's phone_home, or an
//! image's own first-boot hook). The token is a MAC of the workflow id under
//! the server's key: nothing to store, unforgeable, and valid for that
//! deploy only.

use rackboot_core::WorkflowId;
use rackboot_seal::SecretKey;

const PURPOSE: &str = "rackboot deploy first-boot callback";

pub fn token(key: &SecretKey, workflow: WorkflowId) -> String {
    key.mac(PURPOSE, workflow.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn verify(key: &SecretKey, workflow: WorkflowId, token: &str) -> bool {
    rackboot_core::secret::constant_time_eq(self::token(key, workflow).as_bytes(), token.as_bytes())
}

/// The callback URL for `workflow` on boot HTTP at `base_url`.
pub fn url(key: &SecretKey, base_url: &str, workflow: WorkflowId) -> String {
    format!(
        "{}/deploy/{workflow}/booted/{}",
        base_url.trim_end_matches('/'),
        token(key, workflow)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_for_their_workflow_only() {
        let key = SecretKey::generate();
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let t = token(&key, a);
        assert!(verify(&key, a, &t));
        assert!(!verify(&key, b, &t));
        assert!(!verify(&SecretKey::generate(), a, &t));
        assert!(url(&key, "http://x:1/", a).starts_with(&format!("http://x:1/deploy/{a}/booted/")));
    }
}
