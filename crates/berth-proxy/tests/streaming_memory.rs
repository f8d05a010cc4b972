//! 1 GiB downloads and uploads through the proxy with flat memory, against
//! a mock container and a real Docker container. Kept in a binary of its
//! own and run one at a time: resident memory is a per-process figure, and
//! other tests running alongside would blur it.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

mod common;

use std::sync::Arc;
use std::time::Duration;

use berth_manager::{ContainerManager, ContainerSpec, MOCK_TOOL_IMAGE};
use berth_proxy::{Proxy, ProxyConfig, RouteTable, ServerLimits, TableConfig};
use berth_testkit::TestRun;
use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, StreamBody};

const GIB: u64 = 1 << 30;
const HOST: &str = "app.example";
/// Allowed growth of resident memory while moving 2 GiB.
const MAX_GROWTH_MIB: u64 = 64;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Downloads `GIB` bytes from `<prefix>/bytes/GIB`, uploads `GIB` bytes
/// to `<prefix>/echo`, and checks the counts and the memory growth.
async fn move_two_gib(addr: std::net::SocketAddr, prefix: &str) {
    let rss_before = rss_kib();

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("{prefix}/bytes/{GIB}")).header("host", HOST).body(empty()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["content-length"], GIB.to_string().as_str());
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            got += d.len() as u64;
        }
    }
    assert_eq!(got, GIB);

    let chunk = Bytes::from(vec![1u8; 256 * 1024]);
    let chunks = GIB / chunk.len() as u64;
    let upload = StreamBody::new(futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))),
    ));
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("{prefix}/echo")).header("host", HOST).body(upload).unwrap();
    let text = sender.send_request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&text).trim(), format!("bytes={GIB} sum={}", GIB as u32));

    let grown = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown < MAX_GROWTH_MIB, "memory grew by {grown} MiB while moving 2 GiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_mock() {
    let _one = ONE_AT_A_TIME.lock().await;
    let manager = Arc::new(rich_manager(Duration::ZERO));
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let addr = serve(Proxy::new(table, ProxyConfig::default()), ServerLimits::default()).await;
    manager.launch(&ContainerSpec::new(MOCK_TOOL_IMAGE, "big", 16)).await.unwrap();
    wait_not_503(addr, HOST, "/docker/big/").await;
    move_two_gib(addr, "/docker/big").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_docker() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(docker) = berth_testkit::docker_or_skip("one_gib_each_way_docker").await else { return };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.expect("tool image");
    let manager = Arc::new(docker);
    let table = RouteTable::start(manager.clone(), TableConfig::default()).await.unwrap();
    let addr = serve(Proxy::new(table, ProxyConfig::default()), ServerLimits::default()).await;
    let name = run.name("big");
    let mut spec = ContainerSpec::new(image, &name, 16);
    spec.labels = run.labels();
    manager.launch(&spec).await.unwrap();
    wait_not_503(addr, HOST, &format!("/docker/{name}/")).await;
    move_two_gib(addr, &format!("/docker/{name}")).await;
}
