//! [`StagingService`]: serving staged objects to containers over HTTP.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{StagingBody, empty, full, http_date, streamed};
use crate::error::{Error, Result};
use crate::name::decode_segment;
use crate::object::{ByteRange, INPUT_FILE_NAME, ObjectKey, ObjectMeta};
use crate::store::StagingStore;
use crate::token::TokenRegistry;

/// Default path prefix of [`StagingService`]: `/_berth/staged`.
pub const DEFAULT_PREFIX: &str = "/_berth/staged";

/// The one body of every 404, whatever was wrong (prefix, token, name or
/// object), so a caller learns nothing about which part it was.
const NOT_FOUND_BODY: &str = "not found\n";

/// A `tower::Service` that serves staged objects to the containers they
/// were staged for:
///
/// ```text
/// GET|HEAD <prefix>/<token>/input.json
/// GET|HEAD <prefix>/<token>/files/<name>      (name percent-encoded)
/// ```
///
/// The token (see [`TokenRegistry`]) names the container; there is no
/// other authentication, so mount this where containers can reach it and
/// nothing else is served. Unknown and revoked tokens, bad names and
/// missing objects all get the same 404; other methods get 405.
///
/// Responses carry `Content-Type`, `Content-Length`, a strong `ETag`,
/// `Last-Modified` and `Accept-Ranges: bytes`; `If-None-Match` gives 304,
/// a single `Range` gives 206 (with `If-Range` honoured) or 416. Bodies
/// stream from the store. Every response also says `Cache-Control:
/// private, no-cache`, `X-Content-Type-Options: nosniff`, `Referrer-Policy:
/// no-referrer` and `Content-Security-Policy: sandbox`, because a staged
/// HTML or SVG file is served from the host's origin and must not run
/// there or leak its token.
///
/// The service matches the whole request path, prefix included. A router
/// that strips the prefix before calling it (axum's `nest_service` does)
/// needs `with_prefix("")`.
///
/// Cheap to clone; clones share the store and the registry.
#[derive(Clone)]
pub struct StagingService {
    store: Arc<dyn StagingStore>,
    tokens: TokenRegistry,
    prefix: Arc<str>,
}

impl std::fmt::Debug for StagingService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingService")
            .field("backend", &self.store.capabilities().backend)
            .field("tokens", &self.tokens)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Normalizes a path prefix: a leading `/`, no trailing `/` (so `/` and
/// the empty string both mean "at the root").
pub(crate) fn normalize_prefix(prefix: &str) -> Arc<str> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() { Arc::from("") } else { Arc::from(format!("/{trimmed}")) }
}

impl StagingService {
    /// Serves the objects of `store` under [`DEFAULT_PREFIX`], to holders
    /// of tokens from `tokens`.
    pub fn new(store: Arc<dyn StagingStore>, tokens: TokenRegistry) -> Self {
        StagingService { store, tokens, prefix: normalize_prefix(DEFAULT_PREFIX) }
    }

    /// Serves under `prefix` instead (`/x`, `/x/` and `x` are the same).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = normalize_prefix(prefix);
        self
    }

    /// The path prefix, normalized (no trailing `/`; empty for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The store objects are served from.
    pub fn store(&self) -> &Arc<dyn StagingStore> {
        &self.store
    }

    /// The registry tokens are resolved with.
    pub fn tokens(&self) -> &TokenRegistry {
        &self.tokens
    }

    /// What to do when a container is removed: revokes its tokens first
    /// (so nothing is served from then on), then deletes everything staged
    /// for it. Returns whether anything was staged.
    ///
    /// # Errors
    ///
    /// As [`StagingStore::delete_container`]; the tokens are revoked even
    /// then.
    pub async fn remove_container(&self, container: &str) -> Result<bool> {
        self.tokens.revoke(container);
        self.store.delete_container(container).await
    }

    /// Answers one request; the request body is ignored.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<StagingBody> {
        let (parts, body) = request.into_parts();
        drop(body);
        self.respond(parts.method, parts.uri.path(), &parts.headers).await
    }

    async fn respond(&self, method: Method, path: &str, headers: &HeaderMap) -> Response<StagingBody> {
        if method != Method::GET && method != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let Some((token, key)) = parse_path(&self.prefix, path) else {
            tracing::debug!("staged object request: path does not match");
            return not_found();
        };
        let Some(container) = self.tokens.resolve(token) else {
            tracing::debug!("staged object request: unknown or revoked token");
            return not_found();
        };
        let object = match self.store.get(&container, &key).await {
            Ok(object) => object,
            Err(Error::NotFound { .. } | Error::InvalidName { .. }) => {
                tracing::debug!(%container, %key, "staged object request: no such object");
                return not_found();
            }
            Err(e) => {
                tracing::error!(%container, %key, error = %e, "staged object request failed");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
            }
        };
        let meta = object.meta().clone();

        if let Some(value) = headers.get(header::IF_NONE_MATCH)
            && etag_list_matches(value, &meta.etag)
        {
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            object_headers(response.headers_mut(), &meta);
            return response;
        }

        let range = if method == Method::GET && if_range_allows(headers, &meta) {
            headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(ByteRange::parse)
        } else {
            None
        };

        let mut response = Response::new(empty());
        object_headers(response.headers_mut(), &meta);
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(meta.content_type));
        let (status, len, content_range, stream) = match range.map(|r| r.resolve(meta.size)) {
            None => (StatusCode::OK, meta.size, None, (method == Method::GET).then(|| object.into_stream())),
            Some(None) => {
                let mut response = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
                object_headers(response.headers_mut(), &meta);
                insert(response.headers_mut(), header::CONTENT_RANGE, &format!("bytes */{}", meta.size));
                return response;
            }
            Some(Some(range)) => {
                let content_range = format!("bytes {}-{}/{}", range.start, range.end - 1, meta.size);
                let len = range.end - range.start;
                match object.into_range_stream(range) {
                    Ok(stream) => (StatusCode::PARTIAL_CONTENT, len, Some(content_range), Some(stream)),
                    Err(e) => {
                        tracing::error!(error = %e, "resolved range refused");
                        return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
                    }
                }
            }
        };
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if let Some(content_range) = content_range {
            insert(headers, header::CONTENT_RANGE, &content_range);
        }
        if let Some(stream) = stream {
            *response.body_mut() = streamed(stream, len);
        }
        response
    }
}

/// Splits `<prefix>/<token>/input.json` or `<prefix>/<token>/files/<name>`.
fn parse_path<'a>(prefix: &str, path: &'a str) -> Option<(&'a str, ObjectKey)> {
    let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
    let (token, rest) = rest.split_once('/')?;
    if rest == INPUT_FILE_NAME {
        return Some((token, ObjectKey::Input));
    }
    let name = rest.strip_prefix("files/")?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    Some((token, ObjectKey::File(decode_segment(name)?)))
}

/// Headers every answer about an object carries (200, 206, 304, 416).
fn object_headers(headers: &mut HeaderMap, meta: &ObjectMeta) {
    insert(headers, header::ETAG, &meta.etag);
    insert(headers, header::LAST_MODIFIED, &http_date(meta.modified));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    security_headers(headers);
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Weak comparison of `If-None-Match` (a list of tags, or `*`) with `etag`.
fn etag_list_matches(value: &HeaderValue, etag: &str) -> bool {
    let Ok(value) = value.to_str() else {
        return false;
    };
    let ours = etag.trim_start_matches("W/");
    value.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
}

/// Whether a `Range` may be honoured: there is no `If-Range`, or it names
/// our (strong) entity tag exactly, or a date at or after our modification.
fn if_range_allows(headers: &HeaderMap, meta: &ObjectMeta) -> bool {
    match headers.get(header::IF_RANGE).map(HeaderValue::to_str) {
        None => true,
        Some(Ok(value)) => {
            let value = value.trim();
            value == meta.etag || value == http_date(meta.modified)
        }
        Some(Err(_)) => false,
    }
}

pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<StagingBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(headers);
    response
}

fn not_found() -> Response<StagingBody> {
    text(StatusCode::NOT_FOUND, NOT_FOUND_BODY)
}

impl<B> tower_service::Service<Request<B>> for StagingService {
    type Response = Response<StagingBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        // The body is dropped here so that the future does not depend on
        // `B` (which need not be `Send`).
        let (parts, body) = request.into_parts();
        drop(body);
        Box::pin(async move { Ok(this.respond(parts.method, parts.uri.path(), &parts.headers).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let p = "/_berth/staged";
        assert_eq!(parse_path(p, "/_berth/staged/t/input.json"), Some(("t", ObjectKey::Input)));
        assert_eq!(parse_path(p, "/_berth/staged/t/files/a%20b.csv"), Some(("t", ObjectKey::file("a b.csv"))));
        assert_eq!(parse_path("", "/t/input.json"), Some(("t", ObjectKey::Input)));
        for bad in [
            "/_berth/staged",
            "/_berth/staged/",
            "/_berth/staged/t",
            "/_berth/staged/t/",
            "/_berth/staged/t/files/",
            "/_berth/staged/t/files/a/b",
            "/_berth/staged/t/input.json/",
            "/_berth/stagedx/t/input.json",
            "/_berth/staged/t/files/%zz",
            "/other/t/input.json",
        ] {
            assert_eq!(parse_path(p, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(&*normalize_prefix("/"), "");
        assert_eq!(&*normalize_prefix(""), "");
        assert_eq!(&*normalize_prefix("x/y/"), "/x/y");
        assert_eq!(&*normalize_prefix("/x"), "/x");
    }

    #[test]
    fn if_none_match() {
        let m = |v: &'static str| etag_list_matches(&HeaderValue::from_static(v), "\"abc\"");
        assert!(m("\"abc\""));
        assert!(m("W/\"abc\""));
        assert!(m("\"x\", \"abc\""));
        assert!(m("*"));
        assert!(!m("\"abcd\""));
        assert!(!m("abc"));
    }
}
