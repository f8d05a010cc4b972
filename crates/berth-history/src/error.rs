//! The one error type of this crate.

/// Why a history operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite refused or failed a statement (disk full, corrupt or foreign
    /// file, locked by another process for too long, ...).
    #[error("history database failed while {context}")]
    Sqlite {
        /// What was being done, naming the object (container, file).
        context: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file-system operation around the database failed (creating its
    /// directory, starting the worker thread).
    #[error("i/o error while {context}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer berth whose schema this version
    /// does not know; open it with that version, or use another file.
    #[error("history database {path:?} has schema version {found}, newer than the supported {supported}")]
    UnsupportedSchema {
        /// The database file.
        path: String,
        /// The version found in the file.
        found: i64,
        /// The newest version this crate knows.
        supported: i64,
    },
    /// The store was closed with [`HistoryStore::close`](crate::HistoryStore::close),
    /// or its worker thread stopped; nothing more can be read or written.
    #[error("history store is closed")]
    Closed,
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error with its chain of sources, for logs: `a: b: c`.
pub(crate) fn report(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
