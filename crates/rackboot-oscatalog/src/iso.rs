//! A read-only ISO 9660 reader (ECMA-119) with Rock Ridge (names, symlinks,
//! relocated directories) and Joliet, plus the UDF side of bridge images
//! (see `udf.rs`), for importing installation ISOs without mounting them. The directory tree is read once when the image is opened,
//! with every extent checked against the image size; file contents are read
//! by offset on demand (`pread`), never buffered whole.
//!
//! Name choice follows Linux's isofs: Rock Ridge when the primary volume has
//! it, else Joliet, else the primary names with the `;1` version removed and
//! lower-cased (what `mount -o loop` shows, and what ESXi's boot.cfg expects).
//! Images with a UDF volume whose ISO 9660 tree is empty or only a README
//! (Microsoft's Windows ISOs) are read through UDF instead.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::SourceKind;
use crate::media::{Entry, EntryKind, MediaError, MediaFs, ReadSeek, check_name, join};

const SECTOR: u64 = 2048;
/// Bounds on what a (possibly hostile) image can make us do.
const MAX_DESCRIPTORS: u64 = 64;
const MAX_ENTRIES: usize = 2_000_000;
const MAX_DEPTH: usize = 128;
const MAX_DIR_BYTES: u64 = 64 * 1024 * 1024;
const MAX_CONTINUATIONS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    RockRidge,
    Joliet,
    Plain,
    Udf,
}

#[derive(Debug, Clone)]
pub(crate) struct IsoEntry {
    pub(crate) entry: Entry,
    /// (byte offset in the image, length) of each extent, in file order.
    pub(crate) extents: Vec<(u64, u64)>,
}

/// Where an image's bytes are: a file (read by offset) or memory.
#[derive(Debug)]
pub(crate) enum Backing {
    File(File),
    Memory(Vec<u8>),
}

impl Backing {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Backing::File(f) => f.read_at(buf, offset),
            Backing::Memory(bytes) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let n = buf.len().min(bytes.len() - start);
                buf[..n].copy_from_slice(&bytes[start..start + n]);
                Ok(n)
            }
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Backing::File(f) => f.read_exact_at(buf, offset),
            Backing::Memory(_) => {
                if self.read_at(buf, offset)? < buf.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "read past the end of the image",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// An opened ISO 9660 image.
pub struct IsoImage {
    file: Backing,
    /// Directory path → its entries, sorted by name.
    dirs: HashMap<String, Vec<IsoEntry>>,
    names: Names,
    has_udf: bool,
}

impl std::fmt::Debug for IsoImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsoImage")
            .field("dirs", &self.dirs.len())
            .field("names", &self.names)
            .field("has_udf", &self.has_udf)
            .finish()
    }
}

fn corrupt(msg: impl Into<String>) -> MediaError {
    MediaError::CorruptIso(msg.into())
}

/// A directory record's fixed part (ECMA-119 9.1).
#[derive(Debug, Clone)]
struct Record {
    extent_lba: u64,
    data_len: u64,
    flags: u8,
    ident: Vec<u8>,
    system_use: Vec<u8>,
}

const FLAG_DIRECTORY: u8 = 0x02;
const FLAG_MULTI_EXTENT: u8 = 0x80;

fn parse_record(buf: &[u8]) -> Result<Record, MediaError> {
    if buf.len() < 34 {
        return Err(corrupt(format!("directory record of {} bytes", buf.len())));
    }
    let name_len = buf[32] as usize;
    if 33 + name_len > buf.len() {
        return Err(corrupt("directory record name runs past the record"));
    }
    let ident = buf[33..33 + name_len].to_vec();
    // A pad byte follows even-length names so the system use area is aligned.
    let su_start = 33 + name_len + usize::from(name_len.is_multiple_of(2));
    let system_use = buf.get(su_start..).unwrap_or(&[]).to_vec();
    Ok(Record {
        extent_lba: u64::from(u32::from_le_bytes(buf[2..6].try_into().unwrap_or_default())),
        data_len: u64::from(u32::from_le_bytes(
            buf[10..14].try_into().unwrap_or_default(),
        )),
        flags: buf[25],
        ident,
        system_use,
    })
}

/// What the Rock Ridge entries of one record say.
#[derive(Debug, Default)]
struct RockRidge {
    name: Option<Vec<u8>>,
    name_is_dot: bool,
    symlink: Option<String>,
    mode: Option<u32>,
    child_link: Option<u64>,
    relocated: bool,
}

impl IsoImage {
    pub fn open(path: &Path) -> Result<IsoImage, MediaError> {
        IsoImage::open_with(path, false)
    }

    /// Reads an image held in memory, exactly as [`IsoImage::open`] reads
    /// a file (the fuzzer and tests use it).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<IsoImage, MediaError> {
        let size = bytes.len() as u64;
        IsoImage::read(Backing::Memory(bytes), size, false)
    }

    /// As [`IsoImage::open_udf`], from memory.
    pub fn from_bytes_udf(bytes: Vec<u8>) -> Result<IsoImage, MediaError> {
        let size = bytes.len() as u64;
        IsoImage::read(Backing::Memory(bytes), size, true)?.only_udf()
    }

    fn open_with(path: &Path, prefer_udf: bool) -> Result<IsoImage, MediaError> {
        let file = File::open(path).map_err(|source| MediaError::Io {
            path: path.display().to_string(),
            source,
        })?;
        // Seeking to the end also sizes block devices (/dev/sr0), whose
        // metadata length is 0.
        let size = (&file)
            .seek(SeekFrom::End(0))
            .map_err(|source| MediaError::Io {
                path: path.display().to_string(),
                source,
            })?;
        IsoImage::read(Backing::File(file), size, prefer_udf)
    }

    fn read(file: Backing, size: u64, prefer_udf: bool) -> Result<IsoImage, MediaError> {
        let mut image = IsoImage {
            file,
            dirs: HashMap::new(),
            names: Names::Plain,
            has_udf: false,
        };
        let reader = Reader {
            file: &image.file,
            size,
        };

        let mut primary_root: Option<Record> = None;
        let mut joliet_root: Option<Record> = None;
        let mut saw_terminator = false;
        for index in 0..MAX_DESCRIPTORS {
            let lba = 16 + index;
            if (lba + 1) * SECTOR > size {
                break;
            }
            let sector = reader.read(lba * SECTOR, SECTOR)?;
            let ident = &sector[1..6];
            match ident {
                b"CD001" => {}
                b"BEA01" | b"TEA01" | b"BOOT2" | b"CDW02" => continue,
                b"NSR02" | b"NSR03" => {
                    image.has_udf = true;
                    continue;
                }
                _ => break,
            }
            if saw_terminator {
                continue;
            }
            match sector[0] {
                1 if primary_root.is_none() => {
                    let block_size = u16::from_le_bytes([sector[128], sector[129]]);
                    if u64::from(block_size) != SECTOR {
                        return Err(corrupt(format!(
                            "logical block size {block_size}, only 2048 is supported"
                        )));
                    }
                    primary_root = Some(parse_record(&sector[156..190])?);
                }
                2 => {
                    // Joliet: UCS-2 escape sequences in the supplementary descriptor.
                    let escapes = &sector[88..91];
                    if escapes == b"%/@" || escapes == b"%/C" || escapes == b"%/E" {
                        joliet_root = Some(parse_record(&sector[156..190])?);
                    }
                }
                255 => saw_terminator = true,
                _ => {}
            }
        }
        let iso_tree = primary_root.map(|root| iso9660_tree(reader, root, joliet_root));
        // Windows media keep everything in UDF and put only a README in the
        // ISO 9660 tree; other bridge media are read through ISO 9660 (as
        // Linux mounts them), unless the caller forces UDF.
        let readme_only = |dirs: &HashMap<String, Vec<IsoEntry>>| {
            dirs.len() == 1 && dirs.get("").is_none_or(|root| root.len() <= 1)
        };
        let use_udf = image.has_udf
            && (prefer_udf
                || match &iso_tree {
                    None | Some(Err(_)) => true,
                    Some(Ok((dirs, _))) => readme_only(dirs),
                });
        let (dirs, names) = if use_udf {
            match (crate::udf::Udf::read_tree(reader), iso_tree) {
                (Ok(dirs), _) => (dirs, Names::Udf),
                (Err(_), Some(Ok(iso))) if !prefer_udf => iso,
                (Err(_), Some(Err(iso_error))) => return Err(iso_error),
                (Err(udf_error), _) => return Err(udf_error),
            }
        } else {
            match iso_tree {
                Some(tree) => tree?,
                None => {
                    return Err(MediaError::NotIso(format!(
                        "no ISO 9660 primary volume descriptor (CD001) at sector 16 of a {size}-byte file"
                    )));
                }
            }
        };
        image.dirs = dirs;
        image.names = names;
        Ok(image)
    }

    /// Reads the image's UDF tree even when its ISO 9660 tree is complete.
    pub fn open_udf(path: &Path) -> Result<IsoImage, MediaError> {
        IsoImage::open_with(path, true)?.only_udf()
    }

    fn only_udf(self) -> Result<IsoImage, MediaError> {
        if self.names != Names::Udf {
            return Err(MediaError::NotIso("no UDF volume".into()));
        }
        Ok(self)
    }

    /// True when the image also carries a UDF volume (Windows media).
    pub fn has_udf(&self) -> bool {
        self.has_udf
    }

    fn find(&self, path: &str) -> Result<&IsoEntry, MediaError> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((dir, name)) => (dir, name),
            None => ("", path),
        };
        self.dirs
            .get(dir)
            .and_then(|entries| entries.iter().find(|e| e.entry.name == name))
            .ok_or_else(|| MediaError::NotFound {
                path: path.to_string(),
            })
    }
}

impl MediaFs for IsoImage {
    fn source_kind(&self) -> SourceKind {
        SourceKind::Iso
    }

    fn read_dir(&self, dir: &str) -> Result<Vec<Entry>, MediaError> {
        match self.dirs.get(dir) {
            Some(entries) => Ok(entries.iter().map(|e| e.entry.clone()).collect()),
            None => match self.find(dir) {
                Ok(_) => Err(MediaError::NotADirectory {
                    path: dir.to_string(),
                }),
                Err(e) => Err(e),
            },
        }
    }

    fn open(&self, path: &str) -> Result<Box<dyn ReadSeek + '_>, MediaError> {
        let found = self.find(path)?;
        let EntryKind::File { size } = found.entry.kind else {
            return Err(MediaError::NotAFile {
                path: path.to_string(),
            });
        };
        Ok(Box::new(ExtentReader {
            file: &self.file,
            extents: found.extents.clone(),
            size,
            pos: 0,
        }))
    }

    fn unknown_media_hint(&self) -> Option<String> {
        (self.has_udf && self.names != Names::Udf).then(|| {
            "the image also has a UDF volume, which could not be read (only UDF up to 2.01 with a plain partition is supported); extract the image with a UDF-capable tool (e.g. 7z x) and import the directory".to_string()
        })
    }
}

/// Reads the ISO 9660 directory tree, with Rock Ridge names when the
/// primary volume has them, else Joliet names, else plain names.
fn iso9660_tree(
    reader: Reader<'_>,
    primary_root: Record,
    joliet_root: Option<Record>,
) -> Result<(HashMap<String, Vec<IsoEntry>>, Names), MediaError> {
    // Rock Ridge is announced by an SP entry in the root's "." record.
    let root_dot = reader.first_record(primary_root.extent_lba)?;
    let susp_skip = if root_dot.system_use.len() >= 7
        && &root_dot.system_use[0..2] == b"SP"
        && root_dot.system_use[4..6] == [0xBE, 0xEF]
    {
        Some(usize::from(root_dot.system_use[6]))
    } else {
        None
    };
    let (root, names) = match (susp_skip, joliet_root) {
        (Some(_), _) => (primary_root, Names::RockRidge),
        (None, Some(joliet)) => (joliet, Names::Joliet),
        (None, None) => (primary_root, Names::Plain),
    };
    let mut walk = Walk {
        reader,
        names,
        susp_skip: susp_skip.unwrap_or(0),
        dirs: HashMap::new(),
        visited: HashSet::new(),
        entries: 0,
    };
    walk.directory("", &root, 0)?;
    Ok((walk.dirs, names))
}

#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    file: &'a Backing,
    size: u64,
}

impl Reader<'_> {
    pub(crate) fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, MediaError> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| corrupt("offset overflow"))?;
        if end > self.size {
            return Err(corrupt(format!(
                "read of {len} bytes at offset {offset} runs past the end of the {}-byte image (truncated?)",
                self.size
            )));
        }
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|source| MediaError::Io {
                path: "ISO image".into(),
                source,
            })?;
        Ok(buf)
    }

    pub(crate) fn check_extent(&self, lba: u64, len: u64, what: &str) -> Result<u64, MediaError> {
        let offset = lba * SECTOR;
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(corrupt(format!(
                "{what}: extent at block {lba} with {len} bytes runs past the end of the {}-byte image (truncated?)",
                self.size
            )));
        }
        Ok(offset)
    }

    /// The directory records of a directory extent (records never cross
    /// sector boundaries; a zero length byte means "next sector").
    fn records(&self, dir: &Record) -> Result<Vec<Record>, MediaError> {
        if dir.data_len > MAX_DIR_BYTES {
            return Err(corrupt(format!("directory of {} bytes", dir.data_len)));
        }
        let offset = self.check_extent(dir.extent_lba, dir.data_len, "directory")?;
        let data = self.read(offset, dir.data_len)?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        while pos < data.len() {
            let len = data[pos] as usize;
            if len == 0 {
                pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            if len < 34 || pos + len > data.len() {
                return Err(corrupt(format!(
                    "directory record of length {len} at byte {pos} of a {}-byte directory",
                    data.len()
                )));
            }
            records.push(parse_record(&data[pos..pos + len])?);
            pos += len;
        }
        Ok(records)
    }

    /// The "." record at the start of the directory at `lba`.
    fn first_record(&self, lba: u64) -> Result<Record, MediaError> {
        let offset = lba
            .checked_mul(SECTOR)
            .filter(|offset| offset.checked_add(34).is_some_and(|end| end <= self.size))
            .ok_or_else(|| {
                corrupt(format!(
                    "directory at block {lba} lies past the end of the image (truncated?)"
                ))
            })?;
        let sector = self.read(offset, SECTOR.min(self.size - offset))?;
        let len = sector[0] as usize;
        if len < 34 || len > sector.len() {
            return Err(corrupt(format!(
                "directory at block {lba} has no valid \".\" record"
            )));
        }
        parse_record(&sector[..len])
    }

    /// Parses the SUSP entries of a record, following CE continuation areas.
    fn rock_ridge(&self, system_use: &[u8], skip: usize) -> Result<RockRidge, MediaError> {
        let mut rr = RockRidge::default();
        let mut name = Vec::new();
        let mut has_name = false;
        let mut link = SymlinkBuilder::default();
        let mut area = system_use.get(skip..).unwrap_or(&[]).to_vec();
        let mut continuations = 0;
        loop {
            let mut next: Option<(u64, u64, u64)> = None;
            let mut pos = 0;
            while pos + 4 <= area.len() {
                let sig = [area[pos], area[pos + 1]];
                let len = area[pos + 2] as usize;
                if len < 4 || pos + len > area.len() {
                    break;
                }
                let body = &area[pos + 4..pos + len];
                match &sig {
                    b"NM" if !body.is_empty() => {
                        let flags = body[0];
                        if flags & 0x06 != 0 {
                            rr.name_is_dot = true;
                        }
                        name.extend_from_slice(&body[1..]);
                        has_name = true;
                    }
                    b"SL" if !body.is_empty() => link.push(&body[1..])?,
                    b"PX" if body.len() >= 4 => {
                        rr.mode = Some(u32::from_le_bytes([body[0], body[1], body[2], body[3]]));
                    }
                    b"CL" if body.len() >= 4 => {
                        rr.child_link = Some(u64::from(u32::from_le_bytes([
                            body[0], body[1], body[2], body[3],
                        ])));
                    }
                    b"RE" => rr.relocated = true,
                    b"CE" if body.len() >= 24 => {
                        let le = |at: usize| {
                            u64::from(u32::from_le_bytes([
                                body[at],
                                body[at + 1],
                                body[at + 2],
                                body[at + 3],
                            ]))
                        };
                        next = Some((le(0), le(8), le(16)));
                    }
                    b"ST" => break,
                    _ => {}
                }
                pos += len;
            }
            let Some((lba, offset, len)) = next else {
                break;
            };
            continuations += 1;
            if continuations > MAX_CONTINUATIONS || len > SECTOR {
                return Err(corrupt("Rock Ridge continuation area chain too long"));
            }
            let start = self.check_extent(lba, offset + len, "Rock Ridge continuation area")?;
            area = self.read(start + offset, len)?;
        }
        if has_name {
            rr.name = Some(name);
        }
        rr.symlink = link.finish();
        Ok(rr)
    }
}

/// Assembles an SL (symbolic link) target from its component records.
#[derive(Default)]
struct SymlinkBuilder {
    target: String,
    seen: bool,
    /// The previous component continues into the next one (no `/` between).
    continues: bool,
}

impl SymlinkBuilder {
    fn push(&mut self, mut components: &[u8]) -> Result<(), MediaError> {
        while components.len() >= 2 {
            let flags = components[0];
            let len = components[1] as usize;
            let Some(content) = components.get(2..2 + len) else {
                return Err(corrupt("Rock Ridge SL component runs past its entry"));
            };
            let part = if flags & 0x02 != 0 {
                ".".to_string()
            } else if flags & 0x04 != 0 {
                "..".to_string()
            } else if flags & 0x08 != 0 {
                "/".to_string()
            } else {
                String::from_utf8_lossy(content).into_owned()
            };
            if self.seen && !self.continues && !self.target.ends_with('/') {
                self.target.push('/');
            }
            if part == "/" {
                self.target.clear();
                self.target.push('/');
            } else {
                self.target.push_str(&part);
            }
            self.seen = true;
            self.continues = flags & 0x01 != 0;
            components = &components[2 + len..];
        }
        Ok(())
    }

    fn finish(self) -> Option<String> {
        self.seen.then_some(self.target)
    }
}

struct Walk<'a> {
    reader: Reader<'a>,
    names: Names,
    susp_skip: usize,
    dirs: HashMap<String, Vec<IsoEntry>>,
    visited: HashSet<u64>,
    entries: usize,
}

const S_IFMT: u32 = 0o170000;
const S_IFLNK: u32 = 0o120000;
const S_IFDIR: u32 = 0o040000;

impl Walk<'_> {
    fn decode_name(
        &self,
        dir: &str,
        record: &Record,
        rr: &RockRidge,
    ) -> Result<String, MediaError> {
        if self.names == Names::RockRidge {
            if rr.name_is_dot {
                return Err(MediaError::UnsafeName {
                    dir: dir.to_string(),
                    name: String::from_utf8_lossy(rr.name.as_deref().unwrap_or(b".")).into_owned(),
                });
            }
            if let Some(name) = &rr.name {
                return String::from_utf8(name.clone()).map_err(|_| MediaError::NonUtf8Name {
                    dir: dir.to_string(),
                });
            }
        }
        let ident = &record.ident;
        let name = if self.names == Names::Joliet {
            let units: Vec<u16> = ident
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).map_err(|_| MediaError::NonUtf8Name {
                dir: dir.to_string(),
            })?
        } else {
            String::from_utf8(ident.clone())
                .map_err(|_| MediaError::NonUtf8Name {
                    dir: dir.to_string(),
                })?
                .to_ascii_lowercase()
        };
        // Drop the ";1" file version, then the "." of names without extension.
        let mut name = match name.rsplit_once(';') {
            Some((base, version))
                if record.flags & FLAG_DIRECTORY == 0
                    && version.chars().all(|c| c.is_ascii_digit()) =>
            {
                base.to_string()
            }
            _ => name,
        };
        if self.names == Names::Plain && name.ends_with('.') && name.len() > 1 {
            name.pop();
        }
        Ok(name)
    }

    fn directory(&mut self, path: &str, dir: &Record, depth: usize) -> Result<(), MediaError> {
        if depth > MAX_DEPTH {
            return Err(corrupt(format!(
                "directory nesting deeper than {MAX_DEPTH} at {path:?}"
            )));
        }
        if !self.visited.insert(dir.extent_lba) {
            return Err(corrupt(format!(
                "directory loop at {path:?} (block {})",
                dir.extent_lba
            )));
        }
        let records = self.reader.records(dir)?;
        let mut entries: Vec<IsoEntry> = Vec::new();
        let mut subdirs: Vec<(String, Record)> = Vec::new();
        // A multi-extent file still being assembled: (name, entry).
        let mut pending: Option<IsoEntry> = None;
        for record in records {
            // "." and ".." are the single bytes 0 and 1.
            if record.ident == [0] || record.ident == [1] {
                continue;
            }
            let rr = if self.names == Names::RockRidge {
                self.reader.rock_ridge(&record.system_use, self.susp_skip)?
            } else {
                RockRidge::default()
            };
            if rr.relocated {
                // Shown at its original place through the parent's CL entry.
                continue;
            }
            let name = self.decode_name(path, &record, &rr)?;
            check_name(path, &name)?;
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(corrupt(format!("more than {MAX_ENTRIES} entries")));
            }

            if let Some(target) = rr
                .symlink
                .clone()
                .filter(|_| rr.mode.is_none_or(|mode| mode & S_IFMT == S_IFLNK))
            {
                entries.push(IsoEntry {
                    entry: Entry {
                        name,
                        kind: EntryKind::Symlink { target },
                    },
                    extents: Vec::new(),
                });
                continue;
            }
            if let Some(child) = rr.child_link {
                let relocated = self.reader.first_record(child)?;
                subdirs.push((name.clone(), relocated));
                entries.push(dir_entry(name));
                continue;
            }
            let is_dir = record.flags & FLAG_DIRECTORY != 0
                || rr.mode.is_some_and(|mode| mode & S_IFMT == S_IFDIR);
            if is_dir {
                subdirs.push((name.clone(), record));
                entries.push(dir_entry(name));
                continue;
            }
            // Empty files may carry any extent location (some mastering
            // tools write garbage there): only non-empty extents are checked.
            let offset = if record.data_len == 0 {
                0
            } else {
                self.reader
                    .check_extent(record.extent_lba, record.data_len, &join(path, &name))?
            };
            let part = (offset, record.data_len);
            let multi = record.flags & FLAG_MULTI_EXTENT != 0;
            match pending.take() {
                Some(mut file) if file.entry.name == name => {
                    file.extents.push(part);
                    if let EntryKind::File { size } = &mut file.entry.kind {
                        *size += record.data_len;
                    }
                    if multi {
                        pending = Some(file);
                    } else {
                        entries.push(file);
                    }
                }
                Some(unfinished) => {
                    return Err(corrupt(format!(
                        "multi-extent file {:?} ends without its last extent",
                        join(path, &unfinished.entry.name)
                    )));
                }
                None => {
                    let file = IsoEntry {
                        entry: Entry {
                            name,
                            kind: EntryKind::File {
                                size: record.data_len,
                            },
                        },
                        extents: vec![part],
                    };
                    if multi {
                        pending = Some(file);
                    } else {
                        entries.push(file);
                    }
                }
            }
        }
        if let Some(unfinished) = pending {
            return Err(corrupt(format!(
                "multi-extent file {:?} ends without its last extent",
                join(path, &unfinished.entry.name)
            )));
        }
        entries.sort_by(|a, b| a.entry.name.cmp(&b.entry.name));
        if let Some(pair) = entries
            .windows(2)
            .find(|w| w[0].entry.name == w[1].entry.name)
        {
            return Err(corrupt(format!(
                "duplicate name {:?} in directory {path:?}",
                pair[0].entry.name
            )));
        }
        self.dirs.insert(path.to_string(), entries);
        for (name, record) in subdirs {
            self.directory(&join(path, &name), &record, depth + 1)?;
        }
        Ok(())
    }
}

fn dir_entry(name: String) -> IsoEntry {
    IsoEntry {
        entry: Entry {
            name,
            kind: EntryKind::Dir,
        },
        extents: Vec::new(),
    }
}

/// Streams a file's extents from the image by offset.
struct ExtentReader<'a> {
    file: &'a Backing,
    extents: Vec<(u64, u64)>,
    size: u64,
    pos: u64,
}

impl Read for ExtentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut start = 0u64;
        for &(offset, len) in &self.extents {
            if self.pos < start + len {
                let within = self.pos - start;
                let want = (len - within).min(buf.len() as u64) as usize;
                let n = self.file.read_at(&mut buf[..want], offset + within)?;
                if n == 0 && want > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "ISO image ends inside a file extent",
                    ));
                }
                self.pos += n as u64;
                return Ok(n);
            }
            start += len;
        }
        Ok(0)
    }
}

impl Seek for ExtentReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        self.pos = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::lookup;

    /// A directory record (ECMA-119 9.1) without system use data.
    fn record(lba: u32, len: u32, flags: u8, name: &[u8]) -> Vec<u8> {
        let pad = usize::from(name.len().is_multiple_of(2));
        let total = 33 + name.len() + pad;
        let mut r = vec![0u8; total];
        r[0] = total as u8;
        r[2..6].copy_from_slice(&lba.to_le_bytes());
        r[6..10].copy_from_slice(&lba.to_be_bytes());
        r[10..14].copy_from_slice(&len.to_le_bytes());
        r[14..18].copy_from_slice(&len.to_be_bytes());
        r[25] = flags;
        r[28] = 1;
        r[32] = name.len() as u8;
        r[33..33 + name.len()].copy_from_slice(name);
        r
    }

    fn descriptor(kind: u8, ident: &[u8; 5]) -> Vec<u8> {
        let mut d = vec![0u8; SECTOR as usize];
        d[0] = kind;
        d[1..6].copy_from_slice(ident);
        d[6] = 1;
        d
    }

    /// A plain ISO 9660 image: PVD at 16, terminator at 17, the root
    /// directory at 18 holding `entries`, then `data` from sector 19 on.
    fn image(entries: &[Vec<u8>], data: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 16 * SECTOR as usize];
        let mut pvd = descriptor(1, b"CD001");
        pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
        pvd[130..132].copy_from_slice(&2048u16.to_be_bytes());
        pvd[156..190].copy_from_slice(&record(18, 2048, FLAG_DIRECTORY, &[0]));
        img.extend(pvd);
        img.extend(descriptor(255, b"CD001"));
        let mut root = Vec::new();
        root.extend(record(18, 2048, FLAG_DIRECTORY, &[0]));
        root.extend(record(18, 2048, FLAG_DIRECTORY, &[1]));
        for e in entries {
            root.extend(e);
        }
        root.resize(SECTOR as usize, 0);
        img.extend(root);
        img.extend(data);
        img
    }

    fn write(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join("test.iso");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn multi_extent_files_are_read_across_extents() {
        let mut data = vec![0xAAu8; SECTOR as usize];
        data.extend(vec![0xBBu8; 100]);
        let entries = [
            record(19, 2048, FLAG_MULTI_EXTENT, b"BIG.IMG;1"),
            record(20, 100, 0, b"BIG.IMG;1"),
            record(20, 10, 0, b"README.;1"),
            // Empty files may point anywhere (seen in the wild: block -17).
            record(0xFFFF_FFEF, 0, 0, b"EMPTY.;1"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let iso = IsoImage::open(&write(dir.path(), &image(&entries, &data))).unwrap();
        let listing = iso.read_dir("").unwrap();
        assert_eq!(
            listing,
            vec![
                Entry {
                    name: "big.img".into(),
                    kind: EntryKind::File { size: 2148 }
                },
                Entry {
                    name: "empty".into(),
                    kind: EntryKind::File { size: 0 }
                },
                Entry {
                    name: "readme".into(),
                    kind: EntryKind::File { size: 10 }
                },
            ]
        );
        let mut all = Vec::new();
        iso.open("big.img").unwrap().read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
        let mut empty = Vec::new();
        iso.open("empty").unwrap().read_to_end(&mut empty).unwrap();
        assert!(empty.is_empty());
        let mut file = iso.open("big.img").unwrap();
        file.seek(SeekFrom::Start(2040)).unwrap();
        let mut middle = [0u8; 16];
        file.read_exact(&mut middle).unwrap();
        assert_eq!(&middle[..8], &[0xAA; 8]);
        assert_eq!(&middle[8..], &[0xBB; 8]);
        assert!(matches!(
            lookup(&iso, "BIG.IMG", true).unwrap(),
            crate::media::Resolved::Found(path, _) if path == "big.img"
        ));
    }

    #[test]
    fn broken_directories_are_corrupt_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            (
                "unfinished multi-extent",
                vec![record(19, 2048, FLAG_MULTI_EXTENT, b"BIG.IMG;1")],
            ),
            (
                "extent past the end",
                vec![record(19, 1 << 30, 0, b"HUGE.IMG;1")],
            ),
            (
                "directory loop",
                vec![record(18, 2048, FLAG_DIRECTORY, b"LOOP")],
            ),
            (
                "duplicate names",
                vec![record(19, 1, 0, b"A.;1"), record(19, 1, 0, b"A.;1")],
            ),
        ];
        for (what, entries) in cases {
            let path = write(dir.path(), &image(&entries, &[0u8; 2048]));
            match IsoImage::open(&path) {
                Err(MediaError::CorruptIso(message)) => {
                    assert!(!message.is_empty(), "{what}");
                }
                other => panic!("{what}: expected CorruptIso, got {other:?}"),
            }
        }
        // A record whose name runs past the record.
        let mut bad = image(&[], &[0u8; 2048]);
        let at = 18 * SECTOR as usize + 68;
        bad[at] = 40;
        bad[at + 32] = 200;
        let path = write(dir.path(), &bad);
        assert!(matches!(
            IsoImage::open(&path),
            Err(MediaError::CorruptIso(_))
        ));
    }

    #[test]
    fn udf_media_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        // UDF-only: the volume recognition sequence and no CD001 at all.
        let mut udf_only = vec![0u8; 16 * SECTOR as usize];
        udf_only.extend(descriptor(0, b"BEA01"));
        udf_only.extend(descriptor(0, b"NSR02"));
        udf_only.extend(descriptor(0, b"TEA01"));
        udf_only.extend(vec![0u8; SECTOR as usize]);
        match IsoImage::open(&write(dir.path(), &udf_only)) {
            Err(MediaError::CorruptIso(message)) => assert!(message.contains("UDF"), "{message}"),
            other => panic!("expected a UDF error, got {other:?}"),
        }
        // Bridge media whose ISO 9660 side only has a README (Windows):
        // descriptors 16 PVD, 17 terminator, then BEA01/NSR02/TEA01; the
        // root directory moves to sector 21.
        let mut bridge = vec![0u8; 16 * SECTOR as usize];
        let mut pvd = descriptor(1, b"CD001");
        pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
        pvd[156..190].copy_from_slice(&record(21, 2048, FLAG_DIRECTORY, &[0]));
        bridge.extend(pvd);
        bridge.extend(descriptor(255, b"CD001"));
        bridge.extend(descriptor(0, b"BEA01"));
        bridge.extend(descriptor(0, b"NSR02"));
        bridge.extend(descriptor(0, b"TEA01"));
        let mut root = Vec::new();
        root.extend(record(21, 2048, FLAG_DIRECTORY, &[0]));
        root.extend(record(21, 2048, FLAG_DIRECTORY, &[1]));
        root.extend(record(22, 5, 0, b"README.TXT;1"));
        root.resize(SECTOR as usize, 0);
        bridge.extend(root);
        bridge.extend(b"hello".iter().copied().chain(std::iter::repeat_n(0, 2043)));
        let iso = IsoImage::open(&write(dir.path(), &bridge)).unwrap();
        assert!(iso.has_udf());
        let err = crate::detect(&iso).unwrap_err().to_string();
        assert!(err.contains("UDF"), "{err}");
    }
}
