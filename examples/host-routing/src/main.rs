//! Hostname routing as a layer over an axum app: `<name>.docker.localhost`
//! reaches container `<name>` (path kept), every other host reaches the
//! app. Browsers resolve `*.localhost` to the loopback address by
//! themselves, so this works without DNS set-up.
//!
//! ```text
//! cargo run -p host-routing -- [--mock] [--listen 127.0.0.1:8002] [--suffix docker.localhost]
//! ```
//!
//! With `--mock`, a mock tool named `demo` is launched so there is
//! something to see at `http://demo.docker.localhost:8002/`.

#![allow(clippy::print_stdout)] // An example program reports on stdout.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use berth_axum::HostRoutingLayer;
use berth_manager::{ContainerManager, ContainerSpec, ListFilter};
use berth_proxy::{HostRouting, Proxy, ProxyConfig, RouteTable, Routing, TableConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let listen = flag("--listen").unwrap_or_else(|| "127.0.0.1:8002".into());
    let suffix = flag("--suffix").unwrap_or_else(|| "docker.localhost".into());
    let manager: Arc<dyn ContainerManager> = if args.iter().any(|a| a == "--mock") {
        let mock = Arc::new(berth_manager::MockManager::new());
        mock.launch(&ContainerSpec::new(berth_manager::MOCK_TOOL_IMAGE, "demo", 16)).await?;
        mock
    } else {
        Arc::new(berth_manager::DockerManager::from_env().await.context("connecting to Docker (or use --mock)")?)
    };
    let app = app(manager, &suffix).await?;
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    println!("app on http://{listen}/, tools on http://<name>.{suffix}:{}/", listener.local_addr()?.port());
    axum::serve(listener, app).await?;
    Ok(())
}

/// The app's own pages, with berth's hostname routing in front.
async fn app(manager: Arc<dyn ContainerManager>, suffix: &str) -> anyhow::Result<Router> {
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await?;
    let config = ProxyConfig { routing: Routing::Host(HostRouting::new(suffix)), ..ProxyConfig::default() };
    let proxy = Proxy::new(table, config);
    Ok(Router::new()
        .route("/", get(index))
        .with_state((manager, suffix.to_owned()))
        .layer(HostRoutingLayer::new(proxy)))
}

async fn index(State((manager, suffix)): State<(Arc<dyn ContainerManager>, String)>) -> Html<String> {
    let tools = manager.list(&ListFilter::all()).await.unwrap_or_default();
    let items: String = tools
        .iter()
        .map(|t| {
            let name = berth_proxy::pages::escape_html(&t.name);
            format!("<li>{name}: <code>http://{name}.{suffix}:&lt;port&gt;/</code></li>")
        })
        .collect();
    Html(format!("<!doctype html><title>Tools</title><h1>Tools by hostname</h1><ul>{items}</ul>"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn hosts_pick_the_container_other_hosts_the_app() {
        let manager = Arc::new(berth_manager::MockManager::new());
        manager.launch(&ContainerSpec::new(berth_manager::MOCK_TOOL_IMAGE, "viz", 16)).await.unwrap();
        let app = app(manager, "docker.localhost").await.unwrap();
        let send = |host: &'static str, path: &'static str| {
            let app = app.clone();
            async move {
                let req = Request::get(path).header("host", host).body(Body::empty()).unwrap();
                let resp = app.oneshot(req).await.unwrap();
                let status = resp.status();
                (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
            }
        };
        let (status, body) = send("localhost:8002", "/").await;
        assert!(status == StatusCode::OK && body.contains("viz.docker.localhost"), "{body}");
        let (status, body) = loop {
            let r = send("viz.docker.localhost:8002", "/some/page").await;
            if r.0 != StatusCode::SERVICE_UNAVAILABLE {
                break r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert_eq!((status, body.as_str()), (StatusCode::OK, "GET /some/page\n"));
        assert_eq!(send("other.docker.localhost", "/").await.0, StatusCode::NOT_FOUND);
    }
}
