//! DHCPv6 server for rackboot (RFC 8415, stateful IA_NA) with the boot file
//! URL of RFC 5970, and router advertisements for links without a router.
//!
//! - [`config`]: the `[dhcp6]` section ([`Dhcp6Config`]) and its validation.
//! - [`engine`]: the lease engine: pools, reservations by DUID or MAC, and the
//!   answer to each message (Solicit/Advertise, Request, Renew, Rebind, Release,
//!   Decline, Confirm, Information-request, Rapid Commit), clock passed in.
//! - [`server`]: the socket loop ([`run`]); a reply that binds a lease is sent
//!   only after the lease is written to the store (group commit).
//! - [`ra`]: router advertisements (M and O set, the prefix on-link).
//! - [`socket`]: binding helpers ([`Dhcp6Sockets::bind`]).

pub mod config;
pub mod engine;
pub mod ra;
pub mod server;
pub mod socket;

pub use config::{Config6Error, Dhcp6Config, RaConfig, Reservation6Config, Subnet6Config};
pub use server::{Dhcp6Counters, Dhcp6State, run};
pub use socket::{Dhcp6Sockets, RaSocket};

/// Why the DHCPv6 service stopped.
#[derive(Debug, thiserror::Error)]
pub enum Dhcp6Error {
    #[error("invalid [dhcp6] config: {0}")]
    Config(#[from] Config6Error),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("loading IPv6 leases from the store: {0}")]
    LoadLeases(#[source] rackboot_store::StoreError),
}
