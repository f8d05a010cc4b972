//! `UploadService` in-process, through `tower::ServiceExt::oneshot`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_staging::{MemoryStore, ObjectKey, StagingStore, StagingStoreExt, UploadService};
use bytes::Bytes;
use futures_util::stream;
use http::{Method, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use tower::ServiceExt;

fn store(limit: u64) -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new().with_max_file_size(limit))
}

async fn send<B>(service: &UploadService, method: Method, path: &str, body: B) -> (StatusCode, String)
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<berth_staging::BoxError>,
{
    let request = Request::builder().method(method).uri(path).body(body).expect("request");
    let response = service.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn full(bytes: &'static [u8]) -> Full<Bytes> {
    Full::new(Bytes::from_static(bytes))
}

/// A body of `chunks` chunks of 64 KiB, without a declared length, that
/// counts how many bytes were pulled from it.
fn counting_body(
    chunks: usize,
    pulled: Arc<AtomicU64>,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send> {
    let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
    StreamBody::new(stream::iter((0..chunks).map(move |_| {
        pulled.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok(Frame::data(chunk.clone()))
    })))
}

#[tokio::test]
async fn put_and_post_stage_files_and_input() {
    let store = store(1 << 20);
    let service = UploadService::new(store.clone());
    let (status, body) = send(&service, Method::PUT, "/_berth/upload/viz-1/files/a%20b.csv", full(b"x,y\n")).await;
    assert_eq!(status, 201, "{body}");
    let meta: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(meta["container"], "viz-1");
    assert_eq!(meta["name"], "a b.csv");
    assert_eq!(meta["object"], "files/a b.csv");
    assert_eq!(meta["size"], 4);
    assert_eq!(meta["content_type"], "text/csv; charset=utf-8");
    let bytes = store.read_bytes("viz-1", &ObjectKey::file("a b.csv")).await.expect("read");
    assert_eq!(&bytes[..], b"x,y\n");

    let (status, body) = send(&service, Method::POST, "/_berth/upload/viz-1/input.json", full(br#"{"k":1}"#)).await;
    assert_eq!(status, 201, "{body}");
    let input = store.read_input_json("viz-1").await.expect("input");
    assert_eq!(input, serde_json::json!({"k": 1}));
}

#[tokio::test]
async fn invalid_names_give_400() {
    let store = store(1 << 20);
    let service = UploadService::new(store.clone());
    for path in [
        "/_berth/upload/viz-1/files/..",
        "/_berth/upload/viz-1/files/%2E%2E",
        "/_berth/upload/viz-1/files/..%2Fx",
        "/_berth/upload/viz-1/files/a%2Fb",
        "/_berth/upload/viz-1/files/a%5Cb",
        "/_berth/upload/viz-1/files/a%00b",
        "/_berth/upload/viz-1/files/a%0Ab",
        "/_berth/upload/viz-1/files/%zz",
        "/_berth/upload/Viz/files/a.csv",
        "/_berth/upload/viz_1/input.json",
        "/_berth/upload/../files/a.csv",
    ] {
        let (status, body) = send(&service, Method::PUT, path, full(b"data")).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let long = format!("/_berth/upload/viz-1/files/{}", "a".repeat(256));
    assert_eq!(send(&service, Method::PUT, &long, full(b"data")).await.0, 400);
    assert!(store.containers().await.expect("containers").is_empty());
}

#[tokio::test]
async fn declared_length_over_the_limit_gives_413_without_reading() {
    let service = UploadService::new(store(1000));
    let pulled = Arc::new(AtomicU64::new(0));
    let body = counting_body(1, pulled.clone());
    let request =
        Request::put("/_berth/upload/c/files/a.bin").header("content-length", "65536").body(body).expect("request");
    let response = service.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 413);
    assert_eq!(pulled.load(Ordering::Relaxed), 0, "the body was read");
}

#[tokio::test]
async fn streamed_body_over_the_limit_gives_413_and_leaves_nothing() {
    let store = store(1 << 20);
    store.put_bytes("c", &ObjectKey::file("a.bin"), Bytes::from_static(b"previous")).await.expect("put");
    let service = UploadService::new(store.clone());
    let pulled = Arc::new(AtomicU64::new(0));
    // 64 chunks of 64 KiB: 4 MiB against a 1 MiB limit.
    let (status, body) =
        send(&service, Method::PUT, "/_berth/upload/c/files/a.bin", counting_body(64, pulled.clone())).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("1048576"), "{body}");
    let pulled = pulled.load(Ordering::Relaxed);
    assert!(pulled <= (1 << 20) + 64 * 1024, "read {pulled} bytes past the limit");
    let bytes = store.read_bytes("c", &ObjectKey::file("a.bin")).await.expect("read");
    assert_eq!(&bytes[..], b"previous");

    let (status, _) =
        send(&service, Method::PUT, "/_berth/upload/c/files/new.bin", counting_body(64, Arc::default())).await;
    assert_eq!(status, 413);
    assert!(store.get_file("c", "new.bin").await.expect_err("nothing").is_not_found());
}

#[tokio::test]
async fn the_upload_limit_can_be_below_the_stores() {
    let store = store(1 << 30);
    let service = UploadService::new(store.clone()).with_max_size(100_000);
    assert_eq!(service.max_size(), 100_000);
    let (status, _) =
        send(&service, Method::PUT, "/_berth/upload/c/files/a.bin", counting_body(2, Arc::default())).await;
    assert_eq!(status, 413);
    assert!(store.list_files("c").await.expect("list").is_empty());
    let (status, _) =
        send(&service, Method::PUT, "/_berth/upload/c/files/a.bin", counting_body(1, Arc::default())).await;
    assert_eq!(status, 201);
    // And the store's own limit still applies when it is the smaller one.
    let service = UploadService::new(Arc::new(MemoryStore::new().with_max_file_size(10))).with_max_size(1000);
    assert_eq!(service.max_size(), 10);
}

#[tokio::test]
async fn a_failing_body_gives_400_and_leaves_nothing() {
    let store = store(1 << 20);
    let service = UploadService::new(store.clone());
    let body = StreamBody::new(stream::iter([
        Ok(Frame::data(Bytes::from_static(b"partial"))),
        Err(std::io::Error::other("connection reset")),
    ]));
    let (status, body) = send(&service, Method::PUT, "/_berth/upload/c/files/a.bin", body).await;
    assert_eq!(status, 400, "{body}");
    assert!(store.get_file("c", "a.bin").await.expect_err("nothing").is_not_found());
}

#[tokio::test]
async fn other_methods_and_paths() {
    let service = UploadService::new(store(1 << 20)).with_prefix("/up/");
    assert_eq!(service.prefix(), "/up");
    for method in [Method::GET, Method::HEAD, Method::DELETE] {
        let request =
            Request::builder().method(method.clone()).uri("/up/c/files/a.csv").body(full(b"")).expect("request");
        let response = service.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "PUT, POST");
    }
    for path in ["/_berth/upload/c/files/a.csv", "/up/c", "/up/c/files/a/b", "/up/c/other.json"] {
        assert_eq!(send(&service, Method::PUT, path, full(b"x")).await.0, 404, "{path}");
    }
    assert_eq!(send(&service, Method::PUT, "/up/c/files/a.csv", full(b"x")).await.0, 201);
}
