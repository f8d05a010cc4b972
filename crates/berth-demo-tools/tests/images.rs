//! Each demo tool as a real container: its image is built from this
//! workspace and imported (`static_tool_image`), launched through
//! `DockerManager` in a labelled test run, and checked over HTTP (and a
//! websocket). Skipped loudly without a Docker engine.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_manager::docker::DockerManager;
use berth_manager::{ContainerManager, ContainerSpec};
use berth_testkit::TestRun;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Builds (or reuses) the image of demo binary `bin` as `berth-test-<bin>`.
async fn image(docker: &DockerManager, bin: &str) -> String {
    berth_testkit::static_tool_image(docker, "berth-demo-tools", bin, &format!("berth-test-{bin}"))
        .await
        .unwrap_or_else(|e| panic!("image of {bin}: {e}"))
}

/// Launches `spec` with the run's labels and returns the tool's address.
async fn launch(docker: &DockerManager, run: &TestRun, mut spec: ContainerSpec) -> SocketAddr {
    spec.labels = run.labels();
    docker.launch(&spec).await.unwrap_or_else(|e| panic!("launch {}: {e}", spec.name));
    docker.endpoint(&spec.name).await.unwrap_or_else(|e| panic!("endpoint of {}: {e}", spec.name)).addr
}

/// `GET path` until it answers 200; returns the body and the statuses seen before.
async fn get_when_ready(addr: SocketAddr, path: &str, timeout: Duration) -> (String, Vec<u16>) {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        match berth_manager::conformance::http_get(addr, path).await {
            Ok((200, body)) => return (body, seen),
            Ok((status, _)) => seen.push(status),
            Err(_) if Instant::now() < deadline => {}
            Err(e) => panic!("{addr}{path}: {e}"),
        }
        assert!(Instant::now() < deadline, "{addr}{path} never answered 200; saw {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn demo_file(name: &str) -> Vec<u8> {
    let path = berth_testkit::workspace_root().join("demo/data").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Bodies a [`FileServer`] serves, by request target.
type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// A tiny HTTP server on `0.0.0.0:<port>` (so containers reach it through
/// `host.docker.internal`) serving `files` by request target, 404
/// otherwise, and recording the targets asked for.
struct FileServer {
    port: u16,
    files: Files,
    asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FileServer {
    async fn start() -> FileServer {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let files: Files = Arc::default();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (served, log) = (Arc::clone(&files), Arc::clone(&asked));
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (files, log) = (Arc::clone(&served), Arc::clone(&log));
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
                    let target = line.split(' ').nth(1).unwrap_or_default().to_owned();
                    log.lock().unwrap().push(target.clone());
                    let found = files.lock().unwrap().get(&target).cloned();
                    let (status, body) = match found {
                        Some(body) => ("200 OK", body),
                        None => ("404 Not Found", b"no such file".to_vec()),
                    };
                    let head =
                        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        FileServer { port, files, asked, task }
    }

    /// The URL of `target` as a container sees it.
    fn url(&self, target: &str) -> String {
        format!("http://host.docker.internal:{}{target}", self.port)
    }

    fn serve(&self, target: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(target.to_owned(), body);
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn debugger_shows_its_input() {
    let Some(docker) = berth_testkit::docker_or_skip("debugger_shows_its_input").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let image = image(&docker, "berth-debugger").await;
    let doc = json!({
        "file_relationships": ["http://example.invalid/a.csv"],
        "parameters": {"note": "<script>alert(1)</script>"},
        "api_prefix": "/docker/dbg/",
        "custom": 7,
    });
    let addr = launch(&docker, &run, ContainerSpec::new(image, run.name("dbg"), 16).input_env(doc.clone())).await;
    let (page, _) = get_when_ready(addr, "/", Duration::from_secs(20)).await;
    assert!(page.contains("mode env"), "{page}");
    // Each conventional key is explained, present or absent.
    for key in ["file_relationships", "node_info", "parameters", "api_prefix", "extra_directories"] {
        assert!(page.contains(&format!("<code>{key}</code>")), "{key} missing: {page}");
    }
    assert!(page.contains("list of 1"), "{page}");
    assert!(page.contains("<em>absent</em>"), "{page}");
    assert!(page.contains("<code>custom</code>: number 7"), "{page}");
    // Pretty-printed and escaped.
    assert!(page.contains("\n  &quot;api_prefix&quot;: &quot;/docker/dbg/&quot;,\n"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
    assert!(!page.contains("<script>alert"), "{page}");
    let (raw, _) = get_when_ready(addr, "/input", Duration::from_secs(5)).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&raw).expect("raw input is JSON"), doc);
}

#[tokio::test]
async fn csv_viewer_renders_tables_and_heatmaps() {
    let Some(docker) = berth_testkit::docker_or_skip("csv_viewer_renders_tables_and_heatmaps").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let image = image(&docker, "berth-csv-viewer").await;
    let files = FileServer::start().await;
    files.serve("/files/expression.csv", demo_file("expression.csv"));
    files.serve("/files/tiny%20file.csv", b"name,value,label\n\"<b>x</b>\",1,a\ny,3,b\n".to_vec());
    let doc = json!({
        "file_relationships": [files.url("/files/expression.csv"), files.url("/files/tiny%20file.csv")],
        "parameters": {"palette": "greys"},
    });
    // The viewer reads its document in mode url, from the same server.
    files.serve("/input.json", serde_json::to_vec(&doc).unwrap());
    let spec = ContainerSpec::new(image.clone(), run.name("csv"), 32).input_url(doc, files.url("/input.json"));
    let addr = launch(&docker, &run, spec).await;
    let (page, _) = get_when_ready(addr, "/", Duration::from_secs(30)).await;
    assert_eq!(files.asked(), ["/input.json", "/files/expression.csv", "/files/tiny%20file.csv"]);
    assert_eq!(page.matches("<svg").count(), 2, "{page}");
    // expression.csv: 20 genes x 6 samples; tiny file: 2 rows x 1 numeric column.
    assert_eq!(page.matches("<rect class=\"cell\"").count(), 20 * 6 + 2, "{page}");
    assert!(page.contains("<h2>expression.csv</h2>"), "{page}");
    assert!(page.contains("<h2>tiny file.csv</h2>"), "{page}");
    assert!(page.contains("<td>TP53</td>"), "{page}");
    assert!(page.contains("<td>&lt;b&gt;x&lt;/b&gt;</td>"), "{page}");
    assert!(!page.contains("<b>x</b>"), "{page}");
    // Greys: each column's minimum is white and its maximum black.
    assert!(page.contains("fill=\"#ffffff\"") && page.contains("fill=\"#000000\""), "{page}");
    assert!(!page.contains("<script"), "no script needed: {page}");
    let (health, _) = get_when_ready(addr, "/health", Duration::from_secs(5)).await;
    assert_eq!(health, r#"{"state": "ready", "files": 2}"#);

    // A file that cannot be downloaded: still 200, with the reason.
    let broken = json!({"file_relationships": [files.url("/files/missing.csv")]});
    let spec = ContainerSpec::new(image, run.name("csvbad"), 32).input_env(broken);
    let addr = launch(&docker, &run, spec).await;
    let (page, _) = get_when_ready(addr, "/", Duration::from_secs(30)).await;
    assert!(page.contains("class=\"error\""), "{page}");
    assert!(page.contains("missing.csv") && page.contains("HTTP status 404"), "{page}");
    let (health, _) = get_when_ready(addr, "/health", Duration::from_secs(5)).await;
    assert_eq!(health, r#"{"state": "error", "files": 0}"#);
}

#[tokio::test]
async fn slow_tool_answers_503_then_200() {
    let Some(docker) = berth_testkit::docker_or_skip("slow_tool_answers_503_then_200").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let image = image(&docker, "berth-slow-tool").await;
    let doc = json!({"parameters": {"delay_secs": 3}});
    let spec = ContainerSpec::new(image, run.name("slow"), 16).input_file(doc, "/tmp/input.json");
    let launched = Instant::now();
    let addr = launch(&docker, &run, spec).await;
    let (status, _) = get_when_ready(addr, "/status", Duration::from_secs(10)).await;
    assert!(status.contains("\"delay_secs\": 3"), "{status}");
    let (page, seen) = get_when_ready(addr, "/", Duration::from_secs(20)).await;
    assert!(page.contains("Ready after 3 seconds."), "{page}");
    assert!(seen.contains(&503), "expected 503 before 200, saw {seen:?}");
    assert!(seen.iter().all(|&s| s == 503), "{seen:?}");
    assert!(launched.elapsed() >= Duration::from_millis(2500), "ready too early: {:?}", launched.elapsed());
    let (status, _) = get_when_ready(addr, "/status", Duration::from_secs(5)).await;
    assert!(status.starts_with("{\"ready\": true,"), "{status}");
}

#[tokio::test]
async fn ws_tool_echoes_over_a_websocket() {
    let Some(docker) = berth_testkit::docker_or_skip("ws_tool_echoes_over_a_websocket").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let image = image(&docker, "berth-ws-tool").await;
    let addr = launch(&docker, &run, ContainerSpec::new(image, run.name("ws"), 16).input_env(json!({}))).await;
    let (page, _) = get_when_ready(addr, "/", Duration::from_secs(20)).await;
    assert!(page.contains("new URL(\"ws\""), "{page}");
    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")).await.expect("websocket handshake");
    assert_eq!(response.status().as_u16(), 101);
    socket.send(Message::text("hello, berth")).await.expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("echo in time");
    assert_eq!(echoed.expect("a message").expect("no error"), Message::text("hello, berth"));
    socket.send(Message::binary(vec![0u8, 1, 2, 255])).await.expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("echo in time");
    assert_eq!(echoed.expect("a message").expect("no error"), Message::binary(vec![0u8, 1, 2, 255]));
    socket.close(None).await.expect("close");
    // Without an upgrade, /ws says what it expects.
    let plain = berth_manager::conformance::http_get(addr, "/ws").await.expect("get");
    assert_eq!(plain.0, 426);
}
