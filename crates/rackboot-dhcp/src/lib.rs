//! DHCPv4 server (full and ProxyDHCP) for rackboot: lease engine and socket loop.
//!
//! - [`config`]: the `[dhcp]` section ([`DhcpConfig`]) and its validation.
//! - [`engine`]: [`LeaseEngine`], pools, reservations and the RFC 2131 state machine,
//!   in memory with the clock passed in.
//! - [`server`]: the socket loop ([`run`]), ProxyDHCP (67 + 4011), group commit of
//!   leases before ACKs, the ICMP conflict probe, pool-low events and metrics.
//! - [`peers`]: the load split of a cluster ([`Peers`]): each client's
//!   DISCOVERs are answered by one live server, by rendezvous hash.
//! - [`ipxe_ra`]: answers the IPv6 router solicitations of iPXE clients just seen,
//!   so iPXE does not wait for a router that does not exist.
//! - [`socket`]: binding helpers for the binary ([`bind_interface`], [`DhcpSockets::bind`]).

pub mod config;
pub mod engine;
pub mod ipxe_ra;
pub mod peers;
pub mod probe;
mod send;
pub mod server;
pub mod socket;

pub use config::{
    ConfigError, DhcpConfig, DhcpMode, OptionConfig, ProbeConfig, ReservationConfig, SubnetConfig,
};
pub use engine::{LeaseEngine, Outcome};
pub use peers::Peers;
pub use server::{run, run_in_cluster};
pub use socket::{DhcpSockets, bind_icmp, bind_interface};

/// Why the DHCP service stopped.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("invalid DHCP config: {0}")]
    Config(#[from] ConfigError),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("loading leases from the store: {0}")]
    LoadLeases(#[source] rackboot_store::StoreError),
    #[error("probe.enabled needs an ICMP socket in DhcpSockets (see bind_icmp)")]
    NoIcmpSocket,
}
