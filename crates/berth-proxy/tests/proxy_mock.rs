//! The proxy end to end over real sockets, with mock containers.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use berth_manager::{ContainerManager, ContainerSpec, MOCK_TOOL_IMAGE};
use berth_proxy::{
    ActivityKind, ActivityRecorder, Denied, HostRouting, MemoryActivity, PathRouting, Proxy, ProxyConfig, ProxyHooks,
    Route, RouteTable, Routing, ServerLimits, TableConfig, WaitingPage,
};
use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "app.example";

struct Setup {
    manager: Arc<CountingManager<berth_manager::MockManager>>,
    addr: std::net::SocketAddr,
    activity: Arc<MemoryActivity>,
}

async fn setup_with(config: ProxyConfig, table: TableConfig, limits: ServerLimits, warmup: Duration) -> Setup {
    let manager = Arc::new(CountingManager::new(rich_manager(warmup)));
    let table = RouteTable::start(manager.clone(), table).await.expect("table");
    let activity = Arc::new(MemoryActivity::default());
    let recorder = ActivityRecorder::spawn(activity.clone(), 10_000);
    let proxy = Proxy::with_hooks(table, config, berth_proxy::AllowAll, recorder);
    let addr = serve(proxy, limits).await;
    Setup { manager, addr, activity }
}

async fn setup() -> Setup {
    let config = ProxyConfig {
        routing: Routing::Path(PathRouting::default().logs_path("docker-logs")),
        strip_cookies: vec!["sessionid".into()],
        ..ProxyConfig::default()
    };
    setup_with(config, TableConfig::default(), ServerLimits::default(), Duration::ZERO).await
}

async fn launch(s: &Setup, name: &str) {
    s.manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, name, 16)).await.expect("launch");
    wait_not_503(s.addr, HOST, &format!("/docker/{name}/")).await;
}

#[tokio::test]
async fn forwards_with_path_routing_and_headers() {
    let s = setup().await;
    launch(&s, "viz").await;
    let (status, _, body) = get(s.addr, HOST, "/docker/viz/a/b?x=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"GET /a/b?x=1\n");

    let req = Request::get("/docker/viz/headers")
        .header("host", HOST)
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("cookie", "sessionid=parent; tool=1")
        .header("x-forwarded-for", "6.6.6.6")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = request(s.addr, req).await;
    assert_eq!(status, StatusCode::OK);
    let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(h["uri"], "/headers");
    assert_eq!(h["host"], HOST);
    assert_eq!(h["cookie"], "tool=1", "the parent's session cookie never reaches the container");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-prefix"], "/docker/viz");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], HOST);
    assert!(h.get("x-hop").is_none() && h.get("keep-alive").is_none(), "{h}");

    // Activity arrives off the hot path.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.activity.history("viz").iter().all(|r| r.path != "/docker/viz/headers") {
        assert!(Instant::now() < deadline, "no activity recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rec = s.activity.history("viz").into_iter().find(|r| r.path == "/docker/viz/a/b?x=1").unwrap();
    assert_eq!((rec.status, rec.bytes, rec.kind), (200, 13, ActivityKind::Http));
}

#[tokio::test]
async fn redirect_not_found_and_invalid_names() {
    let s = setup().await;
    let (status, headers, _) = get(s.addr, HOST, "/docker/viz?q=1").await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(headers["location"], "/docker/viz/?q=1");
    // A name with no container: 404 at once, never an endless wait.
    let started = Instant::now();
    let (status, _, body) = get(s.addr, HOST, "/docker/nobody/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("nobody"));
    assert!(started.elapsed() < Duration::from_secs(1));
    for bad in ["/docker/../x", "/docker/UPPER/", "/docker/%2e%2e/"] {
        let (status, _, _) = get(s.addr, HOST, bad).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
    }
    let (status, _, _) = get(s.addr, HOST, "/elsewhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn please_wait_then_ready() {
    let config = ProxyConfig {
        waiting_page: WaitingPage {
            title: "Loading <viz>".into(),
            body_html: "<p class=custom>hold on</p>".into(),
            retry_secs: 1,
            events_url: None,
        },
        ..ProxyConfig::default()
    };
    let s = setup_with(config, TableConfig::default(), ServerLimits::default(), Duration::from_millis(800)).await;
    s.manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "slow", 16)).await.unwrap();
    let (status, headers, body) = get(s.addr, HOST, "/docker/slow/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    let html = String::from_utf8_lossy(&body);
    assert!(html.contains("Loading &lt;viz&gt;") && html.contains("<p class=custom>hold on</p>"));
    assert!(html.contains("http-equiv=\"refresh\""));
    // JSON clients get JSON.
    let req = Request::get("/docker/slow/")
        .header("host", HOST)
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = request(s.addr, req).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "starting");
    let (status, _, _) = wait_not_503(s.addr, HOST, "/docker/slow/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn failed_container_shows_exit_and_logs() {
    let s = setup().await;
    launch(&s, "crash").await;
    let _ = get(s.addr, HOST, "/docker/crash/say/last-words").await;
    let _ = get(s.addr, HOST, "/docker/crash/exit/9").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, body) = get(s.addr, HOST, "/docker/crash/").await;
        let html = String::from_utf8_lossy(&body).into_owned();
        if status == StatusCode::BAD_GATEWAY && html.contains("last-words") {
            assert!(html.contains("exited with status 9"), "{html}");
            break;
        }
        assert!(Instant::now() < deadline, "no failure page: {status} {html}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn start_timeout_gives_failure_page() {
    let table = TableConfig { start_timeout: Duration::from_millis(500), ..TableConfig::default() };
    let s = setup_with(ProxyConfig::default(), table, ServerLimits::default(), Duration::from_secs(3600)).await;
    s.manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "never", 16)).await.unwrap();
    let (status, _, body) = wait_not_503(s.addr, HOST, "/docker/never/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(&body).contains("did not become ready"));
}

#[tokio::test]
async fn no_manager_calls_on_the_hot_path() {
    let s = setup().await;
    launch(&s, "hot").await;
    let before = s.manager.calls();
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for i in 0..1000 {
        let req = Request::get(format!("/docker/hot/n/{i}")).header("host", HOST).body(empty()).unwrap();
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(s.manager.calls(), before, "the manager was called while proxying 1000 requests");
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let s = setup().await;
    launch(&s, "ws").await;
    let url = format!("ws://{}/docker/ws/ws", s.addr);
    let (mut ws, resp) = tokio_tungstenite::connect_async(url).await.expect("websocket handshake through berth");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..20 {
        let msg = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone())).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), msg);
    }
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_data().to_vec(), vec![0u8, 1, 2, 255]);
    ws.close(None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.activity.history("ws").iter().any(|r| r.kind == ActivityKind::WebSocket && r.bytes > 0) {
        assert!(Instant::now() < deadline, "websocket traffic not reported as activity");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn server_sent_events_stream_unbuffered() {
    let s = setup().await;
    launch(&s, "sse").await;
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("/docker/sse/sse?n=5").header("host", HOST).body(empty()).unwrap();
    let started = Instant::now();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"data: event 0\n\n");
    // Events are 200 ms apart: the first arrives long before the last is sent.
    assert!(started.elapsed() < Duration::from_millis(500), "first event took {:?}", started.elapsed());
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).ends_with("data: event 4\n\n"));
}

#[tokio::test]
async fn http2_prior_knowledge_clients() {
    let s = setup().await;
    launch(&s, "h2").await;
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{HOST}/docker/h2/headers")).body(empty()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(h["host"], HOST, "an HTTP/2 client's authority becomes the upstream Host");
}

#[tokio::test]
async fn slowloris_and_huge_headers_are_cut_off() {
    let limits = ServerLimits {
        header_read_timeout: Duration::from_millis(500),
        max_header_bytes: 16 * 1024,
        ..ServerLimits::default()
    };
    let s = setup_with(ProxyConfig::default(), TableConfig::default(), limits, Duration::ZERO).await;
    // A client that never finishes its head is disconnected.
    let mut slow = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /docker/x/ HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let n =
        tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await.expect("server closes the slow client");
    assert!(started.elapsed() < Duration::from_secs(3));
    let _ = n;
    // An idle keep-alive connection is closed too.
    let mut idle = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut got)).await;
    assert!(r.is_ok(), "idle keep-alive connection stayed open");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 404"));
    // A head over the limit is refused.
    let big = "x".repeat(64 * 1024);
    let mut huge = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let _ = huge.write_all(format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes()).await;
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), huge.read_to_end(&mut resp)).await.expect("closed");
    let text = String::from_utf8_lossy(&resp);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 431"), "{text}");
}

#[tokio::test]
async fn hung_container_times_out_instead_of_hanging() {
    let config = ProxyConfig { upstream_timeout: Duration::from_millis(500), ..ProxyConfig::default() };
    let s = setup_with(config, TableConfig::default(), ServerLimits::default(), Duration::ZERO).await;
    launch(&s, "hang").await;
    let started = Instant::now();
    let (status, _, _) = get(s.addr, HOST, "/docker/hang/hang").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn logs_sub_path() {
    let s = setup().await;
    launch(&s, "logged").await;
    let _ = get(s.addr, HOST, "/docker/logged/say/visible-in-logs").await;
    let (status, headers, body) = get(s.addr, HOST, "/docker/logged/docker-logs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    let text = String::from_utf8_lossy(&body);
    assert!(text.lines().any(|l| l.ends_with(" visible-in-logs") && l.starts_with("20")), "{text}");
}

#[tokio::test]
async fn hostname_routing() {
    let config = ProxyConfig { routing: Routing::Host(HostRouting::new("docker.localhost")), ..ProxyConfig::default() };
    let s = setup_with(config, TableConfig::default(), ServerLimits::default(), Duration::ZERO).await;
    s.manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "viz1", 16)).await.unwrap();
    let (status, _, body) = wait_not_503(s.addr, "viz1.docker.localhost:8000", "/some/path?x").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"GET /some/path?x\n");
    let (status, _, _) = get(s.addr, "other.docker.localhost", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Hooks that admit only requests with `X-User: alice` and tell the
/// container who the user is.
struct OnlyAlice;

#[async_trait]
impl ProxyHooks for OnlyAlice {
    type Ctx = String;

    async fn authorize(&self, request: &http::request::Parts, _container: &str) -> Result<String, Denied> {
        match request.headers.get("x-user").and_then(|v| v.to_str().ok()) {
            Some("alice") => Ok("alice".into()),
            _ => Err(Denied::forbidden("only alice")),
        }
    }

    fn rewrite_upstream(&self, user: &String, _route: &Route, request: &mut http::request::Parts) {
        request.headers.remove("x-user");
        request.headers.insert("x-berth-user", user.parse().unwrap());
    }
}

#[tokio::test]
async fn hooks_authorize_and_rewrite() {
    let manager = Arc::new(rich_manager(Duration::ZERO));
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let proxy = Proxy::with_hooks(table, ProxyConfig::default(), OnlyAlice, ActivityRecorder::disabled());
    let addr = serve(proxy, ServerLimits::default()).await;
    manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "private", 16)).await.unwrap();
    let (status, _, body) = get(addr, HOST, "/docker/private/headers").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(&body[..], b"only alice\n");
    // Denied before lookup: a missing container is also 403, revealing nothing.
    let (status, _, _) = get(addr, HOST, "/docker/missing/").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let body = loop {
        let req = Request::get("/docker/private/headers")
            .header("host", HOST)
            .header("x-user", "alice")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (status, _, body) = request(addr, req).await;
        if status == StatusCode::OK {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    let h: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(h["x-berth-user"], "alice");
    assert!(h.get("x-user").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_runtime_per_thread() {
    let manager = Arc::new(rich_manager(Duration::ZERO));
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let activity = Arc::new(MemoryActivity::default());
    let proxy = Proxy::with_hooks(
        table,
        ProxyConfig::default(),
        berth_proxy::AllowAll,
        ActivityRecorder::spawn(activity.clone(), 1000),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The threads serve until the test process ends.
    std::thread::spawn(move || berth_proxy::serve_on_threads(addr, &proxy, ServerLimits::default(), 3));
    manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "threads", 16)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no thread listens");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_not_503(addr, HOST, "/docker/threads/").await;
    // Many connections at once, spread by the kernel over the threads.
    let gets = (0..40).map(|i| async move { get(addr, HOST, &format!("/docker/threads/p{i}")).await });
    for (status, _, _) in futures_util::future::join_all(gets).await {
        assert_eq!(status, StatusCode::OK);
    }
    // Activity from every thread reaches the one sink.
    let deadline = Instant::now() + Duration::from_secs(5);
    while activity.history("threads").iter().filter(|r| r.path.starts_with("/docker/threads/p")).count() < 40 {
        assert!(Instant::now() < deadline, "activity lost across threads");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
