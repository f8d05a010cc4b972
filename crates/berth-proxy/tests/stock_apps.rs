//! What stock web apps (JupyterLab, Streamlit, Dash, Shiny, IDEs) need of
//! berth's proxy, over real sockets, with a mock container that behaves
//! like JupyterLab: `/` redirects to `<base>lab`, the lab page sets a
//! path-scoped `_xsrf` cookie, the REST API compares `Origin` with `Host`
//! and the cookie with `X-XSRFToken`, and the kernel channel is a websocket
//! that picks a subprotocol.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use berth_manager::mock::{MockBody, MockHandler, ToolContext};
use berth_manager::{
    ContainerManager, ContainerSpec, LabelScheme, MOCK_TOOL_IMAGE, MockConfig, MockEngine, MockManager, RouteHints,
    RoutingMode,
};
use berth_proxy::{
    ActivityKind, ActivityRecorder, FailureReason, HostRouting, Lookup, MemoryActivity, PathRouting, Proxy,
    ProxyConfig, RouteTable, Routing, ServerLimits, TableConfig, WaitingPage,
};
use bytes::Bytes;
use common::{get, request, serve};
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The client's `Host` in these tests (the port a browser would show).
const HOST: &str = "app.example:8000";
const SUFFIX: &str = "docker.localhost";
/// The subprotocol JupyterLab's kernel websocket negotiates.
const KERNEL_PROTOCOL: &str = "v1.kernel.websocket.jupyter.org";
/// Where the please-wait page of path routes follows launch progress.
const EVENTS_URL: &str = "/api/v1/containers/{name}/events";

/// Bytes the app's `/upload` route has read so far (all containers).
#[derive(Default)]
struct Upload {
    received: AtomicU64,
}

/// A JupyterLab-like app. Its environment configures it:
/// `BASE_URL` (the base path it was told, default `/`; requests outside it
/// are 404), `ROOT_STATUS` (what `/` answers instead of the redirect),
/// `CRASH_WITH` (print it and exit 2 on the first request), and
/// `BERTH_TOOL_STARTUP_DELAY_MS` (503 on everything until then).
fn notebook(upload: Arc<Upload>) -> MockHandler {
    Arc::new(move |ctx: ToolContext, req: Request<Incoming>| {
        let upload = upload.clone();
        Box::pin(async move { notebook_answer(ctx, req, &upload).await })
    })
}

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<MockBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp
}

fn redirect(location: &str) -> Response<MockBody> {
    let mut resp = answer(StatusCode::FOUND, "");
    resp.headers_mut().insert("location", location.parse().unwrap());
    resp
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Jupyter's `check_origin`: without an `Origin` anything goes; with one,
/// its host and port must be the request's `Host`.
fn origin_matches_host(req: &Request<Incoming>) -> bool {
    match header(req, "origin") {
        None => true,
        Some(origin) => {
            let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            Some(authority) == header(req, "host")
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The request head as JSON: `uri`, `method`, and every header (repeated
/// ones joined with `|`).
fn head_json(req: &Request<Incoming>) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("uri".into(), req.uri().to_string().into());
    map.insert("method".into(), req.method().as_str().into());
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        let joined = match map.get(k.as_str()).and_then(|p| p.as_str()) {
            Some(prev) => format!("{prev}|{v}"),
            None => v,
        };
        map.insert(k.as_str().into(), joined.into());
    }
    serde_json::Value::Object(map)
}

async fn notebook_answer(ctx: ToolContext, req: Request<Incoming>, upload: &Upload) -> Response<MockBody> {
    if let Some(message) = ctx.env().get("CRASH_WITH") {
        ctx.print(message.clone());
        ctx.exit(2);
        return answer(StatusCode::INTERNAL_SERVER_ERROR, "");
    }
    let warmup = ctx.env().get(berth_manager::ENV_STARTUP_DELAY_MS).and_then(|v| v.parse().ok()).unwrap_or(0);
    if ctx.uptime() < Duration::from_millis(warmup) {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "starting\n");
    }
    let base = ctx.env().get("BASE_URL").cloned().unwrap_or_else(|| "/".to_owned());
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix(base.trim_end_matches('/')) else {
        return answer(StatusCode::NOT_FOUND, format!("{path} is not under {base}\n"));
    };
    let rest = if rest.is_empty() { "/" } else { rest };
    match rest {
        "/" => match ctx.env().get("ROOT_STATUS").and_then(|s| s.parse::<u16>().ok()) {
            Some(status) => answer(StatusCode::from_u16(status).unwrap(), "root\n"),
            None => redirect(&format!("{base}lab")),
        },
        "/lab" => {
            let mut resp = answer(StatusCode::OK, "<!doctype html><title>JupyterLab</title>\n");
            let h = resp.headers_mut();
            h.append("set-cookie", format!("_xsrf=xsrf-{}; Path={base}", ctx.name()).parse().unwrap());
            h.append("set-cookie", format!("lab-theme=dark; Path={base}lab; HttpOnly").parse().unwrap());
            resp
        }
        "/api/status" => answer(StatusCode::OK, "{\"started\": true}\n"),
        "/api/kernels" if req.method() == http::Method::POST => {
            if !origin_matches_host(&req) {
                return answer(StatusCode::FORBIDDEN, "origin does not match host\n");
            }
            let token = cookie(&req, "_xsrf");
            if token.is_none() || token.as_deref() != header(&req, "x-xsrftoken") {
                return answer(StatusCode::FORBIDDEN, "'_xsrf' argument missing from POST\n");
            }
            answer(StatusCode::CREATED, "{\"id\": \"k1\"}\n")
        }
        "/api/kernels/k1/channels" => kernel_channels(req),
        "/headers" => answer(StatusCode::OK, head_json(&req).to_string()),
        "/redir" => {
            let to = req.uri().query().and_then(|q| q.strip_prefix("to=")).unwrap_or("/");
            redirect(to)
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(d) = frame.data_ref() {
                    let before = upload.received.fetch_add(d.len() as u64, Ordering::SeqCst);
                    n += d.len() as u64;
                    // A slower reader than the client: every 4 MiB, a pause.
                    if (before + d.len() as u64) / (4 << 20) != before / (4 << 20) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            answer(StatusCode::OK, format!("bytes={n}\n"))
        }
        _ => answer(StatusCode::NOT_FOUND, format!("no route {rest}\n")),
    }
}

/// The kernel websocket: checks `Origin` against `Host`, picks the kernel
/// subprotocol from those offered, accepts the offered extensions as they
/// are, then sends what it saw as its first message and answers `1+1` with
/// `2` (anything else is echoed).
fn kernel_channels(mut req: Request<Incoming>) -> Response<MockBody> {
    if !origin_matches_host(&req) {
        return answer(StatusCode::FORBIDDEN, "origin does not match host\n");
    }
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return answer(StatusCode::BAD_REQUEST, "not a websocket request\n");
    };
    let offered = header(&req, "sec-websocket-protocol").unwrap_or_default().to_owned();
    let extensions = header(&req, "sec-websocket-extensions").map(str::to_owned);
    let seen = head_json(&req);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        if ws.send(Message::text(seen.to_string())).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) if t.as_str() == "1+1" => Message::text("2"),
                Message::Text(_) | Message::Binary(_) => msg,
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = answer(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = resp.headers_mut();
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    if offered.split(',').any(|p| p.trim() == KERNEL_PROTOCOL) {
        h.insert("sec-websocket-protocol", KERNEL_PROTOCOL.parse().unwrap());
    }
    if let Some(ext) = extensions {
        h.insert("sec-websocket-extensions", ext.parse().unwrap());
    }
    resp
}

struct Setup {
    manager: Arc<MockManager>,
    table: Arc<RouteTable>,
    addr: SocketAddr,
    activity: Arc<MemoryActivity>,
    upload: Arc<Upload>,
}

async fn setup(routing: Routing, table: TableConfig) -> Setup {
    let upload = Arc::new(Upload::default());
    let config = MockConfig {
        labels: LabelScheme::default(),
        default_warmup: Duration::ZERO,
        handler: Some(notebook(upload.clone())),
    };
    let manager = Arc::new(MockManager::with_config(MockEngine::new(), config));
    let table = RouteTable::start(manager.clone(), table).await.unwrap();
    let activity = Arc::new(MemoryActivity::default());
    let recorder = ActivityRecorder::spawn(activity.clone(), 10_000);
    let config = ProxyConfig {
        routing,
        waiting_page: WaitingPage { events_url: Some(EVENTS_URL.into()), ..WaitingPage::default() },
        strip_cookies: vec!["sessionid".into()],
        ..ProxyConfig::default()
    };
    let proxy = Proxy::with_hooks(table.clone(), config, berth_proxy::AllowAll, recorder);
    let addr = serve(proxy, ServerLimits::default()).await;
    Setup { manager, table, addr, activity, upload }
}

fn both() -> Routing {
    Routing::Both(PathRouting::default(), HostRouting::new(SUFFIX))
}

fn spec(name: &str) -> ContainerSpec {
    ContainerSpec::new(MOCK_TOOL_IMAGE, name, 16)
}

/// Waits until the route table's verdict on `name` satisfies `done`.
async fn verdict(s: &Setup, name: &str, within: Duration, done: fn(&Lookup) -> bool) -> Lookup {
    let deadline = Instant::now() + within;
    loop {
        let l = s.table.lookup(name).await;
        if done(&l) {
            return l;
        }
        assert!(Instant::now() < deadline, "{name}: no verdict within {within:?}, still {l:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn launch_ready(s: &Setup, spec: &ContainerSpec) {
    s.manager.launch(spec).await.unwrap();
    verdict(s, &spec.name, Duration::from_secs(10), |l| matches!(l, Lookup::Ready(_))).await;
}

fn is_final(l: &Lookup) -> bool {
    matches!(l, Lookup::Ready(_) | Lookup::Failed(_))
}

/// A request through the proxy with extra headers; `(status, headers, body)`.
async fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut b = Request::builder().method(method).uri(path).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    request(addr, b.body(Full::new(Bytes::new())).unwrap()).await
}

async fn head_seen(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> serde_json::Value {
    let (status, _, body) = send(addr, "GET", host, path, headers).await;
    assert_eq!(status, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn location(headers: &http::HeaderMap) -> &str {
    headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("(none)")
}

#[tokio::test]
async fn a_root_that_redirects_is_ready_by_default() {
    let s = setup(Routing::Path(PathRouting::default()), TableConfig::default()).await;
    launch_ready(&s, &spec("nb")).await;
    let (status, headers, _) = get(s.addr, HOST, "/docker/nb/").await;
    assert_eq!((status, location(&headers)), (StatusCode::FOUND, "/docker/nb/lab"));
    let (status, _, body) = get(s.addr, HOST, "/docker/nb/lab").await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("JupyterLab"));
}

#[tokio::test]
async fn ready_status_200_refuses_a_redirect_until_the_containers_own_start_timeout() {
    // The server's start timeout is two minutes; the container's is 1 s.
    let s = setup(Routing::Path(PathRouting::default()), TableConfig::default()).await;
    let hints = RouteHints { ready_status: vec![200], start_timeout_secs: Some(1), ..RouteHints::default() };
    let started = Instant::now();
    s.manager.launch(&spec("strict").hints(hints)).await.unwrap();
    let (status, _, _) = get(s.addr, HOST, "/docker/strict/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "a 302 is not ready when only 200 counts");
    let Lookup::Failed(f) = verdict(&s, "strict", Duration::from_secs(10), is_final).await else {
        panic!("a tool that only redirects became ready under ready_status = [200]")
    };
    assert_eq!(f.reason, FailureReason::StartTimeout(Duration::from_secs(1)));
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}: the server's timeout applied", started.elapsed());
    let (status, _, body) = get(s.addr, HOST, "/docker/strict/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(&body).contains("did not become ready within 1 s"));
}

#[tokio::test]
async fn ready_path_is_probed_instead_of_the_root() {
    let s = setup(Routing::Path(PathRouting::default()), TableConfig::default()).await;
    // `/` answers 404 (an API server); only `/api/status` says it is up.
    let quick = RouteHints { start_timeout_secs: Some(1), ..RouteHints::default() };
    s.manager.launch(&spec("rootless").env("ROOT_STATUS", "404").hints(quick.clone())).await.unwrap();
    let probed = RouteHints { ready_path: Some("/api/status".into()), ..quick };
    s.manager.launch(&spec("probed").env("ROOT_STATUS", "404").hints(probed)).await.unwrap();
    let l = verdict(&s, "probed", Duration::from_secs(5), is_final).await;
    assert!(matches!(l, Lookup::Ready(_)), "{l:?}");
    let l = verdict(&s, "rootless", Duration::from_secs(5), is_final).await;
    assert!(matches!(&l, Lookup::Failed(f) if matches!(f.reason, FailureReason::StartTimeout(_))), "{l:?}");
    // Ready or not, the app's own 404 on `/` reaches the client unchanged.
    let (status, _, body) = get(s.addr, HOST, "/docker/probed/").await;
    assert_eq!((status, &body[..]), (StatusCode::NOT_FOUND, &b"root\n"[..]));
}

#[tokio::test]
async fn a_tool_that_dies_at_once_fails_with_its_last_words_within_seconds() {
    let s = setup(Routing::Path(PathRouting::default()), TableConfig::default()).await;
    let started = Instant::now();
    s.manager.launch(&spec("broken").env("CRASH_WITH", "error: unrecognized arguments: --oops")).await.unwrap();
    loop {
        let (status, _, body) = get(s.addr, HOST, "/docker/broken/").await;
        let page = String::from_utf8_lossy(&body).into_owned();
        if status == StatusCode::BAD_GATEWAY && page.contains("unrecognized arguments") {
            assert!(page.contains("exited with status 2"), "{page}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no failure page after 5 s: {status} {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn strip_prefix_is_per_container() {
    let s = setup(Routing::Path(PathRouting::default()), TableConfig::default()).await;
    launch_ready(&s, &spec("stripped")).await;
    // Its root is at its base path, like Jupyter's with a base_url (which
    // answers 404 on `/`): the probe asks for what the container receives.
    let kept =
        RouteHints { strip_prefix: Some(false), ready_path: Some("/docker/based/".into()), ..RouteHints::default() };
    launch_ready(&s, &spec("based").env("BASE_URL", "/docker/based/").hints(kept)).await;

    let h = head_seen(s.addr, HOST, "/docker/stripped/headers?x=1", &[]).await;
    assert_eq!(h["uri"], "/headers?x=1");
    assert_eq!(h["x-forwarded-prefix"], "/docker/stripped");
    // A tool told its base path gets the full path, and no prefix header
    // that it would add a second time.
    let h = head_seen(s.addr, HOST, "/docker/based/headers?x=1", &[("x-forwarded-prefix", "/forged")]).await;
    assert_eq!(h["uri"], "/docker/based/headers?x=1");
    assert!(h.get("x-forwarded-prefix").is_none(), "{h}");
    // Its redirects already carry the prefix: left alone.
    let (status, headers, _) = get(s.addr, HOST, "/docker/based/").await;
    assert_eq!((status, location(&headers)), (StatusCode::FOUND, "/docker/based/lab"));
    let (status, _, _) = get(s.addr, HOST, "/docker/based/lab").await;
    assert_eq!(status, StatusCode::OK);

    // The other way round: a server that keeps prefixes, a container that
    // wants it stripped.
    let s = setup(Routing::Path(PathRouting::default().keep_prefix(true)), TableConfig::default()).await;
    let strip = RouteHints { strip_prefix: Some(true), ..RouteHints::default() };
    launch_ready(&s, &spec("wants-root").hints(strip)).await;
    let probe = RouteHints { ready_path: Some("/docker/server-default/".into()), ..RouteHints::default() };
    launch_ready(&s, &spec("server-default").env("BASE_URL", "/docker/server-default/").hints(probe)).await;
    let h = head_seen(s.addr, HOST, "/docker/wants-root/headers", &[]).await;
    assert_eq!((h["uri"].as_str(), h["x-forwarded-prefix"].as_str()), (Some("/headers"), Some("/docker/wants-root")));
    let h = head_seen(s.addr, HOST, "/docker/server-default/headers", &[]).await;
    assert_eq!(h["uri"], "/docker/server-default/headers");
    assert!(h.get("x-forwarded-prefix").is_none(), "{h}");
}

#[tokio::test]
async fn redirects_to_the_tools_own_origin_are_made_public() {
    let s = setup(both(), TableConfig::default()).await;
    launch_ready(&s, &spec("nb")).await;
    let own = s.manager.endpoint("nb").await.unwrap().addr;
    let cases = [
        // JupyterLab under a stripped prefix: `/` → `/lab`.
        ("/redir?to=/lab", "/docker/nb/lab".to_owned()),
        ("/redir?to=/lab?reset", "/docker/nb/lab?reset".to_owned()),
        // An absolute URL to the container's own address, or to the Host it
        // was sent: the public origin, prefix put back.
        (&*format!("/redir?to=http://{own}/lab/tree"), format!("http://{HOST}/docker/nb/lab/tree")),
        (&*format!("/redir?to=http://{HOST}/lab"), format!("http://{HOST}/docker/nb/lab")),
        // Elsewhere (a login provider), relative, or scheme-relative: kept.
        ("/redir?to=https://login.example.org/authorize?x=1", "https://login.example.org/authorize?x=1".to_owned()),
        ("/redir?to=lab/tree", "lab/tree".to_owned()),
        ("/redir?to=//evil.example/x", "//evil.example/x".to_owned()),
    ];
    for (path, want) in &cases {
        let (status, headers, _) = get(s.addr, HOST, &format!("/docker/nb{path}")).await;
        assert_eq!((status, location(&headers)), (StatusCode::FOUND, want.as_str()), "{path}");
    }
    // Under hostname routing there is no prefix: paths stay, the
    // container's address becomes the public host.
    let host = format!("nb.{SUFFIX}:8000");
    let (_, headers, _) = get(s.addr, &host, "/redir?to=/lab").await;
    assert_eq!(location(&headers), "/lab");
    let (_, headers, _) = get(s.addr, &host, &format!("/redir?to=http://{own}/lab")).await;
    assert_eq!(location(&headers), format!("http://{host}/lab"));
    let (_, headers, _) = get(s.addr, &host, "/").await;
    assert_eq!(location(&headers), "/lab");
}

#[tokio::test]
async fn both_routings_at_once_and_tools_that_want_one() {
    let s = setup(both(), TableConfig::default()).await;
    // Served by hostname only (an app that cannot be relocated).
    let host_only = RouteHints {
        routing: Some(RoutingMode::Host),
        public_url: Some(format!("http://dash.{SUFFIX}:8000/")),
        ..RouteHints::default()
    };
    launch_ready(&s, &spec("dash").hints(host_only)).await;
    // Served by path only.
    let path_only = RouteHints {
        routing: Some(RoutingMode::Path),
        public_url: Some(format!("http://{HOST}/docker/viz/")),
        ..RouteHints::default()
    };
    launch_ready(&s, &spec("viz").hints(path_only)).await;
    launch_ready(&s, &spec("any")).await;

    let (status, headers, _) = get(s.addr, HOST, "/docker/dash/_dash-layout?x=1").await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(location(&headers), format!("http://dash.{SUFFIX}:8000/_dash-layout?x=1"));
    let h = head_seen(s.addr, &format!("dash.{SUFFIX}:8000"), "/headers?x=1", &[]).await;
    assert_eq!(h["uri"], "/headers?x=1", "by hostname the path is kept");
    assert!(h.get("x-forwarded-prefix").is_none(), "{h}");

    let (status, headers, _) = get(s.addr, &format!("viz.{SUFFIX}"), "/a/b?c").await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(location(&headers), format!("http://{HOST}/docker/viz/a/b?c"));
    assert_eq!(head_seen(s.addr, HOST, "/docker/viz/headers", &[]).await["uri"], "/headers");

    // A container without a preference is served both ways.
    assert_eq!(head_seen(s.addr, HOST, "/docker/any/headers", &[]).await["uri"], "/headers");
    assert_eq!(head_seen(s.addr, &format!("any.{SUFFIX}"), "/headers", &[]).await["uri"], "/headers");
    // Other paths and hosts are not the proxy's.
    let (status, _, _) = get(s.addr, HOST, "/api/v1/tools").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn please_wait_follows_events_by_path_and_polls_by_hostname() {
    let s = setup(both(), TableConfig::default()).await;
    s.manager.launch(&spec("slow").env(berth_manager::ENV_STARTUP_DELAY_MS, "60000")).await.unwrap();
    let (status, _, body) = get(s.addr, HOST, "/docker/slow/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let page = String::from_utf8_lossy(&body);
    assert!(page.contains("\"/api/v1/containers/slow/events\""), "{page}");
    assert!(page.contains("<noscript><meta http-equiv=\"refresh\""), "{page}");
    // On the tool's own host berth's event stream is not reachable: poll.
    let (status, _, body) = get(s.addr, &format!("slow.{SUFFIX}"), "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let page = String::from_utf8_lossy(&body);
    assert!(page.contains("var url = null;") && !page.contains("/events"), "{page}");
    assert!(page.contains("<meta http-equiv=\"refresh\"") && !page.contains("<noscript>"), "{page}");
}

#[tokio::test]
async fn host_origin_and_forwarded_headers_let_origin_checks_pass() {
    let s = setup(both(), TableConfig::default()).await;
    launch_ready(&s, &spec("nb")).await;
    let origin = format!("http://{HOST}");
    let forged = [("x-forwarded-host", "evil.example"), ("x-forwarded-proto", "https")];
    let mut headers = vec![("origin", origin.as_str())];
    headers.extend(forged);
    let h = head_seen(s.addr, HOST, "/docker/nb/headers", &headers).await;
    assert_eq!(h["host"], HOST, "the client's Host, not the container's address");
    assert_eq!(h["origin"], origin);
    assert_eq!(h["x-forwarded-host"], HOST);
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-prefix"], "/docker/nb");
    let host = format!("nb.{SUFFIX}:8000");
    let h = head_seen(s.addr, &host, "/headers", &[("origin", &format!("http://{host}"))]).await;
    assert_eq!((h["host"].as_str(), h["x-forwarded-host"].as_str()), (Some(host.as_str()), Some(host.as_str())));
    assert!(h.get("x-forwarded-prefix").is_none(), "{h}");

    // Jupyter's REST checks: same-origin with the _xsrf cookie passes; a
    // foreign Origin is refused by the tool itself (berth passes it as is).
    let xsrf = [("cookie", "_xsrf=t0k"), ("x-xsrftoken", "t0k")];
    let same = [("origin", origin.as_str()), xsrf[0], xsrf[1]];
    let (status, _, body) = send(s.addr, "POST", HOST, "/docker/nb/api/kernels", &same).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    let foreign = [("origin", "http://evil.example"), xsrf[0], xsrf[1]];
    let (status, _, _) = send(s.addr, "POST", HOST, "/docker/nb/api/kernels", &foreign).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let same = [("origin", &*format!("http://{host}")), xsrf[0], xsrf[1]];
    let (status, _, _) = send(s.addr, "POST", &host, "/api/kernels", &same).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn the_tools_path_scoped_cookies_pass_both_ways() {
    let s = setup(Routing::Path(PathRouting::default()), TableConfig::default()).await;
    let kept =
        RouteHints { strip_prefix: Some(false), ready_path: Some("/docker/nb/".into()), ..RouteHints::default() };
    launch_ready(&s, &spec("nb").env("BASE_URL", "/docker/nb/").hints(kept)).await;
    let (status, headers, _) = get(s.addr, HOST, "/docker/nb/lab").await;
    assert_eq!(status, StatusCode::OK);
    let cookies: Vec<&str> = headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(cookies, ["_xsrf=xsrf-nb; Path=/docker/nb/", "lab-theme=dark; Path=/docker/nb/lab; HttpOnly"]);
    // The browser sends them back (with the host app's session cookie,
    // which berth strips); the tool's XSRF check passes.
    let cookie = "sessionid=parent; _xsrf=xsrf-nb; lab-theme=dark";
    let h = head_seen(s.addr, HOST, "/docker/nb/headers", &[("cookie", cookie)]).await;
    assert_eq!(h["cookie"], "_xsrf=xsrf-nb; lab-theme=dark");
    let post = [("cookie", cookie), ("x-xsrftoken", "xsrf-nb"), ("origin", "http://app.example:8000")];
    let (status, _, body) = send(s.addr, "POST", HOST, "/docker/nb/api/kernels", &post).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = send(s.addr, "POST", HOST, "/docker/nb/api/kernels", &post[1..]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "without the cookie the tool refuses");
}

/// Opens the kernel channel through the proxy with a browser's headers.
async fn kernel_socket(
    addr: SocketAddr,
    host: &str,
    path: &str,
    origin: &str,
) -> Result<
    (tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, http::Response<Option<Vec<u8>>>),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!("ws://{host}{path}").into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("origin", origin.parse().unwrap());
    h.insert("sec-websocket-protocol", format!("{KERNEL_PROTOCOL}, other.example").parse().unwrap());
    h.insert("sec-websocket-extensions", "x-berth-test; level=3".parse().unwrap());
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(req, stream).await
}

#[tokio::test]
async fn websocket_subprotocol_extensions_and_origin_pass_both_ways() {
    let s = setup(both(), TableConfig::default()).await;
    launch_ready(&s, &spec("nb")).await;
    for (host, path) in [
        (HOST.to_owned(), "/docker/nb/api/kernels/k1/channels".to_owned()),
        (format!("nb.{SUFFIX}:8000"), "/api/kernels/k1/channels".to_owned()),
    ] {
        let (mut ws, resp) = kernel_socket(s.addr, &host, &path, &format!("http://{host}")).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], KERNEL_PROTOCOL, "{host}");
        assert_eq!(resp.headers()["sec-websocket-extensions"], "x-berth-test; level=3");
        let seen: serde_json::Value =
            serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(seen["sec-websocket-protocol"], format!("{KERNEL_PROTOCOL}, other.example"));
        assert_eq!(seen["sec-websocket-extensions"], "x-berth-test; level=3");
        assert_eq!(seen["host"], host.as_str());
        assert_eq!(seen["origin"], format!("http://{host}"));
        ws.send(Message::text("1+1")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap().to_text().unwrap(), "2");
        ws.close(None).await.unwrap();
    }
    // A foreign origin is the tool's to refuse, and the refusal arrives.
    let err =
        kernel_socket(s.addr, HOST, "/docker/nb/api/kernels/k1/channels", "http://evil.example").await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), StatusCode::FORBIDDEN),
        other => panic!("expected the tool's 403, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mib_upload_streams_through() {
    const TOTAL: u64 = 200 << 20;
    /// Bytes sent but not yet read by the tool: socket buffers and a
    /// few chunks, never the body.
    const MAX_IN_FLIGHT: u64 = 48 << 20;
    let s = setup(Routing::Path(PathRouting::default()), TableConfig::default()).await;
    launch_ready(&s, &spec("up")).await;
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let sent = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let (sent2, peak2, upload) = (sent.clone(), peak.clone(), s.upload.clone());
    let body = StreamBody::new(futures_util::stream::iter(0..TOTAL / chunk.len() as u64).map(move |_| {
        let in_flight = sent2.load(Ordering::SeqCst) - upload.received.load(Ordering::SeqCst);
        peak2.fetch_max(in_flight, Ordering::SeqCst);
        sent2.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))
    }));
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post("/docker/up/upload").header("host", HOST).body(body).unwrap();
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&text).trim(), format!("bytes={TOTAL}"));
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak < MAX_IN_FLIGHT, "{} MiB were in flight at once: the upload was buffered", peak >> 20);
    eprintln!("200 MiB upload in {:?}, at most {} MiB in flight", started.elapsed(), peak >> 20);
}

#[tokio::test]
async fn websocket_traffic_is_activity_while_the_socket_is_open() {
    let s = setup(Routing::Path(PathRouting::default()), TableConfig::default()).await;
    launch_ready(&s, &spec("nb")).await;
    let origin = format!("http://{HOST}");
    let (mut ws, _) = kernel_socket(s.addr, HOST, "/docker/nb/api/kernels/k1/channels", &origin).await.unwrap();
    let opened = std::time::SystemTime::now();
    ws.next().await.unwrap().unwrap();
    // A user typing into a notebook: a message every 200 ms, no HTTP.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        ws.send(Message::text("1+1")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap().to_text().unwrap(), "2");
        let seen = s.activity.history("nb").into_iter().find(|r| r.kind == ActivityKind::WebSocket && r.bytes > 0);
        if let Some(record) = seen {
            assert!(record.time > opened, "the record is of the traffic, not of the handshake");
            assert_eq!(record.path, "/docker/nb/api/kernels/k1/channels");
            let last = s.activity.last_activity("nb").unwrap();
            assert!(last > opened, "last activity stays at the handshake while messages flow");
            break;
        }
        assert!(Instant::now() < deadline, "websocket traffic on an open socket was never recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn an_upload_that_expects_100_continue() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup(Routing::Path(PathRouting::default()), TableConfig::default()).await;
    launch_ready(&s, &spec("up")).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let body = vec![3u8; 3 << 20];
    let head = format!(
        "POST /docker/up/upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // curl waits up to a second for the interim answer before it sends.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.expect("no 100 Continue").unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    tcp.write_all(&body).await.unwrap();
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&answer).contains("bytes=") {
        assert!(Instant::now() < deadline, "{}", String::from_utf8_lossy(&answer));
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200") && text.contains(&format!("bytes={}", 3 << 20)), "{text}");
}
