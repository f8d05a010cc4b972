//! Tool definitions that run stock images, through the management API and
//! the proxy, over a fleet of mock containers: templates in command and
//! environment, `BERTH_*` variables, refusals that create nothing, where
//! containers are published under each routing, persistent volumes per
//! owner, `?wait=true`'s answers, and websocket traffic as activity for
//! idle culling.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use axum::Router;
use axum::body::Body;
use berth_axum::Identity;
use berth_axum::api::{ApiState, ImagePolicy, PublicUrls, ToolDef, ToolRegistry, api_router};
use berth_fleet::{Fleet, FleetConfig};
use berth_history::HistoryStore;
use berth_manager::mock::{MockBody, MockHandler, ToolContext};
use berth_manager::{
    ContainerInfo, ContainerManager, ContainerSpec, Endpoint, EventStreamBox, LabelScheme, ListFilter, LogLine,
    LogOptions, LogStreamBox, MOCK_TOOL_IMAGE, MockConfig, MockEngine, MockManager, RoutingMode, VolumeInfo,
};
use berth_proxy::{ActivityRecorder, HostRouting, PathRouting, Proxy, ProxyConfig, RouteTable, Routing, TableConfig};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tower::ServiceExt;

/// The host browsers use for the server in these tests.
const HOST: &str = "127.0.0.1:8000";
const BASE: &str = "http://127.0.0.1:8000";
const SUFFIX: &str = "docker.localhost";

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<MockBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp
}

/// The mock tool, plus what stock apps do: exits at once with a message
/// when its arguments include `--crash`; with `BASE_URL` set, serves only
/// under that path (as a tool told its base path does) and answers the
/// default tool's routes below it; with `ROOT_404`, answers 404 on its
/// root; `/ws` is a websocket echo.
fn stock_tool() -> MockHandler {
    let fallback = berth_manager::mock::default_tool(Duration::ZERO);
    Arc::new(move |ctx: ToolContext, mut req: Request<Incoming>| {
        let fallback = fallback.clone();
        Box::pin(async move {
            if ctx.argv().iter().any(|a| a == "--crash") {
                ctx.print("fatal: unrecognized argument --crash");
                ctx.exit(2);
                return answer(StatusCode::INTERNAL_SERVER_ERROR, "");
            }
            if let Some(base) = ctx.env().get("BASE_URL").cloned() {
                let path = req.uri().path().to_owned();
                let Some(rest) = path.strip_prefix(base.trim_end_matches('/')) else {
                    return answer(StatusCode::NOT_FOUND, format!("{path} is outside {base}\n"));
                };
                let rest = if rest.is_empty() { "/" } else { rest };
                let target = match req.uri().query() {
                    Some(q) => format!("{rest}?{q}"),
                    None => rest.to_owned(),
                };
                *req.uri_mut() = target.parse().unwrap();
            }
            if req.uri().path() == "/" && ctx.env().contains_key("ROOT_404") {
                return answer(StatusCode::NOT_FOUND, "nothing at the root\n");
            }
            if req.uri().path() == "/ws" {
                return websocket_echo(req);
            }
            fallback(ctx, req).await
        })
    })
}

fn websocket_echo(mut req: Request<Incoming>) -> Response<MockBody> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return answer(StatusCode::BAD_REQUEST, "not a websocket request\n");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() || ((msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err()) {
                break;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = answer(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = resp.headers_mut();
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("connection", "upgrade".parse().unwrap());
    h.insert("sec-websocket-accept", accept.parse().unwrap());
    resp
}

/// A tool from its registry entry (as JSON, as `tools.toml` would give it).
fn tool(def: Value) -> ToolDef {
    serde_json::from_value(def).unwrap()
}

struct Api {
    app: Router,
    fleet: Arc<Fleet>,
}

fn path_only() -> PublicUrls {
    PublicUrls::path(BASE, "/docker")
}

fn host_only() -> PublicUrls {
    PublicUrls { base: BASE.into(), path_prefix: None, host_suffix: Some(SUFFIX.into()), default: RoutingMode::Host }
}

fn both(default: RoutingMode) -> PublicUrls {
    PublicUrls { base: BASE.into(), path_prefix: Some("/docker".into()), host_suffix: Some(SUFFIX.into()), default }
}

/// The API and the proxy over mock containers running [`stock_tool`],
/// publishing containers at `urls`; a tool without a start timeout of its
/// own gets `ready_timeout` (from the route table and `?wait=true` alike,
/// as `berth serve` sets them).
async fn api(urls: PublicUrls, tools: Vec<ToolDef>, ready_timeout: Duration) -> Api {
    let config = MockConfig { handler: Some(stock_tool()), ..MockConfig::default() };
    api_over(Arc::new(MockManager::with_config(MockEngine::new(), config)), urls, tools, ready_timeout).await
}

/// As [`api`], over `manager`.
async fn api_over(
    manager: Arc<dyn ContainerManager>,
    urls: PublicUrls,
    tools: Vec<ToolDef>,
    ready_timeout: Duration,
) -> Api {
    let table_config = TableConfig { start_timeout: ready_timeout, ..TableConfig::default() };
    let table = RouteTable::start(manager.clone(), table_config).await.unwrap();
    let history = Arc::new(HistoryStore::in_memory().unwrap());
    let fleet = Arc::new(Fleet::new(manager, history.clone(), FleetConfig::default()));
    let metrics = Arc::new(berth_axum::metrics::Metrics::new());
    let recorder = ActivityRecorder::spawn_with_interval(
        berth_proxy::TeeSink(history.clone(), metrics.clone()),
        1000,
        Duration::ZERO,
    );
    let routing = match (&urls.path_prefix, &urls.host_suffix) {
        (Some(p), Some(h)) => Routing::Both(PathRouting::new(p), HostRouting::new(h)),
        (Some(p), None) => Routing::Path(PathRouting::new(p)),
        (None, Some(h)) => Routing::Host(HostRouting::new(h)),
        (None, None) => unreachable!("a server routes somehow"),
    };
    let state = ApiState {
        fleet: fleet.clone(),
        table: table.clone(),
        history: Some(history),
        registry: Arc::new(ToolRegistry::new(tools)),
        token: None,
        urls: urls.clone(),
        owner_label: berth_axum::DEFAULT_OWNER_LABEL.into(),
        ready_timeout,
        metrics,
        activity: recorder.clone(),
        launches: Default::default(),
        images: ImagePolicy::Prefixes(vec!["berth/".into()]),
    };
    let proxy =
        Proxy::with_hooks(table, ProxyConfig { routing, ..ProxyConfig::default() }, berth_proxy::AllowAll, recorder);
    let mut app = api_router(state);
    if let Some(prefix) = &urls.path_prefix {
        app = app.merge(berth_axum::proxy_router(proxy.clone(), prefix));
    }
    if urls.host_suffix.is_some() {
        app = app.layer(berth_axum::HostRoutingLayer::new(proxy));
    }
    Api { app, fleet }
}

/// `app` as the host app's authentication presents `user`.
fn as_user(app: &Router, user: &'static str, admin: bool) -> Router {
    app.clone().layer(axum::middleware::from_fn(
        move |mut req: Request<Body>, next: axum::middleware::Next| async move {
            req.extensions_mut().insert(Identity::new(user).with_admin(admin));
            next.run(req).await
        },
    ))
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// An API call; the answer as JSON (a string when it is not JSON).
async fn call(app: &Router, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let b = Request::builder().method(method).uri(path).header("host", HOST);
    let req = match body {
        Some(v) => b.header("content-type", "application/json").body(Body::from(v.to_string())).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    };
    let (status, text) = send(app, req).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn launch(app: &Router, body: Value) -> (StatusCode, Value) {
    call(app, "POST", "/api/v1/containers?wait=true", Some(body)).await
}

/// GET through the proxy with `Host: host`.
async fn proxied(app: &Router, host: &str, path: &str) -> (StatusCode, String) {
    send(app, Request::get(path).header("host", host).body(Body::empty()).unwrap()).await
}

/// What the container at `/docker/<name>/` says on `route`.
async fn tool_says(app: &Router, name: &str, route: &str) -> String {
    let (status, text) = proxied(app, HOST, &format!("/docker/{name}{route}")).await;
    assert_eq!(status, StatusCode::OK, "{name}{route}: {text}");
    text
}

fn notebook() -> ToolDef {
    tool(json!({
        "name": "notebook",
        "image": MOCK_TOOL_IMAGE,
        "port": 8888,
        "mem_reservation_mb": 32,
        "mem_limit_mb": 64,
        "shm_size_mb": 256,
        "entrypoint": ["tini", "-g", "--"],
        "command": ["start-notebook.py", "--ServerApp.base_url={public_path}", "--url={public_url}",
                    "--user={owner}", "--port={port}", "--name={name}", "{{literal}}"],
        "env": {"NB_USER": "{owner}", "GREETING": "hello {owner} from {name}"},
        "working_dir": "/home/{owner}",
        "user": "1000:100",
        "volumes": [{"name": "home-{owner}", "path": "/home/jovyan/work"}],
    }))
}

const SLOW: Duration = Duration::from_secs(120);

#[tokio::test]
async fn templates_reach_the_containers_command_and_environment() {
    let Api { app, .. } = api(path_only(), vec![notebook()], SLOW).await;
    let ann = as_user(&app, "ann", false);
    let (status, made) = launch(&ann, json!({"name": "nb-ann", "tool": "notebook"})).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let argv = tool_says(&app, "nb-ann", "/argv").await;
    let want = [
        "-g",
        "--",
        "start-notebook.py",
        "--ServerApp.base_url=/docker/nb-ann/",
        "--url=http://127.0.0.1:8000/docker/nb-ann/",
        "--user=ann",
        "--port=8888",
        "--name=nb-ann",
        "{literal}",
    ];
    assert_eq!(argv.lines().collect::<Vec<_>>(), want);
    for (var, value) in [
        ("NB_USER", "ann"),
        ("GREETING", "hello ann from nb-ann"),
        ("BERTH_NAME", "nb-ann"),
        ("BERTH_PUBLIC_PATH", "/docker/nb-ann/"),
        ("BERTH_PUBLIC_URL", "http://127.0.0.1:8000/docker/nb-ann/"),
    ] {
        assert_eq!(tool_says(&app, "nb-ann", &format!("/env/{var}")).await, value, "{var}");
    }
    assert_eq!(tool_says(&app, "nb-ann", "/cwd").await, "/home/ann\n");
    assert_eq!(tool_says(&app, "nb-ann", "/uid").await, "1000\n");
    assert_eq!(tool_says(&app, "nb-ann", "/memlimit").await, format!("{}\n", 64 << 20));
    assert_eq!(tool_says(&app, "nb-ann", "/shm").await, format!("{}\n", 256 << 20));

    // Without a login, {owner} is "anonymous".
    let (status, _) = launch(&app, json!({"name": "nb-anon", "tool": "notebook"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tool_says(&app, "nb-anon", "/env/NB_USER").await, "anonymous");

    // An image launch takes the same keys, templated the same way.
    let image = json!({
        "name": "img", "image": MOCK_TOOL_IMAGE, "mem_reservation_mb": 16, "mem_limit_mb": 48,
        "command": ["serve", "--base={public_path}", "--me={name}"], "env": {"APP_URL": "{public_url}"},
        "working_dir": "/srv/{name}", "shm_size_mb": 128,
    });
    let (status, made) = launch(&ann, image).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    assert_eq!(tool_says(&app, "img", "/argv").await, "--base=/docker/img/\n--me=img\n");
    assert_eq!(tool_says(&app, "img", "/env/APP_URL").await, "http://127.0.0.1:8000/docker/img/");
    assert_eq!(tool_says(&app, "img", "/env/BERTH_PUBLIC_PATH").await, "/docker/img/");
    assert_eq!(tool_says(&app, "img", "/cwd").await, "/srv/img\n");
    assert_eq!(tool_says(&app, "img", "/memlimit").await, format!("{}\n", 48 << 20));
    assert_eq!(tool_says(&app, "img", "/shm").await, format!("{}\n", 128 << 20));
}

#[tokio::test]
async fn bad_launches_are_refused_naming_the_field_and_create_nothing() {
    let Api { app, .. } = api(path_only(), vec![notebook()], SLOW).await;
    let image = |extra: Value| {
        let mut body = json!({"name": "bad", "image": MOCK_TOOL_IMAGE, "mem_reservation_mb": 200});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let cases = [
        (image(json!({"command": ["--x={oops}"]})), StatusCode::BAD_REQUEST, "command[0]: unknown placeholder {oops}"),
        (image(json!({"command": ["ok", "{name"]})), StatusCode::BAD_REQUEST, "command[1]: unclosed {"),
        (image(json!({"command": []})), StatusCode::BAD_REQUEST, "command is an empty list"),
        (image(json!({"entrypoint": ["a}"]})), StatusCode::BAD_REQUEST, "entrypoint[0]"),
        (image(json!({"env": {"BAD-NAME": "x"}})), StatusCode::BAD_REQUEST, "\"BAD-NAME\" is not a valid environment"),
        (image(json!({"env": {"BERTH_PUBLIC_PATH": "/x/"}})), StatusCode::BAD_REQUEST, "is set by berth itself"),
        (image(json!({"env": {"OK": "{nope}"}})), StatusCode::BAD_REQUEST, "env.OK: unknown placeholder {nope}"),
        (image(json!({"working_dir": "/w/{who}"})), StatusCode::BAD_REQUEST, "working_dir: unknown placeholder"),
        (image(json!({"working_dir": "relative"})), StatusCode::BAD_REQUEST, "working_dir"),
        (image(json!({"user": "{owner"})), StatusCode::BAD_REQUEST, "user: unclosed"),
        (image(json!({"mem_limit_mb": 100})), StatusCode::BAD_REQUEST, "mem_limit_mb 100 is below"),
        (image(json!({"cpus": 1.0, "cpu_limit": 0.5})), StatusCode::BAD_REQUEST, "cpu_limit 0.5 is below"),
        (image(json!({"shm_size_mb": 0})), StatusCode::BAD_REQUEST, "shm_size_mb"),
        (
            image(json!({"volumes": [{"name": "home {owner}", "path": "/w"}]})),
            StatusCode::BAD_REQUEST,
            "volumes[0].name",
        ),
        (
            image(json!({"volumes": [{"name": "home-{oops}", "path": "/w"}]})),
            StatusCode::BAD_REQUEST,
            "volumes[0].name",
        ),
        (
            image(json!({"volumes": [{"name": "home-{owner}", "path": "w"}]})),
            StatusCode::BAD_REQUEST,
            "volumes[0].path",
        ),
        (image(json!({"ready_path": "lab"})), StatusCode::BAD_REQUEST, "ready_path \"lab\""),
        (image(json!({"ready_status": [700]})), StatusCode::BAD_REQUEST, "ready_status 700"),
        (image(json!({"start_timeout_secs": 0})), StatusCode::BAD_REQUEST, "start_timeout_secs"),
        // Values of the wrong type are refused by the body's schema (422,
        // as every request body of the wrong shape), naming the key.
        (image(json!({"command": "not a list"})), StatusCode::UNPROCESSABLE_ENTITY, "command: invalid type: string"),
        (image(json!({"env": {"A": 1}})), StatusCode::UNPROCESSABLE_ENTITY, "env.A: invalid type"),
        // A registry tool has its own process settings.
        (
            json!({"name": "bad", "tool": "notebook", "command": ["x"]}),
            StatusCode::BAD_REQUEST,
            "command go(es) with image",
        ),
        (
            json!({"name": "bad", "tool": "notebook", "env": {"A": "b"}, "mem_limit_mb": 99}),
            StatusCode::BAD_REQUEST,
            "mem_limit_mb, env go(es) with image",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, e) = call(&app, "POST", "/api/v1/containers", Some(body.clone())).await;
        let message = e["error"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{body}: {e}");
        assert!(message.contains(needle), "{body}: {message:?} does not name {needle:?}");
    }
    // An owner whose name makes the volume template an invalid name.
    let odd = as_user(&app, "ann@example.org", false);
    let (status, e) = launch(&odd, json!({"name": "bad", "tool": "notebook"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    let message = e["error"].as_str().unwrap();
    assert!(message.contains("volumes[0].name \"home-{owner}\"") && message.contains("home-ann@example.org"), "{e}");
    let admin = as_user(&app, "root", true);
    assert_eq!(call(&admin, "GET", "/api/v1/containers", None).await.1, json!({"containers": []}));
    assert_eq!(call(&admin, "GET", "/api/v1/volumes", None).await.1, json!({"volumes": []}));
}

/// `(path, url, routing)` of a launched container as the API describes it,
/// and the same from its own listing.
async fn published(app: &Router, name: &str, tool_name: &str) -> (String, String, String) {
    let (status, made) = launch(app, json!({"name": name, "tool": tool_name})).await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let (_, listed) = call(app, "GET", &format!("/api/v1/containers/{name}"), None).await;
    for key in ["path", "url", "routing"] {
        assert_eq!(made[key], listed[key], "{key}");
    }
    let s = |v: &Value| v.as_str().unwrap_or("(none)").to_owned();
    (s(&made["path"]), s(&made["url"]), s(&made["routing"]))
}

/// The `api_prefix` of a launch's input document (dry run).
async fn api_prefix(app: &Router, name: &str, tool_name: &str) -> String {
    let (_, dry) =
        call(app, "POST", "/api/v1/containers", Some(json!({"name": name, "tool": tool_name, "dry_run": true}))).await;
    dry["input"]["api_prefix"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn path_url_and_api_prefix_are_right_under_each_routing() {
    let viewer = tool(json!({"name": "viewer", "image": MOCK_TOOL_IMAGE, "mem_reservation_mb": 16}));
    let dash = tool(json!({"name": "dash", "image": MOCK_TOOL_IMAGE, "mem_reservation_mb": 16, "routing": "host"}));
    let by_path =
        tool(json!({"name": "by-path", "image": MOCK_TOOL_IMAGE, "mem_reservation_mb": 16, "routing": "path"}));

    let Api { app, .. } = api(path_only(), vec![viewer.clone()], SLOW).await;
    let url = "http://127.0.0.1:8000/docker/vw/";
    assert_eq!(published(&app, "vw", "viewer").await, ("/docker/vw/".into(), url.into(), "path".into()));
    assert_eq!(api_prefix(&app, "vw", "viewer").await, "/docker/vw/");
    assert_eq!(tool_says(&app, "vw", "/env/BERTH_PUBLIC_URL").await, url);
    let input: Value = serde_json::from_str(&tool_says(&app, "vw", "/input").await).unwrap();
    assert_eq!(input["api_prefix"], "/docker/vw/");

    let Api { app, .. } = api(host_only(), vec![viewer.clone()], SLOW).await;
    let url = "http://vw.docker.localhost:8000/";
    assert_eq!(published(&app, "vw", "viewer").await, ("/".into(), url.into(), "host".into()));
    assert_eq!(api_prefix(&app, "vw", "viewer").await, "/");
    let host = "vw.docker.localhost:8000";
    assert_eq!(proxied(&app, host, "/env/BERTH_PUBLIC_PATH").await, (StatusCode::OK, "/".into()));
    assert_eq!(proxied(&app, host, "/env/BERTH_PUBLIC_URL").await, (StatusCode::OK, url.into()));
    let input: Value = serde_json::from_str(&proxied(&app, host, "/input").await.1).unwrap();
    assert_eq!(input["api_prefix"], "/");

    for default in [RoutingMode::Path, RoutingMode::Host] {
        let tools = vec![viewer.clone(), dash.clone(), by_path.clone()];
        let Api { app, .. } = api(both(default), tools, SLOW).await;
        let (path, url, routing) = published(&app, "dd", "dash").await;
        assert_eq!((path.as_str(), url.as_str(), routing.as_str()), ("/", "http://dd.docker.localhost:8000/", "host"));
        assert_eq!(api_prefix(&app, "dd", "dash").await, "/");
        assert_eq!(proxied(&app, "dd.docker.localhost:8000", "/env/BERTH_PUBLIC_PATH").await.1, "/");
        // Asked for by path, it redirects to where it is served.
        let resp =
            app.clone().oneshot(Request::get("/docker/dd/x?y=1").header("host", HOST).body(Body::empty()).unwrap());
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(resp.headers()["location"], "http://dd.docker.localhost:8000/x?y=1");

        let (path, url, routing) = published(&app, "pp", "by-path").await;
        assert_eq!(
            (path.as_str(), url.as_str(), routing.as_str()),
            ("/docker/pp/", "http://127.0.0.1:8000/docker/pp/", "path")
        );
        let resp =
            app.clone().oneshot(Request::get("/x").header("host", "pp.docker.localhost").body(Body::empty()).unwrap());
        assert_eq!(resp.await.unwrap().headers()["location"], "http://127.0.0.1:8000/docker/pp/x");

        // A tool that chooses neither is published by the server's default.
        let (path, _, routing) = published(&app, "ww", "viewer").await;
        let want = match default {
            RoutingMode::Path => ("/docker/ww/", "path"),
            RoutingMode::Host => ("/", "host"),
        };
        assert_eq!((path.as_str(), routing.as_str()), want);
        assert_eq!(api_prefix(&app, "ww", "viewer").await, want.0);
    }
}

#[tokio::test]
async fn a_tool_that_keeps_its_prefix_is_probed_under_it() {
    // Told its base path (as Jupyter's base_url), the tool answers nothing
    // outside it: not even `/`, the default readiness path.
    let lab = tool(json!({"name": "lab", "image": MOCK_TOOL_IMAGE, "mem_reservation_mb": 16,
        "env": {"BASE_URL": "{public_path}"}, "strip_prefix": false, "start_timeout_secs": 5}));
    let api_only = tool(json!({"name": "api-only", "image": MOCK_TOOL_IMAGE, "mem_reservation_mb": 16,
        "env": {"BASE_URL": "{public_path}", "ROOT_404": "1"}, "strip_prefix": false,
        "ready_path": "/env/BERTH_NAME", "start_timeout_secs": 5}));
    let Api { app, .. } = api(both(RoutingMode::Path), vec![lab, api_only], SLOW).await;
    let (status, made) = launch(&app, json!({"name": "lab", "tool": "lab"})).await;
    assert_eq!(status, StatusCode::OK, "the probe missed the tool's base path: {made}");
    assert_eq!(tool_says(&app, "lab", "/argv").await, "");
    let (status, made) = launch(&app, json!({"name": "api", "tool": "api-only"})).await;
    assert_eq!(status, StatusCode::OK, "ready_path is under the tool's base path too: {made}");
    assert_eq!(proxied(&app, HOST, "/docker/api/").await.0, StatusCode::NOT_FOUND);
    // By hostname the public path is `/`: the probe is plain.
    let (status, made) = launch(
        &app,
        json!({"name": "hosted", "image": MOCK_TOOL_IMAGE, "routing": "host",
        "env": {"BASE_URL": "{public_path}"}, "strip_prefix": false, "start_timeout_secs": 5}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{made}");
}

#[tokio::test]
async fn persistent_volumes_belong_to_their_owner_and_outlive_containers() {
    let Api { app, .. } = api(path_only(), vec![notebook()], SLOW).await;
    let (ann, bob, admin) = (as_user(&app, "ann", false), as_user(&app, "bob", false), as_user(&app, "root", true));
    assert_eq!(launch(&ann, json!({"name": "nb-ann", "tool": "notebook"})).await.0, StatusCode::OK);
    assert_eq!(launch(&bob, json!({"name": "nb-bob", "tool": "notebook"})).await.0, StatusCode::OK);
    let (_, made) = call(&ann, "GET", "/api/v1/containers/nb-ann", None).await;
    assert_eq!(made["volumes"], json!(["home-ann"]));

    // The notebook writes its work into the volume.
    let put = Request::put("/docker/nb-ann/file?path=/home/jovyan/work/notes.ipynb")
        .header("host", HOST)
        .body(Body::from("{\"cells\": []}"))
        .unwrap();
    assert_eq!(send(&app, put).await.0, StatusCode::CREATED);

    let volumes = |app: Router| async move { call(&app, "GET", "/api/v1/volumes", None).await.1["volumes"].clone() };
    assert_eq!(volumes(ann.clone()).await, json!([{"name": "home-ann", "owner": "ann", "used_by": ["nb-ann"]}]));
    assert_eq!(volumes(bob.clone()).await, json!([{"name": "home-bob", "owner": "bob", "used_by": ["nb-bob"]}]));
    assert_eq!(volumes(admin.clone()).await.as_array().unwrap().len(), 2);

    // Another owner cannot mount it, by name, and nothing is created.
    let steal = json!({"name": "thief", "image": MOCK_TOOL_IMAGE,
        "volumes": [{"name": "home-ann", "path": "/loot"}]});
    let (status, e) = launch(&bob, steal).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    assert!(e["error"].as_str().unwrap().contains("home-ann"), "{e}");
    assert_eq!(call(&admin, "GET", "/api/v1/containers/thief", None).await.0, StatusCode::NOT_FOUND);

    // Removal: 409 while mounted, 404 for someone else.
    let (status, e) = call(&ann, "DELETE", "/api/v1/volumes/home-ann", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    assert_eq!(call(&bob, "DELETE", "/api/v1/volumes/home-ann", None).await.0, StatusCode::NOT_FOUND);

    // The container goes (as a kill, an eviction or culling does); the
    // volume and its data stay, and the next launch sees the work.
    assert_eq!(call(&ann, "DELETE", "/api/v1/containers/nb-ann", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(volumes(ann.clone()).await, json!([{"name": "home-ann", "owner": "ann", "used_by": []}]));
    assert_eq!(launch(&ann, json!({"name": "nb-ann2", "tool": "notebook"})).await.0, StatusCode::OK);
    assert_eq!(tool_says(&app, "nb-ann2", "/file?path=/home/jovyan/work/notes.ipynb").await, "{\"cells\": []}");
    assert_eq!(call(&ann, "DELETE", "/api/v1/containers/nb-ann2", None).await.0, StatusCode::NO_CONTENT);

    assert_eq!(call(&bob, "DELETE", "/api/v1/volumes/home-ann", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&ann, "DELETE", "/api/v1/volumes/home-ann", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(volumes(ann.clone()).await, json!([]));
    assert_eq!(call(&ann, "DELETE", "/api/v1/volumes/home-ann", None).await.0, StatusCode::NOT_FOUND);
    // A fresh volume starts empty.
    assert_eq!(launch(&ann, json!({"name": "nb-ann3", "tool": "notebook"})).await.0, StatusCode::OK);
    let (status, _) = proxied(&app, HOST, "/docker/nb-ann3/file?path=/home/jovyan/work/notes.ipynb").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(volumes(bob).await.as_array().unwrap().len(), 1, "bob's volume is untouched");
}

#[tokio::test]
async fn wait_true_tells_a_failed_tool_from_one_not_ready_in_time() {
    let crashy = tool(json!({"name": "crashy", "image": MOCK_TOOL_IMAGE, "mem_reservation_mb": 16,
        "command": ["--crash"]}));
    let sleepy = tool(json!({"name": "sleepy", "image": MOCK_TOOL_IMAGE, "mem_reservation_mb": 16,
        "env": {"BERTH_TOOL_STARTUP_DELAY_MS": "60000"}, "start_timeout_secs": 1}));
    let Api { app, .. } = api(path_only(), vec![crashy, sleepy], SLOW).await;

    // Failed: the reason and the last log lines, within seconds (the
    // start timeout is two minutes).
    let started = Instant::now();
    let (status, body) = launch(&app, json!({"name": "cr", "tool": "crashy"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(body["ready"], false);
    assert!(body["failure"]["reason"].as_str().unwrap().contains("exited with status 2"), "{body}");
    let logs = body["failure"]["logs"].as_array().unwrap();
    assert!(logs.iter().any(|l| l.as_str().unwrap().contains("unrecognized argument --crash")), "{body}");

    // Not ready within its own start timeout: 504 with the phase it is in,
    // every time, and soon after that timeout.
    for name in ["s1", "s2", "s3"] {
        let started = Instant::now();
        let (status, body) = launch(&app, json!({"name": name, "tool": "sleepy"})).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert_eq!(body["phase"], "waiting", "{body}");
        assert!(body["error"].as_str().unwrap().contains("not ready after 1 s"), "{body}");
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_traffic_keeps_a_container_from_idle_culling() {
    let viewer = tool(json!({"name": "viewer", "image": MOCK_TOOL_IMAGE, "mem_reservation_mb": 16}));
    let Api { app, fleet } = api(path_only(), vec![viewer], SLOW).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = app.clone();
    tokio::spawn(async move { axum::serve(listener, served).await });
    for name in ["busy", "idle"] {
        assert_eq!(launch(&app, json!({"name": name, "tool": "viewer"})).await.0, StatusCode::OK);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/docker/busy/ws")).await.unwrap();
    // Nothing but websocket messages for longer than the idle limit.
    let idle = Duration::from_secs(2);
    let until = Instant::now() + idle + Duration::from_millis(1200);
    while Instant::now() < until {
        ws.send(tokio_tungstenite::tungstenite::Message::text("ping")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap().to_text().unwrap(), "ping");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The history store is written off the hot path; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, purged) = call(&app, "POST", "/api/v1/purge", Some(json!({"idle_secs": idle.as_secs()}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(purged["removed"], json!(["idle"]), "only the container without traffic is culled");
    assert!(fleet.manager().inspect("busy").await.is_ok());
    ws.send(tokio_tungstenite::tungstenite::Message::text("still here")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().to_text().unwrap(), "still here");
    ws.close(None).await.unwrap();
}

/// A mock engine whose logs take a while to read, as a busy Docker
/// engine's do.
struct SlowLogs(MockManager);

#[async_trait]
impl ContainerManager for SlowLogs {
    fn label_scheme(&self) -> &LabelScheme {
        self.0.label_scheme()
    }
    fn capabilities(&self) -> berth_manager::Capabilities {
        self.0.capabilities()
    }
    async fn launch(&self, spec: &ContainerSpec) -> berth_manager::Result<ContainerInfo> {
        self.0.launch(spec).await
    }
    async fn inspect(&self, name: &str) -> berth_manager::Result<ContainerInfo> {
        self.0.inspect(name).await
    }
    async fn list(&self, filter: &ListFilter) -> berth_manager::Result<Vec<ContainerInfo>> {
        self.0.list(filter).await
    }
    async fn logs(&self, name: &str, options: LogOptions) -> berth_manager::Result<Vec<LogLine>> {
        tokio::time::sleep(Duration::from_millis(600)).await;
        self.0.logs(name, options).await
    }
    async fn follow_logs(&self, name: &str, options: LogOptions) -> berth_manager::Result<LogStreamBox> {
        self.0.follow_logs(name, options).await
    }
    async fn remove(&self, name: &str) -> berth_manager::Result<()> {
        self.0.remove(name).await
    }
    async fn endpoint(&self, name: &str) -> berth_manager::Result<Endpoint> {
        self.0.endpoint(name).await
    }
    async fn events(&self) -> berth_manager::Result<EventStreamBox> {
        self.0.events().await
    }
    async fn list_volumes(&self) -> berth_manager::Result<Vec<VolumeInfo>> {
        self.0.list_volumes().await
    }
    async fn prune_volumes(&self) -> berth_manager::Result<Vec<String>> {
        self.0.prune_volumes().await
    }
    async fn persistent_volumes(&self) -> berth_manager::Result<Vec<VolumeInfo>> {
        self.0.persistent_volumes().await
    }
    async fn remove_persistent_volume(&self, name: &str) -> berth_manager::Result<()> {
        self.0.remove_persistent_volume(name).await
    }
    async fn nodes(&self) -> berth_manager::Result<Vec<berth_manager::NodeInfo>> {
        self.0.nodes().await
    }
}

#[tokio::test]
async fn a_failure_comes_with_its_last_log_lines_even_from_a_slow_engine() {
    let crashy = tool(json!({"name": "crashy", "image": MOCK_TOOL_IMAGE, "mem_reservation_mb": 16,
        "command": ["--crash"]}));
    let config = MockConfig { handler: Some(stock_tool()), ..MockConfig::default() };
    let manager = Arc::new(SlowLogs(MockManager::with_config(MockEngine::new(), config)));
    let Api { app, .. } = api_over(manager, path_only(), vec![crashy], SLOW).await;
    let watcher = {
        let app = app.clone();
        tokio::spawn(async move {
            let req = Request::get("/api/v1/containers/cr/events").header("host", HOST).body(Body::empty()).unwrap();
            send(&app, req).await.1
        })
    };
    let (status, body) = launch(&app, json!({"name": "cr", "tool": "crashy"})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let logs = body["failure"]["logs"].as_array().unwrap();
    assert!(logs.iter().any(|l| l.as_str().unwrap().contains("unrecognized argument --crash")), "{body}");
    // The launch-progress stream's `failed` event carries them too.
    let events = tokio::time::timeout(Duration::from_secs(10), watcher).await.unwrap().unwrap();
    let failed = events.split("\n\n").find(|block| block.contains("event: failed")).unwrap_or_default();
    assert!(failed.contains("unrecognized argument --crash"), "{events}");
}
