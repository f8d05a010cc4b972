//! `UploadService` over a real socket: a streamed upload past the limit is
//! answered 413 and leaves no file, not even a temporary one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_staging::{LocalDirStore, ObjectKey, StagingStore, StagingStoreExt, UploadService};
use bytes::Bytes;
use futures_util::stream;
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

const LIMIT: u64 = 1024 * 1024;

/// A chunked body (no `Content-Length`) of `chunks` × 64 KiB.
fn chunked_body(
    chunks: usize,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send> {
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    StreamBody::new(stream::iter((0..chunks).map(move |_| Ok(Frame::data(chunk.clone())))))
}

fn temp_entries(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join(".tmp")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_over_the_limit_gives_413_and_leaves_no_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(LocalDirStore::open(dir.path()).await.expect("open").with_max_file_size(LIMIT));
    let addr = common::serve(UploadService::new(store.clone())).await;

    // Within the limit: staged.
    let request = Request::put("/_berth/upload/up-1/files/ok.bin")
        .header("host", addr.to_string())
        .body(chunked_body(4))
        .expect("request");
    let response = common::send(addr, request).await.expect("response");
    assert_eq!(response.status(), 201);
    let staged = store.stat("up-1", &ObjectKey::file("ok.bin")).await.expect("stat");
    assert_eq!(staged.size, 4 * 64 * 1024);

    // 16 MiB against a 1 MiB limit, streamed without a declared length.
    let request = Request::put("/_berth/upload/up-1/files/too-big.bin")
        .header("host", addr.to_string())
        .body(chunked_body(256))
        .expect("request");
    // The server answers 413 as soon as the limit is passed and stops
    // reading; a client still writing may see the answer, or (a race of
    // the client's, not the server's) a broken pipe. Either way nothing
    // may be staged, which is checked below.
    let outcome =
        tokio::time::timeout(Duration::from_secs(10), common::send(addr, request)).await.expect("answered in time");
    match outcome {
        Ok(response) => {
            assert_eq!(response.status(), 413);
            let body = response.into_body().collect().await.expect("body").to_bytes();
            assert!(String::from_utf8_lossy(&body).contains("limit"), "{body:?}");
        }
        Err(e) => {
            let text = format!("{e:?}");
            assert!(text.contains("BrokenPipe") || text.contains("ConnectionReset"), "unexpected error: {text}");
        }
    }

    // Declared too large: refused before the body is read. Only the head
    // is sent: a client still writing the body when the server answers and
    // closes may see a broken pipe instead of the answer (a race of the
    // client, not of the server), so this speaks raw HTTP/1.1.
    let mut raw = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "PUT /_berth/upload/up-1/files/declared.bin HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        2 * LIMIT
    );
    tokio::io::AsyncWriteExt::write_all(&mut raw, head.as_bytes()).await.expect("write head");
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tokio::io::AsyncReadExt::read(&mut raw, &mut answer))
        .await
        .expect("answered without the body")
        .expect("read");
    let status_line = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");

    for name in ["too-big.bin", "declared.bin"] {
        let r = store.get_file("up-1", name).await;
        assert!(r.expect_err("nothing staged").is_not_found(), "{name}");
        assert!(!dir.path().join("up-1/files").join(name).exists(), "{name}");
    }
    let listed = store.list_files("up-1").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(temp_entries(dir.path()), 0, "temporary files left behind");
}
