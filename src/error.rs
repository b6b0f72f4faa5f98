//! The crate's error type. Every public fallible call returns `Result<_, Error>`; messages are lower-case,
//! name the op (or file, flag, device) and the operands' shapes or dtypes, and carry no final period.

use std::path::PathBuf;

/// Everything that can go wrong at a boundary of the crate: user calls, files and devices.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Operands whose shapes do not fit the op, e.g. `matmul: lhs [2, 3] and rhs [4, 5] are not compatible`.
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
    /// Operands whose dtypes do not fit the op.
    #[error("{op}: {msg}")]
    DType { op: &'static str, msg: String },
    /// Operands on different devices, or a device that is missing or failed.
    #[error("{op}: {msg}")]
    Device { op: &'static str, msg: String },
    /// Misuse of the tape: a second backward, tensors from two tapes mixed, a non-scalar without a seed.
    #[error("{op}: {msg}")]
    Tape { op: &'static str, msg: String },
    /// An index out of range (embedding ids, targets, axes).
    #[error("{op}: {msg}")]
    Index { op: &'static str, msg: String },
    /// A file that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file whose contents are malformed (bad magic, version, size, checksum, JSON).
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// A collective across ranks that failed or did not complete in time.
    #[error("{op}: {msg}")]
    Comm { op: &'static str, msg: String },
    /// A nonsensical argument or configuration value.
    #[error("{what}: {msg}")]
    Invalid { what: String, msg: String },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed file at `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A bad argument or configuration value named `what`.
    pub fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            msg: msg.into(),
        }
    }

    /// A shape mismatch in `op`.
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape {
            op,
            msg: msg.into(),
        }
    }
}
