//! What the fleet needs to know about activity, as a small trait: the last
//! proxied activity per container (for LRU eviction and idle culling) and
//! the launch/removal marks that keep a reused name's history apart.
//!
//! `berth-history`'s SQLite store implements it (so the order survives
//! restarts); [`MemoryActivityStore`] is the in-memory version.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;

use crate::error::Result;

/// Where the fleet reads last activity and records launches and removals.
#[async_trait]
pub trait ActivityStore: Send + Sync + 'static {
    /// Last proxied activity (HTTP or websocket) of every container that had any.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Activity`] when the store fails.
    async fn last_activity_all(&self) -> Result<HashMap<String, SystemTime>>;

    /// A container with this name was launched at `at` (a new incarnation).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Activity`] when the store fails.
    async fn mark_launched(&self, name: &str, at: SystemTime) -> Result<()>;

    /// The container was removed at `at`; its history is kept for the
    /// store's retention.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Activity`] when the store fails.
    async fn mark_removed(&self, name: &str, at: SystemTime) -> Result<()>;
}

/// An in-memory [`ActivityStore`]; `touch` records activity.
#[derive(Debug, Default)]
pub struct MemoryActivityStore {
    last: Mutex<HashMap<String, SystemTime>>,
}

impl MemoryActivityStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryActivityStore::default()
    }

    /// Records activity on `name` at `at`.
    pub fn touch(&self, name: &str, at: SystemTime) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let entry = last.entry(name.to_owned()).or_insert(at);
        if at > *entry {
            *entry = at;
        }
    }
}

#[async_trait]
impl ActivityStore for MemoryActivityStore {
    async fn last_activity_all(&self) -> Result<HashMap<String, SystemTime>> {
        Ok(self.last.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn mark_launched(&self, name: &str, _at: SystemTime) -> Result<()> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        Ok(())
    }

    async fn mark_removed(&self, name: &str, _at: SystemTime) -> Result<()> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        Ok(())
    }
}
