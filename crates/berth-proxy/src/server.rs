//! Serving a [`Proxy`] on a socket, with the limits that protect the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::forward::{ClientAddr, Proxy};
use crate::hooks::ProxyHooks;

/// Limits of the listening side.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// A client must send a complete request head within this time (also
    /// bounds how long an idle keep-alive connection stays open):
    /// slowloris protection.
    pub header_read_timeout: Duration,
    /// Largest request head accepted (HTTP/1 read buffer, HTTP/2 header
    /// list), in bytes.
    pub max_header_bytes: usize,
    /// Most concurrent connections; further clients wait in the backlog.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
        }
    }
}

/// Accepts connections on `listener` forever, serving HTTP/1.1 (with
/// upgrades) and HTTP/2 prior knowledge (h2c) through `proxy`.
///
/// # Errors
///
/// Only if reading the listener's address fails; accept errors are logged
/// and retried.
pub async fn serve<H: ProxyHooks>(listener: TcpListener, proxy: Proxy<H>, limits: ServerLimits) -> crate::Result<()> {
    let local = listener
        .local_addr()
        .map_err(|source| crate::Error::Io { context: "reading the listening address".into(), source })?;
    tracing::info!(%local, "berth proxy listening");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return Ok(());
        };
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ClientAddr(peer));
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
            });
            match builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await {
                Ok(()) => tracing::trace!(%peer, "connection closed"),
                Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
            }
            drop(permit);
        });
    }
}

/// Serves `proxy` on `addr` from `threads` threads, each running its own
/// single-threaded runtime with its own listening socket (`SO_REUSEPORT`:
/// the kernel spreads connections) and its own [`Proxy::fork`], the way
/// nginx runs one worker per core: a request and its upstream connection
/// stay on one thread, with no cross-thread wake-ups. Blocks until every
/// thread has ended (they end only on error).
///
/// The route table's own tasks keep running on the caller's runtime.
///
/// # Errors
///
/// [`crate::Error::Io`] when a thread cannot start its runtime or bind.
pub fn serve_on_threads<H: ProxyHooks>(
    addr: SocketAddr,
    proxy: &Proxy<H>,
    limits: ServerLimits,
    threads: usize,
) -> crate::Result<()> {
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let proxy = proxy.fork();
        let limits = limits.clone();
        let handle = std::thread::Builder::new()
            .name(format!("berth-proxy-{i}"))
            .spawn(move || -> crate::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| crate::Error::Io { context: "starting a proxy runtime".into(), source })?;
                rt.block_on(async move {
                    let socket =
                        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
                    let io = |source| crate::Error::Io { context: format!("binding {addr}"), source };
                    let socket = socket.map_err(io)?;
                    socket.set_reuseaddr(true).map_err(io)?;
                    socket.set_reuseport(true).map_err(io)?;
                    socket.bind(addr).map_err(io)?;
                    let listener = socket.listen(1024).map_err(io)?;
                    serve(listener, proxy, limits).await
                })
            })
            .map_err(|source| crate::Error::Io { context: "starting a proxy thread".into(), source })?;
        handles.push(handle);
    }
    for h in handles {
        match h.join() {
            Ok(r) => r?,
            Err(_) => {
                return Err(crate::Error::Io {
                    context: "a proxy thread".into(),
                    source: std::io::Error::other("panicked"),
                });
            }
        }
    }
    Ok(())
}

/// Binds `addr` and [`serve`]s on it.
///
/// # Errors
///
/// [`crate::Error::Io`] when binding fails.
pub async fn bind_and_serve<H: ProxyHooks>(
    addr: SocketAddr,
    proxy: Proxy<H>,
    limits: ServerLimits,
) -> crate::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::Io { context: format!("binding {addr}"), source })?;
    serve(listener, proxy, limits).await
}
