//! The serving side ([`Server`]): limits that hold from the accept, a
//! connection cap shared by every thread, and graceful shutdown (requests
//! in flight finish, websockets get close frames). Real sockets on
//! 127.0.0.1, mock containers.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_manager::{ContainerManager, ContainerSpec, MOCK_TOOL_IMAGE};
use berth_proxy::{Proxy, ProxyConfig, RouteTable, Server, ServerLimits, TableConfig};
use common::{WS_CLOSES_RECEIVED, get, rich_manager, wait_not_503};

const HOST: &str = "app.example";
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy with one ready mock container named `name`, served by a
/// [`Server`] with `limits` on 127.0.0.1; returns the address, the server
/// and the task serving it.
async fn served(
    name: &str,
    limits: ServerLimits,
) -> (SocketAddr, Server, Proxy, tokio::task::JoinHandle<berth_proxy::Result<()>>) {
    let manager = Arc::new(rich_manager(Duration::ZERO));
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let proxy = Proxy::new(table, ProxyConfig::default());
    let server = Server::with_shutdown(limits, proxy.shutdown().clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn({
        let server = server.clone();
        let proxy = proxy.clone();
        async move { server.serve(listener, proxy).await }
    });
    manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, name, 16)).await.unwrap();
    wait_not_503(addr, HOST, &format!("/docker/{name}/")).await;
    // The table, not the manager, is what the test needs from here on.
    std::mem::forget(manager);
    (addr, server, proxy, task)
}

/// Reads until the peer closes (or `limit` passes); returns what came and
/// when the connection ended, or `None` if it stayed open.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Instant)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some((got, Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn silent_partial_and_trickling_clients_are_closed_at_the_deadline_from_the_accept() {
    let timeout = Duration::from_millis(800);
    let limits = ServerLimits { header_read_timeout: timeout, ..ServerLimits::default() };
    let (addr, server, _proxy, _task) = served("limits", limits).await;

    // Sends nothing at all (no protocol can be told yet).
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    let (got, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await.expect("silent client closed");
    assert!(got.is_empty());
    let took = closed - opened;
    assert!(took >= timeout - Duration::from_millis(50) && took < timeout * 3, "silent client closed after {took:?}");

    // Sends one byte that could start either HTTP/1 or the HTTP/2 preface.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    partial.write_all(b"P").await.unwrap();
    let (_, closed) = read_until_closed(&mut partial, Duration::from_secs(5)).await.expect("partial client closed");
    assert!(closed - opened < timeout * 3, "partial preface kept the connection {:?}", closed - opened);

    // Trickles a header line every 150 ms: the deadline does not move.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    trickle.write_all(b"GET /docker/limits/ HTTP/1.1\r\n").await.unwrap();
    let writer = async {
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if trickle.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                return Instant::now();
            }
        }
        Instant::now()
    };
    let cut = writer.await;
    assert!(cut - opened < timeout * 3, "a trickling client stayed {:?}", cut - opened);

    // A normal client is served all along.
    let (status, _, _) = get(addr, HOST, "/docker/limits/").await;
    assert_eq!(status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.open_connections() > 0 {
        assert!(Instant::now() < deadline, "closed connections are still counted as open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_oversize_head_is_431_and_a_malformed_request_line_400() {
    let limits = ServerLimits { max_header_bytes: 16 * 1024, ..ServerLimits::default() };
    let (addr, _server, _proxy, _task) = served("heads", limits).await;
    let big = "x".repeat(200 * 1024);
    let mut huge = TcpStream::connect(addr).await.unwrap();
    let _ = huge.write_all(format!("GET /docker/heads/ HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes()).await;
    let (resp, _) = read_until_closed(&mut huge, Duration::from_secs(5)).await.expect("closed");
    assert!(String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&resp));
    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"GET\x01 / HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let (resp, _) = read_until_closed(&mut bad, Duration::from_secs(5)).await.expect("closed");
    assert!(String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 400"), "{}", String::from_utf8_lossy(&resp));
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_header_timeout() {
    let timeout = Duration::from_millis(800);
    let limits = ServerLimits { header_read_timeout: timeout, ..ServerLimits::default() };
    let (addr, _server, _proxy, _task) = served("h2idle", limits).await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    // Requests keep it open well past the timeout while they come.
    let started = Instant::now();
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(timeout / 2).await;
        }
        let req = http::Request::get(format!("http://{HOST}/docker/h2idle/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.expect("an HTTP/2 request on the open connection");
        assert_eq!(resp.status(), StatusCode::OK);
        http_body_util::BodyExt::collect(resp.into_body()).await.unwrap();
    }
    assert!(started.elapsed() > timeout * 2 && !conn.is_finished(), "closed while in use");
    // Then idle (since the last answer): the server says GOAWAY and the
    // connection ends.
    let idle = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open 5 s");
    let took = idle.elapsed();
    assert!(took >= timeout - Duration::from_millis(100) && took < timeout * 3, "closed after {took:?} idle");
}

/// Sends one request on an open keep-alive connection and reads its
/// answer's status line (the mock's answers are small and sized).
async fn ask(stream: &mut TcpStream, path: &str) -> Option<String> {
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_across_threads_without_starving_established_connections() {
    let manager = Arc::new(rich_manager(Duration::ZERO));
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let proxy = Proxy::new(table, ProxyConfig::default());
    let limits =
        ServerLimits { max_connections: 4, header_read_timeout: Duration::from_secs(30), ..Default::default() };
    let server = Server::with_shutdown(limits, proxy.shutdown().clone());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let threads = server.serve_on_threads(addr, 3, |_| proxy.fork()).unwrap();
    manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "cap", 16)).await.unwrap();
    wait_not_503(addr, HOST, "/docker/cap/").await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.open_connections() > 0 {
        assert!(Instant::now() < deadline, "the readiness probes' connections stay open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Four established keep-alive connections, spread by the kernel over
    // the three threads, take the whole cap.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut s, "/docker/cap/").await.as_deref(), Some("HTTP/1.1 200 OK"));
        held.push(s);
    }
    // A fifth connects (the kernel's backlog) but is not served.
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting.write_all(format!("GET /docker/cap/ HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    assert!(
        tokio::time::timeout(Duration::from_millis(700), waiting.read(&mut buf)).await.is_err(),
        "a connection beyond the cap was served"
    );
    // The established ones go on being served meanwhile.
    for s in &mut held {
        assert_eq!(ask(s, "/docker/cap/").await.as_deref(), Some("HTTP/1.1 200 OK"));
    }
    // One leaves; the waiting one is served.
    drop(held.pop());
    let n =
        tokio::time::timeout(Duration::from_secs(5), waiting.read(&mut buf)).await.expect("served once a slot is free");
    assert!(String::from_utf8_lossy(&buf[..n.unwrap()]).starts_with("HTTP/1.1 200"));

    drop(held);
    drop(waiting);
    server.shutdown().trigger();
    tokio::task::spawn_blocking(move || threads.join()).await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_requests_in_flight_finish() {
    let limits = ServerLimits { shutdown_grace: Duration::from_secs(5), ..ServerLimits::default() };
    let (addr, server, _proxy, task) = served("graceful", limits).await;
    // A response streaming slowly (server-sent events, 200 ms apart).
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(format!("GET /docker/graceful/sse?n=6 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.unwrap();
    let mut first = [0u8; 256];
    let n = slow.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // An idle keep-alive connection.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert_eq!(ask(&mut idle, "/docker/graceful/").await.as_deref(), Some("HTTP/1.1 200 OK"));

    let triggered = Instant::now();
    server.shutdown().trigger();
    // The idle connection is closed at once; the streaming one finishes.
    let (_, idle_closed) = read_until_closed(&mut idle, Duration::from_secs(3)).await.expect("idle connection closed");
    assert!(idle_closed - triggered < Duration::from_secs(1));
    let (rest, _) = read_until_closed(&mut slow, Duration::from_secs(5)).await.expect("stream ended");
    let all = format!("{}{}", String::from_utf8_lossy(&first[..n]), String::from_utf8_lossy(&rest));
    assert!(all.contains("data: event 5"), "the stream in flight was cut: {all}");
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("serve returns").unwrap().unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting after the shutdown");
}

#[tokio::test]
async fn requests_beyond_the_grace_are_cut_off() {
    let limits = ServerLimits { shutdown_grace: Duration::from_millis(500), ..ServerLimits::default() };
    let (addr, server, _proxy, task) = served("hung", limits).await;
    let mut hung = TcpStream::connect(addr).await.unwrap();
    hung.write_all(format!("GET /docker/hung/hang HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let triggered = Instant::now();
    server.shutdown().trigger();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("serve returns within the grace").unwrap().unwrap();
    assert!(triggered.elapsed() < Duration::from_secs(2));
    assert!(read_until_closed(&mut hung, Duration::from_secs(2)).await.is_some());
}

#[tokio::test]
async fn websockets_get_a_close_frame_on_shutdown() {
    let (addr, server, proxy, task) = served("sockets", ServerLimits::default()).await;
    let url = format!("ws://{addr}/docker/sockets/ws");
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    request.headers_mut().insert("host", HOST.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // Traffic in both directions first, so the cursors have frames behind them.
    for i in 0..20 {
        let text = format!("hello {i} {}", "x".repeat(i * 50));
        ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone())).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), text);
    }
    assert_eq!(proxy.open_tunnels(), 1);
    let closes_before = WS_CLOSES_RECEIVED.load(std::sync::atomic::Ordering::SeqCst);
    let triggered = Instant::now();
    server.shutdown().trigger();
    let close = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a frame before the end");
    match close {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1001, "going away");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // As a browser does: answer the close (tungstenite sends its answer on
    // the next poll) and wait for the server to hang up.
    let client_end = tokio::spawn(async move { while ws.next().await.is_some() {} });
    tokio::time::timeout(Duration::from_secs(5), proxy.tunnels_closed()).await.expect("tunnels close");
    tokio::time::timeout(Duration::from_secs(2), client_end).await.expect("berth hangs up").unwrap();
    assert!(triggered.elapsed() < Duration::from_secs(3));
    assert_eq!(proxy.open_tunnels(), 0);
    assert_eq!(
        WS_CLOSES_RECEIVED.load(std::sync::atomic::Ordering::SeqCst),
        closes_before + 1,
        "the tool got a close frame too"
    );
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("serve returns").unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_served_by_worker_threads_get_their_close_frame_too() {
    // One worker: once its only connection, the websocket's, has ended
    // with the upgrade, nothing but the tunnel keeps its runtime busy.
    let manager = Arc::new(rich_manager(Duration::ZERO));
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let proxy = Proxy::new(table, ProxyConfig::default());
    let server = Server::with_shutdown(ServerLimits::default(), proxy.shutdown().clone());
    let addr: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let threads = server.serve_on_threads(addr, 1, |_| proxy.fork()).unwrap();
    manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "threaded", 16)).await.unwrap();
    wait_not_503(addr, HOST, "/docker/threaded/").await;
    let url = format!("ws://{addr}/docker/threaded/ws");
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    request.headers_mut().insert("host", HOST.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "hello");
    // Only the websocket is open: the probe's connections are done.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.shutdown().trigger();
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a frame before the end") {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1001, "going away");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    let client_end = tokio::spawn(async move { while ws.next().await.is_some() {} });
    tokio::time::timeout(Duration::from_secs(5), client_end).await.expect("berth hangs up").unwrap();
    let joined = tokio::task::spawn_blocking(move || threads.join());
    tokio::time::timeout(Duration::from_secs(10), joined).await.expect("the threads end").unwrap().unwrap();
    assert_eq!(proxy.open_tunnels(), 0);
    std::mem::forget(manager);
}
