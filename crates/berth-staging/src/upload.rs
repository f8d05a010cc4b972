//! [`UploadService`]: streaming uploads of input documents and data files.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use futures_util::StreamExt;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;

use crate::body::{StagingBody, full};
use crate::error::{BoxError, Error};
use crate::name::decode_segment;
use crate::object::{INPUT_FILE_NAME, ObjectKey, ObjectMeta};
use crate::serve::{normalize_prefix, text};
use crate::store::StagingStore;

/// Default path prefix of [`UploadService`]: `/_berth/upload`.
pub const DEFAULT_UPLOAD_PREFIX: &str = "/_berth/upload";

/// A `tower::Service` that stages request bodies, streaming them into the
/// store without holding them in memory:
///
/// ```text
/// PUT|POST <prefix>/<container>/input.json
/// PUT|POST <prefix>/<container>/files/<name>    (name percent-encoded)
/// ```
///
/// It does no authentication or authorization of its own: mount it behind
/// whatever the host application uses (it is kept apart from the public
/// [`StagingService`](crate::StagingService) for that reason). The body is
/// stored as sent; an input document is not checked to be JSON.
///
/// Answers: 201 with the object's metadata as JSON; 400 for an invalid
/// container or file name or a failing request body; 413 as soon as the
/// body goes past the size limit (by `Content-Length` before reading, or
/// while reading, which then stops), leaving nothing behind and any
/// previous version in place; 404 for other paths; 405 for other methods.
///
/// As for [`StagingService`](crate::StagingService), the path is matched
/// whole; behind a router that strips the prefix, use `with_prefix("")`.
#[derive(Clone)]
pub struct UploadService {
    store: Arc<dyn StagingStore>,
    prefix: Arc<str>,
    max_size: Option<u64>,
}

impl std::fmt::Debug for UploadService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadService")
            .field("backend", &self.store.capabilities().backend)
            .field("prefix", &self.prefix)
            .field("max_size", &self.max_size())
            .finish()
    }
}

/// The body went past the upload's own limit.
#[derive(Debug, thiserror::Error)]
#[error("request body is larger than the upload limit of {0} bytes")]
struct UploadLimitExceeded(u64);

impl UploadService {
    /// Uploads into `store` under [`DEFAULT_UPLOAD_PREFIX`], limited by the
    /// store's [`max_file_size`](StagingStore::max_file_size).
    pub fn new(store: Arc<dyn StagingStore>) -> Self {
        UploadService { store, prefix: normalize_prefix(DEFAULT_UPLOAD_PREFIX), max_size: None }
    }

    /// Serves under `prefix` instead (`/x`, `/x/` and `x` are the same).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = normalize_prefix(prefix);
        self
    }

    /// Limits uploads to `bytes` (the store's own limit still applies when
    /// it is smaller).
    pub fn with_max_size(mut self, bytes: u64) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// The effective size limit of one upload in bytes.
    pub fn max_size(&self) -> u64 {
        let store = self.store.max_file_size();
        self.max_size.map_or(store, |own| own.min(store))
    }

    /// The path prefix, normalized (no trailing `/`; empty for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Answers one request, streaming its body into the store.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<StagingBody>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        if request.method() != Method::PUT && request.method() != Method::POST {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("PUT, POST"));
            return response;
        }
        let (container, key) = match parse_upload_path(&self.prefix, request.uri().path()) {
            Ok(Some(target)) => target,
            Ok(None) => return text(StatusCode::NOT_FOUND, "not found\n"),
            Err(()) => return message(StatusCode::BAD_REQUEST, "file name is not valid percent-encoded UTF-8"),
        };
        let limit = self.max_size();
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return too_large(limit);
        }

        let own_limit = self.max_size.filter(|own| *own < self.store.max_file_size());
        let mut seen: u64 = 0;
        let body = request
            .into_body()
            .into_data_stream()
            .map(move |chunk| {
                let mut data = chunk.map_err(Into::into)?;
                let bytes = data.copy_to_bytes(data.remaining());
                seen = seen.saturating_add(bytes.len() as u64);
                match own_limit {
                    Some(own) if seen > own => Err(Box::new(UploadLimitExceeded(own)) as BoxError),
                    _ => Ok(bytes),
                }
            })
            .boxed();

        match self.store.put(&container, &key, body).await {
            Ok(meta) => created(&container, &meta),
            Err(Error::TooLarge { .. }) => too_large(limit),
            Err(Error::Source { source, .. }) if source.is::<UploadLimitExceeded>() => too_large(limit),
            Err(e @ (Error::InvalidName { .. } | Error::Source { .. })) => {
                tracing::debug!(%container, %key, error = %e, "upload refused");
                message(StatusCode::BAD_REQUEST, &e.to_string())
            }
            Err(e) => {
                tracing::error!(%container, %key, error = %e, "upload failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
            }
        }
    }
}

/// `<prefix>/<container>/input.json` or `<prefix>/<container>/files/<name>`;
/// `Ok(None)` for other paths, `Err` for a name that does not decode.
fn parse_upload_path(prefix: &str, path: &str) -> Result<Option<(String, ObjectKey)>, ()> {
    let Some(rest) = path.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Ok(None);
    };
    let Some((container, rest)) = rest.split_once('/') else {
        return Ok(None);
    };
    if rest == INPUT_FILE_NAME {
        return Ok(Some((container.to_owned(), ObjectKey::Input)));
    }
    match rest.strip_prefix("files/") {
        Some(name) if !name.contains('/') => {
            let name = decode_segment(name).ok_or(())?;
            Ok(Some((container.to_owned(), ObjectKey::File(name))))
        }
        _ => Ok(None),
    }
}

fn message(status: StatusCode, message: &str) -> Response<StagingBody> {
    let body = format!("{message}\n");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn too_large(limit: u64) -> Response<StagingBody> {
    message(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body is larger than the limit of {limit} bytes"))
}

fn created(container: &str, meta: &ObjectMeta) -> Response<StagingBody> {
    let document = serde_json::json!({
        "container": container,
        "object": meta.key.to_string(),
        "name": meta.key.file_name(),
        "size": meta.size,
        "etag": meta.etag,
        "content_type": meta.content_type,
    });
    let mut response = Response::new(full(document.to_string()));
    *response.status_mut() = StatusCode::CREATED;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(etag) = HeaderValue::from_str(&meta.etag) {
        headers.insert(header::ETAG, etag);
    }
    response
}

impl<B> tower_service::Service<Request<B>> for UploadService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<StagingBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_paths() {
        let p = "/_berth/upload";
        assert_eq!(
            parse_upload_path(p, "/_berth/upload/viz/input.json"),
            Ok(Some(("viz".to_owned(), ObjectKey::Input)))
        );
        assert_eq!(
            parse_upload_path(p, "/_berth/upload/viz/files/a%2Fb"),
            Ok(Some(("viz".to_owned(), ObjectKey::file("a/b"))))
        );
        assert_eq!(parse_upload_path(p, "/_berth/upload/viz/files/%zz"), Err(()));
        assert_eq!(parse_upload_path(p, "/_berth/upload/viz/files/a/b"), Ok(None));
        assert_eq!(parse_upload_path(p, "/_berth/upload/viz"), Ok(None));
        assert_eq!(parse_upload_path(p, "/elsewhere/viz/input.json"), Ok(None));
    }
}
