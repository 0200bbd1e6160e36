//! Helpers for the media tests: building trees, ISOs (xorriso) and comparing
//! imported copies.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian package that ships the real netboot tree used by the tests.
pub const NETBOOT_PACKAGE: &str = "debian-installer-12-netboot-amd64";
pub const NETBOOT_TREE: &str = "/usr/lib/debian-installer/images/12/amd64/text";

pub fn netboot_tree() -> PathBuf {
    let tree = PathBuf::from(NETBOOT_TREE);
    assert!(
        tree.join("version.info").is_file(),
        "{NETBOOT_TREE} is missing: install the Debian package {NETBOOT_PACKAGE} \
         (apt-get install -y {NETBOOT_PACKAGE})"
    );
    tree
}

/// Writes `files` (path, contents) under `root`, creating directories.
pub fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (path, contents) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, contents).unwrap();
    }
}

/// Deterministic filler so kernels/initrds have distinct, checkable bytes.
pub fn filler(seed: u32, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// Which name sets an ISO built by [`xorriso`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsoNames {
    /// `xorriso -as mkisofs -R -J` (what Linux distributions ship).
    RockRidgeJoliet,
    /// Joliet without Rock Ridge (xorriso always writes Rock Ridge unless
    /// told `-rockridge off`).
    JolietOnly,
    /// Plain ISO 9660 names only, as on VMware ESXi media.
    Plain,
    /// Rock Ridge with directories deeper than 8 levels relocated (CL/RE/PL
    /// entries), as mkisofs does by default.
    RockRidgeRelocated,
}

/// Builds an ISO image of `tree` with xorriso, failing clearly when the tool
/// is absent.
pub fn xorriso(tree: &Path, iso: &Path, names: IsoNames) {
    let mut command = Command::new("xorriso");
    match names {
        IsoNames::RockRidgeJoliet => {
            command
                .args(["-as", "mkisofs", "-R", "-J", "-o"])
                .arg(iso)
                .arg(tree);
        }
        IsoNames::RockRidgeRelocated => {
            command
                .args(["-compliance", "deep_paths_off", "-outdev"])
                .arg(iso)
                .arg("-map")
                .arg(tree)
                .arg("/");
        }
        IsoNames::JolietOnly | IsoNames::Plain => {
            let joliet = if names == IsoNames::JolietOnly {
                "on"
            } else {
                "off"
            };
            command
                .args(["-rockridge", "off", "-joliet", joliet, "-outdev"])
                .arg(iso)
                .arg("-map")
                .arg(tree)
                .arg("/");
        }
    }
    let output = command.output().unwrap_or_else(|e| {
        panic!("cannot run xorriso ({e}): install the Debian package xorriso (apt-get install -y xorriso)")
    });
    assert!(
        output.status.success() && iso.is_file(),
        "xorriso failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    File(Vec<u8>),
    Dir,
    Symlink(String),
}

/// Every path under `root` with its contents (symlinks not followed), minus
/// the catalog's metadata file.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        for item in fs::read_dir(dir).unwrap() {
            let item = item.unwrap();
            let path = item.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == rackboot_oscatalog::METADATA_FILE {
                continue;
            }
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    Node::Symlink(fs::read_link(&path).unwrap().to_string_lossy().into_owned()),
                );
            } else if meta.is_dir() {
                out.insert(rel, Node::Dir);
                walk(root, &path, out);
            } else {
                out.insert(rel, Node::File(fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Builds a minimal WIM file: the 208-byte header with the XML data
/// resource (UTF-16LE with BOM) right after it, as wimlib documents the layout.
pub fn fake_wim(xml: &str) -> Vec<u8> {
    let mut xml_bytes = vec![0xFF, 0xFE];
    for unit in xml.encode_utf16() {
        xml_bytes.extend_from_slice(&unit.to_le_bytes());
    }
    let mut wim = vec![0u8; 208];
    wim[..8].copy_from_slice(b"MSWIM\0\0\0");
    wim[8..12].copy_from_slice(&208u32.to_le_bytes());
    wim[12..16].copy_from_slice(&0x10d00u32.to_le_bytes());
    wim[20..24].copy_from_slice(&32768u32.to_le_bytes());
    wim[40..42].copy_from_slice(&1u16.to_le_bytes());
    wim[42..44].copy_from_slice(&1u16.to_le_bytes());
    wim[44..48].copy_from_slice(&1u32.to_le_bytes());
    let size = xml_bytes.len() as u64;
    wim[72..79].copy_from_slice(&size.to_le_bytes()[..7]);
    wim[80..88].copy_from_slice(&208u64.to_le_bytes());
    wim[88..96].copy_from_slice(&size.to_le_bytes());
    wim.extend_from_slice(&xml_bytes);
    wim
}

/// Like [`snapshot`], but a symlink is recorded as the root-relative path it
/// resolves to, so trees whose links are spelled differently but lead to the
/// same place compare equal.
pub fn resolved_snapshot(root: &Path) -> BTreeMap<String, Node> {
    let canonical_root = fs::canonicalize(root).unwrap();
    snapshot(root)
        .into_iter()
        .map(|(path, node)| match node {
            Node::Symlink(_) => {
                let target = fs::canonicalize(root.join(&path)).unwrap();
                let rel = target
                    .strip_prefix(&canonical_root)
                    .unwrap_or_else(|_| {
                        panic!("{path} resolves outside the tree: {}", target.display())
                    })
                    .to_string_lossy()
                    .into_owned();
                (path, Node::Symlink(rel))
            }
            other => (path, other),
        })
        .collect()
}

/// Copies a directory tree, keeping symlinks as they are.
pub fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// Replaces the single occurrence of `from` in the file with `to` (same length).
pub fn patch_once(path: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut data = fs::read(path).unwrap();
    let hits: Vec<usize> = data
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "pattern {from:?} found {} times", hits.len());
    data[hits[0]..hits[0] + to.len()].copy_from_slice(to);
    fs::write(path, data).unwrap();
}

/// Builds an ISO 9660 + UDF bridge image with genisoimage (`-udf`), failing
/// clearly when the tool is absent. `hide` names are left out of the ISO 9660
/// tree only (UDF keeps them), the way Microsoft's media look.
pub fn genisoimage_udf(tree: &Path, iso: &Path, hide: &[&str]) {
    let mut command = Command::new("genisoimage");
    command.args(["-quiet", "-udf"]);
    for name in hide {
        command.arg("-hide").arg(name);
    }
    let output = command.arg("-o").arg(iso).arg(tree).output().unwrap_or_else(|e| {
        panic!("cannot run genisoimage ({e}): install the Debian package genisoimage (apt-get install -y genisoimage)")
    });
    assert!(
        output.status.success() && iso.is_file(),
        "genisoimage failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
