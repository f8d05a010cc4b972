//! [`Proxy`]: the forwarding `tower::Service`.
//!
//! One request goes through these phases:
//! 1. route resolution ([`Routing::resolve`], pure);
//! 2. authorization ([`ProxyHooks::authorize`]);
//! 3. route-table lookup ([`RouteTable::lookup`], no engine call for known
//!    names): not found → 404 page, starting → please-wait page, failed →
//!    failure page;
//! 4. forwarding through a pooled hyper client, bodies streamed both ways,
//!    hop-by-hop headers removed, `X-Forwarded-*` set, named cookies
//!    stripped, upgrades (websockets) tunnelled;
//! 5. activity reported off the hot path when the response body ends.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::hooks::{AllowAll, ProxyHooks};
use crate::pages::{self, WaitingPage};
use crate::route::{PathRouting, Route, RouteDecision, Routing};
use crate::server::Shutdown;
use crate::table::{Lookup, RouteTable, Upstream};
use berth_activity::{ActivityKind, ActivityRecord, ActivityRecorder};
use berth_manager::RoutingMode;
use tokio_util::task::TaskTracker;

/// Boxed error type of bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of every response the proxy gives.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The client's address, inserted as a request extension by whoever
/// accepts the connection ([`crate::serve`] does); used for
/// `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Header carrying the authenticated user to a container; set only by
/// berth's hooks, stripped from clients' requests.
pub const X_BERTH_USER: &str = "x-berth-user";

/// Header carrying the authenticated user's groups (comma-separated) to a
/// container; set only by berth's hooks, stripped from clients' requests.
pub const X_BERTH_GROUPS: &str = "x-berth-groups";

/// Header carrying the authenticated user's email address to a container;
/// set only by berth's hooks, stripped from clients' requests.
pub const X_BERTH_EMAIL: &str = "x-berth-email";

/// Settings of a [`Proxy`].
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// How container names are found in requests.
    pub routing: Routing,
    /// Look of the please-wait page.
    pub waiting_page: WaitingPage,
    /// Cookies never forwarded to containers (e.g. the host application's
    /// session cookie).
    pub strip_cookies: Vec<String>,
    /// Request headers never forwarded as the client sent them (default:
    /// `X-Berth-User`, `X-Berth-Groups` and `X-Berth-Email`, which only
    /// berth's hooks may set).
    pub strip_headers: Vec<HeaderName>,
    /// Trust and extend incoming `X-Forwarded-*` headers (only behind a
    /// trusted front proxy); otherwise they are replaced.
    pub trust_forwarded_headers: bool,
    /// `X-Forwarded-Proto` sent upstream when not trusted from the client.
    pub forwarded_proto: String,
    /// Longest wait for a TCP connection to a container.
    pub connect_timeout: Duration,
    /// Longest wait for a container's response head.
    pub upstream_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per container.
    pub pool_max_idle_per_host: usize,
    /// Lines served by the logs sub-path.
    pub log_lines: usize,
    /// Responses with a `Content-Length` up to this many bytes are read
    /// whole before berth answers, so head and body leave in one write (one
    /// TCP segment, one wake-up of the client) instead of two. Larger or
    /// unsized responses (downloads, server-sent events) always stream. 0
    /// disables it.
    pub coalesce_below: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            routing: Routing::Path(PathRouting::default()),
            waiting_page: WaitingPage::default(),
            strip_cookies: Vec::new(),
            strip_headers: vec![
                HeaderName::from_static(X_BERTH_USER),
                HeaderName::from_static(X_BERTH_GROUPS),
                HeaderName::from_static(X_BERTH_EMAIL),
            ],
            trust_forwarded_headers: false,
            forwarded_proto: "http".to_owned(),
            connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle_per_host: 512,
            log_lines: 1000,
            coalesce_below: 64 * 1024,
        }
    }
}

struct Inner<H: ProxyHooks> {
    config: ProxyConfig,
    /// The please-wait page for hostname routes (polling: no event stream).
    host_waiting_page: WaitingPage,
    table: Arc<RouteTable>,
    hooks: Arc<H>,
    activity: ActivityRecorder,
    client: Client<HttpConnector, UnsyncBoxBody<Bytes, BoxError>>,
    /// Ends websocket tunnels (with close frames) when triggered.
    shutdown: Shutdown,
    /// The websocket tunnels open now.
    tunnels: TaskTracker,
}

/// The proxy as a `tower::Service` over any request body; mount it with
/// `nest_service` / `fallback_service`, or serve it with [`crate::serve`].
pub struct Proxy<H: ProxyHooks = AllowAll> {
    inner: Arc<Inner<H>>,
}

impl<H: ProxyHooks> Clone for Proxy<H> {
    fn clone(&self) -> Self {
        Proxy { inner: self.inner.clone() }
    }
}

impl<H: ProxyHooks> std::fmt::Debug for Proxy<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

impl Proxy<AllowAll> {
    /// A proxy with default hooks and no activity recording.
    pub fn new(table: Arc<RouteTable>, config: ProxyConfig) -> Self {
        Proxy::with_hooks(table, config, AllowAll, ActivityRecorder::disabled())
    }
}

impl<H: ProxyHooks> Proxy<H> {
    /// A proxy with `hooks` reporting to `activity`.
    pub fn with_hooks(table: Arc<RouteTable>, config: ProxyConfig, hooks: H, activity: ActivityRecorder) -> Self {
        let shutdown = Shutdown::new();
        let tunnels = shutdown.tunnels().clone();
        Self::assemble(table, config, Arc::new(hooks), activity, shutdown, tunnels)
    }

    fn assemble(
        table: Arc<RouteTable>,
        config: ProxyConfig,
        hooks: Arc<H>,
        activity: ActivityRecorder,
        shutdown: Shutdown,
        tunnels: TaskTracker,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        // The timer makes the pool close idle connections after
        // `pool_idle_timeout`; without it they were only dropped when next
        // checked out, so a container's idle connection (and its buffers,
        // some 10 KiB) stayed until the container went away.
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .build(connector);
        let host_waiting_page = WaitingPage { events_url: None, ..config.waiting_page.clone() };
        Proxy {
            inner: Arc::new(Inner { config, host_waiting_page, table, hooks, activity, client, shutdown, tunnels }),
        }
    }

    /// A proxy sharing this one's route table, hooks, activity recorder
    /// and settings, with a connection pool of its own. One per runtime
    /// thread ([`crate::serve_on_threads`]) keeps every upstream connection
    /// on the thread that uses it, so no request crosses threads.
    pub fn fork(&self) -> Self {
        let i = &self.inner;
        Self::assemble(
            i.table.clone(),
            i.config.clone(),
            i.hooks.clone(),
            i.activity.clone(),
            i.shutdown.clone(),
            i.tunnels.clone(),
        )
    }

    /// The signal that ends this proxy's websocket tunnels (shared by its
    /// forks): once triggered, each tunnel finishes the frames in flight,
    /// sends both ends a close frame (1001, going away) and closes. Give it
    /// to the [`Server`](crate::Server) serving the proxy, so one trigger
    /// stops both.
    pub fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    /// Websocket (and other upgraded) tunnels open now, over all forks.
    pub fn open_tunnels(&self) -> usize {
        self.inner.tunnels.len()
    }

    /// Completes when no tunnel is open (after a [`shutdown`](Self::shutdown),
    /// within about [`TUNNEL_CLOSE_WAIT`] plus the peers' answers).
    pub async fn tunnels_closed(&self) {
        self.inner.tunnels.close();
        self.inner.tunnels.wait().await;
        self.inner.tunnels.reopen();
    }

    /// The route table.
    pub fn table(&self) -> &Arc<RouteTable> {
        &self.inner.table
    }

    /// The activity recorder.
    pub fn activity(&self) -> &ActivityRecorder {
        &self.inner.activity
    }

    /// The settings.
    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }

    /// Handles one request; never fails (errors become pages).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let inner = &self.inner;
        let (parts, body) = req.into_parts();
        let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let decision = inner.config.routing.resolve(&parts.uri, host);
        let json = pages::wants_json(parts.headers.get(header::ACCEPT));
        match decision {
            RouteDecision::NotMine => full(pages::error(StatusCode::NOT_FOUND, "not found")),
            RouteDecision::InvalidName(name) => full(inner.hooks.not_found_page(&name, json)),
            RouteDecision::Redirect(location) => full(pages::redirect(&location)),
            RouteDecision::Logs(name) => {
                if let Some(resp) = inner.hooks.intercept(&parts, &name) {
                    return full(resp);
                }
                if let Err(d) = inner.hooks.authorize(&parts, &name).await {
                    return full(inner.hooks.denied_page(&parts, &name, &d, json));
                }
                self.logs(&name, json).await
            }
            RouteDecision::Forward(route) => {
                if let Some(resp) = inner.hooks.intercept(&parts, &route.container) {
                    return full(resp);
                }
                let ctx = match inner.hooks.authorize(&parts, &route.container).await {
                    Ok(ctx) => ctx,
                    Err(d) => return full(inner.hooks.denied_page(&parts, &route.container, &d, json)),
                };
                match inner.table.lookup(&route.container).await {
                    Lookup::Ready(upstream) => match elsewhere(&upstream, &route) {
                        Some(location) => full(pages::redirect(&location)),
                        None => self.forward(upstream, route, parts, body, ctx).await,
                    },
                    Lookup::Starting => {
                        // A container's host belongs to its tool: a page
                        // there cannot follow berth's event stream, so it polls.
                        let page = match route.kind {
                            RoutingMode::Path => &inner.config.waiting_page,
                            RoutingMode::Host => &inner.host_waiting_page,
                        };
                        full(inner.hooks.waiting_page(page, &route.container, json))
                    }
                    Lookup::Failed(f) => full(inner.hooks.failure_page(&route.container, &f.reason, &f.log_tail, json)),
                    Lookup::Missing => full(inner.hooks.not_found_page(&route.container, json)),
                }
            }
        }
    }

    async fn logs(&self, name: &str, json: bool) -> Response<ProxyBody> {
        let options = berth_manager::LogOptions { tail: Some(self.inner.config.log_lines), since: None };
        match self.inner.table.manager().logs(name, options).await {
            Ok(lines) => {
                let mut text = String::new();
                for l in lines {
                    text.push_str(&berth_manager::format_rfc3339(l.timestamp));
                    text.push(' ');
                    text.push_str(&l.line);
                    text.push('\n');
                }
                let mut resp = Response::new(Full::new(Bytes::from(text)));
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                full(resp)
            }
            Err(e) if e.is_not_found() => full(self.inner.hooks.not_found_page(name, json)),
            Err(e) => {
                let e = crate::Error::from(e);
                full(pages::error(e.status(), &e.to_string()))
            }
        }
    }

    #[allow(clippy::too_many_lines)]
    async fn forward<B>(
        &self,
        upstream: Upstream,
        route: Route,
        mut parts: http::request::Parts,
        body: B,
        ctx: H::Ctx,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let inner = &self.inner;
        let started = SystemTime::now();
        let started_at = std::time::Instant::now();
        let recording = inner.activity.is_enabled();
        // Only needed for activity records; skipped when nothing records.
        let client_path = if recording {
            parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default()
        } else {
            String::new()
        };
        let upgrade = is_upgrade_request(&parts.headers, parts.version);
        let websocket = upgrade
            && parts.headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let client_upgrade = if upgrade { parts.extensions.remove::<hyper::upgrade::OnUpgrade>() } else { None };

        let strip = upstream.hints.strip_prefix.unwrap_or(route.stripped);
        let original = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let upstream_path = route.path_for(strip, original);
        let path_and_query = match PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(upstream_path.as_bytes())) {
            Ok(p) => p,
            Err(e) => return full(pages::error(StatusCode::BAD_REQUEST, &format!("bad request path: {e}"))),
        };
        // What a tool's redirects are rewritten against: the prefix it does
        // not know (when stripped) and the origins it may think it has.
        let stripped_prefix = (strip && route.kind == RoutingMode::Path).then_some(route.forwarded_prefix.as_str());
        let mut uri_parts = http::uri::Parts::default();
        uri_parts.scheme = Some(Scheme::HTTP);
        uri_parts.authority = Some(upstream.authority.clone());
        uri_parts.path_and_query = Some(path_and_query);
        let uri = match Uri::from_parts(uri_parts) {
            Ok(uri) => uri,
            Err(e) => return full(pages::error(StatusCode::BAD_REQUEST, &format!("bad request uri: {e}"))),
        };
        let original_host = parts
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
        let client_addr = parts.extensions.get::<ClientAddr>().map(|c| c.0);
        prepare_upstream_headers(
            &mut parts.headers,
            &inner.config,
            stripped_prefix,
            original_host.as_ref(),
            client_addr,
            upgrade,
        );
        let proto = parts.headers.get(&X_FORWARDED_PROTO).cloned();
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        inner.hooks.rewrite_upstream(&ctx, &route, &mut parts);

        let body = body.map_err(Into::into).boxed_unsync();
        let upstream_req = Request::from_parts(parts, body);
        let response =
            match tokio::time::timeout(inner.config.upstream_timeout, inner.client.request(upstream_req)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::debug!(container = %route.container, error = %e, "upstream request failed");
                    self.record(&route.container, started, started_at, &client_path, 502, 0, ActivityKind::Http);
                    let err = crate::Error::Upstream { container: route.container.clone(), source: Box::new(e) };
                    return full(pages::error(err.status(), &format!("{err}: the tool did not answer")));
                }
                Err(_) => {
                    self.record(&route.container, started, started_at, &client_path, 504, 0, ActivityKind::Http);
                    let err = crate::Error::UpstreamTimeout {
                        container: route.container.clone(),
                        timeout: inner.config.upstream_timeout,
                    };
                    return full(pages::error(err.status(), &err.to_string()));
                }
            };

        let (mut resp_parts, resp_body) = response.into_parts();
        let status = resp_parts.status;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let upstream_upgrade = resp_parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
            match (client_upgrade, upstream_upgrade) {
                (Some(client_up), Some(upstream_up)) => {
                    remove_hop_by_hop(&mut resp_parts.headers, true);
                    self.record(&route.container, started, started_at, &client_path, 101, 0, ActivityKind::Http);
                    let this = self.clone();
                    let container = route.container.clone();
                    inner.tunnels.spawn(async move {
                        this.tunnel(client_up, upstream_up, container, client_path, websocket).await;
                    });
                    return Response::from_parts(resp_parts, Empty::new().map_err(|e| match e {}).boxed_unsync());
                }
                _ => {
                    return full(pages::error(
                        StatusCode::BAD_GATEWAY,
                        "upstream switched protocols without an upgrade request",
                    ));
                }
            }
        }
        remove_hop_by_hop(&mut resp_parts.headers, false);
        if let Some(location) = resp_parts.headers.get(header::LOCATION) {
            let public = PublicOrigin {
                scheme: proto.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("http"),
                host: original_host.as_ref().and_then(|h| h.to_str().ok()),
                upstream: upstream.authority.as_str(),
                prefix: stripped_prefix,
            };
            if let Some(rewritten) = location.to_str().ok().and_then(|l| public.rewrite_location(l))
                && let Ok(v) = HeaderValue::from_str(&rewritten)
            {
                resp_parts.headers.insert(header::LOCATION, v);
            }
        }
        let small = resp_parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n <= inner.config.coalesce_below);
        if small {
            let collected = tokio::time::timeout(inner.config.upstream_timeout, resp_body.collect()).await;
            let bytes = match collected {
                Ok(Ok(c)) => c.to_bytes(),
                Ok(Err(e)) => {
                    tracing::debug!(container = %route.container, error = %e, "upstream body failed");
                    self.record(&route.container, started, started_at, &client_path, 502, 0, ActivityKind::Http);
                    return full(pages::error(StatusCode::BAD_GATEWAY, "the tool broke off its response"));
                }
                Err(_) => {
                    self.record(&route.container, started, started_at, &client_path, 504, 0, ActivityKind::Http);
                    return full(pages::error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the tool did not finish its response in time",
                    ));
                }
            };
            if recording {
                self.record(
                    &route.container,
                    started,
                    started_at,
                    &client_path,
                    status.as_u16(),
                    bytes.len() as u64,
                    ActivityKind::Http,
                );
            }
            return Response::from_parts(resp_parts, Full::new(bytes).map_err(|e| match e {}).boxed_unsync());
        }
        if !recording {
            return Response::from_parts(resp_parts, resp_body.map_err(Into::into).boxed_unsync());
        }
        let counted = CountingBody {
            inner: resp_body,
            bytes: 0,
            report: Some(Report {
                recorder: inner.activity.clone(),
                container: route.container,
                path: client_path,
                status: status.as_u16(),
                time: started,
                started_at,
            }),
        };
        Response::from_parts(resp_parts, counted.boxed_unsync())
    }

    /// Copies bytes between the upgraded client and upstream connections,
    /// reporting websocket activity at most once a second. On shutdown a
    /// websocket is closed cleanly (see [`close_websocket`]).
    async fn tunnel(
        &self,
        client: hyper::upgrade::OnUpgrade,
        upstream: hyper::upgrade::OnUpgrade,
        container: String,
        path: String,
        websocket: bool,
    ) {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(%container, error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let recorder = self.inner.activity.clone();
        let mut a = vec![0u8; 16 * 1024];
        let mut b = vec![0u8; 16 * 1024];
        // Where each direction's frames are, so a shutdown can close
        // between frames.
        let mut to_upstream = FrameCursor::default();
        let mut to_client = FrameCursor::default();
        let mut pending: u64 = 0;
        let mut last_report = std::time::Instant::now();
        let mut closing = false;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let n = tokio::select! {
                r = client.read(&mut a) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if websocket { to_upstream.advance(&a[..n]); }
                        if upstream.write_all(&a[..n]).await.is_err() { break }
                        n
                    }
                },
                r = upstream.read(&mut b) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if websocket { to_client.advance(&b[..n]); }
                        if client.write_all(&b[..n]).await.is_err() { break }
                        n
                    }
                },
                () = self.inner.shutdown.triggered() => {
                    closing = true;
                    break;
                }
            };
            pending += n as u64;
            if last_report.elapsed() >= Duration::from_secs(1) {
                recorder.record(ActivityRecord {
                    container: container.clone(),
                    time: SystemTime::now(),
                    path: path.clone(),
                    status: 101,
                    bytes: std::mem::take(&mut pending),
                    kind: ActivityKind::WebSocket,
                    duration: Duration::ZERO,
                });
                last_report = std::time::Instant::now();
            }
        }
        if closing && websocket {
            let mut ends = TunnelEnds { client: &mut client, upstream: &mut upstream, a: &mut a, b: &mut b };
            pending += close_websocket(&mut ends, &mut to_upstream, &mut to_client).await;
            tracing::debug!(%container, "websocket closed for shutdown");
        }
        if pending > 0 {
            recorder.record(ActivityRecord {
                container,
                time: SystemTime::now(),
                path,
                status: 101,
                bytes: pending,
                kind: ActivityKind::WebSocket,
                duration: Duration::ZERO,
            });
        }
        let _ = client.shutdown().await;
        let _ = upstream.shutdown().await;
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        container: &str,
        time: SystemTime,
        started_at: std::time::Instant,
        path: &str,
        status: u16,
        bytes: u64,
        kind: ActivityKind,
    ) {
        self.inner.activity.record(ActivityRecord {
            container: container.to_owned(),
            time,
            path: path.to_owned(),
            status,
            bytes,
            kind,
            duration: started_at.elapsed(),
        });
    }
}

/// Longest a shutdown waits for a websocket's frames in flight to end, and
/// then for the peers to answer the close frames.
pub const TUNNEL_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A close frame from berth to a websocket client (unmasked, status 1001:
/// going away).
const CLOSE_TO_CLIENT: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];

/// The two ends of a tunnel and their buffers.
struct TunnelEnds<'a, C, U> {
    client: &'a mut C,
    upstream: &'a mut U,
    a: &'a mut [u8],
    b: &'a mut [u8],
}

/// Closes a websocket tunnel cleanly: lets each direction finish the frame
/// it is in the middle of (forwarding nothing after it), sends the client
/// and the tool a close frame with status 1001 (going away), then waits
/// briefly for their answers. Everything is bounded by
/// [`TUNNEL_CLOSE_WAIT`]; a peer that does not finish its frame in time is
/// cut off without a close frame. Returns the bytes forwarded.
async fn close_websocket<C, U>(
    ends: &mut TunnelEnds<'_, C, U>,
    to_upstream: &mut FrameCursor,
    to_client: &mut FrameCursor,
) -> u64
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + TUNNEL_CLOSE_WAIT;
    let mut forwarded = 0u64;
    while !(to_upstream.at_boundary() && to_client.at_boundary()) {
        let step = tokio::select! {
            r = ends.client.read(ends.a), if !to_upstream.at_boundary() => match r {
                Ok(n) if n > 0 => {
                    let k = to_upstream.advance_to_boundary(&ends.a[..n]);
                    ends.upstream.write_all(&ends.a[..k]).await.map(|()| k)
                }
                _ => return forwarded,
            },
            r = ends.upstream.read(ends.b), if !to_client.at_boundary() => match r {
                Ok(n) if n > 0 => {
                    let k = to_client.advance_to_boundary(&ends.b[..n]);
                    ends.client.write_all(&ends.b[..k]).await.map(|()| k)
                }
                _ => return forwarded,
            },
            () = tokio::time::sleep_until(deadline) => return forwarded,
        };
        match step {
            Ok(k) => forwarded += k as u64,
            Err(_) => return forwarded,
        }
    }
    let _ = ends.client.write_all(&CLOSE_TO_CLIENT).await;
    let _ = ends.upstream.write_all(&masked_close()).await;
    let _ = ends.client.flush().await;
    let _ = ends.upstream.flush().await;
    // Their answers (close frames) are read and dropped: each side has
    // already been told. A side is done with its first whole frame (its
    // close) or when it hangs up; then berth, the server side of both
    // conversations, closes the connections.
    let (mut from_client, mut from_upstream) = (Answer::default(), Answer::default());
    while !(from_client.done && from_upstream.done) {
        tokio::select! {
            r = ends.client.read(ends.a), if !from_client.done => from_client.take(r, ends.a),
            r = ends.upstream.read(ends.b), if !from_upstream.done => from_upstream.take(r, ends.b),
            () = tokio::time::sleep_until(deadline + TUNNEL_CLOSE_WAIT) => break,
        }
    }
    forwarded
}

/// A peer's answer to berth's close frame, as it arrives.
#[derive(Debug, Default)]
struct Answer {
    frames: FrameCursor,
    done: bool,
}

impl Answer {
    /// Takes the result of one read into `buf`.
    fn take(&mut self, read: std::io::Result<usize>, buf: &[u8]) {
        match read {
            Ok(n) if n > 0 => {
                let used = self.frames.advance_to_boundary(&buf[..n]);
                self.done = used > 0 && self.frames.at_boundary();
            }
            _ => self.done = true,
        }
    }
}

/// A close frame from berth to a tool, masked as frames from clients must
/// be (status 1001: going away).
fn masked_close() -> [u8; 8] {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos());
    let m = hasher.finish().to_le_bytes();
    [0x88, 0x82, m[0], m[1], m[2], m[3], 0x03 ^ m[0], 0xE9 ^ m[1]]
}

/// Where a stream of websocket frames (RFC 6455 §5.2) is: between frames,
/// or inside one (its header so far, or the payload bytes left).
#[derive(Debug, Default, Clone)]
struct FrameCursor {
    /// The current frame's header bytes seen so far.
    header: [u8; 14],
    /// How many of `header` are filled (0: between frames or in a payload).
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload: u64,
}

impl FrameCursor {
    /// True between two frames.
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload == 0
    }

    /// Moves over `data`, wherever frames begin and end in it.
    fn advance(&mut self, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            let k = self.step(rest);
            rest = &rest[k..];
        }
    }

    /// Moves over `data` up to the first frame boundary it reaches (or all
    /// of it) and returns how many bytes that was.
    fn advance_to_boundary(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        while used < data.len() {
            used += self.step(&data[used..]);
            if self.at_boundary() {
                break;
            }
        }
        used
    }

    /// Consumes header bytes one at a time, or payload bytes in bulk;
    /// returns how many of `data` (not empty) it took.
    fn step(&mut self, data: &[u8]) -> usize {
        if self.payload > 0 {
            let k = usize::try_from(self.payload).unwrap_or(usize::MAX).min(data.len());
            self.payload -= k as u64;
            return k;
        }
        self.header[self.have] = data[0];
        self.have += 1;
        if self.have >= 2 {
            let len7 = self.header[1] & 0x7f;
            let extended = match len7 {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
            if self.have == 2 + extended + mask {
                self.payload = match extended {
                    2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
                    8 => u64::from_be_bytes([
                        self.header[2],
                        self.header[3],
                        self.header[4],
                        self.header[5],
                        self.header[6],
                        self.header[7],
                        self.header[8],
                        self.header[9],
                    ]),
                    _ => u64::from(len7),
                };
                self.have = 0;
            }
        }
        1
    }
}

impl<H: ProxyHooks, B> tower_service::Service<Request<B>> for Proxy<H>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

/// Where a request that came in under the routing a container is not
/// served under should go instead: its public URL plus the rest of the
/// path (a tool that cannot be relocated is served by hostname only).
fn elsewhere(upstream: &Upstream, route: &Route) -> Option<String> {
    let only = upstream.hints.routing?;
    if only == route.kind {
        return None;
    }
    let base = upstream.hints.public_url.as_deref()?;
    let rest = route.path_for(true, &route.upstream_path);
    Some(format!("{}/{}", base.trim_end_matches('/'), rest.trim_start_matches('/')))
}

/// What a tool's `Location` headers are rewritten against.
struct PublicOrigin<'a> {
    /// `http` or `https`, as berth told the tool in `X-Forwarded-Proto`.
    scheme: &'a str,
    /// The `Host` the client used (and the tool was given).
    host: Option<&'a str>,
    /// The container's own address.
    upstream: &'a str,
    /// The path prefix the tool does not know about (stripped), if any.
    prefix: Option<&'a str>,
}

impl PublicOrigin<'_> {
    /// The rewritten `Location`, or `None` to keep it. A redirect to the
    /// tool's own origin (a path, the container's address, or the `Host`
    /// berth sent) is made public: the container's address becomes the
    /// client's host, and a stripped prefix is put back in front of the
    /// path, unless the path already starts with it (a tool that knows its
    /// prefix). Redirects elsewhere (a login provider) are kept.
    fn rewrite_location(&self, location: &str) -> Option<String> {
        let host = self.host;
        let with_prefix = |path: &str| -> Option<String> {
            let prefix = self.prefix?;
            let already = path.strip_prefix(prefix).is_some_and(|r| r.is_empty() || r.starts_with(['/', '?', '#']));
            (!already).then(|| format!("{prefix}{path}"))
        };
        if location.starts_with('/') && !location.starts_with("//") {
            return with_prefix(location);
        }
        let (scheme, rest) = location.split_once("://")?;
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return None;
        }
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let own =
            authority.eq_ignore_ascii_case(self.upstream) || host.is_some_and(|h| authority.eq_ignore_ascii_case(h));
        if !own {
            return None;
        }
        let path = if path.is_empty() { "/" } else { path };
        let path = if path.starts_with('/') {
            with_prefix(path).unwrap_or_else(|| path.to_owned())
        } else {
            format!("/{path}")
        };
        let public_host = host.unwrap_or(authority);
        let rewritten = format!("{}://{public_host}{path}", self.scheme);
        (rewritten != location).then_some(rewritten)
    }
}

fn full(resp: Response<Full<Bytes>>) -> Response<ProxyBody> {
    resp.map(|b| b.map_err(|e| match e {}).boxed_unsync())
}

/// True for an HTTP/1.1 upgrade request (`Connection: upgrade` + `Upgrade`).
fn is_upgrade_request(headers: &HeaderMap, version: Version) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// Removes hop-by-hop headers and the headers `Connection` names. With
/// `keep_upgrade`, `Upgrade` survives and `Connection: upgrade` is set.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        remove_connection_listed(headers, keep_upgrade);
    }
    for name in HOP_BY_HOP {
        if keep_upgrade && name == "upgrade" {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes the headers a `Connection` header names.
fn remove_connection_listed(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(name);
    }
}

/// Removes the named cookies from every `Cookie` header (merging them into
/// one, as HTTP/1.1 wants).
pub fn strip_cookies(headers: &mut HeaderMap, names: &[String]) {
    if names.is_empty() || !headers.contains_key(header::COOKIE) {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| {
            let name = c.split('=').next().unwrap_or(c).trim();
            !names.iter().any(|n| n == name)
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(header::COOKIE, v);
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

fn prepare_upstream_headers(
    headers: &mut HeaderMap,
    config: &ProxyConfig,
    stripped_prefix: Option<&str>,
    original_host: Option<&HeaderValue>,
    client_addr: Option<SocketAddr>,
    upgrade: bool,
) {
    remove_hop_by_hop(headers, upgrade);
    strip_cookies(headers, &config.strip_cookies);
    for name in &config.strip_headers {
        headers.remove(name);
    }

    let trusted = config.trust_forwarded_headers;
    let mut xff =
        if trusted { headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()).map(str::to_owned) } else { None };
    if let Some(addr) = client_addr {
        let ip = addr.ip().to_string();
        xff = Some(match xff {
            Some(chain) if !chain.is_empty() => format!("{chain}, {ip}"),
            _ => ip,
        });
    }
    headers.remove(&X_FORWARDED_FOR);
    if let Some(v) = xff.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO))
        && let Ok(v) = HeaderValue::from_str(&config.forwarded_proto)
    {
        headers.insert(X_FORWARDED_PROTO.clone(), v);
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        headers.remove(&X_FORWARDED_HOST);
        if let Some(h) = original_host {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
    }
    headers.remove(&X_FORWARDED_PREFIX);
    // Only a prefix the tool does not see in its path is announced: a tool
    // that gets the full path would otherwise add it twice.
    if let Some(prefix) = stripped_prefix.filter(|p| !p.is_empty())
        && let Ok(v) = HeaderValue::from_str(prefix)
    {
        headers.insert(X_FORWARDED_PREFIX.clone(), v);
    }
    // HTTP/2 clients send no Host; the container gets the original one.
    if !headers.contains_key(header::HOST)
        && let Some(h) = original_host
    {
        headers.insert(header::HOST, h.clone());
    }
}

struct Report {
    recorder: ActivityRecorder,
    container: String,
    path: String,
    status: u16,
    time: SystemTime,
    started_at: std::time::Instant,
}

pin_project_lite::pin_project! {
    /// A response body that counts its bytes and reports the request's
    /// activity when it ends (or is dropped early).
    struct CountingBody<B> {
        #[pin]
        inner: B,
        bytes: u64,
        report: Option<Report>,
    }

    impl<B> PinnedDrop for CountingBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(r) = this.report.take() {
                send_report(r, *this.bytes);
            }
        }
    }
}

fn send_report(r: Report, bytes: u64) {
    r.recorder.record(ActivityRecord {
        container: r.container,
        time: r.time,
        path: r.path,
        status: r.status,
        bytes,
        kind: ActivityKind::Http,
        duration: r.started_at.elapsed(),
    });
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
                // The last frame of a sized body: report before the client
                // can have it, so a query it makes next sees the request.
                if this.inner.is_end_stream()
                    && let Some(r) = this.report.take()
                {
                    send_report(r, *this.bytes);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                if let Some(r) = this.report.take() {
                    send_report(r, *this.bytes);
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame with `payload` bytes, masked or not, as a peer sends it.
    fn frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                f.push(mask_bit | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(mask_bit | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frame_cursor_finds_boundaries_across_any_split() {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for (len, masked) in [(0, false), (5, true), (125, false), (126, true), (70_000, false), (300, true)] {
            stream.extend(frame(0x2, &vec![7u8; len], masked));
            ends.push(stream.len());
        }
        for chunk in [1, 2, 3, 7, 13, 4096, stream.len()] {
            let mut c = FrameCursor::default();
            let mut pos = 0;
            for piece in stream.chunks(chunk) {
                c.advance(piece);
                pos += piece.len();
                assert_eq!(c.at_boundary(), ends.contains(&pos), "chunk {chunk}, at {pos}");
            }
        }
        // advance_to_boundary stops exactly at the end of the frame in progress.
        let mut c = FrameCursor::default();
        c.advance(&stream[..3]);
        let used = c.advance_to_boundary(&stream[3..]);
        assert_eq!(3 + used, ends[1]);
        assert!(c.at_boundary());
        let mut fresh = FrameCursor::default();
        assert_eq!(fresh.advance_to_boundary(&stream), ends[0], "an empty frame is a frame");
    }

    #[test]
    fn close_frames_are_well_formed() {
        let mut c = FrameCursor::default();
        c.advance(&CLOSE_TO_CLIENT);
        assert!(c.at_boundary());
        let masked = masked_close();
        assert_eq!(masked[0], 0x88);
        assert_eq!(masked[1], 0x82);
        let code = [masked[6] ^ masked[2], masked[7] ^ masked[3]];
        assert_eq!(u16::from_be_bytes(code), 1001);
        c.advance(&masked);
        assert!(c.at_boundary());
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn upgrade_keeps_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade_request(&h, Version::HTTP_11));
        assert!(!is_upgrade_request(&h, Version::HTTP_2));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn cookies_are_stripped_by_name() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("sessionid=abc; theme=dark"));
        h.append(header::COOKIE, HeaderValue::from_static("csrftoken=x;tool=1"));
        strip_cookies(&mut h, &["sessionid".into(), "csrftoken".into()]);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "theme=dark; tool=1");
        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("sessionid=abc"));
        strip_cookies(&mut only, &["sessionid".into()]);
        assert!(!only.contains_key(header::COOKIE));
    }

    fn origin(prefix: Option<&str>) -> PublicOrigin<'_> {
        PublicOrigin { scheme: "https", host: Some("berth.example.org"), upstream: "172.17.0.5:8888", prefix }
    }

    #[test]
    fn locations_are_made_public() {
        let stripped = origin(Some("/docker/nb"));
        let cases = [
            ("/lab", Some("/docker/nb/lab")),
            ("/lab?reset", Some("/docker/nb/lab?reset")),
            ("/docker/nb/lab", None),
            ("/docker/nb", None),
            ("/docker/nbx/lab", Some("/docker/nb/docker/nbx/lab")),
            ("lab/tree", None),
            ("//evil.example/x", None),
            ("http://172.17.0.5:8888/lab", Some("https://berth.example.org/docker/nb/lab")),
            ("http://berth.example.org/lab", Some("https://berth.example.org/docker/nb/lab")),
            ("http://172.17.0.5:8888", Some("https://berth.example.org/docker/nb/")),
            ("https://login.example.org/authorize?x=1", None),
            ("mailto:a@b", None),
        ];
        for (given, want) in cases {
            assert_eq!(stripped.rewrite_location(given).as_deref(), want, "{given}");
        }
        let kept = origin(None);
        assert_eq!(kept.rewrite_location("/docker/nb/lab"), None);
        assert_eq!(kept.rewrite_location("/lab"), None, "no prefix to put back");
        assert_eq!(
            kept.rewrite_location("http://172.17.0.5:8888/docker/nb/lab").as_deref(),
            Some("https://berth.example.org/docker/nb/lab")
        );
        assert_eq!(kept.rewrite_location("https://berth.example.org/docker/nb/lab"), None, "already public");
    }

    #[test]
    fn forwarded_headers() {
        let route = Some("/docker/viz");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/evil"));
        let host = HeaderValue::from_static("example.org:8000");
        let client: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        prepare_upstream_headers(&mut h, &ProxyConfig::default(), route, Some(&host), Some(client), false);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-prefix"], "/docker/viz");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.org:8000");
        assert_eq!(h[header::HOST], "example.org:8000");

        let trusting = ProxyConfig { trust_forwarded_headers: true, ..ProxyConfig::default() };
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        prepare_upstream_headers(&mut h, &trusting, route, Some(&host), Some(client), false);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
