//! The route table: container name → endpoint and readiness, kept fresh by
//! the manager's event stream, so the hot path never calls the engine.
//!
//! - At start the table lists the managed containers, then follows
//!   lifecycle events: *created* inserts a starting entry (so a freshly
//!   launched container shows the please-wait page, not a 404), *started*
//!   resolves the endpoint and probes readiness, *died* marks the entry
//!   failed with its exit code and last log lines, *removed* deletes it.
//! - Readiness: a starting container is probed with `GET <ready path>`
//!   until it answers a status that means ready (by default any 2xx or
//!   3xx: a redirect means the server is up), or fails after its start
//!   timeout. Path, statuses and timeout come from the container's
//!   [`RouteHints`] labels, else from [`TableConfig`].
//! - A name not in the table is looked up once (single flight, bounded
//!   concurrency) and a miss is remembered briefly, so random names cannot
//!   make berth hammer the engine.
//! - If the event stream breaks, the table resubscribes and resynchronizes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use berth_manager::{ContainerManager, ContainerState, EventKind, ListFilter, LogOptions, RouteHints};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use tokio::sync::{Mutex, Semaphore};

use crate::pages::FailureReason;

/// Settings of a [`RouteTable`].
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// How long a container may take to become ready after it started
    /// before it is reported failed, unless its hints say otherwise.
    pub start_timeout: Duration,
    /// Interval between readiness probes.
    pub probe_interval: Duration,
    /// Timeout of one readiness probe.
    pub probe_timeout: Duration,
    /// Path probed for readiness, unless a container's hints name one.
    pub ready_path: String,
    /// How long a name that matched no container is remembered as missing.
    pub negative_ttl: Duration,
    /// How many log lines a failure page shows.
    pub failure_log_lines: usize,
    /// Concurrent engine lookups for names not in the table.
    pub max_concurrent_lookups: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            start_timeout: Duration::from_secs(120),
            probe_interval: Duration::from_millis(250),
            probe_timeout: Duration::from_secs(2),
            ready_path: "/".to_owned(),
            negative_ttl: Duration::from_secs(1),
            failure_log_lines: 20,
            max_concurrent_lookups: 4,
        }
    }
}

/// Where a ready container is reached, with its URI authority prepared
/// once instead of formatted on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The container's HTTP endpoint.
    pub addr: SocketAddr,
    /// `addr` as a URI authority.
    pub authority: http::uri::Authority,
    /// How the proxy treats the container (from its labels).
    pub hints: Arc<RouteHints>,
}

impl Upstream {
    fn new(addr: SocketAddr, hints: Arc<RouteHints>) -> Option<Self> {
        Some(Upstream { addr, authority: http::uri::Authority::try_from(addr.to_string()).ok()?, hints })
    }
}

/// What the table knows of a container, as the hot path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Ready: forward here.
    Ready(Upstream),
    /// Exists, not ready yet: show the please-wait page.
    Starting,
    /// Will not become ready.
    Failed(Arc<Failure>),
    /// No such managed container.
    Missing,
}

/// A container that will not become ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why.
    pub reason: FailureReason,
    /// Its last log lines.
    pub log_tail: Vec<String>,
}

#[derive(Debug, Clone)]
enum State {
    Starting,
    Ready(Upstream),
    Failed(Arc<Failure>),
}

#[derive(Debug)]
struct Entry {
    /// Engine id, so events of an older container with the same name are
    /// not applied to a newer one.
    id: String,
    state: State,
    /// Bumped whenever a new probe starts, so stale probes stop.
    generation: u64,
}

/// Counters for tests and metrics.
#[derive(Debug, Default)]
pub struct TableStats {
    /// Engine lookups made for names not in the table.
    pub lookups: AtomicU64,
    /// Misses answered from the negative cache.
    pub negative_hits: AtomicU64,
    /// Full resynchronizations (start and after event-stream errors).
    pub resyncs: AtomicU64,
}

/// Container name → endpoint and readiness. See the module docs.
pub struct RouteTable {
    manager: Arc<dyn ContainerManager>,
    config: TableConfig,
    entries: RwLock<HashMap<String, Entry>>,
    /// Each container's labels (owner, tool, ...), for authorization hooks.
    labels: RwLock<HashMap<String, Arc<BTreeMap<String, String>>>>,
    negative: RwLock<HashMap<String, Instant>>,
    lookups: Semaphore,
    inflight: Mutex<()>,
    generation: AtomicU64,
    stats: TableStats,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteTable").field("config", &self.config).field("entries", &self.read().len()).finish()
    }
}

/// Bound on remembered misses, so a flood of random names stays bounded.
const MAX_NEGATIVE: usize = 10_000;

impl RouteTable {
    /// Builds the table from the manager's current containers and starts
    /// following its events (tasks spawned on the current runtime; they
    /// end when the table is dropped).
    ///
    /// # Errors
    ///
    /// The manager's error if the first subscription or listing fails.
    pub async fn start(manager: Arc<dyn ContainerManager>, config: TableConfig) -> crate::Result<Arc<Self>> {
        let table = Arc::new(RouteTable {
            lookups: Semaphore::new(config.max_concurrent_lookups.max(1)),
            manager,
            config,
            entries: RwLock::default(),
            labels: RwLock::default(),
            negative: RwLock::default(),
            inflight: Mutex::new(()),
            generation: AtomicU64::new(0),
            stats: TableStats::default(),
        });
        let events = table.manager.events().await?;
        table.resync().await?;
        let weak = Arc::downgrade(&table);
        tokio::spawn(follow_events(weak, events));
        Ok(table)
    }

    /// Counters.
    pub fn stats(&self) -> &TableStats {
        &self.stats
    }

    /// The manager behind the table.
    pub fn manager(&self) -> &Arc<dyn ContainerManager> {
        &self.manager
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The hot path: what is known of `name`, without engine calls for
    /// known names. An unknown name costs at most one engine lookup per
    /// `negative_ttl`.
    pub async fn lookup(self: &Arc<Self>, name: &str) -> Lookup {
        if let Some(found) = self.peek(name) {
            return found;
        }
        if self.recently_missing(name) {
            self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
            return Lookup::Missing;
        }
        self.lookup_slow(name).await
    }

    /// The labels of container `name` as last seen by the table (no I/O):
    /// what an authorization hook checks ownership against.
    pub fn labels(&self, name: &str) -> Option<Arc<BTreeMap<String, String>>> {
        self.labels.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// As [`RouteTable::labels`], but for a name the table has no labels
    /// for yet (just created, or not seen), looks the container up the way
    /// [`RouteTable::lookup`] does: at most one engine call per name per
    /// `negative_ttl`, never one for a name whose labels are known.
    pub async fn labels_or_fetch(self: &Arc<Self>, name: &str) -> Option<Arc<BTreeMap<String, String>>> {
        if let Some(labels) = self.labels(name) {
            return Some(labels);
        }
        if self.lookup(name).await == Lookup::Missing {
            return None;
        }
        if let Some(labels) = self.labels(name) {
            return Some(labels);
        }
        // Known from an event, not inspected yet.
        let info = self.manager.inspect(name).await.ok()?;
        self.set_labels(name, info.labels);
        self.labels(name)
    }

    fn set_labels(&self, name: &str, labels: BTreeMap<String, String>) {
        self.labels.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), Arc::new(labels));
    }

    /// What the table holds for `name`, with no I/O at all.
    pub fn peek(&self, name: &str) -> Option<Lookup> {
        self.read().get(name).map(|e| match &e.state {
            State::Ready(up) => Lookup::Ready(up.clone()),
            State::Starting => Lookup::Starting,
            State::Failed(f) => Lookup::Failed(f.clone()),
        })
    }

    fn recently_missing(&self, name: &str) -> bool {
        let negative = self.negative.read().unwrap_or_else(|p| p.into_inner());
        negative.get(name).is_some_and(|t| t.elapsed() < self.config.negative_ttl)
    }

    fn remember_missing(&self, name: &str) {
        let mut negative = self.negative.write().unwrap_or_else(|p| p.into_inner());
        if negative.len() >= MAX_NEGATIVE {
            let ttl = self.config.negative_ttl;
            negative.retain(|_, t| t.elapsed() < ttl);
            if negative.len() >= MAX_NEGATIVE {
                negative.clear();
            }
        }
        negative.insert(name.to_owned(), Instant::now());
    }

    async fn lookup_slow(self: &Arc<Self>, name: &str) -> Lookup {
        let Ok(_permit) = self.lookups.acquire().await else {
            return Lookup::Missing;
        };
        // Single flight: one lookup at a time re-checks the table first.
        let _guard = self.inflight.lock().await;
        if let Some(found) = self.peek(name) {
            return found;
        }
        if self.recently_missing(name) {
            return Lookup::Missing;
        }
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        match self.manager.inspect(name).await {
            Ok(info) => {
                self.set_labels(&info.name, info.labels.clone());
                self.admit(&info.name, &info.id, info.state, info.exit_code);
                self.peek(name).unwrap_or(Lookup::Missing)
            }
            Err(e) => {
                if !e.is_not_found() {
                    tracing::warn!(%name, error = %e, "route lookup failed");
                }
                self.remember_missing(name);
                Lookup::Missing
            }
        }
    }

    /// Relists every managed container and rebuilds the table.
    async fn resync(self: &Arc<Self>) -> crate::Result<()> {
        self.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        let infos = self.manager.list(&ListFilter::all()).await?;
        let names: std::collections::HashSet<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        self.write().retain(|name, _| names.contains(name.as_str()));
        self.labels.write().unwrap_or_else(|p| p.into_inner()).retain(|name, _| names.contains(name.as_str()));
        for info in &infos {
            self.set_labels(&info.name, info.labels.clone());
            let known = self.read().get(&info.name).is_some_and(|e| e.id == info.id);
            if !known {
                self.admit(&info.name, &info.id, info.state, info.exit_code);
            }
        }
        Ok(())
    }

    /// Inserts a container in the state its engine state implies.
    fn admit(self: &Arc<Self>, name: &str, id: &str, state: ContainerState, exit_code: Option<i64>) {
        match state {
            ContainerState::Running => self.start_probe(name, id),
            ContainerState::Exited | ContainerState::Dead => {
                self.fail(name, id, FailureReason::Exited { code: exit_code })
            }
            _ => self.watch_created(name, id),
        }
    }

    /// Marks `name` starting while it is created but not started (or in a
    /// state that is neither running nor exited), and looks again after the
    /// start timeout: still only created, it fails (a launch that died
    /// between create and start must not leave a page waiting forever);
    /// otherwise it is admitted by the state the engine reports, which also
    /// repairs a start event the table missed.
    fn watch_created(self: &Arc<Self>, name: &str, id: &str) {
        let generation = self.insert_starting(name, id);
        let table = Arc::downgrade(self);
        let timeout = self.labels(name).map_or(self.config.start_timeout, |l| self.start_timeout_for(&l));
        let (name, id) = (name.to_owned(), id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            let Some(t) = table.upgrade() else { return };
            // A start (or anything else) since then made a new generation.
            if !t.is_current(&name, generation) {
                return;
            }
            let Ok(info) = t.manager.inspect(&name).await else { return };
            if info.id != id || !t.is_current(&name, generation) {
                return;
            }
            if info.state == ContainerState::Created {
                t.fail(&name, &id, FailureReason::NeverStarted(timeout));
            } else {
                t.admit(&name, &id, info.state, info.exit_code);
            }
        });
    }

    fn insert_starting(&self, name: &str, id: &str) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.write().insert(name.to_owned(), Entry { id: id.to_owned(), state: State::Starting, generation });
        self.negative.write().unwrap_or_else(|p| p.into_inner()).remove(name);
        generation
    }

    /// Marks `name` starting and probes it until ready or failed.
    fn start_probe(self: &Arc<Self>, name: &str, id: &str) {
        let generation = self.insert_starting(name, id);
        let table = Arc::downgrade(self);
        let name = name.to_owned();
        let id = id.to_owned();
        tokio::spawn(async move {
            probe(table, name, id, generation).await;
        });
    }

    fn fail(self: &Arc<Self>, name: &str, id: &str, reason: FailureReason) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let failure = Arc::new(Failure { reason: reason.clone(), log_tail: Vec::new() });
        self.write().insert(name.to_owned(), Entry { id: id.to_owned(), state: State::Failed(failure), generation });
        // The logs come later, off the hot path.
        let table = Arc::downgrade(self);
        let name = name.to_owned();
        tokio::spawn(async move {
            let Some(table) = table.upgrade() else { return };
            let options = LogOptions { tail: Some(table.config.failure_log_lines), since: None };
            let log_tail = match table.manager.logs(&name, options).await {
                Ok(lines) => lines.into_iter().map(|l| l.line).collect(),
                Err(e) => vec![format!("(logs unavailable: {e})")],
            };
            let mut entries = table.write();
            if let Some(entry) = entries.get_mut(&name)
                && entry.generation == generation
            {
                entry.state = State::Failed(Arc::new(Failure { reason, log_tail }));
            }
        });
    }

    fn apply_event(self: &Arc<Self>, event: berth_manager::ContainerEvent) {
        let same_id = |t: &Self| t.read().get(&event.name).is_some_and(|e| e.id == event.id);
        match event.kind {
            EventKind::Created if !same_id(self) => self.watch_created(&event.name, &event.id),
            EventKind::Started => self.start_probe(&event.name, &event.id),
            EventKind::Died if same_id(self) => {
                self.fail(&event.name, &event.id, FailureReason::Exited { code: event.exit_code });
            }
            EventKind::Removed => {
                let mut entries = self.write();
                if entries.get(&event.name).is_some_and(|e| e.id == event.id) {
                    entries.remove(&event.name);
                    self.labels.write().unwrap_or_else(|p| p.into_inner()).remove(&event.name);
                }
            }
            _ => {}
        }
    }

    fn set_if_current(&self, name: &str, generation: u64, state: State) -> bool {
        let mut entries = self.write();
        match entries.get_mut(name) {
            Some(entry) if entry.generation == generation => {
                entry.state = state;
                true
            }
            _ => false,
        }
    }

    fn is_current(&self, name: &str, generation: u64) -> bool {
        self.read().get(name).is_some_and(|e| e.generation == generation)
    }

    /// The start timeout of a container with `labels`: its hint, else the
    /// table's.
    fn start_timeout_for(&self, labels: &BTreeMap<String, String>) -> Duration {
        RouteHints::from_labels(self.manager.label_scheme(), labels)
            .start_timeout_secs
            .map_or(self.config.start_timeout, Duration::from_secs)
    }

    /// Names currently in the table, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }
}

async fn follow_events(table: std::sync::Weak<RouteTable>, mut events: berth_manager::EventStreamBox) {
    let mut backoff = Duration::from_millis(100);
    loop {
        while let Some(item) = events.next().await {
            let Some(t) = table.upgrade() else { return };
            match item {
                Ok(event) => {
                    backoff = Duration::from_millis(100);
                    t.apply_event(event);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "container event stream failed; resubscribing");
                    break;
                }
            }
        }
        // The stream ended or failed: resubscribe, then resync to catch up
        // on whatever happened in between.
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
            let Some(t) = table.upgrade() else { return };
            match t.manager.events().await {
                Ok(stream) => {
                    events = stream;
                    if let Err(e) = t.resync().await {
                        tracing::warn!(error = %e, "route table resync failed");
                    }
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "cannot resubscribe to container events"),
            }
        }
    }
}

async fn probe(table: std::sync::Weak<RouteTable>, name: String, id: String, generation: u64) {
    let started = Instant::now();
    let mut endpoint: Option<SocketAddr> = None;
    // Until the container's labels are read, the table's defaults apply.
    let mut hints: Option<Arc<RouteHints>> = None;
    loop {
        let Some(t) = table.upgrade() else { return };
        if !t.is_current(&name, generation) {
            return;
        }
        let timeout =
            hints.as_ref().and_then(|h| h.start_timeout_secs).map_or(t.config.start_timeout, Duration::from_secs);
        if started.elapsed() > timeout {
            t.fail(&name, &id, FailureReason::StartTimeout(timeout));
            return;
        }
        if hints.is_none() {
            // Labels (hints for this probe, owners for authorization
            // hooks), once per start, off the hot path.
            if let Ok(info) = t.manager.inspect(&name).await {
                hints = Some(Arc::new(RouteHints::from_labels(t.manager.label_scheme(), &info.labels)));
                t.set_labels(&name, info.labels);
            }
        }
        if endpoint.is_none() {
            match t.manager.endpoint(&name).await {
                Ok(ep) => endpoint = Some(ep.addr),
                Err(berth_manager::Error::NotRunning { .. }) => {}
                Err(e) if e.is_not_found() => return,
                Err(
                    e @ (berth_manager::Error::NoPortLabel { .. }
                    | berth_manager::Error::PortMisconfigured { .. }
                    | berth_manager::Error::NoPortsOpen { .. }
                    | berth_manager::Error::ExpectedPortMissing { .. }),
                ) => {
                    t.fail(&name, &id, FailureReason::NoEndpoint(e.to_string()));
                    return;
                }
                Err(e) => tracing::debug!(%name, error = %e, "endpoint not resolvable yet"),
            }
        }
        if let (Some(addr), Some(h)) = (endpoint, &hints) {
            let path = h.ready_path.as_deref().unwrap_or(&t.config.ready_path);
            let status = probe_once(addr, path, t.config.probe_timeout).await;
            if let (Some(status), Some(upstream)) = (status.filter(|s| h.is_ready(*s)), Upstream::new(addr, h.clone()))
            {
                if t.set_if_current(&name, generation, State::Ready(upstream)) {
                    tracing::debug!(%name, %addr, status, after = ?started.elapsed(), "container ready");
                }
                return;
            }
        }
        let interval = t.config.probe_interval;
        drop(t);
        tokio::time::sleep(interval).await;
    }
}

/// One readiness probe: the status `GET path` answers with, `None` when
/// there is no answer within `timeout`.
async fn probe_once(addr: SocketAddr, path: &str, timeout: Duration) -> Option<u16> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::USER_AGENT, "berth-readiness-probe")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        let status = resp.status();
        // Drain so the tool sees a complete exchange.
        let _ = resp.into_body().collect().await;
        Some(status.as_u16())
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_manager::{ContainerSpec, MOCK_TOOL_IMAGE, MockManager};

    async fn eventually(table: &Arc<RouteTable>, name: &str, want: fn(&Lookup) -> bool) -> Lookup {
        for _ in 0..200 {
            let l = table.lookup(name).await;
            if want(&l) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{name} never reached the wanted state: {:?}", table.lookup(name).await);
    }

    #[tokio::test]
    async fn follows_lifecycle() {
        let manager = Arc::new(MockManager::new());
        let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
        assert_eq!(table.lookup("viz").await, Lookup::Missing);
        let spec = ContainerSpec::new(MOCK_TOOL_IMAGE, "viz", 16).env(berth_manager::ENV_STARTUP_DELAY_MS, "300");
        manager.launch(&spec).await.unwrap();
        // The miss was remembered for a moment, then the event makes it known.
        let l = eventually(&table, "viz", |l| matches!(l, Lookup::Starting | Lookup::Ready(_))).await;
        assert_ne!(l, Lookup::Missing);
        eventually(&table, "viz", |l| matches!(l, Lookup::Ready(_))).await;
        manager.remove("viz").await.unwrap();
        eventually(&table, "viz", |l| *l == Lookup::Missing).await;
    }

    #[tokio::test]
    async fn exit_fails_with_logs() {
        let manager = Arc::new(MockManager::new());
        let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
        manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "crash", 16)).await.unwrap();
        let Lookup::Ready(Upstream { addr, .. }) = eventually(&table, "crash", |l| matches!(l, Lookup::Ready(_))).await
        else {
            unreachable!()
        };
        let _ = berth_manager_get(addr, "/exit/4").await;
        let l = eventually(&table, "crash", |l| matches!(l, Lookup::Failed(f) if !f.log_tail.is_empty())).await;
        let Lookup::Failed(f) = l else { unreachable!() };
        assert_eq!(f.reason, FailureReason::Exited { code: Some(4) });
        assert!(f.log_tail.iter().any(|l| l.contains("/exit/4")), "{:?}", f.log_tail);
    }

    #[tokio::test]
    async fn start_timeout_fails() {
        let manager = Arc::new(MockManager::new());
        let config = TableConfig { start_timeout: Duration::from_millis(300), ..TableConfig::default() };
        let table = RouteTable::start(manager.clone(), config).await.unwrap();
        let spec = ContainerSpec::new(MOCK_TOOL_IMAGE, "slow", 16).env(berth_manager::ENV_STARTUP_DELAY_MS, "60000");
        manager.launch(&spec).await.unwrap();
        let l = eventually(&table, "slow", |l| matches!(l, Lookup::Failed(_))).await;
        let Lookup::Failed(f) = l else { unreachable!() };
        assert!(matches!(f.reason, FailureReason::StartTimeout(_)));
    }

    #[tokio::test]
    async fn misses_are_cached_and_bounded() {
        let manager = Arc::new(MockManager::new());
        let table = RouteTable::start(manager, TableConfig::default()).await.unwrap();
        for _ in 0..50 {
            assert_eq!(table.lookup("nobody").await, Lookup::Missing);
        }
        assert_eq!(table.stats().lookups.load(Ordering::Relaxed), 1);
        assert_eq!(table.stats().negative_hits.load(Ordering::Relaxed), 49);
    }

    async fn berth_manager_get(addr: SocketAddr, path: &str) -> Option<u16> {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn);
        let req = http::Request::get(path).header("host", "x").body(Empty::<Bytes>::new()).ok()?;
        Some(sender.send_request(req).await.ok()?.status().as_u16())
    }
}
