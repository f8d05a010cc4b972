//! berth-manager: launch, find and remove the Docker containers that serve
//! berth's web tools.
//!
//! The crate is the bottom layer of berth. It defines the
//! [`ContainerManager`] trait (object safe, used as
//! `Arc<dyn ContainerManager>`), the [`ContainerSpec`] of a launch, the
//! crate's one [`Error`] enum, and three backends:
//!
//! - [`DockerManager`] (feature `docker`, on by default): a local or remote
//!   Docker Engine, reached like the Docker CLI reaches it (`DOCKER_HOST`,
//!   `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`);
//! - [`SwarmManager`] (feature `swarm`, on by default): services on a
//!   Docker Swarm, placed on its nodes by the swarm's scheduler under
//!   berth's constraints (see [`swarm`]);
//! - [`MockManager`] (feature `mock`, on by default): in-memory and
//!   deterministic, whose "containers" are real HTTP servers on
//!   `127.0.0.1:0`, so layers above can be tested end to end without Docker.
//!
//! Feature `conformance` adds [`conformance`], the public contract checks
//! every backend passes.
//!
//! Every container berth starts carries a root label (default `berth`)
//! plus `<root>.port` and `<root>.mem_reservation_mb`; only containers with
//! the root label are ever listed, managed or resolved. With
//! [`DJANGO_DOCKER_ENGINE_ROOT_LABEL`] as the root, berth adopts containers
//! started by the Python library `django_docker_engine`.
//!
//! # Example
//!
//! ```
//! use berth_manager::{ContainerManager, ContainerManagerExt, ContainerSpec, MockManager, MOCK_TOOL_IMAGE};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), berth_manager::Error> {
//! let manager = MockManager::new();
//! let spec = ContainerSpec::new(MOCK_TOOL_IMAGE, "viz-1", 128)
//!     .label("owner", "alice")
//!     .input_env(serde_json::json!({"parameters": {"zoom": 2}}));
//! let info = manager.launch(&spec).await?;
//! assert_eq!(info.labels["berth"], "true");
//!
//! let endpoint = manager.endpoint("viz-1").await?;
//! println!("tool at {endpoint}");
//! assert!(manager.is_live("viz-1").await?);
//!
//! manager.remove("viz-1").await?;
//! assert!(manager.inspect("viz-1").await.unwrap_err().is_not_found());
//! # Ok(())
//! # }
//! ```

// Without a backend, the helpers backends share are unused.
#![cfg_attr(not(any(feature = "docker", feature = "mock")), allow(dead_code))]

mod error;
mod manager;
mod placement;
mod spec;
mod time;
mod types;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "mock")]
pub mod mock;
#[cfg(feature = "swarm")]
pub mod swarm;

pub use error::{BoxError, Error, Result};
pub use manager::{Capabilities, ContainerManager, ContainerManagerExt, EventStreamBox, LogStreamBox};
pub use placement::{Constraint, NodeInfo, Placement};
pub use spec::{
    ContainerSpec, DEFAULT_CONTAINER_PORT, DEFAULT_CPUS, DEFAULT_INPUT_PATH, ENV_INPUT_JSON, ENV_INPUT_JSON_PATH,
    ENV_INPUT_JSON_URL, ENV_STARTUP_DELAY_MS, Input, InputMode, MAX_ENV_INPUT_BYTES, MAX_FILE_INPUT_BYTES,
    MAX_MEM_RESERVATION_MB, MAX_NAME_LEN, MAX_START_TIMEOUT_SECS, MAX_VOLUME_NAME_LEN, MIN_NAME_LEN, PersistentVolume,
    RouteHints, RoutingMode, normalize_image, validate_name, validate_volume_name,
};
pub use time::format_rfc3339;
pub use types::{
    ContainerEvent, ContainerInfo, ContainerState, DEFAULT_ROOT_LABEL, DJANGO_DOCKER_ENGINE_ROOT_LABEL, Endpoint,
    EventKind, LabelScheme, ListFilter, LogLine, LogOptions, LogStream, VolumeInfo,
};

#[cfg(feature = "docker")]
pub use docker::{DockerConfig, DockerManager, EndpointMode, EngineHost};
#[cfg(feature = "mock")]
pub use mock::{MOCK_NODE_ID, MOCK_TOOL_IMAGE, MOCK_TOOL_PROGRAM, MockConfig, MockEngine, MockManager};
#[cfg(feature = "swarm")]
pub use swarm::{ImageResolution, SwarmConfig, SwarmEndpoints, SwarmManager};
