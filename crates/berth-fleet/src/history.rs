//! [`ActivityStore`] for the SQLite history store, so LRU order and idle
//! times survive restarts.

use std::collections::HashMap;
use std::time::SystemTime;

use async_trait::async_trait;
use berth_history::HistoryStore;

use crate::activity::ActivityStore;
use crate::error::{Error, Result};

fn wrap(context: &str, e: berth_history::Error) -> Error {
    Error::Activity { context: context.to_owned(), source: Box::new(e) }
}

#[async_trait]
impl ActivityStore for HistoryStore {
    async fn last_activity_all(&self) -> Result<HashMap<String, SystemTime>> {
        HistoryStore::last_activity_all(self).await.map_err(|e| wrap("reading last activity", e))
    }

    async fn mark_launched(&self, name: &str, at: SystemTime) -> Result<()> {
        HistoryStore::mark_launched(self, name, at).await.map_err(|e| wrap("marking a launch", e))
    }

    async fn mark_removed(&self, name: &str, at: SystemTime) -> Result<()> {
        HistoryStore::mark_removed(self, name, at).await.map_err(|e| wrap("marking a removal", e))
    }
}
