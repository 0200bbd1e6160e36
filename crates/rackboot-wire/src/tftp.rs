//! TFTP packets (RFC 1350), option negotiation (RFC 2347/2348/2349/7440) and netascii.
//!
//! Everything here is pure: bytes in, values out. Parsing borrows from the input
//! buffer so the server can decode ACKs without allocating; requests (rare) own
//! their strings.

use std::fmt;

use thiserror::Error;

pub const OPCODE_RRQ: u16 = 1;
pub const OPCODE_WRQ: u16 = 2;
pub const OPCODE_DATA: u16 = 3;
pub const OPCODE_ACK: u16 = 4;
pub const OPCODE_ERROR: u16 = 5;
pub const OPCODE_OACK: u16 = 6;

/// Block size without negotiation (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348 bounds.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// DATA header: opcode + block number.
pub const DATA_HEADER_LEN: usize = 4;

/// Transfer mode of a request. "mail" (obsolete) is rejected as malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
        }
    }
}

/// RFC 1350 / 2347 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined,
    FileNotFound,
    AccessViolation,
    DiskFull,
    IllegalOperation,
    UnknownTransferId,
    FileExists,
    NoSuchUser,
    /// RFC 2347: the client refuses the OACK (PXE ROMs use it after a tsize probe).
    OptionsRefused,
    Other(u16),
}

impl ErrorCode {
    pub fn from_u16(code: u16) -> ErrorCode {
        match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionsRefused,
            other => ErrorCode::Other(other),
        }
    }

    pub fn as_u16(&self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionsRefused => 8,
            ErrorCode::Other(code) => *code,
        }
    }
}

/// An RRQ or WRQ. Option names keep the client's spelling (we echo it in the OACK);
/// compare them case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub filename: String,
    pub mode: Mode,
    pub options: Vec<(String, String)>,
}

/// A decoded packet, borrowing DATA payloads and ERROR messages from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request),
    Wrq(Request),
    Data { block: u16, data: &'a [u8] },
    Ack { block: u16 },
    Error { code: ErrorCode, message: String },
    Oack { options: Vec<(String, String)> },
}

/// Why a packet could not be decoded. `reason()` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("packet is {0} bytes, shorter than its fixed header")]
    Truncated(usize),
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("{field} is not NUL-terminated")]
    MissingNul { field: &'static str },
    #[error("{field} is not valid UTF-8")]
    NotUtf8 { field: &'static str },
    #[error("empty filename")]
    EmptyFilename,
    #[error("unsupported transfer mode {0:?}")]
    UnsupportedMode(String),
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
    #[error("empty option name")]
    EmptyOptionName,
}

impl ParseError {
    /// Short, stable label for `rackboot_tftp_dropped_total{reason=...}`.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Truncated(_) => "truncated",
            ParseError::UnknownOpcode(_) => "unknown_opcode",
            ParseError::MissingNul { .. } => "missing_nul",
            ParseError::NotUtf8 { .. } => "not_utf8",
            ParseError::EmptyFilename => "empty_filename",
            ParseError::UnsupportedMode(_) => "unsupported_mode",
            ParseError::OptionWithoutValue(_) => "option_without_value",
            ParseError::EmptyOptionName => "empty_option_name",
        }
    }
}

/// Reads NUL-terminated strings off the front of a buffer.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn next(&mut self, field: &'static str) -> Result<&'a str, ParseError> {
        let nul = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ParseError::MissingNul { field })?;
        let s =
            std::str::from_utf8(&self.rest[..nul]).map_err(|_| ParseError::NotUtf8 { field })?;
        self.rest = &self.rest[nul + 1..];
        Ok(s)
    }
}

fn parse_options(fields: &mut Fields<'_>) -> Result<Vec<(String, String)>, ParseError> {
    let mut options = Vec::new();
    while !fields.is_empty() {
        // Some clients pad requests with NULs; an empty name at the very end is padding.
        if fields.rest.iter().all(|&b| b == 0) {
            break;
        }
        let name = fields.next("option name")?;
        if name.is_empty() {
            return Err(ParseError::EmptyOptionName);
        }
        let value = fields
            .next("option value")
            .map_err(|_| ParseError::OptionWithoutValue(name.to_string()))?;
        options.push((name.to_string(), value.to_string()));
    }
    Ok(options)
}

fn parse_request(body: &[u8]) -> Result<Request, ParseError> {
    let mut fields = Fields { rest: body };
    let filename = fields.next("filename")?;
    if filename.is_empty() {
        return Err(ParseError::EmptyFilename);
    }
    let mode = fields.next("mode")?;
    let mode = if mode.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else {
        return Err(ParseError::UnsupportedMode(mode.to_string()));
    };
    let options = parse_options(&mut fields)?;
    Ok(Request {
        filename: filename.to_string(),
        mode,
        options,
    })
}

impl<'a> Packet<'a> {
    /// Decodes one UDP payload. Never panics, whatever the input.
    pub fn parse(buf: &'a [u8]) -> Result<Packet<'a>, ParseError> {
        if buf.len() < 2 {
            return Err(ParseError::Truncated(buf.len()));
        }
        let opcode = u16::from_be_bytes([buf[0], buf[1]]);
        let body = &buf[2..];
        match opcode {
            OPCODE_RRQ => Ok(Packet::Rrq(parse_request(body)?)),
            OPCODE_WRQ => Ok(Packet::Wrq(parse_request(body)?)),
            OPCODE_DATA | OPCODE_ACK | OPCODE_ERROR if buf.len() < 4 => {
                Err(ParseError::Truncated(buf.len()))
            }
            OPCODE_DATA => Ok(Packet::Data {
                block: u16::from_be_bytes([buf[2], buf[3]]),
                data: &buf[4..],
            }),
            // Trailing bytes after an ACK are tolerated (some stacks pad to a minimum frame).
            OPCODE_ACK => Ok(Packet::Ack {
                block: u16::from_be_bytes([buf[2], buf[3]]),
            }),
            OPCODE_ERROR => {
                let code = ErrorCode::from_u16(u16::from_be_bytes([buf[2], buf[3]]));
                // A missing terminator or bad UTF-8 in the message must not hide the code.
                let raw = &buf[4..];
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                let message = String::from_utf8_lossy(&raw[..end]).into_owned();
                Ok(Packet::Error { code, message })
            }
            OPCODE_OACK => {
                let mut fields = Fields { rest: body };
                Ok(Packet::Oack {
                    options: parse_options(&mut fields)?,
                })
            }
            other => Err(ParseError::UnknownOpcode(other)),
        }
    }

    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Rrq(req) => encode_request(OPCODE_RRQ, req, out),
            Packet::Wrq(req) => encode_request(OPCODE_WRQ, req, out),
            Packet::Data { block, data } => {
                out.extend_from_slice(&data_header(*block));
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => {
                out.extend_from_slice(&OPCODE_ACK.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => encode_error(*code, message, out),
            Packet::Oack { options } => {
                out.extend_from_slice(&OPCODE_OACK.to_be_bytes());
                for (name, value) in options {
                    push_cstr(out, name);
                    push_cstr(out, value);
                }
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

fn push_cstr(out: &mut Vec<u8>, s: &str) {
    // NULs inside a string would split it on the wire; drop them.
    out.extend(s.bytes().filter(|&b| b != 0));
    out.push(0);
}

fn encode_request(opcode: u16, req: &Request, out: &mut Vec<u8>) {
    out.extend_from_slice(&opcode.to_be_bytes());
    push_cstr(out, &req.filename);
    push_cstr(out, req.mode.as_str());
    for (name, value) in &req.options {
        push_cstr(out, name);
        push_cstr(out, value);
    }
}

/// The 4-byte header of a DATA packet.
pub fn data_header(block: u16) -> [u8; 4] {
    let b = block.to_be_bytes();
    [0, OPCODE_DATA as u8, b[0], b[1]]
}

/// Appends an ERROR packet to `out`.
pub fn encode_error(code: ErrorCode, message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&OPCODE_ERROR.to_be_bytes());
    out.extend_from_slice(&code.as_u16().to_be_bytes());
    push_cstr(out, message);
}

/// Server-side limits applied to what clients ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionLimits {
    /// Largest blksize granted (8..=65464); larger requests are answered with this.
    pub max_blksize: u16,
    /// Largest windowsize granted (>= 1).
    pub max_windowsize: u16,
    /// Upper bound on blksize * windowsize, i.e. what one transfer holds in flight
    /// and buffers; windowsize is reduced to fit (never below 1).
    pub max_window_bytes: u32,
}

impl Default for OptionLimits {
    fn default() -> Self {
        OptionLimits {
            max_blksize: MAX_BLKSIZE,
            max_windowsize: 64,
            max_window_bytes: 1 << 20,
        }
    }
}

/// What an RRQ transfer will use, and the OACK that tells the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    /// Retransmission timeout the client asked for (RFC 2349), seconds.
    pub timeout_secs: Option<u8>,
    /// Options to acknowledge, in request order with the client's spelling.
    /// Empty means: send no OACK, start with DATA block 1.
    pub oack: Vec<(String, String)>,
}

impl Negotiated {
    pub fn oack_packet(&self) -> Option<Packet<'static>> {
        (!self.oack.is_empty()).then(|| Packet::Oack {
            options: self.oack.clone(),
        })
    }
}

/// Negotiates the options of a read request (RFC 2347). Unknown options and values
/// out of range are ignored (not acknowledged), as RFC 2347 allows; blksize and
/// windowsize above the server's limits are lowered to them. `tsize` is the size
/// the client will receive (encoded size for netascii), `None` when it is not
/// known cheaply, in which case tsize is not acknowledged.
pub fn negotiate_read(
    options: &[(String, String)],
    limits: &OptionLimits,
    tsize: Option<u64>,
) -> Negotiated {
    let max_blksize = limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
    let mut blksize = None;
    let mut windowsize = None;
    let mut timeout_secs = None;
    let mut tsize_ack = false;
    // (index into options, which) so the OACK keeps request order.
    let mut acked: Vec<(usize, &'static str)> = Vec::new();
    for (i, (name, value)) in options.iter().enumerate() {
        let value = value.trim();
        if name.eq_ignore_ascii_case("blksize") && blksize.is_none() {
            if let Ok(v) = value.parse::<u64>()
                && v >= MIN_BLKSIZE as u64
            {
                blksize = Some(v.min(max_blksize as u64) as u16);
                acked.push((i, "blksize"));
            }
        } else if name.eq_ignore_ascii_case("windowsize") && windowsize.is_none() {
            if let Ok(v) = value.parse::<u64>()
                && (1..=65535).contains(&v)
            {
                windowsize = Some(v.min(limits.max_windowsize.max(1) as u64) as u16);
                acked.push((i, "windowsize"));
            }
        } else if name.eq_ignore_ascii_case("timeout") && timeout_secs.is_none() {
            if let Ok(v) = value.parse::<u64>()
                && (1..=255).contains(&v)
            {
                timeout_secs = Some(v as u8);
                acked.push((i, "timeout"));
            }
        } else if name.eq_ignore_ascii_case("tsize") && !tsize_ack && tsize.is_some() {
            // On RRQ the client sends 0 (or anything); the server answers the real size.
            if value.parse::<u64>().is_ok() {
                tsize_ack = true;
                acked.push((i, "tsize"));
            }
        }
    }
    let blksize_v = blksize.unwrap_or(DEFAULT_BLKSIZE);
    let mut windowsize_v = windowsize.unwrap_or(1);
    let window_cap = (limits.max_window_bytes / blksize_v as u32).clamp(1, 65535) as u16;
    windowsize_v = windowsize_v.min(window_cap);
    let oack = acked
        .into_iter()
        .map(|(i, which)| {
            let value = match which {
                "blksize" => blksize_v.to_string(),
                "windowsize" => windowsize_v.to_string(),
                "timeout" => timeout_secs.unwrap_or(1).to_string(),
                _ => tsize.unwrap_or(0).to_string(),
            };
            (options[i].0.clone(), value)
        })
        .collect();
    Negotiated {
        blksize: blksize_v,
        windowsize: windowsize_v,
        timeout_secs,
        oack,
    }
}

/// Does the request carry an option named `name` (case-insensitive)?
pub fn has_option(options: &[(String, String)], name: &str) -> bool {
    options.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// Streaming netascii encoder (RFC 764 as used by RFC 1350): LF → CR LF,
/// CR → CR NUL. Output may end in the middle of a pair; the second byte is kept
/// and emitted first by the next call, so block boundaries can fall anywhere.
#[derive(Debug, Default, Clone)]
pub struct NetasciiEncoder {
    pending: Option<u8>,
}

impl NetasciiEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes from `input` into `out`; returns (input bytes consumed, output bytes written).
    /// Stops when `out` is full or `input` is consumed.
    pub fn encode(&mut self, input: &[u8], out: &mut [u8]) -> (usize, usize) {
        let mut read = 0;
        let mut written = 0;
        if let Some(b) = self.pending {
            if out.is_empty() {
                return (0, 0);
            }
            out[0] = b;
            written = 1;
            self.pending = None;
        }
        while read < input.len() && written < out.len() {
            let b = input[read];
            read += 1;
            let (first, second) = match b {
                b'\n' => (b'\r', Some(b'\n')),
                b'\r' => (b'\r', Some(0)),
                other => (other, None),
            };
            out[written] = first;
            written += 1;
            if let Some(second) = second {
                if written < out.len() {
                    out[written] = second;
                    written += 1;
                } else {
                    self.pending = Some(second);
                }
            }
        }
        (read, written)
    }

    /// True when a byte of a CR pair is still waiting to be written.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// Size of `data` after netascii encoding.
pub fn netascii_encoded_len(data: &[u8]) -> u64 {
    data.len() as u64 + data.iter().filter(|&&b| b == b'\n' || b == b'\r').count() as u64
}

/// Decodes netascii (CR LF → LF, CR NUL → CR). Used by tests and tools; the
/// server is read-only and never decodes.
pub fn netascii_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\r' && i + 1 < data.len() {
            match data[i + 1] {
                b'\n' => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                0 => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/tftp/{name}.hex", env!("CARGO_MANIFEST_DIR"));
        hex(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    type Row<'a> = (&'a str, &'a str, Mode, &'a [(&'a str, &'a str)]);

    /// Requests captured from real clients by testdata/tftp/capture.sh.
    #[test]
    fn real_client_requests() {
        let table: &[Row] = &[
            (
                "atftp-blksize-windowsize",
                "boot/file.bin",
                Mode::Octet,
                &[("blksize", "1468"), ("windowsize", "16")],
            ),
            ("atftp-plain", "pxelinux.0", Mode::Octet, &[]),
            (
                "busybox-blksize",
                "ldlinux.c32",
                Mode::Octet,
                &[("blksize", "1468"), ("tsize", "0")],
            ),
            (
                "curl-blksize",
                "undionly.kpxe",
                Mode::Octet,
                &[("tsize", "0"), ("blksize", "1468"), ("timeout", "6")],
            ),
            (
                "curl-default",
                "dir/file.txt",
                Mode::Octet,
                &[("tsize", "0"), ("blksize", "512"), ("timeout", "6")],
            ),
            ("tftp-hpa-octet", "vmlinuz", Mode::Octet, &[]),
            ("tftp-hpa-netascii", "readme.txt", Mode::Netascii, &[]),
        ];
        for (name, filename, mode, options) in table {
            let bytes = fixture(name);
            let expected = Request {
                filename: filename.to_string(),
                mode: *mode,
                options: opts(options),
            };
            assert_eq!(
                Packet::parse(&bytes),
                Ok(Packet::Rrq(expected.clone())),
                "{name}"
            );
            // Our encoder produces the same bytes the client sent.
            assert_eq!(Packet::Rrq(expected).encode(), bytes, "{name}");
        }
    }

    /// Requests from firmware, captured by testdata/tftp/capture-firmware.sh: the
    /// iPXE ROM (BIOS) and OVMF (UEFI) loading their first stage, then pxelinux.
    #[test]
    fn real_firmware_requests() {
        let table: &[Row] = &[
            (
                "bios-01-rrq-pxelinux.0",
                "pxelinux.0",
                Mode::Octet,
                &[("blksize", "1432"), ("tsize", "0")],
            ),
            (
                "bios-02-rrq-ldlinux.c32",
                "ldlinux.c32",
                Mode::Octet,
                &[("tsize", "0"), ("blksize", "1408")],
            ),
            (
                "bios-04-rrq-pxelinux.cfg_01-52-54-00-12-34-56",
                "pxelinux.cfg/01-52-54-00-12-34-56",
                Mode::Octet,
                &[("tsize", "0"), ("blksize", "1408")],
            ),
            (
                "bios-13-rrq-pxelinux.cfg_default",
                "pxelinux.cfg/default",
                Mode::Octet,
                &[("tsize", "0"), ("blksize", "1408")],
            ),
            (
                "uefi-01-rrq-ipxe.efi",
                "ipxe.efi",
                Mode::Octet,
                &[("blksize", "1432"), ("tsize", "0")],
            ),
        ];
        for (name, filename, mode, options) in table {
            let bytes = fixture(name);
            let expected = Request {
                filename: filename.to_string(),
                mode: *mode,
                options: opts(options),
            };
            assert_eq!(
                Packet::parse(&bytes),
                Ok(Packet::Rrq(expected.clone())),
                "{name}"
            );
            assert_eq!(Packet::Rrq(expected).encode(), bytes, "{name}");
        }
        // Every other firmware capture is a well-formed octet RRQ with tsize.
        let dir = format!("{}/testdata/tftp", env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            if name.starts_with("bios-") || name.starts_with("uefi-") {
                let Ok(Packet::Rrq(req)) = Packet::parse(&fixture(&name)) else {
                    panic!("{name} is not an RRQ");
                };
                assert_eq!(req.mode, Mode::Octet, "{name}");
                assert!(has_option(&req.options, "tsize"), "{name}");
                seen += 1;
            }
        }
        assert_eq!(seen, 15);
    }

    #[test]
    fn small_packets() {
        let table: &[(&str, Result<Packet<'static>, ParseError>)] = &[
            ("0004 0000", Ok(Packet::Ack { block: 0 })),
            ("0004 ffff", Ok(Packet::Ack { block: 65535 })),
            ("0004 0001 0000", Ok(Packet::Ack { block: 1 })),
            (
                "0003 0001",
                Ok(Packet::Data {
                    block: 1,
                    data: &[],
                }),
            ),
            (
                "0003 0102 6869",
                Ok(Packet::Data {
                    block: 258,
                    data: b"hi",
                }),
            ),
            (
                "0005 0008 00",
                Ok(Packet::Error {
                    code: ErrorCode::OptionsRefused,
                    message: String::new(),
                }),
            ),
            (
                // Message without its NUL still yields the code.
                "0005 0001 6e6f",
                Ok(Packet::Error {
                    code: ErrorCode::FileNotFound,
                    message: "no".into(),
                }),
            ),
            (
                "0006 7473697a6500 313000",
                Ok(Packet::Oack {
                    options: vec![("tsize".into(), "10".into())],
                }),
            ),
            ("", Err(ParseError::Truncated(0))),
            ("00", Err(ParseError::Truncated(1))),
            ("0004", Err(ParseError::Truncated(2))),
            ("0004 00", Err(ParseError::Truncated(3))),
            ("0003 00", Err(ParseError::Truncated(3))),
            ("0005 00", Err(ParseError::Truncated(3))),
            ("0007 0000", Err(ParseError::UnknownOpcode(7))),
            ("0000", Err(ParseError::UnknownOpcode(0))),
            ("0001 61", Err(ParseError::MissingNul { field: "filename" })),
            ("0001 00 6f6374657400", Err(ParseError::EmptyFilename)),
            (
                "0001 6100 6f63",
                Err(ParseError::MissingNul { field: "mode" }),
            ),
            (
                "0001 6100 6d61696c00",
                Err(ParseError::UnsupportedMode("mail".into())),
            ),
            (
                "0001 ff00 6f6374657400",
                Err(ParseError::NotUtf8 { field: "filename" }),
            ),
            (
                "0001 6100 6f6374657400 626c6b73697a6500",
                Err(ParseError::OptionWithoutValue("blksize".into())),
            ),
            (
                "0001 6100 6f6374657400 626c6b73697a65",
                Err(ParseError::MissingNul {
                    field: "option name",
                }),
            ),
            (
                "0001 6100 6f6374657400 00 313000",
                Err(ParseError::EmptyOptionName),
            ),
        ];
        for (h, expected) in table {
            let bytes = hex(&h.replace(' ', ""));
            assert_eq!(&Packet::parse(&bytes), expected, "{h}");
        }
    }

    #[test]
    fn mode_is_case_insensitive_and_padding_is_ignored() {
        let bytes = hex("0001 6100 4f4354455400 0000".replace(' ', "").as_str());
        assert_eq!(
            Packet::parse(&bytes),
            Ok(Packet::Rrq(Request {
                filename: "a".into(),
                mode: Mode::Octet,
                options: vec![],
            }))
        );
    }

    /// Every prefix of every fixture parses or fails without panicking.
    #[test]
    fn truncations_never_panic() {
        let dir = format!("{}/testdata/tftp", env!("CARGO_MANIFEST_DIR"));
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "hex") {
                let bytes = hex(&std::fs::read_to_string(&path).unwrap());
                for n in 0..=bytes.len() {
                    let _ = Packet::parse(&bytes[..n]);
                }
                seen += 1;
            }
        }
        assert!(seen >= 7);
        // And a cheap deterministic byte soup.
        let mut x: u32 = 12345;
        for _ in 0..20000 {
            let len = (x % 40) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1103515245).wrapping_add(12345);
                    (x >> 16) as u8 % 8
                })
                .collect();
            let _ = Packet::parse(&buf);
            x = x.wrapping_add(7);
        }
    }

    #[test]
    fn encode_round_trips() {
        let packets = [
            Packet::Ack { block: 7 },
            Packet::Data {
                block: 65535,
                data: b"abc",
            },
            Packet::Error {
                code: ErrorCode::AccessViolation,
                message: "nope".into(),
            },
            Packet::Oack {
                options: opts(&[("blksize", "1468"), ("tsize", "99")]),
            },
            Packet::Wrq(Request {
                filename: "x".into(),
                mode: Mode::Netascii,
                options: vec![],
            }),
        ];
        for p in packets {
            assert_eq!(Packet::parse(&p.encode()), Ok(p.clone()));
        }
        assert_eq!(data_header(0x0102), [0, 3, 1, 2]);
        let mut e = Vec::new();
        encode_error(ErrorCode::FileNotFound, "File not found", &mut e);
        assert_eq!(e, b"\x00\x05\x00\x01File not found\x00");
    }

    #[test]
    fn negotiation_table() {
        let limits = OptionLimits {
            max_blksize: 1468,
            max_windowsize: 32,
            max_window_bytes: 1 << 20,
        };
        // (options, tsize, blksize, windowsize, timeout, oack)
        type Row<'a> = (
            &'a [(&'a str, &'a str)],
            Option<u64>,
            u16,
            u16,
            Option<u8>,
            &'a [(&'a str, &'a str)],
        );
        let table: &[Row] = &[
            (&[], Some(10), 512, 1, None, &[]),
            (
                &[("blksize", "1468"), ("windowsize", "16")],
                Some(10),
                1468,
                16,
                None,
                &[("blksize", "1468"), ("windowsize", "16")],
            ),
            // Capped to server limits, client spelling kept.
            (
                &[("BLKSIZE", "65464"), ("WindowSize", "65535")],
                None,
                1468,
                32,
                None,
                &[("BLKSIZE", "1468"), ("WindowSize", "32")],
            ),
            // tsize answered with the real size; timeout echoed.
            (
                &[("tsize", "0"), ("blksize", "512"), ("timeout", "6")],
                Some(3145728),
                512,
                1,
                Some(6),
                &[("tsize", "3145728"), ("blksize", "512"), ("timeout", "6")],
            ),
            // tsize unknown: not acknowledged.
            (&[("tsize", "0")], None, 512, 1, None, &[]),
            // Out of range or garbage values are ignored, unknown options too.
            (
                &[
                    ("blksize", "7"),
                    ("windowsize", "0"),
                    ("timeout", "0"),
                    ("timeout", "256"),
                    ("tsize", "x"),
                    ("multicast", ""),
                    ("rollover", "0"),
                ],
                Some(5),
                512,
                1,
                None,
                &[],
            ),
            (
                &[("blksize", "abc"), ("timeout", "300")],
                Some(1),
                512,
                1,
                None,
                &[],
            ),
            // Values above the RFC maximum are lowered, not refused.
            (
                &[("blksize", "99999")],
                None,
                1468,
                1,
                None,
                &[("blksize", "1468")],
            ),
            // First occurrence wins.
            (
                &[("blksize", "1024"), ("blksize", "1468")],
                None,
                1024,
                1,
                None,
                &[("blksize", "1024")],
            ),
            (
                &[("blksize", "8"), ("timeout", "255")],
                None,
                8,
                1,
                Some(255),
                &[("blksize", "8"), ("timeout", "255")],
            ),
        ];
        for (options, tsize, blksize, windowsize, timeout, oack) in table {
            let n = negotiate_read(&opts(options), &limits, *tsize);
            assert_eq!(
                (n.blksize, n.windowsize, n.timeout_secs, n.oack.clone()),
                (*blksize, *windowsize, *timeout, opts(oack)),
                "{options:?}"
            );
        }
    }

    #[test]
    fn window_bytes_cap_lowers_windowsize() {
        let limits = OptionLimits {
            max_blksize: MAX_BLKSIZE,
            max_windowsize: 64,
            max_window_bytes: 1 << 20,
        };
        let n = negotiate_read(
            &opts(&[("blksize", "65464"), ("windowsize", "64")]),
            &limits,
            None,
        );
        assert_eq!((n.blksize, n.windowsize), (65464, 16));
        assert_eq!(n.oack, opts(&[("blksize", "65464"), ("windowsize", "16")]));
        let n = negotiate_read(&opts(&[("windowsize", "8")]), &limits, None);
        assert_eq!(n.windowsize, 8);
        assert!(n.oack_packet().is_some());
        let tiny = OptionLimits {
            max_window_bytes: 100,
            ..limits
        };
        let n = negotiate_read(&opts(&[("windowsize", "8")]), &tiny, None);
        assert_eq!(n.windowsize, 1);
    }

    #[test]
    fn netascii_table() {
        let table: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"abc", b"abc"),
            (b"a\nb", b"a\r\nb"),
            (b"a\rb", b"a\r\0b"),
            (b"\r\n", b"\r\0\r\n"),
            (b"\n\n", b"\r\n\r\n"),
            (b"x\r", b"x\r\0"),
        ];
        for (plain, encoded) in table {
            let mut enc = NetasciiEncoder::new();
            let mut out = vec![0u8; encoded.len() + 4];
            let (read, written) = enc.encode(plain, &mut out);
            assert_eq!((read, &out[..written]), (plain.len(), *encoded));
            assert_eq!(netascii_encoded_len(plain), encoded.len() as u64);
            assert_eq!(netascii_decode(encoded), *plain);
        }
    }

    /// Output chunks of every size, including 1, split CR pairs across chunk edges.
    #[test]
    fn netascii_streaming_across_blocks() {
        let plain: Vec<u8> = b"line one\nline\rtwo\r\n\n\rend\n"
            .iter()
            .copied()
            .cycle()
            .take(1000)
            .collect();
        let mut expected = Vec::new();
        for &b in &plain {
            match b {
                b'\n' => expected.extend_from_slice(b"\r\n"),
                b'\r' => expected.extend_from_slice(b"\r\0"),
                b => expected.push(b),
            }
        }
        for out_chunk in 1..20 {
            for in_chunk in [1, 3, 7, 1000] {
                let mut enc = NetasciiEncoder::new();
                let mut got = Vec::new();
                let mut input = &plain[..];
                let mut out = vec![0u8; out_chunk];
                loop {
                    let take = in_chunk.min(input.len());
                    let (read, written) = enc.encode(&input[..take], &mut out);
                    got.extend_from_slice(&out[..written]);
                    input = &input[read..];
                    if input.is_empty() && !enc.has_pending() {
                        break;
                    }
                }
                assert_eq!(got, expected, "out {out_chunk} in {in_chunk}");
            }
        }
    }
}
