//! DHCP leases as the store keeps them.

use std::net::Ipv4Addr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::MacAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Offered, waiting for REQUEST; short-lived.
    Offered,
    /// Acknowledged and in use until `expires_at`.
    Bound,
    /// Client sent DECLINE (address in use by someone else); kept out of the pool until `expires_at`.
    Declined,
    /// Client sent RELEASE; free, but remembered so the client gets it back.
    Released,
    /// Expired; free, remembered for the same reason.
    Expired,
}

impl LeaseState {
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaseState::Offered => "offered",
            LeaseState::Bound => "bound",
            LeaseState::Declined => "declined",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<LeaseState> {
        Some(match s {
            "offered" => LeaseState::Offered,
            "bound" => LeaseState::Bound,
            "declined" => LeaseState::Declined,
            "released" => LeaseState::Released,
            "expired" => LeaseState::Expired,
            _ => return None,
        })
    }
}

/// One address's lease. The address is the key: a store holds at most one lease per address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Lease {
    #[schema(value_type = String)]
    pub ip: Ipv4Addr,
    /// Client hardware address; `None` for declined addresses.
    pub mac: Option<MacAddr>,
    /// Option 61 client identifier, hex-encoded, when sent.
    pub client_id: Option<String>,
    pub hostname: Option<String>,
    pub state: LeaseState,
    pub expires_at: DateTime<Utc>,
    /// Name of the subnet the address belongs to.
    pub subnet: String,
    pub updated_at: DateTime<Utc>,
}

/// The address rackboot's DHCP server has bound to each MAC, shared by the
/// DHCP thread (which writes it once a lease is committed) and boot HTTP
/// (which binds a machine's per-boot agent token to that address). Empty when
/// rackboot runs no full DHCP server (ProxyDHCP, or DHCP off).
#[derive(Debug, Clone, Default)]
pub struct BoundLeases(
    std::sync::Arc<std::sync::RwLock<std::collections::HashMap<MacAddr, Ipv4Addr>>>,
);

impl BoundLeases {
    pub fn set(&self, mac: MacAddr, ip: Ipv4Addr) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mac, ip);
    }

    /// Forgets `mac`'s address if it is still `ip` (a release or expiry).
    pub fn remove(&self, mac: MacAddr, ip: Ipv4Addr) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.get(&mac) == Some(&ip) {
            map.remove(&mac);
        }
    }

    pub fn get(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&mac)
            .copied()
    }
}
