//! berth-fleet: the lifecycle layer over a container manager.
//!
//! A [`Fleet`] is what a berth server launches and removes containers
//! through. It adds what a bare [`ContainerManager`](berth_manager::ContainerManager)
//! does not know about: a memory budget with least-recently-used eviction,
//! idempotent launches by name, limits in total and per tool, idle culling,
//! release of a container's outside resources (staged files, tokens) on
//! removal, and recovery after a restart. Activity (for "least recently
//! used" and "idle") comes from an [`ActivityStore`]: the SQLite history
//! store in production, [`MemoryActivityStore`] in tests.
//!
//! It is a crate of its own because it composes the layers below
//! (manager, staging, history) and is used by the layers above (the axum
//! integration, the server binary) without being either.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use berth_fleet::{Fleet, FleetConfig, LaunchOutcome, MemoryActivityStore};
//! use berth_manager::{ContainerSpec, MockManager, MOCK_TOOL_IMAGE};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), berth_fleet::Error> {
//! let config = FleetConfig { memory_budget_mb: Some(100), ..FleetConfig::default() };
//! let fleet = Fleet::new(Arc::new(MockManager::new()), Arc::new(MemoryActivityStore::new()), config);
//! fleet.launch(ContainerSpec::new(MOCK_TOOL_IMAGE, "aa", 60), Some("viewer")).await?;
//! // "bb" does not fit next to "aa": "aa" is evicted first.
//! let outcome = fleet.launch(ContainerSpec::new(MOCK_TOOL_IMAGE, "bb", 60), Some("viewer")).await?;
//! assert!(matches!(outcome, LaunchOutcome::Launched { ref evicted, .. } if evicted == &["aa"]));
//! // Launching "bb" again with the same spec is not an error: it is the same container.
//! let again = fleet.launch(ContainerSpec::new(MOCK_TOOL_IMAGE, "bb", 60), Some("viewer")).await?;
//! assert!(matches!(again, LaunchOutcome::Existing(_)));
//! # Ok(())
//! # }
//! ```

mod activity;
mod error;
mod fleet;
#[cfg(feature = "history")]
mod history;
mod removals;
#[cfg(feature = "staging")]
mod staging;

pub use activity::{ActivityStore, MemoryActivityStore};
pub use error::{Error, Result};
pub use fleet::{ContainerResources, DEFAULT_OWNER_LABEL, Fleet, FleetConfig, LaunchAs, LaunchOutcome, RecoveryReport};
pub use removals::{RECENT_REMOVALS, Removal, RemovalReason};
#[cfg(feature = "staging")]
pub use staging::{StagedFile, Stager};
