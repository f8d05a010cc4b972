//! Shared pieces of the proxy tests: a mock tool with streaming, SSE and
//! websocket routes, a counting manager, a served proxy, and small clients.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use berth_manager::mock::{MockBody, MockHandler, ToolContext};
use berth_manager::{
    ContainerInfo, ContainerManager, ContainerSpec, Endpoint, EventStreamBox, LabelScheme, ListFilter, LogLine,
    LogOptions, LogStreamBox, MockConfig, MockEngine, MockManager, VolumeInfo,
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;

/// A mock tool with the routes the proxy tests need:
/// `/headers` (request head as JSON), `/bytes/<n>` (streamed), `/echo`
/// (counts the uploaded body), `/sse?n=`, `/ws` (websocket echo), `/hang`
/// (never answers), and the default tool's routes otherwise.
pub fn rich_tool(warmup: Duration) -> MockHandler {
    let fallback = berth_manager::mock::default_tool(warmup);
    Arc::new(move |ctx: ToolContext, req: Request<Incoming>| {
        let fallback = fallback.clone();
        Box::pin(async move {
            let path = req.uri().path().to_owned();
            match path.as_str() {
                "/headers" => {
                    let mut map = serde_json::Map::new();
                    map.insert("uri".into(), req.uri().to_string().into());
                    map.insert("method".into(), req.method().as_str().into());
                    for (k, v) in req.headers() {
                        let prev = map.get(k.as_str()).and_then(|p| p.as_str()).map(str::to_owned);
                        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                        map.insert(
                            k.as_str().into(),
                            match prev {
                                Some(p) => format!("{p}|{v}").into(),
                                None => v.into(),
                            },
                        );
                    }
                    text(StatusCode::OK, serde_json::Value::Object(map).to_string())
                }
                "/echo" => {
                    let mut body = req.into_body();
                    let (mut n, mut sum) = (0u64, 0u32);
                    while let Some(frame) = body.frame().await {
                        let Ok(frame) = frame else { break };
                        if let Some(d) = frame.data_ref() {
                            n += d.len() as u64;
                            sum = d.iter().fold(sum, |s, b| s.wrapping_add(u32::from(*b)));
                        }
                    }
                    text(StatusCode::OK, format!("bytes={n} sum={sum}\n"))
                }
                "/sse" => {
                    let n: usize =
                        req.uri().query().and_then(|q| q.strip_prefix("n=")).and_then(|v| v.parse().ok()).unwrap_or(3);
                    let stream = futures_util::stream::unfold(0usize, move |i| async move {
                        if i >= n {
                            return None;
                        }
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(format!("data: event {i}\n\n")))), i + 1))
                    });
                    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
                    resp.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
                    resp
                }
                "/ws" => websocket_echo(req),
                "/hang" => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    text(StatusCode::OK, "late".into())
                }
                p if p.starts_with("/bytes/") => {
                    let total: u64 = p["/bytes/".len()..].parse().unwrap_or(0);
                    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                    let stream = futures_util::stream::unfold(total, move |left| {
                        let chunk = chunk.clone();
                        async move {
                            if left == 0 {
                                return None;
                            }
                            let n = left.min(chunk.len() as u64);
                            Some((Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))), left - n))
                        }
                    });
                    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
                    resp.headers_mut().insert("content-length", total.to_string().parse().unwrap());
                    resp
                }
                _ => fallback(ctx, req).await,
            }
        })
    })
}

fn text(status: StatusCode, body: String) -> Response<MockBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp
}

/// Close frames the mock tools' websocket echo has received (from any
/// test of the binary).
pub static WS_CLOSES_RECEIVED: AtomicU64 = AtomicU64::new(0);

fn websocket_echo(mut req: Request<Incoming>) -> Response<MockBody> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text(StatusCode::BAD_REQUEST, "not a websocket request".into());
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                WS_CLOSES_RECEIVED.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
    let h = resp.headers_mut();
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    resp
}

/// A mock manager running [`rich_tool`] with the given default warm-up.
pub fn rich_manager(warmup: Duration) -> MockManager {
    MockManager::with_config(
        MockEngine::new(),
        MockConfig { labels: LabelScheme::default(), default_warmup: warmup, handler: Some(rich_tool(warmup)) },
    )
}

/// Counts calls into the wrapped manager: all of them, and those naming
/// each container (calls naming none, like `list`, count for every name),
/// so a test on a shared engine can tell its own container's calls from
/// those other tests' containers cause.
pub struct CountingManager<M> {
    pub inner: M,
    pub calls: AtomicU64,
    by_name: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    unnamed: AtomicU64,
}

impl<M> CountingManager<M> {
    pub fn new(inner: M) -> Self {
        CountingManager { inner, calls: AtomicU64::new(0), by_name: Default::default(), unnamed: AtomicU64::new(0) }
    }
    /// Every call so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
    /// Calls naming `name`, plus calls naming no container.
    pub fn calls_for(&self, name: &str) -> u64 {
        let named = self.by_name.lock().unwrap().get(name).copied().unwrap_or(0);
        named + self.unnamed.load(Ordering::SeqCst)
    }
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.unnamed.fetch_add(1, Ordering::SeqCst);
    }
    fn tick_name(&self, name: &str) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.by_name.lock().unwrap().entry(name.to_owned()).or_default() += 1;
    }
}

#[async_trait]
impl<M: ContainerManager> ContainerManager for CountingManager<M> {
    fn label_scheme(&self) -> &LabelScheme {
        self.inner.label_scheme()
    }
    fn capabilities(&self) -> berth_manager::Capabilities {
        self.inner.capabilities()
    }
    async fn launch(&self, spec: &ContainerSpec) -> berth_manager::Result<ContainerInfo> {
        self.tick_name(&spec.name);
        self.inner.launch(spec).await
    }
    async fn inspect(&self, name: &str) -> berth_manager::Result<ContainerInfo> {
        self.tick_name(name);
        self.inner.inspect(name).await
    }
    async fn list(&self, filter: &ListFilter) -> berth_manager::Result<Vec<ContainerInfo>> {
        self.tick();
        self.inner.list(filter).await
    }
    async fn logs(&self, name: &str, options: LogOptions) -> berth_manager::Result<Vec<LogLine>> {
        self.tick_name(name);
        self.inner.logs(name, options).await
    }
    async fn follow_logs(&self, name: &str, options: LogOptions) -> berth_manager::Result<LogStreamBox> {
        self.tick_name(name);
        self.inner.follow_logs(name, options).await
    }
    async fn remove(&self, name: &str) -> berth_manager::Result<()> {
        self.tick_name(name);
        self.inner.remove(name).await
    }
    async fn endpoint(&self, name: &str) -> berth_manager::Result<Endpoint> {
        self.tick_name(name);
        self.inner.endpoint(name).await
    }
    async fn events(&self) -> berth_manager::Result<EventStreamBox> {
        self.tick();
        self.inner.events().await
    }
    async fn prune_volumes(&self) -> berth_manager::Result<Vec<String>> {
        self.tick();
        self.inner.prune_volumes().await
    }
    async fn list_volumes(&self) -> berth_manager::Result<Vec<VolumeInfo>> {
        self.tick();
        self.inner.list_volumes().await
    }
    async fn persistent_volumes(&self) -> berth_manager::Result<Vec<VolumeInfo>> {
        self.tick();
        self.inner.persistent_volumes().await
    }
    async fn nodes(&self) -> berth_manager::Result<Vec<berth_manager::NodeInfo>> {
        self.tick();
        self.inner.nodes().await
    }
    async fn remove_persistent_volume(&self, name: &str) -> berth_manager::Result<()> {
        self.tick_name(name);
        self.inner.remove_persistent_volume(name).await
    }
}

/// One request over a fresh HTTP/1.1 connection; `(status, headers, body)`.
pub async fn request(addr: SocketAddr, req: Request<Full<Bytes>>) -> (StatusCode, http::HeaderMap, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, headers, body)
}

/// GET `path` with `Host: host`.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    let req = Request::get(path).header("host", host).body(Full::new(Bytes::new())).unwrap();
    request(addr, req).await
}

/// Polls until `path` answers something other than 503.
pub async fn wait_not_503(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    for _ in 0..300 {
        let r = get(addr, host, path).await;
        if r.0 != StatusCode::SERVICE_UNAVAILABLE {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} stayed 503");
}

/// Current resident set size of this process, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An empty-body request builder shortcut.
pub fn empty() -> Empty<Bytes> {
    Empty::new()
}

/// Spawns `berth_proxy::serve` on 127.0.0.1:0; returns its address.
pub async fn serve<H: berth_proxy::ProxyHooks>(
    proxy: berth_proxy::Proxy<H>,
    limits: berth_proxy::ServerLimits,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = berth_proxy::serve(listener, proxy, limits).await;
    });
    addr
}
