//! The one error type of this crate.

/// Why a proxied request failed. Each variant knows where the failure came
/// from, and so which status the client gets ([`Error::status`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client sent something berth cannot forward (bad header value,
    /// unparsable URI).
    #[error("bad request from client: {reason}")]
    BadRequest {
        /// What was wrong.
        reason: String,
    },
    /// The container could not be connected to, or broke the exchange.
    #[error("upstream container {container:?} failed")]
    Upstream {
        /// Container name.
        container: String,
        /// The transport error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The container did not answer within the upstream timeout.
    #[error("upstream container {container:?} did not answer within {timeout:?}")]
    UpstreamTimeout {
        /// Container name.
        container: String,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// The container manager failed (only off the hot path: logs, lookups
    /// of names not yet in the route table).
    #[error("container manager failed")]
    Manager(#[from] berth_manager::Error),
    /// Binding or accepting on the listening socket failed.
    #[error("i/o error while {context}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The HTTP status a client gets for this error: 400 for client
    /// errors, 502 for upstream failures, 504 for upstream timeouts, 503
    /// when the engine is unavailable, 500 otherwise.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::Manager(e) if e.is_not_found() => StatusCode::NOT_FOUND,
            Error::Manager(
                berth_manager::Error::EngineUnavailable { .. } | berth_manager::Error::EngineTimeout { .. },
            ) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Manager(_) | Error::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
