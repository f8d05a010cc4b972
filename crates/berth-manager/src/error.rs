//! The one error type of this crate.

use std::time::Duration;

/// Everything that can go wrong when managing containers.
///
/// Variants say what the caller can do about the failure; the underlying
/// error, when there is one, is kept as the `source`. Backends classify
/// engine answers into these variants, so callers never parse messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec was refused before any engine call was made.
    #[error("invalid spec for container {name:?}: {reason}")]
    InvalidSpec {
        /// Container name as given in the spec (may itself be the invalid part).
        name: String,
        /// What is wrong, in words.
        reason: String,
    },

    /// The input document is larger than its delivery mode allows.
    #[error("input document for container {name:?} is {size} bytes, over the {limit} byte limit of mode {mode}")]
    InputTooLarge {
        /// Container name.
        name: String,
        /// Serialized size of the document in bytes.
        size: usize,
        /// The limit of the mode in bytes.
        limit: usize,
        /// The delivery mode (`env`, `file`, `url`).
        mode: &'static str,
    },

    /// No managed container has that name (or it lacks the root label).
    #[error("container {name:?} not found")]
    NotFound {
        /// The name that was looked up.
        name: String,
    },

    /// A container with that name already exists.
    #[error("container {name:?} already exists")]
    Conflict {
        /// The conflicting name.
        name: String,
        /// The engine's answer, when there was one.
        #[source]
        source: Option<BoxError>,
    },

    /// The image is not present on the engine and could not be obtained.
    #[error("image {image:?} is not available on the engine")]
    ImageUnavailable {
        /// The normalized image reference.
        image: String,
        /// The engine's answer.
        #[source]
        source: Option<BoxError>,
    },

    /// A persistent volume the spec names exists and belongs to another
    /// owner.
    #[error("volume {volume:?} belongs to someone else")]
    VolumeOwned {
        /// The volume name.
        volume: String,
    },

    /// A persistent volume cannot be removed while a container mounts it.
    #[error("volume {volume:?} is in use by a container")]
    VolumeInUse {
        /// The volume name.
        volume: String,
    },

    /// The engine could not be reached (connection refused, socket missing,
    /// TLS failure).
    #[error("container engine at {endpoint} is unavailable")]
    EngineUnavailable {
        /// Where the engine was expected (`unix:///var/run/docker.sock`, ...).
        endpoint: String,
        /// The transport error.
        #[source]
        source: Option<BoxError>,
    },

    /// The engine did not answer within the configured timeout.
    #[error("container engine did not answer {operation} within {timeout:?}")]
    EngineTimeout {
        /// The operation that timed out (`inspect`, `create`, ...).
        operation: &'static str,
        /// The timeout that was exceeded.
        timeout: Duration,
    },

    /// The engine answered with an error that fits no other variant.
    #[error("container engine refused {operation} (status {status}): {message}")]
    Engine {
        /// The operation that failed.
        operation: &'static str,
        /// HTTP status of the engine's answer (0 when there was none).
        status: u16,
        /// The engine's message.
        message: String,
    },

    /// An image build failed: a step failed, the engine refused the
    /// Dockerfile, or the build stalled.
    #[error("building image {image:?} failed: {message}\nlast build output:\n{log_tail}")]
    BuildFailed {
        /// The `repo:tag` being built.
        image: String,
        /// The engine's (or the stall's) message.
        message: String,
        /// The last lines the build printed.
        log_tail: String,
    },

    /// The container carries no port label, so its HTTP port is unknown.
    #[error("container {name:?} has no port label {label:?}")]
    NoPortLabel {
        /// Container name.
        name: String,
        /// The label key that was expected.
        label: String,
    },

    /// The port label does not hold a port number.
    #[error("container {name:?} has port label value {value:?}, which is not a port number")]
    PortMisconfigured {
        /// Container name.
        name: String,
        /// The label value found.
        value: String,
    },

    /// The container publishes no ports at all (or is not running).
    #[error("container {name:?} has no open ports")]
    NoPortsOpen {
        /// Container name.
        name: String,
    },

    /// The container publishes ports, but not the one its label names.
    #[error("container {name:?} does not publish its port {port}")]
    ExpectedPortMissing {
        /// Container name.
        name: String,
        /// The port named by the label.
        port: u16,
    },

    /// The container exists but is not running, so it has no endpoint.
    #[error("container {name:?} is not running (state {state})")]
    NotRunning {
        /// Container name.
        name: String,
        /// The state it is in.
        state: String,
    },

    /// No node can run the container now: its placement constraints match
    /// no ready node, or no such node has room for its reservation. The
    /// launch left nothing behind.
    #[error("no node can run container {name:?}: {reason}")]
    Unschedulable {
        /// Container name.
        name: String,
        /// The scheduler's explanation (`no suitable node (insufficient
        /// resources on 2 nodes)`, ...).
        reason: String,
        /// True when nodes meeting the constraints exist but lack free
        /// resources, so removing containers there may help; false when no
        /// ready node meets the constraints at all.
        insufficient_resources: bool,
    },

    /// The container's node is down or unreachable: its logs and endpoint
    /// went with it.
    #[error("container {name:?} is on node {node:?}, which is down")]
    NodeDown {
        /// Container name.
        name: String,
        /// The node's host name (or id).
        node: String,
    },

    /// The engine cannot manage swarm services: swarm mode is inactive, or
    /// it is a worker rather than a manager.
    #[error("container engine at {endpoint} cannot manage swarm services: {reason}")]
    NotSwarmManager {
        /// Where the engine is.
        endpoint: String,
        /// What is wrong and what to do about it.
        reason: String,
    },

    /// An I/O error outside the engine (a mock server socket, a local file).
    #[error("i/o error while {context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Configuration of the manager itself is wrong (bad `DOCKER_HOST`,
    /// unreadable certificates).
    #[error("invalid manager configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

/// A boxed, thread-safe error used as a `source`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidSpec`].
    pub(crate) fn invalid(name: &str, reason: impl Into<String>) -> Self {
        Error::InvalidSpec { name: name.to_owned(), reason: reason.into() }
    }

    /// Shorthand for [`Error::NotFound`].
    pub(crate) fn not_found(name: &str) -> Self {
        Error::NotFound { name: name.to_owned() }
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}
