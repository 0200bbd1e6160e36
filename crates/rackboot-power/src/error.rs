//! One error type for every driver, with kinds a caller can act on.

use std::time::Duration;

/// What went wrong talking to a BMC. `bmc` is always the redacted BMC URL
/// (never the password), so messages can go straight to logs and events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowerError {
    /// Wrong user name or password, or the account lacks the privilege.
    #[error("{bmc}: authentication failed: {detail}")]
    Authentication { bmc: String, detail: String },
    /// No answer at the network level (refused, no route, no RMCP reply).
    #[error("{bmc}: unreachable: {detail}")]
    Unreachable { bmc: String, detail: String },
    /// A call or a verification took longer than allowed.
    #[error("{bmc}: timed out after {}ms while {during}", after.as_millis())]
    Timeout {
        bmc: String,
        during: String,
        after: Duration,
    },
    /// The BMC (or this driver) cannot do what was asked.
    #[error("{bmc}: unsupported: {detail}")]
    Unsupported { bmc: String, detail: String },
    /// The BMC understood the request and refused or failed it.
    /// `transient` is set for "busy, try later" answers (HTTP 429/5xx, IPMI node busy).
    #[error("{bmc}: BMC error: {message}")]
    Bmc {
        bmc: String,
        message: String,
        transient: bool,
    },
    /// The answer made no sense (bad JSON, unexpected output, TLS trust failure).
    #[error("{bmc}: protocol error: {message}")]
    Protocol { bmc: String, message: String },
    #[error("invalid BMC URL: {0}")]
    InvalidUrl(String),
}

/// The kind of a [`PowerError`] without its details (for metrics, API status mapping,
/// and scripting failures in the fake driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerErrorKind {
    Authentication,
    Unreachable,
    Timeout,
    Unsupported,
    Bmc,
    Protocol,
    InvalidUrl,
}

impl PowerErrorKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PowerErrorKind::Authentication => "authentication",
            PowerErrorKind::Unreachable => "unreachable",
            PowerErrorKind::Timeout => "timeout",
            PowerErrorKind::Unsupported => "unsupported",
            PowerErrorKind::Bmc => "bmc",
            PowerErrorKind::Protocol => "protocol",
            PowerErrorKind::InvalidUrl => "invalid_url",
        }
    }
}

impl PowerError {
    pub fn kind(&self) -> PowerErrorKind {
        match self {
            PowerError::Authentication { .. } => PowerErrorKind::Authentication,
            PowerError::Unreachable { .. } => PowerErrorKind::Unreachable,
            PowerError::Timeout { .. } => PowerErrorKind::Timeout,
            PowerError::Unsupported { .. } => PowerErrorKind::Unsupported,
            PowerError::Bmc { .. } => PowerErrorKind::Bmc,
            PowerError::Protocol { .. } => PowerErrorKind::Protocol,
            PowerError::InvalidUrl(_) => PowerErrorKind::InvalidUrl,
        }
    }

    /// Worth retrying: the same request may succeed a little later.
    /// Authentication, unsupported and malformed answers never get better by repetition.
    pub fn is_transient(&self) -> bool {
        match self {
            PowerError::Unreachable { .. } | PowerError::Timeout { .. } => true,
            PowerError::Bmc { transient, .. } => *transient,
            _ => false,
        }
    }

    pub(crate) fn timeout(bmc: &str, during: impl Into<String>, after: Duration) -> PowerError {
        PowerError::Timeout {
            bmc: bmc.to_string(),
            during: during.into(),
            after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_kinds() {
        let bmc = "redfish://admin:***@10.0.0.1".to_string();
        let cases = [
            (
                PowerError::Unreachable {
                    bmc: bmc.clone(),
                    detail: "refused".into(),
                },
                true,
            ),
            (
                PowerError::timeout(&bmc, "reading power", Duration::from_secs(3)),
                true,
            ),
            (
                PowerError::Bmc {
                    bmc: bmc.clone(),
                    message: "busy".into(),
                    transient: true,
                },
                true,
            ),
            (
                PowerError::Bmc {
                    bmc: bmc.clone(),
                    message: "bad value".into(),
                    transient: false,
                },
                false,
            ),
            (
                PowerError::Authentication {
                    bmc: bmc.clone(),
                    detail: "401".into(),
                },
                false,
            ),
            (
                PowerError::Unsupported {
                    bmc: bmc.clone(),
                    detail: "x".into(),
                },
                false,
            ),
            (
                PowerError::Protocol {
                    bmc: bmc.clone(),
                    message: "x".into(),
                },
                false,
            ),
            (PowerError::InvalidUrl("x".into()), false),
        ];
        for (e, transient) in cases {
            assert_eq!(e.is_transient(), transient, "{e}");
        }
    }

    #[test]
    fn timeout_message_names_bmc_and_step() {
        let e = PowerError::timeout(
            "ipmi://root:***@bmc1:623",
            "waiting for power off",
            Duration::from_secs(5),
        );
        assert_eq!(
            e.to_string(),
            "ipmi://root:***@bmc1:623: timed out after 5000ms while waiting for power off"
        );
    }
}
