//! A real socket for the services: a hyper server on 127.0.0.1:0 and a
//! one-connection hyper client.

#![allow(dead_code)] // Each test binary uses a different part.

use std::convert::Infallible;
use std::net::SocketAddr;

use berth_staging::StagingBody;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

/// Serves `service` on a fresh port of 127.0.0.1 until the test ends.
pub async fn serve<S>(service: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<StagingBody>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let connection =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                // Connections the client drops mid-body end in errors; fine here.
                let _ = connection.await;
            });
        }
    });
    addr
}

/// Sends one request on a new connection.
pub async fn send<B>(addr: SocketAddr, request: Request<B>) -> hyper::Result<Response<Incoming>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await
}

/// The resident set size of this process in bytes (Linux), from
/// `/proc/self/status`.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
