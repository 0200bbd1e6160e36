//! Error types: [`DecodeError`] for the pure codecs, [`IpmiError`] for the client.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A packet or payload could not be decoded. Every decoder in this crate returns this
/// instead of panicking, whatever the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what} truncated: need {need} bytes, got {got}")]
    Truncated {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl DecodeError {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        DecodeError::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

/// Check that `buf` has at least `need` bytes before indexing into it.
pub(crate) fn need(what: &'static str, buf: &[u8], need: usize) -> Result<(), DecodeError> {
    if buf.len() < need {
        Err(DecodeError::Truncated {
            what,
            need,
            got: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// An IPMI completion code (the first byte of every response's data), with its spec name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompletionCode(pub u8);

impl CompletionCode {
    pub const OK: CompletionCode = CompletionCode(0x00);
    pub const NODE_BUSY: CompletionCode = CompletionCode(0xc0);
    pub const INVALID_COMMAND: CompletionCode = CompletionCode(0xc1);
    pub const TIMEOUT: CompletionCode = CompletionCode(0xc3);
    pub const OUT_OF_SPACE: CompletionCode = CompletionCode(0xc4);
    pub const PARAMETER_NOT_SUPPORTED: CompletionCode = CompletionCode(0x80);

    /// The name the IPMI v2.0 spec (table 5-2) gives this code.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "command completed normally",
            0xc0 => "node busy",
            0xc1 => "invalid command",
            0xc2 => "command invalid for given LUN",
            0xc3 => "timeout while processing command",
            0xc4 => "out of space",
            0xc5 => "reservation canceled or invalid reservation ID",
            0xc6 => "request data truncated",
            0xc7 => "request data length invalid",
            0xc8 => "request data field length limit exceeded",
            0xc9 => "parameter out of range",
            0xca => "cannot return number of requested data bytes",
            0xcb => "requested sensor, data, or record not present",
            0xcc => "invalid data field in request",
            0xcd => "command illegal for specified sensor or record type",
            0xce => "command response could not be provided",
            0xcf => "cannot execute duplicated request",
            0xd0 => "SDR repository in update mode",
            0xd1 => "device in firmware update mode",
            0xd2 => "BMC initialization or initialization agent in progress",
            0xd3 => "destination unavailable",
            0xd4 => "insufficient privilege level",
            0xd5 => "command not supported in present state",
            0xd6 => "command sub-function has been disabled or is unavailable",
            0xff => "unspecified error",
            0x01..=0x7e => "OEM completion code",
            // 0x80-0xbe are command-specific; the commands this crate uses define 0x80/0x81.
            0x80 => "parameter not supported (command-specific)",
            0x81 => {
                "attempt to set 'set in progress' when not in 'set complete' (command-specific)"
            }
            0x82 => "attempt to write read-only parameter (command-specific)",
            _ => "command-specific completion code",
        }
    }

    /// Codes a BMC gives when it is momentarily unable to do the work: retrying may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self.0, 0xc0 | 0xc3 | 0xce | 0xcf | 0xd2 | 0xff)
    }
}

impl fmt::Display for CompletionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02x} ({})", self.0, self.name())
    }
}

/// An RMCP+ status code from Open Session Response or RAKP 2/4 (IPMI v2.0 table 13-15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RakpStatus(pub u8);

impl RakpStatus {
    pub const OK: RakpStatus = RakpStatus(0x00);
    pub const INSUFFICIENT_RESOURCES: RakpStatus = RakpStatus(0x01);
    pub const INVALID_SESSION_ID: RakpStatus = RakpStatus(0x02);
    pub const INVALID_AUTH_ALGORITHM: RakpStatus = RakpStatus(0x04);
    pub const INVALID_INTEGRITY_ALGORITHM: RakpStatus = RakpStatus(0x05);
    pub const NO_MATCHING_AUTH_PAYLOAD: RakpStatus = RakpStatus(0x06);
    pub const NO_MATCHING_INTEGRITY_PAYLOAD: RakpStatus = RakpStatus(0x07);
    pub const INVALID_ROLE: RakpStatus = RakpStatus(0x09);
    pub const UNAUTHORIZED_ROLE: RakpStatus = RakpStatus(0x0a);
    pub const UNAUTHORIZED_NAME: RakpStatus = RakpStatus(0x0d);
    pub const INVALID_INTEGRITY_CHECK: RakpStatus = RakpStatus(0x0f);
    pub const INVALID_CONFIDENTIALITY_ALGORITHM: RakpStatus = RakpStatus(0x10);
    pub const NO_CIPHER_SUITE_MATCH: RakpStatus = RakpStatus(0x11);

    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "no errors",
            0x01 => "insufficient resources to create a session",
            0x02 => "invalid session ID",
            0x03 => "invalid payload type",
            0x04 => "invalid authentication algorithm",
            0x05 => "invalid integrity algorithm",
            0x06 => "no matching authentication payload",
            0x07 => "no matching integrity payload",
            0x08 => "inactive session ID",
            0x09 => "invalid role",
            0x0a => "unauthorized role or privilege level requested",
            0x0b => "insufficient resources to create a session at the requested role",
            0x0c => "invalid name length",
            0x0d => "unauthorized name",
            0x0e => "unauthorized GUID",
            0x0f => "invalid integrity check value",
            0x10 => "invalid confidentiality algorithm",
            0x11 => "no cipher suite match with proposed security algorithms",
            0x12 => "illegal or unrecognized parameter",
            _ => "reserved status code",
        }
    }

    /// The BMC refused the algorithms we proposed (so another cipher suite may work).
    pub fn is_algorithm_refusal(self) -> bool {
        matches!(self.0, 0x03..=0x07 | 0x10 | 0x11)
    }

    /// The BMC refused who we are or what we know (user name, password, role).
    pub fn is_auth_refusal(self) -> bool {
        matches!(self.0, 0x09 | 0x0a | 0x0c | 0x0d | 0x0e | 0x0f)
    }
}

impl fmt::Display for RakpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02x} ({})", self.0, self.name())
    }
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// The BMC answered RAKP 2 or RAKP 4 with a refusal status (unknown user, bad role,
    /// our RAKP 3 authcode did not verify...).
    Refused(RakpStatus),
    /// RAKP 2's key exchange authcode did not verify with our password: wrong password.
    Rakp2AuthcodeMismatch,
    /// RAKP 4's integrity check value did not verify: the BMC derived a different SIK.
    Rakp4IcvMismatch,
    /// The session came up but the BMC refused the requested privilege level.
    PrivilegeRefused(CompletionCode),
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthFailure::Refused(s) => write!(f, "BMC refused: {s}"),
            AuthFailure::Rakp2AuthcodeMismatch => {
                write!(f, "RAKP 2 authcode mismatch (wrong password)")
            }
            AuthFailure::Rakp4IcvMismatch => write!(f, "RAKP 4 integrity check value mismatch"),
            AuthFailure::PrivilegeRefused(cc) => {
                write!(f, "Set Session Privilege Level refused: {cc}")
            }
        }
    }
}

/// Errors from [`crate::IpmiClient`]. Callers tell the cases apart by variant; see
/// [`IpmiError::is_transient`] for whether a retry (usually with a new session) may help.
#[derive(Debug, thiserror::Error)]
pub enum IpmiError {
    /// Wrong user name or password, or the user may not have the requested privilege.
    #[error("IPMI authentication failed for user {user:?} at {target}: {reason}")]
    AuthFailed {
        target: SocketAddr,
        user: String,
        reason: AuthFailure,
    },
    /// No valid answer within `retries + 1` attempts of `timeout` each (the host is down,
    /// nothing listens on the port, or the session is gone on the BMC side).
    #[error(
        "no answer from BMC {target} to {what} after {attempts} attempts of {timeout:?}{}",
        last_io_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    Unreachable {
        target: SocketAddr,
        what: &'static str,
        attempts: u32,
        timeout: Duration,
        last_io_error: Option<String>,
    },
    /// The BMC does not offer what we need: IPMI v2.0/RMCP+, the cipher suite(s) we
    /// proposed, or the command (completion code 0xc1).
    #[error("BMC {target} does not support {what}")]
    Unsupported { target: SocketAddr, what: String },
    /// The BMC refused to open a session for a reason other than credentials or
    /// algorithms (e.g. out of session slots).
    #[error("BMC {target} refused the session during {stage}: {status}")]
    SessionRefused {
        target: SocketAddr,
        stage: &'static str,
        status: RakpStatus,
    },
    /// The BMC answered a command with a non-zero completion code.
    #[error("BMC {target} answered {command} with completion code {code}")]
    Completion {
        target: SocketAddr,
        command: &'static str,
        code: CompletionCode,
    },
    /// The BMC's reply could not be decoded or made no sense.
    #[error("protocol error from BMC {target} during {what}: {source}")]
    Protocol {
        target: SocketAddr,
        what: &'static str,
        #[source]
        source: DecodeError,
    },
    /// A local socket error (binding, sending).
    #[error("socket error talking to BMC {target}: {source}")]
    Io {
        target: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A caller-side mistake (e.g. a user name longer than 16 bytes).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The session was closed with [`crate::IpmiClient::close`].
    #[error("IPMI session to {target} is closed")]
    Closed { target: SocketAddr },
}

impl IpmiError {
    /// True when the same operation may succeed if retried later (typically after
    /// reconnecting): timeouts, socket errors, busy BMCs, out of session slots.
    /// Authentication failures, unsupported features and protocol errors are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            IpmiError::Unreachable { .. } | IpmiError::Io { .. } => true,
            IpmiError::SessionRefused { status, .. } => matches!(status.0, 0x01 | 0x0b),
            IpmiError::Completion { code, .. } => code.is_transient(),
            IpmiError::AuthFailed { .. }
            | IpmiError::Unsupported { .. }
            | IpmiError::Protocol { .. }
            | IpmiError::InvalidArgument(_)
            | IpmiError::Closed { .. } => false,
        }
    }

    /// True for wrong credentials / refused privilege.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, IpmiError::AuthFailed { .. })
    }
}
