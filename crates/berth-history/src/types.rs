//! Settings, queries and answers.

use std::time::{Duration, SystemTime};

use berth_activity::ActivityKind;
use serde::{Deserialize, Serialize};

/// Settings of a [`HistoryStore`](crate::HistoryStore).
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// How long the history of a container marked removed is kept before
    /// [`prune`](crate::HistoryStore::prune) deletes it.
    pub retention: Duration,
    /// When set, records older than this are deleted by `prune` whatever
    /// the container's state, bounding the database of long-lived tools.
    pub max_age: Option<Duration>,
    /// Interval between prunes of the task started by
    /// [`spawn_pruner`](crate::HistoryStore::spawn_pruner).
    pub prune_interval: Duration,
}

impl Default for HistoryConfig {
    /// Seven days of retention, no maximum age, a prune every hour.
    fn default() -> Self {
        HistoryConfig {
            retention: Duration::from_secs(7 * 24 * 60 * 60),
            max_age: None,
            prune_interval: Duration::from_secs(60 * 60),
        }
    }
}

/// Which part of a container's history to read. The default is all of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only entries at or after this time.
    pub since: Option<SystemTime>,
    /// At most this many entries: the most recent ones (still returned
    /// oldest first).
    pub limit: Option<usize>,
}

/// One request (or websocket exchange) in a container's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When the request arrived, to the nanosecond.
    pub time: SystemTime,
    /// Path and query as the client sent it.
    pub path: String,
    /// Response status (101 for websocket traffic).
    pub status: u16,
    /// Body bytes sent to the client (both directions for websockets).
    pub bytes: u64,
    /// HTTP or websocket.
    pub kind: ActivityKind,
}

/// What one [`prune`](crate::HistoryStore::prune) deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Containers removed longer ago than the retention, now forgotten.
    pub containers: u64,
    /// Records deleted, of those containers and by the maximum age.
    pub records: u64,
}

/// Counts of records handed to a store since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Records written to the database.
    pub records_stored: u64,
    /// Records lost because their batch failed to be written.
    pub records_failed: u64,
}
