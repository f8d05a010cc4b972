//! The OpenAPI document against the router it describes: every route is
//! documented with its methods, every documented operation is routed.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use berth_axum::api::{ApiState, ImagePolicy, ToolDef, ToolRegistry, api_router};
use berth_fleet::{Fleet, FleetConfig};
use berth_history::HistoryStore;
use berth_manager::{MOCK_TOOL_IMAGE, MockManager};
use berth_proxy::{ActivityRecorder, RouteTable, TableConfig};
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The API alone (no proxy or other routes merged in), without a token.
async fn api() -> Router {
    let manager = Arc::new(MockManager::new());
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let history = Arc::new(HistoryStore::in_memory().unwrap());
    let fleet = Arc::new(Fleet::new(manager, history.clone(), FleetConfig::default()));
    let metrics = Arc::new(berth_axum::metrics::Metrics::new());
    let recorder = ActivityRecorder::spawn_with_interval(
        berth_proxy::TeeSink(history.clone(), metrics.clone()),
        1000,
        Duration::ZERO,
    );
    api_router(ApiState {
        fleet,
        table,
        history: Some(history),
        registry: Arc::new(ToolRegistry::new(vec![
            ToolDef::new("viewer", MOCK_TOOL_IMAGE, 32),
            ToolDef::new("notebook", MOCK_TOOL_IMAGE, 32),
        ])),
        token: None,
        urls: berth_axum::api::PublicUrls::default(),
        owner_label: berth_axum::DEFAULT_OWNER_LABEL.into(),
        ready_timeout: Duration::from_secs(10),
        metrics,
        activity: recorder,
        launches: Default::default(),
        images: ImagePolicy::RegistryOnly,
    })
}

async fn send(app: &Router, method: Method, path: &str, body: Option<Value>) -> http::Response<Body> {
    let b = Request::builder().method(method).uri(path);
    let req = match body {
        Some(v) => b.header("content-type", "application/json").body(Body::from(v.to_string())).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    app.clone().oneshot(req).await.unwrap()
}

async fn json(resp: http::Response<Body>) -> Value {
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

/// The paths `app` routes, read from its `Debug` form (axum lists each
/// route's path there, `Router { path_router: .., fallback_router: .. }`;
/// it has no other way to enumerate them).
fn routed_paths(app: &Router) -> BTreeSet<String> {
    let debug = format!("{app:?}");
    let routes = debug.split("fallback_router:").next().unwrap();
    assert!(routes.contains("path_router:"), "axum's Debug form changed: {debug}");
    routes
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with('/') && !s.contains("__private__axum"))
        .map(str::to_owned)
        .collect()
}

/// The methods `app` answers on `path`: the `Allow` header of its 405 to
/// a method no route takes.
async fn routed_methods(app: &Router, path: &str) -> BTreeSet<String> {
    let probe = Method::from_bytes(b"PROBE").unwrap();
    let resp = send(app, probe, path, None).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
    let allow = resp.headers()[header::ALLOW].to_str().unwrap().to_owned();
    // axum answers HEAD wherever it answers GET.
    allow.split(',').map(|m| m.trim().to_owned()).filter(|m| !m.is_empty() && m != "HEAD").collect()
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_exists() {
    let app = api().await;
    let doc = json(send(&app, Method::GET, "/api/v1/openapi.json", None).await).await;
    let paths = doc["paths"].as_object().unwrap();

    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    let routed = routed_paths(&app);
    assert!(routed.len() > 10, "the router's Debug form no longer lists its paths: {routed:?}");
    assert_eq!(routed, documented, "routes without a description, or descriptions without a route");

    for (path, item) in paths {
        let concrete = path.replace("{name}", "some-name");
        let documented: BTreeSet<String> = item.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
        assert_eq!(routed_methods(&app, &concrete).await, documented, "{path}");
        // Each documented method reaches a handler, not the router's 404 or 405.
        for method in &documented {
            let body = (method == "POST").then(|| json!({}));
            let resp = send(&app, Method::from_bytes(method.as_bytes()).unwrap(), &concrete, body).await;
            assert_ne!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if resp.status() == StatusCode::NOT_FOUND {
                // A handler's 404 says why; the router's has no body.
                let body = json(resp).await;
                assert!(body["error"].is_string(), "{method} {path}: {body}");
            }
        }
    }
}

#[tokio::test]
async fn the_document_keeps_what_the_server_checks() {
    let app = api().await;
    let doc = json(send(&app, Method::GET, "/api/v1/openapi.json", None).await).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["security"], json!([{"bearer": []}, {}]));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"], json!({"type": "http", "scheme": "bearer"}));

    let launch = &doc["components"]["schemas"]["LaunchRequest"];
    let props = &launch["properties"];
    assert_eq!(launch["additionalProperties"], false);
    assert_eq!(launch["required"], json!(["name"]));
    assert_eq!(props["name"]["pattern"], "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$");
    assert_eq!(props["name"]["minLength"], berth_manager::MIN_NAME_LEN);
    assert_eq!(props["name"]["maxLength"], berth_manager::MAX_NAME_LEN);
    for key in ["mem_reservation_mb", "mem_limit_mb", "shm_size_mb"] {
        assert_eq!(props[key]["maximum"], berth_manager::MAX_MEM_RESERVATION_MB, "{key}");
    }
    assert_eq!(props["start_timeout_secs"]["maximum"], berth_manager::MAX_START_TIMEOUT_SECS);
    assert_eq!(props["port"]["maximum"], 65535);
    for key in ["command", "entrypoint", "env", "working_dir", "user", "volumes", "ready_path", "ready_status"] {
        assert!(props[key].is_object(), "{key}");
    }
    // The tool branch names this server's tools.
    assert_eq!(launch["oneOf"][0]["properties"]["tool"]["enum"], json!(["viewer", "notebook"]));
    let link = &doc["components"]["schemas"]["LinkRequest"]["properties"]["ttl_secs"];
    assert_eq!(link["maximum"], berth_axum::api::MAX_LINK_TTL.as_secs());

    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert_eq!(responses.contains_key("401"), path != "/healthz", "{method} {path}");
            assert_eq!(responses.contains_key("413"), method == "post", "{method} {path}");
            let text = serde_json::to_string(op).unwrap();
            assert!(!text.contains("[`"), "a rustdoc link in {method} {path}: {text}");
        }
    }
    let post = &doc["paths"]["/api/v1/containers"]["post"]["responses"];
    for status in ["200", "202", "400", "403", "409", "415", "422", "429", "502", "503", "504"] {
        assert!(post[status].is_object(), "launch answers {status}");
    }
    let events = &doc["paths"]["/api/v1/containers/{name}/events"]["get"]["responses"];
    assert!(events["200"]["content"]["text/event-stream"].is_object());
    let logs = &doc["paths"]["/api/v1/containers/{name}/logs"]["get"];
    assert!(logs["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "follow"));
}

#[tokio::test]
async fn integer_fields_take_integral_floats() {
    let app = api().await;
    let resp = send(&app, Method::POST, "/api/v1/purge", Some(json!({"idle_secs": 3600.0}))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json(resp).await, json!({"removed": []}));
    let resp = send(&app, Method::POST, "/api/v1/purge", Some(json!({"idle_secs": 0.5}))).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_purge_by_an_empty_label_is_refused() {
    let app = api().await;
    let resp = send(&app, Method::POST, "/api/v1/purge", Some(json!({"label": ""}))).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}
