//! [`HistoryStore`]: one SQLite connection owned by a worker thread, and
//! the async API that hands it jobs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::SystemTime;

use async_trait::async_trait;
use berth_activity::{ActivityRecord, ActivitySink};
use rusqlite::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::error::{Error, Result, report};
use crate::queries;
use crate::schema;
use crate::types::{HistoryConfig, HistoryEntry, HistoryQuery, HistoryStats, PruneStats};

/// Work for the worker thread. The connection is `None` once the store
/// was closed.
type Job = Box<dyn FnOnce(&mut Option<Connection>) + Send>;

/// Request history and last activity of containers, in an embedded SQLite
/// database.
///
/// One connection lives on a dedicated thread (`berth-history`) that runs
/// the store's jobs one at a time, in the order they were submitted; the
/// async methods only send a job and await its answer, so the runtime
/// never blocks on SQLite. A job already submitted runs to its end even if
/// the future that submitted it is dropped.
///
/// History is kept per container name. Names are reused, so each launch
/// starts an incarnation: [`mark_removed`](Self::mark_removed) flags the
/// end of one (its history stays readable until [`prune`](Self::prune)
/// passes the retention), and [`mark_launched`](Self::mark_launched) of a
/// name flagged removed deletes the earlier incarnation's records, so a new
/// container never shows someone else's requests.
///
/// Dropping the last handle lets the thread finish the queued jobs and
/// close the database in the background; [`close`](Self::close) does it
/// and waits.
#[derive(Debug)]
pub struct HistoryStore {
    jobs: mpsc::Sender<Job>,
    /// The database file, or `:memory:`, for messages.
    name: Arc<str>,
    config: HistoryConfig,
    stored: AtomicU64,
    failed: AtomicU64,
}

impl HistoryStore {
    /// Opens (or creates, with its parent directories) the database at
    /// `path`, in WAL mode with `synchronous=NORMAL`, and brings its schema
    /// up to date.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directory cannot be created or the worker
    /// thread not started, [`Error::Sqlite`] when the file cannot be opened
    /// or is not a database, [`Error::UnsupportedSchema`] when a newer berth
    /// wrote it.
    pub async fn open(path: impl AsRef<Path>, config: HistoryConfig) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let name: Arc<str> = path.display().to_string().into();
        let (ready, opened) = oneshot::channel();
        let opening = name.clone();
        let jobs = spawn_worker(move || match open_file(&path, &opening) {
            Ok(conn) => {
                // If nobody waits any more, the store is never built and
                // the thread ends with the sender.
                let _ = ready.send(Ok(()));
                Some(conn)
            }
            Err(error) => {
                let _ = ready.send(Err(error));
                None
            }
        })?;
        opened.await.map_err(|_| Error::Closed)??;
        tracing::debug!(database = %name, "opened history database");
        Ok(HistoryStore::with_worker(jobs, name, config))
    }

    /// A store in memory with the default configuration, for tests and
    /// examples; everything is lost when it is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the worker thread cannot be started.
    pub fn in_memory() -> Result<Self> {
        HistoryStore::in_memory_with(HistoryConfig::default())
    }

    /// A store in memory with the given configuration.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the worker thread cannot be started.
    pub fn in_memory_with(config: HistoryConfig) -> Result<Self> {
        let name: Arc<str> = ":memory:".into();
        let mut conn = Connection::open_in_memory()
            .map_err(|source| Error::Sqlite { context: "opening an in-memory database".to_owned(), source })?;
        schema::prepare(&mut conn, &name)?;
        let jobs = spawn_worker(move || Some(conn))?;
        Ok(HistoryStore::with_worker(jobs, name, config))
    }

    fn with_worker(jobs: mpsc::Sender<Job>, name: Arc<str>, config: HistoryConfig) -> Self {
        HistoryStore { jobs, name, config, stored: AtomicU64::new(0), failed: AtomicU64::new(0) }
    }

    /// The store's configuration.
    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// Records stored and lost since the store was opened.
    pub fn stats(&self) -> HistoryStats {
        HistoryStats {
            records_stored: self.stored.load(Ordering::Relaxed),
            records_failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Runs `work` on the worker thread and returns its answer; SQLite
    /// errors get `context`.
    pub(crate) async fn call<T: Send + 'static>(
        &self,
        context: impl FnOnce() -> String + Send + 'static,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = match conn.as_mut() {
                Some(conn) => work(conn).map_err(|source| Error::Sqlite { context: context(), source }),
                None => Err(Error::Closed),
            };
            // The caller may have stopped waiting; the work is done anyway.
            let _ = reply.send(result);
        });
        self.jobs.send(job).map_err(|_| Error::Closed)?;
        // No answer means the worker thread is gone (closed, or panicked).
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Stores a batch of records in one transaction and moves each
    /// container's last activity forward. [`ActivitySink::record`] does
    /// the same and logs the error instead of returning it.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] when the batch could not be written (nothing of it
    /// is), [`Error::Closed`] after [`close`](Self::close).
    pub async fn try_record(&self, batch: Vec<ActivityRecord>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let count = batch.len() as u64;
        let name = self.name.clone();
        let result = self
            .call(
                move || format!("storing {count} activity records in {name}"),
                move |conn| queries::insert_batch(conn, &batch),
            )
            .await;
        let counter = if result.is_ok() { &self.stored } else { &self.failed };
        counter.fetch_add(count, Ordering::Relaxed);
        result
    }

    /// The history of `container`, oldest first (records of equal time in
    /// the order they were stored), narrowed by `query`. A container with
    /// no history, or none at all, gives an empty list.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] when the database cannot be read, [`Error::Closed`]
    /// after [`close`](Self::close).
    pub async fn history(&self, container: &str, query: HistoryQuery) -> Result<Vec<HistoryEntry>> {
        let container = container.to_owned();
        let context = container.clone();
        self.call(
            move || format!("reading the history of container {context:?}"),
            move |conn| queries::history(conn, &container, query),
        )
        .await
    }

    /// When `container` last saw traffic: the latest record time, whatever
    /// order records arrived in. `None` when it has none (or its history
    /// was cleared by [`mark_launched`](Self::mark_launched) or
    /// [`forget`](Self::forget)).
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] when the database cannot be read, [`Error::Closed`]
    /// after [`close`](Self::close).
    pub async fn last_activity(&self, container: &str) -> Result<Option<SystemTime>> {
        let container = container.to_owned();
        let context = container.clone();
        self.call(
            move || format!("reading the last activity of container {context:?}"),
            move |conn| queries::last_activity(conn, &container),
        )
        .await
    }

    /// The last activity of every container that has any, including those
    /// marked removed whose history is still kept; after a restart this is
    /// what LRU eviction and idle culling start from.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] when the database cannot be read, [`Error::Closed`]
    /// after [`close`](Self::close).
    pub async fn last_activity_all(&self) -> Result<HashMap<String, SystemTime>> {
        self.call(|| "reading the last activity of all containers".to_owned(), |conn| queries::last_activity_all(conn))
            .await
    }

    /// Records that `container` was removed at `at`. Its history stays
    /// readable until [`prune`](Self::prune) runs more than
    /// [`HistoryConfig::retention`] after `at`, or the name is launched
    /// again. Marking again moves the time.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] when the database cannot be written,
    /// [`Error::Closed`] after [`close`](Self::close).
    pub async fn mark_removed(&self, container: &str, at: SystemTime) -> Result<()> {
        let container = container.to_owned();
        let context = container.clone();
        self.call(
            move || format!("marking container {context:?} removed"),
            move |conn| queries::mark_removed(conn, &container, at),
        )
        .await
    }

    /// Records that a container named `container` was launched at `at`.
    /// When the name is marked removed, this is a new container reusing
    /// it: the earlier incarnation's records and last activity are deleted
    /// first, so nobody sees someone else's history. Otherwise (first
    /// launch, or re-adopting a running container after a restart) the
    /// history stays.
    ///
    /// Call it before the container can receive traffic. If a removal was
    /// never marked (berth stopped in between), call
    /// [`forget`](Self::forget) before launching the name again.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] when the database cannot be written,
    /// [`Error::Closed`] after [`close`](Self::close).
    pub async fn mark_launched(&self, container: &str, at: SystemTime) -> Result<()> {
        let name = container.to_owned();
        let context = name.clone();
        let deleted = self
            .call(
                move || format!("marking container {context:?} launched"),
                move |conn| queries::mark_launched(conn, &name, at),
            )
            .await?;
        if deleted > 0 {
            tracing::debug!(container, deleted, "deleted the history of the name's earlier incarnation");
        }
        Ok(())
    }

    /// Deletes the history of containers marked removed at least
    /// [`HistoryConfig::retention`] before `now` (and their last activity
    /// and marks), and, when [`HistoryConfig::max_age`] is set, every
    /// record older than that. `now` is a parameter so that tests and
    /// callers with their own clock can pass theirs.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] when the database cannot be written (nothing is
    /// deleted), [`Error::Closed`] after [`close`](Self::close).
    pub async fn prune(&self, now: SystemTime) -> Result<PruneStats> {
        let retention = self.config.retention;
        let max_age = self.config.max_age;
        let name = self.name.clone();
        self.call(move || format!("pruning {name}"), move |conn| queries::prune(conn, now, retention, max_age)).await
    }

    /// Starts a task that calls [`prune`](Self::prune) with the current
    /// time at once and then every [`HistoryConfig::prune_interval`],
    /// logging what it deleted and any failure. It holds the store weakly:
    /// it ends once every other handle is dropped, or the store is closed;
    /// abort the handle to stop it sooner.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn spawn_pruner(self: Arc<Self>) -> JoinHandle<()> {
        // `interval` refuses a zero period.
        let period = self.config.prune_interval.max(std::time::Duration::from_millis(1));
        let store = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(store) = store.upgrade() else { break };
                match store.prune(SystemTime::now()).await {
                    Ok(stats) if stats == PruneStats::default() => {}
                    Ok(stats) => tracing::info!(
                        database = %store.name,
                        containers = stats.containers,
                        records = stats.records,
                        "pruned history"
                    ),
                    Err(Error::Closed) => break,
                    Err(error) => tracing::warn!(error = %report(&error), "pruning history failed"),
                }
            }
        })
    }

    /// Deletes everything recorded about `container` now: its history, last
    /// activity and marks.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] when the database cannot be written,
    /// [`Error::Closed`] after [`close`](Self::close).
    pub async fn forget(&self, container: &str) -> Result<()> {
        let container = container.to_owned();
        let context = container.clone();
        self.call(move || format!("forgetting container {context:?}"), move |conn| queries::forget(conn, &container))
            .await
            .map(drop)
    }

    /// Finishes the jobs submitted before and closes the database (a file
    /// database checkpoints its write-ahead log into the main file). Every
    /// later call fails with [`Error::Closed`]; closing again does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] when SQLite reports a failure while closing (the
    /// connection is released anyway).
    pub async fn close(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        let name = self.name.clone();
        let job: Job = Box::new(move |conn| {
            let result = match conn.take() {
                Some(open) => {
                    open.close().map_err(|(_, source)| Error::Sqlite { context: format!("closing {name}"), source })
                }
                None => Ok(()),
            };
            let _ = reply.send(result);
        });
        if self.jobs.send(job).is_err() {
            return Ok(()); // The worker has stopped: nothing is open.
        }
        answer.await.unwrap_or(Ok(()))
    }
}

#[async_trait]
impl ActivitySink for HistoryStore {
    /// Stores the batch like [`HistoryStore::try_record`]; a failure is
    /// logged and counted in [`HistoryStats::records_failed`], and the
    /// batch is lost.
    async fn record(&self, batch: Vec<ActivityRecord>) {
        let count = batch.len();
        if let Err(error) = self.try_record(batch).await {
            tracing::error!(error = %report(&error), records = count, "dropping a batch of activity records");
        }
    }
}

fn open_file(path: &Path, name: &str) -> Result<Connection> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|source| Error::Io { context: format!("creating directory {}", parent.display()), source })?;
    }
    let mut conn =
        Connection::open(path).map_err(|source| Error::Sqlite { context: format!("opening {name}"), source })?;
    schema::prepare(&mut conn, name)?;
    Ok(conn)
}

/// Starts the worker thread: `open` gives it its connection (or `None` to
/// stop at once), then it runs jobs until the store is closed or dropped.
fn spawn_worker(open: impl FnOnce() -> Option<Connection> + Send + 'static) -> Result<mpsc::Sender<Job>> {
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("berth-history".to_owned())
        .spawn(move || {
            let mut conn = open();
            while conn.is_some() {
                let Ok(job) = queue.recv() else { break };
                job(&mut conn);
            }
            if let Some(conn) = conn
                && let Err((_, error)) = conn.close()
            {
                tracing::warn!(%error, "closing the history database failed");
            }
        })
        .map_err(|source| Error::Io { context: "starting the history worker thread".to_owned(), source })?;
    Ok(jobs)
}
