//! The seam between the network services and the boot logic. DHCP asks what
//! boot file to hand a client; TFTP asks for files generated per machine. Both
//! are answered from memory (an inventory cache), never by waiting on the store,
//! because they sit on the boot-storm hot path.

use std::net::{Ipv4Addr, Ipv6Addr};

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

    /// Boot answer for a DHCPv6 client (RFC 5970 boot file URL), `server_ip`
    /// being the address the reply goes out from. `mac` is `None` when the
    /// client's DUID and addresses do not reveal it. Must not block.
    ///
    /// The default gives v6 clients the same intents as DHCPv4 by asking
    /// [`BootResponder::dhcp_boot`] with the unspecified IPv4 address and
    /// turning its answer into a URL on `server_ip` ([`ipv6_boot_url`]): a TFTP
    /// path becomes `tftp://[server]/path` (UEFI PXE), and an `http://0.0.0.0:…`
    /// URL (iPXE's script, an HTTP-boot loader) gets the IPv6 literal as host.
    fn dhcp6_boot(
        &self,
        mac: Option<MacAddr>,
        client: &PxeClient,
        server_ip: Ipv6Addr,
    ) -> Option<Dhcp6Boot> {
        let answer = self.dhcp_boot(mac?, client, Ipv4Addr::UNSPECIFIED)?;
        Some(Dhcp6Boot {
            url: ipv6_boot_url(&answer.filename, server_ip),
            params: Vec::new(),
        })
    }
}

/// Boot information for a DHCPv6 reply (RFC 5970).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp6Boot {
    /// Option 59: `tftp://[2001:db8::1]/snponly.efi` or an `http://[…]:port/…` URL.
    pub url: String,
    /// Option 60 parameters (none by default).
    pub params: Vec<String>,
}

/// A DHCPv4 boot file answer as a URL for an IPv6 client of `server`: a bare
/// TFTP path gets `tftp://[server]/`, and a URL whose host is `0.0.0.0` (built
/// for the unspecified address) gets `[server]` instead; any other URL (a
/// configured public URL) is kept as it is.
pub fn ipv6_boot_url(filename: &str, server: Ipv6Addr) -> String {
    match filename.split_once("://") {
        Some((scheme, rest)) => match rest.strip_prefix("0.0.0.0") {
            Some(after) if after.is_empty() || after.starts_with([':', '/']) => {
                format!("{scheme}://[{server}]{after}")
            }
            _ => filename.to_string(),
        },
        None => format!("tftp://[{server}]/{}", filename.trim_start_matches('/')),
    }
}

#[cfg(test)]
mod ipv6_url_tests {
    use super::*;

    #[test]
    fn v4_answers_become_v6_urls() {
        let server: Ipv6Addr = "2001:db8:77::1".parse().unwrap();
        for (v4, want) in [
            ("snponly.efi", "tftp://[2001:db8:77::1]/snponly.efi"),
            ("/undionly.kpxe", "tftp://[2001:db8:77::1]/undionly.kpxe"),
            (
                "http://0.0.0.0:8080/boot/ipxe/52:54:00:00:00:01",
                "http://[2001:db8:77::1]:8080/boot/ipxe/52:54:00:00:00:01",
            ),
            (
                "http://0.0.0.0/boot/loader/x.efi",
                "http://[2001:db8:77::1]/boot/loader/x.efi",
            ),
            (
                "https://boot.example/boot/ipxe/x",
                "https://boot.example/boot/ipxe/x",
            ),
            ("http://0.0.0.01/x", "http://0.0.0.01/x"),
        ] {
            assert_eq!(ipv6_boot_url(v4, server), want, "{v4}");
        }
    }
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

    /// As [`TftpContent::generate`] for a client of either family (the TFTP
    /// server calls this one). The default answers IPv6 clients as if the
    /// address were unknown (`0.0.0.0`); implementors that put the server's
    /// address into generated files override it.
    fn generate_for(&self, path: &str, client: std::net::IpAddr) -> GeneratedFile {
        match client {
            std::net::IpAddr::V4(v4) => self.generate(path, v4),
            std::net::IpAddr::V6(v6) => {
                self.generate(path, v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED))
            }
        }
    }
}
