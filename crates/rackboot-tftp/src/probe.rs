//! Names that boot loaders ask for on the chance that they exist: shim's
//! revocation and certificate updates, GRUB's
//! module lists, modules, locales, fonts and environment block, its
//! per-machine config names, pxelinux's config search, iPXE's
//! `autoexec.ipxe`. A miss on one of them is how the loader learns the file
//! is absent, not a failed boot, so it is counted apart
//! (`rackboot_tftp_requests_rejected_total{reason="probe_miss"}`) and kept
//! off the machine's timeline. Pure.

/// The loader that probes for `path` (a normalised TFTP path: no leading
/// '/'), or `None` when a miss on it is a real failure (a loader, kernel or
/// initrd that is not there).
pub fn known_probe(path: &str) -> Option<&'static str> {
    let lower = path.to_ascii_lowercase();
    let (dir, file) = match lower.rsplit_once('/') {
        Some((dir, file)) => (dir, file),
        None => ("", lower.as_str()),
    };
    if file.ends_with(".efi")
        && (file.starts_with("revocations") || file.starts_with("shim_certificate"))
    {
        // shim 15.8 looks beside itself for SBAT/SKU revocation updates
        // (revocations_sbat.efi, revocations_sku.efi) and extra certificates
        // (shim_certificate_0.efi) before it loads grubx64.efi.
        return Some("shim");
    }
    if file == "autoexec.ipxe" {
        // iPXE looks for it on the server it was loaded from.
        return Some("iPXE");
    }
    if dir == "pxelinux.cfg" || dir.ends_with("/pxelinux.cfg") {
        // pxelinux tries its UUID, 01-<mac>, ever shorter hex IPs, then default.
        return Some("pxelinux");
    }
    if file.starts_with("grub.cfg-") {
        // GRUB 2.12 tries grub.cfg-<uuid>, grub.cfg-01-<mac> and hex IPs
        // before grub.cfg.
        return Some("GRUB");
    }
    let in_grub_dir = dir.split('/').any(|part| part == "grub");
    let grub_extra = file == "grubenv"
        || [".lst", ".mod", ".mo", ".mo.gz", ".pf2"]
            .iter()
            .any(|ext| file.ends_with(ext));
    if in_grub_dir && grub_extra {
        // The network GRUB's prefix is `(tftp)/grub`: it reads
        // x86_64-efi/{command,fs,crypto,terminal}.lst, locale/<lang>.mo,
        // fonts/unicode.pf2 and grubenv there, which images with built-in
        // modules do not need.
        return Some("GRUB");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_real_files() {
        let table = [
            // Seen from Debian's shim 15.8 on OVMF, before grubx64.efi.
            ("revocations_sku.efi", Some("shim")),
            ("revocations_sbat.efi", Some("shim")),
            ("shim_certificate_0.efi", Some("shim")),
            ("autoexec.ipxe", Some("iPXE")),
            ("boot/autoexec.ipxe", Some("iPXE")),
            ("pxelinux.cfg/default", Some("pxelinux")),
            ("pxelinux.cfg/C0A8", Some("pxelinux")),
            ("pxelinux.cfg/01-52-54-00-12-34-56", Some("pxelinux")),
            ("bios/pxelinux.cfg/default", Some("pxelinux")),
            ("grub/grub.cfg-01-52:54:00:12:34:56", Some("GRUB")),
            ("grub.cfg-0A4D0064", Some("GRUB")),
            ("grub/x86_64-efi/command.lst", Some("GRUB")),
            ("grub/x86_64-efi/fs.lst", Some("GRUB")),
            ("grub/arm64-efi/normal.mod", Some("GRUB")),
            ("grub/locale/en.mo", Some("GRUB")),
            ("grub/locale/en.mo.gz", Some("GRUB")),
            ("grub/fonts/unicode.pf2", Some("GRUB")),
            ("grub/grubenv", Some("GRUB")),
            ("boot/grub/x86_64-efi/terminal.lst", Some("GRUB")),
            // What a boot needs: a miss is a failure.
            ("grub/grub.cfg", None),
            ("grubx64.efi", None),
            ("shimx64.efi", None),
            ("snponly.efi", None),
            ("undionly.kpxe", None),
            ("pxelinux.0", None),
            ("ldlinux.c32", None),
            ("assets/vmlinuz", None),
            ("ramdisk/initramfs.img", None),
            ("os/debian-12/install.amd/linux", None),
            // Lists and modules outside a GRUB directory are someone's files.
            ("assets/modules.lst", None),
            ("grubby/x.mod", None),
            ("assets/grubby/x.mod", None),
        ];
        for (path, want) in table {
            assert_eq!(known_probe(path), want, "{path}");
        }
    }
}
