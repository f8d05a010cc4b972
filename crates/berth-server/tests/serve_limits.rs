//! The limits of the binary users run: `berth serve` itself (the
//! in-process mock backend, so no Docker is needed), over real sockets on
//! 127.0.0.1: slow and oversize heads, the connection cap, thousands of
//! stalled connections, quiet logs about them, and history that reads its
//! own writes.

#![allow(clippy::unwrap_used)] // Test helpers panic on failure by design.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Berth, Req, TempDir, free_port_pair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes a `berth.toml` on the mock backend with one tool, `echo`, and
/// `server` as its `[server]` section; returns the port.
fn config(dir: &Path, server: &str) -> u16 {
    let port = free_port_pair();
    std::fs::write(
        dir.join("tools.toml"),
        "version = 1\n[[tools]]\nname = \"echo\"\ndescription = \"the mock tool\"\nimage = \"berth/mock-tool\"\n\
         port = 80\nmem_reservation_mb = 16\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("berth.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\ntools = \"tools.toml\"\n\
             [engine]\nbackend = \"mock\"\n[server]\n{server}\n"
        ),
    )
    .unwrap();
    port
}

/// Starts berth with `server` settings and a ready container `viz`.
async fn berth_with(name: &str, server: &str) -> (TempDir, Berth) {
    let dir = TempDir::new(name);
    let port = config(&dir.0, server);
    let berth = Berth::start(&dir.0, port).await;
    let launched = Req::method("POST", "/api/v1/containers?wait=true")
        .json(&json!({"name": "viz", "tool": "echo"}))
        .send(berth.addr)
        .await;
    assert_eq!(launched.status, 200, "{}", launched.body);
    (dir, berth)
}

/// Reads until the server closes the connection; `None` if it stays open
/// for `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Instant)> {
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

/// One request on an open keep-alive connection: its status line.
async fn ask(s: &mut TcpStream) -> Option<String> {
    s.write_all(b"GET /docker/viz/ping HTTP/1.1\r\nHost: a\r\n\r\n").await.ok()?;
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).lines().next()?.to_owned())
}

/// One request on a fresh connection, answered within `limit`: its status.
async fn status_within(addr: SocketAddr, path: &str, limit: Duration) -> u16 {
    let started = Instant::now();
    let answer = tokio::time::timeout(limit, Req::get(path).send(addr)).await;
    let answer = answer.unwrap_or_else(|_| panic!("{path} took more than {limit:?}"));
    assert!(started.elapsed() < limit);
    answer.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_oversize_and_malformed_heads_get_clear_answers_and_a_quiet_log() {
    let (_dir, berth) = berth_with("berth-limits", "header_read_timeout_secs = 1.0\nmax_header_bytes = 16384\n").await;
    let timeout = Duration::from_secs(1);

    // A stalled head (one line, then nothing) is cut off at the timeout.
    let mut stalled = TcpStream::connect(berth.addr).await.unwrap();
    let opened = Instant::now();
    stalled.write_all(b"GET /docker/viz/ HTTP/1.1\r\n").await.unwrap();
    let (_, closed) = closed_within(&mut stalled, Duration::from_secs(10)).await.expect("stalled head cut off");
    let took = closed - opened;
    assert!(took >= timeout - Duration::from_millis(100) && took < timeout * 3, "stalled head closed after {took:?}");

    // A client that sends nothing at all, likewise.
    let mut silent = TcpStream::connect(berth.addr).await.unwrap();
    let opened = Instant::now();
    let (_, closed) = closed_within(&mut silent, Duration::from_secs(10)).await.expect("silent client cut off");
    assert!(closed - opened < timeout * 3);

    // A head trickled a line a second is cut off by the same deadline.
    let mut trickle = TcpStream::connect(berth.addr).await.unwrap();
    let opened = Instant::now();
    trickle.write_all(b"GET /docker/viz/ HTTP/1.1\r\n").await.unwrap();
    let mut cut = None;
    for i in 0..30 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if trickle.write_all(format!("X-Trickle-{i}: 1\r\n").as_bytes()).await.is_err() {
            cut = Some(Instant::now());
            break;
        }
    }
    let cut = cut.expect("a trickled head was never cut off");
    assert!(cut - opened < timeout * 3, "trickled head kept {:?}", cut - opened);

    // A head over max_header_bytes: 431.
    let mut huge = TcpStream::connect(berth.addr).await.unwrap();
    let big = "x".repeat(200 * 1024);
    let _ = huge.write_all(format!("GET /docker/viz/ HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes()).await;
    let (answer, _) = closed_within(&mut huge, Duration::from_secs(5)).await.expect("closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&answer));
    // The same on berth's own routes (they are behind the same server).
    let mut huge = TcpStream::connect(berth.addr).await.unwrap();
    let _ = huge.write_all(format!("GET /api/v1/tools HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes()).await;
    let (answer, _) = closed_within(&mut huge, Duration::from_secs(5)).await.expect("closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"));

    // A malformed request line: 400.
    let mut bad = TcpStream::connect(berth.addr).await.unwrap();
    bad.write_all(b"GET /docker/viz/ HTTP/1.1 extra\x01\r\nHost: a\r\n\r\n").await.unwrap();
    let (answer, _) = closed_within(&mut bad, Duration::from_secs(5)).await.expect("closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"), "{}", String::from_utf8_lossy(&answer));

    // 200 slow clients at once: closed, and the log says so once, not 200 times.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(berth.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        slow.push(s);
    }
    tokio::time::sleep(timeout * 3).await;
    for s in &mut slow {
        assert!(closed_within(s, Duration::from_secs(2)).await.is_some(), "a slow client stayed");
    }
    let warnings = berth.output().matches("closed connections that sent no complete request head").count();
    assert!((1..=2).contains(&warnings), "{warnings} warnings about slow clients:\n{}", berth.output());

    // And a normal client was served all along.
    assert_eq!(status_within(berth.addr, "/docker/viz/", Duration::from_secs(1)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_for_the_process_without_starving_established_connections() {
    let (_dir, berth) = berth_with("berth-cap", "max_connections = 8\nheader_read_timeout_secs = 60\n").await;
    // Connections of the readiness checks above are closed by then.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(berth.addr).await.unwrap();
        assert_eq!(ask(&mut s).await.as_deref(), Some("HTTP/1.1 200 OK"));
        held.push(s);
    }
    // Beyond the cap: connected by the kernel, not served.
    let mut beyond = TcpStream::connect(berth.addr).await.unwrap();
    beyond.write_all(b"GET /docker/viz/late HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    assert!(
        tokio::time::timeout(Duration::from_millis(700), beyond.read(&mut buf)).await.is_err(),
        "a connection beyond the cap was served"
    );
    // The established ones are served meanwhile.
    for s in &mut held {
        assert_eq!(ask(s).await.as_deref(), Some("HTTP/1.1 200 OK"));
    }
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), beyond.read(&mut buf))
        .await
        .expect("served once a connection left")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_answered_within_a_second_while_five_thousand_connections_stall() {
    const STALLED: usize = 5_000;
    // Each stalled connection holds a descriptor here and one in berth.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        limit >= STALLED as u64 + 1_000,
        "the open-file limit ({limit}) cannot hold {STALLED} connections; raise the hard limit (ulimit -Hn)"
    );
    let (_dir, berth) = berth_with("berth-stalled", "header_read_timeout_secs = 120\n").await;
    let started = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for chunk in 0..STALLED / 250 {
        let opened = futures_util::future::join_all((0..250).map(|_| async {
            let mut s = TcpStream::connect(berth.addr).await.unwrap();
            s.write_all(b"GET /docker/viz/ HTTP/1.1\r\nHost: a\r\n").await.unwrap();
            s
        }))
        .await;
        stalled.extend(opened);
        assert!(started.elapsed() < Duration::from_secs(60), "opening connections is too slow (chunk {chunk})");
    }
    // Give berth the moment to accept them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for path in ["/docker/viz/", "/api/v1/containers", "/docker/viz/other"] {
        assert_eq!(status_within(berth.addr, path, Duration::from_secs(1)).await, 200, "{path}");
    }
    // They were all held (not refused): each still open.
    let mut open = 0;
    for s in &mut stalled {
        let mut buf = [0u8; 1];
        if let Err(e) = s.try_read(&mut buf)
            && e.kind() == std::io::ErrorKind::WouldBlock
        {
            open += 1;
        }
    }
    assert_eq!(open, STALLED, "stalled connections were closed early");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_its_own_writes() {
    let (_dir, berth) = berth_with("berth-ryw", "").await;
    for i in 0..100 {
        let path = format!("/docker/viz/ryw-{i}");
        assert_eq!(Req::get(&path).send(berth.addr).await.status, 200);
        let history = Req::get("/api/v1/containers/viz/history").send(berth.addr).await.json();
        let last = history["history"].as_array().and_then(|h| h.last()).cloned().unwrap_or_default();
        assert_eq!(last["path"], json!(path), "request {i} is not in the history right after it");
    }
    // The inspect answer's last activity too.
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert_eq!(Req::get("/docker/viz/last").send(berth.addr).await.status, 200);
    let info = Req::get("/api/v1/containers/viz").send(berth.addr).await.json();
    assert!(info["last_activity"].as_f64().unwrap() >= before - 0.001, "{info}");
}
