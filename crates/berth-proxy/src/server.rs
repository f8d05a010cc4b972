//! Serving HTTP on sockets, with the limits that protect the server: what
//! `berth serve` and the examples listen with.
//!
//! See [`Server`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::forward::{BoxError, ClientAddr, Proxy, TUNNEL_CLOSE_WAIT};
use crate::hooks::ProxyHooks;

/// Limits of the listening side.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// A client must send a complete request head within this time: from
    /// the accept for the first request, from going idle for later ones
    /// (so it also bounds how long an idle keep-alive connection stays
    /// open; an HTTP/2 connection with no open stream for this long is
    /// closed with a GOAWAY). Slowloris protection.
    pub header_read_timeout: Duration,
    /// Largest request head accepted (HTTP/1 read buffer, HTTP/2 header
    /// list), in bytes; a larger HTTP/1 head is answered 431.
    pub max_header_bytes: usize,
    /// Most concurrent connections served, for the whole [`Server`] (every
    /// thread and listener of it together); further clients wait in the
    /// kernel's backlog.
    pub max_connections: usize,
    /// After a [`Shutdown`], how long requests in flight may take to
    /// finish before their connections are closed.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A shutdown signal shared by servers and the proxy's websocket tunnels.
/// Cheap to clone; every clone triggers and observes the same signal.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    /// Tasks that outlive the connection that started them (the proxy's
    /// websocket tunnels): a server's worker keeps its runtime, which runs
    /// them, until they have ended.
    tunnels: TaskTracker,
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Starts the shutdown: servers stop accepting and let their
    /// connections finish.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// True once [`trigger`](Self::trigger) was called.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when the shutdown is triggered.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// The tracker of tasks that outlive their connection (the proxy's
    /// websocket tunnels, which end themselves on a shutdown).
    pub(crate) fn tunnels(&self) -> &TaskTracker {
        &self.tunnels
    }

    /// After a shutdown, until the tracked tunnels have ended or `bound`
    /// has passed: a worker runs them on its runtime, and dropping the
    /// runtime would cut them without their close frames.
    async fn tunnels_ended(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while !self.tunnels.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Counts slow clients and says so at most once a minute.
#[derive(Debug, Default)]
struct SlowClients {
    /// Connections closed for an incomplete head, since the last warning.
    count: AtomicU64,
    /// Seconds since `since` of the last warning (0: none yet).
    last_warning: AtomicU64,
    /// The clock's origin.
    since: std::sync::OnceLock<Instant>,
}

impl SlowClients {
    /// How often a warning may be logged.
    const EVERY: Duration = Duration::from_secs(60);

    fn closed(&self, timeout: Duration) {
        let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let since = *self.since.get_or_init(Instant::now);
        let now = since.elapsed().as_secs().max(1);
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= Self::EVERY.as_secs())
            && self.last_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.count.fetch_sub(count, Ordering::Relaxed);
            tracing::warn!(
                connections = count,
                timeout_secs = timeout.as_secs_f64(),
                "closed connections that sent no complete request head in time (slow or idle clients; \
                 at most one such warning a minute)"
            );
        }
    }
}

/// State shared by every thread and listener of one [`Server`].
#[derive(Debug)]
struct Shared {
    limits: ServerLimits,
    permits: Arc<Semaphore>,
    shutdown: Shutdown,
    slow: SlowClients,
    open: AtomicU64,
}

impl Shared {
    /// The next connection to serve and its slot under the connection cap,
    /// or `None` once the shutdown is triggered. Room under the cap comes
    /// first: at the cap, connections wait in the listener's backlog, not
    /// accepted and unserved. A failed accept (out of file descriptors,
    /// mostly) is logged and retried after a pause, never in a spin.
    async fn next_connection(
        &self,
        listener: &TcpListener,
        local: &(dyn std::fmt::Debug + Sync),
    ) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
        let permit = tokio::select! {
            biased;
            () = self.shutdown.triggered() => return None,
            permit = self.permits.clone().acquire_owned() => permit.ok()?,
        };
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.triggered() => return None,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => return Some((permit, stream, peer)),
                    Err(e) => {
                        tracing::warn!(?local, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
}

/// A [`Server`] accepts connections and hands each request to a
/// `tower::Service` (a [`Proxy`], or a service that dispatches between a
/// proxy and an application). It speaks HTTP/1.1 (with upgrades) and
/// HTTP/2 with prior knowledge (h2c), and enforces [`ServerLimits`]:
///
/// - **header-read timeout**: a connection must deliver a complete request
///   head within the timeout of being accepted (counted from the accept,
///   so a client that sends nothing, or trickles a header line at a time,
///   is closed at the same deadline), and every later head within the
///   timeout of the connection going idle, which also closes idle
///   keep-alive connections;
/// - **head size**: a larger HTTP/1 head is answered 431 (an HTTP/2 header
///   list beyond it is refused by the protocol's own mechanism);
/// - **connection cap**: one count for the whole server, however many
///   threads serve; at the cap, new clients wait in the kernel's backlog
///   (a [`serve`](Self::serve) loop holds at most one accepted
///   connection unserved) and established connections go on being served;
/// - **graceful shutdown** ([`Shutdown`]): stop accepting, let requests in
///   flight finish within [`ServerLimits::shutdown_grace`], then close.
///
/// Slow clients are closed quietly: one rate-limited warning says how many.
///
/// Cheap to clone: clones share the connection cap and the shutdown signal.
#[derive(Debug, Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

/// Threads started by [`Server::serve_on_threads`].
#[derive(Debug)]
pub struct ServingThreads {
    handles: Vec<std::thread::JoinHandle<crate::Result<()>>>,
}

impl ServingThreads {
    /// Waits (blocking the calling thread) until every thread has ended:
    /// after a [`Shutdown`] once their connections are done, or on error.
    ///
    /// # Errors
    ///
    /// The first thread's error, or [`crate::Error::Io`] for a thread that
    /// panicked.
    pub fn join(self) -> crate::Result<()> {
        let mut result = Ok(());
        for handle in self.handles {
            let r = handle.join().unwrap_or_else(|_| {
                Err(crate::Error::Io { context: "a serving thread".into(), source: std::io::Error::other("panicked") })
            });
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

impl Server {
    /// A server with `limits` and a [`Shutdown`] of its own.
    pub fn new(limits: ServerLimits) -> Self {
        Server::with_shutdown(limits, Shutdown::new())
    }

    /// A server that stops when `shutdown` is triggered.
    pub fn with_shutdown(limits: ServerLimits, shutdown: Shutdown) -> Self {
        let permits = Arc::new(Semaphore::new(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)));
        Server {
            shared: Arc::new(Shared {
                limits,
                permits,
                shutdown,
                slow: SlowClients::default(),
                open: AtomicU64::new(0),
            }),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &ServerLimits {
        &self.shared.limits
    }

    /// The shutdown signal this server obeys.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shared.shutdown
    }

    /// Connections open now, on every listener of this server.
    pub fn open_connections(&self) -> u64 {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Accepts connections on `listener` and serves each request with a
    /// clone of `service` (the peer's address is in the request's
    /// [`ClientAddr`] extension), until the [`Shutdown`] is triggered and
    /// the connections have finished (within
    /// [`ServerLimits::shutdown_grace`]).
    ///
    /// # Errors
    ///
    /// Only if reading the listener's address fails; accept errors are
    /// logged and retried.
    pub async fn serve<S, B>(&self, listener: TcpListener, service: S) -> crate::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let local = listener
            .local_addr()
            .map_err(|source| crate::Error::Io { context: "reading the listening address".into(), source })?;
        tracing::debug!(%local, "listening");
        let builder = Arc::new(builder(&self.shared.limits));
        let connections = TaskTracker::new();
        let shared = &self.shared;
        loop {
            let Some((permit, stream, peer)) = shared.next_connection(&listener, &local).await else {
                break;
            };
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            let builder = builder.clone();
            let shared = shared.clone();
            connections.spawn(async move {
                shared.open.fetch_add(1, Ordering::Relaxed);
                connection(&builder, &shared, TokioIo::new(stream), peer, service).await;
                shared.open.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }
        drop(listener);
        connections.close();
        connections.wait().await;
        tracing::debug!(%local, "stopped listening");
        Ok(())
    }

    /// Serves on `addr` from `threads` worker threads, each running its own
    /// single-threaded runtime with its own service from
    /// `make_service(thread_index)`, the way nginx runs one worker per core:
    /// a request and its upstream connection stay on one thread, with no
    /// cross-thread wake-ups. One more thread accepts connections and hands
    /// each to the worker serving the fewest (with one `SO_REUSEPORT`
    /// socket per worker, the kernel's hashing left one worker with twice
    /// the connections of the other in some runs, and that worker's core
    /// the bottleneck). The connection cap and the shutdown are shared by
    /// all threads. Returns once the socket listens.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Io`] when binding fails or a thread cannot start
    /// (the threads already started are stopped).
    pub fn serve_on_threads<F, S, B>(
        &self,
        addr: SocketAddr,
        threads: usize,
        make_service: F,
    ) -> crate::Result<ServingThreads>
    where
        F: Fn(usize) -> S,
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let listener =
            listen(addr).map_err(|source| crate::Error::Io { context: format!("binding {addr}"), source })?;
        let mut workers = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let service = make_service(i);
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Handoff>();
            let load = Arc::new(AtomicU64::new(0));
            let server = self.clone();
            let worker_load = load.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("berth-serve-{i}"))
                .spawn(move || server.worker(rx, worker_load, service));
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(source) => {
                    self.abort_threads(handles);
                    return Err(crate::Error::Io { context: "starting a serving thread".into(), source });
                }
            }
            workers.push(Worker { handoff: tx, load });
        }
        let server = self.clone();
        let spawned =
            std::thread::Builder::new().name("berth-accept".into()).spawn(move || server.acceptor(listener, workers));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(source) => {
                self.abort_threads(handles);
                return Err(crate::Error::Io { context: "starting the accepting thread".into(), source });
            }
        }
        Ok(ServingThreads { handles })
    }

    /// The accepting thread: takes a slot under the cap, accepts, and hands
    /// the connection to the least loaded worker, until the shutdown.
    fn acceptor(&self, listener: std::net::TcpListener, workers: Vec<Worker>) -> crate::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| crate::Error::Io { context: "starting the accepting runtime".into(), source })?;
        let shared = &self.shared;
        rt.block_on(async move {
            let local = listener.local_addr().ok();
            let listener = TcpListener::from_std(listener)
                .map_err(|source| crate::Error::Io { context: "listening".into(), source })?;
            tracing::debug!(?local, workers = workers.len(), "accepting");
            let mut next = 0usize;
            loop {
                let Some((permit, stream, peer)) = shared.next_connection(&listener, &local).await else {
                    break;
                };
                let _ = stream.set_nodelay(true);
                let stream = match stream.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot hand a connection to a worker");
                        continue;
                    }
                };
                // The least loaded worker; among equals, the next in turn.
                next = (next + 1) % workers.len();
                let chosen = (0..workers.len())
                    .map(|k| (next + k) % workers.len())
                    .min_by_key(|&w| workers[w].load.load(Ordering::Relaxed))
                    .unwrap_or(0);
                workers[chosen].load.fetch_add(1, Ordering::Relaxed);
                if workers[chosen].handoff.send(Handoff { stream, peer, permit }).is_err() {
                    workers[chosen].load.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(worker = chosen, "a serving thread is gone; closing a connection");
                }
            }
            drop(listener);
            Ok(())
        })
    }

    /// A worker thread: serves the connections handed to it with
    /// `service` until the shutdown, then lets them finish.
    fn worker<S, B>(
        &self,
        mut handoff: UnboundedReceiver<Handoff>,
        load: Arc<AtomicU64>,
        service: S,
    ) -> crate::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| crate::Error::Io { context: "starting a serving runtime".into(), source })?;
        let shared = self.shared.clone();
        rt.block_on(async move {
            let builder = Arc::new(builder(&shared.limits));
            let connections = TaskTracker::new();
            loop {
                let Handoff { stream, peer, permit } = tokio::select! {
                    biased;
                    () = shared.shutdown.triggered() => break,
                    next = handoff.recv() => match next {
                        Some(h) => h,
                        None => break,
                    },
                };
                let stream = match tokio::net::TcpStream::from_std(stream) {
                    Ok(s) => s,
                    Err(e) => {
                        load.fetch_sub(1, Ordering::Relaxed);
                        tracing::warn!(%peer, error = %e, "cannot serve a handed-over connection");
                        continue;
                    }
                };
                let (service, builder, shared, load) = (service.clone(), builder.clone(), shared.clone(), load.clone());
                connections.spawn(async move {
                    shared.open.fetch_add(1, Ordering::Relaxed);
                    connection(&builder, &shared, TokioIo::new(stream), peer, service).await;
                    shared.open.fetch_sub(1, Ordering::Relaxed);
                    load.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            // Connections handed over but not taken yet are closed.
            handoff.close();
            while let Ok(h) = handoff.try_recv() {
                load.fetch_sub(1, Ordering::Relaxed);
                drop(h);
            }
            connections.close();
            connections.wait().await;
            // A websocket's connection task ends with its upgrade; the
            // tunnel goes on as a task of this runtime and closes itself
            // (close frames both ways) after the shutdown.
            shared.shutdown.tunnels_ended(shared.limits.shutdown_grace + 2 * TUNNEL_CLOSE_WAIT).await;
            Ok(())
        })
    }

    /// Stops threads started before a failure.
    fn abort_threads(&self, handles: Vec<std::thread::JoinHandle<crate::Result<()>>>) {
        if handles.is_empty() {
            return;
        }
        self.shared.shutdown.trigger();
        for h in handles {
            let _ = h.join();
        }
    }
}

/// A worker as the accepting thread sees it.
struct Worker {
    /// Where its connections go.
    handoff: UnboundedSender<Handoff>,
    /// Connections it serves (or was handed and will serve).
    load: Arc<AtomicU64>,
}

/// An accepted connection on its way to a worker, with its slot under
/// the cap.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
}

/// A non-blocking listening socket on `addr` (`SO_REUSEADDR`, a backlog of
/// 1024: std's default of 128 drops bursts of new connections).
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The protocol settings from `limits`.
fn builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Serves one connection: requests go to `service`; no complete head
/// within the header timeout of the accept closes it (hyper's own timer
/// covers later heads); a shutdown ends it gracefully within the grace.
async fn connection<S, B>(
    builder: &auto::Builder<TokioExecutor>,
    shared: &Shared,
    io: TokioIo<tokio::net::TcpStream>,
    peer: SocketAddr,
    service: S,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let limits = &shared.limits;
    let first_head = Arc::new(AtomicBool::new(false));
    let seen = first_head.clone();
    let streams = Arc::new(Streams::default());
    let counted = streams.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        // HTTP/1 connections go idle under hyper's header-read timer; an
        // HTTP/2 one is idle when it has no open stream, which only the
        // streams themselves can tell: each holds a guard until its
        // response body is done (or dropped).
        let guard = (req.version() == http::Version::HTTP_2).then(|| StreamGuard::open(&counted));
        req.extensions_mut().insert(ClientAddr(peer));
        let mut service = service.clone();
        async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            let response = service.call(req).await?;
            Ok::<_, Infallible>(response.map(|body| Guarded { body, _guard: guard }))
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let first_deadline = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(first_deadline);
    let mut waiting_first = true;
    // Armed by a shutdown: how long requests in flight may still take.
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    let mut shutting_down = false;
    // How often an HTTP/2 connection is checked for idleness.
    let mut idle_check = tokio::time::interval((limits.header_read_timeout / 4).max(Duration::from_millis(100)));
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                match result {
                    Ok(()) => tracing::trace!(%peer, "connection closed"),
                    Err(e) => {
                        if is_header_timeout(&*e) {
                            shared.slow.closed(limits.header_read_timeout);
                        }
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                return;
            }
            () = &mut first_deadline, if waiting_first => {
                waiting_first = false;
                if !first_head.load(Ordering::Relaxed) {
                    shared.slow.closed(limits.header_read_timeout);
                    tracing::debug!(%peer, "no complete request head in time: closing");
                    return;
                }
            }
            _ = idle_check.tick(), if !shutting_down && streams.http2.load(Ordering::Relaxed) => {
                if streams.idle_for() >= limits.header_read_timeout {
                    tracing::debug!(%peer, "HTTP/2 connection idle: closing");
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                    grace.as_mut().reset(tokio::time::Instant::now() + limits.shutdown_grace);
                }
            }
            () = shared.shutdown.triggered(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
                grace.as_mut().reset(tokio::time::Instant::now() + limits.shutdown_grace);
            }
            () = &mut grace, if shutting_down => {
                tracing::debug!(%peer, "requests still in flight after the shutdown grace: closing");
                return;
            }
        }
    }
}

/// The open streams of an HTTP/2 connection, and since when it has had
/// none.
#[derive(Debug)]
struct Streams {
    /// Whether the connection has carried an HTTP/2 request.
    http2: AtomicBool,
    open: std::sync::atomic::AtomicUsize,
    /// Milliseconds from `start` to when the last stream ended.
    last_end_ms: AtomicU64,
    start: Instant,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            http2: AtomicBool::new(false),
            open: std::sync::atomic::AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
            start: Instant::now(),
        }
    }
}

impl Streams {
    /// How long the connection has had no open stream (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.open.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
        self.start.elapsed().saturating_sub(last)
    }
}

/// One open HTTP/2 stream: counted from its request until its response
/// body is finished or dropped.
#[derive(Debug)]
struct StreamGuard(Arc<Streams>);

impl StreamGuard {
    fn open(streams: &Arc<Streams>) -> Self {
        streams.http2.store(true, Ordering::Relaxed);
        streams.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(streams.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_end_ms.store(ms, Ordering::Release);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its stream counted until it is done.
    struct Guarded<B> {
        #[pin]
        body: B,
        _guard: Option<StreamGuard>,
    }
}

impl<B: Body> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// True when `e` is hyper's header-read timeout.
fn is_header_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && h.is_timeout()
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// Accepts connections on `listener` forever, serving HTTP/1.1 (with
/// upgrades) and HTTP/2 prior knowledge (h2c) through `proxy`.
///
/// # Errors
///
/// Only if reading the listener's address fails; accept errors are logged
/// and retried.
pub async fn serve<H: ProxyHooks>(listener: TcpListener, proxy: Proxy<H>, limits: ServerLimits) -> crate::Result<()> {
    Server::new(limits).serve(listener, proxy).await
}

/// Serves `proxy` on `addr` from `threads` threads, each with its own
/// runtime and [`Proxy::fork`] (see [`Server::serve_on_threads`]). Blocks until every thread has ended
/// (they end only on error).
///
/// The route table's own tasks keep running on the caller's runtime.
///
/// # Errors
///
/// [`crate::Error::Io`] when a thread cannot start its runtime or bind.
pub fn serve_on_threads<H: ProxyHooks>(
    addr: SocketAddr,
    proxy: &Proxy<H>,
    limits: ServerLimits,
    threads: usize,
) -> crate::Result<()> {
    Server::with_shutdown(limits, proxy.shutdown().clone()).serve_on_threads(addr, threads, |_| proxy.fork())?.join()
}

/// Binds `addr` and [`serve`]s on it.
///
/// # Errors
///
/// [`crate::Error::Io`] when binding fails.
pub async fn bind_and_serve<H: ProxyHooks>(
    addr: SocketAddr,
    proxy: Proxy<H>,
    limits: ServerLimits,
) -> crate::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::Io { context: format!("binding {addr}"), source })?;
    serve(listener, proxy, limits).await
}
