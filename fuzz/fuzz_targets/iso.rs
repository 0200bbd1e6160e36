#![no_main]
//! An installation image (ISO 9660 with Rock Ridge or Joliet, the UDF side of
//! a bridge image) opened as `rackboot os import` opens one: both trees read,
//! the family detected, every directory listed, every path resolved, and the
//! start of every file read. None may panic.
//!
//! Input: the image's sectors, sparse, as records of a 2-byte little-endian
//! sector number (below 1024) and up to 2048 bytes of content; sectors not
//! given are zero. Images are mostly zeros (system area, padding, file
//! data), so this keeps inputs small and mutations on the metadata.

use std::io::{Read, Seek, SeekFrom};

use libfuzzer_sys::fuzz_target;
use rackboot_oscatalog::media::{self, EntryKind};
use rackboot_oscatalog::{IsoImage, MediaFs, detect};

const SECTOR: usize = 2048;
const MAX_SECTORS: usize = 1024;

fn image_of(data: &[u8]) -> Vec<u8> {
    let mut records = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let sector = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % MAX_SECTORS;
        let len = (rest.len() - 2).min(SECTOR);
        records.push((sector, &rest[2..2 + len]));
        rest = &rest[2 + len..];
    }
    let sectors = records.iter().map(|(s, _)| s + 1).max().unwrap_or(0).max(17);
    let mut image = vec![0u8; sectors * SECTOR];
    for (sector, bytes) in records {
        image[sector * SECTOR..sector * SECTOR + bytes.len()].copy_from_slice(bytes);
    }
    image
}

fn walk(fs: &dyn MediaFs) {
    let _ = detect(fs);
    let mut dirs = vec![String::new()];
    let mut seen = 0;
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs.read_dir(&dir) else { continue };
        for entry in entries {
            seen += 1;
            if seen > 2000 {
                return;
            }
            let path = media::join(&dir, &entry.name);
            let _ = media::lookup(fs, &path, true);
            match entry.kind {
                EntryKind::Dir => dirs.push(path),
                EntryKind::File { size } => {
                    if let Ok(mut file) = fs.open(&path) {
                        let mut buf = [0u8; 4096];
                        let _ = file.read(&mut buf);
                        let _ = file.seek(SeekFrom::Start(size.saturating_sub(100)));
                        let _ = file.read(&mut buf[..200]);
                        let _ = file.seek(SeekFrom::End(-1));
                    }
                }
                EntryKind::Symlink { .. } => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let image = image_of(data);
    if let Ok(iso) = IsoImage::from_bytes(image.clone()) {
        walk(&iso);
    }
    if let Ok(udf) = IsoImage::from_bytes_udf(image) {
        walk(&udf);
    }
});
