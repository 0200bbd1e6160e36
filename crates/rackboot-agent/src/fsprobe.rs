//! Recognising a file system from its superblock, to find a root file system
//! by label and to know what to mount it as. Pure: bytes in, values out.

/// What [`probe`] needs: the first 68 KiB of a partition (btrfs keeps its
/// superblock at 64 KiB).
pub const PROBE_BYTES: usize = 0x10000 + 0x1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// Type to mount as: `ext4` (ext2/3/4), `xfs`, `btrfs`, `vfat`.
    pub kind: &'static str,
    pub label: Option<String>,
}

fn label(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let s = String::from_utf8_lossy(&bytes[..end]).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The file system whose superblock starts `head` (the partition's first
/// bytes), if it is one the agent knows.
pub fn probe(head: &[u8]) -> Option<FsInfo> {
    let at = |off: usize, len: usize| head.get(off..off + len);
    if at(1024 + 56, 2) == Some(&[0x53, 0xef]) {
        return Some(FsInfo {
            kind: "ext4",
            label: label(at(1024 + 120, 16)?),
        });
    }
    if at(0, 4) == Some(b"XFSB") {
        return Some(FsInfo {
            kind: "xfs",
            label: label(at(108, 12)?),
        });
    }
    if at(0x10040, 8) == Some(b"_BHRfS_M") {
        return Some(FsInfo {
            kind: "btrfs",
            label: label(at(0x1012b, 256)?),
        });
    }
    if at(510, 2) == Some(&[0x55, 0xaa]) {
        let fat_label = |off| label(at(off, 11)?).filter(|l| l != "NO NAME");
        if at(82, 5) == Some(b"FAT32") {
            return Some(FsInfo {
                kind: "vfat",
                label: fat_label(71),
            });
        }
        if at(54, 4) == Some(b"FAT1") {
            return Some(FsInfo {
                kind: "vfat",
                label: fat_label(43),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(parts: &[(usize, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; PROBE_BYTES];
        for (off, bytes) in parts {
            b[*off..*off + bytes.len()].copy_from_slice(bytes);
        }
        b
    }

    #[test]
    fn superblocks() {
        let table: Vec<(Vec<u8>, Option<FsInfo>)> = vec![
            (
                with(&[(1080, &[0x53, 0xef]), (1144, b"rootfs")]),
                Some(FsInfo {
                    kind: "ext4",
                    label: Some("rootfs".into()),
                }),
            ),
            (
                with(&[(1080, &[0x53, 0xef])]),
                Some(FsInfo {
                    kind: "ext4",
                    label: None,
                }),
            ),
            (
                with(&[(0, b"XFSB"), (108, b"data\0\0\0\0\0\0\0\0")]),
                Some(FsInfo {
                    kind: "xfs",
                    label: Some("data".into()),
                }),
            ),
            (
                with(&[(0x10040, b"_BHRfS_M"), (0x1012b, b"fedora")]),
                Some(FsInfo {
                    kind: "btrfs",
                    label: Some("fedora".into()),
                }),
            ),
            (
                with(&[
                    (510, &[0x55, 0xaa]),
                    (82, b"FAT32   "),
                    (71, b"CIDATA     "),
                ]),
                Some(FsInfo {
                    kind: "vfat",
                    label: Some("CIDATA".into()),
                }),
            ),
            (
                with(&[
                    (510, &[0x55, 0xaa]),
                    (54, b"FAT16   "),
                    (43, b"NO NAME    "),
                ]),
                Some(FsInfo {
                    kind: "vfat",
                    label: None,
                }),
            ),
            // An MBR is a boot sector but no file system.
            (with(&[(510, &[0x55, 0xaa])]), None),
            (vec![0u8; 100], None),
        ];
        for (bytes, want) in table {
            assert_eq!(probe(&bytes), want);
        }
    }
}
