//! The proxy's hooks in every mode: open in `none`, by owner otherwise.

use async_trait::async_trait;
use berth_axum::{Identity, OwnerHooks};
use berth_proxy::{Denied, ProxyHooks, Route};
use bytes::Bytes;
use http::Response;
use http_body_util::Full;

use super::ProxyIdentify;

/// The proxy's hooks: everyone reaches everything (mode `none`), or only
/// owners and admins do ([`OwnerHooks`] over [`ProxyIdentify`]).
#[derive(Debug)]
pub enum ServerHooks {
    /// Mode `none`.
    Open,
    /// A login mode.
    Owners(OwnerHooks<ProxyIdentify>),
}

#[async_trait]
impl ProxyHooks for ServerHooks {
    type Ctx = Option<Identity>;

    async fn authorize(&self, request: &http::request::Parts, container: &str) -> Result<Option<Identity>, Denied> {
        match self {
            ServerHooks::Open => Ok(None),
            ServerHooks::Owners(h) => h.authorize(request, container).await.map(Some),
        }
    }

    fn intercept(&self, request: &http::request::Parts, container: &str) -> Option<Response<Full<Bytes>>> {
        match self {
            ServerHooks::Open => None,
            ServerHooks::Owners(h) => h.intercept(request, container),
        }
    }

    fn denied_page(
        &self,
        request: &http::request::Parts,
        container: &str,
        denied: &Denied,
        json: bool,
    ) -> Response<Full<Bytes>> {
        match self {
            ServerHooks::Open => berth_proxy::pages::error(denied.status, &denied.message),
            ServerHooks::Owners(h) => h.denied_page(request, container, denied, json),
        }
    }

    fn rewrite_upstream(&self, who: &Option<Identity>, route: &Route, request: &mut http::request::Parts) {
        if let (ServerHooks::Owners(h), Some(who)) = (self, who) {
            h.rewrite_upstream(who, route, request);
        }
    }
}
