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

/// Runs `xorriso -as mkisofs ARGS -o iso tree`, failing clearly when the
/// tool is absent.
pub fn xorriso(tree: &Path, iso: &Path, args: &[&str]) {
    let output = Command::new("xorriso")
        .arg("-as")
        .arg("mkisofs")
        .args(args)
        .arg("-o")
        .arg(iso)
        .arg(tree)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run xorriso ({e}): install the Debian package xorriso (apt-get install -y xorriso)")
        });
    assert!(
        output.status.success(),
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
