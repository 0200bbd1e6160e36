//! MBR and GPT partition tables: parsing, and adding one partition in the
//! free space after the last one (the cloud-init seed). Pure functions over
//! sectors; [`read_table`] is the one that reads a device.
//!
//! When an image smaller than its disk was written, its GPT backup header
//! and entry array sit at the end of the *image*. Adding a partition moves
//! them to the end of the disk (as `sgdisk -e` would), grows the last usable
//! LBA, and updates both headers' CRCs and the protective MBR.

use crate::blockdev::Device;

const MBR_SIGNATURE: [u8; 2] = [0x55, 0xaa];
const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// MBR type of the protective entry of a GPT disk.
pub const MBR_GPT_PROTECTIVE: u8 = 0xee;
/// MBR type for the seed: W95 FAT32 (LBA).
pub const MBR_FAT32_LBA: u8 = 0x0c;
/// GPT type for the seed: Microsoft basic data, EBD0A0A2-B9E5-4433-87C0-68B6B72699C7.
pub const GPT_BASIC_DATA: &str = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("no partition table (no MBR signature)")]
    NoTable,
    #[error("GPT: {0}")]
    BadGpt(String),
    #[error("no free entry in the partition table")]
    NoFreeSlot,
    #[error("{need} sectors needed after the last partition, {have} free")]
    NoRoom { need: u64, have: u64 },
    #[error("reading the partition table: {0}")]
    Io(String),
}

/// A partition, in logical sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as the kernel numbers it (`vda2` is 2).
    pub number: u32,
    pub start: u64,
    pub sectors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrEntry {
    pub bootable: bool,
    pub kind: u8,
    pub start: u32,
    pub sectors: u32,
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// The four primary entries of an MBR (empty ones have kind 0).
pub fn parse_mbr(lba0: &[u8]) -> Result<[MbrEntry; 4], TableError> {
    if lba0.len() < 512 || lba0[510..512] != MBR_SIGNATURE {
        return Err(TableError::NoTable);
    }
    Ok(std::array::from_fn(|i| {
        let e = &lba0[446 + 16 * i..446 + 16 * (i + 1)];
        MbrEntry {
            bootable: e[0] == 0x80,
            kind: e[4],
            start: u32_at(e, 8),
            sectors: u32_at(e, 12),
        }
    }))
}

pub fn is_gpt(entries: &[MbrEntry; 4]) -> bool {
    entries.iter().any(|e| e.kind == MBR_GPT_PROTECTIVE)
}

fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

/// Sectors in 1 MiB: partitions start on MiB boundaries, as every
/// partitioning tool does now.
pub fn mib_alignment(sector_size: u64) -> u64 {
    ((1 << 20) / sector_size).max(1)
}

/// A partition added: where, and the sectors to write (byte offset, bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub partition: Partition,
    pub writes: Vec<(u64, Vec<u8>)>,
}

/// Adds a primary MBR partition of `size` sectors and type `kind` after the
/// last partition.
pub fn add_mbr_partition(
    lba0: &[u8],
    disk_sectors: u64,
    size: u64,
    kind: u8,
    sector_size: u64,
) -> Result<Added, TableError> {
    let entries = parse_mbr(lba0)?;
    let slot = entries
        .iter()
        .position(|e| e.kind == 0)
        .ok_or(TableError::NoFreeSlot)?;
    let used_end = entries
        .iter()
        .filter(|e| e.kind != 0)
        .map(|e| u64::from(e.start) + u64::from(e.sectors))
        .max()
        .unwrap_or(0);
    let align = mib_alignment(sector_size);
    let start = align_up(used_end.max(align), align);
    // MBR fields are 32-bit: nothing past 2 TiB (512-byte sectors).
    let limit = disk_sectors.min(u64::from(u32::MAX));
    let have = limit.saturating_sub(start);
    if size > have {
        return Err(TableError::NoRoom { need: size, have });
    }
    let mut sector = lba0[..512].to_vec();
    let e = &mut sector[446 + 16 * slot..446 + 16 * (slot + 1)];
    e[0] = 0;
    // CHS fields say "use LBA" (the maximum), as fdisk writes past 8 GiB.
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = kind;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&(start as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(size as u32).to_le_bytes());
    Ok(Added {
        partition: Partition {
            number: slot as u32 + 1,
            start,
            sectors: size,
        },
        writes: vec![(0, sector)],
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    pub header_size: u32,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl GptHeader {
    pub fn entries_bytes(&self) -> usize {
        self.num_entries as usize * self.entry_size as usize
    }
}

pub fn parse_gpt_header(sector: &[u8]) -> Result<GptHeader, TableError> {
    let bad = |s: &str| TableError::BadGpt(s.to_string());
    if sector.len() < 92 || &sector[..8] != GPT_SIGNATURE {
        return Err(bad("no EFI PART signature"));
    }
    let header_size = u32_at(sector, 12);
    if !(92..=sector.len() as u32).contains(&header_size) {
        return Err(bad("bad header size"));
    }
    let mut copy = sector[..header_size as usize].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != u32_at(sector, 16) {
        return Err(bad("header CRC mismatch"));
    }
    let h = GptHeader {
        header_size,
        my_lba: u64_at(sector, 24),
        alternate_lba: u64_at(sector, 32),
        first_usable: u64_at(sector, 40),
        last_usable: u64_at(sector, 48),
        entries_lba: u64_at(sector, 72),
        num_entries: u32_at(sector, 80),
        entry_size: u32_at(sector, 84),
        entries_crc: u32_at(sector, 88),
    };
    if h.entry_size < 128 || h.num_entries == 0 || h.entries_bytes() > 1 << 20 {
        return Err(bad("bad entry array geometry"));
    }
    Ok(h)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptEntry {
    pub number: u32,
    pub type_guid: [u8; 16],
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub name: String,
}

/// The used entries of a GPT entry array (checked against the header's CRC).
pub fn parse_gpt_entries(h: &GptHeader, bytes: &[u8]) -> Result<Vec<GptEntry>, TableError> {
    let bytes = bytes
        .get(..h.entries_bytes())
        .ok_or_else(|| TableError::BadGpt("entry array truncated".into()))?;
    if crc32(bytes) != h.entries_crc {
        return Err(TableError::BadGpt("entry array CRC mismatch".into()));
    }
    Ok(bytes
        .chunks(h.entry_size as usize)
        .enumerate()
        .filter(|(_, e)| e[..16].iter().any(|&b| b != 0))
        .map(|(i, e)| {
            let name: Vec<u16> = e[56..128]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0)
                .collect();
            GptEntry {
                number: i as u32 + 1,
                type_guid: e[..16].try_into().unwrap(),
                first_lba: u64_at(e, 32),
                last_lba: u64_at(e, 40),
                name: String::from_utf16_lossy(&name),
            }
        })
        .collect())
}

/// What [`add_gpt_partition`] adds.
pub struct GptNew<'a> {
    pub size: u64,
    /// On-disk (mixed-endian) GUID bytes: `Uuid::to_bytes_le()`.
    pub type_guid: [u8; 16],
    pub unique_guid: [u8; 16],
    pub name: &'a str,
}

/// Adds a GPT partition after the last one, moving the backup header and
/// entry array to the end of the disk. `lba1` is the primary header sector,
/// `entries` the primary entry array.
pub fn add_gpt_partition(
    lba0: &[u8],
    lba1: &[u8],
    entries: &[u8],
    sector_size: u64,
    disk_sectors: u64,
    new: &GptNew,
) -> Result<Added, TableError> {
    let h = parse_gpt_header(lba1)?;
    let used = parse_gpt_entries(&h, entries)?;
    let es = h.entry_size as usize;
    let slot = entries[..h.entries_bytes()]
        .chunks(es)
        .position(|e| e[..16].iter().all(|&b| b == 0))
        .ok_or(TableError::NoFreeSlot)?;
    let entry_sectors = (h.entries_bytes() as u64).div_ceil(sector_size);
    let backup_header_lba = disk_sectors - 1;
    let backup_entries_lba = backup_header_lba - entry_sectors;
    let last_usable = backup_entries_lba - 1;
    let used_end = used
        .iter()
        .map(|e| e.last_lba + 1)
        .max()
        .unwrap_or(h.first_usable);
    let align = mib_alignment(sector_size);
    let start = align_up(used_end.max(h.first_usable), align);
    let have = (last_usable + 1).saturating_sub(start);
    if new.size > have {
        return Err(TableError::NoRoom {
            need: new.size,
            have,
        });
    }

    let mut array = entries[..h.entries_bytes()].to_vec();
    let e = &mut array[slot * es..(slot + 1) * es];
    e.fill(0);
    e[..16].copy_from_slice(&new.type_guid);
    e[16..32].copy_from_slice(&new.unique_guid);
    e[32..40].copy_from_slice(&start.to_le_bytes());
    e[40..48].copy_from_slice(&(start + new.size - 1).to_le_bytes());
    for (i, unit) in new.name.encode_utf16().take(36).enumerate() {
        e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    let array_crc = crc32(&array);

    let header = |my: u64, alternate: u64, entries_at: u64| {
        let mut s = lba1[..sector_size as usize].to_vec();
        s[24..32].copy_from_slice(&my.to_le_bytes());
        s[32..40].copy_from_slice(&alternate.to_le_bytes());
        s[48..56].copy_from_slice(&last_usable.to_le_bytes());
        s[72..80].copy_from_slice(&entries_at.to_le_bytes());
        s[88..92].copy_from_slice(&array_crc.to_le_bytes());
        s[16..20].fill(0);
        let crc = crc32(&s[..h.header_size as usize]);
        s[16..20].copy_from_slice(&crc.to_le_bytes());
        s
    };
    let primary = header(1, backup_header_lba, h.entries_lba);
    let backup = header(backup_header_lba, 1, backup_entries_lba);

    // The protective MBR covers the whole disk (or as much as 32 bits hold).
    let mut pmbr = lba0[..512].to_vec();
    if let Some(i) = parse_mbr(lba0)?
        .iter()
        .position(|e| e.kind == MBR_GPT_PROTECTIVE)
    {
        let size = (disk_sectors - 1).min(u64::from(u32::MAX)) as u32;
        pmbr[446 + 16 * i + 12..446 + 16 * i + 16].copy_from_slice(&size.to_le_bytes());
    }
    let mut padded_array = array.clone();
    padded_array.resize((entry_sectors * sector_size) as usize, 0);
    Ok(Added {
        partition: Partition {
            number: slot as u32 + 1,
            start,
            sectors: new.size,
        },
        writes: vec![
            (0, pmbr),
            (h.entries_lba * sector_size, padded_array.clone()),
            (sector_size, primary),
            (backup_entries_lba * sector_size, padded_array),
            (backup_header_lba * sector_size, backup),
        ],
    })
}

/// A disk's partition table as read from the device.
#[derive(Debug, Clone)]
pub struct Table {
    pub gpt: bool,
    pub partitions: Vec<Partition>,
    pub lba0: Vec<u8>,
    /// GPT only: the primary header sector and entry array.
    pub lba1: Vec<u8>,
    pub entries: Vec<u8>,
}

/// Reads the partition table of `dev` (MBR primaries, or the primary GPT).
pub fn read_table(dev: &Device, sector_size: u64) -> Result<Table, TableError> {
    let read = |offset: u64, len: usize| {
        let mut buf = vec![0u8; len];
        dev.read_at(&mut buf, offset)
            .map(|_| buf)
            .map_err(|e| TableError::Io(format!("{}: {e}", dev.path().display())))
    };
    let ss = sector_size as usize;
    let lba0 = read(0, ss.max(512))?;
    let mbr = parse_mbr(&lba0)?;
    if !is_gpt(&mbr) {
        let partitions = mbr
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind != 0)
            .map(|(i, e)| Partition {
                number: i as u32 + 1,
                start: u64::from(e.start),
                sectors: u64::from(e.sectors),
            })
            .collect();
        return Ok(Table {
            gpt: false,
            partitions,
            lba0,
            lba1: Vec::new(),
            entries: Vec::new(),
        });
    }
    let lba1 = read(sector_size, ss)?;
    let h = parse_gpt_header(&lba1)?;
    let entries = read(h.entries_lba * sector_size, h.entries_bytes())?;
    let partitions = parse_gpt_entries(&h, &entries)?
        .iter()
        .map(|e| Partition {
            number: e.number,
            start: e.first_lba,
            sectors: e.last_lba + 1 - e.first_lba,
        })
        .collect();
    Ok(Table {
        gpt: true,
        partitions,
        lba0,
        lba1,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    fn mbr(entries: &[(u8, u32, u32)]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        for (i, (kind, start, size)) in entries.iter().enumerate() {
            let e = &mut s[446 + 16 * i..462 + 16 * i];
            e[4] = *kind;
            e[8..12].copy_from_slice(&start.to_le_bytes());
            e[12..16].copy_from_slice(&size.to_le_bytes());
        }
        s[510] = 0x55;
        s[511] = 0xaa;
        s
    }

    /// (existing entries, disk sectors, size) -> (number, start) or error.
    type MbrCase = (
        Vec<(u8, u32, u32)>,
        u64,
        u64,
        Result<(u32, u64), TableError>,
    );

    #[test]
    fn mbr_partition_after_the_last() {
        let gib = 2 * 1024 * 1024u64; // sectors
        // (existing entries, disk sectors, size) -> (number, start) or error
        let table: Vec<MbrCase> = vec![
            (vec![(0x83, 2048, 1_000_000)], gib, 2048, Ok((2, 1_003_520))),
            (vec![], gib, 2048, Ok((1, 2048))),
            // Out of order entries: the highest end counts, an extended one too.
            (
                vec![(0x83, 500_000, 100_000), (0x05, 2048, 2048)],
                gib,
                2048,
                Ok((3, 600_064)),
            ),
            (
                vec![(0x83, 2048, (gib - 4096) as u32)],
                gib,
                4096,
                Err(TableError::NoRoom {
                    need: 4096,
                    have: 2048,
                }),
            ),
            (
                vec![
                    (0x83, 2048, 10),
                    (0x83, 4096, 10),
                    (0x83, 6144, 10),
                    (0x83, 8192, 10),
                ],
                gib,
                10,
                Err(TableError::NoFreeSlot),
            ),
        ];
        for (entries, disk, size, want) in table {
            let got = add_mbr_partition(&mbr(&entries), disk, size, MBR_FAT32_LBA, 512);
            match (got, want) {
                (Ok(added), Ok((number, start))) => {
                    assert_eq!(
                        (added.partition.number, added.partition.start),
                        (number, start)
                    );
                    let after = parse_mbr(&added.writes[0].1).unwrap();
                    let e = after[number as usize - 1];
                    assert_eq!(
                        (e.kind, u64::from(e.start), u64::from(e.sectors)),
                        (0x0c, start, size)
                    );
                    // The others are untouched.
                    let before = parse_mbr(&mbr(&entries)).unwrap();
                    for i in 0..4 {
                        if i != number as usize - 1 {
                            assert_eq!(after[i], before[i]);
                        }
                    }
                }
                (got, want) => {
                    assert_eq!(got.map(|a| (a.partition.number, a.partition.start)), want)
                }
            }
        }
        assert_eq!(
            add_mbr_partition(&[0u8; 512], gib, 1, 0x0c, 512),
            Err(TableError::NoTable)
        );
    }

    /// A GPT as an image of `image_sectors` would carry it, with partitions.
    fn gpt(image_sectors: u64, parts: &[(u64, u64)]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let lba0 = mbr(&[(0xee, 1, (image_sectors - 1) as u32)]);
        let mut entries = vec![0u8; 128 * 128];
        let linux = uuid::Uuid::parse_str("0fc63daf-8483-4772-8e79-3d69d8477de4").unwrap();
        for (i, (first, last)) in parts.iter().enumerate() {
            let e = &mut entries[128 * i..128 * (i + 1)];
            e[..16].copy_from_slice(&linux.to_bytes_le());
            e[16..32].copy_from_slice(&crate::random::uuid().to_bytes_le());
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
        }
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(GPT_SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(image_sectors - 1).to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(image_sectors - 34).to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        (lba0, h, entries)
    }

    #[test]
    fn gpt_partition_moves_the_backup_to_the_end() {
        let image = 2 * 1024 * 1024u64; // a 1 GiB image
        let disk = 4 * image; // on a 4 GiB disk
        let (lba0, lba1, entries) = gpt(image, &[(2048, 4095), (4096, image - 34)]);
        let new = GptNew {
            size: 2048 * 64,
            type_guid: uuid::Uuid::parse_str(GPT_BASIC_DATA).unwrap().to_bytes_le(),
            unique_guid: crate::random::uuid().to_bytes_le(),
            name: "cidata",
        };
        let added = add_gpt_partition(&lba0, &lba1, &entries, 512, disk, &new).unwrap();
        assert_eq!(added.partition.number, 3);
        assert_eq!(added.partition.start, align_up(image - 33, 2048));
        let at = |off: u64| &added.writes.iter().find(|(o, _)| *o == off).unwrap().1;
        let primary = parse_gpt_header(at(512)).unwrap();
        let backup = parse_gpt_header(at((disk - 1) * 512)).unwrap();
        assert_eq!((primary.my_lba, primary.alternate_lba), (1, disk - 1));
        assert_eq!((backup.my_lba, backup.alternate_lba), (disk - 1, 1));
        assert_eq!(primary.last_usable, disk - 34);
        assert_eq!(backup.last_usable, disk - 34);
        assert_eq!(backup.entries_lba, disk - 33);
        let listed = parse_gpt_entries(&primary, at(1024)).unwrap();
        assert_eq!(listed.len(), 3);
        assert_eq!(listed[2].name, "cidata");
        assert_eq!(listed[2].last_lba - listed[2].first_lba + 1, 2048 * 64);
        assert_eq!(
            parse_gpt_entries(&backup, at((disk - 33) * 512)).unwrap(),
            listed
        );
        let pmbr = parse_mbr(at(0)).unwrap();
        assert_eq!(u64::from(pmbr[0].sectors), disk - 1);

        // No room, and a corrupted header.
        let huge = GptNew { size: disk, ..new };
        assert!(matches!(
            add_gpt_partition(&lba0, &lba1, &entries, 512, disk, &huge),
            Err(TableError::NoRoom { .. })
        ));
        let mut broken = lba1.clone();
        broken[40] ^= 1;
        assert_eq!(
            add_gpt_partition(&lba0, &broken, &entries, 512, disk, &new).unwrap_err(),
            TableError::BadGpt("header CRC mismatch".into())
        );
    }
}
