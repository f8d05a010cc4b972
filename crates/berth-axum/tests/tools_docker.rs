//! A tool definition run on the real engine: the test tool image launched
//! through the management API with a templated command and environment,
//! limits, shared memory and a persistent volume, read back through the
//! proxy, across a kill and a relaunch. Everything it creates carries its
//! test run's label and its own root label; the volume is removed through
//! the API, and the run's clean-up removes whatever a failure leaves.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use berth_axum::Identity;
use berth_axum::api::{ApiState, ImagePolicy, PublicUrls, ToolDef, ToolRegistry, api_router};
use berth_fleet::{Fleet, FleetConfig};
use berth_history::HistoryStore;
use berth_manager::LabelScheme;
use berth_manager::docker::DockerManager;
use berth_proxy::{ActivityRecorder, PathRouting, Proxy, ProxyConfig, RouteTable, Routing, TableConfig};
use berth_testkit::TestRun;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const HOST: &str = "127.0.0.1:8000";

async fn send(app: &Router, method: &str, path: &str, body: Body, json_body: bool) -> (StatusCode, String) {
    let mut b = Request::builder().method(method).uri(path).header("host", HOST);
    if json_body {
        b = b.header("content-type", "application/json");
    }
    let resp = app.clone().oneshot(b.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn call(app: &Router, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let has_body = body.is_some();
    let body = body.map_or_else(Body::empty, |v| Body::from(v.to_string()));
    let (status, text) = send(app, method, path, body, has_body).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_definition_on_docker() {
    let Some(docker) = berth_testkit::docker_or_skip("a_tool_definition_on_docker").await else { return };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.unwrap();
    // A root label of its own: this fleet sees only this test's containers
    // and volumes.
    let scheme = LabelScheme::new(format!("bt{}", run.id()));
    let manager = Arc::new(DockerManager::connect(docker.config().clone().labels(scheme)).await.unwrap());

    let volume_template = format!("{}-home-{{owner}}", run.name("v"));
    let volume = format!("{}-home-ann", run.name("v"));
    let tool: ToolDef = serde_json::from_value(json!({
        "name": "probe",
        "image": image,
        "mem_reservation_mb": 32,
        "mem_limit_mb": 64,
        "shm_size_mb": 96,
        "command": ["/berth-testtool", "--base={public_path}", "--owner={owner}", "--url={public_url}"],
        "env": {"APP_BASE": "{public_path}"},
        "working_dir": "/tmp",
        "volumes": [{"name": volume_template, "path": "/data"}],
        "start_timeout_secs": 30,
        "labels": run.labels(),
    }))
    .unwrap();
    let mut broken = tool.clone();
    broken.name = "broken".into();
    broken.command = Some(vec![berth_axum::template::Template::parse("/no/such/program").unwrap()]);
    broken.volumes[0].name =
        berth_axum::template::Template::parse(&format!("{}-broken-{{owner}}", run.name("v"))).unwrap();

    let ready_timeout = Duration::from_secs(60);
    let table =
        RouteTable::start(manager.clone(), TableConfig { start_timeout: ready_timeout, ..TableConfig::default() })
            .await
            .unwrap();
    let history = Arc::new(HistoryStore::in_memory().unwrap());
    let fleet = Arc::new(Fleet::new(manager.clone(), history.clone(), FleetConfig::default()));
    let metrics = Arc::new(berth_axum::metrics::Metrics::new());
    let recorder = ActivityRecorder::spawn(berth_proxy::TeeSink(history.clone(), metrics.clone()), 1000);
    let state = ApiState {
        fleet,
        table: table.clone(),
        history: Some(history),
        registry: Arc::new(ToolRegistry::new(vec![tool, broken])),
        token: None,
        urls: PublicUrls::path("http://127.0.0.1:8000", "/docker"),
        owner_label: berth_axum::DEFAULT_OWNER_LABEL.into(),
        ready_timeout,
        metrics,
        activity: recorder.clone(),
        launches: Default::default(),
        images: ImagePolicy::RegistryOnly,
    };
    // The proxy reaches the container on its port published on 127.0.0.1.
    let config = ProxyConfig { routing: Routing::Path(PathRouting::default()), ..ProxyConfig::default() };
    let proxy = Proxy::with_hooks(table, config, berth_proxy::AllowAll, recorder);
    let app = api_router(state).merge(berth_axum::proxy_router(proxy, "/docker"));
    let ann = app.clone().layer(axum::middleware::from_fn(
        |mut req: Request<Body>, next: axum::middleware::Next| async move {
            req.extensions_mut().insert(Identity::new("ann"));
            next.run(req).await
        },
    ));

    // A command that cannot start: refused with the engine's reason, and
    // nothing left behind, not even the volume it would have created.
    let broken = json!({"name": run.name("broken"), "tool": "broken"});
    let (status, e) = call(&ann, "POST", "/api/v1/containers?wait=true", Some(broken)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"].as_str().unwrap().contains("/no/such/program"), "{e}");
    assert_eq!(call(&ann, "GET", "/api/v1/containers", None).await.1["containers"], json!([]));
    assert_eq!(call(&ann, "GET", "/api/v1/volumes", None).await.1["volumes"], json!([]));

    let name = run.name("nb");
    let launch = json!({"name": name, "tool": "probe"});
    let (status, made) = call(&ann, "POST", "/api/v1/containers?wait=true", Some(launch.clone())).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    assert_eq!(made["volumes"], json!([volume]));

    let tool_says = |route: &str| {
        let (app, path) = (app.clone(), format!("/docker/{name}{route}"));
        async move {
            let (status, text) = send(&app, "GET", &path, Body::empty(), false).await;
            assert_eq!(status, StatusCode::OK, "{path}: {text}");
            text
        }
    };
    let public_path = format!("/docker/{name}/");
    let argv = format!("--base={public_path}\n--owner=ann\n--url=http://127.0.0.1:8000{public_path}\n");
    assert_eq!(tool_says("/argv").await, argv);
    assert_eq!(tool_says("/env/APP_BASE").await.trim_end(), public_path);
    assert_eq!(tool_says("/env/BERTH_PUBLIC_PATH").await.trim_end(), public_path);
    assert_eq!(tool_says("/cwd").await, "/tmp\n");
    assert_eq!(tool_says("/memlimit").await, format!("{}\n", 64 << 20));
    assert_eq!(tool_says("/shm").await, format!("{}\n", 96 << 20));

    // Work written into the persistent volume survives the container.
    let path = format!("/docker/{name}/file?path=/data/notes/today.txt");
    let (status, text) = send(&app, "PUT", &path, Body::from("kept across kills\n"), false).await;
    assert_eq!(status, StatusCode::CREATED, "{text}");
    let (status, _) = call(&ann, "DELETE", &format!("/api/v1/containers/{name}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, volumes) = call(&ann, "GET", "/api/v1/volumes", None).await;
    assert_eq!(volumes["volumes"], json!([{"name": volume, "owner": "ann", "used_by": []}]));
    let (status, made) = call(&ann, "POST", "/api/v1/containers?wait=true", Some(launch)).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    assert_eq!(tool_says("/file?path=/data/notes/today.txt").await, "kept across kills\n");

    // Removed only on request, and not while mounted.
    let (status, e) = call(&ann, "DELETE", &format!("/api/v1/volumes/{volume}"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    let (status, _) = call(&ann, "DELETE", &format!("/api/v1/containers/{name}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, e) = call(&ann, "DELETE", &format!("/api/v1/volumes/{volume}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{e}");
    assert_eq!(call(&ann, "GET", "/api/v1/volumes", None).await.1["volumes"], json!([]));
    assert!(docker.label_values(berth_testkit::RUN_LABEL).await.unwrap().iter().all(|v| v != run.id()));
}
