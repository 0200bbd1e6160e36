//! dnsmasq inside a lab: a stand-in boot server (DHCP + TFTP + iPXE chainload rules) for proving
//! the lab itself, or a plain DHCP server next to rackboot in ProxyDHCP mode. Plus the boot files
//! and iPXE scripts the marker tests use, which rackboot must serve the same way.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::initramfs::{MARKER_KERNEL_CMDLINE, build_marker_initramfs, host_kernel};
use crate::lab::Lab;
use crate::process::LabProcess;
use crate::{LabError, Result, firmware, io_err};

/// Name of the staged kernel in a boot directory.
pub const MARKER_KERNEL_NAME: &str = "vmlinuz";
/// Name of the staged marker initramfs in a boot directory.
pub const MARKER_INITRD_NAME: &str = "marker.cpio.gz";

/// iPXE script that boots the staged marker kernel from wherever the script came from (relative
/// URLs). `initrd=` is what this (2019) iPXE needs on UEFI for the kernel's EFI stub to find the
/// initrd; BIOS ignores it. `lab.mac=${net0/mac}` proves which machine ran the script.
pub fn marker_ipxe_script() -> String {
    format!(
        "#!ipxe\n\
         echo rackboot-lab: booting marker kernel platform=${{platform}}\n\
         kernel {MARKER_KERNEL_NAME} initrd={MARKER_INITRD_NAME} {MARKER_KERNEL_CMDLINE} lab.mac=${{net0/mac}}\n\
         initrd {MARKER_INITRD_NAME}\n\
         boot\n"
    )
}

/// iPXE script that hands the machine back to its firmware ("boot from local disk").
pub const LOCAL_BOOT_IPXE_SCRIPT: &str = "#!ipxe\necho rackboot-lab: boot local disk\nexit\n";

/// Puts the host kernel (as `vmlinuz`) and the marker initramfs (`marker.cpio.gz`) into `dir`;
/// returns their paths.
pub fn stage_marker_boot_files(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
    let kernel = dir.join(MARKER_KERNEL_NAME);
    let source = host_kernel()?;
    std::fs::copy(&source, &kernel).map_err(io_err(format!("copy {}", source.display())))?;
    let initrd = dir.join(MARKER_INITRD_NAME);
    build_marker_initramfs(&initrd)?;
    Ok((kernel, initrd))
}

/// Stages a complete TFTP root for the stand-in boot server: marker kernel and initramfs, the
/// iPXE binaries (undionly.kpxe, ipxe.efi, snponly.efi) and `boot.ipxe` containing `script`.
pub fn stage_tftp_root(dir: &Path, script: &str) -> Result<PathBuf> {
    stage_marker_boot_files(dir)?;
    for binary in firmware::ipxe_binaries() {
        let name = binary.file_name().expect("constant paths have file names");
        std::fs::copy(&binary, dir.join(name)).map_err(io_err(format!(
            "copy {} (apt-get install ipxe)",
            binary.display()
        )))?;
    }
    let script_path = dir.join("boot.ipxe");
    std::fs::write(&script_path, script)
        .map_err(io_err(format!("write {}", script_path.display())))?;
    Ok(dir.to_path_buf())
}

/// What dnsmasq does in the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsmasqRole {
    /// Addresses only, no boot information: the "existing DHCP server" next to rackboot in
    /// ProxyDHCP mode.
    DhcpOnly,
    /// DHCP + TFTP from `tftp_root` with the usual chainload rules: iPXE (option 175) gets
    /// `boot.ipxe`; UEFI x86-64 firmware PXE (arch 7) gets `snponly.efi`; other (BIOS) firmware PXE
    /// gets `undionly.kpxe`.
    BootServer { tftp_root: PathBuf },
}

impl Lab {
    /// Starts dnsmasq on the lab bridge (addresses .100-.200 of the bridge's /24, 10 min leases),
    /// output in `DIR/dnsmasq.log`; returns once its sockets are bound.
    pub async fn start_dnsmasq(&mut self, role: DnsmasqRole) -> Result<&LabProcess> {
        if self.netns().prefix_len() != 24 {
            return Err(LabError::Config(
                "the dnsmasq stand-in assumes a /24 bridge network".into(),
            ));
        }
        let net = self.bridge_addr().octets();
        let first = Ipv4Addr::new(net[0], net[1], net[2], 100);
        let last = Ipv4Addr::new(net[0], net[1], net[2], 200);
        let mut args = vec![
            "--keep-in-foreground".to_string(),
            "--log-facility=-".to_string(),
            "--conf-file=/dev/null".to_string(),
            "--port=0".to_string(),
            // Files live in private temporary directories: stay root to read them.
            "--user=root".to_string(),
            "--group=root".to_string(),
            "--bind-interfaces".to_string(),
            format!("--interface={}", self.netns().bridge()),
            format!("--dhcp-range={first},{last},255.255.255.0,10m"),
            format!(
                "--dhcp-leasefile={}",
                self.dir().join("dnsmasq.leases").display()
            ),
            "--log-dhcp".to_string(),
        ];
        if let DnsmasqRole::BootServer { tftp_root } = &role {
            args.extend([
                "--enable-tftp".to_string(),
                format!("--tftp-root={}", tftp_root.display()),
                "--dhcp-match=set:ipxe,175".to_string(),
                "--dhcp-match=set:efi64,option:client-arch,7".to_string(),
                "--dhcp-boot=tag:ipxe,boot.ipxe".to_string(),
                "--dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi".to_string(),
                "--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe".to_string(),
            ]);
        }
        let mut cmd = self.netns().command("dnsmasq");
        cmd.args(&args);
        let dnsmasq = self.spawn_helper("dnsmasq", cmd)?;
        dnsmasq
            .wait_for_output(
                "sockets bound exclusively to interface",
                Duration::from_secs(10),
            )
            .await?;
        Ok(dnsmasq)
    }
}
