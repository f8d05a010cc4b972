//! A 256 MiB staged file downloaded over a real socket, while the
//! process's resident memory stays flat: the store and the service stream.
//!
//! Alone in its test binary, so that no other test shares the process
//! whose memory it measures.

mod common;

use std::sync::Arc;
use std::time::Instant;

use berth_staging::{LocalDirStore, StagingService, StagingStore, StagingStoreExt, StagingUrls, TokenRegistry};
use bytes::Bytes;
use futures_util::stream;
use http::Request;
use http_body_util::{BodyExt, Empty};

const MIB: u64 = 1024 * 1024;
const SIZE: u64 = 256 * MIB;
/// How much the resident set may grow while downloading.
const RSS_BUDGET: u64 = 64 * MIB;

/// Block `k` of the content: 1 MiB of a fixed byte pattern whose first 8
/// bytes are `k`, so that order and completeness can be checked cheaply.
fn block(base: &[u8], k: u64) -> Bytes {
    let mut block = base.to_vec();
    block[..8].copy_from_slice(&k.to_le_bytes());
    block.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_of_256_mib_streams_in_bounded_memory() {
    let Some(_) = common::rss_bytes() else {
        eprintln!("SKIPPED: /proc/self/status is not available on this platform");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LocalDirStore::open(dir.path()).await.expect("open").with_max_file_size(SIZE);
    let base: Arc<Vec<u8>> = Arc::new((0..MIB).map(|i| (i * 7 % 253) as u8).collect());

    let started = Instant::now();
    let chunks = {
        let base = base.clone();
        stream::iter((0..SIZE / MIB).map(move |k| Ok::<_, std::io::Error>(block(&base, k))))
    };
    let meta = store.put_file("big", "huge.bin", chunks).await.expect("stage");
    assert_eq!(meta.size, SIZE);
    eprintln!("staged 256 MiB in {:?}", started.elapsed());

    let store: Arc<dyn StagingStore> = Arc::new(store);
    let tokens = TokenRegistry::new();
    let token = tokens.issue("big").expect("issue");
    let service = StagingService::new(store, tokens);
    let addr = common::serve(service).await;
    let urls = StagingUrls::new(format!("http://{addr}"));
    let url = urls.file_url(&token, "huge.bin");
    let path = url.trim_start_matches(urls.public_base()).to_owned();

    let baseline = common::rss_bytes().unwrap_or(0);
    let started = Instant::now();
    let request = Request::get(&path).header("host", addr.to_string()).body(Empty::<Bytes>::new()).expect("request");
    let response = common::send(addr, request).await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], SIZE.to_string());
    assert_eq!(response.headers()["content-type"], "application/octet-stream");

    let mut body = response.into_body();
    let (mut received, mut peak, mut next_sample) = (0u64, baseline, 0u64);
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("frame");
        let Some(data) = frame.data_ref() else { continue };
        // Check the block number wherever a block starts in this frame.
        let mut at = (MIB - received % MIB) % MIB;
        while at + 8 <= data.len() as u64 {
            let k = (received + at) / MIB;
            assert_eq!(&data[at as usize..at as usize + 8], &k.to_le_bytes(), "block {k} out of place");
            at += MIB;
        }
        received += data.len() as u64;
        if received >= next_sample {
            peak = peak.max(common::rss_bytes().unwrap_or(0));
            next_sample += 4 * MIB;
        }
    }
    peak = peak.max(common::rss_bytes().unwrap_or(0));
    let elapsed = started.elapsed();
    eprintln!(
        "downloaded {} MiB in {elapsed:?}; resident memory {} MiB before, {} MiB at most",
        received / MIB,
        baseline / MIB,
        peak / MIB
    );
    assert_eq!(received, SIZE);
    assert!(
        peak.saturating_sub(baseline) < RSS_BUDGET,
        "resident memory grew by {} MiB while downloading",
        (peak - baseline) / MIB
    );

    // Over the same socket path: HEAD keeps the length, a range reads the end.
    let head = Request::head(&path).header("host", addr.to_string()).body(Empty::<Bytes>::new()).expect("request");
    let response = common::send(addr, head).await.expect("HEAD");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], SIZE.to_string());
    let range = Request::get(&path)
        .header("host", addr.to_string())
        .header("range", format!("bytes={}-", SIZE - MIB))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = common::send(addr, range).await.expect("range");
    assert_eq!(response.status(), 206);
    let tail = response.into_body().collect().await.expect("tail").to_bytes();
    assert_eq!(tail, block(&base, SIZE / MIB - 1));
}
