//! Who may call the API: named tokens, each with a role. A token is shown
//! once, when it is created; only its SHA-256 is stored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a token may do. Roles are ordered: each includes the ones before it.
///
/// - `viewer` reads (machines, events, workflows, status...), but no read
///   that shows a secret (webhook URLs, rendered install files).
/// - `operator` acts on the fleet as it is defined: power and boot device,
///   boot intent, installs, workflows (deploy, inspect, clean...),
///   maintenance.
/// - `admin` defines the fleet and the server: enrols, edits and deletes
///   machines, profiles, selectors, templates, the OS and image catalogs,
///   workflow definitions, webhooks, and API tokens.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether a token of this role may do what `needed` allows.
    pub fn allows(&self, needed: Role) -> bool {
        *self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The prefix of every token rackboot makes: recognisable in a leaked file
/// or a secret scanner's report.
pub const TOKEN_PREFIX: &str = "rbt_";

/// A stored API token: everything but the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiToken {
    /// Unique; recorded as `api:NAME` in events, transitions and workflows.
    pub name: String,
    pub role: Role,
    /// Lower-case hex SHA-256 of the token. Never serialised.
    #[serde(skip)]
    pub sha256: String,
    pub created_at: DateTime<Utc>,
    /// Who created it (`api:NAME` of the admin token used).
    pub created_by: String,
    /// The last request made with it (to within a minute), if any.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Checks a token name: 1-63 letters, digits, '.', '_' or '-', starting with
/// a letter or digit. No ':' (names of tokens from the server's own files
/// have one, so the two kinds cannot collide).
pub fn validate_token_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 63 {
        return Err(format!("{name:?} must be 1-63 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.chars().all(ok_char) {
        return Err(format!(
            "{name:?} may hold only letters, digits, '.', '_' and '-', and must start with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_lower_ones() {
        for (role, needed, allowed) in [
            (Role::Viewer, Role::Viewer, true),
            (Role::Viewer, Role::Operator, false),
            (Role::Viewer, Role::Admin, false),
            (Role::Operator, Role::Viewer, true),
            (Role::Operator, Role::Operator, true),
            (Role::Operator, Role::Admin, false),
            (Role::Admin, Role::Viewer, true),
            (Role::Admin, Role::Operator, true),
            (Role::Admin, Role::Admin, true),
        ] {
            assert_eq!(role.allows(needed), allowed, "{role} -> {needed}");
        }
    }

    #[test]
    fn roles_round_trip_as_text_and_json() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
        }
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Role::parse("Admin"), None);
    }

    #[test]
    fn token_names() {
        for ok in ["ci", "alice", "deploy-bot.2", "a_b", "0"] {
            assert_eq!(validate_token_name(ok), Ok(()), "{ok}");
        }
        let long = "x".repeat(64);
        for bad in ["", "-x", ".x", "config:1", "a b", "é", long.as_str()] {
            assert!(validate_token_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_hash_is_never_serialised() {
        let t = ApiToken {
            name: "ci".into(),
            role: Role::Operator,
            sha256: "feedface".into(),
            created_at: DateTime::UNIX_EPOCH,
            created_by: "api:admin-token".into(),
            last_used_at: None,
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(!json.contains("feedface"), "{json}");
        assert!(json.contains("\"role\":\"operator\""), "{json}");
    }
}
