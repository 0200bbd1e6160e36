//! The seam between the network services and the boot logic. DHCP asks what
//! boot file to hand a client; TFTP asks for files generated per machine. Both
//! are answered from memory (an inventory cache), never by waiting on the store,
//! because they sit on the boot-storm hot path.

use std::net::Ipv4Addr;

use crate::{MacAddr, PxeClient};

/// Boot information for a DHCP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpBoot {
    /// Option 67 / `file`: a TFTP path (`undionly.kpxe`) or, for iPXE and
    /// HTTP-boot clients, a URL (`http://10.77.0.1:8080/boot/ipxe?mac=...`).
    pub filename: String,
    /// `siaddr` / option 66; `None` means the replying server's own address.
    pub next_server: Option<Ipv4Addr>,
    /// Reply with option 60 "HTTPClient" (UEFI HTTP boot requires it).
    pub http_client: bool,
}

/// Decides what a network-booting client gets. Implemented by the boot crate.
pub trait BootResponder: Send + Sync + 'static {
    /// Boot answer for `client`, or `None` to give no boot information (for
    /// example when boot serving is off). `server_ip` is the address the reply
    /// goes out from, used to build URLs. Must not block.
    fn dhcp_boot(&self, mac: MacAddr, client: &PxeClient, server_ip: Ipv4Addr) -> Option<DhcpBoot>;
}

/// A file generated on request (pxelinux.cfg/..., grub config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratedFile {
    /// rackboot owns this path and here are its bytes.
    Content(Vec<u8>),
    /// rackboot owns this path but has nothing for this client: answer "file not found"
    /// (pxelinux then tries its next candidate name).
    NotFound,
    /// Not a generated path: serve it from the TFTP root as usual.
    NotGenerated,
}

/// Per-machine TFTP content. Implemented by the boot crate. Must not block.
pub trait TftpContent: Send + Sync + 'static {
    /// `path` is normalised (no leading '/', no `..`); `client` is the requester's address.
    fn generate(&self, path: &str, client: Ipv4Addr) -> GeneratedFile;
}
