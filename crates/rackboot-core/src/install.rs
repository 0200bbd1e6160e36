//! Installer-based installs: a request to install an OS on one machine, and the
//! user-editable templates the unattended files are rendered from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{MachineId, OsFamily};

/// One requested install. The machine's intent points at it
/// (`BootIntent::Install { id, .. }`) until the installer calls back.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstallRequest {
    #[schema(value_type = String, format = Uuid)]
    pub id: uuid::Uuid,
    #[schema(value_type = String, format = Uuid)]
    pub machine: MachineId,
    /// Catalog id of the OS, e.g. `debian-12-amd64`.
    pub os: String,
    /// A stored template by name; `None` uses the built-in one for the OS.
    pub template: Option<String>,
    /// Per-machine install variables (hostname, network, disk, packages…), as
    /// checked when the install was requested.
    #[schema(value_type = Object)]
    pub vars: serde_json::Value,
    /// Single-use secret in the completion callback URL; never serialised.
    #[serde(skip)]
    pub token: String,
    pub state: InstallState,
    pub requested_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl InstallRequest {
    /// Whether `token` is this install's callback token (constant time).
    pub fn token_matches(&self, token: &str) -> bool {
        crate::secret::constant_time_eq(self.token.as_bytes(), token.as_bytes())
    }
}

impl std::fmt::Debug for InstallRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallRequest")
            .field("id", &self.id)
            .field("machine", &self.machine)
            .field("os", &self.os)
            .field("template", &self.template)
            .field("state", &self.state)
            .field("requested_at", &self.requested_at)
            .field("completed_at", &self.completed_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InstallState {
    /// Waiting for the machine to boot the installer and call back.
    Pending,
    /// The installer finished and called back: the machine boots from its
    /// disk now, and the installed system has not reported its first boot yet.
    Installed,
    /// The installed system came up from its disk and reported (or, for a
    /// template without a first-boot report, the installer's last step did).
    Completed,
    /// Replaced by a newer request or withdrawn by an operator.
    Cancelled,
}

impl InstallState {
    pub fn as_str(&self) -> &'static str {
        match self {
            InstallState::Pending => "pending",
            InstallState::Installed => "installed",
            InstallState::Completed => "completed",
            InstallState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<InstallState> {
        [
            InstallState::Pending,
            InstallState::Installed,
            InstallState::Completed,
            InstallState::Cancelled,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A user template that overrides the built-in unattended file for a family.
/// Checked (parsed and rendered for a sample machine) before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstallTemplate {
    pub name: String,
    pub family: OsFamily,
    #[serde(default)]
    pub description: String,
    /// minijinja source.
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}
