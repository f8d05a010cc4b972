//! The proxy end to end against real Docker containers running the
//! `berth-testtool` image: please-wait, websocket echo, server-sent
//! events, failure pages, and no engine calls on the hot path; each on a
//! plain engine (`docker_*`) and on a single-node swarm (`swarm_*`, see
//! `berth_testkit::swarm`). (Streaming 1 GiB each way is in
//! `streaming_memory.rs`.)

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_manager::{ContainerManager, ContainerSpec, ENV_STARTUP_DELAY_MS};
use berth_proxy::{ActivityRecorder, MemoryActivity, Proxy, ProxyConfig, RouteTable, ServerLimits, TableConfig};
use berth_testkit::TestRun;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::BodyExt;

const HOST: &str = "app.example";

struct Docker {
    manager: Arc<CountingManager<Arc<dyn ContainerManager>>>,
    addr: std::net::SocketAddr,
    run: TestRun,
    image: String,
}

/// Which backend a test runs on.
#[derive(Clone, Copy)]
enum Backend {
    Docker,
    Swarm,
}

async fn setup(test: &str, backend: Backend) -> Option<Docker> {
    let (manager, run, image): (Arc<dyn ContainerManager>, TestRun, String) = match backend {
        Backend::Docker => {
            let docker = berth_testkit::docker_or_skip(test).await?;
            let run = TestRun::start(&docker).await;
            let image = berth_testkit::test_tool_image(&docker).await.expect("tool image");
            (Arc::new(docker), run, image)
        }
        Backend::Swarm => {
            let swarm = berth_testkit::swarm::swarm_or_skip(test).await?;
            let run = TestRun::start(swarm.engine()).await;
            let image = berth_testkit::test_tool_image(swarm.engine()).await.expect("tool image");
            (Arc::new(swarm), run, image)
        }
    };
    let manager = Arc::new(CountingManager::new(manager));
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.expect("route table");
    let recorder = ActivityRecorder::spawn(MemoryActivity::default(), 10_000);
    let proxy = Proxy::with_hooks(table, ProxyConfig::default(), berth_proxy::AllowAll, recorder);
    let addr = serve(proxy, ServerLimits::default()).await;
    Some(Docker { manager, addr, run, image })
}

impl Docker {
    async fn launch(&self, suffix: &str, delay_ms: u64) -> String {
        let name = self.run.name(suffix);
        let mut spec =
            ContainerSpec::new(self.image.clone(), &name, 16).env(ENV_STARTUP_DELAY_MS, delay_ms.to_string());
        spec.labels = self.run.labels();
        self.manager.launch(&spec).await.expect("launch");
        name
    }
}

/// Defines `docker_<check>` and `swarm_<check>`, running `<check>` on each.
macro_rules! on_both {
    ($($check:ident),+ $(,)?) => {
        mod docker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(d) = super::setup(concat!("docker_", stringify!($check)), super::Backend::Docker).await {
                        super::$check(d).await;
                    }
                }
            )+
        }
        mod swarm {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    if let Some(d) = super::setup(concat!("swarm_", stringify!($check)), super::Backend::Swarm).await {
                        super::$check(d).await;
                    }
                }
            )+
        }
    };
}

on_both!(please_wait_then_tool_then_hot_path, websocket_and_sse, exit_shows_failure_page_and_removal_404);

async fn please_wait_then_tool_then_hot_path(d: Docker) {
    let name = d.launch("wait", 1500).await;
    let root = format!("/docker/{name}/");
    let (status, _, body) = get(d.addr, HOST, &root).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = wait_not_503(d.addr, HOST, &root).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("berth-testtool"));

    let before = d.manager.calls_for(&name);
    let stream = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for i in 0..1000 {
        let req = Request::get(format!("/docker/{name}/n/{i}")).header("host", HOST).body(empty()).unwrap();
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(d.manager.calls_for(&name), before, "engine called on the hot path");
}

async fn websocket_and_sse(d: Docker) {
    let name = d.launch("ws", 0).await;
    wait_not_503(d.addr, HOST, &format!("/docker/{name}/")).await;

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/docker/{name}/ws", d.addr))
        .await
        .expect("websocket through berth to the container");
    for i in 0..10 {
        let msg = format!("ping {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone())).await.unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), msg);
    }
    let big = vec![7u8; 200_000];
    ws.send(tokio_tungstenite::tungstenite::Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_data().to_vec(), big);
    let _ = ws.close(None).await;

    let stream = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req =
        Request::get(format!("/docker/{name}/sse?n=4&interval_ms=300")).header("host", HOST).body(empty()).unwrap();
    let started = Instant::now();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = loop {
        let frame = body.frame().await.unwrap().unwrap();
        if let Ok(d) = frame.into_data() {
            break d;
        }
    };
    assert!(String::from_utf8_lossy(&first).contains("event 0"));
    assert!(started.elapsed() < Duration::from_millis(800), "first event after {:?}", started.elapsed());
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).contains("event 3"));
}

async fn exit_shows_failure_page_and_removal_404(d: Docker) {
    let name = d.launch("exit", 0).await;
    wait_not_503(d.addr, HOST, &format!("/docker/{name}/")).await;
    let _ = get(d.addr, HOST, &format!("/docker/{name}/say/goodbye-from-tool")).await;
    let _ = get(d.addr, HOST, &format!("/docker/{name}/exit/5")).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = get(d.addr, HOST, &format!("/docker/{name}/")).await;
        let html = String::from_utf8_lossy(&body).into_owned();
        if status == StatusCode::BAD_GATEWAY && html.contains("goodbye-from-tool") {
            assert!(html.contains("exited with status 5"), "{html}");
            break;
        }
        assert!(Instant::now() < deadline, "no failure page: {status} {html}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    d.manager.remove(&name).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = get(d.addr, HOST, &format!("/docker/{name}/")).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "removed container still routed ({status})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A container that was created but never started (a launch that died
/// half-way) fails after the start timeout instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_created_but_never_started_fails() {
    let Some(docker) = berth_testkit::docker_or_skip("docker_created_but_never_started_fails").await else { return };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.expect("tool image");
    let manager = Arc::new(docker);
    let config = TableConfig { start_timeout: Duration::from_secs(2), ..TableConfig::default() };
    let table = RouteTable::start(manager.clone(), config).await.expect("route table");
    let name = run.name("halfmade");
    let run_label = format!("{}={}", berth_testkit::RUN_LABEL, run.id());
    let out = std::process::Command::new("docker")
        .args(["create", "--name", &name, "--label", &run_label, "--label", "berth=true"])
        .args(["--label", "berth.port=80", &image])
        .output()
        .expect("docker CLI runs");
    assert!(out.status.success(), "docker create: {}", String::from_utf8_lossy(&out.stderr));
    let started = Instant::now();
    let failure = loop {
        match table.lookup(&name).await {
            berth_proxy::Lookup::Failed(f) => break f,
            other => assert!(started.elapsed() < Duration::from_secs(20), "still {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failure.reason, berth_proxy::FailureReason::NeverStarted(Duration::from_secs(2)));
    assert!(started.elapsed() >= Duration::from_millis(1500), "failed before the timeout");
}

/// A swarm service whose task never gets a node (a launch that died while
/// its task was pending) fails after the start timeout instead of waiting
/// forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_pending_forever_fails() {
    let Some(swarm) = berth_testkit::swarm::swarm_or_skip("swarm_pending_forever_fails").await else { return };
    let run = TestRun::start(swarm.engine()).await;
    let image = berth_testkit::test_tool_image(swarm.engine()).await.expect("tool image");
    let manager = Arc::new(swarm);
    let config = TableConfig { start_timeout: Duration::from_secs(2), ..TableConfig::default() };
    let table = RouteTable::start(manager.clone(), config).await.expect("route table");
    let name = run.name("pending");
    let run_label = format!("{}={}", berth_testkit::RUN_LABEL, run.id());
    let out = std::process::Command::new("docker")
        .args(["service", "create", "--detach", "--name", &name, "--label", &run_label, "--label", "berth=true"])
        .args(["--label", "berth.port=80", "--restart-condition", "none", "--endpoint-mode", "dnsrr"])
        .args(["--constraint", "node.labels.berth-no-such-node==yes", &image])
        .output()
        .expect("docker CLI runs");
    assert!(out.status.success(), "docker service create: {}", String::from_utf8_lossy(&out.stderr));
    let started = Instant::now();
    let failure = loop {
        match table.lookup(&name).await {
            berth_proxy::Lookup::Failed(f) => break f,
            other => assert!(started.elapsed() < Duration::from_secs(20), "still {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failure.reason, berth_proxy::FailureReason::NeverStarted(Duration::from_secs(2)));
    let info = manager.inspect(&name).await.unwrap();
    assert!(info.message.as_deref().is_some_and(|m| m.contains("no suitable node")), "{:?}", info.message);
}
