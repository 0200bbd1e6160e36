//! Named API tokens with roles. A token is `rbt_` and 64 hex digits (256
//! random bits), shown once when it is created; the store keeps its SHA-256.
//! Tokens are looked up in the store on every request (no cache), so a
//! revoked token is refused at once, by every server sharing the store.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use rackboot_core::access::{TOKEN_PREFIX, validate_token_name};
use rackboot_core::{ApiToken, EventKind, NewEvent, Role};
use serde_json::json;

use crate::{Actor, Fleet, FleetError, Result, token_sha256};

/// A token's last use is written at most this often (a busy script would
/// otherwise write the store on every request).
const LAST_USE_RESOLUTION: Duration = Duration::from_secs(60);

/// When each token's last use was last written, by name.
#[derive(Default)]
pub(crate) struct TokenUses(std::sync::Mutex<HashMap<String, Instant>>);

impl TokenUses {
    /// True when `name`'s use should be written now (and notes that it is).
    fn due(&self, name: &str, now: Instant) -> bool {
        let mut uses = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match uses.get(name) {
            Some(at) if now.duration_since(*at) < LAST_USE_RESOLUTION => false,
            _ => {
                uses.insert(name.to_string(), now);
                true
            }
        }
    }

    fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

/// A new token: the stored record, and the token itself (shown once).
#[derive(Debug)]
pub struct NewToken {
    pub record: ApiToken,
    pub token: String,
}

/// A fresh token: the prefix and 32 random bytes in hex.
fn mint() -> String {
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 64);
    token.push_str(TOKEN_PREFIX);
    for _ in 0..32 {
        token.push_str(&format!("{:02x}", rand::random::<u8>()));
    }
    token
}

impl Fleet {
    /// Creates a token named `name` with `role`; the name must be free.
    pub async fn create_token(&self, name: &str, role: Role, by: &Actor) -> Result<NewToken> {
        validate_token_name(name).map_err(|e| FleetError::Invalid(format!("name: {e}")))?;
        let token = mint();
        let record = ApiToken {
            name: name.to_string(),
            role,
            sha256: token_sha256(&token),
            created_at: Utc::now(),
            created_by: by.to_string(),
            last_used_at: None,
        };
        self.store().create_api_token(&record).await?;
        self.token_event(name, role, "created", by);
        tracing::info!(token = %name, %role, who = %by, "API token created");
        // Answer with what the store kept (it rounds timestamps).
        let record = ApiToken {
            created_at: rackboot_store::truncate_ms(record.created_at),
            ..record
        };
        Ok(NewToken { record, token })
    }

    /// Revokes a token: from this call on, every request with it is refused.
    pub async fn revoke_token(&self, name: &str, by: &Actor) -> Result<ApiToken> {
        let existing = self
            .store()
            .list_api_tokens()
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| FleetError::NotFound(format!("API token {name:?} not found")))?;
        self.store().delete_api_token(name).await?;
        self.token_uses.forget(name);
        self.token_event(name, existing.role, "revoked", by);
        tracing::info!(token = %name, who = %by, "API token revoked");
        Ok(existing)
    }

    /// Every stored token, by name (without the tokens themselves).
    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        Ok(self.store().list_api_tokens().await?)
    }

    /// The stored token `presented` is, if any; its use is recorded (to
    /// within a minute, in the background).
    pub async fn authenticate_token(&self, presented: &str) -> Result<Option<ApiToken>> {
        // Only rackboot's own tokens are looked up: anything else cannot match.
        if !presented.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let Some(token) = self
            .store()
            .find_api_token(&token_sha256(presented))
            .await?
        else {
            return Ok(None);
        };
        if self.token_uses.due(&token.name, Instant::now()) {
            let (store, name) = (self.store().clone(), token.name.clone());
            tokio::spawn(async move {
                if let Err(e) = store.touch_api_token(&name, Utc::now()).await {
                    tracing::warn!(token = %name, error = %e, "cannot record an API token's use");
                }
            });
        }
        Ok(Some(token))
    }

    fn token_event(&self, name: &str, role: Role, action: &str, by: &Actor) {
        self.emit(
            NewEvent::new(
                EventKind::TokenChanged,
                format!("API token {name:?} ({role}) {action} by {by}"),
            )
            .data(json!({"token": name, "role": role, "action": action, "who": by.as_str()})),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_prefixed_random_hex() {
        let a = mint();
        let b = mint();
        assert_ne!(a, b);
        for t in [&a, &b] {
            let hex = t.strip_prefix(TOKEN_PREFIX).unwrap();
            assert_eq!(hex.len(), 64, "{t}");
            assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()), "{t}");
        }
    }

    #[test]
    fn a_use_is_written_once_a_minute() {
        let uses = TokenUses::default();
        let t0 = Instant::now();
        assert!(uses.due("ci", t0));
        assert!(!uses.due("ci", t0 + Duration::from_secs(59)));
        assert!(uses.due("other", t0));
        assert!(uses.due("ci", t0 + Duration::from_secs(61)));
        uses.forget("ci");
        assert!(uses.due("ci", t0 + Duration::from_secs(62)));
    }
}
