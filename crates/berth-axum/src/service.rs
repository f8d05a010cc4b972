//! The proxy and the staging service as axum routes.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::OriginalUri;
use axum::response::{IntoResponse, Response};
use berth_proxy::{Proxy, ProxyHooks};
use berth_staging::StagingService;
use http::Request;

/// The proxy as a service for axum's `nest_service` / `fallback_service`.
///
/// Routing needs the path the client sent, but nesting strips the nest
/// prefix; the service therefore routes on the [`OriginalUri`] axum
/// records, so the proxy's path prefix must be the full public prefix.
pub struct ProxyService<H: ProxyHooks> {
    proxy: Proxy<H>,
}

impl<H: ProxyHooks> Clone for ProxyService<H> {
    fn clone(&self) -> Self {
        ProxyService { proxy: self.proxy.clone() }
    }
}

impl<H: ProxyHooks> std::fmt::Debug for ProxyService<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyService").field("proxy", &self.proxy).finish()
    }
}

impl<H: ProxyHooks> ProxyService<H> {
    /// Wraps `proxy`.
    pub fn new(proxy: Proxy<H>) -> Self {
        ProxyService { proxy }
    }

    /// Handles one request with the original URI restored.
    pub async fn handle(&self, mut req: Request<Body>) -> Response {
        if let Some(OriginalUri(uri)) = req.extensions().get::<OriginalUri>().cloned() {
            *req.uri_mut() = uri;
        }
        client_addr_from_connect_info(&mut req);
        self.proxy.handle(req).await.into_response()
    }
}

impl<H: ProxyHooks> tower_service::Service<Request<Body>> for ProxyService<H> {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

/// Copies axum's `ConnectInfo<SocketAddr>` (present when the app is served
/// with `into_make_service_with_connect_info`) into the proxy's
/// [`ClientAddr`](berth_proxy::ClientAddr), for `X-Forwarded-For`.
pub(crate) fn client_addr_from_connect_info(req: &mut Request<Body>) {
    if let Some(axum::extract::ConnectInfo(addr)) =
        req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().cloned()
    {
        req.extensions_mut().insert(berth_proxy::ClientAddr(addr));
    }
}

/// A router serving `proxy` under `prefix` (e.g. `/docker`), to merge into
/// your app (whatever its state type). `prefix` must be the proxy's
/// path-routing prefix.
pub fn proxy_router<H: ProxyHooks, S: Clone + Send + Sync + 'static>(proxy: Proxy<H>, prefix: &str) -> Router<S> {
    let prefix = format!("/{}", prefix.trim_matches('/'));
    Router::new().nest_service(&prefix, ProxyService::new(proxy))
}

/// A router serving staged inputs to containers under the service's
/// prefix (default `/_berth/staged`). Mount it where the URLs given to
/// containers point, without authentication: the tokens are the access
/// control.
pub fn staging_router<S: Clone + Send + Sync + 'static>(service: StagingService) -> Router<S> {
    let prefix = service.prefix().to_owned();
    // The service matches whole paths; nesting strips the prefix, so the
    // nested copy matches from the root.
    let inner = service.with_prefix("");
    let handler = axum::routing::any(move |req: Request<Body>| {
        let inner = inner.clone();
        async move { inner.handle(req).await.into_response() }
    });
    Router::new().nest_service(&prefix, handler.with_state(()))
}
