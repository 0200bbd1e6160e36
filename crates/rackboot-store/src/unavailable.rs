//! Whether a store error means the database is away (stopped, restarting,
//! the connection cut) rather than that the operation is wrong: the same
//! operation may work once it is back. The API answers those with 503.

use crate::StoreError;

impl StoreError {
    /// True when the database could not be reached or dropped the
    /// connection: worth retrying once it is back.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Backend { source, .. } => unavailable(source),
            _ => false,
        }
    }
}

/// No connection, or the server ended it: I/O errors, no connection free
/// in time, SQLSTATE class 08 (connection exception) and 57P (the server
/// shutting down, crashed, or not yet accepting connections).
fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_unavailable_and_the_rest_not() {
        let backend = |source| StoreError::Backend {
            context: "testing",
            source,
        };
        let io = |kind| sqlx::Error::Io(std::io::Error::new(kind, "x"));
        for (error, expected) in [
            (backend(io(std::io::ErrorKind::NotFound)), true),
            (backend(io(std::io::ErrorKind::ConnectionRefused)), true),
            (backend(io(std::io::ErrorKind::UnexpectedEof)), true),
            (backend(sqlx::Error::PoolTimedOut), true),
            (backend(sqlx::Error::RowNotFound), false),
            (backend(sqlx::Error::Protocol("bad message".into())), false),
            (StoreError::Conflict("name taken".into()), false),
            (
                StoreError::NotFound {
                    what: "machine",
                    key: "x".into(),
                },
                false,
            ),
        ] {
            assert_eq!(error.is_unavailable(), expected, "{error}");
        }
    }
}
