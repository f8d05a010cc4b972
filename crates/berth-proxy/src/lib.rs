//! berth-proxy: route browser traffic to tool containers by name.
//!
//! The engine speaks hyper, http and tower (never axum), in phases:
//!
//! - [`Routing`]: a pure function of the request head, by path
//!   (`/docker/<name>/<rest>`) or by hostname (`<name>.<suffix>`);
//! - [`RouteTable`]: container endpoints and readiness, filled from a
//!   [`ContainerManager`](berth_manager::ContainerManager) and kept fresh by
//!   its event stream, so the hot path never calls the engine;
//! - [`Proxy`]: a `tower::Service` that forwards with a pooled hyper
//!   client, streams bodies both ways, tunnels websockets, and answers with
//!   please-wait, not-found and failure pages itself;
//! - [`ActivityRecorder`] (re-exported from `berth-activity`): reports every
//!   proxied request off the hot path;
//! - [`ProxyHooks`]: authorize, rewrite the upstream request, render pages;
//! - [`Server`]: listeners with slowloris, header-size and connection
//!   limits, one runtime per core, and graceful [`Shutdown`].
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use berth_manager::{ContainerManager, ContainerSpec, MockManager, MOCK_TOOL_IMAGE};
//! use berth_proxy::{Proxy, ProxyConfig, RouteTable, TableConfig};
//! use http_body_util::{BodyExt, Empty};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), berth_proxy::BoxError> {
//! let manager = Arc::new(MockManager::new());
//! let table = RouteTable::start(manager.clone(), TableConfig::default()).await?;
//! let proxy = Proxy::new(table, ProxyConfig::default());
//!
//! manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "viz", 64)).await?;
//! let response = loop {
//!     let request = http::Request::get("/docker/viz/hello").body(Empty::<bytes::Bytes>::new())?;
//!     let response = proxy.handle(request).await;
//!     if response.status() != 503 {
//!         break response; // 503 is the please-wait page while the tool starts
//!     }
//!     tokio::time::sleep(std::time::Duration::from_millis(20)).await;
//! };
//! let body = response.into_body().collect().await?.to_bytes();
//! assert_eq!(&body[..], b"GET /hello\n");
//! # Ok(())
//! # }
//! ```

mod error;
mod forward;
mod hooks;
pub mod pages;
mod route;
mod server;
mod table;

pub use berth_activity::{
    ActivityKind, ActivityRecord, ActivityRecorder, ActivitySink, DEFAULT_FLUSH_INTERVAL, MemoryActivity, TeeSink,
};
pub use error::{Error, Result};
pub use forward::{
    BoxError, ClientAddr, Proxy, ProxyBody, ProxyConfig, TUNNEL_CLOSE_WAIT, X_BERTH_GROUPS, X_BERTH_USER,
    remove_hop_by_hop, strip_cookies,
};
pub use hooks::{AllowAll, Denied, ProxyHooks};
pub use pages::{FailureReason, WaitingPage};
pub use route::{DEFAULT_PREFIX, HostRouting, PathRouting, Route, RouteDecision, Routing, is_valid_name};
pub use server::{Server, ServerLimits, ServingThreads, Shutdown, bind_and_serve, serve, serve_on_threads};
pub use table::{Failure, Lookup, RouteTable, TableConfig, TableStats, Upstream};

// Beside X_BERTH_USER and X_BERTH_GROUPS: set only by hooks, stripped from clients.
pub use forward::X_BERTH_EMAIL;
