//! The little of the WIM format needed to name Windows media: the header's
//! XML data resource (stored uncompressed, UTF-16LE) and the first image's
//! name, version and architecture from it.

use std::io::{Read, Seek, SeekFrom};

const MAGIC: &[u8; 8] = b"MSWIM\0\0\0";
const HEADER_LEN: usize = 208;
/// Offset of the XML data resource header in the WIM header.
const XML_RESHDR: usize = 72;
const MAX_XML: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WimImageInfo {
    /// `<DISPLAYNAME>` when present, else `<NAME>`.
    pub name: String,
    /// "MAJOR.MINOR.BUILD", e.g. "10.0.20348".
    pub version: String,
    /// "amd64", "x86", "arm64" or the raw code.
    pub arch: String,
    /// `<PRODUCTTYPE>`: "ServerNT", "WinNT", ...
    pub product_type: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WimError {
    #[error("not a WIM file (no MSWIM magic)")]
    NotWim,
    #[error("WIM XML data of {0} bytes is implausible")]
    XmlSize(u64),
    #[error("WIM XML data lacks {0}")]
    Missing(&'static str),
    #[error("reading WIM: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the first image's description from a WIM (or ESD) file.
pub fn read_image_info(file: &mut dyn ReadSeekDyn) -> Result<WimImageInfo, WimError> {
    let mut header = [0u8; HEADER_LEN];
    file.read_exact(&mut header).map_err(|_| WimError::NotWim)?;
    if &header[..8] != MAGIC {
        return Err(WimError::NotWim);
    }
    let reshdr = &header[XML_RESHDR..XML_RESHDR + 24];
    let mut size_bytes = [0u8; 8];
    size_bytes[..7].copy_from_slice(&reshdr[..7]);
    let size = u64::from_le_bytes(size_bytes);
    let offset = u64::from_le_bytes(reshdr[8..16].try_into().unwrap_or_default());
    if !(2..=MAX_XML).contains(&size) {
        return Err(WimError::XmlSize(size));
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut raw = vec![0u8; size as usize];
    file.read_exact(&mut raw)?;
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let xml = String::from_utf16_lossy(&units);
    parse_xml(&xml)
}

/// Object-safe Read + Seek.
pub trait ReadSeekDyn: Read + Seek {}
impl<T: Read + Seek + ?Sized> ReadSeekDyn for T {}

pub fn parse_xml(xml: &str) -> Result<WimImageInfo, WimError> {
    let image = section(xml, "IMAGE").ok_or(WimError::Missing("<IMAGE>"))?;
    let name = tag(image, "DISPLAYNAME")
        .or_else(|| tag(image, "NAME"))
        .ok_or(WimError::Missing("<NAME>"))?;
    let version = section(image, "VERSION").ok_or(WimError::Missing("<VERSION>"))?;
    let number = |t: &'static str| tag(version, t).ok_or(WimError::Missing(t));
    let version = format!(
        "{}.{}.{}",
        number("MAJOR")?,
        number("MINOR")?,
        number("BUILD")?
    );
    let arch = match tag(image, "ARCH")
        .ok_or(WimError::Missing("<ARCH>"))?
        .as_str()
    {
        "0" => "x86".to_string(),
        "9" => "amd64".to_string(),
        "12" => "arm64".to_string(),
        other => other.to_string(),
    };
    Ok(WimImageInfo {
        name,
        version,
        arch,
        product_type: tag(image, "PRODUCTTYPE"),
    })
}

/// The text between `<NAME ...>` and `</NAME>` (first occurrence).
fn section<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut from = 0;
    while let Some(at) = xml[from..].find(&open) {
        let start = from + at + open.len();
        // `<IMAGE` must not match `<IMAGEFOO`.
        match xml[start..].chars().next() {
            Some('>') | Some(' ') => {
                let body_start = start + xml[start..].find('>')? + 1;
                let end = body_start + xml[body_start..].find(&close)?;
                return Some(&xml[body_start..end]);
            }
            _ => from = start,
        }
    }
    None
}

fn tag(xml: &str, name: &str) -> Option<String> {
    section(xml, name)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_first_image() {
        let xml = "<WIM><TOTALBYTES>1</TOTALBYTES><IMAGE INDEX=\"1\"><WINDOWS><ARCH>9</ARCH>\
            <PRODUCTTYPE>ServerNT</PRODUCTTYPE><VERSION><MAJOR>10</MAJOR><MINOR>0</MINOR>\
            <BUILD>20348</BUILD><SPBUILD>587</SPBUILD></VERSION></WINDOWS>\
            <NAME>Windows Server 2022 SERVERSTANDARDCORE</NAME>\
            <DISPLAYNAME>Windows Server 2022 Standard</DISPLAYNAME></IMAGE>\
            <IMAGE INDEX=\"2\"><NAME>other</NAME></IMAGE></WIM>";
        let info = parse_xml(xml).unwrap();
        assert_eq!(info.name, "Windows Server 2022 Standard");
        assert_eq!(info.version, "10.0.20348");
        assert_eq!(info.arch, "amd64");
        assert_eq!(info.product_type.as_deref(), Some("ServerNT"));
    }

    #[test]
    fn rejects_non_wim_and_missing_version() {
        let mut cursor = std::io::Cursor::new(vec![0u8; 300]);
        assert!(matches!(
            read_image_info(&mut cursor),
            Err(WimError::NotWim)
        ));
        let xml = "<WIM><IMAGE INDEX=\"1\"><NAME>x</NAME></IMAGE></WIM>";
        assert!(matches!(
            parse_xml(xml),
            Err(WimError::Missing("<VERSION>"))
        ));
    }
}
