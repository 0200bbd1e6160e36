//! The UDF side of bridge images (ECMA-167 / OSTA UDF 1.02 to 2.01 with a
//! plain partition), for Windows ISOs whose ISO 9660 tree holds only a
//! README. Builds the same directory map as the ISO 9660 walk; file data is
//! then streamed by the same extent reader.
//!
//! Not supported (clear errors): metadata/virtual/sparable partitions
//! (UDF 2.50+), sparse extents, and logical blocks other than 2048 bytes.

use std::collections::{HashMap, HashSet};

use crate::iso::{IsoEntry, Reader};
use crate::media::{Entry, EntryKind, MediaError, check_name, join};

const SECTOR: u64 = 2048;
const MAX_ENTRIES: usize = 2_000_000;
const MAX_DEPTH: usize = 128;
const MAX_DIR_BYTES: u64 = 64 * 1024 * 1024;
const MAX_AD_CHAIN: usize = 64;

const TAG_PARTITION: u16 = 5;
const TAG_LOGICAL_VOLUME: u16 = 6;
const TAG_TERMINATING: u16 = 8;
const TAG_FILE_SET: u16 = 256;
const TAG_FILE_IDENTIFIER: u16 = 257;
const TAG_ALLOCATION_EXTENT: u16 = 258;
const TAG_FILE_ENTRY: u16 = 261;
const TAG_EXTENDED_FILE_ENTRY: u16 = 266;

const FILE_TYPE_DIRECTORY: u8 = 4;
const FILE_TYPE_SYMLINK: u8 = 12;

fn corrupt(msg: impl Into<String>) -> MediaError {
    MediaError::CorruptIso(format!("UDF: {}", msg.into()))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

/// Checks a descriptor tag (ECMA-167 3/7.2) and returns its identifier.
fn tag_id(block: &[u8]) -> Option<u16> {
    if block.len() < 16 {
        return None;
    }
    let sum = block[..16]
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .fold(0u8, |acc, (_, b)| acc.wrapping_add(*b));
    (sum == block[4]).then(|| u16_at(block, 0))
}

/// Decodes an OSTA CS0 d-characters field: compression id 8 (8-bit) or 16 (UCS-2BE).
fn cs0(bytes: &[u8]) -> Option<String> {
    let (&id, rest) = bytes.split_first()?;
    match id {
        8 => Some(rest.iter().map(|&b| char::from(b)).collect()),
        16 => {
            let units: Vec<u16> = rest
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// What a File Entry says about one file.
struct Icb {
    file_type: u8,
    /// (byte offset in the image, length) in file order.
    extents: Vec<(u64, u64)>,
    size: u64,
}

pub(crate) struct Udf<'a> {
    reader: Reader<'a>,
    /// Byte offset of the partition's first block.
    partition_start: u64,
    dirs: HashMap<String, Vec<IsoEntry>>,
    visited: HashSet<u64>,
    entries: usize,
}

impl<'a> Udf<'a> {
    /// Reads the whole UDF directory tree.
    pub(crate) fn read_tree(
        reader: Reader<'a>,
    ) -> Result<HashMap<String, Vec<IsoEntry>>, MediaError> {
        // Anchor Volume Descriptor Pointer at sector 256.
        let anchor = reader.read(256 * SECTOR, SECTOR).map_err(|_| {
            corrupt("image too short for the anchor volume descriptor at sector 256")
        })?;
        if tag_id(&anchor) != Some(2) {
            return Err(corrupt("no anchor volume descriptor at sector 256"));
        }
        let vds_len = u64::from(u32_at(&anchor, 16));
        let vds_loc = u64::from(u32_at(&anchor, 20));
        let mut partitions: HashMap<u16, u64> = HashMap::new();
        let mut volume: Option<Vec<u8>> = None;
        for i in 0..(vds_len / SECTOR).min(64) {
            let block = reader.read((vds_loc + i) * SECTOR, SECTOR)?;
            match tag_id(&block) {
                Some(TAG_PARTITION) => {
                    partitions.insert(u16_at(&block, 22), u64::from(u32_at(&block, 188)));
                }
                Some(TAG_LOGICAL_VOLUME) => volume = Some(block),
                Some(TAG_TERMINATING) | None => break,
                _ => {}
            }
        }
        let volume = volume.ok_or_else(|| corrupt("no logical volume descriptor"))?;
        let block_size = u32_at(&volume, 212);
        if u64::from(block_size) != SECTOR {
            return Err(corrupt(format!(
                "logical block size {block_size}, only 2048 is supported"
            )));
        }
        // Partition map 0 must be a type 1 (physical) map.
        let (map_type, map_len) = (volume[440], volume[441]);
        if map_type != 1 || map_len != 6 {
            return Err(corrupt(
                "the first partition map is not a plain (type 1) map: UDF 2.50+ metadata, virtual or sparable partitions are not supported",
            ));
        }
        let partition_number = u16_at(&volume, 444);
        let start = *partitions
            .get(&partition_number)
            .ok_or_else(|| corrupt(format!("no descriptor for partition {partition_number}")))?;
        let mut udf = Udf {
            reader,
            partition_start: start * SECTOR,
            dirs: HashMap::new(),
            visited: HashSet::new(),
            entries: 0,
        };
        // File Set Descriptor, named by a long_ad in the logical volume's contents use.
        let fsd_lbn = u64::from(u32_at(&volume, 252));
        let fsd = udf.block(fsd_lbn)?;
        if tag_id(&fsd) != Some(TAG_FILE_SET) {
            return Err(corrupt("no file set descriptor"));
        }
        let root_lbn = u64::from(u32_at(&fsd, 404));
        let root = udf.icb(root_lbn)?;
        if root.file_type != FILE_TYPE_DIRECTORY {
            return Err(corrupt("the root ICB is not a directory"));
        }
        udf.directory("", root_lbn, &root, 0)?;
        Ok(udf.dirs)
    }

    fn block_offset(&self, lbn: u64) -> Result<u64, MediaError> {
        lbn.checked_mul(SECTOR)
            .and_then(|o| o.checked_add(self.partition_start))
            .ok_or_else(|| corrupt("block number overflow"))
    }

    fn block(&self, lbn: u64) -> Result<Vec<u8>, MediaError> {
        self.reader.read(self.block_offset(lbn)?, SECTOR)
    }

    /// Reads a (Extended) File Entry and its allocation descriptors.
    fn icb(&self, lbn: u64) -> Result<Icb, MediaError> {
        let offset = self.block_offset(lbn)?;
        let block = self.block(lbn)?;
        let (size_at, lea_at, data_start) = match tag_id(&block) {
            Some(TAG_FILE_ENTRY) => (56, 168, 176),
            Some(TAG_EXTENDED_FILE_ENTRY) => (56, 208, 216),
            other => {
                return Err(corrupt(format!(
                    "block {lbn} is not a file entry (tag {other:?})"
                )));
            }
        };
        let file_type = block[16 + 11];
        let alloc_type = u16_at(&block, 16 + 18) & 0x7;
        let size = u64_at(&block, size_at);
        let l_ea = u32_at(&block, lea_at) as usize;
        let l_ad = u32_at(&block, lea_at + 4) as usize;
        let ads_start = data_start + l_ea;
        let ads = block
            .get(ads_start..ads_start + l_ad)
            .ok_or_else(|| corrupt(format!("file entry at block {lbn} overflows its block")))?;
        let extents = match alloc_type {
            // Embedded: the data lives in the file entry itself.
            3 => {
                if (l_ad as u64) < size {
                    return Err(corrupt(format!(
                        "embedded data at block {lbn} shorter than the file"
                    )));
                }
                vec![(offset + ads_start as u64, size)]
            }
            0 | 1 => self.extents(ads.to_vec(), if alloc_type == 0 { 8 } else { 16 }, size)?,
            other => {
                return Err(corrupt(format!(
                    "allocation descriptor type {other} not supported"
                )));
            }
        };
        Ok(Icb {
            file_type,
            extents,
            size,
        })
    }

    /// Follows short (8-byte) or long (16-byte) allocation descriptors.
    fn extents(
        &self,
        mut ads: Vec<u8>,
        ad_len: usize,
        size: u64,
    ) -> Result<Vec<(u64, u64)>, MediaError> {
        let mut extents = Vec::new();
        let mut total = 0u64;
        let mut chain = 0;
        'list: loop {
            for ad in ads.chunks_exact(ad_len) {
                let raw = u32_at(ad, 0);
                let (kind, len) = (raw >> 30, u64::from(raw & 0x3FFF_FFFF));
                let lbn = u64::from(u32_at(ad, 4));
                if len == 0 {
                    break 'list;
                }
                match kind {
                    0 => {
                        let take = len.min(size - total);
                        let offset = self.block_offset(lbn)?;
                        self.reader
                            .check_extent(offset / SECTOR, take, "UDF file extent")?;
                        if take > 0 {
                            extents.push((offset, take));
                        }
                        total += take;
                    }
                    3 => {
                        chain += 1;
                        if chain > MAX_AD_CHAIN {
                            return Err(corrupt("allocation extent chain too long"));
                        }
                        let block = self.block(lbn)?;
                        if tag_id(&block) != Some(TAG_ALLOCATION_EXTENT) {
                            return Err(corrupt("bad allocation extent descriptor"));
                        }
                        let l_ad = (u32_at(&block, 20) as usize).min(block.len() - 24);
                        ads = block[24..24 + l_ad].to_vec();
                        continue 'list;
                    }
                    _ => return Err(corrupt("sparse (unrecorded) extents are not supported")),
                }
            }
            break;
        }
        if total != size {
            return Err(corrupt(format!("extents cover {total} of {size} bytes")));
        }
        Ok(extents)
    }

    fn read_extents(&self, icb: &Icb) -> Result<Vec<u8>, MediaError> {
        if icb.size > MAX_DIR_BYTES {
            return Err(corrupt(format!("directory or link of {} bytes", icb.size)));
        }
        let mut data = Vec::with_capacity(icb.size as usize);
        for &(offset, len) in &icb.extents {
            data.extend(self.reader.read(offset, len)?);
        }
        Ok(data)
    }

    /// Decodes a symlink's path components (ECMA-167 4/14.16).
    fn symlink_target(&self, data: &[u8]) -> Result<String, MediaError> {
        let mut parts: Vec<String> = Vec::new();
        let mut absolute = false;
        let mut pos = 0;
        while pos + 4 <= data.len() {
            let kind = data[pos];
            let len = data[pos + 1] as usize;
            let ident = data
                .get(pos + 4..pos + 4 + len)
                .ok_or_else(|| corrupt("symlink component runs past its data"))?;
            match kind {
                1 | 2 => {
                    absolute = true;
                    parts.clear();
                }
                3 => parts.push("..".into()),
                4 => parts.push(".".into()),
                5 => parts.push(cs0(ident).ok_or_else(|| corrupt("bad symlink component name"))?),
                _ => return Err(corrupt(format!("symlink component type {kind}"))),
            }
            pos += 4 + len;
        }
        let joined = parts.join("/");
        Ok(if absolute {
            format!("/{joined}")
        } else {
            joined
        })
    }

    fn directory(
        &mut self,
        path: &str,
        lbn: u64,
        icb: &Icb,
        depth: usize,
    ) -> Result<(), MediaError> {
        if depth > MAX_DEPTH {
            return Err(corrupt(format!(
                "directory nesting deeper than {MAX_DEPTH} at {path:?}"
            )));
        }
        if !self.visited.insert(lbn) {
            return Err(corrupt(format!("directory loop at {path:?}")));
        }
        let data = self.read_extents(icb)?;
        let mut entries = Vec::new();
        let mut subdirs = Vec::new();
        let mut pos = 0usize;
        while pos + 38 <= data.len() {
            let fid = &data[pos..];
            if tag_id(fid) != Some(TAG_FILE_IDENTIFIER) {
                return Err(corrupt(format!(
                    "bad file identifier at byte {pos} of {path:?}"
                )));
            }
            let characteristics = fid[18];
            let l_fi = fid[19] as usize;
            let child_lbn = u64::from(u32_at(fid, 24));
            let l_iu = u16_at(fid, 36) as usize;
            let name_at = 38 + l_iu;
            let name_bytes = fid
                .get(name_at..name_at + l_fi)
                .ok_or_else(|| corrupt(format!("file identifier runs past directory {path:?}")))?
                .to_vec();
            pos += (name_at + l_fi + 3) & !3;
            // Deleted entries and the parent link are not names.
            if characteristics & 0x04 != 0 || characteristics & 0x08 != 0 {
                continue;
            }
            let name = cs0(&name_bytes).ok_or_else(|| MediaError::NonUtf8Name {
                dir: path.to_string(),
            })?;
            check_name(path, &name)?;
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(corrupt(format!("more than {MAX_ENTRIES} entries")));
            }
            let child = self.icb(child_lbn)?;
            let kind = match child.file_type {
                FILE_TYPE_DIRECTORY => EntryKind::Dir,
                FILE_TYPE_SYMLINK => EntryKind::Symlink {
                    target: self.symlink_target(&self.read_extents(&child)?)?,
                },
                _ => EntryKind::File { size: child.size },
            };
            let extents = if kind == EntryKind::Dir {
                subdirs.push((name.clone(), child_lbn, child));
                Vec::new()
            } else {
                child.extents
            };
            entries.push(IsoEntry {
                entry: Entry { name, kind },
                extents,
            });
        }
        entries.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
        if let Some(pair) = entries
            .windows(2)
            .find(|w| w[0].entry.name == w[1].entry.name)
        {
            return Err(corrupt(format!(
                "duplicate name {:?} in {path:?}",
                pair[0].entry.name
            )));
        }
        self.dirs.insert(path.to_string(), entries);
        for (name, lbn, icb) in subdirs {
            self.directory(&join(path, &name), lbn, &icb, depth + 1)?;
        }
        Ok(())
    }
}
