//! `MockManager`: an in-memory backend whose containers are real HTTP
//! servers on `127.0.0.1:0`, so everything above the manager (proxy,
//! staging, axum) can be tested end to end without Docker.
//!
//! Several managers can share one [`MockEngine`], the way several Docker
//! clients share one daemon: names are unique per engine, and each manager
//! sees only the containers carrying its own root label.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use tokio::sync::{broadcast, watch};

use crate::error::{Error, Result};
use crate::manager::{
    Capabilities, ContainerManager, EventStreamBox, LogStreamBox, check_persistent_volume, container_labels,
    persistent_volume_labels, port_from_labels, validate_for,
};
use crate::placement::NodeInfo;
use crate::spec::{
    ContainerSpec, DEFAULT_INPUT_PATH, ENV_INPUT_JSON, ENV_INPUT_JSON_PATH, ENV_INPUT_JSON_URL, InputMode,
};
use crate::types::{
    ContainerEvent, ContainerInfo, ContainerState, Endpoint, EventKind, LabelScheme, ListFilter, LogLine, LogOptions,
    LogStream, VolumeInfo,
};

/// The image every new [`MockEngine`] knows: it runs the default tool.
pub const MOCK_TOOL_IMAGE: &str = "berth/mock-tool:latest";

/// The program of [`MOCK_TOOL_IMAGE`] (its `CMD`), as a container's
/// argument list shows it.
pub const MOCK_TOOL_PROGRAM: &str = "/mock-tool";

/// Size of a mock container's `/dev/shm` when the spec sets none: the
/// Docker engine's default, 64 MiB.
pub const DEFAULT_SHM_BYTES: u64 = 64 * 1024 * 1024;

pub use crate::spec::ENV_STARTUP_DELAY_MS;

/// Response body type of mock tool handlers.
pub type MockBody = BoxBody<Bytes, Infallible>;

/// A mock tool: turns one HTTP request into a response. It gets the raw
/// hyper request, so it may stream or upgrade (websockets) as it likes.
pub type MockHandler =
    Arc<dyn Fn(ToolContext, Request<Incoming>) -> BoxFuture<'static, Response<MockBody>> + Send + Sync>;

/// What a mock tool can see of its container and do to it.
#[derive(Clone)]
pub struct ToolContext {
    inner: Arc<ContainerCell>,
}

impl std::fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolContext").field("name", &self.inner.name).finish()
    }
}

impl ToolContext {
    /// Container name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The container's environment (the spec's plus berth's input variables).
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.inner.env
    }

    /// A file of the container's filesystem: one berth wrote (the input
    /// document), one the tool wrote with [`ToolContext::write_file`], or
    /// one in a persistent volume mounted at a parent directory.
    pub fn file(&self, path: &str) -> Option<Bytes> {
        if let Some((volume, rel)) = self.inner.volume_path(path) {
            let state = self.inner.engine.upgrade()?;
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            return state.volume_data.get(volume).and_then(|files| files.get(rel)).cloned();
        }
        self.inner.files.lock().unwrap_or_else(|p| p.into_inner()).get(path).cloned()
    }

    /// Writes a file into the container's filesystem (into a persistent
    /// volume when one is mounted at a parent directory, where it outlives
    /// the container).
    pub fn write_file(&self, path: &str, content: Bytes) {
        if let Some((volume, rel)) = self.inner.volume_path(path) {
            if let Some(state) = self.inner.engine.upgrade() {
                let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                state.volume_data.entry(volume.to_owned()).or_default().insert(rel.to_owned(), content);
            }
            return;
        }
        self.inner.files.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_owned(), content);
    }

    /// The process's arguments, program first, as the engine would run
    /// them: the spec's entrypoint and command over the image's
    /// (`CMD ["/mock-tool"]`, no entrypoint).
    pub fn argv(&self) -> &[String] {
        &self.inner.process.argv
    }

    /// The process's working directory (`/` unless the spec sets one).
    pub fn working_dir(&self) -> &str {
        &self.inner.process.working_dir
    }

    /// The user the process runs as (`0` unless the spec sets one).
    pub fn user(&self) -> &str {
        &self.inner.process.user
    }

    /// The memory limit in bytes, when the spec sets one.
    pub fn mem_limit_bytes(&self) -> Option<u64> {
        self.inner.process.mem_limit
    }

    /// The size of `/dev/shm` in bytes.
    pub fn shm_bytes(&self) -> u64 {
        self.inner.process.shm
    }

    /// Time since the container started.
    pub fn uptime(&self) -> Duration {
        self.inner.started_at.elapsed()
    }

    /// Prints a line to the container's standard output.
    pub fn print(&self, line: impl Into<String>) {
        self.inner.push_log(LogStream::Stdout, line.into());
    }

    /// Makes the tool's "process" exit with `code`, as if it had crashed or
    /// finished: the server stops and the container is `exited`.
    pub fn exit(&self, code: i64) {
        self.inner.exit(code);
    }
}

/// Shared state of one engine: containers, volumes, known images, events.
#[derive(Debug, Default)]
struct EngineState {
    containers: HashMap<String, Arc<ContainerCell>>,
    volumes: BTreeMap<String, VolumeInfo>,
    /// Files in persistent volumes: volume → path inside it → content.
    volume_data: HashMap<String, BTreeMap<String, Bytes>>,
    images: BTreeSet<String>,
    next_id: u64,
    /// The engine's nodes; one unless a test adds more.
    nodes: Vec<NodeInfo>,
}

/// Id of the one node a new [`MockEngine`] has.
pub const MOCK_NODE_ID: &str = "mock-node";

/// An in-process stand-in for a container engine, shareable by several
/// [`MockManager`]s with different root labels.
#[derive(Debug, Clone)]
pub struct MockEngine {
    state: Arc<Mutex<EngineState>>,
    events: broadcast::Sender<EngineEvent>,
}

/// An event with the labels of its container, so subscribers can filter
/// by root label even after the container is gone.
type EngineEvent = (ContainerEvent, Arc<BTreeMap<String, String>>);

impl Default for MockEngine {
    fn default() -> Self {
        MockEngine::new()
    }
}

impl MockEngine {
    /// A new engine that knows [`MOCK_TOOL_IMAGE`].
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        let engine = MockEngine { state: Arc::default(), events };
        engine.add_image(MOCK_TOOL_IMAGE);
        engine.lock().nodes.push(NodeInfo::new(MOCK_NODE_ID, "mock"));
        engine
    }

    /// Adds a node (or replaces the one with its id): a mock cluster. New
    /// containers go to the ready, schedulable node that meets their
    /// constraints and has room for their reservation (when its
    /// `memory_mb` is set), the least busy first, as a scheduler would.
    pub fn add_node(&self, node: NodeInfo) {
        let mut state = self.lock();
        state.nodes.retain(|n| n.id != node.id);
        state.nodes.push(node);
        state.nodes.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// Removes the node `id` from the engine (its containers stay, as lost
    /// ones do).
    pub fn remove_node(&self, id: &str) {
        self.lock().nodes.retain(|n| n.id != id);
    }

    /// Marks node `id` up or down. Going down loses its running
    /// containers: they die (state `dead`, no exit code, a message naming
    /// the node) and their endpoints and logs are gone, as on a cluster
    /// whose node stopped answering.
    pub fn set_node_ready(&self, id: &str, ready: bool) {
        let lost: Vec<Arc<ContainerCell>> = {
            let mut state = self.lock();
            let Some(node) = state.nodes.iter_mut().find(|n| n.id == id) else { return };
            node.ready = ready;
            if ready {
                return;
            }
            state.containers.values().filter(|c| c.node == id).cloned().collect()
        };
        for cell in lost {
            cell.lose_node();
        }
    }

    /// Picks the node for a new container, or says why there is none.
    fn place(&self, spec: &ContainerSpec) -> Result<String> {
        let state = self.lock();
        let eligible: Vec<&NodeInfo> = state.nodes.iter().filter(|n| n.accepts(&spec.placement)).collect();
        let load = |node: &NodeInfo| -> (u64, usize) {
            let on: Vec<&Arc<ContainerCell>> = state
                .containers
                .values()
                .filter(|c| c.node == node.id && c.state() == ContainerState::Running)
                .collect();
            (on.iter().map(|c| c.mem_reservation_mb).sum(), on.len())
        };
        let with_room: Vec<&&NodeInfo> = eligible
            .iter()
            .filter(|n| n.memory_mb == 0 || load(n).0 + spec.mem_reservation_mb <= n.memory_mb)
            .collect();
        match with_room.iter().min_by_key(|n| (load(n).1, n.id.clone())) {
            Some(n) => Ok(n.id.clone()),
            None if eligible.is_empty() => Err(Error::Unschedulable {
                name: spec.name.clone(),
                reason: format!(
                    "no suitable node (scheduling constraints not satisfied on {} nodes)",
                    state.nodes.len()
                ),
                insufficient_resources: false,
            }),
            None => Err(Error::Unschedulable {
                name: spec.name.clone(),
                reason: format!("no suitable node (insufficient resources on {} nodes)", eligible.len()),
                insufficient_resources: true,
            }),
        }
    }

    /// Makes `image` available (a missing tag means `:latest`).
    pub fn add_image(&self, image: &str) {
        self.lock().images.insert(crate::spec::normalize_image(image));
    }

    fn lock(&self) -> MutexGuard<'_, EngineState> {
        // A poisoned lock only means a panic elsewhere; the map is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, kind: EventKind, cell: &ContainerCell, exit_code: Option<i64>) {
        cell.emit(&self.events, kind, exit_code);
    }
}

/// Settings of a [`MockManager`].
#[derive(Clone)]
pub struct MockConfig {
    /// Root label scheme.
    pub labels: LabelScheme,
    /// How long the default tool answers 503 on `/` after start, unless the
    /// container's environment sets [`ENV_STARTUP_DELAY_MS`].
    pub default_warmup: Duration,
    /// Handler of every container's requests; `None` runs the default tool.
    pub handler: Option<MockHandler>,
}

impl std::fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockConfig")
            .field("labels", &self.labels)
            .field("default_warmup", &self.default_warmup)
            .field("handler", &self.handler.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig { labels: LabelScheme::default(), default_warmup: Duration::ZERO, handler: None }
    }
}

/// In-memory [`ContainerManager`] whose containers are in-process HTTP
/// servers on `127.0.0.1:0`.
///
/// Deterministic: no timers or randomness beyond the ports the OS hands
/// out and the warm-up you configure.
///
/// ```
/// # tokio_test_main(async {
/// use berth_manager::{ContainerManager, ContainerSpec, MockManager, MOCK_TOOL_IMAGE};
///
/// let manager = MockManager::new();
/// let spec = ContainerSpec::new(MOCK_TOOL_IMAGE, "viz", 64).input_env(serde_json::json!({"a": 1}));
/// manager.launch(&spec).await?;
/// let endpoint = manager.endpoint("viz").await?;
/// assert!(endpoint.addr.ip().is_loopback());
/// manager.remove("viz").await?;
/// # Ok::<_, berth_manager::Error>(())
/// # });
/// # fn tokio_test_main<F: std::future::Future<Output = Result<(), berth_manager::Error>>>(f: F) {
/// #     tokio::runtime::Runtime::new().unwrap().block_on(f).unwrap()
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MockManager {
    engine: MockEngine,
    config: MockConfig,
}

impl Default for MockManager {
    fn default() -> Self {
        MockManager::new()
    }
}

impl MockManager {
    /// A manager with the default config on a new engine.
    pub fn new() -> Self {
        MockManager::with_config(MockEngine::new(), MockConfig::default())
    }

    /// A manager with `config` on `engine`.
    pub fn with_config(engine: MockEngine, config: MockConfig) -> Self {
        MockManager { engine, config }
    }

    /// The engine this manager talks to.
    pub fn engine(&self) -> &MockEngine {
        &self.engine
    }

    fn managed(&self, name: &str) -> Result<Arc<ContainerCell>> {
        let state = self.engine.lock();
        match state.containers.get(name) {
            Some(cell) if cell.labels.contains_key(self.config.labels.root()) => Ok(cell.clone()),
            _ => Err(Error::not_found(name)),
        }
    }

    async fn start_server(&self, cell: &Arc<ContainerCell>) -> Result<()> {
        let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await.map_err(|source| {
            Error::Io { context: format!("binding the mock server of container {:?}", cell.name), source }
        })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Io { context: "reading the mock server address".into(), source })?;
        let handler = self.config.handler.clone().unwrap_or_else(|| default_tool(self.config.default_warmup));
        let ctx = ToolContext { inner: cell.clone() };
        let mut stop = cell.stop_rx();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let ctx = ctx.clone();
                        let handler = handler.clone();
                        let mut conn_stop = ctx.inner.stop_rx();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                                let fut = handler(ctx.clone(), req);
                                async move { Ok::<_, Infallible>(fut.await) }
                            });
                            let conn = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .with_upgrades();
                            tokio::pin!(conn);
                            tokio::select! {
                                _ = conn.as_mut() => {}
                                _ = conn_stop.changed() => {}
                            }
                        });
                    }
                }
            }
        });
        let mut run = cell.lock_run();
        run.addr = Some(addr);
        run.task = Some(task);
        drop(run);
        cell.push_log(LogStream::Stdout, format!("mock tool listening on {addr}"));
        Ok(())
    }
}

/// One mock container.
struct ContainerCell {
    id: String,
    name: String,
    image: String,
    labels: Arc<BTreeMap<String, String>>,
    env: BTreeMap<String, String>,
    files: Mutex<BTreeMap<String, Bytes>>,
    volumes: Vec<String>,
    /// Persistent volumes: (mount path without trailing `/`, volume name).
    mounts: Vec<(String, String)>,
    /// The engine's state, for files in persistent volumes.
    engine: std::sync::Weak<Mutex<EngineState>>,
    process: MockProcess,
    created: SystemTime,
    started: SystemTime,
    started_at: Instant,
    run: Mutex<RunState>,
    logs: Mutex<LogBuffer>,
    log_version: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    engine_events: broadcast::Sender<EngineEvent>,
    /// The node it runs on.
    node: String,
    mem_reservation_mb: u64,
}

impl std::fmt::Debug for ContainerCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerCell").field("name", &self.name).finish()
    }
}

/// What the spec says of the container's process.
#[derive(Debug)]
struct MockProcess {
    argv: Vec<String>,
    working_dir: String,
    user: String,
    mem_limit: Option<u64>,
    shm: u64,
}

impl MockProcess {
    fn of(spec: &ContainerSpec) -> Self {
        let argv = match &spec.entrypoint {
            Some(entrypoint) => entrypoint.iter().chain(spec.command.iter().flatten()).cloned().collect(),
            None => spec.command.clone().unwrap_or_else(|| vec![MOCK_TOOL_PROGRAM.to_owned()]),
        };
        MockProcess {
            argv,
            working_dir: spec.working_dir.clone().unwrap_or_else(|| "/".to_owned()),
            user: spec.user.clone().unwrap_or_else(|| "0".to_owned()),
            mem_limit: spec.mem_limit_mb.map(|mb| mb * 1024 * 1024),
            shm: spec.shm_size_mb.map_or(DEFAULT_SHM_BYTES, |mb| mb * 1024 * 1024),
        }
    }
}

#[derive(Default)]
struct RunState {
    addr: Option<SocketAddr>,
    task: Option<tokio::task::JoinHandle<()>>,
    exit_code: Option<i64>,
    /// Set when its node went down while it ran.
    lost: bool,
}

#[derive(Default)]
struct LogBuffer {
    lines: Vec<LogLine>,
    closed: bool,
}

impl ContainerCell {
    /// The persistent volume holding `path`, and the path inside it.
    fn volume_path<'a>(&'a self, path: &'a str) -> Option<(&'a str, &'a str)> {
        self.mounts.iter().find_map(|(mount, volume)| {
            let rest = path.strip_prefix(mount.as_str())?.strip_prefix('/')?;
            Some((volume.as_str(), rest))
        })
    }

    fn lock_run(&self) -> MutexGuard<'_, RunState> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_logs(&self) -> MutexGuard<'_, LogBuffer> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop_rx(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    fn push_log(&self, stream: LogStream, line: String) {
        let mut logs = self.lock_logs();
        if logs.closed {
            return;
        }
        logs.lines.push(LogLine { timestamp: SystemTime::now(), stream, line });
        drop(logs);
        self.log_version.send_modify(|v| *v += 1);
    }

    fn state(&self) -> ContainerState {
        let run = self.lock_run();
        if run.lost {
            ContainerState::Dead
        } else if run.exit_code.is_some() {
            ContainerState::Exited
        } else {
            ContainerState::Running
        }
    }

    /// Its node went down: the process is gone without an exit code.
    fn lose_node(&self) {
        let mut run = self.lock_run();
        if run.exit_code.is_some() || run.lost {
            return;
        }
        run.lost = true;
        run.addr = None;
        drop(run);
        self.stop.send_replace(true);
        self.lock_logs().closed = true;
        self.log_version.send_modify(|v| *v += 1);
        self.emit(&self.engine_events, EventKind::Died, None);
    }

    fn node_down(&self) -> Option<Error> {
        self.lock_run().lost.then(|| Error::NodeDown { name: self.name.clone(), node: self.node.clone() })
    }

    /// Stops the server and records the exit; a second exit is ignored.
    fn exit(&self, code: i64) {
        let mut run = self.lock_run();
        if run.exit_code.is_some() || run.lost {
            return;
        }
        run.exit_code = Some(code);
        run.addr = None;
        drop(run);
        self.stop.send_replace(true);
        self.lock_logs().closed = true;
        self.log_version.send_modify(|v| *v += 1);
        self.emit(&self.engine_events, EventKind::Died, Some(code));
    }

    fn emit(&self, to: &broadcast::Sender<EngineEvent>, kind: EventKind, exit_code: Option<i64>) {
        let event =
            ContainerEvent { kind, name: self.name.clone(), id: self.id.clone(), time: SystemTime::now(), exit_code };
        // No subscriber is fine: events are for whoever listens now.
        let _ = to.send((event, self.labels.clone()));
    }

    fn info(&self, scheme: &LabelScheme) -> ContainerInfo {
        let run = self.lock_run();
        ContainerInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            image: self.image.clone(),
            labels: (*self.labels).clone(),
            state: if run.lost {
                ContainerState::Dead
            } else if run.exit_code.is_some() {
                ContainerState::Exited
            } else {
                ContainerState::Running
            },
            exit_code: run.exit_code,
            created: self.created,
            started: Some(self.started),
            container_port: port_from_labels(scheme, &self.name, &self.labels).ok(),
            mem_reservation_mb: self.labels.get(&scheme.mem_key()).and_then(|v| v.parse().ok()),
            volumes: self.volumes.clone(),
            persistent_volumes: self.mounts.iter().map(|(_, v)| v.clone()).collect(),
            node: Some(self.node.clone()),
            message: run.lost.then(|| format!("node {} is down", self.node)),
        }
    }
}

#[async_trait]
impl ContainerManager for MockManager {
    fn label_scheme(&self) -> &LabelScheme {
        &self.config.labels
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new("mock", false).with_cluster(self.engine.lock().nodes.len() > 1)
    }

    async fn launch(&self, spec: &ContainerSpec) -> Result<ContainerInfo> {
        let scheme = &self.config.labels;
        validate_for(scheme, spec)?;
        let image = spec.normalized_image();
        let labels = container_labels(scheme, spec);
        let node = self.engine.place(spec)?;

        let mut env = spec.env.clone();
        let mut files = BTreeMap::new();
        if let Some(input) = &spec.input {
            let doc = serde_json::to_string(&input.document)
                .map_err(|e| Error::invalid(&spec.name, format!("input document does not serialize: {e}")))?;
            match &input.mode {
                InputMode::Env => {
                    env.insert(ENV_INPUT_JSON.into(), doc);
                }
                InputMode::Url { url } => {
                    env.insert(ENV_INPUT_JSON_URL.into(), url.clone());
                }
                InputMode::File { path } => {
                    env.insert(ENV_INPUT_JSON_PATH.into(), path.clone());
                    files.insert(path.clone(), Bytes::from(doc));
                }
            }
        }

        // Persistent volumes this launch creates, removed again if it fails.
        let mut new_persistent = Vec::new();
        let cell = {
            let mut state = self.engine.lock();
            if !state.images.contains(&image) {
                return Err(Error::ImageUnavailable { image, source: None });
            }
            if state.containers.contains_key(&spec.name) {
                return Err(Error::Conflict { name: spec.name.clone(), source: None });
            }
            // Check every persistent volume before creating any, so a
            // refused launch leaves nothing behind.
            for volume in &spec.volumes {
                if let Some(existing) = state.volumes.get(&volume.name) {
                    check_persistent_volume(scheme, &spec.name, volume, &existing.labels)?;
                }
            }
            let mut mounts = Vec::new();
            for volume in &spec.volumes {
                if !state.volumes.contains_key(&volume.name) {
                    new_persistent.push(volume.name.clone());
                    let mut labels = spec.labels.clone();
                    labels.extend(persistent_volume_labels(scheme, volume));
                    let info = VolumeInfo { name: volume.name.clone(), container: None, labels };
                    state.volumes.insert(volume.name.clone(), info);
                }
                mounts.push((volume.path.trim_end_matches('/').to_owned(), volume.name.clone()));
            }
            state.next_id += 1;
            let id = format!("mock{:060}", state.next_id);
            let mut volumes = Vec::new();
            for (i, _dir) in spec.extra_directories.iter().enumerate() {
                let vname = format!("{}-{}-{i}", spec.name, &id[id.len() - 8..]);
                let mut vlabels = spec.labels.clone();
                vlabels.insert(scheme.root().to_owned(), "true".to_owned());
                vlabels.insert(scheme.volume_owner_key(), spec.name.clone());
                state.volumes.insert(
                    vname.clone(),
                    VolumeInfo { name: vname.clone(), container: Some(spec.name.clone()), labels: vlabels },
                );
                volumes.push(vname);
            }
            let now = SystemTime::now();
            let cell = Arc::new(ContainerCell {
                id,
                name: spec.name.clone(),
                image: image.clone(),
                labels: Arc::new(labels),
                env,
                files: Mutex::new(files),
                volumes,
                mounts,
                engine: Arc::downgrade(&self.engine.state),
                process: MockProcess::of(spec),
                created: now,
                started: now,
                started_at: Instant::now(),
                run: Mutex::default(),
                logs: Mutex::default(),
                log_version: watch::Sender::new(0),
                stop: watch::Sender::new(false),
                engine_events: self.engine.events.clone(),
                node,
                mem_reservation_mb: spec.mem_reservation_mb,
            });
            state.containers.insert(spec.name.clone(), cell.clone());
            cell
        };
        self.engine.emit(EventKind::Created, &cell, None);
        if let Err(e) = self.start_server(&cell).await {
            let mut state = self.engine.lock();
            state.containers.remove(&cell.name);
            for v in cell.volumes.iter().chain(&new_persistent) {
                state.volumes.remove(v);
            }
            return Err(e);
        }
        self.engine.emit(EventKind::Started, &cell, None);
        tracing::debug!(name = %spec.name, "mock container started");
        Ok(cell.info(scheme))
    }

    async fn inspect(&self, name: &str) -> Result<ContainerInfo> {
        Ok(self.managed(name)?.info(&self.config.labels))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ContainerInfo>> {
        let root = self.config.labels.root();
        let cells: Vec<_> = self.engine.lock().containers.values().cloned().collect();
        let mut out: Vec<_> = cells
            .iter()
            .filter(|c| c.labels.contains_key(root))
            .map(|c| c.info(&self.config.labels))
            .filter(|info| filter.matches(info))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn logs(&self, name: &str, options: LogOptions) -> Result<Vec<LogLine>> {
        let cell = self.managed(name)?;
        if let Some(e) = cell.node_down() {
            return Err(e);
        }
        let logs = cell.lock_logs();
        Ok(select_lines(&logs.lines, options))
    }

    async fn follow_logs(&self, name: &str, options: LogOptions) -> Result<LogStreamBox> {
        let cell = self.managed(name)?;
        if let Some(e) = cell.node_down() {
            return Err(e);
        }
        let mut version = cell.log_version.subscribe();
        let first = {
            let logs = cell.lock_logs();
            version.borrow_and_update();
            (select_lines(&logs.lines, options), logs.lines.len())
        };
        let (initial, start) = first;
        let stream = futures_util::stream::iter(initial.into_iter().map(Ok)).chain(futures_util::stream::unfold(
            (cell, version, start, Vec::<LogLine>::new()),
            |(cell, mut version, mut next, mut pending)| async move {
                loop {
                    if let Some(line) = pending.pop() {
                        return Some((Ok(line), (cell, version, next, pending)));
                    }
                    let closed = {
                        let logs = cell.lock_logs();
                        version.borrow_and_update();
                        pending = logs.lines[next..].iter().rev().cloned().collect();
                        next = logs.lines.len();
                        logs.closed
                    };
                    if !pending.is_empty() {
                        continue;
                    }
                    if closed || version.changed().await.is_err() {
                        return None;
                    }
                }
            },
        ));
        Ok(stream.boxed())
    }

    async fn remove(&self, name: &str) -> Result<()> {
        let cell = self.managed(name)?;
        if cell.state() == ContainerState::Running {
            cell.exit(137);
        }
        {
            let mut state = self.engine.lock();
            state.containers.remove(name);
            for v in &cell.volumes {
                state.volumes.remove(v);
            }
        }
        if let Some(task) = cell.lock_run().task.take() {
            task.abort();
        }
        self.engine.emit(EventKind::Removed, &cell, None);
        Ok(())
    }

    async fn endpoint(&self, name: &str) -> Result<Endpoint> {
        let cell = self.managed(name)?;
        // The port label is checked first, as with Docker, so a container
        // adopted with a broken label fails the same way on both backends.
        port_from_labels(&self.config.labels, name, &cell.labels)?;
        if let Some(e) = cell.node_down() {
            return Err(e);
        }
        let run = cell.lock_run();
        match (run.addr, run.exit_code) {
            (Some(addr), None) => Ok(Endpoint { addr }),
            _ => Err(Error::NotRunning { name: name.to_owned(), state: ContainerState::Exited.to_string() }),
        }
    }

    async fn events(&self) -> Result<EventStreamBox> {
        let rx = self.engine.events.subscribe();
        let root = self.config.labels.root().to_owned();
        let stream = futures_util::stream::unfold(rx, move |mut rx| {
            let root = root.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok((ev, labels)) if labels.contains_key(&root) => return Some((Ok(ev), rx)),
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(skipped = n, "mock event subscriber lagged");
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(stream.boxed())
    }

    async fn prune_volumes(&self) -> Result<Vec<String>> {
        let root = self.config.labels.root().to_owned();
        let mut state = self.engine.lock();
        let orphans: Vec<String> = state
            .volumes
            .values()
            .filter(|v| v.labels.contains_key(&root) && !v.is_persistent(&self.config.labels))
            .filter(|v| v.container.as_ref().is_none_or(|c| !state.containers.contains_key(c)))
            .map(|v| v.name.clone())
            .collect();
        for name in &orphans {
            state.volumes.remove(name);
        }
        Ok(orphans)
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        let scheme = &self.config.labels;
        Ok(self
            .engine
            .lock()
            .volumes
            .values()
            .filter(|v| v.labels.contains_key(scheme.root()) && !v.is_persistent(scheme))
            .cloned()
            .collect())
    }

    async fn persistent_volumes(&self) -> Result<Vec<VolumeInfo>> {
        let scheme = &self.config.labels;
        Ok(self
            .engine
            .lock()
            .volumes
            .values()
            .filter(|v| v.labels.contains_key(scheme.root()) && v.is_persistent(scheme))
            .cloned()
            .collect())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        Ok(self.engine.lock().nodes.clone())
    }

    async fn remove_persistent_volume(&self, name: &str) -> Result<()> {
        let scheme = &self.config.labels;
        let mut state = self.engine.lock();
        let ours =
            state.volumes.get(name).is_some_and(|v| v.labels.contains_key(scheme.root()) && v.is_persistent(scheme));
        if !ours {
            return Err(Error::not_found(name));
        }
        // The engine refuses while any container (running or not) mounts it.
        if state.containers.values().any(|c| c.mounts.iter().any(|(_, v)| v == name)) {
            return Err(Error::VolumeInUse { volume: name.to_owned() });
        }
        state.volumes.remove(name);
        state.volume_data.remove(name);
        Ok(())
    }
}

impl MockEngine {
    /// Creates a volume owned by `container` without creating the
    /// container, as a crash between the two steps would leave it; for
    /// testing recovery.
    pub fn add_orphan_volume(&self, scheme: &LabelScheme, container: &str) -> String {
        let mut state = self.lock();
        state.next_id += 1;
        let name = format!("{container}-orphan-{}", state.next_id);
        let labels = BTreeMap::from([
            (scheme.root().to_owned(), "true".to_owned()),
            (scheme.volume_owner_key(), container.to_owned()),
        ]);
        state
            .volumes
            .insert(name.clone(), VolumeInfo { name: name.clone(), container: Some(container.to_owned()), labels });
        name
    }
}

fn select_lines(lines: &[LogLine], options: LogOptions) -> Vec<LogLine> {
    let filtered: Vec<_> = lines.iter().filter(|l| options.since.is_none_or(|s| l.timestamp >= s)).cloned().collect();
    match options.tail {
        Some(n) if n < filtered.len() => filtered[filtered.len() - n..].to_vec(),
        _ => filtered,
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<MockBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// The default mock tool. It follows the same contract as the Docker test
/// tool (`berth-testtool`):
///
/// - `GET /`: 503 during the warm-up, then 200 with an HTML page showing the
///   input document;
/// - `GET /input`: the input document exactly as the tool read it (from
///   `INPUT_JSON`, the file at `INPUT_JSON_PATH` or `/tmp/input.json`, or by
///   fetching `INPUT_JSON_URL`), 404 when there is none;
/// - `GET /env/<NAME>`: the variable's value, 404 when unset;
/// - `GET /say/<text>`: prints `<text>` to standard output;
/// - `GET /exit/<code>`: answers, then exits with `code`;
/// - `GET /argv`, `/cwd`, `/uid`, `/memlimit`, `/shm`: what the spec made of
///   the process (arguments after the program one a line, working
///   directory, user id, memory limit in bytes or `max`, `/dev/shm` size in
///   bytes);
/// - `GET /file?path=<abs>` / `PUT /file?path=<abs>`: read / write a file
///   (persistent volumes keep theirs across containers);
/// - anything else: 200 with the method and path, so proxies can be checked.
pub fn default_tool(default_warmup: Duration) -> MockHandler {
    Arc::new(move |ctx: ToolContext, req: Request<Incoming>| {
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            ctx.print(format!("{} {}", req.method(), req.uri()));
            let warmup = ctx
                .env()
                .get(ENV_STARTUP_DELAY_MS)
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
                .unwrap_or(default_warmup);
            if path == "/" {
                if ctx.uptime() < warmup {
                    return full(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n");
                }
                let doc = read_input(&ctx).await.unwrap_or_else(|e| format!("(no input: {e})"));
                let html = format!(
                    "<!doctype html><title>{name}</title><h1>{name}</h1><pre>{doc}</pre>\n",
                    name = html_escape(ctx.name()),
                    doc = html_escape(&doc)
                );
                return full(StatusCode::OK, "text/html; charset=utf-8", html);
            }
            if path == "/input" {
                return match read_input(&ctx).await {
                    Ok(doc) => full(StatusCode::OK, "application/json", doc),
                    Err(e) => full(StatusCode::NOT_FOUND, "text/plain", e),
                };
            }
            if let Some(var) = path.strip_prefix("/env/") {
                return match ctx.env().get(var) {
                    Some(v) => full(StatusCode::OK, "text/plain", v.clone()),
                    None => full(StatusCode::NOT_FOUND, "text/plain", "unset\n"),
                };
            }
            if let Some(answer) = process_route(&ctx, &path) {
                return full(StatusCode::OK, "text/plain", answer);
            }
            if path == "/file" {
                let Some(file) = query_param(req.uri().query(), "path") else {
                    return full(StatusCode::BAD_REQUEST, "text/plain", "missing ?path=\n");
                };
                if req.method() == http::Method::PUT {
                    return match req.into_body().collect().await {
                        Ok(body) => {
                            ctx.write_file(&file, body.to_bytes());
                            full(StatusCode::CREATED, "text/plain", "written\n")
                        }
                        Err(e) => full(StatusCode::BAD_REQUEST, "text/plain", format!("reading the body: {e}\n")),
                    };
                }
                return match ctx.file(&file) {
                    Some(bytes) => full(StatusCode::OK, "application/octet-stream", bytes),
                    None => full(StatusCode::NOT_FOUND, "text/plain", "no such file\n"),
                };
            }
            if let Some(text) = path.strip_prefix("/say/") {
                ctx.print(text.to_owned());
                return full(StatusCode::OK, "text/plain", "said\n");
            }
            if let Some(code) = path.strip_prefix("/exit/") {
                let code = code.parse().unwrap_or(1);
                let ctx2 = ctx.clone();
                tokio::spawn(async move {
                    // Let the answer leave before the server stops.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    ctx2.exit(code);
                });
                return full(StatusCode::OK, "text/plain", format!("exiting with {code}\n"));
            }
            full(StatusCode::OK, "text/plain", format!("{} {}\n", req.method(), req.uri()))
        })
    })
}

/// The process routes of the test tool contract: `/argv` (arguments after
/// the program, one a line), `/cwd`, `/uid`, `/memlimit` (bytes, or `max`),
/// `/shm` (bytes).
fn process_route(ctx: &ToolContext, path: &str) -> Option<String> {
    Some(match path {
        "/argv" => ctx.argv().iter().skip(1).map(|a| format!("{a}\n")).collect(),
        "/cwd" => format!("{}\n", ctx.working_dir()),
        "/uid" => format!("{}\n", ctx.user().split(':').next().unwrap_or("0")),
        "/memlimit" => format!("{}\n", ctx.mem_limit_bytes().map_or_else(|| "max".to_owned(), |b| b.to_string())),
        "/shm" => format!("{}\n", ctx.shm_bytes()),
        _ => return None,
    })
}

/// The value of query parameter `key`, percent-decoded (`+` stays).
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

async fn read_input(ctx: &ToolContext) -> std::result::Result<String, String> {
    if let Some(doc) = ctx.env().get(ENV_INPUT_JSON) {
        return Ok(doc.clone());
    }
    if let Some(url) = ctx.env().get(ENV_INPUT_JSON_URL) {
        return fetch(url).await;
    }
    let path = ctx.env().get(ENV_INPUT_JSON_PATH).map(String::as_str).unwrap_or(DEFAULT_INPUT_PATH);
    match ctx.file(path) {
        Some(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        None => Err(format!("no input: no {ENV_INPUT_JSON}, no {ENV_INPUT_JSON_URL}, no file {path}")),
    }
}

/// Fetches a plain-http URL (what a tool in a container would do).
async fn fetch(url: &str) -> std::result::Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad url {url:?}: {e}"))?;
    let authority = uri.authority().ok_or("url without host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let req = Request::get(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(http::header::HOST, authority.as_str())
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
