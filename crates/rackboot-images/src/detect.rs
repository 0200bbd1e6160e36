//! What a source file is, from its first bytes only: file names lie
//! (`disk.img` that is a qcow2, `image.raw.xz` that holds a qcow2).

use std::fmt;

use crate::SourceFormat;

/// How many leading bytes [`detect`] needs to see everything it knows
/// (the ISO 9660 signature sits at 32769).
pub const HEAD_LEN: usize = 36 * 1024;

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// An importable format.
    Format(SourceFormat),
    Empty,
    Iso9660,
    Vmdk,
    Vhdx,
    /// A dynamic VHD (a fixed one is raw data with a footer: imported as raw).
    Vhd,
    Vdi,
    Bzip2,
    Tar,
}

impl Detected {
    /// The format to import it as, if it is importable.
    pub fn source_format(self) -> Option<SourceFormat> {
        match self {
            Detected::Format(format) => Some(format),
            _ => None,
        }
    }

    /// "a qcow2 image", "an ISO 9660 image"...
    pub fn describe(self) -> &'static str {
        match self {
            Detected::Format(SourceFormat::Qcow2) => "a qcow2 image",
            Detected::Format(SourceFormat::Zstd) => "zstd-compressed data",
            Detected::Format(SourceFormat::Xz) => "xz-compressed data",
            Detected::Format(SourceFormat::Gzip) => "gzip-compressed data",
            Detected::Format(SourceFormat::Raw) => "a raw disk image",
            Detected::Empty => "empty",
            Detected::Iso9660 => "an ISO 9660 image",
            Detected::Vmdk => "a VMDK image",
            Detected::Vhdx => "a VHDX image",
            Detected::Vhd => "a dynamic VHD image",
            Detected::Vdi => "a VirtualBox VDI image",
            Detected::Bzip2 => "bzip2-compressed data",
            Detected::Tar => "a tar archive",
        }
    }

    /// What the operator should do instead of importing it.
    pub fn advice(self) -> &'static str {
        match self {
            Detected::Format(_) => "importable",
            Detected::Empty => "there is no disk to import",
            Detected::Iso9660 => {
                "ISOs are installation media: import them with `rackboot os import`"
            }
            Detected::Vmdk | Detected::Vhdx | Detected::Vhd | Detected::Vdi => {
                "convert it first with `qemu-img convert -O qcow2 SOURCE image.qcow2`"
            }
            Detected::Bzip2 => "recompress it with zstd, xz or gzip, or decompress it first",
            Detected::Tar => "extract the disk image from it first",
        }
    }
}

impl fmt::Display for Detected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

fn at(head: &[u8], offset: usize, magic: &[u8]) -> bool {
    head.get(offset..offset + magic.len()) == Some(magic)
}

/// Classifies a file by its first bytes (pass at least [`HEAD_LEN`] of them,
/// or the whole file if shorter). Anything unrecognised is a raw disk.
pub fn detect(head: &[u8]) -> Detected {
    if head.is_empty() {
        return Detected::Empty;
    }
    if at(head, 0, b"QFI\xfb") {
        return Detected::Format(SourceFormat::Qcow2);
    }
    if at(head, 0, &[0x28, 0xb5, 0x2f, 0xfd]) {
        return Detected::Format(SourceFormat::Zstd);
    }
    if at(head, 0, &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        return Detected::Format(SourceFormat::Xz);
    }
    if at(head, 0, &[0x1f, 0x8b]) {
        return Detected::Format(SourceFormat::Gzip);
    }
    if at(head, 0, b"KDMV") || at(head, 0, b"# Disk DescriptorFile") {
        return Detected::Vmdk;
    }
    if at(head, 0, b"vhdxfile") {
        return Detected::Vhdx;
    }
    if at(head, 0, b"conectix") {
        return Detected::Vhd;
    }
    if at(head, 0x40, &[0x7f, 0x10, 0xda, 0xbe]) {
        return Detected::Vdi;
    }
    // "BZh", a block size digit, then the block or end-of-stream magic.
    if at(head, 0, b"BZh")
        && head.get(3).is_some_and(|d| (b'1'..=b'9').contains(d))
        && (at(head, 4, &[0x31, 0x41, 0x59, 0x26, 0x53, 0x59])
            || at(head, 4, &[0x17, 0x72, 0x45, 0x38, 0x50, 0x90]))
    {
        return Detected::Bzip2;
    }
    if at(head, 257, b"ustar") {
        return Detected::Tar;
    }
    // Primary volume descriptor at sector 16 (of 2048 bytes): type, "CD001".
    if at(head, 0x8001, b"CD001") {
        return Detected::Iso9660;
    }
    Detected::Format(SourceFormat::Raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(offset: usize, magic: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; HEAD_LEN];
        v[offset..offset + magic.len()].copy_from_slice(magic);
        v
    }

    #[test]
    fn table() {
        let mut mbr = vec![0u8; 512];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        for (head, want) in [
            (vec![], Detected::Empty),
            (
                b"QFI\xfb\0\0\0\x03".to_vec(),
                Detected::Format(SourceFormat::Qcow2),
            ),
            (
                vec![0x28, 0xb5, 0x2f, 0xfd, 0x04],
                Detected::Format(SourceFormat::Zstd),
            ),
            (
                vec![0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00],
                Detected::Format(SourceFormat::Xz),
            ),
            // An xz magic without its final NUL is not xz.
            (
                vec![0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x01],
                Detected::Format(SourceFormat::Raw),
            ),
            (vec![0x1f, 0x8b, 0x08], Detected::Format(SourceFormat::Gzip)),
            (vec![0x1f], Detected::Format(SourceFormat::Raw)),
            (b"KDMV\x01".to_vec(), Detected::Vmdk),
            (b"# Disk DescriptorFile\n".to_vec(), Detected::Vmdk),
            (b"vhdxfile".to_vec(), Detected::Vhdx),
            (b"conectix".to_vec(), Detected::Vhd),
            (with(0x40, &[0x7f, 0x10, 0xda, 0xbe]), Detected::Vdi),
            (b"BZh91AY&SY".to_vec(), Detected::Bzip2),
            (b"BZh9\x17\x72\x45\x38\x50\x90".to_vec(), Detected::Bzip2),
            (b"BZh0junk".to_vec(), Detected::Format(SourceFormat::Raw)),
            (with(257, b"ustar\x0000"), Detected::Tar),
            (with(0x8001, b"CD001"), Detected::Iso9660),
            // The ISO signature of a file cut short before it is not seen.
            (vec![0u8; 0x8003], Detected::Format(SourceFormat::Raw)),
            (mbr, Detected::Format(SourceFormat::Raw)),
            (vec![0u8; HEAD_LEN], Detected::Format(SourceFormat::Raw)),
            (vec![0u8; 1], Detected::Format(SourceFormat::Raw)),
        ] {
            assert_eq!(detect(&head), want, "{:02x?}", &head[..head.len().min(12)]);
        }
    }

    #[test]
    fn only_importable_formats_have_a_source_format() {
        assert_eq!(
            Detected::Format(SourceFormat::Xz).source_format(),
            Some(SourceFormat::Xz)
        );
        for d in [Detected::Empty, Detected::Iso9660, Detected::Tar] {
            assert_eq!(d.source_format(), None);
        }
        assert!(Detected::Iso9660.advice().contains("os import"));
    }
}
