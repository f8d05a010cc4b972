//! The one error type of this crate.

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The container manager failed (its error says how: `NotFound`,
    /// `InvalidSpec`, `ImageUnavailable`, `EngineUnavailable`, ...).
    #[error(transparent)]
    Manager(#[from] berth_manager::Error),
    /// A container with this name exists with a different spec.
    #[error("container {name:?} already exists with a different spec")]
    Conflict {
        /// Container name.
        name: String,
    },
    /// A configured limit would be exceeded.
    #[error("launching {name:?} would exceed the limit of {limit} {what}")]
    LimitReached {
        /// Container name.
        name: String,
        /// Which limit (`containers in total`, `containers of tool "x"`).
        what: String,
        /// The limit.
        limit: usize,
    },
    /// Staging the input for a launch failed (invalid file name, size
    /// limit, store failure).
    #[error("staging failed while {context}")]
    Staging {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No node that meets a launch's constraints can hold its memory
    /// reservation, even after evicting containers (its reservation is
    /// more than such a node has, or what cannot be evicted there leaves
    /// too little): the backend refused it for lack of resources, and
    /// nothing was evicted for it.
    #[error("no node can make room for container {name:?}: {reason}")]
    NoRoom {
        /// Container name.
        name: String,
        /// Why evicting cannot help, in numbers (its reservation and the
        /// nodes' memory).
        reason: String,
        /// The backend's refusal
        /// ([`Unschedulable`](berth_manager::Error::Unschedulable)).
        #[source]
        source: berth_manager::Error,
    },
    /// A staged launch was asked of a fleet without a stager.
    #[error("this fleet has no staging store; staged launches need one")]
    NoStaging,
    /// The activity store failed.
    #[error("activity store failed while {context}")]
    Activity {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// True when the named container does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Manager(e) if e.is_not_found())
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
