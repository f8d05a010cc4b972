//! Hostname routing as a layer over a whole axum app.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use berth_proxy::{Proxy, ProxyHooks, RouteDecision};
use http::Request;

/// Sends requests for container hosts (`<name>.<suffix>`, as the proxy's
/// [`HostRouting`](berth_proxy::HostRouting) sees them) to berth and every
/// other request to the wrapped service. The proxy must be configured with
/// hostname routing.
pub struct HostRoutingLayer<H: ProxyHooks> {
    proxy: Proxy<H>,
}

impl<H: ProxyHooks> Clone for HostRoutingLayer<H> {
    fn clone(&self) -> Self {
        HostRoutingLayer { proxy: self.proxy.clone() }
    }
}

impl<H: ProxyHooks> std::fmt::Debug for HostRoutingLayer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRoutingLayer").finish_non_exhaustive()
    }
}

impl<H: ProxyHooks> HostRoutingLayer<H> {
    /// A layer in front of `proxy`.
    pub fn new(proxy: Proxy<H>) -> Self {
        HostRoutingLayer { proxy }
    }
}

impl<H: ProxyHooks, S> tower_layer::Layer<S> for HostRoutingLayer<H> {
    type Service = HostRouted<S, H>;

    fn layer(&self, inner: S) -> Self::Service {
        HostRouted { inner, proxy: self.proxy.clone() }
    }
}

/// The service [`HostRoutingLayer`] produces.
pub struct HostRouted<S, H: ProxyHooks> {
    inner: S,
    proxy: Proxy<H>,
}

impl<S: Clone, H: ProxyHooks> Clone for HostRouted<S, H> {
    fn clone(&self) -> Self {
        HostRouted { inner: self.inner.clone(), proxy: self.proxy.clone() }
    }
}

impl<S, H: ProxyHooks> std::fmt::Debug for HostRouted<S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRouted").finish_non_exhaustive()
    }
}

impl<S, H> tower_service::Service<Request<Body>> for HostRouted<S, H>
where
    S: tower_service::Service<Request<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
    H: ProxyHooks,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok());
        let decision = self.proxy.config().routing.resolve(req.uri(), host);
        if decision == RouteDecision::NotMine {
            let fut = self.inner.call(req);
            return Box::pin(async move { Ok(fut.await?.into_response()) });
        }
        let proxy = self.proxy.clone();
        let mut req = req;
        crate::service::client_addr_from_connect_info(&mut req);
        Box::pin(async move { Ok(proxy.handle(req).await.into_response()) })
    }
}
