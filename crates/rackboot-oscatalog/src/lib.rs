//! Importing OS installation media into rackboot's OS catalog.
//!
//! - [`detect`] recognises family, distribution, version, architecture, the
//!   installer's boot files and package repositories (a Debian-style archive
//!   with its netboot installer, RHEL repodata) on any [`MediaFs`] (a directory tree or an
//!   ISO image read in place by [`IsoImage`]: ISO 9660 with Rock Ridge and
//!   Joliet, or UDF for Windows media; no mount, no root).
//! - [`import`] copies a tree or extracts an ISO into `catalog_dir/<id>/`
//!   atomically, with progress, and records `.rackboot-os.json`;
//!   [`list`] and [`delete`] manage the catalog.
//!
//! Everything here is blocking file I/O: call it from `spawn_blocking` (or
//! a plain thread) inside async code.

use std::path::PathBuf;

use rackboot_core::OsFamily;
use serde::{Deserialize, Serialize};

pub mod detect;
pub mod import;
pub mod iso;
pub mod media;
mod udf;
pub mod wim;

pub use detect::{DetectError, detect, open_media};
pub use import::{
    CatalogEntry, ImportError, ImportPhase, ImportProgress, METADATA_FILE, delete, import, list,
};
pub use iso::IsoImage;
pub use media::{DirTree, Entry, EntryKind, MediaError, MediaFs};

/// Where the media came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Iso,
    Tree,
}

/// An installable OS release found on media. All paths are relative to the
/// tree root (the directory served under e.g. `/os/<id>/`).
///
/// Boot files per family:
/// - Linux families (RHEL, Debian, Ubuntu, SUSE): `kernel` + `initrd`.
/// - ESXi: `kernel` is boot.cfg's `kernel=` (b.b00), `initrd` its first
///   module and `extra_boot_files` the remaining modules in boot.cfg order;
///   `boot_config` is boot.cfg, `bootloader_bios` mboot.c32 and
///   `bootloader_efi` efi/boot/bootx64.efi (mboot.efi), which load them.
/// - Windows (through wimboot, which the server provides): `kernel` is
///   `bootmgr` (or bootmgr.efi), `initrd` is `sources/boot.wim` and
///   `extra_boot_files` are `boot/bcd` and `boot/boot.sdi`: hand all of them
///   to wimboot as initrds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    /// `<distro>-<version>-<arch>`, e.g. "debian-12-amd64", "rocky-9.4-x86_64".
    pub id: String,
    pub family: OsFamily,
    /// Lower-case distribution slug: "rocky", "almalinux", "debian", "ubuntu",
    /// "sles", "opensuse-leap", "esxi", "windows-server", ...
    pub distro: String,
    pub version: String,
    /// The media's own spelling: "x86_64" (RHEL, SUSE, ESXi), "amd64"
    /// (Debian, Ubuntu, Windows), "arm64", "aarch64", ...
    pub arch: String,
    /// Human-readable name, e.g. "Rocky Linux 9.4".
    pub name: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub extra_boot_files: Vec<PathBuf>,
    pub boot_config: Option<PathBuf>,
    pub bootloader_bios: Option<PathBuf>,
    pub bootloader_efi: Option<PathBuf>,
    pub source_kind: SourceKind,
    /// A package repository in the tree, which the installer uses as its
    /// mirror (it is served with the tree under `/os/<id>/`): a Debian-style
    /// archive (`dists/`, `pool/`), or the RPM repositories (`repodata/`) of
    /// a RHEL-family tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<PackageRepository>,
}

/// A package repository found in an OS tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRepository {
    pub kind: RepositoryKind,
    /// Where each repository starts, relative to the tree root (`""`: the
    /// root itself; RHEL 8+: `BaseOS`, `AppStream`).
    pub paths: Vec<PathBuf>,
    /// Debian: the suite's codename (`bookworm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// Debian: the suite's components (`main`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepositoryKind {
    /// A Debian-style archive: `dists/<suite>/Release` (or `InRelease`) and `pool/`.
    Apt,
    /// An RPM repository: `repodata/repomd.xml`.
    Rpm,
}

/// Makes an id component: lower case, `[a-z0-9._-]` only.
pub(crate) fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

pub(crate) fn release_id(distro: &str, version: &str, arch: &str) -> String {
    format!("{}-{}-{}", slug(distro), slug(version), slug(arch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_slugs() {
        assert_eq!(release_id("Rocky", "9.4", "x86_64"), "rocky-9.4-x86_64");
        assert_eq!(
            release_id("windows-server", "10.0.20348", "amd64"),
            "windows-server-10.0.20348-amd64"
        );
        assert_eq!(slug(" openSUSE Leap/../x "), "opensuse-leap-..-x");
        assert_eq!(slug("a  b"), "a-b");
    }
}
