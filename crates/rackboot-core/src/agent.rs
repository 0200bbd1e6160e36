//! An agent's per-boot credential. Minted when a machine with agent work
//! fetches its boot script, written into that script's kernel command line,
//! and accepted only from the address it is bound to, until the machine's
//! next boot script replaces it.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::MachineId;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentSession {
    #[schema(value_type = String, format = Uuid)]
    pub machine: MachineId,
    /// Lower-case hex SHA-256 of the token; the token itself is never stored.
    #[serde(skip)]
    pub token_sha256: String,
    /// The only address the token is accepted from: the machine's DHCP lease,
    /// or the address that fetched the boot script when rackboot leases none.
    #[schema(value_type = String)]
    pub bound_ip: IpAddr,
    pub issued_at: DateTime<Utc>,
    /// The workflow that booted the agent.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub workflow: Option<uuid::Uuid>,
    /// The agent process that said hello last (a new one means the agent restarted).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub instance: Option<uuid::Uuid>,
    /// The kernel boot id the agent reported.
    pub boot_id: Option<String>,
}

impl std::fmt::Debug for AgentSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSession")
            .field("machine", &self.machine)
            .field("bound_ip", &self.bound_ip)
            .field("issued_at", &self.issued_at)
            .field("workflow", &self.workflow)
            .field("instance", &self.instance)
            .field("boot_id", &self.boot_id)
            .finish_non_exhaustive()
    }
}
