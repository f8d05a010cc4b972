//! The management API in-process (`oneshot`) over a fleet of mock containers.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use berth_axum::Identity;
use berth_axum::api::{ApiState, InputDelivery, ToolDef, ToolRegistry, api_router};
use berth_fleet::{Fleet, FleetConfig, Stager};
use berth_history::HistoryStore;
use berth_manager::{MOCK_TOOL_IMAGE, MockManager};
use berth_proxy::{ActivityRecorder, Proxy, ProxyConfig, RouteTable, TableConfig};
use berth_staging::{MemoryStore, StagingService, StagingUrls, TokenRegistry};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn tool(name: &str, mode: InputDelivery) -> ToolDef {
    ToolDef {
        name: name.into(),
        description: format!("the {name} tool"),
        image: MOCK_TOOL_IMAGE.into(),
        port: 80,
        mem_reservation_mb: 32,
        cpus: None,
        default_parameters: json!({"palette": "viridis", "zoom": 1}),
        default_files: vec!["http://data.example/a.csv".into()],
        input_mode: mode,
        input_path: None,
        extra_directories: vec![],
    }
}

struct Api {
    app: Router,
    history: Arc<HistoryStore>,
}

async fn api(token: Option<&str>) -> Api {
    let manager = Arc::new(MockManager::new());
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let history = Arc::new(HistoryStore::in_memory().unwrap());
    let stager = Arc::new(Stager::new(
        StagingService::new(Arc::new(MemoryStore::new()), TokenRegistry::new()),
        StagingUrls::new("http://127.0.0.1:9"),
    ));
    let fleet = Arc::new(
        Fleet::new(manager, history.clone(), FleetConfig { max_containers: Some(3), ..FleetConfig::default() })
            .with_stager(stager),
    );
    let registry = ToolRegistry { tools: vec![tool("viewer", InputDelivery::Env), tool("staged", InputDelivery::Url)] };
    let metrics = Arc::new(berth_axum::metrics::Metrics::new());
    let recorder = ActivityRecorder::spawn_with_interval(
        berth_proxy::TeeSink(history.clone(), metrics.clone()),
        1000,
        Duration::ZERO,
    );
    let state = ApiState {
        fleet,
        table: table.clone(),
        history: Some(history.clone()),
        registry: Arc::new(registry),
        token: token.map(str::to_owned),
        proxy_prefix: "/docker".into(),
        owner_label: berth_axum::DEFAULT_OWNER_LABEL.into(),
        ready_timeout: Duration::from_secs(10),
        metrics,
        activity: recorder.clone(),
    };
    let proxy = Proxy::with_hooks(table, ProxyConfig::default(), berth_proxy::AllowAll, recorder);
    let app = api_router(state).merge(berth_axum::proxy_router(proxy, "/docker"));
    Api { app, history }
}

async fn call(app: &Router, method: &str, path: &str, body: Option<Value>, token: Option<&str>) -> (StatusCode, Value) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(v) => b.header("content-type", "application/json").body(Body::from(v.to_string())).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

#[tokio::test]
async fn launch_inspect_history_remove() {
    let Api { app, history } = api(None).await;
    let (status, tools) = call(&app, "GET", "/api/v1/tools", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tools["tools"][0]["name"], "viewer");

    // Dry run: the input document, nothing launched.
    let req = json!({"name": "v1", "tool": "viewer", "parameters": {"zoom": 3}, "dry_run": true});
    let (status, dry) = call(&app, "POST", "/api/v1/containers", Some(req), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dry["input"]["parameters"], json!({"palette": "viridis", "zoom": 3}));
    assert_eq!(dry["input"]["file_relationships"], json!(["http://data.example/a.csv"]));
    assert_eq!(dry["input"]["api_prefix"], "/docker/v1/");
    assert_eq!(call(&app, "GET", "/api/v1/containers", None, None).await.1["containers"], json!([]));

    // Launch and wait for ready.
    let req = json!({"name": "v1", "tool": "viewer", "files": ["http://data.example/b.csv"]});
    let (status, launched) = call(&app, "POST", "/api/v1/containers?wait=true", Some(req.clone()), None).await;
    assert_eq!(status, StatusCode::OK, "{launched}");
    assert_eq!((launched["ready"].clone(), launched["path"].clone()), (json!(true), json!("/docker/v1/")));
    // The same launch again: the existing container.
    let (status, _) = call(&app, "POST", "/api/v1/containers", Some(req), None).await;
    assert_eq!(status, StatusCode::OK);
    // The tool received the document in INPUT_JSON.
    let (status, input) = call(&app, "GET", "/docker/v1/input", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(input["file_relationships"], json!(["http://data.example/b.csv"]));

    // Activity reaches the history store off the hot path: wait for it.
    let mut one = Value::Null;
    for _ in 0..100 {
        let (status, v) = call(&app, "GET", "/api/v1/containers/v1", None, None).await;
        assert_eq!(status, StatusCode::OK);
        one = v;
        if one["last_activity"].is_number() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (one["status"].clone(), one["tool"].clone(), one["mem_reservation_mb"].clone()),
        (json!("running"), json!("viewer"), json!(32))
    );
    assert!(one["last_activity"].as_f64().is_some(), "{one}");
    let (_, hist) = call(&app, "GET", "/api/v1/containers/v1/history", None, None).await;
    assert!(hist["history"].as_array().unwrap().iter().any(|e| e["path"] == "/docker/v1/input"), "{hist}");
    let (status, logs) = call(&app, "GET", "/api/v1/containers/v1/logs", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(logs.as_str().unwrap().contains("GET /input"));

    let (status, _) = call(&app, "DELETE", "/api/v1/containers/v1", None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = call(&app, "GET", "/api/v1/containers/v1", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].as_str().unwrap().contains("v1"));
    drop(history);
}

#[tokio::test]
async fn errors_say_what_to_do() {
    let Api { app, .. } = api(None).await;
    let bad = |body: Value| call(&app, "POST", "/api/v1/containers", Some(body), None);
    assert_eq!(bad(json!({"name": "x", "tool": "nope"})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(bad(json!({"name": "Bad_Name", "tool": "viewer"})).await.0, StatusCode::BAD_REQUEST);
    for n in ["a", "b", "c"] {
        assert_eq!(bad(json!({"name": n, "tool": "viewer"})).await.0, StatusCode::ACCEPTED);
    }
    assert_eq!(bad(json!({"name": "d", "tool": "viewer"})).await.0, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = bad(json!({"name": "a", "tool": "viewer", "parameters": {"other": 1}})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, purged) =
        call(&app, "POST", "/api/v1/purge", Some(json!({"label": "berth-fleet.tool", "value": "viewer"})), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(purged["removed"].as_array().unwrap().len(), 3);
    assert_eq!(call(&app, "POST", "/api/v1/purge", Some(json!({})), None).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn staged_tools_get_an_input_url() {
    let Api { app, .. } = api(None).await;
    let (status, _) =
        call(&app, "POST", "/api/v1/containers", Some(json!({"name": "s1", "tool": "staged"})), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, env) = call(&app, "GET", "/docker/s1/env/INPUT_JSON_URL", None, None).await;
    let env = env.as_str().unwrap_or_default().to_owned();
    // The mock answers 503 while starting; retry until it serves.
    let env = if env.starts_with("http") {
        env
    } else {
        let mut v = String::new();
        for _ in 0..100 {
            let (s, e) = call(&app, "GET", "/docker/s1/env/INPUT_JSON_URL", None, None).await;
            if s == StatusCode::OK {
                v = e.as_str().unwrap().to_owned();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        v
    };
    assert!(env.starts_with("http://127.0.0.1:9/_berth/staged/") && env.ends_with("/input.json"), "{env}");
}

#[tokio::test]
async fn bearer_token_and_owners() {
    let Api { app, .. } = api(Some("s3cret")).await;
    assert_eq!(call(&app, "GET", "/healthz", None, None).await.0, StatusCode::OK);
    assert_eq!(call(&app, "GET", "/api/v1/tools", None, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, "GET", "/api/v1/tools", None, Some("wrong!")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, "GET", "/api/v1/tools", None, Some("s3cret")).await.0, StatusCode::OK);
    let (status, doc) = call(&app, "GET", "/api/v1/openapi.json", None, Some("s3cret")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1/containers"]["post"].is_object());

    // With identities from the host app: owners see their own.
    let Api { app, .. } = api(None).await;
    let as_user = |user: &'static str, admin: bool| {
        app.clone().layer(axum::middleware::from_fn(
            move |mut req: Request<Body>, next: axum::middleware::Next| async move {
                req.extensions_mut().insert(Identity { user: user.into(), admin });
                next.run(req).await
            },
        ))
    };
    let (alice, bob, admin) = (as_user("alice", false), as_user("bob", false), as_user("root", true));
    let (status, made) =
        call(&alice, "POST", "/api/v1/containers", Some(json!({"name": "al", "tool": "viewer"})), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(made["owner"], "alice");
    assert_eq!(call(&bob, "GET", "/api/v1/containers", None, None).await.1["containers"], json!([]));
    assert_eq!(call(&bob, "GET", "/api/v1/containers/al", None, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&bob, "DELETE", "/api/v1/containers/al", None, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&bob, "POST", "/api/v1/purge", Some(json!({"idle_secs": 0})), None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        call(&admin, "GET", "/api/v1/containers", None, None).await.1["containers"].as_array().unwrap().len(),
        1
    );
    assert_eq!(call(&alice, "DELETE", "/api/v1/containers/al", None, None).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn launch_progress_as_server_sent_events() {
    let Api { app, .. } = api(None).await;
    let (status, _) =
        call(&app, "POST", "/api/v1/containers", Some(json!({"name": "ev", "tool": "viewer"})), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let resp =
        app.clone().oneshot(Request::get("/api/v1/containers/ev/events").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text =
        tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await.unwrap().unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    let phases: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(phases.last(), Some(&"ready"), "{text}");
    assert!(text.contains("\"name\":\"ev\""), "{text}");
}

#[tokio::test]
async fn prometheus_metrics() {
    let Api { app, .. } = api(None).await;
    let (status, _) =
        call(&app, "POST", "/api/v1/containers?wait=true", Some(json!({"name": "m1", "tool": "viewer"})), None).await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(call(&app, "GET", "/docker/m1/x", None, None).await.0, StatusCode::OK);
    }
    let mut text = String::new();
    for _ in 0..100 {
        text = call(&app, "GET", "/metrics", None, None).await.1.as_str().unwrap_or_default().to_owned();
        if text.contains("berth_requests_total{container=\"m1\",status=\"200\"} 3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(text.contains("berth_requests_total{container=\"m1\",status=\"200\"} 3"), "{text}");
    assert!(text.contains("berth_launches_total 1") && text.contains("berth_running_containers 1"), "{text}");
    assert!(text.contains("berth_request_duration_seconds_count 3"), "{text}");
}
