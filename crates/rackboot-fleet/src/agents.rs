//! Per-boot agent tokens. A token is minted when a machine with agent work
//! fetches its boot script, bound to one address (the machine's DHCP lease,
//! or the address that fetched the script when rackboot leases none), and
//! replaced by the next one the machine's next boot script mints. Only its
//! SHA-256 is stored; sessions are cached in memory so that heartbeats from a
//! thousand agents never read the store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;

use chrono::Utc;
use rackboot_core::{AgentSession, EventKind, Machine, MachineId, NewEvent};
use rackboot_store::{Store, StoreError};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{Fleet, Result, on_machine};

/// A freshly minted token: written into the boot script, never stored.
pub struct IssuedToken {
    pub token: String,
    pub session: AgentSession,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// Why an agent request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentAuthError {
    #[error("missing bearer token")]
    Missing,
    /// Unknown, or replaced by a newer boot of the machine.
    #[error("unknown or superseded agent token")]
    Unknown,
    #[error("this agent token belongs to {bound}, not to {peer}")]
    WrongAddress {
        /// The machine the token was issued to.
        machine: MachineId,
        bound: IpAddr,
        peer: IpAddr,
    },
}

/// Lower-case hex SHA-256 of a token.
pub fn token_sha256(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The cache: sessions by token hash, and each machine's token hash.
#[derive(Default)]
pub(crate) struct Sessions {
    by_hash: RwLock<HashMap<String, AgentSession>>,
    by_machine: RwLock<HashMap<MachineId, String>>,
}

impl Sessions {
    pub(crate) async fn load(store: &dyn Store) -> Result<Sessions, StoreError> {
        let sessions = Sessions::default();
        for s in store.list_agent_sessions().await? {
            sessions.insert(s);
        }
        Ok(sessions)
    }

    fn insert(&self, session: AgentSession) {
        let mut by_hash = self.by_hash.write().unwrap_or_else(|e| e.into_inner());
        let mut by_machine = self.by_machine.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = by_machine.insert(session.machine, session.token_sha256.clone()) {
            by_hash.remove(&old);
        }
        by_hash.insert(session.token_sha256.clone(), session);
    }

    fn remove(&self, machine: MachineId) -> bool {
        let mut by_hash = self.by_hash.write().unwrap_or_else(|e| e.into_inner());
        let mut by_machine = self.by_machine.write().unwrap_or_else(|e| e.into_inner());
        match by_machine.remove(&machine) {
            Some(hash) => {
                by_hash.remove(&hash);
                true
            }
            None => false,
        }
    }

    /// The machine's session as the store has it now (another server
    /// minted or revoked it).
    pub(crate) fn refresh(&self, machine: MachineId, session: Option<AgentSession>) {
        match session {
            Some(s) => self.insert(s),
            None => {
                self.remove(machine);
            }
        }
    }

    /// Every session as the store has it (a resync).
    pub(crate) fn replace_all(&self, sessions: Vec<AgentSession>) {
        let mut by_hash = self.by_hash.write().unwrap_or_else(|e| e.into_inner());
        let mut by_machine = self.by_machine.write().unwrap_or_else(|e| e.into_inner());
        by_hash.clear();
        by_machine.clear();
        for s in sessions {
            by_machine.insert(s.machine, s.token_sha256.clone());
            by_hash.insert(s.token_sha256.clone(), s);
        }
    }

    fn get(&self, hash: &str) -> Option<AgentSession> {
        self.by_hash
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash)
            .cloned()
    }

    fn of_machine(&self, machine: MachineId) -> Option<AgentSession> {
        let hash = self
            .by_machine
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&machine)
            .cloned()?;
        self.get(&hash)
    }
}

impl Fleet {
    /// Mints the machine's token for this boot, bound to `bound_ip`; the
    /// machine's previous token stops working.
    pub async fn issue_agent_token(
        &self,
        machine: &Machine,
        bound_ip: IpAddr,
        workflow: Option<uuid::Uuid>,
    ) -> Result<IssuedToken> {
        let token: String = (0..32)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let session = AgentSession {
            machine: machine.id,
            token_sha256: token_sha256(&token),
            bound_ip: canonical(bound_ip),
            issued_at: Utc::now(),
            workflow,
            instance: None,
            boot_id: None,
        };
        self.store().put_agent_session(&session).await?;
        self.agents.insert(session.clone());
        self.emit(on_machine(
            NewEvent::new(
                EventKind::AgentTokenIssued,
                format!(
                    "issued {}'s agent token for this boot, accepted from {} only",
                    machine.name, session.bound_ip
                ),
            )
            .data(json!({"bound_ip": session.bound_ip, "workflow": workflow})),
            machine,
        ));
        Ok(IssuedToken { token, session })
    }

    /// The session a request's bearer token opens, if it comes from the
    /// address the token is bound to.
    pub fn authenticate_agent(
        &self,
        token: Option<&str>,
        peer: IpAddr,
    ) -> Result<AgentSession, AgentAuthError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(AgentAuthError::Missing)?;
        let session = self
            .agents
            .get(&token_sha256(token))
            .ok_or(AgentAuthError::Unknown)?;
        let peer = canonical(peer);
        if session.bound_ip != peer {
            return Err(AgentAuthError::WrongAddress {
                machine: session.machine,
                bound: session.bound_ip,
                peer,
            });
        }
        Ok(session)
    }

    /// Records the agent process that said hello; returns the process that
    /// said hello before it in this boot, if another one did (the agent
    /// restarted).
    pub async fn agent_hello(
        &self,
        session: &AgentSession,
        instance: uuid::Uuid,
        boot_id: &str,
        agent_version: &str,
    ) -> Result<Option<uuid::Uuid>> {
        let previous = session.instance.filter(|&i| i != instance);
        let mut updated = session.clone();
        updated.instance = Some(instance);
        updated.boot_id = Some(boot_id.to_string());
        if updated != *session {
            self.store().put_agent_session(&updated).await?;
            self.agents.insert(updated.clone());
        }
        if let Ok(machine) = self.machine_by_id(session.machine).await {
            let restarted = previous.map_or(String::new(), |p| {
                format!(" (agent restarted: process {p} replaced)")
            });
            self.emit(on_machine(
                NewEvent::new(
                    EventKind::AgentHello,
                    format!(
                        "agent {agent_version} on {} said hello from {}{restarted}",
                        machine.name, session.bound_ip
                    ),
                )
                .data(json!({
                    "instance": instance,
                    "previous_instance": previous,
                    "boot_id": boot_id,
                    "agent_version": agent_version,
                })),
                &machine,
            ));
        }
        Ok(previous)
    }

    /// The machine's current session, if it has one.
    pub fn agent_session(&self, machine: MachineId) -> Option<AgentSession> {
        self.agents.of_machine(machine)
    }

    /// Revokes the machine's token (its workflow no longer needs the agent).
    pub async fn revoke_agent_token(&self, machine: MachineId) -> Result<()> {
        if self.agents.remove(machine) {
            match self.store().delete_agent_session(machine).await {
                Ok(()) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Drops a deleted machine's session from the cache (the store cascades).
    pub(crate) fn forget_agent_session(&self, machine: MachineId) {
        self.agents.remove(machine);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_are_their_ipv4() {
        let v4: IpAddr = "10.77.0.5".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.77.0.5".parse().unwrap();
        assert_eq!(canonical(mapped), v4);
        assert_eq!(canonical(v4), v4);
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
