//! The one error type of the library.
//!
//! Every fallible library function returns [`Result<T>`](crate::Result). Variants carry
//! structured fields so that callers (and the CLI) can tell exactly what was wrong. No
//! variant ever carries secret material.

use std::path::PathBuf;

/// Everything that can go wrong in hepeft.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter set is malformed (before any security consideration).
    #[error("invalid parameters: {reason}")]
    InvalidParameters { reason: String },

    /// A parameter set is larger than the HomomorphicEncryption.org bound for the requested
    /// security level.
    #[error(
        "insecure parameters: log2(QP) = {} exceeds the {security_bits}-bit bound of {max_log_qp} \
         for N = 2^{log_n} (HomomorphicEncryption.org table, ternary secret); \
         use Security::Unchecked only if you know why",
        exceeding(*log_qp, *max_log_qp)
    )]
    InsecureParameters {
        log_n: u32,
        log_qp: f64,
        max_log_qp: u32,
        security_bits: u32,
    },

    /// Two objects were made under different parameter sets.
    #[error("parameter mismatch: {what} was made for parameters {found}, expected {expected}")]
    ParameterMismatch {
        what: String,
        expected: String,
        found: String,
    },

    /// Two operands live at different scales and cannot be combined without losing precision.
    #[error("scale mismatch: {left} vs {right} (relative difference {rel:.3e})")]
    ScaleMismatch { left: f64, right: f64, rel: f64 },

    /// An operation needs more levels than the ciphertext has left.
    #[error("levels exhausted: {op} needs level >= {needed}, ciphertext is at level {available}")]
    LevelExhausted {
        op: String,
        needed: usize,
        available: usize,
    },

    /// A level argument is out of range.
    #[error("invalid level {level}: the parameter set has levels 0..={max}")]
    InvalidLevel {
        level: crate::ckks::Level,
        max: crate::ckks::Level,
    },

    /// A key the operation needs was not provided.
    #[error("missing key: {what}")]
    MissingKey { what: String },

    /// Dimensions of two operands do not agree.
    #[error("dimension mismatch in {context}: expected {expected}, found {found}")]
    DimensionMismatch {
        context: String,
        expected: usize,
        found: usize,
    },

    /// A numeric input is NaN, infinite or too large to encode.
    #[error("invalid value in {context}: {reason}")]
    InvalidValue { context: String, reason: String },

    /// A value left the interval an activation was fitted on.
    #[error("value {value} at {context} is outside the declared activation interval [{lo}, {hi}]")]
    OutOfInterval {
        context: String,
        value: f64,
        lo: f64,
        hi: f64,
    },

    /// A file or byte buffer is not a valid hepeft object.
    #[error("malformed {what}: {reason}")]
    Format { what: String, reason: String },

    /// Objects that must belong together do not: another key set, plan, role or level
    /// (see `session::binding`). `what` names the kind of mismatch ("key set", "plan",
    /// "role", "level"), `reason` both sides.
    #[error("{what} mismatch: {reason}")]
    Mismatch { what: String, reason: String },

    /// An input is larger than its limit (a file, a payload, a thread count).
    #[error("{what} is too large: {found} exceeds the limit of {limit}")]
    TooLarge {
        what: String,
        found: String,
        limit: String,
    },

    /// A model description or weight file is inconsistent.
    #[error("invalid model: {reason}")]
    Model { reason: String },

    /// The operation is refused because it would destroy or misuse a file (replacing a
    /// secret key, a directory that is not a key directory); the reason names a way out.
    #[error("{reason}")]
    Refused { reason: String },

    /// Wrapped I/O failure, with the path when known.
    #[error("I/O error on {path:?}: {source}")]
    Io {
        path: Option<PathBuf>,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Shorthand for [`Error::Format`].
    pub fn format(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Format {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Mismatch`].
    pub fn mismatch(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Mismatch {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::InvalidParameters`].
    pub fn params(reason: impl Into<String>) -> Self {
        Error::InvalidParameters {
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Model`].
    pub fn model(reason: impl Into<String>) -> Self {
        Error::Model {
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::DimensionMismatch`].
    pub fn dims(context: impl Into<String>, expected: usize, found: usize) -> Self {
        Error::DimensionMismatch {
            context: context.into(),
            expected,
            found,
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: Some(path.into()),
            source,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io { path: None, source }
    }
}

/// `value` printed with as many decimals (1 to 6) as it takes to show that it exceeds
/// `bound` (a log2(QP) of 218.0004 prints as 218.0004, not as 218.0 against a bound of 218).
fn exceeding(value: f64, bound: u32) -> String {
    for d in 1..=6 {
        let s = format!("{value:.d$}");
        if s.parse::<f64>().is_ok_and(|v| v > bound as f64) {
            return s;
        }
    }
    format!("{value:.6}")
}
