//! Extension points of the proxy: a small trait of hooks with defaults.

use async_trait::async_trait;
use bytes::Bytes;
use http::Response;
use http_body_util::Full;

use crate::pages::{self, FailureReason, WaitingPage};
use crate::route::Route;

/// A refusal from [`ProxyHooks::authorize`]: the client gets `status`
/// (403 unless set otherwise) and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Status for the client (403, 401, 404 to hide existence, ...).
    pub status: http::StatusCode,
    /// Plain-text message.
    pub message: String,
}

impl Denied {
    /// A 403 with `message`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Denied { status: http::StatusCode::FORBIDDEN, message: message.into() }
    }
}

/// Hooks into the proxy's phases. Every method but the associated type has
/// a default, so an implementation overrides only what it needs.
///
/// `Ctx` is per-request context produced by [`authorize`](Self::authorize)
/// and handed to [`rewrite_upstream`](Self::rewrite_upstream): e.g. the
/// user's identity, to be passed to the container in a header.
#[async_trait]
pub trait ProxyHooks: Send + Sync + 'static {
    /// Per-request context.
    type Ctx: Send + 'static;

    /// Decides whether the request may reach `container`. Runs before any
    /// lookup, so a denied client learns nothing about the container.
    async fn authorize(&self, request: &http::request::Parts, container: &str) -> Result<Self::Ctx, Denied>;

    /// A response berth gives itself instead of authorizing and forwarding
    /// a request for `container`: e.g. the step of a login that sets a
    /// session cookie on a container's own host. Runs first, for every
    /// request the proxy routes (logs sub-path included); `None` (the
    /// default) lets the request go on.
    fn intercept(&self, _request: &http::request::Parts, _container: &str) -> Option<Response<Full<Bytes>>> {
        None
    }

    /// The answer to a request [`authorize`](Self::authorize) refused. By
    /// default a 404 is exactly the not-found page of a missing container
    /// (so someone else's container looks missing), anything else a plain
    /// page with the status and message. Hooks may send a browser to a
    /// login page instead of a bare 401.
    fn denied_page(
        &self,
        _request: &http::request::Parts,
        container: &str,
        denied: &Denied,
        json: bool,
    ) -> Response<Full<Bytes>> {
        if denied.status == http::StatusCode::NOT_FOUND {
            self.not_found_page(container, json)
        } else {
            pages::error(denied.status, &denied.message)
        }
    }

    /// Adjusts the request sent upstream, after berth set its own headers
    /// (`X-Forwarded-*`, stripped cookies, hop-by-hop removal).
    fn rewrite_upstream(&self, _ctx: &Self::Ctx, _route: &Route, _request: &mut http::request::Parts) {}

    /// The page while the container is starting.
    fn waiting_page(&self, page: &WaitingPage, container: &str, json: bool) -> Response<Full<Bytes>> {
        pages::waiting(page, container, json)
    }

    /// The page when the container will not become ready.
    fn failure_page(
        &self,
        container: &str,
        reason: &FailureReason,
        log_tail: &[String],
        json: bool,
    ) -> Response<Full<Bytes>> {
        pages::failure(container, reason, log_tail, json)
    }

    /// The page for a name that matches no container.
    fn not_found_page(&self, container: &str, json: bool) -> Response<Full<Bytes>> {
        pages::not_found(container, json)
    }
}

/// Hooks that allow everything and use the default pages.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

#[async_trait]
impl ProxyHooks for AllowAll {
    type Ctx = ();

    async fn authorize(&self, _request: &http::request::Parts, _container: &str) -> Result<(), Denied> {
        Ok(())
    }
}
