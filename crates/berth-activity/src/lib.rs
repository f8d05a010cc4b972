//! berth-activity: the contract between whoever sees traffic to containers
//! (berth's proxy) and whoever keeps it (the request history, metrics, the
//! fleet's idle culling).
//!
//! Every proxied request and websocket exchange is reported as an
//! [`ActivityRecord`], off the hot path. The reporter hands records to an
//! [`ActivityRecorder`], which only does a `try_send` on a bounded channel:
//! under overload records are dropped and counted, the reporter never
//! waits. A background task drains the channel in batches into an
//! [`ActivitySink`] (e.g. [`MemoryActivity`], or the SQLite store of
//! `berth-history`). [`ActivityRecorder::flush`] is the read-your-writes
//! barrier: once it returns, every record accepted before it was called
//! has reached the sink.
//!
//! This crate sits below both the proxy and the stores, so a store does
//! not depend on the proxy to receive what the proxy reports.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use berth_activity::{ActivityKind, ActivityRecord, ActivityRecorder, MemoryActivity};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let sink = Arc::new(MemoryActivity::default());
//! let recorder = ActivityRecorder::spawn(sink.clone(), 1024);
//! recorder.record(ActivityRecord {
//!     container: "viz".into(),
//!     time: SystemTime::now(),
//!     path: "/docker/viz/".into(),
//!     status: 200,
//!     bytes: 512,
//!     kind: ActivityKind::Http,
//!     duration: Duration::from_millis(3),
//! });
//! recorder.flush().await; // the record has reached the sink now
//! assert_eq!(sink.history("viz").len(), 1);
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

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

/// A request to the drain task: answer once everything queued before it
/// has reached the sink.
type FlushRequest = oneshot::Sender<()>;

/// The proxy's handle for reporting activity. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ActivityRecorder {
    tx: Option<mpsc::Sender<ActivityRecord>>,
    flushes: Option<mpsc::UnboundedSender<FlushRequest>>,
    dropped: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

impl ActivityRecorder {
    /// A recorder that discards everything (no sink).
    pub fn disabled() -> Self {
        ActivityRecorder { tx: None, flushes: None, dropped: Arc::default(), sent: Arc::default() }
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
        let (tx, rx) = mpsc::channel::<ActivityRecord>(capacity.max(1));
        let (flushes, flush_rx) = mpsc::unbounded_channel::<FlushRequest>();
        tokio::spawn(drain(sink, rx, flush_rx, interval));
        ActivityRecorder { tx: Some(tx), flushes: Some(flushes), dropped: Arc::default(), sent: Arc::default() }
    }

    /// Waits until every record this recorder (or a clone) accepted before
    /// the call has been handed to the sink and the sink's `record` has
    /// returned: the read-your-writes barrier for queries of what the sink
    /// stores. Returns at once for a disabled recorder, and when the drain
    /// task is gone (its runtime ended).
    pub async fn flush(&self) {
        let Some(flushes) = &self.flushes else { return };
        let (done, wait) = oneshot::channel();
        if flushes.send(done).is_ok() {
            let _ = wait.await;
        }
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

/// The drain task: batches into the sink, resting `interval` between
/// drains (a flush request cuts the rest short); ends when every recorder
/// is gone and the channel is empty.
async fn drain(
    sink: impl ActivitySink,
    mut rx: mpsc::Receiver<ActivityRecord>,
    flush_rx: mpsc::UnboundedReceiver<FlushRequest>,
    interval: std::time::Duration,
) {
    let mut flush_rx = Some(flush_rx);
    let mut batch = Vec::with_capacity(512);
    let mut waiting: Vec<FlushRequest> = Vec::new();
    loop {
        // A flush request taken during the rest is answered at once.
        if waiting.is_empty() {
            tokio::select! {
                n = rx.recv_many(&mut batch, 512) => {
                    if n == 0 {
                        break;
                    }
                }
                request = next_flush(&mut flush_rx) => waiting.extend(request),
            }
        }
        // Flush requests seen so far are answered after this drain: every
        // record sent before them is in the channel now.
        if let Some(f) = flush_rx.as_mut() {
            while let Ok(request) = f.try_recv() {
                waiting.push(request);
            }
        }
        loop {
            if !batch.is_empty() {
                sink.record(std::mem::take(&mut batch)).await;
            }
            if rx.recv_many(&mut batch, 512).now_or_never().is_none_or(|n| n == 0) {
                break;
            }
        }
        for request in waiting.drain(..) {
            let _ = request.send(());
        }
        if !interval.is_zero() {
            // Rest on a timer, so requests only enqueue and never wake
            // this task; a flush request ends the rest early.
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                request = next_flush(&mut flush_rx) => waiting.extend(request),
            }
        }
    }
    if !batch.is_empty() {
        sink.record(batch).await;
    }
    for request in waiting {
        let _ = request.send(());
    }
}

/// The next flush request; pending forever once every recorder is gone.
async fn next_flush(flush_rx: &mut Option<mpsc::UnboundedReceiver<FlushRequest>>) -> Option<FlushRequest> {
    let Some(f) = flush_rx.as_mut() else { return std::future::pending().await };
    match f.recv().await {
        Some(request) => Some(request),
        None => {
            *flush_rx = None;
            None
        }
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

    #[tokio::test]
    async fn flush_is_a_read_your_writes_barrier() {
        let sink = Arc::new(MemoryActivity::new(10_000));
        // A long rest between drains: without the barrier, records would
        // sit in the channel for a minute.
        let recorder = ActivityRecorder::spawn_with_interval(sink.clone(), 10_000, std::time::Duration::from_secs(60));
        recorder.record(rec("v", "/first"));
        recorder.flush().await;
        assert_eq!(sink.history("v").len(), 1);
        for round in 0..50 {
            for i in 0..(round * 7) {
                recorder.record(rec("v", &format!("/{round}/{i}")));
            }
            let before = recorder.sent();
            recorder.flush().await;
            assert_eq!(sink.history("v").len() as u64, before, "round {round}");
        }
        ActivityRecorder::disabled().flush().await;
    }

    #[tokio::test]
    async fn concurrent_flushes_all_return() {
        let sink = Arc::new(MemoryActivity::new(10_000));
        let recorder = ActivityRecorder::spawn_with_interval(sink.clone(), 10_000, std::time::Duration::from_secs(60));
        let mut tasks = Vec::new();
        for t in 0..16 {
            let recorder = recorder.clone();
            let sink = sink.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    recorder.record(rec(&format!("c{t}"), &format!("/{i}")));
                    recorder.flush().await;
                    assert_eq!(sink.history(&format!("c{t}")).len(), i + 1);
                }
            }));
        }
        for t in tasks {
            t.await.expect("flushing task");
        }
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
