//! People in the API: launches on behalf of a user, per-user limits,
//! hand-off links, identities limited to some containers, and the bearer
//! token beside a host app's login.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::{Extension, Router};
use berth_axum::Identity;
use berth_axum::api::{ApiState, HandOff, ImagePolicy, ToolDef, ToolRegistry, api_router};
use berth_fleet::{Fleet, FleetConfig, MemoryActivityStore};
use berth_manager::{MOCK_TOOL_IMAGE, MockManager};
use berth_proxy::{ActivityRecorder, RouteTable, TableConfig};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "service-token-1";

/// Links it issued: (user, container, ttl).
#[derive(Default)]
struct FakeHandOff(Mutex<Vec<(String, String, Duration)>>);

#[async_trait::async_trait]
impl HandOff for FakeHandOff {
    async fn link(&self, user: &str, container: &str, ttl: Duration) -> Result<String, String> {
        self.0.lock().unwrap().push((user.into(), container.into(), ttl));
        Ok(format!("http://berth.example/auth/link/{user}-{container}"))
    }
}

async fn app(hand_off: Arc<FakeHandOff>) -> Router {
    let manager = Arc::new(MockManager::new());
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let config = FleetConfig { max_per_user: Some(3), ..FleetConfig::default() };
    let fleet = Arc::new(Fleet::new(manager, Arc::new(MemoryActivityStore::new()), config));
    let mut notebook = ToolDef::new("notebook", MOCK_TOOL_IMAGE, 16);
    notebook.max_per_user = Some(1);
    let registry = ToolRegistry::new(vec![ToolDef::new("viewer", MOCK_TOOL_IMAGE, 16), notebook]);
    let state = ApiState {
        fleet,
        table,
        history: None,
        registry: Arc::new(registry),
        token: Some(TOKEN.into()),
        urls: berth_axum::api::PublicUrls::default(),
        owner_label: berth_axum::DEFAULT_OWNER_LABEL.into(),
        ready_timeout: Duration::from_secs(5),
        metrics: Arc::default(),
        activity: ActivityRecorder::disabled(),
        launches: Default::default(),
        images: ImagePolicy::RegistryOnly,
    };
    let hand_off: Arc<dyn HandOff> = hand_off;
    api_router(state).layer(Extension(hand_off))
}

/// `app` as a host app's login presents `who`.
fn as_(app: &Router, who: Identity) -> Router {
    app.clone().layer(axum::middleware::from_fn(move |mut req: Request<Body>, next: axum::middleware::Next| {
        let who = who.clone();
        async move {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
    }))
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
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes))))
}

fn names(list: &Value) -> Vec<&str> {
    let mut names: Vec<&str> =
        list["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    names
}

#[tokio::test]
async fn the_service_launches_for_users_and_limits_hold_per_user() {
    let hand_off = Arc::new(FakeHandOff::default());
    let app = app(hand_off.clone()).await;
    let ann = as_(&app, Identity::new("ann"));
    let bob = as_(&app, Identity::new("bob"));
    let root = as_(&app, Identity::new("root").with_admin(true));

    // A logged-in user needs no token, and stays that user with another
    // one (an auth proxy's credentials); without a login a token is needed.
    let (status, _) = call(&ann, "GET", "/api/v1/containers", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&ann, "POST", "/api/v1/containers/x/links", None, Some("wrong")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "ann, not the service");
    let (status, _) = call(&app, "GET", "/api/v1/containers", None, Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&app, "GET", "/api/v1/containers", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The service launches on behalf of ann; ann cannot launch for bob.
    let launch = |name: &str, tool: &str, owner: Option<&str>| {
        let mut body = json!({"name": name, "tool": tool});
        if let Some(o) = owner {
            body["owner"] = json!(o);
        }
        body
    };
    let (status, body) =
        call(&app, "POST", "/api/v1/containers", Some(launch("a1", "viewer", Some("ann"))), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["owner"], "ann");
    let (status, body) = call(&ann, "POST", "/api/v1/containers", Some(launch("x", "viewer", Some("bob"))), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) =
        call(&root, "POST", "/api/v1/containers", Some(launch("b1", "viewer", Some("bob"))), None).await;
    assert_eq!((status, body["owner"].as_str()), (StatusCode::ACCEPTED, Some("bob")), "{body}");

    // The tool's own per-user limit (1 notebook), then the server's (3).
    let (status, body) = call(&ann, "POST", "/api/v1/containers", Some(launch("a2", "notebook", None)), None).await;
    assert_eq!((status, body["owner"].as_str()), (StatusCode::ACCEPTED, Some("ann")), "{body}");
    let (status, body) = call(&ann, "POST", "/api/v1/containers", Some(launch("a3", "notebook", None)), None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("limit of 1") && message.contains("the tool's max_per_user"), "{message}");
    let (status, body) = call(&ann, "POST", "/api/v1/containers", Some(launch("a3", "viewer", None)), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = call(&ann, "POST", "/api/v1/containers", Some(launch("a4", "viewer", None)), None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("limit of 3 containers per user (max_per_user; ann has 3)"), "{message}");
    // Bob has one: he may launch more.
    let (status, _) = call(&bob, "POST", "/api/v1/containers", Some(launch("b2", "notebook", None)), None).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // Each sees their own, the admin and the service all.
    assert_eq!(names(&call(&ann, "GET", "/api/v1/containers", None, None).await.1), ["a1", "a2", "a3"]);
    assert_eq!(names(&call(&bob, "GET", "/api/v1/containers", None, None).await.1), ["b1", "b2"]);
    assert_eq!(names(&call(&root, "GET", "/api/v1/containers", None, None).await.1), ["a1", "a2", "a3", "b1", "b2"]);
    assert_eq!(
        names(&call(&app, "GET", "/api/v1/containers", None, Some(TOKEN)).await.1),
        ["a1", "a2", "a3", "b1", "b2"]
    );
    let (status, _) = call(&bob, "GET", "/api/v1/containers/a1", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Hand-off links: the service and admins only, for the owner.
    let (status, body) = call(&app, "POST", "/api/v1/containers/a1/links", None, Some(TOKEN)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["user"].as_str(), body["expires_in_secs"].as_u64()), (Some("ann"), Some(60)));
    let (status, body) = call(&root, "POST", "/api/v1/containers/b1/links", Some(json!({"ttl_secs": 5})), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["url"], "http://berth.example/auth/link/bob-b1");
    for (who, path, body, want) in [
        (&ann, "/api/v1/containers/a1/links", None, StatusCode::FORBIDDEN),
        (&root, "/api/v1/containers/a1/links", Some(json!({"ttl_secs": 0})), StatusCode::BAD_REQUEST),
        (&root, "/api/v1/containers/a1/links", Some(json!({"ttl_secs": 7200})), StatusCode::BAD_REQUEST),
        (&root, "/api/v1/containers/nothing/links", None, StatusCode::NOT_FOUND),
    ] {
        assert_eq!(call(who, "POST", path, body, None).await.0, want, "{path}");
    }
    let issued = hand_off.0.lock().unwrap().clone();
    assert_eq!(
        issued,
        [("ann".into(), "a1".into(), Duration::from_secs(60)), ("bob".into(), "b1".into(), Duration::from_secs(5))]
    );

    // A session limited to one container (a link's) sees only that one and
    // launches nothing.
    let limited = as_(&app, Identity::new("ann").only(vec!["a1".into()]));
    assert_eq!(names(&call(&limited, "GET", "/api/v1/containers", None, None).await.1), ["a1"]);
    assert_eq!(call(&limited, "GET", "/api/v1/containers/a2", None, None).await.0, StatusCode::NOT_FOUND);
    let (status, _) = call(&limited, "POST", "/api/v1/containers", Some(launch("a9", "viewer", None)), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let limited_admin = as_(&app, Identity::new("root").with_admin(true).only(vec!["b1".into()]));
    assert_eq!(names(&call(&limited_admin, "GET", "/api/v1/containers", None, None).await.1), ["b1"]);
}

/// `/metrics` names every container (`berth_requests_total{container=...}`):
/// with a login, only admins and the service read it; without a login
/// layer (the demo) it stays open.
#[tokio::test]
async fn metrics_are_for_admins_and_the_service() {
    let app = app(Arc::new(FakeHandOff::default())).await;
    let (status, body) = call(&as_(&app, Identity::new("ann")), "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"].as_str().unwrap().contains("admins"), "{body}");
    let limited_admin = as_(&app, Identity::new("root").with_admin(true).only(vec!["x".into()]));
    assert_eq!(call(&limited_admin, "GET", "/metrics", None, None).await.0, StatusCode::FORBIDDEN);
    // A user with a wrong token is still that user; no token, no login: 401.
    assert_eq!(
        call(&as_(&app, Identity::new("ann")), "GET", "/metrics", None, Some("wrong")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(call(&app, "GET", "/metrics", None, None).await.0, StatusCode::UNAUTHORIZED);
    for (who, token) in [
        (Some(Identity::new("root").with_admin(true)), None),
        (None, Some(TOKEN)),
        (Some(Identity::new("ann")), Some(TOKEN)),
    ] {
        let app = who.map_or_else(|| app.clone(), |w| as_(&app, w));
        let (status, body) = call(&app, "GET", "/metrics", None, token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.as_str().unwrap().contains("berth_running_containers"), "{body}");
    }
}
