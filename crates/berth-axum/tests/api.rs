//! The management API in-process (`oneshot`) over a fleet of mock containers.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use berth_axum::Identity;
use berth_axum::api::{ApiState, ImagePolicy, InputDelivery, ToolDef, ToolRegistry, api_router};
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
        description: format!("the {name} tool"),
        default_parameters: json!({"palette": "viridis", "zoom": 1}),
        default_files: vec!["http://data.example/a.csv".into()],
        input_mode: mode,
        ..ToolDef::new(name, MOCK_TOOL_IMAGE, 32)
    }
}

struct Api {
    app: Router,
    history: Arc<HistoryStore>,
}

async fn api(token: Option<&str>) -> Api {
    api_with(token, Duration::ZERO, ImagePolicy::RegistryOnly).await
}

/// The API over mock tools that answer 503 on `/` for `warmup` after start.
async fn api_with(token: Option<&str>, warmup: Duration, images: ImagePolicy) -> Api {
    let config = berth_manager::MockConfig { default_warmup: warmup, ..Default::default() };
    let manager = Arc::new(MockManager::with_config(berth_manager::MockEngine::new(), config));
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
    let registry = ToolRegistry::new(vec![tool("viewer", InputDelivery::Env), tool("staged", InputDelivery::Url)]);
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
        urls: berth_axum::api::PublicUrls::default(),
        owner_label: berth_axum::DEFAULT_OWNER_LABEL.into(),
        ready_timeout: Duration::from_secs(10),
        metrics,
        activity: recorder.clone(),
        launches: Default::default(),
        images,
    };
    let proxy = Proxy::with_hooks(table, ProxyConfig::default(), berth_proxy::AllowAll, recorder);
    let app = api_router(state).merge(berth_axum::proxy_router(proxy, "/docker"));
    Api { app, history }
}

/// `app` as the host app's authentication would present it for `user`.
fn as_user(app: &Router, user: &'static str, admin: bool) -> Router {
    app.clone().layer(axum::middleware::from_fn(
        move |mut req: Request<Body>, next: axum::middleware::Next| async move {
            req.extensions_mut().insert(Identity::new(user).with_admin(admin));
            next.run(req).await
        },
    ))
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
    // A dry run checks what the launch would (schemathesis found it did not).
    let req = json!({"name": "v1*", "tool": "viewer", "dry_run": true});
    assert_eq!(call(&app, "POST", "/api/v1/containers", Some(req), None).await.0, StatusCode::BAD_REQUEST);
    // Parameters that are not an object are refused, not dropped.
    for parameters in [json!([1, 2]), json!("zoom=3"), json!(3)] {
        let req = json!({"name": "v1", "tool": "viewer", "parameters": parameters});
        let (status, body) = call(&app, "POST", "/api/v1/containers", Some(req), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{parameters}: {body}");
        assert!(body["error"].as_str().unwrap_or_default().starts_with("parameters:"), "{body}");
    }

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
    assert_eq!(bad(json!({"name": "xx", "tool": "nope"})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(bad(json!({"name": "Bad_Name", "tool": "viewer"})).await.0, StatusCode::BAD_REQUEST);
    for n in ["aa", "bb", "cc"] {
        assert_eq!(bad(json!({"name": n, "tool": "viewer"})).await.0, StatusCode::ACCEPTED);
    }
    assert_eq!(bad(json!({"name": "dd", "tool": "viewer"})).await.0, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = bad(json!({"name": "aa", "tool": "viewer", "parameters": {"other": 1}})).await;
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
    let (alice, bob, admin) = (as_user(&app, "alice", false), as_user(&app, "bob", false), as_user(&app, "root", true));
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

/// The events of a stream, as (event name, data) pairs, until it ends or
/// `limit` passes.
async fn sse(app: &Router, path: &str, limit: Duration) -> Vec<(String, Value)> {
    let resp = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    text.split("\n\n")
        .filter_map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((event.to_owned(), serde_json::from_str(data).unwrap()))
        })
        .collect()
}

#[tokio::test]
async fn launch_progress_as_server_sent_events() {
    let Api { app, .. } = api_with(None, Duration::from_millis(1200), ImagePolicy::RegistryOnly).await;
    // Subscribed before the launch: the stream starts at "creating".
    let watcher = {
        let app = app.clone();
        tokio::spawn(async move { sse(&app, "/api/v1/containers/ev/events", Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, _) =
        call(&app, "POST", "/api/v1/containers", Some(json!({"name": "ev", "tool": "viewer"})), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let events = watcher.await.unwrap();
    let phases: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    // The mock starts its container within launch, so "starting" may be skipped.
    let expected = [&["creating", "waiting", "ready"][..], &["creating", "starting", "waiting", "ready"][..]];
    assert!(expected.contains(&phases.as_slice()), "{events:?}");
    for (event, data) in &events {
        assert_eq!((&data["name"], &data["phase"]), (&json!("ev"), &json!(event)), "{data}");
    }
    let (_, ready) = events.last().unwrap();
    let age = ready["age_secs"].as_f64().unwrap();
    assert!((1.0..5.0).contains(&age), "ready about 1.2 s after creation: {ready}");

    // Subscribed once ready: one event, and the stream ends.
    let again = sse(&app, "/api/v1/containers/ev/events", Duration::from_secs(5)).await;
    assert_eq!(again.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), ["ready"]);
}

#[tokio::test]
async fn a_failed_launch_is_reported_on_its_events() {
    // At most 3 containers: the fourth launch fails with no container.
    let Api { app, .. } = api(None).await;
    for name in ["f1", "f2", "f3"] {
        let (status, _) =
            call(&app, "POST", "/api/v1/containers", Some(json!({"name": name, "tool": "viewer"})), None).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, e) =
        call(&app, "POST", "/api/v1/containers", Some(json!({"name": "f4", "tool": "viewer"})), None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{e}");
    let events = sse(&app, "/api/v1/containers/f4/events", Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let (event, data) = &events[0];
    assert_eq!(event, "failed");
    assert_eq!(data["reason"], e["error"], "{data}");
    // A container of that name wins over the failed launch's record.
    let (status, _) = call(&app, "DELETE", "/api/v1/containers/f1", None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) =
        call(&app, "POST", "/api/v1/containers?wait=true", Some(json!({"name": "f4", "tool": "viewer"})), None).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse(&app, "/api/v1/containers/f4/events", Duration::from_secs(5)).await;
    assert_eq!(events.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), ["ready"]);
}

#[tokio::test]
async fn launch_progress_hides_other_owners_containers() {
    let Api { app, .. } = api(None).await;
    let (alice, bob, admin) = (as_user(&app, "alice", false), as_user(&app, "bob", false), as_user(&app, "root", true));
    let (status, _) =
        call(&alice, "POST", "/api/v1/containers?wait=true", Some(json!({"name": "mine", "tool": "viewer"})), None)
            .await;
    assert_eq!(status, StatusCode::OK);
    let phases = |events: Vec<(String, Value)>| events.into_iter().map(|(e, _)| e).collect::<Vec<_>>();
    assert_eq!(phases(sse(&alice, "/api/v1/containers/mine/events", Duration::from_secs(5)).await), ["ready"]);
    assert_eq!(phases(sse(&admin, "/api/v1/containers/mine/events", Duration::from_secs(5)).await), ["ready"]);
    // To bob it is exactly a container that does not exist (yet).
    let seen_by_bob = phases(sse(&bob, "/api/v1/containers/mine/events", Duration::from_secs(1)).await);
    let missing = phases(sse(&bob, "/api/v1/containers/nobody/events", Duration::from_secs(1)).await);
    assert_eq!((seen_by_bob, missing), (vec!["creating".to_owned()], vec!["creating".to_owned()]));
}

#[tokio::test]
async fn logs_follow_streams_until_the_container_stops() {
    let Api { app, .. } = api(None).await;
    let (status, _) =
        call(&app, "POST", "/api/v1/containers?wait=true", Some(json!({"name": "lg", "tool": "viewer"})), None).await;
    assert_eq!(status, StatusCode::OK);
    let resp = app
        .clone()
        .oneshot(Request::get("/api/v1/containers/lg/logs?follow=true").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // A line written after the stream opened arrives on it.
    assert_eq!(call(&app, "GET", "/docker/lg/say/followed-word", None, None).await.0, StatusCode::OK);
    let mut text = String::new();
    while !text.contains("followed-word") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame()).await.unwrap().unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
    }
    let line = text.lines().find(|l| l.contains("followed-word")).unwrap();
    let (time, _) = line.split_once(' ').unwrap();
    assert!(time.parse::<f64>().unwrap() > 1.7e9, "{line}");
    // The container exits: the body ends.
    let _ = call(&app, "GET", "/docker/lg/exit/0", None, None).await;
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect()).await;
    assert!(rest.is_ok_and(|r| r.is_ok()), "the stream ends when the container stops");
    // Someone else's or a missing container: 404 before any streaming.
    assert_eq!(
        call(&app, "GET", "/api/v1/containers/nope/logs?follow=true", None, None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn images_outside_the_registry_only_when_allowed() {
    let image_launch = json!({"name": "img", "image": MOCK_TOOL_IMAGE, "port": 80, "mem_reservation_mb": 24});
    let Api { app, .. } = api(None).await;
    let (status, e) = call(&app, "POST", "/api/v1/containers", Some(image_launch.clone()), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    assert!(e["error"].as_str().unwrap().contains("registry tools only"), "{e}");
    assert_eq!(call(&app, "GET", "/api/v1/containers", None, None).await.1["containers"], json!([]));

    let Api { app, .. } = api_with(None, Duration::ZERO, ImagePolicy::Prefixes(vec!["berth/".into()])).await;
    let (status, made) = call(&app, "POST", "/api/v1/containers?wait=true", Some(image_launch), None).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    assert_eq!(
        (&made["tool"], &made["image"], &made["mem_reservation_mb"]),
        (&json!(null), &json!(MOCK_TOOL_IMAGE), &json!(24))
    );
    let outside = json!({"name": "img2", "image": "elsewhere/tool:1"});
    assert_eq!(call(&app, "POST", "/api/v1/containers", Some(outside), None).await.0, StatusCode::FORBIDDEN);
    // Refused before the fleet: not recorded as a failed launch of img2.
    let events = sse(&app, "/api/v1/containers/img2/events", Duration::from_secs(1)).await;
    assert_eq!(events.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), ["creating"]);
    let huge = json!({"name": "img6", "image": MOCK_TOOL_IMAGE, "mem_reservation_mb": u64::MAX});
    let (status, e) = call(&app, "POST", "/api/v1/containers", Some(huge), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    let both = json!({"name": "img3", "image": MOCK_TOOL_IMAGE, "tool": "viewer"});
    assert_eq!(call(&app, "POST", "/api/v1/containers", Some(both), None).await.0, StatusCode::BAD_REQUEST);
    let tool_with_port = json!({"name": "img7", "tool": "viewer", "port": 8080});
    assert_eq!(call(&app, "POST", "/api/v1/containers", Some(tool_with_port), None).await.0, StatusCode::BAD_REQUEST);
    let neither = json!({"name": "img4"});
    assert_eq!(call(&app, "POST", "/api/v1/containers", Some(neither), None).await.0, StatusCode::BAD_REQUEST);
    // Misspelt keys are refused, not ignored.
    let typo = json!({"name": "img5", "tool": "viewer", "file": ["http://x/a.csv"]});
    let (status, e) = call(&app, "POST", "/api/v1/containers", Some(typo), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["error"].as_str().unwrap().contains("unknown field `file`"), "{e}");
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
