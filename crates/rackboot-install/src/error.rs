//! Errors. Everything except `Internal` is the caller's fault (an HTTP 4xx):
//! a value is missing or invalid, the family cannot express what was asked
//! for, or a (user) template is broken.

use rackboot_core::OsFamily;

/// Why rendering an install file failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A required value is absent or empty (`hostname`, `callback_url`, ...).
    #[error("missing required value `{name}`")]
    MissingValue { name: String },
    /// A value is present but unusable.
    #[error("invalid value `{name}`: {reason}")]
    InvalidValue { name: String, reason: String },
    /// The family's installer cannot do this (e.g. bonds on Windows).
    #[error("{family} installs do not support {what}")]
    Unsupported { family: OsFamily, what: String },
    /// No built-in template for this family and version.
    #[error("no built-in {family} template for version {version:?} (built-in: {known})")]
    UnknownVersion {
        family: OsFamily,
        version: String,
        known: String,
    },
    /// The template failed to parse or to render.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The rendered text is not a well-formed file of the family's format.
    #[error("rendered {format} file is malformed: {reason}")]
    Malformed {
        format: &'static str,
        reason: String,
    },
}

impl RenderError {
    /// True when the request (values or template) is at fault: answer 4xx.
    /// Every variant is, today; a render cannot fail for server reasons.
    pub fn is_client_error(&self) -> bool {
        true
    }
}

/// A template that does not parse or does not render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {name}{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct TemplateError {
    /// The template's name (`rhel9-10.ks`, `override.ks`, ...).
    pub name: String,
    /// 1-based line in the template, when known.
    pub line: Option<usize>,
    /// What went wrong, with the offending source text when known.
    pub reason: String,
    pub kind: TemplateErrorKind,
}

/// Coarse class of a [`TemplateError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateErrorKind {
    /// The source is not valid template syntax.
    Syntax,
    /// The template used a value that does not exist (strict undefined) or
    /// printed an unset one.
    Undefined,
    /// The template ran out of fuel (too much work: a runaway loop).
    OutOfFuel,
    /// Any other runtime failure (bad filter argument, type error, ...).
    Runtime,
}

/// Why a password could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password is empty")]
    Empty,
    #[error("password contains a NUL or newline character")]
    BadCharacter,
    #[error("could not hash password: {0}")]
    Hash(String),
}
