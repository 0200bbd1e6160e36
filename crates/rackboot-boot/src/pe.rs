//! Authenticode signatures of PE images (EFI applications, EFI-stub kernels):
//! what Secure Boot firmware and shim check before they run a file. Pure:
//! bytes in, the certificate table's entries out. Whether a signature is
//! trusted is for the firmware's and shim's keys to say; rackboot checks that
//! a kernel meant for a Secure Boot machine carries one at all, so an
//! unsigned kernel is refused when its profile is saved rather than by the
//! firmware at boot ("bad shim signature").

/// One entry of the certificate table (`WIN_CERTIFICATE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeCertificate {
    /// `wRevision`: 0x0200 for current signatures.
    pub revision: u16,
    /// `wCertificateType`: [`WIN_CERT_TYPE_PKCS_SIGNED_DATA`] for Authenticode.
    pub kind: u16,
    /// The DER bytes (a PKCS#7 SignedData for Authenticode).
    pub data: Vec<u8>,
}

/// Authenticode (PKCS#7 SignedData) certificate type.
pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeError {
    #[error("not a PE image (no MZ/PE headers)")]
    NotPe,
    #[error("truncated PE image: {0}")]
    Truncated(&'static str),
    #[error("unknown PE optional header magic {0:#06x}")]
    Magic(u16),
    #[error("malformed certificate table: {0}")]
    CertificateTable(&'static str),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The certificate table of a PE image (empty when it is not signed).
pub fn certificates(image: &[u8]) -> Result<Vec<PeCertificate>, PeError> {
    if image.get(..2) != Some(b"MZ") {
        return Err(PeError::NotPe);
    }
    let pe = u32_at(image, 0x3c).ok_or(PeError::Truncated("DOS header"))? as usize;
    if image.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err(PeError::NotPe);
    }
    let optional = pe + 24;
    let magic = u16_at(image, optional).ok_or(PeError::Truncated("optional header"))?;
    // Offsets of NumberOfRvaAndSizes and of the data directories.
    let (count_at, dirs_at) = match magic {
        0x10b => (optional + 92, optional + 96),
        0x20b => (optional + 108, optional + 112),
        other => return Err(PeError::Magic(other)),
    };
    let count = u32_at(image, count_at).ok_or(PeError::Truncated("optional header"))?;
    // Directory 4 is the certificate table: a file offset (not an RVA) and a size.
    const SECURITY: u32 = 4;
    if count <= SECURITY {
        return Ok(Vec::new());
    }
    let entry = dirs_at + SECURITY as usize * 8;
    let offset = u32_at(image, entry).ok_or(PeError::Truncated("data directories"))? as usize;
    let size = u32_at(image, entry + 4).ok_or(PeError::Truncated("data directories"))? as usize;
    if offset == 0 || size == 0 {
        return Ok(Vec::new());
    }
    let table = image
        .get(
            offset
                ..offset
                    .checked_add(size)
                    .ok_or(PeError::CertificateTable("size"))?,
        )
        .ok_or(PeError::CertificateTable("beyond the end of the file"))?;
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= table.len() {
        let len = u32_at(table, at).unwrap_or(0) as usize;
        if len < 8 || at + len > table.len() {
            return Err(PeError::CertificateTable("entry length"));
        }
        out.push(PeCertificate {
            revision: u16_at(table, at + 4).unwrap_or(0),
            kind: u16_at(table, at + 6).unwrap_or(0),
            data: table[at + 8..at + len].to_vec(),
        });
        // Entries are 8-byte aligned.
        at += len.div_ceil(8) * 8;
    }
    Ok(out)
}

/// Whether `image` carries an Authenticode signature; `Err` says why not, in
/// words for an operator.
pub fn check_signed(image: &[u8]) -> Result<(), String> {
    let certs = certificates(image).map_err(|e| e.to_string())?;
    if certs
        .iter()
        .any(|c| c.kind == WIN_CERT_TYPE_PKCS_SIGNED_DATA && c.data.first() == Some(&0x30))
    {
        Ok(())
    } else {
        Err("it has no Authenticode signature (PE certificate table empty)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ image: DOS header, PE header, optional header with
    /// `dirs` data directories, then `table` as the certificate table.
    fn image(dirs: u32, table: Option<&[u8]>) -> Vec<u8> {
        let pe = 0x40;
        let optional = pe + 24;
        let mut b = vec![0u8; optional + 112 + 16 * 8];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&(pe as u32).to_le_bytes());
        b[pe..pe + 4].copy_from_slice(b"PE\0\0");
        b[optional..optional + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        b[optional + 108..optional + 112].copy_from_slice(&dirs.to_le_bytes());
        if let Some(t) = table {
            let offset = b.len() as u32;
            let entry = optional + 112 + 4 * 8;
            b[entry..entry + 4].copy_from_slice(&offset.to_le_bytes());
            b[entry + 4..entry + 8].copy_from_slice(&(t.len() as u32).to_le_bytes());
            b.extend_from_slice(t);
        }
        b
    }

    fn win_cert(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut c = ((8 + data.len()) as u32).to_le_bytes().to_vec();
        c.extend_from_slice(&0x0200u16.to_le_bytes());
        c.extend_from_slice(&kind.to_le_bytes());
        c.extend_from_slice(data);
        while !c.len().is_multiple_of(8) {
            c.push(0);
        }
        c
    }

    #[test]
    fn signatures_are_found_and_their_absence_named() {
        let signed = win_cert(WIN_CERT_TYPE_PKCS_SIGNED_DATA, &[0x30, 0x82, 1, 2, 3]);
        let two = [win_cert(1, b"x509"), signed.clone()].concat();
        let cases: Vec<(&str, Vec<u8>, Result<(), ()>)> = vec![
            ("signed", image(16, Some(&signed)), Ok(())),
            ("second entry signed", image(16, Some(&two)), Ok(())),
            ("no table", image(16, None), Err(())),
            (
                "only an X.509 entry",
                image(16, Some(&win_cert(1, b"x509"))),
                Err(()),
            ),
            ("too few directories", image(4, Some(&signed)), Err(())),
            ("not PE", b"\x7fELF....".to_vec(), Err(())),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(check_signed(&bytes).map_err(|_| ()), want, "{name}");
        }
        let certs = certificates(&image(16, Some(&two))).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[1].data, [0x30, 0x82, 1, 2, 3]);
        assert_eq!(certs[1].revision, 0x0200);
    }

    #[test]
    fn malformed_tables_are_errors_not_panics() {
        let mut bad_len = win_cert(2, &[0x30]);
        bad_len[..4].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(
            certificates(&image(16, Some(&bad_len))),
            Err(PeError::CertificateTable("entry length"))
        );
        let mut beyond = image(16, Some(&win_cert(2, &[0x30])));
        let len = beyond.len();
        beyond.truncate(len - 4);
        assert!(certificates(&beyond).is_err());
        assert_eq!(certificates(b"MZ"), Err(PeError::Truncated("DOS header")));
        for cut in [0x3c, 0x44, 0x58, 0x90] {
            let whole = image(16, Some(&win_cert(2, &[0x30])));
            assert!(certificates(&whole[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// Debian's kernels are signed for Secure Boot; the host's is checked
    /// when it is there.
    #[test]
    fn the_hosts_debian_kernel_is_signed() {
        let Some(kernel) = std::fs::read_dir("/boot").ok().and_then(|d| {
            d.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
        }) else {
            return;
        };
        let bytes = std::fs::read(&kernel).unwrap();
        assert_eq!(check_signed(&bytes), Ok(()), "{}", kernel.display());
    }
}
