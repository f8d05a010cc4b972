//! berth-axum: mount berth in your own axum application.
//!
//! berth's engine ([`berth_proxy`]) speaks hyper, http and tower; this crate
//! is the one place that knows axum. It gives you:
//!
//! - [`ProxyService`] / [`proxy_router`]: path routing (`/docker/<name>/...`)
//!   as a router you nest anywhere; it routes on the request's
//!   [`OriginalUri`], so nesting (which strips prefixes) does not confuse it;
//! - [`HostRoutingLayer`]: hostname routing (`<name>.docker.localhost`) as a
//!   layer over your whole app: requests for container hosts go to berth,
//!   everything else to your routes;
//! - [`OwnerHooks`]: authorization with your app's notion of a user: only a
//!   container's owner (its owner label) or an admin reaches it; the user is
//!   passed to the container in `X-Berth-User` (client-supplied copies are
//!   always stripped by the proxy);
//! - [`staging_router`]: serves staged inputs to containers;
//! - [`api::api_router`]: the management API (`/api/v1`: tools, launch with
//!   dry run and wait, list, inspect, remove, logs, history, purge; an
//!   OpenAPI document generated from the code ([`openapi`], [`schema`]);
//!   bearer-token protection) over a [`Fleet`](berth_fleet::Fleet).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use berth_manager::MockManager;
//! use berth_proxy::{Proxy, ProxyConfig, RouteTable, TableConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let table = RouteTable::start(Arc::new(MockManager::new()), TableConfig::default()).await?;
//! let proxy = Proxy::new(table, ProxyConfig::default()); // path routing under /docker
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "my portal" }))
//!     .merge(berth_axum::proxy_router(proxy, "/docker"));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

pub mod api;
mod auth;
mod host;
mod launches;
pub mod layers;
pub mod metrics;
pub mod openapi;
pub mod schema;
mod service;
pub mod template;
mod tools;

pub use auth::{DEFAULT_OWNER_LABEL, ExtensionIdentity, Identify, Identity, OwnerHooks};
pub use host::{HostRouted, HostRoutingLayer};
pub use service::{ProxyService, proxy_router, staging_router};

pub use axum::extract::OriginalUri;
