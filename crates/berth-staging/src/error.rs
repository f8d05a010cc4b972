//! The one error type of this crate.

/// Everything that can go wrong when staging, reading or serving objects.
///
/// Variants say what the caller can do about the failure; the underlying
/// error, when there is one, is kept as the `source`. The HTTP services map
/// them to statuses (`NotFound`/`InvalidName` → 404 when serving, 400 when
/// uploading; `TooLarge` → 413; `RangeNotSatisfiable` → 416; the rest 500).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing is staged under that container and object.
    #[error("{object} not found")]
    NotFound {
        /// The object that was looked up, in words (`file "a.csv" of container "viz-1"`).
        object: String,
    },

    /// A container name or file name breaks the naming rules, so it was
    /// refused before the backend was touched.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// What was being named: `container` or `file`.
        kind: &'static str,
        /// The refused name, as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The data is larger than the store's (or the upload's) size limit.
    /// Nothing was kept: a previous version of the object, if any, is
    /// still in place.
    #[error("{object} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The object being written, in words.
        object: String,
        /// The limit in bytes.
        limit: u64,
    },

    /// A requested byte range lies outside the object.
    #[error("range {start}..{end} is not satisfiable for {object} of {size} bytes")]
    RangeNotSatisfiable {
        /// The object being read, in words.
        object: String,
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// The object's size in bytes.
        size: u64,
    },

    /// The text is not a token this crate issues (64 lowercase hex digits).
    #[error("invalid staging token")]
    InvalidToken,

    /// The stream that supplied the data for a write failed; nothing was
    /// kept.
    #[error("reading the data for {object} failed")]
    Source {
        /// The object being written, in words.
        object: String,
        /// The stream's error.
        #[source]
        source: BoxError,
    },

    /// A file-system (or other local I/O) operation failed.
    #[error("i/o error while {context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A boxed, thread-safe error, used as a `source` and as the error of byte
/// streams going into a store.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for [`Error::InvalidName`].
    pub fn is_invalid_name(&self) -> bool {
        matches!(self, Error::InvalidName { .. })
    }

    /// True for [`Error::TooLarge`].
    pub fn is_too_large(&self) -> bool {
        matches!(self, Error::TooLarge { .. })
    }
}
