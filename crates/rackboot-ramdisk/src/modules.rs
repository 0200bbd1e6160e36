//! Which kernel modules go into the RAM-disk: chosen by path from [`MODULE_RULES`], then closed
//! over their dependencies (modules.dep) and soft dependencies (modules.softdep, names resolved
//! through modules.alias), copied into a staging root and indexed with `depmod -b`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{RamdiskError, Result, io_err};

/// One line of the module selection table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleRule {
    /// A path under `/lib/modules/VER/kernel/` without the `.ko` extension: `DIR/**` takes every
    /// module below DIR, anything else names one module.
    pub pattern: &'static str,
    /// Why the RAM-disk needs it.
    pub why: &'static str,
}

const fn rule(pattern: &'static str, why: &'static str) -> ModuleRule {
    ModuleRule { pattern, why }
}

/// Every module the deploy RAM-disk ships (before dependencies). Wireless, sound, graphics and
/// USB are left out on purpose; firmware files are not shipped.
pub const MODULE_RULES: &[ModuleRule] = &[
    // Network.
    rule("drivers/net/ethernet/**", "every wired NIC driver"),
    rule(
        "drivers/net/phy/**",
        "PHY drivers, loaded by PHY id or soft dependency (realtek for r8169), not by modules.dep",
    ),
    rule("drivers/net/virtio_net", "virtio NIC"),
    rule("drivers/net/vmxnet3/**", "VMware NIC"),
    rule("drivers/net/bonding/**", "bonded NICs"),
    rule("net/8021q/**", "VLAN tagging"),
    rule(
        "net/packet/af_packet",
        "raw sockets for DHCP (when not built in)",
    ),
    rule(
        "drivers/virtio/**",
        "the virtio PCI transport that virtio NICs and disks sit on",
    ),
    // Storage.
    rule("drivers/block/virtio_blk", "virtio disks"),
    rule("drivers/block/loop", "loop devices for images"),
    rule(
        "drivers/scsi/**",
        "SCSI core, sd_mod, virtio_scsi, SAS/RAID HBAs (megaraid, mpt3sas, hpsa, smartpqi...)",
    ),
    rule(
        "drivers/ata/**",
        "SATA/PATA controllers (ahci, ata_piix...)",
    ),
    rule("drivers/nvme/**", "NVMe"),
    rule(
        "drivers/pci/controller/vmd",
        "Intel VMD, which NVMe and SATA disks sit behind on many Xeon servers",
    ),
    rule(
        "drivers/md/**",
        "software RAID (md-mod, raid0/1/10/456, linear) and device mapper",
    ),
    // Filesystems.
    rule("fs/ext4/**", "ext4"),
    rule("fs/xfs/**", "XFS"),
    rule("fs/btrfs/**", "Btrfs"),
    rule(
        "fs/fat/**",
        "vfat/fat (EFI system partitions, config drives)",
    ),
    rule("fs/isofs/**", "ISO 9660 (config drives, images)"),
    rule("fs/nls/nls_cp437", "FAT code page"),
    rule("fs/nls/nls_ascii", "FAT character set"),
    rule("fs/nls/nls_utf8", "FAT character set"),
    rule("fs/nls/nls_iso8859-1", "FAT character set"),
    rule(
        "fs/efivarfs/efivarfs",
        "EFI variables, where the agent reads whether Secure Boot is on",
    ),
    // Checksums filesystems and RAID look up by name at run time.
    rule(
        "crypto/crc32c_generic",
        "crc32c for ext4/xfs/btrfs metadata",
    ),
    rule("arch/x86/crypto/crc32c-intel", "crc32c, SSE4.2 version"),
    rule("lib/libcrc32c", "crc32c library"),
];

/// Module file extensions the kernel's module loader accepts (kmod decompresses).
const MODULE_EXTENSIONS: &[&str] = &[".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// `kernel/drivers/net/ethernet/intel/e1000/e1000.ko.xz` → `drivers/net/ethernet/intel/e1000/e1000`.
fn rule_path(module_path: &str) -> &str {
    let path = module_path.strip_prefix("kernel/").unwrap_or(module_path);
    MODULE_EXTENSIONS
        .iter()
        .find_map(|ext| path.strip_suffix(ext))
        .unwrap_or(path)
}

/// The module name the kernel and modprobe use: file name without extension, `-` as `_`.
pub fn module_name(module_path: &str) -> String {
    let stem = rule_path(module_path);
    stem.rsplit('/').next().unwrap_or(stem).replace('-', "_")
}

/// Whether `rules` select the module at `module_path` (a modules.dep path).
pub fn selected_by(rules: &[ModuleRule], module_path: &str) -> bool {
    let path = rule_path(module_path);
    rules.iter().any(|r| match r.pattern.strip_suffix("/**") {
        Some(dir) => path.strip_prefix(dir).is_some_and(|r| r.starts_with('/')),
        None => path == r.pattern,
    })
}

/// What a kernel's modules.dep, modules.softdep and modules.alias say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleIndex {
    /// Module path (as in modules.dep, relative to /lib/modules/VER) → its dependencies.
    pub deps: BTreeMap<String, Vec<String>>,
    /// Module name → names (modules or aliases) it wants loaded before or after it.
    pub softdeps: BTreeMap<String, Vec<String>>,
    /// Exact alias → module names (wildcard aliases are not needed for soft dependencies).
    pub aliases: HashMap<String, Vec<String>>,
    by_name: HashMap<String, String>,
}

impl ModuleIndex {
    pub fn parse(modules_dep: &str, softdep: &str, alias: &str) -> Result<ModuleIndex> {
        let deps = parse_modules_dep(modules_dep)?;
        let by_name = deps.keys().map(|p| (module_name(p), p.clone())).collect();
        Ok(ModuleIndex {
            deps,
            softdeps: parse_softdeps(softdep),
            aliases: parse_aliases(alias),
            by_name,
        })
    }

    /// Reads the three files from `/lib/modules/VER` (softdep and alias may be missing).
    pub fn read(dir: &Path) -> Result<ModuleIndex> {
        let read = |name: &str, required: bool| -> Result<String> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(text),
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(String::new())
                }
                Err(e) => Err(RamdiskError::Io {
                    what: format!("read {}", path.display()),
                    source: e,
                }),
            }
        };
        ModuleIndex::parse(
            &read("modules.dep", true)?,
            &read("modules.softdep", false)?,
            &read("modules.alias", false)?,
        )
    }

    /// The modules `rules` choose plus everything they need, as modules.dep paths.
    pub fn select(&self, rules: &[ModuleRule]) -> BTreeSet<String> {
        let wanted = self.deps.keys().filter(|p| selected_by(rules, p)).cloned();
        self.close(wanted)
    }

    /// `start` plus its hard and soft dependencies, transitively.
    pub fn close(&self, start: impl IntoIterator<Item = String>) -> BTreeSet<String> {
        let mut done = BTreeSet::new();
        let mut pending: Vec<String> = start.into_iter().collect();
        while let Some(path) = pending.pop() {
            if !done.insert(path.clone()) {
                continue;
            }
            pending.extend(self.deps.get(&path).into_iter().flatten().cloned());
            for name in self.softdeps.get(&module_name(&path)).into_iter().flatten() {
                pending.extend(self.resolve_name(name));
            }
        }
        done
    }

    /// A soft dependency names a module (`realtek`) or an alias (`crypto-crc32c`); names that
    /// match neither are built in or absent, and kmod skips them too.
    fn resolve_name(&self, name: &str) -> Vec<String> {
        let normalized = name.replace('-', "_");
        if let Some(path) = self.by_name.get(&normalized) {
            return vec![path.clone()];
        }
        self.aliases
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|m| self.by_name.get(&m.replace('-', "_")).cloned())
            .collect()
    }
}

/// `kernel/a.ko: kernel/b.ko kernel/c.ko` per line.
pub fn parse_modules_dep(text: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let mut deps = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (module, rest) = line
            .split_once(':')
            .ok_or_else(|| RamdiskError::ModulesDep {
                line: i + 1,
                reason: format!("no ':' in {line:?}"),
            })?;
        let module = module.trim();
        if module.is_empty() || module.starts_with('/') || module.split('/').any(|p| p == "..") {
            return Err(RamdiskError::ModulesDep {
                line: i + 1,
                reason: format!("{module:?} is not a relative module path"),
            });
        }
        deps.insert(
            module.to_string(),
            rest.split_whitespace().map(str::to_string).collect(),
        );
    }
    Ok(deps)
}

/// `softdep MOD pre: A B post: C` (names without `pre:`/`post:` count as pre).
pub fn parse_softdeps(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut softdeps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("softdep") {
            continue;
        }
        let Some(module) = words.next() else { continue };
        let names = words.filter(|w| !w.ends_with(':')).map(str::to_string);
        softdeps
            .entry(module.replace('-', "_"))
            .or_default()
            .extend(names);
    }
    softdeps
}

/// `alias NAME MODULE` lines; wildcard aliases (device ids) are skipped.
pub fn parse_aliases(text: &str) -> HashMap<String, Vec<String>> {
    let mut aliases: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("alias") {
            continue;
        }
        let (Some(alias), Some(module)) = (words.next(), words.next()) else {
            continue;
        };
        if alias.contains(['*', '?', '[']) {
            continue;
        }
        aliases
            .entry(alias.to_string())
            .or_default()
            .push(module.to_string());
    }
    aliases
}

/// Files besides the modules that `depmod` reads: without modules.builtin, modprobe of a
/// built-in driver (af_packet on Debian) would fail instead of doing nothing.
const DEPMOD_INPUTS: &[&str] = &[
    "modules.order",
    "modules.builtin",
    "modules.builtin.modinfo",
];

/// The modules copied into a staging root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedModules {
    /// `STAGE/lib/modules/VER`.
    pub dir: PathBuf,
    pub count: usize,
    /// Bytes of module files (without the depmod indexes).
    pub size: u64,
}

/// Copies the modules `rules` select (and their dependencies) from `source_dir`
/// (`/lib/modules/VER`) to `stage/lib/modules/VER`, then runs `depmod -b stage VER` there.
pub fn stage_modules(
    source_dir: &Path,
    version: &str,
    stage: &Path,
    rules: &[ModuleRule],
) -> Result<StagedModules> {
    let index = ModuleIndex::read(source_dir)?;
    let selected = index.select(rules);
    if selected.is_empty() {
        return Err(RamdiskError::Modules(format!(
            "no module in {} matches the selection table: is it a kernel module directory?",
            source_dir.display()
        )));
    }
    let dir = stage.join("lib/modules").join(version);
    let mut size = 0;
    for module in &selected {
        let from = source_dir.join(module);
        let to = dir.join(module);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_err(format!("create {}", parent.display())))?;
        }
        size += std::fs::copy(&from, &to).map_err(io_err(format!(
            "copy module {} to {}",
            from.display(),
            to.display()
        )))?;
    }
    for name in DEPMOD_INPUTS {
        let from = source_dir.join(name);
        if from.exists() {
            std::fs::copy(&from, dir.join(name))
                .map_err(io_err(format!("copy {}", from.display())))?;
        }
    }
    let depmod = crate::tools::find_program("depmod").ok_or_else(|| {
        RamdiskError::Modules("depmod not found (apt-get install kmod)".to_string())
    })?;
    let mut cmd = Command::new(&depmod);
    cmd.arg("-b").arg(stage).arg(version);
    crate::run(&mut cmd)?;
    if !dir.join("modules.dep").is_file() {
        return Err(RamdiskError::Modules(format!(
            "{} did not write {}/modules.dep",
            depmod.display(),
            dir.display()
        )));
    }
    Ok(StagedModules {
        dir,
        count: selected.len(),
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines from Debian 12's modules.dep (6.1.0-57-amd64), wanted and unwanted modules mixed.
    const SAMPLE_DEP: &str = "\
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/fs/nls/nls_cp437.ko:
kernel/fs/nls/nls_cp850.ko:
kernel/fs/mbcache.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/fat/fat.ko:
kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko
kernel/fs/isofs/isofs.ko: kernel/drivers/cdrom/cdrom.ko
kernel/drivers/cdrom/cdrom.ko:
kernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko
kernel/crypto/crc32c_generic.ko:
kernel/crypto/xor.ko:
kernel/crypto/async_tx/async_tx.ko:
kernel/crypto/async_tx/async_xor.ko: kernel/crypto/async_tx/async_tx.ko kernel/crypto/xor.ko
kernel/lib/crc16.ko:
kernel/lib/libcrc32c.ko:
kernel/lib/raid6/raid6_pq.ko:
kernel/drivers/pci/controller/vmd.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/gpu/drm/i915/i915.ko: kernel/drivers/gpu/drm/drm.ko
kernel/drivers/gpu/drm/drm.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/scsi/megaraid/megaraid_sas.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
kernel/drivers/scsi/mpt3sas/mpt3sas.ko: kernel/drivers/scsi/raid_class.ko kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/scsi/raid_class.ko:
kernel/drivers/scsi/virtio_scsi.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko kernel/lib/crc-t10dif.ko
kernel/lib/crc-t10dif.ko: kernel/crypto/crct10dif_common.ko
kernel/crypto/crct10dif_common.ko:
kernel/crypto/crct10dif_generic.ko: kernel/crypto/crct10dif_common.ko
kernel/drivers/nvme/host/nvme-core.ko:
kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko
kernel/drivers/net/phy/mdio_devres.ko: kernel/drivers/net/phy/libphy.ko
kernel/drivers/net/phy/libphy.ko:
kernel/drivers/net/phy/realtek.ko: kernel/drivers/net/phy/libphy.ko
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:
kernel/drivers/net/ethernet/realtek/r8169.ko: kernel/drivers/net/phy/mdio_devres.ko kernel/drivers/net/phy/libphy.ko
kernel/drivers/net/wireless/intel/iwlwifi/iwlwifi.ko: kernel/net/wireless/cfg80211.ko
kernel/net/wireless/cfg80211.ko:
kernel/drivers/net/bonding/bonding.ko: kernel/net/tls/tls.ko
kernel/net/tls/tls.ko:
kernel/drivers/net/mii.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/net/usb/r8152.ko: kernel/drivers/net/mii.ko kernel/drivers/usb/core/usbcore.ko
kernel/drivers/usb/core/usbcore.ko:
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/usb/core/usbcore.ko
kernel/drivers/md/raid1.ko: kernel/drivers/md/md-mod.ko
kernel/drivers/md/raid456.ko: kernel/crypto/async_tx/async_xor.ko kernel/drivers/md/md-mod.ko kernel/lib/raid6/raid6_pq.ko kernel/lib/libcrc32c.ko
kernel/drivers/md/md-mod.ko:
kernel/drivers/md/dm-mod.ko:
kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko
kernel/drivers/ata/ata_piix.ko: kernel/drivers/ata/libata.ko
kernel/sound/pci/hda/snd-hda-intel.ko: kernel/sound/core/snd.ko
kernel/sound/core/snd.ko:
kernel/net/802/stp.ko: kernel/net/llc/llc.ko
kernel/net/802/garp.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko
kernel/net/802/mrp.ko:
kernel/net/8021q/8021q.ko: kernel/net/802/garp.ko kernel/net/802/stp.ko kernel/net/802/mrp.ko kernel/net/llc/llc.ko
kernel/net/llc/llc.ko:
kernel/net/bluetooth/bluetooth.ko: kernel/lib/crc16.ko
";

    const SAMPLE_SOFTDEP: &str = "\
# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep crc_t10dif pre: crct10dif
softdep r8169 pre: realtek
softdep btrfs pre: blake2b-256 sha256
softdep snd_hda_intel pre: snd_hda_codec_hdmi
";

    const SAMPLE_ALIAS: &str = "\
alias crypto-crc32c crc32c_intel
alias crypto-crc32c crc32c_generic
alias crct10dif crct10dif_generic
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias crypto-sha256 sha256_ssse3
";

    fn sample() -> ModuleIndex {
        ModuleIndex::parse(SAMPLE_DEP, SAMPLE_SOFTDEP, SAMPLE_ALIAS).unwrap()
    }

    fn names(paths: &BTreeSet<String>) -> BTreeSet<String> {
        paths.iter().map(|p| module_name(p)).collect()
    }

    #[test]
    fn module_names_follow_modprobe() {
        assert_eq!(module_name("kernel/drivers/md/md-mod.ko"), "md_mod");
        assert_eq!(
            module_name("kernel/arch/x86/crypto/crc32c-intel.ko.zst"),
            "crc32c_intel"
        );
        assert_eq!(
            module_name("kernel/fs/nls/nls_iso8859-1.ko.xz"),
            "nls_iso8859_1"
        );
    }

    #[test]
    fn rules_match_whole_directories_and_single_modules() {
        let rules = [rule("drivers/ata/**", ""), rule("fs/nls/nls_cp437", "")];
        for (path, expected) in [
            ("kernel/drivers/ata/ahci.ko", true),
            ("kernel/drivers/ata/pata/x.ko.xz", true),
            ("kernel/drivers/atari/x.ko", false),
            ("kernel/drivers/ata.ko", false),
            ("kernel/fs/nls/nls_cp437.ko", true),
            ("kernel/fs/nls/nls_cp437x.ko", false),
            ("kernel/fs/nls/nls_cp850.ko", false),
        ] {
            assert_eq!(selected_by(&rules, path), expected, "{path}");
        }
    }

    #[test]
    fn the_table_selects_drivers_storage_and_filesystems_with_their_dependencies() {
        let selected = names(&sample().select(MODULE_RULES));
        let expected = [
            // Chosen by the table.
            "e1000",
            "e1000e",
            "r8169",
            "virtio_net",
            "virtio_pci",
            "virtio",
            "virtio_ring",
            "bonding",
            "8021q",
            "virtio_blk",
            "virtio_scsi",
            "sd_mod",
            "megaraid_sas",
            "mpt3sas",
            "raid_class",
            "ahci",
            "ata_piix",
            "nvme",
            "vmd",
            "md_mod",
            "raid1",
            "raid456",
            "dm_mod",
            "ext4",
            "xfs",
            "vfat",
            "isofs",
            "nls_cp437",
            "crc32c_generic",
            "crc32c_intel",
            "libcrc32c",
            // Hard dependencies from elsewhere in the tree.
            "libphy",
            "mdio_devres",
            "net_failover",
            "failover",
            "tls",
            "stp",
            "llc",
            "garp",
            "mrp",
            "scsi_mod",
            "scsi_common",
            "libata",
            "libahci",
            "nvme_core",
            "raid6_pq",
            "async_xor",
            "async_tx",
            "xor",
            "jbd2",
            "mbcache",
            "crc16",
            "fat",
            "cdrom",
            "crc_t10dif",
            "crct10dif_common",
            // Soft dependencies: r8169 → realtek PHY; crc_t10dif → crct10dif alias.
            "realtek",
            "crct10dif_generic",
        ];
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        let missing: Vec<_> = expected.difference(&selected).collect();
        let extra: Vec<_> = selected.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:?}, unexpected {extra:?}"
        );
        for unwanted in [
            "iwlwifi",
            "cfg80211",
            "i915",
            "snd_hda_intel",
            "r8152",
            "usb_storage",
            "usbcore",
            "bluetooth",
            "nls_cp850",
            "mii",
        ] {
            assert!(!selected.contains(unwanted), "{unwanted} selected");
        }
    }

    #[test]
    fn soft_dependencies_resolve_through_aliases() {
        let index = sample();
        let closed = names(&index.close(["kernel/fs/ext4/ext4.ko".to_string()]));
        // ext4 → crypto-crc32c → both implementations.
        assert!(closed.contains("crc32c_generic") && closed.contains("crc32c_intel"));
        // Unknown names (built in, like sha256 here) are skipped, not errors.
        assert_eq!(index.resolve_name("sha256"), Vec::<String>::new());
    }

    #[test]
    fn malformed_modules_dep_is_an_error_naming_the_line() {
        let err = parse_modules_dep("kernel/a.ko:\nno colon here\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(parse_modules_dep("../x.ko:\n").is_err());
        assert!(parse_modules_dep("/abs.ko:\n").is_err());
    }

    #[test]
    fn softdep_lines_without_pre_or_post_count() {
        let softdeps = parse_softdeps("softdep cifs gcm\nsoftdep a-b pre: x post: y\n# c\n");
        assert_eq!(softdeps["cifs"], ["gcm"]);
        assert_eq!(softdeps["a_b"], ["x", "y"]);
    }
}
