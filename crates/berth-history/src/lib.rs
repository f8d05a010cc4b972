//! berth-history: request history and activity of berth's containers, in
//! an embedded SQLite database.
//!
//! [`HistoryStore`] is an [`ActivitySink`](berth_activity::ActivitySink): give
//! it to [`ActivityRecorder::spawn`](berth_activity::ActivityRecorder::spawn)
//! and the proxy's records are written in batches, one transaction each,
//! on the store's own thread, never on the proxy's hot path. It answers:
//!
//! - [`history`](HistoryStore::history): what a container was asked, in
//!   time order: (time, path, status, bytes, kind);
//! - [`last_activity`](HistoryStore::last_activity) and
//!   [`last_activity_all`](HistoryStore::last_activity_all): when containers
//!   last saw traffic, which survives a restart of berth, so LRU eviction
//!   and idle culling can go on where they were;
//!
//! and keeps itself small: [`mark_removed`](HistoryStore::mark_removed)
//! flags a removed container, whose history
//! [`prune`](HistoryStore::prune) (or the task of
//! [`spawn_pruner`](HistoryStore::spawn_pruner)) deletes after
//! [`HistoryConfig::retention`]; [`mark_launched`](HistoryStore::mark_launched)
//! of a reused name starts it afresh.
//!
//! The same database keeps berth's login sessions and single-use tokens
//! ([`save_session`](HistoryStore::save_session),
//! [`take_single_use`](HistoryStore::take_single_use)), so that they survive
//! a restart.
//!
//! The database is one file in WAL mode with `synchronous=NORMAL`: a crash
//! of berth loses nothing committed, a power loss at most the last batches.
//! Times are stored as integer nanoseconds since the Unix epoch.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//!
//! use berth_history::{HistoryQuery, HistoryStore};
//! use berth_activity::{ActivityKind, ActivityRecord, ActivityRecorder, ActivitySink};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), berth_history::Error> {
//! let store = Arc::new(HistoryStore::in_memory()?);
//! // In a server: the proxy reports to `recorder`, the store writes.
//! let _recorder = ActivityRecorder::spawn(store.clone(), 10_000);
//!
//! let launched = SystemTime::now();
//! store.mark_launched("viz", launched).await?;
//! let request = |ms, path: &str, status| ActivityRecord {
//!     container: "viz".into(),
//!     time: launched + Duration::from_millis(ms),
//!     path: path.into(),
//!     status,
//!     bytes: 512,
//!     kind: ActivityKind::Http,
//!     duration: std::time::Duration::ZERO,
//! };
//! store.record(vec![request(10, "/", 200), request(20, "/data.json", 200), request(30, "/x", 404)]).await;
//!
//! let history = store.history("viz", HistoryQuery { since: None, limit: Some(2) }).await?;
//! let paths: Vec<_> = history.iter().map(|entry| entry.path.as_str()).collect();
//! assert_eq!(paths, ["/data.json", "/x"]);
//! assert_eq!(store.last_activity("viz").await?, Some(launched + Duration::from_millis(30)));
//!
//! // Removed containers keep their history until the retention has passed.
//! let removed = launched + Duration::from_secs(60);
//! store.mark_removed("viz", removed).await?;
//! assert_eq!(store.history("viz", HistoryQuery::default()).await?.len(), 3);
//! store.prune(removed + store.config().retention).await?;
//! assert!(store.history("viz", HistoryQuery::default()).await?.is_empty());
//! # Ok(())
//! # }
//! ```

mod error;
mod queries;
mod schema;
mod sessions;
mod store;
mod time;
mod types;

pub use error::{Error, Result};
pub use sessions::{SINGLE_USE_MEMORY, TakeOutcome};
pub use store::HistoryStore;
pub use types::{HistoryConfig, HistoryEntry, HistoryQuery, HistoryStats, PruneStats};
