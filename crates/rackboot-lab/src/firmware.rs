//! Firmware facts measured on Debian 12 (QEMU 7.2, SeaBIOS 1.16.2, OVMF 2022.11, iPXE
//! 1.0.0+git-20190125 from ipxe/ipxe-qemu) under `-accel tcg` on a 2-core machine.
//!
//! - KVM cannot run iPXE's real-mode code here: always `-accel tcg`.
//! - virtio-net-pci's default option ROM is `efi-virtio.rom` (found by QEMU in
//!   /usr/lib/ipxe/qemu/ via its data path). It is a combined legacy+EFI iPXE image: under SeaBIOS
//!   it is the PXE stack, and iPXE itself does the DHCP (sends option 175 and user class "iPXE"), so
//!   a BIOS machine reaches an iPXE script without chainloading undionly.kpxe. Without a ROM
//!   (`romfile=`) SeaBIOS has no network boot at all.
//! - Under OVMF with `romfile=` (no iPXE ROM), OVMF's own PXE stack boots: it sends client arch 7
//!   and no option 175, so it gets the NBP and iPXE then DHCPs again with option 175. That is the
//!   real "firmware PXE → iPXE chainload" path. Serve `snponly.efi` there: `ipxe.efi` (this 2019
//!   build) drives the NIC through OVMF's SNP too and boots kernels fine, but when its script runs
//!   `exit` ("boot from local disk") it never returns to OVMF (no output for minutes), while
//!   snponly.efi returns and OVMF moves on to the next boot option. With the default ROM, OVMF
//!   first runs the ROM's iPXE (boot option "UEFI PXEv4 (MAC:...)") and then, if that returns, its
//!   own PXE over the same NIC ("UEFI PXEv4 (MAC:...) 2").
//! - This iPXE (2019) loads an initrd for an EFI-stub kernel only through the kernel command line:
//!   the script must say `kernel vmlinuz initrd=NAME ...` where NAME is the initrd image's name.
//! - Typical TCG times with 512 MiB: direct `-kernel` boot to the marker ~7 s; SeaBIOS + iPXE ROM →
//!   DHCP → TFTP kernel+initrd → marker ~26 s; OVMF native PXE → ipxe.efi → marker ~39 s (one VM,
//!   idle host). With a BIOS and a UEFI VM booting at once on a busy host (load 4-6): 39-53 s and
//!   44-65 s; local-disk fall-through: SeaBIOS "No bootable device." ~21 s, OVMF UiApp ~32 s.
//!   iPXE's "Configuring (net0 ...)......" takes several seconds (it waits for ProxyDHCP offers).

use std::path::PathBuf;

/// OVMF code (read-only pflash), 4 MiB layout, no Secure Boot.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable store template; each machine gets a private writable copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF built with Secure Boot and SMM (needs q35 with SMM and a secure pflash).
pub const OVMF_CODE_SECURE_BOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
/// Variables with Microsoft's keys (KEK, and the Windows and UEFI CA 2011 in db)
/// enrolled and Secure Boot enforced, as on a server from the factory.
pub const OVMF_VARS_MS_KEYS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// AAVMF (UEFI for QEMU's arm64 `virt` board, package qemu-efi-aarch64) and its variables.
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
pub const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";
/// Where scripts/install-deps unpacks the arm64 packages the lab needs on an amd64 host
/// (Debian's arm64 kernel, busybox-static and signed network GRUB, from `apt-get
/// download PKG:arm64`): they are not installable beside their amd64 twins.
pub const ARM64_ROOT: &str = "/opt/rackboot-arm64";
/// Debian's signed network GRUB for arm64 (grub-efi-arm64-signed), under [`ARM64_ROOT`].
pub const ARM64_NETWORK_GRUB: &str = "usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed";
/// busybox-static for arm64, under [`ARM64_ROOT`].
pub const ARM64_BUSYBOX: &str = "bin/busybox";

/// Combined legacy+EFI iPXE ROM QEMU uses by default for virtio-net-pci.
pub const VIRTIO_NIC_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";
/// iPXE for BIOS PXE chainloading (uses the firmware's UNDI driver).
pub const UNDIONLY_KPXE: &str = "/usr/lib/ipxe/undionly.kpxe";
/// iPXE for UEFI with its own NIC drivers.
pub const IPXE_EFI: &str = "/usr/lib/ipxe/ipxe.efi";
/// iPXE for UEFI using the firmware's SNP driver.
pub const SNPONLY_EFI: &str = "/usr/lib/ipxe/snponly.efi";

/// SeaBIOS after every boot device failed (blank disk, network boot returned).
pub const SEABIOS_NO_BOOT_DEVICE: &str = "No bootable device.";
/// SeaBIOS trying a disk without a boot sector (proves network boot fell through to the disk).
pub const SEABIOS_DISK_NOT_BOOTABLE: &str = "Boot failed: not a bootable disk";
/// SeaBIOS handing control to the NIC's option ROM.
pub const SEABIOS_BOOTING_ROM: &str = "Booting from ROM...";
/// iPXE when its script `exit`s and it returns to the firmware.
pub const IPXE_NO_MORE_NET_DEVICES: &str = "No more network devices";
/// OVMF starting its native PXE client.
pub const OVMF_START_PXE: &str = ">>Start PXE over IPv4.";
/// OVMF after every boot option failed: it starts the setup UI (boot manager menu).
pub const OVMF_FALLBACK_UI: &str = "BdsDxe: loading Boot0000 \"UiApp\"";

/// OVMF fw_cfg knobs (OvmfPkg's PXE PCDs, read at boot): `string=n` removes the IPv4 or
/// IPv6 PXE boot options, as a server's setup screen can. HTTP boot has no knob in this
/// OVMF; its options ("UEFI HTTPv4", "UEFI HTTPv6") come after the PXE ones, so with both
/// PXE knobs off the machine boots by HTTP only.
pub const OVMF_IPV4_PXE_KNOB: &str = "opt/org.tianocore/IPv4PXESupport";
pub const OVMF_IPV6_PXE_KNOB: &str = "opt/org.tianocore/IPv6PXESupport";
/// OVMF starting its native PXE client over IPv6.
pub const OVMF_START_PXE6: &str = ">>Start PXE over IPv6.";

/// The newest iPXE/OVMF files are where Debian installs them; returned as paths for callers that
/// copy them into a TFTP root.
pub fn ipxe_binaries() -> [PathBuf; 3] {
    [UNDIONLY_KPXE, IPXE_EFI, SNPONLY_EFI].map(PathBuf::from)
}
