//! The standard middleware of berth's own routes (the management API, the
//! web app), from `tower-http`: request ids, tracing, compression, a
//! timeout and panic recovery.
//!
//! Never put these on the proxied path: compression would buffer tools'
//! streams, the timeout would cut long downloads and websockets, and the
//! proxy has limits of its own.

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request, StatusCode};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// The header carrying a request's id (`x-request-id`): kept when the
/// client sends one, made up (a UUID) otherwise, and returned in the
/// response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps `router` in the standard layers, outermost first: a request id
/// (set, then propagated to the response), a tracing span per request
/// carrying the id, panic recovery (a 500 instead of a dropped
/// connection), a timeout (`timeout`: give longer than the longest wait a
/// route does, e.g. `?wait=true`; answers 503), and gzip compression of
/// answers over 32 bytes except server-sent events, images and `text/plain`
/// (followed logs stream as `text/plain`; compressing would hold lines
/// back).
pub fn standard_layers<S: Clone + Send + Sync + 'static>(router: Router<S>, timeout: Duration) -> Router<S> {
    let compress = DefaultPredicate::new().and(NotForContentType::const_new("text/plain"));
    router
        .layer(CompressionLayer::new().compress_when(compress))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
        .layer(CatchPanicLayer::new())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok());
            tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = id.unwrap_or("-"))
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn app() -> Router {
        let big = "x".repeat(4096);
        let router = Router::new()
            .route("/json", get(move || async move { axum::Json(serde_json::json!({ "big": big })) }))
            .route("/text", get(|| async { "y".repeat(4096) }))
            .route(
                "/panic",
                get(|| async {
                    if true {
                        panic!("handler bug");
                    }
                    "unreachable"
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        standard_layers(router, Duration::from_millis(200))
    }

    async fn get_with(path: &str, headers: &[(&str, &str)]) -> axum::http::Response<Body> {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        app().oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn ids_compression_timeouts_and_panics() {
        let resp = get_with("/json", &[("accept-encoding", "gzip")]).await;
        assert_eq!(resp.headers()["content-encoding"], "gzip");
        assert!(resp.headers().contains_key(REQUEST_ID), "a request id is made up");
        let resp = get_with("/json", &[("x-request-id", "abc-123")]).await;
        assert_eq!(resp.headers()[REQUEST_ID], "abc-123", "a client's id is kept");
        assert!(!resp.headers().contains_key("content-encoding"), "no gzip unless accepted");
        let resp = get_with("/text", &[("accept-encoding", "gzip")]).await;
        assert!(!resp.headers().contains_key("content-encoding"), "text/plain streams uncompressed");
        assert_eq!(get_with("/panic", &[]).await.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(get_with("/slow", &[]).await.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
