//! Activity: every proxied request and websocket exchange is reported as an
//! [`ActivityRecord`], off the hot path.
//!
//! The proxy hands records to an [`ActivityRecorder`], which only does a
//! `try_send` on a bounded channel: under overload records are dropped and
//! counted, the proxy never waits. A background task drains the channel in
//! batches into an [`ActivitySink`] (e.g. [`MemoryActivity`], or a database
//! in the lifecycle layer).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// How often [`ActivityRecorder::spawn`]'s task drains the channel.
pub const DEFAULT_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// What kind of traffic a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivityKind {
    /// One HTTP request and its response.
    Http,
    /// Traffic on an upgraded (websocket) connection since the last record.
    WebSocket,
}

/// One unit of activity on a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityRecord {
    /// Container name.
    pub container: String,
    /// When the request arrived (or the websocket traffic happened).
    pub time: SystemTime,
    /// Path and query as the client sent it.
    pub path: String,
    /// Response status (101 for websocket traffic).
    pub status: u16,
    /// Body bytes sent to the client (both directions for websockets).
    pub bytes: u64,
    /// HTTP or websocket.
    pub kind: ActivityKind,
    /// From the request's arrival to the end of its response body (zero
    /// for websocket traffic records).
    #[serde(default)]
    pub duration: std::time::Duration,
}

/// Sends every batch to two sinks (e.g. the history store and metrics).
#[derive(Debug, Clone)]
pub struct TeeSink<A, B>(pub A, pub B);

#[async_trait]
impl<A: ActivitySink, B: ActivitySink> ActivitySink for TeeSink<A, B> {
    async fn record(&self, batch: Vec<ActivityRecord>) {
        self.0.record(batch.clone()).await;
        self.1.record(batch).await;
    }
}

/// Where batches of activity go.
#[async_trait]
pub trait ActivitySink: Send + Sync + 'static {
    /// Stores a batch (in arrival order). Failures are the sink's to log;
    /// the proxy does not retry.
    async fn record(&self, batch: Vec<ActivityRecord>);
}

#[async_trait]
impl<T: ActivitySink + ?Sized> ActivitySink for Arc<T> {
    async fn record(&self, batch: Vec<ActivityRecord>) {
        (**self).record(batch).await
    }
}

/// The proxy's handle for reporting activity. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ActivityRecorder {
    tx: Option<mpsc::Sender<ActivityRecord>>,
    dropped: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

impl ActivityRecorder {
    /// A recorder that discards everything (no sink).
    pub fn disabled() -> Self {
        ActivityRecorder { tx: None, dropped: Arc::default(), sent: Arc::default() }
    }

    /// A recorder with a channel of `capacity` records, drained into `sink`
    /// by a task spawned on the current runtime, in batches of up to 512,
    /// at most every [`DEFAULT_FLUSH_INTERVAL`].
    pub fn spawn(sink: impl ActivitySink, capacity: usize) -> Self {
        Self::spawn_with_interval(sink, capacity, DEFAULT_FLUSH_INTERVAL)
    }

    /// As [`ActivityRecorder::spawn`], draining at most every `interval`.
    ///
    /// Between drains the task sleeps on a timer rather than on the
    /// channel, so requests only enqueue and never wake it: the cost per
    /// request is one `try_send`, not a cross-thread wake-up. Size
    /// `capacity` for `interval` times the peak request rate.
    pub fn spawn_with_interval(sink: impl ActivitySink, capacity: usize, interval: std::time::Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<ActivityRecord>(capacity.max(1));
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(512);
            while rx.recv_many(&mut batch, 512).await > 0 {
                sink.record(std::mem::take(&mut batch)).await;
                // Take what else is queued now, then rest.
                while rx.recv_many(&mut batch, 512).now_or_never().is_some_and(|n| n > 0) {
                    sink.record(std::mem::take(&mut batch)).await;
                }
                if !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
            }
        });
        ActivityRecorder { tx: Some(tx), dropped: Arc::default(), sent: Arc::default() }
    }

    /// Reports a record without waiting; when the channel is full the
    /// record is dropped and counted.
    pub fn record(&self, record: ActivityRecord) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(record) {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// True when records go somewhere (false for [`ActivityRecorder::disabled`]).
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Records dropped because the channel was full (or closed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records handed to the channel.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// An in-memory [`ActivitySink`]: per container, the last `per_container`
/// records and the time of the last activity.
#[derive(Debug)]
pub struct MemoryActivity {
    per_container: usize,
    state: Mutex<HashMap<String, (VecDeque<ActivityRecord>, SystemTime)>>,
}

impl MemoryActivity {
    /// Keeps up to `per_container` records per container.
    pub fn new(per_container: usize) -> Self {
        MemoryActivity { per_container: per_container.max(1), state: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (VecDeque<ActivityRecord>, SystemTime)>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container's recorded history, oldest first.
    pub fn history(&self, container: &str) -> Vec<ActivityRecord> {
        self.lock().get(container).map(|(records, _)| records.iter().cloned().collect()).unwrap_or_default()
    }

    /// When the container last saw traffic.
    pub fn last_activity(&self, container: &str) -> Option<SystemTime> {
        self.lock().get(container).map(|(_, last)| *last)
    }

    /// Forgets a container.
    pub fn forget(&self, container: &str) {
        self.lock().remove(container);
    }
}

impl Default for MemoryActivity {
    fn default() -> Self {
        MemoryActivity::new(1000)
    }
}

#[async_trait]
impl ActivitySink for MemoryActivity {
    async fn record(&self, batch: Vec<ActivityRecord>) {
        let mut state = self.lock();
        for record in batch {
            let entry = state.entry(record.container.clone()).or_insert_with(|| (VecDeque::new(), record.time));
            if record.time > entry.1 {
                entry.1 = record.time;
            }
            if entry.0.len() == self.per_container {
                entry.0.pop_front();
            }
            entry.0.push_back(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(container: &str, path: &str) -> ActivityRecord {
        ActivityRecord {
            container: container.into(),
            time: SystemTime::now(),
            path: path.into(),
            status: 200,
            bytes: 1,
            kind: ActivityKind::Http,
            duration: std::time::Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn records_reach_the_sink_in_order() {
        let sink = Arc::new(MemoryActivity::new(3));
        let recorder = ActivityRecorder::spawn(sink.clone(), 16);
        for p in ["/a", "/b", "/c", "/d"] {
            recorder.record(rec("v", p));
        }
        for _ in 0..100 {
            if sink.history("v").len() == 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let paths: Vec<_> = sink.history("v").into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/b", "/c", "/d"]);
        assert!(sink.last_activity("v").is_some());
        assert_eq!(recorder.dropped(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn overload_drops_and_counts_without_blocking() {
        // On a current-thread runtime the drain task cannot run while this
        // test does not yield, so the channel fills up.
        let recorder = ActivityRecorder::spawn(MemoryActivity::default(), 4);
        for i in 0..10 {
            recorder.record(rec("v", &format!("/{i}")));
        }
        assert_eq!(recorder.sent(), 4);
        assert_eq!(recorder.dropped(), 6);
        ActivityRecorder::disabled().record(rec("v", "/"));
    }
}
