//! berth mounted in axum apps, tested in-process with `oneshot` against
//! mock containers.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use berth_axum::{ExtensionIdentity, HostRoutingLayer, Identity, OwnerHooks};
use berth_manager::{ContainerManager, ContainerSpec, MOCK_TOOL_IMAGE, MockConfig, MockEngine, MockManager};
use berth_proxy::{ActivityRecorder, HostRouting, PathRouting, Proxy, ProxyConfig, RouteTable, Routing, TableConfig};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A mock tool that answers every path with its request's method, path and
/// `X-Berth-User` header (and `X-Berth-Email`, when it came).
fn echo_manager() -> Arc<MockManager> {
    let handler: berth_manager::mock::MockHandler = Arc::new(|_ctx, req: Request<hyper::body::Incoming>| {
        Box::pin(async move {
            let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let user = header("x-berth-user").unwrap_or_else(|| "-".to_owned());
            let email = header("x-berth-email").map(|e| format!(" email={e}")).unwrap_or_default();
            let text = format!("{} {} user={user}{email}", req.method(), req.uri());
            http::Response::new(http_body_util::Full::new(bytes::Bytes::from(text)).boxed())
        })
    });
    Arc::new(MockManager::with_config(
        MockEngine::new(),
        MockConfig { handler: Some(handler), ..MockConfig::default() },
    ))
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn until_ready(app: &Router, make: impl Fn() -> Request<Body>) -> (StatusCode, String) {
    for _ in 0..200 {
        let r = send(app, make()).await;
        if r.0 != StatusCode::SERVICE_UNAVAILABLE {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("stayed 503");
}

fn get_req(path: &str) -> Request<Body> {
    Request::get(path).header("host", "portal.example").body(Body::empty()).unwrap()
}

#[tokio::test]
async fn path_routing_beside_the_apps_own_routes() {
    let manager = echo_manager();
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let proxy = Proxy::new(table, ProxyConfig::default());
    let app =
        Router::new().route("/", get(|| async { "portal home" })).merge(berth_axum::proxy_router(proxy, "/docker"));
    manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "viz", 16)).await.unwrap();

    assert_eq!(send(&app, get_req("/")).await, (StatusCode::OK, "portal home".into()));
    let (status, body) = until_ready(&app, || get_req("/docker/viz/data/x.json?q=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "GET /data/x.json?q=1 user=-");
    // Client-supplied identity never reaches a container.
    let forged = Request::get("/docker/viz/who").header("x-berth-user", "admin").body(Body::empty()).unwrap();
    assert_eq!(send(&app, forged).await.1, "GET /who user=-");
    let (status, _) = send(&app, get_req("/docker/nobody/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&app, get_req("/docker/viz")).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
}

#[tokio::test]
async fn nested_under_an_outer_prefix() {
    let manager = echo_manager();
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let config = ProxyConfig { routing: Routing::Path(PathRouting::new("/apps/docker")), ..ProxyConfig::default() };
    let berth = berth_axum::proxy_router(Proxy::new(table, config), "/docker");
    let app = Router::new().nest("/apps", berth);
    manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "viz", 16)).await.unwrap();
    let (status, body) = until_ready(&app, || get_req("/apps/docker/viz/a")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "GET /a user=-"));
}

#[tokio::test]
async fn host_routing_layer_over_the_whole_app() {
    let manager = echo_manager();
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let config = ProxyConfig { routing: Routing::Host(HostRouting::new("docker.localhost")), ..ProxyConfig::default() };
    let app = Router::new()
        .route("/", get(|| async { "portal home" }))
        .layer(HostRoutingLayer::new(Proxy::new(table, config)));
    manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "viz1", 16)).await.unwrap();
    let on_host = |host: &str, path: &str| Request::get(path).header("host", host).body(Body::empty()).unwrap();
    assert_eq!(send(&app, on_host("portal.example", "/")).await, (StatusCode::OK, "portal home".into()));
    let (status, body) = until_ready(&app, || on_host("viz1.docker.localhost:8000", "/")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "GET / user=-"));
    // A container host that matches nothing is berth's 404, not the app's.
    let (status, body) = send(&app, on_host("ghost.docker.localhost", "/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("ghost"));
}

#[tokio::test]
async fn only_owners_and_admins_reach_a_container() {
    let manager = echo_manager();
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let hooks = OwnerHooks::new(ExtensionIdentity, table.clone(), berth_axum::DEFAULT_OWNER_LABEL);
    let proxy = Proxy::with_hooks(table, ProxyConfig::default(), hooks, ActivityRecorder::disabled());
    // The host app's authentication: a header stands in for its session.
    let app = berth_axum::proxy_router(proxy, "/docker").layer(axum::middleware::from_fn(
        |mut req: Request<Body>, next: axum::middleware::Next| async move {
            let user = req.headers().get("x-test-login").and_then(|v| v.to_str().ok()).map(str::to_owned);
            if let Some(user) = user {
                let admin = user == "root";
                req.extensions_mut().insert(Identity::new(user).with_admin(admin));
            }
            next.run(req).await
        },
    ));
    manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "alices", 16).label("berth-owner", "alice")).await.unwrap();
    let as_user = |user: Option<&str>, path: &str| {
        let mut b = Request::get(path).header("x-berth-user", "forged");
        if let Some(u) = user {
            b = b.header("x-test-login", u);
        }
        b.body(Body::empty()).unwrap()
    };
    let (status, body) = until_ready(&app, || as_user(Some("alice"), "/docker/alices/x")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "GET /x user=alice"));
    let (status, body) = until_ready(&app, || as_user(Some("root"), "/docker/alices/x")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "GET /x user=root"));
    // Another user: the same 404 page as a container that does not exist.
    let (status, bob) = send(&app, as_user(Some("bob"), "/docker/alices/x")).await;
    let (status2, missing) = send(&app, as_user(Some("bob"), "/docker/nothing/x")).await;
    assert_eq!((status, status2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(bob, missing.replace("nothing", "alices"));
    let (status, _) = send(&app, as_user(None, "/docker/alices/x")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The email address reaches a container from berth's login only: a
/// client's `X-Berth-Email` is stripped, with or without a login.
#[tokio::test]
async fn the_email_header_is_berths_alone() {
    let manager = echo_manager();
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let hooks = OwnerHooks::new(ExtensionIdentity, table.clone(), berth_axum::DEFAULT_OWNER_LABEL);
    let proxy = Proxy::with_hooks(table, ProxyConfig::default(), hooks, ActivityRecorder::disabled());
    let app = berth_axum::proxy_router(proxy, "/docker").layer(axum::middleware::from_fn(
        |mut req: Request<Body>, next: axum::middleware::Next| async move {
            let user = req.headers().get("x-test-login").and_then(|v| v.to_str().ok()).map(str::to_owned);
            if let Some(user) = user {
                let email = (user == "alice").then(|| "alice@example.org".to_owned());
                req.extensions_mut().insert(Identity::new(user).with_email(email));
            }
            next.run(req).await
        },
    ));
    for (name, owner) in [("alices", "alice"), ("bobs", "bob")] {
        manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, name, 16).label("berth-owner", owner)).await.unwrap();
    }
    let forged = |user: &str, path: &str| {
        Request::get(path)
            .header("x-test-login", user)
            .header("x-berth-email", "mallory@example.org")
            .body(Body::empty())
            .unwrap()
    };
    let (status, body) = until_ready(&app, || forged("alice", "/docker/alices/x")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "GET /x user=alice email=alice@example.org"));
    let (status, body) = until_ready(&app, || forged("bob", "/docker/bobs/x")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "GET /x user=bob"), "no email: none forged either");
    // Without hooks (no login at all) the client's copy is stripped too.
    let manager = echo_manager();
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let open = berth_axum::proxy_router(Proxy::new(table, ProxyConfig::default()), "/docker");
    manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "viz", 16)).await.unwrap();
    let (status, body) = until_ready(&open, || {
        Request::get("/docker/viz/x").header("x-berth-email", "mallory@example.org").body(Body::empty()).unwrap()
    })
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "GET /x user=-"));
}

#[tokio::test]
async fn staged_inputs_are_served_under_their_prefix() {
    use berth_staging::{MemoryStore, StagingService, StagingStoreExt, StagingUrls, TokenRegistry};
    let store = Arc::new(MemoryStore::new());
    let tokens = TokenRegistry::new();
    let token = tokens.issue("viz").unwrap();
    store.put_input_json("viz", &serde_json::json!({"a": 1})).await.unwrap();
    let app = Router::new()
        .route("/", get(|| async { "home" }))
        .merge(berth_axum::staging_router(StagingService::new(store, tokens.clone())));
    let url = StagingUrls::new("http://portal.example").input_url(&token);
    let path = url.trim_start_matches("http://portal.example");
    let (status, body) = send(&app, get_req(path)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "{\"a\":1}"));
    tokens.revoke("viz");
    assert_eq!(send(&app, get_req(path)).await.0, StatusCode::NOT_FOUND);
}
