//! An axum application with its own login that launches tools per user and
//! mounts berth behind it, like the original's auth demo.
//!
//! ```text
//! cargo run -p custom-server -- [--mock] [--image IMAGE] [--listen 127.0.0.1:8001]
//! ```
//!
//! Users `alice`, `bob` (password = name) and `admin` (an admin). A user
//! launches tools that carry their name in the `berth-owner` label; berth's
//! [`OwnerHooks`] let only the owner (or an admin) through to
//! `/docker/<name>/`, and tell the tool who it is serving in `X-Berth-User`.
//! The portal's session cookie is stripped before requests reach a tool.
//! `--mock` runs tools as in-process mock containers (no Docker needed).

#![allow(clippy::print_stdout)] // An example program reports on stdout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use berth_axum::{ExtensionIdentity, Identity, OwnerHooks};
use berth_fleet::{Fleet, FleetConfig, MemoryActivityStore};
use berth_manager::{ContainerManager, ContainerSpec, ListFilter};
use berth_proxy::{ActivityRecorder, Proxy, ProxyConfig, RouteTable, TableConfig};
use serde::Deserialize;

/// Name of the portal's session cookie.
const SESSION_COOKIE: &str = "portal_session";
/// Label naming a tool's owner.
const OWNER_LABEL: &str = berth_axum::DEFAULT_OWNER_LABEL;

/// The portal's state: its sessions, the fleet, the tool image.
#[derive(Clone)]
struct Portal {
    sessions: Arc<Mutex<HashMap<String, Identity>>>,
    fleet: Arc<Fleet>,
    image: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let mock = args.iter().any(|a| a == "--mock");
    let listen = flag("--listen").unwrap_or_else(|| "127.0.0.1:8001".into());
    let manager: Arc<dyn ContainerManager> = if mock {
        Arc::new(berth_manager::MockManager::new())
    } else {
        Arc::new(berth_manager::DockerManager::from_env().await.context("connecting to Docker (or use --mock)")?)
    };
    let image = flag("--image").unwrap_or_else(|| berth_manager::MOCK_TOOL_IMAGE.to_owned());
    let app = app(manager, image).await?;
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    println!("portal on http://{listen}/ (users: alice, bob, admin; password = user name)");
    axum::serve(listener, app).await?;
    Ok(())
}

/// The whole application: the portal's pages and berth behind its login.
async fn app(manager: Arc<dyn ContainerManager>, image: String) -> anyhow::Result<Router> {
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await?;
    let hooks = OwnerHooks::new(ExtensionIdentity, table.clone(), OWNER_LABEL);
    let config = ProxyConfig { strip_cookies: vec![SESSION_COOKIE.to_owned()], ..ProxyConfig::default() };
    let proxy = Proxy::with_hooks(table, config, hooks, ActivityRecorder::disabled());
    let fleet = Arc::new(Fleet::new(manager, Arc::new(MemoryActivityStore::new()), FleetConfig::default()));
    let portal = Portal { sessions: Arc::default(), fleet, image };
    Ok(Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/launch", post(launch))
        .merge(berth_axum::proxy_router(proxy, "/docker"))
        .layer(middleware::from_fn_with_state(portal.clone(), session))
        .with_state(portal))
}

/// Puts the logged-in user's [`Identity`] into the request, where berth's
/// hooks and the portal's handlers find it.
async fn session(State(portal): State<Portal>, mut req: Request, next: Next) -> Response {
    let identity = session_token(req.headers()).and_then(|t| portal.sessions.lock().ok()?.get(&t).cloned());
    if let Some(identity) = identity {
        req.extensions_mut().insert(identity);
    }
    next.run(req).await
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn escape(s: &str) -> String {
    berth_proxy::pages::escape_html(s)
}

async fn home(State(portal): State<Portal>, user: Option<Extension<Identity>>) -> Response {
    let Some(Extension(user)) = user else {
        return Html(
            "<!doctype html><title>Portal</title><h1>Log in</h1>\
             <form method=post action=/login><input name=user placeholder=user> \
             <input name=password type=password placeholder=password> <button>Log in</button></form>",
        )
        .into_response();
    };
    let filter = if user.admin { ListFilter::all() } else { ListFilter::all().label(OWNER_LABEL, &user.user) };
    let tools = portal.fleet.manager().list(&filter).await.unwrap_or_default();
    let items: String = tools
        .iter()
        .map(|t| format!("<li><a href=\"/docker/{0}/\">{0}</a> ({1})</li>", escape(&t.name), t.state))
        .collect();
    Html(format!(
        "<!doctype html><title>Portal</title><h1>Hello, {user}</h1><ul>{items}</ul>\
         <form method=post action=/launch><input name=name placeholder=tool-name> <button>Launch</button></form>\
         <form method=post action=/logout><button>Log out</button></form>",
        user = escape(&user.user)
    ))
    .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
}

async fn login(State(portal): State<Portal>, Form(form): Form<LoginForm>) -> Response {
    // Demo credentials: the password is the user name.
    if !["alice", "bob", "admin"].contains(&form.user.as_str()) || form.password != form.user {
        return (StatusCode::UNAUTHORIZED, "wrong user or password").into_response();
    }
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let identity = Identity::new(form.user.clone()).with_admin(form.user == "admin");
    if let Ok(mut sessions) = portal.sessions.lock() {
        sessions.insert(token.clone(), identity);
    }
    let cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn logout(State(portal): State<Portal>, headers: HeaderMap) -> Response {
    if let (Some(token), Ok(mut sessions)) = (session_token(&headers), portal.sessions.lock()) {
        sessions.remove(&token);
    }
    let cookie = format!("{SESSION_COOKIE}=; Max-Age=0; Path=/");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

#[derive(Deserialize)]
struct LaunchForm {
    name: String,
}

async fn launch(
    State(portal): State<Portal>,
    user: Option<Extension<Identity>>,
    Form(form): Form<LaunchForm>,
) -> Response {
    let Some(Extension(user)) = user else {
        return (StatusCode::UNAUTHORIZED, "log in first").into_response();
    };
    let spec = ContainerSpec::new(portal.image.clone(), &form.name, 64)
        .label(OWNER_LABEL, &user.user)
        .input_env(serde_json::json!({"parameters": {"launched_by": user.user}}));
    match portal.fleet.launch(spec, None).await {
        Ok(_) => Redirect::to(&format!("/docker/{}/", form.name)).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("cannot launch: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn send(app: &Router, req: axum::http::Request<Body>) -> (StatusCode, HeaderMap, String) {
        let resp = app.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        (parts.status, parts.headers, String::from_utf8_lossy(&body.collect().await.unwrap().to_bytes()).into_owned())
    }

    async fn log_in(app: &Router, user: &str) -> String {
        let req = axum::http::Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("user={user}&password={user}")))
            .unwrap();
        let (status, headers, _) = send(app, req).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        headers[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned()
    }

    fn get(path: &str, cookie: &str) -> axum::http::Request<Body> {
        axum::http::Request::get(path).header(header::COOKIE, cookie).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn users_reach_only_their_own_tools() {
        let app =
            app(Arc::new(berth_manager::MockManager::new()), berth_manager::MOCK_TOOL_IMAGE.into()).await.unwrap();
        let (status, _, body) = send(&app, get("/", "")).await;
        assert!(status == StatusCode::OK && body.contains("Log in"));
        assert_eq!(send(&app, get("/docker/alice-viz/", "")).await.0, StatusCode::UNAUTHORIZED);

        let alice = log_in(&app, "alice").await;
        let req = axum::http::Request::post("/launch")
            .header(header::COOKIE, &alice)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("name=alice-viz"))
            .unwrap();
        let (status, headers, _) = send(&app, req).await;
        assert_eq!(
            (status, headers[header::LOCATION].to_str().unwrap()),
            (StatusCode::SEE_OTHER, "/docker/alice-viz/")
        );
        let body = loop {
            let (status, _, body) = send(&app, get("/docker/alice-viz/input", &alice)).await;
            if status == StatusCode::OK {
                break body;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!(body, r#"{"parameters":{"launched_by":"alice"}}"#);
        assert!(send(&app, get("/", &alice)).await.2.contains("alice-viz"));

        let bob = log_in(&app, "bob").await;
        assert_eq!(send(&app, get("/docker/alice-viz/input", &bob)).await.0, StatusCode::NOT_FOUND);
        assert!(!send(&app, get("/", &bob)).await.2.contains("alice-viz"));
        let admin = log_in(&app, "admin").await;
        assert_eq!(send(&app, get("/docker/alice-viz/input", &admin)).await.0, StatusCode::OK);
    }
}
